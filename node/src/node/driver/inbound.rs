//! Network events, handed to the engine.

use agora_market::engine::{FrameId, ReplyId, Verdict};

use super::{Driver, now};
use crate::network::{Event, MessageAcceptance};
use crate::node::work;

impl Driver {
    pub(super) fn on_network(&mut self, ev: Event) {
        let now = now();
        match ev {
            Event::Gossip {
                id,
                source,
                author,
                topic,
                data,
            } => {
                let verdict = self.engine.on_gossip(&topic, &data, author, now);
                let acceptance = match verdict {
                    Verdict::Accept => MessageAcceptance::Accept,
                    Verdict::Ignore => MessageAcceptance::Ignore,
                    Verdict::Reject => MessageAcceptance::Reject,
                };
                self.outbox.report(id, source, acceptance);
            }
            Event::Market {
                peer,
                request,
                channel,
            } => {
                let reply = ReplyId(self.next_reply);
                self.next_reply += 1;
                let frame = channel.frame().map(FrameId);
                self.replies.insert(reply, channel);
                self.engine.on_request(peer, request, reply, frame, now);
            }
            Event::Content {
                peer: _,
                request,
                channel,
            } => {
                let sh = self.sh.clone();
                self.tasks.spawn(work::serve_content(sh, request, channel));
            }
            Event::Rtt { peer, rtt } => self.engine.on_rtt(peer, rtt),
            Event::Throughput {
                peer,
                bytes_per_s,
                at_most,
            } => self.engine.on_throughput(peer, bytes_per_s, at_most),
            Event::Connected { peer } => self.engine.on_connected(peer),
            Event::Disconnected { peer } => self.engine.on_disconnected(peer),
            Event::Subscribed { peer, topic } => self.engine.on_subscribed(peer, &topic),
            Event::Listening { addr } => self.engine.on_listening(addr.to_string()),
            Event::ListenClosed { addr } => self.engine.on_listen_closed(&addr.to_string()),
            Event::Reachability(r) => self
                .engine
                .on_reachability(r == crate::network::Reachability::Private),
        }
    }
}

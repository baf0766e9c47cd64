//! The task that owns the swarm.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

use agora_protocol::NodeId;
use agora_protocol::rpc::{ContentResponse, Decline, MarketRequest, MarketResponse};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, gossipsub, identify, kad, mdns, ping, relay};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent, LIVENESS_CHECK_EVERY, Learned};
use super::reach::{self, Reachability};
use super::trim;
use super::{Command, Event, NetworkError, Reach, Reply, ReplyTo, Stats, flood, told};

/// Providers found so far by a DHT query, and who waits for them.
type PendingProviders = (
    HashSet<PeerId>,
    oneshot::Sender<Result<HashSet<PeerId>, NetworkError>>,
);

type Pending<T> = HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<T, NetworkError>>)>;

type MarketWaiter = oneshot::Sender<Result<MarketResponse, NetworkError>>;

/// Who waits for an outbound market frame's answer.
enum Waiting {
    One(MarketWaiter),
    /// One waiter per request of the batch, in order.
    Batch(Vec<MarketWaiter>),
}

/// An outbound market frame in flight.
struct InFlight {
    peer: PeerId,
    waiting: Waiting,
    /// A copy of the frame, kept while the peer has a relayed connection
    /// or none: a relayed connection is closed soon after a direct one
    /// appears, and a frame whose connection closes under it, or whose
    /// dial fails while the peer's direct connection is being made, is
    /// sent again rather than failed. Taken when resent, so a frame is
    /// resent at most once.
    resend: Option<MarketRequest>,
}

/// An inbound batch, answered once all its parts are.
type InboundBatch = BoxFuture<
    'static,
    (
        request_response::ResponseChannel<MarketResponse>,
        Vec<MarketResponse>,
    ),
>;

/// Most queued commands handled before the outbox is sent.
const MAX_DRAIN: usize = 512;

/// Market frames to one peer unanswered at once. Requests queued for a
/// peer with this many wait in the outbox, and go together, in as few
/// frames as fit, as soon as one is answered. A lone request meets no
/// frame in flight and leaves at once, so a one-task job waits for
/// nothing; a stream of them (a job's orders, a provider's receipts) then
/// travels in batches of what accumulated during one round trip, instead
/// of one substream per request. Two, not one: a payment awaiting its
/// countersignature does not hold up the next job's order.
const MAX_FRAMES_IN_FLIGHT: usize = 2;

/// Most large content responses timed at once (each an entry until it is
/// flushed or fails).
const MAX_TIMED_SENDS: usize = 256;

/// A large response unsent after this long reports a bound on its rate.
const SLOW_SEND: std::time::Duration = std::time::Duration::from_secs(2);

/// A timed response is forgotten after this long.
const FORGET_SEND: std::time::Duration = std::time::Duration::from_secs(600);

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    pending_market: HashMap<OutboundRequestId, InFlight>,
    /// How many of `pending_market` go to each peer.
    frames_out: HashMap<PeerId, usize>,
    /// Market requests not yet sent, per peer, in order: queued this turn,
    /// or held while [`MAX_FRAMES_IN_FLIGHT`] frames to the peer wait.
    outbox: HashMap<PeerId, Vec<(MarketRequest, MarketWaiter)>>,
    inbound_batches: FuturesUnordered<InboundBatch>,
    /// The number the next batch received gets ([`Reply::frame`]).
    frames_in: u64,
    pending_content: Pending<ContentResponse>,
    /// Large content responses being sent: to whom, since when, how many
    /// bytes (at most [`MAX_TIMED_SENDS`]).
    sending: HashMap<request_response::InboundRequestId, (PeerId, Instant, usize)>,
    pending_providers: HashMap<kad::QueryId, PendingProviders>,
    stats: Stats,
    bootstrapped: bool,
    /// Where to find the network again when the node has lost its peers.
    bootstrap: Vec<libp2p::Multiaddr>,
    /// Peers this node refuses to be connected to (a partition, in tests).
    blocked: HashSet<PeerId>,
    /// Connections above this many are trimmed (see [`trim`]).
    target_connections: usize,
    /// When each connected peer was connected or last exchanged a request.
    last_used: HashMap<PeerId, Instant>,
    /// Gossip neighbours' budgets of useless messages (see [`flood`]).
    flood: flood::FloodGuard<PeerId>,
    /// Peer addresses told to the swarm (see [`told`]).
    told: told::Told<PeerId, Multiaddr>,
    /// How the node is reached, for [`super::Client::reach`].
    reach_tx: tokio::sync::watch::Sender<Reach>,
    /// Relays the owner named, with their addresses.
    configured_relays: Vec<(PeerId, Multiaddr)>,
    /// Circuit listeners: the relay each reserves on.
    reservations: HashMap<ListenerId, PeerId>,
    /// Relays that accepted a reservation.
    relays_held: BTreeSet<PeerId>,
    /// Connected peers that serve as relays, with an address to reach them.
    relay_candidates: HashMap<PeerId, Multiaddr>,
    /// Peers whose relayed connections close at the instant given (see
    /// [`Self::replace_relayed`]); at most one entry a peer, in order.
    relayed_drops: VecDeque<(Instant, PeerId)>,
    /// Each connected peer's connections, and whether each is relayed.
    conns: HashMap<PeerId, HashMap<ConnectionId, bool>>,
    /// Where each connected peer is reached directly (for [`reach::Verdict`]).
    remote: HashMap<PeerId, Multiaddr>,
    /// AutoNAT's answers from peers outside this node's network.
    verdict: reach::Verdict,
    /// Whether the owner declared an external address.
    declared_external: bool,
    /// Whether AutoNAT witnesses must be at global addresses.
    only_global_ips: bool,
    /// When Kademlia may next check a full bucket's oldest entry.
    next_liveness_check: Option<Instant>,
}

/// What the loop starts with, besides its channels.
pub(crate) struct Setup {
    /// Bootstrap and remembered peers, dialled again when peers are lost.
    pub(crate) bootstrap: Vec<Multiaddr>,
    /// Connections above this many are trimmed.
    pub(crate) target_connections: usize,
    /// Where the node's reachability is published.
    pub(crate) reach_tx: tokio::sync::watch::Sender<Reach>,
    /// Relays the owner named.
    pub(crate) relays: Vec<Multiaddr>,
    /// Whether the owner declared an external address.
    pub(crate) declared_external: bool,
    /// Whether AutoNAT witnesses must be at global addresses (see
    /// [`reach::only_global_ips`]).
    pub(crate) only_global_ips: bool,
}

/// How long a relayed connection outlives the direct one that replaces it:
/// time for the peer to see the direct connection too (its end of the
/// handshake, a round trip at most, after this one's).
const RELAYED_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Below this many connections the node dials its bootstrap peers again.
const MIN_PEERS: usize = 4;
/// How often it checks.
const REDIAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Notes that a connected peer was used now (for [`trim`]).
fn touch(last_used: &mut HashMap<PeerId, Instant>, peer: PeerId) {
    if let Some(t) = last_used.get_mut(&peer) {
        *t = Instant::now();
    }
}

fn node(peer: &PeerId) -> Option<NodeId> {
    super::peer::node_id(peer).ok()
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
        setup: Setup,
    ) -> Self {
        let Setup {
            bootstrap,
            target_connections,
            reach_tx,
            relays,
            declared_external,
            only_global_ips,
        } = setup;
        let configured_relays = relays
            .into_iter()
            .filter_map(|a| match a.iter().last() {
                Some(Protocol::P2p(peer)) => Some((peer, a)),
                _ => {
                    tracing::warn!(addr = %a, "a relay address must end in /p2p/<id>; ignored");
                    None
                }
            })
            .collect();
        EventLoop {
            swarm,
            commands,
            events,
            cancel,
            pending_market: HashMap::new(),
            frames_out: HashMap::new(),
            outbox: HashMap::new(),
            inbound_batches: FuturesUnordered::new(),
            frames_in: 0,
            pending_content: HashMap::new(),
            sending: HashMap::new(),
            pending_providers: HashMap::new(),
            stats: Stats::default(),
            bootstrapped: bootstrap.is_empty(),
            bootstrap,
            blocked: HashSet::new(),
            target_connections,
            last_used: HashMap::new(),
            flood: flood::FloodGuard::default(),
            told: told::Told::default(),
            reach_tx,
            configured_relays,
            reservations: HashMap::new(),
            relays_held: BTreeSet::new(),
            relayed_drops: VecDeque::new(),
            relay_candidates: HashMap::new(),
            conns: HashMap::new(),
            remote: HashMap::new(),
            verdict: reach::Verdict::default(),
            declared_external,
            only_global_ips,
            next_liveness_check: None,
        }
    }

    /// The node's reachability now.
    fn reachability(&self) -> Reachability {
        let probed = self
            .swarm
            .behaviour()
            .autonat
            .is_enabled()
            .then(|| self.verdict.reachability());
        reach::reachability(probed, self.declared_external)
    }

    /// Asks for the relay reservations the node lacks (see
    /// [`reach::relays_to_ask`]): listening on a relay's circuit address
    /// makes the relay client dial it and reserve a slot.
    fn reserve_relays(&mut self) {
        let held: BTreeSet<PeerId> = self.reservations.values().copied().collect();
        let ask = reach::relays_to_ask(
            self.reachability(),
            &self.configured_relays,
            &held,
            &self.relay_candidates,
        );
        for (relay, addr) in ask {
            let mut circuit = addr;
            if !matches!(circuit.iter().last(), Some(Protocol::P2p(_))) {
                circuit.push(Protocol::P2p(relay));
            }
            circuit.push(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::info!(%circuit, "asking the relay for a reservation");
                    self.reservations.insert(id, relay);
                }
                Err(e) => tracing::debug!(%circuit, error = %e, "cannot listen through the relay"),
            }
        }
    }

    /// Publishes how the node is reached, when it changed.
    fn publish_reach(&mut self) {
        let now = Reach {
            reachability: self.reachability(),
            relays: self.relays_held.iter().filter_map(node).collect(),
            external: self.swarm.external_addresses().cloned().collect(),
            relayed: self
                .conns
                .iter()
                .filter(|(_, c)| !c.is_empty() && c.values().all(|relayed| *relayed))
                .filter_map(|(p, _)| node(p))
                .collect(),
        };
        self.reach_tx.send_if_modified(|r| {
            let changed = *r != now;
            *r = now;
            changed
        });
    }

    /// Whether any connection to `peer` is relayed.
    fn relayed_to(&self, peer: &PeerId) -> bool {
        self.conns
            .get(peer)
            .is_some_and(|c| c.values().any(|relayed| *relayed))
    }

    /// A connection to `peer` was made: if the peer now has a direct one
    /// and a relayed one, the relayed ones go [`RELAYED_GRACE`] later (see
    /// [`Self::drop_relayed`]). Not at once: the peer may not have seen the
    /// direct connection yet (one side of a handshake ends before the
    /// other), and a request it sent in that moment would find no
    /// connection, dial the relayed address and be refused. Queued only
    /// once both exist, so that the grace counts from the direct one.
    fn replace_relayed(&mut self, peer: PeerId) {
        let both = self
            .conns
            .get(&peer)
            .is_some_and(|c| c.values().any(|r| *r) && c.values().any(|r| !*r));
        if both && !self.relayed_drops.iter().any(|(_, p)| *p == peer) {
            self.relayed_drops
                .push_back((Instant::now() + RELAYED_GRACE, peer));
        }
    }

    /// Closes the relayed connections whose grace has ended.
    fn drop_due_relayed(&mut self) {
        let now = Instant::now();
        while let Some(&(at, peer)) = self.relayed_drops.front()
            && at <= now
        {
            self.relayed_drops.pop_front();
            self.drop_relayed(&peer);
        }
    }

    /// A direct connection to `peer` exists: its relayed ones go, so that
    /// requests (and large transfers) take the direct path and the relay's
    /// slot is freed.
    fn drop_relayed(&mut self, peer: &PeerId) {
        let Some(c) = self.conns.get(peer) else { return };
        if !c.values().any(|relayed| !relayed) {
            return;
        }
        let relayed: Vec<ConnectionId> = c.iter().filter(|(_, r)| **r).map(|(id, _)| *id).collect();
        for id in relayed {
            self.swarm.close_connection(id);
        }
    }

    pub(crate) async fn run(mut self) {
        self.reserve_relays();
        let mut redial = tokio::time::interval(REDIAL);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let next_drop = self.relayed_drops.front().map(|(at, _)| *at);
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(c) => {
                        self.command(c);
                        // Whatever else is queued goes out with it.
                        for _ in 0..MAX_DRAIN {
                            let Ok(c) = self.commands.try_recv() else { break };
                            self.command(c);
                        }
                        self.flush_outbox();
                    }
                    None => break,
                },
                Some((channel, answers)) = self.inbound_batches.next(), if !self.inbound_batches.is_empty() => {
                    let answers = MarketResponse::Batch(answers);
                    hop_ran("out", &answers);
                    let _ = self.swarm.behaviour_mut().market.send_response(channel, answers);
                }
                ev = self.swarm.select_next_some() => self.event(ev).await,
                _ = tokio::time::sleep_until(next_drop.unwrap_or_else(Instant::now).into()), if next_drop.is_some() => {
                    self.drop_due_relayed();
                }
                _ = redial.tick() => {
                    self.bound_slow_sends();
                    self.heal();
                    self.trim();
                    self.reserve_relays();
                }
            }
        }
        tracing::debug!("network task stopped");
    }

    /// Tells the node how fast a large response went (see
    /// [`Event::Throughput`]).
    fn report_throughput(&self, (peer, since, len): (PeerId, Instant, usize), at_most: bool) {
        let Some(to) = node(&peer) else { return };
        let secs = since.elapsed().as_secs_f64().max(1e-6);
        let _ = self.events.try_send(Event::Throughput {
            peer: to,
            bytes_per_s: len as f64 / secs,
            at_most,
        });
    }

    /// A large response still unsent after [`SLOW_SEND`] bounds the rate to
    /// its peer before it ends: a link of 1 Mbit/s shows as such within
    /// seconds of the first large transfer, not a minute later.
    fn bound_slow_sends(&mut self) {
        for sent in self.sending.values() {
            if sent.1.elapsed() >= SLOW_SEND {
                self.report_throughput(*sent, true);
            }
        }
        // The swarm ends every response with an event; should one be
        // missed, its entry goes rather than bound the rate for ever.
        self.sending
            .retain(|_, (_, since, _)| since.elapsed() < FORGET_SEND);
    }

    /// A node that lost most of its peers (a partition healed, a restart of
    /// its neighbours) finds the network again through its bootstrap peers
    /// and those of its address book, and a fresh Kademlia walk, without
    /// anyone's help.
    fn heal(&mut self) {
        let connected = self.swarm.connected_peers().count();
        if connected >= MIN_PEERS || self.bootstrap.is_empty() {
            return;
        }
        for addr in self.bootstrap.clone() {
            let peer = addr.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(id) => Some(id),
                _ => None,
            });
            let known = match peer {
                Some(p) => {
                    self.swarm.is_connected(&p)
                        || self.blocked.contains(&p)
                        || self.flood.is_cut(&p, Instant::now())
                }
                None => connected > 0,
            };
            if !known {
                self.stats.dials += 1;
                let _ = self.swarm.dial(addr);
            }
        }
        let _ = self.swarm.behaviour_mut().kad.bootstrap();
    }

    /// Closes the least recently used connections above the target that
    /// carry nothing (no mesh, no request in flight, not used lately).
    fn trim(&mut self) {
        if self.swarm.connected_peers().count() <= self.target_connections {
            return;
        }
        let now = Instant::now();
        let gossip = &self.swarm.behaviour().gossipsub;
        let mut protected: HashSet<PeerId> = gossip.all_mesh_peers().copied().collect();
        protected.extend(self.pending_market.values().map(|f| f.peer));
        protected.extend(self.outbox.keys().copied());
        protected.extend(self.pending_content.values().map(|(p, _)| *p));
        let mut topics: HashMap<&gossipsub::TopicHash, Vec<PeerId>> =
            gossip.topics().map(|t| (t, Vec::new())).collect();
        for (peer, subscribed) in gossip.all_peers() {
            for t in subscribed {
                if let Some(list) = topics.get_mut(t) {
                    list.push(*peer);
                }
            }
        }
        let facts = trim::Facts {
            connected: self
                .swarm
                .connected_peers()
                .map(|p| (*p, self.last_used.get(p).copied().unwrap_or(now)))
                .collect(),
            protected,
            topics: topics.into_values().collect(),
        };
        let victims = trim::victims(&facts, self.target_connections, trim::PER_TOPIC, trim::GRACE, now);
        for peer in victims {
            tracing::debug!(%peer, "trimming an unused connection");
            self.stats.connections_trimmed += 1;
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Peers in the routing table with their addresses, connected ones
    /// first, one address each (the first the table holds), at most
    /// `most`.
    fn address_book(&mut self, most: usize) -> Vec<libp2p::Multiaddr> {
        let mut entries: Vec<(bool, PeerId, libp2p::Multiaddr)> = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for e in bucket.iter() {
                let peer = *e.node.key.preimage();
                if let Some(addr) = e.node.value.iter().next() {
                    let connected = e.status == kad::NodeStatus::Connected;
                    entries.push((connected, peer, addr.clone()));
                }
            }
        }
        entries.sort_by_key(|(connected, peer, _)| (!connected, *peer));
        entries
            .into_iter()
            .filter(|(_, peer, _)| !self.blocked.contains(peer))
            .take(most)
            .map(|(_, peer, addr)| {
                if addr
                    .iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                {
                    addr
                } else {
                    addr.with(libp2p::multiaddr::Protocol::P2p(peer))
                }
            })
            .collect()
    }

    fn touch(&mut self, peer: PeerId) {
        touch(&mut self.last_used, peer);
    }

    /// Hands an event to the node. Gossip is dropped when the node is busy
    /// (gossipsub retransmits and adverts are periodic); everything else
    /// waits for room, which applies back-pressure to the swarm.
    async fn emit(&mut self, ev: Event) {
        let _ = self.events.send(ev).await;
    }

    fn command(&mut self, cmd: Command) {
        let b = self.swarm.behaviour_mut();
        match cmd {
            Command::Publish { topic, data, reply } => {
                let r = b.gossipsub.publish(gossipsub::IdentTopic::new(topic), data);
                let r = match r {
                    Ok(_) | Err(gossipsub::PublishError::Duplicate) => Ok(()),
                    // Nobody to send to yet is not an error for periodic adverts.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(()),
                    Err(e) => Err(NetworkError::Publish(e.to_string())),
                };
                let _ = reply.send(r);
            }
            Command::Subscribe { topic } => {
                if let Err(e) = b.gossipsub.subscribe(&gossipsub::IdentTopic::new(&topic)) {
                    tracing::warn!(%topic, error = %e, "subscribe failed");
                }
            }
            Command::Unsubscribe { topic } => {
                b.gossipsub.unsubscribe(&gossipsub::IdentTopic::new(topic));
            }
            Command::Report {
                id,
                source,
                acceptance,
            } => {
                b.gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::Market { peer, request, reply } => {
                if let agora_protocol::rpc::MarketRequest::Accept { content, .. }
                | agora_protocol::rpc::MarketRequest::Order { content, .. } = &request
                {
                    self.stats.content_sent_bytes += content.iter().map(|b| b.0.len() as u64).sum::<u64>();
                }
                self.outbox.entry(peer).or_default().push((request, reply));
            }
            Command::Turn(o) => self.turn(*o),
            Command::RespondMarket { channel, response } => {
                hop_ran("out", &response);
                let _ = b.market.send_response(channel, response);
            }
            Command::Fetch { peer, request, reply } => {
                let id = b.content.send_request(&peer, request);
                self.pending_content.insert(id, (peer, reply));
                self.touch(peer);
            }
            Command::RespondContent { channel, response } => {
                let len = match &response {
                    ContentResponse::Found(blob) | ContentResponse::Slice(blob) => blob.0.len(),
                    ContentResponse::NotFound => 0,
                };
                self.stats.content_sent_bytes += len as u64;
                if b.content.send_response(channel.channel, response).is_ok()
                    && len >= super::MIN_THROUGHPUT_SAMPLE
                    && self.sending.len() < MAX_TIMED_SENDS
                {
                    self.sending
                        .insert(channel.id, (channel.peer, Instant::now(), len));
                }
            }
            Command::AddAddress { peer, addr } => self.add_address(peer, addr),
            Command::Dial { addr } => {
                self.stats.dials += 1;
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::debug!(%addr, error = %e, "dial failed");
                }
            }
            Command::StartProviding { key } => {
                if let Err(e) = b.kad.start_providing(kad::RecordKey::new(&key)) {
                    // The store is full of this node's announcements: it
                    // still serves what it holds to whoever asks.
                    tracing::debug!(error = %e, "cannot register as DHT provider");
                }
            }
            Command::GetProviders { key, reply } => {
                let id = b.kad.get_providers(kad::RecordKey::new(&key));
                self.pending_providers.insert(id, (HashSet::new(), reply));
            }
            Command::AddressBook { most, reply } => {
                let _ = reply.send(self.address_book(most));
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Stats { reply } => {
                let mut s = self.stats.clone();
                s.connected = self.swarm.connected_peers().count();
                s.relayed_connections = self
                    .conns
                    .values()
                    .flat_map(|c| c.values())
                    .filter(|r| **r)
                    .count();
                let gossip = &self.swarm.behaviour().gossipsub;
                s.mesh_peers = gossip.all_mesh_peers().count();
                s.mesh_links = gossip.topics().map(|t| gossip.mesh_peers(t).count()).sum();
                s.flooders_refused = self.flood.cut_count(Instant::now());
                let _ = reply.send(s);
            }
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Block { peers } => {
                for p in &peers {
                    let _ = self.swarm.disconnect_peer_id(*p);
                }
                self.blocked = peers;
            }
        }
    }

    /// Carries out what the node gathered in one turn.
    fn turn(&mut self, o: super::Outbox) {
        for (peer, request, reply) in o.requests {
            self.outbox.entry(peer).or_default().push((request, reply));
        }
        let b = self.swarm.behaviour_mut();
        for (channel, response) in o.responses {
            hop_ran("out", &response);
            let _ = b.market.send_response(channel, response);
        }
        let now = Instant::now();
        let mut flooders = Vec::new();
        for (id, source, acceptance) in o.reports {
            if !matches!(acceptance, gossipsub::MessageAcceptance::Accept) && self.flood.useless(source, now)
            {
                flooders.push(source);
            }
            b.gossipsub
                .report_message_validation_result(&id, &source, acceptance);
        }
        for peer in flooders {
            tracing::info!(%peer, "cutting off a gossip neighbour that floods");
            self.stats.flooders_cut += 1;
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let b = self.swarm.behaviour_mut();
        for (topic, data) in o.publish {
            match b.gossipsub.publish(gossipsub::IdentTopic::new(&topic), data) {
                Ok(_)
                | Err(gossipsub::PublishError::Duplicate)
                | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                Err(e) => tracing::debug!(%topic, error = %e, "publish failed"),
            }
        }
        for (peer, addr) in o.addresses {
            self.add_address(peer, addr);
        }
        for addr in o.dials {
            self.stats.dials += 1;
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "dial failed");
            }
        }
    }

    /// Tells Kademlia and the swarm's behaviours where `peer` is, unless
    /// that was told a moment ago (see [`told`]).
    fn add_address(&mut self, peer: PeerId, addr: Multiaddr) {
        if !self.told.tell(&peer, &addr, Instant::now()) {
            return;
        }
        self.swarm
            .behaviour_mut()
            .learn_address(&peer, addr.clone(), false);
        self.swarm.add_peer_address(peer, addr);
    }

    /// Sends the queued market requests of every peer with room for them
    /// (see [`MAX_FRAMES_IN_FLIGHT`]): each peer's in as few frames as fit.
    fn flush_outbox(&mut self) {
        let ready: Vec<PeerId> = self
            .outbox
            .keys()
            .filter(|p| {
                // Not connected: one dial serves them all, and a failed
                // dial fails them all at once.
                !self.swarm.is_connected(p)
                    || self.frames_out.get(p).copied().unwrap_or(0) < MAX_FRAMES_IN_FLIGHT
            })
            .copied()
            .collect();
        for peer in ready {
            self.flush_peer(peer);
        }
    }

    /// A market frame to `peer` was answered or failed: what waits for it
    /// goes now.
    fn settled(&mut self, request_id: &OutboundRequestId) -> Option<InFlight> {
        let f = self.pending_market.remove(request_id)?;
        if let Some(n) = self.frames_out.get_mut(&f.peer) {
            *n -= 1;
            if *n == 0 {
                self.frames_out.remove(&f.peer);
            }
        }
        if self.outbox.contains_key(&f.peer) {
            self.flush_peer(f.peer);
        }
        Some(f)
    }

    /// Frame `id` to `f.peer` was sent.
    fn in_flight(&mut self, id: OutboundRequestId, f: InFlight) {
        *self.frames_out.entry(f.peer).or_default() += 1;
        self.pending_market.insert(id, f);
    }

    /// Sends everything queued for `peer`, in as few frames as fit.
    fn flush_peer(&mut self, peer: PeerId) {
        let Some(queued) = self.outbox.remove(&peer) else {
            return;
        };
        let (requests, waiters): (Vec<_>, Vec<_>) = queued.into_iter().unzip();
        let mut waiters: Vec<Option<MarketWaiter>> = waiters.into_iter().map(Some).collect();
        for (frame, idx) in MarketRequest::group(requests) {
            let mut w: Vec<MarketWaiter> = idx.iter().filter_map(|&i| waiters[i].take()).collect();
            let waiting = if matches!(frame, MarketRequest::Batch(_)) {
                self.stats.batches_sent += 1;
                self.stats.batched_requests += w.len() as u64;
                Waiting::Batch(w)
            } else {
                self.stats.single_requests += 1;
                match w.pop() {
                    Some(one) => Waiting::One(one),
                    None => continue,
                }
            };
            let resend = (self.relayed_to(&peer) || !self.swarm.is_connected(&peer)).then(|| frame.clone());
            tracing::debug!(target: "hop", "request out {}", frame.kinds());
            let id = self.swarm.behaviour_mut().market.send_request(&peer, frame);
            self.in_flight(
                id,
                InFlight {
                    peer,
                    waiting,
                    resend,
                },
            );
        }
        touch(&mut self.last_used, peer);
    }

    /// Hands each part of an inbound batch to the node and answers the
    /// batch when every part is answered. A part the node cannot take now
    /// is declined at once, like a lone request would be.
    fn inbound_batch(
        &mut self,
        from: NodeId,
        items: Vec<MarketRequest>,
        channel: request_response::ResponseChannel<MarketResponse>,
    ) {
        let mut parts = Vec::with_capacity(items.len());
        let frame = self.frames_in;
        self.frames_in += 1;
        for request in items {
            let (tx, rx) = oneshot::channel();
            let ev = Event::Market {
                peer: from,
                request,
                channel: Reply(ReplyTo::Part(tx, frame)),
            };
            match self.events.try_send(ev) {
                Ok(()) => parts.push(Ok(rx)),
                Err(_) => {
                    self.stats.market_overload += 1;
                    parts.push(Err(MarketResponse::Declined(Decline::NotAccepting)));
                }
            }
        }
        self.inbound_batches.push(
            async move {
                let mut answers = Vec::with_capacity(parts.len());
                for p in parts {
                    answers.push(match p {
                        Ok(rx) => rx
                            .await
                            .unwrap_or_else(|_| MarketResponse::Declined(Decline::invalid("not answered"))),
                        Err(now) => now,
                    });
                }
                (channel, answers)
            }
            .boxed(),
        );
    }

    async fn event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.emit(Event::Listening { addr: address }).await;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if self.blocked.contains(&peer_id) || self.flood.is_cut(&peer_id, Instant::now()) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                self.stats.connections_opened += 1;
                self.last_used.insert(peer_id, Instant::now());
                self.conns
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id, endpoint.is_relayed());
                if !endpoint.is_relayed() {
                    let remote = endpoint.get_remote_address();
                    let listen: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
                    if reach::witness(remote, &listen, self.only_global_ips)
                        && let Some(autonat) = self.swarm.behaviour_mut().autonat.as_mut()
                    {
                        autonat.add_server(peer_id, None);
                    }
                    self.remote.insert(peer_id, remote.clone());
                }
                self.replace_relayed(peer_id);
                self.publish_reach();
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    self.swarm.behaviour_mut().learn_address(&peer_id, addr, false);
                }
                if !self.bootstrapped {
                    self.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                }
                if num_established.get() == 1
                    && let Some(peer) = node(&peer_id)
                {
                    self.emit(Event::Connected { peer }).await;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(c) = self.conns.get_mut(&peer_id) {
                    c.remove(&connection_id);
                }
                if num_established == 0 {
                    self.told.forget(&peer_id);
                    self.last_used.remove(&peer_id);
                    self.flood.forget(&peer_id);
                    self.conns.remove(&peer_id);
                    self.remote.remove(&peer_id);
                    self.relay_candidates.remove(&peer_id);
                    if let Some(autonat) = self.swarm.behaviour_mut().autonat.as_mut() {
                        autonat.remove_server(&peer_id);
                    }
                }
                self.publish_reach();
                if num_established == 0
                    && let Some(peer) = node(&peer_id)
                {
                    self.emit(Event::Disconnected { peer }).await;
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.emit(Event::ListenClosed { addr: address }).await;
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                addresses,
            } => {
                for addr in addresses {
                    self.emit(Event::ListenClosed { addr }).await;
                }
                if let Some(relay) = self.reservations.remove(&listener_id) {
                    tracing::info!(%relay, ?reason, "relay reservation ended");
                    self.relays_held.remove(&relay);
                    self.publish_reach();
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                self.publish_reach();
            }
            SwarmEvent::ExternalAddrExpired { .. } => self.publish_reach(),
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer), ..
            } => {
                self.told.forget(&peer);
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                    self.stats.connections_refused += 1;
                }
            }
            SwarmEvent::Behaviour(ev) => self.behaviour_event(ev).await,
            _ => {}
        }
    }

    async fn behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let ev = Event::Gossip {
                    id: message_id.clone(),
                    source: propagation_source,
                    author: message.source.as_ref().and_then(node),
                    topic: message.topic.as_str().to_owned(),
                    data: message.data,
                };
                if self.events.try_send(ev).is_err() {
                    self.stats.gossip_dropped += 1;
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            gossipsub::MessageAcceptance::Ignore,
                        );
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic, .. }) => {
                if let Some(peer) = node(&peer_id) {
                    let _ = self.events.try_send(Event::Subscribed {
                        peer,
                        topic: topic.as_str().to_owned(),
                    });
                }
            }
            BehaviourEvent::Gossipsub(_) => {}
            BehaviourEvent::Market(ev) => self.market_event(ev).await,
            BehaviourEvent::Content(ev) => self.content_event(ev).await,
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let direct = |a: &Multiaddr| !a.iter().any(|p| p == Protocol::P2pCircuit);
                if info.protocols.contains(&relay::HOP_PROTOCOL_NAME)
                    && let Some(addr) = info.listen_addrs.iter().find(|a| direct(a))
                {
                    self.relay_candidates.insert(peer_id, addr.clone());
                }
                let b = self.swarm.behaviour_mut();
                for addr in info.listen_addrs {
                    b.learn_address(&peer_id, addr, false);
                }
                self.reserve_relays();
            }
            BehaviourEvent::Autonat(autonat::Event::OutboundProbe(probe)) => {
                let (peer, ok) = match probe {
                    autonat::OutboundProbeEvent::Response { peer, address, .. } => {
                        tracing::info!(%peer, %address, "a peer dialled this node back");
                        (peer, true)
                    }
                    autonat::OutboundProbeEvent::Error {
                        peer: Some(peer),
                        error: autonat::OutboundProbeError::Response(autonat::ResponseError::DialError),
                        ..
                    } => {
                        tracing::info!(%peer, "a peer could not dial this node back");
                        (peer, false)
                    }
                    _ => return,
                };
                let before = self.reachability();
                let listen: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
                self.verdict.probed(self.remote.get(&peer), &listen, ok);
                let now = self.reachability();
                if now != before {
                    tracing::info!(reachability = %now, "reachability from outside changed");
                    self.emit(Event::Reachability(now)).await;
                }
                self.publish_reach();
                self.reserve_relays();
            }
            BehaviourEvent::Autonat(_) => {}
            BehaviourEvent::Relay(_) => {}
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            }) => {
                tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                self.relays_held.insert(relay_peer_id);
                self.publish_reach();
            }
            BehaviourEvent::RelayClient(_) => {}
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "direct connection made through hole punching");
                    self.stats.holes_punched += 1;
                    self.replace_relayed(remote_peer_id);
                }
                Err(e) => {
                    tracing::debug!(peer = %remote_peer_id, error = %e, "hole punching failed");
                    self.stats.holes_failed += 1;
                }
            },
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(peer) = node(&peer) {
                    let _ = self.events.try_send(Event::Rtt { peer, rtt });
                }
            }
            BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, step, .. }) => {
                if let kad::QueryResult::GetProviders(r) = result {
                    self.providers_progress(id, r, step.last);
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutablePeer { peer, address }) => {
                let now = Instant::now();
                let check = self.next_liveness_check.is_none_or(|t| now >= t);
                if self.swarm.behaviour_mut().learn_address(&peer, address, check) == Learned::Checking {
                    self.next_liveness_check = Some(now + LIVENESS_CHECK_EVERY);
                    self.stats.liveness_checks += 1;
                }
            }
            BehaviourEvent::Kad(_) => {}
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    let _ = self.swarm.dial(addr);
                }
            }
            BehaviourEvent::Mdns(_) => {}
            BehaviourEvent::Limits(_) => {}
        }
    }

    fn providers_progress(&mut self, id: kad::QueryId, r: kad::GetProvidersResult, last: bool) {
        let Some((found, _)) = self.pending_providers.get_mut(&id) else {
            return;
        };
        let mut done = last;
        match r {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => found.extend(providers),
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => done = true,
            Err(e) => {
                if let Some((found, reply)) = self.pending_providers.remove(&id) {
                    let _ = reply.send(if found.is_empty() {
                        Err(NetworkError::Dht(e.to_string()))
                    } else {
                        Ok(found)
                    });
                }
                return;
            }
        }
        if done && let Some((found, reply)) = self.pending_providers.remove(&id) {
            let _ = reply.send(Ok(found));
        }
    }

    async fn market_event(
        &mut self,
        ev: request_response::Event<agora_protocol::rpc::MarketRequest, MarketResponse>,
    ) {
        if let request_response::Event::Message { peer, .. } = &ev {
            self.touch(*peer);
        }
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    tracing::debug!(target: "hop", "request in {}", request.kinds());
                    let Some(from) = node(&peer) else {
                        let _ = self.swarm.behaviour_mut().market.send_response(
                            channel,
                            MarketResponse::Declined(Decline::invalid("not an ed25519 peer")),
                        );
                        return;
                    };
                    let request = match request {
                        MarketRequest::Batch(items) => return self.inbound_batch(from, items, channel),
                        r => r,
                    };
                    // Never block the swarm on a busy node: refuse instead.
                    match self.events.try_send(Event::Market {
                        peer: from,
                        request,
                        channel: Reply(ReplyTo::Alone(channel)),
                    }) {
                        Ok(()) => {}
                        Err(
                            mpsc::error::TrySendError::Full(Event::Market { channel, .. })
                            | mpsc::error::TrySendError::Closed(Event::Market { channel, .. }),
                        ) => {
                            self.stats.market_overload += 1;
                            if let Reply(ReplyTo::Alone(channel)) = channel {
                                let _ = self
                                    .swarm
                                    .behaviour_mut()
                                    .market
                                    .send_response(channel, MarketResponse::Declined(Decline::NotAccepting));
                            }
                        }
                        Err(_) => {}
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(f) = self.settled(&request_id) {
                        answer(&peer, f.waiting, response);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some(mut f) = self.settled(&request_id) {
                    // A relayed connection closed under the frame: send it
                    // again, on the direct connection that replaced it (or
                    // on a new one, dialled as for any request: the peer
                    // may close its side before this one has seen the
                    // direct connection). So too when the frame found no
                    // connection and its dial failed while the direct
                    // connection was being made, once that one is up. A
                    // repeat is answered as a repeat (SPEC §4.3).
                    let switching = match error {
                        request_response::OutboundFailure::ConnectionClosed => true,
                        request_response::OutboundFailure::DialFailure => self.swarm.is_connected(&peer),
                        _ => false,
                    };
                    if switching && let Some(frame) = f.resend.take() {
                        self.stats.market_resent += 1;
                        let id = self.swarm.behaviour_mut().market.send_request(&peer, frame);
                        self.in_flight(id, f);
                        return;
                    }
                    let e = request_error(&peer, error);
                    match f.waiting {
                        Waiting::One(w) => {
                            let _ = w.send(Err(e));
                        }
                        Waiting::Batch(ws) => {
                            for w in ws {
                                let _ = w.send(Err(e.clone()));
                            }
                        }
                    }
                }
            }
            request_response::Event::InboundFailure { .. } => self.stats.inbound_failures += 1,
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    async fn content_event(
        &mut self,
        ev: request_response::Event<agora_protocol::rpc::ContentRequest, ContentResponse>,
    ) {
        if let request_response::Event::Message { peer, .. } = &ev {
            self.touch(*peer);
        }
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request,
                    channel,
                    request_id,
                } => {
                    let Some(from) = node(&peer) else { return };
                    let channel = super::ContentReply {
                        id: request_id,
                        peer,
                        channel,
                    };
                    match self.events.try_send(Event::Content {
                        peer: from,
                        request,
                        channel,
                    }) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(Event::Content { channel, .. }))
                        | Err(mpsc::error::TrySendError::Closed(Event::Content { channel, .. })) => {
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .content
                                .send_response(channel.channel, ContentResponse::NotFound);
                        }
                        Err(_) => {}
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some((_, reply)) = self.pending_content.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some((_, reply)) = self.pending_content.remove(&request_id) {
                    let _ = reply.send(Err(request_error(&peer, error)));
                }
            }
            request_response::Event::InboundFailure { request_id, .. } => {
                // Not delivered in all that time: the rate is at most this.
                if let Some(sent) = self.sending.remove(&request_id) {
                    self.report_throughput(sent, true);
                }
                self.stats.inbound_failures += 1;
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                if let Some(sent) = self.sending.remove(&request_id) {
                    self.report_throughput(sent, false);
                }
            }
        }
    }
}

/// Logs at the `hop` target an answer that carries a run (`Ran`, alone or
/// in a batch) as it leaves or arrives, for `testnet/hops.py`.
fn hop_ran(way: &str, response: &MarketResponse) {
    let ran = |r: &MarketResponse| matches!(r, MarketResponse::Ran { .. });
    let carries = match response {
        MarketResponse::Batch(items) => items.iter().any(ran),
        r => ran(r),
    };
    if carries {
        tracing::debug!(target: "hop", "answer {way} Ran");
    }
}

/// Hands a market answer to whoever waits for it. A batch's answers go one
/// to each request; a batch declined as a whole (an overloaded peer) is
/// declined for each; any other mismatch is an error for all.
fn answer(peer: &PeerId, waiting: Waiting, response: MarketResponse) {
    hop_ran("in", &response);
    let mismatch = || NetworkError::Request {
        peer: peer.to_string(),
        reason: "answer does not match the request".into(),
    };
    match (waiting, response) {
        (Waiting::One(w), MarketResponse::Batch(_)) => {
            let _ = w.send(Err(mismatch()));
        }
        (Waiting::One(w), r) => {
            let _ = w.send(Ok(r));
        }
        (Waiting::Batch(ws), MarketResponse::Batch(rs)) if rs.len() == ws.len() => {
            for (w, r) in ws.into_iter().zip(rs) {
                let _ = w.send(Ok(r));
            }
        }
        (Waiting::Batch(ws), MarketResponse::Declined(d)) => {
            for w in ws {
                let _ = w.send(Ok(MarketResponse::Declined(d.clone())));
            }
        }
        (Waiting::Batch(ws), _) => {
            for w in ws {
                let _ = w.send(Err(mismatch()));
            }
        }
    }
}

fn request_error(peer: &PeerId, error: request_response::OutboundFailure) -> NetworkError {
    NetworkError::Request {
        peer: peer.to_string(),
        reason: error.to_string(),
    }
}

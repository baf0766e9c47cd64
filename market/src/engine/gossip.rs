//! What a node says to everyone and hears from everyone: its advert,
//! domain summaries, fraud proofs; and what it does about its connections
//! (whom to dial, whom to probe).

use std::time::Duration;

use agora_protocol::capacity::{Addr, Advert};
use agora_protocol::execution::Receipt;
use agora_protocol::fraud::FraudProof;
use agora_protocol::market::Assignment;
use agora_protocol::units::Timestamp;
use agora_protocol::{
    Decode, Domain, Encode, Envelope, FRAUD_TOPIC, MessageId, NodeId, TOPIC_PREFIX, Verified,
};

use super::{Engine, Output, Ran, Verdict, Work};
use crate::idle;
use crate::view::Rejected;

/// A peer dialed on its advert is not dialed again for this long.
const REDIAL_PEER: Duration = Duration::from_secs(30);
/// Fraud proofs re-executed at once.
const FRAUD_CHECKS: usize = 2;
/// Fraud proofs remembered as seen.
const FRAUD_SEEN: usize = 10_000;

impl Engine {
    /// A gossip message (`author`: the signer gossipsub authenticated, if
    /// any). The verdict goes back to gossipsub.
    pub fn on_gossip(&mut self, topic: &str, data: &[u8], author: Option<NodeId>, now: Timestamp) -> Verdict {
        let adverts = format!("{TOPIC_PREFIX}/adverts/");
        let summaries = format!("{TOPIC_PREFIX}/summaries/");
        if topic.starts_with(&adverts) {
            match self.view.on_advert(data, author, now) {
                Ok(node) => {
                    self.learn_addresses(node, now);
                    Verdict::Accept
                }
                Err(Rejected::Replayed { .. }) => Verdict::Ignore,
                Err(e) => {
                    tracing::debug!(error = %e, "advert rejected");
                    self.counters.gossip_rejected += 1;
                    Verdict::Reject
                }
            }
        } else if topic.starts_with(&summaries) {
            match self.view.on_summary(data, now) {
                Ok(d) => {
                    self.learn_contacts(&d);
                    Verdict::Accept
                }
                Err(Rejected::Replayed { .. }) => Verdict::Ignore,
                Err(_) => {
                    self.counters.gossip_rejected += 1;
                    Verdict::Reject
                }
            }
        } else if topic == FRAUD_TOPIC {
            self.on_fraud(data, now)
        } else {
            Verdict::Ignore
        }
    }

    /// Builds, signs and publishes this node's advert.
    pub(super) fn publish_advert(&mut self, now: Timestamp) {
        let t = &mut self.timers;
        t.advert_due = false;
        t.last_advert = now;
        t.advert_seq = t.advert_seq.max(now.0).saturating_add(1);
        let p = &self.provider;
        let advert = Advert {
            seq: t.advert_seq,
            domain: self.config.domain.clone(),
            cu: p.capacity(),
            calibrated_at: self.calibrated_at,
            memory: p.config().memory,
            slots: p.config().slots,
            free_slots: p.free_slots(),
            queued: p.load() as u32,
            load: idle::permille(self.load),
            accepting: p.accepting(),
            price: p.config().price,
            energy: p.config().energy,
            version: self.config.version.clone(),
            addrs: self
                .listen
                .iter()
                .take(agora_protocol::limits::MAX_ADDRS)
                .map(|a| Addr(a.clone()))
                .collect(),
            max_task_fuel: p.config().max_task_fuel,
            max_task_time: agora_protocol::units::Millis::from(p.config().max_task_time),
        };
        self.view.set_local_advert(advert.clone());
        if !p.config().enabled {
            return;
        }
        let env = self.seal(&advert, self.config.adverts.lifetime, now);
        self.out.push(Output::Publish {
            topic: self.config.domain.advert_topic(),
            data: env.to_bytes(),
        });
    }

    /// Publishes this node's domain summaries when it is elected to.
    pub(super) fn publish_summaries(&mut self, now: Timestamp) {
        self.timers.last_summary = now;
        let a = &self.config.adverts;
        if !self
            .view
            .is_summary_publisher(now, a.summary_interval, a.summary_publishers)
        {
            return;
        }
        let lifetime = a.lifetime.max(a.summary_interval * 3);
        for s in self.view.build_summaries(now) {
            let Some(parent) = s.domain.parent() else { continue };
            let env = self.seal(&s, lifetime, now);
            let data = env.to_bytes();
            self.view.insert_own_summary(s, env);
            self.out.push(Output::Publish {
                topic: parent.summary_topic(),
                data,
            });
        }
    }

    /// Connect to a domain's peers up to a target count (the gossip mesh is
    /// built from them, pings give round-trip times for placement); beyond
    /// it, addresses only: requests dial on demand, so a large domain does
    /// not become a full mesh of connections. The view holds this domain's
    /// peers only.
    fn learn_addresses(&mut self, node: NodeId, now: Timestamp) {
        let Some(p) = self.view.peer(&node) else { return };
        let addrs: Vec<String> = p.advert.addrs.iter().map(|a| a.0.clone()).collect();
        let domain_peers = self
            .connected
            .iter()
            .filter(|c| self.view.peer(c).is_some())
            .count();
        let dial = !self.connected.contains(&node)
            && domain_peers < self.config.domain_peers
            && self
                .dialed
                .get(&node)
                .is_none_or(|t| now.since(*t) >= REDIAL_PEER);
        if dial {
            if self.dialed.len() >= 4 * self.config.domain_peers {
                self.dialed.retain(|_, t| now.since(*t) < REDIAL_PEER);
            }
            self.dialed.insert(node, now);
        }
        self.out.push(Output::Locate {
            peer: node,
            addrs,
            dial,
        });
    }

    fn learn_contacts(&mut self, d: &Domain) {
        let Some(h) = self.view.summary(d) else { return };
        let contacts: Vec<(NodeId, Vec<String>)> = h
            .summary
            .contacts
            .iter()
            .map(|c| (c.node, c.addrs.iter().map(|a| a.0.clone()).collect()))
            .collect();
        for (peer, addrs) in contacts {
            self.out.push(Output::Locate {
                peer,
                addrs,
                dial: false,
            });
        }
    }

    fn on_fraud(&mut self, data: &[u8], now: Timestamp) -> Verdict {
        let Ok(env) = Envelope::from_bytes(data) else {
            return Verdict::Reject;
        };
        let Ok(v) = env.open::<FraudProof>(now) else {
            return Verdict::Reject;
        };
        let Ok(conflict) = v.payload().check() else {
            return Verdict::Reject;
        };
        if !self.fraud_seen.insert(env.id()) {
            return Verdict::Ignore;
        }
        if self.fraud_seen.len() > FRAUD_SEEN {
            self.fraud_seen.clear();
        }
        // Re-execute to see for ourselves, a few at a time.
        if self.fraud_checking.len() < FRAUD_CHECKS {
            let proof = v.payload().clone();
            let accused = if proof.guilty == 0 {
                &conflict.first
            } else {
                &conflict.second
            };
            let assignment = fraud_assignment(accused, &proof);
            self.fraud_checking.insert(env.id(), proof);
            self.out.push(Output::Run(Work::CheckFraud {
                proof: env.id(),
                publisher: v.signer(),
                assignment,
            }));
        }
        Verdict::Accept
    }

    /// A fraud proof's computation ran here: the accused is banned if its
    /// receipt is wrong and the other is right.
    pub fn on_fraud_checked(&mut self, proof: MessageId, result: Result<Ran, String>) {
        let Some(p) = self.fraud_checking.remove(&proof) else {
            return;
        };
        let Ok(conflict) = p.check() else { return };
        let (accused, other) = if p.guilty == 0 {
            (&conflict.first, &conflict.second)
        } else {
            (&conflict.second, &conflict.first)
        };
        let ran = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, "fraud proof could not be checked");
                return;
            }
        };
        let truth = ran.outcome();
        let outcome = |r: &Verified<Receipt>| {
            let r = r.payload();
            (r.output, r.fuel_used, r.exit.clone())
        };
        let guilty = outcome(accused) != truth && outcome(other) == truth;
        let detail = format!("re-execution gives output {}", truth.0);
        if guilty {
            self.counters.fraud_confirmed += 1;
            let culprit = accused.signer();
            tracing::warn!(culprit = %culprit, %detail, "fraud proof confirmed by re-execution: avoiding the provider");
            self.requester
                .ban(culprit, format!("fraud proof confirmed: {detail}"));
        } else {
            tracing::info!(%detail, "fraud proof not confirmed");
        }
    }

    /// A connection to `peer` was established.
    pub fn on_connected(&mut self, peer: NodeId) {
        self.connected.insert(peer);
    }

    /// The last connection to `peer` closed. A closed connection alone says
    /// little (idle ones are trimmed): ask whether the peer is still there
    /// only when a job waits on it.
    pub fn on_disconnected(&mut self, peer: NodeId) {
        self.connected.remove(&peer);
        if self.requester.depends_on(peer) && self.probing.insert(peer) {
            self.out.push(Output::Run(Work::Probe { peer }));
        }
    }

    /// Whether a probed peer answered.
    pub fn on_probe(&mut self, peer: NodeId, alive: bool, now: Timestamp) {
        self.probing.remove(&peer);
        if !alive && !self.connected.contains(&peer) {
            tracing::info!(peer = %peer.short(), "peer is gone; re-placing its tasks");
            self.requester.on_peer_down(peer, now);
        }
    }

    /// A peer subscribed to a topic. A newcomer in this domain gets this
    /// node's advert at once (publication is rate-limited); a peer already
    /// in the view that reconnects hears the next periodic advert:
    /// republishing to every reconnection would flood the domain.
    pub fn on_subscribed(&mut self, peer: NodeId, topic: &str) {
        if topic == self.config.domain.advert_topic() && self.view.peer(&peer).is_none() {
            self.timers.advert_due = true;
        }
    }

    /// The node listens on a new address.
    pub fn on_listening(&mut self, addr: String) {
        if !self.listen.contains(&addr) {
            self.listen.push(addr);
            self.timers.advert_due = true;
        }
    }

    /// A round-trip time measured to a peer.
    pub fn on_rtt(&mut self, peer: NodeId, rtt: Duration) {
        self.view.on_rtt(peer, rtt);
    }
}

/// What a fraud proof's accused receipt claims to have run.
fn fraud_assignment(accused: &Verified<Receipt>, proof: &FraudProof) -> Assignment {
    let r = accused.payload();
    Assignment {
        task: r.task,
        attempt: 0,
        module: r.module,
        input: r.input,
        args: proof.args.clone(),
        limits: agora_protocol::market::Limits {
            fuel: r.fuel_limit,
            memory: agora_protocol::units::Bytes::mib(256),
            timeout: agora_protocol::units::Millis(60_000),
            max_output: agora_protocol::units::Bytes(agora_protocol::limits::MAX_BLOB as u64),
        },
        seed: r.seed,
    }
}

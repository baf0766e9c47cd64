//! The node's view of the network: fresh adverts of the peers in its own
//! domain, summaries of other domains, and round-trip times. Sans-IO: fed
//! with verified-or-not bytes and the current time, it decides what to keep.
//!
//! Rules (SPEC.md §6):
//! * an advert is kept only if it verifies, is within its validity window,
//!   and its `seq` is higher than the one held for that node (so a replayed
//!   or reordered older advert is rejected);
//! * an advert drops out at its expiry;
//! * a summary is kept if it verifies, is fresh, and is newer than the one
//!   held for its domain;
//! * round-trip times are an exponentially weighted moving average.

use std::collections::HashMap;
use std::time::Duration;

use agora_protocol::capacity::{Advert, ChildSummary, Contact, DomainStats, DomainSummary};
use agora_protocol::limits::{MAX_CHILDREN, MAX_CONTACTS, MAX_ENVELOPE};
use agora_protocol::units::{ComputeUnits, Millis, Timestamp};
use agora_protocol::{Decode, Domain, Envelope, NodeId, OpenError};
use serde::Serialize;

/// Why an advert or summary was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// More bytes than any envelope may have.
    #[error("oversized: {0} bytes")]
    Oversized(usize),
    /// Not a well-formed envelope of the right type.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("forged: bad signature")]
    Forged,
    /// Outside its validity window.
    #[error("expired or not yet valid: {0}")]
    Expired(String),
    /// Not newer than what is held (a replay or a reordered message).
    #[error("replayed: seq {seq} is not newer than {held}")]
    Replayed {
        /// Its seq.
        seq: u64,
        /// The seq held.
        held: u64,
    },
    /// Signed by someone other than the gossip author (relay forging).
    #[error("signer does not match the gossip author")]
    WrongSigner,
}

impl Rejected {
    fn from_open(e: OpenError) -> Rejected {
        match e {
            OpenError::BadSignature => Rejected::Forged,
            OpenError::Expired { .. } | OpenError::FutureDated { .. } | OpenError::BadLifetime { .. } => {
                Rejected::Expired(e.to_string())
            }
            other => Rejected::Malformed(other.to_string()),
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Rejected::Oversized(_) => "oversized",
            Rejected::Malformed(_) => "malformed",
            Rejected::Forged => "forged",
            Rejected::Expired(_) => "expired",
            Rejected::Replayed { .. } => "replayed",
            Rejected::WrongSigner => "wrong_signer",
        }
    }
}

/// A peer as the view knows it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its node id.
    pub node: NodeId,
    /// Its latest advert.
    pub advert: Advert,
    /// When that advert expires.
    pub expires_at: Timestamp,
    /// When it arrived.
    pub received_at: Timestamp,
}

/// A domain summary as held.
#[derive(Debug, Clone)]
pub struct HeldSummary {
    /// The summary.
    pub summary: DomainSummary,
    /// The signed envelope (forwarded on request).
    pub envelope: Envelope,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// Counters of the view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// Adverts accepted.
    pub adverts_accepted: u64,
    /// Adverts rejected, by reason.
    pub adverts_rejected: HashMap<&'static str, u64>,
    /// Summaries accepted.
    pub summaries_accepted: u64,
    /// Summaries rejected, by reason.
    pub summaries_rejected: HashMap<&'static str, u64>,
    /// Peers dropped because their advert expired.
    pub peers_expired: u64,
}

/// Round-trip time smoothing factor.
const RTT_ALPHA: f64 = 0.3;

/// The view. See the module docs.
#[derive(Debug)]
pub struct View {
    local: NodeId,
    domain: Domain,
    peers: HashMap<NodeId, Peer>,
    summaries: HashMap<Domain, HeldSummary>,
    rtt: HashMap<NodeId, Duration>,
    local_advert: Option<Advert>,
    metrics: Metrics,
    max_peers: usize,
}

impl View {
    /// An empty view for `local` in `domain`, holding at most `max_peers`.
    pub fn new(local: NodeId, domain: Domain, max_peers: usize) -> View {
        View {
            local,
            domain,
            peers: HashMap::new(),
            summaries: HashMap::new(),
            rtt: HashMap::new(),
            local_advert: None,
            metrics: Metrics::default(),
            max_peers,
        }
    }

    /// The local node's domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The local node's id.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Records the local node's own advert (it is not gossiped back to us).
    pub fn set_local_advert(&mut self, advert: Advert) {
        self.local_advert = Some(advert);
    }

    /// The local node's own advert.
    pub fn local_advert(&self) -> Option<&Advert> {
        self.local_advert.as_ref()
    }

    /// Handles advert bytes from gossip. `author` is the gossip author, when
    /// the gossip layer authenticated one (it must then be the signer); the
    /// node's gossip is anonymous and passes none, the envelope's signature
    /// being the authentication.
    pub fn on_advert(
        &mut self,
        data: &[u8],
        author: Option<NodeId>,
        now: Timestamp,
    ) -> Result<NodeId, Rejected> {
        let r = self.accept_advert(data, author, now);
        match &r {
            Ok(_) => self.metrics.adverts_accepted += 1,
            Err(e) => *self.metrics.adverts_rejected.entry(e.label()).or_default() += 1,
        }
        r
    }

    fn accept_advert(
        &mut self,
        data: &[u8],
        author: Option<NodeId>,
        now: Timestamp,
    ) -> Result<NodeId, Rejected> {
        if data.len() > MAX_ENVELOPE {
            return Err(Rejected::Oversized(data.len()));
        }
        let env = Envelope::from_bytes(data).map_err(|e| Rejected::Malformed(e.to_string()))?;
        let v = env.open::<Advert>(now).map_err(Rejected::from_open)?;
        let node = v.signer();
        if author.is_some_and(|a| a != node) {
            return Err(Rejected::WrongSigner);
        }
        if node == self.local {
            return Err(Rejected::Replayed {
                seq: v.payload().seq,
                held: v.payload().seq,
            });
        }
        if let Some(p) = self.peers.get(&node) {
            if v.payload().seq <= p.advert.seq {
                return Err(Rejected::Replayed {
                    seq: v.payload().seq,
                    held: p.advert.seq,
                });
            }
        } else if self.peers.len() >= self.max_peers {
            // Full: make room only by dropping what has expired.
            self.expire(now);
            if self.peers.len() >= self.max_peers {
                return Err(Rejected::Malformed("view is full".into()));
            }
        }
        let expires_at = v.expires_at();
        self.peers.insert(
            node,
            Peer {
                node,
                advert: v.into_payload(),
                expires_at,
                received_at: now,
            },
        );
        Ok(node)
    }

    /// Handles summary bytes from gossip or a summaries response.
    pub fn on_summary(&mut self, data: &[u8], now: Timestamp) -> Result<Domain, Rejected> {
        Envelope::from_bytes(data)
            .map_err(|e| Rejected::Malformed(e.to_string()))
            .and_then(|env| self.on_summary_envelope(&env, now))
    }

    /// Handles a summary envelope.
    pub fn on_summary_envelope(&mut self, env: &Envelope, now: Timestamp) -> Result<Domain, Rejected> {
        let r = self.accept_summary(env, now);
        match &r {
            Ok(_) => self.metrics.summaries_accepted += 1,
            Err(e) => *self.metrics.summaries_rejected.entry(e.label()).or_default() += 1,
        }
        r
    }

    fn accept_summary(&mut self, env: &Envelope, now: Timestamp) -> Result<Domain, Rejected> {
        if env.encoded_len() > MAX_ENVELOPE {
            return Err(Rejected::Oversized(env.encoded_len()));
        }
        let v = env.open::<DomainSummary>(now).map_err(Rejected::from_open)?;
        let domain = v.payload().domain.clone();
        if let Some(h) = self.summaries.get(&domain)
            && v.payload().seq <= h.summary.seq
        {
            return Err(Rejected::Replayed {
                seq: v.payload().seq,
                held: h.summary.seq,
            });
        }
        if self.summaries.len() >= self.max_peers && !self.summaries.contains_key(&domain) {
            self.expire(now);
            if self.summaries.len() >= self.max_peers {
                return Err(Rejected::Malformed("view is full".into()));
            }
        }
        let expires_at = v.expires_at();
        self.summaries.insert(
            domain.clone(),
            HeldSummary {
                summary: v.into_payload(),
                envelope: env.clone(),
                expires_at,
            },
        );
        Ok(domain)
    }

    /// Stores a summary this node published itself (gossip does not echo).
    pub fn insert_own_summary(&mut self, summary: DomainSummary, envelope: Envelope) {
        let expires_at = envelope.expires_at();
        self.summaries.insert(
            summary.domain.clone(),
            HeldSummary {
                summary,
                envelope,
                expires_at,
            },
        );
    }

    /// Records a round-trip time sample.
    pub fn on_rtt(&mut self, peer: NodeId, rtt: Duration) {
        let e = self.rtt.entry(peer).or_insert(rtt);
        *e = Duration::from_secs_f64(e.as_secs_f64() * (1.0 - RTT_ALPHA) + rtt.as_secs_f64() * RTT_ALPHA);
    }

    /// The smoothed round-trip time to a peer, if measured.
    pub fn rtt(&self, peer: &NodeId) -> Option<Duration> {
        self.rtt.get(peer).copied()
    }

    /// Forgets a peer (e.g. after it was found cheating, or disconnected
    /// for good).
    pub fn remove(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
    }

    /// Drops expired adverts and summaries; returns the peers dropped.
    pub fn expire(&mut self, now: Timestamp) -> Vec<NodeId> {
        let gone: Vec<NodeId> = self
            .peers
            .values()
            .filter(|p| p.expires_at <= now)
            .map(|p| p.node)
            .collect();
        for g in &gone {
            self.peers.remove(g);
            self.rtt.remove(g);
        }
        self.metrics.peers_expired += gone.len() as u64;
        self.summaries.retain(|_, s| s.expires_at > now);
        gone
    }

    /// Every peer with a fresh advert.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// A peer's entry.
    pub fn peer(&self, node: &NodeId) -> Option<&Peer> {
        self.peers.get(node)
    }

    /// Number of peers held.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is held.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Every summary held.
    pub fn summaries(&self) -> impl Iterator<Item = &HeldSummary> {
        self.summaries.values()
    }

    /// The summary held for a domain.
    pub fn summary(&self, domain: &Domain) -> Option<&HeldSummary> {
        self.summaries.get(domain)
    }

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Figures of the local domain computed from the adverts held (and the
    /// local node's own).
    pub fn local_domain_stats(&self) -> DomainStats {
        let mut s = DomainStats::default();
        let own = self.local_advert.iter().map(|a| (a, Duration::ZERO));
        let others = self
            .peers
            .values()
            .filter(|p| p.advert.domain == self.domain)
            .map(|p| (&p.advert, self.rtt(&p.node).unwrap_or(Duration::from_millis(1))));
        for (a, rtt) in own.chain(others) {
            let free_cu = if a.slots == 0 || !a.accepting {
                0
            } else {
                a.cu.0.saturating_mul(u64::from(a.free_slots.min(a.slots))) / u64::from(a.slots)
            };
            s.merge(&DomainStats {
                nodes: 1,
                total_cu: a.cu,
                free_cu: ComputeUnits(free_cu),
                free_slots: if a.accepting { a.free_slots } else { 0 },
                price_min: a.price,
                price_max: a.price,
                best_rtt: Millis::from(rtt),
            });
        }
        s
    }

    /// Whether this node is one of the `publishers` elected to summarise
    /// its domain in the period containing `now` (rendezvous hashing over
    /// the members it sees; SPEC.md §6.3). Every member computes the same
    /// ranking from the same membership, and a publisher that disappears
    /// drops out of everyone's view at its advert's expiry, so no single
    /// node is needed for summaries to flow.
    pub fn is_summary_publisher(&self, now: Timestamp, period: Duration, publishers: usize) -> bool {
        let epoch = now.0 / (period.as_millis().max(1) as u64);
        let rank = |n: &NodeId| {
            let mut h = blake3::Hasher::new();
            h.update(self.domain.as_str().as_bytes());
            h.update(&epoch.to_le_bytes());
            h.update(n.as_bytes());
            *h.finalize().as_bytes()
        };
        let mine = rank(&self.local);
        let better = self
            .peers
            .values()
            .filter(|p| p.advert.domain == self.domain)
            .filter(|p| rank(&p.node) < mine)
            .count();
        better < publishers
    }

    /// The summaries this node should publish, innermost domain first: its
    /// own domain from the adverts it holds, then each ancestor below the
    /// root from the freshest summaries of that ancestor's children.
    pub fn build_summaries(&self, now: Timestamp) -> Vec<DomainSummary> {
        let mut out = Vec::new();
        let own_stats = self.local_domain_stats();
        let mut members: Vec<(&NodeId, &Advert)> = self
            .peers
            .values()
            .filter(|p| p.advert.domain == self.domain)
            .map(|p| (&p.node, &p.advert))
            .collect();
        if let Some(a) = &self.local_advert {
            members.push((&self.local, a));
        }
        members.sort_by_key(|(n, a)| (std::cmp::Reverse(a.cu.0 * u64::from(a.free_slots)), **n));
        let contacts: Vec<Contact> = members
            .iter()
            .take(MAX_CONTACTS)
            .map(|(n, a)| Contact {
                node: **n,
                addrs: a.addrs.clone(),
            })
            .collect();
        let leaf = DomainSummary {
            domain: self.domain.clone(),
            seq: now.0,
            stats: own_stats,
            contacts,
            children: self.children_of(&self.domain),
        };
        let mut below = leaf.clone();
        out.push(leaf);
        let mut cur = self.domain.parent();
        while let Some(d) = cur {
            if d.is_root() {
                break;
            }
            // Children of `d`: the fresh summaries held for them, with the
            // one just built replacing any older copy of itself.
            let mut children: HashMap<Domain, (DomainStats, Vec<Contact>)> = self
                .summaries
                .values()
                .filter(|s| s.summary.domain.parent().as_ref() == Some(&d))
                .map(|s| {
                    (
                        s.summary.domain.clone(),
                        (s.summary.stats.clone(), s.summary.contacts.clone()),
                    )
                })
                .collect();
            children.insert(
                below.domain.clone(),
                (below.stats.clone(), below.contacts.clone()),
            );
            let mut stats = DomainStats::default();
            let mut contacts = Vec::new();
            let mut kids: Vec<_> = children.into_iter().collect();
            kids.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, (s, c)) in &kids {
                stats.merge(s);
                contacts.extend(c.iter().cloned());
            }
            contacts.truncate(MAX_CONTACTS);
            let summary = DomainSummary {
                domain: d.clone(),
                seq: now.0,
                stats,
                contacts,
                children: kids
                    .into_iter()
                    .take(MAX_CHILDREN)
                    .map(|(domain, (stats, _))| ChildSummary { domain, stats })
                    .collect(),
            };
            below = summary.clone();
            out.push(summary);
            cur = d.parent();
        }
        out
    }

    fn children_of(&self, d: &Domain) -> Vec<ChildSummary> {
        let mut kids: Vec<ChildSummary> = self
            .summaries
            .values()
            .filter(|s| s.summary.domain.parent().as_ref() == Some(d))
            .map(|s| ChildSummary {
                domain: s.summary.domain.clone(),
                stats: s.summary.stats.clone(),
            })
            .collect();
        kids.sort_by(|a, b| a.domain.cmp(&b.domain));
        kids.truncate(MAX_CHILDREN);
        kids
    }

    /// Every domain this node knows of, with its figures: the summaries held,
    /// the children they list, and its own domain.
    pub fn domains(&self) -> Vec<(Domain, DomainStats)> {
        let mut all: HashMap<Domain, DomainStats> = HashMap::new();
        for s in self.summaries.values() {
            all.insert(s.summary.domain.clone(), s.summary.stats.clone());
            for c in &s.summary.children {
                all.entry(c.domain.clone()).or_insert_with(|| c.stats.clone());
            }
        }
        all.insert(self.domain.clone(), self.local_domain_stats());
        let mut v: Vec<_> = all.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The freshest summaries of `domain` and its direct children, for a
    /// summaries request.
    pub fn summaries_for(&self, domain: &Domain) -> Vec<Envelope> {
        self.summaries
            .values()
            .filter(|s| &s.summary.domain == domain || s.summary.domain.parent().as_ref() == Some(domain))
            .map(|s| s.envelope.clone())
            .take(agora_protocol::limits::MAX_SUMMARIES)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::units::{Bytes, EnergyRate, Fuel, Price};
    use agora_protocol::{Encode, Keypair, Nonce};

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn advert(seq: u64, domain: &str) -> Advert {
        Advert {
            seq,
            domain: domain.parse().unwrap(),
            cu: ComputeUnits(1000),
            calibrated_at: T0,
            memory: Bytes::mib(256),
            slots: 2,
            free_slots: 1,
            queued: 0,
            load: 0,
            accepting: true,
            price: Price(10),
            energy: EnergyRate(1),
            version: "agora/test".into(),
            addrs: vec![],
            max_task_fuel: Fuel(u64::MAX),
            max_task_time: Millis(3_600_000),
        }
    }

    fn signed(kp: &Keypair, a: &Advert, at: Timestamp) -> Vec<u8> {
        Envelope::seal(kp, a, at, Duration::from_secs(10), Nonce(rand::random()))
            .unwrap()
            .to_bytes()
    }

    fn view() -> View {
        View::new(
            Keypair::from_secret([0; 32]).node_id(),
            "eu/de".parse().unwrap(),
            100,
        )
    }

    #[test]
    fn fresh_adverts_are_kept_and_expire() {
        let mut v = view();
        let kp = Keypair::from_secret([1; 32]);
        v.on_advert(&signed(&kp, &advert(1, "eu/de"), T0), Some(kp.node_id()), T0)
            .unwrap();
        assert_eq!(v.len(), 1);
        assert!(v.expire(T0.add(Duration::from_secs(9))).is_empty());
        assert_eq!(v.expire(T0.add(Duration::from_secs(10))), vec![kp.node_id()]);
        assert!(v.is_empty());
    }

    #[test]
    fn forged_expired_replayed_and_oversized_adverts_are_rejected_and_counted() {
        let mut v = view();
        let kp = Keypair::from_secret([1; 32]);
        let good = signed(&kp, &advert(5, "eu/de"), T0);
        v.on_advert(&good, None, T0).unwrap();
        // Replayed: same bytes again, and an older seq.
        assert!(matches!(
            v.on_advert(&good, None, T0),
            Err(Rejected::Replayed { .. })
        ));
        let older = signed(&kp, &advert(4, "eu/de"), T0);
        assert!(matches!(
            v.on_advert(&older, None, T0),
            Err(Rejected::Replayed { .. })
        ));
        // Forged: flip a payload byte.
        let mut forged = signed(&kp, &advert(6, "eu/de"), T0);
        let n = forged.len();
        forged[n - 70] ^= 1;
        assert!(matches!(
            v.on_advert(&forged, None, T0),
            Err(Rejected::Forged | Rejected::Malformed(_))
        ));
        // Expired.
        let old = signed(&kp, &advert(7, "eu/de"), T0);
        assert!(matches!(
            v.on_advert(&old, None, T0.add(Duration::from_secs(11))),
            Err(Rejected::Expired(_))
        ));
        // Oversized.
        assert!(matches!(
            v.on_advert(&vec![0; MAX_ENVELOPE + 1], None, T0),
            Err(Rejected::Oversized(_))
        ));
        // Signed by someone other than the gossip author.
        let other = Keypair::from_secret([2; 32]).node_id();
        let next = signed(&kp, &advert(8, "eu/de"), T0);
        assert_eq!(v.on_advert(&next, Some(other), T0), Err(Rejected::WrongSigner));
        let m = v.metrics();
        assert_eq!(m.adverts_accepted, 1);
        assert_eq!(m.adverts_rejected.values().sum::<u64>(), 6);
        assert_eq!(m.adverts_rejected["replayed"], 2);
        assert_eq!(m.adverts_rejected["oversized"], 1);
    }

    #[test]
    fn summaries_roll_up_the_hierarchy() {
        let mut v = view();
        v.set_local_advert(advert(1, "eu/de"));
        let kp = Keypair::from_secret([1; 32]);
        v.on_advert(&signed(&kp, &advert(1, "eu/de"), T0), None, T0)
            .unwrap();
        // A sibling domain's summary arrives on eu's summary topic.
        let fr = DomainSummary {
            domain: "eu/fr".parse().unwrap(),
            seq: 1,
            stats: DomainStats {
                nodes: 3,
                total_cu: ComputeUnits(3000),
                ..Default::default()
            },
            contacts: vec![],
            children: vec![],
        };
        let env = Envelope::seal(&kp, &fr, T0, Duration::from_secs(10), Nonce([1; 16])).unwrap();
        v.on_summary(&env.to_bytes(), T0).unwrap();
        let built = v.build_summaries(T0);
        assert_eq!(built.len(), 2);
        assert_eq!(built[0].domain.to_string(), "eu/de");
        assert_eq!(built[0].stats.nodes, 2);
        assert_eq!(built[1].domain.to_string(), "eu");
        assert_eq!(built[1].stats.nodes, 5);
        assert_eq!(built[1].stats.total_cu, ComputeUnits(5000));
        assert_eq!(built[1].children.len(), 2);
        let names: Vec<String> = v.domains().iter().map(|(d, _)| d.to_string()).collect();
        assert_eq!(names, vec!["eu/de", "eu/fr"]);
    }

    #[test]
    fn exactly_the_elected_members_publish() {
        let kps: Vec<Keypair> = (1..=6u8).map(|i| Keypair::from_secret([i; 32])).collect();
        let mut views: Vec<View> = kps
            .iter()
            .map(|k| View::new(k.node_id(), "x".parse().unwrap(), 100))
            .collect();
        for v in &mut views {
            for k in &kps {
                if k.node_id() != v.local() {
                    v.on_advert(&signed(k, &advert(1, "x"), T0), None, T0).unwrap();
                }
            }
        }
        let elected = views
            .iter()
            .filter(|v| v.is_summary_publisher(T0, Duration::from_secs(5), 2))
            .count();
        assert_eq!(elected, 2);
    }
}

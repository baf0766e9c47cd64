//! The node's view of the network: fresh adverts of the peers in its own
//! domain, summaries of other domains, round-trip times, and how much each
//! peer can be trusted to exist. Sans-IO: fed with verified-or-not bytes
//! and the current time, it decides what to keep.
//!
//! Rules (SPEC.md §6):
//! * an advert is kept only if it verifies, is within its validity window,
//!   its `seq` is higher than the one held for that node and not further in
//!   the future than clock skew explains (so neither a replayed advert nor
//!   one claiming `seq = u64::MAX` can shadow the next real one);
//! * an advert drops out at its expiry;
//! * **standing**: a peer is *unknown* until it proves reachable (a
//!   round-trip time was measured to it) or does verified work for this
//!   node (*proven*). Keys are free, so unknown peers are admitted at a
//!   bounded rate and hold a bounded share of the view, oldest evicted
//!   first; a peer with standing is never evicted to make room for an
//!   unknown one. Placement asks peers with standing first, and only
//!   peers with standing take part in summary elections;
//! * summaries are held per domain and signer (`summaries`);
//! * round-trip times are an exponentially weighted moving average.

mod summaries;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use agora_protocol::capacity::{Advert, DomainStats};
use agora_protocol::limits::{MAX_CLOCK_SKEW, MAX_ENVELOPE};
use agora_protocol::units::{ComputeUnits, Millis, Timestamp};
use agora_protocol::{Decode, Domain, Envelope, NodeId, OpenError};
use serde::Serialize;

pub use summaries::{HeldSummary, SIGNERS_PER_DOMAIN, SummaryIn};

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
    /// Its `seq` lies further in the future than clock skew explains.
    #[error("seq {0} lies in the future")]
    FutureSeq(u64),
    /// Signed by someone other than the gossip author (relay forging).
    #[error("signer does not match the gossip author")]
    WrongSigner,
    /// Too many unknown peers announced themselves lately; this one is not
    /// admitted now (it will be, once it has standing or the flood ebbs).
    #[error("too many unknown peers: not admitted now")]
    Flooded,
    /// The view is full of peers with standing.
    #[error("the view is full")]
    Full,
    /// A summary of this node's own domain from a signer without standing.
    #[error("summary of the local domain from a signer without standing")]
    Unvouched,
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
            Rejected::FutureSeq(_) => "future_seq",
            Rejected::WrongSigner => "wrong_signer",
            Rejected::Flooded => "flooded",
            Rejected::Full => "full",
            Rejected::Unvouched => "unvouched",
        }
    }

    /// Whether the message was bad (to be penalised), rather than only not
    /// useful now (a replay, a flood, a full view).
    pub fn is_invalid(&self) -> bool {
        !matches!(
            self,
            Rejected::Replayed { .. } | Rejected::Flooded | Rejected::Full | Rejected::Unvouched
        )
    }
}

/// How far a peer has shown that it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Only its signed adverts are known.
    Unknown,
    /// A round-trip time was measured to it: a real endpoint answers.
    Reachable,
    /// It did verified work for this node.
    Proven,
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
    /// When the peer was first admitted (kept across adverts).
    pub first_seen: Timestamp,
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
    /// Unknown peers evicted to admit newer ones.
    pub unknown_evicted: u64,
}

/// Round-trip time smoothing factor.
const RTT_ALPHA: f64 = 0.3;
/// Smoothing of throughput samples (each is one large transfer).
const THROUGHPUT_ALPHA: f64 = 0.5;
/// Peers whose throughput is remembered at most.
const MAX_THROUGHPUT_PEERS: usize = 4096;
/// Unknown peers admitted per second at most.
const NEW_PEERS_PER_SECOND: u32 = 50;
/// Peers this node has seen do verified work, remembered at most.
const MAX_PROVEN: usize = 100_000;

/// The view. See the module docs.
#[derive(Debug)]
pub struct View {
    local: NodeId,
    domain: Domain,
    peers: HashMap<NodeId, Peer>,
    summaries: summaries::Summaries,
    rtt: HashMap<NodeId, Duration>,
    /// Smoothed rate of content sent to each peer, bytes/s, with the
    /// peer's domain when it was measured.
    throughput: HashMap<NodeId, (f64, Option<Domain>)>,
    /// Peers that answered a request of this node.
    reached: HashSet<NodeId>,
    proven: HashSet<NodeId>,
    /// Unknown peers admitted, oldest first (some may have gained standing
    /// or left since: checked when evicting).
    unknown: VecDeque<NodeId>,
    /// Unknown peers admitted in the current second: (second, count).
    admitted: (u64, u32),
    local_advert: Option<Advert>,
    metrics: Metrics,
    max_peers: usize,
    max_unknown: usize,
}

impl View {
    /// An empty view for `local` in `domain`, holding at most `max_peers`
    /// (an eighth of them, and at least 16, unknown).
    pub fn new(local: NodeId, domain: Domain, max_peers: usize) -> View {
        View {
            local,
            domain,
            peers: HashMap::new(),
            summaries: summaries::Summaries::default(),
            rtt: HashMap::new(),
            throughput: HashMap::new(),
            reached: HashSet::new(),
            proven: HashSet::new(),
            unknown: VecDeque::new(),
            admitted: (0, 0),
            local_advert: None,
            metrics: Metrics::default(),
            max_peers,
            max_unknown: (max_peers / 8).max(16).min(max_peers),
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

    /// How far `node` has shown that it exists.
    pub fn standing(&self, node: &NodeId) -> Standing {
        if self.proven.contains(node) {
            Standing::Proven
        } else if self.rtt.contains_key(node) || self.reached.contains(node) {
            Standing::Reachable
        } else {
            Standing::Unknown
        }
    }

    /// `node` did verified work for this node.
    pub fn prove(&mut self, node: NodeId) {
        remember(&mut self.proven, &self.peers, node);
    }

    /// `node` answered a request of this node: a real endpoint.
    pub fn reached(&mut self, node: NodeId) {
        remember(&mut self.reached, &self.peers, node);
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
        // A flood of unknown keys costs a signature check per advert: once
        // this second's newcomers are admitted, an advert that claims an
        // unknown signer is passed over unverified (not penalised, as its
        // claim is unchecked, and not forwarded).
        let claimed = env.claimed_signer();
        if !self.peers.contains_key(&claimed)
            && self.standing(&claimed) == Standing::Unknown
            && self.newcomers_admitted(now) >= NEW_PEERS_PER_SECOND
        {
            return Err(Rejected::Flooded);
        }
        let v = env.open::<Advert>(now).map_err(Rejected::from_open)?;
        let node = v.signer();
        let seq = v.payload().seq;
        if author.is_some_and(|a| a != node) {
            return Err(Rejected::WrongSigner);
        }
        if node == self.local {
            return Err(Rejected::Replayed { seq, held: seq });
        }
        if seq > future_bound(now) {
            return Err(Rejected::FutureSeq(seq));
        }
        let first_seen = match self.peers.get(&node) {
            Some(p) if seq <= p.advert.seq => {
                return Err(Rejected::Replayed {
                    seq,
                    held: p.advert.seq,
                });
            }
            Some(p) => p.first_seen,
            None => {
                self.admit(node, now)?;
                now
            }
        };
        let expires_at = v.expires_at();
        self.peers.insert(
            node,
            Peer {
                node,
                advert: v.into_payload(),
                expires_at,
                received_at: now,
                first_seen,
            },
        );
        Ok(node)
    }

    /// Makes room for a peer not yet in the view, or says why not.
    fn admit(&mut self, node: NodeId, now: Timestamp) -> Result<(), Rejected> {
        let unknown = self.standing(&node) == Standing::Unknown;
        if unknown {
            if self.newcomers_admitted(now) >= NEW_PEERS_PER_SECOND {
                return Err(Rejected::Flooded);
            }
            if self.unknown_held() >= self.max_unknown && !self.evict_unknown() {
                return Err(Rejected::Flooded);
            }
        }
        if self.peers.len() >= self.max_peers {
            self.expire(now);
        }
        if self.peers.len() >= self.max_peers && !self.evict_unknown() {
            return Err(Rejected::Full);
        }
        if unknown {
            self.admitted.1 += 1;
            self.unknown.push_back(node);
        }
        Ok(())
    }

    /// Unknown peers admitted in the current second.
    fn newcomers_admitted(&mut self, now: Timestamp) -> u32 {
        let second = now.0 / 1000;
        if self.admitted.0 != second {
            self.admitted = (second, 0);
        }
        self.admitted.1
    }

    /// Unknown peers held now (those in the queue still unknown and held).
    fn unknown_held(&mut self) -> usize {
        // Drop queue entries that left or gained standing.
        let (peers, rtt, reached, proven) = (&self.peers, &self.rtt, &self.reached, &self.proven);
        self.unknown.retain(|n| {
            peers.contains_key(n) && !rtt.contains_key(n) && !reached.contains(n) && !proven.contains(n)
        });
        self.unknown.len()
    }

    /// Evicts the oldest unknown peer; false if there is none.
    fn evict_unknown(&mut self) -> bool {
        while let Some(n) = self.unknown.pop_front() {
            if self.peers.contains_key(&n) && self.standing(&n) == Standing::Unknown {
                self.peers.remove(&n);
                self.metrics.unknown_evicted += 1;
                return true;
            }
        }
        false
    }

    /// Records a round-trip time sample.
    pub fn on_rtt(&mut self, peer: NodeId, rtt: Duration) {
        let e = self.rtt.entry(peer).or_insert(rtt);
        *e = Duration::from_secs_f64(e.as_secs_f64() * (1.0 - RTT_ALPHA) + rtt.as_secs_f64() * RTT_ALPHA);
    }

    /// Records how fast a large transfer to `peer` went, bytes/s; with
    /// `at_most`, only that it went no faster (a transfer still under way
    /// or failed), which lowers the estimate to the bound if above it.
    pub fn on_throughput(&mut self, peer: NodeId, bytes_per_s: f64, at_most: bool) {
        if !bytes_per_s.is_finite() || bytes_per_s <= 0.0 {
            return;
        }
        if !self.throughput.contains_key(&peer) && self.throughput.len() >= MAX_THROUGHPUT_PEERS {
            return;
        }
        let domain = self
            .peers
            .get(&peer)
            .map(|p| p.advert.domain.clone())
            .or_else(|| {
                self.summaries()
                    .find(|h| h.summary.contacts.iter().any(|c| c.node == peer))
                    .map(|h| h.summary.domain.clone())
            });
        let e = self.throughput.entry(peer).or_insert((bytes_per_s, None));
        e.0 = if at_most {
            e.0.min(bytes_per_s)
        } else {
            e.0 * (1.0 - THROUGHPUT_ALPHA) + bytes_per_s * THROUGHPUT_ALPHA
        };
        e.1 = domain;
    }

    /// The rate content is expected to go to `peer` at, bytes/s: as
    /// measured to it, else the median of what was measured to other
    /// nodes of `domain` (a domain's access link is shared), else `None`.
    pub fn throughput(&self, peer: &NodeId, domain: Option<&Domain>) -> Option<f64> {
        if let Some((r, _)) = self.throughput.get(peer) {
            return Some(*r);
        }
        let domain = domain?;
        let mut rates: Vec<f64> = self
            .throughput
            .values()
            .filter(|(_, d)| d.as_ref().is_some_and(|d| d.is_within(domain)))
            .map(|(r, _)| *r)
            .collect();
        if rates.is_empty() {
            return None;
        }
        rates.sort_by(f64::total_cmp);
        Some(rates[rates.len() / 2])
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
            self.throughput.remove(g);
        }
        self.metrics.peers_expired += gone.len() as u64;
        self.summaries.expire(now);
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

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The members of this node's own domain it holds adverts of.
    fn members(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values().filter(|p| p.advert.domain == self.domain)
    }

    /// Figures of the local domain computed from the adverts held (and the
    /// local node's own).
    pub fn local_domain_stats(&self) -> DomainStats {
        let mut s = DomainStats::default();
        let own = self.local_advert.iter().map(|a| (a, Duration::ZERO));
        let others = self
            .members()
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
    /// the members with standing it sees; SPEC.md §6.3). Members it knows
    /// only by their adverts take no part: free keys cannot win elections.
    /// Every member computes the ranking from the members it trusts, and a
    /// publisher that disappears drops out of everyone's view at its
    /// advert's expiry, so no single node is needed for summaries to flow.
    pub fn is_summary_publisher(&self, now: Timestamp, period: Duration, publishers: usize) -> bool {
        let rank = |n: &NodeId| election_rank(&self.domain, now, period, n);
        let mine = rank(&self.local);
        let better = self
            .members()
            .filter(|p| self.standing(&p.node) != Standing::Unknown)
            .filter(|p| rank(&p.node) < mine)
            .count();
        better < publishers
    }

    /// Members this node holds no standing for that rank better than it in
    /// the election of the period containing `now`, best first. A node
    /// that finds itself elected asks them (SPEC.md §6.3): each that
    /// answers gains standing, so views that saw different members with
    /// standing converge on the same publishers.
    pub fn election_rivals(&self, now: Timestamp, period: Duration) -> Vec<NodeId> {
        let rank = |n: &NodeId| election_rank(&self.domain, now, period, n);
        let mine = rank(&self.local);
        let mut rivals: Vec<([u8; 32], NodeId)> = self
            .members()
            .filter(|p| self.standing(&p.node) == Standing::Unknown)
            .map(|p| (rank(&p.node), p.node))
            .filter(|(r, _)| *r < mine)
            .collect();
        rivals.sort_unstable();
        rivals.into_iter().map(|(_, n)| n).collect()
    }
}

/// A member's rank in the summary election of `domain` for the period
/// containing `now` (lowest wins): blake3 of the domain's UTF-8 bytes, the
/// period number (ms since the epoch divided by the period's ms) as a
/// little-endian u64, and the node id's 32 bytes (SPEC.md §6.3).
pub fn election_rank(domain: &Domain, now: Timestamp, period: Duration, node: &NodeId) -> [u8; 32] {
    let epoch = now.0 / (period.as_millis().max(1) as u64);
    let mut h = blake3::Hasher::new();
    h.update(domain.as_str().as_bytes());
    h.update(&epoch.to_le_bytes());
    h.update(node.as_bytes());
    *h.finalize().as_bytes()
}

/// Adds `node` to a bounded set of peers with standing (when full, only
/// those still in the view are kept).
fn remember(set: &mut HashSet<NodeId>, peers: &HashMap<NodeId, Peer>, node: NodeId) {
    if set.len() >= MAX_PROVEN {
        set.retain(|n| peers.contains_key(n));
    }
    set.insert(node);
}

/// The highest `seq` an advert or summary may carry at `now`: sequence
/// numbers are issue times in milliseconds, within clock skew.
fn future_bound(now: Timestamp) -> u64 {
    now.0.saturating_add(MAX_CLOCK_SKEW.as_millis() as u64)
}

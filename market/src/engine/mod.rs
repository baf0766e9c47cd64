//! One node's decisions as a whole: the glue between the state machines,
//! the signed messages and the work a node runs, with no I/O.
//!
//! The node's driver and the seeded simulation ([`crate::sim`]) both feed
//! an [`Engine`] and carry out what it says, so the code the simulation
//! checks under message loss, duplication, reordering and crashes is the
//! code the node runs.
//!
//! **In**: inbound market requests ([`Engine::on_request`], with a
//! [`ReplyId`] the host maps to its reply channel), answers to the
//! engine's own requests ([`Engine::on_answer`]), gossip
//! ([`Engine::on_gossip`]), connection events, the results of work it asked
//! for (`on_executed`, `on_spot_checked`, `on_fetched`, …), the owner's
//! commands ([`Engine::submit`], [`Engine::cancel`]) and the clock
//! ([`Engine::tick`]). Every call takes `now`; nothing reads a clock.
//!
//! **Out**: at the end of each turn, [`Engine::end_turn`] returns a
//! [`Turn`]: the record writes of the turn (keys in [`crate::records`]),
//! the outputs to carry out at once, and those to carry out only once the
//! writes are durable (an agreement, an acknowledgement, a voucher: what
//! someone else will rely on is on disk before they hear of it).
//!
//! The engine signs what it sends with the node's key and opens what it
//! receives (signature, time window, sender, replay), so the host never
//! needs to look inside a message.
//!
//! The handlers are grouped by concern, one file each: `serve` (the
//! provider side of inbound requests and executions), `place` (the
//! requester's actions and the answers to them), `deliver` (receipts and
//! vouchers sent until acknowledged), `gossip` (adverts, summaries, fraud
//! proofs, connections), `output` (what the host carries out) and
//! `counters`.

mod counters;
mod credits;
mod deliver;
mod gossip;
mod jobs;
mod output;
mod place;
mod progress;
mod serve;

use agora_protocol::envelope::MAX_BATCH_LEAVES;
use agora_protocol::settlement::Voucher;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use agora_protocol::market::{Arg, Cancel, CancelReason};
use agora_protocol::rpc::MarketRequest;
use agora_protocol::units::{ComputeUnits, Timestamp};
use agora_protocol::{
    ContentId, Domain, Envelope, FRAUD_TOPIC, JobId, Keypair, MessageId, NodeId, Nonce, Payload, ReplayGuard,
    TaskId, Verified,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

pub use counters::Counters;
pub use credits::AuditReport;
pub use output::{FrameId, Inline, Output, Ran, ReplyId, RequestId, Turn, Verdict, Work};

use crate::job::{InputSpec, JobSpec, SpecError};
use crate::ledger::Ledger;
use crate::provider::{self, Provider};
use crate::records::{self, Host, RecordError, Writes};
use crate::requester::{self, Decision, Feed, Requester};
use crate::view::View;

/// How often a quiet engine ([`Engine::quiet`]) needs [`Engine::tick`]:
/// the pace of its finest housekeeping (expired adverts dropped, paid
/// chains read). A node with work under way ticks much more often.
pub const QUIET_TICK: Duration = Duration::from_millis(250);

/// Advert and summary cadence.
#[derive(Debug, Clone)]
pub struct Adverts {
    /// How often the node publishes its advert.
    pub interval: Duration,
    /// How long an advert stays valid.
    pub lifetime: Duration,
    /// How often domain summaries are published.
    pub summary_interval: Duration,
    /// Members of a domain that publish its summary each election term.
    pub summary_publishers: usize,
    /// How long one election of summary publishers holds. Much longer
    /// than the summary interval: every new publisher is a new signer that
    /// every receiver must find room for and have vouched for, so rotating
    /// at each publication floods the network with vouch questions and
    /// leaves figures stale while places are taken.
    pub election_term: Duration,
}

impl Default for Adverts {
    fn default() -> Self {
        Adverts {
            interval: Duration::from_secs(2),
            lifetime: Duration::from_secs(10),
            summary_interval: Duration::from_secs(3),
            summary_publishers: 2,
            election_term: Duration::from_secs(600),
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's domain.
    pub domain: Domain,
    /// The provider side.
    pub provider: provider::Config,
    /// The requester side.
    pub requester: requester::Config,
    /// Adverts and summaries.
    pub adverts: Adverts,
    /// How often capacity is measured again while idle (`None`: never).
    pub recalibrate: Option<Duration>,
    /// Whom this node works for, and what credits count.
    pub credit: crate::credit::Config,
    /// How long a job's content (module, inputs, outputs) is kept for this
    /// node's user after the job ends.
    pub keep_results: Duration,
    /// How often stored content is collected (`None`: never).
    pub collect_every: Option<Duration>,
    /// Most peers in the view.
    pub max_peers: usize,
    /// Connections the node opens on its own to peers of its domain (as
    /// many as its domain's gossip mesh may use).
    pub domain_peers: usize,
    /// Most nonces the replay guard remembers.
    pub replay_capacity: usize,
    /// Software version in adverts.
    pub version: String,
    /// Whether this node pays for verified work. Off only to inject a
    /// fault (a requester that never pays, for the testnet's chaos runs).
    pub pays: bool,
    /// Injected fault only: pay a second provider with a different block
    /// at the position of the last payment (a forked chain: the same
    /// credits spent twice), for the testnet's chaos runs.
    pub fork_payments: bool,
    /// Blocks of this node's chain between two checkpoints (0: none).
    pub checkpoint_every: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: Domain::root(),
            provider: provider::Config::default(),
            requester: requester::Config::default(),
            adverts: Adverts::default(),
            recalibrate: None,
            credit: crate::credit::Config::default(),
            keep_results: Duration::from_secs(7 * 24 * 3600),
            collect_every: None,
            max_peers: 10_000,
            domain_peers: 12,
            replay_capacity: 100_000,
            version: agora_protocol::SOFTWARE_VERSION.to_owned(),
            pays: true,
            fork_payments: false,
            checkpoint_every: 1024,
        }
    }
}

/// What an engine starts from.
pub struct Setup {
    /// The node's key.
    pub keypair: Keypair,
    /// Settings.
    pub config: Config,
    /// Seed of its random choices (placement ties, spot checks, nonces).
    pub seed: u64,
    /// Measured per-slot capacity.
    pub per_slot: ComputeUnits,
    /// Addresses it listens on (multiaddrs as text).
    pub listen: Vec<String>,
    /// The time it starts.
    pub now: Timestamp,
}

/// Why a job was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The spec cannot run anywhere.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// Content it names is not on this node.
    #[error("{0}")]
    Missing(String),
    /// No provider known could take it as asked.
    #[error("{0}")]
    Unplaceable(String),
}

/// Why a job could not be cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// No such job here.
    #[error("no job {0} on this node")]
    Unknown(JobId),
    /// It has ended already.
    #[error("job {0} has already ended")]
    Ended(JobId),
}

/// What one of the engine's requests was for.
#[derive(Debug, Clone)]
enum Pending {
    Call {
        task: TaskId,
        attempt: u16,
        from: NodeId,
        call: MessageId,
    },
    Accept {
        task: TaskId,
        attempt: u16,
        from: NodeId,
        accept: MessageId,
    },
    Cancel {
        to: NodeId,
    },
    Delivery {
        key: MessageId,
    },
    Vouch {
        domain: Domain,
        signer: NodeId,
        contact: NodeId,
        /// Contacts to ask in turn (last first) if it cannot be reached.
        next: Vec<NodeId>,
    },
    /// A member that ranks better in the summary election, asked for its
    /// summary of the own domain.
    Rival {
        peer: NodeId,
    },
    /// Blocks of a chain, for an audit.
    Chain(ChainRead),
    /// The latest checkpoint of a chain and its attestations, for an audit
    /// that may start there.
    ChainCheckpoint(ChainRead),
    /// An attestation of a checkpoint, to the chain's owner.
    Attest {
        owner: NodeId,
    },
    /// A progress receipt of a running task, to its requester.
    Progress {
        agreement: MessageId,
        checkpoint: ContentId,
    },
    /// The block of `owner`'s chain at `seq` a heads message claims, to
    /// compare with the one held.
    ForkCheck {
        owner: NodeId,
        seq: u64,
        hash: ContentId,
        held: Envelope,
    },
}

/// A read of a chain under way.
#[derive(Debug, Clone)]
pub(crate) struct ChainRead {
    /// Whose chain.
    owner: NodeId,
    /// The position after which blocks are wanted.
    after: u64,
    /// The node asked: the owner, or a node keeping a copy.
    asked: NodeId,
    /// Nodes to ask next if this one cannot answer.
    fallback: Vec<NodeId>,
}

/// A node's decisions. See the module docs.
pub struct Engine {
    keypair: Keypair,
    local: NodeId,
    config: Config,
    host: Box<dyn Host>,
    view: View,
    requester: Requester,
    provider: Provider,
    ledger: Ledger,
    /// What this node ran and declined, for its owner.
    history: crate::history::History,
    credit: crate::credit::Credit,
    /// Chains whose audit the owner asked for, reported once settled.
    /// (When each was asked for: payers' chains not read since are read
    /// at once, whatever their last read.)
    audits: HashMap<NodeId, Timestamp>,
    /// Calls for offers waiting for their requesters' chains to be read.
    parked: Vec<serve::Parked>,
    /// Nodes known to keep blocks of a chain (from heads gossip), newest
    /// first, by owner.
    holders: HashMap<NodeId, Vec<NodeId>>,
    /// Heads of other chains this node learnt lately (gossiped so that
    /// forks come to light), by owner.
    heads: HashMap<NodeId, (u64, ContentId)>,
    /// Injected fault only: the position of the last payment, to sign a
    /// second, different block there for another payee.
    fork_base: Option<(u64, ContentId, NodeId)>,
    /// The chain position at which a checkpoint was last tried (one that
    /// could not be made is not tried again at the same position).
    checkpoint_tried: u64,
    /// Vouchers decided and not yet paid, by payee: each payee's become
    /// one payment block once the first has waited a moment
    /// ([`Engine::make_payments`]).
    to_pay: credits::Owed,
    /// Chains whose head moved since heads were last published.
    heads_moved: HashSet<NodeId>,
    /// When every head was last published.
    heads_refreshed: Timestamp,
    replay: ReplayGuard,
    rng: SmallRng,
    writes: Writes,
    out: Vec<Output>,
    after: Vec<Output>,
    /// Someone waits for this turn's writes (a submitted job).
    must_flush: bool,
    next_request: u64,
    pending: HashMap<RequestId, Pending>,
    deliveries: deliver::Deliveries,
    /// Orders' answers held while their tasks run, by agreement.
    held: HashMap<MessageId, serve::Held>,
    /// Tasks admitted this turn, their agreements signed together at its
    /// end ([`Engine::sign_agreements`]).
    unsigned: Vec<serve::Unsigned>,
    /// Runs whose receipts are not signed yet: those that ended this
    /// turn, and those waiting for the other orders of their frame
    /// ([`Engine::sign_receipts`]).
    ran: Vec<(provider::Accepted, Ran)>,
    /// Receipts whose inline output is being stored, by token.
    storing: HashMap<u64, serve::StoringReceipt>,
    /// Progress receipts whose checkpoint is being stored, by token.
    storing_progress: HashMap<u64, progress::StoringProgress>,
    /// Running tasks whose requester declined a progress receipt: it gets
    /// no more (a replicated task, or a requester that keeps none).
    no_progress: HashSet<MessageId>,
    next_token: u64,
    calibrated_at: Timestamp,
    listen: Vec<String>,
    /// Whether peers outside cannot dial this node (its own addresses are
    /// then left out of adverts when it has a relayed one).
    private: bool,
    started: Timestamp,
    load: Option<f64>,
    timers: Timers,
    calibrating: bool,
    connected: HashSet<NodeId>,
    /// Peers dialed on their adverts, and when.
    dialed: HashMap<NodeId, Timestamp>,
    probing: HashSet<NodeId>,
    inline: HashMap<MessageId, Inline>,
    cancelled_running: HashSet<MessageId>,
    fraud_checking: HashMap<MessageId, agora_protocol::fraud::FraudProof>,
    fraud_quota: gossip::Quota,
    /// Fork checks heads publishers may cause.
    fork_quota: gossip::Quota,
    /// Summaries being vouched for, and when this node last asked.
    vouching: HashMap<(Domain, NodeId), Timestamp>,
    /// Election rivals asked this term (see [`Engine::elected`]).
    rivals: gossip::Rivals,
    /// The summaries of its own domain and those containing it this node
    /// last signed for a question (one per level: bounded by the depth).
    own_summaries: HashMap<Domain, (Timestamp, Envelope)>,
    fraud_seen: HashSet<MessageId>,
    counters: Counters,
}

/// When periodic work last ran.
#[derive(Debug)]
struct Timers {
    advert_seq: u64,
    last_advert: Timestamp,
    /// Why the next advert is due (the first reason since the last one).
    advert_due: Option<AdvertCause>,
    last_free: u32,
    last_summary: Timestamp,
    /// Whether this node found itself elected to publish summaries, with
    /// rivals left to hear from, when it last looked; and when that was.
    asking_rivals: bool,
    last_rivals: Timestamp,
    last_expire: Timestamp,
    last_calibration: Timestamp,
    last_collect: Timestamp,
    /// A collection of stored content is under way.
    collecting: bool,
    last_heads: Timestamp,
}

/// Why a node publishes its advert: counted per cause, so that an operator
/// (or the scale bench) sees which trigger makes a domain's gossip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdvertCause {
    /// The node started.
    Start,
    /// The periodic refresh, before the last advert expires.
    Refresh,
    /// Its free slots changed (a task started or ended).
    FreeSlots,
    /// A peer of its domain not yet in its view subscribed.
    Newcomer,
    /// An address it listens on came or went.
    Address,
    /// AutoNAT's verdict on its reachability changed.
    Reachability,
    /// An owner's limit started or stopped holding the node.
    Limits,
    /// The owner paused or resumed providing.
    Pause,
    /// The idle policy started or stopped taking work.
    IdlePolicy,
    /// Its capacity was measured again.
    Capacity,
    /// The content disk reached or left its cap.
    Disk,
    /// The node is stopping: it takes no more work.
    Shutdown,
}

impl AdvertCause {
    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            AdvertCause::Start => "start",
            AdvertCause::Refresh => "refresh",
            AdvertCause::FreeSlots => "free_slots",
            AdvertCause::Newcomer => "newcomer",
            AdvertCause::Address => "address",
            AdvertCause::Reachability => "reachability",
            AdvertCause::Limits => "limits",
            AdvertCause::Pause => "pause",
            AdvertCause::IdlePolicy => "idle_policy",
            AdvertCause::Capacity => "capacity",
            AdvertCause::Disk => "disk",
            AdvertCause::Shutdown => "shutdown",
        }
    }
}

impl Timers {
    /// An advert is due for `cause` (the first cause since the last advert
    /// is the one counted).
    fn want_advert(&mut self, cause: AdvertCause) {
        self.advert_due.get_or_insert(cause);
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for `setup`, restoring unfinished work from `host`'s
    /// records: accepted tasks, jobs, undelivered receipts and vouchers.
    pub fn new(setup: Setup, host: Box<dyn Host>) -> Result<Engine, RecordError> {
        let Setup {
            keypair,
            config,
            seed,
            per_slot,
            listen,
            now,
        } = setup;
        let local = keypair.node_id();
        let writes = Writes::default();
        let credit = config.credit.clone();
        let ledger = Ledger::open(local, host.as_ref())?;
        let provider = Provider::new(config.provider.clone(), per_slot);
        let requester = Requester::new(local, config.requester.clone(), seed);
        let view = View::new(local, config.domain.clone(), config.max_peers);
        // Nonces must differ across restarts even with a fixed seed.
        let rng = SmallRng::seed_from_u64(seed ^ now.0.rotate_left(17) ^ 0x6e6f_6e63_6573);
        let mut e = Engine {
            keypair,
            local,
            replay: ReplayGuard::new(config.replay_capacity, now),
            config,
            host,
            view,
            requester,
            provider,
            ledger,
            credit: crate::credit::Credit::new(credit),
            audits: HashMap::new(),
            parked: Vec::new(),
            holders: HashMap::new(),
            heads: HashMap::new(),
            fork_base: None,
            checkpoint_tried: 0,
            to_pay: credits::Owed::default(),
            heads_moved: HashSet::new(),
            heads_refreshed: Timestamp(0),
            rng,
            writes,
            out: Vec::new(),
            after: Vec::new(),
            must_flush: false,
            next_request: 0,
            pending: HashMap::new(),
            deliveries: deliver::Deliveries::default(),
            held: HashMap::new(),
            ran: Vec::new(),
            unsigned: Vec::new(),
            storing: HashMap::new(),
            storing_progress: HashMap::new(),
            no_progress: HashSet::new(),
            next_token: 0,
            calibrated_at: now,
            listen,
            private: false,
            started: now,
            load: None,
            timers: Timers {
                advert_seq: 0,
                last_advert: Timestamp(0),
                advert_due: Some(AdvertCause::Start),
                last_free: u32::MAX,
                last_summary: Timestamp(0),
                asking_rivals: false,
                last_rivals: Timestamp(0),
                last_expire: now,
                last_calibration: now,
                last_collect: now,
                collecting: false,
                last_heads: now,
            },
            calibrating: false,
            connected: HashSet::new(),
            dialed: HashMap::new(),
            probing: HashSet::new(),
            inline: HashMap::new(),
            cancelled_running: HashSet::new(),
            fraud_checking: HashMap::new(),
            fraud_quota: gossip::Quota::fraud(),
            fork_quota: gossip::Quota::forks(),
            vouching: HashMap::new(),
            rivals: gossip::Rivals::default(),
            own_summaries: HashMap::new(),
            fraud_seen: HashSet::new(),
            counters: Counters::default(),
            history: crate::history::History::default(),
        };
        e.restore(now)?;
        Ok(e)
    }

    fn restore(&mut self, now: Timestamp) -> Result<(), RecordError> {
        let accepted = records::scan::<provider::Accepted>(self.host.as_ref(), records::ACCEPTED)?;
        let mut jobs = 0;
        for (_, acc) in &accepted {
            // Work whose receipt was due while the node was down is not
            // run again: its requester has placed it elsewhere.
            if acc.stage != provider::Stage::Done && acc.due <= now {
                tracing::info!(agreement = %acc.agreement, "dropping a task that expired while the node was down");
                self.writes.delete(records::accepted_key(&acc.agreement));
                continue;
            }
            self.provider.restore(acc.clone());
        }
        self.history = crate::history::History::load(self.host.as_ref(), now)?;
        // Limits the owner set live hold over the configuration's.
        if let Some(limits) =
            records::get::<crate::limits::OwnerLimits>(self.host.as_ref(), records::OWNER_LIMITS)?
        {
            self.provider.set_limits(limits);
        }
        // The owner's pause holds across a restart, until it runs out.
        if let Some(until) = records::get::<Timestamp>(self.host.as_ref(), records::OWNER_PAUSE)? {
            if until > now {
                self.provider.pause(Some(until));
            } else {
                self.writes.delete(records::OWNER_PAUSE);
            }
        }
        for (key, why) in records::scan::<String>(self.host.as_ref(), records::BAN)? {
            if let Ok(node) = key[records::BAN.len()..].parse::<NodeId>() {
                self.requester.restore_ban(node, why);
            }
        }
        for (job, tasks) in self.active_jobs()? {
            self.requester.restore(job, tasks, now);
            jobs += 1;
        }
        // Vouchers decided before the stop and not paid yet.
        for (_, v) in records::scan::<Voucher>(self.host.as_ref(), records::OWED)? {
            self.to_pay.owe(v.provider, v, now);
        }
        if !accepted.is_empty() || jobs > 0 {
            tracing::info!(tasks = accepted.len(), jobs, "restored unfinished work");
        }
        self.resume_deliveries(now)
    }

    /// Topics to subscribe to and DHT keys to provide, once at start.
    pub fn subscriptions(&self) -> (Vec<String>, Vec<Vec<u8>>) {
        let d = &self.config.domain;
        let mut topics = vec![d.advert_topic()];
        topics.extend(d.ancestry().iter().map(Domain::summary_topic));
        topics.push(FRAUD_TOPIC.to_owned());
        topics.push(agora_protocol::HEADS_TOPIC.to_owned());
        let mut keys: Vec<Vec<u8>> = d.ancestry().iter().map(Domain::provider_key).collect();
        keys.push(format!("{}/capability/wasi-p1", agora_protocol::TOPIC_PREFIX).into_bytes());
        (topics, keys)
    }

    fn request(
        &mut self,
        to: NodeId,
        request: MarketRequest,
        attach: Vec<ContentId>,
        pending: Pending,
    ) -> Output {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.pending.insert(id, pending);
        Output::Send {
            id,
            to,
            request,
            attach,
        }
    }

    /// Seals a payload now with a fresh nonce.
    fn seal<T: Payload>(&mut self, payload: &T, lifetime: Duration, now: Timestamp) -> Envelope {
        Envelope::seal(
            &self.keypair,
            payload,
            now,
            lifetime.min(T::MAX_LIFETIME),
            Nonce(self.rng.random()),
        )
        // Our own messages are small and within their type's lifetime.
        .expect("own messages always seal")
    }

    /// Seals payloads now, each for its lifetime and with a fresh nonce,
    /// under one signature a batch of [`MAX_BATCH_LEAVES`] (SPEC.md §5.2),
    /// in their order. One too large to carry a batch path is sealed
    /// alone. Returns the envelopes and how many signatures they took.
    fn seal_all<T: Payload>(&mut self, payloads: &[(&T, Duration)], now: Timestamp) -> (Vec<Envelope>, u64) {
        let mut out = Vec::with_capacity(payloads.len());
        let mut signatures = 0;
        for chunk in payloads.chunks(MAX_BATCH_LEAVES) {
            let items: Vec<_> = chunk
                .iter()
                .map(|(p, lifetime)| {
                    (
                        *p,
                        now,
                        (*lifetime).min(T::MAX_LIFETIME),
                        Nonce(self.rng.random()),
                    )
                })
                .collect();
            match Envelope::seal_batch(&self.keypair, &items) {
                Ok(envs) => {
                    out.extend(envs);
                    signatures += 1;
                }
                Err(_) => {
                    out.extend(items.iter().map(|(p, at, lifetime, nonce)| {
                        Envelope::seal(&self.keypair, *p, *at, *lifetime, *nonce)
                            .expect("own messages always seal")
                    }));
                    signatures += items.len() as u64;
                }
            }
        }
        (out, signatures)
    }

    /// Opens a live market message from `peer`: signature, time window,
    /// sender identity and replay.
    fn open_live<T: Payload>(
        &mut self,
        peer: NodeId,
        env: &Envelope,
        now: Timestamp,
    ) -> Result<Verified<T>, agora_protocol::rpc::Decline> {
        use agora_protocol::rpc::Decline;
        let v = env.open::<T>(now).map_err(|e| {
            self.counters.invalid_requests += 1;
            Decline::invalid(e)
        })?;
        if v.signer() != peer {
            self.counters.invalid_requests += 1;
            return Err(Decline::invalid("signed by a node other than the sender"));
        }
        if let Err(e) = self.replay.check(&v, now) {
            self.counters.replays += 1;
            return Err(Decline::invalid(e));
        }
        Ok(v)
    }

    /// Periodic work: timeouts, overdue copies, retries, adverts, summaries,
    /// view expiry, recalibration. Call it often (every 10 ms in a node).
    pub fn tick(&mut self, now: Timestamp) {
        self.requester.tick(now, &self.view);
        if self.provider.paused_until().is_some_and(|until| now >= until) {
            self.resume();
        }
        let late = self.provider.withdraw_late(now);
        if !late.is_empty() {
            tracing::info!(
                tasks = late.len(),
                "held too long to finish in time: handed the tasks back to their requesters"
            );
            self.withdraw(&late, now);
        }
        if now.since(self.timers.last_advert) >= self.config.adverts.interval {
            self.timers.want_advert(AdvertCause::Refresh);
        }
        if now.since(self.timers.last_summary) >= self.config.adverts.summary_interval {
            self.publish_summaries(now);
        } else if self.timers.asking_rivals && now.since(self.timers.last_rivals) >= gossip::RIVALS_EVERY {
            self.elected(now);
        }
        if now.since(self.timers.last_expire) >= QUIET_TICK {
            self.timers.last_expire = now;
            for gone in self.view.expire(now) {
                tracing::info!(peer = %gone.short(), "peer's advert expired; dropping it from the view");
                self.requester.on_peer_down(gone, now);
            }
            self.read_paid_chains(now);
            self.settle_backing(now);
        }
        self.release_held(serve::Release::Overdue, now);
        self.retry_deliveries(now);
        if now.since(self.timers.last_heads) >= credits::HEADS_EVERY {
            self.timers.last_heads = now;
            self.publish_heads(now);
        }
        if let Some(every) = self.config.collect_every
            && now.since(self.timers.last_collect) >= every
        {
            self.timers.last_collect = now;
            self.collect(now);
        }
        if let Some(every) = self.config.recalibrate
            && !self.calibrating
            && self.provider.load() == 0
            && now.since(self.timers.last_calibration) >= every
        {
            self.calibrating = true;
            self.timers.last_calibration = now;
            self.out.push(Output::Run(Work::Calibrate));
        }
    }

    /// Ends a turn: places what can be placed, starts what can run, and
    /// hands over the turn's writes and outputs.
    pub fn end_turn(&mut self, now: Timestamp) -> Turn {
        self.sign_agreements(now);
        self.sign_receipts(now);
        self.history.declines(&self.counters.declined, now);
        self.history.flush(&mut self.writes);
        self.requester.place(now, &self.view);
        self.drain_actions(now);
        self.make_payments(false, now);
        self.make_checkpoint(now);
        self.write_dirty_jobs();
        self.start_tasks(now);
        self.release_held(serve::Release::NotStarted, now);
        let free = self.provider.free_slots();
        if free != self.timers.last_free {
            self.timers.last_free = free;
            self.timers.want_advert(AdvertCause::FreeSlots);
        }
        if self.timers.advert_due.is_some()
            && now.since(self.timers.last_advert) >= Duration::from_millis(100)
        {
            self.publish_advert(now);
        }
        let after = std::mem::take(&mut self.after);
        let must_flush = std::mem::take(&mut self.must_flush);
        Turn {
            writes: std::mem::take(&mut self.writes),
            flush: must_flush || !after.is_empty(),
            now: std::mem::take(&mut self.out),
            after,
        }
    }

    /// Stops taking work (shutdown): the advert says so at once, and each
    /// agreement queued or running here is withdrawn, its requester told
    /// (a `Cancel` this node signs, reason `Withdrawn`) so that it places
    /// the task again at once. Returns how many were withdrawn: the caller
    /// gives those messages a moment to leave.
    pub fn shutdown(&mut self, now: Timestamp) -> usize {
        self.provider.drain();
        // Orders' held answers go with the agreements alone, each task's
        // withdrawal after its answer (see `withdraw`).
        let withdrawn = self.provider.withdraw_all();
        self.withdraw(&withdrawn, now);
        self.release_held(serve::Release::All, now);
        // What is owed is paid now, not a moment later.
        self.make_payments(true, now);
        if !withdrawn.is_empty() {
            tracing::info!(
                tasks = withdrawn.len(),
                "stopping: withdrew the tasks accepted here"
            );
        }
        self.timers.advert_due = Some(AdvertCause::Shutdown);
        self.publish_advert(now);
        withdrawn.len()
    }

    /// Hands accepted tasks back to their requesters: each gets a signed
    /// `Withdrawn` cancel at once, so it re-places the task without
    /// waiting for its deadline; a run of one that still ends sends no
    /// receipt.
    fn withdraw(&mut self, withdrawn: &[crate::provider::Accepted], now: Timestamp) {
        for t in withdrawn {
            self.credit.released(t.requester, &t.agreement);
            self.writes.delete(records::accepted_key(&t.agreement));
            if t.stage == crate::provider::Stage::Running {
                // The run stops; if it still ends, it sends no receipt.
                self.cancelled_running.insert(t.agreement);
                self.out.push(Output::Interrupt {
                    agreement: t.agreement,
                });
            }
            self.inline.remove(&t.agreement);
            let cancel = Cancel {
                agreement: t.agreement,
                task: t.assignment.task,
                reason: CancelReason::Withdrawn,
            };
            let env = self.seal(&cancel, place::CANCEL_LIFETIME, now);
            let out = self.request(
                t.requester,
                MarketRequest::Cancel(env),
                Vec::new(),
                Pending::Cancel { to: t.requester },
            );
            // An order whose answer was held (a batch task waiting for a
            // slot) is answered first, with the agreement alone: the
            // requester knows the agreement the withdrawal names only from
            // that answer, which goes once the turn's writes are durable.
            if self.release_one(&t.agreement) {
                self.after.push(out);
            } else {
                self.out.push(out);
            }
        }
        if !withdrawn.is_empty() {
            self.must_flush = true;
        }
    }

    /// A sample of what the owner's limits read (temperature, battery,
    /// local time). When one starts to hold the node, no new work is taken,
    /// running tasks are suspended in place ([`Engine::suspends`]) and
    /// adverts say the node takes no work; when it clears, they resume.
    pub fn on_readings(&mut self, r: &crate::limits::Readings) {
        if self.provider.on_readings(r) {
            match self.provider.limits().held() {
                Some(why) => {
                    tracing::info!(why = %why, "an owner's limit holds the node: suspending its tasks")
                }
                None => tracing::info!("the owner's limits clear: resuming"),
            }
            self.timers.want_advert(AdvertCause::Limits);
        }
    }

    /// The owner sets new limits: applied from the next reading, and kept
    /// in the records over the configuration's, across restarts.
    pub fn set_limits(&mut self, limits: crate::limits::OwnerLimits) {
        tracing::info!(limits = ?limits.describe(), "the owner set new limits");
        self.writes.put(records::OWNER_LIMITS, &limits);
        self.provider.set_limits(limits);
        self.must_flush = true;
    }

    /// Whether running tasks are to be suspended in place now (the owner
    /// paused the node, or one of their limits holds it).
    pub fn suspends(&self) -> bool {
        self.provider.suspends()
    }

    /// The owner pauses providing, until `until` or until resumed: no new
    /// work (adverts say so at once), and tasks already accepted are
    /// suspended in place until the pause ends ([`Engine::suspends`]).
    /// The pause is kept in the records: it holds across a restart.
    pub fn pause(&mut self, until: Option<Timestamp>) {
        tracing::info!(?until, "the owner paused providing");
        self.provider.pause(until);
        self.writes
            .put(records::OWNER_PAUSE, &until.unwrap_or(Timestamp(u64::MAX)));
        self.must_flush = true;
        self.timers.want_advert(AdvertCause::Pause);
    }

    /// The owner resumes providing (or a timed pause ran out).
    pub fn resume(&mut self) {
        if self.provider.resume() {
            tracing::info!("providing resumed");
        }
        self.writes.delete(records::OWNER_PAUSE);
        self.must_flush = true;
        self.timers.want_advert(AdvertCause::Pause);
    }

    /// A load sample of the machine's other processes (share of all
    /// cores): the owner's idle policy decides whether the node takes work.
    pub fn on_load(&mut self, load: Option<f64>) {
        self.load = load;
        if self.provider.set_load(load) {
            tracing::info!(
                ?load,
                accepting = self.provider.accepting(),
                "idle policy changed"
            );
            self.timers.want_advert(AdvertCause::IdlePolicy);
        }
    }

    /// Capacity was measured again.
    pub fn on_calibrated(&mut self, result: Result<ComputeUnits, String>, now: Timestamp) {
        self.calibrating = false;
        match result {
            Ok(cu) => {
                self.calibrated_at = now;
                self.provider.set_speed(cu);
                self.timers.want_advert(AdvertCause::Capacity);
            }
            Err(e) => tracing::warn!(error = %e, "recalibration failed"),
        }
    }

    /// Accepts a job (its content already on this node). The job is in the
    /// turn's writes, which the turn flushes: acknowledge the submitter once
    /// they are durable.
    pub fn submit(&mut self, mut spec: JobSpec, now: Timestamp) -> Result<JobId, SubmitError> {
        let feeds = self.pipe_inputs(&mut spec)?;
        self.check_content(&spec)?;
        self.requester
            .check_placeable(&spec, now, &self.view)
            .map_err(SubmitError::Unplaceable)?;
        self.must_flush = true;
        let id = JobId(self.rng.random());
        self.counters.jobs_submitted += 1;
        tracing::info!(job = %id, tasks = spec.inputs.len(), "job submitted");
        self.requester.submit(id, spec, now);
        if let Some(feeds) = feeds {
            self.requester.start_pipeline(id, &feeds, now);
        }
        Ok(id)
    }

    /// For a job that takes its inputs from another job here
    /// (`inputs_from`): one input per upstream task, named after it, bound
    /// to its output where that is verified already; and what each
    /// upstream task feeds now.
    fn pipe_inputs(&self, spec: &mut JobSpec) -> Result<Option<Vec<Feed>>, SubmitError> {
        let Some(up) = spec.inputs_from else {
            return Ok(None);
        };
        if spec.dataset.is_some() {
            return Err(SubmitError::Invalid(SpecError(
                "a job takes its inputs from a dataset or from another job, not both".into(),
            )));
        }
        let (inputs, feeds): (Vec<InputSpec>, Vec<Feed>) = self
            .with_job(&up, |rec, tasks| {
                tasks
                    .iter()
                    .map(|t| {
                        let feed = Feed::of(t);
                        let name = rec.spec.inputs[t.id.index as usize].name.clone();
                        (feed.input(name), feed)
                    })
                    .unzip()
            })
            .ok_or_else(|| {
                SubmitError::Missing(format!(
                    "job {up} is not on this node: a job takes its inputs from a job submitted on the same node"
                ))
            })?;
        spec.inputs = inputs;
        Ok(Some(feeds))
    }

    /// The placement each task would get now, without sending anything.
    pub fn plan(&mut self, spec: &JobSpec, now: Timestamp) -> Result<Vec<Decision>, SubmitError> {
        let mut spec = spec.clone();
        self.pipe_inputs(&mut spec)?;
        self.check_content(&spec)?;
        Ok(self.requester.plan(&spec, now, &self.view))
    }

    /// Refuses a spec whose content this node could not send to providers:
    /// the module and every input must be stored here (a module it has only
    /// compiled cannot be sent), with the size the spec declares.
    fn check_content(&self, s: &JobSpec) -> Result<(), SubmitError> {
        s.validate()?;
        let check = |what: String, stored: Option<u64>, declared: Option<u64>| match stored {
            None => Err(SubmitError::Missing(format!(
                "{what} is not on this node: upload it first (PUT /v1/content)"
            ))),
            Some(n) if declared.is_some_and(|d| d != n) => Err(SubmitError::Invalid(SpecError(format!(
                "{what} is declared as {} bytes but {n} bytes were uploaded: declare the size PUT /v1/content answered",
                declared.unwrap_or(0)
            )))),
            Some(_) => Ok(()),
        };
        let module = self.host.stored_size(&s.module);
        check(format!("module {}", s.module), module, Some(s.module_size.0))?;
        if let Some(r) = &s.reduce {
            check(format!("reduce module {r}"), self.host.stored_size(r), None)?;
        }
        if s.inputs_from.is_some() {
            // The inputs are the upstream job's verified outputs, held here.
            return Ok(());
        }
        if let Some(d) = &s.dataset {
            // The files are fetched from the dataset's holders; its
            // manifest, resolved when the job was built, must be here.
            return check(format!("dataset {d}"), self.host.stored_size(d), None);
        }
        for i in &s.inputs {
            // An empty input needs no upload.
            let stored = if i.id == ContentId::of(&[]) {
                Some(0)
            } else {
                self.host.stored_size(&i.id)
            };
            check(format!("input {} ({})", i.name, i.id), stored, Some(i.size.0))?;
        }
        Ok(())
    }

    /// Cancels a job: its live copies are withdrawn.
    pub fn cancel(&mut self, id: JobId, now: Timestamp) -> Result<(), CancelError> {
        match self.requester.job(&id) {
            None => Err(CancelError::Unknown(id)),
            Some((rec, _)) if rec.state.is_terminal() => Err(CancelError::Ended(id)),
            Some(_) => {
                self.requester.cancel(id, now);
                Ok(())
            }
        }
    }

    /// This node.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the node knows of its peers.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The requester side.
    pub fn requester(&self) -> &Requester {
        &self.requester
    }

    /// Holders of content found in the DHT (for placement near data).
    pub fn on_holders(&mut self, found: Vec<(ContentId, Vec<NodeId>)>) {
        for (id, holders) in found {
            self.requester.learn_holders(id, &holders);
        }
    }

    /// The provider side.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The credit decisions.
    pub fn credit(&self) -> &crate::credit::Credit {
        &self.credit
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// When capacity was last measured.
    pub fn calibrated_at(&self) -> Timestamp {
        self.calibrated_at
    }

    /// Addresses the node listens on.
    pub fn listen(&self) -> &[String] {
        &self.listen
    }

    /// When the engine started.
    pub fn started(&self) -> Timestamp {
        self.started
    }

    /// The content this node's work needs now: the module and input of every
    /// task it accepted, the module, inputs and outputs of every job it runs.
    /// Collection of stored content never touches these.
    pub fn referenced_content(&self) -> std::collections::HashSet<ContentId> {
        let mut out = std::collections::HashSet::new();
        for t in self.provider.tasks() {
            out.extend([t.assignment.module, t.assignment.input]);
            out.extend(t.assignment.resume);
            out.extend(t.checkpoint);
        }
        for j in self.requester.jobs().filter(|j| !j.state.is_terminal()) {
            out.extend(job_content(&self.requester, j));
        }
        out.extend(self.requester.checkpoints_held());
        out
    }

    /// Asks the host to collect stored content, keeping what work needs and
    /// what is pinned for the user; expired pins go.
    fn collect(&mut self, now: Timestamp) {
        let mut keep = self.referenced_content();
        match records::scan::<Vec<ContentId>>(self.host.as_ref(), records::PUBLISHED) {
            Ok(published) => keep.extend(published.into_iter().flat_map(|(_, ids)| ids)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the published datasets; not collecting content this time");
                return;
            }
        }
        match records::scan::<Timestamp>(self.host.as_ref(), records::PIN) {
            Ok(pins) => {
                for (key, until) in pins {
                    let Some(id) = key.strip_prefix(records::PIN).and_then(|k| k.parse().ok()) else {
                        continue;
                    };
                    if until > now {
                        keep.insert(id);
                    } else {
                        self.writes.delete(key);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the pins; not collecting content this time");
                return;
            }
        }
        self.timers.collecting = true;
        self.out.push(Output::Run(Work::Collect { keep }));
    }

    /// Stored content went past the owner's cap between two periodic
    /// collections (a burst of large outputs or inputs): collect now, so
    /// that the cap is exceeded by at most what is being written, and the
    /// node stops taking work if what it must keep alone exceeds it.
    pub fn on_disk_over_cap(&mut self, now: Timestamp) {
        if self.config.collect_every.is_some() && !self.timers.collecting {
            self.timers.last_collect = now;
            self.collect(now);
        }
    }

    /// The disk holding content reached (or left) the owner's cap.
    pub fn on_disk_full(&mut self, full: bool) {
        self.timers.collecting = false;
        if self.provider.set_disk_full(full) {
            tracing::warn!(full, "content disk cap: taking new work = {}", !full);
            self.timers.want_advert(AdvertCause::Disk);
        }
    }

    /// Whether nothing here waits on a clock finer than [`QUIET_TICK`],
    /// the pace of [`Engine::tick`]'s housekeeping (adverts expired,
    /// refreshed and summarised, heads published): no live job of this
    /// node's, no task accepted from others, no request, delivery,
    /// payment, parked call or audit under way, no calibration. A quiet
    /// engine needs a tick only every [`QUIET_TICK`]; whatever arrives
    /// meanwhile is handled when it comes, and may end the quiet.
    pub fn quiet(&self) -> bool {
        self.pending.is_empty()
            && self.deliveries.len() == 0
            && self.to_pay.is_empty()
            && self.parked.is_empty()
            && self.audits.is_empty()
            && self.storing.is_empty()
            && self.storing_progress.is_empty()
            && !self.calibrating
            && !self.timers.collecting
            && self.provider.load() == 0
            && self.provider.tasks().next().is_none()
            && !self.requester.busy()
    }

    /// The last load sample of other processes.
    pub fn load(&self) -> Option<f64> {
        self.load
    }

    /// Peers connected now.
    pub fn connected(&self) -> usize {
        self.connected.len()
    }

    /// Whether `peer` is connected now.
    pub fn is_connected(&self, peer: &NodeId) -> bool {
        self.connected.contains(peer)
    }

    /// Vouchers decided and not yet in a payment block.
    pub fn owed(&self) -> usize {
        self.to_pay.len()
    }

    /// Requests awaiting an answer; deliveries awaiting acknowledgement,
    /// and vouchers not yet in a payment block.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.pending.len(), self.deliveries.len() + self.to_pay.len())
    }
}

/// Every piece of content a job names: module, reduce module, inputs,
/// verified outputs and the reduced result.
fn job_content(r: &Requester, j: &crate::job::JobRecord) -> Vec<ContentId> {
    let s = &j.spec;
    let mut out: Vec<ContentId> = s.inputs.iter().map(|i| i.id).collect();
    out.push(s.module);
    out.extend(s.reduce);
    out.extend(j.reduced);
    if let Some((_, tasks)) = r.job(&j.id) {
        out.extend(tasks.iter().filter_map(|t| t.output));
    }
    out
}

/// The arguments of a job's tasks, as they travel.
pub fn args_of(args: &[String]) -> Vec<Arg> {
    args.iter().cloned().map(Arg).collect()
}

//! Scoring providers, and what a requester learns about them.
//!
//! For a task with fuel estimate `F`, a provider `p` is scored by
//!
//! ```text
//! ect(p)   = wait(p) + transfer(p) + F / speed(p) + rtt(p)
//! score(p) = ect(p) · (1 + W_PRICE · price(p) / max_price)
//!                   · (1 + W_REPUTATION · (1 − reputation(p)))
//! ```
//!
//! lower being better (SPEC.md §8.2). `speed(p)` is the provider's
//! per-slot capacity: advertised at first, then learnt from its receipts
//! (an exponentially weighted average of fuel per second of execution), so a
//! provider whose adverts overstate its capacity loses work; until then, a
//! module's pace learnt on other providers (its runs' speed over their
//! adverts) scales the advert. `wait(p)` comes
//! from the requester's own tasks in flight there (one lane per slot, each
//! busy until its predicted finish). `transfer(p)` is the bytes the provider
//! lacks (a provider that already holds the module or input is not sent it)
//! over an assumed bandwidth. Reputation starts at 0.5 and moves with every
//! verified receipt (up) and every failure (down); a provider caught
//! cheating is banned.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use agora_protocol::capacity::Label;
use agora_protocol::market::LatencyClass;
use agora_protocol::rpc::Decline;
use agora_protocol::units::{
    Bytes, ComputeUnits, Credits, EnergyRate, FUEL_PER_CU_SECOND, Fuel, Price, Timestamp,
};
use agora_protocol::{ContentId, Domain, NodeId};
use serde::Serialize;

use crate::view::{Standing, View};

/// Weight of price in the score.
pub const W_PRICE: f64 = 0.5;
/// Weight of (lack of) reputation in the score.
pub const W_REPUTATION: f64 = 1.0;
/// Reputation of a provider never seen.
pub const INITIAL_REPUTATION: f64 = 0.5;
/// Bandwidth assumed for transfer estimates to a provider nothing was
/// measured to yet (neither it nor its domain), in bytes per second.
pub const ASSUMED_BANDWIDTH: f64 = 50.0 * 1024.0 * 1024.0;

/// The time `bytes` take to reach a provider at `bandwidth` (bytes/s, as
/// measured; [`ASSUMED_BANDWIDTH`] when unknown), in ms.
pub fn transfer_ms(bytes: u64, bandwidth: Option<f64>) -> f64 {
    let rate = bandwidth.filter(|b| *b > 0.0).unwrap_or(ASSUMED_BANDWIDTH);
    bytes as f64 / rate * 1000.0
}
/// Smoothing factor of learnt speeds (over the logarithm of each sample).
pub const SPEED_ALPHA: f64 = 0.3;
/// One receipt moves the learnt speed by at most this factor, up or down:
/// a pathological receipt (a run that stalled, or one that did almost no
/// metered work) cannot wreck what many normal ones taught.
pub const SPEED_STEP: f64 = 4.0;
/// The learnt speed stays within this factor below and above the
/// advertised one: an advert overstating capacity 16-fold is caught, and no
/// receipt can make a provider look infinitely slow.
pub const SPEED_RANGE: (f64, f64) = (1.0 / 16.0, 4.0);
/// A speed learnt longer ago than this is forgotten (the advert counts
/// again): a provider judged slow gets another chance.
pub const SPEED_MEMORY: Duration = Duration::from_secs(600);
/// Shortest execution a speed is learnt from.
pub const MIN_LEARNING_RUN: Duration = Duration::from_millis(20);

/// The per-slot speed, in CU, a run of `fuel` in `took` reached; none for
/// a run shorter than [`MIN_LEARNING_RUN`] (starting the instance weighs
/// too much in it) or one that used no fuel.
pub fn run_speed(fuel: Fuel, took: Duration) -> Option<f64> {
    (fuel.0 > 0 && took >= MIN_LEARNING_RUN)
        .then(|| fuel.0 as f64 / took.as_secs_f64() / FUEL_PER_CU_SECOND as f64)
}

/// `learnt` kept within [`SPEED_RANGE`] of `base`, the speed stated for
/// the same node (its advert, or its calibration).
pub fn within_range(learnt: f64, base: f64) -> f64 {
    learnt.clamp(base * SPEED_RANGE.0, base * SPEED_RANGE.1)
}

/// The next value of a learnt speed (or pace) after `sample`: a moving
/// average of the logarithm, each step bounded, so that one outlier moves
/// it by at most `SPEED_STEP^SPEED_ALPHA`; the sample alone when nothing
/// was learnt within [`SPEED_MEMORY`] of `now`.
fn averaged(learnt: Option<(f64, u64)>, sample: f64, now: Timestamp) -> f64 {
    match learnt {
        Some((l, at)) if now.0.saturating_sub(at) < SPEED_MEMORY.as_millis() as u64 => {
            let s = sample.clamp(l / SPEED_STEP, l * SPEED_STEP);
            (l.ln() * (1.0 - SPEED_ALPHA) + s.ln() * SPEED_ALPHA).exp()
        }
        _ => sample,
    }
}

/// Most modules whose pace a requester keeps (the least recently learnt
/// goes first).
pub const MAX_PACES: usize = 256;
/// Tasks shorter than this are offered to the best-scored provider alone:
/// negotiating with several would cost more than the task (SPEC.md §8.2).
pub const TINY_TASK: Duration = Duration::from_millis(50);
/// Tasks shorter than this are pipelined: a requester keeps up to this much
/// estimated work per slot queued at a provider beyond its slots (and at
/// most [`TINY_BACKLOG`] tasks per slot), to hide negotiation and round-trip
/// latency (tens of milliseconds between one task's receipt and the next
/// one's start) and let requests travel in batches. Longer tasks are pulled
/// one at a time per slot, so a slow provider never holds work a faster one
/// could start (SPEC.md §8.2).
pub const PIPELINED_WORK: Duration = Duration::from_millis(250);
/// Most extra tasks per slot in flight for tiny tasks.
pub const TINY_BACKLOG: u32 = 16;

/// What the requester knows of one provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderStats {
    /// Per-slot speed learnt from receipts, in CU (see [`speed_of`]).
    pub learnt_cu: Option<f64>,
    /// When it was last learnt (ms timestamp).
    #[serde(skip)]
    pub learnt_at: u64,
    /// The per-slot speed it advertised when last asked, CU.
    #[serde(skip)]
    pub advertised: Option<f64>,
    /// It did not answer the last time it was asked (cleared when it
    /// answers): ranked after every provider that did.
    pub unreachable: bool,
    /// Reputation in `[0, 1]`.
    pub reputation: f64,
    /// Predicted finish time of each task in flight there (ms timestamps).
    pub lanes: Vec<u64>,
    /// Receipts verified.
    pub verified: u64,
    /// Copies that failed (declined after offering, unreachable, overdue).
    pub failed: u64,
    /// Set when the provider was caught returning a wrong result.
    pub banned: Option<String>,
    /// Do not ask before this time (it declined for lack of capacity).
    pub backoff_until: u64,
    /// Content it is known to hold.
    #[serde(skip)]
    pub holds: HashSet<ContentId>,
    /// What it said of its limits when it declined.
    #[serde(skip)]
    pub stated: Stated,
}

/// How long limits a provider stated in a decline stand for it.
pub const STATED_MEMORY: Duration = Duration::from_secs(600);
/// How long a provider that stopped taking work is taken at its word.
const NOT_ACCEPTING_FOR: Duration = Duration::from_secs(2);

/// Limits a provider stated when it declined a call. Its advert may be
/// stale, and a domain summary lists contacts with no limits at all: what
/// it said itself excludes it as an advert would, for [`STATED_MEMORY`]
/// (its refusal of this node's credit for as long as the requester backs
/// off from asking again), so that a decline for a lasting reason is not
/// asked again and again, and a task no provider can take is seen as such.
#[derive(Debug, Clone, Default)]
pub struct Stated {
    /// When it last stated a limit (ms timestamp).
    pub at: u64,
    /// The most memory it gives a task.
    pub memory: Option<Bytes>,
    /// Its asking price.
    pub asking: Option<Price>,
    /// Its energy cost.
    pub energy: Option<EnergyRate>,
    /// The largest output it lets a task write.
    pub max_output: Option<Bytes>,
    /// The largest module or input it accepts.
    pub max_content: Option<Bytes>,
    /// The most fuel it lets a task use.
    pub max_fuel: Option<Fuel>,
    /// The longest it lets a task run.
    pub max_time: Option<Duration>,
    /// Not taking work until then (ms timestamp).
    pub not_accepting_until: u64,
    /// It declined this node's credit (or this node), standing until then
    /// (ms timestamp).
    pub credit: Option<(Exclusion, u64)>,
}

impl Stated {
    /// `info` as its own statements amend it, while they are fresh.
    fn amend(&self, info: &ProviderInfo, now: Timestamp) -> Option<ProviderInfo> {
        if self.at == 0 || now.0.saturating_sub(self.at) >= STATED_MEMORY.as_millis() as u64 {
            return None;
        }
        let mut i = info.clone();
        if let Some(m) = self.memory {
            i.memory = i.memory.min(m);
        }
        if let Some(p) = self.asking {
            i.price = i.price.max(p);
        }
        if let Some(e) = self.energy {
            i.energy = Some(i.energy.map_or(e, |x| x.max(e)));
        }
        if let Some(m) = self.max_output {
            i.max_output = i.max_output.min(m);
        }
        if let Some(m) = self.max_content {
            i.max_content = i.max_content.min(m);
        }
        if let Some(f) = self.max_fuel {
            i.max_task_fuel = i.max_task_fuel.min(f);
        }
        if let Some(t) = self.max_time {
            i.max_task_time = i.max_task_time.min(t);
        }
        if self.not_accepting_until > now.0 {
            i.accepting = false;
        }
        Some(i)
    }
}

impl ProviderStats {
    /// The per-slot speed learnt of this provider, while fresh, within
    /// [`SPEED_RANGE`] of the one it advertises.
    fn learnt_speed(&self, advertised: f64, now: Timestamp) -> Option<f64> {
        match self.learnt_cu {
            Some(l) if now.0.saturating_sub(self.learnt_at) < SPEED_MEMORY.as_millis() as u64 => {
                Some(within_range(l, advertised.max(1.0)))
            }
            _ => None,
        }
    }
}

/// The per-slot speed to assume for a provider that advertises
/// `advertised` per slot and of which the requester knows `stats`, for a
/// module of `pace` (see [`Need::pace`]): the speed learnt of it while
/// fresh; else its advert times the module's pace.
pub fn speed_of(advertised: f64, stats: Option<&ProviderStats>, pace: Option<f64>, now: Timestamp) -> f64 {
    let advertised = advertised.max(1.0);
    stats
        .and_then(|s| s.learnt_speed(advertised, now))
        .unwrap_or_else(|| within_range(advertised * pace.unwrap_or(1.0), advertised))
}

impl Default for ProviderStats {
    fn default() -> Self {
        ProviderStats {
            learnt_cu: None,
            learnt_at: 0,
            advertised: None,
            unreachable: false,
            reputation: INITIAL_REPUTATION,
            lanes: Vec::new(),
            verified: 0,
            failed: 0,
            banned: None,
            backoff_until: 0,
            holds: HashSet::new(),
            stated: Stated::default(),
        }
    }
}

/// The requester's knowledge of every provider it has dealt with.
#[derive(Debug, Default)]
pub struct Book {
    providers: HashMap<NodeId, ProviderStats>,
    /// Bans not yet handed over to be persisted.
    new_bans: Vec<(NodeId, String)>,
    /// Per module, what each provider's runs of it reached over the speed
    /// it advertises (see [`Book::pace`]): fuel counts instructions, and a
    /// module's mix runs faster or slower than the calibration's, so a
    /// provider not learnt yet is judged at its advert times the pace.
    paces: HashMap<ContentId, Pace>,
}

/// One module's pace on each of the providers that ran it last: the
/// ratio learnt of each (averaged like a speed), and when (ms).
#[derive(Debug, Default)]
struct Pace {
    by: Vec<(NodeId, f64, u64)>,
    /// When any of them was last learnt (ms).
    at: u64,
}

/// Most providers a module's pace is kept for (the least recently heard
/// goes first).
const MAX_PACE_PROVIDERS: usize = 16;

impl Book {
    /// Stats of a provider (default if never seen).
    pub fn get(&self, p: &NodeId) -> Option<&ProviderStats> {
        self.providers.get(p)
    }

    fn entry(&mut self, p: NodeId) -> &mut ProviderStats {
        self.providers.entry(p).or_default()
    }

    /// All providers known.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &ProviderStats)> {
        self.providers.iter()
    }

    /// A task was placed there, predicted to finish at `finish`.
    pub fn placed(&mut self, p: NodeId, finish: Timestamp) {
        self.entry(p).lanes.push(finish.0);
    }

    /// A task there ended (one lane freed: the earliest predicted).
    pub fn released(&mut self, p: NodeId) {
        let e = self.entry(p);
        if let Some((i, _)) = e.lanes.iter().enumerate().min_by_key(|(_, t)| **t) {
            e.lanes.swap_remove(i);
        }
    }

    /// A receipt verified: learn speed, raise reputation, note held content.
    pub fn verified(&mut self, p: NodeId, fuel: Fuel, exec: Duration, held: &[ContentId], now: Timestamp) {
        let e = self.entry(p);
        // Short runs measure per-task overhead and timer granularity more
        // than speed: learn only from runs long enough to mean something.
        if let Some(sample) = run_speed(fuel, exec) {
            let learnt = averaged(e.learnt_cu.map(|l| (l, e.learnt_at)), sample, now);
            // Kept within range of the advert, so that it can come back.
            let learnt = match e.advertised {
                Some(a) => within_range(learnt, a),
                None => learnt,
            };
            e.learnt_cu = Some(learnt.max(f64::MIN_POSITIVE));
            e.learnt_at = now.0;
        }
        e.reputation += (1.0 - e.reputation) * 0.1;
        e.verified += 1;
        e.holds.extend(held.iter().copied());
    }

    /// A receipt of a run of `module` on `p` verified: what it teaches of
    /// the module's pace against `p`'s advert (nothing if the requester
    /// holds no advert of `p`, or the run was too short to mean anything).
    pub fn learn_pace(&mut self, module: ContentId, p: &NodeId, fuel: Fuel, exec: Duration, now: Timestamp) {
        let (Some(sample), Some(advertised)) = (
            run_speed(fuel, exec),
            self.providers.get(p).and_then(|s| s.advertised),
        ) else {
            return;
        };
        let ratio = within_range(sample, advertised) / advertised;
        if self.paces.len() >= MAX_PACES
            && !self.paces.contains_key(&module)
            && let Some(oldest) = self.paces.iter().min_by_key(|(_, pace)| pace.at).map(|(m, _)| *m)
        {
            self.paces.remove(&oldest);
        }
        let pace = self.paces.entry(module).or_default();
        pace.at = now.0;
        match pace.by.iter_mut().find(|(node, _, _)| node == p) {
            Some((_, r, at)) => {
                *r = within_range(averaged(Some((*r, *at)), ratio, now), 1.0);
                *at = now.0;
            }
            None => {
                if pace.by.len() >= MAX_PACE_PROVIDERS
                    && let Some(i) = (0..pace.by.len()).min_by_key(|i| pace.by[*i].2)
                {
                    pace.by.swap_remove(i);
                }
                pace.by.push((*p, ratio, now.0));
            }
        }
    }

    /// The pace of `module`: the median, over the providers whose runs of
    /// it taught one within [`SPEED_MEMORY`], of the speed their runs
    /// reached over their advert (see [`Book::learn_pace`]). A median, so
    /// that one provider's receipts cannot set how fast the others are
    /// taken to be while two or more others ran the module too.
    pub fn pace(&self, module: &ContentId, now: Timestamp) -> Option<f64> {
        let fresh = |at: u64| now.0.saturating_sub(at) < SPEED_MEMORY.as_millis() as u64;
        let mut ratios: Vec<f64> = self
            .paces
            .get(module)?
            .by
            .iter()
            .filter(|(_, _, at)| fresh(*at))
            .map(|(_, r, _)| *r)
            .collect();
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        let mid = ratios.len() / 2;
        Some(if ratios.len() % 2 == 1 {
            ratios[mid]
        } else {
            (ratios[mid - 1] * ratios[mid]).sqrt()
        })
    }

    /// Content a node announces it holds (a DHT provider record): it is
    /// not sent to that node, so placing work there costs no transfer.
    pub fn learn_holds(&mut self, p: NodeId, ids: &[ContentId]) {
        self.entry(p).holds.extend(ids.iter().copied());
    }

    /// The per-slot speed a provider advertises (noted when it is asked, so
    /// that what is learnt stays within range of it).
    pub fn advertised(&mut self, p: NodeId, per_slot: f64) {
        self.entry(p).advertised = Some(per_slot.max(1.0));
    }

    /// A copy failed there (overdue, unreachable, reneged).
    pub fn failed(&mut self, p: NodeId) {
        let e = self.entry(p);
        e.reputation *= 0.8;
        e.failed += 1;
    }

    /// The provider could not be reached.
    pub fn unreachable(&mut self, p: NodeId) {
        self.entry(p).unreachable = true;
    }

    /// The provider answered (an offer, an agreement, a receipt, a decline).
    pub fn answered(&mut self, p: NodeId) {
        if let Some(e) = self.providers.get_mut(&p) {
            e.unreachable = false;
        }
    }

    /// The provider declined a call for a task that may write `max_output`
    /// with `decline`: limits it states are kept (see [`Stated`]), and a
    /// refusal of this node's credit stands until `credit_until`. Whether
    /// the decline stated anything.
    pub fn stated(
        &mut self,
        p: NodeId,
        decline: &Decline,
        max_output: Bytes,
        credit_until: Timestamp,
        now: Timestamp,
    ) -> bool {
        let s = &mut self.entry(p).stated;
        match decline {
            Decline::MemoryTooLarge { max } => s.memory = Some(*max),
            Decline::PriceTooLow { asking } => s.asking = Some(*asking),
            Decline::EnergyTooHigh { rate } => s.energy = Some(*rate),
            // Either the output or the module and input are too large.
            Decline::TooLarge { max } if max_output > *max => s.max_output = Some(*max),
            Decline::TooLarge { max } => s.max_content = Some(*max),
            Decline::FuelTooHigh { max } => s.max_fuel = Some(*max),
            Decline::TimeTooLong { max } => s.max_time = Some(max.duration()),
            Decline::NotAccepting => s.not_accepting_until = now.add(NOT_ACCEPTING_FOR).0,
            Decline::NoCredit { available } => {
                s.credit = Some((
                    Exclusion::Credit {
                        available: *available,
                    },
                    credit_until.0,
                ))
            }
            Decline::Unpaid { receipts } => {
                s.credit = Some((Exclusion::Unpaid { receipts: *receipts }, credit_until.0))
            }
            Decline::Refused => s.credit = Some((Exclusion::Refused, credit_until.0)),
            _ => return false,
        }
        s.at = now.0;
        true
    }

    /// The provider declined for lack of capacity: do not ask again for a while.
    pub fn back_off(&mut self, p: NodeId, until: Timestamp) {
        let e = self.entry(p);
        e.backoff_until = e.backoff_until.max(until.0);
    }

    /// The provider was caught cheating.
    pub fn ban(&mut self, p: NodeId, why: String) {
        let e = self.entry(p);
        let first = e.banned.is_none();
        e.reputation = 0.0;
        e.banned = Some(why.clone());
        if first {
            self.new_bans.push((p, why));
        }
    }

    /// A ban read back from disk at start.
    pub fn restore_ban(&mut self, p: NodeId, why: String) {
        let e = self.entry(p);
        e.reputation = 0.0;
        e.banned = Some(why);
    }

    /// The bans made since the last call, to persist.
    pub fn take_new_bans(&mut self) -> Vec<(NodeId, String)> {
        std::mem::take(&mut self.new_bans)
    }

    /// Whether the provider is banned.
    pub fn is_banned(&self, p: &NodeId) -> bool {
        self.providers.get(p).is_some_and(|s| s.banned.is_some())
    }

    /// Tasks in flight there.
    pub fn in_flight(&self, p: &NodeId) -> u32 {
        self.providers.get(p).map_or(0, |s| s.lanes.len() as u32)
    }
}

/// A provider as a candidate for one task, from its advert or from a
/// domain summary's contact list.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderInfo {
    /// The node.
    pub node: NodeId,
    /// Its domain.
    pub domain: Domain,
    /// Total capacity.
    pub cu: ComputeUnits,
    /// Slots.
    pub slots: u32,
    /// Free slots it advertised.
    pub free_slots: u32,
    /// Memory per task.
    pub memory: Bytes,
    /// Asking price.
    pub price: Price,
    /// Declared energy cost.
    pub energy: Option<EnergyRate>,
    /// Whether it takes work.
    pub accepting: bool,
    /// Smoothed round-trip time, if measured.
    pub rtt: Option<Duration>,
    /// The rate content goes to it at, bytes/s: measured to it or to its
    /// domain ([`View::throughput`]); unknown, [`ASSUMED_BANDWIDTH`].
    pub bandwidth: Option<f64>,
    /// Whether this comes from a full advert (else a summary estimate).
    pub from_advert: bool,
    /// The most fuel it lets one task use (unknown from a summary: none).
    pub max_task_fuel: Fuel,
    /// The longest it lets one task run.
    pub max_task_time: Duration,
    /// The largest output it lets one task write.
    pub max_output: Bytes,
    /// The largest module or input it accepts (unknown until it says).
    pub max_content: Bytes,
    /// How far it has shown that it exists.
    pub standing: Standing,
    /// Its labels (none known from a summary).
    pub labels: Option<Vec<Label>>,
}

/// What a task asks of a provider.
#[derive(Debug, Clone)]
pub struct Need {
    /// Fuel estimate.
    pub estimate: Fuel,
    /// Fuel limit.
    pub fuel_limit: Fuel,
    /// Largest output.
    pub max_output: Bytes,
    /// Memory.
    pub memory: Bytes,
    /// Deadline from placement.
    pub deadline: Duration,
    /// Max price.
    pub max_price: Price,
    /// Max energy cost.
    pub max_energy: Option<EnergyRate>,
    /// Domain constraint.
    pub domain: Option<Domain>,
    /// Module and its size.
    pub module: (ContentId, Bytes),
    /// Input and its size.
    pub input: (ContentId, Bytes),
    /// Providers to leave out (replicas must differ).
    pub exclude: Vec<NodeId>,
    /// Labels a provider must carry (`--select key=value`).
    pub select: Vec<Label>,
    /// Interactive or batch: what the score weighs.
    pub class: LatencyClass,
    /// What receipts taught of the module's pace ([`Book::pace`]): a
    /// provider without a learnt speed is judged at its advert times this.
    pub pace: Option<f64>,
    /// The job's energy budget shared out per task, mJ: when set, providers
    /// whose estimated energy for the task exceeds it are left out and the
    /// least energy wins among those that meet the deadline.
    pub energy_cap_mj: Option<f64>,
}

/// Why a provider is not a candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Exclusion {
    /// Not enough memory per task.
    Memory {
        /// Needed.
        need: Bytes,
        /// Offered.
        have: Bytes,
    },
    /// Asking price above the maximum.
    Price {
        /// Asking.
        asking: Price,
    },
    /// Energy cost above the limit (or undeclared).
    Energy,
    /// Outside the requested domain.
    Domain,
    /// Not taking work (idle policy).
    NotAccepting,
    /// Caught cheating.
    Banned,
    /// Already runs (or ran) a copy of this task.
    AlreadyUsed,
    /// All its slots are taken by this requester's tasks, or it declined
    /// recently for lack of capacity.
    Busy,
    /// Its owner lets one task use less fuel than the task's limit.
    FuelCap {
        /// The most it allows.
        max: Fuel,
    },
    /// Its owner lets one task write less output than the task may.
    OutputCap {
        /// The most it allows.
        max: Bytes,
    },
    /// Its owner lets one task run less long than the task would take.
    TimeCap {
        /// The longest it allows, ms.
        max_ms: u64,
    },
    /// No verified work yet, and already holds its probation share of
    /// this requester's tasks.
    Probation {
        /// Copies it may hold until it has verified work.
        cap: usize,
    },
    /// Cannot finish within the deadline at its known speed.
    Deadline {
        /// Estimated completion, in ms.
        ect_ms: u64,
    },
    /// It accepts smaller modules and inputs than the task's.
    ContentCap {
        /// The largest it accepts.
        max: Bytes,
    },
    /// It declined this node's credit: what it extends is less than a
    /// task may cost.
    Credit {
        /// What it said is available to this node.
        available: Credits,
    },
    /// It holds receipts this node left unpaid past their deadline.
    Unpaid {
        /// How many.
        receipts: u32,
    },
    /// It does not work for this node.
    Refused,
    /// Its energy for the task would exceed the task's share of the
    /// job's energy budget.
    EnergyBudget {
        /// What the task would take there, mJ.
        need_mj: u64,
    },
    /// The job has an energy budget and this provider's energy rate is
    /// unknown (neither measured nor declared).
    EnergyUnknown,
    /// It lacks a label the job selects on.
    Label {
        /// The label wanted, `key=value`.
        want: String,
        /// Its value for that key, if it has one; `None` as well when its
        /// labels are unknown (known from a domain summary only).
        have: Option<String>,
    },
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exclusion::Memory { need, have } => write!(f, "needs {need}, offers {have}"),
            Exclusion::Price { asking } => write!(f, "asks {asking}, above the max price"),
            Exclusion::Energy => f.write_str("energy cost above the limit"),
            Exclusion::EnergyBudget { need_mj } => {
                write!(
                    f,
                    "would use {:.1} J, above the task's share of the energy budget",
                    *need_mj as f64 / 1000.0
                )
            }
            Exclusion::EnergyUnknown => {
                f.write_str("its energy per CU-second is unknown (needed for an energy budget)")
            }
            Exclusion::Domain => f.write_str("outside the requested domain"),
            Exclusion::NotAccepting => f.write_str("not accepting work"),
            Exclusion::Banned => f.write_str("banned: caught returning a wrong result"),
            Exclusion::AlreadyUsed => f.write_str("already holds a copy of this task"),
            Exclusion::Busy => f.write_str("busy"),
            Exclusion::FuelCap { max } => write!(f, "allows at most {} fuel per task", max.0),
            Exclusion::TimeCap { max_ms } => write!(f, "allows a task at most {max_ms} ms"),
            Exclusion::OutputCap { max } => write!(f, "allows at most {max} of output per task"),
            Exclusion::Deadline { ect_ms } => write!(f, "cannot finish in time (estimated {ect_ms} ms)"),
            Exclusion::Probation { cap } => {
                write!(f, "on probation: holds {cap} copies and has no verified work yet")
            }
            Exclusion::ContentCap { max } => write!(f, "accepts modules and inputs of at most {max}"),
            Exclusion::Credit { available } => {
                write!(
                    f,
                    "extends this node {available} credits, less than a task may cost"
                )
            }
            Exclusion::Unpaid { receipts } => {
                write!(
                    f,
                    "holds {receipts} of this node's receipts unpaid past their deadline"
                )
            }
            Exclusion::Refused => f.write_str("refuses to work for this node"),
            Exclusion::Label { want, have: Some(v) } => {
                let key = want.split('=').next().unwrap_or_default();
                write!(f, "selector {want} removed it: it has {key}={v}")
            }
            Exclusion::Label { want, have: None } => {
                write!(
                    f,
                    "selector {want} removed it: it has no such label (or none known)"
                )
            }
        }
    }
}

/// Why no provider can take a task, one phrase per kind of exclusion, each
/// with how far off the nearest provider is and how many are excluded so:
/// e.g. "needs 256 MiB per task; the largest offer is 128 MiB (1 provider)".
pub fn why_none(excluded: &[Exclusion], need: &Need) -> String {
    fn n(count: usize) -> String {
        if count == 1 {
            "1 provider".into()
        } else {
            format!("{count} providers")
        }
    }
    let mut out: Vec<String> = Vec::new();
    let of = |f: &dyn Fn(&Exclusion) -> bool| excluded.iter().filter(|e| f(e)).collect::<Vec<_>>();
    // The figure nearest to fitting among the exclusions `pick` finds (the
    // largest with `largest`, else the smallest), and how many there are.
    fn nearest<T: Ord>(
        excluded: &[Exclusion],
        pick: impl Fn(&Exclusion) -> Option<T>,
        largest: bool,
    ) -> Option<(T, usize)> {
        let all: Vec<T> = excluded.iter().filter_map(pick).collect();
        let n = all.len();
        let best = if largest {
            all.into_iter().max()
        } else {
            all.into_iter().min()
        };
        best.map(|b| (b, n))
    }
    let e = excluded;
    if let Some((max, k)) = nearest(
        e,
        |e| {
            if let Exclusion::Memory { have, .. } = e {
                Some(*have)
            } else {
                None
            }
        },
        true,
    ) {
        out.push(format!(
            "needs {} per task; the largest offer is {max} ({})",
            need.memory,
            n(k)
        ));
    }
    if let Some((min, k)) = nearest(
        e,
        |e| {
            if let Exclusion::EnergyBudget { need_mj } = e {
                Some(*need_mj)
            } else {
                None
            }
        },
        false,
    ) && let Some(cap) = need.energy_cap_mj
    {
        out.push(format!(
            "has an energy budget of {:.1} J per task; the most efficient provider needs {:.1} J ({})",
            cap / 1000.0,
            min as f64 / 1000.0,
            n(k)
        ));
    }
    let unknown = of(&|e| matches!(e, Exclusion::EnergyUnknown)).len();
    if unknown > 0 {
        out.push(format!(
            "has an energy budget; {} measure or declare no energy per CU-second",
            n(unknown)
        ));
    }
    if let Some((min, k)) = nearest(
        e,
        |e| {
            if let Exclusion::Price { asking } = e {
                Some(*asking)
            } else {
                None
            }
        },
        false,
    ) {
        out.push(format!(
            "pays at most {}; the cheapest asks {min} ({})",
            need.max_price,
            n(k)
        ));
    }
    if let Some((max, k)) = nearest(
        e,
        |e| {
            if let Exclusion::FuelCap { max } = e {
                Some(max.0)
            } else {
                None
            }
        },
        true,
    ) {
        out.push(format!(
            "a task may use {} fuel; the most allowed is {max} ({})",
            need.fuel_limit.0,
            n(k)
        ));
    }
    if let Some((max, k)) = nearest(
        e,
        |e| {
            if let Exclusion::OutputCap { max } = e {
                Some(*max)
            } else {
                None
            }
        },
        true,
    ) {
        out.push(format!(
            "a task may write {} of output; the most allowed is {max} ({})",
            need.max_output,
            n(k)
        ));
    }
    if let Some((max, k)) = nearest(
        e,
        |e| {
            if let Exclusion::ContentCap { max } = e {
                Some(*max)
            } else {
                None
            }
        },
        true,
    ) {
        out.push(format!(
            "module {} and input {}; the largest accepted is {max} ({})",
            need.module.1,
            need.input.1,
            n(k)
        ));
    }
    if let Some((max, k)) = nearest(
        e,
        |e| {
            if let Exclusion::TimeCap { max_ms } = e {
                Some(*max_ms)
            } else {
                None
            }
        },
        true,
    ) {
        out.push(format!(
            "a task would run longer than any allows: at most {max} ms ({})",
            n(k)
        ));
    }
    if let Some((max, k)) = nearest(
        e,
        |e| {
            if let Exclusion::Credit { available } = e {
                Some(*available)
            } else {
                None
            }
        },
        true,
    ) {
        out.push(format!(
            "a task may cost up to its fuel limit at the provider's price; the most credit extended to this node is {max} credits ({}): get credits, or lower --fuel",
            n(k)
        ));
    }
    let mut selectors: Vec<&String> = excluded
        .iter()
        .filter_map(|e| match e {
            Exclusion::Label { want, .. } => Some(want),
            _ => None,
        })
        .collect();
    selectors.sort();
    selectors.dedup();
    for want in selectors {
        let k = of(&|e| matches!(e, Exclusion::Label { want: w, .. } if w == want)).len();
        out.push(format!("selects {want}; {} lack it", n(k)));
    }
    for (label, f) in [
        (
            "hold receipts of this node unpaid past their deadline",
            &(|e: &Exclusion| matches!(e, Exclusion::Unpaid { .. })) as &dyn Fn(&Exclusion) -> bool,
        ),
        ("refuse to work for this node", &|e| {
            matches!(e, Exclusion::Refused)
        }),
        ("are not taking work", &|e| matches!(e, Exclusion::NotAccepting)),
        ("are above the energy limit", &|e| matches!(e, Exclusion::Energy)),
        ("are outside the requested domain", &|e| {
            matches!(e, Exclusion::Domain)
        }),
        ("are banned", &|e| matches!(e, Exclusion::Banned)),
        ("already hold a copy of the task", &|e| {
            matches!(e, Exclusion::AlreadyUsed)
        }),
        ("cannot finish before the deadline", &|e| {
            matches!(e, Exclusion::Deadline { .. })
        }),
        ("are busy", &|e| {
            matches!(e, Exclusion::Busy | Exclusion::Probation { .. })
        }),
    ] {
        let k = of(f).len();
        if k > 0 {
            out.push(format!("{} {label}", n(k)));
        }
    }
    if out.is_empty() {
        return "no provider fits".into();
    }
    out.join("; ")
}

/// The first selector `info` does not satisfy, as an exclusion: it must
/// carry each `key=value` of `select` (a provider known only from a summary
/// carries none that are known).
fn selected_out(info: &ProviderInfo, select: &[Label]) -> Option<Exclusion> {
    let labels = info.labels.as_deref().unwrap_or(&[]);
    select.iter().find_map(|want| {
        let have = labels.iter().find(|l| l.key == want.key);
        match have {
            Some(l) if l.value == want.value => None,
            _ => Some(Exclusion::Label {
                want: want.to_string(),
                have: have.map(|l| l.value.clone()),
            }),
        }
    })
}

/// Copies a provider with no verified work may hold at once, for a job of
/// `tasks` tasks: a tenth of them, at least [`PROBATION_MIN`]. A key that
/// was banned and comes back fresh gets little work until its results
/// check out; a new honest provider earns its place with its first
/// verified task.
pub fn probation_cap(tasks: usize) -> usize {
    (tasks / PROBATION_SHARE).max(PROBATION_MIN)
}

/// At least this many copies on probation.
pub const PROBATION_MIN: usize = 2;
/// One in this many of a job's tasks on probation.
const PROBATION_SHARE: usize = 10;

/// A scored candidate.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Scored {
    /// The node.
    pub node: NodeId,
    /// Estimated wait before start, ms.
    pub wait_ms: f64,
    /// Estimated transfer time, ms.
    pub transfer_ms: f64,
    /// Estimated run time, ms.
    pub run_ms: f64,
    /// Round-trip time used, ms.
    pub rtt_ms: f64,
    /// Estimated completion time, ms.
    pub ect_ms: f64,
    /// The score (lower is better).
    pub score: f64,
    /// The per-slot speed used, CU.
    pub speed_cu: f64,
}

/// The per-slot speed the requester assumes for a provider.
pub fn speed(info: &ProviderInfo, stats: Option<&ProviderStats>, pace: Option<f64>, now: Timestamp) -> f64 {
    speed_of(info.cu.0 as f64 / f64::from(info.slots.max(1)), stats, pace, now)
}

/// Checks constraints and scores `info` for `need` at `now`.
pub fn evaluate(
    info: &ProviderInfo,
    stats: Option<&ProviderStats>,
    need: &Need,
    now: Timestamp,
) -> Result<Scored, Exclusion> {
    if stats.is_some_and(|s| s.banned.is_some()) {
        return Err(Exclusion::Banned);
    }
    if let Some(e) = selected_out(info, &need.select) {
        return Err(e);
    }
    if need.exclude.contains(&info.node) {
        return Err(Exclusion::AlreadyUsed);
    }
    if let Some(d) = &need.domain
        && !info.domain.is_within(d)
    {
        return Err(Exclusion::Domain);
    }
    // What it said when it declined stands in for its advert a while.
    let amended = stats.and_then(|s| s.stated.amend(info, now));
    let info = amended.as_ref().unwrap_or(info);
    if let Some((e, until)) = stats.and_then(|s| s.stated.credit.as_ref())
        && *until > now.0
    {
        return Err(e.clone());
    }
    if !info.accepting {
        return Err(Exclusion::NotAccepting);
    }
    if info.memory < need.memory {
        return Err(Exclusion::Memory {
            need: need.memory,
            have: info.memory,
        });
    }
    if info.price > need.max_price {
        return Err(Exclusion::Price { asking: info.price });
    }
    if let Some(max) = need.max_energy
        && info.energy.is_none_or(|e| e > max)
    {
        return Err(Exclusion::Energy);
    }
    if need.max_output > info.max_output {
        return Err(Exclusion::OutputCap { max: info.max_output });
    }
    if need.module.1 > info.max_content || need.input.1 > info.max_content {
        return Err(Exclusion::ContentCap {
            max: info.max_content,
        });
    }
    if need.fuel_limit > info.max_task_fuel {
        return Err(Exclusion::FuelCap {
            max: info.max_task_fuel,
        });
    }
    // The energy budget before any passing state (busy, slow for now): a
    // provider that can never keep it must not count as one that will.
    let task_mj = match (need.energy_cap_mj, info.energy.filter(|e| e.0 > 0)) {
        (None, _) => None,
        (Some(cap), Some(rate)) => {
            let mj = task_energy_mj(need.estimate, rate);
            if mj > cap {
                return Err(Exclusion::EnergyBudget { need_mj: mj as u64 });
            }
            Some(mj)
        }
        // A summary's contact: its rate comes with its offer, and the call
        // caps it (`max_energy`). Ranked as if it used the whole share,
        // after every provider known to need less.
        (Some(cap), None) if !info.from_advert => Some(cap),
        (Some(_), None) => return Err(Exclusion::EnergyUnknown),
    };
    let lanes = stats.map(|s| s.lanes.as_slice()).unwrap_or(&[]);
    let slots = info.slots.max(1);
    let speed_cu = speed(info, stats, need.pace, now);
    let run_ms = need.estimate.0 as f64 / (speed_cu * FUEL_PER_CU_SECOND as f64) * 1000.0;
    if run_ms > info.max_task_time.as_secs_f64() * 1000.0 {
        return Err(Exclusion::TimeCap {
            max_ms: info.max_task_time.as_millis() as u64,
        });
    }
    let pipelined_ms = PIPELINED_WORK.as_secs_f64() * 1000.0;
    let backlog = if run_ms < pipelined_ms {
        // At most PIPELINED_WORK of queued work per slot.
        slots * ((pipelined_ms / run_ms.max(1e-3)) as u32).clamp(1, TINY_BACKLOG)
    } else {
        0
    };
    if lanes.len() as u32 >= slots + backlog || stats.is_some_and(|s| s.backoff_until > now.0) {
        return Err(Exclusion::Busy);
    }
    // Another requester's work fills the slots we do not use. An
    // interactive task is asked for all the same: the provider queues it
    // ahead of batch work, and its offer says when it would start.
    if lanes.is_empty() && info.free_slots == 0 && info.from_advert && need.class == LatencyClass::Batch {
        return Err(Exclusion::Busy);
    }
    let wait_ms = if (lanes.len() as u32) < slots {
        0.0
    } else {
        let earliest = lanes.iter().copied().min().unwrap_or(now.0);
        earliest.saturating_sub(now.0) as f64
    };
    let holds = |id: &ContentId| stats.is_some_and(|s| s.holds.contains(id));
    let mut bytes = 0u64;
    if !holds(&need.module.0) {
        bytes += need.module.1.0;
    }
    if !holds(&need.input.0) {
        bytes += need.input.1.0;
    }
    let transfer_ms = transfer_ms(bytes, info.bandwidth);
    let rtt_ms = info.rtt.map_or(1.0, |r| r.as_secs_f64() * 1000.0);
    let ect_ms = wait_ms + transfer_ms + run_ms + rtt_ms;
    if ect_ms > need.deadline.as_secs_f64() * 1000.0 {
        return Err(Exclusion::Deadline {
            ect_ms: ect_ms as u64,
        });
    }
    let price_term = if need.max_price.0 == 0 {
        0.0
    } else {
        info.price.0 as f64 / need.max_price.0 as f64
    };
    let reputation = stats.map_or(INITIAL_REPUTATION, |s| s.reputation);
    let trust = 1.0 + W_REPUTATION * (1.0 - reputation);
    let score = match (task_mj, need.class) {
        // Under an energy budget: the least energy among the placements
        // that meet the deadline, the sooner of equals first.
        (Some(mj), _) => {
            mj.max(1e-3) * (1.0 + 0.1 * ect_ms / need.deadline.as_secs_f64().max(1e-3) / 1000.0) * trust
        }
        // A person waits: the soonest finish within the price cap, the
        // round trip included (near domains first).
        (None, LatencyClass::Interactive) => ect_ms * trust,
        // Throughput: price and speed; the round trip, small against the
        // run, does not count.
        (None, LatencyClass::Batch) => (ect_ms - rtt_ms).max(1.0) * (1.0 + W_PRICE * price_term) * trust,
    };
    Ok(Scored {
        node: info.node,
        wait_ms,
        transfer_ms,
        run_ms,
        rtt_ms,
        ect_ms,
        score,
        speed_cu,
    })
}

/// The energy a task of `estimate` fuel takes at `rate`, mJ (one CU-second
/// is 10^6 fuel).
pub fn task_energy_mj(estimate: Fuel, rate: EnergyRate) -> f64 {
    estimate.0 as f64 / FUEL_PER_CU_SECOND as f64 * rate.0 as f64
}

/// Domains ranked for a task (the white paper's hierarchical scheduling):
/// by estimated completion on the domain's free capacity and best RTT,
/// weighted by its lowest price, best first.
pub fn rank_domains(view: &View, need: &Need) -> Vec<(Domain, f64)> {
    let mut ranked: Vec<(Domain, f64)> = view
        .domains()
        .into_iter()
        .filter(|(d, s)| s.nodes > 0 && need.domain.as_ref().is_none_or(|want| d.is_within(want)))
        .filter(|(_, s)| s.price_min <= need.max_price)
        // The node's own domain and the levels above it are covered by the
        // adverts it holds: rank the other domains.
        .filter(|(d, _)| !view.domain().is_within(d))
        .map(|(d, s)| {
            let per_node = s.total_cu.0 as f64 / f64::from(s.nodes.max(1));
            let free = if s.free_slots > 0 {
                per_node.max(1.0)
            } else {
                per_node.max(1.0) / 4.0
            };
            let run_ms = need.estimate.0 as f64 / (free * FUEL_PER_CU_SECOND as f64) * 1000.0;
            let price = if need.max_price.0 == 0 {
                0.0
            } else {
                s.price_min.0 as f64 / need.max_price.0 as f64
            };
            (d, (run_ms + s.best_rtt.0 as f64) * (1.0 + W_PRICE * price))
        })
        .collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    ranked
}

/// Every provider the requester could ask, from its view: full adverts of
/// its own domain's peers, and contacts of the best-ranked other domains
/// (estimated from their summaries until they answer).
pub fn gather(view: &View, need: &Need, domains_to_try: usize) -> Vec<ProviderInfo> {
    gather_explained(view, need, domains_to_try).0
}

/// [`gather`], and the other domains it did not ask, best-ranked first.
///
/// Domains are taken in rank order, `domains_to_try` of those that bring
/// new contacts: a domain inside or around one already taken (`us` after
/// `us/a`) holds the same nodes and is passed over, so that the tries go
/// to different parts of the network.
pub fn gather_explained(view: &View, need: &Need, domains_to_try: usize) -> (Vec<ProviderInfo>, Vec<Domain>) {
    let mut out: Vec<ProviderInfo> = view
        .peers()
        .map(|p| ProviderInfo {
            node: p.node,
            domain: p.advert.domain.clone(),
            cu: p.advert.cu,
            slots: p.advert.slots,
            free_slots: p.advert.free_slots,
            memory: p.advert.memory,
            price: p.advert.price,
            energy: Some(p.advert.energy),
            accepting: p.advert.accepting,
            rtt: view.rtt(&p.node),
            bandwidth: view.throughput(&p.node, Some(&p.advert.domain)),
            from_advert: true,
            max_task_fuel: p.advert.max_task_fuel,
            max_task_time: p.advert.max_task_time.duration(),
            max_output: p.advert.max_output,
            max_content: Bytes(u64::MAX),
            standing: view.standing(&p.node),
            labels: Some(p.advert.labels.clone()),
        })
        .collect();
    let known: HashSet<NodeId> = out.iter().map(|p| p.node).chain([view.local()]).collect();
    let mut seen = known;
    let mut taken: Vec<Domain> = Vec::new();
    let mut unasked = Vec::new();
    for (domain, _) in rank_domains(view, need) {
        if taken.len() >= domains_to_try {
            unasked.push(domain);
            continue;
        }
        if taken.iter().any(|t| t.is_within(&domain) || domain.is_within(t)) {
            continue;
        }
        // The summary of the domain itself, or the deepest held summary
        // that lists it as a child.
        let held = view
            .summary(&domain)
            .or_else(|| domain.parent().and_then(|p| view.summary(&p)));
        let Some(h) = held else { continue };
        let s = &h.summary;
        let per_node = s.stats.total_cu.0 / u64::from(s.stats.nodes.max(1));
        let before = out.len();
        for c in &s.contacts {
            if !seen.insert(c.node) {
                continue;
            }
            out.push(ProviderInfo {
                node: c.node,
                domain: domain.clone(),
                cu: ComputeUnits(per_node),
                slots: 1,
                free_slots: 1,
                memory: need.memory,
                price: s.stats.price_min,
                energy: None,
                accepting: true,
                rtt: view.rtt(&c.node),
                bandwidth: view.throughput(&c.node, Some(&domain)),
                from_advert: false,
                max_task_fuel: Fuel(u64::MAX),
                max_task_time: Duration::MAX,
                max_output: Bytes(u64::MAX),
                max_content: Bytes(u64::MAX),
                // Listed by a vouched summary.
                standing: view.standing(&c.node).max(Standing::Reachable),
                labels: None,
            });
        }
        if out.len() > before {
            taken.push(domain);
        }
    }
    (out, unasked)
}

/// A need of 1000 CU·s per task with a 1 MiB module, for tests.
#[cfg(test)]
pub(crate) fn example_need() -> Need {
    Need {
        estimate: Fuel(1_000_000_000),
        fuel_limit: Fuel(10_000_000_000),
        max_output: Bytes::mib(1),
        memory: Bytes::mib(64),
        deadline: Duration::from_secs(60),
        max_price: Price(1000),
        max_energy: None,
        domain: None,
        module: (ContentId([1; 32]), Bytes::mib(1)),
        input: (ContentId([2; 32]), Bytes(100)),
        exclude: vec![],
        select: vec![],
        class: LatencyClass::Batch,
        energy_cap_mj: None,
        pace: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::Keypair;

    fn info(n: u8, cu: u64, price: u64) -> ProviderInfo {
        ProviderInfo {
            node: Keypair::from_secret([n; 32]).node_id(),
            domain: "eu".parse().unwrap(),
            cu: ComputeUnits(cu),
            slots: 1,
            free_slots: 1,
            memory: Bytes::mib(256),
            price: Price(price),
            energy: Some(EnergyRate(10)),
            accepting: true,
            rtt: Some(Duration::from_millis(1)),
            bandwidth: None,
            from_advert: true,
            max_task_fuel: Fuel(u64::MAX),
            max_task_time: Duration::from_secs(3600),
            max_output: Bytes::mib(16),
            max_content: Bytes(u64::MAX),
            standing: Standing::Reachable,
            labels: Some(vec![Label::new("arch", "x86_64").expect("a label")]),
        }
    }

    fn need() -> Need {
        example_need()
    }

    const NOW: Timestamp = Timestamp(1_000_000);

    #[test]
    fn faster_cheaper_and_reputable_win() {
        let fast = evaluate(&info(1, 2000, 100), None, &need(), NOW).unwrap();
        let slow = evaluate(&info(2, 1000, 100), None, &need(), NOW).unwrap();
        assert!(fast.score < slow.score);
        let cheap = evaluate(&info(3, 1000, 10), None, &need(), NOW).unwrap();
        assert!(cheap.score < slow.score);
        let good = ProviderStats {
            reputation: 0.95,
            ..ProviderStats::default()
        };
        let known = evaluate(&info(4, 1000, 100), Some(&good), &need(), NOW).unwrap();
        assert!(known.score < slow.score);
    }

    #[test]
    fn interactive_work_goes_near_and_soon_and_batch_work_cheap_whatever_the_round_trip() {
        // Equal speed; the near one is dearer, the far one 80 ms away.
        let mut near = info(1, 1000, 900);
        near.rtt = Some(Duration::from_millis(5));
        let mut far = info(2, 1000, 100);
        far.rtt = Some(Duration::from_millis(80));
        let mut n = need();
        n.estimate = Fuel(10_000_000);
        n.class = LatencyClass::Interactive;
        let (a, b) = (
            evaluate(&near, None, &n, NOW).unwrap(),
            evaluate(&far, None, &n, NOW).unwrap(),
        );
        assert!(
            a.score < b.score,
            "interactive: near {} vs far {}",
            a.score,
            b.score
        );
        n.class = LatencyClass::Batch;
        let (a, b) = (
            evaluate(&near, None, &n, NOW).unwrap(),
            evaluate(&far, None, &n, NOW).unwrap(),
        );
        assert!(
            b.score < a.score,
            "batch: far and cheap {} vs near {}",
            b.score,
            a.score
        );
    }

    #[test]
    fn a_provider_behind_a_slow_link_loses_large_inputs_but_not_small_ones() {
        // Equal speed and price; one measured at 1 Mbit/s, one not measured.
        let mut slow = info(1, 1000, 100);
        slow.bandwidth = Some(125_000.0);
        let fast = info(2, 1000, 100);
        let mut n = need();
        n.estimate = Fuel(100_000_000);
        n.module = (ContentId([1; 32]), Bytes(100_000));
        n.input = (ContentId([2; 32]), Bytes::mib(8));
        // Over a minute: it cannot meet a one-minute deadline at all.
        assert!(matches!(
            evaluate(&slow, None, &n, NOW),
            Err(Exclusion::Deadline { .. })
        ));
        n.deadline = Duration::from_secs(600);
        let (a, b) = (
            evaluate(&slow, None, &n, NOW).unwrap(),
            evaluate(&fast, None, &n, NOW).unwrap(),
        );
        // 8.1 MB at 125 kB/s is over a minute.
        assert!(a.transfer_ms > 60_000.0, "{}", a.transfer_ms);
        assert!(b.score * 10.0 < a.score, "slow {} vs fast {}", a.score, b.score);
        // A 1 KiB module and input, a one-second task: within 5 %.
        n.estimate = Fuel(1_000_000_000);
        n.module = (ContentId([1; 32]), Bytes(1024));
        n.input = (ContentId([2; 32]), Bytes(1024));
        let (a, b) = (
            evaluate(&slow, None, &n, NOW).unwrap(),
            evaluate(&fast, None, &n, NOW).unwrap(),
        );
        assert!(a.transfer_ms < 20.0, "{}", a.transfer_ms);
        assert!(a.score < b.score * 1.05, "slow {} vs fast {}", a.score, b.score);
    }

    #[test]
    fn under_an_energy_budget_a_summary_contact_is_asked_after_the_providers_known_to_fit() {
        let mut n = need();
        n.energy_cap_mj = Some(20_000.0);
        let mut known = info(1, 1000, 100);
        known.energy = Some(EnergyRate(15));
        let mut contact = info(2, 1000, 100);
        contact.energy = None;
        contact.from_advert = false;
        let (k, c) = (
            evaluate(&known, None, &n, NOW).unwrap(),
            evaluate(&contact, None, &n, NOW).unwrap(),
        );
        assert!(k.score < c.score, "known {} vs contact {}", k.score, c.score);
        // A peer with an advert that states no rate cannot keep a budget.
        contact.from_advert = true;
        assert_eq!(
            evaluate(&contact, None, &n, NOW).unwrap_err(),
            Exclusion::EnergyUnknown
        );
    }

    #[test]
    fn under_an_energy_budget_the_least_energy_wins_and_unknown_or_costly_providers_are_left_out() {
        // 10^9 fuel is 1000 CU·s: at 10 mJ per CU·s, 10 J.
        let mut n = need();
        n.energy_cap_mj = Some(20_000.0);
        let mut frugal = info(1, 1000, 900);
        frugal.energy = Some(EnergyRate(10));
        let mut fast = info(2, 4000, 10);
        fast.energy = Some(EnergyRate(15));
        let (a, b) = (
            evaluate(&frugal, None, &n, NOW).unwrap(),
            evaluate(&fast, None, &n, NOW).unwrap(),
        );
        assert!(a.score < b.score, "the frugal one wins though slower and dearer");
        let mut hungry = info(3, 1000, 10);
        hungry.energy = Some(EnergyRate(30));
        let e = evaluate(&hungry, None, &n, NOW).unwrap_err();
        assert_eq!(e, Exclusion::EnergyBudget { need_mj: 30_000 });
        let mut silent = info(4, 1000, 10);
        silent.energy = Some(EnergyRate(0));
        let u = evaluate(&silent, None, &n, NOW).unwrap_err();
        assert_eq!(u, Exclusion::EnergyUnknown);
        assert_eq!(
            why_none(&[e, u], &n),
            "has an energy budget of 20.0 J per task; the most efficient provider needs 30.0 J (1 provider); \
             has an energy budget; 1 provider measure or declare no energy per CU-second"
        );
        // Without a budget, energy does not count.
        n.energy_cap_mj = None;
        assert!(evaluate(&hungry, None, &n, NOW).is_ok());
    }

    #[test]
    fn a_selector_removes_providers_without_its_label_and_says_so() {
        let mut n = need();
        n.select = vec!["arch=x86_64".parse().unwrap()];
        assert!(evaluate(&info(1, 1000, 100), None, &n, NOW).is_ok());
        n.select.push("zone=rack-3".parse().unwrap());
        let e = evaluate(&info(1, 1000, 100), None, &n, NOW).unwrap_err();
        assert_eq!(
            e,
            Exclusion::Label {
                want: "zone=rack-3".into(),
                have: None
            }
        );
        let mut zoned = info(2, 1000, 100);
        zoned.labels = Some(vec![
            "arch=x86_64".parse().unwrap(),
            "zone=rack-1".parse().unwrap(),
        ]);
        let e2 = evaluate(&zoned, None, &n, NOW).unwrap_err();
        assert_eq!(
            e2.to_string(),
            "selector zone=rack-3 removed it: it has zone=rack-1"
        );
        // Known from a summary only: its labels are unknown, so no selector
        // is satisfied.
        let mut summarised = info(3, 1000, 100);
        summarised.labels = None;
        n.select.truncate(1);
        assert!(evaluate(&summarised, None, &n, NOW).is_err());
        assert_eq!(why_none(&[e, e2], &n), "selects zone=rack-3; 2 providers lack it");
    }

    #[test]
    fn constraints_exclude_with_reasons() {
        let mut n = need();
        n.memory = Bytes::gib(1);
        assert!(matches!(
            evaluate(&info(1, 1000, 1), None, &n, NOW),
            Err(Exclusion::Memory { .. })
        ));
        assert!(matches!(
            evaluate(&info(1, 1000, 5000), None, &need(), NOW),
            Err(Exclusion::Price { .. })
        ));
        let mut n = need();
        n.deadline = Duration::from_millis(100);
        assert!(matches!(
            evaluate(&info(1, 1000, 1), None, &n, NOW),
            Err(Exclusion::Deadline { .. })
        ));
        let mut n = need();
        n.domain = Some("us".parse().unwrap());
        assert_eq!(
            evaluate(&info(1, 1000, 1), None, &n, NOW).unwrap_err(),
            Exclusion::Domain
        );
        let mut n = need();
        n.max_energy = Some(EnergyRate(5));
        assert_eq!(
            evaluate(&info(1, 1000, 1), None, &n, NOW).unwrap_err(),
            Exclusion::Energy
        );
    }

    #[test]
    fn the_owners_caps_rule_a_provider_out_before_it_is_asked() {
        let mut capped = info(1, 2000, 100);
        capped.max_task_fuel = Fuel(1_000_000);
        assert!(matches!(
            evaluate(&capped, None, &need(), NOW),
            Err(Exclusion::FuelCap { .. })
        ));
        let mut short = info(2, 2000, 100);
        short.max_task_time = Duration::from_millis(100);
        // A 1e9-fuel task at 2000 CU takes 500 ms.
        assert!(matches!(
            evaluate(&short, None, &need(), NOW),
            Err(Exclusion::TimeCap { max_ms: 100 })
        ));
    }

    #[test]
    fn learning_from_receipts_demotes_an_overstated_provider() {
        let mut book = Book::default();
        let liar = info(1, 4000, 100);
        let honest = info(2, 2000, 100);
        let before = evaluate(&liar, book.get(&liar.node), &need(), NOW).unwrap();
        let h = evaluate(&honest, book.get(&honest.node), &need(), NOW).unwrap();
        assert!(before.score < h.score, "the advert wins at first");
        // Its receipts show 1000 CU: 1e9 fuel in one second, several times.
        for _ in 0..5 {
            book.verified(liar.node, Fuel(1_000_000_000), Duration::from_secs(1), &[], NOW);
            book.verified(liar.node, Fuel(47), Duration::from_millis(1), &[], NOW);
            book.verified(
                honest.node,
                Fuel(1_000_000_000),
                Duration::from_millis(500),
                &[],
                NOW,
            );
        }
        let after = evaluate(&liar, book.get(&liar.node), &need(), NOW).unwrap();
        let h = evaluate(&honest, book.get(&honest.node), &need(), NOW).unwrap();
        assert!(after.score > h.score, "receipts reveal the truth");
    }

    #[test]
    fn a_pathological_receipt_cannot_make_a_provider_look_unusably_slow() {
        let mut book = Book::default();
        let p = info(1, 2000, 100);
        book.advertised(p.node, 2000.0);
        for _ in 0..10 {
            book.verified(p.node, Fuel(2_000_000_000), Duration::from_secs(1), &[], NOW);
        }
        let normal = speed(&p, book.get(&p.node), None, NOW);
        assert!((normal - 2000.0).abs() < 1.0, "{normal}");
        // A run that burnt an hour on almost no metered work.
        book.verified(p.node, Fuel(1_000), Duration::from_secs(3600), &[], NOW);
        let after = speed(&p, book.get(&p.node), None, NOW);
        assert!(
            after > normal / 2.0,
            "one receipt moves it by a bounded step: {after}"
        );
        // Even a run of them leaves it within range of its advert, and the
        // task stays placeable.
        for _ in 0..50 {
            book.verified(p.node, Fuel(1_000), Duration::from_secs(3600), &[], NOW);
        }
        let floor = speed(&p, book.get(&p.node), None, NOW);
        assert!((floor - 2000.0 / 16.0).abs() < 1.0, "{floor}");
        assert!(evaluate(&p, book.get(&p.node), &need(), NOW).is_ok());
        // Normal receipts bring it back, and an old judgement is forgotten.
        for _ in 0..30 {
            book.verified(p.node, Fuel(2_000_000_000), Duration::from_secs(1), &[], NOW);
        }
        assert!(speed(&p, book.get(&p.node), None, NOW) > 1900.0);
        book.verified(p.node, Fuel(1_000), Duration::from_secs(3600), &[], NOW);
        let later = NOW.add(SPEED_MEMORY);
        assert_eq!(speed(&p, book.get(&p.node), None, later), 2000.0);
    }

    #[test]
    fn a_module_that_ran_faster_than_advertised_is_expected_as_fast_on_a_provider_not_learnt_yet() {
        let mut book = Book::default();
        let module = need().module.0;
        let (ran, other) = (info(1, 1000, 100), info(2, 1000, 100));
        // 100 s of work at the advertised 1,000 CU, against a 60 s deadline.
        let mut n = need();
        n.estimate = Fuel(100_000_000_000);
        assert!(matches!(
            evaluate(&other, book.get(&other.node), &n, NOW),
            Err(Exclusion::Deadline { .. })
        ));
        // The module ran at 4,000 CU.
        let fast_run = |book: &mut Book| {
            book.learn_pace(
                module,
                &ran.node,
                Fuel(4_000_000_000),
                Duration::from_secs(1),
                NOW,
            )
        };
        // Nothing is learnt of a provider whose advert the requester lacks.
        fast_run(&mut book);
        assert_eq!(book.pace(&module, NOW), None);
        // Its provider advertises 1,000.
        book.advertised(ran.node, 1000.0);
        fast_run(&mut book);
        assert_eq!(book.pace(&module, NOW), Some(4.0));
        n.pace = book.pace(&module, NOW);
        let s = evaluate(&other, book.get(&other.node), &n, NOW).expect("25 s of work now");
        assert!((s.run_ms - 25_000.0).abs() < 1.0, "{}", s.run_ms);
        // Another module's tasks are judged at the advert still.
        assert_eq!(book.pace(&ContentId([9; 32]), NOW), None);
        // A provider with a speed of its own keeps it.
        book.advertised(other.node, 1000.0);
        book.verified(other.node, Fuel(1_000_000_000), Duration::from_secs(1), &[], NOW);
        let own = evaluate(&other, book.get(&other.node), &n, NOW).unwrap_err();
        assert!(matches!(own, Exclusion::Deadline { .. }), "{own:?}");
        // A pace is forgotten like a speed, and a pathological run moves it
        // by a bounded step only.
        assert_eq!(book.pace(&module, NOW.add(SPEED_MEMORY)), None);
        book.learn_pace(module, &ran.node, Fuel(1_000), Duration::from_secs(3600), NOW);
        assert!(book.pace(&module, NOW).unwrap() > 2.0);
    }

    #[test]
    fn one_providers_receipts_cannot_set_a_modules_pace_against_two_others() {
        let mut book = Book::default();
        let module = ContentId([1; 32]);
        let nodes: Vec<ProviderInfo> = (1..=20).map(|n| info(n, 1000, 100)).collect();
        for p in &nodes {
            book.advertised(p.node, 1000.0);
        }
        let run = |book: &mut Book, p: &ProviderInfo, fuel: u64| {
            book.learn_pace(module, &p.node, Fuel(fuel), Duration::from_secs(1), NOW)
        };
        // One claims four times its advert, again and again.
        for _ in 0..10 {
            run(&mut book, &nodes[2], 4_000_000_000);
        }
        assert_eq!(
            book.pace(&module, NOW),
            Some(4.0),
            "alone, its runs are all there is"
        );
        // Two others ran it at their advert.
        run(&mut book, &nodes[0], 1_000_000_000);
        run(&mut book, &nodes[1], 1_000_000_000);
        assert_eq!(book.pace(&module, NOW), Some(1.0));
        // At most MAX_PACE_PROVIDERS are kept per module.
        for p in &nodes[3..] {
            run(&mut book, p, 1_000_000_000);
        }
        assert_eq!(book.paces[&module].by.len(), MAX_PACE_PROVIDERS);
    }

    #[test]
    fn a_requester_keeps_the_pace_of_at_most_max_paces_modules() {
        let mut book = Book::default();
        let p = info(1, 1000, 100);
        book.advertised(p.node, 1000.0);
        for i in 0..MAX_PACES as u64 + 10 {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&i.to_le_bytes());
            let at = Timestamp(NOW.0 + i);
            book.learn_pace(
                ContentId(id),
                &p.node,
                Fuel(2_000_000_000),
                Duration::from_secs(1),
                at,
            );
        }
        assert_eq!(book.paces.len(), MAX_PACES);
        // The least recently learnt went first.
        assert_eq!(book.pace(&ContentId([0; 32]), NOW), None);
    }

    #[test]
    fn lanes_and_data_locality_shape_the_estimate() {
        let mut book = Book::default();
        let p = info(1, 1000, 100);
        let first = evaluate(&p, book.get(&p.node), &need(), NOW).unwrap();
        book.placed(p.node, Timestamp(NOW.0 + 5000));
        // A one-second task waits for the slot rather than queueing there.
        assert_eq!(
            evaluate(&p, book.get(&p.node), &need(), NOW).unwrap_err(),
            Exclusion::Busy
        );
        // A tiny task may queue behind it.
        let mut tiny = need();
        tiny.estimate = Fuel(1_000_000);
        let queued = evaluate(&p, book.get(&p.node), &tiny, NOW).unwrap();
        assert!((queued.wait_ms - 5000.0).abs() < 1.0);
        book.released(p.node);
        book.verified(p.node, Fuel(0), Duration::ZERO, &[ContentId([1; 32])], NOW);
        let local = evaluate(&p, book.get(&p.node), &need(), NOW).unwrap();
        assert!(local.transfer_ms < first.transfer_ms);
    }
}

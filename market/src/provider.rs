//! The provider side of the market: admission control, offers, agreements
//! and the run queue. Sans-IO: the driver verifies envelopes, signs what
//! this module decides, moves content and runs tasks.
//!
//! Admission (SPEC.md §8.3): a provider offers only while it takes work
//! (its idle policy allows), the task fits its memory, its price is within
//! the requester's maximum, its declared energy is within the limit, and it
//! can start the task soon enough to finish before the deadline. It holds
//! at most `slots + backlog` accepted tasks (interactive ones may take
//! `slots` more); an accept beyond that is declined with
//! [`Decline::NoFreeSlot`]. An offer is not a reservation: capacity is
//! checked again on accept. Interactive tasks start before batch tasks.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use agora_protocol::market::{Accept, Assignment, CallForOffers, LatencyClass, Offer};
use agora_protocol::rpc::Decline;
use agora_protocol::units::{Bytes, ComputeUnits, EnergyRate, Fuel, Millis, Price, Timestamp};
use agora_protocol::{ContentId, Domain, MessageId, NodeId, TaskId};
use serde::{Deserialize, Serialize};

use crate::idle::IdlePolicy;

/// The default most fuel one task may use: about an hour of a fast core.
pub const DEFAULT_MAX_TASK_FUEL: Fuel = Fuel(20_000_000_000_000);
/// The default longest one task may run.
pub const DEFAULT_MAX_TASK_TIME: Duration = Duration::from_secs(3600);

/// Provider settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The owner offers this machine's capacity at all.
    pub enabled: bool,
    /// The owner's idle policy.
    pub idle: IdlePolicy,
    /// The owner's limits (hours, battery, temperature).
    pub limits: crate::limits::OwnerLimits,
    /// Asking price.
    pub price: Price,
    /// Tasks run at once.
    pub slots: u32,
    /// Accepted tasks queued beyond the slots.
    pub backlog: u32,
    /// Memory per task.
    pub memory: Bytes,
    /// Declared energy cost.
    pub energy: EnergyRate,
    /// The provider's domain.
    pub domain: Domain,
    /// How long an offer stays valid.
    pub offer_ttl: Duration,
    /// Largest module or input accepted.
    pub max_content: Bytes,
    /// The most fuel one task may use (its fuel limit).
    pub max_task_fuel: Fuel,
    /// The longest one task may run.
    pub max_task_time: Duration,
    /// The largest output one task may write.
    pub max_output: Bytes,
    /// Most offers remembered at once.
    pub max_offers: usize,
    /// What jobs may select this provider by (`arch`, `os` and the
    /// owner's), sorted by key: advertised as they are.
    pub labels: Vec<agora_protocol::capacity::Label>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            idle: IdlePolicy::new(false, 1.0, 1.0),
            limits: crate::limits::OwnerLimits::default(),
            price: Price(1_000),
            slots: 1,
            backlog: 1,
            memory: Bytes::mib(256),
            energy: EnergyRate(0),
            domain: Domain::root(),
            offer_ttl: Duration::from_secs(5),
            max_content: Bytes::mib(16),
            max_task_fuel: DEFAULT_MAX_TASK_FUEL,
            max_task_time: DEFAULT_MAX_TASK_TIME,
            max_output: crate::job::DEFAULT_MAX_OUTPUT,
            max_offers: 10_000,
            labels: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct OfferRecord {
    requester: NodeId,
    task: TaskId,
    price: Price,
    expires: Timestamp,
    deadline: Duration,
    fuel: Fuel,
    fuel_limit: Fuel,
    memory: Bytes,
    max_output: Bytes,
    class: LatencyClass,
}

/// Where an accepted task stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Waiting for content or a slot.
    Queued,
    /// Running.
    Running,
    /// Finished; receipt being delivered.
    Done,
}

/// An accepted task, as persisted before the agreement is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// The agreement's id (its envelope's).
    pub agreement: MessageId,
    /// The agreement envelope (hex), the provider's own commitment.
    #[serde(with = "hex_bytes")]
    pub agreement_env: Vec<u8>,
    /// The requester.
    pub requester: NodeId,
    /// What to run.
    pub assignment: Assignment,
    /// The agreed price.
    pub price: Price,
    /// When the receipt is due.
    pub due: Timestamp,
    /// Its stage.
    pub stage: Stage,
    /// The fuel estimate from the call.
    pub estimate: Fuel,
    /// Its latency class, from the call (interactive tasks start first).
    #[serde(default)]
    pub class: LatencyClass,
    /// The last checkpoint of its run the requester acknowledged: a run
    /// started after a restart resumes from it (SPEC.md §8.8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<ContentId>,
    /// The fuel of the checkpoint the assignment resumed from: the run is
    /// paid for what it adds to it.
    #[serde(default)]
    pub billed_from: Fuel,
}

impl Accepted {
    /// The limits a run of this task gets when it starts at `now`: those
    /// agreed, with the wall time cut to the owner's cap and to the time
    /// left before the receipt is due (wall time is not part of a
    /// deterministic outcome: a run cut short ends as a deadline, which no
    /// requester accepts as a result).
    pub fn run_assignment(&self, now: Timestamp, max_task_time: Duration) -> Assignment {
        let mut a = self.assignment.clone();
        let left = self.due.since(now);
        let wall = a.limits.timeout.duration().min(max_task_time).min(left);
        a.limits.timeout = Millis::from(wall);
        a
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&agora_protocol::id::to_hex(v))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        agora_protocol::id::from_hex(String::deserialize(d)?)
            .ok_or_else(|| serde::de::Error::custom("not hex"))
    }
}

impl Terms {
    /// The accepted task these terms make, admitted under `provisional`
    /// (its acceptance's id) until its agreement is signed
    /// ([`Provider::signed`]).
    pub fn admitted(&self, provisional: MessageId, assignment: Assignment) -> Accepted {
        Accepted {
            agreement: provisional,
            agreement_env: Vec::new(),
            requester: self.requester,
            assignment,
            price: self.price,
            due: self.due,
            stage: Stage::Queued,
            estimate: self.estimate,
            class: self.class,
            checkpoint: None,
            billed_from: Fuel(0),
        }
    }
}

/// What an accept becomes when admitted: the terms to sign.
#[derive(Debug, Clone)]
pub struct Terms {
    /// The task.
    pub task: TaskId,
    /// The requester.
    pub requester: NodeId,
    /// The price.
    pub price: Price,
    /// When the receipt is due.
    pub due: Timestamp,
    /// Fuel estimate.
    pub estimate: Fuel,
    /// Latency class.
    pub class: LatencyClass,
}

/// The provider state machine. See the module docs.
#[derive(Debug)]
pub struct Provider {
    config: Config,
    speed: ComputeUnits,
    /// Shutting down: no new work, whatever the owner's settings.
    draining: bool,
    /// The owner's disk cap is reached: no new work until room is made.
    disk_full: bool,
    /// Paused by the owner: no new work until then (`None`: not paused;
    /// `Timestamp(u64::MAX)`: until resumed).
    paused: Option<Timestamp>,
    /// The owner's limits and what holds the node now (too hot, on
    /// battery, outside the hours…).
    limits: crate::limits::LimitPolicy,
    /// What holds the node, in words (from `limits`).
    held_why: Option<String>,
    offers: HashMap<MessageId, OfferRecord>,
    tasks: HashMap<MessageId, Accepted>,
    queue: VecDeque<MessageId>,
    running: usize,
    by_task: HashMap<(TaskId, NodeId), MessageId>,
    by_accept: HashMap<MessageId, MessageId>,
    /// The per-slot speed each module ran at here last (see
    /// [`Provider::learn_speed`]), at most [`MAX_MODULE_SPEEDS`], with
    /// when it was learnt (in runs learnt from: [`Provider::learnt`]).
    module_speed: HashMap<ContentId, (ComputeUnits, u64)>,
    /// Runs learnt from so far: orders `module_speed` by recency.
    learnt: u64,
}

/// Modules whose speed a provider remembers.
const MAX_MODULE_SPEEDS: usize = 256;

impl Provider {
    /// A provider with `config`, measured per-slot speed `speed`.
    pub fn new(config: Config, speed: ComputeUnits) -> Provider {
        Provider {
            limits: crate::limits::LimitPolicy::new(config.limits.clone()),
            config,
            speed,
            draining: false,
            disk_full: false,
            paused: None,
            held_why: None,
            offers: HashMap::new(),
            tasks: HashMap::new(),
            queue: VecDeque::new(),
            running: 0,
            by_task: HashMap::new(),
            by_accept: HashMap::new(),
            module_speed: HashMap::new(),
            learnt: 0,
        }
    }

    /// A run of `module` here burnt `fuel` in `took`: the speed it ran at
    /// stands for the module's next calls. Fuel is counted per
    /// instruction, and instructions differ in cost: a kernel of cheap
    /// integer steps burns fuel several times faster than the calibration
    /// workload does (`examples/checkpointed-pi`: ~4×), so at the
    /// calibrated speed alone a provider would refuse, as unable to meet
    /// the deadline, a task it just ran in a quarter of that time. Kept
    /// within the requester's bounds on a learnt speed
    /// ([`crate::placement::SPEED_RANGE`] of the calibrated one); runs
    /// shorter than [`crate::placement::MIN_LEARNING_RUN`] teach nothing
    /// (starting the instance weighs too much in them). When
    /// `MAX_MODULE_SPEEDS` (256) modules are known, a new one replaces the one
    /// learnt least recently, as a requester's module paces do.
    pub fn learn_speed(&mut self, module: ContentId, fuel: Fuel, took: Duration) {
        let Some(cu) = crate::placement::run_speed(fuel, took).filter(|_| self.speed.0 > 0) else {
            return;
        };
        let cu = ComputeUnits(crate::placement::within_range(cu, self.speed.0 as f64).max(1.0) as u64);
        if self.module_speed.len() >= MAX_MODULE_SPEEDS
            && !self.module_speed.contains_key(&module)
            && let Some(oldest) = self
                .module_speed
                .iter()
                .min_by_key(|(_, (_, learnt))| *learnt)
                .map(|(m, _)| *m)
        {
            self.module_speed.remove(&oldest);
        }
        self.learnt += 1;
        self.module_speed.insert(module, (cu, self.learnt));
    }

    /// The per-slot speed to expect of `module`: the one it ran at here
    /// last, else the calibrated one.
    fn speed_of(&self, module: &ContentId) -> ComputeUnits {
        self.module_speed.get(module).map_or(self.speed, |(cu, _)| *cu)
    }

    /// Updates the measured per-slot speed.
    pub fn set_speed(&mut self, speed: ComputeUnits) {
        self.speed = speed;
    }

    /// Per-slot speed.
    pub fn speed(&self) -> ComputeUnits {
        self.speed
    }

    /// Capacity as advertised: per-slot speed × slots.
    pub fn capacity(&self) -> ComputeUnits {
        ComputeUnits(self.speed.0.saturating_mul(u64::from(self.config.slots)))
    }

    /// Stops taking new work for good (shutdown).
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Feeds the idle policy a load sample of the machine's other
    /// processes; returns whether that changed whether work is taken.
    pub fn set_load(&mut self, others: Option<f64>) -> bool {
        let before = self.accepting();
        self.config.idle.update(others);
        before != self.accepting()
    }

    /// The disk holding content reached (or left) the owner's cap; returns
    /// whether that changed whether work is taken.
    pub fn set_disk_full(&mut self, full: bool) -> bool {
        let before = self.accepting();
        self.disk_full = full;
        before != self.accepting()
    }

    /// Whether new work is taken: the one answer to that question. The
    /// owner enabled providing, the node is not shutting down, the idle
    /// policy allows it and the disk has room.
    pub fn accepting(&self) -> bool {
        self.why_not_accepting().is_none()
    }

    /// Why no new work is taken, if it is not: the first reason that holds.
    pub fn why_not_accepting(&self) -> Option<&str> {
        if self.draining {
            Some("the node is shutting down")
        } else if !self.config.enabled {
            Some("providing is off in the owner's configuration")
        } else if self.paused.is_some() {
            Some("paused by its owner")
        } else if let Some(why) = &self.held_why {
            Some(why)
        } else if self.disk_full {
            Some("stored content is at the owner's disk cap")
        } else if !self.config.idle.allows_work() {
            Some("the machine's other processes are busy (idle policy)")
        } else {
            None
        }
    }

    /// The owner pauses providing until `until` (`None`: until resumed):
    /// no new work is taken and no queued task starts (the node suspends
    /// the running ones, see [`Provider::suspends`]). Returns whether that
    /// changed whether work is taken.
    pub fn pause(&mut self, until: Option<Timestamp>) -> bool {
        let before = self.accepting();
        self.paused = Some(until.unwrap_or(Timestamp(u64::MAX)));
        before != self.accepting()
    }

    /// The owner resumes providing. Returns whether that changed whether
    /// work is taken.
    pub fn resume(&mut self) -> bool {
        let before = self.accepting();
        self.paused = None;
        before != self.accepting()
    }

    /// Feeds the owner's limits a sample of what they read; returns
    /// whether what holds the node changed. While a limit holds, as while
    /// paused, no new work is taken and running tasks are suspended.
    pub fn on_readings(&mut self, r: &crate::limits::Readings) -> bool {
        let changed = self.limits.update(r);
        self.held_why = self.limits.held().map(ToString::to_string);
        changed
    }

    /// The owner's limits and what they hold now.
    pub fn limits(&self) -> &crate::limits::LimitPolicy {
        &self.limits
    }

    /// New limits from the owner, applied from the next reading.
    pub fn set_limits(&mut self, limits: crate::limits::OwnerLimits) {
        self.config.limits = limits.clone();
        self.limits.set_limits(limits);
    }

    /// Whether running tasks are to be suspended in place now: the owner
    /// paused the node or one of their limits holds it. They resume where
    /// they stopped when it clears.
    pub fn suspends(&self) -> bool {
        !self.draining && (self.paused.is_some() || self.held_why.is_some())
    }

    /// Until when the owner paused providing (`Timestamp(u64::MAX)`: until
    /// resumed).
    pub fn paused_until(&self) -> Option<Timestamp> {
        self.paused
    }

    /// Settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Tasks accepted and not finished.
    pub fn load(&self) -> usize {
        self.queue.len() + self.running
    }

    /// Slots free now.
    pub fn free_slots(&self) -> u32 {
        if !self.accepting() {
            return 0;
        }
        (self.config.slots as usize).saturating_sub(self.load()) as u32
    }

    /// Tasks waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// How many tasks may be accepted at once for a task of `class`: the
    /// slots and the backlog, and for interactive work one more slot's
    /// worth, so that batch work never fills the queue against it.
    fn room(&self, class: LatencyClass) -> usize {
        let batch = (self.config.slots + self.config.backlog) as usize;
        match class {
            LatencyClass::Batch => batch,
            LatencyClass::Interactive => batch + self.config.slots as usize,
        }
    }

    /// Estimated wait before a new task of `class` would start: an
    /// interactive task waits only for the interactive tasks queued ahead of
    /// it (and the running ones), a batch task for the whole queue.
    pub fn expected_start(&self, class: LatencyClass) -> Duration {
        if self.load() < self.config.slots as usize {
            return Duration::ZERO;
        }
        let queued_fuel: u64 = self
            .queue
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .filter(|t| class == LatencyClass::Batch || t.class == LatencyClass::Interactive)
            .map(|t| t.estimate.0)
            .sum();
        let running_fuel: u64 = self
            .tasks
            .values()
            .filter(|t| t.stage == Stage::Running)
            .map(|t| t.estimate.0 / 2)
            .sum();
        let per_slot = self.speed.time_for(Fuel(queued_fuel + running_fuel));
        per_slot / self.config.slots.max(1)
    }

    /// Handles a verified call for offers: an offer, or why not.
    pub fn call(&mut self, from: NodeId, cfo: &CallForOffers, now: Timestamp) -> Result<Offer, Decline> {
        let r = &cfo.requirements;
        if !self.accepting() {
            return Err(Decline::NotAccepting);
        }
        if r.memory > self.config.memory {
            return Err(Decline::MemoryTooLarge {
                max: self.config.memory,
            });
        }
        if r.max_output > self.config.max_output {
            return Err(Decline::TooLarge {
                max: self.config.max_output,
            });
        }
        if r.module_size > self.config.max_content || r.input_size > self.config.max_content {
            return Err(Decline::TooLarge {
                max: self.config.max_content,
            });
        }
        if self.config.price > r.max_price {
            return Err(Decline::PriceTooLow {
                asking: self.config.price,
            });
        }
        // An energy cap is kept only by a node that knows its rate.
        if let Some(max) = r.max_energy
            && (self.config.energy > max || self.config.energy.0 == 0)
        {
            return Err(Decline::EnergyTooHigh {
                rate: self.config.energy,
            });
        }
        if let Some(d) = &r.domain
            && !self.config.domain.is_within(d)
        {
            return Err(Decline::invalid(format!(
                "provider is in {}, outside {d}",
                self.config.domain
            )));
        }
        if r.fuel_limit > self.config.max_task_fuel || r.fuel > r.fuel_limit {
            return Err(Decline::FuelTooHigh {
                max: self.config.max_task_fuel,
            });
        }
        if self.load() >= self.room(r.class) {
            return Err(Decline::NoFreeSlot);
        }
        let start = self.expected_start(r.class);
        let run = self.speed_of(&r.module).time_for(r.fuel);
        if run > self.config.max_task_time {
            return Err(Decline::TimeTooLong {
                max: Millis::from(self.config.max_task_time),
            });
        }
        if start.saturating_add(run) > r.deadline.duration() {
            return Err(Decline::DeadlineInfeasible {
                earliest: Millis::from(start.saturating_add(run)),
            });
        }
        self.prune_offers(now);
        if self.offers.len() >= self.config.max_offers {
            return Err(Decline::NoFreeSlot);
        }
        let _ = from;
        Ok(Offer {
            call: MessageId([0; 32]),
            task: cfo.task,
            price: self.config.price,
            expected_start: Millis::from(start),
            expected_run: Millis::from(run),
            has_module: false,
            has_input: false,
            energy: self.config.energy,
        })
    }

    /// Records an offer the driver signed, so that an accept can refer to it.
    pub fn offered(
        &mut self,
        offer_id: MessageId,
        requester: NodeId,
        cfo: &CallForOffers,
        price: Price,
        expires: Timestamp,
    ) {
        self.offers.insert(
            offer_id,
            OfferRecord {
                requester,
                task: cfo.task,
                price,
                expires,
                deadline: cfo.requirements.deadline.duration(),
                fuel: cfo.requirements.fuel,
                fuel_limit: cfo.requirements.fuel_limit,
                memory: cfo.requirements.memory,
                max_output: cfo.requirements.max_output,
                class: cfo.requirements.class,
            },
        );
    }

    fn prune_offers(&mut self, now: Timestamp) {
        if self.offers.len() >= self.config.max_offers / 2 {
            self.offers.retain(|_, o| o.expires > now);
        }
    }

    /// Handles a verified accept: the terms to sign, or why not. Capacity is
    /// not yet taken: call [`Provider::agreed`] once the task is persisted.
    pub fn accept(&mut self, from: NodeId, accept: &Accept, now: Timestamp) -> Result<Terms, Decline> {
        let offer = self.offers.get(&accept.offer).ok_or(Decline::OfferUnknown)?;
        if offer.expires <= now {
            self.offers.remove(&accept.offer);
            return Err(Decline::OfferUnknown);
        }
        if offer.requester != from {
            return Err(Decline::invalid("the offer was made to another requester"));
        }
        let a = &accept.assignment;
        if a.task != offer.task || accept.price != offer.price {
            return Err(Decline::invalid("the assignment does not match the offer"));
        }
        // The agreement never exceeds the offer: the limits are the call's.
        if a.limits.memory > offer.memory.min(self.config.memory) {
            return Err(Decline::MemoryTooLarge {
                max: offer.memory.min(self.config.memory),
            });
        }
        if a.limits.fuel > offer.fuel_limit.min(self.config.max_task_fuel) {
            return Err(Decline::FuelTooHigh {
                max: offer.fuel_limit.min(self.config.max_task_fuel),
            });
        }
        if a.limits.max_output > offer.max_output.min(self.config.max_output) {
            return Err(Decline::TooLarge {
                max: offer.max_output.min(self.config.max_output),
            });
        }
        if a.limits.timeout.duration() > offer.deadline {
            return Err(Decline::TimeTooLong {
                max: Millis::from(offer.deadline),
            });
        }
        if !self.accepting() {
            return Err(Decline::NotAccepting);
        }
        if self.load() >= self.room(offer.class) {
            return Err(Decline::NoFreeSlot);
        }
        if self.by_task.contains_key(&(a.task, from)) {
            return Err(Decline::invalid("this task is already running here"));
        }
        let due = now.add(offer.deadline);
        Ok(Terms {
            task: a.task,
            requester: from,
            price: offer.price,
            due,
            estimate: offer.fuel,
            class: offer.class,
        })
    }

    /// Takes a slot for a task whose agreement was signed and persisted.
    /// `accept` is the acceptance's id: a retransmitted acceptance gets the
    /// same agreement back ([`Provider::agreement_for`]).
    pub fn agreed(&mut self, accepted: Accepted, offer: MessageId, accept: MessageId) {
        self.offers.remove(&offer);
        self.by_accept.insert(accept, accepted.agreement);
        self.insert(accepted);
    }

    /// The agreement already made for an acceptance, if any (its envelope
    /// bytes), so that a duplicate acceptance is answered the same way.
    pub fn agreement_for(&self, accept: &MessageId) -> Option<&[u8]> {
        let id = self.by_accept.get(accept)?;
        self.tasks
            .get(id)
            .map(|t| t.agreement_env.as_slice())
            .filter(|env| !env.is_empty())
    }

    /// Gives a task admitted under `provisional` ([`Terms::admitted`]) its
    /// signed agreement, whose id it is known by from now on. Returns
    /// the task, or `None` if no task is known by `provisional`.
    pub fn signed(
        &mut self,
        provisional: &MessageId,
        agreement: &agora_protocol::Envelope,
    ) -> Option<&Accepted> {
        let mut t = self.tasks.remove(provisional)?;
        let id = agreement.id();
        t.agreement = id;
        t.agreement_env = agora_protocol::Encode::to_bytes(agreement);
        if let Some(k) = self.by_task.get_mut(&(t.assignment.task, t.requester))
            && k == provisional
        {
            *k = id;
        }
        // The provisional id is the acceptance's.
        if let Some(v) = self.by_accept.get_mut(provisional)
            && v == provisional
        {
            *v = id;
        }
        // Admitted this turn: at the back of the queue (it cannot have
        // started before it was signed).
        if let Some(q) = self.queue.iter_mut().rev().find(|q| *q == provisional) {
            *q = id;
        }
        self.tasks.insert(id, t);
        self.tasks.get(&id)
    }

    /// Re-inserts a task recovered from the store after a restart.
    pub fn restore(&mut self, mut accepted: Accepted) {
        if accepted.stage == Stage::Running {
            accepted.stage = Stage::Queued;
        }
        self.insert(accepted);
    }

    fn insert(&mut self, accepted: Accepted) {
        let id = accepted.agreement;
        self.by_task
            .insert((accepted.assignment.task, accepted.requester), id);
        match accepted.stage {
            Stage::Queued => self.queue.push_back(id),
            Stage::Running => self.running += 1,
            Stage::Done => {}
        }
        self.tasks.insert(id, accepted);
    }

    /// The next task to run, if a slot is free, or if an interactive task
    /// waits and a batch task holds a slot: the node then pauses that batch
    /// task in place while the interactive one runs (preemption; the batch
    /// task loses nothing and goes on after).
    pub fn start_next(&mut self) -> Option<Accepted> {
        if self.suspends() {
            return None;
        }
        // Interactive tasks first, each class in arrival order.
        let interactive = self.queue.iter().position(|id| {
            self.tasks
                .get(id)
                .is_some_and(|t| t.class == LatencyClass::Interactive)
        });
        let slots = self.config.slots as usize;
        let at = if self.running < slots {
            interactive.unwrap_or(0)
        } else {
            // Only an interactive task starts beyond the slots (the common
            // case, none waiting, ends here without counting), and each
            // such task pauses one running batch task.
            let at = interactive?;
            let running_batch = self
                .tasks
                .values()
                .filter(|t| t.stage == Stage::Running && t.class == LatencyClass::Batch)
                .count();
            if self.running - slots >= running_batch {
                return None;
            }
            at
        };
        let id = self.queue.remove(at)?;
        let t = self.tasks.get_mut(&id)?;
        t.stage = Stage::Running;
        self.running += 1;
        Some(t.clone())
    }

    /// A task finished running (successfully or not).
    pub fn finished(&mut self, agreement: &MessageId) -> Option<Accepted> {
        let t = self.tasks.get_mut(agreement)?;
        if t.stage == Stage::Running {
            self.running = self.running.saturating_sub(1);
        }
        t.stage = Stage::Done;
        Some(t.clone())
    }

    /// Forgets a task whose receipt was delivered (or that was cancelled).
    pub fn forget(&mut self, agreement: &MessageId) -> Option<Accepted> {
        let t = self.tasks.remove(agreement)?;
        self.by_task.remove(&(t.assignment.task, t.requester));
        self.by_accept.retain(|_, a| a != agreement);
        match t.stage {
            Stage::Queued => self.queue.retain(|q| q != agreement),
            Stage::Running => self.running = self.running.saturating_sub(1),
            Stage::Done => {}
        }
        Some(t)
    }

    /// A requester withdraws an agreement. Only queued tasks stop; a running
    /// task finishes but its receipt is not sent.
    pub fn cancel(&mut self, from: NodeId, agreement: &MessageId) -> Result<Option<Accepted>, Decline> {
        match self.tasks.get(agreement) {
            None => Err(Decline::Unknown),
            Some(t) if t.requester != from => Err(Decline::invalid("not the requester of this agreement")),
            Some(t) if t.stage == Stage::Queued => Ok(self.forget(agreement)),
            Some(_) => Ok(None),
        }
    }

    /// The provider stops: every task queued or running is forgotten and
    /// returned, for its requester to be told (tasks done stay: their
    /// receipts are still delivered).
    pub fn withdraw_all(&mut self) -> Vec<Accepted> {
        let open: Vec<MessageId> = self
            .tasks
            .values()
            .filter(|t| matches!(t.stage, Stage::Queued | Stage::Running))
            .map(|t| t.agreement)
            .collect();
        open.iter().filter_map(|a| self.forget(a)).collect()
    }

    /// While the node holds, the tasks it can no longer finish in time: a
    /// whole run at the measured speed no longer fits before the receipt
    /// is due. They are forgotten here and returned, for the requesters to
    /// be told at once (they re-place them) instead of at their deadline.
    pub fn withdraw_late(&mut self, now: Timestamp) -> Vec<Accepted> {
        if !self.suspends() {
            return Vec::new();
        }
        let late: Vec<MessageId> = self
            .tasks
            .values()
            .filter(|t| matches!(t.stage, Stage::Queued | Stage::Running))
            .filter(|t| t.due.since(now) < self.speed.time_for(t.estimate))
            .map(|t| t.agreement)
            .collect();
        late.iter().filter_map(|a| self.forget(a)).collect()
    }

    /// An accepted task.
    pub fn task(&self, agreement: &MessageId) -> Option<&Accepted> {
        self.tasks.get(agreement)
    }

    /// Notes that the requester of `agreement` keeps checkpoint `id` of
    /// its run; returns the task to persist.
    pub fn checkpointed(&mut self, agreement: &MessageId, id: ContentId) -> Option<&Accepted> {
        let t = self.tasks.get_mut(agreement)?;
        t.checkpoint = Some(id);
        Some(t)
    }

    /// Every accepted task.
    pub fn tasks(&self) -> impl Iterator<Item = &Accepted> {
        self.tasks.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::market::{Limits, Requirements};
    use agora_protocol::{ContentId, JobId, Keypair};

    const NOW: Timestamp = Timestamp(1_000_000);

    fn cfo(fuel: u64, deadline_ms: u64) -> CallForOffers {
        CallForOffers {
            task: TaskId::new(JobId([1; 16]), 0),
            attempt: 0,
            requirements: Requirements {
                fuel: Fuel(fuel),
                memory: Bytes::mib(64),
                deadline: Millis(deadline_ms),
                max_price: Price(10_000),
                replication: 1,
                domain: None,
                max_energy: None,
                module: ContentId([1; 32]),
                module_size: Bytes(10),
                input: ContentId([2; 32]),
                input_size: Bytes(10),
                fuel_limit: Fuel(fuel),
                max_output: Bytes(10),
                class: Default::default(),
            },
        }
    }

    fn accept(offer: MessageId, task: TaskId, price: Price) -> Accept {
        Accept {
            offer,
            price,
            assignment: Assignment {
                task,
                attempt: 0,
                module: ContentId([1; 32]),
                input: ContentId([2; 32]),
                args: vec![],
                limits: Limits {
                    fuel: Fuel(1),
                    memory: Bytes::mib(64),
                    timeout: Millis(1000),
                    max_output: Bytes(10),
                },
                seed: 0,
                resume: None,
            },
        }
    }

    fn accepted(id: u8, requester: NodeId, task: TaskId) -> Accepted {
        Accepted {
            agreement: MessageId([id; 32]),
            agreement_env: vec![],
            requester,
            assignment: accept(MessageId([0; 32]), task, Price(1)).assignment,
            price: Price(1),
            due: NOW,
            stage: Stage::Queued,
            estimate: Fuel(1000),
            class: LatencyClass::Batch,
            checkpoint: None,
            billed_from: Fuel(0),
        }
    }

    #[test]
    fn an_interactive_task_starts_before_the_batch_tasks_queued_ahead_of_it() {
        let config = Config {
            slots: 1,
            ..Config::default()
        };
        let mut p = Provider::new(config, ComputeUnits(1000));
        let me = Keypair::from_secret([9; 32]).node_id();
        let t = |i| TaskId::new(JobId([1; 16]), i);
        for i in 0..3 {
            p.restore(accepted(i as u8 + 1, me, t(i)));
        }
        let mut urgent = accepted(9, me, t(9));
        urgent.class = LatencyClass::Interactive;
        p.restore(urgent);
        let batch_wait = p.expected_start(LatencyClass::Batch);
        let interactive_wait = p.expected_start(LatencyClass::Interactive);
        assert!(
            interactive_wait < batch_wait,
            "an interactive call waits only for interactive work: {interactive_wait:?} vs {batch_wait:?}"
        );
        let order: Vec<u32> = std::iter::from_fn(|| {
            let next = p.start_next()?;
            p.finished(&next.agreement);
            Some(next.assignment.task.index)
        })
        .collect();
        assert_eq!(
            order,
            vec![9, 0, 1, 2],
            "interactive first, then batch in arrival order"
        );
    }

    #[test]
    fn an_interactive_task_starts_beside_full_slots_by_pausing_a_batch_task_and_batch_work_never_does() {
        let config = Config {
            slots: 2,
            ..Config::default()
        };
        let mut p = Provider::new(config, ComputeUnits(1000));
        let me = Keypair::from_secret([9; 32]).node_id();
        let t = |i| TaskId::new(JobId([1; 16]), i);
        for i in 0..3 {
            p.restore(accepted(i as u8 + 1, me, t(i)));
        }
        let started: Vec<u32> =
            std::iter::from_fn(|| p.start_next().map(|a| a.assignment.task.index)).collect();
        assert_eq!(started, [0, 1], "batch work fills the slots and no more");
        // Two interactive tasks: each pauses one of the two batch tasks; a
        // third has none left to pause and waits.
        for i in 7..10u8 {
            let mut urgent = accepted(i, me, t(u32::from(i)));
            urgent.class = LatencyClass::Interactive;
            p.restore(urgent);
        }
        let started: Vec<u32> =
            std::iter::from_fn(|| p.start_next().map(|a| a.assignment.task.index)).collect();
        assert_eq!(started, [7, 8]);
        // One interactive task done: the next interactive one takes its place.
        let done = p
            .tasks
            .values()
            .find(|a| a.assignment.task.index == 7)
            .map(|a| a.agreement);
        p.finished(&done.expect("task 7 runs"));
        assert_eq!(p.start_next().map(|a| a.assignment.task.index), Some(9));
        assert!(
            p.start_next().is_none(),
            "the batch task queued still waits for a slot"
        );
    }

    #[test]
    fn an_owners_pause_stops_new_work_and_says_why_until_resumed() {
        let mut p = Provider::new(Config::default(), ComputeUnits(1000));
        assert!(p.accepting());
        assert!(p.pause(Some(Timestamp(5))), "it stops taking work");
        assert_eq!(p.why_not_accepting(), Some("paused by its owner"));
        assert_eq!(p.paused_until(), Some(Timestamp(5)));
        assert!(!p.pause(None), "paused already");
        assert_eq!(p.paused_until(), Some(Timestamp(u64::MAX)));
        assert!(p.resume());
        assert!(p.accepting() && p.paused_until().is_none());
        // Shutting down outranks every other reason.
        p.pause(None);
        p.drain();
        assert_eq!(p.why_not_accepting(), Some("the node is shutting down"));
    }

    fn hot(temp: f64) -> crate::limits::Readings {
        crate::limits::Readings {
            local: Err("not read".into()),
            temp: Ok(temp),
            battery: Ok(None),
        }
    }

    #[test]
    fn a_limit_that_holds_stops_new_work_and_queued_starts_and_says_which() {
        let me = Keypair::from_secret([9; 32]).node_id();
        let mut p = Provider::new(
            Config {
                limits: crate::limits::OwnerLimits {
                    max_temp: Some(80.0),
                    ..Default::default()
                },
                ..Config::default()
            },
            ComputeUnits(1000),
        );
        p.restore(accepted(1, me, TaskId::new(JobId([1; 16]), 0)));
        assert!(!p.on_readings(&hot(60.0)));
        assert!(p.accepting() && !p.suspends());
        assert!(p.on_readings(&hot(95.0)));
        assert_eq!(
            p.why_not_accepting(),
            Some("the machine is at 95 °C, above the owner's 80 °C")
        );
        assert!(p.suspends());
        assert!(p.start_next().is_none(), "nothing starts while held");
        assert_eq!(p.free_slots(), 0);
        assert!(p.on_readings(&hot(70.0)));
        assert!(p.accepting() && !p.suspends());
        assert!(p.start_next().is_some(), "it starts once the limit clears");
        // An owner's pause suspends as well; shutting down does not (the
        // runs are stopped and handed back instead).
        p.pause(None);
        assert!(p.suspends());
        p.drain();
        assert!(!p.suspends());
    }

    #[test]
    fn held_tasks_that_can_no_longer_finish_by_their_due_time_are_handed_back() {
        let me = Keypair::from_secret([9; 32]).node_id();
        let mut p = Provider::new(Config::default(), ComputeUnits(1000));
        // 10 s of work at this speed each; one is due in 5 s, one in an hour.
        let run = Fuel(10 * 1000 * agora_protocol::units::FUEL_PER_CU_SECOND);
        let mut soon = accepted(1, me, TaskId::new(JobId([1; 16]), 0));
        soon.estimate = run;
        soon.due = NOW.add(Duration::from_secs(5));
        let mut later = accepted(2, me, TaskId::new(JobId([1; 16]), 1));
        later.estimate = run;
        later.due = NOW.add(Duration::from_secs(3600));
        p.restore(soon);
        p.restore(later);
        assert!(
            p.withdraw_late(NOW).is_empty(),
            "not held: nothing is handed back"
        );
        p.pause(None);
        let late = p.withdraw_late(NOW);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].agreement, MessageId([1; 32]));
        assert_eq!(p.load(), 1, "the other stays, suspended");
    }

    /// Fuel runs at different speeds in different kernels: a provider
    /// that ran a module four times faster than its calibration says
    /// offers for it within a deadline the calibrated speed would miss,
    /// and still declines other modules by the calibrated speed.
    #[test]
    fn a_module_that_ran_faster_than_the_calibration_is_offered_at_the_speed_it_ran() {
        let me = Keypair::from_secret([9; 32]).node_id();
        let mut p = Provider::new(Config::default(), ComputeUnits(1000));
        // 100 s at 1000 CU, against a 60 s deadline.
        let call = cfo(100_000_000_000, 60_000);
        assert!(matches!(
            p.call(me, &call, NOW),
            Err(Decline::DeadlineInfeasible { .. })
        ));
        // A run too short to teach anything, then one of 10 s at 4000 CU.
        let module = call.requirements.module;
        p.learn_speed(module, Fuel(1_000_000_000), Duration::from_millis(5));
        assert!(p.call(me, &call, NOW).is_err());
        p.learn_speed(module, Fuel(40_000_000_000), Duration::from_secs(10));
        let offer = p.call(me, &call, NOW).expect("25 s at the speed it ran");
        assert_eq!(offer.expected_run, Millis(25_000));
        let mut other = call.clone();
        other.requirements.module = ContentId([7; 32]);
        assert!(matches!(
            p.call(me, &other, NOW),
            Err(Decline::DeadlineInfeasible { .. })
        ));
        // No run makes a module look more than four times the calibration.
        p.learn_speed(module, Fuel(1_000_000_000_000), Duration::from_secs(1));
        assert_eq!(p.speed_of(&module), ComputeUnits(4000));
    }

    #[test]
    fn a_provider_full_of_module_speeds_forgets_the_one_learnt_least_recently() {
        let mut p = Provider::new(Config::default(), ComputeUnits(1000));
        let module = |i: usize| ContentId(blake3::hash(&i.to_le_bytes()).into());
        let run =
            |p: &mut Provider, i| p.learn_speed(module(i), Fuel(20_000_000_000), Duration::from_secs(10));
        for i in 0..MAX_MODULE_SPEEDS {
            run(&mut p, i);
        }
        // Module 0 ran again: module 1 is now the least recently learnt.
        run(&mut p, 0);
        run(&mut p, MAX_MODULE_SPEEDS);
        assert_eq!(p.module_speed.len(), MAX_MODULE_SPEEDS);
        assert_eq!(p.speed_of(&module(0)), ComputeUnits(2000));
        assert_eq!(
            p.speed_of(&module(1)),
            ComputeUnits(1000),
            "forgotten: the calibrated speed"
        );
        assert_eq!(p.speed_of(&module(MAX_MODULE_SPEEDS)), ComputeUnits(2000));
    }

    #[test]
    fn admission_control_declines_with_reasons() {
        let me = Keypair::from_secret([9; 32]).node_id();
        let mut p = Provider::new(
            Config {
                price: Price(100),
                ..Config::default()
            },
            ComputeUnits(1000),
        );
        let mut c = cfo(1_000_000, 60_000);
        c.requirements.memory = Bytes::gib(1);
        assert!(matches!(p.call(me, &c, NOW), Err(Decline::MemoryTooLarge { .. })));
        let mut c = cfo(1_000_000, 60_000);
        c.requirements.max_price = Price(10);
        assert!(matches!(p.call(me, &c, NOW), Err(Decline::PriceTooLow { .. })));
        // 1e12 fuel at 1000 CU is 1000 s: not within a 60 s deadline.
        assert!(matches!(
            p.call(me, &cfo(1_000_000_000_000, 60_000), NOW),
            Err(Decline::DeadlineInfeasible { .. })
        ));
        p.drain();
        assert_eq!(p.call(me, &cfo(1, 60_000), NOW), Err(Decline::NotAccepting));
        assert_eq!(p.free_slots(), 0);
    }

    #[test]
    fn the_owners_caps_bound_every_offer_and_agreement() {
        let req = Keypair::from_secret([1; 32]).node_id();
        let mut p = Provider::new(
            Config {
                max_task_fuel: Fuel(1_000_000_000),
                max_task_time: Duration::from_secs(10),
                ..Config::default()
            },
            ComputeUnits(1000),
        );
        // A fuel limit above the cap is declined at once, however small the
        // estimate.
        let mut c = cfo(1_000, 60_000);
        c.requirements.fuel_limit = Fuel(u64::MAX);
        assert_eq!(
            p.call(req, &c, NOW),
            Err(Decline::FuelTooHigh {
                max: Fuel(1_000_000_000)
            })
        );
        // An estimate that would run past the wall-time cap is declined: one
        // second of work at 1000 CU, under a cap of half a second.
        let mut quick = Provider::new(
            Config {
                max_task_time: Duration::from_millis(500),
                ..Config::default()
            },
            ComputeUnits(1000),
        );
        let c = cfo(1_000_000_000, 60_000);
        assert!(matches!(
            quick.call(req, &c, NOW),
            Err(Decline::TimeTooLong { .. })
        ));
        // An acceptance may not ask more than the call did.
        let c = cfo(1_000_000, 60_000);
        let offer = p.call(req, &c, NOW).unwrap();
        let id = MessageId([7; 32]);
        p.offered(id, req, &c, offer.price, NOW.add(Duration::from_secs(5)));
        let mut a = accept(id, c.task, offer.price);
        a.assignment.limits.fuel = Fuel(2_000_000);
        assert!(matches!(p.accept(req, &a, NOW), Err(Decline::FuelTooHigh { .. })));
        let mut a = accept(id, c.task, offer.price);
        a.assignment.limits.timeout = Millis(61_000);
        assert!(matches!(p.accept(req, &a, NOW), Err(Decline::TimeTooLong { .. })));
        // A run never lasts longer than the cap or the time left before the
        // receipt is due.
        let mut acc = accepted(1, req, c.task);
        acc.assignment.limits.timeout = Millis(3_600_000);
        acc.due = NOW.add(Duration::from_secs(30));
        let run = acc.run_assignment(NOW, Duration::from_secs(10));
        assert_eq!(run.limits.timeout, Millis(10_000));
        let run = acc.run_assignment(NOW.add(Duration::from_secs(25)), Duration::from_secs(10));
        assert_eq!(run.limits.timeout, Millis(5_000));
        assert_eq!(
            run.limits.fuel, acc.assignment.limits.fuel,
            "fuel is never cut: it decides the outcome"
        );
    }

    #[test]
    fn accept_must_match_a_live_offer_from_the_same_requester() {
        let req = Keypair::from_secret([1; 32]).node_id();
        let other = Keypair::from_secret([2; 32]).node_id();
        let mut p = Provider::new(Config::default(), ComputeUnits(1000));
        let c = cfo(1000, 60_000);
        let offer = p.call(req, &c, NOW).unwrap();
        let id = MessageId([7; 32]);
        p.offered(id, req, &c, offer.price, NOW.add(Duration::from_secs(5)));
        let a = accept(id, c.task, offer.price);
        assert_eq!(
            p.accept(req, &accept(MessageId([8; 32]), c.task, offer.price), NOW)
                .unwrap_err(),
            Decline::OfferUnknown
        );
        assert!(matches!(p.accept(other, &a, NOW), Err(Decline::Invalid { .. })));
        assert!(matches!(
            p.accept(req, &accept(id, c.task, Price(1)), NOW),
            Err(Decline::Invalid { .. })
        ));
        assert_eq!(
            p.accept(req, &a, NOW.add(Duration::from_secs(5))).unwrap_err(),
            Decline::OfferUnknown
        );
    }

    #[test]
    fn slots_and_backlog_bound_accepted_work() {
        let req = Keypair::from_secret([1; 32]).node_id();
        let mut p = Provider::new(
            Config {
                slots: 1,
                backlog: 1,
                ..Config::default()
            },
            ComputeUnits(1000),
        );
        let t = |i| TaskId::new(JobId([1; 16]), i);
        p.agreed(accepted(1, req, t(0)), MessageId([0; 32]), MessageId([1; 32]));
        p.agreed(accepted(2, req, t(1)), MessageId([0; 32]), MessageId([2; 32]));
        assert_eq!(p.call(req, &cfo(1, 60_000), NOW), Err(Decline::NoFreeSlot));
        let first = p.start_next().unwrap();
        assert_eq!(first.agreement, MessageId([1; 32]));
        assert!(p.start_next().is_none(), "one slot");
        p.finished(&first.agreement);
        p.forget(&first.agreement);
        assert_eq!(p.start_next().unwrap().agreement, MessageId([2; 32]));
        // Cancelling a running task does not free it; a queued one does.
        assert_eq!(p.cancel(req, &MessageId([2; 32])).unwrap(), None);
        assert_eq!(p.cancel(req, &MessageId([3; 32])).unwrap_err(), Decline::Unknown);
    }
}

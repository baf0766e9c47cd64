//! The requester side of the market: placing a job's tasks, checking what
//! comes back, and deciding whom to pay.
//!
//! Life of a task (SPEC.md §8):
//!
//! 1. **Place.** Tasks are placed largest first (by fuel estimate). For each,
//!    the candidates from the view are filtered by the job's constraints and
//!    scored ([`crate::placement`]); calls for offers go to the best few in
//!    parallel. When every one has answered (or the negotiation timeout
//!    passes), the best *offer* is accepted. A provider keeps at most its
//!    slots plus a small backlog of this requester's tasks, so a slow
//!    provider never hoards work.
//! 2. **Run.** The provider's agreement makes the copy live. A copy whose
//!    provider disconnects or misses its deadline is replaced on the next
//!    best provider; near the end of a job, a copy that runs well past its
//!    estimate gets a backup on an idle provider.
//! 3. **Verify.** A receipt must match the assignment (module, input,
//!    arguments, seed, fuel limit) and its output must hash to its output
//!    id. With `replicas = K`, an outcome is accepted once `K` copies agree
//!    and no other outcome has as many; a disagreement adds a copy, and the
//!    majority wins. A deterministic failure (exit code, trap, out of
//!    fuel…) is verified like a success, not run again elsewhere. Spot
//!    checks are stratified per provider: of every `⌈1/rate⌉` receipts a
//!    provider sends for a job, one chosen at random is re-executed here.
//! 4. **Pay.** Every copy whose outcome is the accepted one is paid
//!    `price.cost(fuel)`. A copy with another outcome is not paid, its
//!    provider is banned, and a fraud proof is published.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use agora_protocol::execution::{ExitStatus, Receipt};
use agora_protocol::market::{
    Accept, Agreement, Arg, Assignment, CallForOffers, CancelReason, Offer, Requirements, args_digest,
};
use agora_protocol::settlement::Voucher;
use agora_protocol::units::{Bytes, Fuel, Millis, Price, Timestamp};
use agora_protocol::{ContentId, JobId, MessageId, NodeId, TaskId, Verified};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::job::{
    Copy, CopyState, Evidence, JobRecord, JobSpec, JobState, Order, Reported, Strategy, TaskPhase, TaskRecord,
};
use crate::placement::{self, Book, Exclusion, Need, Scored};
use crate::refusal::Refusal;
use crate::view::View;

/// Requester settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Providers asked for offers per placement.
    pub fanout: usize,
    /// How long to wait for offers and agreements.
    pub negotiation_timeout: Duration,
    /// Wait before placing a task again after a round found no offer.
    pub retry_backoff: Duration,
    /// How long a provider that declined for lack of capacity is not asked.
    pub busy_backoff: Duration,
    /// How long a provider that could not be reached is not asked.
    pub unreachable_backoff: Duration,
    /// How long a provider that declined this node's credit (`NoCredit`,
    /// `Unpaid`) is not asked: that changes only as payments arrive.
    pub credit_backoff: Duration,
    /// How long a provider that refuses this node outright (`Refused`: a
    /// deny list, an allow list without it, a fork proven against it) is
    /// not asked.
    pub refused_backoff: Duration,
    /// Extra reports beyond the replication factor before a task without a
    /// majority fails.
    pub max_extra_copies: usize,
    /// Placements of one task (failed ones included) before it fails.
    pub max_attempts: usize,
    /// A job fails when no provider fits for this long, unless its spec
    /// says (`ttl`).
    pub unplaceable_after: Duration,
    /// Start backups for stragglers.
    pub backups: bool,
    /// Most placement decisions remembered for `explain`.
    pub max_explained_tasks: usize,
    /// Other domains tried besides the view's own peers.
    pub domains_to_try: usize,
    /// Ended jobs kept in memory (the rest are read from the records).
    pub keep_finished: usize,
    /// How long an ended job stays in memory at most.
    pub retire_after: Duration,
    /// The most memory this node's own executor gives a task: a task that
    /// needs more cannot be re-executed here, so it is verified by a second
    /// copy instead of a spot check.
    pub local_memory: Bytes,
    /// Order tiny tasks from providers with standing at their advertised
    /// price in one round trip ([`Action::Accept`] with `order`), instead
    /// of a call for offers and an acceptance.
    pub orders: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fanout: 3,
            negotiation_timeout: Duration::from_secs(3),
            retry_backoff: Duration::from_millis(100),
            busy_backoff: Duration::from_millis(250),
            unreachable_backoff: Duration::from_secs(2),
            credit_backoff: Duration::from_secs(2),
            refused_backoff: Duration::from_secs(600),
            max_extra_copies: 3,
            max_attempts: 24,
            unplaceable_after: Duration::from_secs(3600),
            backups: true,
            max_explained_tasks: 20_000,
            domains_to_try: 2,
            keep_finished: 256,
            retire_after: Duration::from_secs(60),
            local_memory: Bytes::mib(256),
            orders: true,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Sign `cfo` and send it to each of `to`; feed each answer to
    /// [`Requester::on_offer`].
    Call {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u16,
        /// The call.
        cfo: CallForOffers,
        /// Providers to ask.
        to: Vec<NodeId>,
    },
    /// Sign `accept` and send it with the content the provider lacks; feed
    /// the answer to [`Requester::on_agreement`]. With `order`, there was
    /// no offer: the acceptance goes with the requirements it names
    /// ([`agora_protocol::rpc::MarketRequest::Order`]).
    Accept {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u16,
        /// The provider.
        to: NodeId,
        /// The acceptance (with the assignment).
        accept: Accept,
        /// Send the module inline.
        send_module: bool,
        /// Send the input inline.
        send_input: bool,
        /// The requirements of an order (none: the acceptance of an offer).
        order: Option<Box<Requirements>>,
    },
    /// Sign and send a cancel.
    Cancel {
        /// The provider.
        to: NodeId,
        /// The agreement withdrawn.
        agreement: MessageId,
        /// The task.
        task: TaskId,
        /// Why.
        reason: CancelReason,
    },
    /// Fetch a copy's output by id; report with [`Requester::on_output`].
    Fetch {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u16,
        /// From whom.
        from: NodeId,
        /// The output.
        output: ContentId,
    },
    /// Re-execute the task locally; report with [`Requester::on_spot_check`].
    SpotCheck {
        /// The task.
        task: TaskId,
        /// The copy checked.
        attempt: u16,
    },
    /// Sign the voucher, record it in the ledger and deliver it.
    Pay {
        /// The provider.
        to: NodeId,
        /// The voucher.
        voucher: Voucher,
    },
    /// Publish a fraud proof: `accused` conflicts with `witness`.
    Fraud {
        /// The provider caught.
        culprit: NodeId,
        /// Its receipt, agreement and this node's acceptance.
        accused: Evidence,
        /// A correct receipt: another provider's (with its agreement and
        /// acceptance), or this node's own from a spot check.
        witness: Evidence,
    },
    /// Run the job's reduce module over the verified outputs; report with
    /// [`Requester::on_reduced`].
    Reduce {
        /// The job.
        job: JobId,
    },
    /// The job ended.
    Ended {
        /// The job.
        job: JobId,
        /// Done or failed.
        state: JobState,
    },
}

/// One placement decision, for `agora job explain`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Decision {
    /// When.
    pub at: Timestamp,
    /// The attempt it was for.
    pub attempt: u16,
    /// Candidates that passed the constraints, best first.
    pub candidates: Vec<Scored>,
    /// Providers left out, and why.
    pub excluded: Vec<(NodeId, String)>,
    /// Offers received: provider, price, expected start (ms), score.
    pub offers: Vec<OfferNote>,
    /// Providers that declined, and why.
    pub declined: Vec<(NodeId, String)>,
    /// The provider chosen.
    pub chosen: Option<NodeId>,
    /// Other domains known but not asked: ranked below the ones tried
    /// (`domains_to_try`), best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unasked: Vec<agora_protocol::Domain>,
}

/// An offer as `explain` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct OfferNote {
    /// The provider.
    pub node: NodeId,
    /// Its price, micro-credits per CU-second.
    #[serde(rename = "price_micros", alias = "price")]
    pub price: Price,
    /// Its expected start, ms.
    pub expected_start_ms: u64,
    /// Its expected run, ms.
    pub expected_run_ms: u64,
    /// The score the requester gave it.
    pub score: f64,
}

#[derive(Debug)]
struct Negotiation {
    asked: Vec<NodeId>,
    answered: HashSet<NodeId>,
    offers: Vec<(NodeId, Verified<Offer>, f64)>,
    started: Timestamp,
    reserved: NodeId,
    decision: usize,
    backup: bool,
    /// Those asked that had no standing when asked: the negotiation does
    /// not wait for them once those with standing have answered.
    unknown: Vec<NodeId>,
}

impl Negotiation {
    /// Whether only providers without standing were asked.
    fn is_probe(&self) -> bool {
        self.unknown.len() == self.asked.len()
    }

    /// Whether it has heard enough to conclude: everyone asked answered,
    /// or everyone with standing and there is an offer to take.
    fn heard_enough(&self) -> bool {
        self.answered.len() == self.asked.len()
            || (!self.is_probe()
                && !self.offers.is_empty()
                && self
                    .asked
                    .iter()
                    .all(|p| self.answered.contains(p) || self.unknown.contains(p)))
    }
}

#[derive(Debug)]
struct Job {
    record: JobRecord,
    tasks: Vec<TaskRecord>,
    /// Task indices, largest estimate first.
    order: Vec<u32>,
    args: Vec<Arg>,
    args_digest: ContentId,
    rr_cursor: usize,
    no_fit_since: Option<Timestamp>,
    /// Positions in `order` of tasks that may want another copy.
    ready: BTreeSet<usize>,
    /// Position in `order` of each task index.
    pos: Vec<usize>,
    /// Every task before this index is settled (verified or failed): a
    /// settled task stays settled, so whether all are is answered without
    /// a scan of the job per receipt.
    settled_upto: usize,
}

impl Job {
    /// Whether every task is settled (verified or failed). Amortised O(1):
    /// the scan goes on from where the last one stopped.
    fn all_settled(&mut self) -> bool {
        while let Some(t) = self.tasks.get(self.settled_upto) {
            if !matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed) {
                return false;
            }
            self.settled_upto += 1;
        }
        true
    }
}

/// What a receipt was found to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptVerdict {
    /// Accepted (the driver persists, then acknowledges).
    Accepted,
    /// Already recorded (a retransmission): acknowledge again.
    Duplicate,
    /// For a copy withdrawn before its agreement arrived: acknowledged so
    /// that the provider forgets it; not recorded, not paid.
    Superseded,
}

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// No such job or task here.
    #[error("unknown task")]
    UnknownTask,
    /// No live copy of the task at that provider.
    #[error("no agreement with this provider for this task")]
    NoAgreement,
    /// The receipt does not match the assignment.
    #[error("receipt does not match the assignment: {0}")]
    Mismatch(&'static str),
}

/// What to do if an acceptance is declined: the placement decision, whether
/// the copy is a backup, and the other offers, best first.
type Fallback = (usize, bool, VecDeque<(NodeId, Verified<Offer>)>);

/// The requester state machine. See the module docs.
#[derive(Debug)]
pub struct Requester {
    local: NodeId,
    config: Config,
    jobs: BTreeMap<JobId, Job>,
    /// Live logs of running copies.
    logs: logs::Logs,
    negotiations: HashMap<(TaskId, u16), Negotiation>,
    negotiating: HashMap<TaskId, usize>,
    negotiating_jobs: HashMap<JobId, usize>,
    /// Negotiations asking only a provider without standing.
    probes: usize,
    /// Providers without standing whose negotiation ended before they
    /// answered, and since when they were asked: counted as failed if they
    /// never answer (see [`Requester::expire_negotiations`]).
    silent: HashMap<NodeId, Timestamp>,
    /// Offers not taken, by the copy whose acceptance is in flight.
    fallbacks: HashMap<(TaskId, u16), Fallback>,
    book: Book,
    rng: SmallRng,
    spot: HashMap<(JobId, NodeId), (u64, u64)>,
    explain: HashMap<TaskId, VecDeque<Decision>>,
    explain_order: VecDeque<TaskId>,
    out: VecDeque<Action>,
    dirty_tasks: HashSet<TaskId>,
    dirty_jobs: HashSet<JobId>,
    /// Ended jobs still in memory, oldest first.
    ended: VecDeque<(Timestamp, JobId)>,
    /// Jobs that take their inputs from each job (`inputs_from`).
    downstream: HashMap<JobId, BTreeSet<JobId>>,
}

mod logs;
pub use logs::{CopyLog, LogError, MAX_COPY_LOG, MAX_LOGS};
mod negotiate;
mod pipeline;
pub use pipeline::Feed;
mod place;
mod progress;
pub use progress::ProgressError;
#[cfg(test)]
mod tests;
mod verify;

use verify::outcome_groups;

/// What a receipt reports and replicas compare: output, fuel, exit.
type Observed = (ContentId, Fuel, ExitStatus);

impl Requester {
    /// A requester for node `local`; `seed` makes its random choices
    /// reproducible.
    pub fn new(local: NodeId, config: Config, seed: u64) -> Requester {
        Requester {
            local,
            config,
            jobs: BTreeMap::new(),
            logs: logs::Logs::default(),
            negotiations: HashMap::new(),
            negotiating: HashMap::new(),
            negotiating_jobs: HashMap::new(),
            probes: 0,
            silent: HashMap::new(),
            fallbacks: HashMap::new(),
            book: Book::default(),
            rng: SmallRng::seed_from_u64(seed),
            spot: HashMap::new(),
            explain: HashMap::new(),
            explain_order: VecDeque::new(),
            out: VecDeque::new(),
            dirty_tasks: HashSet::new(),
            dirty_jobs: HashSet::new(),
            ended: VecDeque::new(),
            downstream: HashMap::new(),
        }
    }

    /// The next action to perform.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// Tasks and jobs changed since the last call: persist them before
    /// acknowledging anything.
    pub fn take_dirty(&mut self) -> (Vec<JobRecord>, Vec<TaskRecord>) {
        let jobs = self
            .dirty_jobs
            .drain()
            .filter_map(|j| self.jobs.get(&j).map(|job| job.record.clone()))
            .collect();
        let tasks = self
            .dirty_tasks
            .drain()
            .filter_map(|t| {
                self.jobs
                    .get(&t.job)
                    .and_then(|j| j.tasks.get(t.index as usize))
                    .cloned()
            })
            .collect();
        (jobs, tasks)
    }

    /// The nodes the DHT names as holders of `id`: placement counts no
    /// transfer of it to them.
    pub fn learn_holders(&mut self, id: ContentId, holders: &[NodeId]) {
        for h in holders.iter().filter(|h| **h != self.local) {
            self.book.learn_holds(*h, &[id]);
        }
    }

    /// What the requester knows of providers.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// A job's record and tasks.
    pub fn job(&self, id: &JobId) -> Option<(&JobRecord, &[TaskRecord])> {
        self.jobs.get(id).map(|j| (&j.record, j.tasks.as_slice()))
    }

    /// Every job.
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values().map(|j| &j.record)
    }

    /// The placement decisions recorded for a task.
    pub fn decisions(&self, task: &TaskId) -> Vec<Decision> {
        self.explain
            .get(task)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any job is still running.
    pub fn busy(&self) -> bool {
        self.jobs.values().any(|j| !j.record.state.is_terminal())
    }

    /// Marks a task changed: to be persisted, and looked at again by
    /// placement (it may want another copy).
    fn touch(&mut self, t: TaskId) {
        self.dirty_tasks.insert(t);
        if let Some(job) = self.jobs.get_mut(&t.job)
            && let Some(p) = job.pos.get(t.index as usize)
        {
            job.ready.insert(*p);
        }
    }

    fn negotiating(&self, t: &TaskId) -> usize {
        self.negotiating.get(t).copied().unwrap_or(0)
    }

    fn negotiation_started(&mut self, key: (TaskId, u16), n: Negotiation) {
        *self.negotiating.entry(key.0).or_default() += 1;
        *self.negotiating_jobs.entry(key.0.job).or_default() += 1;
        self.probes += usize::from(n.is_probe());
        self.negotiations.insert(key, n);
    }

    fn negotiation_ended(&mut self, key: &(TaskId, u16)) -> Option<Negotiation> {
        let n = self.negotiations.remove(key)?;
        self.probes -= usize::from(n.is_probe());
        for u in n.unknown.iter().filter(|u| !n.answered.contains(u)) {
            self.silent.entry(*u).or_insert(n.started);
        }
        if let Some(c) = self.negotiating.get_mut(&key.0) {
            *c -= 1;
            if *c == 0 {
                self.negotiating.remove(&key.0);
            }
        }
        if let Some(c) = self.negotiating_jobs.get_mut(&key.0.job) {
            *c -= 1;
            if *c == 0 {
                self.negotiating_jobs.remove(&key.0.job);
            }
        }
        Some(n)
    }

    /// Accepts a new job (already persisted with its content).
    pub fn submit(&mut self, id: JobId, spec: JobSpec, now: Timestamp) {
        let n = spec.inputs.len() as u32;
        let tasks = (0..n).map(|i| TaskRecord::new(TaskId::new(id, i))).collect();
        let record = JobRecord {
            id,
            spec,
            state: JobState::Pending,
            submitted_at: now,
            finished_at: None,
            error: None,
            reduced: None,
        };
        self.insert_job(record, tasks);
        self.dirty_jobs.insert(id);
        for i in 0..n {
            self.touch(TaskId::new(id, i));
        }
        if n == 0 {
            self.finish_job(id, now);
        }
    }

    fn insert_job(&mut self, record: JobRecord, tasks: Vec<TaskRecord>) {
        let spec = &record.spec;
        let mut order: Vec<u32> = (0..tasks.len() as u32).collect();
        order.sort_by_key(|i| std::cmp::Reverse(spec.estimate_of(*i as usize)));
        let args: Vec<Arg> = spec.args.iter().cloned().map(Arg).collect();
        let digest = args_digest(&args);
        let mut pos = vec![0; tasks.len()];
        for (p, i) in order.iter().enumerate() {
            pos[*i as usize] = p;
        }
        let ready: BTreeSet<usize> = (0..order.len())
            .filter(|p| {
                !matches!(
                    tasks[order[*p] as usize].phase,
                    TaskPhase::Verified | TaskPhase::Failed
                )
            })
            .collect();
        self.jobs.insert(
            record.id,
            Job {
                record,
                tasks,
                order,
                args,
                args_digest: digest,
                rr_cursor: 0,
                no_fit_since: None,
                ready,
                pos,
                settled_upto: 0,
            },
        );
    }

    /// Restores a job from the store after a restart. Copies that were
    /// being negotiated are given up (their providers may still deliver:
    /// receipts are matched by task and provider); agreed copies keep their
    /// deadlines.
    pub fn restore(&mut self, record: JobRecord, mut tasks: Vec<TaskRecord>, now: Timestamp) {
        let id = record.id;
        for t in &mut tasks {
            if t.phase == TaskPhase::Placed {
                t.phase = TaskPhase::Pending;
            }
            for c in &mut t.copies {
                if c.state == CopyState::Accepting {
                    c.state = CopyState::Failed("requester restarted before the agreement".into());
                }
                if c.state == CopyState::Agreed {
                    self.book.placed(c.provider, c.due);
                }
                if c.spot_pending {
                    // The local re-execution was lost with the restart: run it again.
                    self.out.push_back(Action::SpotCheck {
                        task: t.id,
                        attempt: c.attempt,
                    });
                }
            }
        }
        let terminal = record.state.is_terminal();
        if terminal {
            self.ended.push_back((record.finished_at.unwrap_or(now), id));
        }
        let reduce_pending = record.state == JobState::Running
            && record.spec.reduce.is_some()
            && record.reduced.is_none()
            && tasks.iter().all(|t| t.phase == TaskPhase::Verified);
        self.insert_job(record, tasks);
        if reduce_pending {
            self.out.push_back(Action::Reduce { job: id });
        }
        if !terminal {
            let n = self.jobs.get(&id).map_or(0, |j| j.tasks.len() as u32);
            for i in 0..n {
                self.settle(id, i, now);
            }
        }
        self.restore_pipeline(id, now);
    }

    /// Cancels a job: live copies are withdrawn and the job fails.
    pub fn cancel(&mut self, id: JobId, now: Timestamp) -> bool {
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        if job.record.state.is_terminal() {
            return false;
        }
        self.end_job(id, JobState::Cancelled, "cancelled by the user".into(), now);
        true
    }

    /// Ended jobs leave memory once older than `retire_after` or beyond the
    /// newest `keep_finished`: their records stay on disk (the engine reads
    /// them when asked), so memory does not grow with history. A job whose
    /// last changes are not yet taken for writing stays.
    fn retire(&mut self, now: Timestamp) {
        while let Some(&(at, id)) = self.ended.front() {
            let old = now.since(at) >= self.config.retire_after;
            let many = self.ended.len() > self.config.keep_finished;
            let unwritten = self.dirty_jobs.contains(&id) || self.dirty_tasks.iter().any(|t| t.job == id);
            if !(old || many) || unwritten {
                break;
            }
            self.ended.pop_front();
            self.downstream.remove(&id);
            self.downstream.retain(|_, down| {
                down.remove(&id);
                !down.is_empty()
            });
            if let Some(job) = self.jobs.remove(&id) {
                for t in &job.tasks {
                    self.explain.remove(&t.id);
                }
            }
            self.spot.retain(|(j, _), _| *j != id);
            self.fallbacks.retain(|(t, _), _| t.job != id);
        }
    }

    /// Drops negotiations of matching tasks, freeing their reserved lanes.
    fn drop_negotiations(&mut self, matches: impl Fn(&TaskId) -> bool) {
        let keys: Vec<(TaskId, u16)> = self
            .negotiations
            .keys()
            .filter(|(t, _)| matches(t))
            .copied()
            .collect();
        for k in keys {
            if let Some(n) = self.negotiation_ended(&k) {
                self.book.released(n.reserved);
            }
        }
    }

    fn fail_job(&mut self, id: JobId, error: String, now: Timestamp) {
        self.end_job(id, JobState::Failed, error, now);
    }

    /// Ends a job that is not done (`Failed` or `Cancelled`): its unfinished
    /// tasks fail, its live copies are withdrawn.
    fn end_job(&mut self, id: JobId, state: JobState, error: String, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if job.record.state.is_terminal() {
            return;
        }
        job.record.state = state;
        job.record.error = Some(error.clone());
        job.record.finished_at = Some(now);
        self.ended.push_back((now, id));
        self.pay_unsettled(id);
        let Some(job) = self.jobs.get_mut(&id) else { return };
        let mut withdraw = Vec::new();
        let mut ended = Vec::new();
        for t in &mut job.tasks {
            for c in &mut t.copies {
                if matches!(c.state, CopyState::Accepting | CopyState::Agreed) {
                    withdraw.push((c.provider, c.agreement, t.id));
                    c.state = CopyState::Cancelled;
                }
            }
            if !matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed) {
                ended.push(t.id);
                t.phase = TaskPhase::Failed;
                t.error.get_or_insert_with(|| match state {
                    JobState::Cancelled => "not run: the job was cancelled".to_owned(),
                    _ => format!("not run: the job failed ({error})"),
                });
            }
            self.dirty_tasks.insert(t.id);
        }
        for (p, a, t) in withdraw {
            self.book.released(p);
            if let Some(a) = a {
                self.out.push_back(Action::Cancel {
                    to: p,
                    agreement: a,
                    task: t,
                    reason: CancelReason::JobCancelled,
                });
            }
        }
        self.drop_negotiations(|t| t.job == id);
        self.dirty_jobs.insert(id);
        self.out.push_back(Action::Ended { job: id, state });
        for t in ended {
            self.feed_downstream(t, now);
        }
    }

    fn finish_job(&mut self, id: JobId, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if job.record.state.is_terminal() {
            return;
        }
        if job.record.spec.reduce.is_some() && job.record.reduced.is_none() {
            job.record.state = JobState::Running;
            self.dirty_jobs.insert(id);
            self.out.push_back(Action::Reduce { job: id });
            return;
        }
        job.record.state = JobState::Done;
        job.record.finished_at = Some(now);
        self.ended.push_back((now, id));
        self.dirty_jobs.insert(id);
        self.out.push_back(Action::Ended {
            job: id,
            state: JobState::Done,
        });
    }

    /// The reduce step ran: `Ok(output id)` or why it failed.
    pub fn on_reduced(&mut self, id: JobId, result: Result<ContentId, String>, now: Timestamp) {
        match result {
            Ok(out) => {
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.record.reduced = Some(out);
                }
                self.finish_job(id, now);
            }
            Err(e) => self.fail_job(id, format!("reduce failed: {e}"), now),
        }
    }

    fn record_decision(&mut self, task: TaskId, d: Decision) -> usize {
        if !self.explain.contains_key(&task) {
            self.explain_order.push_back(task);
            while self.explain_order.len() > self.config.max_explained_tasks {
                if let Some(old) = self.explain_order.pop_front() {
                    self.explain.remove(&old);
                }
            }
        }
        let q = self.explain.entry(task).or_default();
        q.push_back(d);
        while q.len() > 4 {
            q.pop_front();
        }
        q.len() - 1
    }

    fn decision_mut(&mut self, task: &TaskId, idx: usize) -> Option<&mut Decision> {
        self.explain.get_mut(task).and_then(|q| q.get_mut(idx))
    }

    /// Places what can be placed now. Cheap: only tasks that changed since
    /// they were last found complete are looked at. The driver calls it
    /// after every event, so a task goes out as soon as it can.
    pub fn place(&mut self, now: Timestamp, view: &View) {
        self.dispatch(now, view);
    }

    /// Periodic work: timeouts, overdue copies, stragglers, and placement.
    pub fn tick(&mut self, now: Timestamp, view: &View) {
        self.retire(now);
        self.expire_negotiations(now, view);
        self.check_overdue(now);
        self.dispatch(now, view);
        if self.config.backups {
            self.backups(now, view);
        }
    }

    /// Whether a live job has a copy agreed with `peer` or being accepted
    /// by it: what [`Requester::on_peer_down`] would re-place.
    pub fn depends_on(&self, peer: NodeId) -> bool {
        self.jobs
            .values()
            .filter(|j| !j.record.state.is_terminal())
            .any(|j| {
                j.tasks.iter().any(|t| {
                    t.copies.iter().any(|c| {
                        c.provider == peer && matches!(c.state, CopyState::Agreed | CopyState::Accepting)
                    })
                })
            })
    }

    /// A provider disconnected or dropped out of the view: its live copies
    /// get backups elsewhere (the originals still count if they deliver).
    pub fn on_peer_down(&mut self, peer: NodeId, now: Timestamp) {
        let mut affected = Vec::new();
        for job in self.jobs.values_mut() {
            if job.record.state.is_terminal() {
                continue;
            }
            for t in &mut job.tasks {
                for c in &mut t.copies {
                    if c.provider == peer && matches!(c.state, CopyState::Agreed | CopyState::Accepting) {
                        c.state = CopyState::Failed("provider went away".into());
                        affected.push(t.id);
                    }
                }
            }
        }
        for t in affected {
            self.book.released(peer);
            self.book.failed(peer);
            self.touch(t);
            self.settle(t.job, t.index, now);
        }
    }

    /// The assignment a task's copies run (for spot checks and reduce).
    pub fn assignment_of(&self, task: TaskId) -> Option<(JobSpec, Assignment)> {
        let job = self.jobs.get(&task.job)?;
        let spec = &job.record.spec;
        let input = spec.inputs.get(task.index as usize)?;
        Some((
            spec.clone(),
            Assignment {
                task,
                attempt: 0,
                module: spec.module,
                input: input.id,
                args: job.args.clone(),
                limits: spec.limits(),
                seed: spec.task_seed(task.index),
                resume: None,
            },
        ))
    }

    /// The assignment to re-run here to check copy `attempt` of `task`:
    /// from the checkpoint its run started from, so that its fuel is
    /// comparable.
    pub fn check_assignment(&self, task: TaskId, attempt: u16) -> Option<Assignment> {
        let (_, mut a) = self.assignment_of(task)?;
        a.resume = self
            .copy(task, attempt)
            .and_then(|c| c.reported.as_ref())
            .and_then(|r| r.resumed);
        Some(a)
    }

    /// The tail of a failed run's stderr its provider sent with `receipt`:
    /// kept on the copy it reports (the first one sent counts).
    pub fn note_stderr(&mut self, receipt: &Verified<Receipt>, stderr: &[u8]) {
        let r = receipt.payload();
        let from = receipt.signer();
        let Some(t) = self
            .jobs
            .get_mut(&r.task.job)
            .and_then(|j| j.tasks.get_mut(r.task.index as usize))
        else {
            return;
        };
        // Matched as the receipt is (`on_receipt`): by agreement, or, when
        // the receipt overtook the agreement's answer, by provider.
        let pos = t
            .copies
            .iter()
            .position(|c| c.provider == from && c.agreement == Some(r.agreement))
            .or_else(|| {
                t.copies.iter().position(|c| {
                    c.provider == from && c.reported.is_none() && !matches!(c.state, CopyState::Cancelled)
                })
            });
        if let Some(c) = pos.map(|p| &mut t.copies[p])
            && c.stderr.is_none()
        {
            c.stderr = Some(String::from_utf8_lossy(stderr).into_owned());
            self.dirty_tasks.insert(r.task);
        }
    }

    /// A provider's receipt envelope and reported outcome for a copy.
    pub fn copy(&self, task: TaskId, attempt: u16) -> Option<&Copy> {
        self.jobs
            .get(&task.job)?
            .tasks
            .get(task.index as usize)?
            .copies
            .iter()
            .find(|c| c.attempt == attempt)
    }

    /// The acceptance of a copy was signed: kept with the copy, it binds the
    /// copy's receipt to its task in a fraud proof.
    pub fn accept_sealed(&mut self, task: TaskId, attempt: u16, envelope: Vec<u8>) {
        let Some(c) = self
            .jobs
            .get_mut(&task.job)
            .and_then(|j| j.tasks.get_mut(task.index as usize))
            .and_then(|t| t.copy_mut(attempt))
        else {
            return;
        };
        c.accept_env = Some(envelope);
        self.dirty_tasks.insert(task);
    }

    /// Bans a provider on someone else's verified fraud proof.
    pub fn ban(&mut self, p: NodeId, why: String) {
        self.book.ban(p, why);
    }

    /// A ban read back from disk at start.
    pub fn restore_ban(&mut self, p: NodeId, why: String) {
        self.book.restore_ban(p, why);
    }

    /// The bans made since the last call, to persist.
    pub fn take_new_bans(&mut self) -> Vec<(NodeId, String)> {
        self.book.take_new_bans()
    }

    /// This node.
    pub fn local(&self) -> NodeId {
        self.local
    }
}

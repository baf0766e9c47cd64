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
//!    majority wins. A failure outcome (trap, out of fuel…) with `K = 1` is
//!    confirmed by a second copy before the task is declared failed. Spot
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
use agora_protocol::units::{Fuel, Millis, Price, Timestamp};
use agora_protocol::{ContentId, JobId, MessageId, NodeId, TaskId, Verified};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::job::{Copy, CopyState, JobRecord, JobSpec, JobState, Reported, Strategy, TaskPhase, TaskRecord};
use crate::placement::{self, Book, Exclusion, Need, ProviderInfo, Scored};
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
    /// Extra reports beyond the replication factor before a task without a
    /// majority fails.
    pub max_extra_copies: usize,
    /// Placements of one task (failed ones included) before it fails.
    pub max_attempts: usize,
    /// A job fails when no provider fits for this long.
    pub unplaceable_after: Duration,
    /// Start backups for stragglers.
    pub backups: bool,
    /// Most placement decisions remembered for `explain`.
    pub max_explained_tasks: usize,
    /// Other domains tried besides the view's own peers.
    pub domains_to_try: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fanout: 3,
            negotiation_timeout: Duration::from_secs(3),
            retry_backoff: Duration::from_millis(100),
            busy_backoff: Duration::from_millis(250),
            unreachable_backoff: Duration::from_secs(2),
            max_extra_copies: 3,
            max_attempts: 24,
            unplaceable_after: Duration::from_secs(30),
            backups: true,
            max_explained_tasks: 20_000,
            domains_to_try: 2,
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
    /// the answer to [`Requester::on_agreement`].
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
    /// Publish a fraud proof: `wrong` conflicts with `right`.
    Fraud {
        /// The provider caught.
        culprit: NodeId,
        /// The false receipt's envelope bytes.
        wrong: Vec<u8>,
        /// A correct receipt's envelope bytes (another provider's, or this
        /// node's own from a spot check).
        right: Vec<u8>,
        /// The task's arguments.
        args: Vec<String>,
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
}

/// An offer as `explain` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct OfferNote {
    /// The provider.
    pub node: NodeId,
    /// Its price.
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
}

#[derive(Debug)]
struct Job {
    record: JobRecord,
    tasks: Vec<TaskRecord>,
    /// Task indices, largest estimate first.
    order: Vec<u32>,
    args: Vec<Arg>,
    args_digest: ContentId,
    settled: usize,
    rr_cursor: usize,
    no_fit_since: Option<Timestamp>,
    /// Positions in `order` of tasks that may want another copy.
    ready: BTreeSet<usize>,
    /// Position in `order` of each task index.
    pos: Vec<usize>,
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
    negotiations: HashMap<(TaskId, u16), Negotiation>,
    negotiating: HashMap<TaskId, usize>,
    negotiating_jobs: HashMap<JobId, usize>,
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
}

fn need(job: &Job, idx: u32) -> Need {
    let spec = &job.record.spec;
    let task = &job.tasks[idx as usize];
    let input = &spec.inputs[idx as usize];
    Need {
        estimate: spec.estimate_of(idx as usize),
        memory: spec.memory,
        deadline: spec.deadline,
        max_price: spec.max_price,
        max_energy: spec.max_energy,
        domain: spec.domain.clone(),
        module: (spec.module, spec.module_size),
        input: (input.id, input.size),
        // Replicas must run on distinct providers: leave out those holding a
        // live or reported copy, and those found wrong. A provider that
        // merely declined or failed may be asked again.
        exclude: task
            .copies
            .iter()
            .filter(|c| {
                c.wrong
                    || matches!(
                        c.state,
                        CopyState::Accepting | CopyState::Agreed | CopyState::Reported
                    )
            })
            .map(|c| c.provider)
            .collect(),
    }
}

type Outcome = (ContentId, Fuel, ExitStatus);

impl Requester {
    /// A requester for node `local`; `seed` makes its random choices
    /// reproducible.
    pub fn new(local: NodeId, config: Config, seed: u64) -> Requester {
        Requester {
            local,
            config,
            jobs: BTreeMap::new(),
            negotiations: HashMap::new(),
            negotiating: HashMap::new(),
            negotiating_jobs: HashMap::new(),
            fallbacks: HashMap::new(),
            book: Book::default(),
            rng: SmallRng::seed_from_u64(seed),
            spot: HashMap::new(),
            explain: HashMap::new(),
            explain_order: VecDeque::new(),
            out: VecDeque::new(),
            dirty_tasks: HashSet::new(),
            dirty_jobs: HashSet::new(),
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
        self.negotiations.insert(key, n);
    }

    fn negotiation_ended(&mut self, key: &(TaskId, u16)) -> Option<Negotiation> {
        let n = self.negotiations.remove(key)?;
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
        let settled = tasks
            .iter()
            .filter(|t| matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed))
            .count();
        self.jobs.insert(
            record.id,
            Job {
                record,
                tasks,
                order,
                args,
                args_digest: digest,
                settled,
                rr_cursor: 0,
                no_fit_since: None,
                ready,
                pos,
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
    }

    /// Cancels a job: live copies are withdrawn and the job fails.
    pub fn cancel(&mut self, id: JobId, now: Timestamp) -> bool {
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        if job.record.state.is_terminal() {
            return false;
        }
        self.fail_job(id, "cancelled by the user".into(), now);
        true
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
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if job.record.state.is_terminal() {
            return;
        }
        job.record.state = JobState::Failed;
        job.record.error = Some(error.clone());
        job.record.finished_at = Some(now);
        let mut withdraw = Vec::new();
        for t in &mut job.tasks {
            for c in &mut t.copies {
                if matches!(c.state, CopyState::Accepting | CopyState::Agreed) {
                    withdraw.push((c.provider, c.agreement, t.id));
                    c.state = CopyState::Cancelled;
                }
            }
            if !matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed) {
                t.phase = TaskPhase::Failed;
                t.error
                    .get_or_insert_with(|| format!("not run: the job failed ({error})"));
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
        self.out.push_back(Action::Ended {
            job: id,
            state: JobState::Failed,
        });
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
        self.expire_negotiations(now, view);
        self.check_overdue(now);
        self.dispatch(now, view);
        if self.config.backups {
            self.backups(now, view);
        }
    }

    fn expire_negotiations(&mut self, now: Timestamp, view: &View) {
        let timeout = self.config.negotiation_timeout;
        let mut expired: Vec<(TaskId, u16)> = self
            .negotiations
            .iter()
            .filter(|(_, n)| now.since(n.started) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        // Deterministic order, so that a seeded simulation replays exactly.
        expired.sort();
        for (task, attempt) in expired {
            if let Some(n) = self.negotiations.get(&(task, attempt)) {
                let silent: Vec<NodeId> = n
                    .asked
                    .iter()
                    .filter(|p| !n.answered.contains(p))
                    .copied()
                    .collect();
                for p in silent {
                    self.book.failed(p);
                }
            }
            self.conclude(task, attempt, now, view);
        }
    }

    fn check_overdue(&mut self, now: Timestamp) {
        // Fallback offers live only as long as the offers themselves.
        self.fallbacks
            .retain(|_, (_, _, rest)| rest.iter().any(|(_, o)| o.expires_at() > now));
        let mut overdue = Vec::new();
        for job in self.jobs.values_mut() {
            if job.record.state.is_terminal() {
                continue;
            }
            for t in &mut job.tasks {
                for c in &mut t.copies {
                    let late = match c.state {
                        CopyState::Agreed => c.due <= now,
                        CopyState::Accepting => now.since(c.placed_at) > self.config.negotiation_timeout * 2,
                        _ => false,
                    };
                    if late {
                        let reason = if c.state == CopyState::Agreed {
                            "missed its deadline"
                        } else {
                            "never agreed"
                        };
                        c.state = CopyState::Failed(reason.into());
                        overdue.push((t.id, c.provider, c.agreement));
                    }
                }
            }
        }
        for (t, p, a) in overdue {
            self.book.released(p);
            self.book.failed(p);
            if let Some(a) = a {
                self.out.push_back(Action::Cancel {
                    to: p,
                    agreement: a,
                    task: t,
                    reason: CancelReason::Overdue,
                });
            }
            self.touch(t);
            self.settle(t.job, t.index, now);
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

    /// How many more copies a task needs now.
    fn wanted(&self, job: &Job, idx: u32) -> usize {
        let t = &job.tasks[idx as usize];
        if matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed) {
            return 0;
        }
        let live = t.live().count();
        let negotiating = self.negotiating(&t.id);
        let target = self.target_copies(job, t);
        let have = live + negotiating + t.reported().filter(|c| !c.wrong).count();
        target.saturating_sub(have)
    }

    fn target_copies(&self, job: &Job, t: &TaskRecord) -> usize {
        let k = usize::from(job.record.spec.replicas.max(1));
        let groups = outcome_groups(t);
        let best = groups.first().map_or(0, |g| g.1.len());
        let total: usize = groups.iter().map(|g| g.1.len()).sum();
        let mut need = k;
        if let Some((o, _)) = groups.first()
            && !o.2.is_success()
            && k == 1
        {
            need = 2;
        }
        if groups.len() > 1 {
            need = need.max(total / 2 + 1);
            // More copies only help if the leader can still reach a majority.
            need = need.max(total + (total / 2 + 1).saturating_sub(best));
        }
        need
    }

    fn dispatch(&mut self, now: Timestamp, view: &View) {
        let ids: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.record.state.is_terminal())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(job) = self.jobs.get(&id) else { continue };
            let positions: Vec<usize> = job.ready.iter().copied().collect();
            let mut placed_any = false;
            let mut busy = false;
            let mut stuck = false;
            for p in positions {
                let Some(job) = self.jobs.get(&id) else { break };
                let idx = job.order[p];
                if self.wanted(job, idx) == 0 {
                    if let Some(job) = self.jobs.get_mut(&id) {
                        job.ready.remove(&p);
                    }
                    continue;
                }
                match self.start_negotiation(id, idx, now, view, false) {
                    Placement::Started => placed_any = true,
                    // Capacity is what limits every later task too.
                    Placement::Busy => {
                        busy = true;
                        break;
                    }
                    // Only this task's own exclusions (its replicas hold the
                    // other providers): later tasks may still go ahead.
                    Placement::Skip => stuck = true,
                    Placement::NoFit => {
                        stuck = true;
                        break;
                    }
                }
            }
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            if placed_any && job.record.state == JobState::Pending {
                job.record.state = JobState::Running;
                self.dirty_jobs.insert(id);
            }
            let negotiating = self.negotiating_jobs.contains_key(&id);
            if placed_any
                || busy
                || negotiating
                || !stuck
                || job.tasks.iter().any(|t| t.live().next().is_some())
            {
                job.no_fit_since = None;
            } else {
                let since = *job.no_fit_since.get_or_insert(now);
                if now.since(since) >= self.config.unplaceable_after {
                    let why = self.no_fit_reason(id, view, now);
                    self.fail_job(id, why, now);
                }
            }
        }
    }

    fn no_fit_reason(&self, id: JobId, view: &View, now: Timestamp) -> String {
        let Some(job) = self.jobs.get(&id) else {
            return "no provider fits".into();
        };
        let Some(idx) = job.order.iter().copied().find(|i| {
            !matches!(
                job.tasks[*i as usize].phase,
                TaskPhase::Verified | TaskPhase::Failed
            )
        }) else {
            return "no provider fits".into();
        };
        let need = need(job, idx);
        let candidates = placement::gather(view, &need, self.config.domains_to_try);
        if candidates.is_empty() {
            return "no provider fits: no providers are known (is the node connected to the network?)".into();
        }
        let mut reasons: Vec<String> = candidates
            .iter()
            .filter_map(|c| {
                placement::evaluate(c, self.book.get(&c.node), &need, now)
                    .err()
                    .map(|e| format!("{}: {e}", c.node.short()))
            })
            .collect();
        reasons.truncate(8);
        format!(
            "no provider fits after {}: {}",
            agora_protocol::units::format_duration(self.config.unplaceable_after),
            reasons.join("; ")
        )
    }

    /// Candidates for a task: those that pass every constraint (best
    /// first), those excluded with why, the ones excluded only because they
    /// are busy, and what that means for placement.
    fn candidates(&self, job: &Job, idx: u32, now: Timestamp, view: &View) -> Candidates {
        let need = need(job, idx);
        let infos: Vec<ProviderInfo> = placement::gather(view, &need, self.config.domains_to_try);
        let mut ok = Vec::new();
        let mut excluded = Vec::new();
        let mut busy = Vec::new();
        let mut used = false;
        for info in &infos {
            match placement::evaluate(info, self.book.get(&info.node), &need, now) {
                Ok(s) => ok.push(s),
                Err(e) => {
                    if e == Exclusion::Busy {
                        busy.push(info.node);
                    }
                    used |= e == Exclusion::AlreadyUsed;
                    excluded.push((info.node, e.to_string()));
                }
            }
        }
        // Equal scores (tiny tasks whose queues all look empty) go to the
        // provider with the least of this requester's work in flight.
        let in_flight = |n: &NodeId| self.book.get(n).map_or(0, |s| s.lanes.len());
        ok.sort_by(|a, b| {
            a.score
                .total_cmp(&b.score)
                .then_with(|| in_flight(&a.node).cmp(&in_flight(&b.node)))
                .then(a.node.cmp(&b.node))
        });
        busy.sort();
        let class = if !ok.is_empty() {
            Placement::Started
        } else if !busy.is_empty() {
            Placement::Busy
        } else if used {
            Placement::Skip
        } else {
            Placement::NoFit
        };
        Candidates {
            ok,
            excluded,
            busy,
            class,
        }
    }

    fn start_negotiation(
        &mut self,
        id: JobId,
        idx: u32,
        now: Timestamp,
        view: &View,
        backup: bool,
    ) -> Placement {
        let Some(job) = self.jobs.get(&id) else {
            return Placement::NoFit;
        };
        let Candidates {
            mut ok,
            excluded,
            busy,
            class,
        } = self.candidates(job, idx, now, view);
        let task = job.tasks[idx as usize].id;
        let strategy = job.record.spec.strategy;
        if strategy != Strategy::Scored && !(ok.is_empty() && busy.is_empty()) {
            // The baselines pin each task to one provider, chosen at random
            // or in turn among those that fit, and wait for it even when
            // another is idle: placement that does not adapt.
            let pinned = job.tasks[idx as usize].pinned;
            let pool: Vec<NodeId> = {
                let mut p: Vec<NodeId> = ok.iter().map(|s| s.node).chain(busy.iter().copied()).collect();
                p.sort();
                p
            };
            let pin = match pinned.filter(|p| pool.contains(p)) {
                Some(p) => p,
                None => {
                    let i = match strategy {
                        Strategy::Random => self.rng.random_range(0..pool.len()),
                        _ => {
                            let job = self.jobs.get_mut(&id).expect("job exists");
                            job.rr_cursor += 1;
                            (job.rr_cursor - 1) % pool.len()
                        }
                    };
                    let job = self.jobs.get_mut(&id).expect("job exists");
                    job.tasks[idx as usize].pinned = Some(pool[i]);
                    pool[i]
                }
            };
            ok.retain(|s| s.node == pin);
            if ok.is_empty() {
                return Placement::Skip;
            }
        }
        let Some(job) = self.jobs.get(&id) else {
            return Placement::NoFit;
        };
        if ok.is_empty() {
            let d = Decision {
                at: now,
                attempt: job.tasks[idx as usize].next_attempt(),
                candidates: vec![],
                excluded,
                offers: vec![],
                declined: vec![],
                chosen: None,
            };
            if class != Placement::Busy {
                self.record_decision(task, d);
            }
            return class;
        }
        let chosen: Vec<Scored> = match strategy {
            // Tiny tasks are pipelined: negotiating with several providers
            // would cost more than the task, and the lanes already spread
            // them; the best-scored provider alone is asked.
            Strategy::Scored if ok[0].run_ms < placement::TINY_TASK.as_secs_f64() * 1000.0 => {
                ok.iter().take(1).cloned().collect()
            }
            Strategy::Scored => ok.iter().take(self.config.fanout.max(1)).cloned().collect(),
            Strategy::Random | Strategy::RoundRobin => ok.iter().take(1).cloned().collect(),
        };
        let Some(job) = self.jobs.get_mut(&id) else {
            return Placement::NoFit;
        };
        let spec = &job.record.spec;
        let t = &mut job.tasks[idx as usize];
        // Attempt numbers are never reused: above every copy and every
        // negotiation of this task.
        let attempt = self
            .negotiations
            .keys()
            .filter(|(tid, _)| *tid == task)
            .map(|(_, a)| a + 1)
            .chain([t.next_attempt()])
            .max()
            .unwrap_or(0);
        let input = &spec.inputs[idx as usize];
        let cfo = CallForOffers {
            task,
            attempt,
            requirements: Requirements {
                fuel: spec.estimate_of(idx as usize),
                memory: spec.memory,
                deadline: Millis::from(spec.deadline),
                max_price: spec.max_price,
                replication: spec.replicas,
                domain: spec.domain.clone(),
                max_energy: spec.max_energy,
                module: spec.module,
                module_size: spec.module_size,
                input: input.id,
                input_size: input.size,
            },
        };
        if t.phase == TaskPhase::Pending {
            t.phase = TaskPhase::Placed;
        }
        let best = chosen[0].clone();
        let finish = Timestamp(now.0 + (best.ect_ms as u64));
        self.book.placed(best.node, finish);
        let to: Vec<NodeId> = chosen.iter().map(|s| s.node).collect();
        let decision = self.record_decision(
            task,
            Decision {
                at: now,
                attempt,
                candidates: ok_with_chosen_first(chosen.clone(), ok),
                excluded,
                offers: vec![],
                declined: vec![],
                chosen: None,
            },
        );
        self.negotiation_started(
            (task, attempt),
            Negotiation {
                asked: to.clone(),
                answered: HashSet::new(),
                offers: Vec::new(),
                started: now,
                reserved: best.node,
                decision,
                backup,
            },
        );
        self.touch(task);
        self.out.push_back(Action::Call {
            task,
            attempt,
            cfo,
            to,
        });
        Placement::Started
    }

    /// An answer to a call for offers: a verified offer, or why not.
    pub fn on_offer(
        &mut self,
        task: TaskId,
        attempt: u16,
        from: NodeId,
        answer: Result<Verified<Offer>, Refusal>,
        now: Timestamp,
        view: &View,
    ) {
        let Some(job) = self.jobs.get(&task.job) else {
            return;
        };
        let spec = &job.record.spec;
        let Some(n) = self.negotiations.get_mut(&(task, attempt)) else {
            return;
        };
        if !n.asked.contains(&from) || !n.answered.insert(from) {
            return;
        }
        let decision = n.decision;
        match answer {
            Ok(offer) => {
                let o = offer.payload();
                if o.task != task || o.price > spec.max_price || offer.signer() != from {
                    if let Some(d) = self.explain.get_mut(&task).and_then(|q| q.get_mut(decision)) {
                        d.declined.push((from, "offer does not match the call".into()));
                    }
                } else {
                    let score = self.offer_score(job, task.index, from, o, view);
                    let note = OfferNote {
                        node: from,
                        price: o.price,
                        expected_start_ms: o.expected_start.0,
                        expected_run_ms: o.expected_run.0,
                        score,
                    };
                    if let Some(n) = self.negotiations.get_mut(&(task, attempt)) {
                        n.offers.push((from, offer, score));
                    }
                    if let Some(d) = self.decision_mut(&task, decision) {
                        d.offers.push(note);
                    }
                }
            }
            Err(refusal) => {
                if refusal.is_busy() {
                    self.book.back_off(from, now.add(self.config.busy_backoff));
                } else if refusal.is_unreachable() {
                    self.book.failed(from);
                    self.book.back_off(from, now.add(self.config.unreachable_backoff));
                }
                if let Some(d) = self.decision_mut(&task, decision) {
                    d.declined.push((from, refusal.to_string()));
                }
            }
        }
        let done = self
            .negotiations
            .get(&(task, attempt))
            .is_some_and(|n| n.answered.len() == n.asked.len());
        if done {
            self.conclude(task, attempt, now, view);
        }
    }

    fn offer_score(&self, job: &Job, idx: u32, from: NodeId, o: &Offer, view: &View) -> f64 {
        let spec = &job.record.spec;
        let input = &spec.inputs[idx as usize];
        let stats = self.book.get(&from);
        let advert = view.peer(&from).map(|p| &p.advert);
        let per_slot = match stats.and_then(|s| s.learnt_cu) {
            Some(cu) => cu,
            None => advert.map_or(0.0, |a| a.cu.0 as f64 / f64::from(a.slots.max(1))),
        };
        let run_ms = if per_slot > 0.0 {
            spec.estimate_of(idx as usize).0 as f64 / (per_slot * 1e6) * 1000.0
        } else {
            o.expected_run.0 as f64
        };
        let mut bytes = 0;
        if !o.has_module {
            bytes += spec.module_size.0;
        }
        if !o.has_input {
            bytes += input.size.0;
        }
        let transfer_ms = bytes as f64 / placement::ASSUMED_BANDWIDTH * 1000.0;
        let rtt_ms = view.rtt(&from).map_or(1.0, |r| r.as_secs_f64() * 1000.0);
        let ect = o.expected_start.0 as f64 + transfer_ms + run_ms + rtt_ms;
        let price = if spec.max_price.0 == 0 {
            0.0
        } else {
            o.price.0 as f64 / spec.max_price.0 as f64
        };
        let rep = stats.map_or(placement::INITIAL_REPUTATION, |s| s.reputation);
        ect * (1.0 + placement::W_PRICE * price) * (1.0 + placement::W_REPUTATION * (1.0 - rep))
    }

    fn conclude(&mut self, task: TaskId, attempt: u16, now: Timestamp, view: &View) {
        let Some(mut n) = self.negotiation_ended(&(task, attempt)) else {
            return;
        };
        self.book.released(n.reserved);
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        if job.record.state.is_terminal() {
            return;
        }
        n.offers.sort_by(|a, b| a.2.total_cmp(&b.2));
        // Replicas run on distinct providers: a provider that took another
        // copy of this task while this negotiation was open is passed over.
        let holding: HashSet<NodeId> = job.tasks[task.index as usize]
            .copies
            .iter()
            .filter(|c| {
                c.wrong
                    || matches!(
                        c.state,
                        CopyState::Accepting | CopyState::Agreed | CopyState::Reported
                    )
            })
            .map(|c| c.provider)
            .collect();
        let mut offers: VecDeque<(NodeId, Verified<Offer>)> = n
            .offers
            .into_iter()
            .filter(|(p, _, _)| !holding.contains(p))
            .map(|(p, o, _)| (p, o))
            .collect();
        let Some((provider, offer)) = offers.pop_front() else {
            let t = &mut job.tasks[task.index as usize];
            if t.live().next().is_none() && t.reported().next().is_none() {
                t.phase = TaskPhase::Pending;
            }
            t.unplaced_rounds += 1;
            self.touch(task);
            let _ = view;
            return;
        };
        self.accept_offer(task, attempt, provider, offer, n.backup, n.decision, offers, now);
    }

    /// Accepts an offer: records the copy and sends the acceptance. The
    /// other offers of the round are kept in case this one is declined.
    #[allow(clippy::too_many_arguments)] // one acceptance and its context
    fn accept_offer(
        &mut self,
        task: TaskId,
        attempt: u16,
        provider: NodeId,
        offer: Verified<Offer>,
        backup: bool,
        decision: usize,
        rest: VecDeque<(NodeId, Verified<Offer>)>,
        now: Timestamp,
    ) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let spec = &job.record.spec;
        let o = offer.payload();
        let idx = task.index as usize;
        let input = &spec.inputs[idx];
        let assignment = Assignment {
            task,
            attempt,
            module: spec.module,
            input: input.id,
            args: job.args.clone(),
            limits: spec.limits(),
            seed: spec.task_seed(task.index),
        };
        let accept = Accept {
            offer: offer.id(),
            price: o.price,
            assignment,
        };
        let predicted = now.0 + o.expected_start.0 + o.expected_run.0;
        let t = &mut job.tasks[idx];
        t.copies.push(Copy {
            attempt,
            provider,
            state: CopyState::Accepting,
            price: o.price,
            agreement: None,
            agreement_env: None,
            placed_at: now,
            due: now.add(spec.deadline),
            expected_start_ms: o.expected_start.0,
            reported: None,
            receipt_env: None,
            backup,
            paid: None,
            wrong: false,
            spot_pending: false,
        });
        t.phase = TaskPhase::Running;
        self.book.placed(provider, Timestamp(predicted));
        if let Some(d) = self.decision_mut(&task, decision) {
            d.chosen = Some(provider);
        }
        if !rest.is_empty() {
            self.fallbacks.insert((task, attempt), (decision, backup, rest));
        }
        self.touch(task);
        self.out.push_back(Action::Accept {
            task,
            attempt,
            to: provider,
            accept,
            send_module: !o.has_module,
            send_input: !o.has_input,
        });
    }

    /// A declined acceptance falls back to the next offer of its round,
    /// while it is valid, instead of a new round.
    fn try_fallback(&mut self, task: TaskId, attempt: u16, now: Timestamp) -> bool {
        let Some((decision, backup, mut rest)) = self.fallbacks.remove(&(task, attempt)) else {
            return false;
        };
        let Some(job) = self.jobs.get(&task.job) else {
            return false;
        };
        let t = &job.tasks[task.index as usize];
        let holding: HashSet<NodeId> = t
            .copies
            .iter()
            .filter(|c| {
                c.wrong
                    || matches!(
                        c.state,
                        CopyState::Accepting | CopyState::Agreed | CopyState::Reported
                    )
            })
            .map(|c| c.provider)
            .collect();
        let next_attempt = t.next_attempt().max(attempt + 1);
        while let Some((p, offer)) = rest.pop_front() {
            if holding.contains(&p) || offer.expires_at() <= now || self.book.is_banned(&p) {
                continue;
            }
            self.accept_offer(task, next_attempt, p, offer, backup, decision, rest, now);
            return true;
        }
        false
    }

    /// The answer to an accept: a verified agreement, or why not.
    pub fn on_agreement(
        &mut self,
        task: TaskId,
        attempt: u16,
        from: NodeId,
        answer: Result<Verified<Agreement>, Refusal>,
        now: Timestamp,
    ) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let Some(t) = job.tasks.get_mut(task.index as usize) else {
            return;
        };
        let Some(c) = t.copy_mut(attempt) else { return };
        if c.provider != from {
            return;
        }
        if c.withdrawn_unagreed() {
            // Withdrawn while the accept was in flight: now that the
            // agreement has an id, tell the provider not to run it.
            if let Ok(a) = answer
                && a.payload().task == task
                && a.payload().requester == self.local
            {
                c.agreement = Some(a.id());
                let reason = if job.record.state.is_terminal() {
                    CancelReason::JobCancelled
                } else {
                    CancelReason::Superseded
                };
                self.out.push_back(Action::Cancel {
                    to: from,
                    agreement: a.id(),
                    task,
                    reason,
                });
                self.touch(task);
            }
            return;
        }
        if c.state != CopyState::Accepting {
            return;
        }
        match answer {
            Ok(a)
                if a.payload().task == task
                    && a.payload().requester == self.local
                    && a.payload().price == c.price =>
            {
                c.state = CopyState::Agreed;
                c.agreement = Some(a.id());
                c.agreement_env = Some(agora_protocol::Encode::to_bytes(a.envelope()));
                c.due = c.due.min(a.payload().due.max(now));
                self.fallbacks.remove(&(task, attempt));
                self.touch(task);
            }
            Ok(_) => {
                c.state = CopyState::Failed("agreement does not match the acceptance".into());
                self.book.released(from);
                self.book.failed(from);
                self.touch(task);
                self.settle(task.job, task.index, now);
            }
            Err(refusal) => {
                c.state = CopyState::Failed(format!("declined the acceptance: {refusal}"));
                self.book.released(from);
                if matches!(
                    refusal,
                    Refusal::Declined(agora_protocol::rpc::Decline::NoFreeSlot)
                ) {
                    self.book.back_off(from, now.add(self.config.busy_backoff));
                } else {
                    self.book.failed(from);
                }
                self.touch(task);
                if !self.try_fallback(task, attempt, now) {
                    self.settle(task.job, task.index, now);
                }
            }
        }
    }

    /// A receipt from a provider. `output_held` says whether the output
    /// bytes are here and hash to the receipt's output id (inline outputs
    /// are checked by the driver before this call). On `Ok`, persist (see
    /// [`Requester::take_dirty`]) and acknowledge.
    pub fn on_receipt(
        &mut self,
        from: NodeId,
        receipt: &Verified<Receipt>,
        output_held: bool,
        now: Timestamp,
    ) -> Result<ReceiptVerdict, ReceiptError> {
        let r = receipt.payload();
        if r.requester != self.local {
            return Err(ReceiptError::Mismatch("requester"));
        }
        let job = self.jobs.get_mut(&r.task.job).ok_or(ReceiptError::UnknownTask)?;
        let spec = &job.record.spec;
        let input = spec
            .inputs
            .get(r.task.index as usize)
            .ok_or(ReceiptError::UnknownTask)?;
        let t = &mut job.tasks[r.task.index as usize];
        // Match by agreement; failing that (a restart lost it), by provider.
        let pos = t
            .copies
            .iter()
            .position(|c| c.provider == from && c.agreement == Some(r.agreement))
            .or_else(|| {
                t.copies.iter().position(|c| {
                    c.provider == from && c.reported.is_none() && !matches!(c.state, CopyState::Cancelled)
                })
            });
        let Some(pos) = pos else {
            // A copy withdrawn while its accept was in flight (another copy
            // settled the task first) has no agreement id to cancel by, so
            // the provider ran it anyway. Nothing is owed and nothing is
            // wrong: the provider may forget it.
            let withdrawn = t
                .copies
                .iter()
                .any(|c| c.provider == from && c.withdrawn_unagreed());
            return if withdrawn {
                Ok(ReceiptVerdict::Superseded)
            } else {
                Err(ReceiptError::NoAgreement)
            };
        };
        let c = &mut t.copies[pos];
        if c.reported.is_some() {
            return Ok(ReceiptVerdict::Duplicate);
        }
        let mismatch = if r.module != spec.module {
            Some("module")
        } else if r.input != input.id {
            Some("input")
        } else if r.args != job.args_digest {
            Some("arguments")
        } else if r.seed != spec.task_seed(r.task.index) {
            Some("seed")
        } else if r.fuel_limit != spec.fuel {
            Some("fuel limit")
        } else if r.fuel_used > r.fuel_limit {
            Some("fuel used above the limit")
        } else {
            None
        };
        if let Some(m) = mismatch {
            c.state = CopyState::Failed(format!("bad receipt: {m}"));
            self.book.released(from);
            self.book.failed(from);
            let task = r.task;
            self.touch(task);
            self.settle(task.job, task.index, now);
            return Err(ReceiptError::Mismatch(m));
        }
        let was_live = matches!(c.state, CopyState::Accepting | CopyState::Agreed);
        let exec_ms = r.finished_at.0.saturating_sub(r.started_at.0);
        c.reported = Some(Reported {
            receipt: receipt.id(),
            output: r.output,
            output_size: r.output_size,
            fuel: r.fuel_used,
            exit: r.exit.clone(),
            exec_ms,
            output_held: output_held || r.output_size.0 == 0,
        });
        c.receipt_env = Some(agora_protocol::Encode::to_bytes(receipt.envelope()));
        if c.agreement.is_none() {
            c.agreement = Some(r.agreement);
        }
        let attempt = c.attempt;
        let task = r.task;
        if r.exit == ExitStatus::Deadline {
            c.state = CopyState::Failed("hit its wall-clock limit".into());
        } else {
            c.state = CopyState::Reported;
        }
        let held = c.reported.as_ref().is_some_and(|x| x.output_held);
        if was_live {
            self.book.released(from);
        }
        if !held && c.state == CopyState::Reported {
            self.out.push_back(Action::Fetch {
                task,
                attempt,
                from,
                output: r.output,
            });
        }
        // Spot checks: stratified per (job, provider).
        let rate = spec.spot_check;
        if rate > 0.0 && c.state == CopyState::Reported && !t.spot_checked {
            let block = (1.0 / rate.clamp(1e-6, 1.0)).ceil() as u64;
            let entry = self.spot.entry((task.job, from)).or_insert((0, 0));
            if entry.0.is_multiple_of(block) {
                entry.1 = self.rng.random_range(0..block);
            }
            let pick = entry.0 % block == entry.1;
            entry.0 += 1;
            if pick {
                c.spot_pending = true;
                self.out.push_back(Action::SpotCheck { task, attempt });
            }
        }
        self.touch(task);
        self.settle(task.job, task.index, now);
        Ok(ReceiptVerdict::Accepted)
    }

    /// A fetched output arrived (`ok`: present and matching its id) or not.
    pub fn on_output(&mut self, task: TaskId, attempt: u16, ok: bool, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let Some(t) = job.tasks.get_mut(task.index as usize) else {
            return;
        };
        let Some(c) = t.copy_mut(attempt) else { return };
        if let Some(r) = &mut c.reported {
            if ok {
                r.output_held = true;
            } else {
                c.state = CopyState::Failed("its output could not be fetched or did not match".into());
                let p = c.provider;
                self.book.failed(p);
            }
        }
        self.touch(task);
        self.settle(task.job, task.index, now);
    }

    /// The local re-execution of a spot-checked copy finished with
    /// `outcome`; `own_receipt` is this node's own signed receipt of it.
    pub fn on_spot_check(
        &mut self,
        task: TaskId,
        attempt: u16,
        outcome: Outcome,
        own_receipt: Vec<u8>,
        now: Timestamp,
    ) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let args = job.record.spec.args.clone();
        let Some(t) = job.tasks.get_mut(task.index as usize) else {
            return;
        };
        t.spot_checked = true;
        let Some(c) = t.copy_mut(attempt) else { return };
        c.spot_pending = false;
        let Some(rep) = c.reported.clone() else { return };
        let provider = c.provider;
        let agrees = rep.output == outcome.0 && rep.fuel == outcome.1 && rep.exit == outcome.2;
        if !agrees {
            c.wrong = true;
            let wrong = c.receipt_env.clone().unwrap_or_default();
            // Our own execution is the truth for us: accept it.
            t.output = Some(outcome.0);
            t.fuel = Some(outcome.1);
            t.exit = Some(outcome.2.clone());
            t.phase = if outcome.2.is_success() {
                TaskPhase::Verified
            } else {
                TaskPhase::Failed
            };
            if !outcome.2.is_success() {
                t.error = Some(format!("task failed: {}", outcome.2));
            }
            self.book
                .ban(provider, format!("spot check of task {task} disagreed"));
            self.out.push_back(Action::Fraud {
                culprit: provider,
                wrong,
                right: own_receipt,
                args,
            });
            self.touch(task);
            self.settle_accepted(task, now);
            return;
        }
        self.touch(task);
        self.settle(task.job, task.index, now);
    }

    /// Decides a task from its copies: accept an outcome, place more
    /// copies, or fail it.
    fn settle(&mut self, job_id: JobId, idx: u32, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.record.state.is_terminal() {
            return;
        }
        let k = usize::from(job.record.spec.replicas.max(1));
        // Reports beyond the replication factor settle disagreements; failed
        // placements (declines, unreachable or overdue providers) are retried
        // more often before the task is given up.
        let max_reports = k + 1 + self.config.max_extra_copies;
        let max_attempts = self.config.max_attempts.max(max_reports);
        let t = &mut job.tasks[idx as usize];
        if matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed) {
            return;
        }
        if t.copies.iter().any(|c| {
            c.spot_pending
                || (c.state == CopyState::Reported && c.reported.as_ref().is_some_and(|r| !r.output_held))
        }) {
            t.phase = TaskPhase::Verifying;
            return;
        }
        let groups = outcome_groups(t);
        if let Some((leader, members)) = groups.first() {
            let total: usize = groups.iter().map(|g| g.1.len()).sum();
            let runner_up = groups.get(1).map_or(0, |g| g.1.len());
            let mut need = k;
            if !leader.2.is_success() && k == 1 {
                need = 2;
            }
            let decided = members.len() >= need
                && members.len() > runner_up
                && (groups.len() == 1 || members.len() * 2 > total);
            if decided {
                t.output = Some(leader.0);
                t.fuel = Some(leader.1);
                t.exit = Some(leader.2.clone());
                if leader.2.is_success() {
                    t.phase = TaskPhase::Verified;
                } else {
                    t.phase = TaskPhase::Failed;
                    t.error = Some(format!(
                        "task failed on {} providers: {}",
                        members.len(),
                        leader.2
                    ));
                }
                let task = t.id;
                self.touch(task);
                self.settle_accepted(task, now);
                return;
            }
        }
        let live = t.live().count();
        let tried = t.copies.len();
        let reports = t.reported().count();
        if live == 0
            && (tried >= max_attempts || reports >= max_reports)
            && !self.negotiating.contains_key(&t.id)
        {
            let reported = t.reported().count();
            t.phase = TaskPhase::Failed;
            t.error = Some(if reported > 1 {
                format!("no majority among {reported} receipts")
            } else {
                let last = t.copies.iter().rev().find_map(|c| match &c.state {
                    CopyState::Failed(r) => Some(r.clone()),
                    _ => None,
                });
                format!(
                    "gave up after {tried} attempts (last: {})",
                    last.unwrap_or_default()
                )
            });
            let task = t.id;
            self.touch(task);
            self.settle_accepted(task, now);
            return;
        }
        if live == 0 && t.reported().next().is_none() {
            t.phase = TaskPhase::Pending;
        } else if t.reported().next().is_some() {
            t.phase = TaskPhase::Verifying;
        }
    }

    /// After a task's outcome is decided: pay the copies that agree with it,
    /// report the ones that do not, withdraw the ones still running, and end
    /// the job when every task is settled.
    fn settle_accepted(&mut self, task: TaskId, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let args = job.record.spec.args.clone();
        let module = job.record.spec.module;
        let input = job.record.spec.inputs[task.index as usize].id;
        let t = &mut job.tasks[task.index as usize];
        let accepted = (t.output, t.fuel, t.exit.clone());
        let right_env = t
            .copies
            .iter()
            .find(|c| {
                !c.wrong
                    && c.reported
                        .as_ref()
                        .is_some_and(|r| Some(r.output) == accepted.0 && Some(r.fuel) == accepted.1)
            })
            .and_then(|c| c.receipt_env.clone());
        let mut pays = Vec::new();
        let mut frauds = Vec::new();
        let mut cancels = Vec::new();
        let mut learnt = Vec::new();
        for c in &mut t.copies {
            match (&c.state, &c.reported) {
                (CopyState::Reported, Some(r)) => {
                    let agrees = Some(r.output) == accepted.0
                        && Some(r.fuel) == accepted.1
                        && Some(&r.exit) == accepted.2.as_ref();
                    if agrees && !c.wrong {
                        if c.paid.is_none() {
                            let amount = c.price.cost(r.fuel);
                            c.paid = Some(amount);
                            pays.push(Voucher {
                                receipt: r.receipt,
                                agreement: c.agreement.unwrap_or(MessageId([0; 32])),
                                task,
                                provider: c.provider,
                                fuel: r.fuel,
                                price: c.price,
                                amount,
                            });
                            learnt.push((c.provider, r.fuel, Duration::from_millis(r.exec_ms)));
                        }
                    } else if !c.wrong && r.exit.is_deterministic() {
                        c.wrong = true;
                        if let (Some(w), Some(right)) = (c.receipt_env.clone(), right_env.clone()) {
                            frauds.push((c.provider, w, right));
                        }
                    }
                }
                (CopyState::Accepting | CopyState::Agreed, _) => {
                    cancels.push((c.provider, c.agreement));
                    c.state = CopyState::Cancelled;
                }
                _ => {}
            }
        }
        job.settled += 1;
        let all_settled = job
            .tasks
            .iter()
            .all(|t| matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed));
        let failed = job.tasks.iter().find(|t| t.phase == TaskPhase::Failed).map(|t| {
            format!(
                "task {} ({}): {}",
                t.id.index,
                job.record.spec.inputs[t.id.index as usize].name,
                t.error.clone().unwrap_or_default()
            )
        });
        self.drop_negotiations(|t| *t == task);
        for (p, fuel, exec) in learnt {
            self.book.verified(p, fuel, exec, &[module, input]);
        }
        for v in pays {
            self.out.push_back(Action::Pay {
                to: v.provider,
                voucher: v,
            });
        }
        for (p, w, right) in frauds {
            self.book
                .ban(p, format!("receipt for task {task} disagreed with the majority"));
            self.out.push_back(Action::Fraud {
                culprit: p,
                wrong: w,
                right,
                args: args.clone(),
            });
        }
        for (p, a) in cancels {
            self.book.released(p);
            if let Some(a) = a {
                self.out.push_back(Action::Cancel {
                    to: p,
                    agreement: a,
                    task,
                    reason: CancelReason::Superseded,
                });
            }
        }
        self.touch(task);
        if let Some(why) = failed {
            self.fail_job(task.job, why, now);
        } else if all_settled {
            self.finish_job(task.job, now);
        }
    }

    /// Near the end of a job, a copy running well past its estimate gets a
    /// backup on an idle provider.
    fn backups(&mut self, now: Timestamp, view: &View) {
        let mut wanted = Vec::new();
        for (id, job) in &self.jobs {
            if job.record.state != JobState::Running {
                continue;
            }
            let pending = job.tasks.iter().any(|t| t.phase == TaskPhase::Pending);
            if pending {
                continue;
            }
            for t in &job.tasks {
                if t.phase != TaskPhase::Running
                    || t.copies
                        .iter()
                        .any(|c| c.backup && matches!(c.state, CopyState::Accepting | CopyState::Agreed))
                {
                    continue;
                }
                if self.negotiating(&t.id) > 0 {
                    continue;
                }
                let Some(c) = t.live().find(|c| c.state == CopyState::Agreed) else {
                    continue;
                };
                let estimate = job.record.spec.estimate_of(t.id.index as usize);
                let speed = self
                    .book
                    .get(&c.provider)
                    .and_then(|s| s.learnt_cu)
                    .unwrap_or_else(|| {
                        view.peer(&c.provider).map_or(1000.0, |p| {
                            p.advert.cu.0 as f64 / f64::from(p.advert.slots.max(1))
                        })
                    });
                let predicted_ms =
                    c.expected_start_ms as f64 + estimate.0 as f64 / (speed.max(1.0) * 1e6) * 1000.0;
                let running_ms = now.0.saturating_sub(c.placed_at.0) as f64;
                if running_ms > predicted_ms * 2.0 + 500.0 {
                    wanted.push((*id, t.id.index));
                }
            }
        }
        for (id, idx) in wanted {
            // Only if some provider is idle (has a free lane now).
            let _ = self.start_negotiation(id, idx, now, view, true);
        }
    }

    /// The placement each task would get now, without sending anything
    /// (`--dry-run`).
    pub fn plan(&mut self, spec: &JobSpec, now: Timestamp, view: &View) -> Vec<Decision> {
        let id = JobId([0xff; 16]);
        let tasks: Vec<TaskRecord> = (0..spec.inputs.len() as u32)
            .map(|i| TaskRecord::new(TaskId::new(id, i)))
            .collect();
        let record = JobRecord {
            id,
            spec: spec.clone(),
            state: JobState::Pending,
            submitted_at: now,
            finished_at: None,
            error: None,
            reduced: None,
        };
        let mut job = Job {
            record,
            tasks,
            order: Vec::new(),
            args: Vec::new(),
            args_digest: ContentId([0; 32]),
            settled: 0,
            rr_cursor: 0,
            no_fit_since: None,
            ready: BTreeSet::new(),
            pos: Vec::new(),
        };
        let mut order: Vec<u32> = (0..spec.inputs.len() as u32).collect();
        order.sort_by_key(|i| std::cmp::Reverse(spec.estimate_of(*i as usize)));
        job.order = order.clone();
        let mut out = vec![None; spec.inputs.len()];
        let mut reserved = Vec::new();
        for idx in order {
            let Candidates { ok, excluded, .. } = self.candidates(&job, idx, now, view);
            let chosen = ok.first().map(|s| s.node);
            if let Some(best) = ok.first() {
                let finish = Timestamp(now.0 + best.ect_ms as u64);
                self.book.placed(best.node, finish);
                reserved.push(best.node);
            }
            job.tasks[idx as usize].copies.clear();
            out[idx as usize] = Some(Decision {
                at: now,
                attempt: 0,
                candidates: ok,
                excluded,
                offers: vec![],
                declined: vec![],
                chosen,
            });
        }
        for p in reserved {
            self.book.released(p);
        }
        out.into_iter().map(|d| d.expect("every task planned")).collect()
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
            },
        ))
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

    /// Bans a provider on someone else's verified fraud proof.
    pub fn ban(&mut self, p: NodeId, why: String) {
        self.book.ban(p, why);
    }

    /// This node.
    pub fn local(&self) -> NodeId {
        self.local
    }
}

/// The candidates of one placement round.
struct Candidates {
    ok: Vec<Scored>,
    excluded: Vec<(NodeId, String)>,
    busy: Vec<NodeId>,
    class: Placement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Started,
    Busy,
    Skip,
    NoFit,
}

fn ok_with_chosen_first(chosen: Vec<Scored>, rest: Vec<Scored>) -> Vec<Scored> {
    let mut out = chosen;
    for s in rest {
        if !out.iter().any(|c| c.node == s.node) {
            out.push(s);
        }
    }
    out
}

/// Reported copies grouped by outcome, largest group first.
fn outcome_groups(t: &TaskRecord) -> Vec<(Outcome, Vec<u16>)> {
    let mut groups: Vec<(Outcome, Vec<u16>)> = Vec::new();
    for c in t
        .copies
        .iter()
        .filter(|c| c.state == CopyState::Reported && !c.wrong)
    {
        let Some(r) = &c.reported else { continue };
        if !r.output_held || c.spot_pending {
            continue;
        }
        let o = (r.output, r.fuel, r.exit.clone());
        match groups.iter_mut().find(|g| g.0 == o) {
            Some(g) => g.1.push(c.attempt),
            None => groups.push((o, vec![c.attempt])),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
    groups
}

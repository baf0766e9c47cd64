//! Jobs and tasks as the requester records them.

use std::time::Duration;

use agora_protocol::execution::ExitStatus;
use agora_protocol::units::{Bytes, Credits, EnergyRate, Fuel, Price, Timestamp};
use agora_protocol::{ContentId, Domain, JobId, MessageId, NodeId, TaskId};
use serde::{Deserialize, Serialize};

/// How the requester chooses among eligible providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Lowest score: estimated completion time, price and reputation
    /// (SPEC.md §8.2). The default.
    #[default]
    Scored,
    /// Uniformly at random (a baseline for benchmarks).
    Random,
    /// In turn (a baseline for benchmarks).
    RoundRobin,
}

impl Strategy {
    /// Every strategy, by its name on the command line and in JSON.
    pub const ALL: [(&'static str, Strategy); 3] = [
        ("scored", Strategy::Scored),
        ("random", Strategy::Random),
        ("round-robin", Strategy::RoundRobin),
    ];
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Strategy, String> {
        Strategy::ALL
            .iter()
            .find(|(name, _)| *name == s || name.replace('-', "_") == s)
            .map(|(_, st)| *st)
            .ok_or_else(|| format!("unknown strategy {s:?}: use scored, random or round-robin"))
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = Strategy::ALL
            .iter()
            .find(|(_, st)| st == self)
            .map_or("scored", |(name, _)| name);
        f.write_str(name)
    }
}

/// One task input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// A name for the task (its input file's name); outputs are named after it.
    pub name: String,
    /// The input's content id.
    pub id: ContentId,
    /// Its size.
    pub size: Bytes,
    /// This task's fuel estimate, if it differs from the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Fuel>,
}

/// What a user submits: a module and its task inputs, with constraints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The module.
    pub module: ContentId,
    /// Its size.
    pub module_size: Bytes,
    /// A module that combines the task outputs (run by this node at the end).
    #[serde(default)]
    pub reduce: Option<ContentId>,
    /// One input per task.
    pub inputs: Vec<InputSpec>,
    /// The published dataset the inputs are files of (`--inputs-id`): they
    /// need not be on this node, since providers fetch them from the
    /// dataset's holders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<ContentId>,
    /// The job on this node whose outputs are this job's inputs
    /// (`--inputs-from`): task i takes task i's verified output, and starts
    /// as soon as that is verified. The node fills `inputs` at submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_from: Option<JobId>,
    /// Arguments passed to every task.
    #[serde(default)]
    pub args: Vec<String>,
    /// Arguments of the reduce module.
    #[serde(default)]
    pub reduce_args: Vec<String>,
    /// Fuel limit of each task.
    pub fuel: Fuel,
    /// Fuel estimate of a task (intensity), for placement. Defaults to the
    /// limit.
    #[serde(default)]
    pub estimate: Option<Fuel>,
    /// Memory limit of each task.
    pub memory: Bytes,
    /// Time a task may take from placement to receipt (JSON: ms).
    #[serde(with = "millis", rename = "deadline_ms", alias = "deadline")]
    pub deadline: Duration,
    /// Highest price paid (JSON: micro-credits per CU-second).
    #[serde(rename = "max_price_micros", alias = "max_price")]
    pub max_price: Price,
    /// Distinct providers per task.
    pub replicas: u8,
    /// Only providers in this domain.
    #[serde(default)]
    pub domain: Option<Domain>,
    /// Fraction of tasks the requester re-executes itself.
    #[serde(default)]
    pub spot_check: f64,
    /// Highest declared energy cost accepted.
    #[serde(default)]
    pub max_energy: Option<EnergyRate>,
    /// Seed of the job; each task's seed derives from it.
    #[serde(default)]
    pub seed: u64,
    /// How providers are chosen.
    #[serde(default)]
    pub strategy: Strategy,
    /// The largest output a task may write (default [`DEFAULT_MAX_OUTPUT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<Bytes>,
    /// Tasks that may fail for good before the job fails. With 0 (the
    /// default) the first failure ends the job; above 0, every task runs
    /// and the job is done with its failures named, unless more fail.
    #[serde(default)]
    pub max_failures: u32,
    /// How long the job waits while no provider can take its tasks before
    /// it fails (JSON: ms). Default: the requester's `unplaceable_after`.
    #[serde(
        default,
        rename = "ttl_ms",
        with = "millis_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    /// Labels a provider must carry (`--select key=value`), all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub select: Vec<agora_protocol::capacity::Label>,
    /// Interactive (soonest, ahead of batch work) or batch (cheapest and
    /// fastest; the default).
    #[serde(default, skip_serializing_if = "is_batch")]
    pub class: agora_protocol::market::LatencyClass,
    /// The most energy the job may take, joules, shared equally among its
    /// tasks (`--energy-budget`): placement then prefers the least energy
    /// among providers that meet the deadline.
    #[serde(default, rename = "energy_budget_j", skip_serializing_if = "Option::is_none")]
    pub energy_budget: Option<f64>,
}

fn is_batch(c: &agora_protocol::market::LatencyClass) -> bool {
    *c == agora_protocol::market::LatencyClass::Batch
}

/// The largest output a task may write unless the job says otherwise.
pub const DEFAULT_MAX_OUTPUT: Bytes = Bytes(16 * 1024 * 1024);

/// Why a job spec cannot run, whatever the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl JobSpec {
    /// Most tasks in one job.
    pub const MAX_TASKS: usize = 1_000_000;
    /// Most replicas of one task.
    pub const MAX_REPLICAS: u8 = 16;
    /// Most bytes of all arguments together.
    pub const MAX_ARGS_TOTAL: usize = 16 * 1024;

    /// Checks the spec's shape (everything that does not depend on what a
    /// node holds): task count, replication, rates, limits and argument
    /// sizes.
    pub fn validate(&self) -> Result<(), SpecError> {
        use agora_protocol::limits::{MAX_ARG_LEN, MAX_ARGS};
        let fail = |m: String| Err(SpecError(m));
        if self.inputs.is_empty() {
            return fail("a job needs at least one input".into());
        }
        if self.inputs.len() > Self::MAX_TASKS {
            return fail(format!("at most {} tasks per job", Self::MAX_TASKS));
        }
        if self.replicas == 0 || self.replicas > Self::MAX_REPLICAS {
            return fail(format!("replicas must be between 1 and {}", Self::MAX_REPLICAS));
        }
        if self.max_failures as usize >= self.inputs.len() && self.max_failures > 0 {
            return fail(format!(
                "max-failures {} leaves nothing that must succeed: the job has {} task(s)",
                self.max_failures,
                self.inputs.len()
            ));
        }
        if !(0.0..=1.0).contains(&self.spot_check) {
            return fail("the spot-check rate must be between 0 and 1".into());
        }
        if self.energy_budget.is_some_and(|j| !(j.is_finite() && j > 0.0)) {
            return fail("the energy budget must be a positive number of joules".into());
        }
        if self
            .max_output
            .is_some_and(|m| m.0 > agora_protocol::limits::MAX_BLOB as u64)
        {
            return fail(format!(
                "the output limit may be at most {}",
                Bytes(agora_protocol::limits::MAX_BLOB as u64)
            ));
        }
        if self
            .ttl
            .is_some_and(|t| t < Duration::from_secs(1) || t > Duration::from_secs(30 * 24 * 3600))
        {
            return fail("the time-to-live must be between 1s and 30 days".into());
        }
        if self.select.len() > agora_protocol::limits::MAX_LABELS {
            return fail(format!(
                "at most {} selectors",
                agora_protocol::limits::MAX_LABELS
            ));
        }
        if let Some(bad) = self
            .select
            .iter()
            .find(|l| agora_protocol::capacity::Label::new(&l.key, &l.value).is_err())
        {
            return fail(format!("the selector {bad} is not a valid label"));
        }
        if self.fuel.0 == 0 {
            return fail("the fuel limit must be positive".into());
        }
        if self.memory.0 < 64 * 1024 {
            return fail("the memory limit must be at least 64KiB (one wasm page)".into());
        }
        if self.deadline < Duration::from_millis(10) {
            return fail("the deadline must be at least 10ms".into());
        }
        if self
            .inputs
            .iter()
            .any(|i| i.name.is_empty() || i.name.len() > 255)
        {
            return fail("every input needs a name of 1 to 255 bytes".into());
        }
        let total: usize = self.args.iter().chain(&self.reduce_args).map(|a| a.len()).sum();
        if total > Self::MAX_ARGS_TOTAL {
            return fail("the arguments may total at most 16 KiB".into());
        }
        if [&self.args, &self.reduce_args]
            .iter()
            .any(|args| args.len() > MAX_ARGS || args.iter().any(|a| a.len() > MAX_ARG_LEN))
        {
            return fail(format!(
                "at most {MAX_ARGS} arguments of {MAX_ARG_LEN} bytes each"
            ));
        }
        Ok(())
    }

    /// The limits every task of the job runs under.
    pub fn limits(&self) -> agora_protocol::market::Limits {
        agora_protocol::market::Limits {
            fuel: self.fuel,
            memory: self.memory,
            timeout: agora_protocol::units::Millis::from(self.deadline),
            max_output: self.max_output.unwrap_or(DEFAULT_MAX_OUTPUT),
        }
    }

    /// The fuel estimate of task `i`.
    pub fn estimate_of(&self, i: usize) -> Fuel {
        self.inputs
            .get(i)
            .and_then(|t| t.estimate)
            .or(self.estimate)
            .unwrap_or(self.fuel)
            .min(self.fuel)
    }

    /// The seed of task `i`: the first 8 bytes of blake3(job seed ‖ index).
    pub fn task_seed(&self, i: u32) -> u64 {
        task_seed(self.seed, i)
    }
}

/// The seed of task `i` of a job seeded `job_seed`.
pub fn task_seed(job_seed: u64, i: u32) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&job_seed.to_le_bytes());
    h.update(&i.to_le_bytes());
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Serde helper: optional durations as whole milliseconds.
pub mod millis_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as milliseconds (or null).
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from milliseconds (or null).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Serde helper: durations as whole milliseconds.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    /// Deserialises.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A job's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, nothing placed yet.
    Pending,
    /// Tasks are being placed or run.
    Running,
    /// Every task verified (and reduced, if asked).
    Done,
    /// A task failed for good, or no provider took one in time.
    Failed,
    /// Its owner cancelled it.
    Cancelled,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// Where one task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskPhase {
    /// Waiting for its input: the output of the same task of the job this
    /// one takes its inputs from (`inputs_from`).
    Waiting,
    /// Waiting to be placed.
    Pending,
    /// Calls for offers are out.
    Placed,
    /// Agreed and running somewhere.
    Running,
    /// Receipts in; waiting for replicas or a spot-check.
    Verifying,
    /// The output is verified.
    Verified,
    /// Failed for good.
    Failed,
}

/// Why a copy failed when its provider withdrew its agreement because it
/// is stopping (a `Cancel` with reason `Withdrawn`): not counted against
/// the provider.
pub const WITHDRAWN_BY_PROVIDER: &str = "its provider withdrew: it is stopping";

/// Where one copy (placement) of a task stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum CopyState {
    /// Accept sent; waiting for the agreement.
    Accepting,
    /// The provider agreed; the task runs there.
    Agreed,
    /// Its receipt arrived and checks out; its outcome is recorded.
    Reported,
    /// Withdrawn (another copy finished first, or the job was cancelled).
    Cancelled,
    /// Failed: declined, unreachable, overdue or a bad receipt.
    Failed(String),
}

/// The outcome a receipt reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reported {
    /// The receipt's envelope id.
    pub receipt: MessageId,
    /// The output id.
    pub output: ContentId,
    /// Output size.
    pub output_size: Bytes,
    /// Fuel used.
    pub fuel: Fuel,
    /// Exit status.
    pub exit: ExitStatus,
    /// Execution time the provider reported.
    pub exec_ms: u64,
    /// Whether the output bytes are here and match.
    pub output_held: bool,
    /// The checkpoint the run started from (its fuel is in `fuel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<ContentId>,
}

/// One placement of a task on one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// Attempt number (unique per task).
    pub attempt: u16,
    /// The provider.
    pub provider: NodeId,
    /// Its state.
    pub state: CopyState,
    /// The agreed price.
    pub price: Price,
    /// The energy per CU-second the provider's offer stated (0: unknown,
    /// or a copy from before offers stated it).
    #[serde(default)]
    pub energy: agora_protocol::units::EnergyRate,
    /// The agreement's id, once agreed.
    pub agreement: Option<MessageId>,
    /// The agreement envelope's bytes (evidence), once agreed.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub agreement_env: Option<Vec<u8>>,
    /// When the accept was sent.
    pub placed_at: Timestamp,
    /// When the receipt is due.
    pub due: Timestamp,
    /// The offer's expected start delay.
    pub expected_start_ms: u64,
    /// What the receipt reported.
    pub reported: Option<Reported>,
    /// The receipt envelope's bytes (evidence for fraud proofs).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub receipt_env: Option<Vec<u8>>,
    /// This node's signed acceptance of the copy (what binds its receipt
    /// to the task, in a fraud proof).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub accept_env: Option<Vec<u8>>,
    /// A backup copy for a straggler.
    pub backup: bool,
    /// The amount paid, once a voucher is issued.
    pub paid: Option<Credits>,
    /// Whether this copy was found wrong.
    pub wrong: bool,
    /// Whether the requester is re-executing this copy's task to check it.
    #[serde(default)]
    pub spot_pending: bool,
    /// The tail of the guest's stderr the provider sent with a receipt of
    /// a run that did not succeed (its word: not verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The checkpoint the copy was told to resume from, and the fuel used
    /// up to it (not billed again: the copy is paid for what it added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<(ContentId, Fuel)>,
    /// The fuel it was paid for, once paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed: Option<Fuel>,
    /// Whether it was placed by an order (no offer before), and whether
    /// its provider declined that order.
    #[serde(default, skip_serializing_if = "Order::is_none")]
    pub order: Order,
}

/// How a copy was placed: after an offer, or by an order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// After an offer.
    #[default]
    None,
    /// By an order.
    Placed,
    /// By an order its provider declined: a provider's "not now", like a
    /// declined call for offers, not counted as an attempt of the task.
    Declined,
}

impl Order {
    fn is_none(&self) -> bool {
        *self == Order::None
    }
}

impl Copy {
    /// An order its provider declined (not an attempt of the task).
    pub fn declined_order(&self) -> bool {
        self.order == Order::Declined
    }

    /// The fuel this copy is paid for when it reported `fuel` in all: what
    /// it added to the checkpoint it resumed from.
    pub fn billed(&self, fuel: Fuel) -> Fuel {
        Fuel(fuel.0.saturating_sub(self.resume.map_or(0, |(_, f)| f.0)))
    }

    /// Pays this copy of `task`, which reached `fuel` in all, under
    /// `receipt` (its receipt, or its progress receipt) and `agreement`:
    /// marks it paid for what it added ([`Copy::billed`]) and returns the
    /// voucher.
    pub fn pay(
        &mut self,
        receipt: MessageId,
        agreement: MessageId,
        task: TaskId,
        fuel: Fuel,
    ) -> agora_protocol::settlement::Voucher {
        let fuel = self.billed(fuel);
        let amount = self.price.cost(fuel);
        self.paid = Some(amount);
        self.billed = Some(fuel);
        agora_protocol::settlement::Voucher {
            receipt,
            agreement,
            task,
            provider: self.provider,
            fuel,
            price: self.price,
            amount,
        }
    }

    /// Withdrawn while its accept was in flight: cancelled, with no
    /// agreement id yet to cancel it by at the provider.
    pub fn withdrawn_unagreed(&self) -> bool {
        self.state == CopyState::Cancelled && self.agreement.is_none()
    }

    /// The copy's receipt bound to its task by its agreement and this
    /// node's acceptance, for a fraud proof (all three envelopes needed).
    pub fn evidence(&self) -> Option<Evidence> {
        Some(Evidence {
            receipt: self.receipt_env.clone()?,
            agreement: Some(self.agreement_env.clone()?),
            accept: Some(self.accept_env.clone()?),
        })
    }
}

/// One side of a fraud proof, as envelope bytes: a receipt, and the
/// agreement and acceptance that bind it (absent for this node's own run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The receipt.
    pub receipt: Vec<u8>,
    /// The provider's agreement.
    pub agreement: Option<Vec<u8>>,
    /// This node's acceptance.
    pub accept: Option<Vec<u8>>,
}

/// Serde helper: optional bytes as hex.
pub mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&agora_protocol::id::to_hex(b)),
            None => s.serialize_none(),
        }
    }
    /// Deserialises.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => agora_protocol::id::from_hex(s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("not hex")),
            None => Ok(None),
        }
    }
}

/// The requester's record of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task.
    pub id: TaskId,
    /// Its phase.
    pub phase: TaskPhase,
    /// Every placement so far.
    pub copies: Vec<Copy>,
    /// The verified output.
    pub output: Option<ContentId>,
    /// Fuel of the verified outcome.
    pub fuel: Option<Fuel>,
    /// Exit status of the verified outcome.
    pub exit: Option<ExitStatus>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Placement rounds that found no provider.
    pub unplaced_rounds: u32,
    /// Whether the requester re-executed it itself.
    pub spot_checked: bool,
    /// The provider a baseline strategy (random, round-robin) pinned it to.
    #[serde(default)]
    pub pinned: Option<NodeId>,
    /// Verified by a second copy instead of a spot check (this node could
    /// not re-execute it under its limits, or the check could not run).
    #[serde(default)]
    pub needs_replica: bool,
    /// The checkpoint the verified outcome's run started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<ContentId>,
    /// The latest checkpoints its copies reported (at most
    /// [`MAX_TASK_CHECKPOINTS`], oldest first): a copy placed after one
    /// fails resumes from the last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<TaskCheckpoint>,
}

/// The most checkpoints a requester keeps per task besides those a copy
/// started from: the latest, and the few before it a provider restarting
/// may still resume from (it resumes from the last one the requester
/// acknowledged, which a crash can leave one or two behind).
pub const MAX_TASK_CHECKPOINTS: usize = 4;

/// A checkpoint of a task, reported by a copy's provider in a signed
/// progress receipt (SPEC.md §8.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    /// Its content id (the encoded checkpoint is kept as content).
    pub id: ContentId,
    /// Its index in the task's chain of checkpoints.
    pub index: u32,
    /// Fuel used from the task's start to it.
    pub fuel: Fuel,
    /// The copy whose provider reported it.
    pub attempt: u16,
    /// The progress receipt's envelope id.
    pub progress: MessageId,
}

impl TaskRecord {
    /// A fresh, pending task.
    pub fn new(id: TaskId) -> TaskRecord {
        TaskRecord {
            id,
            phase: TaskPhase::Pending,
            copies: Vec::new(),
            output: None,
            fuel: None,
            exit: None,
            error: None,
            unplaced_rounds: 0,
            spot_checked: false,
            pinned: None,
            needs_replica: false,
            resumed: None,
            checkpoints: Vec::new(),
        }
    }

    /// Copies that are live (accepting or agreed).
    pub fn live(&self) -> impl Iterator<Item = &Copy> {
        self.copies
            .iter()
            .filter(|c| matches!(c.state, CopyState::Accepting | CopyState::Agreed))
    }

    /// Copies with a checked receipt.
    pub fn reported(&self) -> impl Iterator<Item = &Copy> {
        self.copies.iter().filter(|c| c.state == CopyState::Reported)
    }

    /// Providers this task has been placed on (replicas go to distinct ones).
    pub fn providers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.copies.iter().map(|c| c.provider)
    }

    /// The next attempt number.
    pub fn next_attempt(&self) -> u16 {
        self.copies.iter().map(|c| c.attempt + 1).max().unwrap_or(0)
    }

    /// A copy by attempt.
    pub fn copy_mut(&mut self, attempt: u16) -> Option<&mut Copy> {
        self.copies.iter_mut().find(|c| c.attempt == attempt)
    }
}

/// A job in a line: what `agora jobs` lists. Kept as its own record so
/// that listing the history of a node reads one small record per job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The job.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// Tasks.
    pub tasks: usize,
    /// Verified tasks.
    pub verified: usize,
    /// Failed tasks.
    pub failed: usize,
    /// Submission time.
    pub submitted_at: Timestamp,
    /// End time.
    pub finished_at: Option<Timestamp>,
    /// Error.
    pub error: Option<String>,
}

/// The requester's record of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub id: JobId,
    /// What was submitted.
    pub spec: JobSpec,
    /// Its state.
    pub state: JobState,
    /// When it was submitted.
    pub submitted_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The reduced result, if a reduce module was given and has run.
    pub reduced: Option<ContentId>,
}

impl JobRecord {
    /// The job in a line, given its tasks.
    pub fn summary(&self, tasks: &[TaskRecord]) -> Summary {
        Summary {
            id: self.id,
            state: self.state,
            tasks: tasks.len(),
            verified: tasks.iter().filter(|t| t.phase == TaskPhase::Verified).count(),
            failed: tasks.iter().filter(|t| t.phase == TaskPhase::Failed).count(),
            submitted_at: self.submitted_at,
            finished_at: self.finished_at,
            error: self.error.clone(),
        }
    }
}

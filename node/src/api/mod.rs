//! The local HTTP API: JSON over HTTP/1.1 on loopback, every route behind
//! the bearer token written to `node.json` (or, for the dashboard's page,
//! a browser session opened with a one-time code: [`dashboard`]). Every
//! request must name the node in its `Host` and, if it has an `Origin`, come
//! from the node's own page.
//!
//! | method | path | body → answer |
//! | --- | --- | --- |
//! | GET | `/v1/status` | → [`Status`] |
//! | GET | `/v1/peers?domain=D` | → `[`[`PeerRow`]`]` |
//! | GET | `/v1/domains` | → `[`[`DomainRow`]`]` |
//! | GET | `/metrics` | → Prometheus text |
//! | PUT | `/v1/content` | raw bytes → [`ContentRef`] |
//! | GET | `/v1/content/{id}` | → raw bytes |
//! | POST | `/v1/jobs` | [`SubmitRequest`] → [`SubmitResponse`] |
//! | GET | `/v1/jobs` | → `[`[`JobSummary`]`]` |
//! | GET | `/v1/jobs/{id}?tasks=BOOL&receipts=BOOL` | → [`JobStatus`] (task rows by default, receipts on request) |
//! | GET | `/v1/jobs/{id}/explain` | → [`Explain`] |
//! | GET | `/v1/jobs/{id}/result` | → [`JobResult`] |
//! | POST | `/v1/jobs/{id}/cancel` | → [`JobSummary`] |
//! | GET | `/v1/ledger?limit=N` | → [`Ledger`] |
//! | POST | `/v1/ledger/grants` | [`GrantRequest`] → [`GrantResponse`] |
//! | GET | `/v1/ledger/audit/{peer}` | → [`AuditReport`] (the peer's chain fetched and checked) |
//! | GET | `/v1/owner` | → [`OwnerState`] |
//! | POST | `/v1/owner/pause`, `/v1/owner/resume`, `/v1/owner/limits` | → [`OwnerState`] |
//! | GET | `/v1/owner/history?days=D&tasks=N` | → [`OwnerHistory`] |
//! | GET | `/v1/jobs/{id}/logs?task=N` | → [`JobLogs`] |
//! | POST | `/v1/dashboard/code` | → [`dashboard::LoginCode`] |
//! | GET | `/v1/events?view=V` | server-sent events (see [`dashboard`]) |
//!
//! Errors are `{"error": "..."}` with a 4xx or 5xx status.

pub mod client;
pub mod dashboard;
pub mod server;

use std::collections::BTreeMap;

use agora_protocol::units::{Bytes, ComputeUnits, Credits, EnergyRate, Fuel, Price, Timestamp};
use agora_protocol::{ContentId, Domain, JobId, NodeId};
use serde::{Deserialize, Serialize};

use crate::market::job::{JobSpec, JobState, TaskPhase};
use crate::market::requester::Decision;

/// What `node.json` holds: how scripts and the CLI find a running node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's peer id.
    pub peer_id: NodeId,
    /// Addresses it listens on.
    pub listen: Vec<String>,
    /// The API address (`127.0.0.1:PORT`).
    pub api: String,
    /// The API bearer token.
    pub token: String,
    /// The data dir.
    pub data_dir: String,
    /// Its domain.
    pub domain: Domain,
    /// The process id.
    pub pid: u32,
    /// The bootstrap peers it was started with (what `agora doctor`
    /// checks).
    #[serde(default)]
    pub bootstrap: Vec<String>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Peer id.
    pub peer_id: NodeId,
    /// Software version.
    pub version: String,
    /// Domain.
    pub domain: Domain,
    /// Listen addresses.
    pub listen: Vec<String>,
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// Advertised capacity (per-slot CU × slots).
    pub cu: ComputeUnits,
    /// Measured per-slot capacity.
    pub per_slot_cu: ComputeUnits,
    /// When capacity was measured.
    pub calibrated_at: Timestamp,
    /// Share of a core per task.
    pub cpu_share: f64,
    /// Slots.
    pub slots: u32,
    /// Free slots.
    pub free_slots: u32,
    /// Tasks running here.
    pub running: u32,
    /// Tasks queued here.
    pub queued: u32,
    /// Whether the node takes work (provider enabled and idle policy).
    pub accepting: bool,
    /// Load of other processes, permille of all cores.
    pub load: u32,
    /// Asking price, micro-credits per CU-second.
    #[serde(rename = "price_micros")]
    pub price: Price,
    /// Energy per CU-second, mJ (measured, declared, or 0 when unknown).
    pub energy: EnergyRate,
    /// Where `energy` comes from: `measured` (RAPL during calibration),
    /// `declared` (the owner's setting) or `unknown`.
    #[serde(default)]
    pub energy_source: crate::node::EnergySource,
    /// Memory per task.
    pub memory: Bytes,
    /// Credit balance in micro-credits (negative when it owes).
    pub balance_micros: i64,
    /// Why it takes no new work, when it does not.
    #[serde(default)]
    pub not_accepting: Option<String>,
    /// Peers in the view.
    pub peers: usize,
    /// Connected peers.
    pub connected: usize,
    /// Domains known.
    pub domains: usize,
    /// Jobs not yet ended.
    pub jobs_active: usize,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Whether other nodes can dial this one (`public`, `private` or
    /// `unknown`), from AutoNAT.
    #[serde(default)]
    pub reachability: crate::network::Reachability,
    /// Relays holding a reservation for this node.
    #[serde(default)]
    pub relays: Vec<NodeId>,
    /// External addresses confirmed by other nodes (and circuit addresses).
    #[serde(default)]
    pub external_addrs: Vec<String>,
}

/// How a connected peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// Over at least one direct connection.
    Direct,
    /// Only through a relay.
    Relayed,
}

/// `GET /v1/peers`: one peer in the view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRow {
    /// Peer id.
    pub peer_id: NodeId,
    /// Domain.
    pub domain: Domain,
    /// Advertised capacity.
    pub cu: u64,
    /// Slots.
    pub slots: u32,
    /// Free slots.
    pub free_slots: u32,
    /// Memory per task, bytes.
    pub memory: u64,
    /// Asking price, micro-credits per CU-second.
    #[serde(rename = "price_micros")]
    pub price: Price,
    /// Declared energy, mJ per CU-second.
    pub energy: u64,
    /// Smoothed round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Age of its advert, ms.
    pub advert_age_ms: u64,
    /// When its advert arrived by this node's clock, minus when the peer
    /// issued it by its own (the advert's `seq`), ms: the clocks' offset
    /// plus the delivery time. Positive: this node's clock is ahead.
    pub clock_offset_ms: i64,
    /// Whether it takes work.
    pub accepting: bool,
    /// Its load, permille.
    pub load: u32,
    /// Its software version.
    pub version: String,
    /// Per-slot speed learnt from its receipts, CU.
    pub learnt_cu: Option<f64>,
    /// Its reputation here.
    pub reputation: Option<f64>,
    /// Whether it is banned here.
    pub banned: bool,
    /// How it is connected: `direct`, `relayed`, or null when it is not.
    #[serde(default)]
    pub path: Option<Path>,
    /// Its labels, `key=value` (what `job submit --select` matches).
    #[serde(default)]
    pub labels: Vec<String>,
}

/// `GET /v1/domains`: one domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainRow {
    /// The domain.
    pub domain: Domain,
    /// Nodes.
    pub nodes: u32,
    /// Total CU.
    pub total_cu: u64,
    /// Free CU.
    pub free_cu: u64,
    /// Free slots.
    pub free_slots: u32,
    /// Lowest price, micro-credits per CU-second.
    #[serde(rename = "price_min_micros")]
    pub price_min: Price,
    /// Highest price, micro-credits per CU-second.
    #[serde(rename = "price_max_micros")]
    pub price_max: Price,
    /// Best RTT from its summariser, ms.
    pub best_rtt_ms: u64,
    /// Whether this node is in it.
    pub local: bool,
}

/// `PUT /v1/content`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentRef {
    /// The content id.
    pub id: ContentId,
    /// Its size.
    pub size: u64,
}

/// `POST /v1/content/{id}/fetch`: content fetched to this node from its
/// holders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchedContent {
    /// The content.
    pub id: ContentId,
    /// Its size.
    pub size: u64,
    /// Whether it was here already (nothing was fetched).
    pub held: bool,
    /// Holders that sent slices of it.
    pub holders: usize,
    /// Slices it came in.
    pub slices: u64,
    /// Slices asked again of another holder after one failed them (a
    /// holder gone mid-transfer costs its slices in flight, not the
    /// transfer).
    pub retried: u64,
    /// How long the fetch took.
    pub took_ms: u64,
}

/// `POST /v1/datasets`: files already uploaded with `PUT /v1/content`,
/// published as one dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    /// The files (any order; the manifest sorts them by name).
    pub files: Vec<agora_protocol::dataset::DatasetFile>,
}

/// A dataset: what `POST /v1/datasets` published or
/// `GET /v1/datasets/{id}` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetView {
    /// The manifest's id: what `job submit --inputs-id` takes.
    pub id: ContentId,
    /// Its files, in name order.
    pub files: Vec<agora_protocol::dataset::DatasetFile>,
    /// Total bytes of the files.
    pub bytes: u64,
}

impl DatasetView {
    /// The view of a manifest.
    pub fn of(d: agora_protocol::dataset::Dataset) -> DatasetView {
        DatasetView {
            id: d.id(),
            bytes: d.bytes().0,
            files: d.files,
        }
    }
}

/// `POST /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// The job (its module and inputs uploaded first with `PUT /v1/content`).
    pub spec: JobSpec,
    /// Only show the placement it would get.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/jobs` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// The job id (absent for a dry run).
    pub id: Option<JobId>,
    /// The placement plan (dry run only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Vec<TaskExplain>>,
    /// The job's status when the answer left, if the submission asked to
    /// wait for its end (`?wait_ms=`): terminal unless the wait ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<JobStatus>>,
}

/// `GET /v1/jobs`: one job in a line.
pub use agora_market::job::Summary as JobSummary;

/// Task counts by phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseCounts {
    /// Waiting for their input (the same task of the job the inputs come
    /// from).
    #[serde(default)]
    pub waiting: usize,
    /// Waiting to be placed.
    pub pending: usize,
    /// Calls for offers out.
    pub placed: usize,
    /// Running.
    pub running: usize,
    /// Awaiting verification.
    pub verifying: usize,
    /// Verified.
    pub verified: usize,
    /// Failed.
    pub failed: usize,
}

/// Tasks per provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderCount {
    /// The provider.
    pub peer_id: NodeId,
    /// Copies running there now.
    pub running: usize,
    /// Copies whose outcome was accepted.
    pub verified: usize,
    /// Copies that failed or were wrong.
    pub failed: usize,
    /// Micro-credits paid to it for this job.
    #[serde(rename = "paid_micros")]
    pub paid: Credits,
}

/// One copy of a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyStatus {
    /// Attempt.
    pub attempt: u16,
    /// Provider.
    pub provider: NodeId,
    /// State (`accepting`, `agreed`, `reported`, `cancelled`, `failed: …`).
    pub state: String,
    /// Agreed price, micro-credits per CU-second.
    #[serde(rename = "price_micros")]
    pub price: Price,
    /// Amount paid, micro-credits.
    #[serde(rename = "paid_micros")]
    pub paid: Option<Credits>,
    /// Found wrong.
    pub wrong: bool,
    /// A straggler's backup.
    pub backup: bool,
    /// Fuel it reported.
    pub fuel: Option<Fuel>,
    /// Its output id.
    pub output: Option<ContentId>,
    /// Execution time the provider reported, ms.
    #[serde(default)]
    pub exec_ms: Option<u64>,
    /// The provider's signed receipt (hex of its envelope), for `agora verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// Its exit status, as reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// The tail of the guest's stderr the provider sent with the receipt
    /// of a run that did not succeed (its word: not verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The checkpoint its run started from, as its receipt names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<ContentId>,
    /// The fuel it is paid for, once paid: what it added to the checkpoint
    /// it was told to resume from (up to its own last checkpoint, for a
    /// copy whose provider died and whose progress the result used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_fuel: Option<Fuel>,
}

/// One task of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Index.
    pub index: u32,
    /// Name (input file).
    pub name: String,
    /// Phase.
    pub phase: TaskPhase,
    /// The provider(s) whose outcome was accepted.
    pub providers: Vec<NodeId>,
    /// Verified output.
    pub output: Option<ContentId>,
    /// Fuel of the verified outcome.
    pub fuel: Option<Fuel>,
    /// Exit status of the verified outcome.
    pub exit: Option<String>,
    /// Error.
    pub error: Option<String>,
    /// The tail of the guest's stderr from a copy that did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// For a task that failed or has a copy that did not succeed: the
    /// `agora exec` line that runs it locally as the providers did
    /// (`MODULE.wasm` stands for the job's module file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproduce: Option<String>,
    /// Whether the requester re-executed it.
    pub spot_checked: bool,
    /// Every copy.
    pub copies: Vec<CopyStatus>,
    /// The latest checkpoints its providers reported in progress receipts
    /// (oldest first): a copy placed now resumes from the last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<agora_market::job::TaskCheckpoint>,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job.
    pub id: JobId,
    /// Its state: `pending`, `running`, `done`, `failed` or `cancelled`.
    pub state: JobState,
    /// Why it failed.
    pub error: Option<String>,
    /// Submission time.
    pub submitted_at: Timestamp,
    /// End time.
    pub finished_at: Option<Timestamp>,
    /// Wall time so far or in total, ms.
    pub wall_ms: u64,
    /// Tasks.
    pub total: usize,
    /// Counts by phase.
    pub counts: PhaseCounts,
    /// Per provider.
    pub providers: Vec<ProviderCount>,
    /// Every task.
    pub tasks: Vec<TaskStatus>,
    /// The reduced result's id.
    pub reduced: Option<ContentId>,
    /// Micro-credits paid so far.
    #[serde(rename = "spent_micros")]
    pub spent: Credits,
    /// Replication factor.
    pub replicas: u8,
    /// Spot-check rate.
    pub spot_check: f64,
    /// Its latency class (`batch` or `interactive`).
    #[serde(default)]
    pub class: agora_protocol::market::LatencyClass,
    /// Its energy budget, joules, if it has one.
    #[serde(default)]
    pub energy_budget_j: Option<f64>,
    /// The energy its reported copies took, joules: each copy's fuel at its
    /// provider's advertised energy per CU-second.
    #[serde(default)]
    pub energy_j: f64,
    /// Reported copies whose provider's energy rate is unknown (not in
    /// `energy_j`).
    #[serde(default)]
    pub energy_unknown: usize,
    /// Tasks that may fail before the job fails (`--max-failures`).
    #[serde(default)]
    pub max_failures: u32,
    /// The arguments every task ran with (`agora verify --job` re-runs
    /// tasks with them).
    #[serde(default)]
    pub args: Vec<String>,
    /// Memory limit of each task, bytes.
    #[serde(default)]
    pub memory: Bytes,
    /// While no provider can take its tasks: what it waits for, how long
    /// it has waited and how long it may (`--ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// Placement decisions of one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskExplain {
    /// Index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Decisions, oldest first.
    pub decisions: Vec<Decision>,
}

impl TaskExplain {
    /// From recorded decisions.
    pub fn new(index: u32, name: String, decisions: Vec<Decision>) -> TaskExplain {
        TaskExplain {
            index,
            name,
            decisions,
        }
    }
}

/// `GET /v1/jobs/{id}/explain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explain {
    /// The job.
    pub id: JobId,
    /// Per task.
    pub tasks: Vec<TaskExplain>,
}

/// One output of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputRef {
    /// Task index.
    pub index: u32,
    /// Task name (its input file's name).
    pub name: String,
    /// Output id, once the task is verified.
    pub id: Option<ContentId>,
    /// Output size.
    pub size: Option<u64>,
    /// The task's phase.
    #[serde(default = "pending_phase")]
    pub phase: agora_market::job::TaskPhase,
    /// Why a task that is not verified has no output: its error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn pending_phase() -> agora_market::job::TaskPhase {
    agora_market::job::TaskPhase::Pending
}

/// `GET /v1/jobs/{id}/result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    /// The job.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// Per task.
    pub outputs: Vec<OutputRef>,
    /// The reduced result.
    pub reduced: Option<ContentId>,
    /// Error.
    pub error: Option<String>,
}

/// One ledger entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Sequence number.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// `grant`, `paid`, `received` or `checkpoint`.
    pub kind: String,
    /// Amount in micro-credits (always positive; `kind` gives the
    /// direction).
    #[serde(rename = "amount_micros")]
    pub amount: Credits,
    /// The other party.
    pub counterparty: Option<NodeId>,
    /// The task paid for (when the block paid one).
    pub task: Option<String>,
    /// Every task the block paid, one per receipt (empty for a grant or a
    /// checkpoint).
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Fuel paid for.
    pub fuel: Option<Fuel>,
    /// How many receipts the payment paid (0 for a grant): one block may
    /// pay several receipts of one provider.
    #[serde(default)]
    pub receipts: u32,
    /// The block's hash (what the next block links to).
    pub block: String,
}

/// `GET /v1/ledger`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ledger {
    /// Balance in micro-credits (may be negative).
    pub balance_micros: i64,
    /// Total granted by issuers, micro-credits.
    #[serde(rename = "granted_micros")]
    pub granted: Credits,
    /// Total received, micro-credits.
    #[serde(rename = "received_micros")]
    pub received: Credits,
    /// Total paid, micro-credits.
    #[serde(rename = "paid_micros")]
    pub paid: Credits,
    /// The chain's length.
    pub seq: u64,
    /// The hash of its last block (hex; empty before the first).
    pub head: String,
    /// Payments not yet countersigned by their provider: blocks sent, and
    /// vouchers decided that wait (a moment) for their block.
    pub outbox: usize,
    /// The position of the chain's last checkpoint (0: none).
    #[serde(default)]
    pub checkpoint: u64,
    /// The position of its last checkpoint an auditor attested (0: none).
    #[serde(default)]
    pub attested_checkpoint: u64,
    /// The auditors whose attestations of that one this node holds.
    #[serde(default)]
    pub attested_by: Vec<NodeId>,
    /// Newest entries first.
    pub entries: Vec<LedgerEntry>,
}

/// `POST /v1/ledger/grants`: an issuer's signed grant to this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantRequest {
    /// The grant's envelope, hex.
    pub grant: String,
}

/// The answer to a grant: counted once it is on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantResponse {
    /// Micro-credits it created.
    #[serde(rename = "amount_micros")]
    pub amount: Credits,
    /// The balance after it, micro-credits.
    pub balance_micros: i64,
    /// The block that records it.
    pub seq: u64,
}

fn first_block() -> u64 {
    1
}

/// `GET /v1/ledger/audit/{peer}`: a chain fetched and checked link by link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditReport {
    /// Whose chain.
    pub peer_id: NodeId,
    /// Blocks checked: through this position.
    pub blocks: u64,
    /// Where the audit started: block 1, or a checkpoint of the chain that
    /// an auditor this node trusts (itself, an issuer, a configured
    /// auditor) attested, whose summary it took instead of the blocks
    /// before.
    #[serde(default = "first_block")]
    pub from_block: u64,
    /// Its audited balance in micro-credits.
    pub balance_micros: i64,
    /// Micro-credits granted to it by issuers this node trusts.
    #[serde(rename = "granted_micros")]
    pub granted: Credits,
    /// Micro-credits it received.
    #[serde(rename = "received_micros")]
    pub received: Credits,
    /// Micro-credits it paid.
    #[serde(rename = "paid_micros")]
    pub paid: Credits,
    /// Its balance counting only backed credits, in micro-credits: credits
    /// it received count once the payer's chain, audited in turn, shows the
    /// payer held them (SPEC.md §8.6). What providers lend against.
    pub backed_micros: i64,
    /// Micro-credits it received from payers that never held them
    /// (minted).
    #[serde(rename = "unbacked_micros")]
    pub unbacked: Credits,
    /// Micro-credits it received whose payers' chains could not be checked
    /// yet.
    #[serde(rename = "unsettled_micros")]
    pub unsettled: Credits,
}

/// `GET /v1/owner`, and the answer to pausing and resuming: whether the
/// node takes work, and why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerState {
    /// Whether it takes new work now.
    pub accepting: bool,
    /// Why not, when it does not (the first reason that holds).
    pub not_accepting: Option<String>,
    /// Whether its owner paused providing.
    pub paused: bool,
    /// Until when, ms since the epoch; null while paused until resumed.
    pub paused_until: Option<Timestamp>,
    /// Tasks running here now.
    pub running: u32,
    /// Tasks accepted and not finished (running ones included).
    pub queued: u32,
    /// Runs suspended in place right now (paused, or a limit holds).
    #[serde(default)]
    pub suspended: u32,
    /// The owner's limits in force.
    #[serde(default)]
    pub limits: agora_market::limits::OwnerLimits,
    /// The same, one phrase each.
    #[serde(default)]
    pub limits_in_words: Vec<String>,
    /// The limit holding the node now (`hours`, `weekdays`,
    /// `stop_on_battery`, `min_battery`, `max_temp`), if one does; its
    /// reason in words is `not_accepting`.
    #[serde(default)]
    pub held_by: Option<String>,
    /// Limits set that this machine cannot read, each with why.
    #[serde(default)]
    pub unavailable: Vec<String>,
    /// The tasks accepted here and not yet reported, running ones first.
    #[serde(default)]
    pub tasks: Vec<HeldTask>,
}

/// A task a provider accepted: what `GET /v1/owner` lists as running or
/// waiting on this machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldTask {
    /// The task (`JOB/INDEX`).
    pub task: String,
    /// The copy's attempt.
    pub attempt: u16,
    /// Whose it is.
    pub requester: NodeId,
    /// `queued`, `running` or `done` (its receipt on the way).
    pub stage: String,
    /// Whether its run is suspended in place now.
    pub suspended: bool,
    /// The agreed price, micro-credits per CU-second.
    #[serde(rename = "price_micros")]
    pub price: Price,
    /// Its fuel limit.
    pub fuel: Fuel,
    /// Its memory limit, bytes.
    pub memory: Bytes,
    /// When its receipt is due, ms since the epoch.
    pub due: Timestamp,
}

/// `GET /v1/jobs/{id}/logs[?task=N]`: what the guests of a job's copies
/// wrote to stderr while they ran, as their providers sent it (live logs:
/// within about a second of the guest writing). The newest 32 KiB of each
/// copy; not signed, not verified, never part of a result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobLogs {
    /// One entry per copy that sent any, in task and attempt order.
    pub copies: Vec<CopyLogView>,
}

/// One copy's live log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyLogView {
    /// The task's index.
    pub task: u32,
    /// The copy's attempt.
    pub attempt: u16,
    /// Who runs it.
    pub provider: NodeId,
    /// Where `text` starts in the guest's stderr, bytes.
    pub start: u64,
    /// Where it ends.
    pub end: u64,
    /// The bytes, as UTF-8 (invalid sequences replaced).
    pub text: String,
}

/// `GET /v1/owner/history`: what the node did for others, day by day
/// (UTC), and the last tasks it ran. Also read from a stopped node's data
/// dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerHistory {
    /// The days asked for, newest first.
    pub days: Vec<agora_market::history::Day>,
    /// The last tasks run, newest first.
    pub tasks: Vec<agora_market::history::RanTask>,
}

/// `POST /v1/owner/pause`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PauseRequest {
    /// For how long, ms; absent: until resumed.
    #[serde(default)]
    pub for_ms: Option<u64>,
}

/// An API error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// Formats a signed micro-credit amount.
pub fn format_balance(micros: i64) -> String {
    let c = Credits(micros.unsigned_abs()).to_string();
    if micros < 0 { format!("-{c}") } else { c }
}

/// Counts per phase.
pub fn count_phases<'a>(phases: impl Iterator<Item = &'a TaskPhase>) -> PhaseCounts {
    let mut c = PhaseCounts::default();
    for p in phases {
        match p {
            TaskPhase::Waiting => c.waiting += 1,
            TaskPhase::Pending => c.pending += 1,
            TaskPhase::Placed => c.placed += 1,
            TaskPhase::Running => c.running += 1,
            TaskPhase::Verifying => c.verifying += 1,
            TaskPhase::Verified => c.verified += 1,
            TaskPhase::Failed => c.failed += 1,
        }
    }
    c
}

/// Metric lines in the Prometheus text format.
#[derive(Debug, Default)]
pub struct Metrics {
    lines: BTreeMap<String, (String, Vec<(String, f64)>)>,
}

impl Metrics {
    /// Adds a sample of metric `name` (`kind`: counter or gauge) with labels.
    pub fn add(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let e = self.lines.entry(name.to_owned()).or_insert_with(|| {
            (
                format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"),
                Vec::new(),
            )
        });
        let l = if labels.is_empty() {
            String::new()
        } else {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('"', "'")))
                .collect();
            format!("{{{}}}", inner.join(","))
        };
        e.1.push((l, value));
    }

    /// The text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, (head, samples)) in &self.lines {
            out.push_str(head);
            for (labels, v) in samples {
                out.push_str(&format!("{name}{labels} {v}\n"));
            }
        }
        out
    }
}

//! What an engine says and hears besides messages: the outputs a host
//! carries out ([`Output`], [`Work`]), what a turn hands over ([`Turn`]),
//! what running a module produced ([`Ran`]), and the ids that route
//! answers back ([`RequestId`], [`ReplyId`], [`FrameId`]).

use std::sync::Arc;

use agora_protocol::execution::{ExitStatus, Receipt};
use agora_protocol::market::{Assignment, Limits, args_digest};
use agora_protocol::rpc::{MarketRequest, MarketResponse};
use agora_protocol::units::{Bytes, Fuel, Timestamp};
use agora_protocol::{ContentId, JobId, MessageId, NodeId, TaskId};

#[allow(unused_imports)] // for the docs' links
use super::Engine;
use crate::records::Writes;

/// Identifies one of the engine's own requests, so that its answer finds
/// its way back ([`Engine::on_answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies an inbound request's reply channel, which the host keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyId(pub u64);

/// The batch an inbound request came in with others (SPEC.md §4.3),
/// numbered by the host: the batch's answer goes once every part is
/// answered, so the receipts of its orders are signed together when the
/// last of them has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameId(pub u64);

/// Content that arrived inline with an acceptance, kept for its run.
pub type Inline = Vec<(ContentId, Arc<Vec<u8>>)>;

/// What running a module produced, as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// The output's id.
    pub output: ContentId,
    /// The output's size.
    pub output_size: Bytes,
    /// Fuel used.
    pub fuel: Fuel,
    /// How it ended.
    pub exit: ExitStatus,
    /// When execution started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// The output bytes, when small enough to travel with the receipt
    /// (a larger output is stored by the host before it reports).
    pub inline: Option<Vec<u8>>,
    /// The tail of the guest's stderr when the run did not succeed (at most
    /// [`agora_protocol::rpc::MAX_STDERR_TAIL`] bytes), sent with the
    /// receipt so that the developer sees why.
    pub stderr: Vec<u8>,
    /// The checkpoint the run started from (its fuel is in `fuel`).
    pub resumed: Option<ContentId>,
    /// The fuel of the checkpoint the assignment resumed from (what the
    /// requester does not pay this run for).
    pub billed_from: Fuel,
}

impl Ran {
    /// The receipt of this run of `assignment`, under `agreement` for
    /// `requester`.
    pub fn receipt(&self, assignment: &Assignment, agreement: MessageId, requester: NodeId) -> Receipt {
        Receipt {
            agreement,
            task: assignment.task,
            requester,
            module: assignment.module,
            input: assignment.input,
            args: args_digest(&assignment.args),
            seed: assignment.seed,
            fuel_limit: assignment.limits.fuel,
            output: self.output,
            output_size: self.output_size,
            fuel_used: self.fuel,
            exit: self.exit.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            resumed: self.resumed,
        }
    }

    /// The outcome replicas and checks compare.
    pub fn outcome(&self) -> (ContentId, Fuel, ExitStatus) {
        (self.output, self.fuel, self.exit.clone())
    }
}

/// Work the host runs and reports back.
#[derive(Debug, Clone)]
pub enum Work {
    /// Run an accepted task; report with [`Engine::on_executed`].
    Execute {
        /// The agreement.
        agreement: MessageId,
        /// Who asked (and holds the content).
        requester: NodeId,
        /// What to run.
        assignment: Assignment,
        /// Content that came inline with the acceptance.
        inline: Inline,
        /// Its latency class: an interactive task started beyond the
        /// slots pauses a running batch task while it runs.
        class: agora_protocol::market::LatencyClass,
        /// A checkpoint of this run's own the requester acknowledged
        /// before a restart: the run goes on from it rather than from the
        /// assignment's start.
        restart_from: Option<ContentId>,
    },
    /// Keep content that arrived inline (no report).
    Keep {
        /// Its id (checked).
        id: ContentId,
        /// The bytes.
        bytes: Arc<Vec<u8>>,
    },
    /// Store a receipt's inline output, durably before anything this
    /// engine answers or sends after its turn's writes (the receipt's `Ack`,
    /// the payment); report with [`Engine::on_output_stored`].
    StoreOutput {
        /// The pending receipt.
        token: u64,
        /// Its id (checked).
        id: ContentId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Fetch a copy's output; report with [`Engine::on_fetched`].
    Fetch {
        /// The task.
        task: TaskId,
        /// The copy.
        attempt: u16,
        /// From whom.
        from: NodeId,
        /// The output.
        output: ContentId,
    },
    /// Re-execute a task here; report with [`Engine::on_spot_checked`].
    SpotCheck {
        /// The task.
        task: TaskId,
        /// The copy checked.
        attempt: u16,
        /// What the copies ran.
        assignment: Assignment,
    },
    /// Run a job's reduce module over its outputs (framed in task order);
    /// report with [`Engine::on_reduced`].
    Reduce {
        /// The job.
        job: JobId,
        /// The reduce module.
        module: ContentId,
        /// The task outputs, in order.
        outputs: Vec<ContentId>,
        /// Its arguments.
        args: Vec<String>,
        /// Its limits.
        limits: Limits,
        /// Its seed.
        seed: u64,
    },
    /// Re-execute the computation of a fraud proof, with module and input
    /// from its publisher; report with [`Engine::on_fraud_checked`].
    CheckFraud {
        /// The proof's id.
        proof: MessageId,
        /// Who published it (and holds the content).
        publisher: NodeId,
        /// What to run.
        assignment: Assignment,
    },
    /// Ask whether a peer still answers; report with [`Engine::on_probe`].
    Probe {
        /// The peer.
        peer: NodeId,
    },
    /// Measure capacity again; report with [`Engine::on_calibrated`].
    Calibrate,
    /// Remove stored content nothing keeps (see the node's store); report
    /// whether what must be kept exceeds the owner's cap with
    /// [`Engine::on_disk_full`].
    Collect {
        /// Content to keep whatever its age: what work needs now, and what
        /// is pinned for the user.
        keep: std::collections::HashSet<ContentId>,
    },
}

/// What the host must do.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send a market request; report its answer with [`Engine::on_answer`].
    Send {
        /// For the answer.
        id: RequestId,
        /// The peer.
        to: NodeId,
        /// The request.
        request: MarketRequest,
        /// Content to read from the store and attach to an acceptance.
        attach: Vec<ContentId>,
    },
    /// Answer an inbound request.
    Respond {
        /// The reply channel.
        reply: ReplyId,
        /// The answer.
        response: MarketResponse,
    },
    /// Run work.
    Run(Work),
    /// Publish on a gossip topic.
    Publish {
        /// The topic.
        topic: String,
        /// The bytes.
        data: Vec<u8>,
    },
    /// An audit the owner asked for ([`Engine::audit`]) ended.
    Audited {
        /// Whose chain.
        owner: NodeId,
        /// What it found, or why it could not finish.
        result: Result<super::credits::AuditReport, String>,
    },
    /// Stop a running execution now (its task was cancelled); its result,
    /// if any, is reported as usual and ignored.
    Interrupt {
        /// The agreement whose run stops.
        agreement: MessageId,
    },
    /// Tell the network where a peer can be reached, and dial it.
    Locate {
        /// The peer.
        peer: NodeId,
        /// Its addresses (multiaddrs as text).
        addrs: Vec<String>,
        /// Dial it now.
        dial: bool,
    },
}

/// What a turn produced.
#[derive(Debug, Default)]
pub struct Turn {
    /// Record writes, to apply atomically.
    pub writes: Writes,
    /// Whether the writes must be made durable (before `after` runs, or
    /// before a submitter hears of its job); other writes are only
    /// bookkeeping: lost in a crash, they cost a re-placement.
    pub flush: bool,
    /// Outputs to carry out at once.
    pub now: Vec<Output>,
    /// Outputs to carry out once `writes` are durable.
    pub after: Vec<Output>,
}

/// How a gossip message was found, for gossipsub's validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it.
    Accept,
    /// Not invalid, but not worth forwarding (a replay).
    Ignore,
    /// Invalid: penalise the sender.
    Reject,
}

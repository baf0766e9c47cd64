//! Negotiation messages: call for offers, offer, accept (carrying the task
//! assignment), agreement and cancel.
//!
//! One round places a task (SPEC.md §8.1):
//!
//! ```text
//! requester                                   provider
//!   CallForOffers  ──────────────────────────▶  admission control
//!                  ◀──────────────────────────  Offer | Decline
//!   Accept{Assignment} (+ inline content) ───▶  reserve slot, persist
//!                  ◀──────────────────────────  Agreement | Decline
//!                  ◀──────────────────────────  Receipt (+ output)   [later]
//!   Voucher        ──────────────────────────▶  ledger
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::envelope::{Payload, PayloadType};
use crate::id::{ContentId, MessageId, NodeId, TaskId};
use crate::limits::{MAX_ARG_LEN, MAX_ARGS};
use crate::units::{Bytes, EnergyRate, Fuel, Millis, Price, Timestamp};
use crate::wire::{Decode, DecodeError, Encode, Reader, Writer};
use crate::wire_struct;

/// How a task weighs time against cost (the white paper's latency
/// sensitivity).
///
/// An `interactive` task is placed where it finishes soonest within its
/// deadline, whatever the price up to the requester's maximum, and a
/// provider starts it before any `batch` task waiting in its queue. A
/// `batch` task goes where it is cheapest and fastest, whatever the
/// round-trip time. On the wire: one byte, 0 for batch, 1 for interactive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyClass {
    /// Throughput work: cheapest and fastest.
    #[default]
    Batch,
    /// A person waits for it: soonest, and ahead of batch work.
    Interactive,
}

impl LatencyClass {
    /// Its name, as the command line and JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            LatencyClass::Batch => "batch",
            LatencyClass::Interactive => "interactive",
        }
    }
}

impl std::fmt::Display for LatencyClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LatencyClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "batch" => Ok(LatencyClass::Batch),
            "interactive" => Ok(LatencyClass::Interactive),
            other => Err(format!("`{other}` is not a latency class: batch or interactive")),
        }
    }
}

impl Encode for LatencyClass {
    fn encode(&self, w: &mut Writer) {
        w.u8(match self {
            LatencyClass::Batch => 0,
            LatencyClass::Interactive => 1,
        })
    }
}

impl Decode for LatencyClass {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(LatencyClass::Batch),
            1 => Ok(LatencyClass::Interactive),
            tag => Err(DecodeError::InvalidTag {
                field: "latency class",
                tag,
            }),
        }
    }
}

/// What a task needs: the white paper's task features (intensity, latency,
/// data) plus the requester's constraints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// Estimated fuel (computational intensity).
    pub fuel: Fuel,
    /// Memory the task may use.
    pub memory: Bytes,
    /// Time from placement by which the receipt is needed (latency).
    pub deadline: Millis,
    /// Highest acceptable price.
    pub max_price: Price,
    /// How many distinct providers run this task.
    pub replication: u8,
    /// Only providers inside this domain.
    pub domain: Option<Domain>,
    /// Highest acceptable declared energy cost.
    pub max_energy: Option<EnergyRate>,
    /// The module (data dependency).
    pub module: ContentId,
    /// Its size, for transfer-time estimates.
    pub module_size: Bytes,
    /// The input (data dependency).
    pub input: ContentId,
    /// Its size.
    pub input_size: Bytes,
    /// The fuel limit the acceptance will carry (the task's `Limits::fuel`).
    pub fuel_limit: Fuel,
    /// The largest output the acceptance will allow (`Limits::max_output`).
    pub max_output: Bytes,
    /// Interactive or batch.
    #[serde(default)]
    pub class: LatencyClass,
}

wire_struct!(Requirements {
    fuel,
    memory,
    deadline,
    max_price,
    replication,
    domain,
    max_energy,
    module,
    module_size,
    input,
    input_size,
    fuel_limit,
    max_output,
    class
});

/// A requester asks a provider what it would charge to run a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallForOffers {
    /// The task.
    pub task: TaskId,
    /// Which placement attempt of the task this is (re-placements and
    /// replicas count up).
    pub attempt: u16,
    /// What it needs.
    pub requirements: Requirements,
}

wire_struct!(CallForOffers {
    task,
    attempt,
    requirements
});

impl Payload for CallForOffers {
    const TYPE: PayloadType = PayloadType::CallForOffers;
    const DOMAIN: &'static str = "agora/1/market/call-for-offers";
    const MAX_LIFETIME: Duration = Duration::from_secs(30);
}

/// The `offer` an [`Accept`] names when it travels in an order
/// ([`crate::rpc::MarketRequest::Order`]), with no offer before it: the
/// hash of the requirements it was placed under, so that the requester's
/// signature binds them.
pub fn order_id(requirements: &Requirements) -> MessageId {
    let mut w = Writer::new();
    w.raw(b"agora/1/market/order");
    requirements.encode(&mut w);
    MessageId::of(&w.into_bytes())
}

/// A provider's signed offer. It expires with its envelope (a few seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The call it answers.
    pub call: MessageId,
    /// The task.
    pub task: TaskId,
    /// The price the provider will charge.
    pub price: Price,
    /// Expected wait before the task starts (queue).
    pub expected_start: Millis,
    /// Expected run time at the provider's measured speed.
    pub expected_run: Millis,
    /// Whether the provider already holds the module (no transfer needed).
    pub has_module: bool,
    /// Whether the provider already holds the input.
    pub has_input: bool,
    /// The provider's energy per CU-second (its advert's; 0: unknown), so
    /// that a requester that holds no advert of it (a contact from a
    /// domain summary) can keep an energy budget and account for it.
    pub energy: EnergyRate,
}

wire_struct!(Offer {
    call,
    task,
    price,
    expected_start,
    expected_run,
    has_module,
    has_input,
    energy,
});

impl Payload for Offer {
    const TYPE: PayloadType = PayloadType::Offer;
    const DOMAIN: &'static str = "agora/1/market/offer";
    const MAX_LIFETIME: Duration = Duration::from_secs(30);
}

/// Resource limits a task runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel limit: running out is [`crate::execution::ExitStatus::OutOfFuel`].
    pub fuel: Fuel,
    /// Linear-memory limit.
    pub memory: Bytes,
    /// Wall-clock limit of one execution.
    pub timeout: Millis,
    /// Largest output accepted.
    pub max_output: Bytes,
}

wire_struct!(Limits {
    fuel,
    memory,
    timeout,
    max_output
});

/// What to run: the task assignment, carried inside an [`Accept`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task.
    pub task: TaskId,
    /// The placement attempt.
    pub attempt: u16,
    /// The module to run.
    pub module: ContentId,
    /// Its stdin.
    pub input: ContentId,
    /// Its arguments (`argv[1..]`).
    pub args: Vec<Arg>,
    /// Its limits.
    pub limits: Limits,
    /// Seed of the guest's random number generator.
    pub seed: u64,
    /// The checkpoint to resume from (none: run from the beginning); the
    /// provider gets it as content, like the module and input.
    pub resume: Option<ContentId>,
}

/// One task argument, at most [`MAX_ARG_LEN`] bytes of UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Arg(pub String);

impl Encode for Arg {
    fn encode(&self, w: &mut Writer) {
        self.0.encode(w)
    }
}
impl Decode for Arg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Arg(crate::wire::Limited::decode_limited(r, MAX_ARG_LEN, "arg")?))
    }
}

wire_struct!(Assignment {
    task,
    attempt,
    module,
    input,
    args < MAX_ARGS,
    limits,
    seed,
    resume,
});

impl Assignment {
    /// Digest of the arguments, as receipts carry it.
    pub fn args_digest(&self) -> ContentId {
        args_digest(&self.args)
    }
}

/// The digest receipts carry for a list of arguments: blake3 of its encoding.
pub fn args_digest(args: &[Arg]) -> ContentId {
    let mut w = Writer::new();
    args.to_vec().encode(&mut w);
    ContentId::of(&w.into_bytes())
}

/// The requester takes an offer and assigns the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The offer taken.
    pub offer: MessageId,
    /// The price agreed (the offer's).
    pub price: Price,
    /// What to run.
    pub assignment: Assignment,
}

wire_struct!(Accept {
    offer,
    price,
    assignment
});

impl Payload for Accept {
    const TYPE: PayloadType = PayloadType::Accept;
    const DOMAIN: &'static str = "agora/1/market/accept";
    const MAX_LIFETIME: Duration = Duration::from_secs(30);
}

/// The provider's signed commitment to run an accepted task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// The acceptance it confirms.
    pub accept: MessageId,
    /// The task.
    pub task: TaskId,
    /// The requester.
    pub requester: NodeId,
    /// The price.
    pub price: Price,
    /// When the receipt is due at the latest.
    pub due: Timestamp,
}

wire_struct!(Agreement {
    accept,
    task,
    requester,
    price,
    due
});

impl Payload for Agreement {
    const TYPE: PayloadType = PayloadType::Agreement;
    const DOMAIN: &'static str = "agora/1/market/agreement";
    const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
}

/// Why an agreement is withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelReason {
    /// The user cancelled the job.
    JobCancelled,
    /// Another copy of the task finished first.
    Superseded,
    /// The agreement's deadline passed.
    Overdue,
    /// Sent by the provider: it stops (its node shuts down) and will not
    /// run the task; the requester places it again at once.
    Withdrawn,
}

impl Encode for CancelReason {
    fn encode(&self, w: &mut Writer) {
        w.u8(match self {
            CancelReason::JobCancelled => 0,
            CancelReason::Superseded => 1,
            CancelReason::Overdue => 2,
            CancelReason::Withdrawn => 3,
        })
    }
}

impl Decode for CancelReason {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(CancelReason::JobCancelled),
            1 => Ok(CancelReason::Superseded),
            2 => Ok(CancelReason::Overdue),
            3 => Ok(CancelReason::Withdrawn),
            tag => Err(DecodeError::InvalidTag {
                field: "cancel reason",
                tag,
            }),
        }
    }
}

/// The requester withdraws an agreement: the provider stops the task and is
/// not paid for it. Or, with [`CancelReason::Withdrawn`], the provider
/// withdraws it: it will not run the task, and the requester places it
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// The agreement withdrawn.
    pub agreement: MessageId,
    /// The task.
    pub task: TaskId,
    /// Why.
    pub reason: CancelReason,
}

wire_struct!(Cancel {
    agreement,
    task,
    reason
});

impl Payload for Cancel {
    const TYPE: PayloadType = PayloadType::Cancel;
    const DOMAIN: &'static str = "agora/1/market/cancel";
    const MAX_LIFETIME: Duration = Duration::from_secs(60);
}

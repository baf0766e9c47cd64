//! Execution results: the exit status of a task and the signed receipt.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::envelope::{Payload, PayloadType};
use crate::id::{ContentId, MessageId, NodeId, TaskId};
use crate::limits::MAX_MESSAGE_LEN;
use crate::units::{Bytes, Fuel, Timestamp};
use crate::wire::{Decode, DecodeError, Encode, Limited, Reader, Writer};
use crate::wire_struct;

/// How a task's execution ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum ExitStatus {
    /// `_start` returned or the guest called `proc_exit(0)`.
    Success,
    /// The guest called `proc_exit` with a non-zero code.
    ExitCode(u32),
    /// The fuel limit was reached.
    OutOfFuel,
    /// The wall-clock limit was reached.
    Deadline,
    /// The guest needed more memory than its limit.
    MemoryLimit,
    /// The guest exhausted its stack.
    StackOverflow,
    /// The guest trapped (message truncated to [`MAX_MESSAGE_LEN`]).
    Trap(String),
    /// The guest wrote more output than its limit.
    OutputTooLarge,
    /// The module could not be compiled or linked.
    InvalidModule(String),
}

impl ExitStatus {
    /// Whether every honest provider reaches the same status (and fuel) on
    /// the same module, input and seed. Wall-clock limits depend on the
    /// provider's speed, and stack overflows on its native stack size and
    /// compiler: a disagreement there is not evidence of cheating.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, ExitStatus::Deadline | ExitStatus::StackOverflow)
    }

    /// Whether the task succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, ExitStatus::Success)
    }

    fn tag(&self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::ExitCode(_) => 1,
            ExitStatus::OutOfFuel => 2,
            ExitStatus::Deadline => 3,
            ExitStatus::MemoryLimit => 4,
            ExitStatus::StackOverflow => 5,
            ExitStatus::Trap(_) => 6,
            ExitStatus::OutputTooLarge => 7,
            ExitStatus::InvalidModule(_) => 8,
        }
    }

    /// Truncates a message to [`MAX_MESSAGE_LEN`] bytes on a char boundary.
    pub fn clip(message: &str) -> String {
        if message.len() <= MAX_MESSAGE_LEN {
            return message.to_owned();
        }
        let mut end = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message[..end].to_owned()
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Success => f.write_str("success"),
            ExitStatus::ExitCode(c) => write!(f, "exit code {c}"),
            ExitStatus::OutOfFuel => f.write_str("out of fuel"),
            ExitStatus::Deadline => f.write_str("deadline exceeded"),
            ExitStatus::MemoryLimit => f.write_str("memory limit reached"),
            ExitStatus::StackOverflow => f.write_str("stack overflow"),
            ExitStatus::Trap(m) => write!(f, "trap: {m}"),
            ExitStatus::OutputTooLarge => f.write_str("output too large"),
            ExitStatus::InvalidModule(m) => write!(f, "invalid module: {m}"),
        }
    }
}

impl Encode for ExitStatus {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            ExitStatus::ExitCode(c) => w.u32(*c),
            ExitStatus::Trap(m) | ExitStatus::InvalidModule(m) => m.encode(w),
            _ => {}
        }
    }
}

impl Decode for ExitStatus {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => ExitStatus::Success,
            1 => ExitStatus::ExitCode(r.u32()?),
            2 => ExitStatus::OutOfFuel,
            3 => ExitStatus::Deadline,
            4 => ExitStatus::MemoryLimit,
            5 => ExitStatus::StackOverflow,
            6 => ExitStatus::Trap(String::decode_limited(r, MAX_MESSAGE_LEN, "trap message")?),
            7 => ExitStatus::OutputTooLarge,
            8 => ExitStatus::InvalidModule(String::decode_limited(r, MAX_MESSAGE_LEN, "module error")?),
            tag => {
                return Err(DecodeError::InvalidTag {
                    field: "exit status",
                    tag,
                });
            }
        })
    }
}

/// A provider's signed account of one execution.
///
/// Everything that determines the result is named by hash (module, input,
/// arguments, seed, fuel limit), so anyone holding the content can re-execute
/// and check `output`, `fuel_used` and `exit` bit for bit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The agreement fulfilled (its envelope id). Zero for local runs.
    pub agreement: MessageId,
    /// The task.
    pub task: TaskId,
    /// Who asked for it (the provider itself for local runs).
    pub requester: NodeId,
    /// blake3 of the module.
    pub module: ContentId,
    /// blake3 of the input (stdin).
    pub input: ContentId,
    /// Digest of the arguments ([`crate::market::args_digest`]).
    pub args: ContentId,
    /// The guest's random seed.
    pub seed: u64,
    /// The fuel limit it ran under.
    pub fuel_limit: Fuel,
    /// blake3 of the output (stdout).
    pub output: ContentId,
    /// Size of the output.
    pub output_size: Bytes,
    /// Fuel consumed.
    pub fuel_used: Fuel,
    /// How it ended.
    pub exit: ExitStatus,
    /// When execution started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// The checkpoint the run started from (none: the beginning). Its
    /// fuel is included in `fuel_used`.
    pub resumed: Option<ContentId>,
}

wire_struct!(Receipt {
    agreement,
    task,
    requester,
    module,
    input,
    args,
    seed,
    fuel_limit,
    output,
    output_size,
    fuel_used,
    exit,
    started_at,
    finished_at,
    resumed,
});

impl Payload for Receipt {
    const TYPE: PayloadType = PayloadType::Receipt;
    const DOMAIN: &'static str = "agora/1/execution/receipt";
    const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
}

impl Receipt {
    /// What re-execution must reproduce: two honest receipts for the same
    /// inputs have equal outcomes.
    pub fn outcome(&self) -> (ContentId, Fuel, &ExitStatus) {
        (self.output, self.fuel_used, &self.exit)
    }

    /// Whether two receipts ran the same computation (same module, input,
    /// arguments, seed and fuel limit, from the same checkpoint) and so
    /// must agree.
    pub fn same_computation(&self, other: &Receipt) -> bool {
        self.module == other.module
            && self.input == other.input
            && self.args == other.args
            && self.seed == other.seed
            && self.fuel_limit == other.fuel_limit
            && self.resumed == other.resumed
    }
}

/// The most bytes of state a guest may save in one checkpoint.
pub const MAX_CHECKPOINT_STATE: usize = 512 * 1024;
/// The most output a task may have written when it checkpoints (the
/// checkpoint carries it; with the state, it fits in one message's inline
/// content).
pub const MAX_CHECKPOINT_OUTPUT: usize = 256 * 1024;

/// A long task's saved progress: the state its guest saved (`agora`
/// `checkpoint`, GUEST-CONTRACT.md) and where the task's world stood then.
/// It travels as content, named by the blake3 hash of its encoding; a run
/// that resumes from it starts a fresh instance whose `restore` hands the
/// guest `state` and puts stdin, stdout, the random stream and the clocks
/// back where they were. It names the computation it belongs to, so it
/// cannot be resumed under another (SPEC.md §8.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// blake3 of the module.
    pub module: ContentId,
    /// blake3 of the input.
    pub input: ContentId,
    /// Digest of the arguments.
    pub args: ContentId,
    /// The guest's random seed.
    pub seed: u64,
    /// The fuel limit of the task.
    pub fuel_limit: Fuel,
    /// How many checkpoints the task has taken, this one included.
    pub index: u32,
    /// The checkpoint the run that took this one started from.
    pub from: Option<ContentId>,
    /// Fuel used from the start of the task to this checkpoint, across
    /// every run of the chain.
    pub fuel_used: Fuel,
    /// The task's virtual time, in nanoseconds.
    pub time: u64,
    /// Bytes of the random stream drawn.
    pub random: u64,
    /// Bytes of stdin read.
    pub input_read: u64,
    /// Everything written to stdout so far.
    pub output: crate::wire::Blob,
    /// What the guest saved.
    pub state: crate::wire::Blob,
}

wire_struct!(Checkpoint {
    module,
    input,
    args,
    seed,
    fuel_limit,
    index,
    from,
    fuel_used,
    time,
    random,
    input_read,
    output < MAX_CHECKPOINT_OUTPUT,
    state < MAX_CHECKPOINT_STATE,
});

impl Checkpoint {
    /// Its content id: blake3 of its encoding.
    pub fn id(&self) -> ContentId {
        ContentId::of(&self.to_bytes())
    }

    /// Whether it belongs to the computation `receipt`-like fields name.
    pub fn belongs_to(
        &self,
        module: &ContentId,
        input: &ContentId,
        args: &ContentId,
        seed: u64,
        fuel_limit: Fuel,
    ) -> bool {
        self.module == *module
            && self.input == *input
            && self.args == *args
            && self.seed == seed
            && self.fuel_limit == fuel_limit
    }
}

/// A provider's signed word that a task it runs reached a checkpoint: the
/// progress receipt. The requester keeps the checkpoint, and a copy placed
/// after this one fails resumes from it; the final receipt names the
/// checkpoint its run started from, so the receipts of a task form a chain
/// from its start to its result (SPEC.md §8.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The agreement being fulfilled.
    pub agreement: MessageId,
    /// The task.
    pub task: TaskId,
    /// Who asked for it.
    pub requester: NodeId,
    /// The checkpoint the run started from (none: the beginning).
    pub from: Option<ContentId>,
    /// The checkpoint reached (its content id).
    pub checkpoint: ContentId,
    /// Its index.
    pub index: u32,
    /// Fuel used from the start of the task to it.
    pub fuel_used: Fuel,
}

wire_struct!(Progress {
    agreement,
    task,
    requester,
    from,
    checkpoint,
    index,
    fuel_used,
});

impl Payload for Progress {
    const TYPE: PayloadType = PayloadType::Progress;
    const DOMAIN: &'static str = "agora/1/execution/progress";
    const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
}

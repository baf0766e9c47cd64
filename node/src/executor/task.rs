//! What a run takes and what it gives back.
//!
//! A [`Task`] borrows the guest's stdin and arguments and carries its
//! limits and the seed of its random stream: with the module, everything
//! that determines the run. [`Executor::run`](super::Executor::run) turns
//! it into an [`Outcome`]: the result, the captured stdout and stderr, the
//! fuel used and when the run started and ended. [`Outcome::ran`] is the
//! run as the market sees it (the output's id and size instead of its
//! bytes), which the market's engine, and [`receipt()`](super::receipt),
//! turn into a receipt.

use std::sync::Arc;
use std::time::Duration;

use agora_protocol::execution::Checkpoint;

use agora_protocol::execution::ExitStatus;
use agora_protocol::id::ContentId;
use agora_protocol::market::Limits;
use agora_protocol::units::{Bytes, Fuel, Timestamp};

use super::{CheckpointSink, TaskError};

/// One execution request.
#[derive(Debug, Clone)]
pub struct Task<'a> {
    /// The guest's stdin.
    pub input: &'a [u8],
    /// `argv[1..]`.
    pub args: &'a [String],
    /// Fuel, memory, time and output limits.
    pub limits: Limits,
    /// Seed of the guest's random stream.
    pub seed: u64,
    /// The checkpoint to resume from (none: start from the beginning). It
    /// must belong to this task ([`Checkpoint::belongs_to`]).
    pub resume: Option<Arc<Checkpoint>>,
    /// Where the run's checkpoints go as the guest takes them (none: they
    /// are not kept).
    pub checkpoints: Option<CheckpointSink>,
}

/// How a run ended and what it produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Success, or why not.
    pub result: Result<(), TaskError>,
    /// The guest's stdout (up to the output limit).
    pub output: Vec<u8>,
    /// The guest's stderr (up to [`Config::max_stderr`](super::Config::max_stderr)).
    pub stderr: Vec<u8>,
    /// Fuel consumed (the limit, when it ran out).
    pub fuel_used: Fuel,
    /// When the run started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Wall time of the run, instantiation included.
    pub wall: Duration,
    /// The checkpoint the run started from (its fuel is in `fuel_used`).
    pub resumed: Option<ContentId>,
}

impl Outcome {
    /// The outcome of a run that never started (a module refused at load):
    /// a result too, the same on every machine.
    pub fn failed(error: TaskError) -> Outcome {
        let now = Timestamp::from_system(std::time::SystemTime::now());
        Outcome {
            result: Err(error),
            output: Vec::new(),
            stderr: Vec::new(),
            fuel_used: Fuel(0),
            started_at: now,
            finished_at: now,
            wall: Duration::ZERO,
            resumed: None,
        }
    }

    /// The status a receipt reports.
    pub fn exit_status(&self) -> ExitStatus {
        match &self.result {
            Ok(()) => ExitStatus::Success,
            Err(e) => e.exit_status(),
        }
    }

    /// The content id of the output.
    pub fn output_id(&self) -> ContentId {
        ContentId::of(&self.output)
    }

    /// The run as receipts report it (the output bytes left out).
    pub fn ran(&self) -> agora_market::engine::Ran {
        agora_market::engine::Ran {
            output: self.output_id(),
            output_size: Bytes(self.output.len() as u64),
            fuel: self.fuel_used,
            exit: self.exit_status(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            inline: None,
            stderr: self.stderr_tail(),
            resumed: self.resumed,
            billed_from: agora_protocol::units::Fuel(0),
        }
    }

    /// The last bytes of the guest's stderr when it did not succeed (what a
    /// receipt request carries), cut at a line start where one is near.
    pub fn stderr_tail(&self) -> Vec<u8> {
        let max = agora_protocol::rpc::MAX_STDERR_TAIL;
        if self.exit_status().is_success() || self.stderr.is_empty() {
            return Vec::new();
        }
        let from = self.stderr.len().saturating_sub(max);
        let tail = &self.stderr[from..];
        match tail.iter().position(|b| *b == b'\n') {
            Some(nl) if from > 0 && nl + 1 < tail.len() => tail[nl + 1..].to_vec(),
            _ => tail.to_vec(),
        }
    }
}

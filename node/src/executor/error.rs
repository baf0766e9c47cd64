//! How setting up an executor, loading a module or running a task fails.
//!
//! A guest's failure is a result, not a panic of the node: every way a
//! load or a run can go wrong is one variant of [`TaskError`], carried in
//! [`Outcome::result`](super::Outcome::result). Its messages are the CLI's
//! contract (`agora exec` prints them after `error: `), and
//! [`TaskError::exit_status`] is what a receipt reports: the wire's
//! [`ExitStatus`], messages clipped to the protocol's limit, failures to
//! load reported as an invalid module. [`SetupError`] is the node's own
//! failure to build an executor from its [`Config`](super::Config).

use std::path::PathBuf;
use std::time::Duration;

use agora_protocol::execution::ExitStatus;
use agora_protocol::units::{Bytes, Fuel};

/// Why an executor could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A setting is out of range.
    #[error("invalid executor configuration: {0}")]
    InvalidConfig(String),
    /// wasmtime refused the engine configuration (or could not reserve the
    /// instance pool: lower `max_instances` or `max_memory`).
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The module cache directory could not be created.
    #[error("cannot create the module cache {path}: {source}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The epoch ticker thread could not be started.
    #[error("cannot start the epoch ticker: {0}")]
    Ticker(std::io::Error),
}

/// Why a task (or loading its module) failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TaskError {
    /// The fuel limit was reached.
    #[error("out of fuel after {limit} units")]
    OutOfFuel {
        /// The limit.
        limit: Fuel,
    },
    /// The wall-clock limit was reached.
    #[error("deadline of {} exceeded", humantime::format_duration(*timeout))]
    Deadline {
        /// The limit.
        timeout: Duration,
    },
    /// The guest needed more memory than its limit (a refused `memory.grow`
    /// followed by a trap, or an initial memory above the limit).
    #[error("memory limit of {limit} reached")]
    MemoryLimit {
        /// The limit.
        limit: Bytes,
    },
    /// The run was stopped because its task was cancelled.
    #[error("interrupted: the task was cancelled")]
    Interrupted,
    /// The guest exhausted its stack.
    #[error("stack overflow")]
    StackOverflow,
    /// The guest trapped.
    #[error("trap: {0}")]
    Trap(String),
    /// The guest called `proc_exit` with a non-zero code.
    #[error("exit code {0}")]
    ExitCode(u32),
    /// The guest wrote more to stdout than its limit.
    #[error("output exceeds the limit of {limit}")]
    OutputTooLarge {
        /// The limit.
        limit: Bytes,
    },
    /// The bytes are not a valid module, or not a WASI command module.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module exceeds the size cap.
    #[error("module of {size} exceeds the maximum of {max}")]
    ModuleTooLarge {
        /// Its size.
        size: Bytes,
        /// The cap.
        max: Bytes,
    },
    /// The module imports something outside the granted WASI functions.
    #[error("forbidden import `{module}::{name}`: only wasi_snapshot_preview1 functions are granted")]
    ForbiddenImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// Compilation exceeded its time or memory bounds, or failed otherwise.
    #[error("compile failed: {0}")]
    CompileFailed(String),
}

impl TaskError {
    /// The status a receipt reports for this failure.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            TaskError::OutOfFuel { .. } => ExitStatus::OutOfFuel,
            // Neither says anything about the guest: not a result anyone
            // accepts, and not deterministic.
            TaskError::Deadline { .. } | TaskError::Interrupted => ExitStatus::Deadline,
            TaskError::MemoryLimit { .. } => ExitStatus::MemoryLimit,
            TaskError::StackOverflow => ExitStatus::StackOverflow,
            TaskError::Trap(m) => ExitStatus::Trap(ExitStatus::clip(m)),
            TaskError::ExitCode(c) => ExitStatus::ExitCode(*c),
            TaskError::OutputTooLarge { .. } => ExitStatus::OutputTooLarge,
            TaskError::InvalidModule(m) => ExitStatus::InvalidModule(ExitStatus::clip(m)),
            e @ (TaskError::ModuleTooLarge { .. }
            | TaskError::ForbiddenImport { .. }
            | TaskError::CompileFailed(_)) => ExitStatus::InvalidModule(ExitStatus::clip(&e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_match_the_cli_contract() {
        assert_eq!(
            TaskError::OutOfFuel {
                limit: Fuel(100_000_000)
            }
            .to_string(),
            "out of fuel after 100000000 units"
        );
        assert_eq!(
            TaskError::Deadline {
                timeout: Duration::from_secs(1)
            }
            .to_string(),
            "deadline of 1s exceeded"
        );
        assert_eq!(
            TaskError::MemoryLimit {
                limit: Bytes::mib(64)
            }
            .to_string(),
            "memory limit of 64 MiB reached"
        );
        assert_eq!(TaskError::StackOverflow.to_string(), "stack overflow");
        assert_eq!(TaskError::ExitCode(3).to_string(), "exit code 3");
        assert_eq!(
            TaskError::ForbiddenImport {
                module: "env".into(),
                name: "f".into()
            }
            .exit_status(),
            ExitStatus::InvalidModule(
                "forbidden import `env::f`: only wasi_snapshot_preview1 functions are granted".into()
            )
        );
        let long = TaskError::Trap("x".repeat(5000)).exit_status();
        assert!(matches!(long, ExitStatus::Trap(m) if m.len() == agora_protocol::limits::MAX_MESSAGE_LEN));
    }
}

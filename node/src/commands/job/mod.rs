//! `agora job …`: submit a job to the network through a running node, follow
//! it, fetch its results, cancel it, and explain its placement.
//!
//! Every subcommand talks to the node's local API (see [`crate::api`]); the
//! node does the negotiation, placement and verification. Each subcommand
//! has its own file with its flags and its `execute`: `submit`, `status`,
//! `watch`, `result`, `cancel`, `explain` and `receipts`. Text that several
//! of them print (state names, phase counts, placement decisions) is in
//! `render`; which files are a job's task inputs, in `inputs`.

use std::process::ExitCode;

mod cancel;
mod explain;
pub(crate) mod inputs;
mod jobfile;
mod logs;
mod receipts;
mod render;
mod result;
mod status;
pub(crate) mod submit;
mod watch;

pub use self::cancel::CancelCommand;
pub use self::explain::ExplainCommand;
pub use self::inputs::{InputFile, Symlinks, inputs_in_dir, read_input, single_input};
pub use self::logs::LogsCommand;
pub use self::receipts::ReceiptsCommand;
pub use self::render::state_name;
pub use self::result::{MAX_OUTPUT_NAME, ResultCommand, output_names, reduced_name};
pub use self::status::StatusCommand;
pub use self::submit::SubmitCommand;
pub use self::watch::WatchCommand;

/// Uploads and downloads in flight at once.
const TRANSFERS: usize = 8;

/// Submit, follow, fetch, cancel and explain jobs.
#[derive(Debug, clap::Args)]
pub struct JobCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: JobAction,
}

/// The `agora job` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JobAction {
    /// Upload a module and its inputs and submit them as a job.
    Submit(Box<SubmitCommand>),
    /// Show a job's state, counts and per-task detail.
    Status(StatusCommand),
    /// Follow a job's progress live until it ends.
    Watch(WatchCommand),
    /// Download a job's outputs.
    Result(ResultCommand),
    /// Cancel a job.
    Cancel(CancelCommand),
    /// Show the placement decisions taken for a job's tasks.
    Explain(ExplainCommand),
    /// Save the providers' signed receipts, for `agora verify`.
    Receipts(ReceiptsCommand),
    /// Show what the tasks' guests write to stderr, live (`--follow`).
    Logs(LogsCommand),
}

impl JobCommand {
    /// Runs the subcommand.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self.action {
            JobAction::Submit(c) => c.execute(),
            JobAction::Status(c) => c.execute(),
            JobAction::Watch(c) => c.execute(),
            JobAction::Result(c) => c.execute(),
            JobAction::Cancel(c) => c.execute(),
            JobAction::Explain(c) => c.execute(),
            JobAction::Receipts(c) => c.execute(),
            JobAction::Logs(c) => c.execute(),
        }
    }
}

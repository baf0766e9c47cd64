//! `agora compile_worker`.

use std::process::ExitCode;

/// Placeholder until implemented.
#[derive(Debug, clap::Args)]
pub struct CompileWorkerCommand {}

impl CompileWorkerCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        anyhow::bail!("not implemented yet")
    }
}

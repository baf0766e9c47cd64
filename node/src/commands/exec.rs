//! `agora exec`.

use std::process::ExitCode;

/// Placeholder until implemented.
#[derive(Debug, clap::Args)]
pub struct ExecCommand {}

impl ExecCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        anyhow::bail!("not implemented yet")
    }
}

//! `agora verify`.

use std::process::ExitCode;

/// Placeholder until implemented.
#[derive(Debug, clap::Args)]
pub struct VerifyCommand {}

impl VerifyCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        anyhow::bail!("not implemented yet")
    }
}

//! `agora job cancel`: cancel a job through the node it was submitted to.
//!
//! The node drops the job's pending tasks and withdraws its running copies;
//! the summary it answers with says how many tasks were verified before.

use std::process::ExitCode;

use super::render::state_name;
use crate::commands::common::{NodeLocator, block_on, emitln, print_json};
use crate::commands::refs::JobRef;

/// Cancel a job: its pending tasks are dropped and running copies withdrawn.
#[derive(Debug, clap::Args)]
pub struct CancelCommand {
    /// The job: its id, or a unique prefix of it (at least 4 hex digits).
    #[arg(value_name = "ID")]
    pub id: JobRef,
    /// Print the job's summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// The node the job was submitted through.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl CancelCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let summary = block_on(async {
            let id = self.id.resolve(&client).await?;
            anyhow::Ok(client.cancel(&id).await?)
        })??;
        if self.json {
            print_json(&summary)?;
        } else {
            emitln(&format!(
                "cancelled job {}: {} of {} tasks were verified; state {}",
                summary.id,
                summary.verified,
                summary.tasks,
                state_name(summary.state)
            ))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

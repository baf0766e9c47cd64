//! `agora jobs`: the jobs a node has submitted.

use std::process::ExitCode;

use super::common::{NodeLocator, Table, ago, block_on, ellipsize, emitln, print_json};
use crate::api::JobSummary;

/// List the jobs submitted through a running node, newest first.
///
/// Columns: JOB (full id, for `agora job status`), STATE, VERIFIED/TASKS,
/// FAILED, SUBMITTED, TOOK (submission to end), ERROR.
#[derive(Debug, clap::Args)]
pub struct JobsCommand {
    /// Print the API's JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The node to ask.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl JobsCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let mut jobs = block_on(async move { client.jobs().await })??;
        if self.json {
            print_json(&jobs)?;
        } else if jobs.is_empty() {
            emitln("no jobs yet (`agora job submit` starts one)")?;
        } else {
            jobs.sort_by_key(|j| std::cmp::Reverse(j.submitted_at));
            table(&jobs).print()?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn table(jobs: &[JobSummary]) -> Table {
    let mut t = Table::new(&[
        "JOB",
        "STATE",
        "VERIFIED/TASKS",
        "FAILED",
        "SUBMITTED",
        "TOOK",
        "ERROR",
    ])
    .with_right(&[2, 3]);
    for j in jobs {
        let took = j
            .finished_at
            .map(|f| agora_protocol::units::format_duration(f.since(j.submitted_at)))
            .unwrap_or_else(|| "-".to_owned());
        t.row(vec![
            j.id.to_string(),
            super::job::state_name(j.state).to_owned(),
            format!("{}/{}", j.verified, j.tasks),
            j.failed.to_string(),
            ago(j.submitted_at),
            took,
            j.error.as_deref().map(|e| ellipsize(e, 60)).unwrap_or_default(),
        ]);
    }
    t
}

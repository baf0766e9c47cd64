//! `agora job explain`: the placement decisions the node took for a job's
//! tasks, as the requester recorded them.
//!
//! Each decision lists the candidates with their scores, the providers
//! excluded and why, the offers received and the declines (drawn by
//! `render`, as `submit --dry-run` draws its plan). The node keeps the last
//! few decisions of recent tasks only.

use std::process::ExitCode;

use super::render::{EXPLAINED_TASKS, decisions, render_decision};
use crate::commands::common::{NodeLocator, block_on, emit, print_json, utc};
use crate::commands::refs::JobRef;

/// Show the placement decisions taken for a job's tasks: per decision, the
/// candidates with their scores (lower is better; `*` marks the chosen one),
/// the providers excluded and why, the offers received and the declines.
///
/// The node keeps the last few decisions of recent tasks only.
#[derive(Debug, clap::Args)]
pub struct ExplainCommand {
    /// The job: its id, or a unique prefix of it (at least 4 hex digits).
    #[arg(value_name = "ID")]
    pub id: JobRef,
    /// Detail every task, not only the first ten.
    #[arg(long)]
    pub all: bool,
    /// Print the API's JSON object.
    #[arg(long)]
    pub json: bool,
    /// The node the job was submitted through.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl ExplainCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let explain = block_on(async {
            let id = self.id.resolve(&client).await?;
            anyhow::Ok(client.explain(&id).await?)
        })??;
        if self.json {
            print_json(&explain)?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut out = format!("job {}: {} task(s)\n", explain.id, explain.tasks.len());
        let shown = if self.all {
            explain.tasks.len()
        } else {
            EXPLAINED_TASKS.min(explain.tasks.len())
        };
        for t in &explain.tasks[..shown] {
            out.push('\n');
            let ds = decisions(t);
            if ds.is_empty() {
                out.push_str(&format!("task {} ({}): no decisions recorded\n", t.index, t.name));
            }
            for d in ds {
                let chosen = d
                    .chosen
                    .map_or_else(|| "none chosen".to_owned(), |n| format!("chose {}", n.short()));
                out.push_str(&format!(
                    "task {} ({}), attempt {} at {}: {chosen}\n",
                    t.index,
                    t.name,
                    d.attempt,
                    utc(d.at)
                ));
                render_decision(d, &mut out);
            }
        }
        if shown < explain.tasks.len() {
            out.push_str(&format!(
                "\n… {} more task(s) (--all details every one)\n",
                explain.tasks.len() - shown
            ));
        }
        emit(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}

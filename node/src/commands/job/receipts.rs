//! `agora job receipts`: save the signed receipts a job's providers
//! returned, so that anyone can check them later with `agora verify`.
//!
//! The node answers with each copy's signed receipt envelope, hex-encoded;
//! each one's binary encoding goes to its own file, named after its task
//! (path separators replaced) and attempt.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::commands::common::{NodeLocator, block_on, emitln, print_json};
use crate::commands::refs::JobRef;

/// Save every signed receipt a job's providers returned into DIR, one file
/// per copy named `<task name>.<attempt>.receipt` (the receipt envelope's
/// binary encoding). Check one with
/// `agora verify DIR/<file> --module MODULE --input INPUT`.
#[derive(Debug, clap::Args)]
pub struct ReceiptsCommand {
    /// The job: its id, or a unique prefix of it (at least 4 hex digits).
    #[arg(value_name = "ID")]
    pub id: JobRef,
    /// Where to write the receipts.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
    /// The node the job was submitted through.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl ReceiptsCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let status = block_on(async {
            let id = self.id.resolve(&client).await?;
            anyhow::Ok(client.job_with_receipts(&id).await?)
        })??;
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;
        let mut written = Vec::new();
        for t in &status.tasks {
            for c in &t.copies {
                let Some(hex) = &c.receipt else { continue };
                let bytes = hex::decode(hex).context("the node sent a malformed receipt")?;
                let safe: String = t
                    .name
                    .chars()
                    .map(|ch| if ch == '/' || ch == '\\' { '_' } else { ch })
                    .collect();
                let path = self.out.join(format!("{safe}.{}.receipt", c.attempt));
                std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
                written.push(serde_json::json!({
                    "task": t.index, "name": t.name, "attempt": c.attempt,
                    "provider": c.provider, "path": path.display().to_string(),
                }));
            }
        }
        if self.json {
            print_json(&written)?;
        } else {
            emitln(&format!(
                "wrote {} receipt(s) to {}",
                written.len(),
                self.out.display()
            ))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

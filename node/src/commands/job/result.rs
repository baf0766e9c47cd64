//! `agora job result`: download a job's outputs into a directory.
//!
//! Each task's output is named after the task's input file; the node's
//! content store serves them by content id, a few at a time, and each file
//! is written through a temporary name so that it is either complete or
//! absent. A job that is not done is refused unless `--partial` asks for
//! what is verified so far.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agora_protocol::{ContentId, JobId};
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};

use super::TRANSFERS;
use super::render::state_name;
use crate::api::client::Client;
use crate::api::{JobResult, OutputRef};
use crate::commands::common::{NodeLocator, block_on, emitln, print_json};
use crate::market::job::JobState;

/// Download a job's outputs into a directory.
///
/// Each task's output is written to `DIR/<input file name>.out` (input
/// `tile-003.json` → `DIR/tile-003.json.out`). A task whose name cannot be a
/// file name (empty, `.`, `..`, containing a path separator) or that repeats
/// an earlier task's name is written to `DIR/task-<index>.out` instead. The
/// reduced result, if the job has a reduce module, is written to
/// `DIR/result`, or `DIR/result.png` when it is a PNG image. Existing files
/// are replaced.
///
/// Refuses, with exit status 1, unless the job is done; `--partial` downloads
/// the outputs verified so far.
#[derive(Debug, clap::Args)]
pub struct ResultCommand {
    /// The job.
    pub id: JobId,
    /// The directory to write the outputs to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Download what is verified even if the job is not done.
    #[arg(long)]
    pub partial: bool,
    /// Print a JSON list of the files written.
    #[arg(long)]
    pub json: bool,
    /// The node the job was submitted through.
    #[command(flatten)]
    pub node: NodeLocator,
}

/// The PNG file signature.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The file name of each task's output (see [`ResultCommand`]).
pub fn output_names(outputs: &[OutputRef]) -> Vec<String> {
    let mut seen = HashSet::new();
    outputs
        .iter()
        .map(|o| {
            let usable =
                !o.name.is_empty() && o.name != "." && o.name != ".." && !o.name.contains(['/', '\\', '\0']);
            let name = format!("{}.out", o.name);
            if usable && seen.insert(name.clone()) {
                name
            } else {
                format!("task-{}.out", o.index)
            }
        })
        .collect()
}

/// The file name of a reduced result.
pub fn reduced_name(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(PNG) {
        "result.png"
    } else {
        "result"
    }
}

impl ResultCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let result = block_on(async { client.result(&self.id).await })??;
        if result.state != JobState::Done && !self.partial {
            let verified = result.outputs.iter().filter(|o| o.id.is_some()).count();
            let why = match (&result.state, &result.error) {
                (JobState::Failed, Some(e)) => format!("failed ({e})"),
                (s, _) => state_name(*s).to_owned(),
            };
            bail!(
                "job {} is {why}, not done ({verified} of {} outputs verified); wait with `agora job watch {}`, or pass --partial to download what is there",
                self.id,
                result.outputs.len(),
                self.id
            );
        }
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create the output directory {}", self.out.display()))?;
        let (written, reduced) = block_on(self.download(&client, &result))??;
        self.report(&result, written, reduced)?;
        Ok(ExitCode::SUCCESS)
    }

    /// Downloads the verified outputs, a few at a time, and the reduced
    /// result into the output directory; returns what it wrote, as JSON.
    async fn download(
        &self,
        client: &Client,
        result: &JobResult,
    ) -> anyhow::Result<(Vec<serde_json::Value>, Option<serde_json::Value>)> {
        let names = output_names(&result.outputs);
        let jobs: Vec<(ContentId, PathBuf, &OutputRef)> = result
            .outputs
            .iter()
            .zip(&names)
            .filter_map(|(o, n)| o.id.map(|id| (id, self.out.join(n), o)))
            .collect();
        let written: Vec<serde_json::Value> = futures::stream::iter(&jobs)
            .map(|(id, path, o)| async move {
                let bytes = client.get_content(id).await.with_context(|| {
                    format!("cannot download the output of task {} ({})", o.index, o.name)
                })?;
                write_file(path, &bytes)?;
                anyhow::Ok(serde_json::json!({
                    "index": o.index,
                    "name": o.name,
                    "id": id,
                    "size": bytes.len(),
                    "path": path,
                }))
            })
            .buffered(TRANSFERS)
            .try_collect()
            .await?;
        let reduced = match &result.reduced {
            Some(id) => {
                let bytes = client
                    .get_content(id)
                    .await
                    .context("cannot download the reduced result")?;
                let path = self.out.join(reduced_name(&bytes));
                write_file(&path, &bytes)?;
                Some(serde_json::json!({ "id": id, "size": bytes.len(), "path": path }))
            }
            None => None,
        };
        Ok((written, reduced))
    }

    /// Says what was written, and which tasks have no output yet.
    fn report(
        &self,
        result: &JobResult,
        written: Vec<serde_json::Value>,
        reduced: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let missing: Vec<u32> = result
            .outputs
            .iter()
            .filter(|o| o.id.is_none())
            .map(|o| o.index)
            .collect();
        if self.json {
            return print_json(&serde_json::json!({
                "id": result.id,
                "state": result.state,
                "dir": self.out,
                "outputs": written,
                "reduced": reduced,
                "missing": missing,
            }));
        }
        emitln(&format!(
            "wrote {} output(s) to {}",
            written.len(),
            self.out.display()
        ))?;
        if let Some(r) = &reduced {
            emitln(&format!("reduced result: {}", r["path"].as_str().unwrap_or("?")))?;
        }
        if !missing.is_empty() {
            emitln(&format!(
                "{} task(s) have no verified output yet (job {})",
                missing.len(),
                state_name(result.state)
            ))?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file, so that a file is
/// either complete or absent.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(index: u32, name: &str) -> OutputRef {
        OutputRef {
            index,
            name: name.to_owned(),
            id: None,
            size: None,
        }
    }

    #[test]
    fn outputs_are_named_after_their_inputs() {
        let outs = [
            output(0, "tile-003.json"),
            output(1, "tile-003.json"),
            output(2, "../etc/passwd"),
            output(3, ""),
            output(4, ".."),
            output(5, "b"),
        ];
        assert_eq!(
            output_names(&outs),
            [
                "tile-003.json.out",
                "task-1.out",
                "task-2.out",
                "task-3.out",
                "task-4.out",
                "b.out"
            ]
        );
    }

    #[test]
    fn a_png_result_is_named_so() {
        assert_eq!(reduced_name(b"\x89PNG\r\n\x1a\n...."), "result.png");
        assert_eq!(reduced_name(b"42\n"), "result");
    }
}

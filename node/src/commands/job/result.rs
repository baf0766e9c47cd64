//! `agora job result`: download a job's outputs into a directory.
//!
//! Each task's output is named after the task's input file, made unique
//! and short enough for any file system; the node's content store serves
//! them by content id, a few at a time, and each file is written through a
//! temporary name so that it is either complete or absent. Writing never
//! follows a link planted in the output directory. A job that ended without
//! every output (failed, cancelled) gets what was verified, with the rest
//! listed and why; a running one only with `--partial`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agora_protocol::ContentId;
use anyhow::{Context, bail};
use futures::StreamExt;

use super::TRANSFERS;
use super::render::state_name;
use crate::api::client::Client;
use crate::api::{JobResult, OutputRef};
use crate::commands::common::{NodeLocator, block_on, emitln, print_json};
use crate::commands::refs::JobRef;
use crate::market::job::{JobState, TaskPhase};

/// Download a job's outputs into a directory.
///
/// Each task's output is written to `DIR/<input file name>.out` (input
/// `tile-003.json` → `DIR/tile-003.json.out`). A task whose name cannot be a
/// file name (empty, `.`, `..`, containing a path separator or a NUL) is
/// named `task-<index>` instead. Names are made unique in task order: a
/// name an earlier task already has (compared ignoring case) gets
/// `~<index>` added (`tile.out`, then `tile~4.out`; then `~<index>~2`, … if
/// that is taken too), and a name longer than 200 bytes is cut and ends
/// with `~` and 16 hex digits of its BLAKE3 hash. The reduced result, if the
/// job has a reduce module, is written to `DIR/result`, or `DIR/result.png`
/// when it is a PNG image. Existing files are replaced; a symbolic link in
/// DIR is replaced, never written through.
///
/// Exit status: 0 when every output was written (the job is done); 3 when
/// some are missing — the job failed or was cancelled, is done with failed
/// tasks its `--max-failures` allows, or is still running and `--partial`
/// was given: every verified output is written and each missing one is
/// listed with why; 1 on an error, and for a running job without
/// `--partial`.
#[derive(Debug, clap::Args)]
pub struct ResultCommand {
    /// The job: its id, or a unique prefix of it (at least 4 hex digits).
    #[arg(value_name = "ID")]
    pub id: JobRef,
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

/// Exit status of `job result` when outputs are missing (see
/// [`ResultCommand`]).
pub(super) const INCOMPLETE: u8 = 3;
/// Missing outputs listed one per line at most.
const MISSING_SHOWN: usize = 20;

/// Each task without a written output, with why.
fn missing<'a>(result: &'a JobResult, failed: &[(u32, String)]) -> Vec<(&'a OutputRef, String)> {
    result
        .outputs
        .iter()
        .filter_map(|o| {
            if let Some((_, why)) = failed.iter().find(|(i, _)| *i == o.index) {
                return Some((o, why.clone()));
            }
            if o.id.is_some() {
                return None;
            }
            let why = match (&o.error, o.phase) {
                (Some(e), _) => e.clone(),
                (None, TaskPhase::Failed) => "failed".to_owned(),
                (None, TaskPhase::Pending) => "not placed yet".to_owned(),
                (None, TaskPhase::Waiting) => "waiting for its input".to_owned(),
                (None, TaskPhase::Verified) => "verified, but its output is not known here".to_owned(),
                (None, _) => "still running".to_owned(),
            };
            Some((o, why))
        })
        .collect()
}

/// The PNG file signature.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Longest output file name in bytes: with the `.part` of its temporary
/// name it stays well under the 255 bytes file systems allow.
pub const MAX_OUTPUT_NAME: usize = 200;

/// The file name of each task's output, unique and at most
/// [`MAX_OUTPUT_NAME`] bytes (see [`ResultCommand`]).
pub fn output_names(outputs: &[OutputRef]) -> Vec<String> {
    let mut taken = HashSet::new();
    outputs
        .iter()
        .map(|o| {
            let usable =
                !o.name.is_empty() && o.name != "." && o.name != ".." && !o.name.contains(['/', '\\', '\0']);
            let base = if usable {
                o.name.clone()
            } else {
                format!("task-{}", o.index)
            };
            let mut attempt = 0u32;
            loop {
                let stem = match attempt {
                    0 => base.clone(),
                    1 => format!("{base}~{}", o.index),
                    n => format!("{base}~{}~{n}", o.index),
                };
                let name = format!("{}.out", shorten(&stem, MAX_OUTPUT_NAME - ".out".len()));
                if taken.insert(name.to_lowercase()) {
                    return name;
                }
                attempt += 1;
            }
        })
        .collect()
}

/// `stem` if it has at most `max` bytes, else its first bytes (cut on a
/// character boundary) followed by `~` and 16 hex digits of its BLAKE3
/// hash, `max` bytes at most: distinct long names stay distinct.
fn shorten(stem: &str, max: usize) -> String {
    if stem.len() <= max {
        return stem.to_owned();
    }
    let hash = blake3::hash(stem.as_bytes()).to_hex();
    let mut cut = max - 17;
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{}", &stem[..cut], &hash[..16])
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
        let (id, result) = block_on(async {
            let id = self.id.resolve(&client).await?;
            anyhow::Ok((id, client.result(&id).await?))
        })??;
        if !result.state.is_terminal() && !self.partial {
            let verified = result.outputs.iter().filter(|o| o.id.is_some()).count();
            bail!(
                "job {} is {}, not done ({verified} of {} outputs verified): wait with `agora job watch {}`, or pass --partial to download what is verified",
                id,
                state_name(result.state),
                result.outputs.len(),
                id
            );
        }
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create the output directory {}", self.out.display()))?;
        let (written, failed, reduced) = block_on(self.download(&client, &result))??;
        let complete = self.report(&result, written, failed, reduced)?;
        Ok(if complete {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(INCOMPLETE)
        })
    }

    /// Downloads the verified outputs, a few at a time, and the reduced
    /// result into the output directory; returns what it wrote, as JSON.
    async fn download(
        &self,
        client: &Client,
        result: &JobResult,
    ) -> anyhow::Result<(
        Vec<serde_json::Value>,
        Vec<(u32, String)>,
        Option<serde_json::Value>,
    )> {
        let names = output_names(&result.outputs);
        let jobs: Vec<(ContentId, PathBuf, &OutputRef)> = result
            .outputs
            .iter()
            .zip(&names)
            .filter_map(|(o, n)| o.id.map(|id| (id, self.out.join(n), o)))
            .collect();
        // One output that cannot be had does not stop the others.
        let results: Vec<Result<serde_json::Value, (u32, String)>> = futures::stream::iter(&jobs)
            .map(|(id, path, o)| async move {
                let bytes = client
                    .get_content(id)
                    .await
                    .map_err(|e| (o.index, format!("cannot download it: {e}")))?;
                write_file(path, &bytes).map_err(|e| (o.index, format!("{e:#}")))?;
                Ok(serde_json::json!({
                    "index": o.index,
                    "name": o.name,
                    "id": id,
                    "size": bytes.len(),
                    "path": path,
                }))
            })
            .buffered(TRANSFERS)
            .collect()
            .await;
        let (mut written, mut failed) = (Vec::new(), Vec::new());
        for r in results {
            match r {
                Ok(w) => written.push(w),
                Err(f) => failed.push(f),
            }
        }
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
        Ok((written, failed, reduced))
    }

    /// Says what was written, and which tasks have no output and why;
    /// whether every output was written.
    fn report(
        &self,
        result: &JobResult,
        written: Vec<serde_json::Value>,
        failed: Vec<(u32, String)>,
        reduced: Option<serde_json::Value>,
    ) -> anyhow::Result<bool> {
        let missing = missing(result, &failed);
        let complete = missing.is_empty() && result.state == JobState::Done;
        if self.json {
            print_json(&serde_json::json!({
                "id": result.id,
                "state": result.state,
                "error": result.error,
                "dir": self.out,
                "outputs": written,
                "reduced": reduced,
                "missing": missing
                    .iter()
                    .map(|(o, why)| serde_json::json!({"index": o.index, "name": o.name, "why": why}))
                    .collect::<Vec<_>>(),
            }))?;
            return Ok(complete);
        }
        emitln(&format!(
            "wrote {} of {} output(s) to {}",
            written.len(),
            result.outputs.len(),
            self.out.display()
        ))?;
        if let Some(r) = &reduced {
            emitln(&format!("reduced result: {}", r["path"].as_str().unwrap_or("?")))?;
        }
        if !missing.is_empty() {
            emitln(&format!("{} output(s) missing:", missing.len()))?;
            for (o, why) in missing.iter().take(MISSING_SHOWN) {
                emitln(&format!("  task {} ({}): {why}", o.index, o.name))?;
            }
            if missing.len() > MISSING_SHOWN {
                emitln(&format!(
                    "  … and {} more (`--json` lists every one)",
                    missing.len() - MISSING_SHOWN
                ))?;
            }
            let advice = match result.state {
                JobState::Failed => format!(
                    "job {} failed ({}): `agora job status {}` shows why each task failed and how to run it here",
                    result.id,
                    result.error.as_deref().unwrap_or("no reason given"),
                    result.id
                ),
                JobState::Cancelled => format!("job {} was cancelled", result.id),
                JobState::Done => format!(
                    "job {} is done with failed tasks its --max-failures allows: `agora job status {}` shows why each task failed and how to run it here",
                    result.id, result.id
                ),
                s => format!(
                    "job {} is {}: `agora job watch {}` follows it to the end",
                    result.id,
                    state_name(s),
                    result.id
                ),
            };
            emitln(&advice)?;
        }
        Ok(complete)
    }
}

/// Writes `bytes` to `path` through a temporary file `PATH.part`, so that
/// a file is either complete or absent. Nothing is written through a link:
/// a leftover `.part` (a file or a link someone planted) is removed, the
/// temporary file is created anew (`O_EXCL`, which never follows a link),
/// and the rename replaces a link at `path` instead of following it.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    match std::fs::symlink_metadata(&tmp) {
        Ok(m) if m.is_dir() => bail!(
            "{} is a directory in the way of the download; remove it and try again",
            tmp.display()
        ),
        Ok(_) => std::fs::remove_file(&tmp)
            .with_context(|| format!("cannot remove the leftover {}", tmp.display()))?,
        Err(_) => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| {
            format!(
                "cannot create {} (did something else create it meanwhile?)",
                tmp.display()
            )
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
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
            phase: TaskPhase::Pending,
            error: None,
        }
    }

    #[test]
    fn every_missing_output_is_named_with_why() {
        let mut outs: Vec<OutputRef> = (0..4).map(|i| output(i, &format!("in-{i}"))).collect();
        outs[0].id = Some(ContentId([1; 32]));
        outs[0].phase = TaskPhase::Verified;
        outs[1].phase = TaskPhase::Failed;
        outs[1].error = Some("exit code 1".into());
        outs[2].id = Some(ContentId([2; 32]));
        outs[2].phase = TaskPhase::Verified;
        outs[3].phase = TaskPhase::Running;
        let r = JobResult {
            id: agora_protocol::JobId([0; 16]),
            state: JobState::Failed,
            outputs: outs,
            reduced: None,
            error: Some("a task failed".into()),
        };
        let m: Vec<(u32, String)> = missing(&r, &[(2, "cannot download it: gone".into())])
            .into_iter()
            .map(|(o, why)| (o.index, why))
            .collect();
        assert_eq!(
            m,
            [
                (1, "exit code 1".to_owned()),
                (2, "cannot download it: gone".to_owned()),
                (3, "still running".to_owned())
            ]
        );
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
                "tile-003.json~1.out",
                "task-2.out",
                "task-3.out",
                "task-4.out",
                "b.out"
            ]
        );
    }

    #[test]
    fn a_task_named_like_another_tasks_fallback_never_shares_its_file() {
        // Task 0 is named `task-1`; task 1's name is unusable, so its
        // fallback is `task-1` too; task 2 is named like task 1's
        // disambiguated name; task 3 differs from task 0 only in case.
        let outs = [
            output(0, "task-1"),
            output(1, "a/b"),
            output(2, "task-1~1"),
            output(3, "TASK-1"),
        ];
        let names = output_names(&outs);
        assert_eq!(
            names,
            ["task-1.out", "task-1~1.out", "task-1~1~2.out", "TASK-1~3.out"]
        );
        let distinct: HashSet<String> = names.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(distinct.len(), outs.len());
        // Deterministic: the same outputs, the same names.
        assert_eq!(output_names(&outs), names);
    }

    #[test]
    fn long_names_are_shortened_with_a_hash_and_stay_distinct() {
        let long = |c: char| format!("{}{c}", "é".repeat(126));
        let outs = [
            output(0, &long('a')),
            output(1, &long('b')),
            output(2, &long('a')),
        ];
        let names = output_names(&outs);
        for n in &names {
            assert!(n.len() <= MAX_OUTPUT_NAME, "{} bytes", n.len());
            assert!(n.ends_with(".out"), "{n}");
            assert!(n.starts_with("éé"), "{n}");
        }
        assert_ne!(names[0], names[1], "a hash of the whole name tells them apart");
        assert_ne!(names[0], names[2], "a repeated long name is still disambiguated");
        // A 255-byte name (the most a spec allows) downloads: its temporary
        // name fits in a directory.
        let dir = tempfile::tempdir().unwrap();
        let outs = [output(0, &"x".repeat(255))];
        let path = dir.path().join(&output_names(&outs)[0]);
        write_file(&path, b"ok").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ok");
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_part_link_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let out = dir.path().join("a.json.out");
        std::os::unix::fs::symlink(&victim, dir.path().join("a.json.out.part")).unwrap();
        write_file(&out, b"output").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&out).unwrap(), b"output");
        assert!(!std::fs::symlink_metadata(&out).unwrap().file_type().is_symlink());
        assert!(!dir.path().join("a.json.out.part").exists());

        // A link at the output's own name is replaced, not followed.
        std::os::unix::fs::symlink(&victim, dir.path().join("b.out")).unwrap();
        write_file(&dir.path().join("b.out"), b"output").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A dangling link planted as the temporary name is no help either.
        let elsewhere = dir.path().join("created-elsewhere");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("c.out.part")).unwrap();
        write_file(&dir.path().join("c.out"), b"output").unwrap();
        assert!(!elsewhere.exists());
    }

    #[test]
    fn a_png_result_is_named_so() {
        assert_eq!(reduced_name(b"\x89PNG\r\n\x1a\n...."), "result.png");
        assert_eq!(reduced_name(b"42\n"), "result");
    }
}

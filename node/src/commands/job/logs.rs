//! `agora job logs`: what the guests of a job's tasks write to stderr, as
//! their providers send it while the tasks run (within about a second of
//! the guest writing), every line prefixed with its task and provider.
//! `--follow` prints new lines as they come until the job ends.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use crate::api::{CopyLogView, JobLogs};
use crate::commands::common::{NodeLocator, block_on, emit, print_json};
use crate::commands::refs::JobRef;

/// How often `--follow` asks.
const POLL: Duration = Duration::from_millis(250);

/// Show what the guests of a job's tasks wrote to stderr (the newest
/// 32 KiB of each copy), as their providers sent it.
///
/// Logs are the providers' word: never part of a result, never verified.
#[derive(Debug, clap::Args)]
pub struct LogsCommand {
    /// The job: its id, or a unique prefix of it (at least 4 hex digits).
    #[arg(value_name = "ID")]
    pub id: JobRef,
    /// Only this task (its index).
    #[arg(long)]
    pub task: Option<u32>,
    /// Print new lines as they come, until the job ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print the API's JSON object (not with --follow).
    #[arg(long, conflicts_with = "follow")]
    pub json: bool,
    /// The node the job was submitted through.
    #[command(flatten)]
    pub node: NodeLocator,
}

/// The lines of `log` past `from` (an offset in the guest's stderr),
/// prefixed; returns them and the new offset. A last line without its
/// newline yet is kept back unless `all`.
fn lines(log: &CopyLogView, from: u64, all: bool) -> (String, u64) {
    let from = from.max(log.start);
    let skip = (from - log.start) as usize;
    let text = log.text.as_bytes();
    let new = text.get(skip..).unwrap_or_default();
    let upto = if all {
        new.len()
    } else {
        new.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
    };
    let mut out = String::new();
    for line in String::from_utf8_lossy(&new[..upto]).lines() {
        out.push_str(&format!("task {} [{}] {line}\n", log.task, log.provider.short()));
    }
    (out, from + upto as u64)
}

/// Every copy's lines past what was printed.
fn render(logs: &JobLogs, printed: &mut HashMap<(u32, u16), u64>, all: bool) -> String {
    let mut out = String::new();
    for l in &logs.copies {
        let at = printed.entry((l.task, l.attempt)).or_insert(0);
        let (text, next) = lines(l, *at, all);
        *at = next;
        out.push_str(&text);
    }
    out
}

impl LogsCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        block_on(async {
            let id = self.id.resolve(&client).await?;
            let mut printed = HashMap::new();
            loop {
                let done = !self.follow || client.job(&id).await?.state.is_terminal();
                let logs = client.logs(&id, self.task).await?;
                if self.json {
                    print_json(&logs)?;
                    return anyhow::Ok(ExitCode::SUCCESS);
                }
                emit(&render(&logs, &mut printed, done))?;
                if done {
                    return Ok(ExitCode::SUCCESS);
                }
                tokio::time::sleep(POLL).await;
            }
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(start: u64, text: &str) -> CopyLogView {
        CopyLogView {
            task: 3,
            attempt: 0,
            provider: agora_protocol::Keypair::from_secret([1; 32]).node_id(),
            start,
            end: start + text.len() as u64,
            text: text.into(),
        }
    }

    #[test]
    fn new_whole_lines_are_printed_once_each_and_a_partial_line_waits() {
        let mut printed = HashMap::new();
        let logs = |v| JobLogs { copies: vec![v] };
        let out = render(&logs(view(0, "one\ntw")), &mut printed, false);
        assert!(out.starts_with("task 3 [") && out.ends_with("] one\n"), "{out}");
        let out = render(&logs(view(0, "one\ntwo\nthr")), &mut printed, false);
        assert!(out.ends_with("] two\n") && !out.contains("one"), "{out}");
        // At the end the partial line is printed too.
        let out = render(&logs(view(0, "one\ntwo\nthree")), &mut printed, true);
        assert!(out.ends_with("] three\n"), "{out}");
        // Bytes dropped at the node (only the newest are kept) are skipped.
        let mut printed = HashMap::new();
        let out = render(&logs(view(100, "late\n")), &mut printed, false);
        assert!(out.ends_with("] late\n"), "{out}");
    }
}

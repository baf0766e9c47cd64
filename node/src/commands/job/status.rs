//! `agora job status`: a job's state, its task counts by phase, the work per
//! provider, and a row per task.
//!
//! A big job shows a bounded number of task rows, failed and unfinished
//! tasks first, since those are the ones a person looks for; `--all` shows
//! every one, and `--json` prints the API's object unchanged.

use std::process::ExitCode;

use agora_protocol::NodeId;

use super::render::{counts_line, state_name};
use crate::api::{JobStatus, TaskStatus};
use crate::commands::common::{
    NodeLocator, Table, block_on, ellipsize, emit, millis, or_dash, print_json, utc,
};
use crate::commands::refs::JobRef;
use crate::market::job::{JobState, TaskPhase};

/// Task rows `job status` shows without `--all`.
const TASK_ROWS: usize = 50;

/// Show a job's state (`pending`, `running`, `done` or `failed`), its task
/// counts by phase, the work per provider, and per-task detail.
///
/// Without `--all`, at most 50 task rows are shown: failed and unfinished
/// tasks first. PROVIDERS lists the providers whose outcome was accepted, or,
/// in parentheses, those a task is placed on now.
#[derive(Debug, clap::Args)]
pub struct StatusCommand {
    /// The job: its id, or a unique prefix of it (at least 4 hex digits).
    #[arg(value_name = "ID")]
    pub id: JobRef,
    /// Show every task.
    #[arg(long)]
    pub all: bool,
    /// Print the API's JSON object.
    #[arg(long)]
    pub json: bool,
    /// The node the job was submitted through.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl StatusCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let status = block_on(async {
            let id = self.id.resolve(&client).await?;
            anyhow::Ok(client.job(&id).await?)
        })??;
        if self.json {
            print_json(&status)?;
        } else {
            emit(&render_status(&status, self.all))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The whole report: the job's lines, then the providers and the tasks.
fn render_status(s: &JobStatus, all: bool) -> String {
    let mut out = summary(s);
    if !s.providers.is_empty() {
        out.push('\n');
        out.push_str(&providers_table(s).render());
    }
    let limit = if all { usize::MAX } else { TASK_ROWS };
    let rows = task_rows(&s.tasks, limit);
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&tasks_table(&rows).render());
        if rows.len() < s.tasks.len() {
            out.push_str(&format!(
                "(showing {} of {} tasks, failed and unfinished first; --all shows every one)\n",
                rows.len(),
                s.tasks.len()
            ));
        }
    }
    out.push_str(&failures(&s.tasks));
    out
}

/// Most failing tasks detailed below the table.
const FAILURES_SHOWN: usize = 5;
/// Most lines of a guest's stderr shown per failing task.
const STDERR_LINES: usize = 12;

/// Tasks named one per line below the detailed ones, at most.
const NAMED_SHOWN: usize = 100;
/// Names listed per reason a task never ran, at most.
const NAMES_PER_REASON: usize = 20;

/// Why tasks failed, every failing input named: the first few in detail
/// (the error, the guest's last stderr lines its provider sent, and the
/// `agora exec` line that runs it locally), the rest one line each; then the
/// tasks that never ran to an outcome, grouped by why.
pub(super) fn failures(tasks: &[TaskStatus]) -> String {
    let failing: Vec<&TaskStatus> = tasks.iter().filter(|t| t.reproduce.is_some()).collect();
    let unrun: Vec<&TaskStatus> = tasks
        .iter()
        .filter(|t| t.phase == TaskPhase::Failed && t.reproduce.is_none())
        .collect();
    let mut out = String::new();
    if !failing.is_empty() {
        out.push_str(&format!(
            "\n{} task(s) failed or have a copy that did not succeed:\n",
            failing.len()
        ));
    }
    let why = |t: &TaskStatus| {
        t.error
            .clone()
            .or_else(|| t.exit.clone())
            .or_else(|| t.copies.iter().find_map(|c| c.exit.clone()))
            .unwrap_or_else(|| "did not succeed".into())
    };
    for t in failing.iter().take(FAILURES_SHOWN) {
        out.push_str(&format!("\ntask {} ({}): {}\n", t.index, t.name, why(t)));
        if let Some(e) = &t.stderr {
            let lines: Vec<&str> = e.lines().collect();
            let from = lines.len().saturating_sub(STDERR_LINES);
            out.push_str("  stderr (last lines, as the provider sent them):\n");
            for l in &lines[from..] {
                out.push_str(&format!("    {l}\n"));
            }
        }
        if let Some(r) = &t.reproduce {
            out.push_str(&format!("  run it here: {r}\n"));
        }
    }
    let rest = &failing[failing.len().min(FAILURES_SHOWN)..];
    if !rest.is_empty() {
        out.push_str("\nalso failed:\n");
        for t in rest.iter().take(NAMED_SHOWN) {
            out.push_str(&format!("  task {} ({}): {}\n", t.index, t.name, why(t)));
        }
        if rest.len() > NAMED_SHOWN {
            out.push_str(&format!(
                "  … and {} more (`--json` has every one)\n",
                rest.len() - NAMED_SHOWN
            ));
        }
    }
    if !unrun.is_empty() {
        out.push_str(&format!("\n{} task(s) never ran to an outcome:\n", unrun.len()));
        let mut reasons: Vec<(String, Vec<&TaskStatus>)> = Vec::new();
        for t in &unrun {
            let w = why(t);
            match reasons.iter_mut().find(|r| r.0 == w) {
                Some(r) => r.1.push(t),
                None => reasons.push((w, vec![t])),
            }
        }
        for (w, ts) in reasons {
            let mut names: Vec<String> = ts
                .iter()
                .take(NAMES_PER_REASON)
                .map(|t| format!("{} ({})", t.index, t.name))
                .collect();
            if ts.len() > NAMES_PER_REASON {
                names.push(format!("… and {} more", ts.len() - NAMES_PER_REASON));
            }
            out.push_str(&format!("  {w}: task {}\n", names.join(", ")));
        }
    }
    out
}

/// One `key value` line per fact about the job.
fn summary(s: &JobStatus) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<9} {v}\n"));
    line("job", s.id.to_string());
    let state = match (s.state, s.counts.failed) {
        (JobState::Done, n) if n > 0 => format!(
            "done, with {n} failed task(s) (--max-failures {})",
            s.max_failures
        ),
        (st, _) if s.max_failures > 0 && !st.is_terminal() => format!(
            "{} ({} of at most {} failed so far)",
            state_name(st),
            s.counts.failed,
            s.max_failures
        ),
        (st, _) => state_name(st).to_owned(),
    };
    line("state", state);
    line("tasks", format!("{} total: {}", s.total, counts_line(&s.counts)));
    let time = match s.finished_at {
        Some(_) => format!("submitted {}, took {}", utc(s.submitted_at), millis(s.wall_ms)),
        None => format!("submitted {}, {} so far", utc(s.submitted_at), millis(s.wall_ms)),
    };
    line("time", time);
    line(
        "checks",
        format!("{} replica(s), spot-check rate {}", s.replicas, s.spot_check),
    );
    line("spent", format!("{} credits", s.spent));
    if s.energy_j > 0.0 || s.energy_budget_j.is_some() || s.energy_unknown > 0 {
        let mut e = format!("{:.2} J", s.energy_j);
        if let Some(b) = s.energy_budget_j {
            e.push_str(&format!(" of a {b:.2} J budget"));
        }
        if s.energy_unknown > 0 {
            e.push_str(&format!(
                " ({} copies ran where the energy rate is unknown)",
                s.energy_unknown
            ));
        }
        line("energy", e);
    }
    if s.class != agora_protocol::market::LatencyClass::Batch {
        line("class", s.class.to_string());
    }
    if let Some(r) = &s.reduced {
        line("reduced", r.to_string());
    }
    if let Some(w) = &s.waiting {
        line("waiting", w.clone());
    }
    if let Some(e) = &s.error {
        line("error", e.clone());
    }
    out
}

/// The job's providers, most verified (then most running) first.
fn providers_table(s: &JobStatus) -> Table {
    let mut t = Table::new(&["PROVIDER", "RUNNING", "VERIFIED", "FAILED", "PAID"]).with_right(&[1, 2, 3, 4]);
    let mut providers: Vec<_> = s.providers.iter().collect();
    providers.sort_by_key(|p| std::cmp::Reverse((p.verified, p.running)));
    for p in providers {
        t.row(vec![
            p.peer_id.short(),
            p.running.to_string(),
            p.verified.to_string(),
            p.failed.to_string(),
            p.paid.to_string(),
        ]);
    }
    t
}

/// A row per task shown.
fn tasks_table(rows: &[&TaskStatus]) -> Table {
    let mut t =
        Table::new(&["TASK", "NAME", "PHASE", "PROVIDERS", "FUEL", "EXIT", "ERROR"]).with_right(&[0, 4]);
    for task in rows {
        t.row(vec![
            task.index.to_string(),
            ellipsize(&task.name, 40),
            phase_name(task.phase).to_owned(),
            providers_cell(task),
            or_dash(task.fuel),
            or_dash(task.exit.as_deref()),
            task.error
                .as_deref()
                .map(|e| ellipsize(e, 80))
                .unwrap_or_default(),
        ]);
    }
    t
}

/// The phase as the CLI spells it.
fn phase_name(p: TaskPhase) -> &'static str {
    match p {
        TaskPhase::Waiting => "waiting",
        TaskPhase::Pending => "pending",
        TaskPhase::Placed => "placed",
        TaskPhase::Running => "running",
        TaskPhase::Verifying => "verifying",
        TaskPhase::Verified => "verified",
        TaskPhase::Failed => "failed",
    }
}

/// Accepted providers, or else `(…)` around those the task is placed on.
fn providers_cell(t: &TaskStatus) -> String {
    if !t.providers.is_empty() {
        return t
            .providers
            .iter()
            .map(NodeId::short)
            .collect::<Vec<_>>()
            .join(",");
    }
    let live: Vec<String> = t
        .copies
        .iter()
        .filter(|c| c.state == "accepting" || c.state == "agreed")
        .map(|c| c.provider.short())
        .collect();
    if live.is_empty() {
        "-".to_owned()
    } else {
        format!("({})", live.join(","))
    }
}

/// At most `limit` tasks, preferring failed, then unfinished, then verified
/// ones, in index order.
fn task_rows(tasks: &[TaskStatus], limit: usize) -> Vec<&TaskStatus> {
    if tasks.len() <= limit {
        return tasks.iter().collect();
    }
    let rank = |p: TaskPhase| match p {
        TaskPhase::Failed => 0,
        TaskPhase::Running => 1,
        TaskPhase::Verifying => 2,
        TaskPhase::Placed => 3,
        TaskPhase::Pending => 4,
        TaskPhase::Waiting => 5,
        TaskPhase::Verified => 6,
    };
    let mut picked: Vec<&TaskStatus> = tasks.iter().collect();
    picked.sort_by_key(|t| (rank(t.phase), t.index));
    picked.truncate(limit);
    picked.sort_by_key(|t| t.index);
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(index: u32, phase: TaskPhase) -> TaskStatus {
        TaskStatus {
            index,
            name: format!("t{index}"),
            phase,
            providers: vec![],
            output: None,
            fuel: None,
            exit: None,
            error: None,
            stderr: None,
            reproduce: None,
            spot_checked: false,
            copies: vec![],
            checkpoints: Vec::new(),
        }
    }

    #[test]
    fn a_failed_task_shows_the_guests_last_stderr_lines_and_how_to_run_it_here() {
        let mut t = task(3, TaskPhase::Failed);
        t.name = "bad.json".into();
        t.exit = Some("exit code 101".into());
        t.stderr = Some("warming up\npanicked at src/main.rs:9: missing field `width`\n".into());
        t.reproduce = Some("agora exec MODULE.wasm --input bad.json --seed 7 --fuel 10 --memory 1B".into());
        let out = failures(&[task(0, TaskPhase::Verified), t]);
        assert!(out.contains("task 3 (bad.json): exit code 101"), "{out}");
        assert!(
            out.contains("    panicked at src/main.rs:9: missing field `width`"),
            "{out}"
        );
        assert!(
            out.contains("run it here: agora exec MODULE.wasm --input bad.json"),
            "{out}"
        );
        assert!(failures(&[task(0, TaskPhase::Verified)]).is_empty());
    }

    #[test]
    fn every_failing_input_is_named_and_those_that_never_ran_are_grouped_by_why() {
        let mut tasks: Vec<TaskStatus> = (0..12).map(|i| task(i, TaskPhase::Verified)).collect();
        for t in &mut tasks[..7] {
            t.phase = TaskPhase::Failed;
            t.exit = Some("exit code 1".into());
            t.reproduce = Some(format!("agora exec MODULE.wasm --input {}", t.name));
        }
        for t in &mut tasks[7..10] {
            t.phase = TaskPhase::Failed;
            t.error = Some("not run: the job failed (task 0 (t0): exit code 1)".into());
        }
        tasks[10].phase = TaskPhase::Failed;
        tasks[10].error = Some("gave up after 24 attempts (last: unreachable)".into());
        let out = failures(&tasks);
        for i in 0..7 {
            assert!(out.contains(&format!("task {i} (t{i}): exit code 1")), "{out}");
        }
        assert!(out.contains("also failed:"), "{out}");
        assert!(out.contains("4 task(s) never ran to an outcome"), "{out}");
        assert!(
            out.contains("not run: the job failed (task 0 (t0): exit code 1): task 7 (t7), 8 (t8), 9 (t9)"),
            "{out}"
        );
        assert!(
            out.contains("gave up after 24 attempts (last: unreachable): task 10 (t10)"),
            "{out}"
        );
        assert!(!out.contains("(t11)"), "{out}");
    }

    #[test]
    fn big_jobs_show_failed_and_unfinished_tasks_first() {
        let mut tasks: Vec<TaskStatus> = (0..10).map(|i| task(i, TaskPhase::Verified)).collect();
        tasks[7].phase = TaskPhase::Failed;
        tasks[8].phase = TaskPhase::Running;
        tasks[2].phase = TaskPhase::Pending;
        let rows: Vec<u32> = task_rows(&tasks, 4).iter().map(|t| t.index).collect();
        assert_eq!(rows, [0, 2, 7, 8]);
        assert_eq!(task_rows(&tasks, 100).len(), 10);
    }
}

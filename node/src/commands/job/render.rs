//! Text that several `agora job` subcommands print: the names of job
//! states, a job's task counts by phase, and placement decisions.
//!
//! A decision is shown by `job explain` (every decision of a task) and by
//! `job submit --dry-run` (the one decision of each planned task), in the
//! same indented form, so that a plan reads like the explanation the job
//! would later get.

use agora_protocol::NodeId;

use crate::api::{PhaseCounts, TaskExplain};
use crate::commands::common::{Table, number};
use crate::market::job::JobState;
use crate::market::requester::Decision;

/// Tasks whose placement `job explain` and `--dry-run` detail without `--all`.
pub(super) const EXPLAINED_TASKS: usize = 10;

/// The state as the CLI and API spell it.
pub fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Pending => "pending",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// Every phase's count, on one line.
pub(super) fn counts_line(c: &PhaseCounts) -> String {
    let line = format!(
        "pending {} · placed {} · running {} · verifying {} · verified {} · failed {}",
        c.pending, c.placed, c.running, c.verifying, c.verified, c.failed
    );
    with_waiting(c, line)
}

/// `line`, led by the tasks waiting for their input, if any.
pub(super) fn with_waiting(c: &PhaseCounts, line: String) -> String {
    if c.waiting == 0 {
        line
    } else {
        format!("waiting for input {} · {line}", c.waiting)
    }
}

/// The placement decisions recorded for a task, oldest first.
pub(super) fn decisions(t: &TaskExplain) -> &[Decision] {
    &t.decisions
}

/// Candidates (best first, `*` on the chosen), exclusions, offers and
/// declines of one decision, indented under its task.
pub(super) fn render_decision(d: &Decision, out: &mut String) {
    let indent = |text: String| -> String { text.lines().map(|l| format!("    {l}\n")).collect() };
    if !d.candidates.is_empty() {
        out.push_str(&format!(
            "  candidates ({}, best first; lower score is better):\n",
            d.candidates.len()
        ));
        out.push_str(&indent(candidates_table(d).render()));
    }
    if !d.excluded.is_empty() {
        out.push_str(&format!("  excluded ({}):\n", d.excluded.len()));
        for (n, why) in &d.excluded {
            out.push_str(&format!("    {}  {why}\n", n.short()));
        }
    }
    if !d.offers.is_empty() {
        out.push_str(&format!("  offers ({}):\n", d.offers.len()));
        out.push_str(&indent(offers_table(d).render()));
    }
    if !d.declined.is_empty() {
        out.push_str(&format!("  declined ({}):\n", d.declined.len()));
        for (n, why) in &d.declined {
            out.push_str(&format!("    {}  {why}\n", n.short()));
        }
    }
    if !d.unasked.is_empty() {
        let names: Vec<String> = d.unasked.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "  not asked ({}; ranked below the domains tried, by free capacity, round trip and price): {}\n",
            names.len(),
            names.join(", ")
        ));
    }
}

/// `*` on the provider a decision chose.
fn chosen_mark(d: &Decision, node: NodeId) -> String {
    if d.chosen == Some(node) { "*" } else { "" }.to_owned()
}

/// A decision's candidates with their score and its parts.
fn candidates_table(d: &Decision) -> Table {
    let mut t = Table::new(&[
        "",
        "PEER",
        "SCORE",
        "ECT MS",
        "WAIT MS",
        "TRANSFER MS",
        "RUN MS",
        "RTT MS",
        "SPEED CU",
    ])
    .with_right(&[2, 3, 4, 5, 6, 7, 8]);
    for c in &d.candidates {
        t.row(vec![
            chosen_mark(d, c.node),
            c.node.short(),
            format!("{:.3}", c.score),
            format!("{:.1}", c.ect_ms),
            format!("{:.1}", c.wait_ms),
            format!("{:.1}", c.transfer_ms),
            format!("{:.1}", c.run_ms),
            format!("{:.1}", c.rtt_ms),
            number(c.speed_cu),
        ]);
    }
    t
}

/// The offers a decision received.
fn offers_table(d: &Decision) -> Table {
    let mut t = Table::new(&["", "PEER", "PRICE", "START MS", "RUN MS", "SCORE"]).with_right(&[3, 4, 5]);
    for o in &d.offers {
        t.row(vec![
            chosen_mark(d, o.node),
            o.node.short(),
            o.price.to_string(),
            o.expected_start_ms.to_string(),
            o.expected_run_ms.to_string(),
            format!("{:.3}", o.score),
        ]);
    }
    t
}

//! A job's progress, live on stderr: one bar for the tasks verified, one
//! per provider for the copies it had accepted. Without a terminal, a line
//! every second instead.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use agora_node::api::JobStatus;
use agora_protocol::NodeId;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws a job's progress.
#[derive(Debug)]
pub struct JobProgress {
    multi: Option<MultiProgress>,
    total: ProgressBar,
    providers: BTreeMap<String, ProgressBar>,
    labels: HashMap<NodeId, String>,
    tasks: u64,
    quiet: bool,
    last_line: Option<(Instant, String)>,
}

impl JobProgress {
    /// Progress of a job of `tasks` tasks; providers are shown with their
    /// `labels` (their id's tail otherwise). `quiet` draws nothing.
    pub fn new(tasks: usize, labels: HashMap<NodeId, String>, quiet: bool) -> JobProgress {
        let tasks = tasks as u64;
        let tty = std::io::stderr().is_terminal() && !quiet;
        let multi = tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        let total = ProgressBar::new(tasks);
        let style = ProgressStyle::with_template("{prefix:>24} [{bar:36.green/white}] {pos:>4}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▉▊▋▌▍▎▏ ");
        total.set_style(style);
        total.set_prefix("verified");
        let total = match &multi {
            Some(m) => m.add(total),
            None => {
                total.set_draw_target(ProgressDrawTarget::hidden());
                total
            }
        };
        JobProgress {
            multi,
            total,
            providers: BTreeMap::new(),
            labels,
            tasks,
            quiet,
            last_line: None,
        }
    }

    fn label(&self, id: &NodeId) -> String {
        self.labels.get(id).cloned().unwrap_or_else(|| id.short())
    }

    /// Shows a new status.
    pub fn update(&mut self, s: &JobStatus) {
        let c = &s.counts;
        self.total.set_position(c.verified as u64);
        self.total.set_message(format!(
            "running {} · verifying {} · pending {} · failed {}",
            c.running + c.placed,
            c.verifying,
            c.pending,
            c.failed
        ));
        for p in &s.providers {
            let label = self.label(&p.peer_id);
            if !self.providers.contains_key(&label) {
                let bar = ProgressBar::new(self.tasks);
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>24} [{bar:36.cyan/blue}] {pos:>4} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("█▉▊▋▌▍▎▏ "),
                );
                bar.set_prefix(label.clone());
                let bar = match &self.multi {
                    Some(m) => m.add(bar),
                    None => {
                        bar.set_draw_target(ProgressDrawTarget::hidden());
                        bar
                    }
                };
                self.providers.insert(label.clone(), bar);
            }
            if let Some(bar) = self.providers.get(&label) {
                bar.set_position(p.verified as u64);
                bar.set_message(format!(
                    "accepted · running {} · failed {} · paid {}",
                    p.running, p.failed, p.paid
                ));
            }
        }
        if self.multi.is_none() && !self.quiet {
            let line = format!(
                "{}/{} verified · running {} · verifying {} · pending {} · failed {}",
                c.verified,
                s.total,
                c.running + c.placed,
                c.verifying,
                c.pending,
                c.failed
            );
            let due = match &self.last_line {
                None => true,
                Some((at, prev)) => at.elapsed() >= Duration::from_secs(1) && *prev != line,
            };
            if due {
                eprintln!("  {line}");
                self.last_line = Some((Instant::now(), line));
            }
        }
    }

    /// Prints a line above the bars (on stderr).
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Leaves the bars as they are.
    pub fn finish(&self) {
        self.total.finish();
        for b in self.providers.values() {
            b.finish();
        }
    }
}

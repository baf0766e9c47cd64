//! `agora job watch`: follow a job live until it ends.
//!
//! The job's summary is asked for every 200 ms, each request answered as
//! soon as the job ends (`wait_ms`), so its end shows at once. On a terminal it is drawn as
//! progress bars: one for the whole job and one per provider (at most
//! sixteen; the rest share an `others` line). Otherwise a progress line, or
//! a JSON object, is printed every second and once more at the end. The
//! exit status tells whether the job was done or failed; a node unreachable
//! for five seconds ends the watch with an error.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_protocol::units::format_duration;
use agora_protocol::{JobId, NodeId};

use crate::commands::refs::JobRef;

use super::render::{counts_line, state_name};
use crate::api::client::{Client, ClientError};
use crate::api::{JobStatus, PhaseCounts};
use crate::commands::common::{NodeLocator, block_on, emit, emitln};
use crate::market::job::JobState;

/// Provider lines `job watch` draws; the rest share one line.
const PROVIDER_LINES: usize = 16;
/// How often the job is polled.
const POLL: Duration = Duration::from_millis(200);
/// How long the node may stay unreachable before `watch` gives up.
const UNREACHABLE_FOR: Duration = Duration::from_secs(5);

/// Follow a job live until it ends: one bar for the tasks verified, with the
/// counts per phase, and one line per provider (tasks verified there, running
/// now). When stdout is not a terminal, prints a progress line every second
/// instead (with `--json`, one JSON object per line).
///
/// Exits 0 when the job is done, 1 when it failed.
#[derive(Debug, clap::Args)]
pub struct WatchCommand {
    /// The job: its id, or a unique prefix of it (at least 4 hex digits).
    #[arg(value_name = "ID")]
    pub id: JobRef,
    /// Print one JSON object per second (`id`, `state`, `total`, `counts`,
    /// `wall_ms`, `error`), and the last one when the job ends.
    #[arg(long)]
    pub json: bool,
    /// The node the job was submitted through.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl WatchCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let bars = !self.json && std::io::stdout().is_terminal();
        let last = block_on(async {
            let id = self.id.resolve(&client).await?;
            self.follow(&client, id, bars).await
        })??;
        self.finish(&last)
    }

    /// Polls the job, showing each summary (as bars, or else as lines),
    /// until it ends; returns the last.
    async fn follow(&self, client: &Client, id: JobId, bars: bool) -> anyhow::Result<JobStatus> {
        let mut display = if bars {
            Display::Bars(Bars::new())
        } else {
            Display::Lines {
                json: self.json,
                next: Instant::now(),
            }
        };
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing_since: Option<Instant> = None;
        loop {
            ticker.tick().await;
            // Answered at the job's end, or a poll period later at most:
            // the end is drawn as soon as the node knows it.
            let s = match client.job_waiting(&id, POLL, false).await {
                Ok(s) => s,
                Err(e @ ClientError::Api { .. }) => return Err(e.into()),
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= UNREACHABLE_FOR {
                        return Err(anyhow::Error::from(e).context("lost the node while watching"));
                    }
                    continue;
                }
            };
            failing_since = None;
            let end = s.state.is_terminal();
            display.update(&s, end)?;
            if end {
                // With its task rows, to say why each failing task failed.
                if (s.state != JobState::Done || s.counts.failed > 0)
                    && let Ok(full) = client.job(&id).await
                {
                    return anyhow::Ok(full);
                }
                return anyhow::Ok(s);
            }
        }
    }

    /// Says how the job ended, and exits accordingly.
    fn finish(&self, last: &JobStatus) -> anyhow::Result<ExitCode> {
        let took = format_duration(Duration::from_millis(last.wall_ms));
        match last.state {
            JobState::Done => {
                if !self.json {
                    emitln(&format!(
                        "job {} done: {}/{} tasks verified in {took}, {} credits spent",
                        last.id, last.counts.verified, last.total, last.spent
                    ))?;
                    if last.counts.failed > 0 {
                        emitln(&format!(
                            "{} task(s) failed, as --max-failures {} allows:",
                            last.counts.failed, last.max_failures
                        ))?;
                        emit(&super::status::failures(&last.tasks))?;
                    }
                    if last.reduced.is_some() {
                        emitln(&format!(
                            "reduced result ready: `agora job result {} --out DIR`",
                            last.id
                        ))?;
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            JobState::Cancelled => {
                eprintln!("error: job {} was cancelled after {took}", last.id);
                Ok(ExitCode::FAILURE)
            }
            _ => {
                eprintln!(
                    "error: job {} failed after {took}: {}",
                    last.id,
                    last.error.as_deref().unwrap_or("no reason given")
                );
                if !self.json {
                    eprint!("{}", super::status::failures(&last.tasks));
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// How progress is shown: bars on a terminal, lines otherwise.
enum Display {
    Bars(Bars),
    Lines { json: bool, next: Instant },
}

impl Display {
    fn update(&mut self, s: &JobStatus, end: bool) -> anyhow::Result<()> {
        match self {
            Display::Bars(b) => {
                b.update(s, end);
                Ok(())
            }
            Display::Lines { json, next } => {
                let now = Instant::now();
                if !end && now < *next {
                    return Ok(());
                }
                *next = now + Duration::from_secs(1);
                if *json {
                    let line = serde_json::json!({
                        "id": s.id,
                        "state": s.state,
                        "total": s.total,
                        "counts": s.counts,
                        "wall_ms": s.wall_ms,
                        "error": s.error,
                        "waiting": s.waiting,
                    });
                    emitln(&line.to_string())?;
                } else {
                    emitln(&format!(
                        "[{:>7}] {}: {}/{} verified · {} · {} provider(s){}",
                        format_duration(Duration::from_millis(s.wall_ms)),
                        state_name(s.state),
                        s.counts.verified,
                        s.total,
                        counts_line(&s.counts),
                        s.providers.len(),
                        s.waiting.as_ref().map(|w| format!(" · {w}")).unwrap_or_default()
                    ))?;
                }
                Ok(())
            }
        }
    }
}

/// The live display: an overall bar and a line per provider.
struct Bars {
    multi: indicatif::MultiProgress,
    overall: indicatif::ProgressBar,
    phases: indicatif::ProgressBar,
    providers: HashMap<NodeId, indicatif::ProgressBar>,
    others: Option<indicatif::ProgressBar>,
}

impl Bars {
    fn new() -> Bars {
        let multi = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stdout());
        let overall = multi.add(indicatif::ProgressBar::new(0));
        overall.set_style(style(
            "{spinner} {elapsed:>4} [{wide_bar:.cyan/blue}] {pos}/{len} verified",
        ));
        overall.enable_steady_tick(Duration::from_millis(120));
        let phases = multi.add(indicatif::ProgressBar::new(0));
        phases.set_style(style("  {msg}"));
        Bars {
            multi,
            overall,
            phases,
            providers: HashMap::new(),
            others: None,
        }
    }

    fn provider_bar(&self, total: u64, prefix: String) -> indicatif::ProgressBar {
        let pb = self.multi.add(indicatif::ProgressBar::new(total));
        pb.set_style(style(
            "  {prefix:<8} [{bar:24.green/white}] {pos:>6} verified · {msg}",
        ));
        pb.set_prefix(prefix);
        pb
    }

    fn update(&mut self, s: &JobStatus, end: bool) {
        let total = s.total as u64;
        self.overall.set_length(total);
        self.overall.set_position(s.counts.verified as u64);
        self.phases.set_message(format!(
            "{} · {}{}",
            state_name(s.state),
            phase_counts_short(&s.counts),
            s.waiting.as_ref().map(|w| format!("\n  {w}")).unwrap_or_default()
        ));
        let mut other = (0, 0, 0);
        let mut has_other = false;
        for p in &s.providers {
            if !self.providers.contains_key(&p.peer_id) && self.providers.len() < PROVIDER_LINES {
                let pb = self.provider_bar(total, p.peer_id.short());
                self.providers.insert(p.peer_id, pb);
            }
            match self.providers.get(&p.peer_id) {
                Some(pb) => {
                    pb.set_length(total);
                    pb.set_position(p.verified as u64);
                    pb.set_message(format!("running {} · failed {}", p.running, p.failed));
                }
                None => {
                    has_other = true;
                    other.0 += p.verified;
                    other.1 += p.running;
                    other.2 += p.failed;
                }
            }
        }
        if has_other {
            if self.others.is_none() {
                self.others = Some(self.provider_bar(total, "others".to_owned()));
            }
            if let Some(pb) = &self.others {
                pb.set_length(total);
                pb.set_position(other.0 as u64);
                pb.set_message(format!("running {} · failed {}", other.1, other.2));
            }
        }
        if end {
            self.overall.finish();
            self.phases.finish();
            for pb in self.providers.values().chain(self.others.as_ref()) {
                pb.finish();
            }
        }
    }
}

fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn phase_counts_short(c: &PhaseCounts) -> String {
    let line = format!(
        "pending {} · placed {} · running {} · verifying {} · failed {}",
        c.pending, c.placed, c.running, c.verifying, c.failed
    );
    super::render::with_waiting(c, line)
}

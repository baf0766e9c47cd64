//! `agora job …`: submit a job to the network through a running node, follow
//! it, fetch its results, cancel it, and explain its placement.
//!
//! Every subcommand talks to the node's local API (see [`crate::api`]); the
//! node does the negotiation, placement and verification.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_protocol::units::{Bytes, EnergyRate, Fuel, Price, format_duration, parse_duration};
use agora_protocol::{ContentId, Domain, JobId, NodeId};
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::common::{
    NodeLocator, Table, block_on, ellipsize, emit, emitln, millis, or_dash, print_json, utc,
};
use crate::api::client::{Client, ClientError};
use crate::api::server::MAX_UPLOAD;
use crate::api::{ContentRef, JobStatus, OutputRef, PhaseCounts, SubmitRequest, TaskExplain, TaskStatus};
use crate::market::job::{InputSpec, JobSpec, JobState, Strategy, TaskPhase};
use crate::market::requester::Decision;

/// Uploads and downloads in flight at once.
const TRANSFERS: usize = 8;
/// Task rows `job status` shows without `--all`.
const TASK_ROWS: usize = 50;
/// Tasks whose placement `job explain` and `--dry-run` detail without `--all`.
const EXPLAINED_TASKS: usize = 10;
/// Provider lines `job watch` draws; the rest share one line.
const PROVIDER_LINES: usize = 16;

/// Submit, follow, fetch, cancel and explain jobs.
#[derive(Debug, clap::Args)]
pub struct JobCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: JobAction,
}

/// The `agora job` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JobAction {
    /// Upload a module and its inputs and submit them as a job.
    Submit(Box<SubmitCommand>),
    /// Show a job's state, counts and per-task detail.
    Status(StatusCommand),
    /// Follow a job's progress live until it ends.
    Watch(WatchCommand),
    /// Download a job's outputs.
    Result(ResultCommand),
    /// Cancel a job.
    Cancel(CancelCommand),
    /// Show the placement decisions taken for a job's tasks.
    Explain(ExplainCommand),
    /// Save the providers' signed receipts, for `agora verify`.
    Receipts(ReceiptsCommand),
}

impl JobCommand {
    /// Runs the subcommand.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self.action {
            JobAction::Submit(c) => c.execute(),
            JobAction::Status(c) => c.execute(),
            JobAction::Watch(c) => c.execute(),
            JobAction::Result(c) => c.execute(),
            JobAction::Cancel(c) => c.execute(),
            JobAction::Explain(c) => c.execute(),
            JobAction::Receipts(c) => c.execute(),
        }
    }
}

/// The state as the CLI and API spell it.
pub fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Pending => "pending",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
    }
}

fn phase_name(p: TaskPhase) -> &'static str {
    match p {
        TaskPhase::Pending => "pending",
        TaskPhase::Placed => "placed",
        TaskPhase::Running => "running",
        TaskPhase::Verifying => "verifying",
        TaskPhase::Verified => "verified",
        TaskPhase::Failed => "failed",
    }
}

fn counts_line(c: &PhaseCounts) -> String {
    format!(
        "pending {} · placed {} · running {} · verifying {} · verified {} · failed {}",
        c.pending, c.placed, c.running, c.verifying, c.verified, c.failed
    )
}

// ------------------------------------------------------------------ submit

/// Upload a module and its inputs to the node and submit them as a job: one
/// task per input.
///
/// With `--inputs DIR`, every regular file directly in DIR (symbolic links to
/// files included; subdirectories and hidden files, whose names start with
/// `.`, left out) is one task, in file-name order, named after its file.
/// With `--input FILE`, the job has that one task. The module may be a wasm
/// binary or WebAssembly text (`.wat`).
///
/// Prints the new job's id (with `--json`: `{"id": "…"}`). With `--dry-run`
/// nothing is submitted: it prints, per task, the providers that would be
/// asked with their scores (lower is better), those left out and why, and
/// the one that would be chosen.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("task_inputs").required(true).args(["input", "inputs"]))]
pub struct SubmitCommand {
    /// The module: a wasm binary or WebAssembly text.
    pub module: PathBuf,
    /// The input of a single-task job.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// A directory of inputs, one task per file.
    #[arg(long, value_name = "DIR")]
    pub inputs: Option<PathBuf>,
    /// An argument for every task (its argv[1..]); repeat for more.
    #[arg(long = "arg", value_name = "A", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Distinct providers that run each task; outputs must agree.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub replicas: u8,
    /// Highest price paid, credits per CU-second.
    #[arg(long, value_name = "P", default_value = "1")]
    pub max_price: Price,
    /// Time a task may take from placement to receipt, like `500ms` or `2m`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Only providers within this domain, e.g. eu/de.
    #[arg(long, value_name = "PATH")]
    pub domain: Option<Domain>,
    /// Fuel limit of each task.
    #[arg(long, value_name = "N", default_value_t = 10_000_000_000)]
    pub fuel: u64,
    /// Fuel a task is expected to use, for placement. Default: the limit.
    #[arg(long, value_name = "N")]
    pub estimate: Option<u64>,
    /// Memory limit of each task, like `64MiB`.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub memory: Bytes,
    /// Fraction of tasks this node re-executes to check providers, in [0, 1].
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub spot_check: f64,
    /// Highest declared energy cost accepted, millijoules per CU-second.
    #[arg(long, value_name = "N")]
    pub max_energy: Option<u64>,
    /// A module that combines the verified outputs at the end.
    #[arg(long, value_name = "REDUCE.wasm")]
    pub reduce: Option<PathBuf>,
    /// An argument for the reduce module; repeat for more.
    #[arg(
        long = "reduce-arg",
        value_name = "A",
        allow_hyphen_values = true,
        requires = "reduce"
    )]
    pub reduce_args: Vec<String>,
    /// Seed of the job (each task's seed derives from it). Default: random.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// How providers are chosen among the eligible ones.
    #[arg(long, default_value_t = Strategy::Scored, value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// Show the placement the job would get, without submitting it.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: detail every task, not only the first ten.
    #[arg(long, requires = "dry_run")]
    pub all: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The node to submit through.
    #[command(flatten)]
    pub node: NodeLocator,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("`{s}` is not a rate between 0 and 1"))
    }
}

/// One task input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The task's name: the file name.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
}

/// The task inputs of `--inputs DIR`: regular files (or links to them)
/// directly in `dir`, not hidden, in file-name order.
pub fn inputs_in_dir(dir: &Path) -> anyhow::Result<Vec<InputFile>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the inputs directory {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read the inputs directory {}", dir.display()))?;
        let path = entry.path();
        let Ok(name) = entry.file_name().into_string() else {
            bail!("input file name {} is not valid UTF-8; rename it", path.display());
        };
        if name.starts_with('.') {
            continue;
        }
        // Follows symbolic links: a link to a file is an input.
        let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_file() {
            files.push(InputFile { name, path });
        }
    }
    if files.is_empty() {
        bail!("no input files in {} (one task per regular file)", dir.display());
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The single input of `--input FILE`.
pub fn single_input(path: &Path) -> anyhow::Result<InputFile> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read the input {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "the input {} is not a file (use --inputs DIR for a directory of inputs)",
            path.display()
        );
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("input file name {} is not valid UTF-8; rename it", path.display()))?;
    Ok(InputFile {
        name: name.to_owned(),
        path: path.to_owned(),
    })
}

impl SubmitCommand {
    /// The job these flags describe, for an uploaded module, reduce module
    /// and inputs (in task order).
    pub fn spec(
        &self,
        module: &ContentRef,
        reduce: Option<&ContentRef>,
        inputs: Vec<InputSpec>,
        seed: u64,
    ) -> JobSpec {
        JobSpec {
            module: module.id,
            module_size: Bytes(module.size),
            reduce: reduce.map(|r| r.id),
            inputs,
            args: self.args.clone(),
            reduce_args: self.reduce_args.clone(),
            fuel: Fuel(self.fuel),
            estimate: self.estimate.map(Fuel),
            memory: self.memory,
            deadline: self.deadline,
            max_price: self.max_price,
            replicas: self.replicas,
            domain: self.domain.clone(),
            spot_check: self.spot_check,
            max_energy: self.max_energy.map(EnergyRate),
            seed,
            strategy: self.strategy,
        }
    }

    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let module = super::exec::read_module(&self.module)?;
        let reduce = self.reduce.as_deref().map(super::exec::read_module).transpose()?;
        // Refuse a module no provider would run, before uploading anything.
        let limits = crate::executor::Config::default();
        crate::executor::validate(&module, &limits)
            .map_err(|e| anyhow::anyhow!("{} cannot run as a job: {e}", self.module.display()))?;
        if let (Some(r), Some(path)) = (&reduce, &self.reduce) {
            crate::executor::validate(r, &limits)
                .map_err(|e| anyhow::anyhow!("{} cannot run as a reduce step: {e}", path.display()))?;
        }
        let files = match (&self.input, &self.inputs) {
            (Some(f), _) => vec![single_input(f)?],
            (None, Some(d)) => inputs_in_dir(d)?,
            (None, None) => bail!("give --input FILE or --inputs DIR"),
        };
        for f in &files {
            let size = std::fs::metadata(&f.path)
                .with_context(|| format!("cannot read {}", f.path.display()))?
                .len();
            if size > MAX_UPLOAD as u64 {
                bail!(
                    "the input {} is {}, more than the {} a task input may be",
                    f.path.display(),
                    Bytes(size),
                    Bytes(MAX_UPLOAD as u64)
                );
            }
        }
        let client = self.node.client()?;
        let seed = self.seed.unwrap_or_else(rand::random);
        let response = block_on(async {
            let module = client
                .put_content(module)
                .await
                .context("cannot upload the module")?;
            let reduce = match reduce {
                Some(r) => Some(
                    client
                        .put_content(r)
                        .await
                        .context("cannot upload the reduce module")?,
                ),
                None => None,
            };
            let inputs = upload_inputs(&client, &files).await?;
            let spec = self.spec(&module, reduce.as_ref(), inputs, seed);
            let req = SubmitRequest {
                spec,
                dry_run: self.dry_run,
            };
            client.submit(&req).await.context("the node refused the job")
        })??;
        if self.dry_run {
            let plan = response.plan.unwrap_or_default();
            if self.json {
                print_json(&plan_json(&plan))?;
            } else {
                emit(&render_plan(&plan, self.all))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        let id = response
            .id
            .context("the node answered without a job id; is it an older version?")?;
        if self.json {
            print_json(&serde_json::json!({ "id": id }))?;
        } else {
            emitln(&id.to_string())?;
            if std::io::stderr().is_terminal() {
                eprintln!(
                    "submitted {} task(s); follow it with `agora job watch {id}`",
                    files.len()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Uploads the inputs, a few at a time, and returns their specs in order.
async fn upload_inputs(client: &Client, files: &[InputFile]) -> anyhow::Result<Vec<InputSpec>> {
    futures::stream::iter(files)
        .map(|f| async move {
            let bytes = tokio::fs::read(&f.path)
                .await
                .with_context(|| format!("cannot read the input {}", f.path.display()))?;
            let r = client
                .put_content(bytes)
                .await
                .with_context(|| format!("cannot upload the input {}", f.path.display()))?;
            anyhow::Ok(InputSpec {
                name: f.name.clone(),
                id: r.id,
                size: Bytes(r.size),
                estimate: None,
            })
        })
        .buffered(TRANSFERS)
        .try_collect()
        .await
}

/// One task of the dry-run plan as JSON: its index and name with the
/// fields of its one decision (`candidates`, `excluded`, `chosen`, …).
#[derive(Serialize)]
struct PlannedTask<'a> {
    index: u32,
    name: &'a str,
    #[serde(flatten)]
    decision: Option<&'a Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates: Option<[(); 0]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    excluded: Option<[(); 0]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chosen: Option<Option<NodeId>>,
}

/// The dry-run plan as JSON.
fn plan_json(plan: &[TaskExplain]) -> serde_json::Value {
    let tasks: Vec<PlannedTask<'_>> = plan
        .iter()
        .map(|t| {
            let decision = t.decisions.first();
            // A task without a decision still shows the fields, empty.
            let none = decision.is_none();
            PlannedTask {
                index: t.index,
                name: &t.name,
                decision,
                candidates: none.then_some([]),
                excluded: none.then_some([]),
                chosen: none.then_some(None),
            }
        })
        .collect();
    let placed = plan
        .iter()
        .filter(|t| decisions(t).first().is_some_and(|d| d.chosen.is_some()))
        .count();
    serde_json::json!({
        "dry_run": true,
        "tasks": plan.len(),
        "placeable": placed,
        "plan": tasks,
    })
}

fn render_plan(plan: &[TaskExplain], all: bool) -> String {
    let placed = plan
        .iter()
        .filter(|t| decisions(t).first().is_some_and(|d| d.chosen.is_some()))
        .count();
    let mut out = format!(
        "dry run, nothing submitted: {} task(s), {placed} would be placed, {} have no eligible provider\n",
        plan.len(),
        plan.len() - placed
    );
    let shown = if all {
        plan.len()
    } else {
        EXPLAINED_TASKS.min(plan.len())
    };
    for t in &plan[..shown] {
        out.push('\n');
        let ds = decisions(t);
        match ds.first() {
            Some(d) => {
                let verdict = match &d.chosen {
                    Some(n) => format!("would go to {}", n.short()),
                    None if d.candidates.is_empty() && d.excluded.is_empty() => {
                        "no candidates: no provider in the view (are there peers? see `agora peers`)"
                            .to_owned()
                    }
                    None => "no candidates: every provider is excluded".to_owned(),
                };
                out.push_str(&format!("task {} ({}): {verdict}\n", t.index, t.name));
                render_decision(d, &mut out);
            }
            None => out.push_str(&format!("task {} ({}): no plan\n", t.index, t.name)),
        }
    }
    if shown < plan.len() {
        out.push_str(&format!(
            "\n… {} more task(s) (--all details every one)\n",
            plan.len() - shown
        ));
    }
    out
}

/// `--strategy`: scored, random or round-robin.
fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
}

// ---------------------------------------------------------------- decisions

fn decisions(t: &TaskExplain) -> &[Decision] {
    &t.decisions
}

/// Candidates (best first, `*` on the chosen), exclusions, offers and
/// declines of one decision, indented under its task.
fn render_decision(d: &Decision, out: &mut String) {
    let indent = |text: String| -> String { text.lines().map(|l| format!("    {l}\n")).collect() };
    if !d.candidates.is_empty() {
        out.push_str(&format!(
            "  candidates ({}, best first; lower score is better):\n",
            d.candidates.len()
        ));
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
            let mark = if d.chosen == Some(c.node) { "*" } else { "" };
            t.row(vec![
                mark.to_owned(),
                c.node.short(),
                format!("{:.3}", c.score),
                format!("{:.1}", c.ect_ms),
                format!("{:.1}", c.wait_ms),
                format!("{:.1}", c.transfer_ms),
                format!("{:.1}", c.run_ms),
                format!("{:.1}", c.rtt_ms),
                super::common::number(c.speed_cu),
            ]);
        }
        out.push_str(&indent(t.render()));
    }
    if !d.excluded.is_empty() {
        out.push_str(&format!("  excluded ({}):\n", d.excluded.len()));
        for (n, why) in &d.excluded {
            out.push_str(&format!("    {}  {why}\n", n.short()));
        }
    }
    if !d.offers.is_empty() {
        out.push_str(&format!("  offers ({}):\n", d.offers.len()));
        let mut t = Table::new(&["", "PEER", "PRICE", "START MS", "RUN MS", "SCORE"]).with_right(&[3, 4, 5]);
        for o in &d.offers {
            let mark = if d.chosen == Some(o.node) { "*" } else { "" };
            t.row(vec![
                mark.to_owned(),
                o.node.short(),
                o.price.to_string(),
                o.expected_start_ms.to_string(),
                o.expected_run_ms.to_string(),
                format!("{:.3}", o.score),
            ]);
        }
        out.push_str(&indent(t.render()));
    }
    if !d.declined.is_empty() {
        out.push_str(&format!("  declined ({}):\n", d.declined.len()));
        for (n, why) in &d.declined {
            out.push_str(&format!("    {}  {why}\n", n.short()));
        }
    }
}

// ------------------------------------------------------------------ status

/// Show a job's state (`pending`, `running`, `done` or `failed`), its task
/// counts by phase, the work per provider, and per-task detail.
///
/// Without `--all`, at most 50 task rows are shown: failed and unfinished
/// tasks first. PROVIDERS lists the providers whose outcome was accepted, or,
/// in parentheses, those a task is placed on now.
#[derive(Debug, clap::Args)]
pub struct StatusCommand {
    /// The job.
    pub id: JobId,
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
        let status = block_on(async { client.job(&self.id).await })??;
        if self.json {
            print_json(&status)?;
        } else {
            emit(&render_status(&status, self.all))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn render_status(s: &JobStatus, all: bool) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<9} {v}\n"));
    line("job", s.id.to_string());
    line("state", state_name(s.state).to_owned());
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
    if let Some(r) = &s.reduced {
        line("reduced", r.to_string());
    }
    if let Some(e) = &s.error {
        line("error", e.clone());
    }
    if !s.providers.is_empty() {
        let mut t =
            Table::new(&["PROVIDER", "RUNNING", "VERIFIED", "FAILED", "PAID"]).with_right(&[1, 2, 3, 4]);
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
        out.push('\n');
        out.push_str(&t.render());
    }
    let limit = if all { usize::MAX } else { TASK_ROWS };
    let rows = task_rows(&s.tasks, limit);
    if !rows.is_empty() {
        let mut t =
            Table::new(&["TASK", "NAME", "PHASE", "PROVIDERS", "FUEL", "EXIT", "ERROR"]).with_right(&[0, 4]);
        for task in &rows {
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
        out.push('\n');
        out.push_str(&t.render());
        if rows.len() < s.tasks.len() {
            out.push_str(&format!(
                "(showing {} of {} tasks, failed and unfinished first; --all shows every one)\n",
                rows.len(),
                s.tasks.len()
            ));
        }
    }
    out
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
        TaskPhase::Verified => 5,
    };
    let mut picked: Vec<&TaskStatus> = tasks.iter().collect();
    picked.sort_by_key(|t| (rank(t.phase), t.index));
    picked.truncate(limit);
    picked.sort_by_key(|t| t.index);
    picked
}

// ------------------------------------------------------------------- watch

/// Follow a job live until it ends: one bar for the tasks verified, with the
/// counts per phase, and one line per provider (tasks verified there, running
/// now). When stdout is not a terminal, prints a progress line every second
/// instead (with `--json`, one JSON object per line).
///
/// Exits 0 when the job is done, 1 when it failed.
#[derive(Debug, clap::Args)]
pub struct WatchCommand {
    /// The job.
    pub id: JobId,
    /// Print one JSON object per second (`id`, `state`, `total`, `counts`,
    /// `wall_ms`, `error`), and the last one when the job ends.
    #[arg(long)]
    pub json: bool,
    /// The node the job was submitted through.
    #[command(flatten)]
    pub node: NodeLocator,
}

/// How often the job is polled.
const POLL: Duration = Duration::from_millis(200);
/// How long the node may stay unreachable before `watch` gives up.
const UNREACHABLE_FOR: Duration = Duration::from_secs(5);

impl WatchCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let bars = !self.json && std::io::stdout().is_terminal();
        let last = block_on(async {
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
                let s = match client.job_summary(&self.id).await {
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
                    return anyhow::Ok(s);
                }
            }
        })??;
        let took = format_duration(Duration::from_millis(last.wall_ms));
        match last.state {
            JobState::Done => {
                if !self.json {
                    emitln(&format!(
                        "job {} done: {}/{} tasks verified in {took}, {} credits spent",
                        last.id, last.counts.verified, last.total, last.spent
                    ))?;
                    if last.reduced.is_some() {
                        emitln(&format!(
                            "reduced result ready: `agora job result {} --out DIR`",
                            last.id
                        ))?;
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            _ => {
                eprintln!(
                    "error: job {} failed after {took}: {}",
                    last.id,
                    last.error.as_deref().unwrap_or("no reason given")
                );
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

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
                    });
                    emitln(&line.to_string())?;
                } else {
                    emitln(&format!(
                        "[{:>7}] {}: {}/{} verified · {} · {} provider(s)",
                        format_duration(Duration::from_millis(s.wall_ms)),
                        state_name(s.state),
                        s.counts.verified,
                        s.total,
                        counts_line(&s.counts),
                        s.providers.len()
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
            "{} · {}",
            state_name(s.state),
            phase_counts_short(&s.counts)
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
    format!(
        "pending {} · placed {} · running {} · verifying {} · failed {}",
        c.pending, c.placed, c.running, c.verifying, c.failed
    )
}

// ------------------------------------------------------------------ result

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
        let names = output_names(&result.outputs);
        let jobs: Vec<(ContentId, PathBuf, &OutputRef)> = result
            .outputs
            .iter()
            .zip(&names)
            .filter_map(|(o, n)| o.id.map(|id| (id, self.out.join(n), o)))
            .collect();
        let out = &self.out;
        let (written, reduced) = block_on(async {
            let client = &client;
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
                    let path = out.join(reduced_name(&bytes));
                    write_file(&path, &bytes)?;
                    Some(serde_json::json!({ "id": id, "size": bytes.len(), "path": path }))
                }
                None => None,
            };
            anyhow::Ok((written, reduced))
        })??;
        let missing: Vec<u32> = result
            .outputs
            .iter()
            .filter(|o| o.id.is_none())
            .map(|o| o.index)
            .collect();
        if self.json {
            print_json(&serde_json::json!({
                "id": result.id,
                "state": result.state,
                "dir": self.out,
                "outputs": written,
                "reduced": reduced,
                "missing": missing,
            }))?;
        } else {
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
        }
        Ok(ExitCode::SUCCESS)
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

// ------------------------------------------------------------------ cancel

/// Cancel a job: its pending tasks are dropped and running copies withdrawn.
#[derive(Debug, clap::Args)]
pub struct CancelCommand {
    /// The job.
    pub id: JobId,
    /// Print the job's summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// The node the job was submitted through.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl CancelCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let client = self.node.client()?;
        let summary = block_on(async { client.cancel(&self.id).await })??;
        if self.json {
            print_json(&summary)?;
        } else {
            emitln(&format!(
                "cancelled job {}: {} of {} tasks were verified; state {}",
                summary.id,
                summary.verified,
                summary.tasks,
                state_name(summary.state)
            ))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

// ---------------------------------------------------------------- receipts

/// Save every signed receipt a job's providers returned into DIR, one file
/// per copy named `<task name>.<attempt>.receipt` (the receipt envelope's
/// binary encoding). Check one with
/// `agora verify DIR/<file> --module MODULE --input INPUT`.
#[derive(Debug, clap::Args)]
pub struct ReceiptsCommand {
    /// The job.
    pub id: JobId,
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
        let status = block_on(async { client.job_with_receipts(&self.id).await })??;
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

// ----------------------------------------------------------------- explain

/// Show the placement decisions taken for a job's tasks: per decision, the
/// candidates with their scores (lower is better; `*` marks the chosen one),
/// the providers excluded and why, the offers received and the declines.
///
/// The node keeps the last few decisions of recent tasks only.
#[derive(Debug, clap::Args)]
pub struct ExplainCommand {
    /// The job.
    pub id: JobId,
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
        let explain = block_on(async { client.explain(&self.id).await })??;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        submit: SubmitCommand,
    }

    fn submit(args: &[&str]) -> SubmitCommand {
        let mut argv = vec!["agora", "m.wat"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().submit
    }

    #[test]
    fn inputs_are_the_regular_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["tile-10.json", "tile-02.json", "b", ".hidden"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/inner"), "x").unwrap();
        let names: Vec<String> = inputs_in_dir(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["b", "tile-02.json", "tile-10.json"]);
    }

    #[test]
    fn an_empty_inputs_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let e = inputs_in_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no input files"), "{e}");
    }

    #[test]
    fn a_single_input_must_be_a_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(single_input(dir.path()).is_err());
        let f = dir.path().join("in.bin");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(single_input(&f).unwrap().name, "in.bin");
    }

    #[test]
    fn spec_has_the_documented_defaults() {
        let c = submit(&["--input", "x"]);
        let module = ContentRef {
            id: ContentId::of(b"m"),
            size: 1,
        };
        let spec = c.spec(&module, None, vec![], 7);
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.max_price, Price::per_cu_second(1));
        assert_eq!(spec.deadline, Duration::from_secs(60));
        assert_eq!(spec.fuel, Fuel(10_000_000_000));
        assert_eq!(spec.memory, Bytes::mib(256));
        assert_eq!(spec.spot_check, 0.0);
        assert_eq!(spec.estimate, None);
        assert_eq!(spec.strategy, Strategy::Scored);
        assert_eq!(spec.seed, 7);
        assert_eq!(spec.module_size, Bytes(1));
    }

    #[test]
    fn spec_takes_every_flag() {
        let c = submit(&[
            "--inputs",
            "d",
            "--arg",
            "-v",
            "--arg",
            "x",
            "--replicas",
            "3",
            "--max-price",
            "0.5",
            "--deadline",
            "1m30s",
            "--domain",
            "eu/de",
            "--fuel",
            "1000",
            "--estimate",
            "10",
            "--memory",
            "64MiB",
            "--spot-check",
            "0.25",
            "--max-energy",
            "15",
            "--seed",
            "9",
            "--strategy",
            "round-robin",
            "--reduce",
            "r.wat",
            "--reduce-arg",
            "--sum",
        ]);
        let module = ContentRef {
            id: ContentId::of(b"m"),
            size: 10,
        };
        let reduce = ContentRef {
            id: ContentId::of(b"r"),
            size: 1,
        };
        let spec = c.spec(&module, Some(&reduce), vec![], 9);
        assert_eq!(spec.args, ["-v", "x"]);
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.max_price, Price(500_000));
        assert_eq!(spec.deadline, Duration::from_secs(90));
        assert_eq!(spec.domain, Some("eu/de".parse().unwrap()));
        assert_eq!(spec.fuel, Fuel(1000));
        assert_eq!(spec.estimate, Some(Fuel(10)));
        assert_eq!(spec.memory, Bytes::mib(64));
        assert_eq!(spec.spot_check, 0.25);
        assert_eq!(spec.max_energy, Some(EnergyRate(15)));
        assert_eq!(spec.reduce, Some(reduce.id));
        assert_eq!(spec.reduce_args, ["--sum"]);
        assert_eq!(spec.strategy, Strategy::RoundRobin);
    }

    #[test]
    fn submit_needs_exactly_one_input_source() {
        assert!(Cli::try_parse_from(["agora", "m.wat"]).is_err());
        assert!(Cli::try_parse_from(["agora", "m.wat", "--input", "a", "--inputs", "d"]).is_err());
        assert!(Cli::try_parse_from(["agora", "m.wat", "--input", "a", "--spot-check", "1.5"]).is_err());
    }

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
            spot_checked: false,
            copies: vec![],
        }
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

    #[test]
    fn dry_run_json_flattens_the_decision() {
        let plan = [TaskExplain {
            index: 0,
            name: "in".into(),
            decisions: vec![Decision {
                at: agora_protocol::units::Timestamp(1),
                attempt: 0,
                candidates: vec![],
                excluded: vec![],
                offers: vec![],
                declined: vec![],
                chosen: None,
            }],
        }];
        let v = plan_json(&plan);
        assert_eq!(v["placeable"], 0);
        assert_eq!(v["plan"][0]["name"], "in");
        assert_eq!(v["plan"][0]["candidates"], serde_json::json!([]));
        assert!(v["plan"][0]["chosen"].is_null());
        assert!(render_plan(&plan, false).contains("no provider in the view"));
        // A task without a decision shows the same fields, empty.
        let bare = [TaskExplain::new(1, "other".into(), vec![])];
        let v = plan_json(&bare);
        assert_eq!(v["plan"][0]["excluded"], serde_json::json!([]));
        assert!(v["plan"][0]["chosen"].is_null());
    }
}

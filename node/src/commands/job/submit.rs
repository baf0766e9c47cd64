//! `agora job submit`: upload a module and its inputs to the node and
//! submit them as a job, one task per input.
//!
//! Everything that can be refused locally is refused before anything is
//! uploaded: a module no provider would run, a missing or oversized input.
//! Then the module, the reduce module and the inputs (a few at a time) go to
//! the node's content store, and the job spec built from the flags names
//! them by content id. With `--dry-run` the node plans the job's placement
//! without submitting it, and the plan is printed instead of a job id.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_protocol::execution::ExitStatus;
use agora_protocol::limits::MAX_BLOB;
use agora_protocol::market::Limits;
use agora_protocol::units::{Bytes, EnergyRate, Fuel, Millis, Price, format_duration, parse_duration};
use agora_protocol::{ContentId, Domain, JobId, NodeId};
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::TRANSFERS;
use super::inputs::{InputFile, Symlinks, inputs_in_dir, read_input, single_input};
use super::render::{EXPLAINED_TASKS, decisions, render_decision};
use crate::api::client::Client;
use crate::api::server::MAX_UPLOAD;
use crate::api::{ContentRef, SubmitRequest, SubmitResponse, TaskExplain};
use crate::commands::common::{NodeLocator, block_on, emit, emitln, print_json};
use crate::commands::exec::{cli_executor, read_module, run_module};
use crate::commands::refs::JobRef;
use crate::market::job::{DEFAULT_MAX_OUTPUT, InputSpec, JobSpec, Strategy};
use crate::market::requester::Decision;

/// Upload a module and its inputs to the node and submit them as a job: one
/// task per input.
///
/// With `--inputs-from JOB`, the job is the next stage of a pipeline: task
/// i takes task i's verified output of JOB (a job submitted on the same
/// node, named by a unique prefix of its id), named after that task, and is
/// placed as soon as it is verified, while JOB still runs. A task whose
/// input failed for good fails too.
///
/// With `--inputs-id ID`, every file of a dataset published with `agora
/// publish` (on any node) is one task, named after its file; the node finds
/// the dataset's manifest on the network and nothing but the module is
/// uploaded.
///
/// With `--inputs DIR`, every regular file directly in DIR (subdirectories
/// and hidden files, whose names start with `.`, left out) is one task, in
/// file-name order, named after its file. With `--input FILE`, the job has
/// that one task. Inputs are uploaded to other machines, so a symbolic link
/// is refused unless `--follow-symlinks` is given, and special files
/// (fifos, devices, sockets, files in /proc) always are. The module may be a
/// wasm binary or WebAssembly text (`.wat`).
///
/// Prints the new job's id (with `--json`: `{"id": "…"}`). With `--dry-run`
/// nothing is submitted: it prints, per task, the providers that would be
/// asked with their scores (lower is better), those left out and why, and
/// the one that would be chosen.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("task_inputs").args(["input", "inputs", "inputs_id", "inputs_from"]))]
pub struct SubmitCommand {
    /// The module: a wasm binary or WebAssembly text.
    pub module: PathBuf,
    /// The input of a single-task job.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// A directory of inputs, one task per file.
    #[arg(long, value_name = "DIR")]
    pub inputs: Option<PathBuf>,
    /// A dataset published on the network (`agora publish`), one task per
    /// file: nothing is uploaded, providers fetch the files from the
    /// dataset's holders.
    #[arg(long, value_name = "ID")]
    pub inputs_id: Option<ContentId>,
    /// Another job on this node whose outputs are the inputs, one task per
    /// task of it: task i starts as soon as that job's task i is verified
    /// (a pipeline stage).
    #[arg(long, value_name = "JOB")]
    pub inputs_from: Option<JobRef>,
    /// Read inputs that are symbolic links (to regular files); without it a
    /// link among the inputs is an error.
    #[arg(long)]
    pub follow_symlinks: bool,
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
    /// Fuel a task is expected to use, for placement. Default: measured by
    /// running the largest input here first (at most 5 s, with its task's
    /// seed and the job's limits); the limit if that run cannot tell.
    #[arg(long, value_name = "N")]
    pub estimate: Option<u64>,
    /// Memory limit of each task, like `64MiB`.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub memory: Bytes,
    /// The largest output a task may write, like `1MiB` (providers may
    /// allow less: 16MiB by default).
    #[arg(long, value_name = "SIZE")]
    pub max_output: Option<Bytes>,
    /// Fraction of tasks this node re-executes to check providers, in [0, 1].
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub spot_check: f64,
    /// How long the job waits while no provider can take its tasks, like
    /// `10m` or `24h`; `job status` says what it waits for. Default: the
    /// node's `unplaceable_after` (1h). Given, the job is accepted even if
    /// no provider known now fits it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Only providers carrying this label, like `arch=x86_64` or
    /// `zone=rack-3` (`agora peers` lists them); repeat for more, all
    /// required. `job explain` says which providers a selector removed.
    #[arg(long = "select", value_name = "KEY=VALUE")]
    pub select: Vec<agora_protocol::capacity::Label>,
    /// Latency class: `interactive` tasks go where they finish soonest
    /// (near domains first) and start ahead of batch work on a provider;
    /// `batch` tasks go where they are cheapest and fastest. Pair
    /// `interactive` with a tight --deadline.
    #[arg(long, value_name = "CLASS", default_value = "batch")]
    pub class: agora_protocol::market::LatencyClass,
    /// The most energy the whole job may take, in joules, from the
    /// providers' energy per CU-second (measured with RAPL, or declared) and
    /// each task's fuel estimate: placement then takes the least energy among
    /// providers that meet the deadline, and a budget no provider known can
    /// meet is refused with what it would take.
    #[arg(long, value_name = "JOULES")]
    pub energy_budget: Option<f64>,
    /// Failed tasks the job tolerates: a count (`3`), a percentage (`10%`)
    /// or a fraction below 1 (`0.1`) of its tasks. Every task then runs,
    /// and the job is done with its failures named unless more fail.
    /// Default 0: the first task that fails ends the job.
    #[arg(long, value_name = "N|P%", value_parser = parse_failures)]
    pub max_failures: Option<Failures>,
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

/// `--max-failures`: a count of tasks, or a share of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failures {
    /// At most this many tasks.
    Count(u32),
    /// At most this share of the tasks, in [0, 1).
    Share(f64),
}

impl Failures {
    /// The count for a job of `tasks` tasks (a share rounds down).
    pub fn of(self, tasks: usize) -> u32 {
        match self {
            Failures::Count(n) => n,
            Failures::Share(f) => (f * tasks as f64).floor() as u32,
        }
    }
}

fn parse_failures(s: &str) -> Result<Failures, String> {
    let t = s.trim();
    let share = |f: f64| {
        if (0.0..1.0).contains(&f) {
            Ok(Failures::Share(f))
        } else {
            Err(format!(
                "`{s}` is not a share below 100% (give a count, like 3, or a share, like 10% or 0.1)"
            ))
        }
    };
    if let Some(p) = t.strip_suffix('%') {
        let p: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a percentage"))?;
        return share(p / 100.0);
    }
    if let Ok(n) = t.parse::<u32>() {
        return Ok(Failures::Count(n));
    }
    match t.parse::<f64>() {
        Ok(f) => share(f),
        Err(_) => Err(format!("`{s}` is neither a count (3) nor a share (10% or 0.1)")),
    }
}

/// `--strategy`: scored, random or round-robin.
fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
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
        let inputs_len = inputs.len();
        JobSpec {
            module: module.id,
            module_size: Bytes(module.size),
            reduce: reduce.map(|r| r.id),
            inputs,
            dataset: None,
            inputs_from: None,
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
            max_output: self.max_output,
            max_failures: self.max_failures.map_or(0, |f| f.of(inputs_len)),
            ttl: self.ttl,
            select: self.select.clone(),
            class: self.class,
            energy_budget: self.energy_budget,
        }
    }

    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        if super::jobfile::is_job_file(&self.module) {
            return super::jobfile::submit(self);
        }
        let json = self.json;
        let dry_run = self.dry_run;
        let all = self.all;
        let Submitted {
            response,
            estimate,
            tasks,
        } = self.submit()?;
        if dry_run {
            let plan = response.plan.unwrap_or_default();
            if json {
                let mut v = plan_json(&plan);
                v["estimate"] = serde_json::to_value(&estimate)?;
                print_json(&v)?;
            } else {
                emitln(&estimate.describe())?;
                emit(&render_plan(&plan, all))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        let id = response
            .id
            .context("the node answered without a job id; is it an older version?")?;
        if json {
            print_json(&serde_json::json!({ "id": id, "estimate": estimate }))?;
        } else {
            if !matches!(estimate, Estimate::Given { .. }) {
                eprintln!("{}", estimate.describe());
            }
            emitln(&id.to_string())?;
            if std::io::stderr().is_terminal() {
                eprintln!("submitted {tasks} task(s); follow it with `agora job watch {id}`");
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Uploads what the job needs and submits (or, with `--dry-run`,
    /// plans) it.
    pub(super) fn submit(self) -> anyhow::Result<Submitted> {
        if self.input.is_none()
            && self.inputs.is_none()
            && self.inputs_id.is_none()
            && self.inputs_from.is_none()
        {
            bail!(
                "give the tasks' inputs: --input FILE, --inputs DIR, --inputs-id DATASET or --inputs-from JOB"
            );
        }
        let (module, reduce) = self.modules()?;
        let client = self.node.client()?;
        let inputs = match (self.inputs_id, &self.inputs_from) {
            (Some(id), _) => {
                let c = client.clone();
                let d = block_on(async move { c.dataset(&id).await })?.context("cannot find the dataset")?;
                TaskInputs::Dataset(d)
            }
            (None, Some(job)) => {
                let (c, job) = (client.clone(), job.clone());
                let id = block_on(async move { job.resolve(&c).await })??;
                let c = client.clone();
                let upstream = block_on(async move { c.job_summary(&id).await })?
                    .with_context(|| format!("cannot read the job {id}"))?;
                TaskInputs::Job(id, upstream.total)
            }
            (None, None) => TaskInputs::Files(self.task_inputs()?),
        };
        let seed = self.seed.unwrap_or_else(rand::random);
        let estimate = match self.estimate {
            Some(fuel) => Estimate::Given { fuel },
            None => self.sample(&client, &module, &inputs, seed),
        };
        let tasks = inputs.len();
        let response = block_on(self.send(&client, module, reduce, inputs, seed, estimate.fuel()))??;
        Ok(Submitted {
            response,
            estimate,
            tasks,
        })
    }

    /// The module and the reduce module, refused if no provider would run
    /// them.
    fn modules(&self) -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
        let module = read_module(&self.module)?;
        let reduce = self.reduce.as_deref().map(read_module).transpose()?;
        let limits = crate::executor::Config::default();
        crate::executor::validate(&module, &limits)
            .map_err(|e| anyhow::anyhow!("{} cannot run as a job: {e}", self.module.display()))?;
        if let (Some(r), Some(path)) = (&reduce, &self.reduce) {
            crate::executor::validate(r, &limits)
                .map_err(|e| anyhow::anyhow!("{} cannot run as a reduce step: {e}", path.display()))?;
        }
        Ok((module, reduce))
    }

    /// The fuel estimate without `--estimate`: the job's largest input run
    /// here as its task will run (its seed, the job's fuel, memory and
    /// output limits) for at most [`SAMPLE_TIMEOUT`]. A run that ends for a
    /// reason of its own (success, exit, trap) used exactly the fuel its
    /// task will use anywhere; one that hits the time or fuel limit tells
    /// nothing, and the limit stands in (a guess, said so).
    fn sample(&self, client: &Client, module: &[u8], inputs: &TaskInputs, seed: u64) -> Estimate {
        let guess = |why: String| Estimate::Guess { fuel: self.fuel, why };
        let (index, name, input) = match inputs {
            TaskInputs::Files(files) => {
                let Some((index, file)) = files.iter().enumerate().max_by_key(|(_, f)| f.size) else {
                    return guess("the job has no input to measure".into());
                };
                (
                    index,
                    &file.name,
                    read_input(file, self.symlinks(), MAX_UPLOAD as u64),
                )
            }
            TaskInputs::Job(..) => {
                return guess("the inputs are another job's outputs, not known before it runs".into());
            }
            TaskInputs::Dataset(d) => {
                let Some((index, file)) = d.files.iter().enumerate().max_by_key(|(_, f)| f.size) else {
                    return guess("the job has no input to measure".into());
                };
                let (c, id) = (client.clone(), file.id);
                let bytes = block_on(async move { c.get_content(&id).await })
                    .and_then(|r| r.map_err(anyhow::Error::from))
                    .with_context(|| "it is not on this node".to_string());
                (index, &file.name, bytes)
            }
        };
        let name = name.clone();
        let input = match input {
            Ok(b) => b,
            Err(e) => return guess(format!("{name} could not be read: {e:#}")),
        };
        let data_dir = crate::paths::data_dir(self.node.data_dir.clone());
        let executor = match cli_executor(&data_dir, self.memory) {
            Ok(x) => x,
            Err(e) => return guess(format!("no sandbox here to measure in: {e:#}")),
        };
        let limits = Limits {
            fuel: Fuel(self.fuel),
            memory: self.memory,
            timeout: Millis::from(SAMPLE_TIMEOUT),
            max_output: Bytes(
                self.max_output
                    .unwrap_or(DEFAULT_MAX_OUTPUT)
                    .0
                    .min(MAX_BLOB as u64),
            ),
        };
        let task_seed = crate::market::job::task_seed(seed, index as u32);
        let outcome = run_module(&executor, module, &input, &self.args, limits, task_seed);
        let wall_ms = outcome.wall.as_millis() as u64;
        match outcome.exit_status() {
            ExitStatus::Deadline => guess(format!(
                "a sample run of {} did not end within {} here",
                name,
                format_duration(SAMPLE_TIMEOUT)
            )),
            ExitStatus::OutOfFuel => guess(format!(
                "a sample run of {} used all {} fuel of the limit: the tasks likely need a higher --fuel",
                name, self.fuel
            )),
            exit => Estimate::Measured {
                fuel: outcome.fuel_used.0.max(1),
                input: name.clone(),
                wall_ms,
                exit: exit.to_string(),
            },
        }
    }

    /// Whether inputs may be read through symbolic links.
    fn symlinks(&self) -> Symlinks {
        if self.follow_symlinks {
            Symlinks::Follow
        } else {
            Symlinks::Refuse
        }
    }

    /// The input files, each checked against the largest upload.
    fn task_inputs(&self) -> anyhow::Result<Vec<InputFile>> {
        let files = match (&self.input, &self.inputs) {
            (Some(f), _) => vec![single_input(f, self.symlinks())?],
            (None, Some(d)) => inputs_in_dir(d, self.symlinks())?,
            (None, None) => bail!("give --input FILE or --inputs DIR"),
        };
        for f in &files {
            if f.size > MAX_UPLOAD as u64 {
                bail!(
                    "the input {} is {}, more than the {} a task input may be",
                    f.path.display(),
                    Bytes(f.size),
                    Bytes(MAX_UPLOAD as u64)
                );
            }
        }
        Ok(files)
    }

    /// Uploads the modules and the inputs, then submits (or plans) the job.
    async fn send(
        &self,
        client: &Client,
        module: Vec<u8>,
        reduce: Option<Vec<u8>>,
        inputs: TaskInputs,
        seed: u64,
        estimate: Option<Fuel>,
    ) -> anyhow::Result<SubmitResponse> {
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
        let tasks = inputs.len();
        let (inputs, dataset, upstream) = match inputs {
            TaskInputs::Files(files) => (upload_inputs(client, &files, self.symlinks()).await?, None, None),
            // The node fills the inputs from the upstream job.
            TaskInputs::Job(id, _) => (Vec::new(), None, Some(id)),
            TaskInputs::Dataset(d) => (
                d.files
                    .into_iter()
                    .map(|f| InputSpec {
                        name: f.name,
                        id: f.id,
                        size: f.size,
                        estimate: None,
                    })
                    .collect(),
                Some(d.id),
                None,
            ),
        };
        let mut spec = self.spec(&module, reduce.as_ref(), inputs, seed);
        spec.estimate = estimate;
        spec.dataset = dataset;
        spec.inputs_from = upstream;
        // A share of failures counts the tasks the node fills in too.
        spec.max_failures = self.max_failures.map_or(0, |f| f.of(tasks));
        let req = SubmitRequest {
            spec,
            dry_run: self.dry_run,
        };
        client.submit(&req).await.context("the node refused the job")
    }
}

/// What the node answered to a submission.
pub(super) struct Submitted {
    /// Its answer: the job id, or the plan.
    pub(super) response: SubmitResponse,
    /// The fuel estimate the job carries.
    estimate: Estimate,
    /// How many tasks it has.
    pub(super) tasks: usize,
}

/// Where a job's task inputs come from.
enum TaskInputs {
    /// Files here, uploaded at submit.
    Files(Vec<InputFile>),
    /// A dataset on the network.
    Dataset(crate::api::DatasetView),
    /// The outputs of a job on the node, and how many tasks it has.
    Job(JobId, usize),
}

impl TaskInputs {
    /// The number of tasks.
    fn len(&self) -> usize {
        match self {
            TaskInputs::Files(f) => f.len(),
            TaskInputs::Dataset(d) => d.files.len(),
            TaskInputs::Job(_, tasks) => *tasks,
        }
    }
}

/// How long `job submit` may run a sample task to measure the estimate.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A task's fuel estimate, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
enum Estimate {
    /// `--estimate`.
    Given {
        /// Fuel per task.
        fuel: u64,
    },
    /// Measured by running one input here.
    Measured {
        /// Fuel the sample used.
        fuel: u64,
        /// The input run.
        input: String,
        /// How long it took here.
        wall_ms: u64,
        /// How it ended.
        exit: String,
    },
    /// The fuel limit, for want of a measure.
    Guess {
        /// Fuel per task (the limit).
        fuel: u64,
        /// Why nothing was measured.
        why: String,
    },
}

impl Estimate {
    /// The estimate the job spec carries (none: the limit).
    fn fuel(&self) -> Option<Fuel> {
        match self {
            Estimate::Given { fuel } | Estimate::Measured { fuel, .. } => Some(Fuel(*fuel)),
            Estimate::Guess { .. } => None,
        }
    }

    /// One line for people.
    fn describe(&self) -> String {
        match self {
            Estimate::Given { fuel } => format!("estimate: {fuel} fuel per task (--estimate)"),
            Estimate::Measured {
                fuel,
                input,
                wall_ms,
                exit,
            } => {
                let mut line = format!(
                    "estimate: {fuel} fuel per task, measured on {input} here in {wall_ms} ms (--estimate N sets it)"
                );
                if exit != "success" {
                    line.push_str(&format!(
                        "\nwarning: that run failed here ({exit}): the job's tasks may fail the same way; `agora exec` shows why"
                    ));
                }
                line
            }
            Estimate::Guess { fuel, why } => {
                format!("estimate: a guess, the fuel limit ({fuel}) per task: {why} (--estimate N sets it)")
            }
        }
    }
}

/// Uploads the inputs, a few at a time, and returns their specs in order,
/// each declaring the size that was read (the node checks it against what
/// it stored).
pub(crate) async fn upload_inputs(
    client: &Client,
    files: &[InputFile],
    links: Symlinks,
) -> anyhow::Result<Vec<InputSpec>> {
    futures::stream::iter(files)
        .map(|f| async move {
            let file = f.clone();
            let bytes = tokio::task::spawn_blocking(move || read_input(&file, links, MAX_UPLOAD as u64))
                .await
                .context("the input reader stopped")??;
            let size = bytes.len() as u64;
            let r = client
                .put_content(bytes)
                .await
                .with_context(|| format!("cannot upload the input {}", f.path.display()))?;
            if r.size != size {
                bail!(
                    "the node stored {} bytes of the input {} but {size} were sent; submit again",
                    r.size,
                    f.path.display()
                );
            }
            anyhow::Ok(InputSpec {
                name: f.name.clone(),
                id: r.id,
                size: Bytes(size),
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
    serde_json::json!({
        "dry_run": true,
        "tasks": plan.len(),
        "placeable": placeable(plan),
        "plan": tasks,
    })
}

/// The tasks of a plan whose decision chose a provider.
fn placeable(plan: &[TaskExplain]) -> usize {
    plan.iter()
        .filter(|t| decisions(t).first().is_some_and(|d| d.chosen.is_some()))
        .count()
}

/// The dry-run plan as text: a summary line, then each task's decision.
fn render_plan(plan: &[TaskExplain], all: bool) -> String {
    let placed = placeable(plan);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use agora_protocol::ContentId;
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
    fn max_failures_is_a_count_or_a_share_of_the_tasks() {
        let inputs = |n| {
            (0..n)
                .map(|i| InputSpec {
                    name: format!("{i}"),
                    id: ContentId::of(b"i"),
                    size: Bytes(1),
                    estimate: None,
                })
                .collect::<Vec<_>>()
        };
        let module = ContentRef {
            id: ContentId::of(b"m"),
            size: 1,
        };
        let count = |args: &[&str], n| submit(args).spec(&module, None, inputs(n), 1).max_failures;
        assert_eq!(count(&["--inputs", "d"], 30), 0);
        assert_eq!(count(&["--inputs", "d", "--max-failures", "3"], 30), 3);
        assert_eq!(count(&["--inputs", "d", "--max-failures", "10%"], 30), 3);
        assert_eq!(count(&["--inputs", "d", "--max-failures", "0.25"], 30), 7);
        for bad in ["100%", "1.5", "-1", "some"] {
            let argv = ["agora", "m.wat", "--inputs", "d", "--max-failures", bad];
            assert!(Cli::try_parse_from(argv).is_err(), "{bad}");
        }
    }

    #[test]
    fn submit_needs_exactly_one_input_source() {
        // No input at all parses (a job file names its own) but is refused
        // before anything is read or uploaded.
        let none = Cli::try_parse_from(["agora", "m.wat"]).unwrap().submit;
        let err = none.submit().err().expect("refused").to_string();
        assert!(err.contains("--inputs-from JOB"), "{err}");
        assert!(Cli::try_parse_from(["agora", "m.wat", "--input", "a", "--inputs", "d"]).is_err());
        assert!(Cli::try_parse_from(["agora", "m.wat", "--input", "a", "--spot-check", "1.5"]).is_err());
        let id = agora_protocol::ContentId::of(b"manifest").to_string();
        assert!(Cli::try_parse_from(["agora", "m.wat", "--inputs-id", &id, "--inputs", "d"]).is_err());
        assert!(Cli::try_parse_from(["agora", "m.wat", "--inputs-id", "not-an-id"]).is_err());
        let c = Cli::try_parse_from(["agora", "m.wat", "--inputs-id", &id]).unwrap();
        assert_eq!(c.submit.inputs_id.map(|i| i.to_string()), Some(id));
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
                unasked: vec![],
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

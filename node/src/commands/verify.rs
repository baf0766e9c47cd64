//! `agora verify`: re-executes a receipt's task and says whether the
//! receipt holds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_protocol::execution::{ExitStatus, Receipt};
use agora_protocol::id::ContentId;
use agora_protocol::limits::MAX_BLOB;
use agora_protocol::market::{Arg, Limits, args_digest};
use agora_protocol::units::{Bytes, Fuel, Millis, parse_duration};
use agora_protocol::{Decode, Envelope, Verified};
use anyhow::Context;

use super::common::block_on;
use super::exec::{cli_executor, read_input, read_module, run_module};
use super::refs::JobRef;
use crate::api::client::{self, Client};
use crate::executor::{Executor, Outcome};

/// Check a receipt: its signature, that the files are what it names, and
/// that re-executing them (same seed, same fuel limit) gives the same
/// output, fuel and exit status.
///
/// Prints `receipt holds` and exits 0, or lists what differs and exits 1.
///
/// With `--job ID` instead of a file, checks every receipt the job's
/// providers returned, fetching the module and the inputs from the node the
/// job was submitted through: each task is re-executed once and every copy's
/// receipt compared with that run. Prints a line per receipt and a count;
/// exits 0 when every receipt that can be reproduced holds, 1 otherwise.
#[derive(Debug, clap::Args)]
pub struct VerifyCommand {
    /// The receipt envelope (as `agora exec --receipt` or `agora job
    /// receipts` writes it).
    #[arg(required_unless_present = "job", conflicts_with = "job")]
    pub receipt: Option<PathBuf>,
    /// The module the receipt names (binary or `.wat`).
    #[arg(
        long,
        value_name = "M",
        required_unless_present = "job",
        conflicts_with = "job"
    )]
    pub module: Option<PathBuf>,
    /// The input the receipt names (`-` reads stdin). Default: empty.
    #[arg(long, value_name = "I", conflicts_with = "job")]
    pub input: Option<PathBuf>,
    /// The task's arguments, in order; repeat for more.
    #[arg(
        long = "arg",
        value_name = "A",
        allow_hyphen_values = true,
        conflicts_with = "job"
    )]
    pub args: Vec<String>,
    /// Check every receipt of this job (a whole id or a unique prefix).
    #[arg(long, value_name = "ID")]
    pub job: Option<JobRef>,
    /// Memory limit for the re-execution (receipts do not record it).
    /// Default: 256MiB, or the job's own limit with `--job`.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<Bytes>,
    /// Wall-clock limit for each re-execution.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// The data dir (compiled-module cache; with `--job`, the node to ask).
    /// Default: `$AGORA_DATA_DIR`, then the platform's data dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// With `--job`: the node's API address, instead of --data-dir.
    #[arg(long, value_name = "ADDR", requires = "token", requires = "job")]
    pub api: Option<String>,
    /// With `--job` and `--api`: the API bearer token.
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
}

/// Memory a re-execution gets unless told otherwise.
const DEFAULT_MEMORY: Bytes = Bytes::mib(256);

/// One compared field.
#[derive(Debug, serde::Serialize)]
/// Ids and exit statuses are strings, counts (fuel, bytes) numbers.
struct Check {
    field: &'static str,
    receipt: serde_json::Value,
    actual: serde_json::Value,
    ok: bool,
}

fn check(field: &'static str, receipt: impl ToString, actual: impl ToString) -> Check {
    let (receipt, actual) = (receipt.to_string(), actual.to_string());
    Check {
        field,
        ok: receipt == actual,
        receipt: receipt.into(),
        actual: actual.into(),
    }
}

fn check_count(field: &'static str, receipt: u64, actual: u64) -> Check {
    Check {
        field,
        ok: receipt == actual,
        receipt: receipt.into(),
        actual: actual.into(),
    }
}

/// A checked value as text: strings bare, numbers as they are.
fn shown(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What checking one receipt found.
struct Verdict {
    holds: bool,
    /// Whether the receipt could be judged at all: a run stopped by its
    /// wall-clock limit depends on the provider's speed.
    reproducible: bool,
    receipt: Option<Verified<Receipt>>,
    checks: Vec<Check>,
    note: Option<String>,
}

impl Verdict {
    fn refused(receipt: Option<Verified<Receipt>>, checks: Vec<Check>, note: String) -> Verdict {
        Verdict {
            holds: false,
            reproducible: true,
            receipt,
            checks,
            note: Some(note),
        }
    }
}

/// Why some bytes are not a receipt to check.
#[derive(Debug, thiserror::Error)]
enum NotAReceipt {
    #[error("not an envelope")]
    Envelope,
    #[error("an envelope of another type")]
    OtherType,
}

/// Opens a receipt envelope: `Err` if it is not one, `Ok(Err(why))` if it
/// is one whose signature does not verify.
fn open_receipt(bytes: &[u8]) -> Result<Result<Verified<Receipt>, String>, NotAReceipt> {
    let envelope = Envelope::from_bytes(bytes).map_err(|_| NotAReceipt::Envelope)?;
    if envelope.payload_type() != <Receipt as agora_protocol::Payload>::TYPE.code() {
        return Err(NotAReceipt::OtherType);
    }
    Ok(envelope
        .open_ignoring_time::<Receipt>()
        .map_err(|e| format!("the receipt's signature does not verify: {e}")))
}

/// Re-executions already done, by everything that decides their outcome:
/// replicas of one task are compared with one run.
type Runs = HashMap<(ContentId, ContentId, ContentId, u64, Fuel, Bytes), Outcome>;

/// Where receipts are re-executed: the sandbox, its limits, and the runs
/// already done.
struct Sandbox<'a> {
    executor: &'a Executor,
    memory: Bytes,
    timeout: Duration,
    runs: Runs,
}

impl Sandbox<'_> {
    /// Checks `verified` against the module, input and arguments it should
    /// name, re-executing them (or reusing an identical run).
    fn judge(&mut self, verified: Verified<Receipt>, wasm: &[u8], input: &[u8], args: &[String]) -> Verdict {
        judge(verified, wasm, input, args, self)
    }
}

fn judge(
    verified: Verified<Receipt>,
    wasm: &[u8],
    input: &[u8],
    args: &[String],
    sandbox: &mut Sandbox<'_>,
) -> Verdict {
    let (memory, timeout, executor) = (sandbox.memory, sandbox.timeout, sandbox.executor);
    let r = verified.payload().clone();
    let arg_list: Vec<Arg> = args.iter().cloned().map(Arg).collect();
    let mut checks = vec![
        check("module", r.module, ContentId::of(wasm)),
        check("input", r.input, ContentId::of(input)),
        check("args", r.args, args_digest(&arg_list)),
    ];
    if checks.iter().any(|c| !c.ok) {
        let note = "the files are not the ones the receipt names; nothing was re-executed".to_owned();
        return Verdict::refused(Some(verified), checks, note);
    }
    if !r.exit.is_deterministic() {
        let note = format!(
            "the receipt reports `{}`, which depends on the provider's speed and cannot be reproduced",
            r.exit
        );
        return Verdict {
            reproducible: false,
            ..Verdict::refused(Some(verified), checks, note)
        };
    }
    // Receipts do not carry the output limit. A run that overflowed
    // stopped with exactly `limit` bytes captured; any other run is
    // reproduced by any limit at least as large as its output.
    let max_output = if r.exit == ExitStatus::OutputTooLarge {
        r.output_size
    } else {
        Bytes(r.output_size.0.max(MAX_BLOB as u64))
    };
    let limits = Limits {
        fuel: r.fuel_limit,
        memory,
        timeout: Millis::from(timeout),
        max_output,
    };
    let key = (r.module, r.input, r.args, r.seed, r.fuel_limit, max_output);
    let outcome = sandbox
        .runs
        .entry(key)
        .or_insert_with(|| run_module(executor, wasm, input, args, limits, r.seed));
    checks.extend([
        check("exit", &r.exit, outcome.exit_status()),
        check_count("fuel_used", r.fuel_used.0, outcome.fuel_used.0),
        check("output", r.output, outcome.output_id()),
        check_count("output_size", r.output_size.0, outcome.output.len() as u64),
    ]);
    Verdict {
        holds: checks.iter().all(|c| c.ok),
        reproducible: true,
        receipt: Some(verified),
        checks,
        note: None,
    }
}

impl VerifyCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        if let Some(job) = self.job.clone() {
            return self.verify_job(&job);
        }
        let (Some(path), Some(module)) = (&self.receipt, &self.module) else {
            anyhow::bail!("give a receipt file and --module, or --job ID");
        };
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read the receipt {}", path.display()))?;
        let verified = match open_receipt(&bytes) {
            Ok(Ok(v)) => v,
            Ok(Err(why)) => return Ok(self.report(&Verdict::refused(None, Vec::new(), why))),
            Err(_) => anyhow::bail!(
                "{} is not a receipt: receipts are the files `agora exec --receipt FILE` and `agora job receipts ID --out DIR` write",
                path.display()
            ),
        };
        let wasm = read_module(module)?;
        let input = read_input(self.input.as_deref())?;
        let memory = self.memory.unwrap_or(DEFAULT_MEMORY);
        let data_dir = crate::paths::data_dir(self.data_dir.clone());
        let executor = cli_executor(&data_dir, memory)?;
        let mut sandbox = Sandbox {
            executor: &executor,
            memory,
            timeout: self.timeout,
            runs: Runs::new(),
        };
        let verdict = sandbox.judge(verified, &wasm, &input, &self.args);
        Ok(self.report(&verdict))
    }

    fn report(&self, v: &Verdict) -> ExitCode {
        let receipt = v.receipt.as_ref();
        if self.json {
            let summary = serde_json::json!({
                "holds": v.holds,
                "signer": receipt.map(|v| v.signer().to_string()),
                "task": receipt.map(|v| v.payload().task.to_string()),
                "checks": v.checks,
                "note": v.note,
            });
            println!("{summary}");
        } else if v.holds {
            println!("receipt holds");
            if let Some(v) = receipt {
                let r = v.payload();
                println!("  signer     {}", v.signer());
                println!("  task       {}", r.task);
                println!("  exit       {}", r.exit);
                println!("  fuel used  {}", r.fuel_used);
                println!("  output     {} ({} bytes)", r.output, r.output_size.0);
            }
        } else {
            println!("receipt does not hold");
            for line in differences(v) {
                println!("  {line}");
            }
        }
        if v.holds {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// `--job`: every receipt of the job, against content from the node.
    fn verify_job(&self, job: &JobRef) -> anyhow::Result<ExitCode> {
        let endpoint = client::locate(self.data_dir.clone(), self.api.clone(), self.token.clone())?;
        let client = Client::new(endpoint);
        let status = block_on(async {
            let id = job.resolve(&client).await?;
            anyhow::Ok(client.job_with_receipts(&id).await?)
        })??;
        let memory = self.memory.unwrap_or(if status.memory.0 > 0 {
            status.memory
        } else {
            DEFAULT_MEMORY
        });
        let data_dir = crate::paths::data_dir(self.data_dir.clone());
        let executor = cli_executor(&data_dir, memory)?;
        let mut content: HashMap<ContentId, Result<Vec<u8>, String>> = HashMap::new();
        let mut sandbox = Sandbox {
            executor: &executor,
            memory,
            timeout: self.timeout,
            runs: Runs::new(),
        };
        let mut rows = Vec::new();
        let (mut held, mut broken, mut unjudged) = (0usize, 0usize, 0usize);
        for t in &status.tasks {
            for c in &t.copies {
                let Some(hex) = &c.receipt else { continue };
                let bytes = hex::decode(hex).context("the node sent a malformed receipt")?;
                let verdict = match open_receipt(&bytes) {
                    Err(e) => Verdict::refused(None, Vec::new(), format!("the node's copy is {e}")),
                    Ok(Err(why)) => Verdict::refused(None, Vec::new(), why),
                    Ok(Ok(v)) => {
                        let r = v.payload();
                        let mut fetch = |id: ContentId| {
                            content
                                .entry(id)
                                .or_insert_with(|| {
                                    block_on(async { client.get_content(&id).await })
                                        .map_err(|e| e.to_string())
                                        .and_then(|r| r.map_err(|e| e.to_string()))
                                })
                                .clone()
                        };
                        match (fetch(r.module), fetch(r.input)) {
                            (Ok(wasm), Ok(input)) => sandbox.judge(v.clone(), &wasm, &input, &status.args),
                            (Err(e), _) | (_, Err(e)) => Verdict {
                                reproducible: false,
                                ..Verdict::refused(
                                    Some(v),
                                    Vec::new(),
                                    format!("the node no longer holds the task's module or input: {e}"),
                                )
                            },
                        }
                    }
                };
                match (verdict.holds, verdict.reproducible) {
                    (true, _) => held += 1,
                    (false, true) => broken += 1,
                    (false, false) => unjudged += 1,
                }
                rows.push((t.index, t.name.clone(), c.attempt, c.provider, verdict));
            }
        }
        if self.json {
            let receipts: Vec<serde_json::Value> = rows
                .iter()
                .map(|(index, name, attempt, provider, v)| {
                    serde_json::json!({
                        "task": index, "name": name, "attempt": attempt,
                        "provider": provider.to_string(),
                        "holds": v.holds, "reproducible": v.reproducible,
                        "checks": v.checks, "note": v.note,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "job": status.id, "receipts": rows.len(), "hold": held,
                    "do_not_hold": broken, "not_reproducible": unjudged,
                    "results": receipts,
                })
            );
        } else {
            for (index, name, attempt, provider, v) in &rows {
                let verdict = match (v.holds, v.reproducible) {
                    (true, _) => "holds".to_owned(),
                    (false, true) => "DOES NOT HOLD".to_owned(),
                    (false, false) => "not judged".to_owned(),
                };
                println!(
                    "task {index} ({name}) copy {attempt} by {}: {verdict}",
                    provider.short()
                );
                if !v.holds {
                    for line in differences(v) {
                        println!("  {line}");
                    }
                }
            }
            println!(
                "{} receipt(s) of job {}: {held} hold, {broken} do not hold, {unjudged} could not be judged",
                rows.len(),
                status.id
            );
        }
        Ok(if broken == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

/// What differs, then the note, one line each.
fn differences(v: &Verdict) -> Vec<String> {
    let mut out: Vec<String> = v
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| {
            format!(
                "{}: the receipt says {}, found {}",
                c.field,
                shown(&c.receipt),
                shown(&c.actual)
            )
        })
        .collect();
    out.extend(v.note.clone());
    out
}

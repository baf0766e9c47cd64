//! `agora verify`: re-executes a receipt's task and says whether the
//! receipt holds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_protocol::execution::{ExitStatus, Receipt};
use agora_protocol::id::ContentId;
use agora_protocol::limits::MAX_BLOB;
use agora_protocol::market::{Arg, Limits, args_digest};
use agora_protocol::units::{Bytes, Millis, parse_duration};
use agora_protocol::{Decode, Envelope};
use anyhow::Context;

use super::exec::{cli_executor, read_input, read_module, run_module};

/// Check a receipt: its signature, that the files are what it names, and
/// that re-executing them (same seed, same fuel limit) gives the same
/// output, fuel and exit status.
///
/// Prints `receipt holds` and exits 0, or lists what differs and exits 1.
#[derive(Debug, clap::Args)]
pub struct VerifyCommand {
    /// The receipt envelope (as `agora exec --receipt` writes it).
    pub receipt: PathBuf,
    /// The module the receipt names (binary or `.wat`).
    #[arg(long, value_name = "M")]
    pub module: PathBuf,
    /// The input the receipt names (`-` reads stdin). Default: empty.
    #[arg(long, value_name = "I")]
    pub input: Option<PathBuf>,
    /// The task's arguments, in order; repeat for more.
    #[arg(long = "arg", value_name = "A", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Memory limit for the re-execution (receipts do not record it).
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub memory: Bytes,
    /// Wall-clock limit for the re-execution.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// The data dir (compiled-module cache). Default: `$AGORA_DATA_DIR`,
    /// then the platform's data dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// One compared field.
#[derive(Debug, serde::Serialize)]
struct Check {
    field: &'static str,
    receipt: String,
    actual: String,
    ok: bool,
}

fn check(field: &'static str, receipt: impl ToString, actual: impl ToString) -> Check {
    let (receipt, actual) = (receipt.to_string(), actual.to_string());
    Check {
        field,
        ok: receipt == actual,
        receipt,
        actual,
    }
}

impl VerifyCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let bytes = std::fs::read(&self.receipt)
            .with_context(|| format!("cannot read the receipt {}", self.receipt.display()))?;
        let not_a_receipt = || {
            anyhow::anyhow!(
                "{} is not a receipt: receipts are the files `agora exec --receipt FILE` and `agora job receipts ID --out DIR` write",
                self.receipt.display()
            )
        };
        let envelope = Envelope::from_bytes(&bytes).map_err(|_| not_a_receipt())?;
        if envelope.payload_type() != <Receipt as agora_protocol::Payload>::TYPE.code() {
            return Err(not_a_receipt());
        }
        let verified = match envelope.open_ignoring_time::<Receipt>() {
            Ok(v) => v,
            Err(e) => {
                return Ok(self.report(
                    false,
                    None,
                    &[],
                    Some(format!("the receipt's signature does not verify: {e}")),
                ));
            }
        };
        let r = verified.payload();
        let wasm = read_module(&self.module)?;
        let input = read_input(self.input.as_deref())?;
        let args: Vec<Arg> = self.args.iter().cloned().map(Arg).collect();
        let mut checks = vec![
            check("module", r.module, ContentId::of(&wasm)),
            check("input", r.input, ContentId::of(&input)),
            check("args", r.args, args_digest(&args)),
        ];
        if checks.iter().any(|c| !c.ok) {
            let note = "the files are not the ones the receipt names; nothing was re-executed".to_owned();
            return Ok(self.report(false, Some(&verified), &checks, Some(note)));
        }
        if !r.exit.is_deterministic() {
            let note = format!(
                "the receipt reports `{}`, which depends on the provider's speed and cannot be reproduced",
                r.exit
            );
            return Ok(self.report(false, Some(&verified), &checks, Some(note)));
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
            memory: self.memory,
            timeout: Millis::from(self.timeout),
            max_output,
        };
        let data_dir = crate::paths::data_dir(self.data_dir.clone());
        let executor = cli_executor(&data_dir, self.memory)?;
        let outcome = run_module(&executor, &wasm, &input, &self.args, limits, r.seed);
        checks.extend([
            check("exit", &r.exit, outcome.exit_status()),
            check("fuel_used", r.fuel_used.0, outcome.fuel_used.0),
            check("output", r.output, outcome.output_id()),
            check("output_size", r.output_size.0, outcome.output.len()),
        ]);
        let holds = checks.iter().all(|c| c.ok);
        Ok(self.report(holds, Some(&verified), &checks, None))
    }

    fn report(
        &self,
        holds: bool,
        receipt: Option<&agora_protocol::Verified<Receipt>>,
        checks: &[Check],
        note: Option<String>,
    ) -> ExitCode {
        if self.json {
            let summary = serde_json::json!({
                "holds": holds,
                "signer": receipt.map(|v| v.signer().to_string()),
                "task": receipt.map(|v| v.payload().task.to_string()),
                "checks": checks,
                "note": note,
            });
            println!("{summary}");
        } else if holds {
            let r = receipt.map(|v| v.payload());
            println!("receipt holds");
            if let (Some(v), Some(r)) = (receipt, r) {
                println!("  signer     {}", v.signer());
                println!("  task       {}", r.task);
                println!("  exit       {}", r.exit);
                println!("  fuel used  {}", r.fuel_used);
                println!("  output     {} ({} bytes)", r.output, r.output_size.0);
            }
        } else {
            println!("receipt does not hold");
            for c in checks.iter().filter(|c| !c.ok) {
                println!(
                    "  {}: the receipt says {}, found {}",
                    c.field, c.receipt, c.actual
                );
            }
            if let Some(note) = &note {
                println!("  {note}");
            }
        }
        if holds {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

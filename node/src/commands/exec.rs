//! `agora exec`: runs a module locally, in exactly the node's sandbox.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use agora_protocol::id::{ContentId, JobId, MessageId, TaskId};
use agora_protocol::limits::MAX_BLOB;
use agora_protocol::market::{Arg, Assignment, Limits};
use agora_protocol::units::{Bytes, Fuel, Millis, parse_duration};
use agora_protocol::{Encode, Keypair};
use anyhow::Context;

use crate::executor::{self, CompileIsolation, Config, Executor, Outcome, Task, TaskError};

/// Run a WASM module (binary or `.wat` text) locally in the node's sandbox.
///
/// The guest's stdout is copied to stdout byte for byte and its stderr to
/// stderr. Exit status: 0 on success, the guest's own code (at most 255)
/// when it exits non-zero, 1 for every other failure, which is described on
/// stderr (`error: out of fuel after 100000000 units`, ...).
#[derive(Debug, clap::Args)]
pub struct ExecCommand {
    /// The module: a wasm binary, or WebAssembly text.
    pub module: PathBuf,
    /// The guest's stdin (`-` reads ours). Default: empty.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// An argument for the guest (its argv[1..]); repeat for more.
    #[arg(long = "arg", value_name = "A", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Fuel limit.
    #[arg(long, value_name = "N", default_value_t = 10_000_000_000)]
    pub fuel: u64,
    /// Memory limit, like `64MiB`.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub memory: Bytes,
    /// Wall-clock limit, like `1s` or `1m30s`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output limit, like `1MiB` (at most 64 MiB).
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    pub max_output: Bytes,
    /// Seed of the guest's random stream.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Write a receipt signed with this node's identity key to FILE.
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,
    /// Print a JSON summary instead of the guest's output.
    #[arg(long)]
    pub json: bool,
    /// The data dir (compiled-module cache, identity key). Default:
    /// `$AGORA_DATA_DIR`, then the platform's data dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ExecCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let data_dir = crate::paths::data_dir(self.data_dir.clone());
        let wasm = read_module(&self.module)?;
        let input = read_input(self.input.as_deref())?;
        let executor = cli_executor(&data_dir, self.memory)?;
        let limits = Limits {
            fuel: Fuel(self.fuel),
            memory: self.memory,
            timeout: Millis::from(self.timeout),
            max_output: Bytes(self.max_output.0.min(MAX_BLOB as u64)),
        };
        let module_id = ContentId::of(&wasm);
        let outcome = run_module(&executor, &wasm, &input, &self.args, limits, self.seed);

        if let Some(path) = &self.receipt {
            let keypair = crate::identity::load_or_create(&data_dir)?;
            let assignment = self.assignment(module_id, &input, limits);
            write_receipt(path, &keypair, &assignment, &outcome)?;
        }

        std::io::stderr().write_all(&outcome.stderr).ok();
        if self.json {
            let summary = serde_json::json!({
                "status": outcome.exit_status(),
                "error": outcome.result.as_ref().err().map(|e| e.to_string()),
                "fuel_used": outcome.fuel_used.0,
                "output_id": outcome.output_id().to_string(),
                "output_size": outcome.output.len(),
                "wall_ms": outcome.wall.as_millis() as u64,
                "module_id": module_id.to_string(),
            });
            println!("{summary}");
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(&outcome.output)
                .context("cannot write the output")?;
            out.flush().context("cannot write the output")?;
        }
        Ok(match &outcome.result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                exit_code(e)
            }
        })
    }

    /// The task a local run stands for, as a receipt names it: a task of a
    /// job of its own.
    fn assignment(&self, module: ContentId, input: &[u8], limits: Limits) -> Assignment {
        Assignment {
            task: TaskId::new(JobId(rand::random()), 0),
            attempt: 0,
            module,
            input: ContentId::of(input),
            args: self.args.iter().cloned().map(Arg).collect(),
            limits,
            seed: self.seed,
            resume: None,
        }
    }
}

/// The process exit code for a failed task.
fn exit_code(e: &TaskError) -> ExitCode {
    match e {
        TaskError::ExitCode(c) => ExitCode::from(u8::try_from(*c).unwrap_or(u8::MAX).max(1)),
        _ => ExitCode::FAILURE,
    }
}

/// Loads and runs a module; a module that fails to load is a failed outcome.
pub(crate) fn run_module(
    executor: &Executor,
    wasm: &[u8],
    input: &[u8],
    args: &[String],
    limits: Limits,
    seed: u64,
) -> Outcome {
    let task = Task {
        input,
        args,
        limits,
        seed,
        resume: None,
        checkpoints: None,
    };
    match executor.load(wasm) {
        Ok(module) => executor.run(&module, &task),
        Err(e) => {
            // A module whose initial memory exceeds even the executor's cap
            // is refused at load; report the task's own limit.
            let e = match e {
                TaskError::MemoryLimit { limit } => TaskError::MemoryLimit {
                    limit: Bytes(limit.0.min(limits.memory.0)),
                },
                e => e,
            };
            Outcome::failed(e)
        }
    }
}

/// Signs the receipt of a local run of `assignment` and writes its envelope
/// to `path`.
fn write_receipt(
    path: &Path,
    keypair: &Keypair,
    assignment: &Assignment,
    outcome: &Outcome,
) -> anyhow::Result<()> {
    let receipt = executor::receipt(
        keypair,
        assignment,
        // A local run fulfils no agreement.
        MessageId([0; 32]),
        keypair.node_id(),
        outcome,
    );
    std::fs::write(path, receipt.envelope().to_bytes())
        .with_context(|| format!("cannot write the receipt to {}", path.display()))
}

/// The executor `agora exec` and `agora verify` use: the node's sandbox,
/// one instance, compiling in a worker process, caching in the data dir.
pub(crate) fn cli_executor(data_dir: &Path, memory: Bytes) -> anyhow::Result<Executor> {
    let defaults = Config::default();
    let page = 64 << 10;
    let max_memory = Bytes(
        defaults
            .max_memory
            .0
            .max(memory.0.div_ceil(page).saturating_mul(page)),
    );
    let exe = std::env::current_exe().context("cannot locate the agora binary for the compile worker")?;
    Ok(Executor::new(Config {
        max_memory,
        max_instances: 1,
        cache_dir: Some(executor::cache_dir(data_dir)),
        compile: CompileIsolation::Subprocess { exe },
        ..defaults
    })?)
}

/// Reads a module file: a wasm binary as is, anything else as WebAssembly
/// text.
pub(crate) fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the module {}", path.display()))?;
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes).map(|b| b.into_owned()).with_context(|| {
        format!(
            "{} is neither a wasm binary nor valid WebAssembly text",
            path.display()
        )
    })
}

/// Reads the guest's input: a file, our stdin (`-`), or nothing.
pub(crate) fn read_input(path: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match path {
        None => Ok(Vec::new()),
        Some(p) if p == Path::new("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            Ok(buf)
        }
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read the input {}", p.display())),
    }
}

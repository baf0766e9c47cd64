//! Bounded compilation of untrusted modules.
//!
//! wasmtime does not treat compile-time blow-ups (time or memory) as bugs,
//! so the node must bound them itself. [`CompileIsolation::Subprocess`]
//! compiles in a child process, `agora compile-worker`, which first limits
//! its own address space and CPU time (setrlimit) and is killed by the
//! parent after the compile timeout:
//!
//! ```text
//! parent ── module bytes on stdin ──▶ agora compile-worker --max-memory … --address-space … --cpu-seconds …
//!        ◀── artifact on stdout ──── exit 0 | exit 2 + message (invalid module) | killed
//! ```
//!
//! The worker compiles with [`super::engine::wasm_config`], the same code
//! generation settings as the node's engine, so the parent deserialises the
//! artifact (wasmtime rejects it if the configurations differ).
//!
//! [`CompileIsolation::Subprocess`]: super::CompileIsolation::Subprocess

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use agora_protocol::units::Bytes;
use wasmtime::Engine;

use super::TaskError;

/// Worker exit code: the module is not valid WebAssembly (message on stderr).
pub const EXIT_INVALID: u8 = 2;
/// Worker exit code: the worker could not set itself up.
pub const EXIT_SETUP: u8 = 3;

/// Most bytes of worker stderr kept for error messages.
const MAX_WORKER_STDERR: u64 = 16 << 10;

/// Validates then compiles in this process (tests and benchmarks).
pub(crate) fn in_process(engine: &Engine, wasm: &[u8]) -> Result<wasmtime::Module, TaskError> {
    wasmtime::Module::validate(engine, wasm).map_err(|e| TaskError::InvalidModule(format!("{e:#}")))?;
    wasmtime::Module::from_binary(engine, wasm).map_err(|e| TaskError::CompileFailed(format!("{e:#}")))
}

/// The limits a compile worker runs under.
pub(crate) struct WorkerLimits {
    pub(crate) max_memory: u64,
    pub(crate) address_space: Bytes,
    pub(crate) timeout: Duration,
}

/// Compiles in `agora compile-worker` and returns the serialized artifact.
pub(crate) fn in_subprocess(exe: &Path, wasm: &[u8], limits: &WorkerLimits) -> Result<Vec<u8>, TaskError> {
    let cpu_seconds = limits.timeout.as_secs().saturating_add(1);
    let mut child = Command::new(exe)
        .arg("compile-worker")
        .arg("--max-memory")
        .arg(limits.max_memory.to_string())
        .arg("--address-space")
        .arg(limits.address_space.0.to_string())
        .arg("--cpu-seconds")
        .arg(cpu_seconds.to_string())
        .arg("--max-module-size")
        .arg(wasm.len().to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            TaskError::CompileFailed(format!("cannot start the compile worker {}: {e}", exe.display()))
        })?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(TaskError::CompileFailed("compile worker has no pipes".into()));
    };
    let deadline = Instant::now().checked_add(limits.timeout);
    let max_artifact = limits.address_space.0;
    let (status, artifact, message) = std::thread::scope(|scope| {
        // Feed and drain the pipes on their own threads so that neither side
        // can block the other, and the parent keeps its eye on the clock.
        scope.spawn(move || {
            // A worker that dies early closes the pipe: its status tells why.
            let _ = stdin.write_all(wasm);
        });
        let out = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.take(max_artifact).read_to_end(&mut buf);
            buf
        });
        let err = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.take(MAX_WORKER_STDERR).read_to_end(&mut buf);
            buf
        });
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(());
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!("cannot wait for the compile worker: {e}");
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(());
                }
            }
        };
        let artifact = out.join().unwrap_or_default();
        let message = String::from_utf8_lossy(&err.join().unwrap_or_default())
            .trim()
            .to_owned();
        (status, artifact, message)
    });
    let Ok(status) = status else {
        return Err(TaskError::CompileFailed(format!(
            "compilation exceeded the {} timeout",
            humantime::format_duration(limits.timeout)
        )));
    };
    if status.success() {
        return Ok(artifact);
    }
    if status.code() == Some(EXIT_INVALID as i32) {
        return Err(TaskError::InvalidModule(message));
    }
    let last_line = message.lines().last().unwrap_or("").to_owned();
    Err(TaskError::CompileFailed(describe_failure(
        &status, &last_line, limits,
    )))
}

#[cfg(unix)]
fn describe_failure(status: &std::process::ExitStatus, last_line: &str, limits: &WorkerLimits) -> String {
    use std::os::unix::process::ExitStatusExt;
    let why = match status.signal() {
        // SIGXCPU, or SIGKILL at the hard limit.
        Some(24) | Some(9) => format!("the compile worker ran out of CPU time ({status})"),
        // Allocation failure under RLIMIT_AS aborts.
        Some(6) => format!(
            "the compile worker exceeded its memory limit of {} ({status})",
            limits.address_space
        ),
        _ => format!("the compile worker failed ({status})"),
    };
    if last_line.is_empty() {
        why
    } else {
        format!("{why}: {last_line}")
    }
}

#[cfg(not(unix))]
fn describe_failure(status: &std::process::ExitStatus, last_line: &str, _limits: &WorkerLimits) -> String {
    format!("the compile worker failed ({status}): {last_line}")
}

/// The worker's side: limit ourselves, read the module from stdin, write
/// the artifact to stdout.
pub fn worker_main(max_memory: u64, address_space: u64, cpu_seconds: u64, max_module_size: u64) -> ExitCode {
    if let Err(e) = limit_self(address_space, cpu_seconds) {
        eprintln!("error: cannot limit the compile worker: {e}");
        return ExitCode::from(EXIT_SETUP);
    }
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(max_module_size.saturating_add(1))
        .read_to_end(&mut wasm)
    {
        eprintln!("error: cannot read the module: {e}");
        return ExitCode::from(EXIT_SETUP);
    }
    if wasm.len() as u64 > max_module_size {
        eprintln!("module exceeds {max_module_size} bytes");
        return ExitCode::from(EXIT_INVALID);
    }
    let engine = match super::engine::build_for_compile(max_memory) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    if let Err(e) = wasmtime::Module::validate(&engine, &wasm) {
        eprintln!("{e:#}");
        return ExitCode::from(EXIT_INVALID);
    }
    let artifact = match engine.precompile_module(&wasm) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: compilation failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&artifact).and_then(|()| out.flush()) {
        eprintln!("error: cannot write the artifact: {e}");
        return ExitCode::from(EXIT_SETUP);
    }
    ExitCode::SUCCESS
}

#[cfg(unix)]
fn limit_self(address_space: u64, cpu_seconds: u64) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let set = |resource: Resource, soft: u64, hard: u64| -> std::io::Result<()> {
        // Never ask for more than the current hard limit (that needs
        // privileges); lowering is always allowed.
        let cap = getrlimit(resource).maximum.unwrap_or(u64::MAX);
        setrlimit(
            resource,
            Rlimit {
                current: Some(soft.min(cap)),
                maximum: Some(hard.min(cap)),
            },
        )
        .map_err(std::io::Error::from)
    };
    set(Resource::As, address_space, address_space)?;
    // SIGXCPU at the soft limit, SIGKILL one second later.
    set(Resource::Cpu, cpu_seconds, cpu_seconds.saturating_add(1))?;
    set(Resource::Core, 0, 0)?;
    Ok(())
}

#[cfg(not(unix))]
fn limit_self(_address_space: u64, _cpu_seconds: u64) -> std::io::Result<()> {
    // Only the parent's timeout bounds the worker here.
    Ok(())
}

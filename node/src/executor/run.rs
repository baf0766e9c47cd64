//! Running one task: a fresh store, the deadline and cpu-share throttle, and
//! the mapping of every way a run can end to a [`TaskError`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use agora_protocol::limits::MAX_BLOB;
use agora_protocol::units::{Bytes, Fuel, Timestamp};
use wasmtime::{Engine, Store, StoreContextMut, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use super::checkpoint::Checkpointing;
use super::engine::MAX_TABLE_ELEMENTS;
use super::meter::{Meter, Moved};
use super::wasi::{
    ARGV0, Capture, FrozenClock, GuestEnv, Input, Limiter, LiveLog, OutputOverflow, ProcExit, State,
};
use super::{Module, Outcome, Task, TaskError};

/// The settings of the executor a run needs.
pub(crate) struct RunSettings<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) max_memory: u64,
    pub(crate) max_stderr: usize,
    pub(crate) share: &'a Arc<AtomicU64>,
    /// Shared with the executor when the run parks while it is suspended.
    pub(crate) suspend: Option<&'a Arc<Suspend>>,
    /// Set to stop the run (its task was cancelled).
    pub(crate) cancel: Option<Arc<AtomicBool>>,
    /// While set, this run alone parks as a suspended one does (an
    /// interactive task has its slot).
    pub(crate) pause: Option<Arc<AtomicBool>>,
    /// Where the guest's stderr is also copied as it is written.
    pub(crate) live: Option<LiveLog>,
}

/// Whether runs are to be suspended, shared by every run of an executor.
#[derive(Debug, Default)]
pub(crate) struct Suspend {
    /// Set: every run parks at its next epoch tick until it is cleared.
    pub(crate) hold: AtomicBool,
    /// Runs parked now.
    pub(crate) suspended: AtomicUsize,
}

/// How often a suspended run looks whether it may go on.
const SUSPEND_POLL: Duration = Duration::from_millis(20);

/// Deadline and duty-cycle state, checked on every epoch tick.
pub(crate) struct Throttle {
    deadline: Option<Instant>,
    /// When the guest last resumed after a throttling pause.
    resumed: Instant,
    share: Arc<AtomicU64>,
    suspend: Option<Arc<Suspend>>,
    cancel: Option<Arc<AtomicBool>>,
    pause: Option<Arc<AtomicBool>>,
}

impl Throttle {
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Parks the guest while runs are suspended, or this one is paused:
    /// its state stays as it is, between two instructions, and it uses no
    /// CPU.
    fn park_while_suspended(&mut self) {
        let Some(suspend) = self.suspend.clone() else {
            return;
        };
        let paused = self.pause.clone();
        let held = || {
            suspend.hold.load(Ordering::Relaxed) || paused.as_ref().is_some_and(|p| p.load(Ordering::Relaxed))
        };
        if !held() {
            return;
        }
        suspend.suspended.fetch_add(1, Ordering::Relaxed);
        while held() && !self.cancelled() {
            std::thread::sleep(SUSPEND_POLL);
        }
        suspend.suspended.fetch_sub(1, Ordering::Relaxed);
        // Time parked is neither running time for the cpu share nor
        // anything the guest can observe (its clocks are frozen).
        self.resumed = Instant::now();
    }
}

/// The wall-clock limit was reached (raised from the epoch callback).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// The run was cancelled (raised from the epoch callback).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

/// Called by wasmtime once per epoch tick while guest code runs: enforces
/// the deadline, and sleeps to hold the task's duty cycle to the cpu share.
fn on_epoch(mut ctx: StoreContextMut<'_, State>) -> wasmtime::Result<UpdateDeadline> {
    let t = &mut ctx.data_mut().throttle;
    t.park_while_suspended();
    let now = Instant::now();
    if t.cancelled() {
        return Err(wasmtime::Error::new(Interrupted));
    }
    if t.deadline.is_some_and(|d| now >= d) {
        return Err(wasmtime::Error::new(DeadlineExceeded));
    }
    let share = f64::from_bits(t.share.load(Ordering::Relaxed));
    if share < 1.0 {
        // Ran `ran` since the last pause: pause ran·(1−s)/s so that
        // running / (running + paused) = s.
        let ran = now.saturating_duration_since(t.resumed);
        let mut pause =
            Duration::try_from_secs_f64(ran.as_secs_f64() * (1.0 - share) / share).unwrap_or(Duration::MAX);
        if let Some(d) = t.deadline {
            pause = pause.min(d.saturating_duration_since(now));
        }
        std::thread::sleep(pause);
        let after = Instant::now();
        if t.deadline.is_some_and(|d| after >= d) {
            return Err(wasmtime::Error::new(DeadlineExceeded));
        }
        t.resumed = after;
    } else {
        t.resumed = now;
    }
    Ok(UpdateDeadline::Continue(1))
}

enum Phase {
    Instantiate,
    Run,
}

/// Runs `task` on `module` to completion.
pub(crate) fn run(s: &RunSettings<'_>, module: &Module, task: &Task<'_>) -> Outcome {
    let started_at = Timestamp::from_system(SystemTime::now());
    let t0 = Instant::now();
    let memory_limit = task.limits.memory.0.min(s.max_memory);
    let max_output = task.limits.max_output.0.min(MAX_BLOB as u64);
    let moved = Moved::default();
    let stdout = Capture::new(max_output as usize, true, moved.clone());
    let mut stderr = Capture::new(s.max_stderr, false, moved.clone());
    if let Some(log) = &s.live {
        stderr = stderr.tee(log.clone());
    }
    let timeout = task.limits.timeout.duration();
    let resume = task.resume.clone().map(|c| {
        let id = c.id();
        (c, id)
    });
    let resumed = resume.as_ref().map(|(_, id)| *id);

    let finish = |result: Result<(), TaskError>, fuel_used: u64| Outcome {
        result,
        output: stdout.take(),
        stderr: stderr.take(),
        fuel_used: Fuel(fuel_used),
        started_at,
        finished_at: Timestamp::from_system(SystemTime::now()),
        wall: t0.elapsed(),
        resumed,
    };

    // A module whose initial memory exceeds the limit never starts.
    if module.min_memory > memory_limit {
        return finish(
            Err(TaskError::MemoryLimit {
                limit: Bytes(memory_limit),
            }),
            0,
        );
    }

    let input = Input::new(bytes::Bytes::copy_from_slice(task.input), moved.clone());
    // Only a module that can take checkpoints names its computation in
    // them (hashing the input costs time).
    let computation = if module.checkpoints {
        let args: Vec<agora_protocol::market::Arg> = task
            .args
            .iter()
            .cloned()
            .map(agora_protocol::market::Arg)
            .collect();
        (
            module.id,
            agora_protocol::ContentId::of(task.input),
            agora_protocol::market::args_digest(&args),
            task.seed,
            task.limits.fuel,
        )
    } else {
        let none = agora_protocol::ContentId([0; 32]);
        (none, none, none, task.seed, task.limits.fuel)
    };
    let checkpoints = Checkpointing {
        computation,
        index: resume.as_ref().map_or(0, |(c, _)| c.index),
        resume,
        sink: task.checkpoints.clone(),
        input: input.clone(),
        stdout: stdout.clone(),
    };
    // A resumed run counts on from the fuel its checkpoint had used.
    let start_fuel = task
        .limits
        .fuel
        .0
        .saturating_sub(task.resume.as_ref().map_or(0, |c| c.fuel_used.0));
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdin(input)
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .arg(ARGV0)
        .args(task.args)
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(wasmtime_wasi::Deterministic::new(vec![0]))
        .insecure_random(wasmtime_wasi::Deterministic::new(vec![0]))
        .insecure_random_seed(0);
    let state = State {
        wasi: wasi.build_p1(),
        limiter: Limiter {
            memory: usize::try_from(memory_limit).unwrap_or(usize::MAX),
            table_elements: MAX_TABLE_ELEMENTS,
            memory_denied: false,
        },
        env: GuestEnv::new(task.seed),
        throttle: Throttle {
            deadline: t0.checked_add(timeout),
            resumed: t0,
            share: s.share.clone(),
            suspend: s.suspend.cloned(),
            cancel: s.cancel.clone(),
            pause: s.pause.clone(),
        },
        meter: Meter::new(moved, task.args),
        checkpoints,
    };
    let mut store = Store::new(s.engine, state);
    store.limiter(|s| &mut s.limiter);
    if let Err(e) = store.set_fuel(start_fuel) {
        return finish(Err(TaskError::Trap(format!("cannot set fuel: {e}"))), 0);
    }
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(on_epoch);

    let ran = catch_unwind(AssertUnwindSafe(|| -> Result<(), (wasmtime::Error, Phase)> {
        let instance = module
            .pre
            .instantiate(&mut store)
            .map_err(|e| (e, Phase::Instantiate))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|e| (e, Phase::Instantiate))?;
        start.call(&mut store, ()).map_err(|e| (e, Phase::Run))
    }));
    let remaining = store.get_fuel().unwrap_or(0);
    let fuel_used = task.limits.fuel.0.saturating_sub(remaining);
    let memory_denied = store.data().limiter.memory_denied;
    drop(store);

    let result = match ran {
        Ok(Ok(())) => Ok(()),
        Ok(Err((error, phase))) => {
            let r = classify(
                &error,
                phase,
                memory_denied,
                stdout.overflowed(),
                &task.limits,
                memory_limit,
            );
            if let Err(e) = &r {
                tracing::debug!(module = %module.id, error = %e, "task failed: {error:?}");
            }
            r
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(module = %module.id, "host panic while running a task: {what}");
            Err(TaskError::Trap(format!("internal error in the sandbox: {what}")))
        }
    };
    let fuel_used = match result {
        Err(TaskError::OutOfFuel { limit }) => limit.0,
        _ => fuel_used,
    };
    finish(result, fuel_used)
}

/// Maps a wasmtime error to the task's result (GUEST-CONTRACT.md, "How a
/// task ends"). Order matters: output overflow and exit first, then the
/// limits, then traps.
fn classify(
    error: &wasmtime::Error,
    phase: Phase,
    memory_denied: bool,
    output_overflowed: bool,
    limits: &agora_protocol::market::Limits,
    memory_limit: u64,
) -> Result<(), TaskError> {
    if output_overflowed || find::<OutputOverflow>(error).is_some() {
        return Err(TaskError::OutputTooLarge {
            limit: Bytes(limits.max_output.0.min(MAX_BLOB as u64)),
        });
    }
    if let Some(ProcExit(code)) = find::<ProcExit>(error) {
        return if *code == 0 {
            Ok(())
        } else {
            Err(TaskError::ExitCode(*code))
        };
    }
    if find::<Interrupted>(error).is_some() {
        return Err(TaskError::Interrupted);
    }
    if find::<DeadlineExceeded>(error).is_some() {
        return Err(TaskError::Deadline {
            timeout: limits.timeout.duration(),
        });
    }
    let memory_limit = TaskError::MemoryLimit {
        limit: Bytes(memory_limit),
    };
    match find::<Trap>(error) {
        Some(Trap::OutOfFuel) => Err(TaskError::OutOfFuel { limit: limits.fuel }),
        Some(Trap::StackOverflow) => Err(TaskError::StackOverflow),
        Some(Trap::Interrupt) => Err(TaskError::Deadline {
            timeout: limits.timeout.duration(),
        }),
        Some(_) if memory_denied => Err(memory_limit),
        Some(trap) => Err(TaskError::Trap(trap_message(*trap))),
        None if memory_denied => Err(memory_limit),
        None => {
            let message = error.root_cause().to_string();
            match phase {
                Phase::Instantiate => Err(TaskError::InvalidModule(format!("cannot instantiate: {message}"))),
                Phase::Run => Err(TaskError::Trap(message)),
            }
        }
    }
}

/// A trap's description without wasmtime's "wasm trap: " prefix.
fn trap_message(trap: Trap) -> String {
    let s = trap.to_string();
    s.strip_prefix("wasm trap: ").map(str::to_owned).unwrap_or(s)
}

/// The first error of type `E` in `error`'s chain.
fn find<E: std::error::Error + Send + Sync + 'static>(error: &wasmtime::Error) -> Option<&E> {
    if let Some(e) = error.downcast_ref::<E>() {
        return Some(e);
    }
    error.chain().find_map(|e| e.downcast_ref::<E>())
}

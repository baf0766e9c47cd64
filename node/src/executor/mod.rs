//! The node's worker: runs untrusted WebAssembly tasks in a deterministic,
//! bounded sandbox and accounts for them in fuel.
//!
//! How the parts connect:
//!
//! * [`Executor`] (here, with its [`Config`]) owns one wasmtime engine
//!   ([`engine`]): fuel metering, epoch interruption driven by a ticker
//!   thread, NaN canonicalisation (wherever NaN bits can be observed;
//!   vendor/README.md), deterministic relaxed SIMD, no threads, a bounded
//!   wasm stack, memory reservations sized to [`Config::max_memory`] and a
//!   pooling allocator of [`Config::max_instances`] slots.
//! * [`Executor::load`] (`load.rs`) turns module bytes into a [`Module`]
//!   (compiled code plus an `InstancePre` linked against the guest's world):
//!   from the in-memory LRU, else the disk cache (`cache.rs`), else by
//!   compiling ([`compile`]), in a resource-limited `agora compile-worker`
//!   process unless [`CompileIsolation::InProcess`] is chosen. Before
//!   compiling, the checks of `check.rs` refuse what the guest contract
//!   forbids from the module's first sections; [`validate`] applies the
//!   same contract for the CLI without compiling.
//! * [`Executor::run`] (`run.rs`) runs a [`Task`] in a fresh store with its
//!   [`Limits`](agora_protocol::market::Limits): the guest sees WASI
//!   preview 1 with stdin, stdout, stderr and arguments only, and
//!   deterministic clocks and randomness ([`wasi`]). Every way a run can
//!   end is an [`Outcome`] (`task.rs`) whose result is a typed
//!   [`TaskError`] (`error.rs`); guest behaviour never panics the node.
//! * A guest may save its state ([`checkpoint`]): a task interrupted
//!   later resumes from its last checkpoint in a fresh run
//!   ([`Task::resume`]), with the same output as an uninterrupted run.
//! * [`receipt()`] (`receipt.rs`) signs a receipt for a run made outside
//!   the market's engine, filled from the task's
//!   [`Assignment`](agora_protocol::market::Assignment) and
//!   [`Outcome::ran`]; [`calibrate()`] measures the node's capacity in
//!   compute units with the calibration kernel.
//!
//! The precise contract with guests (what a provider must implement to get
//! identical outputs and fuel) is GUEST-CONTRACT.md next to this file.
//!
//! Callers: the market's task runner (on a blocking thread), `agora exec`,
//! `agora verify` and the capacity calibration at start-up.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_protocol::id::ContentId;
use agora_protocol::units::Bytes;
use wasmtime::{Engine, Linker};

mod cache;
mod calibrate;
mod check;
pub mod checkpoint;
pub mod compile;
pub mod engine;
mod error;
mod load;
pub mod meter;
mod receipt;
mod run;
mod task;
pub mod wasi;

pub use calibrate::{CALIBRATION_ROUNDS, Calibration, KERNEL_WAT, calibrate};
pub use check::validate;
pub use checkpoint::CheckpointSink;
pub use engine::wasm_config;
pub use error::{SetupError, TaskError};
pub use load::Module;
pub use receipt::receipt;
pub use task::{Outcome, Task};
pub use wasi::LiveLog;

/// Bytes in a WebAssembly page.
const WASM_PAGE: u64 = 64 << 10;

/// Where a node keeps compiled modules inside its data dir. The name
/// carries the cache format's version.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("compiled-v1")
}

/// How modules are compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileIsolation {
    /// In this process, bounded only by the module size cap. For tests and
    /// benchmarks.
    InProcess,
    /// In a child process, `exe compile-worker`, with its address space,
    /// CPU time and wall time limited.
    Subprocess {
        /// The `agora` binary.
        exe: PathBuf,
    },
}

/// Executor settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest module accepted, checked before parsing. Default 16 MiB.
    pub max_module_size: Bytes,
    /// Hard cap on any task's memory limit; also sizes each memory's
    /// address-space reservation. Rounded up to a multiple of 64 KiB.
    /// Default 512 MiB.
    pub max_memory: Bytes,
    /// Most native stack guest code may use. Default 512 KiB.
    pub max_wasm_stack: usize,
    /// Most instances alive at once (the pool size); further tasks wait.
    /// Default 64.
    pub max_instances: u32,
    /// Epoch period: the deadline's granularity and the throttle's time
    /// slice. Default 5 ms.
    pub epoch_tick: Duration,
    /// Where compiled modules are kept across restarts (`<content id>.cwasm`).
    /// Default none.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the disk cache may hold before the least recently used
    /// entries are deleted. Default 1 GiB.
    pub cache_max_size: Bytes,
    /// Most compiled modules kept in memory. Default 64.
    pub max_cached_modules: usize,
    /// How modules are compiled. Default in-process.
    pub compile: CompileIsolation,
    /// Wall-clock limit of one compilation (subprocess only). Default 30 s.
    pub compile_timeout: Duration,
    /// Address-space limit of the compile worker. Default 2 GiB.
    pub compile_memory: Bytes,
    /// Share of one core each running task may use, in (0, 1]. Default 1.
    pub cpu_share: f64,
    /// Most guest stderr kept per task; the rest is dropped. Default 64 KiB.
    pub max_stderr: usize,
    /// Use wasmtime's pooling instance allocator (faster instantiation,
    /// address space reserved up front for `max_instances` memories).
    /// Default true.
    pub pooling: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_module_size: Bytes::mib(16),
            max_memory: Bytes::mib(512),
            max_wasm_stack: 512 << 10,
            max_instances: 64,
            epoch_tick: Duration::from_millis(5),
            cache_dir: None,
            cache_max_size: Bytes::gib(1),
            max_cached_modules: 64,
            compile: CompileIsolation::InProcess,
            compile_timeout: Duration::from_secs(30),
            compile_memory: Bytes::gib(2),
            cpu_share: 1.0,
            max_stderr: 64 << 10,
            pooling: true,
        }
    }
}

/// Counters, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Modules compiled (in process or in a worker).
    pub compiled: u64,
    /// Modules loaded from the disk cache.
    pub disk_hits: u64,
    /// Modules found in the memory cache.
    pub memory_hits: u64,
    /// Tasks run.
    pub runs: u64,
    /// Modules currently in the memory cache.
    pub cached_modules: usize,
}

#[derive(Default)]
struct Counters {
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory_hits: AtomicU64,
    runs: AtomicU64,
}

struct Inner {
    config: Config,
    engine: Engine,
    linker: Linker<wasi::State>,
    memory_cache: Mutex<cache::MemoryCache>,
    disk_cache: Option<cache::DiskCache>,
    /// Modules being compiled, each with the lock its compiler holds and,
    /// once it failed, the error: another task of the same new module waits
    /// for that compile instead of starting its own (a provider's slots
    /// would otherwise compile a new module once each, at once).
    compiling: Mutex<HashMap<ContentId, Arc<Mutex<Option<TaskError>>>>>,
    share: Arc<AtomicU64>,
    suspend: Arc<run::Suspend>,
    slots: engine::Slots,
    counters: Counters,
    // Dropped last among the fields that matter: stops the epoch thread.
    ticker: engine::Ticker,
}

/// Runs tasks. Cheap to clone; all clones share the engine, caches and pool.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Creates the engine, the ticker and the caches.
    pub fn new(config: Config) -> Result<Executor, SetupError> {
        let invalid = |m: &str| Err(SetupError::InvalidConfig(m.to_owned()));
        if !(config.cpu_share > 0.0 && config.cpu_share <= 1.0) {
            return invalid("cpu_share must be in (0, 1]");
        }
        if config.max_instances == 0 {
            return invalid("max_instances must be at least 1");
        }
        if config.epoch_tick.is_zero() {
            return invalid("epoch_tick must be positive");
        }
        if config.max_memory.0 == 0 {
            return invalid("max_memory must be positive");
        }
        let mut config = config;
        config.max_memory = Bytes(config.max_memory.0.div_ceil(WASM_PAGE).saturating_mul(WASM_PAGE));
        let engine = engine::build(&config)?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(|e| SetupError::Engine(format!("{e:#}")))?;
        let disk_cache =
            match &config.cache_dir {
                Some(dir) => Some(cache::DiskCache::open(dir, config.cache_max_size.0).map_err(
                    |source| SetupError::CacheDir {
                        path: dir.clone(),
                        source,
                    },
                )?),
                None => None,
            };
        let ticker = engine::Ticker::start(&engine, config.epoch_tick)?;
        Ok(Executor {
            inner: Arc::new(Inner {
                memory_cache: Mutex::new(cache::MemoryCache::new(config.max_cached_modules)),
                disk_cache,
                compiling: Mutex::default(),
                share: Arc::new(AtomicU64::new(config.cpu_share.to_bits())),
                suspend: Arc::default(),
                slots: engine::Slots::new(config.max_instances),
                counters: Counters::default(),
                ticker,
                linker,
                engine,
                config,
            }),
        })
    }

    /// Runs one task to completion.
    ///
    /// Blocking, and it may sleep (cpu-share throttling): call it from a
    /// thread that may block, with at least 1 MiB of free stack, never from
    /// inside an async task (use `tokio::task::spawn_blocking`). Waits for a
    /// free instance slot when [`Config::max_instances`] tasks are running.
    /// Never panics on guest behaviour.
    pub fn run(&self, module: &Module, task: &Task<'_>) -> Outcome {
        self.run_cancellable(module, task, None)
    }

    /// Runs `task` like [`Executor::run`], stopping at the next epoch tick
    /// after `cancel` is set: the run then ends as
    /// [`TaskError::Interrupted`].
    pub fn run_cancellable(
        &self,
        module: &Module,
        task: &Task<'_>,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Outcome {
        self.run_with(module, task, cancel, false, None, None)
    }

    /// Runs a task accepted from another node: like
    /// [`Executor::run_cancellable`], and it also parks in place while the
    /// executor is suspended ([`Executor::suspend`]); the guest's stderr is
    /// copied to `live` as it is written. The node's own work (its spot
    /// checks, reduce steps, fraud checks) is never suspended. While
    /// `pause` is set, this run alone parks in the same way (preempted by
    /// an interactive task).
    pub fn run_provided(
        &self,
        module: &Module,
        task: &Task<'_>,
        cancel: Option<Arc<AtomicBool>>,
        live: Option<LiveLog>,
        pause: Option<Arc<AtomicBool>>,
    ) -> Outcome {
        self.run_with(module, task, cancel, true, live, pause)
    }

    fn run_with(
        &self,
        module: &Module,
        task: &Task<'_>,
        cancel: Option<Arc<AtomicBool>>,
        suspendable: bool,
        live: Option<LiveLog>,
        pause: Option<Arc<AtomicBool>>,
    ) -> Outcome {
        let _slot = self.inner.slots.acquire();
        let _running = self.inner.ticker.enter();
        self.inner.counters.runs.fetch_add(1, Ordering::Relaxed);
        run::run(
            &run::RunSettings {
                engine: &self.inner.engine,
                max_memory: self.inner.config.max_memory.0,
                max_stderr: self.inner.config.max_stderr,
                share: &self.inner.share,
                suspend: suspendable.then_some(&self.inner.suspend),
                cancel,
                live,
                pause,
            },
            module,
            task,
        )
    }

    /// Changes the cpu share of running and future tasks. Values are clamped
    /// to [0.01, 1]; NaN means 1.
    pub fn set_cpu_share(&self, share: f64) {
        let share = if share.is_nan() {
            1.0
        } else {
            share.clamp(0.01, 1.0)
        };
        self.inner.share.store(share.to_bits(), Ordering::Relaxed);
    }

    /// Suspends every task run for others ([`Executor::run_provided`]) in
    /// place (`true`) at its next epoch tick, or lets them go on (`false`). A suspended guest keeps its whole
    /// state and uses no CPU; resumed, it goes on from where it stopped, so
    /// its output and fuel are those of an uninterrupted run. Tasks started
    /// while suspended stop at their first tick. A cancelled run stops even
    /// while suspended.
    pub fn suspend(&self, hold: bool) {
        self.inner.suspend.hold.store(hold, Ordering::Relaxed);
    }

    /// How many runs are suspended right now.
    pub fn suspended(&self) -> usize {
        self.inner.suspend.suspended.load(Ordering::Relaxed)
    }

    /// The current cpu share.
    pub fn cpu_share(&self) -> f64 {
        f64::from_bits(self.inner.share.load(Ordering::Relaxed))
    }

    /// The configuration it was created with ([`Executor::cpu_share`] is the
    /// live share).
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            compiled: c.compiled.load(Ordering::Relaxed),
            disk_hits: c.disk_hits.load(Ordering::Relaxed),
            memory_hits: c.memory_hits.load(Ordering::Relaxed),
            runs: c.runs.load(Ordering::Relaxed),
            cached_modules: self.memory_cache().len(),
        }
    }

    fn memory_cache(&self) -> std::sync::MutexGuard<'_, cache::MemoryCache> {
        self.inner.memory_cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

//! The node's worker: runs untrusted WebAssembly tasks in a deterministic,
//! bounded sandbox and accounts for them in fuel.
//!
//! How the parts connect:
//!
//! * [`Executor`] owns one wasmtime engine ([`engine`]): fuel metering,
//!   epoch interruption driven by a ticker thread, NaN canonicalisation
//!   (wherever NaN bits can be observed; vendor/README.md),
//!   deterministic relaxed SIMD, no threads, a bounded wasm stack, memory
//!   reservations sized to [`Config::max_memory`] and a pooling allocator of
//!   [`Config::max_instances`] slots.
//! * [`Executor::load`] turns module bytes into a [`Module`] (compiled code
//!   plus an `InstancePre` linked against the guest's world): from the
//!   in-memory LRU, else the disk cache (`cache`), else by compiling
//!   ([`compile`]), in a resource-limited `agora compile-worker` process
//!   unless [`CompileIsolation::InProcess`] is chosen.
//! * [`Executor::run`] runs a [`Task`] in a fresh store with its
//!   [`Limits`]: the guest sees WASI preview 1 with stdin, stdout, stderr and
//!   arguments only, and deterministic clocks and randomness ([`wasi`]).
//!   Every way a run can end is an [`Outcome`] whose result is a typed
//!   [`TaskError`]; guest behaviour never panics the node.
//! * [`receipt`] signs a receipt for a run; [`calibrate()`] measures the
//!   node's capacity in compute units with the calibration kernel.
//!
//! The precise contract with guests (what a provider must implement to get
//! identical outputs and fuel) is GUEST-CONTRACT.md next to this file.
//!
//! Callers: the market's task runner (on a blocking thread), `agora exec`,
//! `agora verify` and the capacity calibration at start-up.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use agora_protocol::envelope::Verified;
use agora_protocol::execution::{ExitStatus, Receipt};
use agora_protocol::id::{ContentId, MessageId, NodeId, Nonce, TaskId};
use agora_protocol::market::{Arg, Limits, args_digest};
use agora_protocol::units::{Bytes, Fuel, Timestamp};
use agora_protocol::{Envelope, Keypair, Payload};
use wasmtime::{Engine, InstancePre, Linker};

mod cache;
mod calibrate;
pub mod compile;
pub mod engine;
mod run;
pub mod wasi;

pub use calibrate::{CALIBRATION_ROUNDS, Calibration, KERNEL_WAT, calibrate};
pub use engine::wasm_config;

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

/// Why an executor could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A setting is out of range.
    #[error("invalid executor configuration: {0}")]
    InvalidConfig(String),
    /// wasmtime refused the engine configuration (or could not reserve the
    /// instance pool: lower `max_instances` or `max_memory`).
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The module cache directory could not be created.
    #[error("cannot create the module cache {path}: {source}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The epoch ticker thread could not be started.
    #[error("cannot start the epoch ticker: {0}")]
    Ticker(std::io::Error),
}

/// Why a task (or loading its module) failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TaskError {
    /// The fuel limit was reached.
    #[error("out of fuel after {limit} units")]
    OutOfFuel {
        /// The limit.
        limit: Fuel,
    },
    /// The wall-clock limit was reached.
    #[error("deadline of {} exceeded", humantime::format_duration(*timeout))]
    Deadline {
        /// The limit.
        timeout: Duration,
    },
    /// The guest needed more memory than its limit (a refused `memory.grow`
    /// followed by a trap, or an initial memory above the limit).
    #[error("memory limit of {limit} reached")]
    MemoryLimit {
        /// The limit.
        limit: Bytes,
    },
    /// The guest exhausted its stack.
    #[error("stack overflow")]
    StackOverflow,
    /// The guest trapped.
    #[error("trap: {0}")]
    Trap(String),
    /// The guest called `proc_exit` with a non-zero code.
    #[error("exit code {0}")]
    ExitCode(u32),
    /// The guest wrote more to stdout than its limit.
    #[error("output exceeds the limit of {limit}")]
    OutputTooLarge {
        /// The limit.
        limit: Bytes,
    },
    /// The bytes are not a valid module, or not a WASI command module.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module exceeds the size cap.
    #[error("module of {size} exceeds the maximum of {max}")]
    ModuleTooLarge {
        /// Its size.
        size: Bytes,
        /// The cap.
        max: Bytes,
    },
    /// The module imports something outside the granted WASI functions.
    #[error("forbidden import `{module}::{name}`: only wasi_snapshot_preview1 functions are granted")]
    ForbiddenImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// Compilation exceeded its time or memory bounds, or failed otherwise.
    #[error("compile failed: {0}")]
    CompileFailed(String),
}

impl TaskError {
    /// The status a receipt reports for this failure.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            TaskError::OutOfFuel { .. } => ExitStatus::OutOfFuel,
            TaskError::Deadline { .. } => ExitStatus::Deadline,
            TaskError::MemoryLimit { .. } => ExitStatus::MemoryLimit,
            TaskError::StackOverflow => ExitStatus::StackOverflow,
            TaskError::Trap(m) => ExitStatus::Trap(ExitStatus::clip(m)),
            TaskError::ExitCode(c) => ExitStatus::ExitCode(*c),
            TaskError::OutputTooLarge { .. } => ExitStatus::OutputTooLarge,
            TaskError::InvalidModule(m) => ExitStatus::InvalidModule(ExitStatus::clip(m)),
            e @ (TaskError::ModuleTooLarge { .. }
            | TaskError::ForbiddenImport { .. }
            | TaskError::CompileFailed(_)) => ExitStatus::InvalidModule(ExitStatus::clip(&e.to_string())),
        }
    }
}

/// A compiled module, linked and ready to instantiate.
pub struct Module {
    id: ContentId,
    pre: InstancePre<wasi::State>,
    /// Initial size of its memory in bytes.
    min_memory: u64,
}

impl Module {
    /// The module's content id (blake3 of its binary).
    pub fn id(&self) -> ContentId {
        self.id
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("id", &self.id)
            .field("min_memory", &self.min_memory)
            .finish_non_exhaustive()
    }
}

/// One execution request.
#[derive(Debug, Clone)]
pub struct Task<'a> {
    /// The guest's stdin.
    pub input: &'a [u8],
    /// `argv[1..]`.
    pub args: &'a [String],
    /// Fuel, memory, time and output limits.
    pub limits: Limits,
    /// Seed of the guest's random stream.
    pub seed: u64,
}

/// How a run ended and what it produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Success, or why not.
    pub result: Result<(), TaskError>,
    /// The guest's stdout (up to the output limit).
    pub output: Vec<u8>,
    /// The guest's stderr (up to [`Config::max_stderr`]).
    pub stderr: Vec<u8>,
    /// Fuel consumed (the limit, when it ran out).
    pub fuel_used: Fuel,
    /// When the run started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Wall time of the run, instantiation included.
    pub wall: Duration,
}

impl Outcome {
    /// The status a receipt reports.
    pub fn exit_status(&self) -> ExitStatus {
        match &self.result {
            Ok(()) => ExitStatus::Success,
            Err(e) => e.exit_status(),
        }
    }

    /// The content id of the output.
    pub fn output_id(&self) -> ContentId {
        ContentId::of(&self.output)
    }

    /// The run as receipts report it (the output bytes left out).
    pub fn ran(&self) -> agora_market::engine::Ran {
        agora_market::engine::Ran {
            output: self.output_id(),
            output_size: Bytes(self.output.len() as u64),
            fuel: self.fuel_used,
            exit: self.exit_status(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            inline: None,
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
    share: Arc<AtomicU64>,
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
                share: Arc::new(AtomicU64::new(config.cpu_share.to_bits())),
                slots: engine::Slots::new(config.max_instances),
                counters: Counters::default(),
                ticker,
                linker,
                engine,
                config,
            }),
        })
    }

    /// Compiles a module (a wasm binary) or loads it from cache: memory,
    /// then disk.
    ///
    /// Refuses modules over the size cap before parsing, modules importing
    /// anything but the granted WASI functions ([`TaskError::ForbiddenImport`]),
    /// modules whose initial memory exceeds [`Config::max_memory`]
    /// ([`TaskError::MemoryLimit`]) and modules without a `_start` function.
    pub fn load(&self, module: &[u8]) -> Result<Arc<Module>, TaskError> {
        let c = &self.inner.config;
        if module.len() as u64 > c.max_module_size.0 {
            return Err(TaskError::ModuleTooLarge {
                size: Bytes(module.len() as u64),
                max: c.max_module_size,
            });
        }
        let id = ContentId::of(module);
        if let Some(m) = self.cached(&id) {
            return Ok(m);
        }
        precheck(module, c.max_memory.0)?;
        let compiled = match &c.compile {
            CompileIsolation::InProcess => {
                let m = compile::in_process(&self.inner.engine, module)?;
                let artifact = self.inner.disk_cache.as_ref().and_then(|_| m.serialize().ok());
                (m, artifact)
            }
            CompileIsolation::Subprocess { exe } => {
                let limits = compile::WorkerLimits {
                    max_memory: c.max_memory.0,
                    address_space: c.compile_memory,
                    timeout: c.compile_timeout,
                };
                let artifact = compile::in_subprocess(exe, module, &limits)?;
                let m = cache::deserialize(&self.inner.engine, &artifact).map_err(|e| {
                    TaskError::CompileFailed(format!("the compile worker's artifact does not load: {e:#}"))
                })?;
                (m, Some(artifact))
            }
        };
        self.inner.counters.compiled.fetch_add(1, Ordering::Relaxed);
        let (compiled, artifact) = compiled;
        let m = Arc::new(self.link(id, compiled)?);
        if let (Some(disk), Some(artifact)) = (&self.inner.disk_cache, artifact) {
            disk.write(&id, &artifact);
        }
        self.remember(m.clone());
        tracing::debug!(module = %id, "module compiled");
        Ok(m)
    }

    /// A module compiled earlier (memory or disk cache), without its bytes.
    pub fn cached(&self, id: &ContentId) -> Option<Arc<Module>> {
        if let Some(m) = self.memory_cache().get(id) {
            self.inner.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Some(m);
        }
        let disk = self.inner.disk_cache.as_ref()?;
        let artifact = disk.read(id)?;
        let loaded = cache::deserialize(&self.inner.engine, &artifact)
            .map_err(|e| TaskError::CompileFailed(format!("{e:#}")))
            .and_then(|m| self.link(*id, m));
        match loaded {
            Ok(m) => {
                let m = Arc::new(m);
                self.inner.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                self.remember(m.clone());
                Some(m)
            }
            Err(e) => {
                tracing::info!(module = %id, "cached module unusable, recompiling: {e}");
                disk.remove(id);
                None
            }
        }
    }

    /// Runs one task to completion.
    ///
    /// Blocking, and it may sleep (cpu-share throttling): call it from a
    /// thread that may block, with at least 1 MiB of free stack, never from
    /// inside an async task (use `tokio::task::spawn_blocking`). Waits for a
    /// free instance slot when [`Config::max_instances`] tasks are running.
    /// Never panics on guest behaviour.
    pub fn run(&self, module: &Module, task: &Task<'_>) -> Outcome {
        let _slot = self.inner.slots.acquire();
        let _running = self.inner.ticker.enter();
        self.inner.counters.runs.fetch_add(1, Ordering::Relaxed);
        run::run(
            &run::RunSettings {
                engine: &self.inner.engine,
                max_memory: self.inner.config.max_memory.0,
                max_stderr: self.inner.config.max_stderr,
                share: &self.inner.share,
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

    fn remember(&self, m: Arc<Module>) {
        self.memory_cache().insert(m);
    }

    /// Checks the compiled module against the guest contract and links it.
    fn link(&self, id: ContentId, m: wasmtime::Module) -> Result<Module, TaskError> {
        for import in m.imports() {
            let granted = import.module() == wasi::WASI_MODULE
                && import.ty().func().is_some()
                && wasi::GRANTED_FUNCTIONS.contains(&import.name());
            if !granted {
                return Err(TaskError::ForbiddenImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                });
            }
        }
        match m.get_export("_start") {
            Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
            _ => {
                return Err(TaskError::InvalidModule(
                    "no `_start` function of type [] -> []: a task must be a WASI command module".into(),
                ));
            }
        }
        let min_memory = m
            .resources_required()
            .max_initial_memory_size
            .unwrap_or(0)
            .saturating_mul(WASM_PAGE);
        let pre = self
            .inner
            .linker
            .instantiate_pre(&m)
            .map_err(|e| TaskError::InvalidModule(format!("{e:#}")))?;
        Ok(Module { id, pre, min_memory })
    }
}

/// Checks a module as a provider will before running it — size, granted
/// imports, initial memory, validity under the granted features, and a
/// `_start: [] -> []` export — without compiling it. The CLI runs this
/// before submitting a job, so a bad module is refused at once rather than
/// failing on every provider.
pub fn validate(wasm: &[u8], config: &Config) -> Result<(), TaskError> {
    use wasmtime::wasmparser::{ExternalKind, Parser, Payload};
    if wasm.len() as u64 > config.max_module_size.0 {
        return Err(TaskError::ModuleTooLarge {
            size: Bytes(wasm.len() as u64),
            max: config.max_module_size,
        });
    }
    precheck(wasm, config.max_memory.0)?;
    let engine = Engine::new(&engine::wasm_config(config.max_memory.0))
        .map_err(|e| TaskError::InvalidModule(format!("{e:#}")))?;
    wasmtime::Module::validate(&engine, wasm).map_err(|e| TaskError::InvalidModule(format!("{e:#}")))?;
    let mut start = None;
    let mut func_types = Vec::new();
    let mut imported_funcs = 0u32;
    let mut types: Vec<(usize, usize)> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| TaskError::InvalidModule(e.to_string()))? {
            Payload::TypeSection(r) => {
                for ty in r.into_iter_err_on_gc_types() {
                    let f = ty.map_err(|e| TaskError::InvalidModule(e.to_string()))?;
                    types.push((f.params().len(), f.results().len()));
                }
            }
            Payload::ImportSection(r) => {
                for imp in r.into_imports() {
                    let imp = imp.map_err(|e| TaskError::InvalidModule(e.to_string()))?;
                    if matches!(imp.ty, wasmtime::wasmparser::TypeRef::Func(_)) {
                        imported_funcs += 1;
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for f in r {
                    func_types.push(f.map_err(|e| TaskError::InvalidModule(e.to_string()))?);
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.map_err(|e| TaskError::InvalidModule(e.to_string()))?;
                    if e.name == "_start" && e.kind == ExternalKind::Func {
                        start = Some(e.index);
                    }
                }
            }
            _ => {}
        }
    }
    let ok = start
        .and_then(|i| i.checked_sub(imported_funcs))
        .and_then(|i| func_types.get(i as usize))
        .and_then(|t| types.get(*t as usize))
        .is_some_and(|(p, r)| *p == 0 && *r == 0);
    if !ok {
        return Err(TaskError::InvalidModule(
            "no `_start` function of type [] -> []: a task must be a WASI command module".into(),
        ));
    }
    Ok(())
}

/// Checks what can be checked before compiling, from the module's first
/// sections alone (parsing stops after the memory section): imports must be
/// granted WASI functions, tables must fit the table limits, and no memory
/// may start larger than `max_memory`. (The pooling allocator would refuse
/// such modules too, but as a compile error.)
fn precheck(wasm: &[u8], max_memory: u64) -> Result<(), TaskError> {
    use wasmtime::wasmparser::{Parser, Payload, TypeRef};
    let invalid = |e: wasmtime::wasmparser::BinaryReaderError| TaskError::InvalidModule(e.to_string());
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::Version { .. }
            | Payload::TypeSection(_)
            | Payload::CustomSection(_)
            | Payload::FunctionSection(_) => {}
            Payload::TableSection(reader) => {
                let count = reader.count();
                if count > engine::MAX_TABLES {
                    return Err(TaskError::InvalidModule(format!(
                        "the module defines {count} tables; at most {} are granted",
                        engine::MAX_TABLES
                    )));
                }
                for table in reader {
                    let initial = table.map_err(invalid)?.ty.initial;
                    if initial > engine::MAX_TABLE_ELEMENTS as u64 {
                        return Err(TaskError::InvalidModule(format!(
                            "a table of {initial} elements exceeds the limit of {}",
                            engine::MAX_TABLE_ELEMENTS
                        )));
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    let granted = import.module == wasi::WASI_MODULE
                        && matches!(import.ty, TypeRef::Func(_))
                        && wasi::GRANTED_FUNCTIONS.contains(&import.name);
                    if !granted {
                        return Err(TaskError::ForbiddenImport {
                            module: import.module.to_owned(),
                            name: import.name.to_owned(),
                        });
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(invalid)?;
                    if memory.initial.saturating_mul(WASM_PAGE) > max_memory {
                        return Err(TaskError::MemoryLimit {
                            limit: Bytes(max_memory),
                        });
                    }
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// The unsigned receipt for a run.
#[allow(clippy::too_many_arguments)]
pub fn receipt_payload(
    agreement: MessageId,
    task: TaskId,
    requester: NodeId,
    module: ContentId,
    input: ContentId,
    args: &[String],
    seed: u64,
    limits: &Limits,
    outcome: &Outcome,
) -> Receipt {
    let args: Vec<Arg> = args.iter().cloned().map(Arg).collect();
    Receipt {
        agreement,
        task,
        requester,
        module,
        input,
        args: args_digest(&args),
        seed,
        fuel_limit: limits.fuel,
        output: outcome.output_id(),
        output_size: Bytes(outcome.output.len() as u64),
        fuel_used: outcome.fuel_used,
        exit: outcome.exit_status(),
        started_at: outcome.started_at,
        finished_at: outcome.finished_at,
    }
}

/// Signs a receipt for a run as `keypair` (the provider), valid for the
/// receipt type's maximum lifetime from now. Returns the verified receipt,
/// whose [`Verified::envelope`] is what travels.
#[allow(clippy::too_many_arguments)]
pub fn receipt(
    keypair: &Keypair,
    agreement: MessageId,
    task: TaskId,
    requester: NodeId,
    module: ContentId,
    input: ContentId,
    args: &[String],
    seed: u64,
    limits: &Limits,
    outcome: &Outcome,
) -> Verified<Receipt> {
    let payload = receipt_payload(
        agreement, task, requester, module, input, args, seed, limits, outcome,
    );
    let envelope = Envelope::seal(
        keypair,
        &payload,
        Timestamp::from_system(SystemTime::now()),
        Receipt::MAX_LIFETIME,
        Nonce(rand::random()),
    )
    // Cannot fail: the lifetime is the type's maximum and a receipt is a few
    // hundred bytes (its messages are clipped to MAX_MESSAGE_LEN).
    .expect("a receipt always fits an envelope");
    envelope
        .open_ignoring_time::<Receipt>()
        .expect("an envelope we just signed verifies")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_match_the_cli_contract() {
        assert_eq!(
            TaskError::OutOfFuel {
                limit: Fuel(100_000_000)
            }
            .to_string(),
            "out of fuel after 100000000 units"
        );
        assert_eq!(
            TaskError::Deadline {
                timeout: Duration::from_secs(1)
            }
            .to_string(),
            "deadline of 1s exceeded"
        );
        assert_eq!(
            TaskError::MemoryLimit {
                limit: Bytes::mib(64)
            }
            .to_string(),
            "memory limit of 64 MiB reached"
        );
        assert_eq!(TaskError::StackOverflow.to_string(), "stack overflow");
        assert_eq!(TaskError::ExitCode(3).to_string(), "exit code 3");
        assert_eq!(
            TaskError::ForbiddenImport {
                module: "env".into(),
                name: "f".into()
            }
            .exit_status(),
            ExitStatus::InvalidModule(
                "forbidden import `env::f`: only wasi_snapshot_preview1 functions are granted".into()
            )
        );
        let long = TaskError::Trap("x".repeat(5000)).exit_status();
        assert!(matches!(long, ExitStatus::Trap(m) if m.len() == agora_protocol::limits::MAX_MESSAGE_LEN));
    }

    #[test]
    fn imports_and_initial_memory_are_checked_before_compiling() {
        let big = wat::parse_str(r#"(module (memory 17))"#).unwrap();
        assert_eq!(
            precheck(&big, 1 << 20),
            Err(TaskError::MemoryLimit { limit: Bytes::mib(1) })
        );
        assert_eq!(
            precheck(&wat::parse_str(r#"(module (memory 16))"#).unwrap(), 1 << 20),
            Ok(())
        );
        let tables = wat::parse_str(r#"(module (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref))"#).unwrap();
        assert!(
            matches!(precheck(&tables, 1 << 20), Err(TaskError::InvalidModule(m)) if m.contains("5 tables"))
        );
        let big_table = wat::parse_str(r#"(module (table 100001 funcref))"#).unwrap();
        assert!(matches!(
            precheck(&big_table, 1 << 20),
            Err(TaskError::InvalidModule(_))
        ));
        let ok = wat::parse_str(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))"#,
        )
        .unwrap();
        assert_eq!(precheck(&ok, 1 << 20), Ok(()));
        for (m, n, ty) in [
            ("env", "f", "(func)"),
            ("wasi_snapshot_preview1", "sock_open", "(func)"),
            ("wasi_unstable", "fd_write", "(func)"),
            ("wasi_snapshot_preview1", "memory", "(memory 1)"),
        ] {
            let wasm = wat::parse_str(format!(r#"(module (import "{m}" "{n}" {ty}))"#)).unwrap();
            assert_eq!(
                precheck(&wasm, 1 << 20),
                Err(TaskError::ForbiddenImport {
                    module: m.into(),
                    name: n.into()
                })
            );
        }
    }

    #[test]
    fn memory_cache_is_bounded_and_keeps_recent_modules() {
        let executor = Executor::new(Config {
            max_cached_modules: 2,
            max_instances: 2,
            ..Config::default()
        })
        .unwrap();
        let module = |n: u32| {
            wat::parse_str(format!(
                r#"(module (func (export "_start")) (global i32 (i32.const {n})))"#
            ))
            .unwrap()
        };
        let a = executor.load(&module(1)).unwrap();
        executor.load(&module(2)).unwrap();
        assert!(executor.cached(&a.id()).is_some()); // touch a
        executor.load(&module(3)).unwrap(); // evicts 2
        assert_eq!(executor.stats().cached_modules, 2);
        assert!(executor.cached(&a.id()).is_some());
        assert!(executor.cached(&ContentId::of(&module(2))).is_none());
    }
}

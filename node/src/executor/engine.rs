//! The shared wasmtime engine: its configuration, the epoch ticker and the
//! bound on concurrent instances.
//!
//! Everything that changes compiled code lives in [`wasm_config`], which the
//! compile worker (`agora compile-worker`) uses too, so an artifact compiled
//! in the worker deserialises into the node's engine. Runtime-only settings
//! (the instance allocator, the wasm stack) are added by `build`.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use wasmtime::{
    Enabled, Engine, EngineWeak, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Strategy,
    WasmFeatures,
};

use super::{Config, SetupError};

/// Guard region after each linear memory. Lets cranelift fold the bounds
/// checks of accesses with small constant offsets into one check.
pub(crate) const MEMORY_GUARD: u64 = 32 << 20;

/// Most elements of one table.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Most tables a module may define.
pub(crate) const MAX_TABLES: u32 = 4;

/// Frames kept in a trap's backtrace (only logged; statuses use the trap code).
const MAX_BACKTRACE_FRAMES: usize = 16;

/// The part of the engine configuration that determines compiled code.
///
/// `max_memory` is the largest linear memory any task may have: it sizes the
/// per-memory address-space reservation (instead of wasmtime's 4 GiB), and
/// memories never move, so cranelift may hoist the heap base out of loops.
pub fn wasm_config(max_memory: u64) -> wasmtime::Config {
    let mut c = wasmtime::Config::new();
    c.strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        // Determinism: fuel is the unit of billing and verification; NaNs
        // are canonicalised so float results are bit-identical everywhere
        // (only where their bits can be observed, which is what keeps float
        // loops fast: vendor/README.md); relaxed SIMD uses its deterministic
        // lowering.
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        // The wall-clock deadline and cpu-share throttling.
        .epoch_interruption(true)
        .memory_reservation(max_memory)
        .memory_guard_size(MEMORY_GUARD)
        .memory_reservation_for_growth(0)
        .memory_may_move(false)
        .wasm_backtrace_max_frames(NonZeroUsize::new(MAX_BACKTRACE_FRAMES));
    // The granted feature set (GUEST-CONTRACT.md, "WebAssembly features"),
    // stated explicitly so a wasmtime upgrade cannot widen it silently.
    let enabled = WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::REFERENCE_TYPES
        | WasmFeatures::SIMD
        | WasmFeatures::RELAXED_SIMD
        | WasmFeatures::TAIL_CALL
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::FLOATS;
    let refused = WasmFeatures::THREADS
        | WasmFeatures::SHARED_EVERYTHING_THREADS
        | WasmFeatures::MULTI_MEMORY
        | WasmFeatures::MEMORY64
        | WasmFeatures::GC
        | WasmFeatures::FUNCTION_REFERENCES
        | WasmFeatures::EXCEPTIONS
        | WasmFeatures::LEGACY_EXCEPTIONS
        | WasmFeatures::STACK_SWITCHING
        | WasmFeatures::CUSTOM_PAGE_SIZES
        | WasmFeatures::WIDE_ARITHMETIC
        | WasmFeatures::COMPONENT_MODEL;
    c.wasm_features(enabled, true).wasm_features(refused, false);
    c
}

/// The memory a pool slot keeps resident between tasks when only the
/// pages a task wrote are reset (PAGEMAP_SCAN).
const KEEP_RESIDENT_SCANNED: usize = 2 << 20;

/// The same when every reset clears the whole kept region.
const KEEP_RESIDENT: usize = 64 << 10;

/// The node's engine: [`wasm_config`] plus the runtime settings.
pub(crate) fn build(config: &Config) -> Result<Engine, SetupError> {
    let mut c = wasm_config(config.max_memory.0);
    c.max_wasm_stack(config.max_wasm_stack);
    if config.pooling {
        let n = config.max_instances;
        let max_memory = usize::try_from(config.max_memory.0)
            .map_err(|_| SetupError::InvalidConfig("max_memory does not fit in the address space".into()))?;
        // A slot's memory is reset for its next task in place, without
        // faulting its pages in again, as far as it is kept resident. With
        // Linux's PAGEMAP_SCAN (6.7 on) only the pages the task wrote are
        // reset, so the kept region can cover a Rust or C guest's 1 MiB
        // stack and the data above it: a no-op task's run took 108 µs in a
        // busy node with the first 64 KiB kept, 38 µs with 2 MiB. Without
        // the scan every reset clears the whole kept region, so only the
        // first page or so is kept. A slot holds at most that much of its
        // last task's pages while unused.
        let scan = PoolingAllocationConfig::is_pagemap_scan_available();
        let keep_resident = if scan {
            KEEP_RESIDENT_SCANNED
        } else {
            KEEP_RESIDENT
        };
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(n)
            .total_memories(n)
            .total_tables(n.saturating_mul(MAX_TABLES))
            .total_stacks(0)
            .total_component_instances(0)
            .max_memories_per_module(1)
            .max_tables_per_module(MAX_TABLES)
            .table_elements(MAX_TABLE_ELEMENTS)
            // The VMContext of a module with very many globals or functions;
            // a heap allocation per instance, only a limit here.
            .max_core_instance_size(8 << 20)
            .max_memory_size(max_memory)
            .linear_memory_keep_resident(keep_resident)
            .pagemap_scan(if scan { Enabled::Yes } else { Enabled::No })
            .table_keep_resident(16 << 10);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&c).map_err(|e| SetupError::Engine(format!("{e:#}")))
}

/// The engine for the compile worker: identical code generation, no pool.
pub(crate) fn build_for_compile(max_memory: u64) -> Result<Engine, SetupError> {
    Engine::new(&wasm_config(max_memory)).map_err(|e| SetupError::Engine(format!("{e:#}")))
}

/// Increments the engine's epoch every `tick` while at least one task runs;
/// parks otherwise so an idle node does not wake 200 times a second.
pub(crate) struct Ticker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

struct TickerShared {
    stop: AtomicBool,
    running: AtomicUsize,
}

impl Ticker {
    pub(crate) fn start(engine: &Engine, tick: Duration) -> Result<Ticker, SetupError> {
        let shared = Arc::new(TickerShared {
            stop: AtomicBool::new(false),
            running: AtomicUsize::new(0),
        });
        let weak: EngineWeak = engine.weak();
        let s = shared.clone();
        let thread = thread::Builder::new()
            .name("agora-epoch".into())
            .spawn(move || {
                while !s.stop.load(Ordering::Acquire) {
                    if s.running.load(Ordering::Acquire) == 0 {
                        thread::park_timeout(Duration::from_secs(1));
                        continue;
                    }
                    thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(SetupError::Ticker)?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    /// Marks a task as running until the guard drops.
    pub(crate) fn enter(&self) -> RunningGuard<'_> {
        if self.shared.running.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
        RunningGuard(self)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// See [`Ticker::enter`].
pub(crate) struct RunningGuard<'a>(&'a Ticker);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.shared.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A counting semaphore over instance slots: the pooling allocator refuses
/// an instance beyond its pool, so tasks wait for a slot instead.
///
/// A released slot wakes a waiter only if there is one: `Condvar::notify_one`
/// makes a futex call whether or not anyone waits, and in the common case,
/// a free slot for every task, nobody does.
pub(crate) struct Slots {
    state: Mutex<SlotState>,
    cond: Condvar,
}

struct SlotState {
    free: u32,
    waiting: u32,
}

impl Slots {
    pub(crate) fn new(n: u32) -> Slots {
        Slots {
            state: Mutex::new(SlotState { free: n, waiting: 0 }),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn acquire(&self) -> SlotGuard<'_> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.free == 0 {
            s.waiting += 1;
            s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
            s.waiting -= 1;
        }
        s.free -= 1;
        SlotGuard(self)
    }
}

/// See [`Slots::acquire`].
pub(crate) struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        s.free += 1;
        let wake = s.waiting > 0;
        drop(s);
        if wake {
            self.0.cond.notify_one();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn worker_and_node_engines_are_compatible() {
        let config = Config::default();
        let node = build(&config).unwrap();
        let worker = build_for_compile(config.max_memory.0).unwrap();
        let wasm = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
        let artifact = worker.precompile_module(&wasm).unwrap();
        // The worker's artifact loads into the node's (pooling) engine…
        assert!(super::super::cache::deserialize(&node, &artifact).is_ok());
        // …and an engine with another reservation refuses it.
        let other = build_for_compile(config.max_memory.0 * 2).unwrap();
        assert!(super::super::cache::deserialize(&other, &artifact).is_err());
    }

    #[test]
    fn slots_block_until_released() {
        let slots = Arc::new(Slots::new(1));
        let g = slots.acquire();
        let s = slots.clone();
        let waiter = thread::spawn(move || {
            let _g = s.acquire();
        });
        thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished());
        drop(g);
        waiter.join().unwrap();
    }
}

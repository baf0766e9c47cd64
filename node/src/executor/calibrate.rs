//! Measuring a node's capacity in compute units (GUEST-CONTRACT.md,
//! "Calibration").
//!
//! The calibration kernel is a WASI command module that never returns: a
//! loop calling a step function of integer multiply, add, xor, shift and
//! rotate with a data-dependent branch, loading and storing a 4 KiB buffer.
//! It runs in the same sandbox as any task (fuel, epoch deadline and the
//! cpu-share throttle included) until the deadline stops it; the fuel it
//! burned per second of wall time, divided by one million, is the node's
//! capacity in CU.
//!
//! The call in the loop is not decoration: wasmtime keeps the fuel counter
//! in a register and writes it back to the store only at calls and returns,
//! so a run stopped by its deadline reports the fuel of its last call. One
//! call per step makes that exact to within one step.

use std::sync::Arc;
use std::time::Duration;

use agora_protocol::market::Limits;
use agora_protocol::units::{Bytes, ComputeUnits, Fuel, Millis};

use super::{Executor, Module, Task, TaskError};

/// The calibration kernel, in WebAssembly text (GUEST-CONTRACT.md quotes it).
pub const KERNEL_WAT: &str = r#"(module
  ;; agora calibration kernel v1
  (memory 1)
  ;; One step over the 4 KiB buffer at word (i & 1023); returns the new (a, b).
  (func $step (param $i i32) (param $a i32) (param $b i32) (result i32 i32)
    (local $p i32)
    ;; p = (i & 1023) * 4
    (local.set $p (i32.shl (i32.and (local.get $i) (i32.const 1023)) (i32.const 2)))
    ;; a = (a * 0x01000193) ^ mem[p]
    (local.set $a
      (i32.xor (i32.mul (local.get $a) (i32.const 0x01000193)) (i32.load (local.get $p))))
    ;; b = rotl(b + a, 13)
    (local.set $b (i32.rotl (i32.add (local.get $b) (local.get $a)) (i32.const 13)))
    ;; if a is odd: b ^= 0x5bd1e995
    (if (i32.and (local.get $a) (i32.const 1))
      (then (local.set $b (i32.xor (local.get $b) (i32.const 0x5bd1e995)))))
    ;; mem[p] = a ^ (b >> 7)
    (i32.store (local.get $p) (i32.xor (local.get $a) (i32.shr_u (local.get $b) (i32.const 7))))
    (local.get $a)
    (local.get $b))
  (func (export "_start")
    (local $i i32) (local $a i32) (local $b i32)
    (local.set $a (i32.const 0x9e3779b9))
    (local.set $b (i32.const 0x85ebca6b))
    (loop $spin
      (call $step (local.get $i) (local.get $a) (local.get $b))
      (local.set $b)
      (local.set $a)
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $spin))))
"#;

/// A capacity measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    /// The measured capacity.
    pub cu: ComputeUnits,
    /// Fuel the kernel burned in the fastest run.
    pub fuel: Fuel,
    /// Wall time of the fastest run (instantiation included).
    pub elapsed: Duration,
}

/// The compiled kernel.
fn kernel(executor: &Executor) -> Result<Arc<Module>, TaskError> {
    let wasm = wat::parse_str(KERNEL_WAT).map_err(|e| TaskError::InvalidModule(e.to_string()))?;
    executor.load(&wasm)
}

/// Runs of the kernel per calibration; the fastest counts.
pub const CALIBRATION_ROUNDS: u32 = 3;

/// Runs the kernel [`CALIBRATION_ROUNDS`] times for about `budget` in all (300–500 ms is
/// plenty) at the executor's current cpu share and derives the node's
/// capacity from the fastest run. Other work on the machine (a neighbour
/// starting, a burst of network traffic) only ever slows a run down, so the
/// fastest of a few is the steadiest estimate of what the node can do; a
/// single run varied by a factor of two on a busy two-core machine.
pub fn calibrate(executor: &Executor, budget: Duration) -> Result<Calibration, TaskError> {
    let module = kernel(executor)?;
    let round = (budget / CALIBRATION_ROUNDS).max(Duration::from_millis(1));
    let mut best = run_once(executor, &module, round)?;
    for _ in 1..CALIBRATION_ROUNDS {
        let c = run_once(executor, &module, round)?;
        if c.cu > best.cu {
            best = c;
        }
    }
    Ok(best)
}

/// One run of the kernel until its deadline.
fn run_once(executor: &Executor, module: &Arc<Module>, timeout: Duration) -> Result<Calibration, TaskError> {
    let limits = Limits {
        fuel: Fuel(u64::MAX),
        memory: Bytes::mib(1),
        timeout: Millis::from(timeout),
        max_output: Bytes(0),
    };
    let outcome = executor.run(
        module,
        &Task {
            input: &[],
            args: &[],
            limits,
            seed: 0,
            resume: None,
            checkpoints: None,
        },
    );
    match outcome.result {
        Err(TaskError::Deadline { .. }) => {}
        Ok(()) => return Err(TaskError::Trap("the calibration kernel returned".into())),
        Err(e) => return Err(e),
    }
    let elapsed = outcome.wall;
    Ok(Calibration {
        cu: ComputeUnits::from_rate(outcome.fuel_used, elapsed),
        fuel: outcome.fuel_used,
        elapsed,
    })
}

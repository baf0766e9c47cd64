//! The executor against ordinary and hostile guests, written as WAT, and
//! `agora exec` / `agora verify` as processes, one file per area. Here: the
//! executor, limits and task most tests use, the guests several areas run,
//! and the memory probes of the heavy tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use agora_node::executor::{Config, Executor, Outcome, Task};
use agora_protocol::market::Limits;
use agora_protocol::units::{Bytes, Fuel, Millis};

mod calibration;
mod checkpoints;
mod determinism;
mod exec;
mod guests;
mod host_fuel;
mod limits;
mod loading;

use crate::common::heavy;

fn executor() -> Executor {
    Executor::new(Config::default()).unwrap()
}

fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

fn limits() -> Limits {
    Limits {
        fuel: Fuel(1_000_000_000),
        memory: Bytes::mib(64),
        timeout: Millis(10_000),
        max_output: Bytes::mib(1),
    }
}

fn task<'a>(input: &'a [u8], args: &'a [String], limits: Limits) -> Task<'a> {
    Task {
        input,
        args,
        limits,
        seed: 0,
        resume: None,
        checkpoints: None,
    }
}

fn run_wat(executor: &Executor, wat: &str, limits: Limits) -> Outcome {
    let module = executor.load(&wasm(wat)).unwrap();
    executor.run(&module, &task(&[], &[], limits))
}

const FD_WRITE: &str =
    r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#;

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Copies stdin to stdout (the CLI tests submit it too).
pub(crate) const CAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $n i32)
    (loop $again
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.eqz (local.get $n)) (then return))
      (i32.store (i32.const 4) (local.get $n))
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))
      (br $again))))"#;

/// Writes its argv buffer (NUL-separated) to stdout.
const ARGS: &str = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 4096)))
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.load (i32.const 4)))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#;

/// Reads both clocks, 32 random bytes, sleeps 1 s on the monotonic clock
/// and reads it again; prints all of it (68 bytes).
const CLOCKS_AND_RANDOM: &str = r#"(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 256)))
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 264)))
    (drop (call $random (i32.const 272) (i32.const 32)))
    ;; one subscription at 512: userdata 7, clock, monotonic, relative 1 s
    (i64.store (i32.const 512) (i64.const 7))
    (i32.store8 (i32.const 520) (i32.const 0))
    (i32.store (i32.const 528) (i32.const 1))
    (i64.store (i32.const 536) (i64.const 1000000000))
    (drop (call $poll (i32.const 512) (i32.const 600) (i32.const 1) (i32.const 640)))
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 304)))
    (i64.store (i32.const 312) (i64.load (i32.const 600)))
    (i32.store (i32.const 320) (i32.load (i32.const 640)))
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 68))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const SPIN: &str = r#"(module (func (export "_start") (loop $l (br $l))))"#;

/// Checks that the executor still runs an ordinary task correctly.
fn assert_healthy(executor: &Executor) {
    let o = run_wat(executor, HELLO, limits());
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.output, b"hello\n");
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Samples the RSS every millisecond while `f` runs; returns `f`'s result
/// and the peak increase over the RSS before it started.
fn peak_rss_increase<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let base = rss();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let out = f();
    peak.fetch_max(rss(), Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (out, peak.load(Ordering::Relaxed).saturating_sub(base))
}

const MIB: u64 = 1 << 20;

/// Grows memory a MiB at a time, touching every page, until refused; then
/// prints memory.size (pages), spins a little (so the RSS sampler sees the
/// peak) and traps.
const GROW_BOMB: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 16)
  (func (export "_start")
    (local $old i32) (local $p i32) (local $end i32) (local $i i32)
    (loop $grow
      (local.set $old (memory.grow (i32.const 16)))
      (if (i32.ne (local.get $old) (i32.const -1))
        (then
          (local.set $p (i32.mul (local.get $old) (i32.const 65536)))
          (local.set $end (i32.add (local.get $p) (i32.const 1048576)))
          (loop $touch
            (i32.store8 (local.get $p) (i32.const 1))
            (local.set $p (i32.add (local.get $p) (i32.const 4096)))
            (br_if $touch (i32.lt_u (local.get $p) (local.get $end))))
          (br $grow))))
    (i32.store (i32.const 16) (memory.size))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (loop $spin
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $spin (i32.lt_u (local.get $i) (i32.const 30000000))))
    unreachable))"#;

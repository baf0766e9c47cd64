//! Checkpoints: a guest saves its state, a later run resumes from it, and
//! the result is that of an uninterrupted run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use agora_node::executor::{CheckpointSink, Executor, Outcome, TaskError};
use agora_protocol::ContentId;
use agora_protocol::execution::Checkpoint;
use agora_protocol::market::{Arg, args_digest};

use super::*;

/// 200 steps; each spins, reads a byte of stdin, draws 8 random bytes and
/// reads the clock, folds them into `x` and writes a byte of `x`; every 10
/// steps it saves (i, x). Resumed, it restores them first.
const STEPS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "agora" "checkpoint" (func $checkpoint (param i32 i32) (result i32)))
  (import "agora" "restore_size" (func $restore_size (result i32)))
  (import "agora" "restore" (func $restore (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $i i64) (local $x i64) (local $j i32)
    (if (i32.ge_s (call $restore_size) (i32.const 0))
      (then
        (drop (call $restore (i32.const 0) (i32.const 16)))
        (local.set $i (i64.load (i32.const 0)))
        (local.set $x (i64.load (i32.const 8)))))
    (block $done
      (loop $step
        (br_if $done (i64.ge_u (local.get $i) (i64.const 200)))
        (local.set $j (i32.const 0))
        (loop $spin
          (local.set $x (i64.add (i64.mul (local.get $x) (i64.const 6364136223846793005))
                                 (i64.extend_i32_u (local.get $j))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br_if $spin (i32.lt_u (local.get $j) (i32.const 200000))))
        ;; a byte of stdin at 100
        (i32.store (i32.const 80) (i32.const 100))
        (i32.store (i32.const 84) (i32.const 1))
        (drop (call $fd_read (i32.const 0) (i32.const 80) (i32.const 1) (i32.const 88)))
        (drop (call $random_get (i32.const 64) (i32.const 8)))
        (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 72)))
        (local.set $x (i64.xor (local.get $x)
          (i64.add (i64.add (i64.load (i32.const 64)) (i64.load (i32.const 72)))
                   (i64.load8_u (i32.const 100)))))
        (i64.store8 (i32.const 96) (local.get $x))
        (i32.store (i32.const 80) (i32.const 96))
        (i32.store (i32.const 84) (i32.const 1))
        (drop (call $fd_write (i32.const 1) (i32.const 80) (i32.const 1) (i32.const 88)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (if (i64.eqz (i64.rem_u (local.get $i) (i64.const 10)))
          (then
            (i64.store (i32.const 0) (local.get $i))
            (i64.store (i32.const 8) (local.get $x))
            (drop (call $checkpoint (i32.const 0) (i32.const 16)))))
        (br $step)))))"#;

fn input() -> Vec<u8> {
    (0..=255u8).collect()
}

/// Runs STEPS from `resume`, keeping its checkpoints in `sink`, stopped
/// once `stop_at` checkpoints are reached (if given).
fn run(
    e: &Executor,
    resume: Option<Arc<Checkpoint>>,
    sink: &CheckpointSink,
    stop_at: Option<u32>,
) -> (Outcome, Option<Checkpoint>) {
    let m = e.load(&wasm(STEPS)).unwrap();
    let input = input();
    let task = Task {
        resume,
        checkpoints: Some(sink.clone()),
        seed: 42,
        ..task(&input, &[], limits())
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let latest = Arc::new(Mutex::new(None));
    let watcher = stop_at.map(|n| {
        let (sink, cancel, done, latest) = (sink.clone(), cancel.clone(), done.clone(), latest.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(c) = sink.take() {
                    let reached = c.index >= n;
                    *latest.lock().unwrap() = Some(c);
                    if reached {
                        cancel.store(true, Ordering::Relaxed);
                        return;
                    }
                }
                thread::sleep(Duration::from_millis(1));
            }
        })
    });
    let outcome = e.run_cancellable(&m, &task, Some(cancel));
    done.store(true, Ordering::Relaxed);
    if let Some(w) = watcher {
        w.join().unwrap();
    }
    let last = latest.lock().unwrap().take().or_else(|| sink.take());
    (outcome, last)
}

#[test]
fn a_run_resumed_from_a_checkpoint_ends_as_an_uninterrupted_run_with_the_fuel_of_its_own_work() {
    let e = executor();
    let sink = CheckpointSink::new();
    let (whole, last) = run(&e, None, &sink, None);
    assert!(whole.result.is_ok(), "{:?}", whole.result);
    assert_eq!(whole.output.len(), 200);
    assert_eq!(
        last.map(|c| c.index),
        Some(20),
        "the last of 20 checkpoints is left in the sink"
    );

    // Stopped after at least 5 checkpoints: the latest names where the
    // task stood, and the computation it belongs to.
    let (cut, c) = run(&e, None, &sink, Some(5));
    assert!(
        matches!(cut.result, Err(TaskError::Interrupted)),
        "{:?}",
        cut.result
    );
    let c = c.expect("a checkpoint before the stop");
    assert!(c.index >= 5 && c.index < 20, "index {}", c.index);
    assert_eq!(c.state.0.len(), 16);
    assert_eq!(
        u64::from_le_bytes(c.state.0[..8].try_into().unwrap()),
        u64::from(c.index) * 10
    );
    assert_eq!(
        c.output.0,
        whole.output[..c.index as usize * 10],
        "the output so far"
    );
    assert_eq!(
        c.input_read,
        u64::from(c.index) * 10,
        "one byte of stdin per step"
    );
    assert_eq!(c.random, u64::from(c.index) * 80, "eight random bytes per step");
    let m = e.load(&wasm(STEPS)).unwrap();
    let args: Vec<Arg> = Vec::new();
    assert!(c.belongs_to(
        &m.id(),
        &ContentId::of(&input()),
        &args_digest(&args),
        42,
        limits().fuel
    ));
    assert_eq!(c.from, None);
    assert!(c.fuel_used.0 > 0 && c.fuel_used < whole.fuel_used);

    // Resumed in a fresh run: the same output; fuel counted on from the
    // checkpoint's, within the few host calls that restoring costs.
    let c = Arc::new(c);
    let (resumed, next) = run(&e, Some(c.clone()), &sink, None);
    assert!(resumed.result.is_ok(), "{:?}", resumed.result);
    assert_eq!(resumed.output, whole.output);
    assert_eq!(resumed.resumed, Some(c.id()));
    let diff = resumed.fuel_used.0.abs_diff(whole.fuel_used.0);
    assert!(
        diff < 10_000,
        "resumed {} vs whole {}",
        resumed.fuel_used,
        whole.fuel_used
    );
    let next = next.expect("later checkpoints");
    assert_eq!((next.index, next.from), (20, Some(c.id())));

    // And deterministic: the same checkpoint gives the same run again.
    let (again, _) = run(&e, Some(c), &sink, None);
    assert_eq!(
        (again.output, again.fuel_used),
        (resumed.output, resumed.fuel_used)
    );
}

#[test]
fn checkpoint_calls_report_their_errors_to_the_guest_and_the_run_goes_on() {
    // Without a checkpoint there is nothing to restore (-1, then ENOENT);
    // a state over 512 KiB is refused (E2BIG) and one outside memory is a
    // fault (EFAULT). The codes are written to stdout.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "agora" "checkpoint" (func $checkpoint (param i32 i32) (result i32)))
      (import "agora" "restore_size" (func $restore_size (result i32)))
      (import "agora" "restore" (func $restore (param i32 i32) (result i32)))
      (memory (export "memory") 16)
      (func (export "_start")
        (i32.store (i32.const 0) (call $restore_size))
        (i32.store (i32.const 4) (call $restore (i32.const 0) (i32.const 4)))
        (i32.store (i32.const 8) (call $checkpoint (i32.const 0) (i32.const 600000)))
        (i32.store (i32.const 12) (call $checkpoint (i32.const 1048000) (i32.const 1000)))
        (i32.store (i32.const 16) (call $checkpoint (i32.const 0) (i32.const 16)))
        (i32.store (i32.const 32) (i32.const 0))
        (i32.store (i32.const 36) (i32.const 20))
        (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))))"#;
    let e = executor();
    let m = e.load(&wasm(wat)).unwrap();
    let sink = CheckpointSink::new();
    let out = e.run(
        &m,
        &Task {
            checkpoints: Some(sink.clone()),
            ..task(&[], &[], limits())
        },
    );
    assert!(out.result.is_ok(), "{:?}", out.result);
    let codes: Vec<i32> = out
        .output
        .chunks(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(codes, [-1, 44, 1, 21, 0]);
    assert_eq!(
        sink.take().map(|c| c.index),
        Some(1),
        "only the good call took one"
    );
}

#[test]
fn a_module_importing_an_unknown_agora_function_is_refused() {
    let e = executor();
    let wat = r#"(module
      (import "agora" "teleport" (func $t))
      (func (export "_start")))"#;
    match e.load(&wasm(wat)) {
        Err(TaskError::ForbiddenImport { module, name }) => {
            assert_eq!((module.as_str(), name.as_str()), ("agora", "teleport"))
        }
        other => panic!("{other:?}"),
    }
}

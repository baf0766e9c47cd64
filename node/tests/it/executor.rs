//! The executor against hostile and ordinary guests, written as WAT; and
//! `agora exec` / `agora verify` as processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use agora_node::executor::wasi::{CLOCK_STEP_NS, RANDOM_CONTEXT, WALL_CLOCK_START_NS};
use agora_node::executor::{
    self, CompileIsolation, Config, Executor, Module, Outcome, Task, TaskError, calibrate,
};
use agora_protocol::ContentId;
use agora_protocol::execution::ExitStatus;
use agora_protocol::market::Limits;
use agora_protocol::units::{Bytes, Fuel, Millis};

// ---------------------------------------------------------------- helpers

/// Tests that measure resident memory or CPU time run one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// Copies stdin to stdout.
const CAT: &str = r#"(module
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

// ---------------------------------------------------------------- ordinary guests

#[test]
fn stdin_is_input_and_stdout_is_output_byte_exact() {
    let e = executor();
    let module = e.load(&wasm(CAT)).unwrap();
    let input: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let o = e.run(&module, &task(&input, &[], limits()));
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.output, input);
    assert_eq!(o.output_id(), ContentId::of(&input));
    assert_eq!(o.exit_status(), ExitStatus::Success);
}

#[test]
fn argv_is_task_then_the_arguments() {
    let e = executor();
    let module = e.load(&wasm(ARGS)).unwrap();
    let args = vec!["a".to_owned(), "b c".to_owned()];
    let o = e.run(&module, &task(&[], &args, limits()));
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.output, b"task\0a\0b c\0");
}

#[test]
fn stderr_is_captured_and_capped() {
    let e = Executor::new(Config {
        max_stderr: 10,
        ..Config::default()
    })
    .unwrap();
    let wat = format!(
        r#"(module {FD_WRITE} (memory (export "memory") 1) (data (i32.const 16) "warning: 0123456789")
        (func (export "_start")
          (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 19))
          (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
          (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    );
    let o = run_wat(&e, &wat, limits());
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.stderr, b"warning: 0");
    assert!(o.output.is_empty());
}

#[test]
fn exit_codes_map_to_results() {
    let e = executor();
    let exit = |code: i32| {
        format!(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (func (export "_start") (call $exit (i32.const {code})) unreachable))"#
        )
    };
    assert_eq!(run_wat(&e, &exit(0), limits()).result, Ok(()));
    let o = run_wat(&e, &exit(3), limits());
    assert_eq!(o.result, Err(TaskError::ExitCode(3)));
    assert_eq!(o.exit_status(), ExitStatus::ExitCode(3));
    assert_eq!(
        run_wat(&e, &exit(200), limits()).result,
        Err(TaskError::ExitCode(200))
    );
    assert_healthy(&e);
}

#[test]
fn traps_carry_their_message() {
    let e = executor();
    let o = run_wat(
        &e,
        r#"(module (func (export "_start") (drop (i32.div_u (i32.const 1) (i32.const 0)))))"#,
        limits(),
    );
    assert_eq!(o.result, Err(TaskError::Trap("integer divide by zero".into())));
    assert_eq!(
        o.result.as_ref().unwrap_err().to_string(),
        "trap: integer divide by zero"
    );
    let o = run_wat(&e, r#"(module (func (export "_start") unreachable))"#, limits());
    assert_eq!(
        o.result,
        Err(TaskError::Trap("wasm `unreachable` instruction executed".into()))
    );
    assert_healthy(&e);
}

/// For each 16-byte pair (a, b) of its input: a/b and a%b, signed and
/// unsigned, as 64-bit integers.
const DIVIDE: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $n i32) (local $i i32) (local $a i64) (local $b i64) (local $o i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $n (i32.load (i32.const 8)))
    (local.set $o (i32.const 8192))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $a (i64.load (i32.add (i32.const 1024) (local.get $i))))
        (local.set $b (i64.load (i32.add (i32.const 1032) (local.get $i))))
        (i64.store (local.get $o) (i64.div_s (local.get $a) (local.get $b)))
        (i64.store offset=8 (local.get $o) (i64.div_u (local.get $a) (local.get $b)))
        (i64.store offset=16 (local.get $o) (i64.rem_s (local.get $a) (local.get $b)))
        (i64.store offset=24 (local.get $o) (i64.rem_u (local.get $a) (local.get $b)))
        (local.set $o (i32.add (local.get $o) (i32.const 32)))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $l)))
    (i32.store (i32.const 0) (i32.const 8192))
    (i32.store (i32.const 4) (i32.sub (local.get $o) (i32.const 8192)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn sixty_four_bit_division_is_exact_on_both_sides_of_two_to_the_32() {
    let e = executor();
    let edges: [i64; 12] = [
        1,
        3,
        7,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0001,
        i64::MAX,
        i64::MIN + 1,
        -1,
        -0x1_0000_0000,
    ];
    let mut pairs = Vec::new();
    for &a in edges.iter().chain([0, i64::MIN].iter()) {
        for &b in &edges {
            if !(a == i64::MIN && b == -1) {
                pairs.push((a, b));
            }
        }
    }
    let input: Vec<u8> = pairs
        .iter()
        .flat_map(|(a, b)| a.to_le_bytes().into_iter().chain(b.to_le_bytes()))
        .collect();
    assert!(input.len() <= 4096);
    let m = e.load(&wat::parse_str(DIVIDE).unwrap()).unwrap();
    let o = e.run(
        &m,
        &Task {
            input: &input,
            args: &[],
            limits: limits(),
            seed: 0,
        },
    );
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.output.len(), pairs.len() * 32);
    for (k, &(a, b)) in pairs.iter().enumerate() {
        let got = |j: usize| {
            let i = k * 32 + j * 8;
            u64::from_le_bytes(o.output[i..i + 8].try_into().unwrap())
        };
        let (ua, ub) = (a as u64, b as u64);
        assert_eq!(got(0), a.wrapping_div(b) as u64, "{a} div_s {b}");
        assert_eq!(got(1), ua / ub, "{a} div_u {b}");
        assert_eq!(got(2), a.wrapping_rem(b) as u64, "{a} rem_s {b}");
        assert_eq!(got(3), ua % ub, "{a} rem_u {b}");
    }
    // The traps are the same on either side too.
    for (wat, trap) in [
        (
            "(i64.div_u (i64.const 1) (i64.const 0))",
            "integer divide by zero",
        ),
        (
            "(i64.rem_s (i64.const 5) (i64.const 0))",
            "integer divide by zero",
        ),
        (
            "(i64.div_u (i64.const 0x100000000) (i64.const 0))",
            "integer divide by zero",
        ),
        (
            "(i64.div_s (i64.const 0x8000000000000000) (i64.const -1))",
            "integer overflow",
        ),
    ] {
        let o = run_wat(
            &e,
            &format!(r#"(module (func (export "_start") (drop {wat})))"#),
            limits(),
        );
        assert_eq!(o.result, Err(TaskError::Trap(trap.into())), "{wat}");
    }
    assert_healthy(&e);
}

#[test]
fn output_over_the_limit_is_output_too_large() {
    let e = executor();
    let wat = format!(
        r#"(module {FD_WRITE} (memory (export "memory") 1) (data (i32.const 16) "0123456789")
        (func (export "_start")
          (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 10))
          (loop $l (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))))"#
    );
    let o = run_wat(
        &e,
        &wat,
        Limits {
            max_output: Bytes(25),
            ..limits()
        },
    );
    assert_eq!(o.result, Err(TaskError::OutputTooLarge { limit: Bytes(25) }));
    // Exactly the limit is kept, so a verifier can reproduce the run.
    assert_eq!(o.output, b"0123456789012345678901234");
    assert_healthy(&e);
}

// ---------------------------------------------------------------- hostile guests

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let e = executor();
    let o = run_wat(
        &e,
        SPIN,
        Limits {
            fuel: Fuel(100_000_000),
            ..limits()
        },
    );
    assert_eq!(
        o.result,
        Err(TaskError::OutOfFuel {
            limit: Fuel(100_000_000)
        })
    );
    assert_eq!(o.fuel_used, Fuel(100_000_000));
    assert_eq!(
        o.result.unwrap_err().to_string(),
        "out of fuel after 100000000 units"
    );
    assert_healthy(&e);
}

#[test]
fn infinite_loop_with_unlimited_fuel_hits_the_deadline_within_one_tick() {
    let e = executor();
    let timeout = Duration::from_millis(300);
    let o = run_wat(
        &e,
        SPIN,
        Limits {
            fuel: Fuel(u64::MAX),
            timeout: Millis::from(timeout),
            ..limits()
        },
    );
    assert_eq!(o.result, Err(TaskError::Deadline { timeout }));
    assert!(o.wall >= timeout, "{:?}", o.wall);
    // Bound plus one epoch tick, plus generous scheduling slack on a shared machine.
    let bound = timeout + e.config().epoch_tick + Duration::from_millis(250);
    assert!(o.wall <= bound, "took {:?}, bound {bound:?}", o.wall);
    assert_healthy(&e);
}

#[test]
fn sleeping_guests_never_block_the_host() {
    // poll_oneoff on a clock is instant on the virtual clock: a one-hour
    // sleep returns at once (and the run succeeds), not after an hour.
    let e = executor();
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (i32.store8 (i32.const 8) (i32.const 0))
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 3600000000000))
        (if (call $poll (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 200)) (then unreachable))))"#;
    let o = run_wat(
        &e,
        wat,
        Limits {
            timeout: Millis(2_000),
            ..limits()
        },
    );
    assert_eq!(o.result, Ok(()));
    assert!(o.wall < Duration::from_secs(2));
}

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

#[test]
fn memory_grow_bomb_hits_the_memory_limit_and_rss_stays_near_it() {
    let _heavy = heavy();
    let e = executor();
    let module = e.load(&wasm(GROW_BOMB)).unwrap();
    let (o, increase) = peak_rss_increase(|| e.run(&module, &task(&[], &[], limits())));
    // The guest trapped after its grow was refused: that is the memory limit.
    assert_eq!(
        o.result,
        Err(TaskError::MemoryLimit {
            limit: Bytes::mib(64)
        })
    );
    assert_eq!(
        o.result.as_ref().unwrap_err().to_string(),
        "memory limit of 64 MiB reached"
    );
    // It got exactly up to the limit (1024 pages of 64 KiB)...
    assert_eq!(o.output, 1024u32.to_le_bytes());
    // ...and the process held about that much more, not more.
    assert!(increase >= 32 * MIB, "sampler saw only {increase} bytes");
    assert!(
        increase <= 64 * MIB + 40 * MIB,
        "RSS grew by {} MiB",
        increase / MIB
    );
    assert_healthy(&e);
}

#[test]
fn huge_initial_memory_is_refused_before_running() {
    let e = executor();
    let wat = |pages: u32| {
        format!(
            r#"(module {FD_WRITE} (memory (export "memory") {pages}) (data (i32.const 16) "ran")
            (func (export "_start")
              (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 3))
              (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
        )
    };
    // 128 MiB against a 64 MiB limit: refused when run, without running.
    let o = run_wat(&e, &wat(2048), limits());
    assert_eq!(
        o.result,
        Err(TaskError::MemoryLimit {
            limit: Bytes::mib(64)
        })
    );
    assert!(o.output.is_empty(), "the guest ran");
    assert_eq!(o.fuel_used, Fuel(0));
    // 1 GiB against the executor's 512 MiB cap: refused when loaded.
    assert_eq!(
        e.load(&wasm(&wat(16384))).unwrap_err(),
        TaskError::MemoryLimit {
            limit: Bytes::mib(512)
        }
    );
    // Just within the limit it runs.
    assert_eq!(run_wat(&e, &wat(1024), limits()).output, b"ran");
    assert_healthy(&e);
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let e = executor();
    let o = run_wat(
        &e,
        r#"(module (func $f (call $f)) (func (export "_start") (call $f)))"#,
        limits(),
    );
    assert_eq!(o.result, Err(TaskError::StackOverflow));
    assert_eq!(o.exit_status(), ExitStatus::StackOverflow);
    assert_healthy(&e);
}

#[test]
fn ten_thousand_sequential_instantiations_stay_within_bounded_memory() {
    let _heavy = heavy();
    let e = executor();
    let module = e.load(&wasm(HELLO)).unwrap();
    // Warm up (lazy runtime initialisation), then measure.
    for _ in 0..100 {
        e.run(&module, &task(&[], &[], limits()));
    }
    let before = rss();
    for i in 0..10_000 {
        let o = e.run(&module, &task(&[], &[], limits()));
        assert!(
            o.result.is_ok() && o.output == b"hello\n",
            "run {i}: {:?}",
            o.result
        );
    }
    let growth = rss().saturating_sub(before);
    assert!(
        growth < 32 * MIB,
        "RSS grew by {} MiB over 10,000 runs",
        growth / MIB
    );
    assert_eq!(e.stats().runs, 10_100);
    assert_healthy(&e);
}

/// Uses 4 MiB of memory, spins, prints "ok".
const FOUR_MIB: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok")
  (func (export "_start")
    (local $p i32) (local $i i32)
    (drop (memory.grow (i32.const 63)))
    (local.set $p (i32.const 65536))
    (loop $touch
      (i32.store8 (local.get $p) (i32.const 1))
      (local.set $p (i32.add (local.get $p) (i32.const 4096)))
      (br_if $touch (i32.lt_u (local.get $p) (i32.const 4194304))))
    (loop $spin
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $spin (i32.lt_u (local.get $i) (i32.const 3000000))))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn sixty_four_concurrent_tasks_stay_within_bounded_memory() {
    let _heavy = heavy();
    let e = executor();
    assert_eq!(e.config().max_instances, 64);
    let module = e.load(&wasm(FOUR_MIB)).unwrap();
    let (results, increase) = peak_rss_increase(|| {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let (e, module) = (e.clone(), module.clone());
                thread::spawn(move || e.run(&module, &task(&[], &[], limits())))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    for o in &results {
        assert_eq!(o.result, Ok(()));
        assert_eq!(o.output, b"ok");
    }
    // 64 × 4 MiB of guest memory plus per-task overhead: nothing like the
    // 512 MiB reservation of each instance.
    assert!(
        increase <= 64 * 4 * MIB + 96 * MIB,
        "RSS grew by {} MiB",
        increase / MIB
    );
    assert_healthy(&e);
}

#[test]
fn tasks_beyond_the_pool_wait_for_a_slot() {
    let e = Executor::new(Config {
        max_instances: 2,
        ..Config::default()
    })
    .unwrap();
    let module = e.load(&wasm(FOUR_MIB)).unwrap();
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let (e, module) = (e.clone(), module.clone());
            thread::spawn(move || e.run(&module, &task(&[], &[], limits())))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().result, Ok(()));
    }
}

#[test]
fn forbidden_imports_are_refused() {
    let e = executor();
    for import in [
        r#"(import "env" "now" (func))"#,
        r#"(import "wasi_snapshot_preview1" "sock_open" (func))"#,
        r#"(import "wasi_unstable" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        r#"(import "wasi_snapshot_preview1" "memory" (memory 1))"#,
    ] {
        let wat = format!(r#"(module {import} (func (export "_start")))"#);
        let err = e.load(&wasm(&wat)).unwrap_err();
        assert!(matches!(err, TaskError::ForbiddenImport { .. }), "{err}");
        assert!(err.to_string().starts_with("forbidden import `"), "{err}");
    }
    assert_eq!(e.stats().compiled, 0, "refused before compiling");
    assert_healthy(&e);
}

#[test]
fn oversized_module_is_refused_before_compiling() {
    let e = Executor::new(Config {
        max_module_size: Bytes::kib(64),
        ..Config::default()
    })
    .unwrap();
    // Not even wasm: refused on size alone, without parsing.
    let big = vec![0xffu8; 64 * 1024 + 1];
    let t = Instant::now();
    assert_eq!(
        e.load(&big).unwrap_err(),
        TaskError::ModuleTooLarge {
            size: Bytes(65_537),
            max: Bytes::kib(64)
        }
    );
    assert!(t.elapsed() < Duration::from_millis(100));
    assert_eq!(e.stats().compiled, 0);
    assert_healthy(&e);
}

#[test]
fn invalid_modules_are_refused_with_a_reason() {
    let e = executor();
    assert!(matches!(
        e.load(b"\0asm garbage"),
        Err(TaskError::InvalidModule(_))
    ));
    // No _start: not a command module.
    let err = e.load(&wasm(r#"(module (func (export "main")))"#)).unwrap_err();
    assert!(
        matches!(&err, TaskError::InvalidModule(m) if m.contains("_start")),
        "{err}"
    );
    // A granted function with the wrong signature.
    let err = e
        .load(&wasm(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func)) (func (export "_start")))"#,
        ))
        .unwrap_err();
    assert!(matches!(err, TaskError::InvalidModule(_)), "{err}");
    // Threads are not granted.
    let err = e
        .load(&wasm(r#"(module (memory 1 1 shared) (func (export "_start")))"#))
        .unwrap_err();
    assert!(matches!(err, TaskError::InvalidModule(_)), "{err}");
    assert_healthy(&e);
}

// ---------------------------------------------------------------- determinism

fn run_twice_on_two_executors(wat: &str, input: &[u8], seed: u64) -> Vec<Outcome> {
    let a = executor();
    let b = Executor::new(Config {
        pooling: false,
        ..Config::default()
    })
    .unwrap();
    let bytes = wasm(wat);
    let mut outcomes = Vec::new();
    for e in [&a, &a, &b, &b] {
        let m = e.load(&bytes).unwrap();
        outcomes.push(e.run(
            &m,
            &Task {
                input,
                args: &[],
                limits: limits(),
                seed,
            },
        ));
    }
    for o in &outcomes[1..] {
        assert_eq!(o.result, outcomes[0].result);
        assert_eq!(o.output, outcomes[0].output);
        assert_eq!(o.fuel_used, outcomes[0].fuel_used);
    }
    outcomes
}

#[test]
fn same_module_and_input_give_identical_output_and_fuel() {
    let input: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let o = run_twice_on_two_executors(CAT, &input, 0);
    assert_eq!(o[0].output, input);
    assert!(o[0].fuel_used.0 > 0);
}

/// NaN-producing operations and a chaotic float loop (the logistic map
/// amplifies any rounding difference); prints the bit patterns.
const FLOATS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $i i32) (local $x f64) (local $acc f64) (local $y f32)
    (i64.store (i32.const 256) (i64.reinterpret_f64 (f64.div (f64.const 0) (f64.const 0))))
    (i32.store (i32.const 264) (i32.reinterpret_f32 (f32.sqrt (f32.const -1))))
    (i64.store (i32.const 268) (i64.reinterpret_f64 (f64.add (f64.const -nan:0x4) (f64.const 1))))
    (local.set $x (f64.const 0.5))
    (local.set $y (f32.const 0.25))
    (loop $l
      (local.set $x (f64.mul (f64.mul (f64.const 3.9) (local.get $x)) (f64.sub (f64.const 1) (local.get $x))))
      (local.set $acc (f64.add (local.get $acc) (f64.sqrt (local.get $x))))
      (local.set $y (f32.add (f32.mul (local.get $y) (f32.const 1.0001)) (f32.demote_f64 (local.get $x))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 100000))))
    (f64.store (i32.const 276) (local.get $acc))
    (f64.store (i32.const 284) (local.get $x))
    (f32.store (i32.const 292) (local.get $y))
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 40))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn float_heavy_module_is_deterministic_including_nan_bits() {
    let o = run_twice_on_two_executors(FLOATS, &[], 0);
    let out = &o[0].output;
    assert_eq!(out.len(), 40);
    // Canonical NaNs, whatever the hardware would have produced.
    assert_eq!(
        u64::from_le_bytes(out[0..8].try_into().unwrap()),
        0x7ff8_0000_0000_0000
    );
    assert_eq!(u32::from_le_bytes(out[8..12].try_into().unwrap()), 0x7fc0_0000);
    assert_eq!(
        u64::from_le_bytes(out[12..20].try_into().unwrap()),
        0x7ff8_0000_0000_0000
    );
    let acc = f64::from_le_bytes(out[20..28].try_into().unwrap());
    assert!(acc.is_finite() && acc > 0.0);
}

/// Arithmetic NaNs reaching memory by every path the code generator
/// tracks (negation, copysign, a loop-carried local, a call's result, a
/// parameter, select, promotion, a vector lane), and NaNs no arithmetic
/// touched, which keep their payload.
const NAN_PATHS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $inf_minus_inf (result f64) (f64.sub (f64.const inf) (f64.const inf)))
  (func $pass (param f64) (result f64) (local.get 0))
  (func (export "_start")
    (local $v f64) (local $i i32) (local $nan f64)
    (local.set $nan (f64.div (f64.const 0) (f64.const 0)))
    (f64.store (i32.const 256) (f64.neg (local.get $nan)))
    (f64.store (i32.const 264) (f64.copysign (f64.const 1) (local.get $nan)))
    (local.set $v (f64.sqrt (f64.const -1)))
    (loop $l
      (local.set $v (f64.neg (local.get $v)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 3))))
    (i64.store (i32.const 272) (i64.reinterpret_f64 (local.get $v)))
    (f64.store (i32.const 280) (call $inf_minus_inf))
    (f64.store (i32.const 288) (call $pass (f64.mul (f64.const inf) (f64.const 0))))
    (f64.store (i32.const 296) (select (local.get $nan) (f64.const 2) (i32.const 1)))
    (f64.store (i32.const 304) (f64.promote_f32 (f32.div (f32.const 0) (f32.const 0))))
    (v128.store (i32.const 312) (f32x4.splat (f32.sub (f32.const inf) (f32.const inf))))
    (f64.store (i32.const 328) (f64.const nan:0x1234))
    (f64.store (i32.const 336) (f64.load (i32.const 328)))
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 88))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn nan_bits_are_canonical_wherever_they_can_be_observed() {
    let o = run_twice_on_two_executors(NAN_PATHS, &[], 0);
    assert_eq!(o[0].result, Ok(()));
    let out = &o[0].output;
    assert_eq!(out.len(), 88);
    let at = |i: usize| u64::from_le_bytes(out[i..i + 8].try_into().unwrap());
    const CANON: u64 = 0x7ff8_0000_0000_0000;
    // x86 hardware makes 0/0 a negative NaN: canonicalisation must have
    // happened before the sign was flipped or copied.
    assert_eq!(at(0), 0xfff8_0000_0000_0000, "fneg of a canonical NaN");
    assert_eq!(at(8), 1f64.to_bits(), "copysign takes the canonical NaN's + sign");
    assert_eq!(at(16), 0xfff8_0000_0000_0000, "three negations through a loop");
    assert_eq!(at(24), CANON, "a call's result");
    assert_eq!(at(32), CANON, "through a parameter");
    assert_eq!(at(40), CANON, "select");
    assert_eq!(at(48), CANON, "promoted from f32");
    for lane in 0..4 {
        let i = 56 + lane * 4;
        assert_eq!(
            u32::from_le_bytes(out[i..i + 4].try_into().unwrap()),
            0x7fc0_0000,
            "lane {lane}"
        );
    }
    assert_eq!(at(72), 0x7ff0_0000_0000_1234, "a constant NaN keeps its payload");
    assert_eq!(at(80), 0x7ff0_0000_0000_1234, "so does one copied through memory");
}

#[test]
fn clocks_and_random_are_the_same_every_run() {
    let o = run_twice_on_two_executors(CLOCKS_AND_RANDOM, &[], 42);
    let out = &o[0].output;
    assert_eq!(o[0].result, Ok(()));
    assert_eq!(out.len(), 68);
    let u64_at = |i: usize| u64::from_le_bytes(out[i..i + 8].try_into().unwrap());
    // The contract's values: virtual time starts at 0 (wall: 2024-01-01)
    // and each reading advances it by one step; sleeping jumps it.
    assert_eq!(u64_at(0), WALL_CLOCK_START_NS);
    assert_eq!(u64_at(8), CLOCK_STEP_NS);
    let mut expect = [0u8; 32];
    let mut h = blake3::Hasher::new_derive_key(RANDOM_CONTEXT);
    h.update(&42u64.to_le_bytes());
    h.finalize_xof().fill(&mut expect);
    assert_eq!(&out[16..48], &expect);
    assert_eq!(u64_at(48), 2 * CLOCK_STEP_NS + 1_000_000_000);
    assert_eq!(u64_at(56), 7, "event userdata");
    assert_eq!(u32::from_le_bytes(out[64..68].try_into().unwrap()), 1, "nevents");
    // Another seed: other random bytes, same clocks.
    let other = run_twice_on_two_executors(CLOCKS_AND_RANDOM, &[], 43);
    assert_ne!(&other[0].output[16..48], &out[16..48]);
    assert_eq!(&other[0].output[..16], &out[..16]);
}

// ---------------------------------------------------------------- caching and compilation

#[test]
fn a_second_executor_loads_from_the_disk_cache_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        cache_dir: Some(dir.path().to_owned()),
        ..Config::default()
    };
    let bytes = wasm(HELLO);
    let id = ContentId::of(&bytes);
    let first = Executor::new(config()).unwrap();
    first.load(&bytes).unwrap();
    assert_eq!(first.stats().compiled, 1);
    assert!(dir.path().join(format!("{id}.cwasm")).exists());

    let second = Executor::new(config()).unwrap();
    let m = second.cached(&id).expect("found on disk");
    assert_eq!(second.stats().compiled, 0);
    assert_eq!(second.stats().disk_hits, 1);
    assert_eq!(second.run(&m, &task(&[], &[], limits())).output, b"hello\n");
    second.load(&bytes).unwrap();
    assert_eq!(second.stats().compiled, 0, "memory hit now");

    // A damaged entry is recompiled, not trusted.
    let path = dir.path().join(format!("{id}.cwasm"));
    let mut damaged = std::fs::read(&path).unwrap();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    std::fs::write(&path, damaged).unwrap();
    let third = Executor::new(config()).unwrap();
    assert!(third.cached(&id).is_none());
    let m = third.load(&bytes).unwrap();
    assert_eq!(third.stats().compiled, 1);
    assert_eq!(third.run(&m, &task(&[], &[], limits())).output, b"hello\n");
}

fn subprocess_config() -> Config {
    Config {
        compile: CompileIsolation::Subprocess {
            exe: PathBuf::from(env!("CARGO_BIN_EXE_agora")),
        },
        ..Config::default()
    }
}

#[test]
fn subprocess_compilation_works_and_maps_failures() {
    let e = Executor::new(subprocess_config()).unwrap();
    assert_healthy(&e);
    assert_eq!(e.stats().compiled, 1);
    let err = e.load(b"\0asm\x01\0\0\0\x7f").unwrap_err();
    assert!(matches!(err, TaskError::InvalidModule(_)), "{err}");
}

#[test]
fn subprocess_compilation_is_bounded_in_time_and_memory() {
    let slow = Executor::new(Config {
        compile_timeout: Duration::from_millis(1),
        ..subprocess_config()
    })
    .unwrap();
    let err = slow.load(&wasm(HELLO)).unwrap_err();
    assert_eq!(
        err,
        TaskError::CompileFailed("compilation exceeded the 1ms timeout".into())
    );

    let small = Executor::new(Config {
        compile_memory: Bytes::mib(16),
        ..subprocess_config()
    })
    .unwrap();
    let err = small.load(&wasm(HELLO)).unwrap_err();
    assert!(matches!(err, TaskError::CompileFailed(_)), "{err}");
}

// ---------------------------------------------------------------- calibration

#[test]
fn a_quarter_cpu_share_measures_about_a_quarter_of_the_capacity() {
    let _heavy = heavy();
    let full = executor();
    let quarter = Executor::new(Config {
        cpu_share: 0.25,
        ..Config::default()
    })
    .unwrap();
    let budget = Duration::from_millis(400);
    let a = calibrate(&full, budget).unwrap();
    let b = calibrate(&quarter, budget).unwrap();
    assert!(a.cu.0 > 0 && a.fuel.0 > 0);
    // The fastest of the rounds counts; each lasts a share of the budget.
    let round = budget / agora_node::executor::CALIBRATION_ROUNDS;
    assert!(
        a.elapsed >= round && a.elapsed < round + Duration::from_millis(300),
        "{a:?}"
    );
    let ratio = b.cu.0 as f64 / a.cu.0 as f64;
    assert!(
        (0.12..=0.45).contains(&ratio),
        "full {a:?}, quarter {b:?}, ratio {ratio:.2}"
    );
    // The share can be changed on a live executor.
    quarter.set_cpu_share(1.0);
    assert_eq!(quarter.cpu_share(), 1.0);
}

// ---------------------------------------------------------------- agora exec / agora verify

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    fn agora(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn exec_copies_stdout_exactly_and_accepts_wat_and_binaries() {
    let cli = Cli::new();
    let wat = cli.file("cat.wat", CAT);
    let bin = cli.file("cat.wasm", wasm(CAT));
    let input: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let input_file = cli.file("input.bin", &input);
    for module in [&wat, &bin] {
        let o = cli.agora(&["exec", path(module), "--input", path(&input_file)]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(o.stdout, input);
    }
    let args = cli.file("args.wat", ARGS);
    let o = cli.agora(&["exec", path(&args), "--arg", "-x", "--arg", "two words"]);
    assert_eq!(o.stdout, b"task\0-x\0two words\0");
}

#[test]
fn exec_reports_failures_on_stderr_with_a_nonzero_exit() {
    let cli = Cli::new();
    let spin = cli.file("spin.wat", SPIN);
    let o = cli.agora(&["exec", path(&spin), "--fuel", "100000000"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: out of fuel after 100000000 units"),
        "{}",
        stderr(&o)
    );

    let o = cli.agora(&[
        "exec",
        path(&spin),
        "--fuel",
        "18446744073709551615",
        "--timeout",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: deadline of 1s exceeded"),
        "{}",
        stderr(&o)
    );

    let bomb = cli.file("bomb.wat", GROW_BOMB);
    let o = cli.agora(&["exec", path(&bomb), "--memory", "64MiB"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: memory limit of 64 MiB reached"),
        "{}",
        stderr(&o)
    );

    let rec = cli.file(
        "rec.wat",
        r#"(module (func $f (call $f)) (func (export "_start") (call $f)))"#,
    );
    let o = cli.agora(&["exec", path(&rec)]);
    assert!(stderr(&o).contains("error: stack overflow"), "{}", stderr(&o));

    let exit = cli.file(
        "exit.wat",
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
           (func (export "_start") (call $exit (i32.const 3))))"#,
    );
    let o = cli.agora(&["exec", path(&exit)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("error: exit code 3"), "{}", stderr(&o));

    let forbidden = cli.file(
        "forbidden.wat",
        r#"(module (import "env" "f" (func)) (func (export "_start")))"#,
    );
    let o = cli.agora(&["exec", path(&forbidden)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: forbidden import `env::f`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn exec_twice_prints_the_same_bytes_and_json_summarises() {
    let cli = Cli::new();
    let module = cli.file("clocks.wat", CLOCKS_AND_RANDOM);
    let a = cli.agora(&["exec", path(&module), "--seed", "9"]);
    let b = cli.agora(&["exec", path(&module), "--seed", "9"]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout.len(), 68);
    assert_eq!(a.stdout, b.stdout);

    let o = cli.agora(&["exec", path(&module), "--seed", "9", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"]["kind"], "success");
    assert_eq!(v["output_size"], 68);
    assert_eq!(v["output_id"], ContentId::of(&a.stdout).to_string());
    assert!(v["fuel_used"].as_u64().unwrap() > 0);
}

#[test]
fn verify_accepts_an_honest_receipt_and_rejects_tampering() {
    let cli = Cli::new();
    let module = cli.file("cat.wat", CAT);
    let input = cli.file("input.txt", b"some input\n");
    let other = cli.file("other.txt", b"other input\n");
    let receipt = cli.dir.path().join("receipt.bin");
    let o = cli.agora(&[
        "exec",
        path(&module),
        "--input",
        path(&input),
        "--arg",
        "x",
        "--receipt",
        path(&receipt),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"some input\n");

    let verify = |receipt: &Path, input: &Path, extra: &[&str]| {
        let mut args = vec![
            "verify",
            path(receipt),
            "--module",
            path(&module),
            "--input",
            path(input),
        ];
        args.extend_from_slice(extra);
        cli.agora(&args)
    };
    let o = verify(&receipt, &input, &["--arg", "x"]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("receipt holds"));

    let o = verify(&receipt, &input, &["--arg", "x", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["holds"], true);

    // Other input, other arguments: the files are not what the receipt names.
    let o = verify(&receipt, &other, &["--arg", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("input:"));
    let o = verify(&receipt, &input, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("args:"));

    // A flipped bit anywhere in the signed bytes breaks the signature.
    let mut bytes = std::fs::read(&receipt).unwrap();
    let i = bytes.len() - 80;
    bytes[i] ^= 1;
    let tampered = cli.file("tampered.bin", bytes);
    let o = verify(&tampered, &input, &["--arg", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("signature"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn verify_detects_a_receipt_whose_outcome_was_not_reproduced() {
    // An honest receipt for another run of the same files, signed by a
    // liar: same inputs, claims other fuel. Made with the library API.
    let cli = Cli::new();
    let bytes = wasm(HELLO);
    let module = cli.file("hello.wasm", &bytes);
    let input = cli.file("empty", b"");
    let e = executor();
    let m: std::sync::Arc<Module> = e.load(&bytes).unwrap();
    let limits = Limits {
        fuel: Fuel(10_000_000_000),
        ..limits()
    };
    let mut outcome = e.run(&m, &task(&[], &[], limits));
    outcome.fuel_used = Fuel(outcome.fuel_used.0 + 1);
    let kp = agora_protocol::Keypair::from_secret([5; 32]);
    let receipt = executor::receipt(
        &kp,
        agora_protocol::MessageId([0; 32]),
        agora_protocol::TaskId::new(agora_protocol::JobId([1; 16]), 0),
        kp.node_id(),
        m.id(),
        ContentId::of(b""),
        &[],
        0,
        &limits,
        &outcome,
    );
    use agora_protocol::Encode;
    let file = cli.file("lie.bin", receipt.envelope().to_bytes());
    let o = cli.agora(&[
        "verify",
        path(&file),
        "--module",
        path(&module),
        "--input",
        path(&input),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("receipt does not hold") && out.contains("fuel_used:"),
        "{out}"
    );
}

//! Determinism: the same module, input and seed give the same output and
//! fuel on any executor, floats and NaN bits included, and the guest's
//! clocks and randomness are functions of the seed.

use agora_node::executor::wasi::{CLOCK_STEP_NS, RANDOM_CONTEXT, WALL_CLOCK_START_NS};
use agora_node::executor::{Config, Executor, Outcome, Task};

use super::{CAT, CLOCKS_AND_RANDOM, executor, limits, wasm};

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
                resume: None,
                checkpoints: None,
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

/// Reads three words of its memory: in the first page, just under 1 MiB
/// (where a Rust or C guest's stack starts) and past 2 MiB; prints `0` if
/// all were zero and `1` otherwise; then writes to all three.
const SNOOP: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 40)
  (func (export "_start")
    (local $seen i32)
    (local.set $seen (i32.or (i32.load (i32.const 256))
      (i32.or (i32.load (i32.const 1048568)) (i32.load (i32.const 2097252)))))
    (i32.store8 (i32.const 16) (select (i32.const 49) (i32.const 48) (local.get $seen)))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 256) (i32.const -1))
    (i32.store (i32.const 1048568) (i32.const -1))
    (i32.store (i32.const 2097252) (i32.const -1))))"#;

#[test]
fn a_task_sees_none_of_what_the_last_task_in_its_slot_wrote() {
    // One instance slot: every run reuses the memory the last one wrote,
    // reset in place for the pages kept resident and decommitted beyond.
    let e = Executor::new(Config {
        max_instances: 1,
        ..Config::default()
    })
    .unwrap();
    let m = e.load(&wasm(SNOOP)).unwrap();
    for run in 0..5 {
        let o = e.run(&m, &super::task(&[], &[], limits()));
        assert_eq!(o.result, Ok(()), "run {run}");
        assert_eq!(o.output, b"0", "run {run} saw memory an earlier run wrote");
    }
}

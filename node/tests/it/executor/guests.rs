//! Ordinary guests: stdin, argv, stdout and stderr, exit codes, traps,
//! integer arithmetic and the output limit.

use agora_node::executor::{Config, Executor, Task, TaskError};
use agora_protocol::ContentId;
use agora_protocol::execution::ExitStatus;
use agora_protocol::market::Limits;
use agora_protocol::units::Bytes;

use super::{ARGS, CAT, FD_WRITE, assert_healthy, executor, limits, run_wat, task, wasm};

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

/// Operands on both sides of 2^32 and at the ends of the range, zero as a
/// dividend only, without the one pair that overflows (`i64::MIN / -1`).
fn division_pairs() -> Vec<(i64, i64)> {
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
    pairs
}

#[test]
fn sixty_four_bit_division_is_exact_on_both_sides_of_two_to_the_32() {
    let e = executor();
    let pairs = division_pairs();
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
            resume: None,
            checkpoints: None,
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

//! Host work is billed: guests that make the host do work in a loop
//! (randomness, stderr the host drops, the input) pay fuel for every byte,
//! the same on every run, and run out of fuel where instructions alone
//! would not.

use agora_node::executor::TaskError;
use agora_node::executor::meter::{HOST_BYTE_FUEL, HOST_CALL_FUEL, RANDOM_BYTE_FUEL};
use agora_protocol::market::Limits;
use agora_protocol::units::Fuel;

use super::{CAT, executor, limits, run_wat, task, wasm};

/// Calls `random_get` for `$len` bytes `$n` times; its instructions cost
/// 1 + 12 per call.
fn random_loop(n: u32, len: u32) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "random_get" (func $r (param i32 i32) (result i32)))
  (memory (export "memory") 256)
  (func (export "_start")
    (local $i i32)
    (loop $l
      (drop (call $r (i32.const 0) (i32.const {len})))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))))"#
    )
}

#[test]
fn random_get_in_a_loop_pays_for_every_byte() {
    let e = executor();
    let (n, len) = (10u64, 1u64 << 20);
    let o = run_wat(&e, &random_loop(n as u32, len as u32), limits());
    assert_eq!(o.result, Ok(()));
    let instructions = o.fuel_used.0 - n * (HOST_CALL_FUEL + RANDOM_BYTE_FUEL * len);
    assert!(instructions < 20 * n, "{instructions} fuel of instructions");
    // The same fuel on every run.
    assert_eq!(
        run_wat(&e, &random_loop(n as u32, len as u32), limits()).fuel_used,
        o.fuel_used
    );

    // The attack: 100 calls of 16 MiB (1.6 GiB of randomness, seconds of
    // CPU) once cost 1,101 fuel. Under a limit of a billion it now stops
    // after about 15 calls.
    let limit = Fuel(1_000_000_000);
    let o = run_wat(
        &e,
        &random_loop(100, 16 << 20),
        Limits {
            fuel: limit,
            ..limits()
        },
    );
    assert_eq!(o.result, Err(TaskError::OutOfFuel { limit }));
    assert_eq!(o.fuel_used, limit);
}

#[test]
fn writing_to_stderr_pays_for_the_bytes_the_host_drops() {
    // 100 writes of 1 MiB to stderr, of which the host keeps 64 KiB.
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 17)
  (func (export "_start")
    (local $i i32)
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 1048576))
    (loop $l
      (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))))"#;
    let e = executor();
    let o = run_wat(&e, wat, limits());
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.stderr.len(), 64 << 10);
    let host = 100 * (HOST_CALL_FUEL + (8 + (1 << 20)) * HOST_BYTE_FUEL);
    assert!(o.fuel_used.0 >= host, "{} < {host}", o.fuel_used.0);
    assert!(o.fuel_used.0 < host + 2_000, "{}", o.fuel_used.0);
}

#[test]
fn the_input_read_and_the_output_written_are_paid_per_byte() {
    let e = executor();
    let module = e.load(&wasm(CAT)).unwrap();
    let args: Vec<String> = Vec::new();
    let fuel = |input: &[u8]| {
        let o = e.run(&module, &task(input, &args, limits()));
        assert_eq!(o.result, Ok(()));
        assert_eq!(o.output, input);
        o.fuel_used.0
    };
    // The same number of calls (CAT reads 4 KiB at a time): only the bytes differ.
    let small = fuel(&[1; 10]);
    let large = fuel(&[1; 4000]);
    assert_eq!(large - small, 2 * 3990 * HOST_BYTE_FUEL);
}

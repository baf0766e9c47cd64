//! Hostile guests against the run's limits: fuel, the deadline, memory,
//! the stack and the instance pool, with the host's own memory measured
//! where a guest tries to exhaust it.

use std::thread;
use std::time::Duration;

use agora_node::executor::{Config, Executor, TaskError};
use agora_protocol::execution::ExitStatus;
use agora_protocol::market::Limits;
use agora_protocol::units::{Bytes, Fuel, Millis};

use super::{
    FD_WRITE, GROW_BOMB, HELLO, MIB, SPIN, assert_healthy, executor, heavy, limits, peak_rss_increase, rss,
    run_wat, task, wasm,
};

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

/// Counts to 300 M and ends: its fuel is its own, below the limit of the
/// pause tests.
const COUNT: &str = r#"(module (func (export "_start") (local $i i32)
    (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
             (br_if $l (i32.lt_u (local.get $i) (i32.const 300000000))))))"#;

#[test]
fn a_suspended_executor_parks_provided_runs_in_place_and_they_end_as_if_never_parked() {
    let _h = heavy();
    let e = executor();
    let module = e.load(&wasm(COUNT)).unwrap();
    let l = Limits {
        fuel: Fuel(20_000_000_000),
        ..limits()
    };
    let uninterrupted = e.run(&module, &task(&[], &[], l));
    assert!(uninterrupted.result.is_ok(), "{:?}", uninterrupted.result);
    assert!(uninterrupted.fuel_used < l.fuel);
    e.suspend(true);
    let parked = thread::scope(|s| {
        let run = s.spawn(|| e.run_provided(&module, &task(&[], &[], l), None, None, None));
        // The node's own work is never parked.
        let own = e.run(&module, &task(&[], &[], l));
        assert_eq!(own.fuel_used, uninterrupted.fuel_used);
        let t0 = std::time::Instant::now();
        while e.suspended() == 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "never parked");
            thread::sleep(Duration::from_millis(5));
        }
        // Parked for longer than the whole run takes: it does not end.
        thread::sleep(uninterrupted.wall + Duration::from_millis(200));
        assert!(!run.is_finished(), "a parked run went on");
        assert_eq!(e.suspended(), 1);
        e.suspend(false);
        run.join().unwrap()
    });
    assert_eq!(e.suspended(), 0);
    assert_eq!(parked.result, uninterrupted.result);
    assert_eq!(
        parked.fuel_used, uninterrupted.fuel_used,
        "the same fuel as a run never parked"
    );
    assert!(parked.wall > uninterrupted.wall);
    assert_healthy(&e);
}

#[test]
fn a_run_paused_alone_parks_while_others_go_on_and_ends_as_if_never_paused() {
    let _h = heavy();
    let e = executor();
    let module = e.load(&wasm(COUNT)).unwrap();
    let l = Limits {
        fuel: Fuel(20_000_000_000),
        ..limits()
    };
    let uninterrupted = e.run(&module, &task(&[], &[], l));
    assert!(uninterrupted.result.is_ok(), "{:?}", uninterrupted.result);
    let pause = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let paused = thread::scope(|s| {
        let flag = pause.clone();
        let run = s.spawn(|| e.run_provided(&module, &task(&[], &[], l), None, None, Some(flag)));
        // Another provided run, not paused, goes through meanwhile.
        let other = e.run_provided(&module, &task(&[], &[], l), None, None, None);
        assert_eq!(other.fuel_used, uninterrupted.fuel_used);
        assert!(!run.is_finished(), "the paused run went on");
        let t0 = std::time::Instant::now();
        while e.suspended() == 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "never parked");
            thread::sleep(Duration::from_millis(5));
        }
        pause.store(false, std::sync::atomic::Ordering::Relaxed);
        run.join().unwrap()
    });
    assert_eq!(e.suspended(), 0);
    assert_eq!(paused.result, uninterrupted.result);
    assert_eq!(
        paused.fuel_used, uninterrupted.fuel_used,
        "the same fuel as a run never paused"
    );
    assert!(paused.wall > uninterrupted.wall);
    assert_healthy(&e);
}

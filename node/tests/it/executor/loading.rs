//! Loading modules: what is refused before compiling, the disk cache of
//! compiled modules, and compiling in a bounded worker process.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_node::executor::{CompileIsolation, Config, Executor, TaskError};
use agora_protocol::ContentId;
use agora_protocol::units::Bytes;

use super::{HELLO, assert_healthy, executor, limits, task, wasm};

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

    // A module whose compilation needs megabytes: a tiny one may compile
    // in what the worker's heap has left free at start, whatever the limit.
    let small = Executor::new(Config {
        compile_memory: Bytes::mib(16),
        ..subprocess_config()
    })
    .unwrap();
    let big = wasm(&big_function(50_000));
    let err = small.load(&big).unwrap_err();
    assert!(matches!(err, TaskError::CompileFailed(_)), "{err}");
    let ample = Executor::new(subprocess_config()).unwrap();
    assert!(
        ample.load(&big).is_ok(),
        "the same module compiles within the default limit"
    );
}

/// A module with one function of `n` additions (megabytes of compiler
/// state).
fn big_function(n: usize) -> String {
    let mut body = String::from("(module (func (export \"_start\") (local $x i32)");
    for i in 0..n {
        body.push_str(&format!(
            " (local.set $x (i32.add (local.get $x) (i32.const {i})))"
        ));
    }
    body.push_str("))");
    body
}

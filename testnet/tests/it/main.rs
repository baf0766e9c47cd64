//! Integration tests of the testnet: real node processes on loopback (the
//! `agora-testnet` binary, which finds or builds `agora`), and many nodes in
//! this process over the memory transport.
//!
//! The tests take turns (see [`serial`]): each one loads both cores of a
//! small CI machine by itself.

mod chaos;
mod dashboard;
mod data;
mod examples;
mod languages;
mod market;
mod memory;
mod netns;
mod up;

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

static TURN: Mutex<()> = Mutex::new(());

/// Holds the machine for one test at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A runtime of two workers, as the testnet's own commands use.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The `agora-testnet` binary.
pub fn testnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agora-testnet"))
}

/// Runs a command to its end and explains a failure with its output.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the testnet runs");
    assert!(
        out.status.success(),
        "{:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The last line of stdout, parsed as JSON.
pub fn last_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

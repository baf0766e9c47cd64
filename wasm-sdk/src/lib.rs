//! # agora-sdk
//!
//! Helpers for writing Agora jobs in Rust. A job is one WASM module run on
//! many task inputs by providers across the network, plus an optional
//! *reduce* module that combines the tasks' outputs into one result. This
//! crate is the guest side of that contract; it builds for `wasm32-wasip1`
//! (what jobs are) and for the host (so job logic can be unit-tested
//! natively).
//!
//! ## The guest contract
//!
//! A job module is an ordinary WASI preview-1 command: Rust's `fn main` built
//! with `cargo build --release --target wasm32-wasip1` (or `agora build`).
//! Any language that targets WASI works the same; this crate only saves
//! typing.
//!
//! | What | Where | In this crate |
//! | --- | --- | --- |
//! | the task input | stdin, read to its end | [`input`], [`input_text`], [`input_json`] |
//! | the task result | everything written to stdout | [`output`], [`output_text`], [`output_json`] |
//! | diagnostics | stderr, captured up to a cap, never part of the result | [`log!`] |
//! | arguments | `argv[1..]`, the same for every task of the job | [`args`] |
//! | randomness | WASI `random_get`, seeded by the node from the task's seed | [`seed`], [`Rng`] |
//! | checkpoints | the `agora` import module: save state, resume from it | [`checkpoint`], [`restore`], [`checkpoint_json`], [`restore_json`] |
//! | success | exit code 0 (return from `main`) | `main` returning `Err` exits 1 |
//!
//! Nothing else is granted: no files or preopened directories, no network,
//! no host environment variables. Clocks read a fixed virtual time, so they
//! cannot measure anything. This is what makes a task *deterministic*: the
//! same module, input, arguments and seed give the same output, bit for bit,
//! on every honest provider, which is how results are verified (by running a
//! task on more than one provider and comparing). Keep it that way: derive
//! all randomness from [`seed`], and do not depend on iteration order of a
//! `HashMap` (its keys come from `random_get` too, so it is deterministic,
//! but a `BTreeMap` says what you mean).
//!
//! A task that exits non-zero, traps (a panic is a trap), runs out of fuel,
//! memory or time, or writes more output than the job allows *fails*; its
//! stdout is discarded and the node may retry it elsewhere.
//!
//! ## Map and reduce
//!
//! A job's module is its *map* step: it runs once per task input. [`map`]
//! reads the input as JSON, calls your function and writes its result as
//! JSON:
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Range { lo: u64, hi: u64 }
//!
//! #[derive(Serialize)]
//! struct Sum { sum: u64 }
//!
//! fn main() -> Result<(), agora_sdk::Error> {
//!     agora_sdk::map(|r: Range| Sum { sum: (r.lo..r.hi).sum() })
//! }
//! ```
//!
//! An optional *reduce* module runs once, after every task succeeded, on the
//! requester's node. Its stdin is every task output in task index order, each
//! framed as a little-endian `u32` length and the bytes ([`frame`];
//! `wasm-sdk/REDUCE-CONTRACT.md` is the full contract); its stdout is the
//! job's result. [`reduce`] parses each task output as JSON:
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Deserialize)] struct Sum { sum: u64 }
//! fn main() -> Result<(), agora_sdk::Error> {
//!     agora_sdk::reduce(|sums: Vec<Sum>| sums.iter().map(|s| s.sum).sum::<u64>())
//! }
//! ```
//!
//! [`try_map`] and [`try_reduce`] take functions that can fail. For outputs
//! that are not JSON (an image tile, a PNG), use the primitives directly:
//! [`input_json`] then [`output`]; [`task_outputs`] then [`output`].
//!
//! ## Seeds and random numbers
//!
//! [`seed`] is the task's seed as a `u64`; [`Rng`] is a small deterministic
//! generator to draw from it. Tasks of one job normally get different seeds,
//! but a job that needs independent samplers should also say which sampler a
//! task is in its input, and use [`Rng::with_stream`].
//!
//! ## Checkpoints
//!
//! A long task may save its own state so that, if it is interrupted (its
//! provider killed or restarted), it resumes from its last checkpoint, on
//! the same node or another, in a fresh instance, instead of from the start:
//!
//! ```no_run
//! # #[derive(serde::Serialize, serde::Deserialize)] struct State { round: u32, sum: u64 }
//! fn main() -> Result<(), agora_sdk::Error> {
//!     let mut state = agora_sdk::restore_json()?.unwrap_or(State { round: 0, sum: 0 });
//!     while state.round < 100 {
//!         state.sum += u64::from(state.round); // the long work of one round
//!         state.round += 1;
//!         if let Err(e) = agora_sdk::checkpoint_json(&state) {
//!             agora_sdk::log!("no checkpoint after round {}: {e}", state.round);
//!         }
//!     }
//!     agora_sdk::output_json(&state.sum)
//! }
//! ```
//!
//! Call [`restore`] first thing: it returns the saved state, or `None` when
//! the run starts from the beginning. Then [`checkpoint`] every so often
//! (each costs 1000 fuel plus the state's size). With the state the node
//! saves where the task's world stood, and [`restore`] rewinds it there:
//! stdin goes on after the bytes read then, stdout holds exactly what had
//! been written then, random numbers and clocks go on from there. So a
//! resumed task writes the same output as one that was never interrupted,
//! *if everything it needs is in the state*:
//!
//! - Keep generators in the state (or a seed and a position), not in
//!   memory only. [`seed`] itself is safe: [`restore`] draws it first, so it
//!   is the same in every run.
//! - Read the input before the first checkpoint and keep what later rounds
//!   need in the state: std's stdin buffers, so the node may have handed
//!   over more bytes than the program consumed, and a resumed run does not
//!   see them again.
//! - Stdout is flushed by [`checkpoint`]; the state may be at most
//!   [`MAX_CHECKPOINT`] (512 KiB) and the output written so far at most
//!   [`MAX_CHECKPOINT_OUTPUT`] (256 KiB), else no checkpoint is taken
//!   ([`CheckpointError`]) and the task goes on. Write a large output at
//!   the end.
//!
//! A module that imports `agora` runs on Agora nodes only (not under a
//! plain `wasmtime run`); one that never calls these functions imports
//! nothing of it and behaves as before.
//!
//! ## Testing on the host
//!
//! The crate compiles natively, so a job's logic is unit-tested with plain
//! `cargo test`. Off WASI, [`seed`] reads the `AGORA_SEED` environment
//! variable (default 0), and [`local`] runs a map or reduce step on bytes in
//! memory, JSON encoding included; [`checkpoint`] keeps the state in a
//! thread-local and [`restore`] finds none. To run the real module in the
//! node's sandbox: `agora exec target/wasm32-wasip1/release/JOB.wasm --input
//! FILE --seed N`.

#![deny(missing_docs)]
// A failing unwrap in a test is the assertion message we want.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod checkpoint;
mod error;
pub mod frame;
mod io;
mod rng;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use checkpoint::{
    CheckpointError, MAX_CHECKPOINT, MAX_CHECKPOINT_OUTPUT, checkpoint, checkpoint_json, restore,
    restore_json,
};
#[cfg(not(all(target_os = "wasi", target_env = "p1")))]
#[doc(hidden)]
pub use checkpoint::{last_checkpoint_for_tests, set_resume_for_tests};
pub use error::Error;
pub use io::{
    args, input, input_json, input_text, log_line, output, output_json, output_text, task_outputs,
    task_outputs_json,
};
pub use rng::{Rng, seed};

/// Runs a map step: reads the task input as JSON `I`, calls `f`, writes its
/// result as JSON.
///
/// The seed is drawn first, so [`seed`] is the same whatever `f` allocates.
pub fn map<I, O, F>(f: F) -> Result<(), Error>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(I) -> O,
{
    try_map(|input| Ok::<_, Error>(f(input)))
}

/// Runs a map step whose function can fail: an `Err` fails the task with its
/// message (exit code 1 when returned from `main`).
///
/// ```no_run
/// fn main() -> Result<(), agora_sdk::Error> {
///     agora_sdk::try_map(|n: u64| {
///         if n == 0 { Err("n must be positive") } else { Ok(100 / n) }
///     })
/// }
/// ```
pub fn try_map<I, O, E, F>(f: F) -> Result<(), Error>
where
    I: DeserializeOwned,
    O: Serialize,
    E: std::fmt::Display,
    F: FnOnce(I) -> Result<O, E>,
{
    let _ = seed();
    output(&local::try_map(&input()?, f)?)
}

/// Runs a reduce step: reads every task output (framed as in [`frame`]) as
/// JSON `O`, in task index order, calls `f`, writes its result as JSON.
pub fn reduce<O, R, F>(f: F) -> Result<(), Error>
where
    O: DeserializeOwned,
    R: Serialize,
    F: FnOnce(Vec<O>) -> R,
{
    try_reduce(|outputs| Ok::<_, Error>(f(outputs)))
}

/// Runs a reduce step whose function can fail.
pub fn try_reduce<O, R, E, F>(f: F) -> Result<(), Error>
where
    O: DeserializeOwned,
    R: Serialize,
    E: std::fmt::Display,
    F: FnOnce(Vec<O>) -> Result<R, E>,
{
    let _ = seed();
    output(&local::try_reduce(&input()?, f)?)
}

/// The map and reduce steps on bytes in memory instead of stdin and stdout:
/// what [`map`] and [`reduce`] do, for unit tests on the host.
///
/// ```
/// use agora_sdk::{frame, local};
///
/// let square = |n: u64| n * n;
/// assert_eq!(local::map(b"12", square).unwrap(), b"144");
///
/// let outputs = frame::encode(&[&b"1"[..], b"4", b"9"]).unwrap();
/// let total = local::reduce(&outputs, |xs: Vec<u64>| xs.iter().sum::<u64>()).unwrap();
/// assert_eq!(total, b"14");
/// ```
pub mod local {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::Error;

    /// [`crate::map`] on `input`, returning the output.
    pub fn map<I, O, F>(input: &[u8], f: F) -> Result<Vec<u8>, Error>
    where
        I: DeserializeOwned,
        O: Serialize,
        F: FnOnce(I) -> O,
    {
        try_map(input, |i| Ok::<_, Error>(f(i)))
    }

    /// [`crate::try_map`] on `input`, returning the output.
    pub fn try_map<I, O, E, F>(input: &[u8], f: F) -> Result<Vec<u8>, Error>
    where
        I: DeserializeOwned,
        O: Serialize,
        E: std::fmt::Display,
        F: FnOnce(I) -> Result<O, E>,
    {
        let input = serde_json::from_slice(input).map_err(Error::Input)?;
        let out = f(input).map_err(Error::msg)?;
        serde_json::to_vec(&out).map_err(Error::Output)
    }

    /// [`crate::reduce`] on a framed reduce input, returning the result.
    pub fn reduce<O, R, F>(framed: &[u8], f: F) -> Result<Vec<u8>, Error>
    where
        O: DeserializeOwned,
        R: Serialize,
        F: FnOnce(Vec<O>) -> R,
    {
        try_reduce(framed, |o| Ok::<_, Error>(f(o)))
    }

    /// [`crate::try_reduce`] on a framed reduce input, returning the result.
    pub fn try_reduce<O, R, E, F>(framed: &[u8], f: F) -> Result<Vec<u8>, Error>
    where
        O: DeserializeOwned,
        R: Serialize,
        E: std::fmt::Display,
        F: FnOnce(Vec<O>) -> Result<R, E>,
    {
        let outputs = crate::io::parse_task_outputs(framed)?;
        let result = f(outputs).map_err(Error::msg)?;
        serde_json::to_vec(&result).map_err(Error::Output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_rejects_input_that_is_not_the_expected_json() {
        let err = local::map(b"{\"n\": 1}", |n: u64| n).unwrap_err();
        assert!(matches!(err, Error::Input(_)));
        assert!(
            err.to_string()
                .starts_with("the task input is not valid JSON for this job"),
            "{err}"
        );
    }

    #[test]
    fn try_map_fails_with_the_job_message() {
        let err = local::try_map(
            b"0",
            |n: u64| if n == 0 { Err("n must be positive") } else { Ok(n) },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "n must be positive");
        assert_eq!(format!("{err:?}"), "n must be positive");
    }

    #[test]
    fn reduce_sees_outputs_in_task_order() {
        let framed = frame::encode(&[&b"\"a\""[..], b"\"b\"", b"\"c\""]).unwrap();
        let joined = local::reduce(&framed, |xs: Vec<String>| xs.concat()).unwrap();
        assert_eq!(joined, b"\"abc\"");
    }

    #[test]
    fn reduce_names_the_task_whose_output_is_bad() {
        let framed = frame::encode(&[&b"1"[..], b"oops"]).unwrap();
        let err = local::reduce(&framed, |xs: Vec<u64>| xs.len()).unwrap_err();
        assert!(matches!(err, Error::TaskOutput { index: 1, .. }), "{err}");
    }

    #[test]
    fn reduce_rejects_a_broken_framing() {
        let err = local::reduce(&[3, 0, 0, 0, b'1'], |xs: Vec<u64>| xs.len()).unwrap_err();
        assert!(matches!(err, Error::Frame(_)), "{err}");
    }

    #[test]
    fn reduce_of_zero_tasks_gets_an_empty_vec() {
        assert_eq!(local::reduce(b"", |xs: Vec<u64>| xs.len()).unwrap(), b"0");
    }
}

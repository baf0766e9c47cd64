//! Checkpoints: a long task saves its own state, and a later run resumes
//! from it.
//!
//! A guest that wants its work to survive an interruption imports three
//! functions from the module `agora` (GUEST-CONTRACT.md, "Checkpoints"):
//! `checkpoint(ptr, len)` saves bytes of its choosing, `restore_size()` and
//! `restore(ptr, len)` hand them back to a run that resumes. A checkpoint
//! holds, besides those bytes, where the task's world stood: bytes of
//! stdin read, stdout so far, the random stream's position and virtual
//! time, and the fuel used since the task began. A run that resumes sets
//! its fuel counter to that fuel, and `restore` puts the world back, so a
//! guest whose saved bytes capture its progress continues as if nothing
//! had happened: same output as an uninterrupted run, and fuel billed once
//! for every step of progress.
//!
//! A run is a deterministic function of its task and the checkpoint it
//! starts from, so the checkpoints a run takes are too: anyone holding the
//! task and the checkpoint can re-run the stretch between two checkpoints
//! and compare.

use std::sync::{Arc, Mutex};

use agora_protocol::ContentId;
use agora_protocol::execution::{Checkpoint, MAX_CHECKPOINT_OUTPUT, MAX_CHECKPOINT_STATE};
use agora_protocol::units::Fuel;
use agora_protocol::wire::Blob;
use wasmtime::{Caller, Linker};

use super::meter::{HOST_CALL_FUEL, call_cost, charge};
use super::wasi::{Capture, ERRNO_FAULT, ERRNO_INVAL, Input, State, guest_range, memory, write_guest};

/// The import module of Agora's own functions.
pub const AGORA_MODULE: &str = "agora";

/// The functions a guest may import from [`AGORA_MODULE`].
pub const AGORA_FUNCTIONS: [&str; 3] = ["checkpoint", "restore_size", "restore"];

const ERRNO_2BIG: i32 = 1;
const ERRNO_NOENT: i32 = 44;

/// Where a run's checkpoints go as it takes them: the latest one, until
/// its owner takes it.
#[derive(Debug, Clone, Default)]
pub struct CheckpointSink(Arc<Mutex<Option<Checkpoint>>>);

impl CheckpointSink {
    /// An empty sink.
    pub fn new() -> CheckpointSink {
        CheckpointSink::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Checkpoint>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest checkpoint taken since the last call, if any.
    pub fn take(&self) -> Option<Checkpoint> {
        self.lock().take()
    }

    fn put(&self, c: Checkpoint) {
        *self.lock() = Some(c);
    }
}

/// A run's checkpoint state.
pub(crate) struct Checkpointing {
    /// What the checkpoints name: module, input, arguments digest, seed
    /// and fuel limit.
    pub(crate) computation: (ContentId, ContentId, ContentId, u64, Fuel),
    /// The checkpoint the run started from, and its id.
    pub(crate) resume: Option<(Arc<Checkpoint>, ContentId)>,
    /// The index of the last checkpoint taken (the resumed one's at first).
    pub(crate) index: u32,
    pub(crate) sink: Option<CheckpointSink>,
    pub(crate) input: Input,
    pub(crate) stdout: Capture,
}

/// Adds the `agora` functions to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        AGORA_MODULE,
        "checkpoint",
        |mut caller: Caller<'_, State>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let len = len as u32 as usize;
            charge(&mut caller, call_cost(len as u64))?;
            if len > MAX_CHECKPOINT_STATE || caller.data().checkpoints.stdout.len() > MAX_CHECKPOINT_OUTPUT {
                return Ok(ERRNO_2BIG);
            }
            let Some(memory) = memory(&mut caller) else {
                return Ok(ERRNO_FAULT);
            };
            let data = memory.data(&caller);
            let Some(range) = guest_range(data.len(), ptr as u32, len) else {
                return Ok(ERRNO_FAULT);
            };
            let state = data[range].to_vec();
            let left = caller.get_fuel()?;
            let data = caller.data_mut();
            let (time, random) = data.env.position();
            let cp = &mut data.checkpoints;
            let (module, input, args, seed, fuel_limit) = cp.computation;
            cp.index = cp.index.saturating_add(1);
            let c = Checkpoint {
                module,
                input,
                args,
                seed,
                fuel_limit,
                index: cp.index,
                from: cp.resume.as_ref().map(|(_, id)| *id),
                fuel_used: Fuel(fuel_limit.0.saturating_sub(left)),
                time,
                random,
                input_read: cp.input.position(),
                output: Blob(cp.stdout.snapshot()),
                state: Blob(state),
            };
            if let Some(sink) = &cp.sink {
                sink.put(c);
            }
            Ok(0)
        },
    )?;
    linker.func_wrap(
        AGORA_MODULE,
        "restore_size",
        |mut caller: Caller<'_, State>| -> wasmtime::Result<i32> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            Ok(match &caller.data().checkpoints.resume {
                Some((c, _)) => c.state.0.len() as i32,
                None => -1,
            })
        },
    )?;
    linker.func_wrap(
        AGORA_MODULE,
        "restore",
        |mut caller: Caller<'_, State>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let len = len as u32 as usize;
            charge(&mut caller, call_cost(len as u64))?;
            let Some((c, _)) = caller.data().checkpoints.resume.clone() else {
                return Ok(ERRNO_NOENT);
            };
            if len != c.state.0.len() {
                return Ok(ERRNO_INVAL);
            }
            let written = write_guest(&mut caller, ptr as u32, &c.state.0);
            if written != 0 {
                return Ok(written);
            }
            let data = caller.data_mut();
            data.env.rewind(c.time, c.random);
            data.checkpoints.input.seek(c.input_read);
            data.checkpoints.stdout.replace(&c.output.0);
            Ok(0)
        },
    )?;
    Ok(())
}

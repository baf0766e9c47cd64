//! Task checkpoints: a long task saves its own state now and then, and a run
//! that resumes after an interruption starts from the last one.
//!
//! The node grants a second import module, `agora`, beside WASI. A saved
//! state comes with where the task's world stood (stdin read, stdout written,
//! random bytes drawn, virtual time), and [`restore`] rewinds the world to
//! it, so a resumed run goes on exactly as the interrupted one would have:
//! its output is the same bytes. A module that calls neither function does
//! not import `agora`, and runs anywhere WASI does.
//!
//! Off WASI (host builds, tests) there is no node: [`checkpoint`] keeps the
//! state in a thread-local and [`restore`] finds nothing, unless a test set a
//! state to resume from.

use std::fmt;
use std::io::Write;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest state [`checkpoint`] saves: 512 KiB.
pub const MAX_CHECKPOINT: usize = 512 * 1024;

/// The most a task may have written to stdout when it checkpoints (the
/// checkpoint carries it): 256 KiB.
pub const MAX_CHECKPOINT_OUTPUT: usize = 256 * 1024;

/// The host's answers to `checkpoint` (WASI errno values).
const E2BIG: i32 = 1;
const EFAULT: i32 = 21;

/// Why a checkpoint was not taken, or a restored state could not be read.
///
/// A checkpoint that was not taken loses nothing but the work since the one
/// before: the task goes on, and a guest may log the error and continue.
/// Its `Debug` output is its `Display` message, like [`crate::Error`]'s.
#[non_exhaustive]
pub enum CheckpointError {
    /// The state is larger than [`MAX_CHECKPOINT`]; the host was not asked.
    StateTooLarge {
        /// The state's size in bytes.
        len: usize,
    },
    /// The task has written more than [`MAX_CHECKPOINT_OUTPUT`] bytes to
    /// stdout, more than a checkpoint holds.
    OutputTooLarge,
    /// The host could not read the state from the module's memory.
    OutOfBounds,
    /// Flushing stdout before the checkpoint failed (the checkpoint must
    /// record everything the task printed).
    Io(std::io::Error),
    /// The state could not be serialised to JSON ([`checkpoint_json`]).
    Encode(serde_json::Error),
    /// The restored state is not the JSON expected ([`restore_json`]).
    Decode(serde_json::Error),
    /// The host answered with an errno this SDK does not know.
    Host(i32),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::StateTooLarge { len } => write!(
                f,
                "the checkpoint state is {len} bytes, more than the {MAX_CHECKPOINT} allowed; \
                 save less (leave out what can be recomputed)"
            ),
            CheckpointError::OutputTooLarge => write!(
                f,
                "the task has written more than {MAX_CHECKPOINT_OUTPUT} bytes to stdout, more than a \
                 checkpoint holds; write the bulk of the output after the last checkpoint"
            ),
            CheckpointError::OutOfBounds => {
                f.write_str("the host could not read the checkpoint state from the module's memory")
            }
            CheckpointError::Io(e) => write!(f, "could not flush stdout before the checkpoint: {e}"),
            CheckpointError::Encode(e) => write!(f, "could not serialise the checkpoint state to JSON: {e}"),
            CheckpointError::Decode(e) => {
                write!(
                    f,
                    "the state restored from the checkpoint is not the JSON expected: {e}"
                )
            }
            CheckpointError::Host(code) => write!(f, "the host refused the checkpoint with errno {code}"),
        }
    }
}

impl fmt::Debug for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointError::Io(e) => Some(e),
            CheckpointError::Encode(e) | CheckpointError::Decode(e) => Some(e),
            CheckpointError::StateTooLarge { .. }
            | CheckpointError::OutputTooLarge
            | CheckpointError::OutOfBounds
            | CheckpointError::Host(_) => None,
        }
    }
}

/// So that `?` works in `fn main() -> Result<(), agora_sdk::Error>`: a
/// checkpoint error that ends the task is a job error with its message.
impl From<CheckpointError> for crate::Error {
    fn from(e: CheckpointError) -> crate::Error {
        crate::Error::msg(e)
    }
}

/// Saves `state` as the task's latest checkpoint.
///
/// Stdout is flushed first, so that the checkpoint holds everything the task
/// printed. Costs 1000 + `state.len()` fuel. A run that is interrupted later
/// resumes, in a fresh instance, from the last checkpoint that succeeded
/// (see [`restore`]).
pub fn checkpoint(state: &[u8]) -> Result<(), CheckpointError> {
    if state.len() > MAX_CHECKPOINT {
        return Err(CheckpointError::StateTooLarge { len: state.len() });
    }
    std::io::stdout().flush().map_err(CheckpointError::Io)?;
    checkpoint_result(host::checkpoint(state))
}

/// [`checkpoint`] of `state` serialised as JSON.
pub fn checkpoint_json<T: Serialize + ?Sized>(state: &T) -> Result<(), CheckpointError> {
    checkpoint(&serde_json::to_vec(state).map_err(CheckpointError::Encode)?)
}

/// The state of the checkpoint this run resumes from, or `None` when the run
/// starts from the beginning. Call it first thing.
///
/// When it returns a state, the task's world has been rewound to where it
/// stood at that checkpoint: stdin goes on after the bytes read then, stdout
/// holds exactly what had been written then, random numbers and clocks go on
/// from there. [`crate::seed`] is drawn before the rewind, so it is the same
/// in a resumed run as in the first.
///
/// A checkpoint the host has but cannot hand over (which it should never
/// do) is logged and the run starts from the beginning: the world was not
/// rewound, so that is still a consistent run.
pub fn restore() -> Option<Vec<u8>> {
    let _ = crate::seed();
    match host::restore() {
        Ok(state) => state,
        Err(code) => {
            crate::log!("agora-sdk: restoring the checkpoint failed with errno {code}; starting afresh");
            None
        }
    }
}

/// [`restore`], parsing the state as the JSON [`checkpoint_json`] saved.
pub fn restore_json<T: DeserializeOwned>() -> Result<Option<T>, CheckpointError> {
    restore()
        .map(|state| serde_json::from_slice(&state).map_err(CheckpointError::Decode))
        .transpose()
}

/// What the host's answer to `checkpoint` means (the state is within
/// [`MAX_CHECKPOINT`], so E2BIG is about the output).
fn checkpoint_result(code: i32) -> Result<(), CheckpointError> {
    match code {
        0 => Ok(()),
        E2BIG => Err(CheckpointError::OutputTooLarge),
        EFAULT => Err(CheckpointError::OutOfBounds),
        code => Err(CheckpointError::Host(code)),
    }
}

/// The three `agora` imports, declared by hand like `random_get` in `rng.rs`.
#[cfg(all(target_os = "wasi", target_env = "p1"))]
#[allow(unsafe_code)]
mod host {
    /// `restore`'s answer when there is no checkpoint to restore.
    const ENOENT: i32 = 44;

    #[link(wasm_import_module = "agora")]
    unsafe extern "C" {
        /// `checkpoint(ptr, len) -> errno`: saves `len` bytes at `ptr`.
        #[link_name = "checkpoint"]
        fn agora_checkpoint(ptr: *const u8, len: usize) -> i32;
        /// `restore_size() -> i32`: the saved state's size, or -1.
        #[link_name = "restore_size"]
        fn agora_restore_size() -> i32;
        /// `restore(ptr, len) -> errno`: writes the saved state at `ptr`
        /// and rewinds the world.
        #[link_name = "restore"]
        fn agora_restore(ptr: *mut u8, len: usize) -> i32;
    }

    pub(super) fn checkpoint(state: &[u8]) -> i32 {
        // SAFETY: `state` is a live buffer of exactly `state.len()` bytes in
        // this module's linear memory; the host only reads it, and keeps no
        // reference after returning.
        unsafe { agora_checkpoint(state.as_ptr(), state.len()) }
    }

    /// The saved state, `None` without one, or the host's errno.
    pub(super) fn restore() -> Result<Option<Vec<u8>>, i32> {
        // SAFETY: takes no arguments and touches no guest memory.
        let size = unsafe { agora_restore_size() };
        let Ok(size) = usize::try_from(size) else {
            return Ok(None);
        };
        let mut state = vec![0u8; size];
        // SAFETY: `state` is a live, exclusively borrowed buffer of exactly
        // `size` bytes, which is all the host writes; it keeps no reference.
        match unsafe { agora_restore(state.as_mut_ptr(), state.len()) } {
            0 => Ok(Some(state)),
            ENOENT => Ok(None),
            code => Err(code),
        }
    }
}

/// No node off WASI: checkpoints stay in this thread, for tests to look at.
#[cfg(not(all(target_os = "wasi", target_env = "p1")))]
mod host {
    use std::cell::RefCell;

    thread_local! {
        pub(super) static SAVED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
        pub(super) static RESUME: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    }

    pub(super) fn checkpoint(state: &[u8]) -> i32 {
        SAVED.set(Some(state.to_vec()));
        0
    }

    pub(super) fn restore() -> Result<Option<Vec<u8>>, i32> {
        Ok(RESUME.take())
    }
}

/// Host builds only: the state the next [`restore`] on this thread returns
/// (once), as if the run resumed from it; `None` starts afresh.
#[cfg(not(all(target_os = "wasi", target_env = "p1")))]
#[doc(hidden)]
pub fn set_resume_for_tests(state: Option<Vec<u8>>) {
    host::RESUME.set(state);
}

/// Host builds only: the state of the last [`checkpoint`] on this thread.
#[cfg(not(all(target_os = "wasi", target_env = "p1")))]
#[doc(hidden)]
pub fn last_checkpoint_for_tests() -> Option<Vec<u8>> {
    host::SAVED.with_borrow(Clone::clone)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Progress {
        round: u32,
        total: u64,
    }

    #[test]
    fn a_checkpoint_is_kept_for_the_test_to_see() {
        checkpoint(b"round 3").unwrap();
        checkpoint(b"round 4").unwrap();
        assert_eq!(last_checkpoint_for_tests().as_deref(), Some(&b"round 4"[..]));
    }

    #[test]
    fn restore_starts_afresh_unless_a_state_was_set_to_resume_from() {
        assert_eq!(restore(), None);
        set_resume_for_tests(Some(b"saved".to_vec()));
        assert_eq!(restore().as_deref(), Some(&b"saved"[..]));
        assert_eq!(restore(), None, "a resume state is handed over once");
    }

    #[test]
    fn a_state_over_512_kib_is_refused_without_asking_the_host() {
        checkpoint(b"before").unwrap();
        checkpoint(&vec![0; MAX_CHECKPOINT]).unwrap();
        let err = checkpoint(&vec![0; MAX_CHECKPOINT + 1]).unwrap_err();
        assert!(matches!(err, CheckpointError::StateTooLarge { len } if len == MAX_CHECKPOINT + 1));
        assert!(err.to_string().contains("save less"), "{err}");
        assert_eq!(last_checkpoint_for_tests().map(|s| s.len()), Some(MAX_CHECKPOINT));
    }

    #[test]
    fn the_host_answers_map_to_what_went_wrong() {
        assert!(checkpoint_result(0).is_ok());
        assert!(matches!(
            checkpoint_result(E2BIG),
            Err(CheckpointError::OutputTooLarge)
        ));
        assert!(matches!(
            checkpoint_result(EFAULT),
            Err(CheckpointError::OutOfBounds)
        ));
        assert!(matches!(checkpoint_result(28), Err(CheckpointError::Host(28))));
        let err = checkpoint_result(E2BIG).unwrap_err();
        assert!(err.to_string().contains("after the last checkpoint"), "{err}");
    }

    #[test]
    fn a_json_checkpoint_restores_to_the_same_value() {
        let saved = Progress {
            round: 7,
            total: 1 << 60,
        };
        checkpoint_json(&saved).unwrap();
        set_resume_for_tests(last_checkpoint_for_tests());
        assert_eq!(restore_json::<Progress>().unwrap(), Some(saved));
        assert_eq!(restore_json::<Progress>().unwrap(), None);
    }

    #[test]
    fn restore_json_rejects_a_state_of_another_shape() {
        set_resume_for_tests(Some(br#"{"round": 7}"#.to_vec()));
        let err = restore_json::<Progress>().unwrap_err();
        assert!(matches!(err, CheckpointError::Decode(_)), "{err}");
        let err: crate::Error = err.into();
        assert!(
            err.to_string()
                .starts_with("the state restored from the checkpoint"),
            "{err}"
        );
    }
}

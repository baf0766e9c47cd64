//! The one error type of the SDK.

use std::fmt;

/// Why reading the task input, writing the output or running a step failed.
///
/// Its `Debug` output is the same readable message as its `Display`, so that
/// `fn main() -> Result<(), agora_sdk::Error>` leaves a useful line on stderr
/// when it fails (the process then exits with code 1 and the task fails).
#[non_exhaustive]
pub enum Error {
    /// Reading stdin or writing stdout failed.
    Io(std::io::Error),
    /// The task input is not UTF-8 text.
    NotUtf8(std::str::Utf8Error),
    /// The task input is not the JSON this job expects.
    Input(serde_json::Error),
    /// Task output `index` (given to a reduce step) is not the JSON this
    /// reduce step expects.
    TaskOutput {
        /// The task's index in the job (its position in the framing).
        index: usize,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
    /// The reduce step's stdin does not follow the framing of
    /// [`crate::frame`].
    Frame(crate::frame::FrameError),
    /// The output value could not be serialised to JSON.
    Output(serde_json::Error),
    /// The job's own code failed; the message says why.
    Job(String),
}

impl Error {
    /// An error carrying the job's own message, e.g. for a task input that
    /// parses but makes no sense.
    pub fn msg(message: impl fmt::Display) -> Error {
        Error::Job(message.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error on stdin or stdout: {e}"),
            Error::NotUtf8(e) => write!(f, "the task input is not UTF-8 text: {e}"),
            Error::Input(e) => write!(f, "the task input is not valid JSON for this job: {e}"),
            Error::TaskOutput { index, source } => {
                write!(
                    f,
                    "the output of task {index} is not valid JSON for this reduce step: {source}"
                )
            }
            Error::Frame(e) => write!(f, "the reduce input is not framed task outputs: {e}"),
            Error::Output(e) => write!(f, "could not serialise the output to JSON: {e}"),
            Error::Job(m) => f.write_str(m),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::NotUtf8(e) => Some(e),
            Error::Input(e) | Error::Output(e) | Error::TaskOutput { source: e, .. } => Some(e),
            Error::Frame(e) => Some(e),
            Error::Job(_) => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<crate::frame::FrameError> for Error {
    fn from(e: crate::frame::FrameError) -> Error {
        Error::Frame(e)
    }
}

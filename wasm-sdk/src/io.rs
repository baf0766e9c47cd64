//! The task's input (stdin), its output (stdout), its arguments and its log
//! (stderr).

use std::io::{Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Reads the whole task input (stdin) as bytes.
///
/// Stdin is read to its end, so a second call returns what is left: nothing.
pub fn input() -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    std::io::stdin().lock().read_to_end(&mut buf)?;
    Ok(buf)
}

/// Reads the whole task input as UTF-8 text.
pub fn input_text() -> Result<String, Error> {
    let bytes = input()?;
    String::from_utf8(bytes).map_err(|e| Error::NotUtf8(e.utf8_error()))
}

/// Reads the whole task input as one JSON value of type `T`.
pub fn input_json<T: DeserializeOwned>() -> Result<T, Error> {
    serde_json::from_slice(&input()?).map_err(Error::Input)
}

/// Writes bytes to the task output (stdout) and flushes them.
///
/// The task's result is everything written to stdout, so calls append.
pub fn output(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// Writes text to the task output.
pub fn output_text(text: &str) -> Result<(), Error> {
    output(text.as_bytes())
}

/// Writes `value` to the task output as compact JSON (no trailing newline).
pub fn output_json<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    output(&serde_json::to_vec(value).map_err(Error::Output)?)
}

/// Reads a reduce step's input: the outputs of every task of the job, in task
/// index order (see [`crate::frame`] for the framing).
pub fn task_outputs() -> Result<Vec<Vec<u8>>, Error> {
    let input = input()?;
    let frames = crate::frame::decode(&input)?;
    Ok(frames.into_iter().map(<[u8]>::to_vec).collect())
}

/// Reads a reduce step's input and parses every task output as JSON.
pub fn task_outputs_json<T: DeserializeOwned>() -> Result<Vec<T>, Error> {
    parse_task_outputs(&input()?)
}

/// Deframes a reduce input and parses every task output as JSON.
pub(crate) fn parse_task_outputs<T: DeserializeOwned>(framed: &[u8]) -> Result<Vec<T>, Error> {
    crate::frame::Frames::new(framed)
        .enumerate()
        .map(|(index, frame)| {
            serde_json::from_slice(frame?).map_err(|source| Error::TaskOutput { index, source })
        })
        .collect()
}

/// The task's arguments (`argv[1..]`), as given in the job spec.
///
/// The node passes no arguments of its own: in particular there is no task
/// index. A task that needs to know which part of the job it is carries that
/// in its input (as the mandelbrot tiles and the montecarlo streams do).
pub fn args() -> Vec<String> {
    std::env::args().skip(1).collect()
}

/// Writes one line to the task's log (stderr), ignoring write errors: a log
/// line is never worth failing a task for. Prefer the [`log!`](crate::log!)
/// macro.
pub fn log_line(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args);
    let _ = err.write_all(b"\n");
}

/// Writes a formatted line to the task's log (stderr), like `eprintln!` but
/// never panicking.
///
/// The node captures stderr (up to a cap) as diagnostics: it is not part of
/// the result and is not compared when results are verified.
///
/// ```
/// agora_sdk::log!("rendered tile {} of {}", 3, 16);
/// ```
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log_line(::std::format_args!($($arg)*))
    };
}

//! The framing of a reduce step's stdin: every task output, in task index
//! order, each as a 4-byte little-endian length followed by that many bytes.
//!
//! ```text
//! stdin = frame(output 0) ‖ frame(output 1) ‖ … ‖ frame(output n-1)
//! frame(b) = u32_le(len(b)) ‖ b
//! ```
//!
//! There is no header, count or trailer: the number of tasks is the number of
//! frames, and an empty stdin means a job of zero tasks. An empty output is
//! the frame `00 00 00 00`. This is the whole contract between the node that
//! runs a reduce step and the module (`wasm-sdk/REDUCE-CONTRACT.md`); the
//! node can use [`encode`] to produce it, a guest [`decode`] (or
//! [`crate::task_outputs`]) to read it.
//!
//! ```
//! use agora_sdk::frame;
//!
//! let stdin = frame::encode(&[&b"12"[..], b"", b"7"]).unwrap();
//! assert_eq!(stdin, b"\x02\0\0\012\0\0\0\0\x01\0\0\x007");
//! assert_eq!(frame::decode(&stdin).unwrap(), vec![&b"12"[..], b"", b"7"]);
//! ```

use std::fmt;

/// Bytes of the length prefix of every frame.
pub const LEN_PREFIX: usize = 4;

/// Frames every output, in order, into one reduce input.
///
/// Fails only for an output of 4 GiB or more, which no node accepts as a
/// task output anyway.
pub fn encode<T: AsRef<[u8]>>(outputs: &[T]) -> Result<Vec<u8>, FrameError> {
    let total = outputs.iter().map(|o| LEN_PREFIX + o.as_ref().len()).sum();
    let mut buf = Vec::with_capacity(total);
    for (index, output) in outputs.iter().enumerate() {
        let output = output.as_ref();
        let len = u32::try_from(output.len()).map_err(|_| FrameError::TooLarge {
            index,
            len: output.len(),
        })?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(output);
    }
    Ok(buf)
}

/// Splits a reduce input into the task outputs it frames, in task order.
pub fn decode(input: &[u8]) -> Result<Vec<&[u8]>, FrameError> {
    Frames::new(input).collect()
}

/// An iterator over the frames of a reduce input, without copying.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
    offset: usize,
    index: usize,
}

impl<'a> Frames<'a> {
    /// Iterates over the frames of `input`.
    pub fn new(input: &'a [u8]) -> Frames<'a> {
        Frames {
            rest: input,
            offset: 0,
            index: 0,
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8], FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((prefix, body)) = self.rest.split_first_chunk::<LEN_PREFIX>() else {
            let err = FrameError::TruncatedLength {
                index: self.index,
                offset: self.offset,
                remaining: self.rest.len(),
            };
            self.rest = &[];
            return Some(Err(err));
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        let Some((output, rest)) = body.split_at_checked(len) else {
            let err = FrameError::TruncatedOutput {
                index: self.index,
                offset: self.offset,
                len,
                remaining: body.len(),
            };
            self.rest = &[];
            return Some(Err(err));
        };
        self.rest = rest;
        self.offset += LEN_PREFIX + len;
        self.index += 1;
        Some(Ok(output))
    }
}

/// A reduce input that does not follow the framing, or an output that cannot
/// be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The input ends inside a length prefix.
    TruncatedLength {
        /// The task whose frame is cut.
        index: usize,
        /// Where its frame starts.
        offset: usize,
        /// The bytes left, fewer than [`LEN_PREFIX`].
        remaining: usize,
    },
    /// The input ends before the bytes its length prefix announces.
    TruncatedOutput {
        /// The task whose frame is cut.
        index: usize,
        /// Where its frame starts.
        offset: usize,
        /// The length announced.
        len: usize,
        /// The bytes left after the prefix.
        remaining: usize,
    },
    /// An output too large for a 32-bit length (encoding only).
    TooLarge {
        /// The task.
        index: usize,
        /// Its size.
        len: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::TruncatedLength {
                index,
                offset,
                remaining,
            } => write!(
                f,
                "frame of task {index} at byte {offset} has only {remaining} of its {LEN_PREFIX} length bytes"
            ),
            FrameError::TruncatedOutput {
                index,
                offset,
                len,
                remaining,
            } => write!(
                f,
                "frame of task {index} at byte {offset} announces {len} bytes but only {remaining} follow"
            ),
            FrameError::TooLarge { index, len } => {
                write!(
                    f,
                    "output of task {index} is {len} bytes, too large to frame (4 GiB or more)"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let outputs: Vec<Vec<u8>> = vec![vec![], b"a".to_vec(), vec![0xff; 300], vec![]];
        let framed = encode(&outputs).unwrap();
        assert_eq!(framed.len(), 4 * LEN_PREFIX + 301);
        let decoded = decode(&framed).unwrap();
        assert_eq!(decoded, outputs.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }

    #[test]
    fn empty_input_is_zero_tasks() {
        assert!(decode(&[]).unwrap().is_empty());
        assert!(encode::<&[u8]>(&[]).unwrap().is_empty());
    }

    #[test]
    fn length_prefix_is_little_endian() {
        let framed = encode(&[vec![7u8; 258]]).unwrap();
        assert_eq!(&framed[..4], &[2, 1, 0, 0]);
    }

    #[test]
    fn truncated_length_is_an_error() {
        let mut framed = encode(&[b"xy"]).unwrap();
        framed.extend_from_slice(&[1, 0]);
        assert_eq!(
            decode(&framed),
            Err(FrameError::TruncatedLength {
                index: 1,
                offset: 6,
                remaining: 2
            })
        );
    }

    #[test]
    fn truncated_output_is_an_error() {
        let err = decode(&[5, 0, 0, 0, b'a']).unwrap_err();
        assert_eq!(
            err,
            FrameError::TruncatedOutput {
                index: 0,
                offset: 0,
                len: 5,
                remaining: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "frame of task 0 at byte 0 announces 5 bytes but only 1 follow"
        );
    }

    #[test]
    fn iteration_stops_after_an_error() {
        let mut frames = Frames::new(&[9, 0]);
        assert!(matches!(frames.next(), Some(Err(_))));
        assert!(frames.next().is_none());
    }
}

//! The binary encoding every Agora message uses on the wire.
//!
//! The encoding is deterministic (one value has exactly one encoding) so that
//! signatures and content digests are stable across implementations. SPEC.md
//! §3 describes it byte by byte; in short:
//!
//! * integers are fixed width, little endian (`u8`, `u16`, `u32`, `u64`);
//! * `bool` is one byte, `0` or `1`, anything else is an error;
//! * fixed-size arrays (keys, digests, nonces, signatures) are raw bytes;
//! * byte strings, UTF-8 strings and lists carry a `u32` length or count,
//!   checked against the field's limit *before* anything is allocated;
//! * `Option<T>` is a tag byte (`0` none, `1` some) followed by `T`;
//! * enums are a `u8` tag followed by the variant's fields;
//! * structs are their fields in declaration order, with no padding;
//! * a decoder must consume its input exactly: trailing bytes are an error.

use std::fmt;

/// Errors from decoding untrusted bytes. Every error names what was wrong so
/// that a peer sending bad data can be told and logged precisely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the value was complete.
    #[error("truncated input: needed {needed} more bytes, {remaining} remain")]
    Truncated {
        /// Bytes the decoder needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A length or count exceeded the field's limit.
    #[error("{field} is too long: {len} exceeds the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The length found on the wire.
        len: u64,
        /// The field's limit.
        max: u64,
    },
    /// An enum or option tag that this version does not know.
    #[error("invalid tag {tag} for {field}")]
    InvalidTag {
        /// The field.
        field: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// A string that is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A value that is well formed but not allowed.
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// Why it is not allowed.
        reason: String,
    },
    /// Bytes were left after the value.
    #[error("{0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// The version byte is not one this implementation speaks.
    #[error("unsupported encoding version {found} (this node speaks version {supported})")]
    UnsupportedVersion {
        /// Version found on the wire.
        found: u8,
        /// Version this implementation supports.
        supported: u8,
    },
}

impl DecodeError {
    /// A value that parsed but is not allowed.
    pub fn invalid(field: &'static str, reason: impl fmt::Display) -> Self {
        DecodeError::InvalidValue {
            field,
            reason: reason.to_string(),
        }
    }
}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends bytes with no length prefix (fixed-size fields).
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// Appends a `u32` length prefix and the bytes.
    ///
    /// Lengths above `u32::MAX` cannot occur: every field limit is far lower
    /// and constructors enforce them.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.raw(v);
    }
    /// Appends a `u32` element count.
    pub fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    /// The number of bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Reads encoded values from untrusted bytes without copying or allocating
/// more than the input's own size.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                needed: n,
                remaining: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// The next byte, not consumed.
    pub fn peek_u8(&self) -> Option<u8> {
        self.buf.first().copied()
    }
    /// Reads a little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Reads a boolean byte (`0` or `1`).
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::InvalidTag { field, tag }),
        }
    }

    /// Reads a length prefix and checks it against `max` and against the
    /// bytes actually present, before the caller allocates anything.
    pub fn length(&mut self, max: usize, field: &'static str) -> Result<usize, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong {
                field,
                len: len as u64,
                max: max as u64,
            });
        }
        if len > self.buf.len() {
            return Err(DecodeError::Truncated {
                needed: len,
                remaining: self.buf.len(),
            });
        }
        Ok(len)
    }

    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.length(max, field)?;
        self.take(len)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize, field: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(max, field)?).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// Reads a list count of at most `max` elements. Each element occupies at
    /// least one byte, so a count larger than the remaining input is rejected
    /// here too (by [`Reader::length`]).
    pub fn count(&mut self, max: usize, field: &'static str) -> Result<usize, DecodeError> {
        self.length(max, field)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

/// A value with a canonical encoding.
pub trait Encode {
    /// Appends the encoding of `self`.
    fn encode(&self, w: &mut Writer);

    /// The encoding of `self` as a fresh buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// A value that can be decoded from untrusted bytes.
pub trait Decode: Sized {
    /// Decodes one value from the reader.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decodes a value that must occupy all of `bytes`.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::decode(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

/// A variable-size value (list, string, byte string) whose decoder needs a
/// limit. Such fields have no plain [`Decode`] impl, so a limit can never be
/// forgotten.
pub trait Limited: Sized {
    /// Decodes the value, rejecting it if longer than `max`.
    fn decode_limited(r: &mut Reader<'_>, max: usize, field: &'static str) -> Result<Self, DecodeError>;
}

macro_rules! int_impl {
    ($($t:ty => $m:ident),*) => {$(
        impl Encode for $t {
            fn encode(&self, w: &mut Writer) { w.$m(*self) }
        }
        impl Decode for $t {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> { r.$m() }
        }
    )*};
}
int_impl!(u8 => u8, u16 => u16, u32 => u32, u64 => u64);

impl Encode for bool {
    fn encode(&self, w: &mut Writer) {
        w.u8(u8::from(*self))
    }
}
impl Decode for bool {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.bool("bool")
    }
}

impl<const N: usize> Encode for [u8; N] {
    fn encode(&self, w: &mut Writer) {
        w.raw(self)
    }
}
impl<const N: usize> Decode for [u8; N] {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.array()
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, w: &mut Writer) {
        match self {
            None => w.u8(0),
            Some(v) => {
                w.u8(1);
                v.encode(w)
            }
        }
    }
}
impl<T: Decode> Decode for Option<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            tag => Err(DecodeError::InvalidTag { field: "option", tag }),
        }
    }
}

impl Encode for String {
    fn encode(&self, w: &mut Writer) {
        w.bytes(self.as_bytes())
    }
}
impl Limited for String {
    fn decode_limited(r: &mut Reader<'_>, max: usize, field: &'static str) -> Result<Self, DecodeError> {
        Ok(r.str(max, field)?.to_owned())
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, w: &mut Writer) {
        w.count(self.len());
        for v in self {
            v.encode(w);
        }
    }
}
impl<T: Decode> Limited for Vec<T> {
    fn decode_limited(r: &mut Reader<'_>, max: usize, field: &'static str) -> Result<Self, DecodeError> {
        let n = r.count(max, field)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(T::decode(r)?);
        }
        Ok(out)
    }
}

/// An opaque byte string: content, a module, an input or an output.
#[derive(Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Encode for Blob {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.0)
    }
}
impl Limited for Blob {
    fn decode_limited(r: &mut Reader<'_>, max: usize, field: &'static str) -> Result<Self, DecodeError> {
        Ok(Blob(r.bytes(max, field)?.to_vec()))
    }
}

/// Implements [`Encode`] and [`Decode`] for a struct as the concatenation of
/// its fields in the order given. A field written `name < LIMIT` is a
/// [`Limited`] value (list or string) decoded with that limit.
#[macro_export]
macro_rules! wire_struct {
    ($name:ident { $($field:ident $(< $max:expr)?),* $(,)? }) => {
        impl $crate::wire::Encode for $name {
            fn encode(&self, w: &mut $crate::wire::Writer) {
                $( $crate::wire::Encode::encode(&self.$field, w); )*
            }
        }
        impl $crate::wire::Decode for $name {
            fn decode(r: &mut $crate::wire::Reader<'_>) -> Result<Self, $crate::wire::DecodeError> {
                Ok(Self { $( $field: $crate::wire_struct!(@field r, $field $(, $max)?), )* })
            }
        }
    };
    (@field $r:ident, $field:ident) => { $crate::wire::Decode::decode($r)? };
    (@field $r:ident, $field:ident, $max:expr) => {
        $crate::wire::Limited::decode_limited($r, $max, stringify!($field))?
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_before_allocation() {
        // A list claiming a million elements in a five-byte input.
        let bytes = [0x40, 0x42, 0x0f, 0x00, 0x00];
        let err = <Vec<u64>>::decode_limited(&mut Reader::new(&bytes), 1 << 30, "list");
        assert!(matches!(err, Err(DecodeError::Truncated { .. })));
        let err = <Vec<u64>>::decode_limited(&mut Reader::new(&bytes), 16, "list");
        assert!(matches!(err, Err(DecodeError::TooLong { max: 16, .. })));
    }

    #[test]
    fn a_length_beyond_the_input_is_rejected_before_the_caller_allocates() {
        // Within the limit, but only two of the 1000 bytes claimed are here.
        let bytes = [0xe8, 0x03, 0x00, 0x00, 1, 2];
        assert_eq!(
            Reader::new(&bytes).length(1 << 20, "blob"),
            Err(DecodeError::Truncated {
                needed: 1000,
                remaining: 2
            })
        );
        let exact = [2, 0, 0, 0, 1, 2];
        assert_eq!(Reader::new(&exact).length(2, "blob"), Ok(2));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        assert_eq!(u16::from_bytes(&[1, 0, 0]), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(u16::from_bytes(&[1, 0]), Ok(1));
    }

    #[test]
    fn bool_and_option_tags_are_strict() {
        assert!(bool::from_bytes(&[2]).is_err());
        assert!(<Option<u8>>::from_bytes(&[2, 0]).is_err());
        assert_eq!(<Option<u8>>::from_bytes(&[1, 7]), Ok(Some(7)));
    }

    #[test]
    fn strings_must_be_utf8() {
        let bytes = [2, 0, 0, 0, 0xc3, 0x28];
        assert!(matches!(
            String::decode_limited(&mut Reader::new(&bytes), 8, "s"),
            Err(DecodeError::InvalidUtf8 { .. })
        ));
    }
}

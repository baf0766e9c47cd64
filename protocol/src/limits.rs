//! Every size and count limit of the protocol, in one place (SPEC.md §9).
//!
//! Decoders check each length against these before allocating; a message
//! one byte over a limit is rejected.

use std::time::Duration;

/// Longest domain path in bytes.
pub const MAX_DOMAIN_LEN: usize = 128;
/// Longest domain segment in bytes.
pub const MAX_DOMAIN_SEGMENT: usize = 32;
/// Deepest domain path.
pub const MAX_DOMAIN_DEPTH: usize = 8;

/// Largest signed payload inside an envelope.
pub const MAX_PAYLOAD: usize = 60 * 1024;
/// Largest encoded envelope (payload plus 135 bytes of header, length prefix
/// and signature).
pub const MAX_ENVELOPE: usize = MAX_PAYLOAD + 256;
/// Largest gossip message (one envelope).
pub const MAX_GOSSIP_MESSAGE: usize = 64 * 1024;

/// Most listen addresses in an advert or contact.
pub const MAX_ADDRS: usize = 8;
/// Longest multiaddr text.
pub const MAX_ADDR_LEN: usize = 256;
/// Longest software version string.
pub const MAX_VERSION_LEN: usize = 64;
/// Most labels on one advert.
pub const MAX_LABELS: usize = 16;
/// Longest label key, bytes.
pub const MAX_LABEL_KEY: usize = 32;
/// Longest label value, bytes.
pub const MAX_LABEL_VALUE: usize = 64;
/// Most contacts in a domain summary.
pub const MAX_CONTACTS: usize = 8;
/// Most child domains in a domain summary.
pub const MAX_CHILDREN: usize = 64;

/// Most arguments of a task.
pub const MAX_ARGS: usize = 64;
/// Longest single argument in bytes.
pub const MAX_ARG_LEN: usize = 1024;
/// Longest trap or error message carried in a receipt or a decline.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Largest blob (module, input or output) moved by the content protocol.
pub const MAX_BLOB: usize = 64 * 1024 * 1024;
/// Largest content carried inline in a market request (an accept's module
/// and input, a receipt's output); anything larger is fetched by id.
pub const MAX_INLINE_CONTENT: usize = 1024 * 1024;
/// Most blobs carried inline in one market request.
pub const MAX_INLINE_BLOBS: usize = 2;
/// Largest market request or response frame.
pub const MAX_MARKET_FRAME: usize = MAX_INLINE_BLOBS * (MAX_INLINE_CONTENT + 8) + 4 * MAX_ENVELOPE;
/// Most requests in one market batch (and answers in its response). A
/// batch of answers (offers, agreements, declines, acks: one envelope at
/// most each) always fits in [`MAX_MARKET_FRAME`].
pub const MAX_BATCH: usize = 32;
/// Most content bytes one slice of the content protocol carries; a slice
/// starts at a multiple of [`SLICE_ALIGN`].
pub const MAX_SLICE: u64 = 4 * 1024 * 1024;
/// Slices start at a multiple of this: one blake3 chunk.
pub const SLICE_ALIGN: u64 = 1024;
/// Largest content fetched in slices (a whole blob is at most
/// [`MAX_BLOB`]).
pub const MAX_SLICED: u64 = 64 * 1024 * 1024 * 1024;
/// Largest content frame.
pub const MAX_CONTENT_FRAME: usize = MAX_BLOB + 64;
/// Most summaries in one summaries response.
pub const MAX_SUMMARIES: usize = 64;

/// How far in the future an envelope's issue time may lie (clock skew).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

//! Request-response frames of the market and content protocols.
//!
//! Each request or response travels as one frame on its own substream: a
//! `u32` little-endian length followed by that many bytes of the encoded
//! message. The length is checked against the protocol's frame limit before
//! the body is read (SPEC.md §4).

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::envelope::Envelope;
use crate::id::ContentId;
use crate::id::NodeId;
use crate::limits::{
    MAX_BATCH, MAX_BLOB, MAX_INLINE_BLOBS, MAX_INLINE_CONTENT, MAX_MARKET_FRAME, MAX_MESSAGE_LEN,
    MAX_SUMMARIES,
};
use crate::units::{Bytes, Credits, EnergyRate, Fuel, Millis, Price};
use crate::wire::{Blob, Decode, DecodeError, Encode, Limited, Reader, Writer};

/// Most blocks in one [`MarketResponse::Chain`].
pub const MAX_CHAIN_PAGE: usize = 64;
/// Most bytes of a guest's stderr a receipt request carries.
pub const MAX_STDERR_TAIL: usize = 4096;
/// Largest encoding of one [`MarketResponse::Ran`]: [`crate::limits::MAX_BATCH`]
/// of them fit in a [`MAX_MARKET_FRAME`].
pub const MAX_RAN_ANSWER: usize = 64 * 1024;
/// Most bytes of a guest's stderr one [`MarketRequest::Log`] carries.
pub const MAX_LOG_CHUNK: usize = 16 * 1024;

/// The market protocol id.
pub const MARKET_PROTOCOL: &str = "/agora/market/1";
/// The content protocol id.
pub const CONTENT_PROTOCOL: &str = "/agora/content/1";

/// A request on the market protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketRequest {
    /// A signed [`crate::market::CallForOffers`].
    CallForOffers(Envelope),
    /// A signed [`crate::market::Accept`], with the module and input inline
    /// when the offer said the provider lacks them and they are small.
    Accept {
        /// The acceptance.
        accept: Envelope,
        /// Inline content, verified against its content id on arrival.
        content: Vec<Blob>,
    },
    /// A signed [`crate::execution::Receipt`], with the output inline when
    /// small (otherwise the requester fetches it by id).
    Receipt {
        /// The receipt.
        receipt: Envelope,
        /// The output.
        output: Option<Blob>,
        /// The tail of the guest's stderr when the run did not succeed (at
        /// most [`MAX_STDERR_TAIL`] bytes): what the developer needs to see
        /// why. Not signed and not verified: the provider's word.
        stderr: Blob,
    },
    /// A payment: the payer's signed [`crate::chain::Block`] whose entry
    /// is a [`crate::chain::Entry::Pay`] (its voucher). Answered with the
    /// payee's own block receiving it ([`MarketResponse::Received`]).
    Pay(Envelope),
    /// A signed [`crate::market::Cancel`].
    Cancel(Envelope),
    /// Asks for the freshest summaries of a domain and its direct children.
    Summaries(Domain),
    /// Asks for the blocks of `owner`'s credit chain after position `after`
    /// (at most [`MAX_CHAIN_PAGE`]), from the owner or anyone holding them.
    Chain {
        /// Whose chain.
        owner: NodeId,
        /// The last position the asker has.
        after: u64,
    },
    /// What a running task's guest wrote to stderr since `offset`: its live
    /// log, sent by the provider to the requester of `agreement` while the
    /// task runs. Not signed and not verified (the connection names the
    /// provider; a log is never part of a result). Answered with `Ack`.
    Log {
        /// The agreement of the task.
        agreement: crate::id::MessageId,
        /// The task.
        task: crate::id::TaskId,
        /// Where `text` starts in the guest's stderr.
        offset: u64,
        /// The bytes (at most [`MAX_LOG_CHUNK`]).
        text: Blob,
    },
    /// A signed [`crate::execution::Progress`]: a running task reached a
    /// checkpoint, carried whole (its encoding, at most
    /// [`MAX_INLINE_CONTENT`] bytes). Answered with `Ack` once the requester
    /// has it on disk.
    Progress {
        /// The progress receipt.
        progress: Envelope,
        /// The [`crate::execution::Checkpoint`] it names, encoded.
        checkpoint: Blob,
    },
    /// A call for offers and its acceptance in one round trip: the
    /// requester states the task's requirements and sends its signed
    /// [`crate::market::Accept`] at once, at the price it pre-accepts (the
    /// provider's advertised one); the acceptance's `offer` is
    /// [`crate::market::order_id`] of the requirements, so the signature
    /// binds them too. The provider checks the requirements as it would a
    /// call, and that its asking price is at most the acceptance's, and
    /// answers with its [`crate::market::Agreement`] (at the acceptance's
    /// price) or a decline. Content as in `Accept`.
    Order {
        /// What the task needs, as a call for offers states it.
        requirements: Box<crate::market::Requirements>,
        /// The acceptance.
        accept: Envelope,
        /// Inline content, verified against its content id on arrival.
        content: Vec<Blob>,
    },
    /// A signed [`crate::chain::Attestation`]: the sender audited the
    /// receiver's chain through one of its checkpoints and backed every
    /// credit counted there. Sent to the chain's owner, which keeps it and
    /// serves it with the checkpoint. Answered with `Ack`.
    Attest(Envelope),
    /// Asks for the latest checkpoint of `owner`'s chain the answerer
    /// holds with its attestations ([`MarketResponse::ChainCheckpoint`]), or
    /// `Declined(Unknown)` when it holds none.
    ChainCheckpoint {
        /// Whose chain.
        owner: NodeId,
    },
    /// Several requests to one peer in one frame, answered by a
    /// [`MarketResponse::Batch`] of as many answers in the same order. At
    /// most [`MAX_BATCH`]; never nested, never a `Summaries` request. Each
    /// request inside is handled exactly as if it came alone.
    Batch(Vec<MarketRequest>),
}

impl MarketRequest {
    /// The kinds of the requests a frame carries, `+` between those of a
    /// batch (`Order+Pay`), for logs.
    pub fn kinds(&self) -> String {
        match self {
            MarketRequest::Batch(items) => items
                .iter()
                .map(MarketRequest::kind)
                .collect::<Vec<_>>()
                .join("+"),
            r => r.kind().to_owned(),
        }
    }

    /// The request's kind, as named in the enum (for logs and metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            MarketRequest::CallForOffers(_) => "CallForOffers",
            MarketRequest::Accept { .. } => "Accept",
            MarketRequest::Receipt { .. } => "Receipt",
            MarketRequest::Pay(_) => "Pay",
            MarketRequest::Cancel(_) => "Cancel",
            MarketRequest::Summaries(_) => "Summaries",
            MarketRequest::Chain { .. } => "Chain",
            MarketRequest::Log { .. } => "Log",
            MarketRequest::Progress { .. } => "Progress",
            MarketRequest::Order { .. } => "Order",
            MarketRequest::Attest(..) => "Attest",
            MarketRequest::ChainCheckpoint { .. } => "ChainCheckpoint",
            MarketRequest::Batch(_) => "Batch",
        }
    }

    /// The content an acceptance (or an order) carries inline.
    pub fn content_mut(&mut self) -> Option<&mut Vec<Blob>> {
        match self {
            MarketRequest::Accept { content, .. } | MarketRequest::Order { content, .. } => Some(content),
            _ => None,
        }
    }

    /// Whether this request may travel inside a [`MarketRequest::Batch`].
    pub fn batchable(&self) -> bool {
        !matches!(self, MarketRequest::Summaries(_) | MarketRequest::Batch(_))
    }

    /// The encoded size in bytes, without encoding.
    pub fn encoded_len(&self) -> usize {
        let blob = |b: &Blob| 4 + b.0.len();
        1 + match self {
            MarketRequest::CallForOffers(e)
            | MarketRequest::Pay(e)
            | MarketRequest::Cancel(e)
            | MarketRequest::Attest(e) => e.encoded_len(),
            MarketRequest::Accept { accept, content } => {
                accept.encoded_len() + 4 + content.iter().map(blob).sum::<usize>()
            }
            MarketRequest::Order {
                requirements,
                accept,
                content,
            } => {
                requirements.to_bytes().len()
                    + accept.encoded_len()
                    + 4
                    + content.iter().map(blob).sum::<usize>()
            }
            MarketRequest::Receipt {
                receipt,
                output,
                stderr,
            } => receipt.encoded_len() + 1 + output.as_ref().map_or(0, blob) + blob(stderr),
            MarketRequest::Summaries(d) => d.to_bytes().len(),
            MarketRequest::Chain { .. } => 32 + 8,
            MarketRequest::ChainCheckpoint { .. } => 32,
            MarketRequest::Log { text, .. } => 32 + 20 + 8 + blob(text),
            MarketRequest::Progress { progress, checkpoint } => progress.encoded_len() + blob(checkpoint),
            MarketRequest::Batch(items) => 4 + items.iter().map(MarketRequest::encoded_len).sum::<usize>(),
        }
    }

    /// Groups `requests` into frames: runs of batchable requests become
    /// batches of at most [`MAX_BATCH`] that fit in [`MAX_MARKET_FRAME`];
    /// a request alone in its group, or one that cannot be batched, goes
    /// as itself. Each group comes with the indices of its requests, in
    /// order.
    pub fn group(requests: Vec<MarketRequest>) -> Vec<(MarketRequest, Vec<usize>)> {
        let mut out = Vec::new();
        let mut cur: Vec<(usize, MarketRequest)> = Vec::new();
        let mut cur_len = 5;
        let flush =
            |cur: &mut Vec<(usize, MarketRequest)>, out: &mut Vec<(MarketRequest, Vec<usize>)>| match cur
                .len()
            {
                0 => {}
                1 => {
                    let (i, r) = cur.pop().expect("one");
                    out.push((r, vec![i]));
                }
                _ => {
                    let (idx, reqs): (Vec<usize>, Vec<MarketRequest>) =
                        std::mem::take(cur).into_iter().unzip();
                    out.push((MarketRequest::Batch(reqs), idx));
                }
            };
        for (i, r) in requests.into_iter().enumerate() {
            if !r.batchable() {
                out.push((r, vec![i]));
                continue;
            }
            let len = r.encoded_len();
            if cur.len() == MAX_BATCH || cur_len + len > MAX_MARKET_FRAME {
                flush(&mut cur, &mut out);
                cur_len = 5;
            }
            cur_len += len;
            cur.push((i, r));
        }
        flush(&mut cur, &mut out);
        out
    }
}

impl MarketResponse {
    /// The [`MarketResponse::Ran`] answer carrying `agreement` and what a
    /// [`MarketRequest::Receipt`] request carries, if `receipt` is one and
    /// the answer fits in [`MAX_RAN_ANSWER`] bytes.
    pub fn ran(agreement: &Envelope, receipt: &MarketRequest) -> Option<MarketResponse> {
        let MarketRequest::Receipt {
            receipt,
            output,
            stderr,
        } = receipt
        else {
            return None;
        };
        let len = 1
            + agreement.encoded_len()
            + receipt.encoded_len()
            + 1
            + output.as_ref().map_or(0, |o| 4 + o.0.len())
            + 4
            + stderr.0.len();
        (len <= MAX_RAN_ANSWER).then(|| MarketResponse::Ran {
            agreement: agreement.clone(),
            receipt: receipt.clone(),
            output: output.clone(),
            stderr: stderr.clone(),
        })
    }
}

/// A response on the market protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketResponse {
    /// A signed [`crate::market::Offer`].
    Offer(Envelope),
    /// A signed [`crate::market::Agreement`].
    Agreement(Envelope),
    /// The request was refused, with the reason.
    Declined(Decline),
    /// Received and recorded.
    Ack,
    /// Signed [`crate::capacity::DomainSummary`] envelopes.
    Summaries(Vec<Envelope>),
    /// The answers to a [`MarketRequest::Batch`], in its order. Never
    /// nested, never `Summaries`.
    Batch(Vec<MarketResponse>),
    /// A payment counted: the payee's signed block receiving it.
    Received(Envelope),
    /// The answer to an [`MarketRequest::Order`] whose task the provider
    /// ran at once: its signed [`crate::market::Agreement`] and the signed
    /// [`crate::execution::Receipt`] of the run, with the output and the
    /// stderr tail as a [`MarketRequest::Receipt`] carries them. The whole
    /// answer encodes to at most [`MAX_RAN_ANSWER`] bytes, so that a batch
    /// of them fits in a frame. The requester acknowledges the receipt by
    /// paying for it (or, when the provider sends it again as a
    /// `Receipt`, with `Ack`).
    Ran {
        /// The agreement.
        agreement: Envelope,
        /// The receipt.
        receipt: Envelope,
        /// The output, when the receipt's requester does not fetch it.
        output: Option<Blob>,
        /// The tail of the guest's stderr when the run did not succeed.
        stderr: Blob,
    },
    /// Blocks of a credit chain, in order (possibly none).
    Chain(Vec<Envelope>),
    /// A checkpoint of a credit chain (its block) and the attestations of
    /// it the answerer holds (at most [`crate::chain::MAX_ATTESTATIONS`]).
    ChainCheckpoint {
        /// The checkpoint's block.
        block: Envelope,
        /// Signed [`crate::chain::Attestation`]s of it.
        attestations: Vec<Envelope>,
    },
}

/// Why a provider (or requester) refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Decline {
    /// Every slot is taken.
    NoFreeSlot,
    /// The task needs more memory than the provider gives a task.
    MemoryTooLarge {
        /// The most it gives.
        max: Bytes,
    },
    /// The requester's maximum price is below the asking price.
    PriceTooLow {
        /// The asking price.
        asking: Price,
    },
    /// The provider is not taking work (idle policy, shutting down).
    NotAccepting,
    /// The provider cannot finish before the deadline.
    DeadlineInfeasible {
        /// Its earliest finish from now.
        earliest: Millis,
    },
    /// The provider's declared energy cost exceeds the limit.
    EnergyTooHigh {
        /// Its rate.
        rate: EnergyRate,
    },
    /// The accepted offer is unknown or has expired.
    OfferUnknown,
    /// The referenced agreement or receipt is unknown.
    Unknown,
    /// The request was malformed, forged, stale or replayed.
    Invalid {
        /// What was wrong.
        message: String,
    },
    /// The module or input is larger than the provider accepts.
    TooLarge {
        /// The most it accepts.
        max: Bytes,
    },
    /// The task's fuel limit is above what the owner lets one task use.
    FuelTooHigh {
        /// The most it lets a task use.
        max: Fuel,
    },
    /// The task may run longer than the owner lets one task run, or than
    /// the offer allowed.
    TimeTooLong {
        /// The longest it lets a task run.
        max: Millis,
    },
    /// The requester's audited balance, less what it owes this provider,
    /// plus the credit the provider extends it, does not cover the task.
    NoCredit {
        /// What is available to it here.
        available: Credits,
    },
    /// The requester has left receipts of this provider unpaid past their
    /// deadline.
    Unpaid {
        /// How many.
        receipts: u32,
    },
    /// The provider does not work for this requester (its owner's deny
    /// list, or a proven fork of its credit chain).
    Refused,
    /// A receipt for a copy the requester withdrew before its agreement
    /// arrived: not recorded, nothing is owed for it.
    Superseded,
    /// The node cannot record the request now (its store failed): send it
    /// again later.
    Unavailable,
}

impl std::fmt::Display for Decline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decline::NoFreeSlot => f.write_str("no free slot"),
            Decline::MemoryTooLarge { max } => write!(f, "needs more memory than the {max} it offers"),
            Decline::PriceTooLow { asking } => write!(f, "max price below its asking price of {asking}"),
            Decline::NotAccepting => f.write_str("not accepting work"),
            Decline::DeadlineInfeasible { earliest } => {
                write!(
                    f,
                    "cannot meet the deadline (earliest finish in {}ms)",
                    earliest.0
                )
            }
            Decline::EnergyTooHigh { rate } => write!(f, "energy cost {rate} above the limit"),
            Decline::OfferUnknown => f.write_str("offer unknown or expired"),
            Decline::Unknown => f.write_str("unknown agreement or task"),
            Decline::Invalid { message } => write!(f, "invalid request: {message}"),
            Decline::TooLarge { max } => write!(f, "content larger than the {max} it accepts"),
            Decline::FuelTooHigh { max } => write!(f, "fuel limit above the {} it allows a task", max.0),
            Decline::TimeTooLong { max } => write!(f, "may run longer than the {}ms it allows a task", max.0),
            Decline::NoCredit { available } => write!(f, "not enough credit: {available} available here"),
            Decline::Unpaid { receipts } => {
                write!(f, "{receipts} receipt(s) unpaid here: no more work until it pays")
            }
            Decline::Refused => f.write_str("refused: this provider does not work for this requester"),
            Decline::Superseded => f.write_str("the copy was withdrawn: nothing is owed for it"),
            Decline::Unavailable => f.write_str("cannot record it now (storage failure): try again later"),
        }
    }
}

impl Decline {
    /// An [`Decline::Invalid`] with a clipped message.
    pub fn invalid(message: impl std::fmt::Display) -> Decline {
        Decline::Invalid {
            message: crate::execution::ExitStatus::clip(&message.to_string()),
        }
    }
}

impl Encode for Decline {
    fn encode(&self, w: &mut Writer) {
        match self {
            Decline::NoFreeSlot => w.u8(0),
            Decline::MemoryTooLarge { max } => {
                w.u8(1);
                max.encode(w)
            }
            Decline::PriceTooLow { asking } => {
                w.u8(2);
                asking.encode(w)
            }
            Decline::NotAccepting => w.u8(3),
            Decline::DeadlineInfeasible { earliest } => {
                w.u8(4);
                earliest.encode(w)
            }
            Decline::EnergyTooHigh { rate } => {
                w.u8(5);
                rate.encode(w)
            }
            Decline::OfferUnknown => w.u8(6),
            Decline::Unknown => w.u8(7),
            Decline::Invalid { message } => {
                w.u8(8);
                message.encode(w)
            }
            Decline::TooLarge { max } => {
                w.u8(9);
                max.encode(w)
            }
            Decline::FuelTooHigh { max } => {
                w.u8(10);
                max.encode(w)
            }
            Decline::TimeTooLong { max } => {
                w.u8(11);
                max.encode(w)
            }
            Decline::NoCredit { available } => {
                w.u8(12);
                available.encode(w)
            }
            Decline::Unpaid { receipts } => {
                w.u8(13);
                receipts.encode(w)
            }
            Decline::Refused => w.u8(14),
            Decline::Superseded => w.u8(15),
            Decline::Unavailable => w.u8(16),
        }
    }
}

impl Decode for Decline {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => Decline::NoFreeSlot,
            1 => Decline::MemoryTooLarge {
                max: Decode::decode(r)?,
            },
            2 => Decline::PriceTooLow {
                asking: Decode::decode(r)?,
            },
            3 => Decline::NotAccepting,
            4 => Decline::DeadlineInfeasible {
                earliest: Decode::decode(r)?,
            },
            5 => Decline::EnergyTooHigh {
                rate: Decode::decode(r)?,
            },
            6 => Decline::OfferUnknown,
            7 => Decline::Unknown,
            8 => Decline::Invalid {
                message: String::decode_limited(r, MAX_MESSAGE_LEN, "decline message")?,
            },
            9 => Decline::TooLarge {
                max: Decode::decode(r)?,
            },
            10 => Decline::FuelTooHigh {
                max: Decode::decode(r)?,
            },
            11 => Decline::TimeTooLong {
                max: Decode::decode(r)?,
            },
            12 => Decline::NoCredit {
                available: Decode::decode(r)?,
            },
            13 => Decline::Unpaid {
                receipts: Decode::decode(r)?,
            },
            14 => Decline::Refused,
            15 => Decline::Superseded,
            16 => Decline::Unavailable,
            tag => {
                return Err(DecodeError::InvalidTag {
                    field: "decline",
                    tag,
                });
            }
        })
    }
}

fn decode_inline(r: &mut Reader<'_>) -> Result<Blob, DecodeError> {
    Blob::decode_limited(r, MAX_INLINE_CONTENT, "inline content")
}

fn decode_inline_blobs(r: &mut Reader<'_>) -> Result<Vec<Blob>, DecodeError> {
    let n = r.count(MAX_INLINE_BLOBS, "inline content")?;
    let mut content = Vec::with_capacity(n);
    for _ in 0..n {
        content.push(decode_inline(r)?);
    }
    Ok(content)
}

impl Encode for MarketRequest {
    fn encode(&self, w: &mut Writer) {
        match self {
            MarketRequest::CallForOffers(e) => {
                w.u8(0);
                e.encode(w)
            }
            MarketRequest::Accept { accept, content } => {
                w.u8(1);
                accept.encode(w);
                content.encode(w)
            }
            MarketRequest::Receipt {
                receipt,
                output,
                stderr,
            } => {
                w.u8(2);
                receipt.encode(w);
                output.encode(w);
                stderr.encode(w)
            }
            MarketRequest::Pay(e) => {
                w.u8(3);
                e.encode(w)
            }
            MarketRequest::Cancel(e) => {
                w.u8(4);
                e.encode(w)
            }
            MarketRequest::Summaries(d) => {
                w.u8(5);
                d.encode(w)
            }
            MarketRequest::Batch(items) => {
                w.u8(6);
                items.encode(w)
            }
            MarketRequest::Chain { owner, after } => {
                w.u8(7);
                owner.encode(w);
                after.encode(w)
            }
            MarketRequest::Log {
                agreement,
                task,
                offset,
                text,
            } => {
                w.u8(8);
                agreement.encode(w);
                task.encode(w);
                offset.encode(w);
                text.encode(w)
            }
            MarketRequest::Progress { progress, checkpoint } => {
                w.u8(9);
                progress.encode(w);
                checkpoint.encode(w)
            }
            MarketRequest::Order {
                requirements,
                accept,
                content,
            } => {
                w.u8(10);
                requirements.encode(w);
                accept.encode(w);
                content.encode(w)
            }
            MarketRequest::Attest(e) => {
                w.u8(11);
                e.encode(w)
            }
            MarketRequest::ChainCheckpoint { owner } => {
                w.u8(12);
                owner.encode(w)
            }
        }
    }
}

impl Decode for MarketRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if r.peek_u8() == Some(6) {
            r.u8()?;
            return decode_batch(
                r,
                decode_single_request,
                MarketRequest::batchable,
                "a summaries request",
            )
            .map(MarketRequest::Batch);
        }
        decode_single_request(r)
    }
}

/// The items of a batch: a count of at most [`MAX_BATCH`], then each item,
/// none of which may be a batch (`one` knows no batch tag) or fail
/// `batchable` (`what` names what may not be batched).
fn decode_batch<T>(
    r: &mut Reader<'_>,
    one: fn(&mut Reader<'_>) -> Result<T, DecodeError>,
    batchable: impl Fn(&T) -> bool,
    what: &str,
) -> Result<Vec<T>, DecodeError> {
    let n = r.count(MAX_BATCH, "batch")?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let item = one(r)?;
        if !batchable(&item) {
            return Err(DecodeError::InvalidValue {
                field: "batch",
                reason: format!("{what} cannot be batched"),
            });
        }
        items.push(item);
    }
    Ok(items)
}

fn decode_single_request(r: &mut Reader<'_>) -> Result<MarketRequest, DecodeError> {
    Ok(match r.u8()? {
        0 => MarketRequest::CallForOffers(Envelope::decode(r)?),
        1 => {
            let accept = Envelope::decode(r)?;
            let content = decode_inline_blobs(r)?;
            MarketRequest::Accept { accept, content }
        }
        10 => {
            let requirements = Box::new(crate::market::Requirements::decode(r)?);
            let accept = Envelope::decode(r)?;
            let content = decode_inline_blobs(r)?;
            MarketRequest::Order {
                requirements,
                accept,
                content,
            }
        }
        2 => {
            let receipt = Envelope::decode(r)?;
            let output = match r.u8()? {
                0 => None,
                1 => Some(decode_inline(r)?),
                tag => return Err(DecodeError::InvalidTag { field: "output", tag }),
            };
            let stderr = Blob::decode_limited(r, MAX_STDERR_TAIL, "stderr tail")?;
            MarketRequest::Receipt {
                receipt,
                output,
                stderr,
            }
        }
        3 => MarketRequest::Pay(Envelope::decode(r)?),
        4 => MarketRequest::Cancel(Envelope::decode(r)?),
        5 => MarketRequest::Summaries(Domain::decode(r)?),
        7 => MarketRequest::Chain {
            owner: NodeId::decode(r)?,
            after: u64::decode(r)?,
        },
        8 => MarketRequest::Log {
            agreement: crate::id::MessageId::decode(r)?,
            task: crate::id::TaskId::decode(r)?,
            offset: u64::decode(r)?,
            text: Blob::decode_limited(r, MAX_LOG_CHUNK, "log chunk")?,
        },
        9 => MarketRequest::Progress {
            progress: Envelope::decode(r)?,
            checkpoint: decode_inline(r)?,
        },
        11 => MarketRequest::Attest(Envelope::decode(r)?),
        12 => MarketRequest::ChainCheckpoint {
            owner: NodeId::decode(r)?,
        },
        tag => {
            return Err(DecodeError::InvalidTag {
                field: "market request",
                tag,
            });
        }
    })
}

impl Encode for MarketResponse {
    fn encode(&self, w: &mut Writer) {
        match self {
            MarketResponse::Offer(e) => {
                w.u8(0);
                e.encode(w)
            }
            MarketResponse::Agreement(e) => {
                w.u8(1);
                e.encode(w)
            }
            MarketResponse::Declined(d) => {
                w.u8(2);
                d.encode(w)
            }
            MarketResponse::Ack => w.u8(3),
            MarketResponse::Summaries(s) => {
                w.u8(4);
                s.encode(w)
            }
            MarketResponse::Batch(items) => {
                w.u8(5);
                items.encode(w)
            }
            MarketResponse::Received(e) => {
                w.u8(6);
                e.encode(w)
            }
            MarketResponse::Chain(blocks) => {
                w.u8(7);
                blocks.encode(w)
            }
            MarketResponse::ChainCheckpoint { block, attestations } => {
                w.u8(8);
                block.encode(w);
                attestations.encode(w)
            }
            MarketResponse::Ran {
                agreement,
                receipt,
                output,
                stderr,
            } => {
                w.u8(9);
                agreement.encode(w);
                receipt.encode(w);
                output.encode(w);
                stderr.encode(w)
            }
        }
    }
}

impl Decode for MarketResponse {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if r.peek_u8() == Some(5) {
            r.u8()?;
            let batchable = |a: &MarketResponse| !matches!(a, MarketResponse::Summaries(_));
            return decode_batch(r, decode_single_response, batchable, "summaries")
                .map(MarketResponse::Batch);
        }
        decode_single_response(r)
    }
}

fn decode_single_response(r: &mut Reader<'_>) -> Result<MarketResponse, DecodeError> {
    Ok(match r.u8()? {
        0 => MarketResponse::Offer(Envelope::decode(r)?),
        1 => MarketResponse::Agreement(Envelope::decode(r)?),
        2 => MarketResponse::Declined(Decline::decode(r)?),
        3 => MarketResponse::Ack,
        4 => MarketResponse::Summaries(Vec::decode_limited(r, MAX_SUMMARIES, "summaries")?),
        6 => MarketResponse::Received(Envelope::decode(r)?),
        7 => MarketResponse::Chain(Vec::decode_limited(r, MAX_CHAIN_PAGE, "chain")?),
        8 => MarketResponse::ChainCheckpoint {
            block: Envelope::decode(r)?,
            attestations: Vec::decode_limited(r, crate::chain::MAX_ATTESTATIONS, "attestations")?,
        },
        9 => {
            let start = r.remaining() + 1;
            let ran = MarketResponse::Ran {
                agreement: Envelope::decode(r)?,
                receipt: Envelope::decode(r)?,
                output: match r.u8()? {
                    0 => None,
                    1 => Some(decode_inline(r)?),
                    tag => return Err(DecodeError::InvalidTag { field: "output", tag }),
                },
                stderr: Blob::decode_limited(r, MAX_STDERR_TAIL, "stderr tail")?,
            };
            if start - r.remaining() > MAX_RAN_ANSWER {
                return Err(DecodeError::InvalidValue {
                    field: "ran",
                    reason: format!("longer than {MAX_RAN_ANSWER} bytes"),
                });
            }
            ran
        }
        tag => {
            return Err(DecodeError::InvalidTag {
                field: "market response",
                tag,
            });
        }
    })
}

/// A request on the content protocol: send me the bytes of this id, or
/// one slice of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRequest {
    /// The content wanted.
    pub id: ContentId,
    /// Only this range, as a verifiable slice (SPEC.md §4.4).
    pub slice: Option<Slice>,
}

crate::wire_struct!(ContentRequest { id, slice });

/// A range of content: `len` bytes from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// First byte; a multiple of [`crate::limits::SLICE_ALIGN`].
    pub start: u64,
    /// Bytes wanted, 1 to [`crate::limits::MAX_SLICE`] (fewer come back at
    /// the end of the content).
    pub len: u64,
}

impl Encode for Slice {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.start);
        w.u64(self.len);
    }
}

impl Decode for Slice {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let s = Slice {
            start: r.u64()?,
            len: r.u64()?,
        };
        if !s.start.is_multiple_of(crate::limits::SLICE_ALIGN) {
            return Err(DecodeError::invalid(
                "slice",
                "its start is not a multiple of 1024",
            ));
        }
        if s.len == 0 || s.len > crate::limits::MAX_SLICE {
            return Err(DecodeError::invalid("slice", "its length is 0 or above 4 MiB"));
        }
        Ok(s)
    }
}

/// A response on the content protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentResponse {
    /// The bytes; the receiver checks they hash to the requested id.
    Found(Blob),
    /// The peer does not hold that content.
    NotFound,
    /// The slice asked for, in the bao slice encoding: the content's length
    /// (`u64`) then the chunks of the range with the tree hashes that
    /// verify them against the content id.
    Slice(Blob),
}

impl Encode for ContentResponse {
    fn encode(&self, w: &mut Writer) {
        match self {
            ContentResponse::Found(b) => {
                w.u8(0);
                b.encode(w)
            }
            ContentResponse::NotFound => w.u8(1),
            ContentResponse::Slice(b) => {
                w.u8(2);
                b.encode(w)
            }
        }
    }
}

impl Decode for ContentResponse {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => ContentResponse::Found(Blob::decode_limited(r, MAX_BLOB, "content")?),
            1 => ContentResponse::NotFound,
            2 => ContentResponse::Slice(Blob::decode_limited(r, MAX_BLOB, "slice")?),
            tag => {
                return Err(DecodeError::InvalidTag {
                    field: "content response",
                    tag,
                });
            }
        })
    }
}

/// Encodes a frame: `u32` length then the message.
pub fn encode_frame<T: Encode>(msg: &T) -> Vec<u8> {
    let body = msg.to_bytes();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks a frame's length prefix against `max` before its body is read.
pub fn frame_len(prefix: [u8; 4], max: usize, field: &'static str) -> Result<usize, DecodeError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max {
        return Err(DecodeError::TooLong {
            field,
            len: len as u64,
            max: max as u64,
        });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice_bytes(start: u64, len: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(start);
        w.u64(len);
        w.into_bytes()
    }

    #[test]
    fn a_batch_is_named_by_the_kinds_it_carries() {
        let summaries = MarketRequest::Summaries(Domain::root());
        let chain = MarketRequest::Chain {
            owner: crate::identity::Keypair::from_secret([7; 32]).node_id(),
            after: 0,
        };
        assert_eq!(summaries.kinds(), "Summaries");
        assert_eq!(
            MarketRequest::Batch(vec![chain, summaries.clone()]).kinds(),
            "Chain+Summaries"
        );
        assert_eq!(MarketRequest::Batch(vec![summaries]).kind(), "Batch");
    }

    #[test]
    fn a_slice_must_start_on_a_chunk_and_carry_between_one_byte_and_four_mib() {
        assert!(Slice::from_bytes(&slice_bytes(2048, 1)).is_ok());
        assert!(Slice::from_bytes(&slice_bytes(2048, crate::limits::MAX_SLICE)).is_ok());
        assert!(Slice::from_bytes(&slice_bytes(1000, 1)).is_err());
        assert!(Slice::from_bytes(&slice_bytes(0, 0)).is_err());
        assert!(Slice::from_bytes(&slice_bytes(0, crate::limits::MAX_SLICE + 1)).is_err());
    }
}

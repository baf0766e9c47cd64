//! Signed envelopes and replay protection.
//!
//! Every message that carries a promise (an advert, an offer, an agreement, a
//! receipt, a voucher…) travels inside an [`Envelope`]: the encoded payload,
//! its type, the signer's key, an issue time, an expiry and a random nonce,
//! signed with ed25519.
//!
//! * **Domain separation** (as libp2p signed envelopes, RFC 0002): the bytes
//!   signed start with a per-type domain string and the payload type code, so
//!   a signature made for one kind of message never verifies as another.
//! * **Strict verification**: `verify_strict` rejects malleable signatures and
//!   weak keys.
//! * **No unverified access**: the payload can only be obtained through
//!   [`Envelope::open`], which checks type, time window and signature first.
//! * **Replay**: an envelope is valid only between its issue time (with
//!   [`MAX_CLOCK_SKEW`] of tolerance) and its expiry, and the lifetime may not
//!   exceed the type's maximum. Within that window a [`ReplayGuard`] remembers
//!   nonces it has seen (SPEC.md §5).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::id::{MessageId, NodeId, Nonce};
use crate::identity::Keypair;
use crate::limits::{MAX_CLOCK_SKEW, MAX_ENVELOPE, MAX_PAYLOAD};
use crate::units::Timestamp;
use crate::wire::{Decode, DecodeError, Encode, Reader, Writer};

/// The envelope format version of an envelope signed alone.
pub const ENVELOPE_VERSION: u8 = 1;
/// The envelope format version of an envelope signed in a batch: its
/// signature covers the root of a Merkle tree of many envelopes' signing
/// inputs, and it carries its path to that root (SPEC.md §5.2).
pub const BATCH_ENVELOPE_VERSION: u8 = 2;
/// The deepest path a batch-signed envelope may carry: batches of up to
/// 2^8 = 256 envelopes.
pub const MAX_BATCH_DEPTH: usize = 8;
/// The most envelopes [`Envelope::seal_batch`] signs under one root.
pub const MAX_BATCH_LEAVES: usize = 1 << MAX_BATCH_DEPTH;
/// The domain string of what a batch's signature covers: its Merkle root.
pub const BATCH_DOMAIN: &str = "agora/1/envelope/batch";

/// The kind of payload an envelope carries. The code is part of what is
/// signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum PayloadType {
    /// [`crate::capacity::Advert`].
    Advert = 0x0001,
    /// [`crate::capacity::DomainSummary`].
    DomainSummary = 0x0002,
    /// [`crate::market::CallForOffers`].
    CallForOffers = 0x0010,
    /// [`crate::market::Offer`].
    Offer = 0x0011,
    /// [`crate::market::Accept`].
    Accept = 0x0012,
    /// [`crate::market::Agreement`].
    Agreement = 0x0013,
    /// [`crate::market::Cancel`].
    Cancel = 0x0014,
    /// [`crate::execution::Receipt`].
    Receipt = 0x0020,
    /// [`crate::execution::Progress`].
    Progress = 0x0021,
    /// [`crate::settlement::Voucher`].
    Voucher = 0x0030,
    /// [`crate::chain::Grant`].
    Grant = 0x0031,
    /// [`crate::chain::Block`].
    Block = 0x0032,
    /// [`crate::chain::Attestation`].
    Attestation = 0x0033,
    /// [`crate::fraud::FraudProof`].
    FraudProof = 0x0040,
    /// [`crate::chain::ForkProof`].
    ForkProof = 0x0041,
    /// [`crate::chain::Heads`].
    Heads = 0x0050,
}

impl PayloadType {
    /// All payload types.
    pub const ALL: [PayloadType; 16] = [
        PayloadType::Advert,
        PayloadType::DomainSummary,
        PayloadType::CallForOffers,
        PayloadType::Offer,
        PayloadType::Accept,
        PayloadType::Agreement,
        PayloadType::Cancel,
        PayloadType::Receipt,
        PayloadType::Progress,
        PayloadType::Voucher,
        PayloadType::Grant,
        PayloadType::Block,
        PayloadType::Attestation,
        PayloadType::FraudProof,
        PayloadType::ForkProof,
        PayloadType::Heads,
    ];

    /// The type with wire code `code`.
    pub fn from_code(code: u16) -> Option<PayloadType> {
        PayloadType::ALL.into_iter().find(|t| *t as u16 == code)
    }

    /// The wire code.
    pub fn code(self) -> u16 {
        self as u16
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A message that travels signed.
pub trait Payload: Encode + Decode {
    /// The payload type code.
    const TYPE: PayloadType;
    /// The signature domain string (SPEC.md §5).
    const DOMAIN: &'static str;
    /// The longest lifetime (expiry minus issue time) an envelope of this
    /// type may claim.
    const MAX_LIFETIME: Duration;
}

/// A signed message. See the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    payload_type: u16,
    signer: NodeId,
    issued_at: Timestamp,
    expires_at: Timestamp,
    nonce: Nonce,
    payload: Vec<u8>,
    signature: [u8; 64],
    /// For an envelope signed in a batch, its path to the signed root.
    batch: Option<Box<BatchPath>>,
}

/// An envelope's path from its leaf to the root of the Merkle tree its
/// batch signed: the sibling at each level where it has one, bottom up,
/// and on which side each sibling lies (bit `k` of `left` set: the `k`th
/// sibling is on the left).
#[derive(Clone, Debug, PartialEq, Eq)]
struct BatchPath {
    left: u16,
    siblings: Vec<[u8; 32]>,
}

impl BatchPath {
    fn encoded_len(&self) -> usize {
        1 + 2 + 32 * self.siblings.len()
    }
}

/// The Merkle tree of a batch (SPEC.md §5.2): a leaf is the keyed blake3
/// of one envelope's signing input, an inner node the keyed blake3 of its
/// two children, each level paired left to right with an odd last node
/// carried up as it is. The two keys keep a leaf from ever passing for an
/// inner node.
mod merkle {
    use super::BatchPath;

    const LEAF: &str = "agora/1/envelope/leaf";
    const NODE: &str = "agora/1/envelope/node";

    pub(super) fn leaf(signing_input: &[u8]) -> [u8; 32] {
        *blake3::Hasher::new_derive_key(LEAF)
            .update(signing_input)
            .finalize()
            .as_bytes()
    }

    fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
        *blake3::Hasher::new_derive_key(NODE)
            .update(left)
            .update(right)
            .finalize()
            .as_bytes()
    }

    /// The root of `leaves` (at least one) and each leaf's path to it.
    pub(super) fn tree(leaves: &[[u8; 32]]) -> ([u8; 32], Vec<BatchPath>) {
        let mut paths: Vec<BatchPath> = leaves
            .iter()
            .map(|_| BatchPath {
                left: 0,
                siblings: Vec::new(),
            })
            .collect();
        let mut level: Vec<([u8; 32], Vec<usize>)> =
            leaves.iter().enumerate().map(|(i, l)| (*l, vec![i])).collect();
        while level.len() > 1 {
            let mut next = Vec::with_capacity(level.len().div_ceil(2));
            let mut nodes = level.into_iter();
            while let Some((l, mut under_l)) = nodes.next() {
                let Some((r, under_r)) = nodes.next() else {
                    next.push((l, under_l));
                    break;
                };
                for &i in &under_l {
                    paths[i].siblings.push(r);
                }
                for &i in &under_r {
                    let p = &mut paths[i];
                    p.left |= 1 << p.siblings.len();
                    p.siblings.push(l);
                }
                under_l.extend(under_r);
                next.push((node(&l, &r), under_l));
            }
            level = next;
        }
        (level[0].0, paths)
    }

    /// The root that `leaf` and `path` lead to.
    pub(super) fn root(leaf: [u8; 32], path: &BatchPath) -> [u8; 32] {
        path.siblings.iter().enumerate().fold(leaf, |acc, (k, sibling)| {
            if path.left & (1 << k) != 0 {
                node(sibling, &acc)
            } else {
                node(&acc, sibling)
            }
        })
    }

    /// What a batch's signature covers (SPEC.md §5.2).
    pub(super) fn signing_input(root: &[u8; 32]) -> Vec<u8> {
        let mut w = crate::wire::Writer::with_capacity(64);
        w.bytes(super::BATCH_DOMAIN.as_bytes());
        w.raw(root);
        w.into_bytes()
    }
}

/// An envelope's bytes besides its payload and batch path: version, type,
/// signer, times, nonce, the payload's length and the signature.
const HEADER_LEN: usize = 1 + 2 + 32 + 8 + 8 + 16 + 4 + 64;

/// Why an envelope could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// More envelopes than one batch signs.
    #[error("a batch of {size} envelopes exceeds the limit of {MAX_BATCH_LEAVES}")]
    BatchTooLarge {
        /// Envelopes asked for.
        size: usize,
    },
    /// The encoded payload exceeds [`MAX_PAYLOAD`].
    #[error("payload of {size} bytes exceeds the limit of {MAX_PAYLOAD}")]
    PayloadTooLarge {
        /// Encoded size.
        size: usize,
    },
    /// The requested lifetime exceeds the type's maximum.
    #[error("lifetime {requested:?} exceeds the maximum of {max:?} for {kind}")]
    LifetimeTooLong {
        /// The payload type.
        kind: PayloadType,
        /// Requested lifetime.
        requested: Duration,
        /// The type's maximum.
        max: Duration,
    },
}

/// Why an envelope was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The bytes are not a well-formed envelope, or the payload is not a
    /// well-formed message of its type.
    #[error("malformed: {0}")]
    Malformed(#[from] DecodeError),
    /// The envelope carries another kind of message.
    #[error("expected a {expected} but the envelope carries payload type {found:#06x}")]
    WrongType {
        /// Expected type.
        expected: PayloadType,
        /// Code found.
        found: u16,
    },
    /// The signature does not verify (strictly) under the claimed signer.
    #[error("bad signature")]
    BadSignature,
    /// The envelope has expired.
    #[error("expired {ago:?} ago")]
    Expired {
        /// How long ago.
        ago: Duration,
    },
    /// The issue time lies further in the future than clock skew explains.
    #[error("issued {ahead:?} in the future")]
    FutureDated {
        /// How far ahead.
        ahead: Duration,
    },
    /// The claimed lifetime is longer than the type allows, or negative.
    #[error("lifetime of {lifetime:?} is not allowed for {kind} (max {max:?})")]
    BadLifetime {
        /// The payload type.
        kind: PayloadType,
        /// Claimed lifetime.
        lifetime: Duration,
        /// Maximum.
        max: Duration,
    },
    /// The nonce was seen before.
    #[error("replayed: nonce already seen from this signer")]
    Replayed,
    /// The replay guard cannot vouch for an envelope this old (it was issued
    /// before the guard started, or expires before the guard's floor).
    #[error("too old to be checked for replay; send a fresh message")]
    Stale,
}

impl Envelope {
    /// Signs `payload` as `keypair`, valid from `issued_at` for `lifetime`.
    pub fn seal<T: Payload>(
        keypair: &Keypair,
        payload: &T,
        issued_at: Timestamp,
        lifetime: Duration,
        nonce: Nonce,
    ) -> Result<Envelope, SealError> {
        let mut env = Envelope::unsigned(keypair, payload, issued_at, lifetime, nonce, 0)?;
        let input = env.signing_input(T::DOMAIN);
        env.signature = keypair.sign(&input);
        verified::remember(&env.signer, &input, &env.signature);
        Ok(env)
    }

    /// Signs many payloads of one type with one signature: over the root
    /// of a Merkle tree of their envelopes' signing inputs (SPEC.md §5.2).
    /// Each envelope carries its path to the root, so each opens alone, as
    /// any other envelope, and costs its verifier one signature check per
    /// batch (the check of a root is remembered) and a few hashes each.
    /// Each item is a payload, its issue time, lifetime and nonce. A batch
    /// of one is sealed as a single envelope; a batch larger than
    /// [`MAX_BATCH_LEAVES`] is refused, and none is none.
    pub fn seal_batch<T: Payload>(
        keypair: &Keypair,
        items: &[(&T, Timestamp, Duration, Nonce)],
    ) -> Result<Vec<Envelope>, SealError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if let [(payload, issued_at, lifetime, nonce)] = items {
            return Ok(vec![Envelope::seal(
                keypair, *payload, *issued_at, *lifetime, *nonce,
            )?]);
        }
        if items.len() > MAX_BATCH_LEAVES {
            return Err(SealError::BatchTooLarge { size: items.len() });
        }
        let mut envs = Vec::with_capacity(items.len());
        let mut leaves = Vec::with_capacity(items.len());
        let depth = items.len().next_power_of_two().trailing_zeros() as usize;
        let path_len = BatchPath {
            left: 0,
            siblings: vec![[0; 32]; depth],
        }
        .encoded_len();
        for &(payload, issued_at, lifetime, nonce) in items {
            let env = Envelope::unsigned(keypair, payload, issued_at, lifetime, nonce, path_len)?;
            leaves.push(merkle::leaf(&env.signing_input(T::DOMAIN)));
            envs.push(env);
        }
        let (root, paths) = merkle::tree(&leaves);
        let input = merkle::signing_input(&root);
        let signature = keypair.sign(&input);
        verified::remember(&keypair.node_id(), &input, &signature);
        for (env, path) in envs.iter_mut().zip(paths) {
            env.signature = signature;
            env.batch = Some(Box::new(path));
        }
        Ok(envs)
    }

    /// The envelope of `payload` before its signature, checked against the
    /// type's lifetime and the largest envelope, with room for a batch path
    /// of `path_len` bytes.
    fn unsigned<T: Payload>(
        keypair: &Keypair,
        payload: &T,
        issued_at: Timestamp,
        lifetime: Duration,
        nonce: Nonce,
        path_len: usize,
    ) -> Result<Envelope, SealError> {
        if lifetime > T::MAX_LIFETIME {
            return Err(SealError::LifetimeTooLong {
                kind: T::TYPE,
                requested: lifetime,
                max: T::MAX_LIFETIME,
            });
        }
        let payload = payload.to_bytes();
        if payload.len() > MAX_PAYLOAD || HEADER_LEN + payload.len() + path_len > MAX_ENVELOPE {
            return Err(SealError::PayloadTooLarge { size: payload.len() });
        }
        Ok(Envelope {
            payload_type: T::TYPE.code(),
            signer: keypair.node_id(),
            issued_at,
            expires_at: issued_at.add(lifetime),
            nonce,
            payload,
            signature: [0; 64],
            batch: None,
        })
    }

    /// The bytes the signature covers (SPEC.md §5.2).
    fn signing_input(&self, domain: &str) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.payload.len() + 128);
        w.bytes(domain.as_bytes());
        w.u16(self.payload_type);
        self.signer.encode(&mut w);
        self.issued_at.encode(&mut w);
        self.expires_at.encode(&mut w);
        self.nonce.encode(&mut w);
        w.bytes(&self.payload);
        w.into_bytes()
    }

    /// Verifies the envelope as a `T` at time `now` and returns its payload.
    pub fn open<T: Payload>(&self, now: Timestamp) -> Result<Verified<T>, OpenError> {
        // Type first, as the module docs promise: the time rules are the
        // type's own, so an envelope of another type is judged by none.
        self.check_type::<T>()?;
        self.check_time::<T>(now)?;
        self.open_ignoring_time()
    }

    /// Verifies type and signature but not the time window.
    ///
    /// Only for evidence that is judged on its content long after it was
    /// sent, such as the receipts inside a fraud proof; live messages use
    /// [`Envelope::open`].
    pub fn open_ignoring_time<T: Payload>(&self) -> Result<Verified<T>, OpenError> {
        self.check_type::<T>()?;
        let mut input = self.signing_input(T::DOMAIN);
        if let Some(path) = &self.batch {
            input = merkle::signing_input(&merkle::root(merkle::leaf(&input), path));
        }
        if !verified::seen(&self.signer, &input, &self.signature) {
            strict::verify(&self.signer, &input, &self.signature).map_err(|_| OpenError::BadSignature)?;
            verified::remember(&self.signer, &input, &self.signature);
        }
        let payload = T::from_bytes(&self.payload)?;
        Ok(Verified {
            payload,
            envelope: self.clone(),
        })
    }

    /// The payload as its signer claims it, **unverified**: for sorting and
    /// routing what is verified elsewhere (e.g. the position of a chain's
    /// block before an audit checks it), never for trusting it.
    pub fn peek<T: Payload>(&self) -> Result<T, OpenError> {
        self.check_type::<T>()?;
        Ok(T::from_bytes(&self.payload)?)
    }

    fn check_type<T: Payload>(&self) -> Result<(), OpenError> {
        if self.payload_type != T::TYPE.code() {
            return Err(OpenError::WrongType {
                expected: T::TYPE,
                found: self.payload_type,
            });
        }
        Ok(())
    }

    fn check_time<T: Payload>(&self, now: Timestamp) -> Result<(), OpenError> {
        let lifetime = self.expires_at.since(self.issued_at);
        if self.expires_at <= self.issued_at || lifetime > T::MAX_LIFETIME {
            return Err(OpenError::BadLifetime {
                kind: T::TYPE,
                lifetime,
                max: T::MAX_LIFETIME,
            });
        }
        if now >= self.expires_at {
            return Err(OpenError::Expired {
                ago: now.since(self.expires_at),
            });
        }
        if self.issued_at > now.add(MAX_CLOCK_SKEW) {
            return Err(OpenError::FutureDated {
                ahead: self.issued_at.since(now),
            });
        }
        Ok(())
    }

    /// The id of this envelope: blake3 of its encoding.
    pub fn id(&self) -> MessageId {
        MessageId::of(&self.to_bytes())
    }

    /// The signer the envelope *claims*. Not verified: use [`Envelope::open`]
    /// before trusting it.
    pub fn claimed_signer(&self) -> NodeId {
        self.signer
    }

    /// The payload type code.
    pub fn payload_type(&self) -> u16 {
        self.payload_type
    }

    /// The expiry.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// The issue time.
    pub fn issued_at(&self) -> Timestamp {
        self.issued_at
    }

    /// The encoded size.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len() + self.batch.as_ref().map_or(0, |p| p.encoded_len())
    }

    /// Whether it was signed in a batch (SPEC.md §5.2).
    pub fn is_batch_signed(&self) -> bool {
        self.batch.is_some()
    }

    #[cfg(test)]
    pub(crate) fn raw_parts_mut(&mut self) -> (&mut u16, &mut Vec<u8>, &mut Timestamp, &mut Timestamp) {
        (
            &mut self.payload_type,
            &mut self.payload,
            &mut self.issued_at,
            &mut self.expires_at,
        )
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = PayloadType::from_code(self.payload_type)
            .map(|t| t.to_string())
            .unwrap_or_else(|| format!("{:#06x}", self.payload_type));
        f.debug_struct("Envelope")
            .field("type", &kind)
            .field("signer", &self.signer)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Encode for Envelope {
    fn encode(&self, w: &mut Writer) {
        w.u8(if self.batch.is_some() {
            BATCH_ENVELOPE_VERSION
        } else {
            ENVELOPE_VERSION
        });
        w.u16(self.payload_type);
        self.signer.encode(w);
        self.issued_at.encode(w);
        self.expires_at.encode(w);
        self.nonce.encode(w);
        w.bytes(&self.payload);
        w.raw(&self.signature);
        if let Some(path) = &self.batch {
            w.u8(path.siblings.len() as u8);
            w.u16(path.left);
            for s in &path.siblings {
                w.raw(s);
            }
        }
    }
}

impl Decode for Envelope {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != ENVELOPE_VERSION && version != BATCH_ENVELOPE_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: BATCH_ENVELOPE_VERSION,
            });
        }
        let mut env = Envelope {
            payload_type: r.u16()?,
            signer: NodeId::decode(r)?,
            issued_at: Timestamp::decode(r)?,
            expires_at: Timestamp::decode(r)?,
            nonce: Nonce::decode(r)?,
            payload: r.bytes(MAX_PAYLOAD, "payload")?.to_vec(),
            signature: r.array()?,
            batch: None,
        };
        if version == BATCH_ENVELOPE_VERSION {
            env.batch = Some(Box::new(decode_path(r)?));
            if env.encoded_len() > MAX_ENVELOPE {
                return Err(DecodeError::TooLong {
                    field: "envelope",
                    len: env.encoded_len() as u64,
                    max: MAX_ENVELOPE as u64,
                });
            }
        }
        Ok(env)
    }
}

/// A batch path, canonical: one to [`MAX_BATCH_DEPTH`] siblings (a batch
/// of one is an ordinary envelope) and no side bit beyond the last.
fn decode_path(r: &mut Reader<'_>) -> Result<BatchPath, DecodeError> {
    let depth = r.u8()? as usize;
    if depth == 0 || depth > MAX_BATCH_DEPTH {
        return Err(DecodeError::InvalidValue {
            field: "batch path",
            reason: format!("{depth} levels, not 1 to {MAX_BATCH_DEPTH}"),
        });
    }
    let left = r.u16()?;
    if left >> depth != 0 {
        return Err(DecodeError::InvalidValue {
            field: "batch path",
            reason: format!("side bits {left:#06x} beyond its {depth} levels"),
        });
    }
    let siblings = (0..depth).map(|_| r.array()).collect::<Result<_, _>>()?;
    Ok(BatchPath { left, siblings })
}

/// A payload whose envelope has been verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<T> {
    payload: T,
    envelope: Envelope,
}

impl<T> Verified<T> {
    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }
    /// The payload, consuming the wrapper.
    pub fn into_payload(self) -> T {
        self.payload
    }
    /// Who signed it.
    pub fn signer(&self) -> NodeId {
        self.envelope.signer
    }
    /// When it was issued.
    pub fn issued_at(&self) -> Timestamp {
        self.envelope.issued_at
    }
    /// When it expires.
    pub fn expires_at(&self) -> Timestamp {
        self.envelope.expires_at
    }
    /// Its nonce.
    pub fn nonce(&self) -> Nonce {
        self.envelope.nonce
    }
    /// The envelope it came in, for storing or forwarding.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
    /// The envelope's id.
    pub fn id(&self) -> MessageId {
        self.envelope.id()
    }
}

/// Signatures already checked, so that an envelope opened again (a payment
/// verified when it arrives, again when it is appended, again when its
/// payer's chain is audited) costs a hash instead of a verification.
///
/// Sound because verification is a pure function of the key, the signed
/// bytes and the signature: the entry is blake3 over the signer, the signed
/// bytes (for an envelope signed alone, its domain, type, signer and
/// payload; for a batch, the root) and the signature, so only those exact
/// bytes under that key ever match it. Bounded: two
/// generations of [`verified::GENERATION`] entries; the older is dropped
/// when the newer fills.
mod verified {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};

    use crate::id::NodeId;

    pub(super) const GENERATION: usize = 8192;

    #[derive(Default)]
    struct Seen {
        new: HashSet<[u8; 32]>,
        old: HashSet<[u8; 32]>,
    }

    fn seen_set() -> &'static Mutex<Seen> {
        static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
        SEEN.get_or_init(|| Mutex::new(Seen::default()))
    }

    fn key(signer: &NodeId, input: &[u8], signature: &[u8; 64]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(signer.as_bytes());
        h.update(signature);
        h.update(input);
        *h.finalize().as_bytes()
    }

    /// Whether these bytes were verified (or signed) here before.
    pub(super) fn seen(signer: &NodeId, input: &[u8], signature: &[u8; 64]) -> bool {
        let k = key(signer, input, signature);
        seen_set()
            .lock()
            .is_ok_and(|s| s.new.contains(&k) || s.old.contains(&k))
    }

    /// Records that these bytes carry a valid signature.
    pub(super) fn remember(signer: &NodeId, input: &[u8], signature: &[u8; 64]) {
        let k = key(signer, input, signature);
        if let Ok(mut s) = seen_set().lock() {
            if s.new.len() >= GENERATION {
                s.old = std::mem::take(&mut s.new);
            }
            s.new.insert(k);
        }
    }
}

/// Strict ed25519 verification (`verify_strict`'s rules) without its
/// second decompression.
///
/// `verify_strict` rejects a weak key, an `R` that is not a point, an `R`
/// of small order and a non-canonical `s`, then recomputes `R` from the
/// signature and compares encodings. It decompresses `R` only to test its
/// order, which costs about a sixth of a check. The same verdict needs no
/// decompression: the recomputed `R` is always a canonical encoding of a
/// point, so a signature passes the comparison only if its `R` is one, and a
/// canonical encoding is of a small-order point only if it is one of the
/// eight in [`strict::SMALL_ORDER`]. Keys come from [`NodeId`], which
/// rejects weak ones when it is built.
mod strict {
    use ed25519_dalek::{Signature, SignatureError, Verifier};

    use crate::id::NodeId;

    /// The canonical encodings of the eight points of small order (the
    /// 8-torsion subgroup of edwards25519).
    pub(super) const SMALL_ORDER: [[u8; 32]; 8] = [
        // The identity (order 1).
        hex32(b"0100000000000000000000000000000000000000000000000000000000000000"),
        // (0, -1), order 2.
        hex32(b"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        // (±sqrt(-1), 0), order 4.
        hex32(b"0000000000000000000000000000000000000000000000000000000000000000"),
        hex32(b"0000000000000000000000000000000000000000000000000000000000000080"),
        // Order 8.
        hex32(b"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        hex32(b"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
        hex32(b"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        hex32(b"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
    ];

    const fn hex32(text: &[u8; 64]) -> [u8; 32] {
        const fn digit(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => panic!("not a lowercase hex digit"),
            }
        }
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            out[i] = digit(text[2 * i]) << 4 | digit(text[2 * i + 1]);
            i += 1;
        }
        out
    }

    /// Whether `signature` over `input` verifies under `signer` by the
    /// rules of `verify_strict`.
    pub(super) fn verify(signer: &NodeId, input: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
        let r: &[u8] = &signature[..32];
        if SMALL_ORDER.iter().any(|p| p.as_slice() == r) {
            return Err(SignatureError::new());
        }
        // `verify` checks that `s` is canonical and compares the recomputed
        // `R`'s encoding with the signature's.
        signer
            .verifying_key()
            .verify(input, &Signature::from_bytes(signature))
    }
}

/// Remembers the nonces of live envelopes so that no envelope is
/// accepted twice (SPEC.md §5.5), with a share for each signer so that one
/// peer's traffic cannot crowd out anyone else's.
///
/// The rule, applied after the signature and time window have been checked:
///
/// 1. Entries whose envelope has expired are forgotten: the time window
///    alone rejects those envelopes now.
/// 2. An envelope issued before the guard's `not_before` (the moment its node
///    started) is rejected as [`OpenError::Stale`]: the guard cannot know what
///    was seen before. One issued more than [`GUARD_FUTURE`] ahead of the
///    verifier's clock is rejected as [`OpenError::FutureDated`]: a replay
///    guard must not be made to hold a nonce for longer than the messages it
///    protects live.
/// 3. An envelope that expires at or before its *signer's* floor is rejected
///    as [`OpenError::Stale`]. A signer's floor rises only when an entry of
///    that signer is evicted (4, 5).
/// 4. A `(signer, nonce)` pair already held is [`OpenError::Replayed`].
/// 5. A signer holding `per_signer` entries has its own entry that expires
///    first evicted, and its floor raised to that expiry. When the guard as
///    a whole holds `capacity` entries, the entry that expires first of the
///    signer holding the most is evicted the same way. Either way, the
///    evicted nonce can never be accepted again, and only the signer that
///    sent the most pays for it.
///
/// Memory is therefore bounded by `capacity` entries (and as many floors),
/// no envelope is accepted twice, and a flood from one key (or from a few)
/// leaves every other signer's messages untouched.
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    per_signer: usize,
    not_before: Timestamp,
    signers: HashMap<NodeId, Signer>,
    /// Signers by how many entries they hold, for eviction.
    by_load: BTreeSet<(usize, NodeId)>,
    by_expiry: BTreeSet<(Timestamp, NodeId, Nonce)>,
    len: usize,
}

/// How far ahead of the verifier's clock a replay-guarded envelope may be
/// issued (tighter than [`crate::limits::MAX_CLOCK_SKEW`], which applies to
/// every envelope).
pub const GUARD_FUTURE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Signer {
    floor: Timestamp,
    entries: BTreeSet<(Timestamp, Nonce)>,
    nonces: HashSet<Nonce>,
}

impl ReplayGuard {
    /// A guard holding at most `capacity` nonces (at most a sixteenth of
    /// them, and at least one, per signer) that rejects envelopes issued
    /// before `not_before`.
    pub fn new(capacity: usize, not_before: Timestamp) -> ReplayGuard {
        let capacity = capacity.max(1);
        ReplayGuard::with_share(capacity, (capacity / 16).max(1), not_before)
    }

    /// A guard with an explicit share per signer.
    pub fn with_share(capacity: usize, per_signer: usize, not_before: Timestamp) -> ReplayGuard {
        ReplayGuard {
            capacity: capacity.max(1),
            per_signer: per_signer.clamp(1, capacity.max(1)),
            not_before,
            signers: HashMap::new(),
            by_load: BTreeSet::new(),
            by_expiry: BTreeSet::new(),
            len: 0,
        }
    }

    /// Records the envelope, or rejects it if it could be a replay.
    pub fn check<T>(&mut self, v: &Verified<T>, now: Timestamp) -> Result<(), OpenError> {
        self.check_parts(v.signer(), v.nonce(), v.issued_at(), v.expires_at(), now)
    }

    fn check_parts(
        &mut self,
        signer: NodeId,
        nonce: Nonce,
        issued_at: Timestamp,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), OpenError> {
        self.forget_expired(now);
        if issued_at < self.not_before {
            return Err(OpenError::Stale);
        }
        if issued_at > now.add(GUARD_FUTURE) {
            return Err(OpenError::FutureDated {
                ahead: issued_at.since(now),
            });
        }
        if let Some(s) = self.signers.get(&signer) {
            if expires_at <= s.floor {
                return Err(OpenError::Stale);
            }
            if s.nonces.contains(&nonce) {
                return Err(OpenError::Replayed);
            }
        }
        if self.load(&signer) >= self.per_signer {
            self.evict_first_of(signer);
        } else if self.len >= self.capacity
            && let Some(&(_, heaviest)) = self.by_load.last()
        {
            self.evict_first_of(heaviest);
        }
        let s = self.signers.entry(signer).or_default();
        if expires_at <= s.floor {
            return Err(OpenError::Stale);
        }
        let before = s.entries.len();
        s.entries.insert((expires_at, nonce));
        s.nonces.insert(nonce);
        self.by_load.remove(&(before, signer));
        self.by_load.insert((before + 1, signer));
        self.by_expiry.insert((expires_at, signer, nonce));
        self.len += 1;
        Ok(())
    }

    fn load(&self, signer: &NodeId) -> usize {
        self.signers.get(signer).map_or(0, |s| s.entries.len())
    }

    /// Evicts the entry of `signer` that expires first and raises its floor.
    fn evict_first_of(&mut self, signer: NodeId) {
        let Some(s) = self.signers.get_mut(&signer) else {
            return;
        };
        let before = s.entries.len();
        let Some((expiry, nonce)) = s.entries.pop_first() else {
            return;
        };
        s.nonces.remove(&nonce);
        s.floor = s.floor.max(expiry);
        self.by_expiry.remove(&(expiry, signer, nonce));
        self.by_load.remove(&(before, signer));
        self.by_load.insert((before - 1, signer));
        self.len -= 1;
    }

    fn forget_expired(&mut self, now: Timestamp) {
        while let Some(&(expiry, signer, nonce)) = self.by_expiry.first() {
            if expiry > now {
                break;
            }
            self.by_expiry.pop_first();
            if let Some(s) = self.signers.get_mut(&signer) {
                let before = s.entries.len();
                if s.entries.remove(&(expiry, nonce)) {
                    s.nonces.remove(&nonce);
                    self.len -= 1;
                    self.by_load.remove(&(before, signer));
                    self.by_load.insert((before - 1, signer));
                }
            }
        }
        // A floor at or below now rejects nothing the time window would
        // not: signers with no entries left and such a floor are dropped.
        if self.signers.len() > self.capacity {
            self.signers.retain(|_, s| !s.entries.is_empty() || s.floor > now);
            let signers = &self.signers;
            self.by_load.retain(|(_, n)| signers.contains_key(n));
        }
    }

    /// Nonces currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::Advert;
    use crate::capacity::tests::sample_advert;
    use crate::market::Offer;

    fn kp(n: u8) -> Keypair {
        Keypair::from_secret([n; 32])
    }

    /// A signature with a small-order `R` that the cofactorless equation
    /// `[s]B = R + [k]A` accepts: with `R` the identity, `s = k·a`.
    fn small_order_r_signature(signer: &Keypair, input: &[u8]) -> [u8; 64] {
        use curve25519_dalek::Scalar;
        use sha2::{Digest, Sha512};
        let secret = ed25519_dalek::SigningKey::from_bytes(&signer.secret_bytes());
        let r = strict::SMALL_ORDER[0];
        let mut h = Sha512::new();
        h.update(r);
        h.update(signer.node_id().as_bytes());
        h.update(input);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let s = k * secret.to_scalar();
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice(s.as_bytes());
        signature
    }

    fn batch(n: usize) -> Vec<Envelope> {
        let ad = sample_advert();
        let items: Vec<_> = (0..n)
            .map(|i| {
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
                (&ad, T0, Duration::from_secs(10), Nonce(nonce))
            })
            .collect();
        Envelope::seal_batch(&kp(3), &items).expect("seal")
    }

    #[test]
    fn each_envelope_of_a_batch_opens_alone_under_the_one_signature() {
        for n in [2, 3, 5, 8, 13, 32, 100, MAX_BATCH_LEAVES] {
            let envs = batch(n);
            assert_eq!(envs.len(), n);
            let ids: HashSet<MessageId> = envs.iter().map(Envelope::id).collect();
            assert_eq!(ids.len(), n, "distinct ids");
            for (i, e) in envs.iter().enumerate() {
                assert!(e.is_batch_signed());
                assert_eq!(e.signature, envs[0].signature, "one signature");
                let bytes = e.to_bytes();
                assert_eq!(bytes[0], BATCH_ENVELOPE_VERSION);
                assert_eq!(bytes.len(), e.encoded_len());
                let back = Envelope::from_bytes(&bytes).expect("decodes");
                assert_eq!(&back, e);
                assert_eq!(back.id(), e.id());
                let v = back
                    .open::<Advert>(T0)
                    .unwrap_or_else(|err| panic!("{n}/{i}: {err}"));
                assert_eq!(v.signer(), kp(3).node_id());
                assert_eq!(v.nonce().0[..8], (i as u64).to_le_bytes());
            }
        }
    }

    #[test]
    fn a_batch_built_by_hand_from_the_spec_is_the_one_sealed() {
        // SPEC.md §5.2, three envelopes: root = node(node(a, b), c).
        let envs = batch(3);
        let derive = |context: &str, parts: &[&[u8]]| {
            let mut h = blake3::Hasher::new_derive_key(context);
            for p in parts {
                h.update(p);
            }
            *h.finalize().as_bytes()
        };
        let leaf = |e: &Envelope| derive("agora/1/envelope/leaf", &[&e.signing_input(Advert::DOMAIN)]);
        let node = |l: &[u8; 32], r: &[u8; 32]| derive("agora/1/envelope/node", &[l, r]);
        let (a, b, c) = (leaf(&envs[0]), leaf(&envs[1]), leaf(&envs[2]));
        let ab = node(&a, &b);
        let root = node(&ab, &c);
        let mut batch_input = 22u32.to_le_bytes().to_vec();
        batch_input.extend_from_slice(b"agora/1/envelope/batch");
        batch_input.extend_from_slice(&root);
        let signature = kp(3).sign(&batch_input);
        // Each envelope: its fields, the one signature, then its path.
        let paths: [(u16, Vec<[u8; 32]>); 3] = [(0b00, vec![b, c]), (0b01, vec![a, c]), (0b1, vec![ab])];
        for (e, (left, siblings)) in envs.iter().zip(paths) {
            let mut w = Writer::new();
            w.u8(2);
            w.u16(PayloadType::Advert.code());
            w.raw(kp(3).node_id().as_bytes());
            w.u64(e.issued_at.0);
            w.u64(e.expires_at.0);
            w.raw(&e.nonce.0);
            w.bytes(&e.payload);
            w.raw(&signature);
            w.u8(siblings.len() as u8);
            w.u16(left);
            for s in &siblings {
                w.raw(s);
            }
            assert_eq!(w.into_bytes(), e.to_bytes());
        }
    }

    #[test]
    fn a_batch_of_one_is_an_ordinary_envelope_and_a_batch_too_large_is_refused() {
        assert!(batch(0).is_empty());
        let one = batch(1);
        assert!(!one[0].is_batch_signed());
        assert_eq!(one[0].to_bytes()[0], ENVELOPE_VERSION);
        assert!(one[0].open::<Advert>(T0).is_ok());
        let ad = sample_advert();
        let items = vec![(&ad, T0, Duration::from_secs(10), Nonce([0; 16])); MAX_BATCH_LEAVES + 1];
        assert_eq!(
            Envelope::seal_batch(&kp(3), &items),
            Err(SealError::BatchTooLarge {
                size: MAX_BATCH_LEAVES + 1
            })
        );
    }

    #[test]
    fn a_batch_envelope_with_any_part_changed_does_not_open() {
        let envs = batch(13);
        let e = &envs[6];
        let path = e.batch.as_ref().expect("a path");
        assert!(path.siblings.len() >= 3);
        for k in 0..path.siblings.len() {
            let mut t = e.clone();
            t.batch.as_mut().unwrap().siblings[k][0] ^= 1;
            assert_eq!(t.open::<Advert>(T0), Err(OpenError::BadSignature), "sibling {k}");
            let mut t = e.clone();
            t.batch.as_mut().unwrap().left ^= 1 << k;
            assert_eq!(t.open::<Advert>(T0), Err(OpenError::BadSignature), "side {k}");
        }
        // Another signer's, with the same signature and path.
        let mut t = e.clone();
        t.signer = kp(4).node_id();
        assert_eq!(t.open::<Advert>(T0), Err(OpenError::BadSignature));
        // Another envelope's path.
        let mut t = e.clone();
        t.batch = envs[7].batch.clone();
        assert_eq!(t.open::<Advert>(T0), Err(OpenError::BadSignature));
        // The signed fields, as for an envelope signed alone.
        let mut t = e.clone();
        *t.raw_parts_mut().3 = T0.add(Duration::from_secs(20));
        assert_eq!(t.open::<Advert>(T0), Err(OpenError::BadSignature));
        let mut t = e.clone();
        *t.raw_parts_mut().0 = PayloadType::Offer.code();
        assert!(t.open::<Offer>(T0).is_err());
        // Cut short or stripped of its path, it is another envelope, whose
        // signature covers nothing it holds.
        let mut t = e.clone();
        t.batch.as_mut().unwrap().siblings.pop();
        assert_eq!(t.open::<Advert>(T0), Err(OpenError::BadSignature));
        let mut t = e.clone();
        t.batch = None;
        assert_eq!(t.open::<Advert>(T0), Err(OpenError::BadSignature));
    }

    #[test]
    fn a_batch_path_decodes_only_in_its_one_canonical_form() {
        let e = batch(5).swap_remove(2);
        let bytes = e.to_bytes();
        let path_at = bytes.len() - e.batch.as_ref().unwrap().encoded_len();
        let depth = bytes[path_at] as usize;
        assert_eq!(depth, 3);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = bytes.clone();
            f(&mut b);
            Envelope::from_bytes(&b)
        };
        // No levels, or more than a batch may have.
        assert!(matches!(
            with(&|b| {
                b.truncate(path_at);
                b.extend([0, 0, 0]);
            }),
            Err(DecodeError::InvalidValue { .. })
        ));
        assert!(matches!(
            with(&|b| b[path_at] = MAX_BATCH_DEPTH as u8 + 1),
            Err(DecodeError::InvalidValue { .. })
        ));
        // A side bit beyond the last level.
        assert!(matches!(
            with(&|b| b[path_at + 1] |= 1 << depth),
            Err(DecodeError::InvalidValue { .. })
        ));
        // Truncated, or with a byte more.
        assert!(
            with(&|b| {
                b.pop();
            })
            .is_err()
        );
        assert!(with(&|b| b.push(0)).is_err());
        // A version-1 envelope followed by a path is not one.
        assert!(with(&|b| b[0] = ENVELOPE_VERSION).is_err());
        assert!(with(&|b| b[0] = 3).is_err());
    }

    #[test]
    fn a_batch_envelope_is_no_larger_than_any_envelope_may_be() {
        let big = vec![0u8; MAX_PAYLOAD];
        let mut b = Envelope::from_bytes(&batch(200)[0].to_bytes()).unwrap();
        b.payload = big;
        assert!(b.encoded_len() > MAX_ENVELOPE);
        assert!(matches!(
            Envelope::from_bytes(&b.to_bytes()),
            Err(DecodeError::TooLong {
                field: "envelope",
                ..
            })
        ));
    }

    #[test]
    fn the_small_order_table_is_the_eight_canonical_small_order_encodings() {
        let mut distinct = HashSet::new();
        for bytes in strict::SMALL_ORDER {
            let point = ed25519_dalek::VerifyingKey::from_bytes(&bytes).expect("a point");
            assert!(point.is_weak(), "{} is of small order", crate::id::to_hex(bytes));
            assert_eq!(point.to_edwards().compress().to_bytes(), bytes, "canonical");
            distinct.insert(bytes);
        }
        // The curve has exactly eight points of small order.
        assert_eq!(distinct.len(), 8);
    }

    #[test]
    fn a_small_order_r_is_rejected_though_the_plain_equation_accepts_it() {
        use ed25519_dalek::Verifier;
        let signer = kp(7);
        let input = b"domain and payload";
        let forged = small_order_r_signature(&signer, input);
        let key = signer.node_id().verifying_key();
        let sig = ed25519_dalek::Signature::from_bytes(&forged);
        assert!(key.verify(input, &sig).is_ok(), "the plain equation holds");
        assert!(key.verify_strict(input, &sig).is_err());
        assert!(strict::verify(&signer.node_id(), input, &forged).is_err());
    }

    #[test]
    fn strict_verification_agrees_with_verify_strict_on_tampered_signatures() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let signers: Vec<Keypair> = (1..=4).map(kp).collect();
        let mut accepted = 0;
        for case in 0..600 {
            let signer = &signers[case % signers.len()];
            let input: Vec<u8> = (0..rng.random_range(0..200)).map(|_| rng.random()).collect();
            let mut signature = match case % 3 {
                0 => signer.sign(&input),
                1 => small_order_r_signature(signer, &input),
                _ => {
                    let mut s = [0u8; 64];
                    rng.fill(&mut s[..]);
                    s
                }
            };
            if case % 2 == 1 {
                let bit = rng.random_range(0..512);
                signature[bit / 8] ^= 1 << (bit % 8);
            }
            let strict_verdict = signer
                .node_id()
                .verifying_key()
                .verify_strict(&input, &ed25519_dalek::Signature::from_bytes(&signature))
                .is_ok();
            let ours = strict::verify(&signer.node_id(), &input, &signature).is_ok();
            assert_eq!(ours, strict_verdict, "case {case}");
            accepted += usize::from(ours);
        }
        // The untampered honest signatures (every sixth case) pass.
        assert_eq!(accepted, 100);
    }

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn sealed(nonce: u8, lifetime: Duration) -> Envelope {
        Envelope::seal(&kp(1), &sample_advert(), T0, lifetime, Nonce([nonce; 16])).unwrap()
    }

    #[test]
    fn opens_within_window_only() {
        let e = sealed(1, Duration::from_secs(10));
        assert!(e.open::<Advert>(T0).is_ok());
        assert!(e.open::<Advert>(T0.add(Duration::from_millis(9_999))).is_ok());
        assert!(matches!(
            e.open::<Advert>(T0.add(Duration::from_secs(10))),
            Err(OpenError::Expired { .. })
        ));
        // Issued 31 s ahead of the verifier's clock: beyond the skew allowance.
        let early = Timestamp(T0.0 - 31_000);
        assert!(matches!(
            e.open::<Advert>(early),
            Err(OpenError::FutureDated { .. })
        ));
        assert!(e.open::<Advert>(Timestamp(T0.0 - 29_000)).is_ok());
    }

    #[test]
    fn wrong_type_is_rejected_even_with_matching_bytes() {
        let e = sealed(1, Duration::from_secs(10));
        assert!(matches!(e.open::<Offer>(T0), Err(OpenError::WrongType { .. })));
        // Relabel the type: the signature no longer verifies, because the
        // type code and domain string are signed.
        let mut forged = e.clone();
        *forged.raw_parts_mut().0 = PayloadType::Offer.code();
        assert!(forged.open::<Offer>(T0).is_err());
    }

    #[test]
    fn wrong_type_is_reported_before_the_time_window() {
        // Expired, and with a lifetime too long for an Offer (30 s max): the
        // envelope is still rejected as what it is, an advert.
        let e = sealed(1, Duration::from_secs(60));
        let late = T0.add(Duration::from_secs(3600));
        assert!(matches!(
            e.open::<Offer>(late),
            Err(OpenError::WrongType {
                expected: PayloadType::Offer,
                found: 0x0001
            })
        ));
        assert!(matches!(e.open::<Advert>(late), Err(OpenError::Expired { .. })));
    }

    #[test]
    fn tampered_fields_are_rejected() {
        let e = sealed(1, Duration::from_secs(10));
        let mut t = e.clone();
        *t.raw_parts_mut().3 = T0.add(Duration::from_secs(20));
        assert_eq!(t.open::<Advert>(T0), Err(OpenError::BadSignature));
        let mut t = e.clone();
        t.raw_parts_mut().1[0] ^= 1;
        assert!(t.open::<Advert>(T0).is_err());
    }

    #[test]
    fn lifetime_is_bounded_by_type() {
        let err = Envelope::seal(
            &kp(1),
            &sample_advert(),
            T0,
            Duration::from_secs(3600),
            Nonce([0; 16]),
        );
        assert!(matches!(err, Err(SealError::LifetimeTooLong { .. })));
    }

    #[test]
    fn replay_guard_rejects_seen_nonces_and_stays_bounded() {
        let mut g = ReplayGuard::with_share(3, 3, T0);
        let v = |n: u8, life: u64| sealed(n, Duration::from_secs(life)).open::<Advert>(T0).unwrap();
        assert_eq!(g.check(&v(1, 10), T0), Ok(()));
        assert_eq!(g.check(&v(1, 10), T0), Err(OpenError::Replayed));
        g.check(&v(2, 12), T0).unwrap();
        g.check(&v(3, 14), T0).unwrap();
        // Full: admitting nonce 4 evicts nonce 1 (earliest expiry) and raises
        // the floor to its expiry, so nonce 1 cannot come back.
        g.check(&v(4, 16), T0).unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g.check(&v(1, 10), T0), Err(OpenError::Stale));
        // Expired entries are forgotten.
        let later = T0.add(Duration::from_secs(15));
        g.check(&v(5, 20), later).unwrap();
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn one_signer_flooding_the_guard_evicts_only_its_own_nonces() {
        let mut g = ReplayGuard::with_share(8, 4, T0);
        let by = |signer: u8, nonce: u8, life_ms: u64| {
            Envelope::seal(
                &kp(signer),
                &sample_advert(),
                T0,
                Duration::from_millis(life_ms),
                Nonce([nonce; 16]),
            )
            .unwrap()
            .open::<Advert>(T0)
            .unwrap()
        };
        // An honest signer's message, then a flood from another key.
        g.check(&by(2, 1, 20_000), T0).unwrap();
        for n in 0..100u8 {
            let life = 25_000 + u64::from(n);
            g.check(&by(1, n, life), T0)
                .unwrap_or_else(|e| panic!("flood message {n}: {e}"));
        }
        assert!(g.len() <= 8);
        // The flooder's early nonces are gone for good (stale), the honest
        // signer's nonce is still held, and the honest signer is untouched.
        assert_eq!(g.check(&by(1, 0, 25_000), T0), Err(OpenError::Stale));
        assert_eq!(g.check(&by(2, 1, 20_000), T0), Err(OpenError::Replayed));
        assert_eq!(g.check(&by(2, 2, 20_001), T0), Ok(()));
        // Many signers: the one holding the most pays when the guard is full.
        for s in 3..6u8 {
            g.check(&by(s, 1, 20_000), T0).unwrap();
        }
        assert!(g.len() <= 8);
        assert_eq!(
            g.check(&by(2, 1, 20_000), T0),
            Err(OpenError::Replayed),
            "signer 2 kept its nonce"
        );
        // Whoever is evicted later, an accepted nonce never comes back.
        for s in 6..20u8 {
            g.check(&by(s, 1, 20_000), T0).unwrap();
        }
        assert!(g.check(&by(2, 1, 20_000), T0).is_err());
    }

    #[test]
    fn the_guard_refuses_envelopes_dated_far_ahead() {
        let mut g = ReplayGuard::new(16, T0);
        let ahead = Envelope::seal(
            &kp(1),
            &sample_advert(),
            T0.add(Duration::from_secs(20)),
            Duration::from_secs(20),
            Nonce([1; 16]),
        )
        .unwrap()
        .open::<Advert>(T0)
        .unwrap();
        assert!(matches!(g.check(&ahead, T0), Err(OpenError::FutureDated { .. })));
        assert!(g.is_empty(), "nothing held for a refused envelope");
    }

    #[test]
    fn replay_guard_rejects_envelopes_from_before_start() {
        let mut g = ReplayGuard::new(8, T0.add(Duration::from_secs(1)));
        let v = sealed(1, Duration::from_secs(10)).open::<Advert>(T0).unwrap();
        assert_eq!(g.check(&v, T0.add(Duration::from_secs(2))), Err(OpenError::Stale));
    }

    #[test]
    fn the_largest_envelope_fits_the_envelope_and_gossip_limits() {
        let mut w = Writer::new();
        w.u8(ENVELOPE_VERSION);
        w.u16(PayloadType::Advert.code());
        kp(1).node_id().encode(&mut w);
        w.u64(T0.0);
        w.u64(T0.0 + 1);
        w.raw(&[0; 16]);
        w.bytes(&vec![0; MAX_PAYLOAD]);
        w.raw(&[0; 64]);
        let bytes = w.into_bytes();
        let e = Envelope::from_bytes(&bytes).unwrap();
        assert_eq!(e.encoded_len(), bytes.len());
        assert_eq!(bytes.len(), MAX_PAYLOAD + 135);
        assert!(bytes.len() <= crate::limits::MAX_ENVELOPE);
        assert!(bytes.len() <= crate::limits::MAX_GOSSIP_MESSAGE);
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes = sealed(1, Duration::from_secs(10)).to_bytes();
        bytes[0] = 3;
        assert!(matches!(
            Envelope::from_bytes(&bytes),
            Err(DecodeError::UnsupportedVersion { found: 3, .. })
        ));
        // Version 2 is a batch envelope, which a path must follow.
        bytes[0] = BATCH_ENVELOPE_VERSION;
        assert!(matches!(
            Envelope::from_bytes(&bytes),
            Err(DecodeError::Truncated { .. })
        ));
    }
}

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
use crate::limits::{MAX_CLOCK_SKEW, MAX_PAYLOAD};
use crate::units::Timestamp;
use crate::wire::{Decode, DecodeError, Encode, Reader, Writer};

/// The envelope format version this implementation speaks.
pub const ENVELOPE_VERSION: u8 = 1;

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
}

/// Why an envelope could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
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
        if lifetime > T::MAX_LIFETIME {
            return Err(SealError::LifetimeTooLong {
                kind: T::TYPE,
                requested: lifetime,
                max: T::MAX_LIFETIME,
            });
        }
        let payload = payload.to_bytes();
        if payload.len() > MAX_PAYLOAD {
            return Err(SealError::PayloadTooLarge { size: payload.len() });
        }
        let mut env = Envelope {
            payload_type: T::TYPE.code(),
            signer: keypair.node_id(),
            issued_at,
            expires_at: issued_at.add(lifetime),
            nonce,
            payload,
            signature: [0; 64],
        };
        let input = env.signing_input(T::DOMAIN);
        env.signature = keypair.sign(&input);
        verified::remember(&input, &env.signature);
        Ok(env)
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
        let input = self.signing_input(T::DOMAIN);
        if !verified::seen(&input, &self.signature) {
            let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
            self.signer
                .verifying_key()
                .verify_strict(&input, &signature)
                .map_err(|_| OpenError::BadSignature)?;
            verified::remember(&input, &self.signature);
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
        1 + 2 + 32 + 8 + 8 + 16 + 4 + self.payload.len() + 64
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
        w.u8(ENVELOPE_VERSION);
        w.u16(self.payload_type);
        self.signer.encode(w);
        self.issued_at.encode(w);
        self.expires_at.encode(w);
        self.nonce.encode(w);
        w.bytes(&self.payload);
        w.raw(&self.signature);
    }
}

impl Decode for Envelope {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: ENVELOPE_VERSION,
            });
        }
        Ok(Envelope {
            payload_type: r.u16()?,
            signer: NodeId::decode(r)?,
            issued_at: Timestamp::decode(r)?,
            expires_at: Timestamp::decode(r)?,
            nonce: Nonce::decode(r)?,
            payload: r.bytes(MAX_PAYLOAD, "payload")?.to_vec(),
            signature: r.array()?,
        })
    }
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
/// bytes and the signature: the entry is blake3 over the signed bytes (which
/// hold the domain, the type, the signer and the payload) and the
/// signature, so only those exact bytes ever match it. Bounded: two
/// generations of [`verified::GENERATION`] entries; the older is dropped
/// when the newer fills.
mod verified {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};

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

    fn key(input: &[u8], signature: &[u8; 64]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(signature);
        h.update(input);
        *h.finalize().as_bytes()
    }

    /// Whether these bytes were verified (or signed) here before.
    pub(super) fn seen(input: &[u8], signature: &[u8; 64]) -> bool {
        let k = key(input, signature);
        seen_set()
            .lock()
            .is_ok_and(|s| s.new.contains(&k) || s.old.contains(&k))
    }

    /// Records that these bytes carry a valid signature.
    pub(super) fn remember(input: &[u8], signature: &[u8; 64]) {
        let k = key(input, signature);
        if let Ok(mut s) = seen_set().lock() {
            if s.new.len() >= GENERATION {
                s.old = std::mem::take(&mut s.new);
            }
            s.new.insert(k);
        }
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
        bytes[0] = 2;
        assert!(matches!(
            Envelope::from_bytes(&bytes),
            Err(DecodeError::UnsupportedVersion { found: 2, .. })
        ));
    }
}

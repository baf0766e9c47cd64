//! Identifiers: nodes, content, messages, jobs and tasks.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire::{Decode, DecodeError, Encode, Reader, Writer};

/// A node's identity: its ed25519 public key.
///
/// The same key is the node's libp2p identity, so the signer of a market
/// message and the peer on the other end of a Noise-authenticated connection
/// are provably the same. It prints and parses in libp2p's `PeerId` text form
/// (`12D3KooW…`). On the wire it is the 32 raw public-key bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; 32]);

/// Why a string or key is not a valid node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// The text is not a libp2p peer id.
    #[error("`{0}` is not a peer id (expected the 12D3KooW… form)")]
    NotAPeerId(String),
    /// The peer id is not an inline ed25519 key.
    #[error("peer id `{0}` is not an ed25519 identity; Agora nodes use ed25519 keys")]
    NotEd25519(String),
    /// The 32 bytes are not a valid, strong ed25519 public key.
    #[error("not a valid ed25519 public key (weak or off-curve)")]
    InvalidKey,
}

impl NodeId {
    /// A node id from raw public-key bytes, rejecting keys that do not
    /// decompress to a point or that are of small order (weak keys).
    pub fn from_public_key_bytes(bytes: [u8; 32]) -> Result<NodeId, NodeIdError> {
        keys::checked(&bytes)
            .map(|_| NodeId(bytes))
            .ok_or(NodeIdError::InvalidKey)
    }

    /// The raw public-key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The ed25519 verifying key. Always valid: construction checked it.
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        keys::checked(&self.0).expect("NodeId holds a checked key")
    }

    /// The bytes of this node's libp2p peer id: the identity multihash of
    /// the protobuf-encoded public key, built directly from the key's bytes
    /// (SPEC.md §3).
    pub fn peer_id_bytes(&self) -> [u8; PEER_ID_LEN] {
        let mut bytes = [0u8; PEER_ID_LEN];
        bytes[0] = 0x00; // identity multihash
        bytes[1] = (PEER_ID_KEY_PREFIX.len() + 32) as u8;
        bytes[2..2 + PEER_ID_KEY_PREFIX.len()].copy_from_slice(&PEER_ID_KEY_PREFIX);
        bytes[2 + PEER_ID_KEY_PREFIX.len()..].copy_from_slice(&self.0);
        bytes
    }

    /// The node id behind the bytes of a libp2p peer id, if they inline an
    /// ed25519 key in its canonical protobuf encoding (as every libp2p
    /// implementation writes it).
    pub fn from_peer_id_bytes(bytes: &[u8]) -> Result<NodeId, NodeIdError> {
        let text = || bs58::encode(bytes).into_string();
        match bytes {
            // Identity multihash (code 0) of the canonical ed25519 encoding.
            [0x00, len, rest @ ..] if usize::from(*len) == rest.len() => {
                let key = rest
                    .strip_prefix(&PEER_ID_KEY_PREFIX[..])
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .ok_or_else(|| NodeIdError::NotEd25519(text()))?;
                NodeId::from_public_key_bytes(key)
            }
            // A hashed key (sha2-256 multihash, as for RSA keys).
            [0x12, 32, rest @ ..] if rest.len() == 32 => Err(NodeIdError::NotEd25519(text())),
            _ => Err(NodeIdError::NotAPeerId(text())),
        }
    }

    /// A short form for tables and logs: the last 8 characters of the peer id.
    pub fn short(&self) -> String {
        let s = self.to_string();
        s[s.len().saturating_sub(8)..].to_owned()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&names::peer_id(self))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|_| NodeIdError::NotAPeerId(s.to_owned()))?;
        NodeId::from_peer_id_bytes(&bytes).map_err(|e| match e {
            NodeIdError::NotAPeerId(_) => NodeIdError::NotAPeerId(s.to_owned()),
            other => other,
        })
    }
}

impl Encode for NodeId {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.0)
    }
}

impl Decode for NodeId {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        NodeId::from_public_key_bytes(r.array()?).map_err(|e| DecodeError::invalid("node id", e))
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The protobuf header of an ed25519 public key in a libp2p peer id (key
/// type 1 = Ed25519, then 32 bytes of key data).
const PEER_ID_KEY_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];
/// The length of a node's peer id bytes.
pub const PEER_ID_LEN: usize = 2 + PEER_ID_KEY_PREFIX.len() + 32;

/// What is worked out from a node's key bytes, kept for the next time: a
/// node sees the same few keys over and over. Bounded: a full cache starts
/// afresh rather than track recency.
struct KeyCache<V>(OnceLock<Mutex<HashMap<[u8; 32], V>>>);

impl<V: Clone> KeyCache<V> {
    const CAPACITY: usize = 4096;

    const fn new() -> KeyCache<V> {
        KeyCache(OnceLock::new())
    }

    fn map(&self) -> &Mutex<HashMap<[u8; 32], V>> {
        self.0.get_or_init(|| Mutex::new(HashMap::new()))
    }

    fn get(&self, key: &[u8; 32]) -> Option<V> {
        self.map().lock().ok().and_then(|c| c.get(key).cloned())
    }

    fn insert(&self, key: [u8; 32], value: V) {
        if let Ok(mut c) = self.map().lock() {
            if c.len() >= Self::CAPACITY {
                c.clear();
            }
            c.insert(key, value);
        }
    }
}

/// Decompressing a public key costs about as much as a third of a signature
/// check: checked keys are cached.
mod keys {
    use ed25519_dalek::VerifyingKey;

    use super::KeyCache;

    static CACHE: KeyCache<VerifyingKey> = KeyCache::new();

    /// The key, if the bytes decompress to a point that is not of small order.
    pub(super) fn checked(bytes: &[u8; 32]) -> Option<VerifyingKey> {
        if let Some(k) = CACHE.get(bytes) {
            return Some(k);
        }
        let key = VerifyingKey::from_bytes(bytes).ok()?;
        if key.is_weak() {
            return None;
        }
        CACHE.insert(*bytes, key);
        Some(key)
    }
}

/// `bytes` in lowercase hex. (`hex::encode` builds its string a character
/// at a time, a cost that showed in profiles of the records' JSON.)
pub fn to_hex(bytes: impl AsRef<[u8]>) -> String {
    let bytes = bytes.as_ref();
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// `bytes` in lowercase hex, written to `out` (twice as long).
fn hex_into<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    hex::encode_to_slice(bytes, out).expect("the buffer is twice the input");
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

/// The bytes `hex` spells (either case), or `None` if it is not hex of
/// whole bytes. (`hex::decode` collects a character at a time through a
/// `Result` iterator, which grows its vector as it goes: stored blocks and
/// envelopes are decoded from hex on every read, and that showed in
/// profiles at several per cent of a busy node's time; this table is
/// ~6× faster: the envelope bench prints both.)
pub fn from_hex(hex: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    let hex = hex.as_ref();
    if hex.len() % 2 != 0 {
        return None;
    }
    let mut out = vec![0u8; hex.len() / 2];
    hex_to_slice(hex, &mut out).then_some(out)
}

/// Decodes `hex` into `out` (half as long); false if it is not hex.
fn hex_to_slice(hex: &[u8], out: &mut [u8]) -> bool {
    if hex.len() != out.len() * 2 {
        return false;
    }
    // Each byte's digit value; 0xff for a byte that is not a digit.
    const DIGITS: [u8; 256] = {
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    // Checked once at the end: any non-digit sets a high bit.
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (DIGITS[pair[0] as usize], DIGITS[pair[1] as usize]);
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    bad & 0xf0 == 0
}

/// Base58 is quadratic in the length (each digit divides the whole
/// number), so a node's 38-byte peer id is slow to write, and records name
/// the same few nodes over and over: written names are cached.
mod names {
    use std::sync::Arc;

    use super::{KeyCache, NodeId};

    static CACHE: KeyCache<Arc<str>> = KeyCache::new();

    /// The node's peer id in base58.
    pub(super) fn peer_id(id: &NodeId) -> Arc<str> {
        if let Some(s) = CACHE.get(&id.0) {
            return s;
        }
        let s: Arc<str> = bs58::encode(id.peer_id_bytes()).into_string().into();
        CACHE.insert(id.0, s.clone());
        s
    }
}

macro_rules! hex_id {
    ($(#[$m:meta])* $name:ident, $len:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; $len * 2];
                f.write_str(hex_into(&self.0, &mut buf))
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &hex::encode(self.0)[..12])
            }
        }
        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; $len];
                if !hex_to_slice(s.trim().as_bytes(), &mut out) {
                    return Err(IdParseError {
                        kind: stringify!($name),
                        text: s.to_owned(),
                        hex_len: $len * 2,
                    });
                }
                Ok($name(out))
            }
        }
        impl Encode for $name {
            fn encode(&self, w: &mut Writer) { w.raw(&self.0) }
        }
        impl Decode for $name {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> { Ok($name(r.array()?)) }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// The blake3 hash of a module, an input or an output. Content moves and
    /// is cached by this id and verified against it on arrival.
    ContentId, 32
);
hex_id!(
    /// The blake3 hash of an encoded envelope: how one signed message refers
    /// to another (an offer to its call, an agreement to its acceptance, a
    /// receipt to its agreement).
    MessageId, 32
);
hex_id!(
    /// A job, chosen at random by the requester that owns it.
    JobId, 16
);
hex_id!(
    /// A random value that makes a signed envelope unique.
    Nonce, 16
);

/// Why a hex id did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a {kind} ({hex_len} hex digits)")]
pub struct IdParseError {
    kind: &'static str,
    text: String,
    hex_len: usize,
}

impl ContentId {
    /// The content id of `bytes`.
    pub fn of(bytes: &[u8]) -> ContentId {
        ContentId(*blake3::hash(bytes).as_bytes())
    }
    /// Whether `bytes` hash to this id.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        ContentId::of(bytes) == *self
    }
}

impl MessageId {
    /// The id of an encoded envelope.
    pub fn of(encoded: &[u8]) -> MessageId {
        MessageId(*blake3::hash(encoded).as_bytes())
    }
}

/// One task of a job: the job and the task's index in it.
///
/// Prints as `JOBID.INDEX`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId {
    /// The job.
    pub job: JobId,
    /// The task's position in the job, from zero.
    pub index: u32,
}

impl TaskId {
    /// Task `index` of `job`.
    pub fn new(job: JobId, index: u32) -> TaskId {
        TaskId { job, index }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.job, self.index)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({}.{})", &self.job.to_string()[..8], self.index)
    }
}

impl FromStr for TaskId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IdParseError {
            kind: "TaskId",
            text: s.to_owned(),
            hex_len: 32,
        };
        let (job, index) = s.split_once('.').ok_or_else(err)?;
        Ok(TaskId {
            job: job.parse().map_err(|_| err())?,
            index: index.parse().map_err(|_| err())?,
        })
    }
}

crate::wire_struct!(TaskId { job, index });

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::identity::Keypair;

    proptest! {
        #[test]
        fn hex_decodes_what_it_encoded_in_either_case(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let lower = to_hex(&bytes);
            prop_assert_eq!(from_hex(&lower), Some(bytes.clone()));
            prop_assert_eq!(from_hex(lower.to_uppercase()), Some(bytes.clone()));
            prop_assert_eq!(from_hex(&lower), hex::decode(&lower).ok());
        }

        #[test]
        fn hex_with_a_character_that_is_no_digit_is_refused(
            bytes in proptest::collection::vec(any::<u8>(), 1..100),
            at in any::<proptest::sample::Index>(),
            c in any::<u8>().prop_filter("not a hex digit", |c| !c.is_ascii_hexdigit()),
        ) {
            let mut text = to_hex(&bytes).into_bytes();
            let i = at.index(text.len());
            text[i] = c;
            prop_assert_eq!(from_hex(&text), None);
        }
    }

    #[test]
    fn hex_of_odd_length_is_refused_and_ids_parse_with_either_case() {
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex(""), Some(Vec::new()));
        let id = ContentId::of(b"x");
        assert_eq!(id.to_string().to_uppercase().parse::<ContentId>().unwrap(), id);
        assert!(id.to_string()[..62].parse::<ContentId>().is_err());
        assert!(format!("{id}00").parse::<ContentId>().is_err());
    }

    #[test]
    fn node_id_prints_as_peer_id_and_parses_back() {
        let kp = Keypair::from_secret([7u8; 32]);
        let id = kp.node_id();
        let text = id.to_string();
        assert!(text.starts_with("12D3KooW"), "{text}");
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert!(matches!(
            "not-a-peer".parse::<NodeId>(),
            Err(NodeIdError::NotAPeerId(_))
        ));
    }

    #[test]
    fn peer_ids_that_are_not_inline_ed25519_keys_are_refused() {
        // A sha2-256 multihash, as for RSA keys.
        let mut hashed = vec![0x12, 32];
        hashed.extend_from_slice(&[7; 32]);
        assert!(matches!(
            NodeId::from_peer_id_bytes(&hashed),
            Err(NodeIdError::NotEd25519(_))
        ));
        // An identity multihash of another key type (secp256k1 is type 2).
        let mut other = vec![0x00, 37, 0x08, 0x02, 0x12, 0x21];
        other.extend_from_slice(&[2; 33]);
        assert!(matches!(
            NodeId::from_peer_id_bytes(&other),
            Err(NodeIdError::NotEd25519(_))
        ));
        // Truncated.
        let id = Keypair::from_secret([3; 32]).node_id();
        assert!(NodeId::from_peer_id_bytes(&id.peer_id_bytes()[..20]).is_err());
        assert_eq!(NodeId::from_peer_id_bytes(&id.peer_id_bytes()), Ok(id));
    }

    #[test]
    fn weak_keys_are_rejected() {
        // The identity point (small order) encodes as 1 followed by zeros.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(NodeId::from_public_key_bytes(weak), Err(NodeIdError::InvalidKey));
    }

    #[test]
    fn ids_print_as_hex_and_parse_back() {
        let c = ContentId::of(b"hello");
        assert_eq!(c.to_string().len(), 64);
        assert_eq!(c.to_string().parse::<ContentId>().unwrap(), c);
        assert!(c.matches(b"hello") && !c.matches(b"hellp"));
        let t = TaskId::new(JobId([3; 16]), 42);
        assert_eq!(t.to_string().parse::<TaskId>().unwrap(), t);
        assert!("abc".parse::<JobId>().is_err());
    }

    #[test]
    fn ids_print_the_same_hex_as_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(to_hex(&bytes), hex::encode(&bytes));
        assert_eq!(to_hex([]), "");
        let m = MessageId([0xa7; 32]);
        assert_eq!(m.to_string(), hex::encode(m.0));
    }

    #[test]
    fn a_node_id_prints_the_same_from_the_cache_as_the_first_time() {
        let id = Keypair::from_secret([9u8; 32]).node_id();
        let fresh = bs58::encode(id.peer_id_bytes()).into_string();
        assert_eq!(id.to_string(), fresh);
        assert_eq!(id.to_string(), fresh);
        let other = Keypair::from_secret([10u8; 32]).node_id();
        assert_ne!(other.to_string(), fresh);
    }
}

//! A node's signing key, which is also its libp2p identity.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};

use crate::id::NodeId;

/// A node's ed25519 key pair.
///
/// The same secret becomes the node's libp2p identity (the node builds it
/// from [`Keypair::secret_bytes`]), so the peer id a connection is
/// authenticated as *is* the [`NodeId`] that signs the node's market
/// messages.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
    node: NodeId,
}

impl Keypair {
    /// The key pair whose 32-byte ed25519 secret is `secret`.
    pub fn from_secret(secret: [u8; 32]) -> Keypair {
        let signing = SigningKey::from_bytes(&secret);
        let node = NodeId::from_public_key_bytes(signing.verifying_key().to_bytes())
            // A public key derived from a secret by clamped scalar
            // multiplication is never of small order.
            .expect("derived ed25519 public keys are valid");
        Keypair { signing, node }
    }

    /// The 32-byte secret. Handle with care: it is the node's identity.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The node id (public key).
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

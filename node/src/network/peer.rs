//! Node ids as libp2p peer ids and back, and the node's key as its libp2p
//! identity. The protocol crate knows a node id's peer-id *bytes*
//! ([`NodeId::peer_id_bytes`]); only the network speaks libp2p's types.

use agora_protocol::id::NodeIdError;
use agora_protocol::{Keypair, NodeId};
use libp2p::PeerId;

/// A node id as the libp2p peer id of the same key.
pub trait ToPeerId {
    /// The peer id.
    fn to_peer_id(&self) -> PeerId;
}

impl ToPeerId for NodeId {
    fn to_peer_id(&self) -> PeerId {
        PeerId::from_bytes(&self.peer_id_bytes()).expect("a well-formed identity multihash")
    }
}

/// The node id behind a peer id, if it is an inline ed25519 key.
pub fn node_id(peer: &PeerId) -> Result<NodeId, NodeIdError> {
    NodeId::from_peer_id_bytes(&peer.to_bytes())
}

/// The node's key as a libp2p identity: the same secret, so the peer id a
/// connection is authenticated as is the node id that signs its messages.
pub fn libp2p_keypair(k: &Keypair) -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::ed25519_from_bytes(k.secret_bytes())
        .expect("a 32-byte ed25519 secret is always accepted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_libp2p_both_ways() {
        for seed in 0..64u8 {
            let kp = Keypair::from_secret([seed; 32]);
            let id = kp.node_id();
            let libp2p_peer = libp2p_keypair(&kp).public().to_peer_id();
            assert_eq!(id.to_peer_id(), libp2p_peer);
            assert_eq!(node_id(&libp2p_peer).unwrap(), id);
            assert_eq!(id.to_string(), libp2p_peer.to_string(), "same text form");
        }
        let rsa_like = PeerId::from_bytes(&[[0x12, 32].as_slice(), &[7; 32]].concat()).unwrap();
        assert!(node_id(&rsa_like).is_err());
    }
}

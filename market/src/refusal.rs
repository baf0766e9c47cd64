//! Why a request to a peer brought no useful answer.
//!
//! A requester's back-off, a provider's fate in the placement book and a
//! copy's failure all depend on *why* a call or an acceptance failed. The
//! reason crosses every boundary as this enum, never as text: rewording a
//! message must not change what the market does. The text ([`Display`])
//! is for people (`agora job explain`, logs).
//!
//! [`Display`]: std::fmt::Display

use agora_protocol::rpc::Decline;

/// Why a request to a peer brought no useful answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The peer answered with a decline; its reason is typed on the wire.
    #[error("{0}")]
    Declined(Decline),
    /// The peer could not be reached, or did not answer in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer answered, but not validly: a bad signature, signed by
    /// another node, answering another request, or an unexpected kind.
    #[error("invalid answer: {0}")]
    Invalid(String),
}

impl Refusal {
    /// The provider has no capacity (or credit) for this requester now,
    /// but may have soon: ask it again after a short back-off, without
    /// holding it against it. Credit frees up as payments arrive.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            Refusal::Declined(
                Decline::NoFreeSlot
                    | Decline::NotAccepting
                    | Decline::NoCredit { .. }
                    | Decline::Unpaid { .. }
            )
        )
    }

    /// The provider could not be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Refusal::Unreachable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::units::Bytes;

    #[test]
    fn only_capacity_declines_count_as_busy() {
        assert!(Refusal::Declined(Decline::NoFreeSlot).is_busy());
        assert!(Refusal::Declined(Decline::NotAccepting).is_busy());
        assert!(Refusal::Declined(Decline::Unpaid { receipts: 3 }).is_busy());
        assert!(!Refusal::Declined(Decline::Refused).is_busy());
        assert!(!Refusal::Declined(Decline::MemoryTooLarge { max: Bytes::mib(1) }).is_busy());
        assert!(!Refusal::Unreachable("no free slot".into()).is_busy());
        assert!(Refusal::Unreachable("timed out".into()).is_unreachable());
        assert!(!Refusal::Invalid("request to x failed".into()).is_unreachable());
    }
}

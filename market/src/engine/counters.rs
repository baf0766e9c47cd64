//! What an engine counts, for the node's metrics.

use std::collections::BTreeMap;

use agora_protocol::rpc::Decline;

/// Event counts since start.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Calls for offers received.
    pub calls_in: u64,
    /// Offers made.
    pub offers_made: u64,
    /// Orders taken (tasks agreed without an offer before).
    pub orders_taken: u64,
    /// Requests declined, by reason label.
    pub declined: BTreeMap<&'static str, u64>,
    /// Agreements signed.
    pub agreements: u64,
    /// Signatures those took: the agreements of a turn share one.
    pub agreement_signatures: u64,
    /// Acceptances sent (orders' included), as a requester.
    pub accepts_sent: u64,
    /// Signatures those took: the acceptances of a turn share one.
    pub accept_signatures: u64,
    /// Tasks executed as a provider.
    pub executed: u64,
    /// Receipts sent.
    pub receipts_sent: u64,
    /// Signatures those took: the receipts of a turn share one.
    pub receipt_signatures: u64,
    /// Of those, receipts sent in an order's answer with its agreement.
    pub receipts_answered: u64,
    /// `Receipt` requests sent: first sendings and retries.
    pub receipt_requests: u64,
    /// Vouchers counted (each paying one receipt).
    pub vouchers_in: u64,
    /// Payment blocks counted (each holding one voucher or more).
    pub payments_in: u64,
    /// Payment blocks already counted (not counted again).
    pub vouchers_dup: u64,
    /// Vouchers issued.
    pub vouchers_out: u64,
    /// Payment blocks appended (each holding one voucher or more).
    pub payments_out: u64,
    /// Checkpoints this node appended to its chain.
    pub checkpoints: u64,
    /// Attestations of this node's checkpoints it kept.
    pub attestations_in: u64,
    /// Audits of other chains started at an attested checkpoint rather
    /// than at block 1.
    pub audits_resumed: u64,
    /// Payments owed but not made: the chain does not hold enough (or
    /// the node does not pay, by injected fault).
    pub payments_unmade: u64,
    /// Malformed, forged or stale requests.
    pub invalid_requests: u64,
    /// Replayed requests rejected.
    pub replays: u64,
    /// Jobs submitted.
    pub jobs_submitted: u64,
    /// Jobs done.
    pub jobs_done: u64,
    /// Jobs failed.
    pub jobs_failed: u64,
    /// Fraud proofs published.
    pub fraud_published: u64,
    /// Fraud proofs confirmed by re-execution.
    pub fraud_confirmed: u64,
    /// Fraud proofs this node set out to re-execute.
    pub fraud_checks: u64,
    /// Gossip messages rejected.
    pub gossip_rejected: u64,
    /// Adverts this node published, by what made each due
    /// ([`super::AdvertCause`]).
    pub adverts_published: BTreeMap<&'static str, u64>,
    /// Summaries this node published (as an elected publisher).
    pub summaries_published: u64,
    /// Questions asked of a summary's contacts, whether it is a member.
    pub vouch_questions: u64,
    /// Questions asked of members that rank better in the summary election
    /// and had no standing here.
    pub rival_questions: u64,
    /// Receipts for copies withdrawn before their agreement arrived
    /// (acknowledged, not recorded, not paid).
    pub receipts_superseded: u64,
    /// Progress receipts this node sent for its running tasks.
    pub progress_sent: u64,
    /// Checkpoints of this node's tasks it kept from providers' progress
    /// receipts.
    pub progress_kept: u64,
}

impl Counters {
    /// Counts a decline under its reason's label.
    pub(crate) fn declined(&mut self, d: &Decline) {
        *self.declined.entry(label(d)).or_default() += 1;
    }
}

/// A decline's reason as a metric label.
fn label(d: &Decline) -> &'static str {
    match d {
        Decline::NoFreeSlot => "no_free_slot",
        Decline::MemoryTooLarge { .. } => "memory",
        Decline::PriceTooLow { .. } => "price",
        Decline::NotAccepting => "not_accepting",
        Decline::DeadlineInfeasible { .. } => "deadline",
        Decline::EnergyTooHigh { .. } => "energy",
        Decline::OfferUnknown => "offer_unknown",
        Decline::Unknown => "unknown",
        Decline::Invalid { .. } => "invalid",
        Decline::TooLarge { .. } => "too_large",
        Decline::FuelTooHigh { .. } => "fuel_cap",
        Decline::TimeTooLong { .. } => "time_cap",
        Decline::NoCredit { .. } => "no_credit",
        Decline::Unpaid { .. } => "unpaid",
        Decline::Refused => "refused",
        Decline::Superseded => "superseded",
        Decline::Unavailable => "unavailable",
    }
}

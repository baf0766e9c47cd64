//! What a node persists, and where: the one place that knows the record
//! key layout.
//!
//! The [`crate::engine::Engine`] never writes to a disk. Each turn it hands
//! its host a list of [`Write`]s (records as JSON under the keys below) and
//! says whether anything waits for them to be durable; it reads records
//! back through [`Host`] when it starts (restoring unfinished work) and for
//! the few look-ups a decision needs (has this receipt been paid for?). The
//! node's host is its sled store; the simulation's is a map that loses its
//! unflushed writes when a node crashes.
//!
//! | prefix | record | written when |
//! | --- | --- | --- |
//! | `job/{job}` | [`crate::job::JobRecord`] | a job changes |
//! | `jobsum/{submitted:020}/{job}` | [`crate::job::Summary`] | a job changes |
//! | `active/{job}` | nothing | a job is submitted; deleted when it ends |
//! | `task/{job}/{index:010}` | [`crate::job::TaskRecord`] | a task changes |
//! | `ptask/{agreement}` | [`crate::provider::Accepted`] | a provider signs an agreement |
//! | `preceipt/{agreement}` | [`PendingReceipt`] | a provider's receipt awaits its acknowledgement |
//! | `ledger/state` | [`crate::ledger::State`] | every block appended |
//! | `chain/{seq:020}` | [`crate::ledger::Stored`]: a block of this node's credit chain | every block appended |
//! | `ledger/paid-for/{receipt}` | the position of the block that received its payment | a payment is counted |
//! | `ledger/grant/{issuer}/{id}` | the position of the block that took it | a grant is taken |
//! | `held/{owner}/{seq:020}` | [`crate::ledger::Stored`]: a payer's block received | a payment is counted |
//! | `outbox/voucher/{block}` | [`crate::ledger::Outgoing`] | a payment awaits its countersignature |
//! | `meta/index` | the index version | the `active/` and `jobsum/` indexes were built |
//! | `pin/{content}` | the time until which it is kept | content this node's user owns (a job's module, inputs, outputs; an upload) |
//! | `ban/{node}` | why this node's requester banned it | a provider is banned (caught with a wrong result, a confirmed fraud proof, a forked chain) |
//!
//! A node restarts from `active/`, so its start time and memory do not
//! grow with the number of jobs it ever ran; finished jobs stay on disk and
//! are read when asked for.

use agora_protocol::{ContentId, JobId, MessageId, NodeId, TaskId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Jobs this node submitted.
pub const JOB: &str = "job/";
/// Their tasks.
pub const TASK: &str = "task/";
/// One line per job, by submission time.
pub const JOB_SUMMARY: &str = "jobsum/";
/// Jobs not yet ended.
pub const ACTIVE: &str = "active/";
/// Providers this node's requester banned, with why.
pub const BAN: &str = "ban/";
/// Until when the owner paused providing (`u64::MAX`: until resumed).
pub const OWNER_PAUSE: &str = "owner/pause";
/// The owner's limits as last set live (`agora owner set`), over the
/// configuration's.
pub const OWNER_LIMITS: &str = "owner/limits";
/// Which indexes exist.
pub const INDEX: &str = "meta/index";
/// Content kept for this node's user, until a time.
pub const PIN: &str = "pin/";
/// Datasets this node published: the manifest's id, then its files'
/// ids. Announced in the DHT at every start and never collected.
pub const PUBLISHED: &str = "published/";
/// The current index version.
pub const INDEX_VERSION: u32 = 1;
/// Tasks this node accepted as a provider.
pub const ACCEPTED: &str = "ptask/";
/// Receipts this node must still deliver.
pub const PENDING_RECEIPT: &str = "preceipt/";
/// The ledger's totals.
pub const LEDGER_STATE: &str = "ledger/state";
/// This node's credit chain, oldest block first.
pub const CHAIN: &str = "chain/";
/// Other nodes' blocks held (payments received), by owner.
pub const HELD: &str = "held/";
/// Grants taken.
pub const GRANT: &str = "ledger/grant/";
/// Receipts already paid for (a voucher counts once).
pub const PAID_FOR: &str = "ledger/paid-for/";
/// Vouchers awaiting their provider's acknowledgement.
pub const VOUCHER_OUTBOX: &str = "outbox/voucher/";
/// Vouchers decided and not yet in a payment block, by receipt.
pub const OWED: &str = "ledger/owed/";
/// Attestations of this node's checkpoints, by position then auditor.
pub const ATTESTATION: &str = "ledger/attest/";

/// The key of a job record.
pub fn job_key(id: &JobId) -> String {
    format!("{JOB}{id}")
}

/// The key pinning content.
pub fn pin_key(id: &ContentId) -> String {
    format!("{PIN}{id}")
}

/// The key of a dataset this node published.
pub fn published_key(id: &ContentId) -> String {
    format!("{PUBLISHED}{id}")
}

/// The key of a job's summary.
pub fn job_summary_key(submitted_at: agora_protocol::units::Timestamp, id: &JobId) -> String {
    format!("{JOB_SUMMARY}{:020}/{id}", submitted_at.0)
}

/// The key marking a job active.
pub fn active_key(id: &JobId) -> String {
    format!("{ACTIVE}{id}")
}

/// The key of a ban.
pub fn ban_key(node: &NodeId) -> String {
    format!("{BAN}{node}")
}

/// The prefix of a job's task records.
pub fn tasks_of(job: &JobId) -> String {
    format!("{TASK}{job}/")
}

/// The key of a task record.
pub fn task_key(t: &TaskId) -> String {
    format!("{TASK}{}/{:010}", t.job, t.index)
}

/// The key of an accepted task.
pub fn accepted_key(agreement: &MessageId) -> String {
    format!("{ACCEPTED}{agreement}")
}

/// The key of a pending receipt.
pub fn pending_receipt_key(agreement: &MessageId) -> String {
    format!("{PENDING_RECEIPT}{agreement}")
}

/// The key of a block of this node's chain.
pub fn chain_key(seq: u64) -> String {
    format!("{CHAIN}{seq:020}")
}

/// The prefix of the blocks of `owner`'s chain held.
pub fn held_prefix(owner: &NodeId) -> String {
    format!("{HELD}{owner}/")
}

/// The key of a block of `owner`'s chain held.
pub fn held_key(owner: &NodeId, seq: u64) -> String {
    format!("{}{seq:020}", held_prefix(owner))
}

/// The prefix of the attestations of this node's checkpoint at `seq`.
pub fn attestations_of(seq: u64) -> String {
    format!("{ATTESTATION}{seq:020}/")
}

/// The key of `auditor`'s attestation of this node's checkpoint at `seq`.
pub fn attestation_key(seq: u64, auditor: &NodeId) -> String {
    format!("{}{auditor}", attestations_of(seq))
}

/// The checkpoint position and the auditor an attestation's key names.
pub fn attestation_after(key: &str) -> Option<(u64, NodeId)> {
    let (seq, auditor) = key.strip_prefix(ATTESTATION)?.split_once('/')?;
    Some((seq.parse().ok()?, auditor.parse().ok()?))
}

/// The key marking a grant taken.
pub fn grant_key(issuer: &NodeId, id: &[u8; 16]) -> String {
    format!("{GRANT}{issuer}/{}", agora_protocol::id::to_hex(id))
}

/// The key marking a receipt paid for.
pub fn paid_for_key(receipt: &MessageId) -> String {
    format!("{PAID_FOR}{receipt}")
}

/// The key of a voucher decided and not yet in a payment block.
pub fn owed_key(receipt: &MessageId) -> String {
    format!("{OWED}{receipt}")
}

/// The key of an outgoing voucher.
pub fn voucher_key(voucher: &MessageId) -> String {
    format!("{VOUCHER_OUTBOX}{voucher}")
}

/// The job id at the end of a key.
pub fn job_after(key: &str, prefix: &str) -> Option<JobId> {
    key.strip_prefix(prefix)?.rsplit('/').next()?.parse().ok()
}

/// The id at the end of a key under `prefix`.
pub fn id_after(key: &str, prefix: &str) -> Option<MessageId> {
    key.strip_prefix(prefix)?.parse().ok()
}

/// A receipt the provider still has to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReceipt {
    /// Who it goes to.
    pub requester: NodeId,
    /// The signed receipt envelope (hex).
    pub envelope: String,
}

/// One change to the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Sets `key` to `value` (JSON).
    Put {
        /// The key.
        key: String,
        /// The record.
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
}

/// Writes gathered during a turn, applied atomically by the host.
#[derive(Debug, Default)]
pub struct Writes(Vec<Write>);

impl Writes {
    /// Puts a record.
    pub fn put<T: Serialize>(&mut self, key: impl Into<String>, value: &T) {
        // Our own plain records always serialise.
        let value = serde_json::to_vec(value).unwrap_or_default();
        self.0.push(Write::Put {
            key: key.into(),
            value,
        });
    }

    /// Deletes a record.
    pub fn delete(&mut self, key: impl Into<String>) {
        self.0.push(Write::Delete { key: key.into() });
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The writes, in order.
    pub fn into_vec(self) -> Vec<Write> {
        self.0
    }
}

/// A record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The host's storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A record did not decode.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// What an engine may ask of its host synchronously: persisted records,
/// and whether content is at hand.
pub trait Host: Send {
    /// A persisted record.
    fn record(&self, key: &str) -> Result<Option<Vec<u8>>, RecordError>;
    /// Every persisted record under `prefix`, in key order.
    fn records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, RecordError>;
    /// At most `limit` records under `prefix` from key `from` on, in key
    /// order.
    fn records_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        Ok(self
            .records(prefix)?
            .into_iter()
            .filter(|(k, _)| k.as_str() >= from)
            .take(limit)
            .collect())
    }
    /// The last `limit` records under `prefix`, highest key first.
    fn records_rev(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        let mut all = self.records(prefix)?;
        all.reverse();
        all.truncate(limit);
        Ok(all)
    }
    /// Whether this node holds the content (stored, or a module compiled):
    /// enough to run it.
    fn holds(&self, id: &ContentId) -> bool;
    /// The size of the content's bytes if this node stores them: what it
    /// can send to others. A module it has only compiled does not count.
    fn stored_size(&self, id: &ContentId) -> Option<u64>;
}

/// Decodes a record.
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, RecordError> {
    serde_json::from_slice(bytes).map_err(|e| RecordError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads and decodes one record.
pub fn get<T: DeserializeOwned>(host: &dyn Host, key: &str) -> Result<Option<T>, RecordError> {
    host.record(key)?.map(|b| decode(key, &b)).transpose()
}

/// Reads and decodes the last `limit` records under `prefix`, highest key
/// first.
pub fn decoded_rev<T: DeserializeOwned>(
    host: &dyn Host,
    prefix: &str,
    limit: usize,
) -> Result<Vec<T>, RecordError> {
    host.records_rev(prefix, limit)?
        .into_iter()
        .map(|(k, b)| decode(&k, &b))
        .collect()
}

/// Reads and decodes every record under `prefix`.
pub fn scan<T: DeserializeOwned>(host: &dyn Host, prefix: &str) -> Result<Vec<(String, T)>, RecordError> {
    host.records(prefix)?
        .into_iter()
        .map(|(k, b)| decode(&k, &b).map(|v| (k, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_keys_sort_by_index_within_their_job() {
        let job = JobId([3; 16]);
        let a = task_key(&TaskId::new(job, 9));
        let b = task_key(&TaskId::new(job, 10));
        assert!(a < b, "{a} sorts before {b}");
        assert!(a.starts_with(&tasks_of(&job)));
    }

    #[test]
    fn ids_come_back_out_of_their_keys() {
        let id = MessageId([7; 32]);
        assert_eq!(id_after(&accepted_key(&id), ACCEPTED), Some(id));
        assert_eq!(id_after(&voucher_key(&id), VOUCHER_OUTBOX), Some(id));
        assert_eq!(id_after("ptask/not-hex", ACCEPTED), None);
    }
}

/// An in-memory [`Host`] for tests: records in a map, no content.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Mem(pub(crate) std::collections::BTreeMap<String, Vec<u8>>);

#[cfg(test)]
impl Host for Mem {
    fn record(&self, key: &str) -> Result<Option<Vec<u8>>, RecordError> {
        Ok(self.0.get(key).cloned())
    }
    fn records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        Ok(self
            .0
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn holds(&self, _: &ContentId) -> bool {
        false
    }
    fn stored_size(&self, _: &ContentId) -> Option<u64> {
        None
    }
}

#[cfg(test)]
impl Mem {
    /// Applies a turn's writes.
    pub(crate) fn apply(&mut self, w: Writes) {
        for w in w.into_vec() {
            match w {
                Write::Put { key, value } => {
                    self.0.insert(key, value);
                }
                Write::Delete { key } => {
                    self.0.remove(&key);
                }
            }
        }
    }
}

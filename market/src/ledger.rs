//! The credit ledger.
//!
//! Every node starts with a genesis grant. A requester debits itself when it
//! issues a voucher, in the same atomic set of writes that records the
//! voucher in its outbox; a provider credits itself when it receives one, in
//! the same writes that mark the voucher's receipt as paid. A voucher
//! therefore never counts twice, and once every outbox is delivered the sum
//! of all balances is the sum of the grants (SPEC.md §8.5).
//!
//! The ledger decides and records; its records go out as [`Writes`] with the
//! rest of the engine's turn, under the keys of [`crate::records`].

use std::collections::HashSet;

use agora_protocol::settlement::Voucher;
use agora_protocol::units::{Credits, Fuel, Timestamp};
use agora_protocol::{MessageId, NodeId};
use serde::{Deserialize, Serialize};

use crate::records::{self, Host, RecordError, Writes};

/// The ledger's running totals.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Balance in micro-credits.
    pub balance: i64,
    /// Total received.
    pub received: u64,
    /// Total paid.
    pub paid: u64,
    /// Next entry sequence number.
    pub next_seq: u64,
    /// Whether the genesis grant was recorded.
    pub genesis: bool,
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The starting grant.
    Genesis,
    /// A voucher this node issued.
    Paid,
    /// A voucher this node counted.
    Received,
}

impl Kind {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Genesis => "genesis",
            Kind::Paid => "paid",
            Kind::Received => "received",
        }
    }
}

/// One ledger entry, as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Sequence number.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// What it records (`amount` is always positive; this is the direction).
    pub kind: Kind,
    /// Amount.
    pub amount: Credits,
    /// The other party.
    pub counterparty: Option<NodeId>,
    /// The task paid for.
    pub task: Option<String>,
    /// Fuel paid for.
    pub fuel: Option<Fuel>,
}

/// A voucher waiting for its provider's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The provider.
    pub to: NodeId,
    /// The signed voucher envelope (hex).
    pub envelope: String,
}

/// The ledger. Its owner (the node's engine) is its only writer.
#[derive(Debug)]
pub struct Ledger {
    state: State,
    /// Receipts paid for whose writes may not be readable yet.
    recent: HashSet<MessageId>,
}

/// Receipts remembered as paid before the records are asked.
const RECENT: usize = 100_000;

impl Ledger {
    /// Loads the ledger, recording the genesis grant on first start.
    pub fn open(
        host: &dyn Host,
        genesis: Credits,
        now: Timestamp,
        writes: &mut Writes,
    ) -> Result<Ledger, RecordError> {
        let state: State = records::get(host, records::LEDGER_STATE)?.unwrap_or_default();
        let mut l = Ledger {
            state,
            recent: HashSet::new(),
        };
        if !l.state.genesis {
            l.state.genesis = true;
            l.state.balance = l.state.balance.saturating_add(genesis.0 as i64);
            l.entry(writes, now, Kind::Genesis, genesis, None);
        }
        Ok(l)
    }

    fn entry(
        &mut self,
        writes: &mut Writes,
        at: Timestamp,
        kind: Kind,
        amount: Credits,
        voucher: Option<(NodeId, &Voucher)>,
    ) {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        writes.put(
            records::ledger_entry_key(seq),
            &Entry {
                seq,
                at,
                kind,
                amount,
                counterparty: voucher.map(|(n, _)| n),
                task: voucher.map(|(_, v)| v.task.to_string()),
                fuel: voucher.map(|(_, v)| v.fuel),
            },
        );
        writes.put(records::LEDGER_STATE, &self.state);
    }

    /// Records a voucher issued: debit and outbox, in `writes`. `key` is the
    /// signed voucher's id, `envelope` its bytes.
    pub fn pay(&mut self, writes: &mut Writes, v: &Voucher, envelope: &[u8], key: MessageId, now: Timestamp) {
        self.state.balance = self.state.balance.saturating_sub(v.amount.0 as i64);
        self.state.paid = self.state.paid.saturating_add(v.amount.0);
        self.entry(writes, now, Kind::Paid, v.amount, Some((v.provider, v)));
        writes.put(
            records::voucher_key(&key),
            &Outgoing {
                to: v.provider,
                envelope: hex::encode(envelope),
            },
        );
    }

    /// Records a voucher received from `from`, unless its receipt was
    /// already paid for. Returns whether it was counted.
    pub fn receive(
        &mut self,
        host: &dyn Host,
        writes: &mut Writes,
        from: NodeId,
        v: &Voucher,
        now: Timestamp,
    ) -> Result<bool, RecordError> {
        let key = records::paid_for_key(&v.receipt);
        if self.recent.contains(&v.receipt) || host.record(&key)?.is_some() {
            return Ok(false);
        }
        if self.recent.len() >= RECENT {
            self.recent.clear();
        }
        self.recent.insert(v.receipt);
        self.state.balance = self.state.balance.saturating_add(v.amount.0 as i64);
        self.state.received = self.state.received.saturating_add(v.amount.0);
        writes.put(key, &now);
        self.entry(writes, now, Kind::Received, v.amount, Some((from, v)));
        Ok(true)
    }

    /// Removes a delivered (or refused) voucher from the outbox.
    pub fn delivered(writes: &mut Writes, key: &MessageId) {
        writes.delete(records::voucher_key(key));
    }

    /// Vouchers not yet acknowledged.
    pub fn outbox(host: &dyn Host) -> Result<Vec<(MessageId, Outgoing)>, RecordError> {
        Ok(records::scan::<Outgoing>(host, records::VOUCHER_OUTBOX)?
            .into_iter()
            .filter_map(|(k, o)| Some((records::id_after(&k, records::VOUCHER_OUTBOX)?, o)))
            .collect())
    }

    /// The totals.
    pub fn state(&self) -> &State {
        &self.state
    }
}

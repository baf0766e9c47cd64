//! The credit ledger, kept in the store.
//!
//! Every node starts with a genesis grant. A requester debits itself when it
//! issues a voucher (in the same atomic batch that records the voucher in
//! its outbox); a provider credits itself when it receives one (in the same
//! batch that marks the voucher's receipt as paid). A voucher therefore never
//! counts twice, and once every outbox is delivered the sum of all balances
//! is the sum of the grants (SPEC.md §8.5).

use std::collections::HashSet;

use agora_protocol::settlement::Voucher;
use agora_protocol::units::{Credits, Timestamp};
use agora_protocol::{MessageId, NodeId};
use serde::{Deserialize, Serialize};

use crate::api::{LedgerEntry, format_balance};
use crate::store::{Batch, Store, StoreError};

const STATE: &[u8] = b"ledger/state";
const ENTRY: &str = "ledger/entry/";
const PAID_FOR: &str = "ledger/paid-for/";
const OUTBOX: &str = "outbox/voucher/";

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

/// A voucher waiting for its provider's acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outgoing {
    /// The provider.
    pub to: NodeId,
    /// The signed voucher envelope (hex).
    pub envelope: String,
}

/// The ledger. Its owner (the node's driver) is its only writer.
#[derive(Debug)]
pub struct Ledger {
    state: State,
    /// Receipts paid for whose batch is not yet durable.
    recent: HashSet<MessageId>,
}

impl Ledger {
    /// Loads the ledger, recording the genesis grant on first start.
    pub fn open(
        store: &Store,
        genesis: Credits,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Ledger, StoreError> {
        let state: State = store.get(STATE)?.unwrap_or_default();
        let mut l = Ledger {
            state,
            recent: HashSet::new(),
        };
        if !l.state.genesis {
            l.state.genesis = true;
            l.state.balance = l.state.balance.saturating_add(genesis.0 as i64);
            l.entry(batch, now, "genesis", genesis, None, None, None);
        }
        Ok(l)
    }

    #[allow(clippy::too_many_arguments)] // one ledger line, field by field
    fn entry(
        &mut self,
        batch: &mut Batch,
        at: Timestamp,
        kind: &str,
        amount: Credits,
        counterparty: Option<NodeId>,
        task: Option<String>,
        fuel: Option<agora_protocol::units::Fuel>,
    ) {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        batch.put(
            format!("{ENTRY}{seq:020}"),
            &LedgerEntry {
                seq,
                at,
                kind: kind.into(),
                amount,
                counterparty,
                task,
                fuel,
            },
        );
        batch.put(STATE, &self.state);
    }

    /// Records a voucher issued to `to`: debit and outbox, in `batch`.
    pub fn pay(
        &mut self,
        batch: &mut Batch,
        v: &Voucher,
        envelope_hex: String,
        key: MessageId,
        now: Timestamp,
    ) {
        self.state.balance = self.state.balance.saturating_sub(v.amount.0 as i64);
        self.state.paid = self.state.paid.saturating_add(v.amount.0);
        self.entry(
            batch,
            now,
            "paid",
            v.amount,
            Some(v.provider),
            Some(v.task.to_string()),
            Some(v.fuel),
        );
        batch.put(
            format!("{OUTBOX}{key}"),
            &Outgoing {
                to: v.provider,
                envelope: envelope_hex,
            },
        );
    }

    /// Records a voucher received from `from`, unless its receipt was
    /// already paid for. Returns whether it was counted.
    pub fn receive(
        &mut self,
        store: &Store,
        batch: &mut Batch,
        from: NodeId,
        v: &Voucher,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let key = format!("{PAID_FOR}{}", v.receipt);
        if self.recent.contains(&v.receipt) || store.contains(key.as_bytes())? {
            return Ok(false);
        }
        self.recent.insert(v.receipt);
        if self.recent.len() > 100_000 {
            self.recent.clear();
        }
        self.state.balance = self.state.balance.saturating_add(v.amount.0 as i64);
        self.state.received = self.state.received.saturating_add(v.amount.0);
        batch.put(key, &now);
        self.entry(
            batch,
            now,
            "received",
            v.amount,
            Some(from),
            Some(v.task.to_string()),
            Some(v.fuel),
        );
        Ok(true)
    }

    /// Removes a delivered voucher from the outbox.
    pub fn delivered(batch: &mut Batch, key: &MessageId) {
        batch.delete(format!("{OUTBOX}{key}"));
    }

    /// Vouchers not yet acknowledged.
    pub fn outbox(store: &Store) -> Result<Vec<(MessageId, Outgoing)>, StoreError> {
        Ok(store
            .scan::<Outgoing>(OUTBOX.as_bytes())?
            .into_iter()
            .filter_map(|(k, o)| {
                let id = String::from_utf8_lossy(&k[OUTBOX.len()..]).parse().ok()?;
                Some((id, o))
            })
            .collect())
    }

    /// The totals.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The API view.
    pub fn view(&self, store: &Store, limit: usize) -> Result<crate::api::Ledger, StoreError> {
        let entries = store
            .scan_rev::<LedgerEntry>(ENTRY.as_bytes(), limit)?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let outbox = store.scan::<Outgoing>(OUTBOX.as_bytes())?.len();
        Ok(crate::api::Ledger {
            balance_micros: self.state.balance,
            balance: format_balance(self.state.balance),
            received: Credits(self.state.received),
            paid: Credits(self.state.paid),
            outbox,
            entries,
        })
    }
}

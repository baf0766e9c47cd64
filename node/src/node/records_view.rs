//! The owner's views that the records alone answer — the ledger and the
//! history of what the node ran, earned and declined — built the same way
//! by the running node's API and by the CLI reading a stopped node's data
//! dir.

use agora_market::history;
use agora_market::ledger::{State, Stored};
use agora_market::records::{self, Host, RecordError};
use agora_protocol::Envelope;
use agora_protocol::chain::{Block, Entry, Grant};
use agora_protocol::units::{Credits, Timestamp};

use crate::api::{Ledger, LedgerEntry, OwnerHistory};
use crate::store::Store;

/// Reads of the store alone, as a records host (no content, no modules).
pub(crate) struct RecordsOnly<'a>(pub(crate) &'a Store);

impl Host for RecordsOnly<'_> {
    fn record(&self, key: &str) -> Result<Option<Vec<u8>>, RecordError> {
        self.0
            .get_raw(key.as_bytes())
            .map_err(|e| RecordError::Storage(e.to_string()))
    }

    fn records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        self.0
            .scan_raw(prefix.as_bytes())
            .map_err(|e| RecordError::Storage(e.to_string()))
    }

    fn records_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        self.0
            .scan_raw_from(prefix.as_bytes(), from.as_bytes(), limit)
            .map_err(|e| RecordError::Storage(e.to_string()))
    }

    fn records_rev(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        self.0
            .scan_raw_rev(prefix.as_bytes(), limit)
            .map_err(|e| RecordError::Storage(e.to_string()))
    }

    fn holds(&self, _: &agora_protocol::ContentId) -> bool {
        false
    }

    fn stored_size(&self, _: &agora_protocol::ContentId) -> Option<u64> {
        None
    }
}

/// The ledger: the chain's totals (`st`) and its last `limit` blocks.
pub(crate) fn ledger(store: &Store, st: &State, limit: usize) -> Ledger {
    let entries = store
        .scan_rev::<Stored>(records::CHAIN.as_bytes(), limit)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, s)| ledger_entry(&s.envelope()?))
        .collect();
    Ledger {
        balance_micros: st.balance(),
        granted: Credits(st.granted),
        received: Credits(st.received),
        paid: Credits(st.paid),
        seq: st.seq,
        head: st.head.clone(),
        outbox: store
            .scan_raw(records::VOUCHER_OUTBOX.as_bytes())
            .map_or(0, |v| v.len()),
        entries,
    }
}

/// The ledger of a stopped node, from its records.
pub(crate) fn stored_ledger(store: &Store, limit: usize) -> Result<Ledger, RecordError> {
    let st: State = records::get(&RecordsOnly(store), records::LEDGER_STATE)?.unwrap_or_default();
    Ok(ledger(store, &st, limit))
}

/// The last `days` days and the last `tasks` tasks run, from the records.
pub(crate) fn history(
    store: &Store,
    days: u64,
    tasks: usize,
    now: Timestamp,
) -> Result<OwnerHistory, RecordError> {
    let host = RecordsOnly(store);
    // Credits received in those days, from the chain: the newest blocks,
    // more of them until the oldest read is older than the first day.
    let since = Timestamp(history::day_of(now).saturating_sub(days.saturating_sub(1)) * 24 * 3600 * 1000);
    let mut limit = 256;
    let earned: Vec<(Timestamp, u64)> = loop {
        let page = store
            .scan_rev::<Stored>(records::CHAIN.as_bytes(), limit)
            .map_err(|e| RecordError::Storage(e.to_string()))?;
        let entries: Vec<LedgerEntry> = page
            .iter()
            .filter_map(|(_, s)| ledger_entry(&s.envelope()?))
            .collect();
        if page.len() < limit || entries.last().is_some_and(|e| e.at < since) {
            break entries
                .into_iter()
                .filter(|e| e.kind == "received" && e.at >= since)
                .map(|e| (e.at, e.amount.0))
                .collect();
        }
        limit = limit.saturating_mul(4);
    };
    Ok(OwnerHistory {
        days: history::days(&host, &earned, days, now)?,
        tasks: history::recent(&host, tasks)?,
    })
}

/// One block of the node's own chain, as the ledger lists it.
pub(crate) fn ledger_entry(env: &Envelope) -> Option<LedgerEntry> {
    let block = env.open_ignoring_time::<Block>().ok()?;
    let b = block.payload();
    let (kind, amount, counterparty, voucher) = match &b.entry {
        Entry::Grant(g) => {
            let grant = g.open_ignoring_time::<Grant>().ok()?;
            ("grant", grant.payload().amount, Some(grant.signer()), None)
        }
        Entry::Pay(v) => ("paid", v.amount, Some(v.provider), Some(v.clone())),
        Entry::Receive(pay) => {
            let p = pay.open_ignoring_time::<Block>().ok()?;
            let Entry::Pay(v) = &p.payload().entry else {
                return None;
            };
            ("received", v.amount, Some(p.signer()), Some(v.clone()))
        }
    };
    Some(LedgerEntry {
        seq: b.seq,
        at: env.issued_at(),
        kind: kind.to_owned(),
        amount,
        counterparty,
        task: voucher.as_ref().map(|v| v.task.to_string()),
        fuel: voucher.map(|v| v.fuel),
        block: agora_protocol::chain::block_hash(env).to_string(),
    })
}

//! The owner's views that the records alone answer — the ledger and the
//! history of what the node ran, earned and declined — built the same way
//! by the running node's API and by the CLI reading a stopped node's data
//! dir.

use agora_market::history;
use agora_market::ledger::{State, Stored};
use agora_market::records::{self, Host, RecordError};
use agora_protocol::Envelope;
use agora_protocol::chain::{Block, Entry, Grant};
use agora_protocol::units::{Credits, Fuel, Timestamp};

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
    // Attestations are kept by position: the last key names the latest
    // checkpoint attested.
    let attested = store
        .scan_raw_rev(records::ATTESTATION.as_bytes(), 1)
        .ok()
        .and_then(|v| v.into_iter().next())
        .and_then(|(k, _)| records::attestation_after(&k))
        .map_or(0, |(seq, _)| seq);
    Ledger {
        balance_micros: st.balance(),
        granted: Credits(st.granted),
        received: Credits(st.received),
        paid: Credits(st.paid),
        seq: st.seq,
        head: st.head.clone(),
        // Payment blocks not yet countersigned, and vouchers not yet in a
        // block (a requester gathers a payee's for a moment).
        outbox: [records::VOUCHER_OUTBOX, records::OWED]
            .iter()
            .map(|prefix| store.scan_raw(prefix.as_bytes()).map_or(0, |v| v.len()))
            .sum(),
        checkpoint: st.checkpoint,
        attested_checkpoint: attested,
        attested_by: store
            .scan_raw(records::attestations_of(attested).as_bytes())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, _)| Some(records::attestation_after(&k)?.1))
            .collect(),
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
    let (kind, counterparty, vouchers) = match &b.entry {
        Entry::Grant(g) => {
            let grant = g.open_ignoring_time::<Grant>().ok()?;
            return Some(LedgerEntry {
                seq: b.seq,
                at: env.issued_at(),
                kind: "grant".to_owned(),
                amount: grant.payload().amount,
                counterparty: Some(grant.signer()),
                task: None,
                tasks: Vec::new(),
                fuel: None,
                receipts: 0,
                block: agora_protocol::chain::block_hash(env).to_string(),
            });
        }
        Entry::Pay(_) | Entry::PayMany(_) => {
            let (to, _) = b.entry.payment()?.ok()?;
            ("paid", to, b.entry.vouchers())
        }
        Entry::Receive(pay) => {
            let p = pay.open_ignoring_time::<Block>().ok()?;
            let signer = p.signer();
            let paid = p.into_payload().entry;
            return ledger_entry_of(b.seq, env, "received", signer, paid.vouchers());
        }
        Entry::Checkpoint(_) => {
            return Some(LedgerEntry {
                seq: b.seq,
                at: env.issued_at(),
                kind: "checkpoint".to_owned(),
                amount: Credits(0),
                counterparty: None,
                task: None,
                tasks: Vec::new(),
                fuel: None,
                receipts: 0,
                block: agora_protocol::chain::block_hash(env).to_string(),
            });
        }
    };
    ledger_entry_of(b.seq, env, kind, counterparty, vouchers)
}

/// A payment's line: one task, or the count of receipts a block paid.
fn ledger_entry_of(
    seq: u64,
    env: &Envelope,
    kind: &str,
    counterparty: agora_protocol::NodeId,
    vouchers: &[agora_protocol::settlement::Voucher],
) -> Option<LedgerEntry> {
    let sum = |f: fn(&agora_protocol::settlement::Voucher) -> u64| {
        vouchers.iter().map(f).fold(0u64, u64::saturating_add)
    };
    Some(LedgerEntry {
        seq,
        at: env.issued_at(),
        kind: kind.to_owned(),
        amount: Credits(sum(|v| v.amount.0)),
        counterparty: Some(counterparty),
        task: match vouchers {
            [one] => Some(one.task.to_string()),
            _ => None,
        },
        tasks: vouchers.iter().map(|v| v.task.to_string()).collect(),
        fuel: Some(Fuel(sum(|v| v.fuel.0))),
        receipts: u32::try_from(vouchers.len()).unwrap_or(u32::MAX),
        block: agora_protocol::chain::block_hash(env).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use agora_protocol::id::{ContentId, MessageId};
    use agora_protocol::settlement::Voucher;
    use agora_protocol::units::Price;
    use agora_protocol::{JobId, Keypair, NodeId, Nonce, TaskId};

    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn voucher(to: NodeId, n: u8) -> Voucher {
        let price = Price(1_000);
        Voucher {
            receipt: MessageId([n; 32]),
            agreement: MessageId([n; 32]),
            task: TaskId::new(JobId([7; 16]), u32::from(n)),
            provider: to,
            fuel: Fuel(1_000_000),
            price,
            amount: price.cost(Fuel(1_000_000)),
        }
    }

    fn block(k: &Keypair, seq: u64, entry: Entry) -> Envelope {
        let b = Block {
            seq,
            prev: ContentId([seq as u8; 32]),
            entry,
        };
        Envelope::seal(k, &b, T0, Duration::from_secs(60), Nonce([seq as u8; 16])).unwrap()
    }

    #[test]
    fn a_payment_of_several_receipts_lists_every_task_it_paid_on_both_sides() {
        let (payer, payee) = (Keypair::from_secret([1; 32]), Keypair::from_secret([2; 32]));
        let vs = vec![voucher(payee.node_id(), 3), voucher(payee.node_id(), 4)];
        let tasks: Vec<String> = vs.iter().map(|v| v.task.to_string()).collect();
        let paid = block(&payer, 5, Entry::PayMany(vs));
        let received = block(&payee, 9, Entry::Receive(paid.clone()));
        for (env, kind, other) in [
            (&paid, "paid", payee.node_id()),
            (&received, "received", payer.node_id()),
        ] {
            let e = ledger_entry(env).unwrap();
            assert_eq!(e.kind, kind);
            assert_eq!(e.counterparty, Some(other));
            assert_eq!(e.tasks, tasks, "{kind}");
            assert_eq!(e.task, None, "{kind}: no single task");
            assert_eq!(e.receipts, 2);
        }
        let one = block(&payer, 6, Entry::Pay(voucher(payee.node_id(), 8)));
        let e = ledger_entry(&one).unwrap();
        assert_eq!(e.tasks, vec![e.task.clone().unwrap()]);
    }
}

//! The node's own credit chain (SPEC.md §8.6): every change of its credits
//! is a block it signs and appends, hash-linked to the one before, so that
//! anyone who fetches the chain can audit its balance
//! ([`agora_protocol::chain::Audit`]).
//!
//! * Credits arrive as **grants** signed by an issuer the network's
//!   configuration names ([`Ledger::grant`]); nothing else creates them.
//! * A requester **pays** with a block ([`Entry::Pay`], its voucher, or
//!   [`Entry::PayMany`] for several receipts of one provider) that it
//!   appends, records in its outbox and delivers in the same atomic writes.
//! * A provider **receives** a payment by appending a block that carries the
//!   payer's block whole ([`Entry::Receive`]) and answers with it: its
//!   countersignature. A payment counts once per receipt; a retransmitted
//!   one gets the same countersignature back.
//!
//! The ledger decides and records; the engine seals the blocks with the
//! node's key. Its records go out as [`Writes`] with the rest of the
//! engine's turn, under the keys of [`crate::records`]: the running totals
//! (`ledger/state`), the blocks (`chain/{seq}`), which receipts were paid
//! (`ledger/paid-for/{receipt}`: the block that received the payment),
//! which grants were taken (`ledger/grant/{id}`), the payers' blocks held
//! (`held/{owner}/{seq}`, served to auditors and used to detect forks) and
//! the outbox of payments awaiting their countersignature.

use std::collections::HashMap;

use agora_protocol::chain::{Audit, Block, Counted, Entry, Grant, Position, Summary, block_hash};
use agora_protocol::settlement::Voucher;
use agora_protocol::units::Timestamp;
use agora_protocol::{ContentId, Decode, Encode, Envelope, MessageId, NodeId};
use serde::{Deserialize, Serialize};

use crate::records::{self, Host, RecordError, Writes};

/// The ledger's running totals: the audit of the node's own chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// The last block's position (0: none).
    pub seq: u64,
    /// Its hash (hex; empty before the first).
    #[serde(default)]
    pub head: String,
    /// Credits granted, in micro-credits.
    #[serde(default)]
    pub granted: u64,
    /// Credits received.
    pub received: u64,
    /// Credits paid.
    pub paid: u64,
    /// The position of the last checkpoint (0: none).
    #[serde(default)]
    pub checkpoint: u64,
}

impl State {
    /// The balance in micro-credits (negative: a debt).
    pub fn balance(&self) -> i64 {
        (i128::from(self.granted) + i128::from(self.received) - i128::from(self.paid))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    fn head(&self) -> ContentId {
        self.head.parse().unwrap_or(ContentId([0; 32]))
    }
}

/// A block as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The signed block (hex).
    pub envelope: String,
}

impl Stored {
    /// The envelope, if the record is sound.
    pub fn envelope(&self) -> Option<Envelope> {
        Envelope::from_bytes(&agora_protocol::id::from_hex(&self.envelope)?).ok()
    }
}

/// A payment waiting for its payee's countersignature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The payee.
    pub to: NodeId,
    /// The payer's signed block (hex).
    pub envelope: String,
}

/// Why a payment or a grant is not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The block is not a valid payment to this node from its sender.
    #[error("{0}")]
    Invalid(String),
    /// The grant is not signed by an issuer this node trusts.
    #[error("the grant is not signed by an issuer this node's configuration names")]
    NotAnIssuer,
    /// Reading the records failed.
    #[error(transparent)]
    Records(#[from] RecordError),
}

/// What receiving a payment gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    /// New: append this block (sealed) to count it.
    Append(Block),
    /// Already counted: this is the countersignature given then.
    Counted(Envelope),
}

/// The ledger. Its owner (the node's engine) is its only writer.
#[derive(Debug)]
pub struct Ledger {
    local: NodeId,
    state: State,
    /// Receipts paid for whose records may not be readable yet.
    recent: HashMap<MessageId, u64>,
    /// The audit of this node's own chain, kept block by block: what its
    /// next checkpoint states, and which payments it may still receive.
    own: Box<Audit>,
    /// When each payment above its payer's floor was received (those a
    /// checkpoint listed: when it was appended).
    received_at: HashMap<Position, Timestamp>,
}

/// Receipts remembered as paid before the records are asked.
const RECENT: usize = 100_000;

impl Ledger {
    /// Loads the ledger of `local`.
    pub fn open(local: NodeId, host: &dyn Host) -> Result<Ledger, RecordError> {
        let state: State = records::get(host, records::LEDGER_STATE)?.unwrap_or_default();
        let corrupt = |seq: u64, reason: String| RecordError::Corrupt {
            key: records::chain_key(seq),
            reason,
        };
        let all = |_: &NodeId| true;
        let read = |after, limit| read_blocks(host, records::CHAIN, after, limit);
        // The audit of the chain from its last checkpoint (whole without
        // one), every block read as it was written.
        let mut own = Audit::new(local);
        let mut received_at = HashMap::new();
        if state.checkpoint > 0 {
            let cp = read(state.checkpoint - 1, 1)?
                .pop()
                .ok_or_else(|| corrupt(state.checkpoint, "the last checkpoint is missing".into()))?;
            own = Audit::resume(local, &cp, &all).map_err(|e| corrupt(state.checkpoint, e.to_string()))?;
            if let Ok(Block {
                entry: Entry::Checkpoint(s),
                ..
            }) = cp.peek::<Block>()
            {
                received_at.extend(s.recent.iter().map(|p| (*p, cp.issued_at())));
            }
        }
        while own.seq < state.seq {
            let page = read(own.seq, 256)?;
            if page.is_empty() {
                return Err(corrupt(
                    own.seq + 1,
                    "a block of this node's chain is missing".into(),
                ));
            }
            for b in &page {
                if own.seq >= state.seq {
                    break;
                }
                if let Counted::Receive(src) = own
                    .apply_own(b, &all)
                    .map_err(|e| corrupt(own.seq + 1, e.to_string()))?
                {
                    received_at.insert(
                        Position {
                            payer: src.payer,
                            seq: src.seq,
                        },
                        b.issued_at(),
                    );
                }
            }
        }
        Ok(Ledger {
            local,
            state,
            recent: HashMap::new(),
            own: Box::new(own),
            received_at,
        })
    }

    /// The next block of the chain, recording `entry` (to be sealed and
    /// passed to [`Ledger::append`]).
    pub fn next(&self, entry: Entry) -> Block {
        Block {
            seq: self.state.seq + 1,
            prev: self.state.head(),
            entry,
        }
    }

    /// Appends a sealed block made by [`Ledger::next`].
    pub fn append(&mut self, writes: &mut Writes, block: &Block, env: &Envelope) {
        match &block.entry {
            Entry::Grant(g) => {
                if let Ok(g) = g.open_ignoring_time::<Grant>() {
                    self.state.granted = self.state.granted.saturating_add(g.payload().amount.0);
                    writes.put(records::grant_key(&g.signer(), &g.payload().id), &block.seq);
                }
            }
            entry @ (Entry::Pay(_) | Entry::PayMany(_)) => {
                let amount = entry
                    .vouchers()
                    .iter()
                    .map(|v| v.amount.0)
                    .fold(0u64, u64::saturating_add);
                self.state.paid = self.state.paid.saturating_add(amount);
            }
            Entry::Receive(pay) => {
                // Checked by `receive` before it was sealed: read, not
                // verified again.
                if let Ok(p) = pay.peek::<Block>()
                    && let Some(Ok((_, amount))) = p.entry.payment()
                {
                    self.state.received = self.state.received.saturating_add(amount);
                    writes.put(
                        records::held_key(&pay.claimed_signer(), p.seq),
                        &Stored {
                            envelope: agora_protocol::id::to_hex(pay.to_bytes()),
                        },
                    );
                    if self.recent.len() >= RECENT {
                        self.recent.clear();
                    }
                    for v in p.entry.vouchers() {
                        writes.put(records::paid_for_key(&v.receipt), &block.seq);
                        self.recent.insert(v.receipt, block.seq);
                    }
                }
            }
            Entry::Checkpoint(s) => {
                self.state.checkpoint = block.seq;
                self.received_at.retain(|p, _| s.recent.binary_search(p).is_ok());
            }
        }
        match self.own.apply_own(env, &|_| true) {
            Ok(Counted::Receive(src)) => {
                let at = Position {
                    payer: src.payer,
                    seq: src.seq,
                };
                self.received_at.insert(at, env.issued_at());
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "a block appended to this node's chain does not audit"),
        }
        self.state.seq = block.seq;
        self.state.head = block_hash(env).to_string();
        writes.put(
            records::chain_key(block.seq),
            &Stored {
                envelope: agora_protocol::id::to_hex(env.to_bytes()),
            },
        );
        writes.put(records::LEDGER_STATE, &self.state);
    }

    /// Records a payment's block in the outbox, until its payee
    /// countersigns.
    pub fn send(writes: &mut Writes, to: NodeId, env: &Envelope) {
        writes.put(
            records::voucher_key(&env.id()),
            &Outgoing {
                to,
                envelope: agora_protocol::id::to_hex(env.to_bytes()),
            },
        );
    }

    /// A payment from `from`: the block to append to count it, or the
    /// countersignature already given for its receipt.
    pub fn receive(&self, host: &dyn Host, from: NodeId, pay: &Envelope) -> Result<Payment, Refused> {
        let v = pay
            .open_ignoring_time::<Block>()
            .map_err(|e| Refused::Invalid(format!("the payment does not verify: {e}")))?;
        if v.signer() != from {
            return Err(Refused::Invalid("the payment is signed by another node".into()));
        }
        agora_protocol::chain::paid_to(&self.local, &v).map_err(|e| Refused::Invalid(e.into()))?;
        // A receipt counts once: a payment sent again gets the
        // countersignature given for it then.
        for voucher in v.payload().entry.vouchers() {
            if let Some(seq) = self.paid_block(host, &voucher.receipt)? {
                let env = records::get::<Stored>(host, &records::chain_key(seq))?
                    .and_then(|s| s.envelope())
                    .ok_or_else(|| Refused::Invalid("the countersignature given is lost".into()))?;
                return Ok(Payment::Counted(env));
            }
        }
        // A payment counts once per position of its payer's chain, and
        // not at all at or below the floor a checkpoint set: this node's
        // chain must pass every audit (SPEC.md §8.6).
        let at = v.payload().seq;
        if at <= self.own.floor(&from) {
            return Err(Refused::Invalid(format!(
                "the payment (block {at} of its payer's chain) is at or below the floor this chain's last checkpoint set for its payer"
            )));
        }
        if self.own.has_received(&Position { payer: from, seq: at }) {
            return Err(Refused::Invalid(format!(
                "another block at position {at} of the payer's chain was received here: its chain is forked"
            )));
        }
        Ok(Payment::Append(self.next(Entry::Receive(pay.clone()))))
    }

    /// Whether a checkpoint is due: `every` blocks (0: never) or more since
    /// the last one.
    pub fn checkpoint_due(&self, every: u64) -> bool {
        every > 0 && self.state.seq >= self.state.checkpoint + every
    }

    /// The summary of the chain a checkpoint appended now states (SPEC.md
    /// §8.6, "Checkpoints"). Each payer's floor rises to its highest
    /// payment received at least `quiet` ago: a payment of that payer
    /// still in flight below it, sent before one that arrived that long
    /// ago, could no longer be received. When the payments received since
    /// are too many to list, the wait halves, down to a second. `None` if
    /// even then the summary would be too long to carry.
    pub fn summary(&self, now: Timestamp, quiet: std::time::Duration) -> Option<Summary> {
        let mut wait = quiet;
        loop {
            let fold = |p: &Position| self.received_at.get(p).is_none_or(|t| now.since(*t) >= wait);
            if let Some(s) = self.own.summary(&fold) {
                return Some(s);
            }
            if wait <= std::time::Duration::from_secs(1) {
                return None;
            }
            wait /= 2;
        }
    }

    fn paid_block(&self, host: &dyn Host, receipt: &MessageId) -> Result<Option<u64>, RecordError> {
        if let Some(seq) = self.recent.get(receipt) {
            return Ok(Some(*seq));
        }
        records::get(host, &records::paid_for_key(receipt))
    }

    /// A grant to this node: the block to append to count it.
    pub fn grant(
        &self,
        host: &dyn Host,
        grant: &Envelope,
        issuer: &dyn Fn(&NodeId) -> bool,
    ) -> Result<Block, Refused> {
        let g = grant
            .open_ignoring_time::<Grant>()
            .map_err(|e| Refused::Invalid(format!("the grant does not verify: {e}")))?;
        if !issuer(&g.signer()) {
            return Err(Refused::NotAnIssuer);
        }
        if g.payload().to != self.local {
            return Err(Refused::Invalid(format!("the grant is for {}", g.payload().to)));
        }
        if records::get::<u64>(host, &records::grant_key(&g.signer(), &g.payload().id))?.is_some() {
            return Err(Refused::Invalid("the grant was already taken".into()));
        }
        Ok(self.next(Entry::Grant(grant.clone())))
    }

    /// A payment's block was countersigned (or refused for good): it leaves
    /// the outbox.
    pub fn delivered(writes: &mut Writes, key: &MessageId) {
        writes.delete(records::voucher_key(key));
    }

    /// Payments awaiting their countersignature.
    pub fn outbox(host: &dyn Host) -> Result<Vec<(MessageId, Outgoing)>, RecordError> {
        Ok(records::scan::<Outgoing>(host, records::VOUCHER_OUTBOX)?
            .into_iter()
            .filter_map(|(k, o)| Some((records::id_after(&k, records::VOUCHER_OUTBOX)?, o)))
            .collect())
    }

    /// Blocks of `owner`'s chain after `after` this node holds (its own
    /// chain whole; others' as far as it received their payments), at most
    /// `limit`, in order.
    pub fn blocks(
        &self,
        host: &dyn Host,
        owner: &NodeId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, RecordError> {
        let prefix = if *owner == self.local {
            records::CHAIN.to_owned()
        } else {
            records::held_prefix(owner)
        };
        read_blocks(host, &prefix, after, limit)
    }

    /// The totals.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The vouchers a payment block carries, unverified: for a block
    /// [`Ledger::receive`] has checked.
    pub fn vouchers_of(pay: &Envelope) -> Vec<Voucher> {
        match pay.peek::<Block>().map(|b| b.entry) {
            Ok(Entry::Pay(v)) => vec![v],
            Ok(Entry::PayMany(vs)) => vs,
            _ => Vec::new(),
        }
    }
}

/// The blocks stored under `prefix` (a chain's, by position) after
/// `after`, at most `limit`, in order.
fn read_blocks(
    host: &dyn Host,
    prefix: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Envelope>, RecordError> {
    let from = format!("{prefix}{:020}", after.saturating_add(1));
    Ok(host
        .records_from(prefix, &from, limit)?
        .into_iter()
        .filter_map(|(k, b)| records::decode::<Stored>(&k, &b).ok()?.envelope())
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use agora_protocol::chain::Position;
    use agora_protocol::units::{Fuel, Price};
    use agora_protocol::{JobId, Keypair, Nonce, Payload, TaskId};

    use super::*;
    use crate::records::Mem;

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn seal<T: Payload>(k: &Keypair, p: &T, at: Timestamp, n: u8) -> Envelope {
        Envelope::seal(k, p, at, T::MAX_LIFETIME, Nonce([n; 16])).unwrap()
    }

    /// The payer's block at `seq` paying `to` for receipt `n`.
    fn pay(payer: &Keypair, to: NodeId, seq: u64, n: u8) -> Envelope {
        let price = Price(1_000);
        let v = Voucher {
            receipt: MessageId([n; 32]),
            agreement: MessageId([n; 32]),
            task: TaskId::new(JobId([1; 16]), u32::from(n)),
            provider: to,
            fuel: Fuel(1_000_000),
            price,
            amount: price.cost(Fuel(1_000_000)),
        };
        let b = Block {
            seq,
            prev: ContentId([seq as u8; 32]),
            entry: Entry::Pay(v),
        };
        seal(payer, &b, T0, n)
    }

    /// `ledger` receives `pay` at `at`; its writes land in `mem`.
    fn receive(
        ledger: &mut Ledger,
        key: &Keypair,
        mem: &mut Mem,
        pay: &Envelope,
        at: Timestamp,
    ) -> Result<(), Refused> {
        match ledger.receive(mem, pay.claimed_signer(), pay)? {
            Payment::Append(block) => {
                let env = seal(key, &block, at, 200);
                let mut w = Writes::default();
                ledger.append(&mut w, &block, &env);
                mem.apply(w);
                Ok(())
            }
            Payment::Counted(_) => Ok(()),
        }
    }

    #[test]
    fn a_checkpoint_floors_a_payers_payments_received_long_enough_ago_and_a_payment_under_the_floor_is_refused_even_after_a_restart()
     {
        let (payer, payee) = (Keypair::from_secret([1; 32]), Keypair::from_secret([2; 32]));
        let mut mem = Mem::default();
        let mut ledger = Ledger::open(payee.node_id(), &mem).unwrap();
        let to = payee.node_id();
        let at = |s: u64| Timestamp(T0.0 + s * 1000);
        receive(&mut ledger, &payee, &mut mem, &pay(&payer, to, 3, 1), at(0)).unwrap();
        receive(&mut ledger, &payee, &mut mem, &pay(&payer, to, 5, 2), at(40)).unwrap();
        // At 45 s, the payment at 3 is 45 s old, the one at 5 only 5 s.
        let s = ledger.summary(at(45), Duration::from_secs(30)).unwrap();
        let p = payer.node_id();
        assert_eq!(s.floors, vec![Position { payer: p, seq: 3 }]);
        assert_eq!(s.recent, vec![Position { payer: p, seq: 5 }]);
        assert_eq!((s.received, s.paid), (2_000, 0));
        let block = ledger.next(Entry::Checkpoint(s));
        let env = seal(&payee, &block, at(45), 201);
        let mut w = Writes::default();
        ledger.append(&mut w, &block, &env);
        mem.apply(w);
        assert_eq!(ledger.state().checkpoint, 3);
        for ledger in [&mut ledger, &mut Ledger::open(to, &mem).unwrap()] {
            // A block of the payer under its floor counts no more; one
            // above it that was not received still does; the one at 5 is
            // not received twice, even as another block at that position.
            let under = pay(&payer, to, 2, 3);
            assert!(
                matches!(ledger.receive(&mem, p, &under), Err(Refused::Invalid(e)) if e.contains("floor"))
            );
            let again = pay(&payer, to, 5, 4);
            assert!(
                matches!(ledger.receive(&mem, p, &again), Err(Refused::Invalid(e)) if e.contains("forked"))
            );
            assert!(matches!(
                ledger.receive(&mem, p, &pay(&payer, to, 4, 5)),
                Ok(Payment::Append(_))
            ));
        }
        // The chain audits from block 1 and from its checkpoint alike.
        let blocks = ledger.blocks(&mem, &to, 0, 64).unwrap();
        let mut whole = agora_protocol::chain::Audit::new(to);
        assert_eq!(whole.apply_run(&blocks, &|_| true).1, None);
        assert_eq!(whole.balance(), 2_000);
    }
}

//! Credits on the wire: paying and being paid with blocks of the two
//! parties' chains, admitting requesters on their audited balance, serving
//! and auditing chains, taking grants, and bringing forks to light.
//!
//! * **Paying**: the vouchers a requester decides in one turn are gathered
//!   by payee; at the turn's end each payee's become one block
//!   ([`Entry::Pay`] for one, [`Entry::PayMany`] for up to
//!   [`MAX_VOUCHERS`]), which it appends, keeps in its outbox and delivers
//!   (once durable) until the payee answers with its countersignature
//!   ([`MarketResponse::Received`]). Under load one block and one
//!   countersignature pay for many tasks; alone, a task is paid at once.
//! * **Being paid**: a provider appends an [`Entry::Receive`] block
//!   carrying the payer's, and answers with it (once durable).
//! * **Admitting**: before offering, a provider asks [`crate::credit`];
//!   when its audit of the requester is stale it reads the requester's chain
//!   ([`MarketRequest::Chain`]) from where it left off.
//! * **Forks**: every few seconds a node gossips the heads of the chains it
//!   holds blocks of ([`Heads`]); a node holding another block at one of
//!   those positions asks the publisher for it and, if it differs, publishes
//!   a [`ForkProof`]. Whoever checks a fork proof refuses the forker as a
//!   requester and bans it as a provider.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_protocol::chain::{
    Attestation, Block, Entry, ForkProof, Head, Heads, MAX_ATTESTATIONS, MAX_HEADS, MAX_VOUCHERS, block_hash,
};
use agora_protocol::rpc::{Decline, MAX_CHAIN_PAGE, MarketRequest, MarketResponse};
use agora_protocol::settlement::Voucher;
use agora_protocol::units::{Credits, Price, Timestamp};
use agora_protocol::{ContentId, Decode, Encode, Envelope, FRAUD_TOPIC, HEADS_TOPIC, NodeId, Payload};

use super::{ChainRead, Engine, Output, Pending, ReplyId, Verdict};
use crate::ledger::{Ledger, Payment, Refused, Stored};
use crate::records;

/// How often a node gossips the heads of the chains it holds.
pub(super) const HEADS_EVERY: Duration = Duration::from_secs(5);
/// How often every known head is published, moved or not. A head that
/// moves is published within [`HEADS_EVERY`] by each node that sees it
/// move, and that is what brings a fork to light: the refresh only repairs
/// a lost message and tells newcomers who holds which chains. Every node
/// holds at least its own chain and every node hears every `Heads`, so a
/// network of N nodes refreshes at N / `HEADS_REFRESH` messages a second,
/// each delivered N times: at one minute, 200 idle nodes sent more gossip
/// for heads than for their adverts (testnet README, `scale`).
const HEADS_REFRESH: Duration = Duration::from_secs(600);
/// Other chains' heads remembered at most.
const MAX_KNOWN_HEADS: usize = 1024;
/// Nodes asked for a copy of a chain its owner cannot give, at most.
const MAX_HOLDERS: usize = 4;
/// Most bytes of blocks one `Chain` answer carries (a page of payments is
/// far smaller; checkpoints are up to 60 KiB each).
const MAX_CHAIN_BYTES: usize = 512 * 1024;
/// Blocks after a checkpoint that could not be made before it is tried
/// again.
const CHECKPOINT_RETRY: u64 = 16;
/// Attestations looked through for the latest one by the asker.
const ATTESTATIONS_SEARCHED: usize = 256;
/// How long ago a payment must have been received for a checkpoint to
/// raise its payer's floor to it (SPEC.md §8.6, "Checkpoints").
const CHECKPOINT_QUIET: Duration = Duration::from_secs(30);

/// The outcome of an audit the owner asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Whose chain.
    pub owner: NodeId,
    /// Blocks checked: through this position.
    pub blocks: u64,
    /// Where the audit started: 1, or a checkpoint an auditor this node
    /// trusts attested (SPEC.md §8.6, "Checkpoints").
    pub from_block: u64,
    /// Its balance, in micro-credits.
    pub balance: i64,
    /// Credits granted to it.
    pub granted: Credits,
    /// Credits it received.
    pub received: Credits,
    /// Credits it paid.
    pub paid: Credits,
    /// Its balance counting only backed credits (SPEC.md §8.6, "Backing").
    pub backed: i64,
    /// Credits it received from payers that did not hold them.
    pub unbacked: Credits,
    /// Credits it received whose payers' chains could not be checked yet.
    pub unsettled: Credits,
}

impl AuditReport {
    /// What `audit` and `backing` found.
    pub fn of(audit: &agora_protocol::chain::Audit, backing: &crate::backing::Backing) -> AuditReport {
        AuditReport {
            owner: audit.owner,
            blocks: audit.seq,
            from_block: audit.start,
            balance: audit.balance(),
            granted: Credits(audit.granted),
            received: Credits(audit.received),
            paid: Credits(audit.paid),
            backed: backing.balance(),
            unbacked: Credits(backing.unbacked()),
            unsettled: Credits(backing.unsettled()),
        }
    }
}

/// How long a payee's first voucher waits for others before their block
/// is made: at most this much later than at once, a payee is paid for
/// every task it ran meanwhile with one block.
pub(super) const PAY_EVERY: Duration = Duration::from_millis(20);

/// Vouchers decided and not yet in a payment block, by payee, with when
/// the first of each payee's was decided.
#[derive(Debug, Default)]
pub(super) struct Owed(BTreeMap<NodeId, (Timestamp, Vec<Voucher>)>);

impl Owed {
    /// Owes `voucher` to `to` from `now`.
    pub(super) fn owe(&mut self, to: NodeId, voucher: Voucher, now: Timestamp) {
        self.0
            .entry(to)
            .or_insert_with(|| (now, Vec::new()))
            .1
            .push(voucher);
    }

    /// Whether nothing is owed.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many vouchers are owed.
    pub(super) fn len(&self) -> usize {
        self.0.values().map(|(_, v)| v.len()).sum()
    }

    /// Takes the vouchers of every payee whose first waited [`PAY_EVERY`]
    /// by `now` or who is owed [`MAX_VOUCHERS`] (of every payee, with
    /// `all`), in the order they were decided.
    pub(super) fn take_due(&mut self, all: bool, now: Timestamp) -> Vec<(NodeId, Vec<Voucher>)> {
        let due: Vec<NodeId> = self
            .0
            .iter()
            .filter(|(_, (since, v))| all || v.len() >= MAX_VOUCHERS || now.since(*since) >= PAY_EVERY)
            .map(|(to, _)| *to)
            .collect();
        due.into_iter()
            .filter_map(|to| self.0.remove(&to).map(|(_, v)| (to, v)))
            .collect()
    }
}

impl Engine {
    /// Pays `to` for verified work: the voucher is recorded, and waits
    /// with the others to `to` for their block ([`Engine::make_payments`]).
    pub(super) fn pay(&mut self, to: NodeId, voucher: Voucher, now: Timestamp) {
        // Verified work: the provider has standing from now on.
        self.view.prove(to);
        // In the turn's writes with the copy marked paid: a crash loses
        // neither without the other.
        self.writes.put(records::owed_key(&voucher.receipt), &voucher);
        self.to_pay.owe(to, voucher, now);
    }

    /// Makes the payments that are due: for each payee whose first
    /// voucher waited [`PAY_EVERY`] (or that is owed a block's worth, or
    /// all with `all`), blocks of at most [`MAX_VOUCHERS`] vouchers, as far
    /// as the balance covers them. Gathering for a moment makes one block,
    /// one signature and one countersignature pay for every task a payee
    /// ran meanwhile, and keeps the block's write and message off the path
    /// of the next task.
    pub(super) fn make_payments(&mut self, all: bool, now: Timestamp) {
        for (to, vouchers) in self.to_pay.take_due(all, now) {
            for v in &vouchers {
                self.writes.delete(records::owed_key(&v.receipt));
            }
            let mut block: Vec<Voucher> = Vec::new();
            let mut total = 0i128;
            let balance = i128::from(self.ledger.state().balance());
            for v in vouchers {
                if !self.config.pays || balance < total + i128::from(v.amount.0) {
                    // A payment beyond the balance would break this node's
                    // own chain: every auditor would refuse it from then on.
                    self.counters.payments_unmade += 1;
                    if self.config.pays {
                        tracing::warn!(
                            provider = %to.short(),
                            owed = %v.amount,
                            balance = balance - total,
                            "cannot pay for verified work: the chain does not hold enough credits"
                        );
                    }
                    continue;
                }
                total += i128::from(v.amount.0);
                block.push(v);
                // A forking payer (an injected fault) forks one voucher
                // at a time.
                if block.len() == MAX_VOUCHERS || self.config.fork_payments {
                    self.pay_block(to, std::mem::take(&mut block), now);
                }
            }
            if !block.is_empty() {
                self.pay_block(to, block, now);
            }
        }
    }

    /// Appends one payment block for `vouchers` (1 to [`MAX_VOUCHERS`], all
    /// to `to`), keeps it in the outbox, and delivers it once the writes
    /// are durable.
    fn pay_block(&mut self, to: NodeId, mut vouchers: Vec<Voucher>, now: Timestamp) {
        self.counters.vouchers_out += vouchers.len() as u64;
        self.counters.payments_out += 1;
        let entry = match vouchers.len() {
            1 => Entry::Pay(vouchers.remove(0)),
            _ => Entry::PayMany(vouchers),
        };
        if self.config.fork_payments
            && let Some((seq, prev, first)) = self.fork_base
            && first != to
        {
            // Injected fault: another block at a position already used,
            // shown only to this payee; the node's own chain goes on
            // without it.
            self.fork_base = None;
            let block = Block { seq, prev, entry };
            let env = self.seal(&block, Block::MAX_LIFETIME, now);
            Ledger::send(&mut self.writes, to, &env);
            self.deliver(env.id(), to, MarketRequest::Pay(env), true, now);
            return;
        }
        let block = self.ledger.next(entry);
        let env = self.seal(&block, Block::MAX_LIFETIME, now);
        self.ledger.append(&mut self.writes, &block, &env);
        Ledger::send(&mut self.writes, to, &env);
        self.note_head(self.local, block.seq, block_hash(&env));
        if self.config.fork_payments {
            self.fork_base = Some((block.seq, block.prev, to));
        }
        self.deliver(env.id(), to, MarketRequest::Pay(env), true, now);
    }

    /// Nodes proven to have forked their chains.
    pub fn forked_known(&self) -> usize {
        self.credit.forked_count()
    }

    /// A payment from `peer`: counted once, answered with this node's block
    /// receiving it.
    pub(super) fn on_pay(&mut self, peer: NodeId, env: &Envelope, reply: ReplyId, now: Timestamp) {
        let decline = |e: String| MarketResponse::Declined(Decline::invalid(e));
        match self.ledger.receive(self.host.as_ref(), peer, env) {
            Ok(Payment::Counted(ours)) => {
                self.counters.vouchers_dup += 1;
                self.out.push(Output::Respond {
                    reply,
                    response: MarketResponse::Received(ours),
                });
            }
            Ok(Payment::Append(block)) => {
                self.check_held(peer, env, now);
                let ours = self.seal(&block, Block::MAX_LIFETIME, now);
                self.ledger.append(&mut self.writes, &block, &ours);
                self.note_head(self.local, block.seq, block_hash(&ours));
                let vouchers = Ledger::vouchers_of(env);
                self.counters.vouchers_in += vouchers.len() as u64;
                self.counters.payments_in += 1;
                for v in vouchers {
                    self.paid_answered(&v.receipt, now);
                    self.credit.paid(peer, &v.receipt, v.amount.0);
                }
                self.after.push(Output::Respond {
                    reply,
                    response: MarketResponse::Received(ours),
                });
            }
            Err(Refused::Records(e)) => {
                tracing::error!(error = %e, "cannot read the ledger's records: the payment is to be sent again");
                self.out.push(Output::Respond {
                    reply,
                    response: MarketResponse::Declined(Decline::Unavailable),
                });
            }
            Err(e) => {
                // A payment refused because another block is known at its
                // position proves a fork (the proof checks both).
                self.check_against_held(peer, env, now);
                self.counters.declined(&Decline::invalid(""));
                self.out.push(Output::Respond {
                    reply,
                    response: decline(e.to_string()),
                });
            }
        }
    }

    /// Whether to offer `requester` a task costing about `cost`; reads its
    /// chain (again) when the audit is stale.
    pub(super) fn admit_credit(
        &mut self,
        requester: NodeId,
        price: Price,
        fuel: agora_protocol::units::Fuel,
        now: Timestamp,
    ) -> Result<(), Decline> {
        let (verdict, read) = self.credit.admit(requester, price.cost(fuel).0, now);
        if read {
            let after = self.credit.start_audit(requester, now);
            self.read_chain(requester, after, None, now);
        }
        verdict
    }

    /// Reads again the chains of requesters that paid since they were last
    /// read (see [`crate::credit::Credit::due_audits`]): a fork shows when
    /// the block this node was paid with differs from the one the chain
    /// holds at that position.
    pub(super) fn read_paid_chains(&mut self, now: Timestamp) {
        for (owner, after) in self.credit.due_audits(now) {
            self.read_chain(owner, after, None, now);
        }
    }

    /// Reads `owner`'s chain after `after`: from `owner` itself, and when
    /// it cannot answer, from `via` (a node it paid, which keeps a copy)
    /// and then from nodes whose heads gossip showed they hold its blocks.
    fn read_chain(&mut self, owner: NodeId, mut after: u64, via: Option<NodeId>, now: Timestamp) {
        if owner == self.local {
            // This node's own chain, from its records.
            loop {
                let blocks = self
                    .ledger
                    .blocks(self.host.as_ref(), &owner, after, MAX_CHAIN_PAGE)
                    .unwrap_or_default();
                match self.credit.on_blocks(owner, &blocks, now) {
                    Ok(true) => after = self.credit.start_audit(owner, now),
                    _ => break,
                }
            }
            return self.settle_backing(now);
        }
        if after == 0 && via.is_none() {
            // A chain this node has no audit of: from its latest attested
            // checkpoint, if an auditor this node trusts attested one.
            let request = MarketRequest::ChainCheckpoint { owner };
            let read = ChainRead {
                owner,
                after,
                asked: owner,
                fallback: Vec::new(),
            };
            let out = self.request(owner, request, Vec::new(), Pending::ChainCheckpoint(read));
            self.out.push(out);
            return;
        }
        self.read_chain_from(owner, after, via);
    }

    fn read_chain_from(&mut self, owner: NodeId, after: u64, via: Option<NodeId>) {
        let mut fallback: Vec<NodeId> = Vec::new();
        for n in via
            .into_iter()
            .chain(self.holders.get(&owner).into_iter().flatten().copied())
        {
            if n != owner && n != self.local && !fallback.contains(&n) && fallback.len() < MAX_HOLDERS {
                fallback.push(n);
            }
        }
        self.ask_chain(ChainRead {
            owner,
            after,
            asked: owner,
            fallback,
        });
    }

    fn ask_chain(&mut self, read: ChainRead) {
        let request = MarketRequest::Chain {
            owner: read.owner,
            after: read.after,
        };
        let out = self.request(read.asked, request, Vec::new(), Pending::Chain(read));
        self.out.push(out);
    }

    /// Blocks of a chain arrived (or did not).
    pub(super) fn on_chain(
        &mut self,
        read: ChainRead,
        answer: Result<MarketResponse, String>,
        now: Timestamp,
    ) {
        let ChainRead {
            owner,
            after,
            asked,
            mut fallback,
        } = read;
        let mut blocks = match answer {
            Ok(MarketResponse::Chain(b)) => b,
            other => {
                let why = match other {
                    Err(e) => e,
                    Ok(r) => format!("unexpected answer {r:?}"),
                };
                tracing::debug!(chain = %owner.short(), from = %asked.short(), error = %why, "cannot read the chain there");
                return self.read_elsewhere(owner, after, fallback, now);
            }
        };
        if asked != owner {
            // A copy: only the blocks that follow on from `after` count (a
            // holder may keep some blocks of a chain and not others).
            let mut next = after + 1;
            blocks.retain(|b| {
                let ok = b.peek::<Block>().is_ok_and(|b| b.seq == next);
                next += u64::from(ok);
                ok
            });
            if blocks.is_empty() {
                return self.read_elsewhere(owner, after, fallback, now);
            }
        }
        for b in &blocks {
            self.check_against_held(owner, b, now);
            self.keep_copy(owner, b, now);
        }
        match self.credit.on_blocks(owner, &blocks, now) {
            Ok(true) => {
                let after = self.credit.start_audit(owner, now);
                fallback.retain(|n| *n != asked);
                self.ask_chain(ChainRead {
                    owner,
                    after,
                    asked,
                    fallback,
                });
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(chain = %owner.short(), error = %e, "its credit chain does not audit: it has no credit here")
            }
        }
        self.settle_backing(now);
    }

    /// The chain could not be read at the node asked: the next holder, if
    /// any.
    fn read_elsewhere(&mut self, owner: NodeId, after: u64, mut fallback: Vec<NodeId>, now: Timestamp) {
        if fallback.is_empty() {
            self.credit.audit_failed(owner, now);
            return self.settle_backing(now);
        }
        let asked = fallback.remove(0);
        self.ask_chain(ChainRead {
            owner,
            after,
            asked,
            fallback,
        });
    }

    /// Keeps `block` of `owner`'s chain, and the payer's block any `Receive`
    /// carries: copies served to other auditors (SPEC.md §8.6), and
    /// compared with what others show at those positions.
    fn keep_copy(&mut self, owner: NodeId, block: &Envelope, now: Timestamp) {
        let Ok(b) = block.peek::<Block>() else {
            return;
        };
        fn keep(writes: &mut crate::records::Writes, owner: &NodeId, seq: u64, env: &Envelope) {
            writes.put(
                records::held_key(owner, seq),
                &Stored {
                    envelope: agora_protocol::id::to_hex(env.to_bytes()),
                },
            );
        }
        keep(&mut self.writes, &owner, b.seq, block);
        // Gossiped with the other heads: forks come to light, and auditors
        // learn where a copy is kept.
        self.note_head(owner, b.seq, block_hash(block));
        if let Entry::Receive(pay) = &b.entry
            && let Ok(p) = pay.peek::<Block>()
        {
            let payer = pay.claimed_signer();
            if payer == self.local {
                return;
            }
            if self.held_block(&payer, p.seq).is_none() {
                keep(&mut self.writes, &payer, p.seq, pay);
            } else {
                self.check_against_held(payer, pay, now);
            }
        }
    }

    /// Settles the backing of the chains known as far as they allow, reads
    /// the payers' chains it waits on, and reports the audits the owner
    /// asked for that have gone as far as they can.
    pub(super) fn settle_backing(&mut self, now: Timestamp) {
        // While the owner waits for an audit, a payer's chain not read since
        // it asked is read now, however recently it was read before.
        let asked = self.audits.values().min().copied();
        for (src, payee) in self.credit.settle(self.local) {
            if let Some(after) = self.credit.read_for(&src, now, asked) {
                self.read_chain(src.payer, after, Some(payee), now);
            }
        }
        let done: Vec<NodeId> = self
            .audits
            .keys()
            .filter(|o| self.credit.settled(o))
            .copied()
            .collect();
        self.answer_parked(now);
        self.attest_checkpoints(now);
        for owner in done {
            let result = match self.credit.audit_of(&owner) {
                Some(Ok((audit, backing))) => Ok(AuditReport::of(audit, backing)),
                Some(Err(e)) => Err(format!("the chain does not audit: {e}")),
                None => Err("cannot read the chain from it or from any node known to keep a copy".into()),
            };
            self.audited(owner, result);
        }
    }

    fn audited(&mut self, owner: NodeId, result: Result<AuditReport, String>) {
        self.audits.remove(&owner);
        self.out.push(Output::Audited { owner, result });
    }

    /// Audits `owner`'s chain, fetched from `owner` itself or from nodes
    /// that keep copies, and backs the credits it counts by auditing its
    /// payers' chains in turn; the report comes as [`Output::Audited`].
    pub fn audit(&mut self, owner: NodeId, now: Timestamp) {
        if self.audits.insert(owner, now).is_some() {
            return;
        }
        // From where this node's audit of the chain stands (every block
        // before was checked when it came), brought up to date now. A read
        // already under way goes on to the chain's end: a second one from
        // the same position would cross it, and its answer, the same blocks
        // again, would end the audit where the first stood.
        if !self.credit.is_auditing(&owner) {
            let after = self.credit.start_audit(owner, now);
            self.read_chain(owner, after, None, now);
        }
        self.settle_backing(now);
    }

    /// Serves blocks of a chain this node holds: at most a page, and at
    /// most [`MAX_CHAIN_BYTES`] of them (a checkpoint block is large).
    pub(super) fn serve_chain(&mut self, owner: NodeId, after: u64, reply: ReplyId) {
        let mut blocks = self
            .ledger
            .blocks(self.host.as_ref(), &owner, after, MAX_CHAIN_PAGE)
            .unwrap_or_default();
        let mut bytes = 0;
        if let Some(cut) = blocks.iter().position(|b| {
            bytes += b.encoded_len();
            bytes > MAX_CHAIN_BYTES
        }) {
            blocks.truncate(cut.max(1));
        }
        self.out.push(Output::Respond {
            reply,
            response: MarketResponse::Chain(blocks),
        });
    }

    /// Takes an issuer's grant to this node; the credits count once the
    /// turn's writes are durable.
    pub fn grant(&mut self, grant: &Envelope, now: Timestamp) -> Result<Credits, Refused> {
        let issuers = self.credit.config().issuers.clone();
        let block = self
            .ledger
            .grant(self.host.as_ref(), grant, &|n| issuers.contains(n))?;
        let amount = match &block.entry {
            Entry::Grant(g) => g
                .open_ignoring_time::<agora_protocol::chain::Grant>()
                .map_or(Credits(0), |g| g.payload().amount),
            _ => Credits(0),
        };
        let env = self.seal(&block, Block::MAX_LIFETIME, now);
        self.ledger.append(&mut self.writes, &block, &env);
        self.note_head(self.local, block.seq, block_hash(&env));
        self.must_flush = true;
        Ok(amount)
    }

    fn note_head(&mut self, owner: NodeId, seq: u64, hash: ContentId) {
        if self.heads.len() >= MAX_KNOWN_HEADS && !self.heads.contains_key(&owner) {
            return;
        }
        let e = self.heads.entry(owner).or_insert((seq, hash));
        if seq >= e.0 {
            *e = (seq, hash);
            if self.heads_moved.len() < MAX_HEADS {
                self.heads_moved.insert(owner);
            }
        }
    }

    /// Gossips the heads of the chains this node holds blocks of.
    pub(super) fn publish_heads(&mut self, now: Timestamp) {
        // Only heads that moved since the last message, and all of them
        // every HEADS_REFRESH: an idle network sends (almost) nothing.
        let refresh = now.since(self.heads_refreshed) >= HEADS_REFRESH;
        if refresh {
            self.heads_refreshed = now;
        }
        let moved = std::mem::take(&mut self.heads_moved);
        let heads: Vec<Head> = self
            .heads
            .iter()
            .filter(|(owner, _)| refresh || moved.contains(*owner))
            .take(MAX_HEADS)
            .map(|(owner, (seq, hash))| Head {
                owner: *owner,
                seq: *seq,
                hash: *hash,
            })
            .collect();
        if heads.is_empty() {
            return;
        }
        let env = self.seal(&Heads { heads }, Heads::MAX_LIFETIME, now);
        self.out.push(Output::Publish {
            topic: HEADS_TOPIC.to_owned(),
            data: env.to_bytes(),
        });
    }

    /// Heads from gossip: any held block that differs at one of those
    /// positions is compared with the publisher's.
    pub(super) fn on_heads(&mut self, data: &[u8], now: Timestamp) -> Verdict {
        let Ok(env) = Envelope::from_bytes(data) else {
            return Verdict::Reject;
        };
        let Ok(v) = env.open::<Heads>(now) else {
            return Verdict::Reject;
        };
        let publisher = v.signer();
        for h in &v.payload().heads {
            if h.owner == self.local || self.credit.is_forked(&h.owner) {
                continue;
            }
            self.note_holder(h.owner, publisher);
            if let Some(held) = self.held_block(&h.owner, h.seq)
                && block_hash(&held) != h.hash
            {
                // A publisher claiming forks everywhere gets a bounded
                // number of questions a minute; a real fork is found by
                // the next honest publisher or audit.
                if !self.fork_quota.allow(publisher, now) {
                    break;
                }
                let pending = Pending::ForkCheck {
                    owner: h.owner,
                    seq: h.seq,
                    hash: h.hash,
                    held,
                };
                let request = MarketRequest::Chain {
                    owner: h.owner,
                    after: h.seq - 1,
                };
                let out = self.request(publisher, request, Vec::new(), pending);
                self.out.push(out);
            }
        }
        Verdict::Accept
    }

    /// `holder` gossiped a head of `owner`'s chain: it keeps blocks of it,
    /// and may be asked for them when `owner` cannot answer.
    fn note_holder(&mut self, owner: NodeId, holder: NodeId) {
        if holder == owner || (self.holders.len() >= MAX_KNOWN_HEADS && !self.holders.contains_key(&owner)) {
            return;
        }
        let list = self.holders.entry(owner).or_default();
        list.retain(|n| *n != holder);
        list.insert(0, holder);
        list.truncate(MAX_HOLDERS);
    }

    fn held_block(&self, owner: &NodeId, seq: u64) -> Option<Envelope> {
        if seq == 0 {
            return None;
        }
        records::get::<Stored>(self.host.as_ref(), &records::held_key(owner, seq))
            .ok()
            .flatten()
            .and_then(|s| s.envelope())
    }

    /// The block a heads message claimed arrived: a fork if it differs from
    /// the one held.
    pub(super) fn on_fork_check(
        &mut self,
        (owner, seq, hash, held): (NodeId, u64, ContentId, Envelope),
        answer: Result<MarketResponse, String>,
        now: Timestamp,
    ) {
        let Ok(MarketResponse::Chain(blocks)) = answer else {
            return;
        };
        let Some(theirs) = blocks.into_iter().next() else {
            return;
        };
        if block_hash(&theirs) != hash {
            return;
        }
        self.prove_fork(owner, seq, held, theirs, now);
    }

    /// A block of `owner`'s chain received now, its signature already
    /// checked: compared with the one held at its position (a payment
    /// received, or an audit's recent blocks).
    fn check_held(&mut self, owner: NodeId, block: &Envelope, now: Timestamp) {
        self.check_against_held(owner, block, now);
        if let Ok(b) = block.peek::<Block>() {
            self.note_head(owner, b.seq, block_hash(block));
        }
    }

    fn check_against_held(&mut self, owner: NodeId, block: &Envelope, now: Timestamp) {
        // Unverified: a block that differs is checked with the proof.
        let Ok(b) = block.peek::<Block>() else {
            return;
        };
        let seq = b.seq;
        if let Some(held) = self.held_block(&owner, seq)
            && held != *block
        {
            self.prove_fork(owner, seq, held, block.clone(), now);
        }
    }

    fn prove_fork(&mut self, owner: NodeId, seq: u64, first: Envelope, second: Envelope, now: Timestamp) {
        let proof = ForkProof { first, second };
        if proof.check() != Ok(owner) {
            return;
        }
        tracing::warn!(node = %owner, seq, "the node forked its credit chain: refusing it, publishing the proof");
        self.forked(owner);
        let env = self.seal(&proof, ForkProof::MAX_LIFETIME, now);
        self.counters.fraud_published += 1;
        self.out.push(Output::Publish {
            topic: FRAUD_TOPIC.to_owned(),
            data: env.to_bytes(),
        });
    }

    fn forked(&mut self, node: NodeId) {
        self.credit.forked(node);
        self.requester.ban(node, "forked its credit chain".into());
    }

    /// A fork proof from gossip: cheap to check (two signatures), so it is
    /// forwarded at once when it holds.
    pub(super) fn on_fork_proof(&mut self, env: &Envelope, now: Timestamp) -> Verdict {
        let Ok(v) = env.open::<ForkProof>(now) else {
            return Verdict::Reject;
        };
        let Ok(forker) = v.payload().check() else {
            return Verdict::Reject;
        };
        if self.credit.is_forked(&forker) {
            return Verdict::Ignore;
        }
        tracing::warn!(node = %forker, "fork proof checked: refusing the node");
        self.counters.fraud_confirmed += 1;
        self.forked(forker);
        Verdict::Accept
    }
}

/// Checkpoints (SPEC.md §8.6, "Checkpoints"): a node summarises its own
/// chain every `checkpoint_every` blocks; its auditors, once they have
/// audited and backed the chain through a checkpoint, attest it to the
/// owner, which serves the checkpoint with its attestations; an auditor
/// with no audit of a chain starts at the latest checkpoint an auditor it
/// trusts (itself, an issuer, or one its configuration names) attested.
impl Engine {
    /// Appends a checkpoint when one is due.
    pub(super) fn make_checkpoint(&mut self, now: Timestamp) {
        // One that could not be made is tried again some blocks later.
        if !self.ledger.checkpoint_due(self.config.checkpoint_every)
            || (self.checkpoint_tried > 0
                && self.ledger.state().seq < self.checkpoint_tried + CHECKPOINT_RETRY)
        {
            return;
        }
        self.checkpoint_tried = self.ledger.state().seq;
        let Some(summary) = self.ledger.summary(now, CHECKPOINT_QUIET) else {
            tracing::warn!("no checkpoint: the chain's summary would list more than a checkpoint carries");
            return;
        };
        let block = self.ledger.next(Entry::Checkpoint(summary));
        let env = self.seal(&block, Block::MAX_LIFETIME, now);
        if env.encoded_len() > agora_protocol::limits::MAX_ENVELOPE {
            return;
        }
        self.ledger.append(&mut self.writes, &block, &env);
        self.note_head(self.local, block.seq, block_hash(&env));
        self.counters.checkpoints += 1;
        tracing::debug!(seq = block.seq, bytes = env.encoded_len(), "checkpoint appended");
    }

    /// Attests the checkpoints of other chains this node has audited and
    /// backed through, to their owners.
    pub(super) fn attest_checkpoints(&mut self, now: Timestamp) {
        for (owner, seq, hash) in self.credit.take_attestable() {
            if owner == self.local {
                continue;
            }
            let env = self.seal(&Attestation { owner, seq, hash }, Attestation::MAX_LIFETIME, now);
            let out = self.request(
                owner,
                MarketRequest::Attest(env),
                Vec::new(),
                Pending::Attest { owner },
            );
            self.out.push(out);
        }
    }

    /// An attestation of one of this node's checkpoints: kept (up to
    /// [`MAX_ATTESTATIONS`] per checkpoint) and served with it.
    pub(super) fn on_attest(&mut self, env: &Envelope, reply: ReplyId) {
        let response = match self.take_attestation(env) {
            Ok(()) => MarketResponse::Ack,
            Err(e) => MarketResponse::Declined(Decline::invalid(e)),
        };
        self.out.push(Output::Respond { reply, response });
    }

    fn take_attestation(&mut self, env: &Envelope) -> Result<(), String> {
        let v = env
            .open_ignoring_time::<Attestation>()
            .map_err(|e| format!("the attestation does not verify: {e}"))?;
        let a = v.payload();
        if a.owner != self.local {
            return Err("the attestation is of another node's chain".into());
        }
        let ours = self
            .ledger
            .blocks(self.host.as_ref(), &self.local, a.seq.saturating_sub(1), 1)
            .map_err(|e| e.to_string())?
            .pop()
            .filter(|b| block_hash(b) == a.hash)
            .ok_or("the attestation names no block of this chain")?;
        if !matches!(ours.peek::<Block>().map(|b| b.entry), Ok(Entry::Checkpoint(_))) {
            return Err("the attestation names a block that is not a checkpoint".into());
        }
        let held = self
            .host
            .records(&records::attestations_of(a.seq))
            .map_err(|e| e.to_string())?;
        let key = records::attestation_key(a.seq, &v.signer());
        if held.len() >= MAX_ATTESTATIONS || held.iter().any(|(k, _)| *k == key) {
            return Ok(());
        }
        self.writes.put(
            key,
            &Stored {
                envelope: agora_protocol::id::to_hex(env.to_bytes()),
            },
        );
        self.counters.attestations_in += 1;
        Ok(())
    }

    /// Serves this node's latest checkpoint that `peer` attested, or else
    /// its latest attested one (its latest, when none is), with its
    /// attestations.
    pub(super) fn serve_checkpoint(&mut self, peer: NodeId, owner: NodeId, reply: ReplyId) {
        let response = match self.latest_checkpoint(peer, owner) {
            Some((block, attestations)) => MarketResponse::ChainCheckpoint { block, attestations },
            None => MarketResponse::Declined(Decline::Unknown),
        };
        self.out.push(Output::Respond { reply, response });
    }

    fn latest_checkpoint(&self, peer: NodeId, owner: NodeId) -> Option<(Envelope, Vec<Envelope>)> {
        let last = self.ledger.state().checkpoint;
        if owner != self.local || last == 0 {
            return None;
        }
        let host = self.host.as_ref();
        // The latest attestations, newest first: `seq/auditor` keys.
        let recent: Vec<(u64, NodeId)> = host
            .records_rev(records::ATTESTATION, ATTESTATIONS_SEARCHED)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, _)| records::attestation_after(&k))
            .collect();
        let by_peer = recent.iter().find(|(_, a)| *a == peer);
        let seq = by_peer.or(recent.first()).map_or(last, |(s, _)| *s);
        let block = self.ledger.blocks(host, &self.local, seq - 1, 1).ok()?.pop()?;
        let attestations = host
            .records(&records::attestations_of(seq))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, b)| records::decode::<Stored>(&k, &b).ok()?.envelope())
            .take(MAX_ATTESTATIONS)
            .collect();
        Some((block, attestations))
    }

    /// A chain's latest checkpoint arrived (or did not): the audit starts
    /// there if an auditor this node trusts attested it, else at block 1.
    pub(super) fn on_chain_checkpoint(
        &mut self,
        read: ChainRead,
        answer: Result<MarketResponse, String>,
        now: Timestamp,
    ) {
        let owner = read.owner;
        let mut after = 0;
        if let Ok(MarketResponse::ChainCheckpoint { block, attestations }) = answer {
            let named = |a: &Attestation| {
                a.owner == owner
                    && block
                        .peek::<Block>()
                        .is_ok_and(|b| b.seq == a.seq && block_hash(&block) == a.hash)
            };
            let trusted = attestations.iter().any(|e| {
                e.open_ignoring_time::<Attestation>().is_ok_and(|v| {
                    named(v.payload())
                        && (v.signer() == self.local || self.credit.trusts_auditor(&v.signer()))
                })
            });
            if trusted {
                self.check_against_held(owner, &block, now);
                match self.credit.resume(owner, &block) {
                    Ok(seq) if seq > 0 => {
                        self.keep_copy(owner, &block, now);
                        self.counters.audits_resumed += 1;
                        after = seq;
                    }
                    // A chain refused here is not audited from a checkpoint.
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(chain = %owner.short(), error = %e, "its attested checkpoint does not open")
                    }
                }
            }
        }
        self.read_chain_from(owner, after, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::{Keypair, MessageId, TaskId};

    fn voucher(n: u8, provider: NodeId) -> Voucher {
        Voucher {
            receipt: MessageId([n; 32]),
            agreement: MessageId([n; 32]),
            task: TaskId {
                job: agora_protocol::JobId([n; 16]),
                index: u32::from(n),
            },
            provider,
            fuel: agora_protocol::units::Fuel(1_000),
            price: Price(1_000),
            amount: Credits(0),
        }
    }

    fn node(seed: u8) -> NodeId {
        Keypair::from_secret([seed; 32]).node_id()
    }

    #[test]
    fn a_voucher_waits_until_the_first_of_its_payee_has_waited_a_moment() {
        let (a, t0) = (node(1), Timestamp(1_000_000));
        let mut owed = Owed::default();
        owed.owe(a, voucher(1, a), t0);
        owed.owe(a, voucher(2, a), t0.add(Duration::from_millis(15)));
        assert!(owed.take_due(false, t0.add(Duration::from_millis(19))).is_empty());
        assert_eq!(owed.len(), 2);
        let due = owed.take_due(false, t0.add(PAY_EVERY));
        assert_eq!(due.len(), 1);
        let receipts: Vec<u8> = due[0].1.iter().map(|v| v.receipt.0[0]).collect();
        assert_eq!(
            (due[0].0, receipts),
            (a, vec![1, 2]),
            "both, in the order decided"
        );
        assert!(owed.is_empty());
    }

    #[test]
    fn a_block_s_worth_of_vouchers_is_paid_at_once() {
        let (a, b, t0) = (node(1), node(2), Timestamp(1_000_000));
        let mut owed = Owed::default();
        for n in 0..MAX_VOUCHERS as u8 {
            owed.owe(a, voucher(n, a), t0);
        }
        owed.owe(b, voucher(200, b), t0);
        let due = owed.take_due(false, t0);
        assert_eq!(due.len(), 1, "only the payee owed a full block");
        assert_eq!((due[0].0, due[0].1.len()), (a, MAX_VOUCHERS));
        assert_eq!(owed.len(), 1);
    }

    #[test]
    fn all_takes_every_payee_at_once() {
        let (a, b, t0) = (node(1), node(2), Timestamp(1_000_000));
        let mut owed = Owed::default();
        owed.owe(a, voucher(1, a), t0);
        owed.owe(b, voucher(2, b), t0);
        assert_eq!(owed.take_due(true, t0).len(), 2);
        assert!(owed.is_empty());
    }
}

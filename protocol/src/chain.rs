//! Credit chains: every node's own append-only, hash-linked log of what it
//! paid and received, signed block by block, that anyone can audit
//! (SPEC.md §8.6). No global ledger: a node's balance is what its chain
//! says, and its chain can be checked by anyone who fetches it.
//!
//! * A [`Block`] is one entry of its owner's chain: a position (`seq`, from
//!   1), the hash of the previous block's envelope ([`Block::prev`]), and an
//!   [`Entry`]. Its envelope is signed by the owner.
//! * Credits come from **issuers** only: an issuer signs a [`Grant`] to a
//!   node, which records it in an [`Entry::Grant`]. Which keys are issuers
//!   is each network's configuration.
//! * A **payment** is two linked blocks: the payer's [`Entry::Pay`] (its
//!   voucher for a receipt), and the payee's [`Entry::Receive`], which
//!   carries the payer's signed block whole: the payee countersigns the
//!   payment, and its own chain proves every credit it counts.
//! * A node that shows two different blocks at one position to two peers
//!   has **forked** its chain; the two signed blocks are a [`ForkProof`]
//!   anyone can check. Nodes gossip the [`Heads`] of the chains they hold,
//!   so that forks come to light.
//! * [`Audit`] checks a chain block by block (incrementally: a verifier
//!   keeps the state and applies new blocks as they come) and yields its
//!   balance.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::envelope::{Envelope, OpenError, Payload, PayloadType, Verified};
use crate::id::{ContentId, NodeId};
use crate::settlement::Voucher;
use crate::units::Credits;
use crate::wire::{Decode, DecodeError, Encode, Reader, Writer};
use crate::wire_struct;

/// How long chain records stay valid: they are records, judged by their
/// content long after they were signed.
const RECORD_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Credits an issuer creates for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who receives them.
    pub to: NodeId,
    /// How many.
    pub amount: Credits,
    /// Unique per issuer: a grant counts once.
    pub id: [u8; 16],
}

wire_struct!(Grant { to, amount, id });

impl Payload for Grant {
    const TYPE: PayloadType = PayloadType::Grant;
    const DOMAIN: &'static str = "agora/1/chain/grant";
    const MAX_LIFETIME: Duration = RECORD_LIFETIME;
}

/// What a block records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An issuer's signed [`Grant`] to the owner: credits created.
    Grant(Envelope),
    /// The owner pays `voucher.provider` `voucher.amount` for a receipt.
    Pay(Voucher),
    /// The owner receives a payment: the payer's signed [`Block`] whose
    /// entry is a [`Entry::Pay`] or [`Entry::PayMany`] to the owner,
    /// carried whole.
    Receive(Envelope),
    /// The owner pays one provider for several receipts at once (2 to
    /// [`MAX_VOUCHERS`] vouchers, every one to the same provider, no
    /// receipt twice): one block, one countersignature, for all of them.
    PayMany(Vec<Voucher>),
    /// A summary of the chain through the block before: what an audit
    /// that starts here needs instead of the blocks before it
    /// (SPEC.md §8.6, "Checkpoints").
    Checkpoint(Summary),
}

/// Most vouchers one [`Entry::PayMany`] carries.
pub const MAX_VOUCHERS: usize = 32;

impl Entry {
    /// The vouchers a payment block carries (none for other entries).
    pub fn vouchers(&self) -> &[Voucher] {
        match self {
            Entry::Pay(v) => std::slice::from_ref(v),
            Entry::PayMany(vs) => vs,
            Entry::Grant(_) | Entry::Receive(_) | Entry::Checkpoint(_) => &[],
        }
    }

    /// For a payment block, whom it pays and how much in all, once its
    /// vouchers are checked: each amount is what its fuel and price make,
    /// every voucher names the same provider, and no receipt is paid twice
    /// within the block. `None` for other entries.
    pub fn payment(&self) -> Option<Result<(NodeId, u64), &'static str>> {
        let vs = self.vouchers();
        let first = vs.first()?;
        if let Entry::PayMany(_) = self
            && !(2..=MAX_VOUCHERS).contains(&vs.len())
        {
            return Some(Err("a block paying several receipts carries 2 to 32 vouchers"));
        }
        let mut total = 0u64;
        for (i, v) in vs.iter().enumerate() {
            if !v.amount_is_consistent() {
                return Some(Err("the payment is inconsistent"));
            }
            if v.provider != first.provider {
                return Some(Err("the block pays more than one provider"));
            }
            if vs[..i].iter().any(|w| w.receipt == v.receipt) {
                return Some(Err("the block pays one receipt twice"));
            }
            total = total.saturating_add(v.amount.0);
        }
        Some(Ok((first.provider, total)))
    }
}

impl Encode for Entry {
    fn encode(&self, w: &mut Writer) {
        match self {
            Entry::Grant(e) => {
                w.u8(0);
                e.encode(w)
            }
            Entry::Pay(v) => {
                w.u8(1);
                v.encode(w)
            }
            Entry::Receive(e) => {
                w.u8(2);
                e.encode(w)
            }
            Entry::PayMany(vs) => {
                w.u8(3);
                vs.encode(w)
            }
            Entry::Checkpoint(s) => {
                w.u8(4);
                s.encode(w)
            }
        }
    }
}

impl Decode for Entry {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => Entry::Grant(Decode::decode(r)?),
            1 => Entry::Pay(Decode::decode(r)?),
            2 => Entry::Receive(Decode::decode(r)?),
            3 => Entry::PayMany(crate::wire::Limited::decode_limited(r, MAX_VOUCHERS, "vouchers")?),
            4 => Entry::Checkpoint(Decode::decode(r)?),
            tag => {
                return Err(DecodeError::InvalidTag {
                    field: "chain entry",
                    tag,
                });
            }
        })
    }
}

/// Most grants a [`Summary`] lists.
pub const MAX_SUMMARY_GRANTS: usize = 64;
/// Most payers a [`Summary`] lists floors for.
pub const MAX_SUMMARY_FLOORS: usize = 512;
/// Most payments a [`Summary`] lists as received above their payers'
/// floors.
pub const MAX_SUMMARY_RECENT: usize = 512;

/// A grant a chain took: its issuer, its id and its amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantTaken {
    /// Who signed it.
    pub issuer: NodeId,
    /// Its id.
    pub id: [u8; 16],
    /// Its amount, in micro-credits.
    pub amount: u64,
}

wire_struct!(GrantTaken { issuer, id, amount });

/// One block of a payer's chain (`payer`, `seq`): a payment received, or
/// a payer's floor (every payment of `payer` at `seq` or below is spent
/// for this chain: received already, or never to be).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The payer.
    pub payer: NodeId,
    /// The position in its chain.
    pub seq: u64,
}

wire_struct!(Position { payer, seq });

/// What a [`Entry::Checkpoint`] states about the chain through the block
/// before it: its totals and what an audit must remember so that nothing
/// counts twice. Every list is in increasing order, without repeats (the
/// order of the encodings' fields: node ids compare as bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Credits received, in micro-credits.
    pub received: u64,
    /// Credits paid.
    pub paid: u64,
    /// Every grant the chain took, of any issuer: a grant counts once, and
    /// each auditor counts those of the issuers it trusts.
    pub grants: Vec<GrantTaken>,
    /// Per payer, the position at or below which no payment of it may be
    /// received any more.
    pub floors: Vec<Position>,
    /// Payments received above their payer's floor.
    pub recent: Vec<Position>,
}

wire_struct!(Summary {
    received,
    paid,
    grants < MAX_SUMMARY_GRANTS,
    floors < MAX_SUMMARY_FLOORS,
    recent < MAX_SUMMARY_RECENT,
});

impl Summary {
    /// The floor of `payer`'s payments (0: none).
    pub fn floor(&self, payer: &NodeId) -> u64 {
        self.floors
            .binary_search_by(|f| f.payer.cmp(payer))
            .map_or(0, |i| self.floors[i].seq)
    }

    /// Whether every list is in increasing order without repeats.
    pub fn is_canonical(&self) -> bool {
        let sorted = |a: &[Position]| a.windows(2).all(|w| w[0] < w[1]);
        self.grants
            .windows(2)
            .all(|w| (w[0].issuer, w[0].id) < (w[1].issuer, w[1].id))
            && self.floors.windows(2).all(|w| w[0].payer < w[1].payer)
            && sorted(&self.recent)
    }
}

/// An auditor's signed statement that it audited a chain through one of
/// its checkpoints and backed every credit counted there (SPEC.md §8.6,
/// "Checkpoints"): whoever trusts the auditor may start its own audit of
/// the chain at that block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attestation {
    /// Whose chain.
    pub owner: NodeId,
    /// The checkpoint's position.
    pub seq: u64,
    /// The checkpoint block's hash.
    pub hash: ContentId,
}

wire_struct!(Attestation { owner, seq, hash });

impl Payload for Attestation {
    const TYPE: PayloadType = PayloadType::Attestation;
    const DOMAIN: &'static str = "agora/1/chain/attest";
    const MAX_LIFETIME: Duration = RECORD_LIFETIME;
}

/// Most attestations of one checkpoint a node keeps and serves.
pub const MAX_ATTESTATIONS: usize = 16;

/// One entry of a node's chain, signed by the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Its position: 1 for the first block, then one more each.
    pub seq: u64,
    /// The hash of the previous block's envelope (all zeros for the first).
    pub prev: ContentId,
    /// What it records.
    pub entry: Entry,
}

wire_struct!(Block { seq, prev, entry });

impl Payload for Block {
    const TYPE: PayloadType = PayloadType::Block;
    const DOMAIN: &'static str = "agora/1/chain/block";
    const MAX_LIFETIME: Duration = RECORD_LIFETIME;
}

/// The hash that links a block to the next: blake3 of its envelope bytes.
pub fn block_hash(block: &Envelope) -> ContentId {
    ContentId::of(&block.to_bytes())
}

/// Two different blocks one node signed at the same position of its
/// chain: proof that it showed different histories to different peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkProof {
    /// One block.
    pub first: Envelope,
    /// Another at the same position.
    pub second: Envelope,
}

wire_struct!(ForkProof { first, second });

impl Payload for ForkProof {
    const TYPE: PayloadType = PayloadType::ForkProof;
    const DOMAIN: &'static str = "agora/1/chain/fork";
    const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
}

/// Why a fork proof proves nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForkProofError {
    /// A block does not verify.
    #[error("a block does not verify: {0}")]
    Block(#[from] OpenError),
    /// The blocks are by different nodes, at different positions, or the
    /// same block.
    #[error("the blocks do not conflict")]
    NoConflict,
}

impl ForkProof {
    /// The node that forked, if the proof holds.
    pub fn check(&self) -> Result<NodeId, ForkProofError> {
        let a = self.first.open_ignoring_time::<Block>()?;
        let b = self.second.open_ignoring_time::<Block>()?;
        if a.signer() != b.signer() || a.payload().seq != b.payload().seq || a.id() == b.id() {
            return Err(ForkProofError::NoConflict);
        }
        Ok(a.signer())
    }
}

/// The latest block a node holds of some chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Head {
    /// Whose chain.
    pub owner: NodeId,
    /// Its position.
    pub seq: u64,
    /// Its hash.
    pub hash: ContentId,
}

wire_struct!(Head { owner, seq, hash });

/// Most heads in one [`Heads`] message.
pub const MAX_HEADS: usize = 64;

/// Heads of chains a node holds blocks of, gossiped so that anyone holding
/// a different block at one of those positions finds the fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heads {
    /// The heads.
    pub heads: Vec<Head>,
}

wire_struct!(Heads { heads < MAX_HEADS });

impl Payload for Heads {
    const TYPE: PayloadType = PayloadType::Heads;
    const DOMAIN: &'static str = "agora/1/chain/heads";
    const MAX_LIFETIME: Duration = Duration::from_secs(60);
}

/// Why a chain does not audit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// A block does not verify, or is not signed by the chain's owner.
    #[error("block {seq}: {reason}")]
    Block {
        /// Its position.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A block is not the next one: a gap or a broken link.
    #[error("block {seq} does not follow block {after}")]
    Link {
        /// The block's position.
        seq: u64,
        /// The position it should follow.
        after: u64,
    },
    /// A grant that does not verify, is to another node, or is counted
    /// twice.
    #[error("block {seq}: {reason}")]
    Grant {
        /// The block's position.
        seq: u64,
        /// Why.
        reason: &'static str,
    },
    /// A checkpoint whose summary is not the chain's.
    #[error("block {seq}: {reason}")]
    Checkpoint {
        /// The block's position.
        seq: u64,
        /// Why.
        reason: &'static str,
    },
    /// A payment that is not one: inconsistent, to itself, or received
    /// twice.
    #[error("block {seq}: {reason}")]
    Payment {
        /// The block's position.
        seq: u64,
        /// Why.
        reason: &'static str,
    },
}

/// What one block counted, as [`Audit::apply`] found it: what a
/// further check of the credits' sources (SPEC.md §8.6, "Backing") needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Credits granted by an issuer the auditor trusts (0 for another).
    Grant(u64),
    /// Credits paid.
    Pay(u64),
    /// Credits received, with the payer's block they came with.
    Receive(Source),
    /// A checkpoint whose summary matched the audit: nothing counted. Its
    /// block's hash.
    Checkpoint(ContentId),
}

/// Where received credits came from: one block of the payer's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// The payer.
    pub payer: NodeId,
    /// The position of its payment block.
    pub seq: u64,
    /// That block's hash.
    pub hash: ContentId,
    /// The amount.
    pub amount: u64,
}

/// How much of a block an audit checks itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Every signature.
    All,
    /// Not the block's own signature: a later block of its owner, whose
    /// signature was checked, links to it.
    Vouched,
    /// No signature at all: the auditor's own chain, read from its own
    /// records.
    Own,
}

/// An audit of one node's chain, as far as it has gone.
#[derive(Debug, Clone)]
pub struct Audit {
    /// Whose chain.
    pub owner: NodeId,
    /// The last block applied (0: none).
    pub seq: u64,
    /// Its hash (all zeros before the first).
    pub head: ContentId,
    /// Credits granted.
    pub granted: u64,
    /// Credits received.
    pub received: u64,
    /// Credits paid.
    pub paid: u64,
    /// The position of the first block applied (1, or the checkpoint the
    /// audit started from).
    pub start: u64,
    /// Grants counted, by (issuer, id), with their amounts.
    grants: HashMap<(NodeId, [u8; 16]), u64>,
    /// Per payer, the position at or below which no payment counts any
    /// more (from the last checkpoint).
    floors: HashMap<NodeId, u64>,
    /// Payments received above their payers' floors.
    recent: HashSet<Position>,
}

impl Audit {
    /// An audit of `owner`'s chain from its first block.
    pub fn new(owner: NodeId) -> Audit {
        Audit {
            owner,
            seq: 0,
            head: ContentId([0; 32]),
            granted: 0,
            received: 0,
            paid: 0,
            start: 1,
            grants: HashMap::new(),
            floors: HashMap::new(),
            recent: HashSet::new(),
        }
    }

    /// An audit of `owner`'s chain that starts at `checkpoint`, one of its
    /// blocks whose entry is a [`Entry::Checkpoint`], taking the summary at
    /// its word: for a checkpoint attested by an auditor the caller trusts
    /// (SPEC.md §8.6, "Checkpoints"). `issuer` says which grants count.
    pub fn resume(
        owner: NodeId,
        checkpoint: &Envelope,
        issuer: &dyn Fn(&NodeId) -> bool,
    ) -> Result<Audit, AuditError> {
        let v = checkpoint
            .open_ignoring_time::<Block>()
            .map_err(|e| AuditError::Block {
                seq: 0,
                reason: e.to_string(),
            })?;
        let b = v.payload();
        let fail = |reason| AuditError::Checkpoint { seq: b.seq, reason };
        if v.signer() != owner {
            return Err(fail("the checkpoint is signed by another node"));
        }
        let Entry::Checkpoint(s) = &b.entry else {
            return Err(fail("the block is not a checkpoint"));
        };
        if !s.is_canonical() {
            return Err(fail("the summary's lists are not in order"));
        }
        Ok(Audit {
            owner,
            seq: b.seq,
            head: block_hash(checkpoint),
            granted: s
                .grants
                .iter()
                .filter(|g| issuer(&g.issuer))
                .fold(0u64, |t, g| t.saturating_add(g.amount)),
            received: s.received,
            paid: s.paid,
            start: b.seq,
            grants: s.grants.iter().map(|g| ((g.issuer, g.id), g.amount)).collect(),
            floors: s.floors.iter().map(|f| (f.payer, f.seq)).collect(),
            recent: s.recent.iter().copied().collect(),
        })
    }

    /// The balance so far, in micro-credits (negative: a debt).
    pub fn balance(&self) -> i64 {
        (i128::from(self.granted) + i128::from(self.received) - i128::from(self.paid))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// The position of `payer`'s chain at or below which no payment of it
    /// counts any more (0: none).
    pub fn floor(&self, payer: &NodeId) -> u64 {
        self.floors.get(payer).copied().unwrap_or(0)
    }

    /// Whether a payment at `at` counted already (above its payer's
    /// floor; at or below it nothing counts).
    pub fn has_received(&self, at: &Position) -> bool {
        self.recent.contains(at)
    }

    /// The summary a checkpoint appended now must state. Each payer's
    /// floor rises to the highest of its payments received for which
    /// `fold` holds; the payments above the floors stay listed. `None` if
    /// a list would be longer than a summary may carry.
    pub fn summary(&self, fold: &dyn Fn(&Position) -> bool) -> Option<Summary> {
        let mut floors = self.floors.clone();
        for p in self.recent.iter().filter(|p| fold(p)) {
            let f = floors.entry(p.payer).or_insert(0);
            *f = (*f).max(p.seq);
        }
        let mut recent: Vec<Position> = self
            .recent
            .iter()
            .filter(|p| p.seq > floors.get(&p.payer).copied().unwrap_or(0))
            .copied()
            .collect();
        let mut floors: Vec<Position> = floors
            .into_iter()
            .map(|(payer, seq)| Position { payer, seq })
            .collect();
        floors.sort_unstable();
        recent.sort_unstable();
        let mut grants: Vec<GrantTaken> = self
            .grants
            .iter()
            .map(|(&(issuer, id), &amount)| GrantTaken { issuer, id, amount })
            .collect();
        grants.sort_unstable();
        (grants.len() <= MAX_SUMMARY_GRANTS
            && floors.len() <= MAX_SUMMARY_FLOORS
            && recent.len() <= MAX_SUMMARY_RECENT)
            .then_some(Summary {
                received: self.received,
                paid: self.paid,
                grants,
                floors,
                recent,
            })
    }

    /// Checks the next block of the chain and counts it. `issuer` says
    /// whether a key may create credits.
    pub fn apply(
        &mut self,
        block: &Envelope,
        issuer: &dyn Fn(&NodeId) -> bool,
    ) -> Result<Counted, AuditError> {
        self.apply_block(block, issuer, Check::All)
    }

    /// Counts the next block of the auditor's own chain, read from its own
    /// records: every check but the signatures (its own and those of the
    /// envelopes it carries, checked when they came).
    pub fn apply_own(
        &mut self,
        block: &Envelope,
        issuer: &dyn Fn(&NodeId) -> bool,
    ) -> Result<Counted, AuditError> {
        self.apply_block(block, issuer, Check::Own)
    }

    /// Checks and counts a run of blocks that should follow on from this
    /// audit's head, in order: what each counted, and the error that
    /// stopped the run, if one did. When every block of the run links to
    /// the one before by its hash (the first to the head) and the last
    /// opens with the owner's signature, that one signature is checked for
    /// the run: signing the last block, the owner signed the hash of every
    /// block before it (SPEC.md §8.6, "The audit"). Otherwise each block's
    /// signature is checked, so that an error names the block at fault.
    pub fn apply_run(
        &mut self,
        blocks: &[Envelope],
        issuer: &dyn Fn(&NodeId) -> bool,
    ) -> (Vec<Counted>, Option<AuditError>) {
        let check = if self.vouched(blocks) {
            Check::Vouched
        } else {
            Check::All
        };
        let mut counted = Vec::with_capacity(blocks.len());
        for b in blocks {
            match self.apply_block(b, issuer, check) {
                Ok(c) => counted.push(c),
                Err(e) => return (counted, Some(e)),
            }
        }
        (counted, None)
    }

    /// Whether `blocks` follow on from the head by their hash links, each
    /// claiming the owner as signer, and the last opens with the owner's
    /// signature.
    fn vouched(&self, blocks: &[Envelope]) -> bool {
        let Some(last) = blocks.last() else {
            return false;
        };
        let (mut seq, mut head) = (self.seq, self.head);
        for b in blocks {
            let Ok(p) = b.peek::<Block>() else {
                return false;
            };
            if b.claimed_signer() != self.owner || p.seq != seq + 1 || p.prev != head {
                return false;
            }
            seq = p.seq;
            head = block_hash(b);
        }
        last.open_ignoring_time::<Block>()
            .is_ok_and(|v| v.signer() == self.owner)
    }

    fn apply_block(
        &mut self,
        block: &Envelope,
        issuer: &dyn Fn(&NodeId) -> bool,
        check: Check,
    ) -> Result<Counted, AuditError> {
        let seq = self.seq + 1;
        let bad = |reason: String| AuditError::Block { seq, reason };
        let (peeked, verified);
        let b: &Block = if check == Check::All {
            verified = block
                .open_ignoring_time::<Block>()
                .map_err(|e| bad(e.to_string()))?;
            if verified.signer() != self.owner {
                return Err(bad("signed by another node".into()));
            }
            verified.payload()
        } else {
            peeked = block.peek::<Block>().map_err(|e| bad(e.to_string()))?;
            if block.claimed_signer() != self.owner {
                return Err(bad("signed by another node".into()));
            }
            &peeked
        };
        if b.seq != seq || b.prev != self.head {
            return Err(AuditError::Link {
                seq: b.seq,
                after: self.seq,
            });
        }
        let hash = block_hash(block);
        let counted = match &b.entry {
            Entry::Grant(g) => Counted::Grant(self.grant(seq, g, issuer, check == Check::Own)?),
            entry @ (Entry::Pay(_) | Entry::PayMany(_)) => {
                let (to, amount) = entry
                    .payment()
                    .unwrap_or(Err("not a payment"))
                    .map_err(|reason| AuditError::Payment { seq, reason })?;
                if to == self.owner {
                    return Err(AuditError::Payment {
                        seq,
                        reason: "the payment is to the payer itself",
                    });
                }
                self.paid = self.paid.saturating_add(amount);
                if self.balance() < 0 {
                    return Err(AuditError::Payment {
                        seq,
                        reason: "the payment spends more than the chain holds",
                    });
                }
                Counted::Pay(amount)
            }
            Entry::Receive(pay) => {
                let fail = |reason| AuditError::Payment { seq, reason };
                let (amount, payer, payer_seq) = if check == Check::Own {
                    let p = pay
                        .peek::<Block>()
                        .map_err(|_| fail("the payment received does not decode"))?;
                    match p.entry.payment() {
                        Some(Ok((to, amount))) if to == self.owner && pay.claimed_signer() != self.owner => {
                            (amount, pay.claimed_signer(), p.seq)
                        }
                        Some(Err(reason)) => return Err(fail(reason)),
                        _ => return Err(fail("the block received is not a payment to this node")),
                    }
                } else {
                    received_from(&self.owner, pay).map_err(fail)?
                };
                let at = Position {
                    payer,
                    seq: payer_seq,
                };
                if payer_seq <= self.floors.get(&payer).copied().unwrap_or(0) {
                    return Err(fail("the payment is at or below its payer's floor"));
                }
                if !self.recent.insert(at) {
                    return Err(fail("the payment is received twice"));
                }
                self.received = self.received.saturating_add(amount);
                Counted::Receive(Source {
                    payer,
                    seq: payer_seq,
                    hash: block_hash(pay),
                    amount,
                })
            }
            Entry::Checkpoint(s) => {
                self.checkpoint(seq, s)?;
                Counted::Checkpoint(hash)
            }
        };
        self.seq = seq;
        self.head = hash;
        Ok(counted)
    }

    /// Checks a checkpoint's summary against the audit, and takes its
    /// floors and recent payments from then on.
    fn checkpoint(&mut self, seq: u64, s: &Summary) -> Result<(), AuditError> {
        let fail = |reason| Err(AuditError::Checkpoint { seq, reason });
        if !s.is_canonical() {
            return fail("the summary's lists are not in order");
        }
        if s.received != self.received || s.paid != self.paid {
            return fail("the summary's totals differ from the chain's");
        }
        if s.grants.len() != self.grants.len()
            || s.grants
                .iter()
                .any(|g| self.grants.get(&(g.issuer, g.id)) != Some(&g.amount))
        {
            return fail("the summary's grants differ from the chain's");
        }
        if self.floors.iter().any(|(p, f)| s.floor(p) < *f) {
            return fail("the summary lowers a payer's floor");
        }
        if s.recent
            .iter()
            .any(|p| p.seq <= s.floor(&p.payer) || !self.recent.contains(p))
        {
            return fail("the summary lists a payment the chain did not receive above its floor");
        }
        if self
            .recent
            .iter()
            .any(|p| p.seq > s.floor(&p.payer) && s.recent.binary_search(p).is_err())
        {
            return fail("the summary leaves out a payment received above its payer's floor");
        }
        self.floors = s.floors.iter().map(|f| (f.payer, f.seq)).collect();
        self.recent = s.recent.iter().copied().collect();
        Ok(())
    }

    fn grant(
        &mut self,
        seq: u64,
        g: &Envelope,
        issuer: &dyn Fn(&NodeId) -> bool,
        own: bool,
    ) -> Result<u64, AuditError> {
        let fail = |reason| AuditError::Grant { seq, reason };
        let (signer, grant) = if own {
            (
                g.claimed_signer(),
                g.peek::<Grant>().map_err(|_| fail("the grant does not decode"))?,
            )
        } else {
            let v = g
                .open_ignoring_time::<Grant>()
                .map_err(|_| fail("the grant does not verify"))?;
            (v.signer(), v.payload().clone())
        };
        if grant.to != self.owner {
            return Err(fail("the grant is for another node"));
        }
        if self.grants.insert((signer, grant.id), grant.amount.0).is_some() {
            return Err(fail("the grant is counted twice"));
        }
        if !issuer(&signer) {
            return Ok(0);
        }
        self.granted = self.granted.saturating_add(grant.amount.0);
        Ok(grant.amount.0)
    }
}

/// What a received payment is worth to `payee`: the payer's block must be
/// a payment to it, signed by someone else.
pub fn received(payee: &NodeId, pay: &Envelope) -> Result<u64, &'static str> {
    received_from(payee, pay).map(|(amount, _, _)| amount)
}

/// [`received`], with the payer and the position of its block.
fn received_from(payee: &NodeId, pay: &Envelope) -> Result<(u64, NodeId, u64), &'static str> {
    let p = pay
        .open_ignoring_time::<Block>()
        .map_err(|_| "the payment received does not verify")?;
    paid_to(payee, &p)
}

/// [`received`] of a block already opened (its signature checked once,
/// by whoever opened it): the amount, the payer and the block's position.
pub fn paid_to(payee: &NodeId, p: &Verified<Block>) -> Result<(u64, NodeId, u64), &'static str> {
    match p.payload().entry.payment() {
        Some(Ok((to, amount))) if to == *payee && p.signer() != *payee => {
            Ok((amount, p.signer(), p.payload().seq))
        }
        Some(Err(reason)) => Err(reason),
        _ => Err("the block received is not a payment to this node"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{JobId, MessageId, Nonce, TaskId};
    use crate::identity::Keypair;
    use crate::units::{Fuel, Price, Timestamp};

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn kp(n: u8) -> Keypair {
        Keypair::from_secret([n; 32])
    }

    fn seal<T: Payload>(k: &Keypair, p: &T, n: u64) -> Envelope {
        let mut nonce = [0; 16];
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        Envelope::seal(k, p, T0, Duration::from_secs(3600), Nonce(nonce)).unwrap()
    }

    /// A node's chain under construction.
    struct Chain {
        key: Keypair,
        blocks: Vec<Envelope>,
    }

    impl Chain {
        fn new(key: Keypair) -> Chain {
            Chain { key, blocks: vec![] }
        }
        /// A chain whose first block records `issuer`'s grant of `amount`.
        fn funded(key: Keypair, issuer: &Keypair, amount: u64) -> Chain {
            let grant = Grant {
                to: key.node_id(),
                amount: Credits(amount),
                id: [1; 16],
            };
            let mut c = Chain::new(key);
            c.append(Entry::Grant(seal(issuer, &grant, 1)));
            c
        }
        fn append(&mut self, entry: Entry) -> Envelope {
            let prev = self.blocks.last().map_or(ContentId([0; 32]), block_hash);
            let b = Block {
                seq: self.blocks.len() as u64 + 1,
                prev,
                entry,
            };
            let env = seal(&self.key, &b, b.seq);
            self.blocks.push(env.clone());
            env
        }
        fn audit(&self, issuers: &[NodeId]) -> Result<Audit, AuditError> {
            let mut a = Audit::new(self.key.node_id());
            for b in &self.blocks {
                a.apply(b, &|n| issuers.contains(n))?;
            }
            // The same chain in runs, one signature checked per run,
            // counts the same.
            let mut runs = Audit::new(self.key.node_id());
            for run in self.blocks.chunks(3) {
                let (_, err) = runs.apply_run(run, &|n| issuers.contains(n));
                if let Some(e) = err {
                    return Err(e);
                }
            }
            assert_eq!(
                (runs.seq, runs.head, runs.balance()),
                (a.seq, a.head, a.balance())
            );
            let mut own = Audit::new(self.key.node_id());
            for b in &self.blocks {
                own.apply_own(b, &|n| issuers.contains(n)).unwrap();
            }
            assert_eq!((own.seq, own.head, own.balance()), (a.seq, a.head, a.balance()));
            Ok(a)
        }
    }

    fn voucher(to: NodeId, amount_fuel: u64) -> Voucher {
        let price = Price(1_000);
        Voucher {
            receipt: MessageId([amount_fuel as u8; 32]),
            agreement: MessageId([2; 32]),
            task: TaskId::new(JobId([1; 16]), amount_fuel as u32),
            provider: to,
            fuel: Fuel(amount_fuel),
            price,
            amount: price.cost(Fuel(amount_fuel)),
        }
    }

    #[test]
    fn a_granted_payment_moves_credits_between_two_chains() {
        let issuer = kp(9);
        let (mut r, mut p) = (Chain::funded(kp(1), &issuer, 10_000_000), Chain::new(kp(2)));
        let pay = r.append(Entry::Pay(voucher(p.key.node_id(), 2_000_000_000)));
        p.append(Entry::Receive(pay));
        let issuers = [issuer.node_id()];
        let (ar, ap) = (r.audit(&issuers).unwrap(), p.audit(&issuers).unwrap());
        assert_eq!(ar.balance(), 10_000_000 - 2_000_000);
        assert_eq!(ap.balance(), 2_000_000);
        assert_eq!(ar.balance() + ap.balance(), 10_000_000, "credits are conserved");
    }

    #[test]
    fn credits_come_from_issuers_only_and_count_once() {
        let (issuer, stranger) = (kp(9), kp(8));
        let mut r = Chain::new(kp(1));
        let grant = |k: &Keypair, id: u8| {
            seal(
                k,
                &Grant {
                    to: kp(1).node_id(),
                    amount: Credits(5),
                    id: [id; 16],
                },
                u64::from(id),
            )
        };
        r.append(Entry::Grant(grant(&stranger, 1)));
        assert_eq!(
            r.audit(&[issuer.node_id()]).unwrap().balance(),
            0,
            "a grant from an issuer the auditor does not trust creates nothing"
        );
        r.append(Entry::Pay(voucher(kp(2).node_id(), 5)));
        assert!(
            matches!(r.audit(&[issuer.node_id()]), Err(AuditError::Payment { .. })),
            "spending it spends more than the chain holds"
        );
        assert!(
            r.audit(&[stranger.node_id()]).is_ok(),
            "to whoever trusts its issuer, it holds"
        );
        let mut r = Chain::new(kp(1));
        let g = grant(&issuer, 2);
        r.append(Entry::Grant(g.clone()));
        r.append(Entry::Grant(g));
        assert!(matches!(
            r.audit(&[issuer.node_id()]),
            Err(AuditError::Grant { .. })
        ));
    }

    #[test]
    fn a_payment_is_received_once_and_only_by_its_payee() {
        let (mut r, mut p, mut q) = (Chain::new(kp(1)), Chain::new(kp(2)), Chain::new(kp(3)));
        let pay = r.append(Entry::Pay(voucher(p.key.node_id(), 1_000_000)));
        p.append(Entry::Receive(pay.clone()));
        p.append(Entry::Receive(pay.clone()));
        assert!(matches!(p.audit(&[]), Err(AuditError::Payment { .. })));
        q.append(Entry::Receive(pay));
        assert!(matches!(q.audit(&[]), Err(AuditError::Payment { .. })));
    }

    #[test]
    fn one_block_pays_several_receipts_of_one_provider_and_counts_their_sum_once() {
        let issuer = kp(9);
        let (mut r, mut p) = (Chain::funded(kp(1), &issuer, 10_000_000), Chain::new(kp(2)));
        let to = p.key.node_id();
        let many = Entry::PayMany((1..=3).map(|f| voucher(to, f * 1_000_000)).collect());
        assert_eq!(many.payment(), Some(Ok((to, 6_000))));
        let pay = r.append(many);
        p.append(Entry::Receive(pay.clone()));
        let issuers = [issuer.node_id()];
        let (ar, ap) = (r.audit(&issuers).unwrap(), p.audit(&issuers).unwrap());
        assert_eq!((ar.balance(), ap.balance()), (10_000_000 - 6_000, 6_000));
        // Its encoding round-trips, and the block counts once at its payee.
        assert_eq!(
            Block::from_bytes(&pay.peek::<Block>().unwrap().to_bytes()).unwrap(),
            pay.peek::<Block>().unwrap()
        );
        p.append(Entry::Receive(pay));
        assert!(matches!(p.audit(&issuers), Err(AuditError::Payment { .. })));
    }

    #[test]
    fn a_block_paying_several_receipts_must_pay_one_provider_each_receipt_once() {
        let (a, b) = (kp(2).node_id(), kp(3).node_id());
        let bad = [
            (
                vec![voucher(a, 1), voucher(b, 2)],
                "the block pays more than one provider",
            ),
            (
                vec![voucher(a, 1), voucher(a, 1)],
                "the block pays one receipt twice",
            ),
            (
                vec![voucher(a, 1)],
                "a block paying several receipts carries 2 to 32 vouchers",
            ),
        ];
        for (vs, why) in bad {
            let entry = Entry::PayMany(vs);
            assert_eq!(entry.payment(), Some(Err(why)));
            let mut r = Chain::new(kp(1));
            r.append(entry);
            assert!(matches!(r.audit(&[]), Err(AuditError::Payment { reason, .. }) if reason == why));
        }
        let mut inconsistent = voucher(a, 2);
        inconsistent.amount = Credits(inconsistent.amount.0 + 1);
        assert_eq!(
            Entry::PayMany(vec![voucher(a, 1), inconsistent]).payment(),
            Some(Err("the payment is inconsistent"))
        );
        // More than the most a block carries does not even decode.
        let mut w = Writer::new();
        Entry::PayMany((0..=MAX_VOUCHERS as u64).map(|f| voucher(a, f)).collect()).encode(&mut w);
        assert!(Entry::from_bytes(&w.into_bytes()).is_err());
    }

    #[test]
    fn a_tampered_or_reordered_chain_does_not_audit() {
        let mut r = Chain::new(kp(1));
        r.append(Entry::Pay(voucher(kp(2).node_id(), 1)));
        r.append(Entry::Pay(voucher(kp(2).node_id(), 2)));
        r.blocks.swap(0, 1);
        assert!(matches!(r.audit(&[]), Err(AuditError::Link { .. })));
        let mut r = Chain::new(kp(1));
        r.append(Entry::Pay(voucher(kp(2).node_id(), 1)));
        // Another key's block slipped in.
        let mut other = Chain::new(kp(7));
        other.blocks = r.blocks.clone();
        assert!(matches!(other.audit(&[]), Err(AuditError::Block { .. })));
    }

    #[test]
    fn a_run_checks_one_signature_yet_still_names_a_tampered_block() {
        let issuer = kp(9);
        let mut r = Chain::new(kp(1));
        let grant = seal(
            &issuer,
            &Grant {
                to: r.key.node_id(),
                amount: Credits(10_000_000),
                id: [1; 16],
            },
            1,
        );
        r.append(Entry::Grant(grant));
        for fuel in 1..=3 {
            r.append(Entry::Pay(voucher(kp(2).node_id(), fuel * 1_000_000)));
        }
        let trust = |n: &NodeId| *n == issuer.node_id();
        let mut whole = Audit::new(r.key.node_id());
        let (counted, err) = whole.apply_run(&r.blocks, &trust);
        assert_eq!((counted.len(), err), (4, None));
        assert_eq!(whole.balance(), 10_000_000 - 6_000);
        // A flipped bit in block 3's signature: its hash changes, block 4
        // no longer links to it, and block by block the run stops at 3.
        let mut bytes = r.blocks[2].to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut tampered = r.blocks.clone();
        tampered[2] = Envelope::from_bytes(&bytes).unwrap();
        let mut a = Audit::new(r.key.node_id());
        let (counted, err) = a.apply_run(&tampered, &trust);
        assert_eq!(counted.len(), 2);
        assert!(matches!(err, Some(AuditError::Block { seq: 3, .. })), "{err:?}");
        // A run whose last block is not the owner's is checked block by
        // block too, and stops there.
        let mut a = Audit::new(r.key.node_id());
        let mut forged = r.blocks.clone();
        forged[3] = seal(&kp(7), &forged[3].peek::<Block>().unwrap(), 9);
        let (counted, err) = a.apply_run(&forged, &trust);
        assert_eq!(counted.len(), 3);
        assert!(matches!(err, Some(AuditError::Block { seq: 4, .. })), "{err:?}");
    }

    /// A requester funded with `grant`, a provider it paid `n` times
    /// (1,000 micro-credits each), and the provider's chain receiving them.
    fn paid(n: u64) -> (Keypair, Chain, Chain, Vec<Envelope>) {
        let issuer = kp(9);
        let (mut r, mut p) = (Chain::funded(kp(1), &issuer, 10_000_000), Chain::new(kp(2)));
        let mut pays = Vec::new();
        for i in 0..n {
            let mut v = voucher(p.key.node_id(), 1_000_000);
            v.receipt = MessageId([i as u8 + 100; 32]);
            let pay = r.append(Entry::Pay(v));
            p.append(Entry::Receive(pay.clone()));
            pays.push(pay);
        }
        (issuer, r, p, pays)
    }

    fn own_audit(c: &Chain, issuers: &[NodeId]) -> Audit {
        let mut a = Audit::new(c.key.node_id());
        for b in &c.blocks {
            a.apply_own(b, &|n| issuers.contains(n)).unwrap();
        }
        a
    }

    #[test]
    fn an_audit_resumed_at_a_checkpoint_counts_what_one_from_block_one_counts() {
        let (issuer, mut r, mut p, _) = paid(3);
        let issuers = [issuer.node_id()];
        // The requester's checkpoint states its grant; the provider's folds
        // its receipts into their payer's floor.
        for c in [&mut r, &mut p] {
            let s = own_audit(c, &issuers).summary(&|_| true).unwrap();
            c.append(Entry::Checkpoint(s));
        }
        assert_eq!(r.blocks.len(), 5);
        // One grant, no payer: 41 + 28 + 56 bytes of payload, 135 of envelope.
        assert_eq!(r.blocks[4].to_bytes().len(), 260);
        let summary = |c: &Chain, i: usize| match c.blocks[i].peek::<Block>().unwrap().entry {
            Entry::Checkpoint(s) => s,
            _ => unreachable!(),
        };
        assert_eq!(summary(&r, 4).grants.len(), 1);
        assert_eq!(
            summary(&p, 3).floors,
            vec![Position {
                payer: r.key.node_id(),
                seq: 4
            }]
        );
        let pay = r.append(Entry::Pay(voucher(p.key.node_id(), 2_000_000)));
        p.append(Entry::Receive(pay));
        for (c, at) in [(&r, 4), (&p, 3)] {
            let whole = c.audit(&issuers).unwrap();
            let mut resumed =
                Audit::resume(c.key.node_id(), &c.blocks[at], &|n| issuers.contains(n)).unwrap();
            assert_eq!((resumed.start, resumed.seq), (at as u64 + 1, at as u64 + 1));
            let (counted, err) = resumed.apply_run(&c.blocks[at + 1..], &|n| issuers.contains(n));
            assert_eq!((counted.len(), err), (c.blocks.len() - at - 1, None));
            assert_eq!(
                (resumed.seq, resumed.head, resumed.balance()),
                (whole.seq, whole.head, whole.balance())
            );
        }
        assert_eq!(p.audit(&issuers).unwrap().balance(), 5_000);
        // To an auditor that does not trust the issuer, the resumed audit
        // counts the grant as nothing, as one from block 1 does.
        let untrusting = Audit::resume(r.key.node_id(), &r.blocks[4], &|_| false).unwrap();
        assert_eq!(untrusting.balance(), -3_000);
    }

    #[test]
    fn a_payment_under_a_checkpoints_floor_counts_no_more_for_either_audit() {
        let (issuer, _, mut p, pays) = paid(2);
        let issuers = [issuer.node_id()];
        let s = own_audit(&p, &issuers).summary(&|_| true).unwrap();
        let at = p.blocks.len();
        p.append(Entry::Checkpoint(s));
        // The first payment again, after the checkpoint: no set of
        // payments received remains to catch it, the floor does.
        p.append(Entry::Receive(pays[0].clone()));
        let err = p.audit(&issuers).unwrap_err();
        assert_eq!(
            err,
            AuditError::Payment {
                seq: 4,
                reason: "the payment is at or below its payer's floor"
            }
        );
        let mut resumed = Audit::resume(p.key.node_id(), &p.blocks[at], &|n| issuers.contains(n)).unwrap();
        assert_eq!(
            resumed.apply(&p.blocks[at + 1], &|n| issuers.contains(n)),
            Err(err)
        );
    }

    #[test]
    fn a_checkpoint_that_misstates_the_chain_fails_the_audit() {
        let (issuer, _, p, _) = paid(2);
        let issuers = [issuer.node_id()];
        let honest = own_audit(&p, &issuers).summary(&|_| false).unwrap();
        assert_eq!(honest.recent.len(), 2);
        let payer = honest.recent[0].payer;
        type Lie = (fn(&mut Summary), &'static str);
        let lies: [Lie; 6] = [
            (
                |s| s.received += 1,
                "the summary's totals differ from the chain's",
            ),
            (|s| s.paid = 1, "the summary's totals differ from the chain's"),
            (
                |s| {
                    s.grants.push(GrantTaken {
                        issuer: kp(9).node_id(),
                        id: [7; 16],
                        amount: 1,
                    })
                },
                "the summary's grants differ from the chain's",
            ),
            (
                |s| {
                    s.recent.pop();
                },
                "the summary leaves out a payment received above its payer's floor",
            ),
            (
                |s| {
                    s.recent.push(Position {
                        payer: s.recent[0].payer,
                        seq: 99,
                    })
                },
                "the summary lists a payment the chain did not receive above its floor",
            ),
            (|s| s.recent.reverse(), "the summary's lists are not in order"),
        ];
        for (lie, why) in lies {
            let mut s = honest.clone();
            lie(&mut s);
            let mut c = Chain::new(kp(2));
            c.blocks = p.blocks.clone();
            c.append(Entry::Checkpoint(s));
            assert_eq!(
                c.audit(&issuers).unwrap_err(),
                AuditError::Checkpoint { seq: 3, reason: why }
            );
        }
        // A later checkpoint may not lower a floor set before.
        let mut c = Chain::new(kp(2));
        c.blocks = p.blocks.clone();
        c.append(Entry::Checkpoint(
            own_audit(&p, &issuers).summary(&|_| true).unwrap(),
        ));
        let mut lower = own_audit(&c, &issuers).summary(&|_| true).unwrap();
        lower.floors[0].seq -= 1;
        assert_eq!(lower.floors[0].payer, payer);
        c.append(Entry::Checkpoint(lower));
        assert_eq!(
            c.audit(&issuers).unwrap_err(),
            AuditError::Checkpoint {
                seq: 4,
                reason: "the summary lowers a payer's floor"
            }
        );
        // The honest one passes, and round-trips.
        let mut c = Chain::new(kp(2));
        c.blocks = p.blocks.clone();
        let cp = c.append(Entry::Checkpoint(honest));
        assert!(c.audit(&issuers).is_ok());
        assert_eq!(
            Block::from_bytes(&cp.peek::<Block>().unwrap().to_bytes()).unwrap(),
            cp.peek::<Block>().unwrap()
        );
        // Only a checkpoint, signed by the owner, resumes an audit.
        assert!(Audit::resume(kp(3).node_id(), &cp, &|_| true).is_err());
        assert!(Audit::resume(kp(2).node_id(), &c.blocks[0], &|_| true).is_err());
    }

    #[test]
    fn two_blocks_at_one_position_prove_a_fork() {
        let mut a = Chain::new(kp(1));
        let mut b = Chain::new(kp(1));
        let x = a.append(Entry::Pay(voucher(kp(2).node_id(), 5)));
        let y = b.append(Entry::Pay(voucher(kp(3).node_id(), 5)));
        let proof = ForkProof {
            first: x.clone(),
            second: y,
        };
        assert_eq!(proof.check(), Ok(kp(1).node_id()));
        assert_eq!(
            ForkProof {
                first: x.clone(),
                second: x
            }
            .check(),
            Err(ForkProofError::NoConflict)
        );
    }
}

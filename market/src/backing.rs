//! Backing: whether the credits a chain received came from chains that
//! could pay them (SPEC.md §8.6, "Backing").
//!
//! An audit ([`agora_protocol::chain::Audit`]) checks one chain: its links,
//! its signatures, its grants, and that it never pays more than it counts.
//! It takes a received payment at its word: two accomplices could otherwise
//! mint credits, one paying the other from a chain that never held them
//! (its own chain fails every audit, the other's passes). So an auditor
//! also **backs** each chain it audits: a received payment counts only once
//! the payer's chain, audited in turn, is seen to hold the payment and to
//! have held the credits when it paid. Credits that fail that test are
//! *unbacked*: they count nothing, and a payment made with them is itself
//! unbacked, so minted credits are worth nothing however far they travel.
//!
//! This is a pure policy over chains already audited: the caller feeds each
//! chain's counted blocks in order ([`Backing::push`]) and settles them
//! against the other chains it knows ([`Backing::settle`]). The graph of
//! payments has no cycles (a payment block is inside the payee's later
//! block, and hashes cannot loop), so settling terminates.

use std::collections::{BTreeSet, VecDeque};

use agora_protocol::ContentId;
use agora_protocol::chain::{Counted, Source};

/// Counted blocks waiting to be settled, at most per chain: beyond it, the
/// chain is read no further until its queue drains.
pub const MAX_QUEUED: usize = 4096;
/// Overdrawn payments remembered per chain; a chain with more is treated as
/// backing nothing.
const MAX_OVERDRAWN: usize = 1024;

/// What a payment block of a chain is worth to its payee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The payer held the credits when it paid.
    Backed,
    /// It did not, or its chain fails, or it forked.
    Unbacked,
    /// Not known yet: the payer's chain is not settled that far.
    Pending,
}

/// The backing of one chain, as far as it is settled.
#[derive(Debug, Clone, Default)]
pub struct Backing {
    /// Counted blocks not settled yet, in order.
    queue: VecDeque<(u64, Counted)>,
    /// The last position settled.
    settled: u64,
    /// Granted and backed received credits, less paid ones, through
    /// `settled`.
    backed: i128,
    /// Received credits whose source did not hold.
    unbacked: u64,
    /// Payments made while the backed balance was negative.
    overdrawn: BTreeSet<u64>,
    /// The chain backs nothing (it failed, forked, or overdrew too often).
    void: bool,
    /// Checkpoints settled with every credit before them backed (position
    /// and hash), not yet taken by [`Backing::take_attestable`].
    attestable: Vec<(u64, ContentId)>,
}

impl Backing {
    /// The backing of a chain whose audit starts at a checkpoint (position
    /// `seq`) that an auditor trusted attested as backed: every credit
    /// through it is, so the backed balance is the audited one.
    pub fn resumed(seq: u64, balance: i64) -> Backing {
        Backing {
            settled: seq,
            backed: i128::from(balance),
            ..Backing::default()
        }
    }

    /// Adds the next counted block of the chain (its position `seq`).
    pub fn push(&mut self, seq: u64, counted: Counted) {
        self.queue.push_back((seq, counted));
    }

    /// Whether blocks wait to be settled.
    pub fn is_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether more blocks may be pushed before the queue drains.
    pub fn has_room(&self) -> bool {
        self.queue.len() < MAX_QUEUED
    }

    /// The chain backs nothing from now on.
    pub fn void(&mut self) {
        self.void = true;
        self.queue.clear();
    }

    /// Whether the chain backs nothing.
    pub fn is_void(&self) -> bool {
        self.void
    }

    /// Settles queued blocks in order, asking `source` what each received
    /// payment is worth. Stops at the first whose verdict is pending and
    /// returns its source (the payer's chain must be settled that far);
    /// `None` once the queue is empty. Also says whether anything settled.
    pub fn settle(&mut self, source: &dyn Fn(&Source) -> Verdict) -> (Option<Source>, bool) {
        let mut moved = false;
        while let Some(&(seq, counted)) = self.queue.front() {
            match counted {
                Counted::Grant(amount) => self.backed += i128::from(amount),
                Counted::Pay(amount) => {
                    self.backed -= i128::from(amount);
                    if self.backed < 0 {
                        self.overdrawn.insert(seq);
                        if self.overdrawn.len() > MAX_OVERDRAWN {
                            self.void();
                            return (None, true);
                        }
                    }
                }
                Counted::Receive(src) => match source(&src) {
                    Verdict::Backed => self.backed += i128::from(src.amount),
                    Verdict::Unbacked => self.unbacked = self.unbacked.saturating_add(src.amount),
                    Verdict::Pending => return (Some(src), moved),
                },
                Counted::Checkpoint(hash) => {
                    if self.unbacked == 0 && self.overdrawn.is_empty() {
                        self.attestable.push((seq, hash));
                    }
                }
            }
            self.queue.pop_front();
            self.settled = seq;
            moved = true;
        }
        (None, moved)
    }

    /// What the chain's payment block at `seq` is worth to its payee.
    pub fn verdict(&self, seq: u64) -> Verdict {
        if self.void {
            Verdict::Unbacked
        } else if seq > self.settled {
            Verdict::Pending
        } else if self.overdrawn.contains(&seq) {
            Verdict::Unbacked
        } else {
            Verdict::Backed
        }
    }

    /// The balance an auditor can count on: backed credits as far as
    /// settled, less every payment queued after that (received payments
    /// not yet settled count nothing). Negative: the chain spent credits
    /// nobody backed.
    pub fn balance(&self) -> i64 {
        if self.void {
            return 0;
        }
        let mut b = self.backed;
        for (_, c) in &self.queue {
            match c {
                Counted::Grant(a) => b += i128::from(*a),
                Counted::Pay(a) => b -= i128::from(*a),
                Counted::Receive(_) | Counted::Checkpoint(_) => {}
            }
        }
        b.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Received credits whose source did not hold.
    pub fn unbacked(&self) -> u64 {
        self.unbacked
    }

    /// Received credits not settled yet.
    pub fn unsettled(&self) -> u64 {
        self.queue
            .iter()
            .map(|(_, c)| match c {
                Counted::Receive(s) => s.amount,
                _ => 0,
            })
            .sum()
    }

    /// The last position settled.
    pub fn settled(&self) -> u64 {
        self.settled
    }

    /// The checkpoints settled since the last call at which every credit
    /// the chain had counted was backed: what an auditor may attest
    /// (SPEC.md §8.6, "Checkpoints").
    pub fn take_attestable(&mut self) -> Vec<(u64, ContentId)> {
        std::mem::take(&mut self.attestable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::{ContentId, Keypair, NodeId};

    fn node(n: u8) -> NodeId {
        Keypair::from_secret([n; 32]).node_id()
    }

    fn from(payer: u8, seq: u64, amount: u64) -> Counted {
        Counted::Receive(Source {
            payer: node(payer),
            seq,
            hash: ContentId([payer; 32]),
            amount,
        })
    }

    #[test]
    fn credits_received_from_a_chain_that_never_held_them_count_nothing() {
        // The minter: no grant, pays 1000 at its block 1.
        let mut minter = Backing::default();
        minter.push(1, Counted::Pay(1_000));
        assert_eq!(minter.settle(&|_| Verdict::Backed), (None, true));
        assert_eq!(minter.verdict(1), Verdict::Unbacked);
        // The accomplice received it, and pays it on.
        let mut accomplice = Backing::default();
        accomplice.push(1, from(1, 1, 1_000));
        accomplice.push(2, Counted::Pay(600));
        accomplice.settle(&|s| minter.verdict(s.seq));
        assert_eq!(accomplice.balance(), -600, "it spent what nobody backed");
        assert_eq!(accomplice.unbacked(), 1_000);
        assert_eq!(
            accomplice.verdict(2),
            Verdict::Unbacked,
            "and its payment is worth nothing on"
        );
    }

    #[test]
    fn credits_received_from_a_funded_payer_count_in_full() {
        let mut payer = Backing::default();
        payer.push(1, Counted::Grant(5_000));
        payer.push(2, Counted::Pay(2_000));
        payer.settle(&|_| Verdict::Pending);
        let mut payee = Backing::default();
        payee.push(1, from(1, 2, 2_000));
        payee.push(2, Counted::Pay(500));
        assert_eq!(payee.settle(&|s| payer.verdict(s.seq)), (None, true));
        assert_eq!((payee.balance(), payee.unbacked()), (1_500, 0));
        assert_eq!(payee.verdict(2), Verdict::Backed);
    }

    #[test]
    fn a_payment_waits_for_its_payer_and_counts_nothing_meanwhile() {
        let mut payee = Backing::default();
        payee.push(1, Counted::Grant(100));
        payee.push(2, from(7, 3, 2_000));
        payee.push(3, Counted::Pay(50));
        let (wait, _) = payee.settle(&|_| Verdict::Pending);
        assert_eq!(wait.map(|s| (s.payer, s.seq)), Some((node(7), 3)));
        assert_eq!(
            payee.balance(),
            50,
            "the grant less the payment; the receipt not yet"
        );
        assert_eq!(payee.verdict(3), Verdict::Pending);
        assert_eq!(payee.unsettled(), 2_000);
        payee.settle(&|_| Verdict::Backed);
        assert_eq!((payee.balance(), payee.settled()), (2_050, 3));
    }

    #[test]
    fn a_checkpoint_is_attestable_only_once_every_credit_before_it_is_backed() {
        let mut c = Backing::default();
        c.push(1, Counted::Grant(100));
        c.push(2, from(7, 3, 2_000));
        c.push(3, Counted::Checkpoint(ContentId([3; 32])));
        c.settle(&|_| Verdict::Pending);
        assert_eq!(
            c.take_attestable(),
            vec![],
            "the receipt before it is not settled"
        );
        c.settle(&|_| Verdict::Backed);
        assert_eq!(c.take_attestable(), vec![(3, ContentId([3; 32]))]);
        assert_eq!(c.take_attestable(), vec![], "taken once");
        // A chain that took credits nobody backed has nothing to attest.
        let mut d = Backing::default();
        d.push(1, from(7, 3, 2_000));
        d.push(2, Counted::Checkpoint(ContentId([2; 32])));
        d.settle(&|_| Verdict::Unbacked);
        assert_eq!(d.take_attestable(), vec![]);
        // An audit resumed at an attested checkpoint backs its balance and
        // every payment through it.
        let r = Backing::resumed(40, 5_000);
        assert_eq!(
            (r.balance(), r.settled(), r.verdict(39), r.verdict(41)),
            (5_000, 40, Verdict::Backed, Verdict::Pending)
        );
    }

    #[test]
    fn a_chain_back_in_credit_backs_its_later_payments() {
        let mut c = Backing::default();
        c.push(1, from(9, 1, 1_000));
        c.push(2, Counted::Pay(300));
        c.push(3, Counted::Grant(1_000));
        c.push(4, Counted::Pay(300));
        c.settle(&|_| Verdict::Unbacked);
        assert_eq!(c.verdict(2), Verdict::Unbacked);
        assert_eq!(c.verdict(4), Verdict::Backed);
        assert_eq!(c.balance(), 400);
    }

    #[test]
    fn a_void_chain_backs_nothing() {
        let mut c = Backing::default();
        c.push(1, Counted::Grant(1_000));
        c.settle(&|_| Verdict::Backed);
        c.void();
        assert_eq!((c.verdict(1), c.balance()), (Verdict::Unbacked, 0));
    }
}

//! Whether a provider works for a requester: its audited balance, what it
//! owes this provider, the credit the provider extends it, its unpaid
//! receipts, the owner's lists, and forks of its chain (SPEC.md §8.7).
//!
//! A provider audits each requester's credit chain
//! ([`agora_protocol::chain::Audit`]), incrementally: it keeps the audit
//! and asks for the blocks after its head when the audit is older than
//! [`Config::audit_every`]. A call is offered only if
//!
//! ```text
//! balance − owed + credit line ≥ cost of the call's fuel limit
//! ```
//!
//! (the worst case: an estimate is only the requester's word), where
//! *balance* counts only credits [`crate::backing`] traced to payers that
//! held them (the chains of those payers are audited in turn), *owed*
//! is what agreements (at their fuel limit) and delivered receipts of this
//! provider still wait to be paid, and the *credit line* is small for a stranger
//! (`line`) and grows with what it has paid here (`line_per_paid` of it).
//! A requester with more than `max_unpaid` receipts unpaid past
//! `pay_within` is refused until it pays. (A cap on the tasks of a requester
//! that has not paid yet would deadlock replicated jobs: a task is paid
//! only once its replicas agree, and each replica waits at another
//! provider's cap.) one on the owner's deny list (or
//! off a non-empty allow list), proven to have forked its chain, or whose
//! chain does not audit (a broken link, a forged grant, a payment beyond
//! its balance), is refused outright.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use agora_protocol::chain::{Audit, Source};
use agora_protocol::rpc::Decline;
use agora_protocol::units::{Credits, Timestamp};
use agora_protocol::{ContentId, MessageId, NodeId};

use crate::backing::{Backing, Verdict};

/// Credit settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Keys whose grants create credits.
    pub issuers: HashSet<NodeId>,
    /// Auditors whose attestation of a chain's checkpoint this node takes
    /// as its own: an audit of that chain may start there (besides these,
    /// the issuers and this node itself).
    pub auditors: HashSet<NodeId>,
    /// Credit extended to any requester, in micro-credits.
    pub line: Credits,
    /// Extra credit per micro-credit a requester has paid this provider.
    pub line_per_paid: f64,
    /// Receipts a requester may leave unpaid past `pay_within`.
    pub max_unpaid: usize,
    /// How long after its receipt is delivered a task must be paid.
    pub pay_within: Duration,
    /// How old an audit may be before the requester's chain is read again.
    pub audit_every: Duration,
    /// Requesters never worked for.
    pub deny: HashSet<NodeId>,
    /// When not empty, the only requesters worked for.
    pub allow: HashSet<NodeId>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            issuers: HashSet::new(),
            auditors: HashSet::new(),
            line: Credits(100_000),
            line_per_paid: 0.1,
            max_unpaid: 3,
            pay_within: Duration::from_secs(60),
            audit_every: Duration::from_secs(5),
            deny: HashSet::new(),
            allow: HashSet::new(),
        }
    }
}

/// What a provider knows of one requester.
#[derive(Debug)]
struct Account {
    /// The audit of its chain, if one succeeded.
    audit: Option<Audit>,
    /// When it was last brought up to date.
    audited_at: Timestamp,
    /// When its last read began.
    read_at: Timestamp,
    /// Whether blocks are being fetched.
    auditing: bool,
    /// Recent block hashes of its chain, by position (to spot forks).
    recent: BTreeMap<u64, ContentId>,
    /// Agreements not yet paid: their reserved cost, by agreement.
    agreed: HashMap<MessageId, u64>,
    /// Delivered receipts not yet paid: amount and payment deadline.
    unpaid: HashMap<MessageId, (u64, Timestamp)>,
    /// Receipts paid before their delivery was acknowledged here (the
    /// payment overtook the acknowledgement), oldest first.
    paid_early: std::collections::VecDeque<MessageId>,
    /// What it has paid this provider, in micro-credits.
    paid: u64,
    /// Its chain did not audit: refused.
    broken: bool,
    /// Why, if it did not.
    broken_by: Option<String>,
    /// Whether the credits its chain counts are backed (see
    /// [`crate::backing`]).
    backing: Backing,
    /// The payment its backing waits for, if any.
    waits: Option<Source>,
    /// A payment block of its arrived since its chain was last read: the
    /// chain is read again (within `audit_every`) so that a block it shows
    /// others at that position is compared with the one paid here.
    unchecked: bool,
}

impl Account {
    fn new() -> Account {
        Account {
            audit: None,
            audited_at: Timestamp(0),
            read_at: Timestamp(0),
            auditing: false,
            recent: BTreeMap::new(),
            agreed: HashMap::new(),
            unpaid: HashMap::new(),
            paid_early: std::collections::VecDeque::new(),
            paid: 0,
            broken: false,
            broken_by: None,
            backing: Backing::default(),
            waits: None,
            unchecked: false,
        }
    }

    fn owed(&self) -> u64 {
        let agreed: u64 = self.agreed.values().sum();
        let unpaid: u64 = self.unpaid.values().map(|(a, _)| a).sum();
        agreed.saturating_add(unpaid)
    }
}

/// Most requesters remembered (the least recently audited go first).
const MAX_ACCOUNTS: usize = 4096;
/// Payments that overtook their receipt's acknowledgement remembered per
/// requester.
const PAID_EARLY: usize = 1024;
/// Block hashes remembered per requester, to spot forks.
const RECENT_BLOCKS: usize = 256;

/// The provider's credit decisions. See the module docs.
#[derive(Debug)]
pub struct Credit {
    config: Config,
    accounts: HashMap<NodeId, Account>,
    forked: HashSet<NodeId>,
}

impl Credit {
    /// Credit decisions under `config`.
    pub fn new(config: Config) -> Credit {
        Credit {
            config,
            accounts: HashMap::new(),
            forked: HashSet::new(),
        }
    }

    /// Settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether `key` may create credits.
    pub fn is_issuer(&self, key: &NodeId) -> bool {
        self.config.issuers.contains(key)
    }

    fn account(&mut self, r: NodeId) -> &mut Account {
        if self.accounts.len() >= MAX_ACCOUNTS && !self.accounts.contains_key(&r) {
            // Forget the least recently audited requester that owes nothing.
            if let Some(old) = self
                .accounts
                .iter()
                .filter(|(_, a)| a.owed() == 0)
                .min_by_key(|(_, a)| a.audited_at)
                .map(|(n, _)| *n)
            {
                self.accounts.remove(&old);
            }
        }
        self.accounts.entry(r).or_insert_with(Account::new)
    }

    /// Whether to work for `requester` on a task whose estimated cost is
    /// `cost` micro-credits; `Err` is the decline. Also says whether the
    /// requester's chain should be read (again) now.
    pub fn admit(&mut self, requester: NodeId, cost: u64, now: Timestamp) -> (Result<(), Decline>, bool) {
        let c = &self.config;
        if self.forked.contains(&requester)
            || c.deny.contains(&requester)
            || (!c.allow.is_empty() && !c.allow.contains(&requester))
        {
            return (Err(Decline::Refused), false);
        }
        let (max_unpaid, line, per_paid, every) = (c.max_unpaid, c.line.0, c.line_per_paid, c.audit_every);
        let a = self.account(requester);
        if a.broken {
            return (Err(Decline::Refused), false);
        }
        let late = a.unpaid.values().filter(|(_, due)| *due <= now).count();
        let stale = !a.auditing && (a.audit.is_none() || now.since(a.audited_at) >= every);
        if late > max_unpaid {
            return (
                Err(Decline::Unpaid {
                    receipts: late as u32,
                }),
                stale,
            );
        }
        // Only backed credits count: received ones not (yet) traced to a
        // payer that held them count nothing.
        let balance = a.backing.balance();
        let extended = line.saturating_add((a.paid as f64 * per_paid) as u64);
        let available = i128::from(balance) - i128::from(a.owed()) + i128::from(extended);
        if i128::from(cost) > available {
            tracing::debug!(
                requester = %requester.short(),
                balance,
                owed = a.owed(),
                agreed = a.agreed.len(),
                unpaid = a.unpaid.len(),
                extended,
                cost,
                "not enough credit for the task"
            );
            let available = Credits(available.clamp(0, i128::from(u64::MAX)) as u64);
            return (Err(Decline::NoCredit { available }), stale);
        }
        (Ok(()), stale)
    }

    /// The audit of `requester`'s chain to extend, and the position after
    /// which blocks are wanted; marks the audit under way.
    pub fn start_audit(&mut self, requester: NodeId, now: Timestamp) -> u64 {
        let a = self.account(requester);
        a.auditing = true;
        a.read_at = now;
        a.unchecked = false;
        a.audit.as_ref().map_or(0, |x| x.seq)
    }

    /// Requesters whose payments arrived since their chain was last read,
    /// and whose audit is stale: read each again (marked under way), from
    /// the position given.
    pub fn due_audits(&mut self, now: Timestamp) -> Vec<(NodeId, u64)> {
        let every = self.config.audit_every;
        let due: Vec<NodeId> = self
            .accounts
            .iter()
            .filter(|(_, a)| a.unchecked && !a.auditing && now.since(a.audited_at) >= every)
            .map(|(n, _)| *n)
            .collect();
        due.into_iter().map(|n| (n, self.start_audit(n, now))).collect()
    }

    /// Blocks of `requester`'s chain arrived: they are checked and counted.
    /// `Ok(true)`: more may follow (ask again). `Err`: the chain does not
    /// audit (the requester is refused from then on).
    pub fn on_blocks(
        &mut self,
        requester: NodeId,
        blocks: &[agora_protocol::Envelope],
        now: Timestamp,
    ) -> Result<bool, agora_protocol::chain::AuditError> {
        let issuers = self.config.issuers.clone();
        let a = self.account(requester);
        let mut audit = a.audit.take().unwrap_or_else(|| Audit::new(requester));
        if let Some(first) = blocks.first()
            && first
                .peek::<agora_protocol::chain::Block>()
                .is_ok_and(|b| b.seq != audit.seq + 1)
        {
            // An answer to a read of an account since forgotten: not this
            // audit's next blocks. Read again later.
            a.audit = (audit.seq > 0).then_some(audit);
            a.auditing = false;
            return Ok(false);
        }
        let mut result = Ok(blocks.len() >= agora_protocol::rpc::MAX_CHAIN_PAGE);
        // One signature checked per page when its hash links hold.
        let first = audit.seq;
        let (counted, err) = audit.apply_run(blocks, &|n| issuers.contains(n));
        for (i, (c, b)) in counted.into_iter().zip(blocks).enumerate() {
            let seq = first + 1 + i as u64;
            a.backing.push(seq, c);
            a.recent.insert(seq, agora_protocol::chain::block_hash(b));
        }
        while a.recent.len() > RECENT_BLOCKS {
            a.recent.pop_first();
        }
        if let Some(e) = err {
            result = Err(e);
        }
        match &result {
            Ok(more) => {
                a.audit = Some(audit);
                // A chain whose blocks wait for their payers is read no
                // further until they drain.
                result = Ok(*more && a.backing.has_room());
            }
            Err(e) => {
                a.audit = None;
                a.broken = true;
                a.broken_by = Some(e.to_string());
                a.backing.void();
            }
        }
        a.audited_at = now;
        if !matches!(result, Ok(true)) {
            a.auditing = false;
        }
        result
    }

    /// Starts the audit of `owner`'s chain at `checkpoint`, one of its
    /// blocks an auditor this node trusts attested as backed (SPEC.md
    /// §8.6, "Checkpoints"): the position to read after. An audit already
    /// under way goes on where it stands.
    pub fn resume(
        &mut self,
        owner: NodeId,
        checkpoint: &agora_protocol::Envelope,
    ) -> Result<u64, agora_protocol::chain::AuditError> {
        let issuers = self.config.issuers.clone();
        let forked = self.forked.contains(&owner);
        let a = self.account(owner);
        if let Some(audit) = &a.audit {
            return Ok(audit.seq);
        }
        if a.broken || forked {
            // Refused whatever its checkpoint says.
            return Ok(0);
        }
        let audit = Audit::resume(owner, checkpoint, &|n| issuers.contains(n))?;
        a.backing = Backing::resumed(audit.seq, audit.balance());
        a.recent.insert(audit.seq, audit.head);
        let seq = audit.seq;
        a.audit = Some(audit);
        Ok(seq)
    }

    /// Whether an attestation signed by `auditor` lets an audit start at
    /// the checkpoint it names.
    pub fn trusts_auditor(&self, auditor: &NodeId) -> bool {
        self.config.auditors.contains(auditor) || self.config.issuers.contains(auditor)
    }

    /// The checkpoints this node may now attest: chains audited through
    /// one with every credit before it backed, by owner, position and
    /// hash. Each is given once.
    pub fn take_attestable(&mut self) -> Vec<(NodeId, u64, ContentId)> {
        let mut out = Vec::new();
        for (owner, a) in &mut self.accounts {
            if a.broken {
                continue;
            }
            out.extend(
                a.backing
                    .take_attestable()
                    .into_iter()
                    .map(|(seq, hash)| (*owner, seq, hash)),
            );
        }
        out
    }

    /// The blocks could not be fetched.
    pub fn audit_failed(&mut self, requester: NodeId, now: Timestamp) {
        let a = self.account(requester);
        a.auditing = false;
        a.audited_at = now;
    }

    /// Settles the backing of every chain as far as the chains known allow
    /// (see [`crate::backing`]). Returns the payments still waiting, each
    /// with the chain that received it: the payer's chain is to be read
    /// (see [`Credit::read_for`]).
    pub fn settle(&mut self, local: NodeId) -> Vec<(Source, NodeId)> {
        let mut waiting = Vec::new();
        // Each pass settles at least one more block or stops; the payment
        // graph has no cycles, so a few passes reach the end.
        for _ in 0..64 {
            waiting.clear();
            let mut moved = false;
            let open: Vec<NodeId> = self
                .accounts
                .iter()
                .filter(|(_, a)| a.backing.is_pending())
                .map(|(n, _)| *n)
                .collect();
            for n in open {
                let Some(mut b) = self.accounts.get_mut(&n).map(|a| std::mem::take(&mut a.backing)) else {
                    continue;
                };
                let (wait, m) = b.settle(&|src| self.verdict(src, local));
                moved |= m;
                if let Some(a) = self.accounts.get_mut(&n) {
                    a.backing = b;
                    a.waits = wait;
                }
                if let Some(src) = wait {
                    waiting.push((src, n));
                }
            }
            if !moved {
                break;
            }
        }
        waiting
    }

    /// What a payment block of `src.payer`'s chain is worth here (this
    /// node's own payments never spend more than it holds).
    fn verdict(&self, src: &Source, local: NodeId) -> Verdict {
        if src.payer == local {
            return Verdict::Backed;
        }
        if self.forked.contains(&src.payer) {
            return Verdict::Unbacked;
        }
        match self.accounts.get(&src.payer) {
            None => Verdict::Pending,
            Some(a) if a.broken => Verdict::Unbacked,
            Some(a) => a.backing.verdict(src.seq),
        }
    }

    /// Whether to read the chain of a payer whose payment `src` another
    /// chain's backing waits for: the position to read after, marked under
    /// way; `None` while a read is under way, the chain was read far enough
    /// (it waits on its own payers), or it was read less than
    /// `audit_every` ago (a payer that does not show the block is not
    /// asked again at once) — unless it was last read before `fresh_since`
    /// (an audit the owner is waiting for began then).
    pub fn read_for(&mut self, src: &Source, now: Timestamp, fresh_since: Option<Timestamp>) -> Option<u64> {
        let every = self.config.audit_every;
        let a = self.account(src.payer);
        let seq = a.audit.as_ref().map_or(0, |x| x.seq);
        let recent = a.audited_at.0 > 0 && now.since(a.audited_at) < every;
        let stale_for_owner = fresh_since.is_some_and(|t| a.read_at < t);
        if a.auditing || a.broken || seq >= src.seq || (recent && !stale_for_owner) {
            return None;
        }
        Some(self.start_audit(src.payer, now))
    }

    /// Whether a read of `owner`'s chain is under way.
    pub fn is_auditing(&self, owner: &NodeId) -> bool {
        self.accounts.get(owner).is_some_and(|a| a.auditing)
    }

    /// Whether `owner`'s chain is audited and backed as far as it can be
    /// now: no read under way for it or for a payer its backing waits on.
    pub fn settled(&self, owner: &NodeId) -> bool {
        let mut at = *owner;
        for _ in 0..64 {
            let Some(a) = self.accounts.get(&at) else {
                return true;
            };
            if a.auditing {
                return false;
            }
            match a.waits {
                Some(src) => at = src.payer,
                None => return true,
            }
        }
        true
    }

    /// What an audit of `owner`'s chain found: the audit, its backing, or
    /// why the chain fails.
    pub fn audit_of(&self, owner: &NodeId) -> Option<Result<(&Audit, &Backing), String>> {
        let a = self.accounts.get(owner)?;
        if let Some(why) = &a.broken_by {
            return Some(Err(why.clone()));
        }
        if self.forked.contains(owner) {
            return Some(Err("the node forked its chain".into()));
        }
        a.audit.as_ref().map(|x| Ok((x, &a.backing)))
    }

    /// An agreement was signed: its estimated cost is owed until paid.
    pub fn agreed(&mut self, requester: NodeId, agreement: MessageId, cost: u64) {
        self.account(requester).agreed.insert(agreement, cost);
    }

    /// An agreement ended unpaid and undelivered (cancelled, not run).
    pub fn released(&mut self, requester: NodeId, agreement: &MessageId) {
        self.account(requester).agreed.remove(agreement);
    }

    /// A receipt was delivered: its cost is owed by `now + pay_within`.
    pub fn delivered(
        &mut self,
        requester: NodeId,
        agreement: &MessageId,
        receipt: MessageId,
        amount: u64,
        now: Timestamp,
    ) {
        let due = now.add(self.config.pay_within);
        let a = self.account(requester);
        a.agreed.remove(agreement);
        if let Some(i) = a.paid_early.iter().position(|r| *r == receipt) {
            a.paid_early.remove(i);
            return;
        }
        a.unpaid.insert(receipt, (amount, due));
    }

    /// A payment for `receipt` was counted.
    pub fn paid(&mut self, requester: NodeId, receipt: &MessageId, amount: u64) {
        let a = self.account(requester);
        a.unchecked = true;
        if let Some((owed, due)) = a.unpaid.remove(receipt) {
            // Less than the receipt's cost settles only that much.
            if amount < owed {
                a.unpaid.insert(*receipt, (owed - amount, due));
            }
        } else {
            a.paid_early.push_back(*receipt);
            while a.paid_early.len() > PAID_EARLY {
                a.paid_early.pop_front();
            }
        }
        a.paid = a.paid.saturating_add(amount);
    }

    /// `node` was proven to have forked its chain: refused from now on.
    pub fn forked(&mut self, node: NodeId) {
        if self.forked.len() < MAX_ACCOUNTS {
            self.forked.insert(node);
        }
        self.accounts.remove(&node);
    }

    /// How many nodes are known to have forked their chains.
    pub fn forked_count(&self) -> usize {
        self.forked.len()
    }

    /// Whether `node` forked its chain.
    pub fn is_forked(&self, node: &NodeId) -> bool {
        self.forked.contains(node)
    }

    /// What this provider knows of a requester: audited balance (if any),
    /// what it owes here, receipts unpaid past their deadline.
    pub fn standing_of(&self, requester: &NodeId, now: Timestamp) -> Option<(Option<i64>, u64, usize)> {
        let a = self.accounts.get(requester)?;
        let late = a.unpaid.values().filter(|(_, due)| *due <= now).count();
        Some((a.audit.as_ref().map(|_| a.backing.balance()), a.owed(), late))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::Keypair;
    use agora_protocol::chain::{Block, Entry, Grant, block_hash};
    use agora_protocol::id::{JobId, Nonce, TaskId};
    use agora_protocol::settlement::Voucher;
    use agora_protocol::units::{Fuel, Price};

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn node(n: u8) -> NodeId {
        Keypair::from_secret([n; 32]).node_id()
    }

    #[test]
    fn a_stranger_gets_its_credit_line_and_no_more() {
        let mut c = Credit::new(Config {
            line: Credits(1_000),
            ..Config::default()
        });
        let r = node(1);
        let (ok, audit) = c.admit(r, 600, NOW);
        assert!(ok.is_ok() && audit, "within the line; its chain is to be read");
        c.agreed(r, MessageId([1; 32]), 600);
        let (no, _) = c.admit(r, 600, NOW);
        assert_eq!(
            no,
            Err(Decline::NoCredit {
                available: Credits(400)
            })
        );
    }

    #[test]
    fn a_requester_that_does_not_pay_is_refused_and_paying_restores_it() {
        let mut c = Credit::new(Config {
            line: Credits(1_000_000),
            max_unpaid: 2,
            ..Config::default()
        });
        let r = node(1);
        for i in 0..3u8 {
            c.delivered(r, &MessageId([i; 32]), MessageId([10 + i; 32]), 1, NOW);
        }
        let later = NOW.add(Duration::from_secs(61));
        assert_eq!(c.admit(r, 1, later).0, Err(Decline::Unpaid { receipts: 3 }));
        c.paid(r, &MessageId([10; 32]), 1);
        assert!(c.admit(r, 1, later).0.is_ok());
    }

    /// A node's chain, built block by block with its key.
    struct Chain {
        key: Keypair,
        blocks: Vec<agora_protocol::Envelope>,
    }

    impl Chain {
        fn new(n: u8) -> Chain {
            Chain {
                key: Keypair::from_secret([n; 32]),
                blocks: vec![],
            }
        }
        fn id(&self) -> NodeId {
            self.key.node_id()
        }
        fn append(&mut self, entry: Entry) -> agora_protocol::Envelope {
            let b = Block {
                seq: self.blocks.len() as u64 + 1,
                prev: self.blocks.last().map_or(ContentId([0; 32]), block_hash),
                entry,
            };
            let env = seal(&self.key, &b, b.seq);
            self.blocks.push(env.clone());
            env
        }
        fn pay(&mut self, to: NodeId, credits: u64) -> agora_protocol::Envelope {
            let price = Price(1_000_000);
            let fuel = Fuel(credits * 1_000_000);
            self.append(Entry::Pay(Voucher {
                receipt: MessageId([self.blocks.len() as u8; 32]),
                agreement: MessageId([0; 32]),
                task: TaskId::new(JobId([1; 16]), 0),
                provider: to,
                fuel,
                price,
                amount: price.cost(fuel),
            }))
        }
    }

    fn seal<T: agora_protocol::Payload>(k: &Keypair, p: &T, n: u64) -> agora_protocol::Envelope {
        let mut nonce = [0; 16];
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        agora_protocol::Envelope::seal(k, p, NOW, Duration::from_secs(3600), Nonce(nonce)).unwrap()
    }

    /// Feeds `chain` to `c` as a read of it would, then settles.
    fn read(c: &mut Credit, chain: &Chain) -> Vec<(Source, NodeId)> {
        c.start_audit(chain.id(), NOW);
        let _ = c.on_blocks(chain.id(), &chain.blocks, NOW);
        c.settle(node(99))
    }

    const CREDIT: u64 = 1_000_000;

    #[test]
    fn credits_minted_between_accomplices_buy_no_more_than_the_credit_line() {
        let mut c = Credit::new(Config {
            line: Credits(CREDIT / 10),
            ..Config::default()
        });
        // The minter holds nothing and pays its accomplice 5 credits.
        let (mut minter, mut accomplice) = (Chain::new(1), Chain::new(2));
        let pay = minter.pay(accomplice.id(), 5);
        accomplice.append(Entry::Receive(pay));
        // The accomplice's own chain audits: its backing waits for the
        // minter's chain.
        let waits = read(&mut c, &accomplice);
        assert_eq!(
            waits
                .iter()
                .map(|(s, by)| (s.payer, s.seq, *by))
                .collect::<Vec<_>>(),
            vec![(minter.id(), 1, accomplice.id())]
        );
        assert_eq!(
            c.read_for(&waits[0].0, NOW, None),
            Some(0),
            "the minter's chain is to be read"
        );
        assert!(!c.settled(&accomplice.id()), "not settled while it is read");
        assert_eq!(
            c.admit(accomplice.id(), 2 * CREDIT, NOW).0,
            Err(Decline::NoCredit {
                available: Credits(CREDIT / 10)
            }),
            "meanwhile the payment counts nothing"
        );
        assert!(read(&mut c, &minter).is_empty());
        assert!(c.settled(&accomplice.id()));
        let (audit, backing) = c.audit_of(&accomplice.id()).unwrap().unwrap();
        assert_eq!((audit.balance(), backing.balance()), (5 * CREDIT as i64, 0));
        assert_eq!(backing.unbacked(), 5 * CREDIT);
        assert_eq!(
            c.admit(accomplice.id(), 2 * CREDIT, NOW).0,
            Err(Decline::NoCredit {
                available: Credits(CREDIT / 10)
            }),
            "the minted credits are worth nothing"
        );
    }

    #[test]
    fn credits_earned_from_a_funded_payer_are_lent_against_in_full() {
        let issuer = Keypair::from_secret([9; 32]);
        let mut c = Credit::new(Config {
            issuers: [issuer.node_id()].into(),
            line: Credits(0),
            ..Config::default()
        });
        let (mut payer, mut payee) = (Chain::new(1), Chain::new(2));
        let grant = Grant {
            to: payer.id(),
            amount: Credits(10 * CREDIT),
            id: [1; 16],
        };
        payer.append(Entry::Grant(seal(&issuer, &grant, 1)));
        let pay = payer.pay(payee.id(), 5);
        payee.append(Entry::Receive(pay));
        payee.pay(node(3), 1);
        let waits = read(&mut c, &payee);
        assert_eq!(waits.len(), 1);
        assert!(c.admit(payee.id(), 1, NOW).0.is_err(), "nothing backed yet");
        c.read_for(&waits[0].0, NOW, None);
        assert!(read(&mut c, &payer).is_empty());
        let (_, backing) = c.audit_of(&payee.id()).unwrap().unwrap();
        assert_eq!((backing.balance(), backing.unbacked()), (4 * CREDIT as i64, 0));
        assert!(c.admit(payee.id(), 4 * CREDIT, NOW).0.is_ok());
    }

    #[test]
    fn denied_forked_and_unlisted_requesters_are_refused() {
        let (a, b, d) = (node(1), node(2), node(3));
        let mut c = Credit::new(Config {
            deny: [d].into(),
            ..Config::default()
        });
        assert_eq!(c.admit(d, 0, NOW).0, Err(Decline::Refused));
        c.forked(a);
        assert_eq!(c.admit(a, 0, NOW).0, Err(Decline::Refused));
        let mut only = Credit::new(Config {
            allow: [b].into(),
            ..Config::default()
        });
        assert!(only.admit(b, 0, NOW).0.is_ok());
        assert_eq!(only.admit(a, 0, NOW).0, Err(Decline::Refused));
    }
}

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
//! (the worst case: an estimate is only the requester's word), where *owed*
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

use agora_protocol::chain::Audit;
use agora_protocol::rpc::Decline;
use agora_protocol::units::{Credits, Timestamp};
use agora_protocol::{ContentId, MessageId, NodeId};

/// Credit settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Keys whose grants create credits.
    pub issuers: HashSet<NodeId>,
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
            auditing: false,
            recent: BTreeMap::new(),
            agreed: HashMap::new(),
            unpaid: HashMap::new(),
            paid_early: std::collections::VecDeque::new(),
            paid: 0,
            broken: false,
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
        let balance = a.audit.as_ref().map_or(0, Audit::balance);
        let extended = line.saturating_add((a.paid as f64 * per_paid) as u64);
        let available = i128::from(balance) - i128::from(a.owed()) + i128::from(extended);
        if i128::from(cost) > available {
            let available = Credits(available.clamp(0, i128::from(u64::MAX)) as u64);
            return (Err(Decline::NoCredit { available }), stale);
        }
        (Ok(()), stale)
    }

    /// The audit of `requester`'s chain to extend, and the position after
    /// which blocks are wanted; marks the audit under way.
    pub fn start_audit(&mut self, requester: NodeId) -> u64 {
        let a = self.account(requester);
        a.auditing = true;
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
        due.into_iter().map(|n| (n, self.start_audit(n))).collect()
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
        let mut result = Ok(blocks.len() >= agora_protocol::rpc::MAX_CHAIN_PAGE);
        for b in blocks {
            if let Err(e) = audit.apply(b, &|n| issuers.contains(n)) {
                result = Err(e);
                break;
            }
            a.recent.insert(audit.seq, audit.head);
            while a.recent.len() > RECENT_BLOCKS {
                a.recent.pop_first();
            }
        }
        match &result {
            Ok(_) => a.audit = Some(audit),
            Err(_) => {
                a.audit = None;
                a.broken = true;
            }
        }
        a.audited_at = now;
        if !matches!(result, Ok(true)) {
            a.auditing = false;
        }
        result
    }

    /// The blocks could not be fetched.
    pub fn audit_failed(&mut self, requester: NodeId) {
        self.account(requester).auditing = false;
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
        Some((a.audit.as_ref().map(Audit::balance), a.owed(), late))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::Keypair;

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

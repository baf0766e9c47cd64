//! Summaries of domains: what the view holds of the rest of the network,
//! and the summaries this node builds for its own domain and ancestors.
//!
//! Any key can sign a summary of any domain, so summaries are held per
//! domain *and signer* ([`SIGNERS_PER_DOMAIN`] places for signers vouched
//! for, and the rest of them, at least one, for signers not yet vouched
//! for, which only take each other's place), and a summary counts — for
//! ranking domains, for listing them, for building this node's own
//! summaries — only once it is **vouched**:
//! * a summary of this node's own domain is taken only from a member whose
//!   advert it holds, and counts if that member has standing;
//! * a summary of any other domain is vouched once one of the contacts it
//!   lists answers this node with a summary of that domain (the engine asks;
//!   see [`View::vouch`]): a domain no member vouches for is not ranked.
//!
//! A newer summary replaces only its own signer's, so a forged one cannot
//! displace the real one; `seq` is an issue time and may not lie in the
//! future (a summary claiming `seq = u64::MAX` is refused).

use std::collections::{HashMap, HashSet};

use agora_protocol::capacity::{Advert, ChildSummary, Contact, DomainStats, DomainSummary};
use agora_protocol::limits::{MAX_CHILDREN, MAX_CONTACTS, MAX_ENVELOPE};
use agora_protocol::units::Timestamp;
use agora_protocol::{Decode, Domain, Envelope, NodeId};

use super::{Rejected, Standing, View, future_bound};

/// Signers whose summaries of one domain are held.
pub const SIGNERS_PER_DOMAIN: usize = 4;

/// Places for signers not vouched for, beside `vouched` vouched ones: what
/// the vouched leave of [`SIGNERS_PER_DOMAIN`], and always one.
fn unvouched_places(vouched: usize) -> usize {
    SIGNERS_PER_DOMAIN.saturating_sub(vouched).max(1)
}

/// A domain summary as held.
#[derive(Debug, Clone)]
pub struct HeldSummary {
    /// The summary.
    pub summary: DomainSummary,
    /// The signed envelope (forwarded on request).
    pub envelope: Envelope,
    /// Expiry.
    pub expires_at: Timestamp,
    /// Who signed it.
    pub signer: NodeId,
    /// Whether a member of the domain vouched for it (see the module docs).
    pub vouched: bool,
}

/// What a summary accepted from the network asks of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryIn {
    /// Its domain.
    pub domain: Domain,
    /// Its signer.
    pub signer: NodeId,
    /// A contact to ask, when the summary still needs a member to vouch.
    pub ask: Option<NodeId>,
    /// The members it lists, and where to reach them.
    pub contacts: Vec<Contact>,
}

/// Signers remembered as vouched for, beyond the summaries held.
const VOUCHED_REMEMBERED: usize = 4096;

/// Summaries held, by domain.
#[derive(Debug, Default)]
pub(super) struct Summaries {
    by_domain: HashMap<Domain, Vec<HeldSummary>>,
    count: usize,
    /// Signers a member vouched for, per domain: the members elected to
    /// publish change every period, and each, once vouched, stays so when
    /// its turn comes again (bounded; forgotten all at once when full).
    vouched: HashSet<(Domain, NodeId)>,
}

impl Summaries {
    pub(super) fn expire(&mut self, now: Timestamp) {
        for held in self.by_domain.values_mut() {
            held.retain(|s| s.expires_at > now);
        }
        self.by_domain.retain(|_, h| !h.is_empty());
        self.count = self.by_domain.values().map(Vec::len).sum();
    }

    /// The freshest vouched summary of each domain.
    fn best(&self) -> impl Iterator<Item = &HeldSummary> {
        self.by_domain
            .values()
            .filter_map(|h| h.iter().filter(|s| s.vouched).max_by_key(|s| s.summary.seq))
    }
}

impl View {
    /// Handles summary bytes from gossip or a summaries response.
    pub fn on_summary(&mut self, data: &[u8], now: Timestamp) -> Result<SummaryIn, Rejected> {
        Envelope::from_bytes(data)
            .map_err(|e| Rejected::Malformed(e.to_string()))
            .and_then(|env| self.on_summary_envelope(&env, now))
    }

    /// Handles a summary envelope.
    pub fn on_summary_envelope(&mut self, env: &Envelope, now: Timestamp) -> Result<SummaryIn, Rejected> {
        let r = self.accept_summary(env, now);
        match &r {
            Ok(_) => self.metrics.summaries_accepted += 1,
            Err(e) => *self.metrics.summaries_rejected.entry(e.label()).or_default() += 1,
        }
        r
    }

    fn accept_summary(&mut self, env: &Envelope, now: Timestamp) -> Result<SummaryIn, Rejected> {
        if env.encoded_len() > MAX_ENVELOPE {
            return Err(Rejected::Oversized(env.encoded_len()));
        }
        let v = env.open::<DomainSummary>(now).map_err(Rejected::from_open)?;
        let (domain, seq, signer) = (v.payload().domain.clone(), v.payload().seq, v.signer());
        if seq > future_bound(now) {
            return Err(Rejected::FutureSeq(seq));
        }
        let own = domain == self.domain;
        let member = self.peer(&signer).is_some_and(|p| p.advert.domain == self.domain);
        if own && signer != self.local && !member {
            return Err(Rejected::Unvouched);
        }
        let held = self.summaries.by_domain.get(&domain);
        let previous = held.and_then(|h| h.iter().find(|s| s.signer == signer));
        if let Some(p) = previous
            && seq <= p.summary.seq
        {
            return Err(Rejected::Replayed {
                seq,
                held: p.summary.seq,
            });
        }
        let vouched = (own && self.standing(&signer) != Standing::Unknown)
            || signer == self.local
            || previous.is_some_and(|p| p.vouched)
            || self.summaries.vouched.contains(&(domain.clone(), signer));
        if previous.is_none() {
            self.room_for(&domain, vouched.then_some(seq), now)?;
        }
        let ask = (!vouched && !own)
            .then(|| {
                v.payload()
                    .contacts
                    .iter()
                    .map(|c| c.node)
                    .find(|n| *n != self.local)
            })
            .flatten();
        let contacts = v.payload().contacts.clone();
        self.hold(HeldSummary {
            expires_at: v.expires_at(),
            summary: v.into_payload(),
            envelope: env.clone(),
            signer,
            vouched,
        });
        Ok(SummaryIn {
            domain,
            signer,
            ask,
            contacts,
        })
    }

    /// Whether one more signer's summary of `domain` has a place, or why not.
    ///
    /// A domain has [`SIGNERS_PER_DOMAIN`] places for vouched signers, and
    /// the places they leave (at least one) for signers not yet vouched
    /// for. So a newcomer always gets a hearing: elected publishers change
    /// every term, and the new ones must be asked about while the last
    /// term's summaries live on, yet a signer nobody vouched for can only
    /// take the place of another such signer (the one expiring first).
    /// A summary already vouched for (`vouched_seq`: its seq) may also take
    /// the place of the vouched summary with the oldest figures: fresh
    /// figures must not wait for stale ones to expire.
    fn room_for(
        &mut self,
        domain: &Domain,
        vouched_seq: Option<u64>,
        now: Timestamp,
    ) -> Result<(), Rejected> {
        if self.summaries.count >= self.max_peers {
            self.summaries.expire(now);
        }
        if self.summaries.count >= self.max_peers {
            return Err(Rejected::Full);
        }
        let Some(held) = self.summaries.by_domain.get(domain) else {
            return Ok(());
        };
        // A vouched newcomer to a domain with four vouched signers needs
        // one with older figures, which `hold` then drops for it; a signer
        // not vouched for always finds a place, `hold` dropping the other
        // such signer expiring first if there is no room.
        let full = |seq| {
            held.iter().filter(|s| s.vouched).count() >= SIGNERS_PER_DOMAIN
                && !held.iter().any(|s| s.vouched && s.summary.seq < seq)
        };
        if vouched_seq.is_some_and(full) {
            return Err(Rejected::Full);
        }
        Ok(())
    }

    /// A domain's summaries back within their places (a signer held was
    /// vouched for, or judged again): of the vouched, the oldest figures
    /// go; of the others, the one expiring first.
    fn settle(&mut self, domain: &Domain) {
        let Some(held) = self.summaries.by_domain.get_mut(domain) else {
            return;
        };
        loop {
            let vouched = held.iter().filter(|s| s.vouched).count();
            let unvouched = held.len() - vouched;
            let over = if vouched > SIGNERS_PER_DOMAIN {
                held.iter()
                    .enumerate()
                    .filter(|(_, s)| s.vouched)
                    .min_by_key(|(_, s)| s.summary.seq)
            } else if unvouched > unvouched_places(vouched) {
                held.iter()
                    .enumerate()
                    .filter(|(_, s)| !s.vouched)
                    .min_by_key(|(_, s)| s.expires_at)
            } else {
                None
            };
            let Some((i, _)) = over else { break };
            held.swap_remove(i);
            self.summaries.count -= 1;
        }
    }

    fn hold(&mut self, s: HeldSummary) {
        let held = self
            .summaries
            .by_domain
            .entry(s.summary.domain.clone())
            .or_default();
        let domain = s.summary.domain.clone();
        match held.iter_mut().find(|h| h.signer == s.signer) {
            Some(h) => *h = s,
            None => {
                held.push(s);
                self.summaries.count += 1;
            }
        }
        self.settle(&domain);
    }

    /// A member of `domain` answered for `signer`'s summary of it: that
    /// summary now counts.
    pub fn vouch(&mut self, domain: &Domain, signer: &NodeId) {
        if self.summaries.vouched.len() >= VOUCHED_REMEMBERED {
            self.summaries.vouched.clear();
        }
        self.summaries.vouched.insert((domain.clone(), *signer));
        if let Some(s) = self
            .summaries
            .by_domain
            .get_mut(domain)
            .and_then(|h| h.iter_mut().find(|s| s.signer == *signer))
        {
            s.vouched = true;
        }
        self.settle(domain);
    }

    /// Stores a summary this node published itself (gossip does not echo).
    pub fn insert_own_summary(&mut self, summary: DomainSummary, envelope: Envelope) {
        let expires_at = envelope.expires_at();
        self.hold(HeldSummary {
            summary,
            envelope,
            expires_at,
            signer: self.local,
            vouched: true,
        });
    }

    /// How many signers' summaries of `domain` are held and vouched for.
    #[cfg(test)]
    pub(crate) fn signers_vouched(&self, domain: &Domain) -> usize {
        self.summaries
            .by_domain
            .get(domain)
            .map_or(0, |held| held.iter().filter(|s| s.vouched).count())
    }

    /// How many signers' summaries of `domain` are held.
    #[cfg(test)]
    pub(super) fn signers_held(&self, domain: &Domain) -> usize {
        self.summaries.by_domain.get(domain).map_or(0, Vec::len)
    }

    /// The summary that counts for each domain (the freshest vouched one).
    pub fn summaries(&self) -> impl Iterator<Item = &HeldSummary> {
        self.summaries.best()
    }

    /// The summary that counts for a domain, if any is vouched.
    pub fn summary(&self, domain: &Domain) -> Option<&HeldSummary> {
        self.summaries
            .by_domain
            .get(domain)?
            .iter()
            .filter(|s| s.vouched)
            .max_by_key(|s| s.summary.seq)
    }

    /// The summaries this node should publish, innermost domain first: its
    /// own domain from the adverts it holds, then each ancestor below the
    /// root from the freshest summaries of that ancestor's children.
    pub fn build_summaries(&self, now: Timestamp) -> Vec<DomainSummary> {
        let mut out = Vec::new();
        let own_stats = self.local_domain_stats();
        let mut members: Vec<(&NodeId, &Advert)> = self.members().map(|p| (&p.node, &p.advert)).collect();
        if let Some(a) = &self.local_advert {
            members.push((&self.local, a));
        }
        members.sort_by_key(|(n, a)| (std::cmp::Reverse(a.cu.0 * u64::from(a.free_slots)), **n));
        let contacts: Vec<Contact> = members
            .iter()
            .take(MAX_CONTACTS)
            .map(|(n, a)| Contact {
                node: **n,
                addrs: a.addrs.clone(),
            })
            .collect();
        let leaf = DomainSummary {
            domain: self.domain.clone(),
            seq: now.0,
            stats: own_stats,
            contacts,
            children: self.children_of(&self.domain),
        };
        let mut below = leaf.clone();
        out.push(leaf);
        let mut cur = self.domain.parent();
        while let Some(d) = cur {
            if d.is_root() {
                break;
            }
            let summary = self.ancestor_summary(&d, &below, now);
            below = summary.clone();
            out.push(summary);
            cur = d.parent();
        }
        out
    }

    /// The summary of ancestor `d` from the summaries held for its children,
    /// with `below` (just built) replacing any older copy of itself.
    fn ancestor_summary(&self, d: &Domain, below: &DomainSummary, now: Timestamp) -> DomainSummary {
        let mut children: HashMap<Domain, (DomainStats, Vec<Contact>)> = self
            .summaries()
            .filter(|s| s.summary.domain.parent().as_ref() == Some(d))
            .map(|s| {
                (
                    s.summary.domain.clone(),
                    (s.summary.stats.clone(), s.summary.contacts.clone()),
                )
            })
            .collect();
        children.insert(
            below.domain.clone(),
            (below.stats.clone(), below.contacts.clone()),
        );
        let mut stats = DomainStats::default();
        let mut contacts = Vec::new();
        let mut kids: Vec<_> = children.into_iter().collect();
        kids.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, (s, c)) in &kids {
            stats.merge(s);
            contacts.extend(c.iter().cloned());
        }
        contacts.truncate(MAX_CONTACTS);
        DomainSummary {
            domain: d.clone(),
            seq: now.0,
            stats,
            contacts,
            children: kids
                .into_iter()
                .take(MAX_CHILDREN)
                .map(|(domain, (stats, _))| ChildSummary { domain, stats })
                .collect(),
        }
    }

    fn children_of(&self, d: &Domain) -> Vec<ChildSummary> {
        let mut kids: Vec<ChildSummary> = self
            .summaries()
            .filter(|s| s.summary.domain.parent().as_ref() == Some(d))
            .map(|s| ChildSummary {
                domain: s.summary.domain.clone(),
                stats: s.summary.stats.clone(),
            })
            .collect();
        kids.sort_by(|a, b| a.domain.cmp(&b.domain));
        kids.truncate(MAX_CHILDREN);
        kids
    }

    /// Every domain this node knows of, with its figures: the vouched
    /// summaries held, the children they list, and its own domain.
    pub fn domains(&self) -> Vec<(Domain, DomainStats)> {
        let mut all: HashMap<Domain, DomainStats> = HashMap::new();
        for s in self.summaries() {
            all.insert(s.summary.domain.clone(), s.summary.stats.clone());
            for c in &s.summary.children {
                all.entry(c.domain.clone()).or_insert_with(|| c.stats.clone());
            }
        }
        all.insert(self.domain.clone(), self.local_domain_stats());
        let mut v: Vec<_> = all.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The freshest vouched summaries of `domain` and its direct children,
    /// for a summaries request.
    pub fn summaries_for(&self, domain: &Domain) -> Vec<Envelope> {
        self.summaries()
            .filter(|s| &s.summary.domain == domain || s.summary.domain.parent().as_ref() == Some(domain))
            .map(|s| s.envelope.clone())
            .take(agora_protocol::limits::MAX_SUMMARIES)
            .collect()
    }
}

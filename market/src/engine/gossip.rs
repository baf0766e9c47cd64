//! What a node says to everyone and hears from everyone: its advert,
//! domain summaries, fraud proofs; and what it does about its connections
//! (whom to dial, whom to probe).

use std::collections::HashMap;
use std::time::Duration;

use agora_protocol::capacity::{Addr, Advert, Contact};
use agora_protocol::execution::Receipt;
use agora_protocol::fraud::FraudProof;
use agora_protocol::market::Assignment;
use agora_protocol::rpc::MarketResponse;
use agora_protocol::units::Timestamp;
use agora_protocol::{
    Decode, Domain, Encode, Envelope, FRAUD_TOPIC, MessageId, NodeId, Nonce, TOPIC_PREFIX, Verified,
};
use rand::RngExt;
use rand::seq::SliceRandom;

use super::{AdvertCause, Engine, Output, Ran, Verdict, Work};
use crate::idle;
use crate::view::Rejected;

/// A peer dialed on its advert is not dialed again for this long.
const REDIAL_PEER: Duration = Duration::from_secs(30);
/// Fraud proofs re-executed at once.
const FRAUD_CHECKS: usize = 2;
/// The longest task a fraud check re-executes.
const FRAUD_CHECK_TIME: Duration = Duration::from_secs(60);
/// How long a fraud proof circulates.
const FRAUD_LIFETIME: Duration = Duration::from_secs(3600);
/// Fraud proofs remembered as seen.
const FRAUD_SEEN: usize = 10_000;
/// A summary not vouched for is asked about again after this long.
const VOUCH_RETRY: Duration = Duration::from_secs(30);
/// Summaries being vouched for at most.
const MAX_VOUCHING: usize = 256;
/// Contacts asked about one summary in one period at most: the next only
/// when the last could not be reached. Every node of the other domains asks
/// the same few contacts about a new signer, and one at its connection cap
/// refuses some; without a second contact such a summary waited a whole
/// summary interval (a minute at 500 nodes) to count, and a domain's new
/// member stayed missing from the figures that long.
const VOUCH_ASKS: usize = 3;
/// Questions to election rivals per term at most (see [`Engine::elected`]):
/// a flood of keys without standing costs a bounded number of questions.
const RIVALS_PER_TERM: usize = 64;
/// A rival that could not be reached is asked again after this long.
const RIVAL_RETRY: Duration = Duration::from_secs(5);
/// How often an elected node asks its rivals while it stays elected.
pub(super) const RIVALS_EVERY: Duration = Duration::from_secs(1);

impl Engine {
    /// A gossip message (`author`: the signer gossipsub authenticated, if
    /// any). The verdict goes back to gossipsub.
    pub fn on_gossip(&mut self, topic: &str, data: &[u8], author: Option<NodeId>, now: Timestamp) -> Verdict {
        let adverts = format!("{TOPIC_PREFIX}/adverts/");
        let summaries = format!("{TOPIC_PREFIX}/summaries/");
        if topic.starts_with(&adverts) {
            match self.view.on_advert(data, author, now) {
                Ok(node) => {
                    self.learn_addresses(node, now);
                    Verdict::Accept
                }
                Err(e) => self.rejected("advert", &e),
            }
        } else if topic.starts_with(&summaries) {
            match self.view.on_summary(data, now) {
                Ok(s) => {
                    self.learn_contacts(&s.contacts);
                    if s.ask.is_some() {
                        let contacts = self.vouching_contacts(&s.contacts);
                        self.ask_to_vouch(s.domain, s.signer, contacts, now);
                    }
                    Verdict::Accept
                }
                Err(e) => self.rejected("summary", &e),
            }
        } else if topic == FRAUD_TOPIC {
            let verdict = match Envelope::from_bytes(data) {
                Ok(env) if env.payload_type() == agora_protocol::PayloadType::ForkProof.code() => {
                    self.on_fork_proof(&env, now)
                }
                Ok(_) => self.on_fraud(data, now),
                Err(_) => Verdict::Reject,
            };
            self.count(verdict)
        } else if topic == agora_protocol::HEADS_TOPIC {
            let verdict = self.on_heads(data, now);
            self.count(verdict)
        } else {
            Verdict::Ignore
        }
    }

    /// Counts a rejected proof or heads message.
    fn count(&mut self, verdict: Verdict) -> Verdict {
        if verdict == Verdict::Reject {
            self.counters.gossip_rejected += 1;
        }
        verdict
    }

    /// A rejected advert or summary: an invalid one is penalised; one that
    /// is only not useful now (a replay, a flood of unknown keys, a full
    /// view) is not forwarded, so a flood does not spread.
    fn rejected(&mut self, what: &str, e: &Rejected) -> Verdict {
        if e.is_invalid() {
            tracing::debug!(error = %e, "{what} rejected");
            self.counters.gossip_rejected += 1;
            Verdict::Reject
        } else {
            Verdict::Ignore
        }
    }

    /// Which of a summary's contacts to ask whether it is a member, the
    /// first to ask last: one this node is connected to if any, else one at
    /// random, so that the questions of a whole network do not all go to
    /// the first contact every summary lists; then, for when it cannot be
    /// reached, others at random, [`VOUCH_ASKS`] in all at most.
    fn vouching_contacts(&mut self, contacts: &[Contact]) -> Vec<NodeId> {
        let mut others: Vec<NodeId> = contacts
            .iter()
            .map(|c| c.node)
            .filter(|n| *n != self.local)
            .collect();
        others.shuffle(&mut self.rng);
        if let Some(i) = others.iter().position(|n| self.connected.contains(n)) {
            others.swap(0, i);
        }
        others.truncate(VOUCH_ASKS);
        others.reverse();
        others
    }

    /// Asks a contact a summary lists whether it is a member of that
    /// domain: the summary counts once it answers with a summary of it.
    /// At most one question per summary and period, and a bounded number
    /// at once. `contacts` are asked in turn, last first, each only if the
    /// one before cannot be reached.
    fn ask_to_vouch(&mut self, domain: Domain, signer: NodeId, contacts: Vec<NodeId>, now: Timestamp) {
        if contacts.is_empty() {
            return;
        }
        let key = (domain.clone(), signer);
        if self
            .vouching
            .get(&key)
            .is_some_and(|t| now.since(*t) < VOUCH_RETRY)
        {
            return;
        }
        if self.vouching.len() >= MAX_VOUCHING {
            self.vouching.retain(|_, t| now.since(*t) < VOUCH_RETRY);
            if self.vouching.len() >= MAX_VOUCHING {
                return;
            }
        }
        self.vouching.insert(key, now);
        self.vouch(domain, signer, contacts);
    }

    /// Asks the last of `next` (if any) whether `signer` is a member.
    fn vouch(&mut self, domain: Domain, signer: NodeId, mut next: Vec<NodeId>) {
        let Some(contact) = next.pop() else { return };
        self.counters.vouch_questions += 1;
        let request = agora_protocol::rpc::MarketRequest::Summaries(domain.clone());
        let pending = super::Pending::Vouch {
            domain,
            signer,
            contact,
            next,
        };
        let out = self.request(contact, request, Vec::new(), pending);
        self.out.push(out);
    }

    /// A contact answered a question of [`Engine::ask_to_vouch`]: it is a
    /// member if it signed a summary of the domain itself. One that could
    /// not be reached, or declined (overloaded), passes the question to the
    /// next contact, if any; one that answered with summaries but none it
    /// signed ends it: it is no member, and the summary listed it.
    pub(super) fn on_vouched(
        &mut self,
        (domain, signer, contact, next): (Domain, NodeId, NodeId, Vec<NodeId>),
        answer: Result<MarketResponse, String>,
        now: Timestamp,
    ) {
        if signed_summary(&answer, contact, &domain, now) {
            self.view.vouch(&domain, &signer);
        } else if !matches!(answer, Ok(MarketResponse::Summaries(_))) {
            self.vouch(domain, signer, next);
        }
    }

    /// Whether this node is elected to publish its domain's summaries now,
    /// as far as its view knows. If so, it asks the members that rank
    /// better but have no standing in its view: views see different members
    /// with standing (round-trip times are measured only to connected
    /// peers), so without the questions a domain has more publishers than
    /// `summary_publishers`, each a signer every receiver holds, asks about
    /// and forwards. It asks again every [`RIVALS_EVERY`] while it stays
    /// elected and such members are left, so that it steps down at its
    /// next summary interval.
    pub(super) fn elected(&mut self, now: Timestamp) -> bool {
        let a = &self.config.adverts;
        let elected = self
            .view
            .is_summary_publisher(now, a.election_term, a.summary_publishers);
        self.timers.asking_rivals = elected && self.ask_rivals(now);
        self.timers.last_rivals = now;
        elected
    }

    /// Asks the rivals of [`Engine::elected`]: at most
    /// `summary_publishers` at a time, the best ranks first, each member
    /// once per term unless its question failed (then again after
    /// [`RIVAL_RETRY`]: the best-ranked members are the ones every elected
    /// node asks, and a member at its connection cap refuses some), and
    /// [`RIVALS_PER_TERM`] questions in all.
    ///
    /// Returns whether any rival is left (asked and not yet answered, or
    /// still to ask).
    fn ask_rivals(&mut self, now: Timestamp) -> bool {
        let a = &self.config.adverts;
        let (publishers, term) = (a.summary_publishers, a.election_term);
        let period = now.0 / (term.as_millis().max(1) as u64);
        if self.rivals.period != period {
            self.rivals = Rivals {
                period,
                ..Rivals::default()
            };
        }
        let room = RIVALS_PER_TERM.saturating_sub(self.rivals.questions);
        if room == 0 {
            return false;
        }
        let all = self.view.election_rivals(now, term);
        if all.is_empty() {
            return false;
        }
        let asked = &self.rivals.asked;
        let rivals: Vec<NodeId> = all
            .into_iter()
            .filter(|n| asked.get(n).is_none_or(|again| again.is_some_and(|t| now >= t)))
            .take(publishers.min(room))
            .collect();
        for peer in rivals {
            self.rivals.asked.insert(peer, None);
            self.rivals.questions += 1;
            self.counters.rival_questions += 1;
            let request = agora_protocol::rpc::MarketRequest::Summaries(self.config.domain.clone());
            let out = self.request(peer, request, Vec::new(), super::Pending::Rival { peer });
            self.out.push(out);
        }
        true
    }

    /// A rival of [`Engine::elected`] answered: one that signs a summary
    /// of this domain is a member behind a real endpoint, with standing; one
    /// that could not be reached may be asked again a little later.
    pub(super) fn on_rival(&mut self, peer: NodeId, answer: Result<MarketResponse, String>, now: Timestamp) {
        if signed_summary(&answer, peer, &self.config.domain, now) {
            self.view.reached(peer);
        } else if answer.is_err()
            && let Some(again) = self.rivals.asked.get_mut(&peer)
        {
            *again = Some(now.add(RIVAL_RETRY));
        }
    }

    /// A summary of `domain`, signed by this node now, if `domain` is its
    /// own or contains it (kept for a second, so that questions cost at
    /// most one signature per domain a second).
    pub(super) fn own_summary(&mut self, domain: &Domain, now: Timestamp) -> Option<Envelope> {
        if domain.is_root() || !self.config.domain.is_within(domain) {
            return None;
        }
        if let Some((at, env)) = self.own_summaries.get(domain)
            && now.since(*at) < Duration::from_secs(1)
        {
            return Some(env.clone());
        }
        let summary = self
            .view
            .build_summaries(now)
            .into_iter()
            .find(|s| &s.domain == domain)?;
        let lifetime = self.config.adverts.lifetime;
        let env = self.seal(&summary, lifetime, now);
        self.own_summaries.insert(domain.clone(), (now, env.clone()));
        Some(env)
    }

    /// Builds, signs and publishes this node's advert.
    pub(super) fn publish_advert(&mut self, now: Timestamp) {
        let t = &mut self.timers;
        if let Some(cause) = t.advert_due.take() {
            *self.counters.adverts_published.entry(cause.label()).or_default() += 1;
        }
        t.last_advert = now;
        t.advert_seq = t.advert_seq.max(now.0).saturating_add(1);
        let p = &self.provider;
        let advert = Advert {
            seq: t.advert_seq,
            domain: self.config.domain.clone(),
            cu: p.capacity(),
            calibrated_at: self.calibrated_at,
            memory: p.config().memory,
            slots: p.config().slots,
            free_slots: p.free_slots(),
            queued: p.load() as u32,
            load: idle::permille(self.load),
            accepting: p.accepting(),
            price: p.config().price,
            energy: p.config().energy,
            version: self.config.version.clone(),
            addrs: self.advertised_addrs(),
            max_task_fuel: p.config().max_task_fuel,
            max_task_time: agora_protocol::units::Millis::from(p.config().max_task_time),
            max_output: p.config().max_output,
            labels: p.config().labels.clone(),
        };
        self.view.set_local_advert(advert.clone());
        if !p.config().enabled {
            return;
        }
        let env = self.seal(&advert, self.config.adverts.lifetime, now);
        self.out.push(Output::Publish {
            topic: self.config.domain.advert_topic(),
            data: env.to_bytes(),
        });
    }

    /// Publishes this node's domain summaries when it is elected to.
    pub(super) fn publish_summaries(&mut self, now: Timestamp) {
        self.timers.last_summary = now;
        if !self.elected(now) {
            return;
        }
        let a = &self.config.adverts;
        let lifetime = a.lifetime.max(a.summary_interval * 3);
        for s in self.view.build_summaries(now) {
            let Some(parent) = s.domain.parent() else { continue };
            let env = self.seal(&s, lifetime, now);
            let data = env.to_bytes();
            self.view.insert_own_summary(s, env);
            self.counters.summaries_published += 1;
            self.out.push(Output::Publish {
                topic: parent.summary_topic(),
                data,
            });
        }
    }

    /// Connect to a domain's peers up to a target count (the gossip mesh is
    /// built from them, pings give round-trip times for placement); beyond
    /// it, addresses only: requests dial on demand, so a large domain does
    /// not become a full mesh of connections. The view holds this domain's
    /// peers only.
    fn learn_addresses(&mut self, node: NodeId, now: Timestamp) {
        let Some(p) = self.view.peer(&node) else { return };
        let addrs: Vec<String> = p.advert.addrs.iter().map(|a| a.0.clone()).collect();
        // The count of connected members last: it walks every connection,
        // and most adverts come from members connected already.
        let dial = !self.connected.contains(&node)
            && self
                .dialed
                .get(&node)
                .is_none_or(|t| now.since(*t) >= REDIAL_PEER)
            && self
                .connected
                .iter()
                .filter(|c| self.view.peer(c).is_some())
                .count()
                < self.config.domain_peers;
        if dial {
            if self.dialed.len() >= 4 * self.config.domain_peers {
                self.dialed.retain(|_, t| now.since(*t) < REDIAL_PEER);
            }
            self.dialed.insert(node, now);
        }
        self.out.push(Output::Locate {
            peer: node,
            addrs,
            dial,
        });
    }

    fn learn_contacts(&mut self, contacts: &[agora_protocol::capacity::Contact]) {
        for c in contacts {
            self.out.push(Output::Locate {
                peer: c.node,
                addrs: c.addrs.iter().map(|a| a.0.clone()).collect(),
                dial: false,
            });
        }
    }

    /// A fraud proof from gossip. It is never forwarded as it came: this
    /// node checks it by re-executing under the task's signed limits (a few
    /// at a time, a bounded number per publisher and period, only proofs
    /// against providers it might use, only if it can meet the limits), and
    /// publishes it under its own signature once confirmed.
    fn on_fraud(&mut self, data: &[u8], now: Timestamp) -> Verdict {
        let Ok(env) = Envelope::from_bytes(data) else {
            return Verdict::Reject;
        };
        let Ok(v) = env.open::<FraudProof>(now) else {
            return Verdict::Reject;
        };
        let Ok(conflict) = v.payload().check() else {
            return Verdict::Reject;
        };
        // A proof is remembered as seen only once it is taken up (or can
        // never be): one passed over for its publisher's quota, or for a
        // full queue, is checked when someone else brings it.
        let key = MessageId::of(&v.payload().to_bytes());
        if self.fraud_seen.contains(&key) || self.fraud_checking.contains_key(&key) {
            return Verdict::Ignore;
        }
        let accused = conflict.accused.signer();
        let relevant = self.view.peer(&accused).is_some() || self.requester.book().get(&accused).is_some();
        if !relevant || self.requester.book().is_banned(&accused) {
            return Verdict::Ignore;
        }
        if let Err(why) = self.can_check(&conflict.assignment) {
            tracing::info!(accused = %accused.short(), %why, "abstaining from a fraud proof this node cannot check");
            self.remember_fraud(key);
            return Verdict::Ignore;
        }
        let publisher = v.signer();
        if self.fraud_checking.len() >= FRAUD_CHECKS || !self.fraud_quota.allow(publisher, now) {
            return Verdict::Ignore;
        }
        self.remember_fraud(key);
        self.fraud_checking.insert(key, v.into_payload());
        self.counters.fraud_checks += 1;
        self.out.push(Output::Run(Work::CheckFraud {
            proof: key,
            publisher,
            assignment: conflict.assignment,
        }));
        Verdict::Ignore
    }

    /// Remembers a proof as dealt with (a bounded set, cleared when full).
    fn remember_fraud(&mut self, key: MessageId) {
        if self.fraud_seen.len() >= FRAUD_SEEN {
            self.fraud_seen.clear();
        }
        self.fraud_seen.insert(key);
    }

    /// Whether this node can re-execute a task under exactly its signed
    /// limits: a check under other limits could condemn an honest provider.
    fn can_check(&self, a: &Assignment) -> Result<(), String> {
        let l = &a.limits;
        if l.memory > self.config.requester.local_memory {
            return Err(format!("the task needs {} of memory", l.memory));
        }
        if l.timeout.duration() > FRAUD_CHECK_TIME {
            return Err(format!("the task may run {} ms", l.timeout.0));
        }
        if l.fuel > self.provider.config().max_task_fuel {
            return Err(format!("the task may use {} fuel", l.fuel.0));
        }
        Ok(())
    }

    /// A fraud proof's computation ran here: the accused is banned if its
    /// receipt is wrong and the witness right, and the proof goes on under
    /// this node's signature.
    pub fn on_fraud_checked(&mut self, proof: MessageId, result: Result<Ran, String>, now: Timestamp) {
        let Some(p) = self.fraud_checking.remove(&proof) else {
            return;
        };
        let Ok(conflict) = p.check() else { return };
        let ran = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, "fraud proof could not be checked");
                return;
            }
        };
        let truth = ran.outcome();
        let outcome = |r: &Verified<Receipt>| {
            let r = r.payload();
            (r.output, r.fuel_used, r.exit.clone())
        };
        let guilty = outcome(&conflict.accused) != truth && outcome(&conflict.witness) == truth;
        let detail = format!("re-execution gives output {}", truth.0);
        if !guilty {
            tracing::info!(%detail, "fraud proof not confirmed");
            return;
        }
        self.counters.fraud_confirmed += 1;
        let culprit = conflict.accused.signer();
        tracing::warn!(culprit = %culprit, %detail, "fraud proof confirmed by re-execution: avoiding the provider");
        self.requester
            .ban(culprit, format!("fraud proof confirmed: {detail}"));
        if let Ok(env) = Envelope::seal(&self.keypair, &p, now, FRAUD_LIFETIME, Nonce(self.rng.random())) {
            self.out.push(Output::Publish {
                topic: FRAUD_TOPIC.to_owned(),
                data: env.to_bytes(),
            });
        }
    }

    /// A connection to `peer` was established: receipts and payments
    /// waiting for it go at the next tick.
    pub fn on_connected(&mut self, peer: NodeId) {
        self.connected.insert(peer);
        self.redeliver_to(peer);
    }

    /// The last connection to `peer` closed. A closed connection alone says
    /// little (idle ones are trimmed): ask whether the peer is still there
    /// only when a job waits on it.
    pub fn on_disconnected(&mut self, peer: NodeId) {
        self.connected.remove(&peer);
        if self.requester.depends_on(peer) && self.probing.insert(peer) {
            self.out.push(Output::Run(Work::Probe { peer }));
        }
    }

    /// Whether a probed peer answered.
    pub fn on_probe(&mut self, peer: NodeId, alive: bool, now: Timestamp) {
        self.probing.remove(&peer);
        if !alive && !self.connected.contains(&peer) {
            tracing::info!(peer = %peer.short(), "peer is gone; re-placing its tasks");
            self.requester.on_peer_down(peer, now);
        }
    }

    /// A peer subscribed to a topic. A newcomer in this domain gets this
    /// node's advert at once (publication is rate-limited); a peer already
    /// in the view that reconnects hears the next periodic advert:
    /// republishing to every reconnection would flood the domain.
    pub fn on_subscribed(&mut self, peer: NodeId, topic: &str) {
        if topic == self.config.domain.advert_topic() && self.view.peer(&peer).is_none() {
            self.timers.want_advert(AdvertCause::Newcomer);
        }
    }

    /// The node listens on a new address.
    pub fn on_listening(&mut self, addr: String) {
        if !self.listen.contains(&addr) {
            // A relay's circuit address goes first: for a node others
            // cannot dial it is the one that works, and adverts carry
            // only the first few addresses.
            if addr.contains("/p2p-circuit") {
                self.listen.insert(0, addr);
            } else {
                self.listen.push(addr);
            }
            self.timers.want_advert(AdvertCause::Address);
        }
    }

    /// Whether peers outside can dial this node (AutoNAT's verdict): a
    /// private node with a relayed address advertises only its relayed
    /// addresses, which are the ones others can use (a dial to its own
    /// address would wait out a timeout behind its router).
    pub fn on_reachability(&mut self, private: bool) {
        if self.private != private {
            self.private = private;
            self.timers.want_advert(AdvertCause::Reachability);
        }
    }

    /// The addresses adverts carry, as text.
    pub fn local_advert_addrs(&self) -> Vec<String> {
        self.advertised_addrs().into_iter().map(|a| a.0).collect()
    }

    /// The addresses adverts carry (see [`Engine::on_reachability`]).
    fn advertised_addrs(&self) -> Vec<Addr> {
        let relayed = |a: &&String| a.contains("/p2p-circuit");
        let only_relayed = self.private && self.listen.iter().any(|a| relayed(&a));
        self.listen
            .iter()
            .filter(|a| !only_relayed || relayed(a))
            .take(agora_protocol::limits::MAX_ADDRS)
            .map(|a| Addr(a.clone()))
            .collect()
    }

    /// The node stopped listening on an address (a relay reservation
    /// ended): adverts stop carrying it.
    pub fn on_listen_closed(&mut self, addr: &str) {
        let before = self.listen.len();
        self.listen.retain(|a| a != addr);
        if self.listen.len() != before {
            self.timers.want_advert(AdvertCause::Address);
        }
    }

    /// A round-trip time measured to a peer.
    pub fn on_rtt(&mut self, peer: NodeId, rtt: Duration) {
        self.view.on_rtt(peer, rtt);
    }

    /// How fast a large transfer to a peer went, bytes/s (`at_most`: a
    /// bound from one still under way or failed).
    pub fn on_throughput(&mut self, peer: NodeId, bytes_per_s: f64, at_most: bool) {
        self.view.on_throughput(peer, bytes_per_s, at_most);
    }
}

/// Work a gossip publisher may cause this node per period (re-executing
/// fraud proofs, asking about forks its heads claim): what one peer can
/// make this node spend is bounded.
#[derive(Debug)]
pub(super) struct Quota {
    per: u32,
    period: Duration,
    windows: HashMap<NodeId, (Timestamp, u32)>,
}

/// Fraud-proof checks per publisher per [`FRAUD_QUOTA_PERIOD`].
const FRAUD_QUOTA: u32 = 4;
/// The period of [`FRAUD_QUOTA`].
const FRAUD_QUOTA_PERIOD: Duration = Duration::from_secs(600);
/// Fork checks (chain requests) one heads publisher may cause per minute.
const FORK_QUOTA: u32 = 16;
/// Publishers tracked at most (the oldest windows are dropped first).
const QUOTA_PUBLISHERS: usize = 4096;

impl Quota {
    /// The quota of fraud-proof checks.
    pub(super) fn fraud() -> Quota {
        Quota::new(FRAUD_QUOTA, FRAUD_QUOTA_PERIOD)
    }

    /// The quota of fork checks.
    pub(super) fn forks() -> Quota {
        Quota::new(FORK_QUOTA, Duration::from_secs(60))
    }

    fn new(per: u32, period: Duration) -> Quota {
        Quota {
            per,
            period,
            windows: HashMap::new(),
        }
    }

    /// Whether `publisher` may cause one more unit of work now (and counts
    /// it if so).
    pub(super) fn allow(&mut self, publisher: NodeId, now: Timestamp) -> bool {
        let period = self.period;
        if self.windows.len() >= QUOTA_PUBLISHERS {
            self.windows.retain(|_, (start, _)| now.since(*start) < period);
        }
        if self.windows.len() >= QUOTA_PUBLISHERS && !self.windows.contains_key(&publisher) {
            return false;
        }
        let e = self.windows.entry(publisher).or_insert((now, 0));
        if now.since(e.0) >= period {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= self.per
    }
}

/// The election rivals a node asked in one term (see [`Engine::elected`]).
#[derive(Debug, Default)]
pub(super) struct Rivals {
    /// The term.
    period: u64,
    /// Each rival asked, and when it may be asked again: never (`None`)
    /// while its answer is awaited or once it answered.
    asked: HashMap<NodeId, Option<Timestamp>>,
    /// Questions asked this term.
    questions: usize,
}

/// Whether `answer` holds a summary of `domain` that `signer` signed.
fn signed_summary(
    answer: &Result<MarketResponse, String>,
    signer: NodeId,
    domain: &Domain,
    now: Timestamp,
) -> bool {
    let Ok(MarketResponse::Summaries(envs)) = answer else {
        return false;
    };
    envs.iter().any(|e| {
        e.open::<agora_protocol::capacity::DomainSummary>(now)
            .is_ok_and(|v| v.signer() == signer && &v.payload().domain == domain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ReplyId;
    use crate::sim::{disk::Disk, node};
    use agora_protocol::Keypair;

    /// One turn of every engine at `now`, then what they said delivered:
    /// gossip to every other engine, each request to its peer and the
    /// answer back, until nothing is left. Returns the summaries published.
    fn exchange(engines: &mut [Engine], now: Timestamp) -> u64 {
        exchange_but(engines, now, &[])
    }

    /// [`exchange`], with requests to the `unreachable` failing as a dial
    /// to them would.
    fn exchange_but(engines: &mut [Engine], now: Timestamp, unreachable: &[NodeId]) -> u64 {
        let before: u64 = engines.iter().map(|e| e.counters().summaries_published).sum();
        let mut queue: Vec<(usize, Output)> = Vec::new();
        for (i, e) in engines.iter_mut().enumerate() {
            e.tick(now);
            let turn = e.end_turn(now);
            queue.extend(turn.now.into_iter().chain(turn.after).map(|o| (i, o)));
        }
        let ids: Vec<NodeId> = engines.iter().map(|e| e.local).collect();
        let mut replies = HashMap::new();
        while let Some((from, out)) = queue.pop() {
            let touched: Vec<usize> = match out {
                Output::Publish { topic, data } => {
                    let others: Vec<usize> = (0..engines.len()).filter(|j| *j != from).collect();
                    for &j in &others {
                        engines[j].on_gossip(&topic, &data, None, now);
                    }
                    others
                }
                Output::Send { id, to, .. } if unreachable.contains(&to) => {
                    engines[from].on_answer(id, Err("cannot dial".into()), now);
                    vec![from]
                }
                Output::Send { id, to, request, .. } => {
                    let Some(j) = ids.iter().position(|n| *n == to) else {
                        continue;
                    };
                    let reply = ReplyId(replies.len() as u64);
                    replies.insert(reply, (from, id));
                    engines[j].on_request(ids[from], request, reply, None, now);
                    vec![j]
                }
                Output::Respond { reply, response } => {
                    let Some((asker, id)) = replies.remove(&reply) else {
                        continue;
                    };
                    engines[asker].on_answer(id, Ok(response), now);
                    vec![asker]
                }
                _ => continue,
            };
            for j in touched {
                let turn = engines[j].end_turn(now);
                queue.extend(turn.now.into_iter().chain(turn.after).map(|o| (j, o)));
            }
        }
        engines
            .iter()
            .map(|e| e.counters().summaries_published)
            .sum::<u64>()
            - before
    }

    /// Round-trip times are measured only to connected peers, so members
    /// of one domain see different members with standing, and each that
    /// sees none ranked better than itself elects itself. Each that does
    /// asks the better-ranked members it has no standing for; once they
    /// answer, only the `summary_publishers` best-ranked members publish.
    #[test]
    fn members_that_see_no_standing_converge_on_the_elected_publishers_once_they_ask() {
        let t0 = 1_800_000_000_000;
        let disks: Vec<Disk> = (0..8).map(|_| Disk::default()).collect();
        let mut engines: Vec<Engine> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                node::engine(
                    &Keypair::from_secret([0x60 + i as u8; 32]),
                    Some((1_000, 1)),
                    i as u64,
                    t0,
                    d,
                )
            })
            .collect();
        let interval = engines[0].config.adverts.summary_interval;
        let at = |r: u32| Timestamp(t0).add((interval + Duration::from_millis(100)) * r);
        exchange(&mut engines, at(0));
        assert!(
            engines.iter().all(|e| e.view().len() == 7),
            "every member holds every other's advert"
        );
        let first = exchange(&mut engines, at(1));
        // Each elected one publishes its domain's summary; the root has none.
        assert_eq!(first, 8, "with no standing anywhere, every member elects itself");
        let asked: u64 = engines.iter().map(|e| e.counters().rival_questions).sum();
        assert!(
            asked > 0 && asked <= 7 * 2,
            "the better-ranked are asked, two per member at most: {asked}"
        );
        let second = exchange(&mut engines, at(2));
        assert_eq!(second, 2, "only the two best-ranked publish once they answered");
        let term = engines[0].config.adverts.election_term;
        let mut ranked: Vec<_> = engines
            .iter()
            .map(|e| {
                (
                    crate::view::election_rank(&e.config.domain, at(2), term, &e.local),
                    e.local,
                )
            })
            .collect();
        ranked.sort();
        let publishing: Vec<NodeId> = engines
            .iter()
            .filter(|e| e.view.is_summary_publisher(at(2), term, 2))
            .map(|e| e.local)
            .collect();
        assert_eq!(publishing.len(), 2);
        assert!(publishing.iter().all(|n| ranked[..2].iter().any(|(_, m)| m == n)));
        assert_eq!(exchange(&mut engines, at(3)), 2, "and it stays so");
    }

    /// Adverts the turn at `now` publishes.
    fn adverts_out(e: &mut Engine, now: Timestamp) -> usize {
        e.tick(now);
        e.end_turn(now)
            .now
            .iter()
            .filter(|o| matches!(o, Output::Publish { topic, .. } if topic.contains("/adverts/")))
            .count()
    }

    /// Every node of the other domains asks the few contacts a summary
    /// lists whether its signer is a member, and one at its connection cap
    /// refuses some. A contact that cannot be reached passes the question
    /// to another at once, [`VOUCH_ASKS`] contacts in all at most.
    #[test]
    fn a_contact_that_cannot_be_reached_passes_the_vouch_question_to_another() {
        let t0 = 1_800_000_000_000;
        for unreachable in [2, 3] {
            let disks: Vec<Disk> = (0..4).map(|_| Disk::default()).collect();
            let mut engines: Vec<Engine> = disks
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let key = Keypair::from_secret([0x70 + i as u8; 32]);
                    // Three members of "sim", and one node far away that
                    // hears their summaries on the root's topic.
                    let domain = if i < 3 { "sim" } else { "far" };
                    node::engine_in(domain.parse().unwrap(), &key, Some((1_000, 1)), i as u64, t0, d)
                })
                .collect();
            let cut: Vec<NodeId> = engines[..unreachable].iter().map(|e| e.local).collect();
            let interval = engines[0].config.adverts.summary_interval;
            let at = |r: u32| Timestamp(t0).add((interval + Duration::from_millis(100)) * r);
            for r in 0..3 {
                exchange_but(&mut engines, at(r), &cut);
            }
            let signers = engines[..3]
                .iter()
                .filter(|e| e.counters().summaries_published > 0)
                .count() as u64;
            let far = &engines[3];
            let vouched = far.view().signers_vouched(&"sim".parse().unwrap()) as u64;
            let asked = far.counters().vouch_questions;
            if unreachable == 2 {
                assert_eq!(vouched, signers, "the one contact left vouches for every signer");
                assert!(
                    asked <= VOUCH_ASKS as u64 * signers,
                    "{asked} questions about {signers} signers"
                );
            } else {
                assert_eq!(vouched, 0, "no contact could answer");
                assert_eq!(
                    asked,
                    VOUCH_ASKS as u64 * signers,
                    "each signer's contacts asked in turn, once"
                );
            }
        }
    }

    #[test]
    fn each_advert_is_counted_under_what_made_it_due() {
        use crate::sim::{disk::Disk, node};
        let t0 = 1_800_000_000_000;
        let disk = Disk::default();
        let keypair = agora_protocol::Keypair::from_secret([0x61; 32]);
        let mut e = node::engine(&keypair, Some((1_000, 2)), 1, t0, &disk);
        let now = Timestamp(t0);
        assert_eq!(adverts_out(&mut e, now), 1, "the first turn announces the node");
        // Nothing changed and the refresh is not due: silence.
        let soon = now.add(Duration::from_millis(500));
        assert_eq!(adverts_out(&mut e, soon), 0);
        // A peer of the domain the view does not hold subscribes: it gets
        // the advert at once (after the 100 ms spacing).
        let newcomer = agora_protocol::Keypair::from_secret([0x62; 32]).node_id();
        let topic = e.config.domain.advert_topic();
        e.on_subscribed(newcomer, &topic);
        // A subscription to another topic, or a second reason before the
        // advert went, adds nothing.
        e.on_subscribed(newcomer, "agora/other");
        e.on_listening("/memory/9".into());
        assert_eq!(adverts_out(&mut e, soon), 1);
        let refresh = soon.add(e.config.adverts.interval);
        assert_eq!(adverts_out(&mut e, refresh), 1);
        let counted: Vec<(&str, u64)> = e
            .counters()
            .adverts_published
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        assert_eq!(counted, vec![("newcomer", 1), ("refresh", 1), ("start", 1)]);
    }

    #[test]
    fn a_publisher_gets_its_quota_per_period_and_others_theirs() {
        let t0 = Timestamp(1_800_000_000_000);
        let mut q = Quota::forks();
        let id = |i: u32| {
            let mut secret = [7; 32];
            secret[..4].copy_from_slice(&i.to_le_bytes());
            agora_protocol::Keypair::from_secret(secret).node_id()
        };
        let (a, b) = (id(u32::MAX), id(u32::MAX - 1));
        let allowed = (0..100).filter(|_| q.allow(a, t0)).count();
        assert_eq!(allowed, FORK_QUOTA as usize);
        assert!(q.allow(b, t0), "another publisher is not held back");
        let later = t0.add(Duration::from_secs(60));
        assert!(q.allow(a, later), "a new period");
        // Past the tracked publishers, newcomers wait for old windows.
        let mut q = Quota::fraud();
        for i in 0..QUOTA_PUBLISHERS as u32 {
            assert!(q.allow(id(i), t0));
        }
        assert!(!q.allow(id(u32::MAX - 2), t0));
        assert!(q.allow(id(u32::MAX - 2), t0.add(FRAUD_QUOTA_PERIOD)));
    }
}

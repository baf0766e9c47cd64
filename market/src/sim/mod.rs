//! A deterministic simulation of the market: one requester and several
//! providers, each a real [`crate::engine::Engine`] — the code a node runs — driven by a
//! seeded scheduler that delays, reorders, duplicates and drops messages
//! and crashes and restarts nodes. No sockets, no sleeps, no wall clock:
//! a failing seed replays exactly.
//!
//! What stands in for the rest of a node is only what has no decisions in
//! it: a message queue, a disk that loses unflushed writes in a crash
//! (`disk`), and an executor that knows every task's true output
//! and fuel (a cheating provider forges its output instead). Each node's
//! engine sees exactly the calls a node's driver makes: requests with
//! reply ids, answers or timeouts, gossip, connection events, work results
//! and ticks, at a driver's pace: every 10 ms while the engine has work
//! under way, every [`crate::engine::QUIET_TICK`] while it is quiet.

pub(crate) mod disk;
pub(crate) mod node;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use agora_protocol::execution::ExitStatus;
use agora_protocol::fraud::FraudProof;
use agora_protocol::rpc::{MarketRequest, MarketResponse};
use agora_protocol::units::{Bytes, Fuel, Price, Timestamp};
use agora_protocol::{ContentId, Decode, Envelope, FRAUD_TOPIC, JobId, Keypair, MessageId, NodeId};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::engine::{Ran, RequestId};
use crate::job::{CopyState, InputSpec, JobSpec, JobState, Strategy, TaskPhase};
use node::{Done, SimNode};

/// The simulation's epoch: virtual milliseconds start here.
const T0: u64 = 1_800_000_000_000;
/// A request not answered within this long fails (as the node's network).
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// A probe of a peer answers after this long.
const PROBE_MS: u64 = 200;
/// The requester is node 0.
const REQUESTER: usize = 0;
/// A node's tick while it has work under way (a real node's default).
const TICK_MS: u64 = 10;
/// A quiet node's tick.
const QUIET_TICK_MS: u64 = crate::engine::QUIET_TICK.as_millis() as u64;

/// How hostile the simulated world is.
#[derive(Debug, Clone)]
pub struct World {
    /// Providers.
    pub providers: usize,
    /// The first this many providers return wrong outputs.
    pub cheaters: usize,
    /// Tasks of the one job.
    pub tasks: usize,
    /// Its replication factor.
    pub replicas: u8,
    /// Its spot-check rate.
    pub spot_check: f64,
    /// Chance that a message is lost.
    pub drop: f64,
    /// Chance that a message arrives twice.
    pub duplicate: f64,
    /// Most delay of a message, ms.
    pub max_delay_ms: u64,
    /// Crashes of the requester (in the first 20 s).
    pub requester_crashes: usize,
    /// Crashes of random providers (in the first 20 s).
    pub provider_crashes: usize,
    /// The last provider dies for good in the first 5 s.
    pub kill_one: bool,
    /// Stop once a cheater is caught.
    pub stop_when_caught: bool,
    /// The last provider stops this many ms in, as a node shutting down
    /// does: it withdraws every task it holds (a signed `Cancel`), and is
    /// gone a second later.
    pub stop_one: Option<u64>,
    /// The job's latency class (`None`: interactive or batch at random).
    pub class: Option<agora_protocol::market::LatencyClass>,
    /// Every run takes at least this long, ms.
    pub min_run_ms: u64,
    /// Every provider's slots (`None`: one and two, alternately).
    pub slots: Option<u32>,
    /// Crashes of the requester while it owes a voucher not yet in a
    /// payment block (each as soon as it does).
    pub crashes_owing: usize,
}

impl World {
    /// A world without faults: no cheaters, spot checks, losses or crashes.
    pub fn calm(providers: usize, tasks: usize, replicas: u8, max_delay_ms: u64) -> World {
        World {
            providers,
            cheaters: 0,
            tasks,
            replicas,
            spot_check: 0.0,
            drop: 0.0,
            duplicate: 0.0,
            max_delay_ms,
            requester_crashes: 0,
            provider_crashes: 0,
            kill_one: false,
            stop_when_caught: false,
            stop_one: None,
            class: None,
            min_run_ms: 0,
            slots: None,
            crashes_owing: 0,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// The job's final state (`None`: lost).
    pub state: Option<JobState>,
    /// Verified outputs that are wrong.
    pub wrong_accepted: usize,
    /// Vouchers issued (each counted once, however often it was sent).
    pub vouchers_issued: usize,
    /// Cheaters the requester banned.
    pub cheaters_banned: usize,
    /// Receipts the first caught cheater had delivered when it was caught.
    pub caught_after: Option<u64>,
    /// Virtual time the run took.
    pub virtual_ms: u64,
    /// Receipts acknowledged as superseded (copies withdrawn before their
    /// agreement arrived).
    pub superseded: u64,
    /// Receipts refused for want of any copy at that provider.
    pub refused: u64,
    /// Engine ticks, all nodes (a quiet node ticks seldom).
    pub ticks: u64,
    /// Calls for offers providers declined for want of credit.
    pub declined_for_credit: u64,
    /// Orders providers took (tasks agreed without an offer before).
    pub orders: u64,
    /// Receipts providers sent in an order's answer.
    pub receipts_answered: u64,
    /// Acceptances requesters sent (orders' included).
    pub accepts: u64,
    /// Signatures those took.
    pub accept_signatures: u64,
    /// Agreements providers signed.
    pub agreements: u64,
    /// Signatures those took.
    pub agreement_signatures: u64,
    /// Receipts providers sent.
    pub receipts: u64,
    /// Signatures those took.
    pub receipt_signatures: u64,
    /// Tasks the stopping provider withdrew (`World::stop_one`).
    pub withdrawn: u64,
    /// Of those, orders whose answers it held when it stopped.
    pub withdrawn_held: u64,
    /// Copies the requester took as withdrawn by their provider.
    pub copies_withdrawn: u64,
    /// Checkpoints the nodes appended to their chains.
    pub checkpoints: u64,
    /// Attestations of those checkpoints their owners kept.
    pub attestations: u64,
    /// Audits started at an attested checkpoint.
    pub audits_resumed: u64,
    /// What broke an invariant, if anything did.
    pub error: Option<String>,
    /// A digest of every event delivered and when: equal traces mean
    /// identical runs.
    pub trace: [u8; 32],
}

/// Something scheduled.
#[derive(Debug, Clone)]
enum Event {
    /// A request reaches node `to` (if it is still in `epoch`).
    Request {
        from: usize,
        from_epoch: u64,
        to: usize,
        epoch: u64,
        id: RequestId,
        sent: u64,
        request: MarketRequest,
        /// The batch it went in with others.
        frame: Option<u64>,
    },
    /// An answer (or a timeout) reaches node `to`'s engine of `epoch`.
    Answer {
        to: usize,
        epoch: u64,
        id: RequestId,
        answer: Result<MarketResponse, String>,
    },
    /// Gossip reaches node `to`.
    Gossip { to: usize, topic: String, data: Vec<u8> },
    /// Work a node ran is done.
    Done { node: usize, epoch: u64, done: Done },
}

/// The simulation.
struct Sim {
    rng: SmallRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    /// The batch number of the requests for each peer the turn being
    /// carried out sends more than one (`Event::Request::frame`).
    frames: HashMap<NodeId, u64>,
    /// The delay of each of those batches.
    frame_delays: HashMap<u64, u64>,
    next_frame: u64,
    world: World,
    nodes: Vec<SimNode>,
    /// Every task's true output and fuel, by input.
    truth: HashMap<ContentId, (Vec<u8>, Fuel)>,
    job: JobId,
    error: Option<String>,
    caught_after: Option<u64>,
    /// Voucher envelopes sent per receipt paid for.
    vouchers: HashMap<MessageId, HashSet<MessageId>>,
    /// Agreements whose receipt each provider sent.
    receipts_sent: Vec<HashSet<MessageId>>,
    refused: u64,
    /// Tasks withdrawn by a provider's stop.
    withdrawn: u64,
    /// Of those, orders whose answers were held.
    withdrawn_held: u64,
    /// Engine ticks, all nodes.
    ticks: u64,
    trace: blake3::Hasher,
}

fn ts(ms: u64) -> Timestamp {
    Timestamp(ms)
}

impl Sim {
    fn new(seed: u64, world: World) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut nodes = Vec::with_capacity(world.providers + 1);
        nodes.push(SimNode::new(
            Keypair::from_secret(rng.random()),
            None,
            false,
            seed,
            T0,
        ));
        for i in 0..world.providers {
            let kp = Keypair::from_secret(rng.random());
            let cu = 500 + rng.random_range(0..1500);
            let slots = world.slots.unwrap_or(1 + (i % 2) as u32);
            nodes.push(SimNode::new(
                kp,
                Some((cu, slots)),
                i < world.cheaters,
                seed ^ i as u64,
                T0,
            ));
        }
        Sim {
            rng,
            now: T0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            frames: HashMap::new(),
            frame_delays: HashMap::new(),
            next_frame: 0,
            receipts_sent: vec![HashSet::new(); nodes.len()],
            nodes,
            world,
            truth: HashMap::new(),
            job: JobId([0; 16]),
            error: None,
            caught_after: None,
            vouchers: HashMap::new(),
            refused: 0,
            withdrawn: 0,
            withdrawn_held: 0,
            ticks: 0,
            trace: blake3::Hasher::new(),
        }
    }

    fn at(&mut self, when: u64, e: Event) {
        self.seq += 1;
        self.events.insert(self.seq, e);
        self.queue.push(Reverse((when, self.seq)));
    }

    fn delay(&mut self) -> u64 {
        1 + self.rng.random_range(0..self.world.max_delay_ms.max(1))
    }

    /// How many copies of a message arrive: 0 (lost), 1 or 2.
    fn copies(&mut self) -> usize {
        if self.rng.random_bool(self.world.drop) {
            0
        } else if self.rng.random_bool(self.world.duplicate) {
            2
        } else {
            1
        }
    }

    fn index_of(&self, n: NodeId) -> Option<usize> {
        self.nodes.iter().position(|x| x.id == n)
    }

    fn submit(&mut self) {
        let module = b"(simulated module)".to_vec();
        let module_id = ContentId::of(&module);
        self.nodes[REQUESTER].disk.keep(module_id, module.len());
        let mut inputs = Vec::new();
        for i in 0..self.world.tasks {
            let bytes = format!("input {i} {}", self.rng.random::<u32>()).into_bytes();
            let id = ContentId::of(&bytes);
            let out = blake3::hash(&bytes).as_bytes().to_vec();
            // Every other task is tiny (milliseconds: placed by orders once
            // a provider has standing), the rest take about a second.
            let scale = if i % 2 == 0 { 10_000_000 } else { 100_000 };
            let fuel = Fuel(1_000_000 + u64::from(bytes[bytes.len() - 1]) * scale);
            self.truth.insert(id, (out, fuel));
            self.nodes[REQUESTER].disk.keep(id, bytes.len());
            self.nodes[REQUESTER].blobs.insert(id, bytes.clone());
            inputs.push(InputSpec {
                name: format!("in-{i}"),
                id,
                size: Bytes(bytes.len() as u64),
                estimate: Some(fuel),
            });
        }
        self.nodes[REQUESTER].blobs.insert(module_id, module.clone());
        // Half the jobs interactive: their orders are answered with their
        // receipts when a provider runs them at once.
        let class = if self.rng.random::<bool>() {
            agora_protocol::market::LatencyClass::Interactive
        } else {
            agora_protocol::market::LatencyClass::Batch
        };
        let class = self.world.class.unwrap_or(class);
        let spec = JobSpec {
            module: module_id,
            module_size: Bytes(module.len() as u64),
            reduce: None,
            inputs,
            dataset: None,
            inputs_from: None,
            args: vec!["x".into()],
            reduce_args: vec![],
            fuel: Fuel(10_000_000_000),
            estimate: None,
            memory: Bytes::mib(64),
            deadline: Duration::from_secs(30),
            max_price: Price(1_000_000),
            replicas: self.world.replicas,
            domain: None,
            spot_check: self.world.spot_check,
            max_energy: None,
            seed: 5,
            strategy: Strategy::Scored,
            max_output: None,
            max_failures: 0,
            ttl: None,
            select: Vec::new(),
            class,
            energy_budget: None,
        };
        let now = ts(self.now);
        match self.nodes[REQUESTER].engine.submit(spec, now) {
            Ok(id) => self.job = id,
            Err(e) => self.error = Some(format!("submit refused: {e}")),
        }
    }

    /// The truth of a run of `input` on node `n` (forged by a cheater).
    fn run(&self, n: usize, input: &ContentId) -> Option<Ran> {
        let (mut out, fuel) = self.truth.get(input)?.clone();
        if self.nodes[n].cheat {
            // Cheaters forge independently: their wrong outputs differ.
            out.extend_from_slice(format!("forged by {n}").as_bytes());
        }
        Some(Ran {
            output: ContentId::of(&out),
            output_size: Bytes(out.len() as u64),
            fuel,
            exit: ExitStatus::Success,
            started_at: ts(self.now.saturating_sub(10)),
            finished_at: ts(self.now),
            inline: Some(out),
            stderr: Vec::new(),
            resumed: None,
            billed_from: Fuel(0),
        })
    }

    fn run_loop(mut self) -> Report {
        for n in 0..self.nodes.len() {
            self.end_turn(n);
        }
        self.nodes[REQUESTER].fund(T0);
        self.submit();
        self.end_turn(REQUESTER);
        let limit = self.now + 20 * 60 * 1000;
        let crash_window = 20_000;
        let mut owing_crashes = self.world.crashes_owing;
        let mut crashes: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for _ in 0..self.world.requester_crashes {
            crashes
                .entry(T0 + self.rng.random_range(1..crash_window))
                .or_default()
                .push(REQUESTER);
        }
        for _ in 0..self.world.provider_crashes {
            let p = 1 + self.rng.random_range(0..self.world.providers);
            crashes
                .entry(T0 + self.rng.random_range(1..crash_window))
                .or_default()
                .push(p);
        }
        let mut kill_at = self.world.kill_one.then(|| T0 + self.rng.random_range(1..5_000));
        let mut stop_at = self.world.stop_one.map(|ms| T0 + ms);
        let mut next_tick = self.now;
        let mut ended = false;
        loop {
            let next_event = self.queue.peek().map(|Reverse((t, _))| *t);
            let t = next_event.map_or(next_tick, |e| e.min(next_tick));
            self.now = t.max(self.now);
            if self.now > limit {
                break;
            }
            while let Some((&c, _)) = crashes.first_key_value()
                && c <= self.now
            {
                for n in crashes.pop_first().map(|(_, v)| v).unwrap_or_default() {
                    if self.nodes[n].alive {
                        self.crash(n);
                    }
                }
            }
            if owing_crashes > 0 && self.nodes[REQUESTER].alive && self.nodes[REQUESTER].engine.owed() > 0 {
                owing_crashes -= 1;
                self.crash(REQUESTER);
            }
            if let Some(k) = kill_at
                && self.now >= k
            {
                kill_at = None;
                self.kill(self.nodes.len() - 1);
            }
            if let Some(s) = stop_at
                && self.now >= s
            {
                stop_at = None;
                let last = self.nodes.len() - 1;
                self.withdrawn_held += self.nodes[last].engine.held_answers() as u64;
                self.withdrawn += self.nodes[last].engine.shutdown(ts(self.now)) as u64;
                self.end_turn(last);
                kill_at = Some(self.now + 1_000);
            }
            if next_event == Some(t) {
                let Some(Reverse((_, seq))) = self.queue.pop() else {
                    break;
                };
                if let Some(e) = self.events.remove(&seq) {
                    self.deliver(e);
                    self.hasten_ticks();
                }
            } else {
                next_tick = self.now + TICK_MS;
                self.tick_due();
            }
            if self.world.stop_when_caught && self.caught_after.is_some() {
                break;
            }
            if self.finished() {
                ended = true;
                break;
            }
        }
        let mut report = self.report();
        if ended && report.error.is_none() {
            report.error = self.every_copy_marked_paid_was_paid();
        }
        if ended
            && report.error.is_none()
            && let Some(e) = self.restart_after_the_end()
        {
            report.error = Some(e);
        }
        report
    }

    /// Once the job has ended and nothing is owed or undelivered, every
    /// copy the requester marked paid had its voucher sent in a payment
    /// (a voucher decided and then lost, to a crash say, is caught here:
    /// the ledgers would still balance without it).
    fn every_copy_marked_paid_was_paid(&self) -> Option<String> {
        let requester = &self.nodes[REQUESTER];
        if !requester.alive || requester.engine.in_flight().1 > 0 {
            return None;
        }
        let paid = requester
            .engine
            .with_job(&self.job, |_, tasks| {
                tasks
                    .iter()
                    .flat_map(|t| &t.copies)
                    .filter(|c| c.paid.is_some())
                    .count()
            })
            .unwrap_or(0);
        (self.vouchers.len() < paid).then(|| {
            format!(
                "{paid} copies marked paid, vouchers sent for {} receipts",
                self.vouchers.len()
            )
        })
    }

    /// Once the job has ended and its records are durable, a restart of
    /// the requester must bring back no ended job into memory (start time
    /// and memory do not grow with history), the job must still be
    /// readable from its records, and every provider it banned must still
    /// be banned. Runs after the report is taken (a restart forgets what
    /// the requester learnt of providers short of a ban).
    fn restart_after_the_end(&mut self) -> Option<String> {
        let r = &mut self.nodes[REQUESTER];
        if !r.alive {
            return None;
        }
        let banned = |r: &SimNode| -> BTreeSet<NodeId> {
            r.engine
                .requester()
                .book()
                .iter()
                .filter(|(_, s)| s.banned.is_some())
                .map(|(n, _)| *n)
                .collect()
        };
        let before = banned(r);
        r.disk.tick(self.now + 3_600_000);
        r.crash(self.now);
        let after = banned(r);
        if after != before {
            return Some(format!(
                "a restart changed the banned providers: {} before, {} after",
                before.len(),
                after.len()
            ));
        }
        if r.engine.requester().job(&self.job).is_some() {
            return Some("a restart brought the ended job back into memory".into());
        }
        if r.engine.with_job(&self.job, |_, _| ()).is_none() {
            return Some("after a restart the ended job cannot be read from its records".into());
        }
        None
    }

    fn finished(&self) -> bool {
        let done = self.nodes[REQUESTER]
            .engine
            .with_job(&self.job, |r, _| r.state.is_terminal())
            .unwrap_or(false);
        done && self.nodes.iter().all(|n| !n.alive || n.engine.in_flight().1 == 0)
    }

    /// Every live node's disk moves on; the engines whose tick is due
    /// tick, and their next tick is set by whether they are quiet.
    fn tick_due(&mut self) {
        for n in 0..self.nodes.len() {
            if !self.nodes[n].alive {
                continue;
            }
            self.nodes[n].disk.tick(self.now);
            if self.nodes[n].next_tick > self.now {
                continue;
            }
            self.ticks += 1;
            self.nodes[n].engine.tick(ts(self.now));
            self.end_turn(n);
            let quiet = self.nodes[n].engine.quiet();
            self.nodes[n].next_tick = self.now + if quiet { QUIET_TICK_MS } else { TICK_MS };
        }
    }

    /// A quiet node that an event gave work ticks again at the busy pace,
    /// as a node's driver brings its next tick forward.
    fn hasten_ticks(&mut self) {
        let soon = self.now + TICK_MS;
        for node in &mut self.nodes {
            if node.alive && node.next_tick > soon && !node.engine.quiet() {
                node.next_tick = soon;
            }
        }
    }

    fn deliver(&mut self, e: Event) {
        self.trace.update(&self.now.to_le_bytes());
        let kind = format!("{e:?}");
        self.trace
            .update(kind.split(['{', '(', ' ']).next().unwrap_or("").as_bytes());
        let now = ts(self.now);
        match e {
            Event::Request {
                from,
                from_epoch,
                to,
                epoch,
                id,
                sent,
                request,
                frame,
            } => {
                if !self.nodes[to].alive || self.nodes[to].epoch != epoch {
                    return;
                }
                let mut next = Some((from, from_epoch, id, sent, request));
                // The other parts of its batch that arrive with it join
                // the turn, as the parts of a frame do at a node.
                while let Some((from, from_epoch, id, sent, request)) = next {
                    let receipt = matches!(request, MarketRequest::Receipt { .. });
                    let reply = self.nodes[to].reply_to(from, from_epoch, id, sent, receipt);
                    let peer = self.nodes[from].id;
                    let part = frame.map(crate::engine::FrameId);
                    self.nodes[to].engine.on_request(peer, request, reply, part, now);
                    next = frame.and_then(|f| self.next_part_now(to, epoch, f));
                }
                self.end_turn(to);
            }
            Event::Answer {
                to,
                epoch,
                id,
                answer,
            } => {
                if !self.nodes[to].alive || self.nodes[to].epoch != epoch {
                    return;
                }
                self.nodes[to].engine.on_answer(id, answer, now);
                self.end_turn(to);
            }
            Event::Gossip { to, topic, data } => {
                if !self.nodes[to].alive {
                    return;
                }
                let _ = self.nodes[to].engine.on_gossip(&topic, &data, None, now);
                self.end_turn(to);
            }
            Event::Done { node, epoch, done } => {
                if !self.nodes[node].alive || self.nodes[node].epoch != epoch {
                    return;
                }
                self.nodes[node].finish(done, now);
                // As a node's driver does, work of this node finished at
                // the same instant joins the turn (runs that end together
                // have their receipts signed together).
                while let Some(more) = self.next_done_now(node, epoch) {
                    self.nodes[node].finish(more, now);
                }
                self.end_turn(node);
            }
        }
    }

    /// The next event in the queue if it is now and a request of batch
    /// `frame` for `node` (of this `epoch`), taken out of the queue: its
    /// sender, sender's epoch, id, sending time and the request.
    fn next_part_now(
        &mut self,
        node: usize,
        epoch: u64,
        frame: u64,
    ) -> Option<(usize, u64, RequestId, u64, MarketRequest)> {
        let &Reverse((t, seq)) = self.queue.peek()?;
        let same = t == self.now
            && matches!(self.events.get(&seq), Some(Event::Request { to, epoch: e, frame: Some(f), .. })
                if *to == node && *e == epoch && *f == frame);
        if !same {
            return None;
        }
        self.queue.pop();
        self.trace.update(&self.now.to_le_bytes());
        self.trace.update(b"Request");
        match self.events.remove(&seq) {
            Some(Event::Request {
                from,
                from_epoch,
                id,
                sent,
                request,
                ..
            }) => Some((from, from_epoch, id, sent, request)),
            _ => None,
        }
    }

    /// The next event in the queue if it is now and a piece of `node`'s
    /// work done (of this `epoch`), taken out of the queue.
    fn next_done_now(&mut self, node: usize, epoch: u64) -> Option<Done> {
        let &Reverse((t, seq)) = self.queue.peek()?;
        let same = t == self.now
            && matches!(self.events.get(&seq), Some(Event::Done { node: n, epoch: e, .. }) if *n == node && *e == epoch);
        if !same {
            return None;
        }
        self.queue.pop();
        self.trace.update(&self.now.to_le_bytes());
        self.trace.update(b"Done");
        match self.events.remove(&seq) {
            Some(Event::Done { done, .. }) => Some(done),
            _ => None,
        }
    }

    fn crash(&mut self, n: usize) {
        self.nodes[n].crash(self.now);
        self.end_turn(n);
    }

    fn kill(&mut self, n: usize) {
        self.nodes[n].alive = false;
        let gone = self.nodes[n].id;
        for m in 0..self.nodes.len() {
            if m != n && self.nodes[m].alive {
                self.nodes[m].engine.on_disconnected(gone);
                self.end_turn(m);
            }
        }
    }

    /// Records what an outgoing request says about the run: vouchers per
    /// receipt, receipts sent per provider.
    fn observe_request(&mut self, from: usize, request: &MarketRequest) {
        match request {
            MarketRequest::Pay(env) => {
                for v in crate::ledger::Ledger::vouchers_of(env) {
                    self.vouchers.entry(v.receipt).or_default().insert(env.id());
                }
            }
            MarketRequest::Receipt { receipt, .. } => {
                if let Ok(r) = receipt.open_ignoring_time::<agora_protocol::execution::Receipt>() {
                    self.receipts_sent[from].insert(r.payload().agreement);
                }
            }
            _ => {}
        }
    }

    /// Records a fraud proof the requester published.
    fn observe_fraud(&mut self, from: usize, data: &[u8]) {
        if from != REQUESTER {
            return;
        }
        let Some(proof) = Envelope::from_bytes(data)
            .ok()
            .and_then(|e| e.open_ignoring_time::<FraudProof>().ok())
        else {
            return;
        };
        let Ok(accused) = proof
            .payload()
            .accused
            .receipt
            .open_ignoring_time::<agora_protocol::execution::Receipt>()
        else {
            return;
        };
        if let Some(p) = self.index_of(accused.signer()) {
            if self.caught_after.is_none() {
                self.caught_after = Some(self.receipts_sent[p].len() as u64);
            }
            if !self.nodes[p].cheat {
                self.error = Some(format!("honest provider {p} reported as a cheater"));
            }
        }
    }

    fn report(&self) -> Report {
        let requester = &self.nodes[REQUESTER].engine;
        let mut rep = Report {
            virtual_ms: self.now - T0,
            error: self.error.clone(),
            caught_after: self.caught_after,
            superseded: requester.counters().receipts_superseded,
            refused: self.refused,
            ticks: self.ticks,
            orders: self.nodes.iter().map(|n| n.engine.counters().orders_taken).sum(),
            accepts: self.nodes.iter().map(|n| n.engine.counters().accepts_sent).sum(),
            accept_signatures: self
                .nodes
                .iter()
                .map(|n| n.engine.counters().accept_signatures)
                .sum(),
            agreements: self.nodes.iter().map(|n| n.engine.counters().agreements).sum(),
            agreement_signatures: self
                .nodes
                .iter()
                .map(|n| n.engine.counters().agreement_signatures)
                .sum(),
            receipts: self.nodes.iter().map(|n| n.engine.counters().receipts_sent).sum(),
            receipt_signatures: self
                .nodes
                .iter()
                .map(|n| n.engine.counters().receipt_signatures)
                .sum(),
            receipts_answered: self
                .nodes
                .iter()
                .map(|n| n.engine.counters().receipts_answered)
                .sum(),
            declined_for_credit: self
                .nodes
                .iter()
                .map(|n| {
                    n.engine
                        .counters()
                        .declined
                        .get("no_credit")
                        .copied()
                        .unwrap_or(0)
                })
                .sum(),
            trace: *self.trace.clone().finalize().as_bytes(),
            vouchers_issued: self.vouchers.len(),
            ..Report::default()
        };
        // The job as the requester has it, in memory or (once it has left
        // memory) in its records.
        let judged = requester.with_job(&self.job, |record, tasks| {
            let wrong = tasks
                .iter()
                .filter(|t| t.phase == TaskPhase::Verified)
                .filter(|t| {
                    let input = record.spec.inputs[t.id.index as usize].id;
                    t.output != Some(ContentId::of(&self.truth[&input].0))
                })
                .count();
            (record.state, wrong)
        });
        let Some((state, wrong)) = judged else {
            rep.error = Some("job lost".into());
            return rep;
        };
        rep.state = Some(state);
        rep.wrong_accepted = wrong;
        rep.withdrawn = self.withdrawn;
        rep.withdrawn_held = self.withdrawn_held;
        rep.copies_withdrawn = requester
            .with_job(&self.job, |_, tasks| {
                tasks
                    .iter()
                    .flat_map(|t| &t.copies)
                    .filter(|c| matches!(&c.state, CopyState::Failed(r) if r == crate::job::WITHDRAWN_BY_PROVIDER))
                    .count() as u64
            })
            .unwrap_or(0);
        if let Some((r, v)) = self.vouchers.iter().find(|(_, v)| v.len() > 1) {
            rep.error = Some(format!("receipt {r} paid {} times", v.len()));
        }
        // Conservation: once every payment is delivered, the balances sum
        // to what the issuer granted.
        let balances: i64 = self
            .nodes
            .iter()
            .map(|n| n.engine.ledger().state().balance())
            .sum();
        if requester.in_flight().1 == 0 && balances != node::GRANT as i64 {
            rep.error = Some(format!(
                "ledgers do not balance: they sum to {balances}, {} was granted",
                node::GRANT
            ));
        }
        // Every chain audits from block 1 to its ledger's balance, and an
        // audit resumed at its last checkpoint counts the same.
        for n in &self.nodes {
            if let Err(e) = audit_own_chain(n) {
                rep.error = Some(format!("node {:?}: {e}", self.index_of(n.id)));
            }
            rep.checkpoints += n.engine.counters().checkpoints;
            rep.attestations += n.engine.counters().attestations_in;
            rep.audits_resumed += n.engine.counters().audits_resumed;
        }
        // Nobody was paid for a wrong result.
        for n in self.nodes.iter().filter(|n| n.cheat) {
            if n.engine.ledger().state().balance() > 0 && self.world.replicas > 1 {
                rep.error = Some("a cheater was paid".into());
            }
        }
        // No lane stays reserved once nothing runs.
        if state.is_terminal() {
            for (n, st) in requester.requester().book().iter() {
                if !st.lanes.is_empty() {
                    rep.error = Some(format!(
                        "provider {:?} keeps {} lanes after the job ended",
                        self.index_of(*n),
                        st.lanes.len()
                    ));
                }
            }
        }
        rep.cheaters_banned = self
            .nodes
            .iter()
            .filter(|n| n.cheat && requester.requester().book().is_banned(&n.id))
            .count();
        rep
    }
}

/// Runs one seeded simulation.
pub fn simulate(seed: u64, world: World) -> Report {
    Sim::new(seed, world).run_loop()
}

impl Sim {
    /// Ends node `n`'s turn: applies its writes, then carries out its
    /// outputs (those waiting on the writes after them).
    fn end_turn(&mut self, n: usize) {
        if !self.nodes[n].alive {
            return;
        }
        let turn = self.nodes[n].engine.end_turn(ts(self.now));
        self.nodes[n]
            .disk
            .write(turn.writes.into_vec(), turn.flush, self.now);
        for outs in [turn.now, turn.after] {
            // As a node's network does, the requests for one peer go as
            // one batch, whose parts their receiver knows as one frame.
            let mut count: BTreeMap<NodeId, usize> = BTreeMap::new();
            for out in &outs {
                if let Output::Send { to, .. } = out {
                    *count.entry(*to).or_default() += 1;
                }
            }
            for (to, k) in count {
                if k > 1 {
                    self.frames.insert(to, self.next_frame);
                    self.next_frame += 1;
                }
            }
            for out in outs {
                self.carry_out(n, out);
            }
            self.frames.clear();
            self.frame_delays.clear();
        }
    }
}

use crate::engine::{Output, Work};

impl Sim {
    fn carry_out(&mut self, n: usize, out: Output) {
        match out {
            Output::Send {
                id,
                to,
                request,
                attach,
            } => self.send(n, id, to, request, &attach),
            Output::Respond { reply, response } => self.respond(n, reply, response),
            Output::Publish { topic, data } => {
                if topic == FRAUD_TOPIC {
                    self.observe_fraud(n, &data);
                }
                for to in 0..self.nodes.len() {
                    if to != n && self.nodes[to].alive {
                        for _ in 0..self.copies() {
                            let d = self.delay();
                            let (topic, data) = (topic.clone(), data.clone());
                            self.at(self.now + d, Event::Gossip { to, topic, data });
                        }
                    }
                }
            }
            Output::Locate { .. } | Output::Audited { .. } => {}
            Output::Interrupt { agreement } => {
                // The run stops at the next epoch tick; its scheduled end
                // comes later and finds nothing to finish.
                let epoch = self.nodes[n].epoch;
                let done = Done::Executed(agreement, Err("interrupted".into()));
                self.at(self.now + 1, Event::Done { node: n, epoch, done });
            }
            Output::Run(w) => self.work(n, w),
        }
    }

    fn send(
        &mut self,
        n: usize,
        id: RequestId,
        to: NodeId,
        mut request: MarketRequest,
        attach: &[ContentId],
    ) {
        self.observe_request(n, &request);
        let epoch = self.nodes[n].epoch;
        // Whatever happens, the request fails after the timeout unless
        // answered first (a later answer is ignored, as by the network).
        self.at(
            self.now + REQUEST_TIMEOUT_MS,
            Event::Answer {
                to: n,
                epoch,
                id,
                answer: Err(format!("request to node {to} timed out")),
            },
        );
        let Some(dest) = self.index_of(to) else { return };
        if let Some(content) = request.content_mut() {
            for c in attach {
                if let Some(b) = self.nodes[n].blobs.get(c) {
                    content.push(agora_protocol::wire::Blob(b.clone()));
                }
            }
        }
        let frame = self.frames.get(&to).copied();
        for copy in 0..self.copies() {
            // A batch travels as one frame: its parts arrive together
            // (a duplicate of one arrives on its own).
            let d = match frame {
                Some(f) if copy == 0 => match self.frame_delays.get(&f) {
                    Some(d) => *d,
                    None => {
                        let d = self.delay();
                        self.frame_delays.insert(f, d);
                        d
                    }
                },
                _ => self.delay(),
            };
            let e = Event::Request {
                from: n,
                from_epoch: epoch,
                to: dest,
                epoch: self.nodes[dest].epoch,
                id,
                sent: self.now,
                request: request.clone(),
                frame,
            };
            self.at(self.now + d, e);
        }
    }

    fn respond(&mut self, n: usize, reply: crate::engine::ReplyId, response: MarketResponse) {
        let Some(r) = self.nodes[n].replies.remove(&reply) else {
            return;
        };
        if let MarketResponse::Ran { receipt, .. } = &response
            && let Ok(r) = receipt.open_ignoring_time::<agora_protocol::execution::Receipt>()
        {
            self.receipts_sent[n].insert(r.payload().agreement);
        }
        // A requester answers a receipt `Unknown` when it has no copy for it.
        if n == REQUESTER
            && r.receipt
            && matches!(
                response,
                MarketResponse::Declined(agora_protocol::rpc::Decline::Unknown)
            )
        {
            self.refused += 1;
        }
        for _ in 0..self.copies() {
            let d = self.delay();
            let e = Event::Answer {
                to: r.from,
                epoch: r.from_epoch,
                id: r.id,
                answer: Ok(response.clone()),
            };
            self.at(self.now + d, e);
        }
    }

    fn work(&mut self, n: usize, w: Work) {
        let epoch = self.nodes[n].epoch;
        let (after, done) = match w {
            Work::Execute {
                agreement,
                assignment,
                ..
            } => {
                let cu = self.nodes[n].cu.max(1);
                let ran = self.run(n, &assignment.input);
                let run = ran.as_ref().map_or(1, |r| r.fuel.0 / (cu * 1000) + 1);
                let run = run.max(self.world.min_run_ms);
                (
                    run,
                    Done::Executed(agreement, ran.ok_or_else(|| "unknown input".into())),
                )
            }
            Work::Keep { id, bytes } => {
                self.nodes[n].disk.keep(id, bytes.len());
                return;
            }
            Work::StoreOutput { token, id, bytes } => {
                self.nodes[n].disk.keep(id, bytes.len());
                (0, Done::Stored(token))
            }
            Work::Fetch { task, attempt, .. } => (1, Done::Fetched(task, attempt)),
            Work::SpotCheck {
                task,
                attempt,
                assignment,
            } => {
                let ran = self.run(REQUESTER, &assignment.input);
                (
                    1,
                    Done::SpotChecked(task, attempt, ran.ok_or_else(|| "unknown input".into())),
                )
            }
            Work::Reduce { job, .. } => (1, Done::Reduced(job)),
            Work::CheckFraud {
                proof, assignment, ..
            } => {
                let ran = self.run(REQUESTER, &assignment.input);
                (
                    1,
                    Done::FraudChecked(proof, ran.ok_or_else(|| "unknown input".into())),
                )
            }
            Work::Probe { peer } => {
                let alive = self.index_of(peer).is_some_and(|p| self.nodes[p].alive);
                (PROBE_MS, Done::Probed(peer, alive))
            }
            Work::Calibrate | Work::Collect { .. } => return,
        };
        self.at(self.now + after, Event::Done { node: n, epoch, done });
    }
}

/// Audits `n`'s chain as any auditor would, from its records: from block 1,
/// and from its last checkpoint; both must reach its ledger's balance.
fn audit_own_chain(n: &node::SimNode) -> Result<(), String> {
    use agora_protocol::chain::{Audit, Block, Entry};
    let host = n.disk.host();
    let ledger = n.engine.ledger();
    let mut blocks = Vec::new();
    loop {
        let page = ledger
            .blocks(host.as_ref(), &n.id, blocks.len() as u64, 64)
            .map_err(|e| e.to_string())?;
        if page.is_empty() {
            break;
        }
        blocks.extend(page);
    }
    let issuers = [node::issuer().node_id()];
    let trust = |k: &NodeId| issuers.contains(k);
    let mut whole = Audit::new(n.id);
    let (_, err) = whole.apply_run(&blocks, &trust);
    if let Some(e) = err {
        return Err(format!("its chain does not audit: {e}"));
    }
    let want = ledger.state().balance();
    if whole.balance() != want || whole.seq != ledger.state().seq {
        return Err(format!(
            "its audit counts {} in {} blocks, its ledger {want} in {}",
            whole.balance(),
            whole.seq,
            ledger.state().seq
        ));
    }
    let last = blocks
        .iter()
        .rposition(|b| matches!(b.peek::<Block>().map(|b| b.entry), Ok(Entry::Checkpoint(_))));
    if let Some(at) = last {
        let mut resumed = Audit::resume(n.id, &blocks[at], &trust).map_err(|e| e.to_string())?;
        let (_, err) = resumed.apply_run(&blocks[at + 1..], &trust);
        if err.is_some() || resumed.balance() != want {
            return Err(format!(
                "from its checkpoint at {}, the audit counts {} ({err:?})",
                at + 1,
                resumed.balance()
            ));
        }
    }
    Ok(())
}

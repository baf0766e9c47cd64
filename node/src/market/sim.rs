//! A deterministic simulation of the market: one requester, several
//! providers, the sans-IO state machines driven by a seeded scheduler of
//! messages that can be delayed, reordered, duplicated and dropped, and
//! nodes that crash and restart. No sockets, no sleeps, no wall clock: a
//! failing seed replays exactly.
//!
//! The simulated driver mirrors `crate::node::driver`: what the requester
//! and providers persist survives their restarts; what is in flight does not.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use agora_protocol::capacity::Advert;
use agora_protocol::execution::{ExitStatus, Receipt};
use agora_protocol::market::{Accept, Agreement, CallForOffers, Cancel, Offer, args_digest};
use agora_protocol::settlement::Voucher;
use agora_protocol::units::{Bytes, ComputeUnits, Credits, EnergyRate, Fuel, Millis, Price, Timestamp};
use agora_protocol::{
    ContentId, Encode, Envelope, JobId, Keypair, MessageId, NodeId, Nonce, Payload, TaskId, Verified,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::job::{InputSpec, JobRecord, JobSpec, JobState, Strategy, TaskPhase, TaskRecord};
use super::provider::{self, Accepted, Provider, Stage};
use super::requester::{self, Action, ReceiptError, ReceiptVerdict, Requester};
use crate::view::View;

const T0: u64 = 1_800_000_000_000;

/// How hostile the simulated world is.
#[derive(Debug, Clone)]
pub(crate) struct World {
    pub(crate) providers: usize,
    pub(crate) cheaters: usize,
    pub(crate) tasks: usize,
    pub(crate) replicas: u8,
    pub(crate) spot_check: f64,
    pub(crate) drop: f64,
    pub(crate) duplicate: f64,
    pub(crate) max_delay_ms: u64,
    pub(crate) requester_crashes: usize,
    pub(crate) provider_crashes: usize,
    pub(crate) kill_one: bool,
    pub(crate) stop_when_caught: bool,
}

/// What a run found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) state: Option<JobState>,
    pub(crate) wrong_accepted: usize,
    pub(crate) vouchers_issued: usize,
    pub(crate) cheaters_banned: usize,
    /// Receipts the first caught cheater had delivered when it was caught.
    pub(crate) caught_after: Option<u64>,
    pub(crate) virtual_ms: u64,
    /// Receipts for copies withdrawn before their agreement arrived.
    pub(crate) superseded: u64,
    /// Receipts refused for want of any copy at that provider.
    pub(crate) refused: u64,
    pub(crate) error: Option<String>,
    /// A digest of every message delivered and when: equal traces mean
    /// identical runs.
    pub(crate) trace: [u8; 32],
}

#[derive(Debug, Clone)]
enum Msg {
    // To provider `p`.
    Call {
        p: usize,
        task: TaskId,
        attempt: u16,
        env: Envelope,
    },
    AcceptReq {
        p: usize,
        task: TaskId,
        attempt: u16,
        env: Envelope,
    },
    VoucherReq {
        p: usize,
        key: MessageId,
        env: Envelope,
        epoch: u64,
    },
    CancelReq {
        p: usize,
        env: Envelope,
    },
    // To the requester.
    OfferAns {
        task: TaskId,
        attempt: u16,
        from: usize,
        ans: Result<Envelope, String>,
        epoch: u64,
    },
    AgreementAns {
        task: TaskId,
        attempt: u16,
        from: usize,
        ans: Result<Envelope, String>,
        epoch: u64,
    },
    ReceiptReq {
        from: usize,
        agreement: MessageId,
        env: Envelope,
    },
    ReceiptAck {
        p: usize,
        agreement: MessageId,
    },
    VoucherAck {
        key: MessageId,
    },
    // Provider-internal.
    Finished {
        p: usize,
        agreement: MessageId,
        epoch: u64,
    },
}

struct SimProvider {
    kp: Keypair,
    state: Provider,
    cheat: bool,
    alive: bool,
    epoch: u64,
    /// Accepted tasks as persisted (survive a crash).
    store: HashMap<MessageId, Accepted>,
    /// Receipts persisted and not yet acknowledged.
    outbox: HashMap<MessageId, Envelope>,
    /// Receipts paid for (a voucher counts once per receipt).
    paid_for: HashSet<MessageId>,
    receipts: u64,
    balance: i64,
    seq: u64,
    cu: u64,
}

struct Sim {
    rng: SmallRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    msgs: HashMap<usize, Msg>,
    next_msg: usize,
    world: World,
    req_kp: Keypair,
    requester: Requester,
    req_epoch: u64,
    view: View,
    providers: Vec<SimProvider>,
    // The requester's persisted state.
    jobs: BTreeMap<JobId, JobRecord>,
    tasks: BTreeMap<TaskId, TaskRecord>,
    outbox: HashMap<MessageId, (usize, Envelope)>,
    req_balance: i64,
    vouchers_by_receipt: HashMap<MessageId, usize>,
    truth: HashMap<ContentId, (Vec<u8>, Fuel)>,
    inputs: HashMap<ContentId, Vec<u8>>,
    job: JobId,
    error: Option<String>,
    caught_after: Option<u64>,
    /// Receipts acknowledged as superseded, and refused for want of an
    /// agreement.
    superseded: u64,
    refused: u64,
    trace: blake3::Hasher,
}

fn ts(ms: u64) -> Timestamp {
    Timestamp(ms)
}

impl Sim {
    fn new(seed: u64, world: World) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let req_kp = Keypair::from_secret(rng.random());
        let providers = (0..world.providers)
            .map(|i| {
                let kp = Keypair::from_secret(rng.random());
                let cu = 500 + rng.random_range(0..1500);
                SimProvider {
                    kp,
                    state: Provider::new(
                        provider::Config {
                            slots: 1 + (i % 2) as u32,
                            ..provider::Config::default()
                        },
                        ComputeUnits(cu),
                    ),
                    cheat: i < world.cheaters,
                    alive: true,
                    epoch: 0,
                    store: HashMap::new(),
                    outbox: HashMap::new(),
                    paid_for: HashSet::new(),
                    receipts: 0,
                    balance: 0,
                    seq: 0,
                    cu,
                }
            })
            .collect();
        let view = View::new(req_kp.node_id(), "sim".parse().expect("domain"), 1000);
        let requester = Requester::new(req_kp.node_id(), requester::Config::default(), seed);
        Sim {
            rng,
            now: T0,
            seq: 0,
            queue: BinaryHeap::new(),
            msgs: HashMap::new(),
            next_msg: 0,
            world,
            req_kp,
            requester,
            req_epoch: 0,
            view,
            providers,
            jobs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            outbox: HashMap::new(),
            req_balance: 0,
            vouchers_by_receipt: HashMap::new(),
            truth: HashMap::new(),
            inputs: HashMap::new(),
            job: JobId([7; 16]),
            error: None,
            caught_after: None,
            superseded: 0,
            refused: 0,
            trace: blake3::Hasher::new(),
        }
    }

    fn seal<T: Payload>(kp: &Keypair, p: &T, now: u64, life: Duration, rng: &mut SmallRng) -> Envelope {
        Envelope::seal(kp, p, ts(now), life, Nonce(rng.random())).expect("seal")
    }

    /// Schedules a message after a random delay; it may be dropped or
    /// duplicated. `reliable` messages model the ones a real node retries
    /// until acknowledged (they are delayed, never lost for good).
    fn send(&mut self, m: Msg, reliable: bool) {
        let copies = if !reliable && self.rng.random_bool(self.world.drop) {
            0
        } else if self.rng.random_bool(self.world.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.random_range(0..self.world.max_delay_ms.max(1));
            self.at(self.now + delay, m.clone());
        }
        if copies == 0 {
            // The sender's request times out.
            let timeout = self.now + 2_000;
            match m {
                Msg::Call { p, task, attempt, .. } => {
                    let epoch = self.req_epoch;
                    self.at(
                        timeout,
                        Msg::OfferAns {
                            task,
                            attempt,
                            from: p,
                            ans: Err("request to p timed out".into()),
                            epoch,
                        },
                    )
                }
                Msg::AcceptReq { p, task, attempt, .. } => {
                    let epoch = self.req_epoch;
                    self.at(
                        timeout,
                        Msg::AgreementAns {
                            task,
                            attempt,
                            from: p,
                            ans: Err("request timed out".into()),
                            epoch,
                        },
                    )
                }
                _ => {}
            }
        }
    }

    fn at(&mut self, when: u64, m: Msg) {
        let id = self.next_msg;
        self.next_msg += 1;
        self.seq += 1;
        self.msgs.insert(id, m);
        self.queue.push(Reverse((when, self.seq, id)));
    }

    fn submit(&mut self) {
        let mut inputs = Vec::new();
        for i in 0..self.world.tasks {
            let bytes = format!("input {i} {}", self.rng.random::<u32>()).into_bytes();
            let id = ContentId::of(&bytes);
            let out = blake3::hash(&bytes).as_bytes().to_vec();
            let fuel = Fuel(1_000_000 + u64::from(bytes[bytes.len() - 1]) * 10_000_000);
            self.truth.insert(id, (out, fuel));
            self.inputs.insert(id, bytes.clone());
            inputs.push(InputSpec {
                name: format!("in-{i}"),
                id,
                size: Bytes(bytes.len() as u64),
                estimate: Some(fuel),
            });
        }
        let spec = JobSpec {
            module: ContentId([9; 32]),
            module_size: Bytes(1000),
            reduce: None,
            inputs,
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
        };
        self.requester.submit(self.job, spec, ts(self.now));
    }

    fn adverts(&mut self) {
        for i in 0..self.providers.len() {
            if !self.providers[i].alive {
                continue;
            }
            let p = &mut self.providers[i];
            p.seq += 1;
            let a = Advert {
                seq: p.seq,
                domain: "sim".parse().expect("domain"),
                cu: ComputeUnits(p.cu * u64::from(p.state.config().slots)),
                calibrated_at: ts(T0),
                memory: Bytes::mib(256),
                slots: p.state.config().slots,
                free_slots: p.state.free_slots(),
                queued: p.state.load() as u32,
                load: 0,
                accepting: true,
                price: p.state.config().price,
                energy: EnergyRate(0),
                version: "sim".into(),
                addrs: vec![],
            };
            let kp = p.kp.clone();
            let env = Sim::seal(&kp, &a, self.now, Duration::from_secs(10), &mut self.rng);
            let _ = self
                .view
                .on_advert(&env.to_bytes(), Some(kp.node_id()), ts(self.now));
        }
    }

    fn index_of(&self, n: NodeId) -> Option<usize> {
        self.providers.iter().position(|p| p.kp.node_id() == n)
    }

    /// Mirrors the driver's end of turn: actions, then persistence.
    fn drain(&mut self) {
        self.requester.place(ts(self.now), &self.view);
        while let Some(a) = self.requester.poll_action() {
            self.action(a);
        }
        let (jobs, tasks) = self.requester.take_dirty();
        for j in jobs {
            self.jobs.insert(j.id, j);
        }
        for t in tasks {
            self.tasks.insert(t.id, t);
        }
    }

    fn action(&mut self, a: Action) {
        let now = self.now;
        match a {
            Action::Call {
                task,
                attempt,
                cfo,
                to,
            } => {
                let env = Sim::seal(&self.req_kp, &cfo, now, Duration::from_secs(20), &mut self.rng);
                for n in to {
                    if let Some(p) = self.index_of(n) {
                        self.send(
                            Msg::Call {
                                p,
                                task,
                                attempt,
                                env: env.clone(),
                            },
                            false,
                        );
                    }
                }
            }
            Action::Accept {
                task,
                attempt,
                to,
                accept,
                ..
            } => {
                let env = Sim::seal(&self.req_kp, &accept, now, Duration::from_secs(20), &mut self.rng);
                if let Some(p) = self.index_of(to) {
                    self.send(
                        Msg::AcceptReq {
                            p,
                            task,
                            attempt,
                            env,
                        },
                        false,
                    );
                }
            }
            Action::Cancel {
                to,
                agreement,
                task,
                reason,
            } => {
                let env = Sim::seal(
                    &self.req_kp,
                    &Cancel {
                        agreement,
                        task,
                        reason,
                    },
                    now,
                    Duration::from_secs(30),
                    &mut self.rng,
                );
                if let Some(p) = self.index_of(to) {
                    self.send(Msg::CancelReq { p, env }, false);
                }
            }
            Action::Fetch { task, attempt, .. } => {
                // Outputs travel inline in the simulation.
                self.requester.on_output(task, attempt, true, ts(now));
            }
            Action::SpotCheck { task, attempt } => {
                let Some((spec, a)) = self.requester.assignment_of(task) else {
                    return;
                };
                let (out, fuel) = self.truth[&a.input].clone();
                let r = Receipt {
                    agreement: MessageId([0; 32]),
                    task,
                    requester: self.req_kp.node_id(),
                    module: spec.module,
                    input: a.input,
                    args: args_digest(&a.args),
                    seed: a.seed,
                    fuel_limit: spec.fuel,
                    output: ContentId::of(&out),
                    output_size: Bytes(out.len() as u64),
                    fuel_used: fuel,
                    exit: ExitStatus::Success,
                    started_at: ts(now),
                    finished_at: ts(now),
                };
                let env = Sim::seal(&self.req_kp, &r, now, Receipt::MAX_LIFETIME, &mut self.rng);
                self.requester.on_spot_check(
                    task,
                    attempt,
                    (r.output, fuel, ExitStatus::Success),
                    env.to_bytes(),
                    ts(now),
                );
            }
            Action::Pay { to, voucher } => {
                let env = Sim::seal(&self.req_kp, &voucher, now, Voucher::MAX_LIFETIME, &mut self.rng);
                let key = env.id();
                *self.vouchers_by_receipt.entry(voucher.receipt).or_default() += 1;
                self.req_balance -= voucher.amount.0 as i64;
                if let Some(p) = self.index_of(to) {
                    self.outbox.insert(key, (p, env.clone()));
                    let epoch = self.req_epoch;
                    self.send(Msg::VoucherReq { p, key, env, epoch }, true);
                }
            }
            Action::Fraud { culprit, .. } => {
                if let Some(p) = self.index_of(culprit) {
                    if self.caught_after.is_none() {
                        self.caught_after = Some(self.providers[p].receipts);
                    }
                    if !self.providers[p].cheat {
                        self.error = Some(format!("honest provider {p} reported as a cheater"));
                    }
                }
            }
            Action::Reduce { job } => self.requester.on_reduced(job, Ok(ContentId([0; 32])), ts(now)),
            Action::Ended { .. } => {}
        }
    }

    fn provider_turn(&mut self, p: usize) {
        while let Some(acc) = self.providers[p].state.start_next() {
            let cu = self.providers[p].cu.max(1);
            let fuel = self.truth.get(&acc.assignment.input).map_or(Fuel(1), |t| t.1);
            let run = fuel.0 / (cu * 1000) + 1;
            let epoch = self.providers[p].epoch;
            self.at(
                self.now + run,
                Msg::Finished {
                    p,
                    agreement: acc.agreement,
                    epoch,
                },
            );
        }
    }

    fn deliver(&mut self, m: Msg) {
        let now = self.now;
        self.trace.update(&now.to_le_bytes());
        self.trace
            .update(format!("{m:?}").split(['{', '(']).next().unwrap_or("").as_bytes());
        match m {
            Msg::Call {
                p,
                task,
                attempt,
                env,
            } => {
                if !self.providers[p].alive {
                    return;
                }
                let epoch = self.req_epoch;
                let prov = &mut self.providers[p];
                let ans = match env.open::<CallForOffers>(ts(now)) {
                    Err(e) => Err(e.to_string()),
                    Ok(v) => match prov.state.call(v.signer(), v.payload(), ts(now)) {
                        Ok(mut offer) => {
                            offer.call = env.id();
                            let kp = prov.kp.clone();
                            let oenv = Sim::seal(&kp, &offer, now, Duration::from_secs(5), &mut self.rng);
                            let prov = &mut self.providers[p];
                            prov.state.offered(
                                oenv.id(),
                                v.signer(),
                                v.payload(),
                                offer.price,
                                oenv.expires_at(),
                            );
                            Ok(oenv)
                        }
                        Err(d) => Err(d.to_string()),
                    },
                };
                self.send(
                    Msg::OfferAns {
                        task,
                        attempt,
                        from: p,
                        ans,
                        epoch,
                    },
                    false,
                );
            }
            Msg::AcceptReq {
                p,
                task,
                attempt,
                env,
            } => {
                if !self.providers[p].alive {
                    return;
                }
                let epoch = self.req_epoch;
                let ans = match env.open::<Accept>(ts(now)) {
                    Err(e) => Err(e.to_string()),
                    Ok(_) if self.providers[p].state.agreement_for(&env.id()).is_some() => {
                        let bytes = self.providers[p]
                            .state
                            .agreement_for(&env.id())
                            .map(|b| b.to_vec())
                            .unwrap_or_default();
                        <Envelope as agora_protocol::Decode>::from_bytes(&bytes).map_err(|e| e.to_string())
                    }
                    Ok(v) => {
                        let prov = &mut self.providers[p];
                        match prov.state.accept(v.signer(), v.payload(), ts(now)) {
                            Err(d) => Err(d.to_string()),
                            Ok(terms) => {
                                let ag = Agreement {
                                    accept: env.id(),
                                    task: terms.task,
                                    requester: v.signer(),
                                    price: terms.price,
                                    due: terms.due,
                                };
                                let kp = prov.kp.clone();
                                let aenv = Sim::seal(&kp, &ag, now, Duration::from_secs(3600), &mut self.rng);
                                let accepted = Accepted {
                                    agreement: aenv.id(),
                                    agreement_env: aenv.to_bytes(),
                                    requester: v.signer(),
                                    assignment: v.payload().assignment.clone(),
                                    price: terms.price,
                                    due: terms.due,
                                    stage: Stage::Queued,
                                    estimate: terms.estimate,
                                };
                                let prov = &mut self.providers[p];
                                prov.store.insert(aenv.id(), accepted.clone());
                                prov.state.agreed(accepted, v.payload().offer, env.id());
                                Ok(aenv)
                            }
                        }
                    }
                };
                self.send(
                    Msg::AgreementAns {
                        task,
                        attempt,
                        from: p,
                        ans,
                        epoch,
                    },
                    false,
                );
                self.provider_turn(p);
            }
            Msg::Finished { p, agreement, epoch } => {
                if !self.providers[p].alive || self.providers[p].epoch != epoch {
                    return;
                }
                let Some(acc) = self.providers[p].state.finished(&agreement) else {
                    return;
                };
                let a = &acc.assignment;
                let Some((mut out, fuel)) = self.truth.get(&a.input).cloned() else {
                    return;
                };
                if self.providers[p].cheat {
                    // Cheaters forge independently: their wrong outputs differ.
                    out.extend_from_slice(format!("forged by {p}").as_bytes());
                }
                let r = Receipt {
                    agreement,
                    task: a.task,
                    requester: acc.requester,
                    module: a.module,
                    input: a.input,
                    args: args_digest(&a.args),
                    seed: a.seed,
                    fuel_limit: a.limits.fuel,
                    output: ContentId::of(&out),
                    output_size: Bytes(out.len() as u64),
                    fuel_used: fuel,
                    exit: ExitStatus::Success,
                    started_at: ts(now.saturating_sub(10)),
                    finished_at: ts(now),
                };
                let kp = self.providers[p].kp.clone();
                let env = Sim::seal(&kp, &r, now, Receipt::MAX_LIFETIME, &mut self.rng);
                let prov = &mut self.providers[p];
                prov.outbox.insert(agreement, env.clone());
                if let Some(s) = prov.store.get_mut(&agreement) {
                    s.stage = Stage::Done;
                }
                self.send(
                    Msg::ReceiptReq {
                        from: p,
                        agreement,
                        env,
                    },
                    true,
                );
                self.provider_turn(p);
            }
            Msg::ReceiptReq { from, agreement, env } => {
                let Ok(v) = env.open::<Receipt>(ts(now)) else {
                    return;
                };
                let provider = self.providers[from].kp.node_id();
                let r = self.requester.on_receipt(provider, &v, true, ts(now));
                match r {
                    Ok(ReceiptVerdict::Accepted | ReceiptVerdict::Duplicate) => {
                        self.providers[from].receipts += 1
                    }
                    Ok(ReceiptVerdict::Superseded) => self.superseded += 1,
                    Err(ReceiptError::NoAgreement) => self.refused += 1,
                    Err(_) => {}
                }
                self.drain();
                // Acknowledged or refused for good: either way the provider stops sending.
                let _ = r;
                self.send(Msg::ReceiptAck { p: from, agreement }, true);
            }
            Msg::ReceiptAck { p, agreement, .. } => {
                let prov = &mut self.providers[p];
                prov.outbox.remove(&agreement);
                prov.store.remove(&agreement);
                prov.state.forget(&agreement);
            }
            Msg::OfferAns {
                task,
                attempt,
                from,
                ans,
                epoch,
            } => {
                if epoch != self.req_epoch {
                    return;
                }
                let n = self.providers[from].kp.node_id();
                let ans = ans.and_then(|e| e.open::<Offer>(ts(now)).map_err(|e| e.to_string()));
                self.requester
                    .on_offer(task, attempt, n, ans, ts(now), &self.view);
            }
            Msg::AgreementAns {
                task,
                attempt,
                from,
                ans,
                epoch,
            } => {
                if epoch != self.req_epoch {
                    return;
                }
                let n = self.providers[from].kp.node_id();
                let ans: Result<Verified<Agreement>, String> =
                    ans.and_then(|e| e.open::<Agreement>(ts(now)).map_err(|e| e.to_string()));
                self.requester.on_agreement(task, attempt, n, ans, ts(now));
            }
            Msg::VoucherReq { p, key, env, epoch } => {
                if !self.providers[p].alive {
                    // Retried by the requester until acknowledged.
                    self.at(now + 1_000, Msg::VoucherReq { p, key, env, epoch });
                    return;
                }
                let Ok(v) = env.open::<Voucher>(ts(now)) else {
                    return;
                };
                let prov = &mut self.providers[p];
                if prov.paid_for.insert(v.payload().receipt) {
                    prov.balance += v.payload().amount.0 as i64;
                }
                let _ = epoch;
                self.send(Msg::VoucherAck { key }, true);
            }
            Msg::VoucherAck { key } => {
                self.outbox.remove(&key);
            }
            Msg::CancelReq { p, env } => {
                if !self.providers[p].alive {
                    return;
                }
                let Ok(v) = env.open::<Cancel>(ts(now)) else {
                    return;
                };
                if let Ok(Some(_)) = self.providers[p].state.cancel(v.signer(), &v.payload().agreement) {
                    self.providers[p].store.remove(&v.payload().agreement);
                }
            }
        }
    }

    fn crash_requester(&mut self) {
        self.req_epoch += 1;
        let mut r = Requester::new(
            self.req_kp.node_id(),
            requester::Config::default(),
            self.req_epoch,
        );
        for (id, job) in &self.jobs {
            let tasks: Vec<TaskRecord> = self.tasks.values().filter(|t| t.id.job == *id).cloned().collect();
            if tasks.len() == job.spec.inputs.len() {
                r.restore(job.clone(), tasks, ts(self.now));
            }
        }
        self.requester = r;
        // Vouchers in the outbox are sent again.
        let mut pending: Vec<(MessageId, (usize, Envelope))> =
            self.outbox.iter().map(|(k, v)| (*k, v.clone())).collect();
        pending.sort_by_key(|(k, _)| *k);
        for (key, (p, env)) in pending {
            let epoch = self.req_epoch;
            self.send(Msg::VoucherReq { p, key, env, epoch }, true);
        }
    }

    fn crash_provider(&mut self, p: usize) {
        let prov = &mut self.providers[p];
        prov.epoch += 1;
        let mut state = Provider::new(prov.state.config().clone(), ComputeUnits(prov.cu));
        let mut stored: Vec<&Accepted> = prov.store.values().collect();
        stored.sort_by_key(|a| a.agreement);
        for acc in stored {
            state.restore(acc.clone());
        }
        prov.state = state;
        let mut resend: Vec<(MessageId, Envelope)> =
            prov.outbox.iter().map(|(k, e)| (*k, e.clone())).collect();
        resend.sort_by_key(|(k, _)| *k);
        for (agreement, env) in resend {
            self.send(
                Msg::ReceiptReq {
                    from: p,
                    agreement,
                    env,
                },
                true,
            );
        }
        self.provider_turn(p);
    }

    fn run(mut self) -> Report {
        self.adverts();
        self.submit();
        self.drain();
        let mut next_tick = self.now;
        let mut next_advert = self.now + 2_000;
        let limit = self.now + 20 * 60 * 1000;
        let crash_window = 20_000;
        let req_crashes: Vec<u64> = (0..self.world.requester_crashes)
            .map(|_| T0 + self.rng.random_range(1..crash_window))
            .collect();
        let prov_crashes: Vec<(u64, usize)> = (0..self.world.provider_crashes)
            .map(|_| {
                (
                    T0 + self.rng.random_range(1..crash_window),
                    self.rng.random_range(0..self.world.providers),
                )
            })
            .collect();
        let kill_at = if self.world.kill_one {
            Some(T0 + self.rng.random_range(1..5_000))
        } else {
            None
        };
        let mut killed = false;
        loop {
            let next_msg = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let t = next_msg.map_or(next_tick, |m| m.min(next_tick));
            self.now = t.max(self.now);
            if self.now > limit {
                break;
            }
            for &c in &req_crashes {
                if c > self.now.saturating_sub(10) && c <= self.now {
                    self.crash_requester();
                }
            }
            for &(c, p) in &prov_crashes {
                if c > self.now.saturating_sub(10) && c <= self.now && self.providers[p].alive {
                    self.crash_provider(p);
                }
            }
            if let Some(k) = kill_at
                && !killed
                && self.now >= k
            {
                killed = true;
                let victim = self.world.providers - 1;
                self.providers[victim].alive = false;
                let n = self.providers[victim].kp.node_id();
                self.requester.on_peer_down(n, ts(self.now));
            }
            if next_msg == Some(t) {
                let Some(Reverse((_, _, id))) = self.queue.pop() else {
                    break;
                };
                if let Some(m) = self.msgs.remove(&id) {
                    self.deliver(m);
                }
            } else {
                next_tick = self.now + 10;
                if self.now >= next_advert {
                    next_advert = self.now + 2_000;
                    self.adverts();
                }
                let _ = self.view.expire(ts(self.now));
                self.requester.tick(ts(self.now), &self.view);
            }
            self.drain();
            if self.world.stop_when_caught && self.caught_after.is_some() {
                break;
            }
            let done = self
                .requester
                .job(&self.job)
                .is_some_and(|(r, _)| r.state.is_terminal());
            if done
                && self.outbox.is_empty()
                && self.providers.iter().all(|p| p.outbox.is_empty() || !p.alive)
            {
                break;
            }
        }
        self.report()
    }

    fn report(&self) -> Report {
        if std::env::var("AGORA_SIM_DUMP").is_ok() {
            for (n, st) in self.requester.book().iter() {
                eprintln!(
                    "book p{:?}: lanes {:?} backoff {}",
                    self.index_of(*n),
                    st.lanes.iter().map(|l| l.saturating_sub(T0)).collect::<Vec<_>>(),
                    st.backoff_until.saturating_sub(T0)
                );
            }
        }
        if std::env::var("AGORA_SIM_DUMP").is_ok()
            && let Some((_, tasks)) = self.requester.job(&self.job)
        {
            for t in tasks {
                eprintln!("task {} {:?}", t.id.index, t.phase);
                for d in self.requester.decisions(&t.id) {
                    eprintln!(
                        "   decision at {} attempt {} cands {:?} excl {:?} offers {} declined {:?} chosen {:?}",
                        d.at.0 - T0,
                        d.attempt,
                        d.candidates
                            .iter()
                            .map(|c| self.index_of(c.node))
                            .collect::<Vec<_>>(),
                        d.excluded
                            .iter()
                            .map(|(n, e)| (self.index_of(*n), e.clone()))
                            .collect::<Vec<_>>(),
                        d.offers.len(),
                        d.declined,
                        d.chosen.map(|c| self.index_of(c))
                    );
                }
                for c in &t.copies {
                    eprintln!(
                        "   copy {} p{:?} {:?} rep={:?}",
                        c.attempt,
                        self.index_of(c.provider),
                        c.state,
                        c.reported.as_ref().map(|r| r.output)
                    );
                }
            }
        }
        let mut rep = Report {
            virtual_ms: self.now - T0,
            error: self.error.clone(),
            caught_after: self.caught_after,
            superseded: self.superseded,
            refused: self.refused,
            trace: *self.trace.finalize().as_bytes(),
            ..Report::default()
        };
        let Some((record, tasks)) = self.requester.job(&self.job) else {
            rep.error = Some("job lost".into());
            return rep;
        };
        rep.state = Some(record.state);
        for t in tasks {
            if t.phase == TaskPhase::Verified {
                let input = record.spec.inputs[t.id.index as usize].id;
                let truth = ContentId::of(&self.truth[&input].0);
                if t.output != Some(truth) {
                    rep.wrong_accepted += 1;
                }
            }
        }
        rep.vouchers_issued = self.vouchers_by_receipt.values().sum();
        if let Some((r, n)) = self.vouchers_by_receipt.iter().find(|(_, n)| **n > 1) {
            rep.error = Some(format!("receipt {r} paid {n} times"));
        }
        // Conservation: what the requester paid is what providers received.
        let received: i64 = self.providers.iter().map(|p| p.balance).sum();
        if self.outbox.is_empty() && received + self.req_balance != 0 {
            rep.error = Some(format!(
                "ledger does not balance: paid {} received {received}",
                -self.req_balance
            ));
        }
        // Nobody paid for a wrong result.
        for p in &self.providers {
            if p.cheat && p.balance > 0 && self.world.replicas > 1 {
                rep.error = Some("a cheater was paid".into());
            }
        }
        // No lane stays reserved once nothing runs.
        if record.state.is_terminal() {
            for (n, st) in self.requester.book().iter() {
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
            .providers
            .iter()
            .filter(|p| p.cheat && self.requester.book().is_banned(&p.kp.node_id()))
            .count();
        let _ = Credits(0);
        let _ = Millis(0);
        rep
    }
}

/// Runs one seeded simulation.
pub(crate) fn simulate(seed: u64, world: World) -> Report {
    Sim::new(seed, world).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(rng: &mut SmallRng) -> World {
        let providers = rng.random_range(3..6);
        World {
            providers,
            cheaters: 0,
            tasks: rng.random_range(1..8),
            replicas: rng.random_range(1..3),
            spot_check: if rng.random_bool(0.3) { 0.5 } else { 0.0 },
            drop: if rng.random_bool(0.5) { 0.05 } else { 0.0 },
            duplicate: 0.03,
            max_delay_ms: rng.random_range(1..200),
            requester_crashes: if rng.random_bool(0.2) { 1 } else { 0 },
            provider_crashes: if rng.random_bool(0.2) { 1 } else { 0 },
            kill_one: rng.random_bool(0.1),
            stop_when_caught: false,
        }
    }

    /// A world without faults: no cheaters, spot checks, losses or crashes.
    fn calm(providers: usize, tasks: usize, replicas: u8, max_delay_ms: u64) -> World {
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
        }
    }

    fn check(seed: u64, w: &World, rep: &Report) {
        assert!(rep.error.is_none(), "seed {seed} {w:?}: {:?}", rep.error);
        assert_eq!(
            rep.state,
            Some(JobState::Done),
            "seed {seed} {w:?}: job did not finish ({rep:?})"
        );
        assert_eq!(rep.wrong_accepted, 0, "seed {seed} {w:?}: wrong output accepted");
    }

    /// Dropped, delayed, reordered and duplicated messages, crashes and a
    /// killed provider: every job finishes with correct outputs, nothing is
    /// paid twice, and the ledger balances. `AGORA_SIM_SEEDS` sets the count
    /// (10 000 in the reliability run); `AGORA_SIM_SEED` replays one seed.
    #[test]
    fn market_survives_hostile_schedules() {
        let (from, count) = match std::env::var("AGORA_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
            Some(s) => (s, 1),
            None => (
                0,
                std::env::var("AGORA_SIM_SEEDS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(300),
            ),
        };
        for seed in from..from + count {
            let mut rng = SmallRng::seed_from_u64(seed ^ 0xa60a);
            let w = world(&mut rng);
            let rep = simulate(seed, w.clone());
            check(seed, &w, &rep);
        }
    }

    /// Copies raced hard (three replicas, long and uneven delays): a copy
    /// withdrawn while its accept was in flight is cancelled once its
    /// agreement arrives, and a receipt that comes anyway is acknowledged
    /// as superseded. No receipt is refused.
    #[test]
    fn receipts_of_withdrawn_copies_are_never_refused() {
        let (mut superseded, mut refused) = (0, 0);
        for seed in 0..150u64 {
            let w = calm(6, 12, 3, 2500);
            let rep = simulate(seed, w.clone());
            check(seed, &w, &rep);
            superseded += rep.superseded;
            refused += rep.refused;
        }
        eprintln!("superseded {superseded}, refused {refused}");
        assert_eq!(refused, 0, "receipts refused for want of an agreement");
    }

    /// Replication 2 with cheaters among the providers: no wrong result is
    /// accepted and every cheater that ran a task is identified.
    #[test]
    fn replication_catches_cheaters() {
        let mut banned = 0;
        for seed in 0..100u64 {
            let w = World {
                cheaters: 1,
                ..calm(5, 10, 2, 20)
            };
            let rep = simulate(seed, w.clone());
            check(seed, &w, &rep);
            assert!(rep.vouchers_issued >= 20, "seed {seed}: every task paid twice");
            banned += rep.cheaters_banned;
        }
        // The cheater is offered work until caught: it is caught in (nearly) every run.
        assert!(banned >= 95, "cheater identified in only {banned} of 100 runs");
    }

    /// Spot checks at 5 % without replication against a provider that always
    /// cheats: caught within 90 tasks in every seeded trial (stratified
    /// sampling catches it within its first 20 receipts).
    #[test]
    fn spot_checks_catch_a_constant_cheater() {
        let trials = 1000;
        let mut caught_within_90 = 0;
        let mut worst = 0;
        for seed in 0..trials {
            let w = World {
                cheaters: 1,
                spot_check: 0.05,
                stop_when_caught: true,
                ..calm(1, 90, 1, 5)
            };
            let rep = simulate(seed, w);
            if let Some(n) = rep.caught_after {
                worst = worst.max(n);
                if n <= 90 {
                    caught_within_90 += 1;
                }
            }
        }
        assert!(
            caught_within_90 * 100 >= trials * 99,
            "caught within 90 tasks in {caught_within_90} of {trials}"
        );
        assert!(
            worst <= 20,
            "stratified sampling: at most one block of 20 before the check, got {worst}"
        );
    }

    /// Replication 2 with 20 % of providers independently returning wrong
    /// results, over 1,000 tasks: no wrong result is accepted and every
    /// cheater is identified.
    #[test]
    fn a_fifth_of_providers_cheating_never_gets_a_wrong_result_through() {
        let w = World {
            cheaters: 2,
            ..calm(10, 1000, 2, 10)
        };
        let rep = simulate(7, w.clone());
        check(7, &w, &rep);
        assert_eq!(rep.cheaters_banned, 2, "both cheaters identified");
    }

    /// The same seed gives the same run.
    #[test]
    fn a_seed_replays_exactly() {
        let w = World {
            providers: 4,
            cheaters: 1,
            tasks: 6,
            replicas: 2,
            spot_check: 0.2,
            drop: 0.05,
            duplicate: 0.05,
            max_delay_ms: 100,
            requester_crashes: 1,
            provider_crashes: 1,
            kill_one: false,
            stop_when_caught: false,
        };
        for seed in 0..20 {
            let a = simulate(seed, w.clone());
            let b = simulate(seed, w.clone());
            assert_eq!(a.trace, b.trace, "seed {seed} did not replay exactly");
            assert_eq!(a.virtual_ms, b.virtual_ms);
            assert_eq!(a.vouchers_issued, b.vouchers_issued);
            assert_eq!(a.state, b.state);
        }
        assert_ne!(
            simulate(1, w.clone()).trace,
            simulate(2, w).trace,
            "different seeds, different runs"
        );
    }
}

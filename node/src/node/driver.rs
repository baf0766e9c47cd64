//! The driver: the one task that owns a node's state. See [`super`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::capacity::Advert;
use agora_protocol::execution::Receipt;
use agora_protocol::fraud::FraudProof;
use agora_protocol::market::{Accept, Agreement, CallForOffers, Cancel};
use agora_protocol::rpc::{ContentResponse, Decline, MarketRequest, MarketResponse};
use agora_protocol::settlement::Voucher;
use agora_protocol::units::{Bytes, ComputeUnits, Credits, Timestamp};
use agora_protocol::wire::Blob;
use agora_protocol::{
    ContentId, Domain, Encode, Envelope, FRAUD_TOPIC, JobId, Keypair, MessageId, NodeId, Payload,
    ReplayGuard, SOFTWARE_VERSION,
};
use libp2p::Multiaddr;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::work::{self, Delivery, Internal};
use super::{Options, Shared};
use crate::api::server::{ApiCommand, ApiError};
use crate::api::{
    CopyStatus, DomainRow, Explain, JobResult, JobStatus, JobSummary, Metrics, OutputRef, PeerRow,
    ProviderCount, Status, SubmitRequest, SubmitResponse, TaskExplain, TaskStatus, count_phases,
};
use crate::capacity::{IdlePolicy, LoadSampler};
use crate::config::Config;
use crate::executor::Executor;
use crate::ledger::Ledger;
use crate::market::job::{CopyState, JobRecord, JobSpec, JobState, TaskRecord};
use crate::market::provider::{self, Accepted, Provider, Stage};
use crate::market::requester::{self, Action, Requester};
use crate::network::{self, Event, MessageAcceptance, Reply};
use crate::store::{Batch, Store};
use crate::view::View;

pub(super) struct Setup {
    pub(super) keypair: Keypair,
    pub(super) config: Config,
    pub(super) options: Options,
    pub(super) store: Store,
    pub(super) executor: Executor,
    pub(super) net: network::Client,
    pub(super) per_slot: ComputeUnits,
    pub(super) slots: u32,
    pub(super) listen: Vec<Multiaddr>,
    pub(super) started: Timestamp,
    pub(super) cancel: CancellationToken,
}

/// Something to do once the turn's batch is durable.
enum After {
    Respond(Reply, MarketResponse),
    Voucher {
        key: MessageId,
        to: NodeId,
        env: Envelope,
    },
    Receipt {
        agreement: MessageId,
        to: NodeId,
        env: Envelope,
        output: Option<Vec<u8>>,
    },
    Submitted(oneshot::Sender<Result<SubmitResponse, ApiError>>, JobId),
}

#[derive(Debug, Default)]
struct Counters {
    calls_in: u64,
    offers_made: u64,
    declined: HashMap<&'static str, u64>,
    agreements: u64,
    executed: u64,
    receipts_sent: u64,
    vouchers_in: u64,
    vouchers_dup: u64,
    vouchers_out: u64,
    invalid_requests: u64,
    replays: u64,
    jobs_submitted: u64,
    jobs_done: u64,
    jobs_failed: u64,
    fraud_published: u64,
    fraud_confirmed: u64,
    gossip_rejected: u64,
}

/// Keys of records in the store.
fn job_key(id: &JobId) -> String {
    format!("job/{id}")
}
fn task_key(t: &agora_protocol::TaskId) -> String {
    format!("task/{}/{:010}", t.job, t.index)
}
fn ptask_key(a: &MessageId) -> String {
    format!("ptask/{a}")
}

/// A receipt the provider still has to deliver.
#[derive(serde::Serialize, serde::Deserialize)]
struct PendingReceipt {
    requester: NodeId,
    envelope: String,
}

pub(super) struct Driver {
    sh: Shared,
    config: Config,
    options: Options,
    view: View,
    requester: Requester,
    provider: Provider,
    ledger: Ledger,
    replay: ReplayGuard,
    tx: mpsc::Sender<Internal>,
    rx: mpsc::Receiver<Internal>,
    batch: Batch,
    /// Market requests of this turn, sent together at its end.
    outbox: network::Outbox,
    after: Vec<After>,
    per_slot: ComputeUnits,
    calibrated_at: Timestamp,
    slots: u32,
    listen: Vec<Multiaddr>,
    started: Timestamp,
    idle: IdlePolicy,
    sampler: LoadSampler,
    load: Option<f64>,
    advert_seq: u64,
    last_advert: Timestamp,
    advert_due: bool,
    last_free: u32,
    last_summary: Timestamp,
    last_expire: Timestamp,
    last_idle: Timestamp,
    last_outbox: Timestamp,
    last_calibration: Timestamp,
    calibrating: bool,
    connected: HashSet<NodeId>,
    /// Peers dialed on their adverts, and when.
    dialed: HashMap<NodeId, Timestamp>,
    probing: HashSet<NodeId>,
    inline: HashMap<MessageId, work::Inline>,
    cancelled_running: HashSet<MessageId>,
    delivering: HashSet<MessageId>,
    vouchers_in_flight: HashSet<MessageId>,
    fraud_checks: usize,
    fraud_seen: HashSet<MessageId>,
    counters: Counters,
    cancel: CancellationToken,
}

/// Connections a node opens on its own to peers of its domain (as many as
/// its domain's gossip mesh may use; the network keeps twice as many: see
/// `network::trim`).
const DOMAIN_PEERS: usize = network::MESH_N_HIGH;
/// A peer dialed on its advert is not dialed again for this long.
const REDIAL_PEER: Duration = Duration::from_secs(30);

/// Most ready messages handled in one turn besides the one that woke it.
const MAX_EVENTS_PER_TURN: usize = 64;

fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

impl Driver {
    pub(super) fn new(s: Setup) -> anyhow::Result<Driver> {
        let (tx, rx) = mpsc::channel(8192);
        let now = now();
        let mut batch = Batch::new();
        let ledger = Ledger::open(&s.store, s.config.genesis_credits, now, &mut batch)?;
        let provider_config = provider::Config {
            price: s.config.provider.price,
            slots: s.slots,
            backlog: s.slots * crate::market::placement::TINY_BACKLOG,
            memory: s.config.provider.memory,
            energy: s.config.energy(),
            domain: s.config.domain.clone(),
            offer_ttl: Duration::from_secs(5),
            max_content: s.config.provider.max_content,
            max_offers: 10_000,
        };
        let mut provider = Provider::new(provider_config, s.per_slot);
        provider.set_accepting(s.config.provider.enabled);
        let requester_config = requester::Config {
            fanout: s.config.requester.fanout,
            negotiation_timeout: s.config.requester.negotiation_timeout,
            unplaceable_after: s.config.requester.unplaceable_after,
            backups: s.config.requester.backups,
            ..requester::Config::default()
        };
        let mut requester = Requester::new(s.keypair.node_id(), requester_config, s.options.seed);
        let view = View::new(s.keypair.node_id(), s.config.domain.clone(), 10_000);
        let idle_cfg = &s.config.provider.idle;
        let sh = Shared {
            keypair: s.keypair.clone(),
            store: s.store.clone(),
            executor: s.executor.clone(),
            net: s.net.clone(),
            cheat_rate: s.options.cheat_rate,
            exec_permits: Arc::new(tokio::sync::Semaphore::new(s.slots.max(1) as usize)),
        };
        // Restore unfinished work.
        let mut restored_provider = 0;
        for (_, acc) in s.store.scan::<Accepted>(b"ptask/")? {
            provider.restore(acc);
            restored_provider += 1;
        }
        let mut restored_jobs = 0;
        for (_, job) in s.store.scan::<JobRecord>(b"job/")? {
            let tasks: Vec<TaskRecord> = s
                .store
                .scan::<TaskRecord>(format!("task/{}/", job.id).as_bytes())?
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            if tasks.len() != job.spec.inputs.len() {
                tracing::warn!(job = %job.id, "job record incomplete in the store; skipping it");
                continue;
            }
            requester.restore(job, tasks, now);
            restored_jobs += 1;
        }
        if restored_provider + restored_jobs > 0 {
            tracing::info!(
                tasks = restored_provider,
                jobs = restored_jobs,
                "restored unfinished work"
            );
        }
        Ok(Driver {
            sh,
            view,
            requester,
            provider,
            ledger,
            replay: ReplayGuard::new(100_000, s.started),
            tx,
            rx,
            batch,
            outbox: network::Outbox::default(),
            after: Vec::new(),
            per_slot: s.per_slot,
            calibrated_at: now,
            slots: s.slots,
            listen: s.listen,
            started: s.started,
            idle: IdlePolicy::new(idle_cfg.enabled, idle_cfg.busy_above, idle_cfg.resume_below),
            sampler: LoadSampler::new(),
            load: None,
            advert_seq: 0,
            last_advert: Timestamp(0),
            advert_due: true,
            last_free: u32::MAX,
            last_summary: Timestamp(0),
            last_expire: now,
            last_idle: Timestamp(0),
            last_outbox: Timestamp(0),
            last_calibration: now,
            calibrating: false,
            connected: HashSet::new(),
            dialed: HashMap::new(),
            probing: HashSet::new(),
            inline: HashMap::new(),
            cancelled_running: HashSet::new(),
            delivering: HashSet::new(),
            vouchers_in_flight: HashSet::new(),
            fraud_checks: 0,
            fraud_seen: HashSet::new(),
            counters: Counters::default(),
            config: s.config,
            options: s.options,
            cancel: s.cancel,
        })
    }

    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut api: mpsc::Receiver<ApiCommand>,
    ) {
        self.subscribe().await;
        self.resume_deliveries();
        let mut tick = tokio::time::interval(self.options.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                // The owner's API first: it is rare and cheap, and must stay
                // responsive however busy the network is.
                Some(c) = api.recv() => self.on_api(c),
                Some(m) = self.rx.recv() => self.on_internal(m),
                Some(ev) = events.recv() => self.on_network(ev),
                _ = tick.tick() => self.on_tick(),
            }
            // Whatever else is ready joins this turn: one placement pass and
            // one store write for all of it.
            for _ in 0..MAX_EVENTS_PER_TURN {
                if let Ok(m) = self.rx.try_recv() {
                    self.on_internal(m);
                } else if let Ok(ev) = events.try_recv() {
                    self.on_network(ev);
                } else {
                    break;
                }
            }
            self.end_turn().await;
        }
        self.shutdown().await;
    }

    async fn subscribe(&mut self) {
        let d = self.config.domain.clone();
        let _ = self.sh.net.subscribe(d.advert_topic()).await;
        for a in d.ancestry() {
            let _ = self.sh.net.subscribe(a.summary_topic()).await;
        }
        let _ = self.sh.net.subscribe(FRAUD_TOPIC.to_owned()).await;
        for a in d.ancestry() {
            self.sh.net.start_providing(a.provider_key()).await;
        }
        self.sh
            .net
            .start_providing(format!("{}/capability/wasi-p1", agora_protocol::TOPIC_PREFIX).into_bytes())
            .await;
    }

    /// Re-sends receipts and vouchers left undelivered by a previous run.
    fn resume_deliveries(&mut self) {
        if let Ok(pending) = self.sh.store.scan::<PendingReceipt>(b"preceipt/") {
            for (k, p) in pending {
                let Ok(id) = String::from_utf8_lossy(&k[b"preceipt/".len()..]).parse::<MessageId>() else {
                    continue;
                };
                let Ok(bytes) = hex::decode(&p.envelope) else {
                    continue;
                };
                let Ok(env) = <Envelope as agora_protocol::Decode>::from_bytes(&bytes) else {
                    continue;
                };
                self.after.push(After::Receipt {
                    agreement: id,
                    to: p.requester,
                    env,
                    output: None,
                });
            }
        }
        self.sweep_outbox();
    }

    fn sweep_outbox(&mut self) {
        if let Ok(out) = Ledger::outbox(&self.sh.store) {
            for (key, o) in out {
                if self.vouchers_in_flight.contains(&key) {
                    continue;
                }
                let Ok(bytes) = hex::decode(&o.envelope) else {
                    continue;
                };
                let Ok(env) = <Envelope as agora_protocol::Decode>::from_bytes(&bytes) else {
                    continue;
                };
                self.after.push(After::Voucher { key, to: o.to, env });
            }
        }
    }

    async fn shutdown(mut self) {
        tracing::info!("shutting down: taking no new work, recording what is in flight");
        self.provider.set_accepting(false);
        self.publish_advert(now());
        self.end_turn().await;
        let _ = self.sh.store.flush().await;
        if self.options.write_node_json {
            super::remove_node_json(&self.options.data_dir);
        }
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        tokio::spawn(f);
    }

    /// Ends a turn: performs the requester's actions, writes the turn's
    /// batch, and schedules what waits for it.
    async fn end_turn(&mut self) {
        let now = now();
        self.requester.place(now, &self.view);
        self.drain_actions(now);
        self.sh.net.send_all(std::mem::take(&mut self.outbox)).await;
        let (jobs, tasks) = self.requester.take_dirty();
        for j in &jobs {
            self.batch.put(job_key(&j.id), j);
        }
        for t in &tasks {
            self.batch.put(task_key(&t.id), t);
        }
        self.start_tasks();
        let free = self.provider.free_slots();
        if free != self.last_free {
            self.last_free = free;
            self.advert_due = true;
        }
        if self.advert_due && now.since(self.last_advert) >= Duration::from_millis(100) {
            self.publish_advert(now);
        }
        if self.batch.is_empty() && self.after.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let after = std::mem::take(&mut self.after);
        // Only what is acknowledged to someone must be on disk first (an
        // agreement, a receipt's or voucher's ack, an outgoing voucher, a
        // submitted job); task bookkeeping alone is written lazily: lost in a
        // crash, it only costs a re-placement.
        let must_flush = !after.is_empty();
        let durable = match self.sh.store.enqueue(batch, must_flush).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot write to the store; refusing what depends on it");
                for a in after {
                    if let After::Respond(ch, _) = a {
                        let net = self.sh.net.clone();
                        self.spawn(async move {
                            net.respond_market(
                                ch,
                                MarketResponse::Declined(Decline::invalid("storage failure")),
                            )
                            .await;
                        });
                    }
                }
                return;
            }
        };
        let sh = self.sh.clone();
        let tx = self.tx.clone();
        self.spawn(async move {
            let ok = durable.wait().await;
            let mut outbox = network::Outbox::default();
            for a in after {
                match (a, &ok) {
                    (After::Respond(ch, resp), Ok(())) => sh.net.respond_market(ch, resp).await,
                    (After::Respond(ch, _), Err(e)) => {
                        sh.net
                            .respond_market(
                                ch,
                                MarketResponse::Declined(Decline::invalid(format!("storage failure: {e}"))),
                            )
                            .await
                    }
                    (After::Voucher { key, to, env }, Ok(())) => {
                        let first = outbox.push(to, MarketRequest::Voucher(env.clone()));
                        tokio::spawn(work::deliver_voucher(sh.clone(), tx.clone(), key, to, env, first));
                    }
                    (
                        After::Receipt {
                            agreement,
                            to,
                            env,
                            output,
                        },
                        Ok(()),
                    ) => {
                        let request = work::receipt_request(env, output);
                        let first = outbox.push(to, request.clone());
                        tokio::spawn(work::deliver_receipt(
                            sh.clone(),
                            tx.clone(),
                            agreement,
                            to,
                            request,
                            first,
                        ));
                    }
                    (After::Submitted(reply, id), Ok(())) => {
                        let _ = reply.send(Ok(SubmitResponse {
                            id: Some(id),
                            plan: None,
                        }));
                    }
                    (After::Submitted(reply, _), Err(e)) => {
                        let _ = reply.send(Err(ApiError::internal(format!(
                            "the job could not be stored: {e}"
                        ))));
                    }
                    (_, Err(e)) => tracing::error!(error = %e, "store write failed"),
                }
            }
            sh.net.send_all(outbox).await;
        });
    }

    fn drain_actions(&mut self, now: Timestamp) {
        while let Some(a) = self.requester.poll_action() {
            self.action(a, now);
        }
    }

    fn action(&mut self, a: Action, now: Timestamp) {
        match a {
            Action::Call {
                task,
                attempt,
                cfo,
                to,
            } => {
                let env = work::seal_call(&self.sh, &cfo);
                let call_id = env.id();
                for p in to {
                    let answer = self.outbox.push(p, MarketRequest::CallForOffers(env.clone()));
                    self.spawn(work::call(self.tx.clone(), task, attempt, p, call_id, answer));
                }
            }
            Action::Accept {
                task,
                attempt,
                to,
                accept,
                send_module,
                send_input,
            } => {
                let env = work::seal_accept(&self.sh, &accept);
                let accept_id = env.id();
                let mut inline = Vec::new();
                if send_module {
                    inline.push(accept.assignment.module);
                }
                if send_input {
                    inline.push(accept.assignment.input);
                }
                let via = if inline.is_empty() {
                    work::AcceptVia::Outbox(self.outbox.push(
                        to,
                        MarketRequest::Accept {
                            accept: env,
                            content: vec![],
                        },
                    ))
                } else {
                    work::AcceptVia::Inline(Box::new((self.sh.clone(), env, inline)))
                };
                self.spawn(work::accept(self.tx.clone(), task, attempt, to, accept_id, via));
            }
            Action::Cancel {
                to,
                agreement,
                task,
                reason,
            } => {
                let env = work::seal(
                    &self.sh,
                    &Cancel {
                        agreement,
                        task,
                        reason,
                    },
                    Duration::from_secs(30),
                );
                let answer = self.outbox.push(to, MarketRequest::Cancel(env));
                self.spawn(work::fire(to, answer));
            }
            Action::Fetch {
                task,
                attempt,
                from,
                output,
            } => {
                self.spawn(work::fetch_output(
                    self.sh.clone(),
                    self.tx.clone(),
                    task,
                    attempt,
                    from,
                    output,
                ));
            }
            Action::SpotCheck { task, attempt } => {
                if let Some((_, assignment)) = self.requester.assignment_of(task) {
                    self.spawn(work::spot_check(
                        self.sh.clone(),
                        self.tx.clone(),
                        task,
                        attempt,
                        assignment,
                    ));
                }
            }
            Action::Pay { to, voucher } => {
                let env = work::seal(&self.sh, &voucher, Voucher::MAX_LIFETIME);
                let key = env.id();
                self.ledger
                    .pay(&mut self.batch, &voucher, hex::encode(env.to_bytes()), key, now);
                self.counters.vouchers_out += 1;
                self.vouchers_in_flight.insert(key);
                self.after.push(After::Voucher { key, to, env });
            }
            Action::Fraud {
                culprit,
                wrong,
                right,
                args,
            } => {
                let decode = |b: &[u8]| <Envelope as agora_protocol::Decode>::from_bytes(b);
                let (Ok(first), Ok(second)) = (decode(&wrong), decode(&right)) else {
                    return;
                };
                let proof = FraudProof {
                    first,
                    second,
                    args: args.into_iter().map(agora_protocol::market::Arg).collect(),
                    guilty: 0,
                };
                if proof.check().is_err() {
                    tracing::warn!(culprit = %culprit.short(), "fraud proof does not check out; not publishing");
                    return;
                }
                tracing::warn!(culprit = %culprit, "provider returned a wrong result: banned, publishing a fraud proof");
                let env = work::seal(&self.sh, &proof, Duration::from_secs(3600));
                self.counters.fraud_published += 1;
                let net = self.sh.net.clone();
                self.spawn(async move {
                    if let Err(e) = net.publish(FRAUD_TOPIC.to_owned(), env.to_bytes()).await {
                        tracing::warn!(error = %e, "cannot publish fraud proof");
                    }
                });
            }
            Action::Reduce { job } => {
                let Some((record, tasks)) = self.requester.job(&job) else {
                    return;
                };
                let Some(reduce) = record.spec.reduce else { return };
                let outputs: Vec<Option<ContentId>> = tasks.iter().map(|t| t.output).collect();
                let spec = &record.spec;
                let limits = agora_protocol::market::Limits {
                    fuel: agora_protocol::units::Fuel(spec.fuel.0.saturating_mul(4)),
                    memory: spec.memory,
                    timeout: agora_protocol::units::Millis::from(spec.deadline),
                    max_output: Bytes(agora_protocol::limits::MAX_BLOB as u64),
                };
                self.spawn(work::reduce(
                    self.sh.clone(),
                    self.tx.clone(),
                    job,
                    reduce,
                    outputs,
                    spec.reduce_args.clone(),
                    limits,
                    spec.seed,
                ));
            }
            Action::Ended { job, state } => {
                match state {
                    JobState::Done => self.counters.jobs_done += 1,
                    _ => self.counters.jobs_failed += 1,
                }
                let err = self.requester.job(&job).and_then(|(r, _)| r.error.clone());
                tracing::info!(job = %job, ?state, error = ?err, "job ended");
            }
        }
    }

    fn start_tasks(&mut self) {
        while let Some(acc) = self.provider.start_next() {
            let inline = self.inline.remove(&acc.agreement).unwrap_or_default();
            self.spawn(work::execute(self.sh.clone(), self.tx.clone(), acc, inline));
        }
    }

    fn publish_advert(&mut self, now: Timestamp) {
        self.advert_due = false;
        self.last_advert = now;
        self.advert_seq = self.advert_seq.max(now.0).saturating_add(1);
        let accepting = self.provider.accepting() && self.idle.allows_work();
        let advert = Advert {
            seq: self.advert_seq,
            domain: self.config.domain.clone(),
            cu: crate::capacity::total(self.per_slot, self.slots),
            calibrated_at: self.calibrated_at,
            memory: self.config.provider.memory,
            slots: self.slots,
            free_slots: if accepting { self.provider.free_slots() } else { 0 },
            queued: self.provider.load() as u32,
            load: LoadSampler::permille(self.load),
            accepting,
            price: self.config.provider.price,
            energy: self.config.energy(),
            version: SOFTWARE_VERSION.to_owned(),
            addrs: self
                .listen
                .iter()
                .take(agora_protocol::limits::MAX_ADDRS)
                .map(|a| agora_protocol::capacity::Addr(a.to_string()))
                .collect(),
        };
        self.view.set_local_advert(advert.clone());
        if !self.config.provider.enabled {
            return;
        }
        let env = work::seal(&self.sh, &advert, self.config.adverts.lifetime);
        let net = self.sh.net.clone();
        let topic = self.config.domain.advert_topic();
        self.spawn(async move {
            let _ = net.publish(topic, env.to_bytes()).await;
        });
    }

    fn publish_summaries(&mut self, now: Timestamp) {
        self.last_summary = now;
        let period = self.config.adverts.summary_interval;
        if !self
            .view
            .is_summary_publisher(now, period, self.config.adverts.summary_publishers)
        {
            return;
        }
        for s in self.view.build_summaries(now) {
            let Some(parent) = s.domain.parent() else { continue };
            let env = work::seal(&self.sh, &s, self.config.adverts.lifetime.max(period * 3));
            self.view.insert_own_summary(s, env.clone());
            let net = self.sh.net.clone();
            self.spawn(async move {
                let _ = net.publish(parent.summary_topic(), env.to_bytes()).await;
            });
        }
    }

    fn on_tick(&mut self) {
        let now = now();
        self.requester.tick(now, &self.view);
        if now.since(self.last_advert) >= self.config.adverts.interval {
            self.advert_due = true;
        }
        if now.since(self.last_summary) >= self.config.adverts.summary_interval {
            self.publish_summaries(now);
        }
        if now.since(self.last_expire) >= Duration::from_millis(250) {
            self.last_expire = now;
            for gone in self.view.expire(now) {
                tracing::info!(peer = %gone.short(), "peer's advert expired; dropping it from the view");
                self.requester.on_peer_down(gone, now);
            }
        }
        if now.since(self.last_idle) >= self.config.provider.idle.interval {
            self.last_idle = now;
            self.load = self.sampler.sample();
            let before = self.idle.allows_work();
            let after = self.idle.update(self.load);
            if before != after {
                tracing::info!(load = ?self.load, accepting = after, "idle policy changed");
                self.advert_due = true;
            }
        }
        if now.since(self.last_outbox) >= Duration::from_secs(30) {
            self.last_outbox = now;
            self.sweep_outbox();
        }
        if self.options.capacity == super::Capacity::Measure
            && !self.calibrating
            && self.provider.load() == 0
            && now.since(self.last_calibration) >= self.config.calibration.interval
        {
            self.calibrating = true;
            self.last_calibration = now;
            let ex = self.sh.executor.clone();
            let tx = self.tx.clone();
            let budget = self.config.calibration.budget;
            self.spawn(async move {
                let result = crate::capacity::measure(&ex, budget)
                    .await
                    .map(|c| c.cu)
                    .map_err(|e| e.to_string());
                let _ = tx.send(Internal::Calibrated { result }).await;
            });
        }
    }

    fn on_internal(&mut self, m: Internal) {
        let now = now();
        match m {
            Internal::Offer {
                task,
                attempt,
                from,
                answer,
            } => {
                self.requester
                    .on_offer(task, attempt, from, answer, now, &self.view);
            }
            Internal::Agreement {
                task,
                attempt,
                from,
                answer,
            } => {
                self.requester.on_agreement(task, attempt, from, answer, now);
            }
            Internal::Output { task, attempt, ok } => self.requester.on_output(task, attempt, ok, now),
            Internal::SpotChecked {
                task,
                attempt,
                result,
            } => match result {
                Ok((outcome, env)) => self.requester.on_spot_check(task, attempt, outcome, env, now),
                Err(e) => {
                    tracing::warn!(task = %task, error = %e, "spot check could not run; accepting on the receipts alone");
                    let fallback = self
                        .requester
                        .copy(task, attempt)
                        .and_then(|c| c.reported.clone());
                    if let Some(r) = fallback {
                        self.requester.on_spot_check(
                            task,
                            attempt,
                            (r.output, r.fuel, r.exit),
                            Vec::new(),
                            now,
                        );
                    }
                }
            },
            Internal::Reduced { job, result } => self.requester.on_reduced(job, result, now),
            Internal::Executed { agreement, result } => self.on_executed(agreement, result),
            Internal::ReceiptDelivered { agreement, result } => {
                self.delivering.remove(&agreement);
                match result {
                    Delivery::Done | Delivery::Refused(_) => {
                        if let Delivery::Refused(r) = &result {
                            tracing::warn!(agreement = %agreement, reason = %r, "requester refused the receipt");
                        }
                        self.provider.forget(&agreement);
                        self.batch.delete(ptask_key(&agreement));
                        self.batch.delete(format!("preceipt/{agreement}"));
                    }
                    Delivery::GaveUp(e) => {
                        tracing::warn!(agreement = %agreement, error = %e, "receipt not delivered yet; will retry");
                    }
                }
            }
            Internal::VoucherDelivered { key, result } => {
                self.vouchers_in_flight.remove(&key);
                match result {
                    Delivery::Done => Ledger::delivered(&mut self.batch, &key),
                    Delivery::Refused(r) => {
                        // The provider will never count it: keep it on record
                        // (the debit stands) but stop sending.
                        tracing::warn!(voucher = %key, reason = %r, "voucher refused");
                        Ledger::delivered(&mut self.batch, &key);
                    }
                    Delivery::GaveUp(_) => {}
                }
            }
            Internal::ReceiptIn {
                peer,
                receipt,
                channel,
            } => self.receipt_in(peer, &receipt, true, channel, now),
            Internal::Probe { peer, alive } => {
                self.probing.remove(&peer);
                if !alive && !self.connected.contains(&peer) {
                    tracing::info!(peer = %peer.short(), "peer is gone; re-placing its tasks");
                    self.requester.on_peer_down(peer, now);
                }
            }
            Internal::Calibrated { result } => {
                self.calibrating = false;
                match result {
                    Ok(cu) => {
                        self.per_slot = cu;
                        self.calibrated_at = now;
                        self.provider.set_speed(cu);
                        self.advert_due = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "recalibration failed"),
                }
            }
            Internal::FraudChecked {
                culprit,
                guilty,
                detail,
            } => {
                self.fraud_checks = self.fraud_checks.saturating_sub(1);
                if guilty {
                    self.counters.fraud_confirmed += 1;
                    tracing::warn!(culprit = %culprit, %detail, "fraud proof confirmed by re-execution: avoiding the provider");
                    self.requester
                        .ban(culprit, format!("fraud proof confirmed: {detail}"));
                } else {
                    tracing::info!(%detail, "fraud proof not confirmed");
                }
            }
        }
    }

    fn on_executed(&mut self, agreement: MessageId, result: Result<work::Executed, String>) {
        self.counters.executed += 1;
        let acc = self.provider.finished(&agreement);
        if self.cancelled_running.remove(&agreement) {
            self.provider.forget(&agreement);
            self.batch.delete(ptask_key(&agreement));
            return;
        }
        let Some(mut acc) = acc else { return };
        match result {
            Ok(done) => {
                acc.stage = Stage::Done;
                self.batch.put(ptask_key(&agreement), &acc);
                self.batch.put(
                    format!("preceipt/{agreement}"),
                    &PendingReceipt {
                        requester: acc.requester,
                        envelope: hex::encode(done.receipt.to_bytes()),
                    },
                );
                self.counters.receipts_sent += 1;
                self.delivering.insert(agreement);
                // Sent at once: if this node crashes before the pending
                // receipt is on disk, the task runs again from its agreement.
                let request = work::receipt_request(done.receipt, Some(done.output));
                let first = self.outbox.push(acc.requester, request.clone());
                self.spawn(work::deliver_receipt(
                    self.sh.clone(),
                    self.tx.clone(),
                    agreement,
                    acc.requester,
                    request,
                    first,
                ));
            }
            Err(e) => {
                tracing::warn!(task = %acc.assignment.task, error = %e, "could not run the task; dropping it (the requester re-places it)");
                self.provider.forget(&agreement);
                self.batch.delete(ptask_key(&agreement));
            }
        }
    }

    fn on_network(&mut self, ev: Event) {
        let now = now();
        match ev {
            Event::Gossip {
                id,
                source,
                author,
                topic,
                data,
            } => self.on_gossip(id, source, author, &topic, &data, now),
            Event::Market {
                peer,
                request,
                channel,
            } => self.on_market(peer, request, channel, now),
            Event::Content {
                peer: _,
                request,
                channel,
            } => {
                let sh = self.sh.clone();
                self.spawn(async move {
                    let resp = match sh.store.content().get(&request.id).await {
                        Ok(Some(b)) => ContentResponse::Found(Blob(b)),
                        _ => ContentResponse::NotFound,
                    };
                    sh.net.respond_content(channel, resp).await;
                });
            }
            Event::Rtt { peer, rtt } => self.view.on_rtt(peer, rtt),
            Event::Connected { peer } => {
                self.connected.insert(peer);
            }
            Event::Disconnected { peer } => {
                self.connected.remove(&peer);
                // A closed connection alone says little (idle ones are
                // trimmed): ask whether the peer is still there only when
                // a job waits on it.
                if self.requester.depends_on(peer) && self.probing.insert(peer) {
                    self.spawn(work::probe(self.sh.clone(), self.tx.clone(), peer));
                }
            }
            Event::Subscribed { peer, topic } => {
                // A newcomer in our domain: let it see us at once
                // (publication is rate-limited in `end_turn`). A peer
                // already in the view that reconnects (connections come and
                // go: see `network::trim`) hears the next periodic advert;
                // republishing to every reconnection would flood the domain.
                if topic == self.config.domain.advert_topic() && self.view.peer(&peer).is_none() {
                    self.advert_due = true;
                }
            }
            Event::Listening { addr } => {
                if !self.listen.contains(&addr) {
                    self.listen.push(addr);
                    self.advert_due = true;
                }
            }
        }
    }

    fn on_gossip(
        &mut self,
        id: network::GossipId,
        source: libp2p::PeerId,
        author: Option<NodeId>,
        topic: &str,
        data: &[u8],
        now: Timestamp,
    ) {
        let acceptance = if topic.starts_with(&format!("{}/adverts/", agora_protocol::TOPIC_PREFIX)) {
            match self.view.on_advert(data, author, now) {
                Ok(node) => {
                    self.learn_addresses(node, now);
                    MessageAcceptance::Accept
                }
                Err(crate::view::Rejected::Replayed { .. }) => MessageAcceptance::Ignore,
                Err(e) => {
                    tracing::debug!(error = %e, "advert rejected");
                    self.counters.gossip_rejected += 1;
                    MessageAcceptance::Reject
                }
            }
        } else if topic.starts_with(&format!("{}/summaries/", agora_protocol::TOPIC_PREFIX)) {
            match self.view.on_summary(data, now) {
                Ok(d) => {
                    self.learn_contacts(&d);
                    MessageAcceptance::Accept
                }
                Err(crate::view::Rejected::Replayed { .. }) => MessageAcceptance::Ignore,
                Err(_) => {
                    self.counters.gossip_rejected += 1;
                    MessageAcceptance::Reject
                }
            }
        } else if topic == FRAUD_TOPIC {
            self.on_fraud(data, now)
        } else {
            MessageAcceptance::Ignore
        };
        let net = self.sh.net.clone();
        self.spawn(async move { net.report(id, source, acceptance).await });
    }

    fn learn_addresses(&mut self, node: NodeId, now: Timestamp) {
        let Some(p) = self.view.peer(&node) else { return };
        let addrs: Vec<Multiaddr> = p.advert.addrs.iter().filter_map(|a| a.0.parse().ok()).collect();
        // Connect to a domain's peers up to a target count (the gossip
        // mesh is built from them, pings give round-trip times for
        // placement); beyond it, addresses only: request-response dials on
        // demand, so a large domain does not become a full mesh of
        // connections. The view holds this domain's peers only.
        let dial = !self.connected.contains(&node)
            && self
                .connected
                .iter()
                .filter(|c| self.view.peer(c).is_some())
                .count()
                < DOMAIN_PEERS
            && self
                .dialed
                .get(&node)
                .is_none_or(|t| now.since(*t) >= REDIAL_PEER);
        if dial {
            if self.dialed.len() >= 4 * DOMAIN_PEERS {
                self.dialed.retain(|_, t| now.since(*t) < REDIAL_PEER);
            }
            self.dialed.insert(node, now);
        }
        let net = self.sh.net.clone();
        self.spawn(async move {
            for a in &addrs {
                net.add_address(node, a.clone()).await;
            }
            if dial && let Some(a) = addrs.first() {
                let with_peer = a.clone().with_p2p(node.to_peer_id()).unwrap_or_else(|a| a);
                net.dial(with_peer).await;
            }
        });
    }

    fn learn_contacts(&mut self, d: &Domain) {
        let Some(h) = self.view.summary(d) else { return };
        let contacts: Vec<(NodeId, Vec<Multiaddr>)> = h
            .summary
            .contacts
            .iter()
            .map(|c| (c.node, c.addrs.iter().filter_map(|a| a.0.parse().ok()).collect()))
            .collect();
        let net = self.sh.net.clone();
        self.spawn(async move {
            for (n, addrs) in contacts {
                for a in addrs {
                    net.add_address(n, a).await;
                }
            }
        });
    }

    fn on_fraud(&mut self, data: &[u8], now: Timestamp) -> MessageAcceptance {
        let Ok(env) = <Envelope as agora_protocol::Decode>::from_bytes(data) else {
            return MessageAcceptance::Reject;
        };
        let Ok(v) = env.open::<FraudProof>(now) else {
            return MessageAcceptance::Reject;
        };
        if v.payload().check().is_err() {
            return MessageAcceptance::Reject;
        }
        if !self.fraud_seen.insert(env.id()) {
            return MessageAcceptance::Ignore;
        }
        if self.fraud_seen.len() > 10_000 {
            self.fraud_seen.clear();
        }
        // Re-execute to see for ourselves, a few at a time.
        if self.fraud_checks < 2 {
            self.fraud_checks += 1;
            self.spawn(work::check_fraud(
                self.sh.clone(),
                self.tx.clone(),
                v.signer(),
                v.into_payload(),
            ));
        }
        MessageAcceptance::Accept
    }

    fn decline(&mut self, label: &'static str, channel: Reply, d: Decline) {
        *self.counters.declined.entry(label).or_default() += 1;
        let net = self.sh.net.clone();
        self.spawn(async move { net.respond_market(channel, MarketResponse::Declined(d)).await });
    }

    fn respond(&self, channel: Reply, r: MarketResponse) {
        let net = self.sh.net.clone();
        tokio::spawn(async move { net.respond_market(channel, r).await });
    }

    /// Opens a live market message from `peer`: signature, time window,
    /// sender identity and replay.
    fn open_live<T: Payload>(
        &mut self,
        peer: NodeId,
        env: &Envelope,
        now: Timestamp,
    ) -> Result<agora_protocol::Verified<T>, Decline> {
        let v = env.open::<T>(now).map_err(|e| {
            self.counters.invalid_requests += 1;
            Decline::invalid(e)
        })?;
        if v.signer() != peer {
            self.counters.invalid_requests += 1;
            return Err(Decline::invalid("signed by a node other than the sender"));
        }
        if let Err(e) = self.replay.check(&v, now) {
            self.counters.replays += 1;
            return Err(Decline::invalid(e));
        }
        Ok(v)
    }

    fn on_market(&mut self, peer: NodeId, request: MarketRequest, channel: Reply, now: Timestamp) {
        match request {
            MarketRequest::CallForOffers(env) => {
                self.counters.calls_in += 1;
                let v = match self.open_live::<CallForOffers>(peer, &env, now) {
                    Ok(v) => v,
                    Err(d) => return self.decline("invalid", channel, d),
                };
                if !self.config.provider.enabled || !self.idle.allows_work() {
                    return self.decline("not_accepting", channel, Decline::NotAccepting);
                }
                let cfo = v.payload();
                match self.provider.call(peer, cfo, now) {
                    Ok(mut offer) => {
                        offer.call = env.id();
                        let r = &cfo.requirements;
                        offer.has_module = self.sh.executor.cached(&r.module).is_some()
                            || self.sh.store.content().has(&r.module);
                        offer.has_input = self.sh.store.content().has(&r.input);
                        let ttl = self.provider.config().offer_ttl;
                        let oenv = work::seal(&self.sh, &offer, ttl);
                        self.provider
                            .offered(oenv.id(), peer, cfo, offer.price, oenv.expires_at());
                        self.counters.offers_made += 1;
                        self.respond(channel, MarketResponse::Offer(oenv));
                    }
                    Err(d) => self.decline(decline_label(&d), channel, d),
                }
            }
            MarketRequest::Accept { accept, content } => {
                // A retransmitted acceptance gets the agreement already made.
                if let Some(bytes) = self.provider.agreement_for(&accept.id())
                    && let Ok(env) = <Envelope as agora_protocol::Decode>::from_bytes(bytes)
                {
                    return self.respond(channel, MarketResponse::Agreement(env));
                }
                let v = match self.open_live::<Accept>(peer, &accept, now) {
                    Ok(v) => v,
                    Err(d) => return self.decline("invalid", channel, d),
                };
                let a = v.payload();
                let terms = match self.provider.accept(peer, a, now) {
                    Ok(t) => t,
                    Err(d) => return self.decline(decline_label(&d), channel, d),
                };
                let mut inline = Vec::new();
                for Blob(bytes) in content {
                    let id = ContentId::of(&bytes);
                    if id != a.assignment.module && id != a.assignment.input {
                        return self.decline(
                            "invalid",
                            channel,
                            Decline::invalid("inline content is neither the module nor the input"),
                        );
                    }
                    let bytes = Arc::new(bytes);
                    let (sh, b) = (self.sh.clone(), bytes.clone());
                    self.spawn(async move {
                        let _ = sh.store.content().put_lazy(id, b.to_vec()).await;
                    });
                    inline.push((id, bytes));
                }
                let agreement = Agreement {
                    accept: accept.id(),
                    task: terms.task,
                    requester: peer,
                    price: terms.price,
                    due: terms.due,
                };
                let lifetime = terms.due.since(now) + Duration::from_secs(3600);
                let aenv = work::seal(&self.sh, &agreement, lifetime);
                let id = aenv.id();
                let accepted = Accepted {
                    agreement: id,
                    agreement_env: aenv.to_bytes(),
                    requester: peer,
                    assignment: a.assignment.clone(),
                    price: terms.price,
                    due: terms.due,
                    stage: Stage::Queued,
                    estimate: terms.estimate,
                };
                self.batch.put(ptask_key(&id), &accepted);
                self.provider.agreed(accepted, a.offer, accept.id());
                if !inline.is_empty() {
                    self.inline.insert(id, inline);
                }
                self.counters.agreements += 1;
                self.after
                    .push(After::Respond(channel, MarketResponse::Agreement(aenv)));
            }
            MarketRequest::Receipt { receipt, output } => {
                let v = match receipt.open::<Receipt>(now) {
                    Ok(v) if v.signer() == peer => v,
                    Ok(_) => {
                        return self.decline(
                            "invalid",
                            channel,
                            Decline::invalid("receipt signed by another node"),
                        );
                    }
                    Err(e) => return self.decline("invalid", channel, Decline::invalid(e)),
                };
                let r = v.payload();
                match output {
                    Some(Blob(bytes)) => {
                        if !r.output.matches(&bytes) || bytes.len() as u64 != r.output_size.0 {
                            return self.decline(
                                "invalid",
                                channel,
                                Decline::invalid("the output does not match the receipt"),
                            );
                        }
                        // Store the output durably before acting on the receipt.
                        let (sh, tx, id) = (self.sh.clone(), self.tx.clone(), r.output);
                        self.spawn(async move {
                            match sh.store.content().put_verified(id, bytes).await {
                                Ok(()) => {
                                    let _ = tx
                                        .send(Internal::ReceiptIn {
                                            peer,
                                            receipt: Box::new(v),
                                            channel,
                                        })
                                        .await;
                                }
                                Err(e) => {
                                    sh.net
                                        .respond_market(
                                            channel,
                                            MarketResponse::Declined(Decline::invalid(format!(
                                                "storage failure: {e}"
                                            ))),
                                        )
                                        .await;
                                }
                            }
                        });
                    }
                    None => {
                        let held = self.sh.store.content().has(&r.output);
                        self.receipt_in(peer, &v, held, channel, now);
                    }
                }
            }
            MarketRequest::Voucher(env) => {
                let v = match env.open::<Voucher>(now) {
                    Ok(v) if v.signer() == peer => v,
                    Ok(_) => {
                        return self.decline(
                            "invalid",
                            channel,
                            Decline::invalid("voucher signed by another node"),
                        );
                    }
                    Err(e) => return self.decline("invalid", channel, Decline::invalid(e)),
                };
                let vo = v.payload();
                if vo.provider != self.sh.keypair.node_id() || !vo.amount_is_consistent() {
                    return self.decline(
                        "invalid",
                        channel,
                        Decline::invalid("voucher is not for this node or its amount is wrong"),
                    );
                }
                match self
                    .ledger
                    .receive(&self.sh.store, &mut self.batch, peer, vo, now)
                {
                    Ok(true) => self.counters.vouchers_in += 1,
                    Ok(false) => self.counters.vouchers_dup += 1,
                    Err(e) => {
                        return self.decline(
                            "invalid",
                            channel,
                            Decline::invalid(format!("storage failure: {e}")),
                        );
                    }
                }
                self.after.push(After::Respond(channel, MarketResponse::Ack));
            }
            MarketRequest::Cancel(env) => {
                let v = match self.open_live::<Cancel>(peer, &env, now) {
                    Ok(v) => v,
                    Err(d) => return self.decline("invalid", channel, d),
                };
                match self.provider.cancel(peer, &v.payload().agreement) {
                    Ok(Some(_)) => {
                        self.batch.delete(ptask_key(&v.payload().agreement));
                        self.inline.remove(&v.payload().agreement);
                        self.after.push(After::Respond(channel, MarketResponse::Ack));
                    }
                    Ok(None) => {
                        self.cancelled_running.insert(v.payload().agreement);
                        self.respond(channel, MarketResponse::Ack);
                    }
                    Err(d) => self.decline("unknown", channel, d),
                }
            }
            MarketRequest::Summaries(d) => {
                self.respond(channel, MarketResponse::Summaries(self.view.summaries_for(&d)));
            }
            // The network unpacks batches; one reaching here is a bug upstream.
            MarketRequest::Batch(_) => self.decline("invalid", channel, Decline::invalid("nested batch")),
        }
    }

    fn receipt_in(
        &mut self,
        peer: NodeId,
        v: &agora_protocol::Verified<Receipt>,
        held: bool,
        channel: Reply,
        now: Timestamp,
    ) {
        match self.requester.on_receipt(peer, v, held, now) {
            Ok(_) => self.after.push(After::Respond(channel, MarketResponse::Ack)),
            Err(requester::ReceiptError::UnknownTask) | Err(requester::ReceiptError::NoAgreement) => {
                self.decline("unknown", channel, Decline::Unknown)
            }
            Err(e) => self.decline("invalid", channel, Decline::invalid(e)),
        }
    }

    fn on_api(&mut self, c: ApiCommand) {
        let now = now();
        match c {
            ApiCommand::Status(r) => {
                let _ = r.send(self.status(now));
            }
            ApiCommand::Peers(domain, r) => {
                let _ = r.send(self.peers(domain.as_ref(), now));
            }
            ApiCommand::Domains(r) => {
                let local = self.view.domain().clone();
                let rows = self
                    .view
                    .domains()
                    .into_iter()
                    .map(|(d, s)| DomainRow {
                        local: d == local,
                        domain: d,
                        nodes: s.nodes,
                        total_cu: s.total_cu.0,
                        free_cu: s.free_cu.0,
                        free_slots: s.free_slots,
                        price_min: agora_protocol::units::Credits(s.price_min.0).to_string(),
                        price_max: agora_protocol::units::Credits(s.price_max.0).to_string(),
                        best_rtt_ms: s.best_rtt.0,
                    })
                    .collect();
                let _ = r.send(rows);
            }
            ApiCommand::Metrics(r) => {
                let m = self.metrics(now);
                let sh = self.sh.clone();
                self.spawn(async move {
                    let mut m = m;
                    if let Ok(s) = sh.net.stats().await {
                        m.add(
                            "agora_connected_peers",
                            "gauge",
                            "Connected peers",
                            &[],
                            s.connected as f64,
                        );
                        m.add(
                            "agora_gossip_dropped_total",
                            "counter",
                            "Gossip messages dropped while busy",
                            &[],
                            s.gossip_dropped as f64,
                        );
                        m.add(
                            "agora_market_overload_total",
                            "counter",
                            "Market requests refused while busy",
                            &[],
                            s.market_overload as f64,
                        );
                        m.add(
                            "agora_inbound_failures_total",
                            "counter",
                            "Malformed or failed inbound requests",
                            &[],
                            s.inbound_failures as f64,
                        );
                        m.add(
                            "agora_connections_refused_total",
                            "counter",
                            "Connections refused by limits",
                            &[],
                            s.connections_refused as f64,
                        );
                        m.add(
                            "agora_connections_trimmed_total",
                            "counter",
                            "Idle connections closed to stay at the target",
                            &[],
                            s.connections_trimmed as f64,
                        );
                        m.add(
                            "agora_market_frames_sent_total",
                            "counter",
                            "Market frames sent, by kind",
                            &[("kind", "batch")],
                            s.batches_sent as f64,
                        );
                        m.add(
                            "agora_market_frames_sent_total",
                            "counter",
                            "Market frames sent, by kind",
                            &[("kind", "single")],
                            s.single_requests as f64,
                        );
                        m.add(
                            "agora_market_batched_requests_total",
                            "counter",
                            "Market requests sent inside batches",
                            &[],
                            s.batched_requests as f64,
                        );
                    }
                    let _ = r.send(m.render());
                });
            }
            ApiCommand::Submit(req, r) => self.submit(*req, r, now),
            ApiCommand::Jobs(r) => {
                let list = self
                    .requester
                    .jobs()
                    .map(|j| {
                        let (_, tasks) = self.requester.job(&j.id).unwrap_or((j, &[]));
                        summary(j, tasks)
                    })
                    .collect();
                let _ = r.send(list);
            }
            ApiCommand::Job(id, detail, r) => {
                let _ = r.send(self.job_status(&id, detail, now));
            }
            ApiCommand::Explain(id, r) => {
                let e = self.requester.job(&id).map(|(rec, tasks)| Explain {
                    id,
                    tasks: tasks
                        .iter()
                        .map(|t| {
                            let name = rec.spec.inputs[t.id.index as usize].name.clone();
                            TaskExplain::new(t.id.index, name, &self.requester.decisions(&t.id))
                        })
                        .collect(),
                });
                let _ = r.send(e);
            }
            ApiCommand::Result(id, r) => {
                let res = self.requester.job(&id).map(|(rec, tasks)| JobResult {
                    id,
                    state: rec.state,
                    outputs: tasks
                        .iter()
                        .map(|t| OutputRef {
                            index: t.id.index,
                            name: rec.spec.inputs[t.id.index as usize].name.clone(),
                            id: t.output,
                            size: t.output.and_then(|o| {
                                self.sh.store.content().size(&o).or(if o == ContentId::of(&[]) {
                                    Some(0)
                                } else {
                                    None
                                })
                            }),
                        })
                        .collect(),
                    reduced: rec.reduced,
                    error: rec.error.clone(),
                });
                let _ = r.send(res);
            }
            ApiCommand::Cancel(id, r) => {
                let res = match self.requester.job(&id) {
                    None => Err(ApiError::not_found(format!("no job {id} on this node"))),
                    Some((rec, _)) if rec.state.is_terminal() => Err(ApiError::conflict(format!(
                        "job {id} has already ended ({:?})",
                        rec.state
                    ))),
                    Some(_) => {
                        self.requester.cancel(id, now);
                        let (rec, tasks) = self.requester.job(&id).expect("job exists");
                        Ok(summary(rec, tasks))
                    }
                };
                let _ = r.send(res);
            }
            ApiCommand::Ledger(limit, r) => {
                let view = self
                    .ledger
                    .view(&self.sh.store, limit)
                    .unwrap_or_else(|_| crate::api::Ledger {
                        balance_micros: self.ledger.state().balance,
                        balance: crate::api::format_balance(self.ledger.state().balance),
                        received: Credits(self.ledger.state().received),
                        paid: Credits(self.ledger.state().paid),
                        outbox: 0,
                        entries: vec![],
                    });
                let _ = r.send(view);
            }
        }
    }

    fn submit(
        &mut self,
        req: SubmitRequest,
        reply: oneshot::Sender<Result<SubmitResponse, ApiError>>,
        now: Timestamp,
    ) {
        if let Err(e) = self.validate(&req.spec) {
            let _ = reply.send(Err(e));
            return;
        }
        if req.dry_run {
            let plan = self.requester.plan(&req.spec, now, &self.view);
            let tasks = plan
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    TaskExplain::new(i as u32, req.spec.inputs[i].name.clone(), std::slice::from_ref(d))
                })
                .collect();
            let _ = reply.send(Ok(SubmitResponse {
                id: None,
                plan: Some(tasks),
            }));
            return;
        }
        let id = JobId(rand::random());
        self.counters.jobs_submitted += 1;
        tracing::info!(job = %id, tasks = req.spec.inputs.len(), "job submitted");
        self.requester.submit(id, req.spec, now);
        self.after.push(After::Submitted(reply, id));
    }

    fn validate(&self, s: &JobSpec) -> Result<(), ApiError> {
        crate::api::check_spec(s).map_err(ApiError::bad_request)?;
        let content = self.sh.store.content();
        if !content.has(&s.module) {
            return Err(ApiError::bad_request(format!(
                "module {} is not on this node: upload it first (PUT /v1/content)",
                s.module
            )));
        }
        if let Some(r) = &s.reduce
            && !content.has(r)
        {
            return Err(ApiError::bad_request(format!(
                "reduce module {r} is not on this node: upload it first"
            )));
        }
        for i in &s.inputs {
            if !content.has(&i.id) && i.id != ContentId::of(&[]) {
                return Err(ApiError::bad_request(format!(
                    "input {} ({}) is not on this node: upload it first",
                    i.name, i.id
                )));
            }
        }
        Ok(())
    }

    fn status(&self, now: Timestamp) -> Status {
        let st = self.ledger.state();
        Status {
            peer_id: self.sh.keypair.node_id(),
            version: SOFTWARE_VERSION.to_owned(),
            domain: self.config.domain.clone(),
            listen: self.listen.iter().map(|a| a.to_string()).collect(),
            uptime_ms: now.since(self.started).as_millis() as u64,
            cu: crate::capacity::total(self.per_slot, self.slots),
            per_slot_cu: self.per_slot,
            calibrated_at: self.calibrated_at,
            cpu_share: self.config.provider.cpu_share,
            slots: self.slots,
            free_slots: self.provider.free_slots(),
            running: (self.provider.load() - self.provider.queued()) as u32,
            queued: self.provider.queued() as u32,
            accepting: self.config.provider.enabled && self.provider.accepting() && self.idle.allows_work(),
            load: LoadSampler::permille(self.load),
            price: self.config.provider.price,
            energy: self.config.energy(),
            memory: self.config.provider.memory,
            balance: Credits(st.balance.unsigned_abs()),
            balance_negative: st.balance < 0,
            peers: self.view.len(),
            connected: self.connected.len(),
            domains: self.view.domains().len(),
            jobs_active: self.requester.jobs().filter(|j| !j.state.is_terminal()).count(),
            rss_bytes: crate::capacity::resident_memory().unwrap_or(0),
        }
    }

    fn peers(&self, domain: Option<&Domain>, now: Timestamp) -> Vec<PeerRow> {
        let mut rows: Vec<PeerRow> = self
            .view
            .peers()
            .filter(|p| domain.is_none_or(|d| p.advert.domain.is_within(d)))
            .map(|p| {
                let stats = self.requester.book().get(&p.node);
                PeerRow {
                    peer_id: p.node,
                    domain: p.advert.domain.clone(),
                    cu: p.advert.cu.0,
                    slots: p.advert.slots,
                    free_slots: p.advert.free_slots,
                    memory: p.advert.memory.0,
                    price: Credits(p.advert.price.0).to_string(),
                    energy: p.advert.energy.0,
                    rtt_ms: self.view.rtt(&p.node).map(|r| r.as_secs_f64() * 1000.0),
                    advert_age_ms: now.0.saturating_sub(p.received_at.0),
                    accepting: p.advert.accepting,
                    load: p.advert.load,
                    version: p.advert.version.clone(),
                    learnt_cu: stats.and_then(|s| s.learnt_cu),
                    reputation: stats.map(|s| s.reputation),
                    banned: stats.is_some_and(|s| s.banned.is_some()),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.peer_id.cmp(&b.peer_id)));
        rows
    }

    fn job_status(
        &self,
        id: &JobId,
        detail: crate::api::server::JobDetail,
        now: Timestamp,
    ) -> Option<JobStatus> {
        let (rec, tasks) = self.requester.job(id)?;
        let mut providers: HashMap<NodeId, ProviderCount> = HashMap::new();
        let mut spent = 0u64;
        let task_rows: Vec<TaskStatus> = tasks
            .iter()
            .map(|t| {
                let mut accepted = Vec::new();
                let copies = t
                    .copies
                    .iter()
                    .map(|c| {
                        let e = providers.entry(c.provider).or_insert(ProviderCount {
                            peer_id: c.provider,
                            running: 0,
                            verified: 0,
                            failed: 0,
                            paid: Credits(0),
                        });
                        match &c.state {
                            CopyState::Accepting | CopyState::Agreed => e.running += 1,
                            CopyState::Failed(_) => e.failed += 1,
                            _ => {}
                        }
                        if c.wrong {
                            e.failed += 1;
                        }
                        if let Some(p) = c.paid {
                            e.verified += 1;
                            e.paid = e.paid.saturating_add(p);
                            spent += p.0;
                            accepted.push(c.provider);
                        }
                        CopyStatus {
                            attempt: c.attempt,
                            provider: c.provider,
                            state: match &c.state {
                                CopyState::Accepting => "accepting".into(),
                                CopyState::Agreed => "agreed".into(),
                                CopyState::Reported => "reported".into(),
                                CopyState::Cancelled => "cancelled".into(),
                                CopyState::Failed(r) => format!("failed: {r}"),
                            },
                            price: c.price,
                            paid: c.paid,
                            wrong: c.wrong,
                            backup: c.backup,
                            fuel: c.reported.as_ref().map(|r| r.fuel),
                            output: c.reported.as_ref().map(|r| r.output),
                            receipt: c
                                .receipt_env
                                .as_ref()
                                .filter(|_| detail.receipts)
                                .map(hex::encode),
                            exec_ms: c.reported.as_ref().map(|r| r.exec_ms),
                        }
                    })
                    .collect();
                TaskStatus {
                    index: t.id.index,
                    name: rec.spec.inputs[t.id.index as usize].name.clone(),
                    phase: t.phase,
                    providers: accepted,
                    output: t.output,
                    fuel: t.fuel,
                    exit: t.exit.as_ref().map(|e| e.to_string()),
                    error: t.error.clone(),
                    spot_checked: t.spot_checked,
                    copies,
                }
            })
            .collect();
        let mut providers: Vec<ProviderCount> = providers.into_values().collect();
        providers.sort_by(|a, b| b.verified.cmp(&a.verified).then(a.peer_id.cmp(&b.peer_id)));
        let end = rec.finished_at.unwrap_or(now);
        Some(JobStatus {
            id: *id,
            state: rec.state,
            error: rec.error.clone(),
            submitted_at: rec.submitted_at,
            finished_at: rec.finished_at,
            wall_ms: end.0.saturating_sub(rec.submitted_at.0),
            total: tasks.len(),
            counts: count_phases(tasks.iter().map(|t| &t.phase)),
            providers,
            tasks: if detail.tasks { task_rows } else { Vec::new() },
            reduced: rec.reduced,
            spent: Credits(spent),
            replicas: rec.spec.replicas,
            spot_check: rec.spec.spot_check,
        })
    }

    fn metrics(&self, now: Timestamp) -> Metrics {
        let mut m = Metrics::default();
        let c = &self.counters;
        let vm = self.view.metrics();
        m.add(
            "agora_peers",
            "gauge",
            "Peers with a fresh advert in the view",
            &[],
            self.view.len() as f64,
        );
        m.add(
            "agora_adverts_accepted_total",
            "counter",
            "Adverts accepted",
            &[],
            vm.adverts_accepted as f64,
        );
        for (reason, n) in &vm.adverts_rejected {
            m.add(
                "agora_adverts_rejected_total",
                "counter",
                "Adverts rejected, by reason",
                &[("reason", reason)],
                *n as f64,
            );
        }
        m.add(
            "agora_summaries_accepted_total",
            "counter",
            "Domain summaries accepted",
            &[],
            vm.summaries_accepted as f64,
        );
        for (reason, n) in &vm.summaries_rejected {
            m.add(
                "agora_summaries_rejected_total",
                "counter",
                "Domain summaries rejected, by reason",
                &[("reason", reason)],
                *n as f64,
            );
        }
        m.add(
            "agora_peers_expired_total",
            "counter",
            "Peers dropped at advert expiry",
            &[],
            vm.peers_expired as f64,
        );
        m.add(
            "agora_calls_total",
            "counter",
            "Calls for offers received",
            &[],
            c.calls_in as f64,
        );
        m.add(
            "agora_offers_total",
            "counter",
            "Offers made",
            &[],
            c.offers_made as f64,
        );
        for (reason, n) in &c.declined {
            m.add(
                "agora_declined_total",
                "counter",
                "Requests declined, by reason",
                &[("reason", reason)],
                *n as f64,
            );
        }
        m.add(
            "agora_agreements_total",
            "counter",
            "Agreements signed",
            &[],
            c.agreements as f64,
        );
        m.add(
            "agora_tasks_executed_total",
            "counter",
            "Tasks executed as a provider",
            &[],
            c.executed as f64,
        );
        m.add(
            "agora_receipts_sent_total",
            "counter",
            "Receipts sent",
            &[],
            c.receipts_sent as f64,
        );
        m.add(
            "agora_vouchers_received_total",
            "counter",
            "Vouchers counted",
            &[],
            c.vouchers_in as f64,
        );
        m.add(
            "agora_vouchers_duplicate_total",
            "counter",
            "Vouchers already counted (not counted again)",
            &[],
            c.vouchers_dup as f64,
        );
        m.add(
            "agora_vouchers_paid_total",
            "counter",
            "Vouchers issued",
            &[],
            c.vouchers_out as f64,
        );
        m.add(
            "agora_invalid_requests_total",
            "counter",
            "Malformed, forged or stale requests",
            &[],
            c.invalid_requests as f64,
        );
        m.add(
            "agora_replays_total",
            "counter",
            "Replayed requests rejected",
            &[],
            c.replays as f64,
        );
        m.add(
            "agora_jobs_submitted_total",
            "counter",
            "Jobs submitted",
            &[],
            c.jobs_submitted as f64,
        );
        m.add(
            "agora_jobs_done_total",
            "counter",
            "Jobs done",
            &[],
            c.jobs_done as f64,
        );
        m.add(
            "agora_jobs_failed_total",
            "counter",
            "Jobs failed",
            &[],
            c.jobs_failed as f64,
        );
        m.add(
            "agora_fraud_published_total",
            "counter",
            "Fraud proofs published",
            &[],
            c.fraud_published as f64,
        );
        m.add(
            "agora_fraud_confirmed_total",
            "counter",
            "Fraud proofs confirmed by re-execution",
            &[],
            c.fraud_confirmed as f64,
        );
        m.add(
            "agora_gossip_rejected_total",
            "counter",
            "Gossip messages rejected",
            &[],
            c.gossip_rejected as f64,
        );
        m.add(
            "agora_capacity_cu",
            "gauge",
            "Advertised capacity",
            &[],
            crate::capacity::total(self.per_slot, self.slots).0 as f64,
        );
        m.add(
            "agora_free_slots",
            "gauge",
            "Free task slots",
            &[],
            f64::from(self.provider.free_slots()),
        );
        m.add(
            "agora_balance_credits",
            "gauge",
            "Credit balance",
            &[],
            self.ledger.state().balance as f64 / 1e6,
        );
        m.add(
            "agora_resident_memory_bytes",
            "gauge",
            "Resident memory",
            &[],
            crate::capacity::resident_memory().unwrap_or(0) as f64,
        );
        m.add(
            "agora_uptime_seconds",
            "gauge",
            "Uptime",
            &[],
            now.since(self.started).as_secs_f64(),
        );
        let ex = self.sh.executor.stats();
        m.add(
            "agora_modules_compiled_total",
            "counter",
            "Modules compiled",
            &[],
            ex.compiled as f64,
        );
        m.add(
            "agora_module_cache_hits_total",
            "counter",
            "Compiled-module cache hits",
            &[("cache", "memory")],
            ex.memory_hits as f64,
        );
        m.add(
            "agora_module_cache_hits_total",
            "counter",
            "Compiled-module cache hits",
            &[("cache", "disk")],
            ex.disk_hits as f64,
        );
        m
    }
}

fn decline_label(d: &Decline) -> &'static str {
    match d {
        Decline::NoFreeSlot => "no_free_slot",
        Decline::MemoryTooLarge { .. } => "memory",
        Decline::PriceTooLow { .. } => "price",
        Decline::NotAccepting => "not_accepting",
        Decline::DeadlineInfeasible { .. } => "deadline",
        Decline::EnergyTooHigh { .. } => "energy",
        Decline::OfferUnknown => "offer_unknown",
        Decline::Unknown => "unknown",
        Decline::Invalid { .. } => "invalid",
        Decline::TooLarge { .. } => "too_large",
    }
}

fn summary(j: &JobRecord, tasks: &[TaskRecord]) -> JobSummary {
    let c = count_phases(tasks.iter().map(|t| &t.phase));
    JobSummary {
        id: j.id,
        state: j.state,
        tasks: tasks.len(),
        verified: c.verified,
        failed: c.failed,
        submitted_at: j.submitted_at,
        finished_at: j.finished_at,
        error: j.error.clone(),
    }
}

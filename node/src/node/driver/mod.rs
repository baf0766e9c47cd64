//! The driver: the one task that owns a node's [`Engine`] and wires it to
//! the rest of the node. It decides nothing.
//!
//! Each turn starts with one event (an API command, a batch made durable,
//! finished work, an answer to one of the engine's requests, a network
//! event, or a clock tick, first ready first in that order), takes
//! whatever else is ready, and ends with
//! [`Driver::end_turn`]: the engine's writes go to the store in one batch,
//! its immediate outputs into the turn's network [`Outbox`], and the
//! outputs that wait for the batch into `durable`, a set of batches still
//! being flushed, carried out once theirs is on disk.
//!
//! Everything the driver starts is bounded and owned: work runs in a
//! [`JoinSet`] of at most [`MAX_WORK`] tasks (more waits in a queue), the
//! answers to requests are futures it polls itself, and both are dropped —
//! aborted — when the node stops.
//!
//! * [`inbound`]: network events to the engine.
//! * [`api`]: the owner's API commands.
//! * [`metrics`]: the Prometheus text.

mod api;
mod inbound;
mod metrics;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::network::ToPeerId;
use agora_market::engine::{Engine, Output, ReplyId, RequestId};
use agora_protocol::rpc::{Decline, MAX_LOG_CHUNK, MarketRequest, MarketResponse};
use agora_protocol::units::Timestamp;
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::Multiaddr;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::work::{self, Done};
use super::{Options, Shared};
use crate::api::server::{ApiCommand, ApiError};
use crate::capacity::LoadSampler;
use crate::config::Config;
use crate::executor::{CheckpointSink, LiveLog};
use crate::network::{Event, Outbox, Reply};
use crate::store::{Batch, StoreError};

/// Most ready events handled in one turn besides the one that woke it.
const MAX_EVENTS_PER_TURN: usize = 64;
/// Most work running at once; more waits its turn.
pub(crate) const MAX_WORK: usize = 1024;

/// An API answer sent once the turn's writes are on disk (or could not be
/// written).
type Submitted = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// Audits waited for, per chain owner, and how many at most.
const MAX_AUDITS: usize = 64;
/// How long a stopping node waits for its withdrawals to be delivered.
const WITHDRAW_GRACE: Duration = Duration::from_secs(1);

/// What waits for a batch to be durable.
#[derive(Default)]
struct After {
    /// Engine outputs.
    outputs: Vec<Output>,
    /// Answers to job submissions.
    submitted: Vec<Submitted>,
    /// Submissions that wait for their job's end once it is stored.
    waiters: Vec<api::JobWaiter>,
}

impl After {
    fn is_empty(&self) -> bool {
        self.outputs.is_empty() && self.submitted.is_empty() && self.waiters.is_empty()
    }
}

type Flushed = (Result<(), StoreError>, After);
type Answered = (RequestId, Result<MarketResponse, String>);

/// Work in a bounded set: at most [`MAX_WORK`] tasks at once, the rest
/// queued in order.
struct Tasks {
    running: JoinSet<Done>,
    waiting: VecDeque<BoxFuture<'static, Done>>,
}

impl Tasks {
    fn spawn(&mut self, f: impl std::future::Future<Output = Done> + Send + 'static) {
        if self.running.len() < MAX_WORK {
            self.running.spawn(f);
        } else {
            self.waiting.push_back(f.boxed());
        }
    }

    /// Starts queued work in the room finished work left.
    fn refill(&mut self) {
        while self.running.len() < MAX_WORK
            && let Some(f) = self.waiting.pop_front()
        {
            self.running.spawn(f);
        }
    }

    fn len(&self) -> usize {
        self.running.len() + self.waiting.len()
    }
}

/// How often running tasks' live logs go to their requesters.
const LOG_EVERY: Duration = Duration::from_millis(250);

/// A running task's live log and how much of it its requester has, and
/// where its checkpoints arrive.
struct LiveTap {
    log: LiveLog,
    saved: CheckpointSink,
    sent: u64,
    to: agora_protocol::NodeId,
    task: agora_protocol::TaskId,
}

impl LiveTap {
    /// Queues what was written since the last send, in chunks of at most
    /// [`MAX_LOG_CHUNK`] (the answer is not awaited: a lost chunk leaves a
    /// gap in the requester's copy, never an error).
    fn send(&mut self, agreement: agora_protocol::MessageId, outbox: &mut Outbox) {
        loop {
            let chunk = self.log.read_from(self.sent, MAX_LOG_CHUNK);
            if chunk.is_empty() {
                return;
            }
            let offset = self.sent;
            self.sent += chunk.len() as u64;
            drop(outbox.push(
                self.to,
                MarketRequest::Log {
                    agreement,
                    task: self.task,
                    offset,
                    text: agora_protocol::wire::Blob(chunk),
                },
            ));
        }
    }
}

pub(super) struct Driver {
    engine: Engine,
    sh: Shared,
    options: Options,
    idle_interval: Duration,
    /// The owner's CPU share per task in the configuration.
    cpu_share: f64,
    /// The share each running task gets now (the owner's limits applied).
    task_share: f64,
    /// The injected slowdown (1 unless testing faults).
    slowdown: f64,
    /// Reply channels of inbound requests the engine has not answered yet.
    replies: HashMap<ReplyId, Reply>,
    next_reply: u64,
    /// What the turn hands the network at its end.
    outbox: Outbox,
    answers: FuturesUnordered<BoxFuture<'static, Answered>>,
    tasks: Tasks,
    durable: FuturesUnordered<BoxFuture<'static, Flushed>>,
    /// API answers of this turn that wait for its batch.
    api_after: Vec<Submitted>,
    /// Status requests waiting for their job to end.
    job_waiters: Vec<api::JobWaiter>,
    /// Submissions of this turn that wait for their job's end, once its
    /// batch is stored.
    stored_waiters: Vec<api::JobWaiter>,
    /// API calls waiting for an audit, by chain owner.
    audits: HashMap<agora_protocol::NodeId, Vec<oneshot::Sender<Result<crate::api::AuditReport, ApiError>>>>,
    /// Stop flags of the executions running, by agreement.
    running: HashMap<agora_protocol::MessageId, Arc<AtomicBool>>,
    /// Live logs of the executions running, by agreement, with what was
    /// sent of each to its requester.
    live: HashMap<agora_protocol::MessageId, LiveTap>,
    last_logs: Instant,
    sampler: LoadSampler,
    last_idle: Instant,
    /// When the allocator's free memory goes back after a burst of work.
    trim: crate::memory::IdleTrim,
    /// What the owner's limits read, and how often.
    sensors: crate::sensors::Sensors,
    limits_interval: Duration,
    last_limits: Option<Instant>,
    /// Ticks so far (a hundred a second while work is under way, four
    /// while quiet).
    ticks: u64,
    cancel: CancellationToken,
}

fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

impl Driver {
    pub(super) fn new(
        engine: Engine,
        sh: Shared,
        config: &Config,
        options: &Options,
        cancel: CancellationToken,
    ) -> Driver {
        Driver {
            engine,
            sh,
            options: options.clone(),
            idle_interval: config.provider.idle.interval,
            cpu_share: config.provider.cpu_share,
            task_share: config.provider.cpu_share,
            slowdown: options.faults.slowdown(),
            replies: HashMap::new(),
            next_reply: 0,
            outbox: Outbox::default(),
            answers: FuturesUnordered::new(),
            tasks: Tasks {
                running: JoinSet::new(),
                waiting: VecDeque::new(),
            },
            durable: FuturesUnordered::new(),
            api_after: Vec::new(),
            job_waiters: Vec::new(),
            stored_waiters: Vec::new(),
            audits: HashMap::new(),
            running: HashMap::new(),
            live: HashMap::new(),
            last_logs: Instant::now(),
            sampler: LoadSampler::new(),
            last_idle: Instant::now(),
            trim: crate::memory::IdleTrim::new(Instant::now()),
            sensors: crate::sensors::Sensors::new(&config.provider.limits.sysfs),
            limits_interval: config.provider.limits.interval,
            last_limits: None,
            ticks: 0,
            cancel,
        }
    }

    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut api: mpsc::Receiver<ApiCommand>,
    ) {
        let (topics, keys) = self.engine.subscriptions();
        for t in topics {
            let _ = self.sh.net.subscribe(t).await;
        }
        for k in keys {
            self.sh.net.start_providing(k).await;
        }
        // Datasets published here are announced again at every start.
        match self
            .sh
            .store
            .scan::<Vec<agora_protocol::ContentId>>(agora_market::records::PUBLISHED.as_bytes())
        {
            Ok(published) => {
                let ids: Vec<agora_protocol::ContentId> =
                    published.into_iter().flat_map(|(_, ids)| ids).collect();
                super::work::announce(&self.sh, &ids).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the published datasets; they are not announced")
            }
        }
        // The next tick: `options.tick` after the last while anything is
        // under way, the engine's QUIET_TICK after it while the node is
        // quiet (four wake-ups a second, not a hundred). Work that arrives
        // while quiet brings the next tick forward at once.
        let tick = tokio::time::sleep(self.options.tick);
        tokio::pin!(tick);
        let mut quiet = false;
        loop {
            // Whether this turn answered a call of the API.
            let mut answered = false;
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                // The owner's API first: it is rare and cheap, and must stay
                // responsive however busy the network is.
                Some(c) = api.recv() => {
                    // A submission is answered once its job is stored.
                    answered = !matches!(c, ApiCommand::Submit(..));
                    self.on_api(c);
                }
                // Then what waited for the store: under load answers and
                // finished work are ready at every turn, and a batch made
                // durable behind them waited its turn for up to 0.8 s (a
                // payment then reached its payee 0.1–0.6 s late).
                Some((result, after)) = self.durable.next() => answered = self.on_flushed(result, after),
                Some(done) = self.tasks.running.join_next() => self.on_joined(done),
                Some((id, answer)) = self.answers.next() => self.engine.on_answer(id, answer, now()),
                Some(ev) = events.recv() => self.on_network(ev),
                _ = &mut tick => {
                    self.on_tick();
                    quiet = self.quiet();
                    let pace = if quiet { agora_market::engine::QUIET_TICK.max(self.options.tick) } else { self.options.tick };
                    tick.as_mut().reset(tokio::time::Instant::now() + pace);
                }
            }
            // Whatever else is ready joins this turn: one placement pass and
            // one store write for all of it.
            for _ in 0..MAX_EVENTS_PER_TURN {
                if let Some(Some((result, after))) = self.durable.next().now_or_never() {
                    answered |= self.on_flushed(result, after);
                } else if let Some(done) = self.tasks.running.try_join_next() {
                    self.on_joined(done);
                } else if let Some(Some((id, answer))) = self.answers.next().now_or_never() {
                    self.engine.on_answer(id, answer, now());
                } else if let Ok(ev) = events.try_recv() {
                    self.on_network(ev);
                } else {
                    break;
                }
            }
            // A job this turn ended is answered before the turn's
            // placement, payments and writes, which its answer does not
            // wait for; one the turn's end ended, after them.
            answered |= self.wake_job_waiters() > 0;
            if answered {
                // An answer's HTTP task, woken from this thread, runs only
                // once the driver yields (tokio's LIFO slot, which no other
                // thread takes): without a yield here, the answer would wait
                // for the turn's placement, payments and writes.
                tokio::task::yield_now().await;
            }
            self.end_turn().await;
            self.wake_job_waiters();
            if quiet && !self.quiet() {
                quiet = false;
                let sooner = tokio::time::Instant::now() + self.options.tick;
                if tick.deadline() > sooner {
                    tick.as_mut().reset(sooner);
                }
            }
        }
        // Boxed: the driver (its engine inline) is a large future to move.
        Box::pin(self.shutdown()).await;
    }

    async fn shutdown(mut self) {
        tracing::info!("shutting down: taking no new work, recording what is in flight");
        // Runs stop at their next epoch tick (their tasks are re-placed by
        // their requesters, or run again here after a restart).
        for flag in self.running.values() {
            flag.store(true, Ordering::Relaxed);
        }
        let withdrawn = self.engine.shutdown(now());
        self.end_turn().await;
        if withdrawn > 0 {
            self.await_answers(WITHDRAW_GRACE).await;
        }
        let _ = self.sh.store.flush().await;
        if self.options.write_node_json {
            super::remove_node_json(&self.options.data_dir);
        }
        // Dropping the driver aborts its work and pending answers.
    }

    /// Waits up to `grace` for the answers to requests in flight (at
    /// shutdown: the withdrawals just sent), so that they leave before the
    /// network stops, and for what waits for the store to be carried out
    /// (orders' held answers, and the withdrawals that follow them).
    async fn await_answers(&mut self, grace: Duration) {
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        while !(self.answers.is_empty() && self.durable.is_empty()) {
            tokio::select! {
                _ = &mut deadline => break,
                Some((result, after)) = self.durable.next() => {
                    self.on_flushed(result, after);
                    self.end_turn().await;
                }
                Some((id, answer)) = self.answers.next() => self.engine.on_answer(id, answer, now()),
            }
        }
        self.end_turn().await;
    }

    /// Whether nothing here needs the driver's short tick: the engine is
    /// quiet and no run, unanswered request, waiting client or live log is
    /// under way. (Writes and answers in flight end as events of their
    /// own: they need no tick.)
    fn quiet(&self) -> bool {
        self.tasks.len() == 0
            && self.replies.is_empty()
            && self.job_waiters.is_empty()
            && self.audits.is_empty()
            && self.live.is_empty()
            && self.api_after.is_empty()
            && self.stored_waiters.is_empty()
            && self.engine.quiet()
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        let now = now();
        self.engine.tick(now);
        if self.last_idle.elapsed() >= self.idle_interval {
            self.last_idle = Instant::now();
            self.engine.on_load(self.sampler.sample());
        }
        if self
            .last_limits
            .is_none_or(|t| t.elapsed() >= self.limits_interval)
        {
            self.sample_limits();
        }
        if !self.live.is_empty() && self.last_logs.elapsed() >= LOG_EVERY {
            self.send_logs();
            self.send_checkpoints();
        }
        let busy = self.tasks.len() > 0 || !self.durable.is_empty();
        if self.trim.tick(busy, Instant::now()) {
            tokio::task::spawn_blocking(|| {
                if let Some(t) = crate::memory::trim() {
                    tracing::debug!(
                        heap = t.heap,
                        code = ?t.code,
                        "idle: the allocator's free pages given back, the binary's pages unmapped"
                    );
                }
            });
        }
    }

    /// The share of a core each running task gets: the owner's per-task
    /// share, cut so that all running tasks together stay within their
    /// total cap, applied to runs under way at their next epoch tick; and
    /// the pace of the content served to others (`max_upload`).
    fn apply_rate_limits(&mut self) {
        let p = self.engine.provider();
        let limits = p.limits().limits();
        let running = p.load() - p.queued();
        let share = agora_market::limits::task_share(
            limits.cpu_share.unwrap_or(self.cpu_share),
            limits.max_cpu,
            running,
        );
        if share != self.task_share {
            self.task_share = share;
            self.sh.executor.set_cpu_share(share / self.slowdown);
        }
        self.sh.upload.set(limits.max_upload.map(|r| r.0));
    }

    /// Hands the engine each running task's latest checkpoint since the
    /// last time, for its requester.
    fn send_checkpoints(&mut self) {
        let now = now();
        for (agreement, tap) in &self.live {
            if let Some(c) = tap.saved.take() {
                self.engine.on_checkpoint(*agreement, c, now);
            }
        }
    }

    /// Sends each running task's requester what its guest wrote to stderr
    /// since the last time.
    fn send_logs(&mut self) {
        self.last_logs = Instant::now();
        for (agreement, tap) in self.live.iter_mut() {
            tap.send(*agreement, &mut self.outbox);
        }
    }

    /// Reads what the owner's limits need and lets the engine judge it.
    pub(super) fn sample_limits(&mut self) {
        self.last_limits = Some(Instant::now());
        let readings = self.sensors.read(self.engine.provider().limits().limits());
        self.engine.on_readings(&readings);
    }

    fn on_joined(&mut self, joined: Result<Done, tokio::task::JoinError>) {
        self.tasks.refill();
        match joined {
            Ok(done) => self.on_done(done),
            // A work task panicked: a bug, reported; the engine's timeouts
            // recover what it was doing (an execution is re-placed, a
            // delivery retried).
            Err(e) if e.is_panic() => tracing::error!(error = %e, "a work task panicked"),
            Err(_) => {}
        }
    }

    fn on_done(&mut self, done: Done) {
        let now = now();
        let e = &mut self.engine;
        match done {
            Done::Executed(agreement, r) => {
                self.running.remove(&agreement);
                // The last of its log goes before its receipt.
                if let Some(mut tap) = self.live.remove(&agreement) {
                    tap.send(agreement, &mut self.outbox);
                }
                e.on_executed(agreement, r)
            }
            Done::Stored(token, r) => e.on_output_stored(token, r, now),
            Done::Fetched(task, attempt, ok) => e.on_fetched(task, attempt, ok, now),
            Done::SpotChecked(task, attempt, r) => e.on_spot_checked(task, attempt, r, now),
            Done::Reduced(job, r) => e.on_reduced(job, r, now),
            Done::FraudChecked(proof, r) => e.on_fraud_checked(proof, r, now),
            Done::Probed(peer, alive) => e.on_probe(peer, alive, now),
            Done::Calibrated(r) => e.on_calibrated(r, now),
            Done::Collected(c) => e.on_disk_full(c.full),
            Done::Answer(id, r) => e.on_answer(id, r, now),
            Done::Holders(found) => e.on_holders(found),
            Done::Nothing => {}
        }
        if self.sh.store.content().held() > self.sh.disk.cap.0 {
            self.engine.on_disk_over_cap(now);
        }
    }

    /// Ends a turn: the engine's writes go to the store, its outputs out,
    /// and the turn's network work to the network task.
    async fn end_turn(&mut self) {
        let turn = self.engine.end_turn(now());
        // Paused by the owner or held by a limit: running tasks park at
        // their next epoch tick, and go on where they stopped after.
        self.sh.executor.suspend(self.engine.suspends());
        self.apply_rate_limits();
        for out in turn.now {
            self.carry_out(out);
        }
        let mut batch = Batch::new();
        for w in turn.writes.into_vec() {
            match w {
                agora_market::records::Write::Put { key, value } => batch.put_raw(key, value),
                agora_market::records::Write::Delete { key } => batch.delete(key),
            };
        }
        let after = After {
            outputs: turn.after,
            submitted: std::mem::take(&mut self.api_after),
            waiters: std::mem::take(&mut self.stored_waiters),
        };
        if !batch.is_empty() || !after.is_empty() {
            match self
                .sh
                .store
                .enqueue(batch, turn.flush || !after.is_empty())
                .await
            {
                Ok(durable) if !after.is_empty() => {
                    self.durable
                        .push(async move { (durable.wait().await, after) }.boxed());
                }
                Ok(_) => {}
                Err(e) => self.storage_failed(after, &e),
            }
        }
        self.sh.net.send_all(std::mem::take(&mut self.outbox)).await;
    }

    /// Carries out what waited for a batch; returns whether that answered
    /// a call of the API.
    fn on_flushed(&mut self, result: Result<(), StoreError>, after: After) -> bool {
        let answers = !after.submitted.is_empty();
        if let Err(e) = result {
            self.storage_failed(after, &e);
            return answers;
        }
        for out in after.outputs {
            self.carry_out(out);
        }
        for answer in after.submitted {
            answer(Ok(()));
        }
        // Answered at the end of this turn if their jobs have ended.
        self.job_waiters.extend(after.waiters);
        answers
    }

    /// What depended on a batch that could not be written is refused: a
    /// peer's request is declined, a request of the engine fails (and is
    /// retried by it), a submission is an error.
    fn storage_failed(&mut self, after: After, e: &StoreError) {
        tracing::error!(error = %e, "cannot write to the store; refusing what depends on it");
        for out in after.outputs {
            match out {
                Output::Respond { reply, .. } => {
                    let refusal = MarketResponse::Declined(Decline::Unavailable);
                    self.respond(reply, refusal);
                }
                Output::Send { id, .. } => {
                    self.engine
                        .on_answer(id, Err(format!("not sent: storage failure: {e}")), now());
                }
                _ => {}
            }
        }
        for answer in after.submitted {
            answer(Err(e));
        }
        for w in after.waiters {
            w.storage_failed(e);
        }
    }

    /// Stops a running execution at its next epoch tick.
    fn interrupt(&mut self, agreement: &agora_protocol::MessageId) {
        if let Some(flag) = self.running.get(agreement) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    fn respond(&mut self, reply: ReplyId, response: MarketResponse) {
        if let Some(channel) = self.replies.remove(&reply) {
            self.outbox.respond(channel, response);
        }
    }

    fn carry_out(&mut self, out: Output) {
        match out {
            Output::Send {
                id,
                to,
                request,
                attach,
            } => {
                if attach.is_empty() {
                    let answer = self.outbox.push(to, request);
                    self.answers
                        .push(async move { (id, answer.get().await.map_err(|e| e.to_string())) }.boxed());
                } else {
                    let sh = self.sh.clone();
                    self.tasks
                        .spawn(work::send_with_content(sh, id, to, request, attach));
                }
            }
            Output::Respond { reply, response } => self.respond(reply, response),
            Output::Run(w) => {
                let (cancel, live, saved) = match &w {
                    agora_market::engine::Work::Execute {
                        agreement,
                        requester,
                        assignment,
                        ..
                    } => {
                        let flag = Arc::new(AtomicBool::new(false));
                        self.running.insert(*agreement, flag.clone());
                        let log = LiveLog::new();
                        let saved = CheckpointSink::new();
                        self.live.insert(
                            *agreement,
                            LiveTap {
                                log: log.clone(),
                                saved: saved.clone(),
                                sent: 0,
                                to: *requester,
                                task: assignment.task,
                            },
                        );
                        (Some(flag), Some(log), Some(saved))
                    }
                    _ => (None, None, None),
                };
                let sh = self.sh.clone();
                self.tasks.spawn(work::run(sh, w, cancel, live, saved));
            }
            Output::Publish { topic, data } => self.outbox.publish(topic, data),
            Output::Interrupt { agreement } => self.interrupt(&agreement),
            Output::Audited { owner, result } => self.audited(owner, result),
            Output::Locate { peer, addrs, dial } => {
                let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
                if dial && let Some(a) = addrs.first() {
                    let with_peer = a.clone().with_p2p(peer.to_peer_id()).unwrap_or_else(|a| a);
                    self.outbox.dial(with_peer);
                }
                for a in addrs {
                    self.outbox.add_address(peer, a);
                }
            }
        }
    }
}

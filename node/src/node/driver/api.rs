//! The owner's API commands: answered from the engine's state, or handed
//! to it (submit, cancel).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agora_market::engine::{CancelError, SubmitError};
use agora_market::job::{CopyState, JobRecord, TaskRecord};
use agora_market::ledger::Refused;
use agora_protocol::Envelope;
use agora_protocol::units::{Credits, Timestamp};
use agora_protocol::{Domain, JobId, NodeId, SOFTWARE_VERSION};
use futures::FutureExt;
use tokio::sync::oneshot;

use super::{Driver, MAX_AUDITS, now};
use crate::api::server::{ApiCommand, ApiError, JobDetail, MAX_JOB_WAIT_MS, OwnerChange};
use crate::api::{
    AuditReport, CopyStatus, DomainRow, Explain, GrantResponse, JobResult, JobStatus, Ledger, OutputRef,
    OwnerState, Path, PeerRow, ProviderCount, Status, SubmitRequest, SubmitResponse, TaskExplain, TaskStatus,
    count_phases,
};
use crate::capacity::resident_memory;
use crate::node::work::{self, Done};
use crate::store::StoreError;

/// Most jobs `GET /v1/jobs` lists, newest first.
const MAX_JOBS_LISTED: usize = 1000;

/// Most requests waiting at once for their job to end; more are answered
/// at once, as if they had not asked to wait.
const MAX_JOB_WAITERS: usize = 256;

/// A request waiting for its job to end: a `GET /v1/jobs/{id}?wait_ms=`,
/// or a `POST /v1/jobs?wait_ms=` whose job is stored.
pub(super) struct JobWaiter {
    id: agora_protocol::JobId,
    detail: JobDetail,
    until: Instant,
    reply: WaiterReply,
}

/// Where a waiting request's answer goes.
enum WaiterReply {
    Status(oneshot::Sender<Option<JobStatus>>),
    Submitted(oneshot::Sender<Result<SubmitResponse, ApiError>>),
}

impl JobWaiter {
    fn is_closed(&self) -> bool {
        match &self.reply {
            WaiterReply::Status(r) => r.is_closed(),
            WaiterReply::Submitted(r) => r.is_closed(),
        }
    }

    fn answer(self, status: Option<JobStatus>) {
        match self.reply {
            WaiterReply::Status(r) => {
                let _ = r.send(status);
            }
            WaiterReply::Submitted(r) => {
                let _ = r.send(Ok(SubmitResponse {
                    id: Some(self.id),
                    plan: None,
                    status: status.map(Box::new),
                }));
            }
        }
    }

    /// A submission whose job could not be stored is an error. (Only a
    /// submission waits for a write; a status request has nothing to
    /// lose and hears that the job is unknown.)
    pub(super) fn storage_failed(self, e: &StoreError) {
        match self.reply {
            WaiterReply::Status(r) => {
                let _ = r.send(None);
            }
            WaiterReply::Submitted(r) => {
                let _ = r.send(Err(ApiError::internal(format!(
                    "the job could not be stored: {e}"
                ))));
            }
        }
    }
}

impl Driver {
    pub(super) fn on_api(&mut self, c: ApiCommand) {
        let now = now();
        match c {
            ApiCommand::Status(r) => {
                let _ = r.send(self.status(now));
            }
            ApiCommand::Owner(change, r) => {
                match change {
                    Some(OwnerChange::Pause(d)) => self.engine.pause(d.map(|d| now.add(d))),
                    Some(OwnerChange::Resume) => self.engine.resume(),
                    Some(OwnerChange::Limits(l)) => {
                        self.engine.set_limits(l);
                        // Judged at once, not at the next sample.
                        self.sample_limits();
                    }
                    None => {
                        let _ = r.send(self.owner_state());
                        return;
                    }
                }
                // A change is answered once it is on disk (it holds across
                // a restart).
                let state = self.owner_state();
                self.api_after.push(Box::new(move |_| {
                    let _ = r.send(state);
                }));
            }
            ApiCommand::History { days, tasks, reply } => {
                // Reads the chain back over the days asked: off the driver.
                let store = self.sh.store.clone();
                tokio::task::spawn_blocking(move || {
                    let answer = crate::node::records_view::history(&store, days, tasks, now)
                        .map_err(|e| ApiError::unavailable(format!("cannot read the history: {e}")));
                    let _ = reply.send(answer);
                });
            }
            ApiCommand::Peers(domain, r) => {
                let _ = r.send(self.peers(domain.as_ref(), now));
            }
            ApiCommand::Domains(r) => {
                let _ = r.send(self.domains());
            }
            ApiCommand::Metrics(r) => {
                let m = self.metrics(now);
                let net = self.sh.net.clone();
                self.tasks.spawn(
                    async move {
                        let _ = r.send(super::metrics::with_network(m, net.stats().await.ok()).render());
                        Done::Nothing
                    }
                    .boxed(),
                );
            }
            ApiCommand::Publish(dataset, r) => {
                let sh = self.sh.clone();
                self.tasks.spawn(
                    async move {
                        let _ = r.send(work::publish(&sh, dataset).await);
                        Done::Nothing
                    }
                    .boxed(),
                );
            }
            ApiCommand::FetchContent(id, r) => {
                let sh = self.sh.clone();
                self.tasks.spawn(
                    async move {
                        let started = std::time::Instant::now();
                        let answer = crate::node::transfer::fetch_into_store(&sh, None, id)
                            .await
                            .map(|f| crate::api::FetchedContent {
                                id,
                                size: f.size,
                                held: f.held,
                                holders: f.holders,
                                slices: f.slices,
                                retried: f.retried,
                                took_ms: started.elapsed().as_millis() as u64,
                            })
                            .map_err(ApiError::not_found);
                        let _ = r.send(answer);
                        Done::Nothing
                    }
                    .boxed(),
                );
            }
            ApiCommand::Dataset(id, r) => {
                let sh = self.sh.clone();
                self.tasks.spawn(
                    async move {
                        let found = work::dataset(&sh, id).await;
                        let files: Vec<_> = found
                            .as_ref()
                            .map(|d| d.files.iter().map(|f| (f.id, f.size.0)).collect())
                            .unwrap_or_default();
                        let _ = r.send(found);
                        // A job over it is likely next: where its files are.
                        Done::Holders(crate::node::transfer::find_holders(&sh, files).await)
                    }
                    .boxed(),
                );
            }
            ApiCommand::Submit(req, wait, r) => self.submit(*req, wait, r, now),
            ApiCommand::Jobs(r) => {
                let _ = r.send(self.engine.job_summaries(MAX_JOBS_LISTED));
            }
            ApiCommand::Job(id, detail, reply) => {
                if detail.wait_ms > 0 && !self.job_ended(&id) && self.waiting() < MAX_JOB_WAITERS {
                    let wait = Duration::from_millis(detail.wait_ms.min(MAX_JOB_WAIT_MS));
                    self.job_waiters.push(JobWaiter {
                        id,
                        detail,
                        until: Instant::now() + wait,
                        reply: WaiterReply::Status(reply),
                    });
                } else {
                    let _ = reply.send(self.job_status(&id, detail, now));
                }
            }
            ApiCommand::Explain(id, r) => {
                let _ = r.send(self.explain(id));
            }
            ApiCommand::Logs(id, task, r) => {
                let req = self.engine.requester();
                let answer = req.job(&id).map(|_| crate::api::JobLogs {
                    copies: req
                        .logs(id, task)
                        .into_iter()
                        .map(|l| crate::api::CopyLogView {
                            task: l.task.index,
                            attempt: l.attempt,
                            provider: l.provider,
                            start: l.start,
                            end: l.end(),
                            text: String::from_utf8_lossy(&l.bytes).into_owned(),
                        })
                        .collect(),
                });
                let _ = r.send(answer);
            }
            ApiCommand::Result(id, r) => {
                let _ = r.send(self.result(id));
            }
            ApiCommand::Cancel(id, r) => {
                let res = match self.engine.cancel(id, now) {
                    Ok(()) => self
                        .engine
                        .with_job(&id, |rec, tasks| rec.summary(tasks))
                        .ok_or_else(|| ApiError::internal(format!("job {id} vanished"))),
                    Err(e @ CancelError::Unknown(_)) => Err(ApiError::not_found(e.to_string())),
                    Err(e @ CancelError::Ended(_)) => Err(ApiError::conflict(e.to_string())),
                };
                let _ = r.send(res);
            }
            ApiCommand::Ledger(limit, r) => {
                let _ = r.send(self.ledger(limit));
            }
            ApiCommand::Grant(env, r) => self.grant(&env, r, now),
            ApiCommand::Audit(peer, r) => self.audit(peer, r),
        }
    }

    fn submit(
        &mut self,
        req: SubmitRequest,
        wait: JobDetail,
        reply: oneshot::Sender<Result<SubmitResponse, ApiError>>,
        now: Timestamp,
    ) {
        let bad = |e: SubmitError| ApiError::bad_request(e.to_string());
        if req.dry_run {
            let spec = &req.spec;
            let answer = self
                .engine
                .plan(spec, now)
                .map_err(bad)
                .map(|plan| SubmitResponse {
                    id: None,
                    status: None,
                    plan: Some(
                        plan.into_iter()
                            .enumerate()
                            .map(|(i, d)| {
                                let name = spec
                                    .inputs
                                    .get(i)
                                    .map_or_else(|| format!("task {i}"), |s| s.name.clone());
                                TaskExplain::new(i as u32, name, vec![d])
                            })
                            .collect(),
                    ),
                });
            let _ = reply.send(answer);
            return;
        }
        let dataset_files: Vec<_> = match req.spec.dataset {
            Some(_) => req.spec.inputs.iter().map(|i| (i.id, i.size.0)).collect(),
            None => Vec::new(),
        };
        match self.engine.submit(req.spec, now) {
            Ok(id) if !dataset_files.is_empty() => {
                let sh = self.sh.clone();
                self.tasks.spawn(
                    async move { Done::Holders(crate::node::transfer::find_holders(&sh, dataset_files).await) }.boxed(),
                );
                self.answer_when_stored(id, wait, reply);
            }
            Ok(id) => {
                tracing::debug!(target: "hop", "job submitted");
                self.answer_when_stored(id, wait, reply)
            }
            Err(e) => {
                let _ = reply.send(Err(bad(e)));
            }
        }
    }

    /// Answers a submission once the job is on disk, or, if it asked to
    /// wait, once it is on disk and has ended (or the wait is over): the
    /// waiter joins the others when the turn's batch is flushed.
    fn answer_when_stored(
        &mut self,
        id: JobId,
        wait: JobDetail,
        reply: oneshot::Sender<Result<SubmitResponse, ApiError>>,
    ) {
        if wait.wait_ms > 0 && self.waiting() < MAX_JOB_WAITERS {
            self.stored_waiters.push(JobWaiter {
                id,
                detail: wait,
                until: Instant::now() + Duration::from_millis(wait.wait_ms.min(MAX_JOB_WAIT_MS)),
                reply: WaiterReply::Submitted(reply),
            });
            return;
        }
        self.api_after
            .push(Box::new(move |written: Result<(), &StoreError>| {
                let _ = reply.send(match written {
                    Ok(()) => Ok(SubmitResponse {
                        id: Some(id),
                        plan: None,
                        status: None,
                    }),
                    Err(e) => Err(ApiError::internal(format!("the job could not be stored: {e}"))),
                });
            }));
    }

    fn domains(&self) -> Vec<DomainRow> {
        let view = self.engine.view();
        let local = view.domain().clone();
        view.domains()
            .into_iter()
            .map(|(d, s)| DomainRow {
                local: d == local,
                domain: d,
                nodes: s.nodes,
                total_cu: s.total_cu.0,
                free_cu: s.free_cu.0,
                free_slots: s.free_slots,
                price_min: s.price_min,
                price_max: s.price_max,
                best_rtt_ms: s.best_rtt.0,
            })
            .collect()
    }

    /// Placement decisions are kept in memory only: a job that has left
    /// memory explains with none.
    fn explain(&self, id: JobId) -> Option<Explain> {
        let req = self.engine.requester();
        self.engine.with_job(&id, |rec, tasks| Explain {
            id,
            tasks: tasks
                .iter()
                .map(|t| {
                    let name = rec.spec.inputs[t.id.index as usize].name.clone();
                    TaskExplain::new(t.id.index, name, req.decisions(&t.id))
                })
                .collect(),
        })
    }

    fn result(&self, id: JobId) -> Option<JobResult> {
        self.engine.with_job(&id, |rec, tasks| JobResult {
            id,
            state: rec.state,
            outputs: tasks
                .iter()
                .map(|t| {
                    // Only a verified task's output is a result (a failure's
                    // stdout, even agreed on, is not).
                    let id = t
                        .output
                        .filter(|_| t.phase == agora_market::job::TaskPhase::Verified);
                    OutputRef {
                        index: t.id.index,
                        name: rec.spec.inputs[t.id.index as usize].name.clone(),
                        id,
                        size: id.and_then(|o| work::held_size(&self.sh, &o)),
                        phase: t.phase,
                        error: t.error.clone(),
                    }
                })
                .collect(),
            reduced: rec.reduced,
            error: rec.error.clone(),
        })
    }

    /// Takes an issuer's grant; answered once its block is on disk.
    fn grant(
        &mut self,
        env: &Envelope,
        reply: oneshot::Sender<Result<GrantResponse, ApiError>>,
        now: Timestamp,
    ) {
        match self.engine.grant(env, now) {
            Ok(amount) => {
                let st = self.engine.ledger().state();
                let answer = GrantResponse {
                    amount,
                    balance_micros: st.balance(),
                    seq: st.seq,
                };
                self.api_after
                    .push(Box::new(move |written: Result<(), &StoreError>| {
                        let _ = reply.send(match written {
                            Ok(()) => Ok(answer),
                            Err(e) => Err(ApiError::internal(format!("the grant could not be stored: {e}"))),
                        });
                    }));
            }
            Err(e @ (Refused::Invalid(_) | Refused::NotAnIssuer)) => {
                let _ = reply.send(Err(ApiError::bad_request(e.to_string())));
            }
            Err(e @ Refused::Records(_)) => {
                let _ = reply.send(Err(ApiError::internal(e.to_string())));
            }
        }
    }

    /// Fetches and checks `peer`'s chain; answered when the engine reports.
    fn audit(&mut self, peer: NodeId, reply: oneshot::Sender<Result<AuditReport, ApiError>>) {
        if self.audits.len() >= MAX_AUDITS && !self.audits.contains_key(&peer) {
            let _ = reply.send(Err(ApiError::unavailable(format!(
                "{MAX_AUDITS} audits are already running; try again shortly"
            ))));
            return;
        }
        self.audits.entry(peer).or_default().push(reply);
        self.engine.audit(peer, super::now());
    }

    /// An audit ended: every caller waiting for it gets the report.
    pub(super) fn audited(
        &mut self,
        owner: NodeId,
        result: Result<agora_market::engine::AuditReport, String>,
    ) {
        for reply in self.audits.remove(&owner).unwrap_or_default() {
            let _ = reply.send(match &result {
                Ok(r) => Ok(AuditReport {
                    peer_id: r.owner,
                    blocks: r.blocks,
                    from_block: r.from_block,
                    balance_micros: r.balance,
                    granted: r.granted,
                    received: r.received,
                    paid: r.paid,
                    backed_micros: r.backed,
                    unbacked: r.unbacked,
                    unsettled: r.unsettled,
                }),
                Err(e) => Err(ApiError::unavailable(format!("cannot audit {owner}: {e}"))),
            });
        }
    }

    fn ledger(&self, limit: usize) -> Ledger {
        crate::node::records_view::ledger(&self.sh.store, self.engine.ledger().state(), limit)
    }

    fn owner_state(&self) -> OwnerState {
        let p = self.engine.provider();
        let until = p.paused_until();
        OwnerState {
            accepting: p.accepting(),
            not_accepting: p.why_not_accepting().map(str::to_owned),
            paused: until.is_some(),
            paused_until: until.filter(|t| t.0 != u64::MAX),
            running: (p.load() - p.queued()) as u32,
            queued: p.load() as u32,
            suspended: self.sh.executor.suspended() as u32,
            limits: p.limits().limits().clone(),
            limits_in_words: p.limits().limits().describe(),
            held_by: p.limits().held().map(|h| h.limit().to_owned()),
            unavailable: p.limits().unavailable().to_vec(),
            tasks: held_tasks(p, self.sh.executor.suspended() > 0),
        }
    }

    fn status(&self, now: Timestamp) -> Status {
        let e = &self.engine;
        let st = e.ledger().state();
        let p = e.provider();
        let reach = self.sh.net.reach();
        Status {
            peer_id: e.local(),
            version: SOFTWARE_VERSION.to_owned(),
            domain: e.config().domain.clone(),
            listen: e.listen().to_vec(),
            uptime_ms: now.since(e.started()).as_millis() as u64,
            cu: p.capacity(),
            per_slot_cu: p.speed(),
            calibrated_at: e.calibrated_at(),
            cpu_share: self.task_share,
            slots: p.config().slots,
            free_slots: p.free_slots(),
            running: (p.load() - p.queued()) as u32,
            queued: p.queued() as u32,
            accepting: p.accepting(),
            load: agora_market::idle::permille(e.load()),
            price: p.config().price,
            energy: p.config().energy,
            energy_source: self.sh.energy_source,
            memory: p.config().memory,
            balance_micros: st.balance(),
            not_accepting: p.why_not_accepting().map(str::to_owned),
            peers: e.view().len(),
            connected: e.connected(),
            domains: e.view().domains().len(),
            jobs_active: e.requester().jobs().filter(|j| !j.state.is_terminal()).count(),
            rss_bytes: resident_memory().unwrap_or(0),
            reachability: reach.reachability,
            relays: reach.relays,
            external_addrs: reach.external.iter().map(ToString::to_string).collect(),
        }
    }

    fn peers(&self, domain: Option<&Domain>, now: Timestamp) -> Vec<PeerRow> {
        let view = self.engine.view();
        let book = self.engine.requester().book();
        let relayed = self.sh.net.reach().relayed;
        let mut rows: Vec<PeerRow> = view
            .peers()
            .filter(|p| domain.is_none_or(|d| p.advert.domain.is_within(d)))
            .map(|p| {
                let stats = book.get(&p.node);
                PeerRow {
                    peer_id: p.node,
                    domain: p.advert.domain.clone(),
                    cu: p.advert.cu.0,
                    slots: p.advert.slots,
                    free_slots: p.advert.free_slots,
                    memory: p.advert.memory.0,
                    price: p.advert.price,
                    energy: p.advert.energy.0,
                    rtt_ms: view.rtt(&p.node).map(|r| r.as_secs_f64() * 1000.0),
                    advert_age_ms: now.0.saturating_sub(p.received_at.0),
                    clock_offset_ms: p.received_at.0 as i64 - p.advert.seq.min(i64::MAX as u64) as i64,
                    accepting: p.advert.accepting,
                    load: p.advert.load,
                    version: p.advert.version.clone(),
                    learnt_cu: stats.and_then(|s| s.learnt_cu),
                    reputation: stats.map(|s| s.reputation),
                    banned: stats.is_some_and(|s| s.banned.is_some()),
                    path: if relayed.contains(&p.node) {
                        Some(Path::Relayed)
                    } else {
                        self.engine.is_connected(&p.node).then_some(Path::Direct)
                    },
                    labels: p.advert.labels.iter().map(ToString::to_string).collect(),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.peer_id.cmp(&b.peer_id)));
        rows
    }

    /// Requests waiting for their job to end, or for it to be stored
    /// first.
    fn waiting(&self) -> usize {
        self.job_waiters.len() + self.stored_waiters.len()
    }

    /// Whether job `id` has ended here (or is not one of the jobs in
    /// memory: nothing more will happen to it).
    fn job_ended(&self, id: &JobId) -> bool {
        self.engine
            .requester()
            .job(id)
            .is_none_or(|(rec, _)| rec.state.is_terminal())
    }

    /// Answers each request waiting for a job whose job has ended, or whose
    /// wait is over; forgets those whose asker left. Called once per turn.
    /// Returns how many it answered.
    pub(super) fn wake_job_waiters(&mut self) -> usize {
        if self.job_waiters.is_empty() {
            return 0;
        }
        let (at, now) = (Instant::now(), now());
        let mut answered = 0;
        for w in std::mem::take(&mut self.job_waiters) {
            if w.is_closed() {
                continue;
            }
            if at >= w.until || self.job_ended(&w.id) {
                tracing::debug!(target: "hop", "job answered");
                let status = self.job_status(&w.id, w.detail, now);
                w.answer(status);
                answered += 1;
            } else {
                self.job_waiters.push(w);
            }
        }
        answered
    }

    fn job_status(&self, id: &JobId, detail: JobDetail, now: Timestamp) -> Option<JobStatus> {
        let view = self.engine.view();
        let rate = |p: &NodeId| view.peer(p).map(|x| x.advert.energy).filter(|e| e.0 > 0);
        self.engine
            .with_job(id, |rec, tasks| {
                let mut s = job_status(id, rec, tasks, detail, now);
                (s.energy_j, s.energy_unknown) = energy_spent(tasks, &rate);
                s
            })
            .map(|mut s| {
                s.waiting = self.engine.requester().waiting(id, view, now);
                s
            })
    }
}

/// The energy the job's reported copies took, joules, at their providers'
/// advertised energy per CU-second, and how many reported copies ran where
/// that is unknown.
fn energy_spent(
    tasks: &[TaskRecord],
    rate: &dyn Fn(&NodeId) -> Option<agora_protocol::units::EnergyRate>,
) -> (f64, usize) {
    let mut joules = 0.0;
    let mut unknown = 0;
    for c in tasks.iter().flat_map(|t| &t.copies) {
        let Some(r) = &c.reported else { continue };
        // The rate its offer stated, else its advert's.
        match Some(c.energy).filter(|e| e.0 > 0).or_else(|| rate(&c.provider)) {
            Some(e) => joules += agora_market::placement::task_energy_mj(r.fuel, e) / 1000.0,
            None => unknown += 1,
        }
    }
    (joules, unknown)
}

/// One job's status, in the detail asked.
fn job_status(
    id: &JobId,
    rec: &JobRecord,
    tasks: &[TaskRecord],
    detail: JobDetail,
    now: Timestamp,
) -> JobStatus {
    let mut providers: HashMap<NodeId, ProviderCount> = HashMap::new();
    let mut spent = 0u64;
    let task_rows: Vec<TaskStatus> = tasks
        .iter()
        .map(|t| task_status(rec, t, detail, &mut providers, &mut spent))
        .collect();
    let mut providers: Vec<ProviderCount> = providers.into_values().collect();
    providers.sort_by(|a, b| b.verified.cmp(&a.verified).then(a.peer_id.cmp(&b.peer_id)));
    let end = rec.finished_at.unwrap_or(now);
    JobStatus {
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
        class: rec.spec.class,
        energy_budget_j: rec.spec.energy_budget,
        energy_j: 0.0,
        energy_unknown: 0,
        max_failures: rec.spec.max_failures,
        args: rec.spec.args.clone(),
        memory: rec.spec.memory,
        waiting: None,
    }
}

/// One task's row, counting its copies per provider and what was paid.
fn task_status(
    rec: &JobRecord,
    t: &TaskRecord,
    detail: JobDetail,
    providers: &mut HashMap<NodeId, ProviderCount>,
    spent: &mut u64,
) -> TaskStatus {
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
                *spent += p.0;
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
                exit: c.reported.as_ref().map(|r| r.exit.to_string()),
                stderr: c.stderr.clone(),
                resumed: c.reported.as_ref().and_then(|r| r.resumed),
                billed_fuel: c.billed,
            }
        })
        .collect();
    let failing = t
        .copies
        .iter()
        .filter_map(|c| c.reported.as_ref().filter(|r| !r.exit.is_success()).map(|_| c));
    let stderr = failing.clone().find_map(|c| c.stderr.clone());
    let reproduce = (t.phase == agora_market::job::TaskPhase::Failed || failing.clone().next().is_some())
        .then(|| reproduce(rec, t.id.index));
    TaskStatus {
        index: t.id.index,
        name: rec.spec.inputs[t.id.index as usize].name.clone(),
        phase: t.phase,
        providers: accepted,
        output: t.output,
        fuel: t.fuel,
        exit: t.exit.as_ref().map(|e| e.to_string()),
        error: t.error.clone(),
        stderr,
        reproduce,
        spot_checked: t.spot_checked,
        copies,
        checkpoints: t.checkpoints.clone(),
    }
}

/// The `agora exec` line that runs task `index` of a job locally with the
/// limits, seed and arguments its providers had.
fn reproduce(rec: &JobRecord, index: u32) -> String {
    let spec = &rec.spec;
    let name = spec
        .inputs
        .get(index as usize)
        .map_or("INPUT", |i| i.name.as_str());
    let mut line = format!(
        "agora exec MODULE.wasm --input {} --seed {} --fuel {} --memory {}B",
        shell_word(name),
        spec.task_seed(index),
        spec.fuel.0,
        spec.memory.0
    );
    for a in &spec.args {
        line.push_str(&format!(" --arg {}", shell_word(a)));
    }
    line
}

/// `s` as one shell word.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The provider's accepted tasks for the owner's view: running first, then
/// queued, then done, each soonest due first; at most 256.
fn held_tasks(p: &agora_market::provider::Provider, suspended: bool) -> Vec<crate::api::HeldTask> {
    use agora_market::provider::Stage;
    let rank = |s: Stage| match s {
        Stage::Running => 0,
        Stage::Queued => 1,
        Stage::Done => 2,
    };
    let mut held: Vec<_> = p.tasks().collect();
    held.sort_by_key(|t| (rank(t.stage), t.due));
    held.into_iter()
        .take(256)
        .map(|t| crate::api::HeldTask {
            task: t.assignment.task.to_string(),
            attempt: t.assignment.attempt,
            requester: t.requester,
            stage: match t.stage {
                Stage::Queued => "queued",
                Stage::Running => "running",
                Stage::Done => "done",
            }
            .to_owned(),
            suspended: suspended && t.stage == Stage::Running,
            price: t.price,
            fuel: t.assignment.limits.fuel,
            memory: t.assignment.limits.memory,
            due: t.due,
        })
        .collect()
}

//! Placement: which tasks want copies, which providers are candidates
//! (constraints, scores, back-offs), the calls for offers that start a
//! negotiation, backups for stragglers, overdue copies, and the dry-run
//! plan.

use super::*;

/// How many negotiations at a time may ask only a provider without
/// standing while providers with standing are busy.
pub(super) const MAX_PROBES: usize = 2;

impl Requester {
    pub(super) fn expire_negotiations(&mut self, now: Timestamp, view: &View) {
        let timeout = self.config.negotiation_timeout;
        let mut expired: Vec<(TaskId, u16)> = self
            .negotiations
            .iter()
            .filter(|(_, n)| now.since(n.started) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        // Deterministic order, so that a seeded simulation replays exactly.
        expired.sort();
        for (task, attempt) in expired {
            if let Some(n) = self.negotiations.get(&(task, attempt)) {
                // The one without standing is counted below, with those
                // whose negotiation ended earlier.
                let silent: Vec<NodeId> = n
                    .asked
                    .iter()
                    .filter(|p| !n.answered.contains(p) && !n.unknown.contains(p))
                    .copied()
                    .collect();
                for p in silent {
                    self.book.failed(p);
                }
            }
            self.conclude(task, attempt, now, view);
        }
        self.abandon_probes(now, view);
        let mut failed: Vec<NodeId> = self
            .silent
            .iter()
            .filter(|(_, since)| now.since(**since) >= timeout)
            .map(|(p, _)| *p)
            .collect();
        failed.sort();
        for p in failed {
            self.silent.remove(&p);
            self.book.failed(p);
            self.book.unreachable(p);
        }
    }

    /// A task asked of a provider without standing goes to a provider with
    /// standing as soon as one is free for it: the one asked may be a key
    /// with nothing behind it, and waiting out the timeout would let a
    /// flood of such keys hold honest work up. If it answers later it has
    /// standing, and is asked like any other.
    fn abandon_probes(&mut self, now: Timestamp, view: &View) {
        if self.probes == 0 {
            return;
        }
        let mut probes: Vec<(TaskId, u16)> = self
            .negotiations
            .iter()
            .filter(|(_, n)| n.is_probe() && n.answered.is_empty())
            .map(|(k, _)| *k)
            .collect();
        probes.sort();
        for (task, attempt) in probes {
            let Some(job) = self.jobs.get(&task.job) else {
                continue;
            };
            let c = self.candidates(job, task.index, now, view);
            if c.ok.iter().any(|s| !c.unknown.contains(&s.node)) {
                self.conclude(task, attempt, now, view);
            }
        }
    }

    pub(super) fn check_overdue(&mut self, now: Timestamp) {
        // Fallback offers live only as long as the offers themselves.
        self.fallbacks
            .retain(|_, (_, _, rest)| rest.iter().any(|(_, o)| o.expires_at() > now));
        let mut overdue = Vec::new();
        for job in self.jobs.values_mut() {
            if job.record.state.is_terminal() {
                continue;
            }
            for t in &mut job.tasks {
                for c in &mut t.copies {
                    let late = match c.state {
                        CopyState::Agreed => c.due <= now,
                        CopyState::Accepting => now.since(c.placed_at) > self.config.negotiation_timeout * 2,
                        _ => false,
                    };
                    if late {
                        let reason = if c.state == CopyState::Agreed {
                            "missed its deadline"
                        } else {
                            "never agreed"
                        };
                        c.state = CopyState::Failed(reason.into());
                        overdue.push((t.id, c.provider, c.agreement));
                    }
                }
            }
        }
        for (t, p, a) in overdue {
            self.book.released(p);
            self.book.failed(p);
            if let Some(a) = a {
                self.out.push_back(Action::Cancel {
                    to: p,
                    agreement: a,
                    task: t,
                    reason: CancelReason::Overdue,
                });
            }
            self.touch(t);
            self.settle(t.job, t.index, now);
        }
    }

    /// How many more copies a task needs now.
    pub(super) fn wanted(&self, job: &Job, idx: u32) -> usize {
        let t = &job.tasks[idx as usize];
        if matches!(
            t.phase,
            TaskPhase::Verified | TaskPhase::Failed | TaskPhase::Waiting
        ) {
            return 0;
        }
        let live = t.live().count();
        let negotiating = self.negotiating(&t.id);
        let target = self.target_copies(job, t);
        let have = live + negotiating + t.reported().filter(|c| !c.wrong).count();
        target.saturating_sub(have)
    }

    pub(super) fn target_copies(&self, job: &Job, t: &TaskRecord) -> usize {
        let k = usize::from(job.record.spec.replicas.max(1));
        let groups = outcome_groups(t);
        let best = groups.first().map_or(0, |g| g.1.len());
        let total: usize = groups.iter().map(|g| g.1.len()).sum();
        let mut need = k;
        if let Some((o, _)) = groups.first()
            && !o.2.is_success()
            && k == 1
        {
            need = 2;
        }
        if t.needs_replica {
            need = need.max(2);
        }
        if groups.len() > 1 {
            need = need.max(total / 2 + 1);
            // More copies only help if the leader can still reach a majority.
            need = need.max(total + (total / 2 + 1).saturating_sub(best));
        }
        need
    }

    pub(super) fn dispatch(&mut self, now: Timestamp, view: &View) {
        let ids: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.record.state.is_terminal())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let mut placed_any = false;
            let mut busy = false;
            let mut stuck = false;
            // The ready positions in order, read one at a time: placement
            // usually stops at the first busy answer, long before the end.
            let mut from = 0;
            while let Some(job) = self.jobs.get(&id) {
                let Some(&p) = job.ready.range(from..).next() else {
                    break;
                };
                from = p + 1;
                let idx = job.order[p];
                if self.wanted(job, idx) == 0 {
                    if let Some(job) = self.jobs.get_mut(&id) {
                        job.ready.remove(&p);
                    }
                    continue;
                }
                match self.start_negotiation(id, idx, now, view, false) {
                    Placement::Started => placed_any = true,
                    // Capacity is what limits every later task too.
                    Placement::Busy => {
                        busy = true;
                        break;
                    }
                    // Only this task's own exclusions (its replicas hold the
                    // other providers): later tasks may still go ahead.
                    Placement::Skip => stuck = true,
                    Placement::NoFit => {
                        stuck = true;
                        break;
                    }
                }
            }
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            if placed_any && job.record.state == JobState::Pending {
                job.record.state = JobState::Running;
                self.dirty_jobs.insert(id);
            }
            // No copy anywhere while some task wants one and nobody is
            // merely busy: the clock runs, even while providers are asked
            // and decline (a call answered for a lasting reason is no
            // progress), and the job fails once no provider took a task for
            // `unplaceable_after`, with why.
            let negotiating = self.negotiating_jobs.contains_key(&id);
            let wait = job.record.spec.ttl.unwrap_or(self.config.unplaceable_after);
            if busy || !(stuck || placed_any) || job.tasks.iter().any(|t| t.live().next().is_some()) {
                job.no_fit_since = None;
            } else {
                let since = *job.no_fit_since.get_or_insert(now);
                if now.since(since) >= wait && !negotiating {
                    let why = self.no_fit_reason(id, view, now);
                    self.fail_job(id, why, now);
                }
            }
        }
    }

    pub(super) fn no_fit_reason(&self, id: JobId, view: &View, now: Timestamp) -> String {
        let Some(job) = self.jobs.get(&id) else {
            return "no provider fits".into();
        };
        let wait = job.record.spec.ttl.unwrap_or(self.config.unplaceable_after);
        match self.no_fit_why(job, view, now) {
            Some((idx, name, why)) => format!(
                "no provider could take task {idx} ({name}) for {}: {why}",
                agora_protocol::units::format_duration(wait),
            ),
            None => "no provider fits".into(),
        }
    }

    /// The first unsettled task of `job` and why no provider known can
    /// take it now.
    fn no_fit_why(&self, job: &Job, view: &View, now: Timestamp) -> Option<(u32, String, String)> {
        let idx = job.order.iter().copied().find(|i| {
            !matches!(
                job.tasks[*i as usize].phase,
                TaskPhase::Verified | TaskPhase::Failed
            )
        })?;
        let name = job
            .record
            .spec
            .inputs
            .get(idx as usize)
            .map_or(String::new(), |i| i.name.clone());
        let need = need(job, idx, self.book.pace(&job.record.spec.module, now));
        let candidates = placement::gather(view, &need, self.config.domains_to_try);
        if candidates.is_empty() {
            return Some((
                idx,
                name,
                "no providers are known (is the node connected to the network?)".into(),
            ));
        }
        let excluded: Vec<placement::Exclusion> = candidates
            .iter()
            .filter_map(|c| placement::evaluate(c, self.book.get(&c.node), &need, now).err())
            .collect();
        Some((idx, name, placement::why_none(&excluded, &need)))
    }

    /// For a job no provider takes a task of now: what it waits for, how
    /// long it has, and why no provider known fits.
    pub fn waiting(&self, id: &JobId, view: &View, now: Timestamp) -> Option<String> {
        let job = self.jobs.get(id)?;
        let since = job.no_fit_since?;
        if job.record.state.is_terminal() {
            return None;
        }
        let wait = job.record.spec.ttl.unwrap_or(self.config.unplaceable_after);
        let (_, _, why) = self.no_fit_why(job, view, now)?;
        Some(format!(
            "waiting {} for a provider (it fails after {}): {why}",
            agora_protocol::units::format_duration(now.since(since)),
            agora_protocol::units::format_duration(wait),
        ))
    }

    /// Candidates for a task: those that pass every constraint (best
    /// first), those excluded with why, the ones excluded only because they
    /// are busy, and what that means for placement.
    pub(super) fn candidates(&self, job: &Job, idx: u32, now: Timestamp, view: &View) -> Candidates {
        let need = need(job, idx, self.book.pace(&job.record.spec.module, now));
        let (infos, unasked) = placement::gather_explained(view, &need, self.config.domains_to_try);
        let mut ok = Vec::new();
        let mut excluded = Vec::new();
        let mut busy = Vec::new();
        let mut used = false;
        let probation = placement::probation_cap(job.tasks.len());
        for info in &infos {
            let stats = self.book.get(&info.node);
            match placement::evaluate(info, stats, &need, now) {
                // No verified work yet: a capped share until it has some.
                Ok(_) if stats.is_some_and(|s| s.verified == 0 && s.lanes.len() >= probation) => {
                    busy.push(info.node);
                    excluded.push((info.node, Exclusion::Probation { cap: probation }.to_string()));
                }
                Ok(s) => ok.push(s),
                Err(e) => {
                    if e == Exclusion::Busy {
                        busy.push(info.node);
                    }
                    used |= e == Exclusion::AlreadyUsed;
                    excluded.push((info.node, e.to_string()));
                }
            }
        }
        // Providers that answer come first, then those with standing (free
        // keys are tried last: a flood of them cannot delay honest work),
        // then by score; equal scores (tiny tasks whose queues all look
        // empty) go to the provider with the least of this requester's work
        // in flight.
        let in_flight = |n: &NodeId| self.book.get(n).map_or(0, |s| s.lanes.len());
        let unreachable = |n: &NodeId| self.book.get(n).is_some_and(|s| s.unreachable);
        let standing: HashMap<NodeId, crate::view::Standing> =
            infos.iter().map(|i| (i.node, i.standing)).collect();
        let rank = |n: &NodeId| (unreachable(n), std::cmp::Reverse(standing.get(n).copied()));
        ok.sort_by(|a, b| {
            rank(&a.node)
                .cmp(&rank(&b.node))
                .then(a.score.total_cmp(&b.score))
                .then_with(|| in_flight(&a.node).cmp(&in_flight(&b.node)))
                .then(a.node.cmp(&b.node))
        });
        busy.sort();
        let unknown: HashSet<NodeId> = ok
            .iter()
            .filter(|s| standing.get(&s.node) == Some(&crate::view::Standing::Unknown))
            .map(|s| s.node)
            .collect();
        let busy_known = busy.iter().any(|n| {
            standing
                .get(n)
                .is_some_and(|s| *s != crate::view::Standing::Unknown)
        });
        let class = if !ok.is_empty() {
            Placement::Started
        } else if !busy.is_empty() {
            Placement::Busy
        } else if used {
            Placement::Skip
        } else {
            Placement::NoFit
        };
        Candidates {
            ok,
            excluded,
            busy,
            class,
            unknown,
            busy_known,
            unasked,
        }
    }

    pub(super) fn start_negotiation(
        &mut self,
        id: JobId,
        idx: u32,
        now: Timestamp,
        view: &View,
        backup: bool,
    ) -> Placement {
        let Some(job) = self.jobs.get(&id) else {
            return Placement::NoFit;
        };
        let Candidates {
            mut ok,
            excluded,
            busy,
            class,
            unknown,
            busy_known,
            unasked,
        } = self.candidates(job, idx, now, view);
        let task = job.tasks[idx as usize].id;
        let strategy = job.record.spec.strategy;
        if strategy != Strategy::Scored && !(ok.is_empty() && busy.is_empty()) {
            // The baselines pin each task to one provider, chosen at random
            // or in turn among those that fit, and wait for it even when
            // another is idle: placement that does not adapt.
            let pinned = job.tasks[idx as usize].pinned;
            let pool: Vec<NodeId> = {
                let mut p: Vec<NodeId> = ok.iter().map(|s| s.node).chain(busy.iter().copied()).collect();
                p.sort();
                p
            };
            let pin = match pinned.filter(|p| pool.contains(p)) {
                Some(p) => p,
                None => {
                    let i = match strategy {
                        Strategy::Random => self.rng.random_range(0..pool.len()),
                        _ => {
                            let job = self.jobs.get_mut(&id).expect("job exists");
                            job.rr_cursor += 1;
                            (job.rr_cursor - 1) % pool.len()
                        }
                    };
                    let job = self.jobs.get_mut(&id).expect("job exists");
                    job.tasks[idx as usize].pinned = Some(pool[i]);
                    pool[i]
                }
            };
            ok.retain(|s| s.node == pin);
            if ok.is_empty() {
                return Placement::Skip;
            }
        }
        let Some(job) = self.jobs.get(&id) else {
            return Placement::NoFit;
        };
        if ok.is_empty() {
            let d = Decision {
                at: now,
                attempt: job.tasks[idx as usize].next_attempt(),
                candidates: vec![],
                excluded,
                offers: vec![],
                declined: vec![],
                chosen: None,
                unasked,
            };
            if class != Placement::Busy {
                self.record_decision(task, d);
            }
            return class;
        }
        // Providers without standing rank after those with standing; next
        // to any with standing, or while those are busy, only one is asked
        // per negotiation, and the negotiation does not wait for it.
        let known_free = ok.iter().any(|s| !unknown.contains(&s.node));
        let mut unknowns_left = if known_free || busy_known { 1 } else { usize::MAX };
        let fits = ok.iter().filter(|s| {
            if !unknown.contains(&s.node) {
                return true;
            }
            let ask = unknowns_left > 0;
            unknowns_left = unknowns_left.saturating_sub(1);
            ask
        });
        let chosen: Vec<Scored> = match strategy {
            // Tiny tasks are pipelined: negotiating with several providers
            // would cost more than the task, and the lanes already spread
            // them; the best-scored provider alone is asked.
            Strategy::Scored if ok[0].run_ms < placement::TINY_TASK.as_secs_f64() * 1000.0 => {
                fits.take(1).cloned().collect()
            }
            Strategy::Scored => fits.take(self.config.fanout.max(1)).cloned().collect(),
            Strategy::Random | Strategy::RoundRobin => fits.take(1).cloned().collect(),
        };
        let unknown: Vec<NodeId> = chosen
            .iter()
            .map(|s| s.node)
            .filter(|n| unknown.contains(n))
            .collect();
        // While providers with standing are only busy, keys without any
        // are tried a few at a time: a flood of them cannot take every
        // task, and an honest newcomer still gets asked (and answering
        // gives it standing).
        if !known_free && busy_known && self.probes >= MAX_PROBES {
            return Placement::Busy;
        }
        let Some(job) = self.jobs.get_mut(&id) else {
            return Placement::NoFit;
        };
        let spec = &job.record.spec;
        let t = &mut job.tasks[idx as usize];
        // Attempt numbers are never reused: above every copy and every
        // negotiation of this task.
        let attempt = self
            .negotiations
            .keys()
            .filter(|(tid, _)| *tid == task)
            .map(|(_, a)| a + 1)
            .chain([t.next_attempt()])
            .max()
            .unwrap_or(0);
        let input = &spec.inputs[idx as usize];
        let cfo = CallForOffers {
            task,
            attempt,
            requirements: Requirements {
                fuel: estimate_left(t, spec.estimate_of(idx as usize)),
                memory: spec.memory,
                deadline: Millis::from(spec.deadline),
                max_price: spec.max_price,
                replication: spec.replicas,
                domain: spec.domain.clone(),
                max_energy: energy_rate_cap(spec, idx as usize),
                module: spec.module,
                module_size: spec.module_size,
                input: input.id,
                input_size: input.size,
                fuel_limit: spec.fuel,
                max_output: spec.limits().max_output,
                class: spec.class,
            },
        };
        if t.phase == TaskPhase::Pending {
            t.phase = TaskPhase::Placed;
        }
        let best = chosen[0].clone();
        // A tiny task for a provider with standing whose advert states a
        // price within the job's: ordered at once, without offers.
        let max_price = spec.max_price;
        let advertised = infos_price(view, &best.node).filter(|(price, _)| *price <= max_price);
        if let Some((price, energy)) = advertised
            && self.config.orders
            && strategy == Strategy::Scored
            && chosen.len() == 1
            && unknown.is_empty()
            // It has done work for this node: it knows this node's credit
            // (an order is not held while a chain is read, as a call is).
            && self.book.get(&best.node).is_some_and(|s| s.verified > 0)
            && best.run_ms < placement::TINY_TASK.as_secs_f64() * 1000.0
            && cfo.requirements.max_energy.is_none()
        {
            let decision = self.record_decision(
                task,
                Decision {
                    at: now,
                    attempt,
                    candidates: ok_with_chosen_first(chosen, ok),
                    excluded,
                    offers: vec![],
                    declined: vec![],
                    chosen: None,
                    unasked,
                },
            );
            self.order(&best, (price, energy), cfo, backup, decision, now);
            return Placement::Started;
        }
        let finish = Timestamp(now.0 + (best.ect_ms as u64));
        self.book.placed(best.node, finish);
        let to: Vec<NodeId> = chosen.iter().map(|s| s.node).collect();
        let decision = self.record_decision(
            task,
            Decision {
                at: now,
                attempt,
                candidates: ok_with_chosen_first(chosen.clone(), ok),
                excluded,
                offers: vec![],
                declined: vec![],
                chosen: None,
                unasked,
            },
        );
        self.negotiation_started(
            (task, attempt),
            Negotiation {
                asked: to.clone(),
                answered: HashSet::new(),
                offers: Vec::new(),
                started: now,
                reserved: best.node,
                decision,
                backup,
                unknown,
            },
        );
        self.touch(task);
        self.out.push_back(Action::Call {
            task,
            attempt,
            cfo,
            to,
        });
        Placement::Started
    }

    /// Near the end of a job, a copy running well past its estimate gets a
    /// backup on an idle provider.
    pub(super) fn backups(&mut self, now: Timestamp, view: &View) {
        let mut wanted = Vec::new();
        for (id, job) in &self.jobs {
            if job.record.state != JobState::Running {
                continue;
            }
            let pending = job
                .tasks
                .iter()
                .any(|t| matches!(t.phase, TaskPhase::Pending | TaskPhase::Waiting));
            if pending {
                continue;
            }
            let pace = self.book.pace(&job.record.spec.module, now);
            for t in &job.tasks {
                if t.phase != TaskPhase::Running
                    || t.copies
                        .iter()
                        .any(|c| c.backup && matches!(c.state, CopyState::Accepting | CopyState::Agreed))
                {
                    continue;
                }
                if self.negotiating(&t.id) > 0 {
                    continue;
                }
                let Some(c) = t.live().find(|c| c.state == CopyState::Agreed) else {
                    continue;
                };
                let estimate = job.record.spec.estimate_of(t.id.index as usize);
                let advertised = view.peer(&c.provider).map_or(1000.0, |p| {
                    p.advert.cu.0 as f64 / f64::from(p.advert.slots.max(1))
                });
                let speed = placement::speed_of(advertised, self.book.get(&c.provider), pace, now);
                let predicted_ms =
                    c.expected_start_ms as f64 + estimate.0 as f64 / (speed.max(1.0) * 1e6) * 1000.0;
                let running_ms = now.0.saturating_sub(c.placed_at.0) as f64;
                if running_ms > predicted_ms * 2.0 + 500.0 {
                    wanted.push((*id, t.id.index));
                }
            }
        }
        for (id, idx) in wanted {
            // Only if some provider is idle (has a free lane now).
            let _ = self.start_negotiation(id, idx, now, view, true);
        }
    }

    /// The placement each task would get now, without sending anything
    /// (`--dry-run`).
    pub fn plan(&mut self, spec: &JobSpec, now: Timestamp, view: &View) -> Vec<Decision> {
        let id = JobId([0xff; 16]);
        let tasks: Vec<TaskRecord> = (0..spec.inputs.len() as u32)
            .map(|i| TaskRecord::new(TaskId::new(id, i)))
            .collect();
        let record = JobRecord {
            id,
            spec: spec.clone(),
            state: JobState::Pending,
            submitted_at: now,
            finished_at: None,
            error: None,
            reduced: None,
        };
        let mut job = Job {
            record,
            tasks,
            order: Vec::new(),
            args: Vec::new(),
            args_digest: ContentId([0; 32]),
            rr_cursor: 0,
            no_fit_since: None,
            ready: BTreeSet::new(),
            pos: Vec::new(),
            settled_upto: 0,
        };
        let mut order: Vec<u32> = (0..spec.inputs.len() as u32).collect();
        order.sort_by_key(|i| std::cmp::Reverse(spec.estimate_of(*i as usize)));
        job.order = order.clone();
        let mut out = vec![None; spec.inputs.len()];
        let mut reserved = Vec::new();
        for idx in order {
            let Candidates {
                ok,
                excluded,
                unasked,
                ..
            } = self.candidates(&job, idx, now, view);
            let chosen = ok.first().map(|s| s.node);
            if let Some(best) = ok.first() {
                let finish = Timestamp(now.0 + best.ect_ms as u64);
                self.book.placed(best.node, finish);
                reserved.push(best.node);
            }
            job.tasks[idx as usize].copies.clear();
            out[idx as usize] = Some(Decision {
                at: now,
                attempt: 0,
                candidates: ok,
                excluded,
                offers: vec![],
                declined: vec![],
                chosen,
                unasked,
            });
        }
        for p in reserved {
            self.book.released(p);
        }
        out.into_iter().map(|d| d.expect("every task planned")).collect()
    }
}

/// What task `idx` of `spec` asks of a provider, with no copy placed yet
/// (its copies add exclusions: see [`need`]).
fn spec_need(spec: &JobSpec, idx: usize) -> Need {
    let input = &spec.inputs[idx];
    Need {
        estimate: spec.estimate_of(idx),
        fuel_limit: spec.fuel,
        max_output: spec.limits().max_output,
        memory: spec.memory,
        deadline: spec.deadline,
        max_price: spec.max_price,
        max_energy: spec.max_energy,
        domain: spec.domain.clone(),
        module: (spec.module, spec.module_size),
        input: (input.id, input.size),
        exclude: Vec::new(),
        select: spec.select.clone(),
        class: spec.class,
        energy_cap_mj: energy_cap_mj(spec),
        pace: None,
    }
}

/// A task's share of the job's energy budget, mJ.
pub(super) fn energy_cap_mj(spec: &JobSpec) -> Option<f64> {
    spec.energy_budget
        .map(|j| j * 1000.0 / spec.inputs.len().max(1) as f64)
}

/// The highest energy rate task `idx` may run at: the job's `max_energy`,
/// and under an energy budget the rate at which the task's estimate
/// would use its share. Sent in the call for offers, so that a provider
/// the requester holds no advert of (a summary's contact) declines rather
/// than break the budget.
fn energy_rate_cap(spec: &JobSpec, idx: usize) -> Option<agora_protocol::units::EnergyRate> {
    let cu_s = spec.estimate_of(idx).0 as f64 / agora_protocol::units::FUEL_PER_CU_SECOND as f64;
    let from_budget = energy_cap_mj(spec)
        .filter(|_| cu_s > 0.0)
        .map(|cap| agora_protocol::units::EnergyRate((cap / cu_s).floor().max(1.0) as u64));
    match (spec.max_energy, from_budget) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Requester {
    /// Whether `spec` can be placed on the providers known now, judged
    /// before anything runs: `Err` says why not. Providers merely busy
    /// count as able (they free up); with none known at all nothing is
    /// refused (the job waits for providers, see `unplaceable_after`).
    /// A job given its own `ttl` is never refused here: it was asked to
    /// wait for providers that may yet come.
    pub fn check_placeable(&self, spec: &JobSpec, now: Timestamp, view: &View) -> Result<(), String> {
        if spec.ttl.is_some() {
            return Ok(());
        }
        // The largest input decides (the others are smaller).
        let Some(idx) = (0..spec.inputs.len()).max_by_key(|i| spec.inputs[*i].size) else {
            return Ok(());
        };
        let need = Need {
            pace: self.book.pace(&spec.module, now),
            ..spec_need(spec, idx)
        };
        let candidates = placement::gather(view, &need, self.config.domains_to_try);
        if candidates.is_empty() {
            return Ok(());
        }
        let mut able = 0usize;
        let mut excluded = Vec::new();
        for c in &candidates {
            match placement::evaluate(c, self.book.get(&c.node), &need, now) {
                // Passing states: busy, paused by its owner, short of this
                // node's credit for now, or slow for the deadline with its
                // current queue. The job waits for them (and fails after
                // `unplaceable_after` if they do not pass).
                Ok(_)
                | Err(
                    Exclusion::Busy
                    | Exclusion::Probation { .. }
                    | Exclusion::Deadline { .. }
                    | Exclusion::NotAccepting
                    | Exclusion::Credit { .. }
                    | Exclusion::Unpaid { .. },
                ) => able += 1,
                Err(e) => excluded.push(e),
            }
        }
        if able == 0 {
            return Err(format!(
                "no provider known can take its tasks: {}",
                placement::why_none(&excluded, &need)
            ));
        }
        let replicas = usize::from(spec.replicas.max(1));
        if replicas > able {
            return Err(format!(
                "--replicas {replicas} needs {replicas} distinct providers for each task; {able} of the {} known can take it{}",
                candidates.len(),
                if excluded.is_empty() {
                    String::new()
                } else {
                    format!(" (the others: {})", placement::why_none(&excluded, &need))
                }
            ));
        }
        Ok(())
    }
}

/// The fuel a copy of `task` (estimated at `estimate`) placed now still
/// has to burn: the estimate less the fuel of the latest checkpoint, the
/// one the copy resumes from. So a provider too slow for the whole task
/// within the deadline, but not for what is left of it, can take the rest.
/// Never under a tenth of the estimate: a task already past its estimate
/// has a rest nobody knows, taken as small but not as nothing.
fn estimate_left(task: &TaskRecord, estimate: Fuel) -> Fuel {
    match task.checkpoints.last() {
        None => estimate,
        Some(c) => Fuel(estimate.0.saturating_sub(c.fuel.0).max(estimate.0 / 10)),
    }
}

pub(super) fn need(job: &Job, idx: u32, pace: Option<f64>) -> Need {
    let task = &job.tasks[idx as usize];
    let spec = spec_need(&job.record.spec, idx as usize);
    Need {
        estimate: estimate_left(task, spec.estimate),
        // Replicas must run on distinct providers: leave out those holding a
        // live or reported copy, and those found wrong. A provider that
        // merely declined or failed may be asked again.
        exclude: task
            .copies
            .iter()
            .filter(|c| {
                c.wrong
                    || matches!(
                        c.state,
                        CopyState::Accepting | CopyState::Agreed | CopyState::Reported
                    )
            })
            .map(|c| c.provider)
            .collect(),
        pace,
        ..spec
    }
}

/// The candidates of one placement round.
pub(super) struct Candidates {
    pub(super) ok: Vec<Scored>,
    pub(super) excluded: Vec<(NodeId, String)>,
    pub(super) busy: Vec<NodeId>,
    pub(super) class: Placement,
    /// Those in `ok` without standing.
    pub(super) unknown: HashSet<NodeId>,
    /// Whether a provider with standing is among the busy ones.
    pub(super) busy_known: bool,
    /// Other domains not asked (see [`placement::gather_explained`]).
    pub(super) unasked: Vec<agora_protocol::Domain>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    Started,
    Busy,
    Skip,
    NoFit,
}

/// The price and energy rate a provider's own advert states (none for a
/// contact known only from a domain summary).
fn infos_price(view: &View, node: &NodeId) -> Option<(Price, agora_protocol::units::EnergyRate)> {
    view.peer(node).map(|p| (p.advert.price, p.advert.energy))
}

pub(super) fn ok_with_chosen_first(chosen: Vec<Scored>, rest: Vec<Scored>) -> Vec<Scored> {
    let mut out = chosen;
    for s in rest {
        if !out.iter().any(|c| c.node == s.node) {
            out.push(s);
        }
    }
    out
}

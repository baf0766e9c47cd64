//! Verification and settlement: receipts are checked against the
//! assignment, outputs fetched, copies spot-checked; [`Requester::settle`]
//! decides a task from its copies (majority of agreeing outcomes), then
//! the agreeing copies are paid, the disagreeing reported as fraud and the
//! rest withdrawn.

use super::*;

impl Requester {
    /// A receipt from a provider. `output_held` says whether the output
    /// bytes are here and hash to the receipt's output id (inline outputs
    /// are checked by the driver before this call). On `Ok`, persist (see
    /// [`Requester::take_dirty`]) and acknowledge.
    pub fn on_receipt(
        &mut self,
        from: NodeId,
        receipt: &Verified<Receipt>,
        output_held: bool,
        now: Timestamp,
    ) -> Result<ReceiptVerdict, ReceiptError> {
        let r = receipt.payload();
        if r.requester != self.local {
            return Err(ReceiptError::Mismatch("requester"));
        }
        let job = self.jobs.get_mut(&r.task.job).ok_or(ReceiptError::UnknownTask)?;
        let spec = &job.record.spec;
        let input = spec
            .inputs
            .get(r.task.index as usize)
            .ok_or(ReceiptError::UnknownTask)?;
        let t = &mut job.tasks[r.task.index as usize];
        // Match by agreement; failing that (a restart lost it), by provider.
        let pos = t
            .copies
            .iter()
            .position(|c| c.provider == from && c.agreement == Some(r.agreement))
            .or_else(|| {
                t.copies.iter().position(|c| {
                    c.provider == from && c.reported.is_none() && !matches!(c.state, CopyState::Cancelled)
                })
            });
        let Some(pos) = pos else {
            // A copy withdrawn while its accept was in flight (another copy
            // settled the task first) has no agreement id to cancel by, so
            // the provider ran it anyway. Nothing is owed and nothing is
            // wrong: the provider may forget it.
            let withdrawn = t
                .copies
                .iter()
                .any(|c| c.provider == from && c.withdrawn_unagreed());
            return if withdrawn {
                Ok(ReceiptVerdict::Superseded)
            } else {
                Err(ReceiptError::NoAgreement)
            };
        };
        let may_resume = super::progress::started_from(t, &t.copies[pos], r.resumed);
        let c = &mut t.copies[pos];
        if c.reported.is_some() {
            return Ok(ReceiptVerdict::Duplicate);
        }
        if c.state == CopyState::Cancelled || matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed) {
            // Withdrawn after its agreement (another copy settled the task
            // first, or the job ended: the cancel crossed the receipt), or
            // late for a task already decided: nothing is owed for it.
            return Ok(ReceiptVerdict::Superseded);
        }
        let mismatch = if r.module != spec.module {
            Some("module")
        } else if r.input != input.id {
            Some("input")
        } else if r.args != job.args_digest {
            Some("arguments")
        } else if r.seed != spec.task_seed(r.task.index) {
            Some("seed")
        } else if r.fuel_limit != spec.fuel {
            Some("fuel limit")
        } else if r.fuel_used > r.fuel_limit {
            Some("fuel used above the limit")
        } else if !may_resume {
            Some("checkpoint resumed from")
        } else if r.fuel_used < c.resume.map_or(Fuel(0), |(_, f)| f) {
            Some("fuel used below the checkpoint's")
        } else {
            None
        };
        if let Some(m) = mismatch {
            c.state = CopyState::Failed(format!("bad receipt: {m}"));
            self.book.released(from);
            self.book.failed(from);
            let task = r.task;
            self.touch(task);
            self.settle(task.job, task.index, now);
            return Err(ReceiptError::Mismatch(m));
        }
        let was_live = matches!(c.state, CopyState::Accepting | CopyState::Agreed);
        let exec_ms = r.finished_at.0.saturating_sub(r.started_at.0);
        c.reported = Some(Reported {
            receipt: receipt.id(),
            output: r.output,
            output_size: r.output_size,
            fuel: r.fuel_used,
            exit: r.exit.clone(),
            exec_ms,
            output_held: output_held || r.output_size.0 == 0,
            resumed: r.resumed,
        });
        c.receipt_env = Some(agora_protocol::Encode::to_bytes(receipt.envelope()));
        if c.agreement.is_none() {
            c.agreement = Some(r.agreement);
        }
        let attempt = c.attempt;
        let task = r.task;
        if r.exit == ExitStatus::Deadline {
            c.state = CopyState::Failed("hit its wall-clock limit".into());
        } else {
            c.state = CopyState::Reported;
        }
        let held = c.reported.as_ref().is_some_and(|x| x.output_held);
        if was_live {
            self.book.released(from);
        }
        if !held && c.state == CopyState::Reported {
            self.out.push_back(Action::Fetch {
                task,
                attempt,
                from,
                output: r.output,
            });
        }
        // Spot checks: stratified per (job, provider).
        let rate = spec.spot_check;
        if rate > 0.0 && c.state == CopyState::Reported && !t.spot_checked {
            let block = (1.0 / rate.clamp(1e-6, 1.0)).ceil() as u64;
            let entry = self.spot.entry((task.job, from)).or_insert((0, 0));
            if entry.0.is_multiple_of(block) {
                entry.1 = self.rng.random_range(0..block);
            }
            let pick = entry.0 % block == entry.1;
            entry.0 += 1;
            if pick && spec.memory <= self.config.local_memory {
                c.spot_pending = true;
                self.out.push_back(Action::SpotCheck { task, attempt });
            } else if pick {
                // This node cannot reproduce the task's limits: a check here
                // would judge an honest provider by a run that ran out of
                // memory. A second provider decides instead.
                t.needs_replica = true;
            }
        }
        self.touch(task);
        self.settle(task.job, task.index, now);
        Ok(ReceiptVerdict::Accepted)
    }

    /// A fetched output arrived (`ok`: present and matching its id) or not.
    pub fn on_output(&mut self, task: TaskId, attempt: u16, ok: bool, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let Some(t) = job.tasks.get_mut(task.index as usize) else {
            return;
        };
        let Some(c) = t.copy_mut(attempt) else { return };
        if let Some(r) = &mut c.reported {
            if ok {
                r.output_held = true;
            } else {
                c.state = CopyState::Failed("its output could not be fetched or did not match".into());
                let p = c.provider;
                self.book.failed(p);
            }
        }
        self.touch(task);
        self.settle(task.job, task.index, now);
    }

    /// The local re-execution of a spot-checked copy finished with
    /// `outcome`; `own_receipt` is this node's own signed receipt of it.
    pub fn on_spot_check(
        &mut self,
        task: TaskId,
        attempt: u16,
        outcome: Observed,
        own_receipt: Vec<u8>,
        now: Timestamp,
    ) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let Some(t) = job.tasks.get_mut(task.index as usize) else {
            return;
        };
        t.spot_checked = true;
        let Some(c) = t.copy_mut(attempt) else { return };
        c.spot_pending = false;
        let Some(rep) = c.reported.clone() else { return };
        let provider = c.provider;
        let agrees = rep.output == outcome.0 && rep.fuel == outcome.1 && rep.exit == outcome.2;
        if !agrees {
            c.wrong = true;
            // A run resumed from a checkpoint is checked from it here, and
            // others could not re-run it without the checkpoint: no proof
            // is published for it (SPEC.md §8.8).
            let accused = c.evidence().filter(|_| rep.resumed.is_none());
            // Our own execution is the truth for us: accept it.
            t.output = Some(outcome.0);
            t.fuel = Some(outcome.1);
            t.exit = Some(outcome.2.clone());
            t.resumed = rep.resumed;
            t.phase = if outcome.2.is_success() {
                TaskPhase::Verified
            } else {
                TaskPhase::Failed
            };
            if !outcome.2.is_success() {
                t.error = Some(format!("task failed: {}", outcome.2));
            }
            self.book
                .ban(provider, format!("spot check of task {task} disagreed"));
            if let Some(accused) = accused {
                let witness = Evidence {
                    receipt: own_receipt,
                    agreement: None,
                    accept: None,
                };
                self.out.push_back(Action::Fraud {
                    culprit: provider,
                    accused,
                    witness,
                });
            }
            self.touch(task);
            self.settle_accepted(task, now);
            return;
        }
        self.touch(task);
        self.settle(task.job, task.index, now);
    }

    /// The local re-execution of a spot-checked copy could not run (its
    /// module or input is missing, the executor failed): the copy is not
    /// judged by it, and a second provider decides instead.
    pub fn on_spot_check_failed(&mut self, task: TaskId, attempt: u16, now: Timestamp) {
        let Some(t) = self
            .jobs
            .get_mut(&task.job)
            .and_then(|j| j.tasks.get_mut(task.index as usize))
        else {
            return;
        };
        t.needs_replica = true;
        if let Some(c) = t.copy_mut(attempt) {
            c.spot_pending = false;
        }
        self.touch(task);
        self.settle(task.job, task.index, now);
    }

    /// Decides a task from its copies: accept an outcome, place more
    /// copies, or fail it.
    pub(super) fn settle(&mut self, job_id: JobId, idx: u32, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.record.state.is_terminal() {
            return;
        }
        let k = usize::from(job.record.spec.replicas.max(1));
        // Reports beyond the replication factor settle disagreements; failed
        // placements (declines, unreachable or overdue providers) are retried
        // more often before the task is given up.
        let max_reports = k + 1 + self.config.max_extra_copies;
        let max_attempts = self.config.max_attempts.max(max_reports);
        let t = &mut job.tasks[idx as usize];
        if matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed) {
            return;
        }
        if t.copies.iter().any(|c| {
            c.spot_pending
                || (c.state == CopyState::Reported && c.reported.as_ref().is_some_and(|r| !r.output_held))
        }) {
            t.phase = TaskPhase::Verifying;
            return;
        }
        let groups = outcome_groups(t);
        if let Some((leader, members)) = groups.first() {
            let total: usize = groups.iter().map(|g| g.1.len()).sum();
            let runner_up = groups.get(1).map_or(0, |g| g.1.len());
            // A deterministic failure settles like a success: it would
            // fail the same way on every provider.
            let mut need = k;
            if t.needs_replica {
                need = need.max(2);
            }
            let decided = members.len() >= need
                && members.len() > runner_up
                && (groups.len() == 1 || members.len() * 2 > total);
            if decided {
                t.output = Some(leader.0);
                t.fuel = Some(leader.1);
                t.exit = Some(leader.2.clone());
                t.resumed = members
                    .first()
                    .and_then(|a| t.copies.iter().find(|c| c.attempt == *a))
                    .and_then(|c| c.reported.as_ref())
                    .and_then(|r| r.resumed);
                if leader.2.is_success() {
                    t.phase = TaskPhase::Verified;
                } else {
                    t.phase = TaskPhase::Failed;
                    let limits = job.record.spec.limits();
                    let hint = match &leader.2 {
                        ExitStatus::OutOfFuel => format!(
                            " (it used all {} fuel of its limit: raise --fuel, or measure it with `agora exec --json`)",
                            leader.1.0
                        ),
                        ExitStatus::MemoryLimit => {
                            format!(
                                " (it needed more than its {} of memory: raise --memory)",
                                limits.memory
                            )
                        }
                        ExitStatus::OutputTooLarge => format!(
                            " (it wrote more than its {} of output: raise --max-output)",
                            limits.max_output
                        ),
                        _ => String::new(),
                    };
                    let on = match members.len() {
                        1 => String::new(),
                        n => format!(" on {n} providers"),
                    };
                    t.error = Some(format!("{}{on}{hint}", leader.2));
                }
                let task = t.id;
                self.touch(task);
                self.settle_accepted(task, now);
                return;
            }
        }
        let live = t.live().count();
        let tried = t.copies.iter().filter(|c| !c.declined_order()).count();
        let reports = t.reported().count();
        if live == 0
            && (tried >= max_attempts || reports >= max_reports)
            && !self.negotiating.contains_key(&t.id)
        {
            let reported = t.reported().count();
            t.phase = TaskPhase::Failed;
            t.error = Some(if reported > 1 {
                format!("no majority among {reported} receipts")
            } else {
                let last = t.copies.iter().rev().find_map(|c| match &c.state {
                    CopyState::Failed(r) => Some(r.clone()),
                    _ => None,
                });
                format!(
                    "gave up after {tried} attempts (last: {})",
                    last.unwrap_or_default()
                )
            });
            let task = t.id;
            self.touch(task);
            self.settle_accepted(task, now);
            return;
        }
        if live == 0 && t.reported().next().is_none() {
            t.phase = TaskPhase::Pending;
        } else if t.reported().next().is_some() {
            t.phase = TaskPhase::Verifying;
        }
    }

    /// When a job ends before its tasks are settled (cancelled, or failed):
    /// each copy that reported a deterministic result, was not found wrong
    /// and is not paid yet is paid at its agreed price. Its provider did the
    /// work asked of it; left unpaid, the receipt would count against this
    /// requester at that provider for good.
    pub(super) fn pay_unsettled(&mut self, id: JobId) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let mut pays = Vec::new();
        for t in &mut job.tasks {
            for c in &mut t.copies {
                if let (CopyState::Reported, Some(r)) = (&c.state, &c.reported)
                    && !c.wrong
                    && c.paid.is_none()
                    && r.exit.is_deterministic()
                    && let Some(agreement) = c.agreement
                {
                    let (receipt, fuel) = (r.receipt, r.fuel);
                    pays.push(c.pay(receipt, agreement, t.id, fuel));
                }
            }
        }
        for v in pays {
            self.dirty_tasks.insert(v.task);
            self.out.push_back(Action::Pay {
                to: v.provider,
                voucher: v,
            });
        }
    }

    /// After a task's outcome is decided: pay the copies that agree with it,
    /// report the ones that do not, withdraw the ones still running, and end
    /// the job when every task is settled.
    pub(super) fn settle_accepted(&mut self, task: TaskId, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let module = job.record.spec.module;
        let input = job.record.spec.inputs[task.index as usize].id;
        let t = &mut job.tasks[task.index as usize];
        let accepted = (t.output, t.fuel, t.exit.clone());
        let from = t.resumed;
        // Runs from different checkpoints agree on output and exit; their
        // fuel differs by the work each redid after its start.
        let same = |r: &Reported| {
            Some(r.output) == accepted.0
                && Some(&r.exit) == accepted.2.as_ref()
                && (Some(r.fuel) == accepted.1 || r.resumed != from)
        };
        let witness = t
            .copies
            .iter()
            .find(|c| {
                !c.wrong
                    && c.reported
                        .as_ref()
                        .is_some_and(|r| same(r) && r.resumed.is_none())
            })
            .and_then(Copy::evidence);
        let mut pays = Vec::new();
        let mut frauds = Vec::new();
        let mut cancels = Vec::new();
        let mut learnt = Vec::new();
        for c in &mut t.copies {
            match (&c.state, &c.reported) {
                (CopyState::Reported, Some(r)) => {
                    if same(r) && !c.wrong {
                        if c.paid.is_none() {
                            let (receipt, fuel, exec) = (r.receipt, r.fuel, Duration::from_millis(r.exec_ms));
                            let agreement = c.agreement.unwrap_or(MessageId([0; 32]));
                            let v = c.pay(receipt, agreement, task, fuel);
                            learnt.push((c.provider, v.fuel, exec));
                            pays.push(v);
                        }
                    } else if !c.wrong && r.exit.is_deterministic() {
                        c.wrong = true;
                        // Only a run from the start can be re-run by others.
                        let accused = c.evidence().filter(|_| r.resumed.is_none());
                        if let (Some(accused), Some(witness)) = (accused, witness.clone()) {
                            frauds.push((c.provider, accused, witness));
                        }
                    }
                }
                (CopyState::Accepting | CopyState::Agreed, _) => {
                    cancels.push((c.provider, c.agreement));
                    c.state = CopyState::Cancelled;
                }
                _ => {}
            }
        }
        if t.phase == TaskPhase::Verified {
            pays.extend(pay_progress(t));
        }
        // Only a failed task can put the job over its failure budget.
        let failed = (t.phase == TaskPhase::Failed).then(|| over_budget(job)).flatten();
        let all_settled = job.all_settled();
        self.drop_negotiations(|t| *t == task);
        for (p, fuel, exec) in learnt {
            self.book.learn_pace(module, &p, fuel, exec, now);
            self.book.verified(p, fuel, exec, &[module, input], now);
        }
        for v in pays {
            self.out.push_back(Action::Pay {
                to: v.provider,
                voucher: v,
            });
        }
        for (p, accused, witness) in frauds {
            self.book
                .ban(p, format!("receipt for task {task} disagreed with the majority"));
            self.out.push_back(Action::Fraud {
                culprit: p,
                accused,
                witness,
            });
        }
        for (p, a) in cancels {
            self.book.released(p);
            if let Some(a) = a {
                self.out.push_back(Action::Cancel {
                    to: p,
                    agreement: a,
                    task,
                    reason: CancelReason::Superseded,
                });
            }
        }
        self.touch(task);
        if let Some(why) = failed {
            self.fail_job(task.job, why, now);
        } else if all_settled {
            self.finish_job(task.job, now);
        }
        self.feed_downstream(task, now);
    }
}

/// Why the job fails, if its failed tasks exceed what it allows
/// (`max_failures`, 0 by default: the first failure ends the job).
pub(super) fn over_budget(job: &Job) -> Option<String> {
    let mut failed = job.tasks.iter().filter(|t| t.phase == TaskPhase::Failed);
    let first = failed.next()?;
    let count = 1 + failed.count();
    let allowed = job.record.spec.max_failures as usize;
    if count <= allowed {
        return None;
    }
    let first = format!(
        "task {} ({}): {}",
        first.id.index,
        job.record.spec.inputs[first.id.index as usize].name,
        first.error.clone().unwrap_or_default()
    );
    Some(if allowed == 0 {
        first
    } else {
        format!("{count} tasks failed, more than the {allowed} --max-failures allows; first, {first}")
    })
}

/// The providers whose checkpoints the verified run went on from, each
/// paid for the progress it made (from its own start to its checkpoint)
/// under the progress receipt that reported it: work a provider did before
/// it died is billed once, by the one who did it (SPEC.md §8.8).
fn pay_progress(t: &mut TaskRecord) -> Vec<Voucher> {
    let mut pays = Vec::new();
    let mut next = t
        .copies
        .iter()
        .find(|c| c.paid.is_some() && !c.wrong && c.state == CopyState::Reported)
        .and_then(|c| c.resume.map(|(id, _)| id));
    // A chain has as many links as copies, at most.
    for _ in 0..t.copies.len() {
        let Some(id) = next else { break };
        let Some(k) = t.checkpoints.iter().find(|k| k.id == id).cloned() else {
            break;
        };
        let Some(c) = t.copies.iter_mut().find(|c| c.attempt == k.attempt) else {
            break;
        };
        if c.paid.is_none()
            && let Some(agreement) = c.agreement
        {
            pays.push(c.pay(k.progress, agreement, t.id, k.fuel));
        }
        next = c.resume.map(|(id, _)| id);
    }
    pays
}

/// Reported copies grouped by outcome, largest group first.
pub(super) fn outcome_groups(t: &TaskRecord) -> Vec<(Observed, Vec<u16>)> {
    // Each group with the checkpoint its first member started from: runs
    // from different checkpoints agree on output and exit, and their fuel
    // differs by the work each redid after its start.
    let mut groups: Vec<(Observed, Vec<u16>, Option<ContentId>)> = Vec::new();
    for c in t
        .copies
        .iter()
        .filter(|c| c.state == CopyState::Reported && !c.wrong)
    {
        let Some(r) = &c.reported else { continue };
        if !r.output_held || c.spot_pending {
            continue;
        }
        let o = (r.output, r.fuel, r.exit.clone());
        let joins = |g: &(Observed, Vec<u16>, Option<ContentId>)| {
            g.0.0 == o.0 && g.0.2 == o.2 && (g.0.1 == o.1 || g.2 != r.resumed)
        };
        match groups.iter_mut().find(|g| joins(g)) {
            Some(g) => g.1.push(c.attempt),
            None => groups.push((o, vec![c.attempt], r.resumed)),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
    groups.into_iter().map(|(o, members, _)| (o, members)).collect()
}

//! Negotiation: offers are scored as they come in; when every provider
//! asked has answered (or the negotiation times out) the best is accepted,
//! with the others kept as fallbacks should the acceptance be declined.
//! Refusals are typed ([`crate::refusal::Refusal`]): a busy provider is
//! backed off, an unreachable one counted as failed.

use super::*;

impl Requester {
    /// The provider of a copy withdrew its agreement (it is stopping):
    /// the copy fails, not counted against it, and the task is placed
    /// again at once, elsewhere (the provider counts as not accepting for
    /// a moment). Whether such a live copy was found.
    pub fn on_withdrawn(&mut self, from: NodeId, agreement: MessageId, task: TaskId, now: Timestamp) -> bool {
        let Some(t) = self
            .jobs
            .get_mut(&task.job)
            .and_then(|j| j.tasks.get_mut(task.index as usize))
        else {
            return false;
        };
        let Some(c) = t.copies.iter_mut().find(|c| {
            c.provider == from
                && c.agreement == Some(agreement)
                && matches!(c.state, CopyState::Accepting | CopyState::Agreed)
        }) else {
            return false;
        };
        c.state = CopyState::Failed(crate::job::WITHDRAWN_BY_PROVIDER.into());
        self.book.released(from);
        self.book.stated(
            from,
            &agora_protocol::rpc::Decline::NotAccepting,
            Bytes(0),
            now,
            now,
        );
        self.touch(task);
        self.settle(task.job, task.index, now);
        true
    }

    /// An answer to a call for offers: a verified offer, or why not.
    pub fn on_offer(
        &mut self,
        task: TaskId,
        attempt: u16,
        from: NodeId,
        answer: Result<Verified<Offer>, Refusal>,
        now: Timestamp,
        view: &View,
    ) {
        let Some(job) = self.jobs.get(&task.job) else {
            return;
        };
        let spec = &job.record.spec;
        let Some(n) = self.negotiations.get_mut(&(task, attempt)) else {
            // A late answer to a negotiation that did not wait for it.
            if self.silent.remove(&from).is_some() {
                match &answer {
                    Err(r) if r.is_unreachable() => {
                        self.book.failed(from);
                        self.book.unreachable(from);
                    }
                    _ => self.book.answered(from),
                }
            }
            return;
        };
        if !n.asked.contains(&from) || !n.answered.insert(from) {
            return;
        }
        let decision = n.decision;
        if let Some(p) = view.peer(&from) {
            let advertised = p.advert.cu.0 as f64 / f64::from(p.advert.slots.max(1));
            self.book.advertised(from, advertised);
        }
        match answer {
            Ok(offer) => {
                self.book.answered(from);
                let o = offer.payload();
                let over_budget = super::place::energy_cap_mj(spec).and_then(|cap| {
                    let mj = placement::task_energy_mj(spec.estimate_of(task.index as usize), o.energy);
                    (o.energy.0 == 0 || mj > cap).then(|| {
                        format!(
                            "its offer states {} mJ per CU-second: over the task's share of the energy budget ({:.1} J)",
                            o.energy.0,
                            cap / 1000.0
                        )
                    })
                });
                if o.task != task || o.price > spec.max_price || offer.signer() != from {
                    if let Some(d) = self.explain.get_mut(&task).and_then(|q| q.get_mut(decision)) {
                        d.declined.push((from, "offer does not match the call".into()));
                    }
                } else if let Some(why) = over_budget {
                    if let Some(d) = self.explain.get_mut(&task).and_then(|q| q.get_mut(decision)) {
                        d.declined.push((from, why));
                    }
                } else {
                    let score = self.offer_score(job, task.index, from, o, view, now);
                    let note = OfferNote {
                        node: from,
                        price: o.price,
                        expected_start_ms: o.expected_start.0,
                        expected_run_ms: o.expected_run.0,
                        score,
                    };
                    if let Some(n) = self.negotiations.get_mut(&(task, attempt)) {
                        n.offers.push((from, offer, score));
                    }
                    if let Some(d) = self.decision_mut(&task, decision) {
                        d.offers.push(note);
                    }
                }
            }
            Err(refusal) => {
                if let Refusal::Declined(d) = &refusal {
                    // Limits it stated exclude it from calls it would
                    // decline again (see `placement::Stated`).
                    let credit_until = now.add(self.credit_backoff(from, &refusal).unwrap_or_default());
                    self.book
                        .stated(from, d, spec.limits().max_output, credit_until, now);
                }
                if let Some(wait) = self.credit_backoff(from, &refusal) {
                    self.book.back_off(from, now.add(wait));
                } else if refusal.is_unreachable() {
                    self.book.failed(from);
                    self.book.unreachable(from);
                    self.book.back_off(from, now.add(self.config.unreachable_backoff));
                } else {
                    // Busy, or any other decline: not asked again for a
                    // moment, so that a provider is never called in a loop.
                    self.book.back_off(from, now.add(self.config.busy_backoff));
                }
                if !refusal.is_unreachable() {
                    self.book.answered(from);
                }
                if let Some(d) = self.decision_mut(&task, decision) {
                    d.declined.push((from, refusal.to_string()));
                }
            }
        }
        let done = self
            .negotiations
            .get(&(task, attempt))
            .is_some_and(Negotiation::heard_enough);
        if done {
            self.conclude(task, attempt, now, view);
        }
    }

    /// How long a provider that declined this node's credit, or refused
    /// this node, is not asked again: such an answer says nothing against
    /// the provider, and asking again sooner would only be declined again.
    /// Credit that this node's own tasks in flight there hold (each
    /// reserved at its fuel limit's cost until its receipt comes) is free
    /// again as soon as one ends: while another is in flight there (two
    /// lanes: the one asked for may be counted already), only the busy
    /// back-off.
    fn credit_backoff(&self, from: NodeId, refusal: &Refusal) -> Option<Duration> {
        use agora_protocol::rpc::Decline;
        match refusal {
            Refusal::Declined(Decline::NoCredit { .. })
                if self.book.get(&from).is_some_and(|s| s.lanes.len() >= 2) =>
            {
                Some(self.config.busy_backoff)
            }
            Refusal::Declined(Decline::NoCredit { .. } | Decline::Unpaid { .. }) => {
                Some(self.config.credit_backoff)
            }
            Refusal::Declined(Decline::Refused) => Some(self.config.refused_backoff),
            _ => None,
        }
    }

    pub(super) fn offer_score(
        &self,
        job: &Job,
        idx: u32,
        from: NodeId,
        o: &Offer,
        view: &View,
        now: Timestamp,
    ) -> f64 {
        let spec = &job.record.spec;
        let input = &spec.inputs[idx as usize];
        let stats = self.book.get(&from);
        let per_slot = view.peer(&from).map_or(0.0, |p| {
            let advertised = p.advert.cu.0 as f64 / f64::from(p.advert.slots.max(1));
            placement::speed_of(advertised, stats, self.book.pace(&spec.module, now), now)
        });
        let run_ms = if per_slot > 0.0 {
            spec.estimate_of(idx as usize).0 as f64 / (per_slot * 1e6) * 1000.0
        } else {
            o.expected_run.0 as f64
        };
        let mut bytes = 0;
        if !o.has_module {
            bytes += spec.module_size.0;
        }
        if !o.has_input {
            bytes += input.size.0;
        }
        let bandwidth = view.throughput(&from, view.peer(&from).map(|p| &p.advert.domain));
        let transfer_ms = placement::transfer_ms(bytes, bandwidth);
        let rtt_ms = view.rtt(&from).map_or(1.0, |r| r.as_secs_f64() * 1000.0);
        let ect = o.expected_start.0 as f64 + transfer_ms + run_ms + rtt_ms;
        let price = if spec.max_price.0 == 0 {
            0.0
        } else {
            o.price.0 as f64 / spec.max_price.0 as f64
        };
        let rep = stats.map_or(placement::INITIAL_REPUTATION, |s| s.reputation);
        ect * (1.0 + placement::W_PRICE * price) * (1.0 + placement::W_REPUTATION * (1.0 - rep))
    }

    pub(super) fn conclude(&mut self, task: TaskId, attempt: u16, now: Timestamp, view: &View) {
        let Some(mut n) = self.negotiation_ended(&(task, attempt)) else {
            return;
        };
        self.book.released(n.reserved);
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        if job.record.state.is_terminal() {
            return;
        }
        n.offers.sort_by(|a, b| a.2.total_cmp(&b.2));
        // Replicas run on distinct providers: a provider that took another
        // copy of this task while this negotiation was open is passed over.
        let holding: HashSet<NodeId> = job.tasks[task.index as usize]
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
            .collect();
        let mut offers: VecDeque<(NodeId, Verified<Offer>)> = n
            .offers
            .into_iter()
            .filter(|(p, _, _)| !holding.contains(p))
            .map(|(p, o, _)| (p, o))
            .collect();
        let Some((provider, offer)) = offers.pop_front() else {
            let t = &mut job.tasks[task.index as usize];
            if t.live().next().is_none()
                && t.reported().next().is_none()
                && !matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed)
            {
                t.phase = TaskPhase::Pending;
            }
            t.unplaced_rounds += 1;
            self.touch(task);
            let _ = view;
            return;
        };
        self.accept_offer(task, attempt, provider, offer, n.backup, n.decision, offers, now);
    }

    /// Accepts an offer: records the copy and sends the acceptance. The
    /// other offers of the round are kept in case this one is declined.
    #[allow(clippy::too_many_arguments)] // one acceptance and its context
    pub(super) fn accept_offer(
        &mut self,
        task: TaskId,
        attempt: u16,
        provider: NodeId,
        offer: Verified<Offer>,
        backup: bool,
        decision: usize,
        rest: VecDeque<(NodeId, Verified<Offer>)>,
        now: Timestamp,
    ) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let o = offer.payload();
        let terms = Terms {
            price: o.price,
            energy: o.energy,
            expected_start_ms: o.expected_start.0,
            backup,
            order: Order::None,
        };
        let accept = Accept {
            offer: offer.id(),
            price: o.price,
            assignment: job.accepting(task, attempt, provider, terms, now),
        };
        let predicted = now.0 + o.expected_start.0 + o.expected_run.0;
        self.book.placed(provider, Timestamp(predicted));
        if let Some(d) = self.decision_mut(&task, decision) {
            d.chosen = Some(provider);
        }
        if !rest.is_empty() {
            self.fallbacks.insert((task, attempt), (decision, backup, rest));
        }
        self.touch(task);
        self.out.push_back(Action::Accept {
            task,
            attempt,
            to: provider,
            accept,
            send_module: !o.has_module,
            send_input: !o.has_input,
            order: None,
        });
    }

    /// Orders a tiny task from `provider` at the price (and energy rate)
    /// its advert states, in one round trip: the copy is recorded as
    /// accepting, and the acceptance goes with the requirements it names.
    /// A decline fails this copy and the task is placed again.
    pub(super) fn order(
        &mut self,
        provider: &Scored,
        (price, energy): (Price, agora_protocol::units::EnergyRate),
        cfo: CallForOffers,
        backup: bool,
        decision: usize,
        now: Timestamp,
    ) {
        let CallForOffers {
            task,
            attempt,
            requirements,
        } = cfo;
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let module = job.record.spec.module;
        let holds = |id: &ContentId| {
            self.book
                .get(&provider.node)
                .is_some_and(|s| s.holds.contains(id))
        };
        let send_module = !holds(&module);
        let send_input = !holds(&requirements.input);
        let terms = Terms {
            price,
            energy,
            expected_start_ms: provider.wait_ms as u64,
            backup,
            order: Order::Placed,
        };
        let accept = Accept {
            offer: agora_protocol::market::order_id(&requirements),
            price,
            assignment: job.accepting(task, attempt, provider.node, terms, now),
        };
        // Once sent (or fetched by the provider), the module is there for
        // the job's next orders.
        self.book.learn_holds(provider.node, &[module]);
        self.book
            .placed(provider.node, Timestamp(now.0 + provider.ect_ms as u64));
        if let Some(d) = self.decision_mut(&task, decision) {
            d.chosen = Some(provider.node);
        }
        self.touch(task);
        self.out.push_back(Action::Accept {
            task,
            attempt,
            to: provider.node,
            accept,
            send_module,
            send_input,
            order: Some(Box::new(requirements)),
        });
    }

    /// A declined acceptance falls back to the next offer of its round,
    /// while it is valid, instead of a new round.
    pub(super) fn try_fallback(&mut self, task: TaskId, attempt: u16, now: Timestamp) -> bool {
        let Some((decision, backup, mut rest)) = self.fallbacks.remove(&(task, attempt)) else {
            return false;
        };
        let Some(job) = self.jobs.get(&task.job) else {
            return false;
        };
        let t = &job.tasks[task.index as usize];
        let holding: HashSet<NodeId> = t
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
            .collect();
        let next_attempt = t.next_attempt().max(attempt + 1);
        while let Some((p, offer)) = rest.pop_front() {
            if holding.contains(&p) || offer.expires_at() <= now || self.book.is_banned(&p) {
                continue;
            }
            self.accept_offer(task, next_attempt, p, offer, backup, decision, rest, now);
            return true;
        }
        false
    }

    /// The answer to an accept: a verified agreement, or why not.
    pub fn on_agreement(
        &mut self,
        task: TaskId,
        attempt: u16,
        from: NodeId,
        answer: Result<Verified<Agreement>, Refusal>,
        now: Timestamp,
    ) {
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let Some(t) = job.tasks.get_mut(task.index as usize) else {
            return;
        };
        let Some(c) = t.copy_mut(attempt) else { return };
        if c.provider != from {
            return;
        }
        if c.withdrawn_unagreed() {
            // Withdrawn while the accept was in flight: now that the
            // agreement has an id, tell the provider not to run it.
            if let Ok(a) = answer
                && a.payload().task == task
                && a.payload().requester == self.local
            {
                c.agreement = Some(a.id());
                let reason = if job.record.state.is_terminal() {
                    CancelReason::JobCancelled
                } else {
                    CancelReason::Superseded
                };
                self.out.push_back(Action::Cancel {
                    to: from,
                    agreement: a.id(),
                    task,
                    reason,
                });
                self.touch(task);
            }
            return;
        }
        if c.state != CopyState::Accepting {
            return;
        }
        match answer {
            Ok(a)
                if a.payload().task == task
                    && a.payload().requester == self.local
                    && a.payload().price == c.price =>
            {
                c.state = CopyState::Agreed;
                c.agreement = Some(a.id());
                c.agreement_env = Some(agora_protocol::Encode::to_bytes(a.envelope()));
                c.due = c.due.min(a.payload().due.max(now));
                self.fallbacks.remove(&(task, attempt));
                self.touch(task);
            }
            Err(Refusal::Declined(d)) if c.order == Order::Placed => {
                // As a declined call: the provider is not asked again for
                // a moment (or while what it stated holds), and the task is
                // placed again, this copy not counted as an attempt. Only
                // the latest declined order of a task is kept, so that its
                // attempt number stays taken.
                c.state = CopyState::Failed(format!("declined the order: {d}"));
                c.order = Order::Declined;
                let max_output = job.record.spec.limits().max_output;
                t.copies.retain(|c| c.attempt >= attempt || !c.declined_order());
                let refusal = Refusal::Declined(d);
                let credit_until = now.add(self.credit_backoff(from, &refusal).unwrap_or_default());
                let Refusal::Declined(d) = &refusal else { return };
                self.book.released(from);
                self.book.answered(from);
                self.book.stated(from, d, max_output, credit_until, now);
                let wait = self
                    .credit_backoff(from, &refusal)
                    .unwrap_or(self.config.busy_backoff);
                self.book.back_off(from, now.add(wait));
                self.touch(task);
                self.settle(task.job, task.index, now);
            }
            Ok(_) => {
                c.state = CopyState::Failed("agreement does not match the acceptance".into());
                self.book.released(from);
                self.book.failed(from);
                self.touch(task);
                self.settle(task.job, task.index, now);
            }
            Err(refusal) => {
                c.state = CopyState::Failed(format!("declined the acceptance: {refusal}"));
                self.book.released(from);
                if matches!(
                    refusal,
                    Refusal::Declined(agora_protocol::rpc::Decline::NoFreeSlot)
                ) {
                    self.book.back_off(from, now.add(self.config.busy_backoff));
                } else if let Some(wait) = self.credit_backoff(from, &refusal) {
                    self.book.back_off(from, now.add(wait));
                } else if refusal.is_unreachable() {
                    // As an unreachable call: not chosen again until the
                    // back-off ends, so that a provider that just died
                    // does not take every attempt the task has.
                    self.book.failed(from);
                    self.book.unreachable(from);
                    self.book.back_off(from, now.add(self.config.unreachable_backoff));
                } else {
                    self.book.failed(from);
                }
                self.touch(task);
                if !self.try_fallback(task, attempt, now) {
                    self.settle(task.job, task.index, now);
                }
            }
        }
    }
}

/// The terms a copy is accepted on: from an offer, or from the provider's
/// advert for an order.
struct Terms {
    price: Price,
    energy: agora_protocol::units::EnergyRate,
    expected_start_ms: u64,
    backup: bool,
    order: Order,
}

impl Job {
    /// Records copy `attempt` of `task` at `provider` as accepting, on
    /// `terms`, and gives the assignment its acceptance carries: the
    /// task's module, input, arguments, limits and seed, and the latest
    /// checkpoint to go on from (a copy placed after another reached one
    /// does not start over).
    fn accepting(
        &mut self,
        task: TaskId,
        attempt: u16,
        provider: NodeId,
        terms: Terms,
        now: Timestamp,
    ) -> Assignment {
        let spec = &self.record.spec;
        let idx = task.index as usize;
        let t = &mut self.tasks[idx];
        let resume = t.checkpoints.last().map(|c| (c.id, c.fuel));
        t.copies.push(Copy {
            attempt,
            provider,
            state: CopyState::Accepting,
            price: terms.price,
            energy: terms.energy,
            agreement: None,
            agreement_env: None,
            placed_at: now,
            due: now.add(spec.deadline),
            expected_start_ms: terms.expected_start_ms,
            reported: None,
            receipt_env: None,
            backup: terms.backup,
            paid: None,
            wrong: false,
            spot_pending: false,
            stderr: None,
            accept_env: None,
            resume,
            billed: None,
            order: terms.order,
        });
        t.phase = TaskPhase::Running;
        Assignment {
            task,
            attempt,
            module: spec.module,
            input: spec.inputs[idx].id,
            args: self.args.clone(),
            limits: spec.limits(),
            seed: spec.task_seed(task.index),
            resume: resume.map(|(id, _)| id),
        }
    }
}

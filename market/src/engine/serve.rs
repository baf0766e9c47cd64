//! Inbound market requests: the provider's side (calls for offers,
//! acceptances, cancellations, vouchers) and the requester's (receipts),
//! and the executions the provider runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::execution::Receipt;
use agora_protocol::market::{Accept, Agreement, CallForOffers, Cancel, CancelReason, LatencyClass};
use agora_protocol::rpc::{Decline, MarketRequest, MarketResponse};
use agora_protocol::units::Timestamp;
use agora_protocol::wire::Blob;
use agora_protocol::{ContentId, Decode, Encode, Envelope, MessageId, NodeId, Verified};

use super::{Engine, FrameId, Output, Ran, ReplyId, Work};
use crate::provider::Accepted;
use crate::records::{self, PendingReceipt};
use crate::requester::ReceiptError;

/// How long a call for offers may wait for the requester's chain to be
/// read before it is answered with what is known.
const PARK_FOR: Duration = Duration::from_secs(1);
/// Calls waiting so at most.
const MAX_PARKED: usize = 256;

/// A call for offers waiting for its requester's chain to be read.
#[derive(Debug)]
pub(super) struct Parked {
    peer: NodeId,
    call: MessageId,
    cfo: CallForOffers,
    reply: ReplyId,
    until: Timestamp,
}

/// How long an order's answer may wait for the run it started: orders
/// are for tiny tasks (runs under 50 ms, SPEC.md §8.1).
const HOLD_FOR: Duration = Duration::from_millis(100);

/// Receipts sent in orders' answers and not yet paid beyond which a batch
/// order is answered at once. Each such receipt's task stays in memory,
/// its receipt request kept for a resend, until the payment comes (tens of
/// milliseconds under load, but a payer's bad spell must not grow this
/// node's heap with it).
const MAX_ANSWERED_UNPAID: usize = 256;

/// An order's answer, held while its task runs so that the agreement and
/// the receipt go back together ([`MarketResponse::Ran`]): one round trip
/// for a tiny task instead of two messages.
#[derive(Debug)]
pub(super) struct Held {
    reply: ReplyId,
    agreement: Envelope,
    /// The run started (an interactive task's answer goes with the
    /// agreement alone at the end of the order's turn otherwise).
    started: bool,
    /// A batch task's answer, held while the task waits for a slot as
    /// well (its frame is answered once the last of the frame's held
    /// orders ran, or at `until`).
    may_queue: bool,
    /// When the agreement goes alone if the run has not ended.
    until: Timestamp,
    /// The batch the order came in: its receipt is signed once every
    /// held order of the batch has run, with theirs.
    frame: Option<FrameId>,
}

/// A task admitted this turn whose agreement is not signed yet: known by
/// its acceptance's id until then (`Engine::sign_agreements`).
#[derive(Debug)]
pub(super) struct Unsigned {
    provisional: MessageId,
    agreement: Agreement,
    lifetime: Duration,
    /// Its credit reservation.
    cost: u64,
    inline: super::Inline,
    reply: ReplyId,
    frame: Option<FrameId>,
    /// `Some(may_queue)`: its answer is held for its run ([`Held`]).
    hold: Option<bool>,
}

/// Which held answers go with the agreement alone.
#[derive(Debug, Clone, Copy)]
pub(super) enum Release {
    /// Interactive tasks whose run did not start in the order's own
    /// turn.
    NotStarted,
    /// Those whose run outlasted [`HOLD_FOR`].
    Overdue,
    /// All (the node is shutting down).
    All,
}

/// A receipt whose inline output is being stored before it is judged.
#[derive(Debug)]
pub(super) struct StoringReceipt {
    peer: NodeId,
    receipt: Verified<Receipt>,
    /// `None`: it came in an order's answer, and there is no one to answer.
    reply: Option<ReplyId>,
}

impl Engine {
    /// An inbound market request from `peer` (authenticated by its
    /// connection); its answer goes to `reply`. Never a batch: the network
    /// unpacks them, and gives `frame` to each part of one.
    pub fn on_request(
        &mut self,
        peer: NodeId,
        request: MarketRequest,
        reply: ReplyId,
        frame: Option<FrameId>,
        now: Timestamp,
    ) {
        match request {
            MarketRequest::CallForOffers(env) => self.on_call(peer, &env, reply, now),
            MarketRequest::Accept { accept, content } => {
                self.on_accept(peer, &accept, None, content, (reply, frame), now)
            }
            MarketRequest::Order {
                requirements,
                accept,
                content,
            } => self.on_accept(peer, &accept, Some(*requirements), content, (reply, frame), now),
            MarketRequest::Receipt {
                receipt,
                output,
                stderr,
            } => self.on_receipt(peer, &receipt, output, stderr.0, Some(reply), now),
            MarketRequest::Pay(env) => self.on_pay(peer, &env, reply, now),
            MarketRequest::Chain { owner, after } => self.serve_chain(owner, after, reply),
            MarketRequest::ChainCheckpoint { owner } => self.serve_checkpoint(peer, owner, reply),
            MarketRequest::Attest(env) => self.on_attest(&env, reply),
            MarketRequest::Log {
                agreement,
                task,
                offset,
                text,
            } => match self.requester.on_log(peer, agreement, task, offset, &text.0) {
                Ok(()) => self.out.push(Output::Respond {
                    reply,
                    response: MarketResponse::Ack,
                }),
                Err(_) => self.decline(reply, Decline::Unknown),
            },
            MarketRequest::Cancel(env) => self.on_cancel(peer, &env, reply, now),
            MarketRequest::Summaries(d) => {
                let mut summaries = self.view.summaries_for(&d);
                // A member vouches for its domain (or a domain containing
                // it) with a summary it signs itself (see `View::vouch`).
                if let Some(own) = self.own_summary(&d, now) {
                    summaries.truncate(agora_protocol::limits::MAX_SUMMARIES - 1);
                    summaries.insert(0, own);
                }
                self.respond(reply, MarketResponse::Summaries(summaries));
            }
            MarketRequest::Progress { progress, checkpoint } => {
                self.on_progress(peer, &progress, checkpoint.0, reply, now)
            }
            MarketRequest::Batch(_) => self.decline(reply, Decline::invalid("nested batch")),
        }
    }

    fn respond(&mut self, reply: ReplyId, response: MarketResponse) {
        self.out.push(Output::Respond { reply, response });
    }

    /// Answers once the turn's writes are durable.
    pub(super) fn respond_durably(&mut self, reply: ReplyId, response: MarketResponse) {
        self.after.push(Output::Respond { reply, response });
    }

    pub(super) fn decline(&mut self, reply: ReplyId, d: Decline) {
        self.counters.declined(&d);
        self.respond(reply, MarketResponse::Declined(d));
    }

    fn on_call(&mut self, peer: NodeId, env: &Envelope, reply: ReplyId, now: Timestamp) {
        self.counters.calls_in += 1;
        let v = match self.open_live::<CallForOffers>(peer, env, now) {
            Ok(v) => v,
            Err(d) => return self.decline(reply, d),
        };
        self.answer_call(
            Parked {
                peer,
                call: env.id(),
                cfo: v.into_payload(),
                reply,
                until: now.add(PARK_FOR),
            },
            true,
            now,
        );
    }

    /// Offers or declines; a call declined for credit while the
    /// requester's chain is being read (a newcomer here, or one paid with
    /// credits still being traced) waits for the read, up to [`PARK_FOR`],
    /// when `may_park`.
    fn answer_call(&mut self, call: Parked, may_park: bool, now: Timestamp) {
        let Parked {
            peer, reply, ref cfo, ..
        } = call;
        let admitted = self.provider.call(peer, cfo, now).and_then(|offer| {
            self.admit_credit(peer, offer.price, cfo.requirements.fuel_limit, now)
                .map(|()| offer)
        });
        match admitted {
            Err(Decline::NoCredit { .. })
                if may_park && self.parked.len() < MAX_PARKED && !self.credit.settled(&peer) =>
            {
                self.parked.push(call);
            }
            Ok(mut offer) => {
                offer.call = call.call;
                offer.has_module = self.host.holds(&cfo.requirements.module);
                offer.has_input = self.host.holds(&cfo.requirements.input);
                let ttl = self.provider.config().offer_ttl;
                let oenv = self.seal(&offer, ttl, now);
                self.provider
                    .offered(oenv.id(), peer, cfo, offer.price, oenv.expires_at());
                self.counters.offers_made += 1;
                self.respond(reply, MarketResponse::Offer(oenv));
            }
            Err(d) => self.decline(reply, d),
        }
    }

    /// Answers the calls parked for requesters whose chains are now read,
    /// and those that waited [`PARK_FOR`].
    pub(super) fn answer_parked(&mut self, now: Timestamp) {
        if self.parked.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        for call in parked {
            if now >= call.until || self.credit.settled(&call.peer) {
                self.answer_call(call, false, now);
            } else {
                self.parked.push(call);
            }
        }
    }

    /// An acceptance of an offer made here, or, with `order`, of none: an
    /// order whose requirements are checked now as a call's would be.
    fn on_accept(
        &mut self,
        peer: NodeId,
        env: &Envelope,
        order: Option<agora_protocol::market::Requirements>,
        content: Vec<Blob>,
        (reply, frame): (ReplyId, Option<FrameId>),
        now: Timestamp,
    ) {
        // A retransmitted acceptance gets the agreement already made.
        if let Some(bytes) = self.provider.agreement_for(&env.id())
            && let Ok(agreement) = Envelope::from_bytes(bytes)
        {
            return self.respond(reply, MarketResponse::Agreement(agreement));
        }
        let v = match self.open_live::<Accept>(peer, env, now) {
            Ok(v) => v,
            Err(d) => return self.decline(reply, d),
        };
        let a = v.payload();
        // An order is answered when its run ends, with its receipt: one
        // round trip and one message fewer for the task. An interactive
        // one only if its run starts in this turn (nothing may hold up the
        // answer of a call somebody waits on); a batch one also while it
        // waits for a slot, the frame it came in answered once the last
        // of its orders ran (SPEC.md §8.1).
        let class = order.as_ref().map(|r| r.class);
        let may_queue =
            class == Some(LatencyClass::Batch) && self.deliveries.answered_len() < MAX_ANSWERED_UNPAID;
        let hold = class == Some(LatencyClass::Interactive) || may_queue;
        if let Some(requirements) = order
            && let Err(d) = self.take_order(peer, a, requirements, now)
        {
            return self.decline(reply, d);
        }
        // Offers are made before agreements are counted: the credit rules
        // are checked again for what is agreed since.
        if let (Err(d), _) = self.credit.admit(peer, 0, now) {
            return self.decline(reply, d);
        }
        let terms = match self.provider.accept(peer, a, now) {
            Ok(t) => t,
            Err(d) => return self.decline(reply, d),
        };
        let mut inline = Vec::new();
        for Blob(bytes) in content {
            let id = ContentId::of(&bytes);
            if id != a.assignment.module && id != a.assignment.input && Some(id) != a.assignment.resume {
                return self.decline(
                    reply,
                    Decline::invalid("inline content is neither the module, the input nor the checkpoint"),
                );
            }
            inline.push((id, Arc::new(bytes)));
        }
        for (id, bytes) in &inline {
            self.out.push(Output::Run(Work::Keep {
                id: *id,
                bytes: bytes.clone(),
            }));
        }
        let agreement = Agreement {
            accept: env.id(),
            task: terms.task,
            requester: peer,
            price: terms.price,
            due: terms.due,
        };
        // Admitted now, under the acceptance's id, so that what is
        // admitted after it in this turn sees its credit and its place in
        // the queue; signed at the turn's end with the others of the turn.
        let provisional = env.id();
        // Reserved at the worst case, the fuel limit: an estimate is the
        // requester's word, the limit what the run may really cost.
        let cost = terms.price.cost(a.assignment.limits.fuel).0;
        self.credit.agreed(peer, provisional, cost);
        self.provider.agreed(
            terms.admitted(provisional, a.assignment.clone()),
            a.offer,
            provisional,
        );
        self.unsigned.push(Unsigned {
            provisional,
            lifetime: terms.due.since(now) + Duration::from_secs(3600),
            agreement,
            cost,
            inline,
            reply,
            frame,
            // The answer goes when the run ends, with its receipt.
            hold: hold.then_some(may_queue),
        });
    }

    /// Signs the agreements of the tasks admitted this turn, one signature
    /// for all of them (SPEC.md §5.2), so that a requester checks one
    /// signature for a batch of them; one alone is signed alone. Each task
    /// is known by its agreement's id from then on, and recorded; its
    /// answer goes now, once the record is on disk, or is held for its
    /// run. Called first at each turn's end: nothing can name an
    /// agreement before it is signed, and no task starts before.
    pub(super) fn sign_agreements(&mut self, now: Timestamp) {
        if self.unsigned.is_empty() {
            return;
        }
        let unsigned = std::mem::take(&mut self.unsigned);
        let payloads: Vec<_> = unsigned.iter().map(|u| (&u.agreement, u.lifetime)).collect();
        let (sealed, signatures) = self.seal_all(&payloads, now);
        self.counters.agreement_signatures += signatures;
        for (u, aenv) in unsigned.into_iter().zip(sealed) {
            let peer = u.agreement.requester;
            let Some(accepted) = self.provider.signed(&u.provisional, &aenv) else {
                // Gone before its signature (nothing names it yet, so
                // nothing should have taken it): its answer says so.
                self.credit.released(peer, &u.provisional);
                self.decline(u.reply, Decline::Unknown);
                continue;
            };
            let id = accepted.agreement;
            self.writes.put(records::accepted_key(&id), accepted);
            self.credit.released(peer, &u.provisional);
            self.credit.agreed(peer, id, u.cost);
            if !u.inline.is_empty() {
                self.inline.insert(id, u.inline);
            }
            self.counters.agreements += 1;
            match u.hold {
                // Only an agreement answered alone waits for its record to
                // be on disk (SPEC.md §8.1): a receipt is the promised work
                // done.
                Some(may_queue) => {
                    self.held.insert(
                        id,
                        Held {
                            reply: u.reply,
                            agreement: aenv,
                            started: false,
                            may_queue,
                            until: now.add(HOLD_FOR),
                            frame: u.frame,
                        },
                    );
                }
                None => self.respond_durably(u.reply, MarketResponse::Agreement(aenv)),
            }
        }
    }

    /// Answers with the agreement alone the held answers that cannot wait
    /// for their runs; their receipts go as requests when the runs end.
    pub(super) fn release_held(&mut self, which: Release, now: Timestamp) {
        let due: Vec<MessageId> = self
            .held
            .iter()
            .filter(|(_, h)| match which {
                Release::NotStarted => !h.started && !h.may_queue,
                Release::Overdue => now >= h.until,
                Release::All => true,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(h) = self.held.remove(&id) {
                self.answer_agreement(h);
            }
        }
    }

    /// Orders whose answers are held for their runs.
    pub(crate) fn held_answers(&self) -> usize {
        self.held.len()
    }

    /// An order's held answer for a run that ends without a receipt (or
    /// a task withdrawn): the agreement alone, as it would have gone at
    /// once. Whether an answer was held.
    pub(super) fn release_one(&mut self, agreement: &MessageId) -> bool {
        match self.held.remove(agreement) {
            Some(h) => {
                self.answer_agreement(h);
                true
            }
            None => false,
        }
    }

    fn answer_agreement(&mut self, h: Held) {
        self.respond_durably(h.reply, MarketResponse::Agreement(h.agreement));
    }

    /// An order: the requirements are checked as a call's would be, the
    /// acceptance must name them and pre-accept at least the asking price,
    /// and the requester's credit must cover the task; then the offer the
    /// order stands for is recorded, at the acceptance's price, for the
    /// acceptance to take as if it had been made.
    fn take_order(
        &mut self,
        peer: NodeId,
        a: &Accept,
        requirements: agora_protocol::market::Requirements,
        now: Timestamp,
    ) -> Result<(), Decline> {
        if a.offer != agora_protocol::market::order_id(&requirements) {
            return Err(Decline::invalid(
                "the acceptance does not name the order's requirements",
            ));
        }
        let cfo = CallForOffers {
            task: a.assignment.task,
            attempt: a.assignment.attempt,
            requirements,
        };
        let asking = self.provider.call(peer, &cfo, now)?.price;
        if asking > a.price {
            return Err(Decline::PriceTooLow { asking });
        }
        self.admit_credit(peer, a.price, cfo.requirements.fuel_limit, now)?;
        let expires = now.add(self.provider.config().offer_ttl);
        self.provider.offered(a.offer, peer, &cfo, a.price, expires);
        self.counters.orders_taken += 1;
        Ok(())
    }

    fn on_cancel(&mut self, peer: NodeId, env: &Envelope, reply: ReplyId, now: Timestamp) {
        let v = match self.open_live::<Cancel>(peer, env, now) {
            Ok(v) => v,
            Err(d) => return self.decline(reply, d),
        };
        let agreement = v.payload().agreement;
        if v.payload().reason == CancelReason::Withdrawn {
            // From the provider of a copy this node placed: it stops.
            let task = v.payload().task;
            return if self.requester.on_withdrawn(peer, agreement, task, now) {
                self.respond_durably(reply, MarketResponse::Ack);
            } else {
                self.decline(reply, Decline::Unknown);
            };
        }
        match self.provider.cancel(peer, &agreement) {
            Ok(Some(_)) => {
                self.credit.released(peer, &agreement);
                self.writes.delete(records::accepted_key(&agreement));
                self.inline.remove(&agreement);
                self.respond_durably(reply, MarketResponse::Ack);
            }
            Ok(None) => {
                // Running: interrupted now, and gone from the records so
                // that a restart does not run it again.
                self.credit.released(peer, &agreement);
                self.cancelled_running.insert(agreement);
                self.writes.delete(records::accepted_key(&agreement));
                self.out.push(Output::Interrupt { agreement });
                self.respond_durably(reply, MarketResponse::Ack);
            }
            Err(d) => self.decline(reply, d),
        }
    }

    pub(super) fn on_receipt(
        &mut self,
        peer: NodeId,
        env: &Envelope,
        output: Option<Blob>,
        stderr: Vec<u8>,
        reply: Option<ReplyId>,
        now: Timestamp,
    ) {
        let v = match env.open::<Receipt>(now) {
            Ok(v) if v.signer() == peer => v,
            Ok(_) => return self.refuse_receipt(reply, Decline::invalid("receipt signed by another node")),
            Err(e) => return self.refuse_receipt(reply, Decline::invalid(e)),
        };
        if !stderr.is_empty() {
            self.requester.note_stderr(&v, &stderr);
        }
        let r = v.payload();
        match output {
            Some(Blob(bytes)) => {
                if !r.output.matches(&bytes) || bytes.len() as u64 != r.output_size.0 {
                    return self
                        .refuse_receipt(reply, Decline::invalid("the output does not match the receipt"));
                }
                // The output is stored before the receipt is acted on, and
                // on disk before the receipt is acknowledged or paid.
                let token = self.next_token;
                self.next_token += 1;
                let id = r.output;
                self.storing.insert(
                    token,
                    StoringReceipt {
                        peer,
                        receipt: v,
                        reply,
                    },
                );
                self.out.push(Output::Run(Work::StoreOutput { token, id, bytes }));
            }
            None => {
                let held = self.host.holds(&r.output);
                self.judge_receipt(peer, &v, held, reply, now);
            }
        }
    }

    /// A receipt's inline output was stored (or could not be).
    pub fn on_output_stored(&mut self, token: u64, result: Result<(), String>, now: Timestamp) {
        let Some(s) = self.storing.remove(&token) else {
            self.on_progress_stored(token, result);
            return;
        };
        match result {
            Ok(()) => self.judge_receipt(s.peer, &s.receipt, true, s.reply, now),
            Err(e) => self.refuse_receipt(s.reply, Decline::invalid(format!("storage failure: {e}"))),
        }
    }

    /// Declines a receipt's delivery; one that came in an order's answer
    /// is only logged (its provider sends it again unless paid).
    fn refuse_receipt(&mut self, reply: Option<ReplyId>, d: Decline) {
        match reply {
            Some(reply) => self.decline(reply, d),
            None => tracing::debug!(reason = %d, "receipt in an order's answer not taken"),
        }
    }

    fn judge_receipt(
        &mut self,
        peer: NodeId,
        v: &Verified<Receipt>,
        held: bool,
        reply: Option<ReplyId>,
        now: Timestamp,
    ) {
        match self.requester.on_receipt(peer, v, held, now) {
            Ok(crate::requester::ReceiptVerdict::Superseded) => {
                // Nothing is owed: the provider forgets it without waiting
                // for a payment.
                self.counters.receipts_superseded += 1;
                if let Some(reply) = reply {
                    self.respond(reply, MarketResponse::Declined(Decline::Superseded));
                }
            }
            Ok(_) => {
                if let Some(reply) = reply {
                    self.respond_durably(reply, MarketResponse::Ack)
                }
            }
            Err(ReceiptError::UnknownTask | ReceiptError::NoAgreement) => {
                self.refuse_receipt(reply, Decline::Unknown)
            }
            Err(e) => self.refuse_receipt(reply, Decline::invalid(e)),
        }
    }

    /// Starts what the provider's queue allows, each run bounded by the
    /// owner's wall-time cap and the time left before its receipt is due.
    pub(super) fn start_tasks(&mut self, now: Timestamp) {
        let cap = self.provider.config().max_task_time;
        while let Some(acc) = self.provider.start_next() {
            if let Some(h) = self.held.get_mut(&acc.agreement) {
                h.started = true;
            }
            let inline = self.inline.remove(&acc.agreement).unwrap_or_default();
            self.out.push(Output::Run(Work::Execute {
                agreement: acc.agreement,
                requester: acc.requester,
                assignment: acc.run_assignment(now, cap),
                inline,
                class: acc.class,
                restart_from: acc.checkpoint,
            }));
        }
    }

    /// An accepted task ran (`Err`: it could not be run at all, e.g. its
    /// content could not be fetched). Its receipt is signed at the turn's
    /// end, or once the other held orders of its batch have run
    /// (`Engine::sign_receipts`).
    pub fn on_executed(&mut self, agreement: MessageId, result: Result<Ran, String>) {
        self.counters.executed += 1;
        self.no_progress.remove(&agreement);
        let acc = self.provider.finished(&agreement);
        if self.cancelled_running.remove(&agreement) {
            self.release_one(&agreement);
            self.forget_accepted(&agreement);
            return;
        }
        let Some(acc) = acc else {
            self.release_one(&agreement);
            return;
        };
        match result {
            Ok(ran) => {
                self.provider.learn_speed(
                    acc.assignment.module,
                    agora_protocol::units::Fuel(ran.fuel.0.saturating_sub(ran.billed_from.0)),
                    ran.finished_at.since(ran.started_at),
                );
                self.ran.push((acc, ran));
            }
            Err(e) => {
                self.release_one(&agreement);
                tracing::warn!(task = %acc.assignment.task, error = %e, "could not run the task; dropping it (the requester re-places it)");
                self.forget_accepted(&agreement);
            }
        }
    }

    fn forget_accepted(&mut self, agreement: &MessageId) {
        if let Some(t) = self.provider.task(agreement) {
            self.credit.released(t.requester, agreement);
        }
        self.provider.forget(agreement);
        self.writes.delete(records::accepted_key(agreement));
    }

    /// Signs the receipts of the runs that ended, one signature for all
    /// of them (SPEC.md §5.2), so that a requester checks one signature
    /// for a batch of them; one alone is signed alone. A run whose order's
    /// answer is held and came in a batch waits until every held order of
    /// that batch has run: the batch is answered only then anyway
    /// (SPEC.md §8.1), and its receipts go under one signature. Called at
    /// each turn's end, so that a batch whose last held order goes without
    /// a receipt (released, withdrawn, failed) frees the others at once.
    pub(super) fn sign_receipts(&mut self, now: Timestamp) {
        if self.ran.is_empty() {
            return;
        }
        let ended: HashSet<MessageId> = self.ran.iter().map(|(acc, _)| acc.agreement).collect();
        let running: HashSet<FrameId> = self
            .held
            .iter()
            .filter(|(id, _)| !ended.contains(id))
            .filter_map(|(_, h)| h.frame)
            .collect();
        let waits = |acc: &Accepted, held: &HashMap<MessageId, Held>| {
            held.get(&acc.agreement)
                .and_then(|h| h.frame)
                .is_some_and(|f| running.contains(&f))
        };
        let (ran, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ran)
            .into_iter()
            .partition(|(acc, _)| !waits(acc, &self.held));
        self.ran = wait;
        if ran.is_empty() {
            return;
        }
        let receipts: Vec<Receipt> = ran
            .iter()
            .map(|(acc, r)| r.receipt(&acc.assignment, acc.agreement, acc.requester))
            .collect();
        let payloads: Vec<_> = receipts.iter().map(|r| (r, Receipt::MAX_LIFETIME)).collect();
        let (sealed, signatures) = self.seal_all(&payloads, now);
        self.counters.receipt_signatures += signatures;
        for (((acc, r), receipt), env) in ran.into_iter().zip(receipts).zip(sealed) {
            self.receipt_ran(acc, &r, &receipt, env, now);
        }
    }

    /// Records the signed receipt of a run as pending and sends it at
    /// once: if this node crashes before the pending receipt is on disk,
    /// the task runs again from its agreement.
    fn receipt_ran(
        &mut self,
        mut acc: Accepted,
        ran: &Ran,
        receipt: &Receipt,
        env: Envelope,
        now: Timestamp,
    ) {
        self.history.ran(
            &mut self.writes,
            &crate::history::RanTask {
                at: ran.finished_at,
                task: acc.assignment.task,
                requester: acc.requester,
                fuel: ran.fuel,
                run_ms: ran.finished_at.since(ran.started_at).as_millis() as u64,
                exit: ran.exit.to_string(),
                price: acc.price,
            },
        );
        acc.stage = crate::provider::Stage::Done;
        acc.billed_from = ran.billed_from;
        let agreement = acc.agreement;
        // Run: the requester owes what the receipt bills, no longer the
        // fuel limit's worst case (the rest of its credit here is free at
        // once, not when the receipt's delivery is acknowledged).
        let billed = agora_protocol::units::Fuel(receipt.fuel_used.0.saturating_sub(acc.billed_from.0));
        let owed = if receipt.exit.is_deterministic() {
            acc.price.cost(billed).0
        } else {
            0
        };
        self.credit.agreed(acc.requester, agreement, owed);
        self.writes.put(records::accepted_key(&agreement), &acc);
        self.writes.put(
            records::pending_receipt_key(&agreement),
            &PendingReceipt {
                requester: acc.requester,
                envelope: agora_protocol::id::to_hex(env.to_bytes()),
            },
        );
        self.counters.receipts_sent += 1;
        if let Some(bytes) = ran.inline.as_ref().filter(|b| !b.is_empty()) {
            // Kept in the background: after a crash the task runs again
            // from its persisted agreement.
            self.out.push(Output::Run(Work::Keep {
                id: ran.output,
                bytes: Arc::new(bytes.clone()),
            }));
        }
        let receipt_id = env.id();
        let request = receipt_request(env, ran.inline.clone(), ran.stderr.clone());
        if let Some(h) = self.held.remove(&agreement) {
            match MarketResponse::ran(&h.agreement, &request) {
                Some(answer) => {
                    self.counters.receipts_answered += 1;
                    self.deliver_answered(agreement, acc.requester, request, receipt_id, now);
                    self.respond(h.reply, answer);
                    return;
                }
                // Too long for an answer: the agreement alone, the receipt
                // as a request.
                None => self.answer_agreement(h),
            }
        }
        self.deliver(agreement, acc.requester, request, false, now);
    }
}

use agora_protocol::Payload as _;

/// The request that delivers a receipt (its output inline when small, the
/// tail of a failed run's stderr with it).
pub(super) fn receipt_request(
    receipt: Envelope,
    output: Option<Vec<u8>>,
    mut stderr: Vec<u8>,
) -> MarketRequest {
    let max = agora_protocol::rpc::MAX_STDERR_TAIL;
    if stderr.len() > max {
        stderr.drain(..stderr.len() - max);
    }
    MarketRequest::Receipt {
        receipt,
        output: output
            .filter(|o| !o.is_empty() && o.len() <= agora_protocol::limits::MAX_INLINE_CONTENT)
            .map(Blob),
        stderr: Blob(stderr),
    }
}

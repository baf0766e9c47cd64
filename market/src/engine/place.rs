//! The requester's side: its actions become signed requests and work, and
//! the answers and results come back to it.

use std::time::Duration;

use agora_protocol::execution::Receipt;
use agora_protocol::fraud::FraudProof;
use agora_protocol::market::{Accept, Agreement, Cancel, Offer};
use agora_protocol::rpc::{MarketRequest, MarketResponse};
use agora_protocol::units::{Bytes, Fuel, Timestamp};
use agora_protocol::{
    ContentId, Decode, Encode, Envelope, FRAUD_TOPIC, JobId, MessageId, NodeId, Payload, TaskId, Verified,
};

use rand::RngExt;

use super::{Engine, Output, Pending, Ran, RequestId, Work};
use crate::job::{Evidence, JobState, TaskPhase};
use crate::refusal::Refusal;
use crate::requester::Action;

/// How long a call for offers or an acceptance stays valid.
const NEGOTIATION_LIFETIME: Duration = Duration::from_secs(20);
/// How long a cancellation stays valid.
pub(super) const CANCEL_LIFETIME: Duration = Duration::from_secs(30);
/// How long a fraud proof circulates.
const FRAUD_LIFETIME: Duration = Duration::from_secs(3600);
/// A reduce step may use this many times a task's fuel limit.
const REDUCE_FUEL_FACTOR: u64 = 4;

impl Engine {
    /// Carries out what the requester decided. The acceptances among it
    /// are signed together, one signature for the lot (SPEC.md §5.2): a
    /// provider then checks one signature for every order of a frame.
    pub(super) fn drain_actions(&mut self, now: Timestamp) {
        loop {
            let actions: Vec<Action> = std::iter::from_fn(|| self.requester.poll_action()).collect();
            if actions.is_empty() {
                return;
            }
            let accepts: Vec<(&Accept, Duration)> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::Accept { accept, .. } => Some((accept, NEGOTIATION_LIFETIME)),
                    _ => None,
                })
                .collect();
            let (sealed, signatures) = self.seal_all(&accepts, now);
            self.counters.accepts_sent += sealed.len() as u64;
            self.counters.accept_signatures += signatures;
            let mut sealed = sealed.into_iter();
            for a in actions {
                let env = matches!(a, Action::Accept { .. })
                    .then(|| sealed.next())
                    .flatten();
                self.action(a, env, now);
            }
        }
    }

    /// `accept_env`: the envelope of an [`Action::Accept`], sealed already.
    fn action(&mut self, a: Action, accept_env: Option<Envelope>, now: Timestamp) {
        match a {
            Action::Call {
                task,
                attempt,
                cfo,
                to,
            } => {
                let env = self.seal(&cfo, NEGOTIATION_LIFETIME, now);
                let call = env.id();
                for from in to {
                    let request = MarketRequest::CallForOffers(env.clone());
                    let out = self.request(
                        from,
                        request,
                        Vec::new(),
                        Pending::Call {
                            task,
                            attempt,
                            from,
                            call,
                        },
                    );
                    self.out.push(out);
                }
            }
            Action::Accept {
                task,
                attempt,
                to,
                accept,
                send_module,
                send_input,
                order,
            } => {
                let env = accept_env.unwrap_or_else(|| self.seal(&accept, NEGOTIATION_LIFETIME, now));
                self.requester.accept_sealed(task, attempt, env.to_bytes());
                // The checkpoint to resume from is this node's: sent first
                // (at most two blobs travel inline; the provider fetches
                // the rest).
                let mut attach: Vec<ContentId> = accept.assignment.resume.into_iter().collect();
                if send_module {
                    attach.push(accept.assignment.module);
                }
                if send_input {
                    attach.push(accept.assignment.input);
                }
                let pending = Pending::Accept {
                    task,
                    attempt,
                    from: to,
                    accept: env.id(),
                };
                let request = match order {
                    Some(requirements) => MarketRequest::Order {
                        requirements,
                        accept: env,
                        content: vec![],
                    },
                    None => MarketRequest::Accept {
                        accept: env,
                        content: vec![],
                    },
                };
                let out = self.request(to, request, attach, pending);
                self.out.push(out);
            }
            Action::Cancel {
                to,
                agreement,
                task,
                reason,
            } => {
                let env = self.seal(
                    &Cancel {
                        agreement,
                        task,
                        reason,
                    },
                    CANCEL_LIFETIME,
                    now,
                );
                let out = self.request(to, MarketRequest::Cancel(env), Vec::new(), Pending::Cancel { to });
                self.out.push(out);
            }
            Action::Fetch {
                task,
                attempt,
                from,
                output,
            } => self.out.push(Output::Run(Work::Fetch {
                task,
                attempt,
                from,
                output,
            })),
            Action::SpotCheck { task, attempt } => {
                if let Some(assignment) = self.requester.check_assignment(task, attempt) {
                    self.out.push(Output::Run(Work::SpotCheck {
                        task,
                        attempt,
                        assignment,
                    }));
                }
            }
            Action::Pay { to, voucher } => self.pay(to, voucher, now),
            Action::Fraud {
                culprit,
                accused,
                witness,
            } => self.publish_fraud(culprit, &accused, &witness, now),
            Action::Reduce { job } => self.reduce(job, now),
            Action::Ended { job, state } => {
                match state {
                    JobState::Done => self.counters.jobs_done += 1,
                    _ => self.counters.jobs_failed += 1,
                }
                self.pin_job(job, now);
                let err = self.requester.job(&job).and_then(|(r, _)| r.error.clone());
                tracing::info!(job = %job, ?state, error = ?err, "job ended");
            }
        }
    }

    /// An ended job's content is kept for the user for `keep_results`; then
    /// the node's collection may remove it.
    fn pin_job(&mut self, job: JobId, now: Timestamp) {
        let Some((record, _)) = self.requester.job(&job) else {
            return;
        };
        let until = now.add(self.config.keep_results);
        for id in super::job_content(&self.requester, record) {
            self.writes.put(crate::records::pin_key(&id), &until);
        }
    }

    fn publish_fraud(&mut self, culprit: NodeId, accused: &Evidence, witness: &Evidence, now: Timestamp) {
        let (Some(accused), Some(witness)) = (envelopes(accused), envelopes(witness)) else {
            return;
        };
        let proof = FraudProof { accused, witness };
        if let Err(e) = proof.check() {
            tracing::warn!(culprit = %culprit.short(), error = %e, "fraud proof does not check out; not publishing");
            return;
        }
        tracing::warn!(culprit = %culprit, "provider returned a wrong result: banned, publishing a fraud proof");
        let Ok(env) = Envelope::seal(
            &self.keypair,
            &proof,
            now,
            FRAUD_LIFETIME,
            agora_protocol::Nonce(self.rng.random()),
        ) else {
            tracing::warn!(culprit = %culprit.short(), "the fraud proof is too large to publish; the provider stays banned here");
            return;
        };
        self.counters.fraud_published += 1;
        // Keyed as received proofs are (by the proof, whoever sealed it),
        // so that the checkers' re-publications are known here.
        self.fraud_seen.insert(MessageId::of(&proof.to_bytes()));
        self.out.push(Output::Publish {
            topic: FRAUD_TOPIC.to_owned(),
            data: env.to_bytes(),
        });
    }

    fn reduce(&mut self, job: JobId, now: Timestamp) {
        let Some((record, tasks)) = self.requester.job(&job) else {
            return;
        };
        let Some(module) = record.spec.reduce else { return };
        // Failed tasks (as many as `max_failures` allows) have no output to
        // combine: the reduce step gets the verified ones, in task order.
        let Some(outputs) = tasks
            .iter()
            .filter(|t| t.phase != TaskPhase::Failed)
            .map(|t| t.output)
            .collect::<Option<Vec<ContentId>>>()
        else {
            return self
                .requester
                .on_reduced(job, Err("a task has no output".into()), now);
        };
        let spec = &record.spec;
        let mut limits = spec.limits();
        limits.fuel = Fuel(spec.fuel.0.saturating_mul(REDUCE_FUEL_FACTOR));
        // The reduce step runs here, for this node's own user.
        limits.max_output = Bytes(agora_protocol::limits::MAX_BLOB as u64);
        self.out.push(Output::Run(Work::Reduce {
            job,
            module,
            outputs,
            args: spec.reduce_args.clone(),
            limits,
            seed: spec.seed,
        }));
    }

    /// The answer to one of this engine's requests: `Err` if the peer could
    /// not be reached (the reason, for people).
    pub fn on_answer(&mut self, id: RequestId, answer: Result<MarketResponse, String>, now: Timestamp) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match pending {
            Pending::Call {
                task,
                attempt,
                from,
                call,
            } => {
                let offer = opened::<Offer>(answer, Expect::Offer, now).and_then(|v| {
                    if v.signer() != from {
                        Err(Refusal::Invalid("offer signed by another node".into()))
                    } else if v.payload().call != call {
                        Err(Refusal::Invalid("offer answers another call".into()))
                    } else {
                        Ok(v)
                    }
                });
                // An offer or a decline shows a real endpoint behind the key.
                if matches!(offer, Ok(_) | Err(Refusal::Declined(_))) {
                    self.view.reached(from);
                }
                self.requester
                    .on_offer(task, attempt, from, offer, now, &self.view);
            }
            Pending::Accept {
                task,
                attempt,
                from,
                accept,
            } => {
                // An order's task the provider ran at once: its agreement,
                // then its receipt as if delivered alone.
                let (answer, ran) = match answer {
                    Ok(MarketResponse::Ran {
                        agreement,
                        receipt,
                        output,
                        stderr,
                    }) => (
                        Ok(MarketResponse::Agreement(agreement)),
                        Some((receipt, output, stderr)),
                    ),
                    other => (other, None),
                };
                let agreement = opened::<Agreement>(answer, Expect::Agreement, now).and_then(|v| {
                    if v.signer() != from {
                        Err(Refusal::Invalid("agreement signed by another node".into()))
                    } else if v.payload().accept != accept {
                        Err(Refusal::Invalid("agreement for another acceptance".into()))
                    } else {
                        Ok(v)
                    }
                });
                let agreed = agreement.is_ok();
                self.requester.on_agreement(task, attempt, from, agreement, now);
                if agreed && let Some((receipt, output, stderr)) = ran {
                    self.on_receipt(from, &receipt, output, stderr.0, None, now);
                }
            }
            Pending::Cancel { to } => {
                if let Err(e) = answer {
                    tracing::debug!(peer = %to.short(), error = %e, "cancel not delivered");
                }
            }
            Pending::Delivery { key } => {
                self.on_delivered(key, answer.map_err(Refusal::Unreachable), now);
            }
            Pending::Vouch {
                domain,
                signer,
                contact,
                next,
            } => self.on_vouched((domain, signer, contact, next), answer, now),
            Pending::Rival { peer } => self.on_rival(peer, answer, now),
            Pending::Chain(read) => self.on_chain(read, answer, now),
            Pending::ChainCheckpoint(read) => self.on_chain_checkpoint(read, answer, now),
            Pending::Attest { owner } => {
                if !matches!(answer, Ok(MarketResponse::Ack)) {
                    tracing::debug!(chain = %owner.short(), ?answer, "attestation not taken");
                }
            }
            Pending::Progress {
                agreement,
                checkpoint,
            } => self.on_progress_answer(agreement, checkpoint, answer),
            Pending::ForkCheck {
                owner,
                seq,
                hash,
                held,
            } => self.on_fork_check((owner, seq, hash, held), answer, now),
        }
    }

    /// A copy's output was fetched (`ok`: present and matching its id).
    pub fn on_fetched(&mut self, task: TaskId, attempt: u16, ok: bool, now: Timestamp) {
        self.requester.on_output(task, attempt, ok, now);
    }

    /// A spot check ran here (`Err`: it could not run). A check that cannot
    /// run leaves the copy to be verified by a second provider.
    pub fn on_spot_checked(
        &mut self,
        task: TaskId,
        attempt: u16,
        result: Result<Ran, String>,
        now: Timestamp,
    ) {
        match result {
            Ok(ran) => {
                let Some(assignment) = self.requester.check_assignment(task, attempt) else {
                    return;
                };
                let own = ran.receipt(&assignment, MessageId([0; 32]), self.local);
                let env = self.seal(&own, Receipt::MAX_LIFETIME, now);
                self.requester
                    .on_spot_check(task, attempt, ran.outcome(), env.to_bytes(), now);
            }
            Err(e) => {
                tracing::warn!(task = %task, error = %e, "spot check could not run; accepting on the receipts alone");
                let reported = self
                    .requester
                    .copy(task, attempt)
                    .and_then(|c| c.reported.clone());
                if let Some(r) = reported {
                    self.requester
                        .on_spot_check(task, attempt, (r.output, r.fuel, r.exit), Vec::new(), now);
                }
            }
        }
    }

    /// The reduce step ran: its output id, or why it failed.
    pub fn on_reduced(&mut self, job: JobId, result: Result<ContentId, String>, now: Timestamp) {
        self.requester.on_reduced(job, result, now);
    }
}

/// What an answer should carry.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Offer,
    Agreement,
}

/// An answer opened as the expected signed payload, or why not.
fn opened<T: Payload>(
    answer: Result<MarketResponse, String>,
    expect: Expect,
    now: Timestamp,
) -> Result<Verified<T>, Refusal> {
    let env = match (answer.map_err(Refusal::Unreachable)?, expect) {
        (MarketResponse::Declined(d), _) => return Err(Refusal::Declined(d)),
        (MarketResponse::Offer(env), Expect::Offer) | (MarketResponse::Agreement(env), Expect::Agreement) => {
            env
        }
        (other, _) => return Err(Refusal::Invalid(format!("unexpected answer {other:?}"))),
    };
    env.open::<T>(now).map_err(|e| {
        let what = match expect {
            Expect::Offer => "offer",
            Expect::Agreement => "agreement",
        };
        Refusal::Invalid(format!("invalid {what}: {e}"))
    })
}

/// Evidence as the protocol's, decoded (`None` if any envelope is not one).
fn envelopes(e: &Evidence) -> Option<agora_protocol::fraud::Evidence> {
    let decode = |b: &Vec<u8>| Envelope::from_bytes(b).ok();
    Some(agora_protocol::fraud::Evidence {
        receipt: decode(&e.receipt)?,
        agreement: match &e.agreement {
            Some(b) => Some(decode(b)?),
            None => None,
        },
        accept: match &e.accept {
            Some(b) => Some(decode(b)?),
            None => None,
        },
    })
}

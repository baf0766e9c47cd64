//! Progress receipts: a provider's running task reached a checkpoint
//! (SPEC.md §8.8).
//!
//! ```text
//! provider                                        requester
//!   guest checkpoint() → on_checkpoint
//!   Progress (signed) + checkpoint ───────────▶  check, store, record
//!                       ◀───────────────────────  Ack (once on disk)
//!   record it on the accepted task
//! ```
//!
//! The provider keeps the checkpoint too; after a restart its run goes on
//! from the last one its requester acknowledged. The requester places any
//! later copy of the task from its latest.

use agora_protocol::execution::{Checkpoint, Progress};
use agora_protocol::rpc::{Decline, MarketRequest, MarketResponse};
use agora_protocol::units::Timestamp;
use agora_protocol::wire::Blob;
use agora_protocol::{ContentId, Decode, Encode, Envelope, MessageId, NodeId, Payload, Verified};
use std::sync::Arc;

use super::{Engine, Output, Pending, ReplyId, Work};
use crate::records;
use crate::requester::ProgressError;

/// A progress receipt whose checkpoint is being stored before it is
/// recorded.
#[derive(Debug)]
pub(super) struct StoringProgress {
    peer: NodeId,
    progress: Verified<Progress>,
    checkpoint: Checkpoint,
    reply: ReplyId,
}

impl Engine {
    /// A running task of this node's took a checkpoint: it is kept here
    /// and sent to the task's requester with a signed progress receipt.
    pub fn on_checkpoint(&mut self, agreement: MessageId, checkpoint: Checkpoint, now: Timestamp) {
        let Some(acc) = self.provider.task(&agreement) else {
            self.no_progress.remove(&agreement);
            return;
        };
        if self.no_progress.contains(&agreement) {
            return;
        }
        let bytes = checkpoint.to_bytes();
        let id = ContentId::of(&bytes);
        let progress = Progress {
            agreement,
            task: acc.assignment.task,
            requester: acc.requester,
            from: checkpoint.from,
            checkpoint: id,
            index: checkpoint.index,
            fuel_used: checkpoint.fuel_used,
        };
        let to = acc.requester;
        let env = self.seal(&progress, Progress::MAX_LIFETIME, now);
        self.counters.progress_sent += 1;
        self.out.push(Output::Run(Work::Keep {
            id,
            bytes: Arc::new(bytes.clone()),
        }));
        let request = MarketRequest::Progress {
            progress: env,
            checkpoint: Blob(bytes),
        };
        let out = self.request(
            to,
            request,
            Vec::new(),
            Pending::Progress {
                agreement,
                checkpoint: id,
            },
        );
        self.out.push(out);
    }

    /// The requester's answer to a progress receipt: acknowledged, the
    /// checkpoint is one a restarted run may go on from.
    pub(super) fn on_progress_answer(
        &mut self,
        agreement: MessageId,
        checkpoint: ContentId,
        answer: Result<MarketResponse, String>,
    ) {
        match answer {
            Ok(MarketResponse::Ack) => {
                if let Some(acc) = self.provider.checkpointed(&agreement, checkpoint) {
                    self.writes.put(records::accepted_key(&agreement), acc);
                }
            }
            Ok(other) => {
                // Declined: the requester keeps no checkpoint of this task
                // (replicated, or it cannot check it); no more are sent.
                tracing::debug!(%agreement, answer = ?other, "progress receipt not kept by the requester");
                if let MarketResponse::Declined(Decline::Invalid { .. }) = other {
                    self.no_progress.insert(agreement);
                }
            }
            Err(e) => tracing::debug!(%agreement, error = %e, "progress receipt not delivered"),
        }
    }

    /// A provider's progress receipt for a task of this node's: checked,
    /// its checkpoint stored, then recorded and acknowledged.
    pub(super) fn on_progress(
        &mut self,
        peer: NodeId,
        env: &Envelope,
        bytes: Vec<u8>,
        reply: ReplyId,
        now: Timestamp,
    ) {
        let v = match env.open::<Progress>(now) {
            Ok(v) if v.signer() == peer => v,
            Ok(_) => return self.decline(reply, Decline::invalid("progress signed by another node")),
            Err(e) => return self.decline(reply, Decline::invalid(e)),
        };
        if ContentId::of(&bytes) != v.payload().checkpoint {
            return self.decline(reply, Decline::invalid("the checkpoint does not match its id"));
        }
        let checkpoint = match Checkpoint::from_bytes(&bytes) {
            Ok(c) => c,
            Err(e) => {
                return self.decline(
                    reply,
                    Decline::invalid(format!("the checkpoint does not decode: {e}")),
                );
            }
        };
        if let Err(e) = self.requester.check_progress(peer, &v, &checkpoint) {
            return self.decline(reply, progress_decline(e));
        }
        let token = self.next_token;
        self.next_token += 1;
        let id = v.payload().checkpoint;
        self.storing_progress.insert(
            token,
            StoringProgress {
                peer,
                progress: v,
                checkpoint,
                reply,
            },
        );
        self.out.push(Output::Run(Work::StoreOutput { token, id, bytes }));
    }

    /// A progress receipt's checkpoint was stored (or could not be).
    pub(super) fn on_progress_stored(&mut self, token: u64, result: Result<(), String>) -> bool {
        let Some(s) = self.storing_progress.remove(&token) else {
            return false;
        };
        if let Err(e) = result {
            self.decline(s.reply, Decline::invalid(format!("storage failure: {e}")));
            return true;
        }
        match self.requester.on_progress(s.peer, &s.progress, &s.checkpoint) {
            Ok(()) => {
                self.counters.progress_kept += 1;
                self.respond_durably(s.reply, MarketResponse::Ack);
            }
            Err(e) => self.decline(s.reply, progress_decline(e)),
        }
        true
    }
}

fn progress_decline(e: ProgressError) -> Decline {
    match e {
        ProgressError::Unknown => Decline::Unknown,
        other => Decline::invalid(other),
    }
}

//! Checkpoints of long tasks, on the requester's side: a provider's signed
//! progress receipt is checked against the copy it runs and the task's
//! computation, and its checkpoint kept, so that a copy placed after this
//! one fails resumes from it (SPEC.md §8.8).
//!
//! Only a task run by one copy at a time takes checkpoints from its
//! providers (`replicas = 1`, checked by spot checks): a replica resumed
//! from another replica's checkpoint would no longer be an independent
//! check of it.

use agora_protocol::execution::{Checkpoint, Progress};

use super::*;
use crate::job::{MAX_TASK_CHECKPOINTS, TaskCheckpoint};

/// Why a progress receipt was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgressError {
    /// No such job or task here, or no live copy of it at that provider
    /// under that agreement.
    #[error("no running copy of this task under this agreement")]
    Unknown,
    /// The task is replicated: its copies start from the beginning.
    #[error("the task is replicated: its copies do not resume from checkpoints")]
    Replicated,
    /// The progress receipt or its checkpoint does not match the task.
    #[error("the checkpoint does not match the task: {0}")]
    Mismatch(&'static str),
}

impl Requester {
    /// Checks provider `from`'s progress receipt and the checkpoint it
    /// names (already decoded, its id checked by the caller) without
    /// keeping anything: the caller stores the checkpoint, then calls
    /// [`Requester::on_progress`].
    pub fn check_progress(
        &self,
        from: NodeId,
        progress: &Verified<Progress>,
        checkpoint: &Checkpoint,
    ) -> Result<(), ProgressError> {
        let p = progress.payload();
        if p.requester != self.local {
            return Err(ProgressError::Mismatch("requester"));
        }
        let job = self.jobs.get(&p.task.job).ok_or(ProgressError::Unknown)?;
        let spec = &job.record.spec;
        let input = spec
            .inputs
            .get(p.task.index as usize)
            .ok_or(ProgressError::Unknown)?;
        let t = &job.tasks[p.task.index as usize];
        let c = t
            .copies
            .iter()
            .find(|c| {
                c.provider == from
                    && c.agreement == Some(p.agreement)
                    && matches!(c.state, CopyState::Accepting | CopyState::Agreed)
            })
            .ok_or(ProgressError::Unknown)?;
        if spec.replicas > 1 {
            return Err(ProgressError::Replicated);
        }
        let mismatch = if !checkpoint.belongs_to(
            &spec.module,
            &input.id,
            &job.args_digest,
            spec.task_seed(p.task.index),
            spec.fuel,
        ) {
            Some("computation")
        } else if checkpoint.index != p.index
            || checkpoint.fuel_used != p.fuel_used
            || checkpoint.from != p.from
        {
            Some("index, fuel or start")
        } else if p.fuel_used > spec.fuel {
            Some("fuel used above the limit")
        } else if !started_from(t, c, p.from) {
            Some("checkpoint started from")
        } else {
            None
        };
        match mismatch {
            Some(m) => Err(ProgressError::Mismatch(m)),
            None => Ok(()),
        }
    }

    /// Keeps a checked progress receipt's checkpoint (its content already
    /// stored): copies placed from now on resume from it. Persist (see
    /// [`Requester::take_dirty`]), then acknowledge.
    pub fn on_progress(
        &mut self,
        from: NodeId,
        progress: &Verified<Progress>,
        checkpoint: &Checkpoint,
    ) -> Result<(), ProgressError> {
        self.check_progress(from, progress, checkpoint)?;
        let p = progress.payload();
        let Some(t) = self
            .jobs
            .get_mut(&p.task.job)
            .and_then(|j| j.tasks.get_mut(p.task.index as usize))
        else {
            return Err(ProgressError::Unknown);
        };
        if t.checkpoints.iter().any(|k| k.id == p.checkpoint) {
            return Ok(());
        }
        let attempt = t
            .copies
            .iter()
            .find(|c| c.provider == from && c.agreement == Some(p.agreement))
            .map_or(0, |c| c.attempt);
        // Kept in index order: a provider restarted from an earlier
        // checkpoint than the latest reports lower indices again, and the
        // latest (a copy placed now resumes from it) stays last.
        let at = t.checkpoints.partition_point(|k| k.index <= p.index);
        t.checkpoints.insert(
            at,
            TaskCheckpoint {
                id: p.checkpoint,
                index: p.index,
                fuel: p.fuel_used,
                attempt,
                progress: progress.id(),
            },
        );
        // The oldest goes, unless a copy started from it: the chain from
        // the task's start to its result stays here.
        if t.checkpoints.len() > MAX_TASK_CHECKPOINTS {
            let used = |id: &ContentId| {
                t.copies.iter().any(|c| {
                    c.resume.is_some_and(|(r, _)| r == *id)
                        || c.reported.as_ref().and_then(|r| r.resumed) == Some(*id)
                })
            };
            // Never the one just acknowledged: its provider may go on from it.
            let fresh = p.checkpoint;
            if let Some(pos) = t.checkpoints.iter().position(|k| !used(&k.id) && k.id != fresh) {
                t.checkpoints.remove(pos);
            }
        }
        self.touch(p.task);
        Ok(())
    }

    /// The checkpoints every task of the running jobs may still resume
    /// from: content to keep.
    pub fn checkpoints_held(&self) -> impl Iterator<Item = ContentId> + '_ {
        self.jobs
            .values()
            .flat_map(|j| j.tasks.iter())
            .flat_map(|t| t.checkpoints.iter().map(|k| k.id))
    }
}

/// Whether copy `c`'s run may have started from `from`: the beginning, the
/// checkpoint it was told to resume from, or one of its own.
pub(super) fn started_from(t: &TaskRecord, c: &Copy, from: Option<ContentId>) -> bool {
    match from {
        None => true,
        Some(id) => {
            c.resume.is_some_and(|(r, _)| r == id)
                || t.checkpoints.iter().any(|k| k.id == id && k.attempt == c.attempt)
        }
    }
}

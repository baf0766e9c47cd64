//! Pipelines: a job whose inputs are another job's outputs
//! (`inputs_from`). Task i of the downstream job waits
//! ([`TaskPhase::Waiting`]) for task i of the upstream job, and is placed as
//! soon as that output is verified; if it fails for good, so does task i
//! downstream, counted against the downstream job's `max_failures`.
//!
//! The verified output is held here (a task is verified only once its
//! output is), so the downstream input goes to its provider like any
//! uploaded input. Binding rewrites the downstream spec's input (id and
//! size) and is persisted with the task's new phase, so a restart neither
//! loses a bound input nor binds one twice.

use super::*;
use crate::job::InputSpec;

/// What task i of an upstream job means for task i downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// Not settled yet: the downstream task waits.
    Waiting,
    /// Verified: its output (held here) is the downstream input.
    Verified {
        /// The output.
        output: ContentId,
        /// Its size.
        size: Bytes,
    },
    /// Failed for good, with why.
    Failed(String),
}

impl Feed {
    /// What an upstream task feeds downstream now.
    pub fn of(t: &TaskRecord) -> Feed {
        match (t.phase, t.output) {
            (TaskPhase::Verified, Some(output)) => Feed::Verified {
                output,
                size: t
                    .copies
                    .iter()
                    .filter_map(|c| c.reported.as_ref())
                    .find(|r| r.output == output)
                    .map_or(Bytes(0), |r| r.output_size),
            },
            (TaskPhase::Verified, None) => Feed::Failed("verified without an output".into()),
            (TaskPhase::Failed, _) => Feed::Failed(t.error.clone().unwrap_or_else(|| "failed".into())),
            _ => Feed::Waiting,
        }
    }

    /// The downstream input spec of upstream task `name` (a placeholder,
    /// the empty content, until it is verified).
    pub fn input(&self, name: String) -> InputSpec {
        let (id, size) = match self {
            Feed::Verified { output, size } => (*output, *size),
            _ => (ContentId::of(&[]), Bytes(0)),
        };
        InputSpec {
            name,
            id,
            size,
            estimate: None,
        }
    }
}

impl Requester {
    /// Sets each task of the new pipeline job `id` from what its upstream
    /// task feeds (`feeds`, in task order): placed now, waiting, or failed.
    pub fn start_pipeline(&mut self, id: JobId, feeds: &[Feed], now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if let Some(up) = job.record.spec.inputs_from {
            self.downstream.entry(up).or_default().insert(id);
        }
        for (i, feed) in feeds.iter().enumerate() {
            if let Some(t) = self.jobs.get_mut(&id).and_then(|j| j.tasks.get_mut(i)) {
                // Verified feeds are bound in the spec already.
                if *feed == Feed::Waiting {
                    t.phase = TaskPhase::Waiting;
                }
            }
            if let Feed::Failed(_) = feed {
                self.bind(id, i as u32, feed, now);
            }
        }
    }

    /// Task `task` settled (or its job ended): feeds the same task of every
    /// job that takes its inputs from that job.
    pub(super) fn feed_downstream(&mut self, task: TaskId, now: Timestamp) {
        let Some(down) = self.downstream.get(&task.job) else {
            return;
        };
        let down: Vec<JobId> = down.iter().copied().collect();
        let Some(feed) = self
            .jobs
            .get(&task.job)
            .and_then(|j| j.tasks.get(task.index as usize))
            .map(Feed::of)
        else {
            return;
        };
        if feed == Feed::Waiting {
            return;
        }
        for d in down {
            self.bind(d, task.index, &feed, now);
        }
    }

    /// After a restart: binds what upstream settled while this job was
    /// not in memory yet, in either order of restoring the two.
    pub(super) fn restore_pipeline(&mut self, id: JobId, now: Timestamp) {
        let Some(job) = self.jobs.get(&id) else { return };
        let waiting: Vec<u32> = job
            .tasks
            .iter()
            .filter(|t| t.phase == TaskPhase::Waiting)
            .map(|t| t.id.index)
            .collect();
        if let Some(up) = job.record.spec.inputs_from {
            self.downstream.entry(up).or_default().insert(id);
            for i in waiting {
                self.feed_downstream(TaskId::new(up, i), now);
            }
        }
        let settled: Vec<u32> = self.jobs.get(&id).map_or(Vec::new(), |j| {
            j.tasks
                .iter()
                .filter(|t| matches!(t.phase, TaskPhase::Verified | TaskPhase::Failed))
                .map(|t| t.id.index)
                .collect()
        });
        for i in settled {
            self.feed_downstream(TaskId::new(id, i), now);
        }
    }

    /// Gives downstream task `idx` of job `id` its input, or fails it.
    fn bind(&mut self, id: JobId, idx: u32, feed: &Feed, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if job.record.state.is_terminal() {
            return;
        }
        let up = job.record.spec.inputs_from;
        let Some(t) = job.tasks.get_mut(idx as usize) else {
            return;
        };
        if !matches!(t.phase, TaskPhase::Waiting | TaskPhase::Pending) || !t.copies.is_empty() {
            return;
        }
        match feed {
            Feed::Waiting => {}
            Feed::Verified { output, size } => {
                if t.phase != TaskPhase::Waiting {
                    return;
                }
                t.phase = TaskPhase::Pending;
                if let Some(input) = job.record.spec.inputs.get_mut(idx as usize) {
                    input.id = *output;
                    input.size = *size;
                }
                self.dirty_jobs.insert(id);
                self.touch(TaskId::new(id, idx));
            }
            Feed::Failed(why) => {
                t.phase = TaskPhase::Failed;
                t.error = Some(match up {
                    Some(up) => format!("not run: its input, task {idx} of job {up}, failed: {why}"),
                    None => format!("not run: its input failed: {why}"),
                });
                let all_settled = job.all_settled();
                let failed = verify::over_budget(job);
                self.touch(TaskId::new(id, idx));
                if let Some(why) = failed {
                    self.fail_job(id, why, now);
                } else if all_settled {
                    self.finish_job(id, now);
                }
                self.feed_downstream(TaskId::new(id, idx), now);
            }
        }
    }
}

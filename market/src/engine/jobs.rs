//! Jobs on disk: what a turn writes of the jobs that changed, which jobs a
//! restart brings back, and reading a job or the list of jobs whatever
//! memory still holds.
//!
//! Every changed job is written with a one-line summary (for listing the
//! node's history without reading every task) and, while it runs, an
//! `active/` marker: a restart reads only the active jobs, and the
//! requester lets ended ones leave memory, so neither start time nor
//! memory grows with history (see [`crate::records`]).

use agora_protocol::JobId;

use super::Engine;
use crate::job::{JobRecord, Summary, TaskRecord};
use crate::records::{self, RecordError};

impl Engine {
    /// Writes the jobs and tasks the requester changed this turn, and the
    /// bans it made (a ban outlives a restart).
    pub(super) fn write_dirty_jobs(&mut self) {
        for (node, why) in self.requester.take_new_bans() {
            self.writes.put(records::ban_key(&node), &why);
        }
        let (jobs, tasks) = self.requester.take_dirty();
        for t in &tasks {
            self.writes.put(records::task_key(&t.id), t);
        }
        for j in &jobs {
            self.writes.put(records::job_key(&j.id), j);
            if let Some((_, tasks)) = self.requester.job(&j.id) {
                self.writes
                    .put(records::job_summary_key(j.submitted_at, &j.id), &j.summary(tasks));
            }
            if j.state.is_terminal() {
                self.writes.delete(records::active_key(&j.id));
            } else {
                self.writes.put(records::active_key(&j.id), &());
            }
        }
    }

    /// The jobs to restore at start: those marked active (after building
    /// the markers once from every job, for records written before them).
    pub(super) fn active_jobs(&mut self) -> Result<Vec<(JobRecord, Vec<TaskRecord>)>, RecordError> {
        let host = self.host.as_ref();
        let indexed = records::get::<u32>(host, records::INDEX)? == Some(records::INDEX_VERSION);
        let ids: Vec<JobId> = if indexed {
            records::scan::<()>(host, records::ACTIVE)?
                .into_iter()
                .filter_map(|(k, _)| records::job_after(&k, records::ACTIVE))
                .collect()
        } else {
            self.build_index()?
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(j) = self.load_job(&id)? {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// Writes the `active/` and `jobsum/` indexes from every job record;
    /// returns the active jobs.
    fn build_index(&mut self) -> Result<Vec<JobId>, RecordError> {
        let mut active = Vec::new();
        for (_, job) in records::scan::<JobRecord>(self.host.as_ref(), records::JOB)? {
            let tasks: Vec<TaskRecord> = records::scan(self.host.as_ref(), &records::tasks_of(&job.id))?
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            self.writes.put(
                records::job_summary_key(job.submitted_at, &job.id),
                &job.summary(&tasks),
            );
            if !job.state.is_terminal() {
                self.writes.put(records::active_key(&job.id), &());
                active.push(job.id);
            }
        }
        self.writes.put(records::INDEX, &records::INDEX_VERSION);
        Ok(active)
    }

    /// A job and its tasks from the records, if complete.
    fn load_job(&self, id: &JobId) -> Result<Option<(JobRecord, Vec<TaskRecord>)>, RecordError> {
        let host = self.host.as_ref();
        let Some(job) = records::get::<JobRecord>(host, &records::job_key(id))? else {
            return Ok(None);
        };
        let tasks: Vec<TaskRecord> = records::scan(host, &records::tasks_of(id))?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        if tasks.len() != job.spec.inputs.len() {
            tracing::warn!(job = %id, "job record incomplete in the store; skipping it");
            return Ok(None);
        }
        Ok(Some((job, tasks)))
    }

    /// Runs `f` on a job and its tasks: from memory while the requester
    /// holds it, from the records once it has left memory.
    pub fn with_job<R>(&self, id: &JobId, f: impl FnOnce(&JobRecord, &[TaskRecord]) -> R) -> Option<R> {
        if let Some((rec, tasks)) = self.requester.job(id) {
            return Some(f(rec, tasks));
        }
        match self.load_job(id) {
            Ok(Some((rec, tasks))) => Some(f(&rec, &tasks)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "cannot read the job's records");
                None
            }
        }
    }

    /// The newest `limit` jobs in a line each, newest first; those still in
    /// memory as they are now.
    pub fn job_summaries(&self, limit: usize) -> Vec<Summary> {
        let stored = records::decoded_rev::<Summary>(self.host.as_ref(), records::JOB_SUMMARY, limit)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the job summaries");
                Vec::new()
            });
        stored
            .into_iter()
            .map(|s| match self.requester.job(&s.id) {
                Some((rec, tasks)) => rec.summary(tasks),
                None => s,
            })
            .collect()
    }
}

//! Live logs: what the guests of this node's tasks write to stderr while
//! they run, as their providers send it ([`MarketRequest::Log`]). Kept per
//! copy, the newest [`MAX_COPY_LOG`] bytes of each, for at most
//! [`MAX_LOGS`] copies (the oldest go first). A log is the provider's word:
//! never part of a result, never verified, and only its own copies'
//! provider may write to one.
//!
//! [`MarketRequest::Log`]: agora_protocol::rpc::MarketRequest::Log

use std::collections::{HashMap, VecDeque};

use agora_protocol::id::{MessageId, TaskId};
use agora_protocol::{JobId, NodeId};

use super::Requester;

/// Most bytes kept of one copy's log: the newest.
pub const MAX_COPY_LOG: usize = 32 * 1024;
/// Most copies whose logs are kept.
pub const MAX_LOGS: usize = 512;

/// One copy's log as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyLog {
    /// The task.
    pub task: TaskId,
    /// Which copy (its attempt).
    pub attempt: u16,
    /// Who runs it.
    pub provider: NodeId,
    /// Where `bytes` starts in the guest's stderr (bytes before it were
    /// dropped for room, or never arrived).
    pub start: u64,
    /// The bytes kept.
    pub bytes: Vec<u8>,
}

impl CopyLog {
    /// Where the bytes kept end in the guest's stderr.
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Adds `text`, which starts at `offset`: what overlaps the bytes held
    /// is skipped (a chunk sent again), a gap is skipped over.
    fn append(&mut self, offset: u64, text: &[u8]) {
        let end = self.end();
        if offset > end {
            self.bytes.clear();
            self.start = offset;
        }
        let skip = (self.end().saturating_sub(offset) as usize).min(text.len());
        self.bytes.extend_from_slice(&text[skip..]);
        if self.bytes.len() > MAX_COPY_LOG {
            let cut = self.bytes.len() - MAX_COPY_LOG;
            self.bytes.drain(..cut);
            self.start += cut as u64;
        }
    }
}

/// The logs held, by agreement.
#[derive(Debug, Default)]
pub(super) struct Logs {
    by_agreement: HashMap<MessageId, CopyLog>,
    order: VecDeque<MessageId>,
}

/// Why a log chunk was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// No copy of that task under that agreement with that provider.
    #[error("no copy of this task runs under that agreement with the sender")]
    Unknown,
}

impl Requester {
    /// A chunk of a running copy's stderr from its provider.
    pub fn on_log(
        &mut self,
        from: NodeId,
        agreement: MessageId,
        task: TaskId,
        offset: u64,
        text: &[u8],
    ) -> Result<(), LogError> {
        let copy = self
            .jobs
            .get(&task.job)
            .and_then(|j| j.tasks.get(task.index as usize))
            .and_then(|t| {
                t.copies
                    .iter()
                    .find(|c| c.provider == from && c.agreement == Some(agreement))
            })
            .ok_or(LogError::Unknown)?;
        let logs = &mut self.logs;
        if !logs.by_agreement.contains_key(&agreement) {
            while logs.order.len() >= MAX_LOGS {
                if let Some(old) = logs.order.pop_front() {
                    logs.by_agreement.remove(&old);
                }
            }
            logs.order.push_back(agreement);
            logs.by_agreement.insert(
                agreement,
                CopyLog {
                    task,
                    attempt: copy.attempt,
                    provider: from,
                    start: offset,
                    bytes: Vec::new(),
                },
            );
        }
        if let Some(log) = logs.by_agreement.get_mut(&agreement) {
            log.append(offset, text);
        }
        Ok(())
    }

    /// The logs held of `job`'s copies (of task `task` only, if given), in
    /// task and attempt order.
    pub fn logs(&self, job: JobId, task: Option<u32>) -> Vec<&CopyLog> {
        let mut v: Vec<&CopyLog> = self
            .logs
            .by_agreement
            .values()
            .filter(|l| l.task.job == job && task.is_none_or(|t| l.task.index == t))
            .collect();
        v.sort_by_key(|l| (l.task.index, l.attempt));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> CopyLog {
        CopyLog {
            task: TaskId::new(JobId([1; 16]), 0),
            attempt: 0,
            provider: agora_protocol::Keypair::from_secret([2; 32]).node_id(),
            start: 0,
            bytes: Vec::new(),
        }
    }

    #[test]
    fn chunks_sent_again_are_not_doubled_and_a_gap_is_skipped_over() {
        let mut l = log();
        l.append(0, b"one\n");
        l.append(0, b"one\ntwo\n");
        assert_eq!(l.bytes, b"one\ntwo\n");
        l.append(20, b"six\n");
        assert_eq!((l.start, l.bytes.as_slice()), (20, &b"six\n"[..]));
        assert_eq!(l.end(), 24);
    }

    #[test]
    fn only_the_newest_bytes_are_kept() {
        let mut l = log();
        for i in 0..100u64 {
            l.append(i * 1000, &[b'x'; 1000]);
        }
        assert_eq!(l.bytes.len(), MAX_COPY_LOG);
        assert_eq!(l.end(), 100_000);
        assert_eq!(l.start, 100_000 - MAX_COPY_LOG as u64);
    }
}

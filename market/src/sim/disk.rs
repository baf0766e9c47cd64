//! A simulated node's disk: what its engine wrote, and what of it would
//! survive a crash.
//!
//! Like the node's sled store, a write is readable at once; it is durable
//! once flushed. A turn whose outputs wait for its writes flushes at once
//! (with everything before it); a turn that flushes nothing leaves its
//! writes pending until the next flush or, at the latest, the store's lazy
//! flush interval. A crash loses what is pending.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use agora_protocol::ContentId;

use crate::records::{Host, RecordError, Write};

/// How soon writes that nobody waits on reach the disk (as the node's store).
pub(super) const LAZY_FLUSH_MS: u64 = 500;

#[derive(Debug, Default)]
struct State {
    /// What reads see.
    applied: BTreeMap<String, Vec<u8>>,
    /// What survives a crash.
    durable: BTreeMap<String, Vec<u8>>,
    /// Writes applied but not durable, with when they were written.
    pending: Vec<(u64, Vec<Write>)>,
    /// Content held (blobs are durable as soon as stored, as the node's
    /// `put_verified`; the simulation never stores them lazily).
    content: HashMap<ContentId, u64>,
}

/// A node's disk, shared by the node and its engine's host.
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk(Arc<Mutex<State>>);

fn apply(map: &mut BTreeMap<String, Vec<u8>>, writes: &[Write]) {
    for w in writes {
        match w {
            Write::Put { key, value } => {
                map.insert(key.clone(), value.clone());
            }
            Write::Delete { key } => {
                map.remove(key);
            }
        }
    }
}

impl Disk {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a turn's writes; `flush` makes them, and all before them,
    /// durable.
    pub(super) fn write(&self, writes: Vec<Write>, flush: bool, now: u64) {
        let mut s = self.state();
        apply(&mut s.applied, &writes);
        s.pending.push((now, writes));
        if flush {
            Self::flush_locked(&mut s);
        }
    }

    /// The lazy flush: pending writes older than the interval become durable.
    pub(super) fn tick(&self, now: u64) {
        let mut s = self.state();
        if s.pending.first().is_some_and(|(t, _)| now >= t + LAZY_FLUSH_MS) {
            Self::flush_locked(&mut s);
        }
    }

    fn flush_locked(s: &mut State) {
        for (_, w) in std::mem::take(&mut s.pending) {
            apply(&mut s.durable, &w);
        }
    }

    /// A crash: what was not durable is gone.
    pub(super) fn crash(&self) {
        let mut s = self.state();
        s.pending.clear();
        s.applied = s.durable.clone();
    }

    /// Stores content of `size` bytes.
    pub(super) fn keep(&self, id: ContentId, size: usize) {
        self.state().content.insert(id, size as u64);
    }

    /// The engine's view of this disk.
    pub(super) fn host(&self) -> Box<dyn Host> {
        Box::new(self.clone())
    }
}

impl Host for Disk {
    fn record(&self, key: &str) -> Result<Option<Vec<u8>>, RecordError> {
        Ok(self.state().applied.get(key).cloned())
    }

    fn records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        Ok(self
            .state()
            .applied
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn holds(&self, id: &ContentId) -> bool {
        self.state().content.contains_key(id)
    }

    fn stored_size(&self, id: &ContentId) -> Option<u64> {
        self.state().content.get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> Write {
        Write::Put {
            key: k.into(),
            value: b"1".to_vec(),
        }
    }

    #[test]
    fn a_crash_loses_only_what_was_not_flushed() {
        let d = Disk::default();
        d.write(vec![put("a")], false, 0);
        d.write(vec![put("b")], true, 10);
        d.write(vec![put("c")], false, 20);
        assert!(d.record("c").unwrap().is_some(), "readable at once");
        d.crash();
        assert!(d.record("a").unwrap().is_some(), "flushed with the later turn");
        assert!(d.record("b").unwrap().is_some());
        assert!(d.record("c").unwrap().is_none(), "lost in the crash");
    }

    #[test]
    fn lazy_writes_become_durable_after_the_interval() {
        let d = Disk::default();
        d.write(vec![put("a")], false, 0);
        d.tick(LAZY_FLUSH_MS - 1);
        d.crash();
        assert!(d.record("a").unwrap().is_none());
        d.write(vec![put("a")], false, 1000);
        d.tick(1000 + LAZY_FLUSH_MS);
        d.crash();
        assert!(d.record("a").unwrap().is_some());
    }
}

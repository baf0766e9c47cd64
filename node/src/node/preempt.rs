//! An interactive task never waits behind batch work for a slot: when
//! every slot runs, the provider starts it anyway (the engine allows one
//! such task per running batch task) and the node pauses one batch run in
//! place while it runs. The paused guest keeps its whole state between two
//! instructions and uses no CPU (the executor's epoch callback parks it),
//! so it loses nothing and goes on, from where it stopped, once the
//! interactive task is done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The batch runs holding a slot, each with its pause flag.
#[derive(Debug, Default)]
pub(crate) struct Preemption {
    runs: Mutex<Vec<Arc<AtomicBool>>>,
}

/// A batch run holding a slot; deregistered when dropped.
pub(crate) struct BatchRun {
    registry: Arc<Preemption>,
    flag: Arc<AtomicBool>,
}

/// A batch run paused for an interactive one; resumed when dropped.
pub(crate) struct Paused(Arc<AtomicBool>);

impl Preemption {
    fn runs(&self) -> std::sync::MutexGuard<'_, Vec<Arc<AtomicBool>>> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a batch run that holds a slot.
    pub(crate) fn batch(self: &Arc<Self>) -> BatchRun {
        let flag = Arc::new(AtomicBool::new(false));
        self.runs().push(flag.clone());
        BatchRun {
            registry: self.clone(),
            flag,
        }
    }

    /// Pauses the batch run that started last among those not paused yet.
    pub(crate) fn pause_one(&self) -> Option<Paused> {
        let runs = self.runs();
        let flag = runs.iter().rev().find(|f| !f.load(Ordering::Relaxed))?;
        flag.store(true, Ordering::Relaxed);
        Some(Paused(flag.clone()))
    }

    /// Batch runs paused now.
    #[cfg(test)]
    pub(crate) fn paused(&self) -> usize {
        self.runs().iter().filter(|f| f.load(Ordering::Relaxed)).count()
    }
}

impl BatchRun {
    /// The flag the run parks on while it is set.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
}

impl Drop for BatchRun {
    fn drop(&mut self) {
        self.registry.runs().retain(|f| !Arc::ptr_eq(f, &self.flag));
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_batch_run_is_paused_first_each_at_most_once_and_resumed_when_done() {
        let p = Arc::new(Preemption::default());
        let (a, b) = (p.batch(), p.batch());
        let first = p.pause_one().expect("a batch run to pause");
        assert!(b.flag().load(Ordering::Relaxed) && !a.flag().load(Ordering::Relaxed));
        let second = p.pause_one().expect("another");
        assert!(a.flag().load(Ordering::Relaxed));
        assert!(p.pause_one().is_none(), "none left to pause");
        assert_eq!(p.paused(), 2);
        drop(first);
        assert!(!b.flag().load(Ordering::Relaxed), "resumed");
        drop(b);
        drop(second);
        drop(a);
        assert!(p.pause_one().is_none(), "finished runs are gone");
    }
}

//! How many heaps the C allocator keeps in a node process, and when it
//! gives back what it keeps.
//!
//! glibc's malloc gives each thread that contends for the heap an arena of
//! its own, up to eight per core, and keeps what is freed inside each arena
//! for reuse. A node has many threads that allocate (the runtime's workers,
//! the store's writer, sled's IO threads, blocking tasks), so after a burst
//! of work its free memory was spread over several arenas, each holding on
//! to its own. A node process caps the arenas at [`ARENAS`]: after the
//! bench's 2,000 no-op tasks its providers' anonymous memory went from
//! about 24 MB to 18.5 MB, with no change in throughput that the bench's
//! run-to-run spread shows. Elsewhere than glibc on Linux this does
//! nothing.
//!
//! Even within two arenas, what a burst of work frees stays with the
//! allocator, spread over pages that also hold live data; glibc returns a
//! heap's free top to the kernel, not the free pages inside it. So a node
//! that has had no work for [`IdleTrim::AFTER`] asks it once to give back
//! every whole free page (`malloc_trim`), on a blocking thread: a provider
//! that goes idle after a burst of work then holds what it uses, not what
//! it once used (about 2 MB less after 1,000 no-op tasks). The next work
//! allocates again as it would have anyway.

use std::time::{Duration, Instant};

/// Arenas a node process uses at most.
pub const ARENAS: i32 = 2;

/// Caps the allocator's arenas at [`ARENAS`]; call before starting
/// threads. Whether the allocator took the cap (false where there is
/// nothing to cap).
pub fn limit_arenas() -> bool {
    imp::limit_arenas()
}

/// Asks the allocator to return its free pages to the kernel. Whether it
/// returned any (false where there is nothing to ask).
pub fn give_back() -> bool {
    imp::give_back()
}

/// When an idle node gives its free memory back: once per idle spell, after
/// [`IdleTrim::AFTER`] without work. Pure: the caller says whether work is
/// under way and does the giving back.
#[derive(Debug)]
pub struct IdleTrim {
    last_busy: Instant,
    done: bool,
}

impl IdleTrim {
    /// Idle time before the free memory goes back: longer than the gaps
    /// between the tasks of a job, so a busy node never trims.
    pub const AFTER: Duration = Duration::from_secs(2);

    /// A node that has just started: its start-up is its last work.
    pub fn new(now: Instant) -> IdleTrim {
        IdleTrim {
            last_busy: now,
            done: false,
        }
    }

    /// Whether to give the memory back now, given whether work is under
    /// way at `now`. True at most once per idle spell.
    pub fn tick(&mut self, busy: bool, now: Instant) -> bool {
        if busy {
            self.last_busy = now;
            self.done = false;
            return false;
        }
        if self.done || now.saturating_duration_since(self.last_busy) < Self::AFTER {
            return false;
        }
        self.done = true;
        true
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod imp {
    use std::ffi::c_int;

    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
        fn malloc_trim(pad: usize) -> c_int;
    }

    /// glibc's `M_ARENA_MAX` (malloc.h).
    const M_ARENA_MAX: c_int = -8;

    pub(super) fn limit_arenas() -> bool {
        // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX
        // takes any positive count and may be set at any time.
        unsafe { mallopt(M_ARENA_MAX, super::ARENAS) == 1 }
    }

    pub(super) fn give_back() -> bool {
        // SAFETY: malloc_trim takes the arenas' locks itself and only
        // returns free pages; any pad is valid.
        unsafe { malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn limit_arenas() -> bool {
        false
    }

    pub(super) fn give_back() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_allocator_accepts_the_arena_cap() {
        assert!(limit_arenas());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_inside_the_heap_goes_back_to_the_kernel() {
        // Many small blocks, then the first three quarters freed and every
        // other one of the rest: the free pages lie below live ones, where
        // glibc keeps them until asked.
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1000]).collect();
        let mut i = 0;
        blocks.retain(|_| {
            i += 1;
            i % 2 == 0 && i > 15_000
        });
        assert!(give_back(), "nothing went back");
        assert!(blocks.iter().all(|b| b.len() == 1000));
    }

    #[test]
    fn a_node_busy_until_now_does_not_trim() {
        let t0 = Instant::now();
        let mut trim = IdleTrim::new(t0);
        assert!(!trim.tick(true, t0 + IdleTrim::AFTER * 3));
        assert!(!trim.tick(false, t0 + IdleTrim::AFTER * 3));
    }

    #[test]
    fn an_idle_node_trims_once_after_the_wait_and_again_only_after_more_work() {
        let t0 = Instant::now();
        let mut trim = IdleTrim::new(t0);
        assert!(!trim.tick(false, t0 + IdleTrim::AFTER / 2));
        assert!(trim.tick(false, t0 + IdleTrim::AFTER));
        assert!(
            !trim.tick(false, t0 + IdleTrim::AFTER * 10),
            "twice in one idle spell"
        );
        let busy = t0 + IdleTrim::AFTER * 11;
        assert!(!trim.tick(true, busy));
        assert!(!trim.tick(false, busy + IdleTrim::AFTER / 2));
        assert!(trim.tick(false, busy + IdleTrim::AFTER));
    }
}

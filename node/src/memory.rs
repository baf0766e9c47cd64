//! How many heaps the C allocator keeps in a node process.
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

/// Arenas a node process uses at most.
pub const ARENAS: i32 = 2;

/// Caps the allocator's arenas at [`ARENAS`]; call before starting
/// threads. Whether the allocator took the cap (false where there is
/// nothing to cap).
pub fn limit_arenas() -> bool {
    imp::limit_arenas()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod imp {
    use std::ffi::c_int;

    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    /// glibc's `M_ARENA_MAX` (malloc.h).
    const M_ARENA_MAX: c_int = -8;

    pub(super) fn limit_arenas() -> bool {
        // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX
        // takes any positive count and may be set at any time.
        unsafe { mallopt(M_ARENA_MAX, super::ARENAS) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn limit_arenas() -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn the_allocator_accepts_the_arena_cap() {
        assert!(super::limit_arenas());
    }
}

//! How many heaps the C allocator keeps in a node process, and what an
//! idle node gives back.
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
//! that has had no work for [`IdleTrim::AFTER`] asks it to give back every
//! whole free page (`malloc_trim`), on a blocking thread, and again every
//! [`IdleTrim::AGAIN`] while it stays idle ([`trim`]): a provider that goes
//! idle after a burst of work then holds what it uses, not what it once
//! used (about 2 MB less after 1,000 no-op tasks). The next work allocates
//! again as it would have anyway.
//!
//! Most of an idle node's resident memory is not its heap but pages of its
//! own binary: code it ran once (start-up, calibration, the work it just
//! did) stays mapped until the kernel runs short of memory. At the same
//! moments the node drops its mappings of the binary's pages it never wrote
//! ([`drop_code`]): the pages stay in the page cache, shared with every
//! other process of that binary and free for the kernel to reclaim, and the
//! node maps again, on its next page fault there, only the code it goes on
//! to run. That is little only because the binary's code is laid out with
//! what an idle node runs first (node/build.rs): a fault maps a whole
//! page-cache folio, 128 KB here. After a job of 1,500 no-op tasks a
//! provider's pages of files went from 22 MB to 6–7 MB once it had been
//! idle for 35 s (testnet README, "What an idle node's memory is"). A mapping
//! holding a page the process wrote (relocated data, a debugger's
//! breakpoint) is left alone: dropping it would lose the write.

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

/// Drops this process's mappings of its own executable's pages that it never
/// wrote (code, constants), so that its resident set holds only what it
/// maps again by running. Bytes of mappings dropped (0 where there is
/// nothing to drop).
pub fn drop_code() -> std::io::Result<u64> {
    code::drop_code()
}

/// What [`trim`] gave back.
#[derive(Debug)]
pub struct Trimmed {
    /// Whether the allocator returned free pages ([`give_back`]).
    pub heap: bool,
    /// Bytes of the binary's mappings dropped ([`drop_code`]).
    pub code: std::io::Result<u64>,
}

/// Gives back what an idle process holds and does not use: the allocator's
/// free pages and its mappings of its own binary. At most once per
/// [`TRIM_EVERY`] in a process (None when sooner): several nodes in one
/// process (a testnet, the scale run) each go idle on their own, and the
/// heap and the binary's pages are the process's.
pub fn trim() -> Option<Trimmed> {
    static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < TRIM_EVERY) {
            return None;
        }
        *last = Some(Instant::now());
    }
    let trimmed = Trimmed {
        heap: give_back(),
        code: drop_code(),
    };
    TRIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(trimmed)
}

static TRIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Trims this process has done so far.
pub fn trims() -> u64 {
    TRIMS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The least time between two trims of one process: a single node's pace
/// while idle ([`IdleTrim::AGAIN`]). Nodes sharing a process share its
/// heap and binary, so trimming them more often gives back nothing more;
/// at 200 nodes of one process a trim every 5 s took ~1 % of their idle
/// work (a read of a memory map as large as theirs).
pub const TRIM_EVERY: Duration = IdleTrim::AGAIN;

/// When an idle node gives its free memory back: after [`IdleTrim::AFTER`]
/// without work, then every [`IdleTrim::AGAIN`] while the idle spell lasts.
/// Pure: the caller says whether work is under way and does the giving
/// back.
#[derive(Debug)]
pub struct IdleTrim {
    last_busy: Instant,
    /// The last trim of this idle spell, if any.
    last_trim: Option<Instant>,
}

impl IdleTrim {
    /// Idle time before the free memory goes back: longer than the gaps
    /// between the tasks of a job, so a busy node never trims.
    pub const AFTER: Duration = Duration::from_secs(2);

    /// Time between trims while idle. What ends a job (its payments
    /// countersigned, its chain checkpointed and audited, its logs and
    /// metrics read) runs after the first trim and maps its code again;
    /// the next one gives that back. A trim of a node that did nothing
    /// since the last costs a read of its memory map (~0.5 ms) and a few
    /// dozen page faults.
    pub const AGAIN: Duration = Duration::from_secs(10);

    /// A node that has just started: its start-up is its last work.
    pub fn new(now: Instant) -> IdleTrim {
        IdleTrim {
            last_busy: now,
            last_trim: None,
        }
    }

    /// Whether to give the memory back now, given whether work is under
    /// way at `now`.
    pub fn tick(&mut self, busy: bool, now: Instant) -> bool {
        if busy {
            self.last_busy = now;
            self.last_trim = None;
            return false;
        }
        let due = match self.last_trim {
            None => now.saturating_duration_since(self.last_busy) >= Self::AFTER,
            Some(t) => now.saturating_duration_since(t) >= Self::AGAIN,
        };
        if due {
            self.last_trim = Some(now);
        }
        due
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

/// One mapping in `/proc/self/smaps`: where it is, what it maps, and
/// whether the process ever wrote a page of it.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    /// (major, minor) of the file's device, and its inode: (0, 0), 0 for
    /// anonymous memory.
    device: (u32, u32),
    inode: u64,
    /// The file's path as the kernel names it (` (deleted)` appended once
    /// the file is gone); none for anonymous memory.
    path: Option<String>,
    /// Resident, anonymous (written, so no longer the file's) and swapped
    /// out, kB.
    rss_kb: u64,
    anonymous_kb: u64,
    swap_kb: u64,
}

/// The mappings of `smaps` text, in order. A mapping whose lines cannot be
/// read is left out, and with it any chance of dropping it.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        if let Some(m) = header(line) {
            out.extend(current.replace(m));
            continue;
        }
        let Some(m) = current.as_mut() else { continue };
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kb = || rest.trim().strip_suffix(" kB")?.trim().parse::<u64>().ok();
        match key {
            "Rss" => m.rss_kb = kb().unwrap_or(0),
            // Unreadable counts as written: such a mapping is never dropped.
            "Anonymous" => m.anonymous_kb = kb().unwrap_or(u64::MAX),
            "Swap" => m.swap_kb = kb().unwrap_or(u64::MAX),
            _ => {}
        }
    }
    out.extend(current);
    out
}

/// A mapping's first line: `start-end perms offset major:minor inode [path]`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn header(line: &str) -> Option<Mapping> {
    // Single spaces up to the inode, then padding and the path, which may
    // hold spaces.
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode = fields.next()?.parse().ok()?;
    if perms.len() != 4 {
        return None;
    }
    // The rest of the line, which may hold spaces.
    let path = fields.next().map(str::trim).filter(|p| !p.is_empty());
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        writable: perms.as_bytes()[1] == b'w',
        device: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode,
        path: path.map(str::to_owned),
        // Until its lines say otherwise, a mapping counts as written.
        rss_kb: 0,
        anonymous_kb: u64::MAX,
        swap_kb: u64::MAX,
    })
}

/// The mappings of one file, known by its `(device, inode)` or its `path`,
/// that may be dropped without losing a byte: read-only, resident, and
/// without a page the process wrote (in memory or swapped out). Either
/// name is enough: on an overlay filesystem a mapping's device and inode
/// can be those of the file underneath, and `stat`'s those of the overlay.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn droppable(all: &[Mapping], device: (u32, u32), inode: u64, path: &str) -> Vec<(usize, usize)> {
    all.iter()
        .filter(|m| (m.device == device && m.inode == inode && inode != 0) || m.path.as_deref() == Some(path))
        .filter(|m| !m.writable && m.rss_kb > 0 && m.anonymous_kb == 0 && m.swap_kb == 0)
        .map(|m| (m.start, m.end))
        .collect()
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod code {
    use std::os::unix::fs::MetadataExt;

    pub(super) fn drop_code() -> std::io::Result<u64> {
        let exe = std::fs::metadata("/proc/self/exe")?;
        let dev = exe.dev();
        let device = (rustix::fs::major(dev), rustix::fs::minor(dev));
        let path = std::fs::read_link("/proc/self/exe")?;
        let path = path.to_string_lossy();
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let mut dropped = 0;
        for (start, end) in super::droppable(&super::mappings(&smaps), device, exe.ino(), &path) {
            // SAFETY: the range is one whole mapping of this process's own
            // executable, private and not writable, whose every page is
            // still the file's (smaps counts none anonymous or swapped):
            // MADV_DONTNEED only unmaps those pages, and the next access
            // maps the same bytes from the file again. Not writable, the
            // mapping cannot gain a written page meanwhile.
            let done = unsafe {
                rustix::mm::madvise(
                    start as *mut std::ffi::c_void,
                    end - start,
                    rustix::mm::Advice::LinuxDontNeed,
                )
            };
            if done.is_ok() {
                dropped += (end - start) as u64;
            }
        }
        Ok(dropped)
    }
}

#[cfg(not(target_os = "linux"))]
mod code {
    pub(super) fn drop_code() -> std::io::Result<u64> {
        Ok(0)
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

    const SMAPS: &str = "\
55d0a0000000-55d0a0400000 r--p 00000000 fe:01 4242                       /usr/bin/agora
Rss:                1024 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd mr mw me
55d0a0400000-55d0a2000000 r-xp 00400000 fe:01 4242                       /usr/bin/agora
Size:              28672 kB
Rss:               15000 kB
Anonymous:             0 kB
Swap:                  0 kB
55d0a2000000-55d0a2100000 r--p 02000000 fe:01 4242                       /usr/bin/agora
Rss:                 900 kB
Anonymous:           880 kB
Swap:                  0 kB
55d0a2100000-55d0a2101000 rw-p 02100000 fe:01 4242                       /usr/bin/agora
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
55d0a2200000-55d0a2300000 r-xp 00000000 fe:01 77                         /usr/lib/libc.so.6
Rss:                 800 kB
Anonymous:             0 kB
Swap:                  0 kB
55d0a2400000-55d0a2500000 r--p 00000000 00:00 0
Rss:                 100 kB
Anonymous:             0 kB
Swap:                  0 kB
7ffd00000000-7ffd00001000 r--p 00000000 fe:01 4242                       /usr/bin/agora
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  0 kB
7ffd00010000-7ffd00011000 r-xp 00000000 fe:01 4242                       /usr/bin/agora
Rss:                   4 kB
Anonymous:             0 kB
";

    #[test]
    fn only_the_binarys_unwritten_resident_read_only_mappings_are_dropped() {
        let all = mappings(SMAPS);
        assert_eq!(all.len(), 8);
        assert_eq!(
            droppable(&all, (0xfe, 1), 4242, "/usr/bin/agora"),
            vec![(0x55d0a0000000, 0x55d0a0400000), (0x55d0a0400000, 0x55d0a2000000),],
            "the relocated constants (anonymous pages), the writable data, \
             another file, anonymous memory, a mapping with nothing \
             resident and one whose swap is unknown all stay",
        );
        assert_eq!(
            droppable(&all, (0x00, 0x2a), 99, "/usr/bin/agora"),
            droppable(&all, (0xfe, 1), 4242, "/usr/bin/agora"),
            "known by its path alone (an overlay filesystem)",
        );
        assert!(
            droppable(&all, (0xfe, 2), 4242, "/usr/bin/other").is_empty(),
            "another file"
        );
        assert!(droppable(&all, (0, 0), 0, "").is_empty(), "anonymous memory");
    }

    #[test]
    fn unreadable_smaps_lines_drop_nothing() {
        let text = "55d0a0000000-55d0a0400000 r-xp 00000000 fe:01 4242 /usr/bin/agora\n\
                    Rss: 1024 kB\nAnonymous: lots\nSwap: 0 kB\n\
                    garbage line\n";
        let all = mappings(text);
        assert_eq!(all.len(), 1);
        assert!(droppable(&all, (0xfe, 1), 4242, "/usr/bin/agora").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn dropping_the_code_shrinks_the_resident_set_and_the_process_runs_on() {
        fn rss_file_kb() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
            line.split_ascii_whitespace().nth(1).unwrap().parse().unwrap()
        }
        let before = rss_file_kb();
        let dropped = drop_code().unwrap();
        let after = rss_file_kb();
        assert!(dropped > 0, "no mapping of the test binary dropped");
        assert!(
            after < before,
            "file pages resident: {before} kB before, {after} kB after"
        );
        // Code runs on from the file: the formatting machinery, say.
        assert_eq!(format!("{:>5}", 42), "   42");
    }

    #[test]
    fn a_process_trims_at_most_once_in_a_while_and_counts_its_trims() {
        let before = trims();
        let first = trim();
        assert!(trim().is_none(), "trimmed again at once");
        if first.is_some() {
            assert!(trims() > before);
        }
    }

    #[test]
    fn a_node_busy_until_now_does_not_trim() {
        let t0 = Instant::now();
        let mut trim = IdleTrim::new(t0);
        assert!(!trim.tick(true, t0 + IdleTrim::AFTER * 3));
        assert!(!trim.tick(false, t0 + IdleTrim::AFTER * 3));
    }

    #[test]
    fn an_idle_node_trims_after_the_wait_then_at_the_idle_pace_and_soon_after_more_work() {
        let t0 = Instant::now();
        let mut trim = IdleTrim::new(t0);
        assert!(!trim.tick(false, t0 + IdleTrim::AFTER / 2));
        let first = t0 + IdleTrim::AFTER;
        assert!(trim.tick(false, first));
        assert!(
            !trim.tick(false, first + IdleTrim::AGAIN / 2),
            "again before the idle pace"
        );
        assert!(trim.tick(false, first + IdleTrim::AGAIN));
        let busy = first + IdleTrim::AGAIN + IdleTrim::AFTER;
        assert!(!trim.tick(true, busy));
        assert!(!trim.tick(false, busy + IdleTrim::AFTER / 2));
        assert!(
            trim.tick(false, busy + IdleTrim::AFTER),
            "work restarts the short wait, not the idle pace"
        );
    }
}

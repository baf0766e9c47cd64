//! The guest's world: WASI preview 1 with nothing granted beyond stdio and
//! arguments, and deterministic clocks, sleep and randomness.
//!
//! wasmtime-wasi implements the file-descriptor functions (called through
//! the fuel-charging wrappers of `meter.rs`). Five functions are our own
//! because their host versions read the host's clocks, block, draw host
//! randomness or restrict exit codes: `clock_time_get`, `clock_res_get`,
//! `poll_oneoff`, `random_get` and `proc_exit`. GUEST-CONTRACT.md specifies
//! all of it precisely enough to reimplement.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime::{Caller, Extern, Linker, ResourceLimiter};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use super::meter::{HOST_CALL_FUEL, Meter, Moved, RANDOM_BYTE_FUEL, call_cost, charge};

/// The only import module a guest may use.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// Every function a guest may import from [`WASI_MODULE`]: all of WASI
/// preview 1. Without preopened directories or sockets the file-system and
/// socket functions can only fail (`EBADF`), so granting them lets ordinary
/// programs whose libc links them run, without granting any capability.
pub const GRANTED_FUNCTIONS: [&str; 46] = [
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// `argv[0]` of every task; the task's arguments follow it.
pub const ARGV0: &str = "task";

/// The virtual wall clock's reading at the start of every task:
/// 2024-01-01T00:00:00Z in nanoseconds since the Unix epoch.
pub const WALL_CLOCK_START_NS: u64 = 1_704_067_200_000_000_000;

/// How far virtual time advances on every clock reading, in nanoseconds.
/// Also the resolution `clock_res_get` reports.
pub const CLOCK_STEP_NS: u64 = 1_000;

/// The blake3 key-derivation context of the guest's random stream.
pub const RANDOM_CONTEXT: &str = "agora/1 guest random_get";

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
pub(crate) const ERRNO_FAULT: i32 = 21;
pub(crate) const ERRNO_INVAL: i32 = 28;

const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const CLOCK_PROCESS_CPUTIME: u32 = 2;
const CLOCK_THREAD_CPUTIME: u32 = 3;

const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
pub(crate) const SUBSCRIPTION_SIZE: usize = 48;
pub(crate) const EVENT_SIZE: usize = 32;
const SUBCLOCKFLAG_ABSTIME: u16 = 1;

/// Per-task store data.
pub(crate) struct State {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: Limiter,
    pub(crate) env: GuestEnv,
    pub(crate) throttle: super::run::Throttle,
    pub(crate) meter: Meter,
    pub(crate) checkpoints: super::checkpoint::Checkpointing,
}

/// The deterministic part of the guest's environment: virtual time and the
/// seeded random stream.
pub(crate) struct GuestEnv {
    /// Virtual nanoseconds since the task started.
    now: u64,
    rng: blake3::OutputReader,
}

impl GuestEnv {
    pub(crate) fn new(seed: u64) -> GuestEnv {
        let mut h = blake3::Hasher::new_derive_key(RANDOM_CONTEXT);
        h.update(&seed.to_le_bytes());
        GuestEnv {
            now: 0,
            rng: h.finalize_xof(),
        }
    }

    /// The clock's current reading, if the clock exists (without advancing).
    fn clock(&self, id: u32) -> Option<u64> {
        match id {
            CLOCK_REALTIME => Some(WALL_CLOCK_START_NS.saturating_add(self.now)),
            CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => Some(self.now),
            _ => None,
        }
    }

    /// A reading in the clock's frame converted to virtual time.
    fn to_virtual(id: u32, t: u64) -> u64 {
        if id == CLOCK_REALTIME {
            t.saturating_sub(WALL_CLOCK_START_NS)
        } else {
            t
        }
    }

    /// Reads a clock and advances virtual time by one step.
    fn read_clock(&mut self, id: u32) -> Option<u64> {
        let v = self.clock(id)?;
        self.now = self.now.saturating_add(CLOCK_STEP_NS);
        Some(v)
    }

    pub(crate) fn fill_random(&mut self, buf: &mut [u8]) {
        self.rng.fill(buf);
    }

    /// Virtual time and the bytes of the random stream drawn.
    pub(crate) fn position(&self) -> (u64, u64) {
        (self.now, self.rng.position())
    }

    /// Puts virtual time and the random stream where a checkpoint found
    /// them.
    pub(crate) fn rewind(&mut self, now: u64, random: u64) {
        self.now = now;
        self.rng.set_position(random);
    }
}

/// `proc_exit(code)`: ends the task; zero is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest exited with code {0}")]
pub(crate) struct ProcExit(pub(crate) u32);

/// The guest wrote more than its output limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("output limit exceeded")]
pub(crate) struct OutputOverflow;

/// Adds WASI preview 1 to `linker`: wasmtime-wasi's functions, metered
/// (`meter.rs`), and our deterministic ones, which charge fuel as they do.
pub(crate) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    super::meter::add_wasi(linker)?;
    super::checkpoint::add_to_linker(linker)?;
    linker.func_wrap(
        WASI_MODULE,
        "clock_time_get",
        |mut caller: Caller<'_, State>, id: i32, _precision: i64, out: i32| -> wasmtime::Result<i32> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            if caller.data().env.clock(id as u32).is_none() {
                return Ok(ERRNO_INVAL);
            }
            let Some(memory) = memory(&mut caller) else {
                return Ok(ERRNO_FAULT);
            };
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let Some(r) = guest_range(data.len(), out as u32, 8) else {
                return Ok(ERRNO_FAULT);
            };
            // Only a reading the guest receives advances virtual time.
            let t = state.env.read_clock(id as u32).unwrap_or(0);
            data[r].copy_from_slice(&t.to_le_bytes());
            Ok(ERRNO_SUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI_MODULE,
        "clock_res_get",
        |mut caller: Caller<'_, State>, id: i32, out: i32| -> wasmtime::Result<i32> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            if caller.data().env.clock(id as u32).is_none() {
                return Ok(ERRNO_INVAL);
            }
            Ok(write_guest(&mut caller, out as u32, &CLOCK_STEP_NS.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        WASI_MODULE,
        "random_get",
        |mut caller: Caller<'_, State>, buf: i32, len: i32| -> wasmtime::Result<i32> {
            let len = len as u32;
            charge(
                &mut caller,
                HOST_CALL_FUEL.saturating_add(u64::from(len) * RANDOM_BYTE_FUEL),
            )?;
            let Some(memory) = memory(&mut caller) else {
                return Ok(ERRNO_FAULT);
            };
            let (data, state) = memory.data_and_store_mut(&mut caller);
            Ok(match guest_range(data.len(), buf as u32, len as usize) {
                Some(r) => {
                    state.env.fill_random(&mut data[r]);
                    ERRNO_SUCCESS
                }
                None => ERRNO_FAULT,
            })
        },
    )?;
    linker.func_wrap(
        WASI_MODULE,
        "proc_exit",
        |mut caller: Caller<'_, State>, code: i32| -> wasmtime::Result<()> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            Err(wasmtime::Error::new(ProcExit(code as u32)))
        },
    )?;
    linker.func_wrap(
        WASI_MODULE,
        "poll_oneoff",
        |mut caller: Caller<'_, State>,
         subs: i32,
         events: i32,
         nsubs: i32,
         nevents: i32|
         -> wasmtime::Result<i32> {
            let nsubs = nsubs as u32;
            let bytes = u64::from(nsubs) * (SUBSCRIPTION_SIZE + EVENT_SIZE) as u64;
            charge(&mut caller, call_cost(bytes))?;
            Ok(poll_oneoff(
                &mut caller,
                subs as u32,
                events as u32,
                nsubs,
                nevents as u32,
            ))
        },
    )?;
    Ok(())
}

/// The guest's exported memory, which every function that takes a pointer
/// needs.
pub(crate) fn memory(caller: &mut Caller<'_, State>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

pub(crate) fn guest_range(mem_len: usize, ptr: u32, len: usize) -> Option<std::ops::Range<usize>> {
    let start = ptr as usize;
    let end = start.checked_add(len)?;
    (end <= mem_len).then_some(start..end)
}

pub(crate) fn write_guest(caller: &mut Caller<'_, State>, ptr: u32, bytes: &[u8]) -> i32 {
    let Some(memory) = memory(caller) else {
        return ERRNO_FAULT;
    };
    let data = memory.data_mut(caller);
    match guest_range(data.len(), ptr, bytes.len()) {
        Some(r) => {
            data[r].copy_from_slice(bytes);
            ERRNO_SUCCESS
        }
        None => ERRNO_FAULT,
    }
}

/// One decoded subscription.
enum Subscription {
    Clock {
        userdata: u64,
        id: u32,
        timeout: u64,
        abstime: bool,
    },
    Fd {
        userdata: u64,
        kind: u8,
        fd: u32,
    },
    Invalid {
        userdata: u64,
        kind: u8,
    },
}

/// Deterministic `poll_oneoff`: never blocks.
///
/// * fd subscriptions (stdio is in memory, so always ready) and malformed
///   subscriptions complete at once, and if there are any, no clock fires;
/// * otherwise virtual time jumps to the earliest clock deadline and every
///   clock subscription due by then fires.
fn poll_oneoff(
    caller: &mut Caller<'_, State>,
    subs_ptr: u32,
    events_ptr: u32,
    nsubs: u32,
    nevents_ptr: u32,
) -> i32 {
    if nsubs == 0 {
        return ERRNO_INVAL;
    }
    let Some(memory) = memory(caller) else {
        return ERRNO_FAULT;
    };
    let (data, state) = memory.data_and_store_mut(&mut *caller);
    let n = nsubs as usize;
    let Some(subs_range) = n
        .checked_mul(SUBSCRIPTION_SIZE)
        .and_then(|len| guest_range(data.len(), subs_ptr, len))
    else {
        return ERRNO_FAULT;
    };
    let (Some(events_range), Some(nevents_range)) = (
        guest_range(data.len(), events_ptr, n * EVENT_SIZE),
        guest_range(data.len(), nevents_ptr, 4),
    ) else {
        return ERRNO_FAULT;
    };
    let subs: Vec<Subscription> = data[subs_range]
        .chunks_exact(SUBSCRIPTION_SIZE)
        .map(decode_subscription)
        .collect();

    // (userdata, errno, type, fired)
    let mut out: Vec<(u64, u16, u8)> = Vec::new();
    for s in &subs {
        match *s {
            Subscription::Fd { userdata, kind, fd } => {
                let ok = matches!((kind, fd), (EVENTTYPE_FD_READ, 0) | (EVENTTYPE_FD_WRITE, 1 | 2));
                out.push((userdata, if ok { 0 } else { ERRNO_BADF as u16 }, kind));
            }
            Subscription::Invalid { userdata, kind } => out.push((userdata, ERRNO_INVAL as u16, kind)),
            Subscription::Clock { userdata, id, .. } if state.env.clock(id).is_none() => {
                out.push((userdata, ERRNO_INVAL as u16, EVENTTYPE_CLOCK))
            }
            Subscription::Clock { .. } => {}
        }
    }
    if out.is_empty() {
        let env = &mut state.env;
        let deadline = |id: u32, timeout: u64, abstime: bool| -> u64 {
            let now = env.clock(id).unwrap_or(0);
            let at = if abstime {
                timeout
            } else {
                now.saturating_add(timeout)
            };
            GuestEnv::to_virtual(id, at)
        };
        let deadlines: Vec<(u64, u64)> = subs
            .iter()
            .filter_map(|s| match *s {
                Subscription::Clock {
                    userdata,
                    id,
                    timeout,
                    abstime,
                } => Some((userdata, deadline(id, timeout, abstime))),
                _ => None,
            })
            .collect();
        let earliest = deadlines.iter().map(|d| d.1).min().unwrap_or(env.now);
        env.now = env.now.max(earliest);
        let now = env.now;
        out.extend(
            deadlines
                .iter()
                .filter(|d| d.1 <= now)
                .map(|d| (d.0, 0u16, EVENTTYPE_CLOCK)),
        );
    }
    let events = &mut data[events_range];
    for (slot, (userdata, errno, kind)) in events.chunks_exact_mut(EVENT_SIZE).zip(&out) {
        slot.fill(0);
        slot[0..8].copy_from_slice(&userdata.to_le_bytes());
        slot[8..10].copy_from_slice(&errno.to_le_bytes());
        slot[10] = *kind;
    }
    data[nevents_range].copy_from_slice(&(out.len() as u32).to_le_bytes());
    ERRNO_SUCCESS
}

fn decode_subscription(b: &[u8]) -> Subscription {
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
    let userdata = u64_at(0);
    match b[8] {
        EVENTTYPE_CLOCK => Subscription::Clock {
            userdata,
            id: u32_at(16),
            timeout: u64_at(24),
            abstime: u16::from_le_bytes([b[40], b[41]]) & SUBCLOCKFLAG_ABSTIME != 0,
        },
        kind @ (EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE) => Subscription::Fd {
            userdata,
            kind,
            fd: u32_at(16),
        },
        kind => Subscription::Invalid { userdata, kind },
    }
}

/// Memory and table limits of one task; remembers whether a memory growth
/// was refused, which turns a later trap into [`super::TaskError::MemoryLimit`].
pub(crate) struct Limiter {
    pub(crate) memory: usize,
    pub(crate) table_elements: usize,
    pub(crate) memory_denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(maximum.is_none_or(|m| desired <= m))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        tracing::debug!("memory growth failed within the limit: {error:#}");
        self.memory_denied = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements && maximum.is_none_or(|m| desired <= m))
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        super::engine::MAX_TABLES as usize
    }

    fn memories(&self) -> usize {
        1
    }
}

/// The task's input as its stdin: the bytes and how many the guest has
/// read (shared by every handle, so that `restore` can set it), counting
/// the bytes read as moved (they cost fuel, `meter.rs`). Reading behaves
/// as wasmtime-wasi's in-memory pipe does: at most the bytes asked for,
/// then `Closed` at the end.
#[derive(Clone)]
pub(crate) struct Input {
    bytes: bytes::Bytes,
    read: Arc<std::sync::atomic::AtomicUsize>,
    moved: Moved,
}

impl Input {
    pub(crate) fn new(bytes: bytes::Bytes, moved: Moved) -> Input {
        Input {
            bytes,
            read: Arc::default(),
            moved,
        }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed) as u64
    }

    /// Goes on reading from `position` (clamped to the end).
    pub(crate) fn seek(&self, position: u64) {
        let at = usize::try_from(position)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        self.read.store(at, std::sync::atomic::Ordering::Relaxed);
    }

    fn take(&self, size: usize) -> bytes::Bytes {
        use std::sync::atomic::Ordering;
        let at = self.read.load(Ordering::Relaxed).min(self.bytes.len());
        let n = size.min(self.bytes.len() - at);
        self.read.store(at + n, Ordering::Relaxed);
        self.bytes.slice(at..at + n)
    }
}

impl IsTerminal for Input {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for Input {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    /// Only preview-2 guests read this one, and a task is a preview-1
    /// module.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Input {
    async fn ready(&mut self) {}
}

impl InputStream for Input {
    fn read(&mut self, size: usize) -> Result<bytes::Bytes, StreamError> {
        if self.position() >= self.bytes.len() as u64 {
            return Err(StreamError::Closed);
        }
        let read = self.take(size);
        self.moved.add(read.len());
        Ok(read)
    }
}

impl tokio::io::AsyncRead for Input {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = self.take(buf.remaining());
        self.moved.add(read.len());
        buf.put_slice(&read);
        Poll::Ready(Ok(()))
    }
}

/// An in-memory stdout or stderr with a cap.
///
/// Strict captures (stdout) keep the bytes up to the cap and then fail the
/// write with [`OutputOverflow`], which traps the guest; lenient ones
/// (stderr) silently drop what does not fit. Every byte written counts as
/// moved, kept or not.
#[derive(Clone)]
pub(crate) struct Capture(Arc<Mutex<CaptureBuf>>, Moved);

struct CaptureBuf {
    data: Vec<u8>,
    cap: usize,
    strict: bool,
    overflowed: bool,
    /// Where what is kept is also copied as it is written (a live log).
    tee: Option<LiveLog>,
}

/// A run's stderr as the guest writes it, readable while the run goes on
/// (the node sends it to the requester as the task's live log). Holds what
/// the run's stderr capture keeps: at most the executor's `max_stderr`.
#[derive(Debug, Clone, Default)]
pub struct LiveLog(Arc<Mutex<Vec<u8>>>);

impl LiveLog {
    /// An empty log.
    pub fn new() -> LiveLog {
        LiveLog::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At most `max` bytes from `offset` on.
    pub fn read_from(&self, offset: u64, max: usize) -> Vec<u8> {
        let b = self.lock();
        let from = (offset as usize).min(b.len());
        b[from..(from + max).min(b.len())].to_vec()
    }

    /// How many bytes it holds.
    pub fn len(&self) -> u64 {
        self.lock().len() as u64
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Capture {
    pub(crate) fn new(cap: usize, strict: bool, moved: Moved) -> Capture {
        Capture(
            Arc::new(Mutex::new(CaptureBuf {
                data: Vec::new(),
                cap,
                strict,
                overflowed: false,
                tee: None,
            })),
            moved,
        )
    }

    /// Copies what it keeps to `log` as well, as it is written.
    pub(crate) fn tee(self, log: LiveLog) -> Capture {
        self.lock().tee = Some(log);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CaptureBuf> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends, returning whether everything fitted.
    fn append(&self, bytes: &[u8]) -> bool {
        self.1.add(bytes.len());
        let mut b = self.lock();
        let room = b.cap.saturating_sub(b.data.len());
        let take = room.min(bytes.len());
        b.data.extend_from_slice(&bytes[..take]);
        if let Some(tee) = &b.tee {
            tee.lock().extend_from_slice(&bytes[..take]);
        }
        if take < bytes.len() {
            b.overflowed = true;
            return !b.strict;
        }
        true
    }

    /// Whether a strict capture refused bytes.
    pub(crate) fn overflowed(&self) -> bool {
        let b = self.lock();
        b.strict && b.overflowed
    }

    /// How many bytes it holds.
    pub(crate) fn len(&self) -> usize {
        self.lock().data.len()
    }

    /// A copy of what it holds.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        self.lock().data.clone()
    }

    /// Holds exactly `bytes` from now on (a restored checkpoint's output);
    /// nothing counts as moved.
    pub(crate) fn replace(&self, bytes: &[u8]) {
        let mut b = self.lock();
        let take = bytes.len().min(b.cap);
        b.data = bytes[..take].to_vec();
    }

    /// Takes the captured bytes.
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().data)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        if self.append(&bytes) {
            Ok(())
        } else {
            Err(StreamError::Trap(wasmtime::Error::new(OutputOverflow)))
        }
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Never zero: a full capture fails the write instead of blocking it.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.append(buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(io::Error::other(OutputOverflow)))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// wasmtime-wasi's own clocks, pinned to the start of virtual time. Our
/// `clock_time_get` replaces the preview-1 path to them; these only make
/// sure nothing else can read the host's time.
pub(crate) struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(CLOCK_STEP_NS)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(WALL_CLOCK_START_NS)
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        CLOCK_STEP_NS
    }
    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn random_stream_is_the_blake3_xof_of_the_seed() {
        let mut a = GuestEnv::new(7);
        let mut first = [0u8; 5];
        let mut second = [0u8; 11];
        a.fill_random(&mut first);
        a.fill_random(&mut second);
        // Chunking does not matter: the guest sees one continuous stream.
        let mut whole = [0u8; 16];
        GuestEnv::new(7).fill_random(&mut whole);
        assert_eq!([&first[..], &second[..]].concat(), whole);
        // And it is exactly what the contract says.
        let mut h = blake3::Hasher::new_derive_key(RANDOM_CONTEXT);
        h.update(&7u64.to_le_bytes());
        let mut expect = [0u8; 16];
        h.finalize_xof().fill(&mut expect);
        assert_eq!(whole, expect);
        let mut other = [0u8; 16];
        GuestEnv::new(8).fill_random(&mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn clocks_advance_one_step_per_reading() {
        let mut env = GuestEnv::new(0);
        assert_eq!(env.read_clock(1), Some(0));
        assert_eq!(env.read_clock(0), Some(WALL_CLOCK_START_NS + CLOCK_STEP_NS));
        assert_eq!(env.read_clock(1), Some(2 * CLOCK_STEP_NS));
        assert_eq!(env.read_clock(4), None);
        assert_eq!(env.read_clock(1), Some(3 * CLOCK_STEP_NS));
    }

    #[test]
    fn strict_capture_keeps_bytes_up_to_the_cap() {
        let c = Capture::new(4, true, Moved::default());
        assert!(c.append(b"ab"));
        assert!(!c.append(b"cdef"));
        assert!(c.overflowed());
        assert_eq!(c.take(), b"abcd");
        let e = Capture::new(2, false, Moved::default());
        assert!(e.append(b"xyz"));
        assert!(!e.overflowed());
        assert_eq!(e.take(), b"xy");
    }
}

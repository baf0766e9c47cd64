//! The delay forwarder: a TUN device in the hub namespace that every
//! packet between two domains is routed through, held for as long as
//! [`Scheduler`] says, and put back.
//!
//! Two threads of the testnet process: one reads the device and asks the
//! scheduler, one writes each packet back when its time comes (a packet
//! written to a TUN device arrives in the kernel as if received on it, and
//! the hub's rules route what comes in from the device normally). The
//! device belongs to the hub namespace: the reading thread enters it to
//! create the device and stays there. Both stop when the forwarder is
//! dropped, within 100 ms.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::shaping::{Scheduler, Verdict};

/// How often the threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Packets held at once; beyond it new ones are dropped (the access links'
/// own buffers bound it first in any sane setting).
const MAX_HELD: usize = 100_000;

/// What the forwarder did, for the report.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets put back.
    pub forwarded: AtomicU64,
    /// Packets lost on purpose (`--loss`).
    pub lost: AtomicU64,
    /// Packets dropped for a full access link buffer.
    pub overflowed: AtomicU64,
}

/// A running forwarder.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// When each packet leaves (the lab names domains to it).
    pub scheduler: Arc<Mutex<Scheduler>>,
    /// What it did so far.
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("counters", &self.counters)
            .finish()
    }
}

struct Held {
    at: Instant,
    seq: u64,
    packet: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Held) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Held) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    /// Reversed: the heap's top is the earliest.
    fn cmp(&self, o: &Held) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// `ifreq` as TUNSETIFF takes it.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Opens TUN device `name` (no packet information header) in the calling
/// thread's namespace.
fn open_tun(name: &str) -> anyhow::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("cannot open /dev/net/tun (the kernel's TUN driver)")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    if name.len() >= libc::IFNAMSIZ {
        bail!("interface name {name:?} is too long");
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    tun_set_iff(&file, &mut req).context("TUNSETIFF failed")?;
    Ok(file)
}

/// The one ioctl no safe wrapper offers.
#[allow(unsafe_code)]
fn tun_set_iff(file: &File, req: &mut IfReq) -> std::io::Result<()> {
    // SAFETY: `req` is a valid, writable `ifreq` for the call's duration,
    // TUNSETIFF reads and writes no more than that, and the descriptor is
    // open for as long as `file` is borrowed.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, std::ptr::from_mut(req)) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling thread into network namespace `netns` (by name).
fn enter(netns: &str) -> anyhow::Result<()> {
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    let ns = File::open(format!("/run/netns/{netns}")).with_context(|| format!("no namespace {netns}"))?;
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
        .with_context(|| format!("cannot enter namespace {netns}"))?;
    Ok(())
}

/// Whether `file` has a packet to read within `timeout`.
fn readable(file: &File, timeout: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(file, PollFlags::IN)];
    let t = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    });
    poll(&mut fds, Some(&t)).is_ok_and(|n| n > 0) && fds[0].revents().contains(PollFlags::IN)
}

/// Runs `f` on a new thread inside namespace `netns` and waits for it.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let name = netns.to_owned();
    std::thread::spawn(move || {
        enter(&name)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in {netns:?} panicked"))?
}

/// The subnet number of an address of the lab's `10.octet.0.0/16`: the
/// third octet, a NAT router's WAN side (128 + k) counting as its domain's
/// `k`; `None` outside the lab or for the control subnet.
fn subnet(addr: &[u8], octet: u8) -> Option<usize> {
    match addr {
        [10, o, k, _] if *o == octet && *k != 0 => Some(usize::from(*k % 128)),
        _ => None,
    }
}

impl Forwarder {
    /// Creates device `dev` in namespace `netns` and starts forwarding
    /// through it. The caller routes packets to the device and brings it
    /// up.
    pub fn start(netns: &str, dev: &str, octet: u8, scheduler: Scheduler) -> anyhow::Result<Forwarder> {
        let stop = Arc::new(AtomicBool::new(false));
        let scheduler = Arc::new(Mutex::new(scheduler));
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = mpsc::sync_channel::<anyhow::Result<File>>(1);
        let (held_tx, held_rx) = mpsc::sync_channel::<Held>(MAX_HELD);
        let reader = {
            let (netns, dev) = (netns.to_owned(), dev.to_owned());
            let (stop, scheduler, counters) = (stop.clone(), scheduler.clone(), counters.clone());
            std::thread::Builder::new()
                .name("netns-forward-in".into())
                .spawn(move || {
                    let opened = enter(&netns).and_then(|()| open_tun(&dev));
                    let file = match opened {
                        Ok(f) => f,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    match file.try_clone() {
                        Ok(w) => {
                            let _ = ready_tx.send(Ok(w));
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    }
                    read_loop(file, octet, &stop, &scheduler, &counters, held_tx);
                })?
        };
        let out = ready_rx
            .recv()
            .context("the forwarder's thread ended before it opened its device")??;
        let writer = {
            let (stop, counters) = (stop.clone(), counters.clone());
            std::thread::Builder::new()
                .name("netns-forward-out".into())
                .spawn(move || write_loop(out, &stop, &counters, held_rx))?
        };
        Ok(Forwarder {
            stop,
            threads: vec![reader, writer],
            scheduler,
            counters,
        })
    }
}

fn read_loop(
    mut file: File,
    octet: u8,
    stop: &AtomicBool,
    scheduler: &Mutex<Scheduler>,
    counters: &Counters,
    held: mpsc::SyncSender<Held>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if !readable(&file, POLL) {
            continue;
        }
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The device is gone (its namespace was deleted).
            Err(_) => return,
        };
        let packet = &buf[..n];
        // IPv4 only: version 4, source at 12..16, destination at 16..20.
        let route = (n >= 20 && packet[0] >> 4 == 4)
            .then(|| (subnet(&packet[12..16], octet), subnet(&packet[16..20], octet)));
        let now = Instant::now();
        let verdict = match route {
            Some((Some(from), Some(to))) => {
                let draws = [rand::random::<f64>(), rand::random::<f64>()];
                scheduler
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .admit(from, to, n, now, draws)
            }
            _ => Verdict::At(now),
        };
        match verdict {
            Verdict::At(at) => {
                seq += 1;
                let h = Held {
                    at,
                    seq,
                    packet: packet.to_vec(),
                };
                if held.try_send(h).is_err() {
                    counters.overflowed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Verdict::Lost => {
                counters.lost.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Overflow => {
                counters.overflowed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_loop(mut file: File, stop: &AtomicBool, counters: &Counters, incoming: mpsc::Receiver<Held>) {
    let mut heap: BinaryHeap<Held> = BinaryHeap::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while heap.peek().is_some_and(|h| h.at <= now) {
            if let Some(h) = heap.pop() {
                // A write fails only when the device is gone or the packet
                // is refused; either way it is lost, as on a link.
                if file.write(&h.packet).is_ok() {
                    counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let wait = heap
            .peek()
            .map_or(POLL, |h| h.at.saturating_duration_since(now).min(POLL));
        match incoming.recv_timeout(wait) {
            Ok(h) => heap.push(h),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // Take what else has arrived without waiting again.
        while let Ok(h) = incoming.try_recv() {
            heap.push(h);
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nat_routers_wan_side_counts_as_its_domain_and_the_control_subnet_as_none() {
        assert_eq!(subnet(&[10, 150, 3, 7], 150), Some(3));
        assert_eq!(subnet(&[10, 150, 131, 1], 150), Some(3));
        assert_eq!(subnet(&[10, 150, 0, 1], 150), None);
        assert_eq!(subnet(&[10, 151, 3, 7], 150), None);
        assert_eq!(subnet(&[192, 168, 3, 7], 150), None);
    }

    #[test]
    fn the_heap_gives_the_earliest_packet_first_and_equal_times_in_arrival_order() {
        let t = Instant::now();
        let mut heap = BinaryHeap::new();
        for (i, ms) in [(1, 30u64), (2, 10), (3, 10), (4, 20)] {
            heap.push(Held {
                at: t + Duration::from_millis(ms),
                seq: i,
                packet: vec![],
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|h| h.seq)).collect();
        assert_eq!(order, [2, 3, 4, 1]);
    }
}

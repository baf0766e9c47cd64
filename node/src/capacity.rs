//! Measured capacity and the owner's idle policy.
//!
//! * **Capacity** is measured, never declared: the calibration kernel
//!   ([`crate::executor::calibrate`]) runs in the node's own sandbox, under
//!   the owner's CPU share, and its fuel per second gives the per-slot
//!   capacity in CU. The advertised capacity is per-slot CU × slots.
//! * **Idle policy**: owners contribute *idle* capacity. The node samples
//!   how busy the machine's cores are with *other* processes (all busy time
//!   minus its own) and stops taking new tasks above `busy_above`, resuming
//!   below `resume_below` (hysteresis, so it does not flap).

use std::time::Duration;

use agora_protocol::units::ComputeUnits;

use crate::executor::{self, Executor, TaskError};

/// Measures per-slot capacity on a blocking thread.
pub async fn measure(executor: &Executor, budget: Duration) -> Result<executor::Calibration, TaskError> {
    let ex = executor.clone();
    tokio::task::spawn_blocking(move || executor::calibrate(&ex, budget))
        .await
        .map_err(|e| TaskError::Trap(format!("calibration thread failed: {e}")))?
}

/// Cores available to this process.
pub fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Total advertised capacity for `slots` slots of `per_slot` each.
pub fn total(per_slot: ComputeUnits, slots: u32) -> ComputeUnits {
    ComputeUnits(per_slot.0.saturating_mul(u64::from(slots)))
}

/// Samples the share of the machine's cores kept busy by other processes.
#[derive(Debug, Default)]
pub struct LoadSampler {
    last: Option<(u64, u64, u64)>,
}

impl LoadSampler {
    /// A sampler; the first [`LoadSampler::sample`] only primes it.
    pub fn new() -> LoadSampler {
        LoadSampler::default()
    }

    /// The share of all cores (0–1) that other processes used since the
    /// last sample, or `None` where the platform gives no figures.
    pub fn sample(&mut self) -> Option<f64> {
        let (busy, total, own) = read_ticks()?;
        let prev = self.last.replace((busy, total, own));
        let (pb, pt, po) = prev?;
        let dt = total.checked_sub(pt)?;
        if dt == 0 {
            return None;
        }
        let others = busy.saturating_sub(pb).saturating_sub(own.saturating_sub(po));
        Some((others as f64 / dt as f64).clamp(0.0, 1.0))
    }

    /// The load as permille, for adverts.
    pub fn permille(share: Option<f64>) -> u32 {
        share.map_or(0, |s| (s * 1000.0).round() as u32)
    }
}

/// The machine's CPU time so far over all cores, in jiffies, from the
/// `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jiffies {
    /// Neither idle nor waiting for I/O (stolen time included).
    pub busy: u64,
    /// Taken by the hypervisor for other guests.
    pub steal: u64,
    /// All of it (user, nice, system, idle, iowait, irq, softirq, steal;
    /// guest time is inside user).
    pub total: u64,
}

/// Reads [`Jiffies`] now.
pub fn jiffies() -> Option<Jiffies> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some(Jiffies {
        busy: total - idle,
        steal: v.get(7).copied().unwrap_or(0),
        total,
    })
}

/// Busy and total jiffies over all cores.
fn read_proc_stat() -> Option<(u64, u64)> {
    jiffies().map(|j| (j.busy, j.total))
}

/// A read of the machine's busy and total jiffies and this process's is
/// shared by the samplers of one process for this long: the nodes of one
/// process (a testnet, the scale run) would each read the same figures,
/// and the kernel formats a line per core for every read of `/proc/stat`
/// (200 nodes sampling every 5 s spent ~1 % of their idle work on it).
const READ_AGAIN: std::time::Duration = std::time::Duration::from_millis(250);

/// The machine's busy and total jiffies and this process's.
type Ticks = (u64, u64, u64);

/// The machine's busy and total jiffies and this process's, read at most
/// once per [`READ_AGAIN`] in a process.
fn read_ticks() -> Option<Ticks> {
    static LAST: std::sync::Mutex<Option<(std::time::Instant, Ticks)>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, ticks)) = *last
        && at.elapsed() < READ_AGAIN
    {
        return Some(ticks);
    }
    let (busy, total) = read_proc_stat()?;
    let ticks = (busy, total, read_self_ticks()?);
    *last = Some((std::time::Instant::now(), ticks));
    Some(ticks)
}

/// This process's user+system jiffies, from `/proc/self/stat`.
fn read_self_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of this process in bytes, from `/proc/self/status`.
pub fn resident_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_sampler_reads_this_machine() {
        let mut s = LoadSampler::new();
        if s.sample().is_none() && read_proc_stat().is_some() {
            std::thread::sleep(Duration::from_millis(50));
            if let Some(v) = s.sample() {
                assert!((0.0..=1.0).contains(&v));
            }
        }
        if cfg!(target_os = "linux") {
            assert!(resident_memory().unwrap() > 1024 * 1024);
        }
    }
}

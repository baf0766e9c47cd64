//! Plain text output: padded tables, credits, and names of output dirs.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The node's own table: padded columns, numbers right-aligned.
pub use agora_node::commands::common::Table;

/// Micro-credits as credits, e.g. `12.345678`.
pub fn credits(micros: i64) -> String {
    agora_node::api::format_balance(micros)
}

/// UTC `YYYYMMDD-HHMMSS` of now.
pub fn stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A new directory `BASE/KIND-STAMP` (with a suffix if that exists),
/// created. `BASE` is `./testnet-out`.
pub fn fresh_dir(kind: &str) -> anyhow::Result<PathBuf> {
    let base = Path::new("testnet-out");
    let stamp = stamp();
    for n in 0.. {
        let name = if n == 0 {
            format!("{kind}-{stamp}")
        } else {
            format!("{kind}-{stamp}-{n}")
        };
        let p = base.join(name);
        if !p.exists() {
            std::fs::create_dir_all(&p)?;
            return Ok(p.canonicalize()?);
        }
    }
    unreachable!("an unbounded range ends only by returning")
}

/// The machine's load averages, from `/proc/loadavg`.
pub fn loadavg() -> Option<String> {
    let t = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// The machine's CPU ticks so far: (stolen by the hypervisor, all).
pub fn cpu_ticks() -> Option<(u64, u64)> {
    agora_node::capacity::jiffies().map(|j| (j.steal, j.total))
}

/// The share of the machine's CPU time stolen by the hypervisor between
/// two [`cpu_ticks`] readings.
pub fn steal_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let all = after.1.saturating_sub(before.1);
    if all == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0) as f64 / all as f64
}

/// Percentile `p` (0–100) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }

    #[test]
    fn the_steal_share_is_stolen_ticks_over_all_ticks_between_readings() {
        assert_eq!(steal_share((10, 1000), (40, 1100)), 0.3);
        assert_eq!(steal_share((10, 1000), (10, 1000)), 0.0, "no time passed");
        let (steal, all) = cpu_ticks().expect("/proc/stat reads on Linux");
        assert!(steal <= all);
    }

    #[test]
    fn stamps_look_like_dates() {
        let s = stamp();
        assert_eq!(s.len(), 15);
        assert!(s.starts_with("20"));
    }
}

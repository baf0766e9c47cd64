//! What this node did for others, kept for its owner: every task it ran
//! (the last [`MAX_RAN`]) and the requests it declined, counted per day
//! and reason. With the credit chain (what it earned, block by block) this
//! answers the owner's questions — what ran today, how much compute it
//! gave, what it earned, what it turned away — from the records alone, so
//! that they can be read while the node is stopped.
//!
//! Days are UTC days. Compute given is counted in CU·s (fuel divided by
//! [`agora_protocol::units::FUEL_PER_CU_SECOND`]): the documented unit,
//! whatever the machine's speed, next to the wall time the runs took.

use std::collections::{BTreeMap, HashMap, VecDeque};

use agora_protocol::NodeId;
use agora_protocol::id::TaskId;
use agora_protocol::units::{FUEL_PER_CU_SECOND, Fuel, Price, Timestamp};
use serde::{Deserialize, Serialize};

use crate::records::{self, Host, RecordError, Writes};

/// Record prefix of the tasks run, keyed by finish time.
pub const RAN: &str = "history/ran/";
/// Record prefix of the declines, one record per day.
pub const DECLINED: &str = "history/declined/";
/// Most task records kept; the oldest go first.
pub const MAX_RAN: usize = 10_000;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// One task this node ran for a requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RanTask {
    /// When it finished, ms since the epoch.
    pub at: Timestamp,
    /// The task.
    pub task: TaskId,
    /// For whom.
    pub requester: NodeId,
    /// Fuel it used.
    pub fuel: Fuel,
    /// Wall time it ran, ms.
    pub run_ms: u64,
    /// How it ended (`success`, `exit 3`, `out of fuel`…).
    pub exit: String,
    /// The agreed price.
    pub price: Price,
}

/// One day of the owner's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Tasks run to the end (whatever their exit).
    pub tasks_run: u64,
    /// Of those, how many did not succeed.
    pub tasks_failed: u64,
    /// Compute given, CU·s (from fuel).
    pub cu_s: f64,
    /// Wall time of the runs, ms.
    pub run_ms: u64,
    /// Credits received, micro-credits.
    pub earned_micros: u64,
    /// Requests declined, by reason.
    pub declined: BTreeMap<String, u64>,
}

/// The day number (days since 1970-01-01, UTC) of a time.
pub fn day_of(t: Timestamp) -> u64 {
    t.0 / DAY_MS
}

/// `YYYY-MM-DD` of a day number (Howard Hinnant's civil-from-days).
pub fn date(day: u64) -> String {
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn ran_key(t: &RanTask) -> String {
    format!("{RAN}{:020}/{}/{}", t.at.0, t.task, t.requester.short())
}

fn declined_key(day: u64) -> String {
    format!("{DECLINED}{day:08}")
}

/// The history as the engine keeps it up to date.
#[derive(Debug, Default)]
pub struct History {
    /// Keys of the task records held, oldest first.
    ran: VecDeque<String>,
    /// Declines counted so far, by reason, as last seen.
    seen: HashMap<String, u64>,
    /// Today's declines by reason, and which day that is.
    today: (u64, BTreeMap<String, u64>),
    dirty: bool,
}

impl History {
    /// Loads what the records hold.
    pub fn load(host: &dyn Host, now: Timestamp) -> Result<History, RecordError> {
        let ran = host.records(RAN)?.into_iter().map(|(k, _)| k).collect();
        let day = day_of(now);
        let today = records::get::<BTreeMap<String, u64>>(host, &declined_key(day))?.unwrap_or_default();
        Ok(History {
            ran,
            seen: HashMap::new(),
            today: (day, today),
            dirty: false,
        })
    }

    /// A task ran here: recorded, the oldest record dropped beyond
    /// [`MAX_RAN`].
    pub fn ran(&mut self, writes: &mut Writes, t: &RanTask) {
        let key = ran_key(t);
        writes.put(key.clone(), t);
        self.ran.push_back(key);
        while self.ran.len() > MAX_RAN {
            if let Some(old) = self.ran.pop_front() {
                writes.delete(old);
            }
        }
    }

    /// The engine's decline counters at the end of a turn: what grew since
    /// the last turn counts for today.
    pub fn declines(&mut self, counts: &BTreeMap<&'static str, u64>, now: Timestamp) {
        let day = day_of(now);
        if day != self.today.0 {
            self.today = (day, BTreeMap::new());
        }
        for (reason, &n) in counts {
            let seen = self.seen.entry((*reason).to_owned()).or_default();
            if n > *seen {
                *self.today.1.entry((*reason).to_owned()).or_default() += n - *seen;
                *seen = n;
                self.dirty = true;
            }
        }
    }

    /// Writes today's declines if they changed.
    pub fn flush(&mut self, writes: &mut Writes) {
        if std::mem::take(&mut self.dirty) {
            writes.put(declined_key(self.today.0), &self.today.1);
        }
    }
}

/// The tasks run, newest first, at most `limit`.
pub fn recent(host: &dyn Host, limit: usize) -> Result<Vec<RanTask>, RecordError> {
    Ok(host
        .records_rev(RAN, limit)?
        .into_iter()
        .filter_map(|(k, v)| records::decode::<RanTask>(&k, &v).ok())
        .collect())
}

/// The last `days` days up to `now`'s, newest first, from the task records,
/// the decline records and `earned` (credits received: when, how many
/// micro-credits).
pub fn days(
    host: &dyn Host,
    earned: &[(Timestamp, u64)],
    days: u64,
    now: Timestamp,
) -> Result<Vec<Day>, RecordError> {
    let last = day_of(now);
    let first = last.saturating_sub(days.saturating_sub(1));
    let mut out: BTreeMap<u64, Day> = (first..=last)
        .map(|d| {
            (
                d,
                Day {
                    date: date(d),
                    ..Day::default()
                },
            )
        })
        .collect();
    let from = format!("{RAN}{:020}", first * DAY_MS);
    for (k, v) in host.records_from(RAN, &from, usize::MAX)? {
        let Ok(t) = records::decode::<RanTask>(&k, &v) else {
            continue;
        };
        if let Some(d) = out.get_mut(&day_of(t.at)) {
            d.tasks_run += 1;
            d.tasks_failed += u64::from(t.exit != "success");
            d.cu_s += t.fuel.0 as f64 / FUEL_PER_CU_SECOND as f64;
            d.run_ms += t.run_ms;
        }
    }
    for (day, d) in out.iter_mut() {
        if let Some(declined) = records::get::<BTreeMap<String, u64>>(host, &declined_key(*day))? {
            d.declined = declined;
        }
    }
    for (at, micros) in earned {
        if let Some(d) = out.get_mut(&day_of(*at)) {
            d.earned_micros += micros;
        }
    }
    Ok(out.into_values().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Mem;
    use agora_protocol::JobId;

    fn ran(at: u64, exit: &str, fuel: u64) -> RanTask {
        RanTask {
            at: Timestamp(at),
            task: TaskId::new(JobId([1; 16]), (at % 1000) as u32),
            requester: agora_protocol::Keypair::from_secret([3; 32]).node_id(),
            fuel: Fuel(fuel),
            run_ms: 10,
            exit: exit.into(),
            price: Price(1),
        }
    }

    #[test]
    fn dates_are_civil_utc_days() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(day_of(Timestamp(951_782_400_000))), "2000-02-29");
        assert_eq!(date(day_of(Timestamp(1_796_083_199_999))), "2026-11-30");
        assert_eq!(date(day_of(Timestamp(1_796_083_200_000))), "2026-12-01");
    }

    #[test]
    fn a_day_sums_its_tasks_earnings_and_declines_and_the_others_stay_apart() {
        let now = Timestamp(20_000 * DAY_MS + 5_000);
        let yesterday = Timestamp(now.0 - DAY_MS);
        let mut host = Mem::default();
        let mut h = History::load(&host, now).unwrap();
        let mut w = Writes::default();
        h.ran(&mut w, &ran(now.0 - 10, "success", 3_000_000));
        h.ran(&mut w, &ran(now.0 - 5, "out of fuel", 1_000_000));
        h.ran(&mut w, &ran(yesterday.0, "success", 500_000));
        let mut counts = BTreeMap::new();
        counts.insert("no_free_slot", 4);
        h.declines(&counts, now);
        counts.insert("no_free_slot", 6);
        counts.insert("price", 1);
        h.declines(&counts, now);
        h.flush(&mut w);
        host.apply(w);
        let d = days(&host, &[(now, 700), (yesterday, 5)], 3, now).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].date, date(day_of(now)));
        assert_eq!((d[0].tasks_run, d[0].tasks_failed), (2, 1));
        assert_eq!(d[0].cu_s, 4.0);
        assert_eq!(d[0].earned_micros, 700);
        assert_eq!(d[0].declined.get("no_free_slot"), Some(&6));
        assert_eq!(d[0].declined.get("price"), Some(&1));
        assert_eq!((d[1].tasks_run, d[1].earned_micros), (1, 5));
        assert!(d[1].declined.is_empty());
        assert_eq!(d[2].tasks_run, 0);
        let r = recent(&host, 2).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].exit, "out of fuel", "newest first");
        // Reloaded, today's declines go on from what the records hold.
        let mut again = History::load(&host, now).unwrap();
        let mut w = Writes::default();
        again.declines(&BTreeMap::from([("price", 2)]), now);
        again.flush(&mut w);
        host.apply(w);
        let d = days(&host, &[], 1, now).unwrap();
        assert_eq!(d[0].declined.get("price"), Some(&3));
    }

    #[test]
    fn only_the_newest_task_records_are_kept() {
        let now = Timestamp(20_000 * DAY_MS);
        let mut host = Mem::default();
        let mut h = History::load(&host, now).unwrap();
        let mut w = Writes::default();
        for i in 0..(MAX_RAN as u64 + 3) {
            h.ran(&mut w, &ran(now.0 + i, "success", 1));
        }
        host.apply(w);
        assert_eq!(host.records(RAN).unwrap().len(), MAX_RAN);
        let oldest = recent(&host, MAX_RAN).unwrap().pop().unwrap();
        assert_eq!(oldest.at, Timestamp(now.0 + 3));
    }
}

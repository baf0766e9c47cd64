//! The owner's limits: when this machine is not the network's to use.
//!
//! A device owner keeps a provider installed only if it never gets in the
//! way: not in the hours they work, not on battery, not when the machine
//! runs hot. Each limit is a rule over one reading (the local time, the
//! battery, the hottest thermal zone); while any rule holds the node
//! **holds**: it takes no new work and its running tasks are suspended in
//! place, to resume where they stopped once every rule clears.
//!
//! The decision is here, pure, over readings the node takes (sysfs on
//! Linux, see `agora_node::owner`), so that it can be tested with any
//! reading and any clock. Temperature and battery clear with hysteresis
//! ([`TEMP_HYSTERESIS`], [`BATTERY_HYSTERESIS`]) so that a machine at its
//! limit does not flap between holding and running every sample. A limit
//! the platform cannot read is reported as unavailable (and never holds the
//! node): silently ignoring it would let the owner believe it works.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Degrees below the limit the hottest zone must fall to clear a
/// temperature hold.
pub const TEMP_HYSTERESIS: f64 = 5.0;
/// Percentage points above the limit the battery must reach (or it must
/// charge) to clear a low-battery hold.
pub const BATTERY_HYSTERESIS: u8 = 5;

/// A daily window of local time in which the node may work, e.g.
/// `22:00-07:00` (it may cross midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hours {
    /// Start, in minutes after midnight.
    pub from: u16,
    /// End (exclusive), in minutes after midnight.
    pub to: u16,
}

impl Hours {
    /// Whether `minute` (after midnight) is inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.from <= self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", hhmm(self.from), hhmm(self.to))
    }
}

impl FromStr for Hours {
    type Err = String;
    fn from_str(s: &str) -> Result<Hours, String> {
        let bad = || format!("hours {s:?}: expected HH:MM-HH:MM, e.g. 22:00-07:00");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Result<u16, String> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            // 24:00 is the end of the day.
            if (h < 24 && m < 60) || (h == 24 && m == 0) {
                Ok(h * 60 + m)
            } else {
                Err(bad())
            }
        };
        let (from, to) = (minute(a)?, minute(b)?);
        if from == to {
            return Err(format!(
                "hours {s:?}: an empty window (leave `hours` out to allow every hour)"
            ));
        }
        Ok(Hours {
            from: from % (24 * 60),
            to,
        })
    }
}

impl TryFrom<String> for Hours {
    type Error = String;
    fn try_from(s: String) -> Result<Hours, String> {
        s.parse()
    }
}

impl From<Hours> for String {
    fn from(h: Hours) -> String {
        h.to_string()
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// The days of the week on which the node may work, e.g. `mon-fri` or
/// `sat,sun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Weekdays(
    /// Bit `d` set: day `d` allowed (0 is Monday).
    pub u8,
);

impl Weekdays {
    /// Whether `day` (0 is Monday) is allowed.
    pub fn contains(&self, day: u8) -> bool {
        day < 7 && self.0 & (1 << day) != 0
    }
}

impl fmt::Display for Weekdays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = (0..7u8)
            .filter(|d| self.contains(*d))
            .map(|d| DAYS[d as usize])
            .collect();
        f.write_str(&days.join(","))
    }
}

impl FromStr for Weekdays {
    type Err = String;
    fn from_str(s: &str) -> Result<Weekdays, String> {
        let day = |d: &str| -> Result<u8, String> {
            let d = d.trim().to_ascii_lowercase();
            FULL.iter()
                .position(|n| d.len() >= 3 && n.starts_with(&d))
                .map(|i| i as u8)
                .ok_or_else(|| format!("weekdays {s:?}: {d:?} is not a day (mon, tue, … sun)"))
        };
        let mut bits = 0u8;
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut d = a;
                    loop {
                        bits |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => bits |= 1 << day(part)?,
            }
        }
        if bits == 0 {
            return Err(format!("weekdays {s:?}: no day named"));
        }
        Ok(Weekdays(bits))
    }
}

impl TryFrom<String> for Weekdays {
    type Error = String;
    fn try_from(s: String) -> Result<Weekdays, String> {
        s.parse()
    }
}

impl From<Weekdays> for String {
    fn from(w: Weekdays) -> String {
        w.to_string()
    }
}

/// A link rate in bits per second, written as tc writes it (`10mbit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate(pub u64);

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        agora_protocol::units::parse_rate(s)
            .map(Rate)
            .map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&agora_protocol::units::format_rate(self.0))
    }
}

impl TryFrom<String> for Rate {
    type Error = String;
    fn try_from(s: String) -> Result<Rate, String> {
        s.parse()
    }
}

impl From<Rate> for String {
    fn from(r: Rate) -> String {
        r.to_string()
    }
}

/// The owner's limits. Every one is optional; none set, the node never
/// holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OwnerLimits {
    /// Work only inside this daily window of local time.
    pub hours: Option<Hours>,
    /// Work only on these days (local time).
    pub weekdays: Option<Weekdays>,
    /// Hold while the machine runs on battery.
    pub stop_on_battery: bool,
    /// Hold while the battery is below this percentage.
    pub min_battery: Option<u8>,
    /// Hold while the hottest thermal zone is above this (°C).
    pub max_temp: Option<f64>,
    /// Share of a core each task may use, over the configuration's
    /// `cpu_share`.
    pub cpu_share: Option<f64>,
    /// Cores all tasks together may use: each running task gets at most
    /// this divided by how many run ([`task_share`]).
    pub max_cpu: Option<f64>,
    /// The rate at which the node serves content (modules, inputs,
    /// outputs) to other nodes, on average: each response starts once the
    /// ones before it would have gone at this rate.
    pub max_upload: Option<Rate>,
}

/// The share of a core each of `running` tasks gets: the per-task `share`,
/// cut so that together they use at most `max_cpu` cores.
pub fn task_share(share: f64, max_cpu: Option<f64>, running: usize) -> f64 {
    match max_cpu {
        Some(cap) if running > 0 => share.min(cap / running as f64),
        _ => share,
    }
}

impl OwnerLimits {
    /// Checks the values: a percentage above 100 or a temperature that is
    /// not a number would never (or always) hold.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_battery.is_some_and(|b| b > 100) {
            return Err("min_battery is a percentage: at most 100".into());
        }
        if self.max_temp.is_some_and(|t| !t.is_finite() || t <= 0.0) {
            return Err("max_temp must be a positive temperature in °C".into());
        }
        if self.cpu_share.is_some_and(|s| !(s > 0.0 && s <= 1.0)) {
            return Err("cpu_share is a share of one core: above 0, at most 1".into());
        }
        if self.max_cpu.is_some_and(|c| !(c.is_finite() && c >= 0.01)) {
            return Err("max_cpu is a number of cores: at least 0.01".into());
        }
        Ok(())
    }

    /// Whether any limit needs the battery reading.
    pub fn reads_battery(&self) -> bool {
        self.stop_on_battery || self.min_battery.is_some()
    }

    /// Whether any limit needs the local time.
    pub fn reads_clock(&self) -> bool {
        self.hours.is_some() || self.weekdays.is_some()
    }

    /// The limits in force, one phrase each, for the owner's view.
    pub fn describe(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(h) = self.hours {
            v.push(format!("works {h} only"));
        }
        if let Some(w) = self.weekdays {
            v.push(format!("works on {w} only"));
        }
        if self.stop_on_battery {
            v.push("stops on battery".into());
        }
        if let Some(b) = self.min_battery {
            v.push(format!("stops below {b}% battery"));
        }
        if let Some(t) = self.max_temp {
            v.push(format!("stops above {t} °C"));
        }
        if let Some(s) = self.cpu_share {
            v.push(format!("each task at most {:.0}% of a core", s * 100.0));
        }
        if let Some(c) = self.max_cpu {
            v.push(format!("all tasks together at most {c} cores"));
        }
        if let Some(r) = self.max_upload {
            v.push(format!("serves content at most at {r}"));
        }
        v
    }
}

/// Local wall-clock time, as the limits read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// 0 is Monday.
    pub weekday: u8,
    /// Minutes after midnight.
    pub minute: u16,
}

/// The battery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Battery {
    /// Running on it (not on mains).
    pub discharging: bool,
    /// Charge left, if the battery reports it.
    pub percent: Option<u8>,
}

/// What the node read this sample. `Err` says why a reading is
/// unavailable.
#[derive(Debug, Clone, PartialEq)]
pub struct Readings {
    /// Local time.
    pub local: Result<LocalTime, String>,
    /// The hottest thermal zone, °C.
    pub temp: Result<f64, String>,
    /// The battery; `Ok(None)`: the machine has none (it runs on mains).
    pub battery: Result<Option<Battery>, String>,
}

/// Why the node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// Outside the owner's hours.
    Hours(Hours),
    /// Not one of the owner's days.
    Weekday(Weekdays),
    /// On battery.
    OnBattery,
    /// The battery is below the owner's minimum.
    BatteryLow {
        /// Charge left.
        percent: u8,
        /// The owner's minimum.
        min: u8,
    },
    /// Too hot.
    Hot {
        /// The hottest zone.
        temp: f64,
        /// The owner's maximum.
        max: f64,
    },
}

impl Hold {
    /// A short name of the limit, for metrics and JSON.
    pub fn limit(&self) -> &'static str {
        match self {
            Hold::Hours(_) => "hours",
            Hold::Weekday(_) => "weekdays",
            Hold::OnBattery => "stop_on_battery",
            Hold::BatteryLow { .. } => "min_battery",
            Hold::Hot { .. } => "max_temp",
        }
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Hours(h) => write!(f, "outside the owner's hours ({h})"),
            Hold::Weekday(w) => write!(f, "not one of the owner's days ({w})"),
            Hold::OnBattery => f.write_str("the machine runs on battery"),
            Hold::BatteryLow { percent, min } => {
                write!(f, "the battery is at {percent}%, below the owner's {min}%")
            }
            Hold::Hot { temp, max } => {
                write!(f, "the machine is at {temp:.0} °C, above the owner's {max} °C")
            }
        }
    }
}

/// The limits' decision, sample after sample, with hysteresis.
#[derive(Debug, Clone, Default)]
pub struct LimitPolicy {
    limits: OwnerLimits,
    held: Option<Hold>,
    unavailable: Vec<String>,
}

impl LimitPolicy {
    /// A policy; it holds nothing until the first reading.
    pub fn new(limits: OwnerLimits) -> LimitPolicy {
        LimitPolicy {
            limits,
            held: None,
            unavailable: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &OwnerLimits {
        &self.limits
    }

    /// New limits, applied at the next reading.
    pub fn set_limits(&mut self, limits: OwnerLimits) {
        self.limits = limits;
    }

    /// What holds the node now, if anything.
    pub fn held(&self) -> Option<&Hold> {
        self.held.as_ref()
    }

    /// Limits set that the platform could not read at the last sample, each
    /// with why.
    pub fn unavailable(&self) -> &[String] {
        &self.unavailable
    }

    /// Feeds a sample; returns whether what holds the node changed (from
    /// nothing to something, back, or from one limit to another).
    pub fn update(&mut self, r: &Readings) -> bool {
        let l = &self.limits;
        let mut unavailable = Vec::new();
        let mut hold = None;
        if l.reads_clock() {
            match &r.local {
                Ok(t) => {
                    if let Some(w) = l.weekdays.filter(|w| !w.contains(t.weekday)) {
                        hold = Some(Hold::Weekday(w));
                    } else if let Some(h) = l.hours.filter(|h| !h.contains(t.minute)) {
                        hold = Some(Hold::Hours(h));
                    }
                }
                Err(why) => unavailable.push(format!("hours and weekdays: {why}")),
            }
        }
        // Every reading is judged (an unreadable one is reported even while
        // another limit holds); the first limit that holds is the one named.
        if l.reads_battery() {
            match &r.battery {
                Ok(Some(b)) => {
                    let was_low = matches!(self.held, Some(Hold::BatteryLow { .. }));
                    if l.stop_on_battery && b.discharging {
                        hold = hold.or(Some(Hold::OnBattery));
                    } else if let (Some(min), Some(percent)) = (l.min_battery, b.percent) {
                        let clear = if was_low {
                            min.saturating_add(BATTERY_HYSTERESIS)
                        } else {
                            min
                        };
                        if b.discharging && percent < clear {
                            hold = hold.or(Some(Hold::BatteryLow { percent, min }));
                        }
                    } else if l.min_battery.is_some() && b.discharging {
                        unavailable.push("min_battery: the battery does not report its charge".into());
                    }
                }
                Ok(None) => {}
                Err(why) => unavailable.push(format!("battery: {why}")),
            }
        }
        if let Some(max) = l.max_temp {
            match &r.temp {
                Ok(temp) => {
                    let was_hot = matches!(self.held, Some(Hold::Hot { .. }));
                    let limit = if was_hot { max - TEMP_HYSTERESIS } else { max };
                    if *temp > limit {
                        hold = hold.or(Some(Hold::Hot { temp: *temp, max }));
                    }
                }
                Err(why) => unavailable.push(format!("max_temp: {why}")),
            }
        }
        self.unavailable = unavailable;
        let changed = self.held.as_ref().map(Hold::limit) != hold.as_ref().map(Hold::limit);
        self.held = hold;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(minute: u16, temp: f64, battery: Option<Battery>) -> Readings {
        Readings {
            local: Ok(LocalTime { weekday: 2, minute }),
            temp: Ok(temp),
            battery: Ok(battery),
        }
    }

    const NOON: u16 = 12 * 60;

    #[test]
    fn a_total_cpu_cap_divides_among_the_running_tasks() {
        assert_eq!(task_share(0.8, None, 4), 0.8);
        assert_eq!(task_share(0.8, Some(2.0), 0), 0.8);
        assert_eq!(task_share(0.8, Some(2.0), 2), 0.8);
        assert_eq!(task_share(0.8, Some(2.0), 4), 0.5);
        assert_eq!(task_share(1.0, Some(0.5), 1), 0.5);
        let bad = OwnerLimits {
            cpu_share: Some(1.5),
            ..OwnerLimits::default()
        };
        assert!(bad.validate().unwrap_err().contains("cpu_share"));
    }

    #[test]
    fn hours_may_cross_midnight() {
        let h: Hours = "22:00-07:00".parse().unwrap();
        assert!(h.contains(23 * 60));
        assert!(h.contains(0));
        assert!(h.contains(6 * 60 + 59));
        assert!(!h.contains(7 * 60));
        assert!(!h.contains(NOON));
        let day: Hours = "09:30-17:00".parse().unwrap();
        assert!(day.contains(9 * 60 + 30) && !day.contains(9 * 60 + 29) && !day.contains(17 * 60));
        assert_eq!(day.to_string(), "09:30-17:00");
        let to_midnight: Hours = "18:00-24:00".parse().unwrap();
        assert!(to_midnight.contains(23 * 60 + 59) && !to_midnight.contains(0));
    }

    #[test]
    fn malformed_hours_and_days_are_refused_naming_the_value() {
        for bad in ["22-07", "25:00-07:00", "10:00-10:00", "nine-five", "10:60-11:00"] {
            let e = bad.parse::<Hours>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!("mon-fry".parse::<Weekdays>().unwrap_err().contains("fry"));
        assert!("".parse::<Weekdays>().is_err());
    }

    #[test]
    fn weekday_ranges_wrap_around_the_week() {
        let w: Weekdays = "fri-mon".parse().unwrap();
        assert_eq!(w.to_string(), "mon,fri,sat,sun");
        let w: Weekdays = "Monday-Friday".parse().unwrap();
        assert!(w.contains(0) && w.contains(4) && !w.contains(5));
        assert_eq!("sat, sun".parse::<Weekdays>().unwrap(), Weekdays(0b110_0000));
    }

    #[test]
    fn no_limits_never_hold_whatever_the_readings() {
        let mut p = LimitPolicy::new(OwnerLimits::default());
        let r = Readings {
            local: Err("no clock".into()),
            temp: Ok(120.0),
            battery: Ok(Some(Battery {
                discharging: true,
                percent: Some(1),
            })),
        };
        assert!(!p.update(&r));
        assert_eq!(p.held(), None);
        assert!(p.unavailable().is_empty());
    }

    #[test]
    fn a_hot_machine_holds_until_it_cools_below_the_limit_less_the_hysteresis() {
        let mut p = LimitPolicy::new(OwnerLimits {
            max_temp: Some(80.0),
            ..OwnerLimits::default()
        });
        assert!(!p.update(&readings(NOON, 70.0, None)));
        assert!(p.update(&readings(NOON, 90.0, None)));
        assert_eq!(
            p.held().unwrap().to_string(),
            "the machine is at 90 °C, above the owner's 80 °C"
        );
        // Below the limit but not below it by the hysteresis: still held.
        assert!(!p.update(&readings(NOON, 78.0, None)));
        assert!(p.held().is_some());
        assert!(p.update(&readings(NOON, 74.0, None)));
        assert_eq!(p.held(), None);
    }

    #[test]
    fn outside_the_hours_or_days_the_node_holds() {
        let mut p = LimitPolicy::new(OwnerLimits {
            hours: Some("22:00-07:00".parse().unwrap()),
            weekdays: Some("mon-fri".parse().unwrap()),
            ..OwnerLimits::default()
        });
        assert!(p.update(&readings(NOON, 40.0, None)));
        assert_eq!(p.held().unwrap().limit(), "hours");
        assert!(p.update(&readings(23 * 60, 40.0, None)));
        let mut sunday = readings(23 * 60, 40.0, None);
        sunday.local = Ok(LocalTime {
            weekday: 6,
            minute: 23 * 60,
        });
        assert!(p.update(&sunday));
        assert_eq!(
            p.held().unwrap().to_string(),
            "not one of the owner's days (mon,tue,wed,thu,fri)"
        );
    }

    #[test]
    fn on_battery_holds_and_mains_clears_and_a_low_battery_needs_a_margin() {
        let on = |percent| {
            Some(Battery {
                discharging: true,
                percent: Some(percent),
            })
        };
        let mut p = LimitPolicy::new(OwnerLimits {
            min_battery: Some(30),
            ..OwnerLimits::default()
        });
        assert!(!p.update(&readings(NOON, 40.0, on(50))));
        assert!(p.update(&readings(NOON, 40.0, on(20))));
        assert_eq!(
            p.held().unwrap().to_string(),
            "the battery is at 20%, below the owner's 30%"
        );
        assert!(!p.update(&readings(NOON, 40.0, on(32))), "within the hysteresis");
        assert!(p.update(&readings(NOON, 40.0, on(36))));
        // Charging clears a low battery at once.
        assert!(p.update(&readings(NOON, 40.0, on(10))));
        let charging = Some(Battery {
            discharging: false,
            percent: Some(10),
        });
        assert!(p.update(&readings(NOON, 40.0, charging)));

        let mut p = LimitPolicy::new(OwnerLimits {
            stop_on_battery: true,
            ..OwnerLimits::default()
        });
        assert!(p.update(&readings(NOON, 40.0, on(90))));
        assert_eq!(p.held(), Some(&Hold::OnBattery));
        assert!(p.update(&readings(NOON, 40.0, charging)));
        // A machine with no battery runs on mains.
        assert!(!p.update(&readings(NOON, 40.0, None)));
    }

    #[test]
    fn a_limit_the_platform_cannot_read_is_reported_and_does_not_hold() {
        let mut p = LimitPolicy::new(OwnerLimits {
            max_temp: Some(80.0),
            stop_on_battery: true,
            ..OwnerLimits::default()
        });
        let r = Readings {
            local: Ok(LocalTime {
                weekday: 0,
                minute: 0,
            }),
            temp: Err("no thermal zone under /sys/class/thermal".into()),
            battery: Err("cannot read /sys/class/power_supply".into()),
        };
        assert!(!p.update(&r));
        assert_eq!(p.held(), None);
        // Reported even while another limit holds the node.
        let mut q = LimitPolicy::new(OwnerLimits {
            max_temp: Some(80.0),
            hours: Some("01:00-02:00".parse().unwrap()),
            ..OwnerLimits::default()
        });
        assert!(q.update(&Readings {
            local: Ok(LocalTime {
                weekday: 0,
                minute: 0
            }),
            ..r.clone()
        }));
        assert_eq!(q.held().map(Hold::limit), Some("hours"));
        assert_eq!(q.unavailable().len(), 1);
        assert_eq!(
            p.unavailable(),
            [
                "battery: cannot read /sys/class/power_supply",
                "max_temp: no thermal zone under /sys/class/thermal"
            ]
        );
    }

    #[test]
    fn limits_round_trip_through_toml_as_the_owner_writes_them() {
        let l: OwnerLimits = toml::from_str(
            r#"
            hours = "22:00-07:00"
            weekdays = "mon-fri"
            stop_on_battery = true
            min_battery = 20
            max_temp = 85
            "#,
        )
        .unwrap();
        assert_eq!(l.hours.unwrap().to_string(), "22:00-07:00");
        assert_eq!(l.max_temp, Some(85.0));
        assert_eq!(
            l.describe(),
            [
                "works 22:00-07:00 only",
                "works on mon,tue,wed,thu,fri only",
                "stops on battery",
                "stops below 20% battery",
                "stops above 85 °C"
            ]
        );
        assert!(toml::from_str::<OwnerLimits>("hours = \"7-9\"").is_err());
        assert!(toml::from_str::<OwnerLimits>("max_tmp = 3").is_err());
    }
}

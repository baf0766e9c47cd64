//! What the owner's limits read (`agora_market::limits`): the hottest
//! thermal zone and the battery from Linux's sysfs, and the local time.
//!
//! The sysfs root is configurable (`[provider.limits] sysfs`) so that tests
//! and demos point it at a fake tree: `class/thermal/thermal_zone*/temp` in
//! millidegrees Celsius, `class/power_supply/*/{type,status,capacity}`.
//! Where a platform has no such tree (macOS), each reading is an error that
//! says so, and the limits that need it are reported as unavailable.

use std::fs;
use std::path::{Path, PathBuf};

use agora_market::limits::{Battery, LocalTime, OwnerLimits, Readings};

/// Reads the sensors under one sysfs root.
#[derive(Debug, Clone)]
pub struct Sensors {
    root: PathBuf,
}

impl Sensors {
    /// Sensors under `root` (normally `/sys`).
    pub fn new(root: impl Into<PathBuf>) -> Sensors {
        Sensors { root: root.into() }
    }

    /// One sample of what `limits` need (what they do not need is not read).
    pub fn read(&self, limits: &OwnerLimits) -> Readings {
        fn skipped<T>() -> Result<T, String> {
            Err("not read".to_owned())
        }
        Readings {
            local: if limits.reads_clock() {
                local_time()
            } else {
                skipped()
            },
            temp: if limits.max_temp.is_some() {
                self.temperature()
            } else {
                skipped()
            },
            battery: if limits.reads_battery() {
                self.battery()
            } else {
                skipped()
            },
        }
    }

    /// The hottest thermal zone, in °C.
    pub fn temperature(&self) -> Result<f64, String> {
        let dir = self.root.join("class/thermal");
        let entries = fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let mut hottest: Option<f64> = None;
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with("thermal_zone") {
                continue;
            }
            // Zones that cannot be read right now (some firmware zones
            // answer EIO) are skipped, not fatal.
            if let Some(milli) = read_trimmed(&e.path().join("temp")).and_then(|s| s.parse::<i64>().ok()) {
                let c = milli as f64 / 1000.0;
                hottest = Some(hottest.map_or(c, |h: f64| h.max(c)));
            }
        }
        hottest.ok_or_else(|| format!("no readable thermal zone under {}", dir.display()))
    }

    /// The battery, if the machine has one (`None`: it runs on mains).
    pub fn battery(&self) -> Result<Option<Battery>, String> {
        let dir = self.root.join("class/power_supply");
        let entries = fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let mut found: Option<Battery> = None;
        for e in entries.flatten() {
            let p = e.path();
            if read_trimmed(&p.join("type")).as_deref() != Some("Battery") {
                continue;
            }
            let b = Battery {
                discharging: read_trimmed(&p.join("status")).as_deref() == Some("Discharging"),
                percent: read_trimmed(&p.join("capacity")).and_then(|s| s.parse::<u8>().ok()),
            };
            // Several batteries: on battery if any discharges; the lowest
            // charge counts.
            found = Some(match found {
                None => b,
                Some(f) => Battery {
                    discharging: f.discharging || b.discharging,
                    percent: match (f.percent, b.percent) {
                        (Some(x), Some(y)) => Some(x.min(y)),
                        (x, y) => x.or(y),
                    },
                },
            });
        }
        Ok(found)
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// The local time, in the system's time zone (or `TZ`'s).
pub fn local_time() -> Result<LocalTime, String> {
    let now = jiff::Zoned::now();
    Ok(LocalTime {
        weekday: now.weekday().to_monday_zero_offset() as u8,
        minute: now.hour() as u16 * 60 + now.minute() as u16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn the_hottest_zone_counts_and_unreadable_zones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "class/thermal/thermal_zone0/temp", "45000\n");
        write(dir.path(), "class/thermal/thermal_zone1/temp", "91500\n");
        write(dir.path(), "class/thermal/thermal_zone2/temp", "garbage\n");
        write(dir.path(), "class/thermal/cooling_device0/cur_state", "1\n");
        assert_eq!(Sensors::new(dir.path()).temperature(), Ok(91.5));
    }

    #[test]
    fn a_tree_without_zones_or_supplies_says_what_it_could_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sensors::new(dir.path());
        assert!(s.temperature().unwrap_err().contains("class/thermal"));
        assert!(s.battery().unwrap_err().contains("class/power_supply"));
        write(dir.path(), "class/thermal/placeholder", "");
        assert!(s.temperature().unwrap_err().contains("no readable thermal zone"));
    }

    #[test]
    fn a_discharging_battery_is_read_with_its_charge_and_mains_only_is_none() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "class/power_supply/AC/type", "Mains\n");
        write(dir.path(), "class/power_supply/AC/online", "0\n");
        let s = Sensors::new(dir.path());
        assert_eq!(s.battery(), Ok(None));
        write(dir.path(), "class/power_supply/BAT0/type", "Battery\n");
        write(dir.path(), "class/power_supply/BAT0/status", "Discharging\n");
        write(dir.path(), "class/power_supply/BAT0/capacity", "23\n");
        assert_eq!(
            s.battery(),
            Ok(Some(Battery {
                discharging: true,
                percent: Some(23)
            }))
        );
    }

    #[test]
    fn only_what_the_limits_need_is_read() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "class/thermal/thermal_zone0/temp", "50000");
        let r = Sensors::new(dir.path()).read(&OwnerLimits {
            max_temp: Some(80.0),
            ..OwnerLimits::default()
        });
        assert_eq!(r.temp, Ok(50.0));
        assert!(r.battery.is_err() && r.local.is_err());
        assert!(local_time().is_ok_and(|t| t.weekday < 7 && t.minute < 24 * 60));
    }
}

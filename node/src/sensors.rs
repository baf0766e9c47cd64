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

/// A reading of the CPU packages' energy counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnergyCounter {
    /// The counters' sum, µJ.
    pub uj: u64,
    /// Where they wrap, summed, µJ.
    pub range_uj: u64,
}

impl EnergyCounter {
    /// Microjoules from `self` to `later`, allowing for one wrap.
    pub fn until(&self, later: &EnergyCounter) -> u64 {
        if later.uj >= self.uj {
            later.uj - self.uj
        } else {
            later.range_uj.saturating_sub(self.uj).saturating_add(later.uj)
        }
    }
}

/// The energy per CU-second of work that used `uj` microjoules to burn
/// `fuel`: one CU-second is 10^6 fuel, the rate is in millijoules.
pub fn energy_rate(uj: u64, fuel: agora_protocol::units::Fuel) -> Option<agora_protocol::units::EnergyRate> {
    let cu_s = fuel.0 as f64 / agora_protocol::units::FUEL_PER_CU_SECOND as f64;
    if cu_s <= 0.0 || uj == 0 {
        return None;
    }
    Some(agora_protocol::units::EnergyRate(
        (uj as f64 / 1000.0 / cu_s).round().max(1.0) as u64,
    ))
}

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

    /// The energy counter of every CPU package (RAPL, through
    /// `class/powercap/intel-rapl:N/energy_uj`; AMD processors appear there
    /// too), summed, in microjoules, with the range at which it wraps.
    pub fn package_energy(&self) -> Result<EnergyCounter, String> {
        let dir = self.root.join("class/powercap");
        let entries =
            fs::read_dir(&dir).map_err(|e| format!("no RAPL here: cannot read {}: {e}", dir.display()))?;
        let mut total = EnergyCounter::default();
        let mut zones = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Packages only (`intel-rapl:0`), not their sub-zones
            // (`intel-rapl:0:0`), which the package already counts.
            let Some(rest) = name.strip_prefix("intel-rapl:") else {
                continue;
            };
            if rest.contains(':') {
                continue;
            }
            let read = |file: &str| -> Result<u64, String> {
                let path = e.path().join(file);
                let text = fs::read_to_string(&path)
                    .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
                text.trim()
                    .parse()
                    .map_err(|err| format!("{} is not a number: {err}", path.display()))
            };
            total.uj = total.uj.saturating_add(read("energy_uj")?);
            total.range_uj = total
                .range_uj
                .saturating_add(read("max_energy_range_uj").unwrap_or(u64::MAX / 4));
            zones += 1;
        }
        if zones == 0 {
            return Err(format!("no RAPL package zone under {}", dir.display()));
        }
        Ok(total)
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
    fn package_energy_sums_packages_not_their_sub_zones_and_survives_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sensors::new(dir.path());
        assert!(s.package_energy().unwrap_err().contains("no RAPL"));
        write(dir.path(), "class/powercap/intel-rapl:0/energy_uj", "1000000\n");
        write(
            dir.path(),
            "class/powercap/intel-rapl:0/max_energy_range_uj",
            "2000000\n",
        );
        write(dir.path(), "class/powercap/intel-rapl:1/energy_uj", "500\n");
        write(
            dir.path(),
            "class/powercap/intel-rapl:1/max_energy_range_uj",
            "1000\n",
        );
        write(
            dir.path(),
            "class/powercap/intel-rapl:0:0/energy_uj",
            "999999999\n",
        );
        let before = s.package_energy().unwrap();
        assert_eq!(
            before,
            EnergyCounter {
                uj: 1_000_500,
                range_uj: 2_001_000
            }
        );
        write(dir.path(), "class/powercap/intel-rapl:0/energy_uj", "1500000\n");
        assert_eq!(before.until(&s.package_energy().unwrap()), 500_000);
        // The counter wrapped past its range.
        let wrapped = EnergyCounter {
            uj: 100,
            range_uj: 2_001_000,
        };
        assert_eq!(before.until(&wrapped), 2_001_000 - 1_000_500 + 100);
    }

    #[test]
    fn the_energy_rate_is_millijoules_per_cu_second() {
        use agora_protocol::units::{EnergyRate, Fuel};
        // 15 J over 1000 CU·s (10^9 fuel): 15 mJ per CU·s.
        assert_eq!(energy_rate(15_000_000, Fuel(1_000_000_000)), Some(EnergyRate(15)));
        assert_eq!(energy_rate(0, Fuel(1_000_000_000)), None);
        assert_eq!(energy_rate(15, Fuel(0)), None);
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

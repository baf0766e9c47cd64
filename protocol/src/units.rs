//! Units: fuel, compute units, credits, prices, energy, sizes and time.
//!
//! # The measurement model
//!
//! * **Fuel** is wasmtime's instruction-level fuel: nearly every WebAssembly
//!   operator costs one unit. It is what a task consumes, what receipts
//!   report and what is billed. Fuel is deterministic: the same module, input
//!   and seed use the same fuel on every honest provider.
//! * **Compute unit (CU)** is the unified measure of capacity. A node has a
//!   capacity of one CU when it sustains [`FUEL_PER_CU_SECOND`] (one million)
//!   units of fuel per second on the *calibration kernel* (SPEC.md §7) in its
//!   own sandbox, with the CPU share its owner granted. CU compare and add up
//!   across machines: two nodes of 500 CU together run a million-fuel-per-
//!   millisecond workload as fast as one of 1000 CU. One core of a current
//!   desktop CPU measures roughly 1000–3000 CU.
//! * A **CU-second** is the work one CU does in one second: one million fuel.
//! * **Credits** are the market's money. Amounts are kept as whole
//!   micro-credits ([`Credits`]); a **price** ([`Price`]) is micro-credits per
//!   CU-second, i.e. per million fuel. A task costs
//!   `ceil(fuel_used × price / 1_000_000)` micro-credits.
//! * **Energy** is declared by owners as millijoules per CU-second
//!   ([`EnergyRate`]): a core drawing 15 W at 1000 CU is 15 mJ per CU-second.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::{Decode, DecodeError, Encode, Reader, Writer};

/// Fuel per second that makes one compute unit.
pub const FUEL_PER_CU_SECOND: u64 = 1_000_000;
/// Micro-credits in one credit.
pub const MICROS_PER_CREDIT: u64 = 1_000_000;

macro_rules! newtype_u64 {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);
        impl Encode for $name {
            fn encode(&self, w: &mut Writer) { w.u64(self.0) }
        }
        impl Decode for $name {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> { Ok($name(r.u64()?)) }
        }
    };
}

newtype_u64!(
    /// WebAssembly fuel: the unit of work, billing and verification.
    Fuel
);
newtype_u64!(
    /// Measured capacity in compute units (see the module docs).
    ComputeUnits
);
newtype_u64!(
    /// An amount of money in micro-credits.
    Credits
);
newtype_u64!(
    /// A price in micro-credits per CU-second (per million fuel).
    Price
);
newtype_u64!(
    /// Declared energy cost in millijoules per CU-second.
    EnergyRate
);
newtype_u64!(
    /// A size in bytes (memory, modules, inputs, outputs).
    Bytes
);
newtype_u64!(
    /// A point in time: milliseconds since the Unix epoch, UTC.
    Timestamp
);
newtype_u64!(
    /// A duration in whole milliseconds.
    Millis
);

impl fmt::Display for Fuel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Fuel {
    /// The fuel that `cu` of capacity executes in `d`.
    pub fn in_time(cu: ComputeUnits, d: Duration) -> Fuel {
        // Saturating: capacity and deadlines come from peers, and their
        // product in nanoseconds can exceed even u128.
        let f = (cu.0 as u128 * FUEL_PER_CU_SECOND as u128).saturating_mul(d.as_nanos()) / 1_000_000_000;
        Fuel(u64::try_from(f).unwrap_or(u64::MAX))
    }
}

impl ComputeUnits {
    /// Capacity measured by burning `fuel` in `elapsed` wall time.
    pub fn from_rate(fuel: Fuel, elapsed: Duration) -> ComputeUnits {
        let nanos = elapsed.as_nanos().max(1);
        let cu = (fuel.0 as u128 * 1_000_000_000) / (nanos * FUEL_PER_CU_SECOND as u128);
        ComputeUnits(u64::try_from(cu).unwrap_or(u64::MAX))
    }

    /// Time this capacity needs to burn `fuel`. Zero capacity never finishes,
    /// which is reported as [`Duration::MAX`].
    pub fn time_for(self, fuel: Fuel) -> Duration {
        if self.0 == 0 {
            return Duration::MAX;
        }
        let nanos = (fuel.0 as u128 * 1_000_000_000) / (self.0 as u128 * FUEL_PER_CU_SECOND as u128);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Scales the capacity by a share in `0.0..=1.0`.
    pub fn scaled(self, share: f64) -> ComputeUnits {
        ComputeUnits((self.0 as f64 * share.clamp(0.0, 1.0)).round() as u64)
    }
}

impl fmt::Display for ComputeUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} CU", self.0)
    }
}

impl Credits {
    /// Whole credits.
    pub const fn from_credits(c: u64) -> Credits {
        Credits(c.saturating_mul(MICROS_PER_CREDIT))
    }
    /// Adds, saturating.
    pub fn saturating_add(self, o: Credits) -> Credits {
        Credits(self.0.saturating_add(o.0))
    }
    /// Subtracts, saturating at zero.
    pub fn saturating_sub(self, o: Credits) -> Credits {
        Credits(self.0.saturating_sub(o.0))
    }
    /// The amount as a floating-point number of credits (for display).
    pub fn as_credits_f64(self) -> f64 {
        self.0 as f64 / MICROS_PER_CREDIT as f64
    }
}

fn fmt_micros(v: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let whole = v / MICROS_PER_CREDIT;
    let frac = v % MICROS_PER_CREDIT;
    if frac == 0 {
        write!(f, "{whole}")
    } else {
        let s = format!("{frac:06}");
        write!(f, "{whole}.{}", s.trim_end_matches('0'))
    }
}

fn parse_micros(s: &str) -> Result<u64, UnitParseError> {
    let s = s.trim();
    let bad = || UnitParseError(format!("`{s}` is not an amount like `12` or `0.25`"));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if frac.len() > 6
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(MICROS_PER_CREDIT)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_micros(self.0, f)
    }
}

impl FromStr for Credits {
    type Err = UnitParseError;
    /// Parses a decimal amount of credits (`"12"`, `"0.25"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_micros(s).map(Credits)
    }
}

impl Price {
    /// A price of `credits` whole credits per CU-second.
    pub const fn per_cu_second(credits: u64) -> Price {
        Price(credits.saturating_mul(MICROS_PER_CREDIT))
    }

    /// What `fuel` costs at this price, rounded up to the next micro-credit.
    pub fn cost(self, fuel: Fuel) -> Credits {
        let micros = (fuel.0 as u128 * self.0 as u128).div_ceil(FUEL_PER_CU_SECOND as u128);
        Credits(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_micros(self.0, f)?;
        f.write_str(" cr/CU·s")
    }
}

impl FromStr for Price {
    type Err = UnitParseError;
    /// Parses a decimal number of credits per CU-second (`"0.5"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_micros(s).map(Price)
    }
}

impl fmt::Display for EnergyRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} mJ/CU·s", self.0)
    }
}

impl Bytes {
    /// `n` kibibytes, saturating.
    pub const fn kib(n: u64) -> Bytes {
        Bytes(n.saturating_mul(1 << 10))
    }
    /// `n` mebibytes, saturating.
    pub const fn mib(n: u64) -> Bytes {
        Bytes(n.saturating_mul(1 << 20))
    }
    /// `n` gibibytes, saturating.
    pub const fn gib(n: u64) -> Bytes {
        Bytes(n.saturating_mul(1 << 30))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{} {name}", self.0 / size);
            }
        }
        for (name, size) in UNITS {
            if self.0 >= size {
                return write!(f, "{:.1} {name}", self.0 as f64 / size as f64);
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl FromStr for Bytes {
    type Err = UnitParseError;
    /// Parses sizes like `64KiB`, `64MiB`, `1GiB`, `10MB` (SI), `512 KB`,
    /// `4096B`. A number without a unit is refused (is `512` bytes or
    /// mebibytes?), except `0`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || UnitParseError(format!("`{s}` is not a size like `64MiB`, `512KiB` or `1GiB`"));
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" if n == 0 => 1,
            "" => {
                return Err(UnitParseError(format!(
                    "`{s}` has no unit: write it with one of B, KiB, MiB, GiB (or KB, MB, GB), e.g. `{n}MiB` or `{n}B`"
                )));
            }
            "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(Bytes).ok_or_else(bad)
    }
}

impl Timestamp {
    /// Milliseconds since the epoch of `t`.
    pub fn from_system(t: std::time::SystemTime) -> Timestamp {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }
    /// `self + d`, saturating.
    #[allow(clippy::should_implement_trait)] // saturating, and with a Duration
    pub fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(Millis::from(d).0))
    }
    /// `self - earlier`, or zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

impl From<Duration> for Millis {
    fn from(d: Duration) -> Self {
        Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl From<Millis> for Duration {
    fn from(m: Millis) -> Self {
        Duration::from_millis(m.0)
    }
}

impl Millis {
    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        self.into()
    }
}

/// A unit string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitParseError(pub String);

/// Parses a duration like `500ms`, `2s`, `1m30s`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitParseError> {
    let t = s.trim();
    let bad = || UnitParseError(format!("`{s}` is not a duration like `500ms`, `2s` or `1m30s`"));
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, tail) = rest.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(d).ok_or_else(bad)?;
        rest = tail;
    }
    Ok(total)
}

/// Formats a duration compactly (`850ms`, `2.5s`, `3m20s`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        if d.as_micros() < 1000 && d > Duration::ZERO {
            return format!("{}µs", d.as_micros());
        }
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let s = d.as_secs();
    if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// Parses a link rate in tc's units — `1mbit`, `500kbit`, `2gbit`,
/// `9600bit` — into bits per second (1 kbit = 1000 bits; from 1 kbit to
/// 100 gbit).
pub fn parse_rate(s: &str) -> Result<u64, UnitParseError> {
    let v = s.trim().to_ascii_lowercase();
    let bad = |why: &str| UnitParseError(format!("rate `{s}` {why}"));
    let units = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)];
    let (n, scale) = units
        .iter()
        .find_map(|(u, k)| v.strip_suffix(u).map(|n| (n, *k)))
        .ok_or_else(|| bad("needs a unit: kbit, mbit or gbit (e.g. 1mbit)"))?;
    let n: f64 = n
        .trim()
        .parse()
        .map_err(|_| bad("needs a number before its unit"))?;
    let bits = (n * scale).round();
    if !(1e3..=100e9).contains(&bits) {
        return Err(bad("must be between 1kbit and 100gbit"));
    }
    Ok(bits as u64)
}

/// Formats bits per second as [`parse_rate`] reads them (`1mbit`).
pub fn format_rate(bits: u64) -> String {
    match bits {
        b if b >= 1_000_000_000 => format!("{}gbit", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{}mbit", b as f64 / 1e6),
        b => format!("{}kbit", b as f64 / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_in_tcs_units_and_print_back_the_same() {
        assert_eq!(parse_rate("1mbit"), Ok(1_000_000));
        assert_eq!(parse_rate(" 2.5Mbit "), Ok(2_500_000));
        assert_eq!(parse_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        for r in ["1mbit", "500kbit", "2.5mbit", "10gbit"] {
            assert_eq!(format_rate(parse_rate(r).unwrap()), r);
        }
        assert!(parse_rate("fast").unwrap_err().0.contains("needs a unit"));
        assert!(parse_rate("xmbit").unwrap_err().0.contains("number"));
        assert!(parse_rate("10bit").unwrap_err().0.contains("between"));
    }

    #[test]
    fn cu_and_fuel_convert_both_ways() {
        let cu = ComputeUnits::from_rate(Fuel(2_000_000_000), Duration::from_secs(2));
        assert_eq!(cu, ComputeUnits(1000));
        assert_eq!(cu.time_for(Fuel(500_000_000)), Duration::from_millis(500));
        assert_eq!(Fuel::in_time(cu, Duration::from_millis(250)), Fuel(250_000_000));
        assert_eq!(ComputeUnits(0).time_for(Fuel(1)), Duration::MAX);
        assert_eq!(ComputeUnits(1000).scaled(0.25), ComputeUnits(250));
        // Peer-supplied extremes saturate instead of overflowing.
        assert_eq!(
            Fuel::in_time(ComputeUnits(u64::MAX), Duration::MAX),
            Fuel(u64::MAX)
        );
        assert_eq!(
            Fuel::in_time(ComputeUnits(u64::MAX), Duration::from_millis(u64::MAX)),
            Fuel(u64::MAX)
        );
        assert_eq!(Bytes::gib(u64::MAX), Bytes(u64::MAX));
    }

    #[test]
    fn cost_rounds_up_to_a_micro_credit() {
        let p: Price = "0.5".parse().unwrap();
        assert_eq!(p, Price(500_000));
        assert_eq!(p.cost(Fuel(1_000_000)), Credits(500_000));
        assert_eq!(p.cost(Fuel(1)), Credits(1));
        assert_eq!(p.cost(Fuel(0)), Credits(0));
        assert_eq!(Price(u64::MAX).cost(Fuel(u64::MAX)), Credits(u64::MAX));
    }

    #[test]
    fn amounts_parse_and_print() {
        assert_eq!("12".parse::<Credits>().unwrap(), Credits(12_000_000));
        assert_eq!(".25".parse::<Credits>().unwrap(), Credits(250_000));
        assert_eq!(Credits(1_250_000).to_string(), "1.25");
        assert_eq!(Credits(7).to_string(), "0.000007");
        for bad in ["", ".", "1.2345678", "-1", "1e3", "x"] {
            assert!(bad.parse::<Credits>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("64MiB".parse::<Bytes>().unwrap(), Bytes::mib(64));
        assert_eq!("64 MiB".parse::<Bytes>().unwrap(), Bytes::mib(64));
        assert_eq!("10MB".parse::<Bytes>().unwrap(), Bytes(10_000_000));
        assert_eq!("4096B".parse::<Bytes>().unwrap(), Bytes(4096));
        assert_eq!("0".parse::<Bytes>().unwrap(), Bytes(0));
        let e = "512".parse::<Bytes>().unwrap_err().to_string();
        assert!(e.contains("has no unit") && e.contains("`512MiB`"), "{e}");
        assert!("64XB".parse::<Bytes>().is_err());
        assert!("99999999999999GiB".parse::<Bytes>().is_err());
        assert_eq!(Bytes::mib(64).to_string(), "64 MiB");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        // Too large to represent is an error, not a silently clamped value.
        let too_many_hours = format!("{}h", u64::MAX / 3600 + 1);
        let too_many_minutes = format!("{}m", u64::MAX / 60 + 1);
        for bad in ["", "1", "s", "1x", "1.5s", &too_many_hours, &too_many_minutes] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(200)), "3m20s");
    }
}

//! What the links between domains do to a packet, and when it leaves.
//!
//! The kernel here has no `sch_netem`, so the lab delays traffic between
//! domains itself: the hub routes every packet between two domains
//! through a TUN device, and the forwarder ([`super::forwarder`]) asks this
//! policy when to put it back. A pure function of the settings, the
//! packet's domains and size, the clock and two random draws, so that it
//! can be tested without a network.
//!
//! The model, per packet from domain `s` to domain `d`:
//!
//! 1. lost with the pair's loss probability;
//! 2. sent up `s`'s access link, if `s` has a bandwidth: it waits for the
//!    link to be free and takes `bits / rate` on it;
//! 3. the pair's one-way delay, plus jitter drawn uniformly in ±jitter;
//! 4. sent down `d`'s access link, if `d` has a bandwidth, likewise;
//! 5. never before the packet sent before it between the same pair (real
//!    links jitter without reordering one flow, and TCP takes reordering
//!    for loss).
//!
//! An access link holds at most [`MAX_QUEUE`] of backlog, as a router's
//! buffer does; a packet that would wait longer is dropped, which is what
//! makes TCP settle on the link's rate instead of filling memory.
//!
//! Settings name domains as prefixes (`eu` covers `eu/a` and `eu/b/x`);
//! the most specific setting that matches wins.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The longest a packet waits for an access link before it is dropped.
pub const MAX_QUEUE: Duration = Duration::from_millis(200);

/// One setting for the traffic between two domain prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Link {
    /// One-way delay, each direction.
    pub delay: Duration,
    /// Each packet's delay varies uniformly within ± this.
    pub jitter: Duration,
    /// Probability that a packet is lost, 0..1.
    pub loss: f64,
}

/// The lab's shaping: per pair of domain prefixes, and per domain's access
/// link. Empty means no forwarder at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shaping {
    /// `(a, b, link)`: between domains within `a` and within `b`, either
    /// way. An empty prefix matches every domain.
    pairs: Vec<(String, String, Link)>,
    /// `(domain prefix, bits per second)`: each matching domain's access
    /// link, both directions.
    rates: Vec<(String, u64)>,
}

/// Whether `domain` is `prefix` or below it.
fn within(domain: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || domain == prefix
        || domain
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Shaping {
    /// Whether anything is shaped (`--delay 0ms` alone shapes nothing).
    pub fn is_empty(&self) -> bool {
        self.pairs.iter().all(|(_, _, l)| *l == Link::default()) && self.rates.is_empty()
    }

    /// Sets one field of the link between `a` and `b` (empty: every pair),
    /// keeping the others.
    fn set(&mut self, a: &str, b: &str, f: impl FnOnce(&mut Link)) {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        match self.pairs.iter_mut().find(|(x, y, _)| x == a && y == b) {
            Some((_, _, link)) => f(link),
            None => {
                let mut link = Link::default();
                f(&mut link);
                self.pairs.push((a.to_owned(), b.to_owned(), link));
            }
        }
    }

    /// Adds a `--delay` value: `20ms` (every pair of domains) or
    /// `eu/a:us/a=80ms`.
    pub fn add_delay(&mut self, arg: &str) -> anyhow::Result<()> {
        let (a, b, v) = split_pair(arg)?;
        let d = parse_duration(v)?;
        self.set(&a, &b, |l| l.delay = d);
        Ok(())
    }

    /// Adds a `--jitter` value, as `--delay`.
    pub fn add_jitter(&mut self, arg: &str) -> anyhow::Result<()> {
        let (a, b, v) = split_pair(arg)?;
        let d = parse_duration(v)?;
        self.set(&a, &b, |l| l.jitter = d);
        Ok(())
    }

    /// Adds a `--loss` value: `1%` or `eu/a:us/a=0.5%`.
    pub fn add_loss(&mut self, arg: &str) -> anyhow::Result<()> {
        let (a, b, v) = split_pair(arg)?;
        let pct: f64 = v
            .strip_suffix('%')
            .with_context(|| format!("loss {v:?} must be a percentage, e.g. 1%"))?
            .trim()
            .parse()
            .with_context(|| format!("loss {v:?} must be a percentage, e.g. 1%"))?;
        if !(0.0..=100.0).contains(&pct) {
            bail!("loss {v:?} must be between 0% and 100%");
        }
        self.set(&a, &b, |l| l.loss = pct / 100.0);
        Ok(())
    }

    /// Adds a `--bandwidth` value: `eu/b=1mbit`.
    pub fn add_bandwidth(&mut self, arg: &str) -> anyhow::Result<()> {
        let (domain, rate) = arg
            .split_once('=')
            .with_context(|| format!("bandwidth {arg:?} must be DOMAIN=RATE, e.g. eu/b=1mbit"))?;
        let bits = parse_rate(rate)?;
        self.rates.retain(|(d, _)| d != domain);
        self.rates.push((domain.trim().to_owned(), bits));
        Ok(())
    }

    /// The link between domains `x` and `y`: the most specific matching
    /// setting (the longest prefixes), or none.
    pub fn link(&self, x: &str, y: &str) -> Option<Link> {
        self.pairs
            .iter()
            .filter(|(a, b, _)| (within(x, a) && within(y, b)) || (within(x, b) && within(y, a)))
            .max_by_key(|(a, b, _)| a.len() + b.len())
            .map(|(_, _, l)| *l)
    }

    /// The access link rate of `domain`, bits per second, if shaped.
    pub fn rate(&self, domain: &str) -> Option<u64> {
        self.rates
            .iter()
            .filter(|(d, _)| within(domain, d))
            .max_by_key(|(d, _)| d.len())
            .map(|(_, r)| *r)
    }

    /// One line per setting, for the testnet's report.
    pub fn describe(&self) -> Vec<String> {
        let name = |a: &str| {
            if a.is_empty() {
                "*".to_owned()
            } else {
                a.to_owned()
            }
        };
        let mut out = Vec::new();
        for (a, b, l) in &self.pairs {
            let mut s = format!("{} <-> {}: {:?} each way", name(a), name(b), l.delay);
            if !l.jitter.is_zero() {
                s += &format!(" ±{:?}", l.jitter);
            }
            if l.loss > 0.0 {
                s += &format!(", {}% loss", l.loss * 100.0);
            }
            out.push(s);
        }
        for (d, r) in &self.rates {
            out.push(format!(
                "{}: {} each way",
                name(d),
                agora_protocol::units::format_rate(*r)
            ));
        }
        out
    }
}

/// `A:B=V` or `V`: the pair (empty for every pair) and the value.
fn split_pair(arg: &str) -> anyhow::Result<(String, String, &str)> {
    match arg.split_once('=') {
        None => Ok((String::new(), String::new(), arg.trim())),
        Some((pair, v)) => {
            let (a, b) = pair
                .split_once(':')
                .with_context(|| format!("{arg:?}: the pair must be DOMAIN:DOMAIN, e.g. eu/a:us/a=80ms"))?;
            if a.trim().is_empty() || b.trim().is_empty() {
                bail!("{arg:?}: the pair must be DOMAIN:DOMAIN, e.g. eu/a:us/a=80ms");
            }
            Ok((a.trim().to_owned(), b.trim().to_owned(), v.trim()))
        }
    }
}

fn parse_duration(v: &str) -> anyhow::Result<Duration> {
    agora_protocol::units::parse_duration(v).with_context(|| format!("{v:?} is not a duration, e.g. 80ms"))
}

/// `1mbit`, `500kbit`, `2gbit` (tc's units), in bits per second.
pub fn parse_rate(v: &str) -> anyhow::Result<u64> {
    Ok(agora_protocol::units::parse_rate(v)?)
}

/// The forwarder's state: when each access link is next free, and the
/// last release per direction. Domains are the lab's subnet numbers.
#[derive(Debug)]
pub struct Scheduler {
    shaping: Shaping,
    /// Subnet number → domain name, as the lab creates them.
    names: HashMap<usize, String>,
    /// (subnet, up?) → when that access link is next free.
    free_at: HashMap<(usize, bool), Instant>,
    /// (from, to) → the last packet's release.
    last: HashMap<(usize, usize), Instant>,
}

/// What the scheduler decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Put it back at this time.
    At(Instant),
    /// Lost on the link.
    Lost,
    /// An access link's buffer was full.
    Overflow,
}

impl Scheduler {
    /// A scheduler for `shaping`, knowing no domain yet.
    pub fn new(shaping: Shaping) -> Scheduler {
        Scheduler {
            shaping,
            names: HashMap::new(),
            free_at: HashMap::new(),
            last: HashMap::new(),
        }
    }

    /// Records that subnet `k` holds `domain`.
    pub fn name(&mut self, k: usize, domain: &str) {
        self.names.insert(k, domain.to_owned());
    }

    /// When a packet of `len` bytes from subnet `from` to subnet `to`,
    /// arriving `now`, leaves. `draws` are two uniform numbers in [0, 1):
    /// the loss draw and the jitter draw. Unknown subnets pass at once.
    pub fn admit(&mut self, from: usize, to: usize, len: usize, now: Instant, draws: [f64; 2]) -> Verdict {
        let (Some(x), Some(y)) = (self.names.get(&from), self.names.get(&to)) else {
            return Verdict::At(now);
        };
        let link = self.shaping.link(x, y).unwrap_or_default();
        let (up, down) = (self.shaping.rate(x), self.shaping.rate(y));
        if draws[0] < link.loss {
            return Verdict::Lost;
        }
        let bits = (len as u64 * 8) as f64;
        let mut t = now;
        if let Some(rate) = up {
            match queue(&mut self.free_at, (from, true), t, bits / rate as f64) {
                Some(done) => t = done,
                None => return Verdict::Overflow,
            }
        }
        let jitter = link.jitter.as_secs_f64() * (2.0 * draws[1] - 1.0);
        let delay = (link.delay.as_secs_f64() + jitter).max(0.0);
        t += Duration::from_secs_f64(delay);
        if let Some(rate) = down {
            match queue(&mut self.free_at, (to, false), t, bits / rate as f64) {
                Some(done) => t = done,
                None => return Verdict::Overflow,
            }
        }
        let last = self.last.entry((from, to)).or_insert(t);
        t = t.max(*last);
        *last = t;
        Verdict::At(t)
    }
}

/// Puts `secs` of transmission on the link `key` at `at`: when it is done,
/// or `None` if it would wait more than [`MAX_QUEUE`] for the link.
fn queue(
    free_at: &mut HashMap<(usize, bool), Instant>,
    key: (usize, bool),
    at: Instant,
    secs: f64,
) -> Option<Instant> {
    let free = free_at.get(&key).copied().unwrap_or(at).max(at);
    if free.duration_since(at) > MAX_QUEUE {
        return None;
    }
    let done = free + Duration::from_secs_f64(secs);
    free_at.insert(key, done);
    Some(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaping(delays: &[&str], rates: &[&str]) -> Shaping {
        let mut s = Shaping::default();
        for d in delays {
            s.add_delay(d).expect("a valid delay");
        }
        for r in rates {
            s.add_bandwidth(r).expect("a valid rate");
        }
        s
    }

    fn scheduler(s: Shaping) -> Scheduler {
        let mut sch = Scheduler::new(s);
        sch.name(1, "eu/a");
        sch.name(2, "eu/b");
        sch.name(3, "us/a");
        sch
    }

    #[test]
    fn the_most_specific_pair_wins_and_either_order_matches() {
        let s = shaping(&["20ms", "eu:us=60ms", "eu/a:us/a=80ms"], &[]);
        assert_eq!(
            s.link("us/a", "eu/a").map(|l| l.delay),
            Some(Duration::from_millis(80))
        );
        assert_eq!(
            s.link("eu/b", "us/a").map(|l| l.delay),
            Some(Duration::from_millis(60))
        );
        assert_eq!(
            s.link("eu/a", "eu/b").map(|l| l.delay),
            Some(Duration::from_millis(20))
        );
        // A prefix is a whole path segment: `eu` does not cover `europa`.
        assert_eq!(
            s.link("europa", "us/a").map(|l| l.delay),
            Some(Duration::from_millis(20))
        );
    }

    #[test]
    fn a_packet_waits_the_delay_of_its_pair_and_keeps_its_flows_order() {
        let mut sch = scheduler(shaping(&["eu/a:us/a=80ms"], &[]));
        let now = Instant::now();
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(sch.admit(1, 3, 100, now, [0.5, 0.5]), Verdict::At(now + ms(80)));
        assert_eq!(sch.admit(3, 1, 100, now, [0.5, 0.5]), Verdict::At(now + ms(80)));
        // Not between these two: at once.
        assert_eq!(sch.admit(1, 2, 100, now, [0.5, 0.5]), Verdict::At(now));
    }

    #[test]
    fn jitter_varies_the_delay_without_reordering_a_flow() {
        let mut s = shaping(&["40ms"], &[]);
        s.add_jitter("10ms").expect("a valid jitter");
        let mut sch = scheduler(s);
        let now = Instant::now();
        let Verdict::At(first) = sch.admit(1, 2, 100, now, [0.5, 0.999]) else {
            panic!("not lost")
        };
        assert!(first > now + Duration::from_millis(49), "{:?}", first - now);
        // The next packet draws the least delay yet leaves after the first.
        let Verdict::At(second) = sch.admit(1, 2, 100, now + Duration::from_millis(1), [0.5, 0.0]) else {
            panic!("not lost")
        };
        assert_eq!(second, first);
    }

    #[test]
    fn loss_drops_the_share_of_packets_its_draw_says() {
        let mut s = Shaping::default();
        s.add_loss("eu/a:eu/b=25%").expect("a valid loss");
        let mut sch = scheduler(s);
        let now = Instant::now();
        let lost = (0..100)
            .filter(|i| sch.admit(1, 2, 100, now, [f64::from(*i) / 100.0, 0.5]) == Verdict::Lost)
            .count();
        assert_eq!(lost, 25);
    }

    #[test]
    fn a_shaped_domain_passes_bytes_at_its_rate_both_ways_and_drops_beyond_its_buffer() {
        let mut sch = scheduler(shaping(&[], &["eu/b=1mbit"]));
        let now = Instant::now();
        // 1250 bytes is 10 ms at 1 Mbit/s.
        let mut last = now;
        let mut sent = 0;
        for _ in 0..100 {
            match sch.admit(1, 2, 1250, now, [0.5, 0.5]) {
                Verdict::At(t) => {
                    last = t;
                    sent += 1;
                }
                Verdict::Overflow => break,
                Verdict::Lost => panic!("no loss is set"),
            }
        }
        // The buffer holds 200 ms: 21 packets (the first goes at once).
        assert_eq!(sent, 21);
        assert_eq!(last, now + Duration::from_millis(210));
        // The other direction has its own link: its first packet takes 10 ms.
        assert_eq!(
            sch.admit(2, 3, 1250, now, [0.5, 0.5]),
            Verdict::At(now + Duration::from_millis(10))
        );
        // Unshaped domains between themselves: at once.
        assert_eq!(sch.admit(1, 3, 1250, now, [0.5, 0.5]), Verdict::At(now));
    }

    #[test]
    fn bad_settings_are_refused_with_what_to_write() {
        let mut s = Shaping::default();
        let err = |r: anyhow::Result<()>| format!("{:#}", r.expect_err("refused"));
        assert!(err(s.add_delay("eu/a=80ms")).contains("DOMAIN:DOMAIN"));
        assert!(err(s.add_delay("soon")).contains("not a duration"));
        assert!(err(s.add_bandwidth("eu/b=fast")).contains("needs a unit"));
        assert!(err(s.add_bandwidth("1mbit")).contains("DOMAIN=RATE"));
        assert!(err(s.add_loss("eu/a:eu/b=5")).contains("percentage"));
        assert!(err(s.add_loss("150%")).contains("between"));
        assert_eq!(parse_rate("1mbit").expect("valid"), 1_000_000);
        assert_eq!(parse_rate("500kbit").expect("valid"), 500_000);
        assert!(s.is_empty());
        s.add_delay("0ms").expect("a valid delay");
        assert!(s.is_empty(), "no delay is no shaping");
    }
}

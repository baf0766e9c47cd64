//! Which gossip neighbours to cut off for flooding.
//!
//! Every gossip message costs its receiver the same work before the market
//! can judge it: decrypting, decoding, de-duplicating, handing it over. A
//! message the market finds no use for (a replay, an advert of a key past
//! the second's newcomers, a full view, an invalid one) is not forwarded,
//! so an honest neighbour passes on at most what it found useful itself: a
//! few dozen of this node's useless messages a second. A stranger
//! publishing ten thousand fresh keys' adverts sends thousands a second,
//! and on a small device that work takes the cores its tasks run on.
//!
//! So each neighbour gets a budget of useless messages: [`BURST`] at once,
//! refilled at [`RATE`] a second. A neighbour that overdraws it is
//! disconnected and refused for [`COOL_DOWN`]; useful messages cost
//! nothing. A flood at 3,000 messages a second is cut within a fraction
//! of a second; a stranger that comes back under a new identity pays a
//! handshake and is cut again after another burst. The decision is a pure
//! function of the verdicts and the clock, here; the network task feeds it
//! the verdicts the node reports to gossipsub and closes what it returns.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Useless messages a neighbour may send at once.
pub(crate) const BURST: f64 = 1_000.0;
/// Useless messages a second a neighbour may keep sending.
pub(crate) const RATE: f64 = 200.0;
/// How long a neighbour cut off for flooding is refused.
pub(crate) const COOL_DOWN: Duration = Duration::from_secs(600);
/// Most neighbours tracked at once (more are connected only briefly; the
/// fullest budgets are forgotten first, which forgives nothing owed).
const MAX_TRACKED: usize = 4_096;

/// The flood budgets of a node's gossip neighbours.
#[derive(Debug)]
pub(crate) struct FloodGuard<P> {
    budgets: HashMap<P, Budget>,
    cut: HashMap<P, Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn refilled(self, now: Instant) -> f64 {
        (self.tokens + RATE * now.saturating_duration_since(self.at).as_secs_f64()).min(BURST)
    }
}

impl<P: Copy + Eq + Hash> Default for FloodGuard<P> {
    fn default() -> Self {
        FloodGuard {
            budgets: HashMap::new(),
            cut: HashMap::new(),
        }
    }
}

impl<P: Copy + Eq + Hash> FloodGuard<P> {
    /// `source` forwarded a message the node found no use for. Returns
    /// true when that overdraws its budget: cut it off now.
    pub(crate) fn useless(&mut self, source: P, now: Instant) -> bool {
        if self.is_cut(&source, now) {
            return false;
        }
        if self.budgets.len() >= MAX_TRACKED && !self.budgets.contains_key(&source) {
            self.budgets.retain(|_, b| b.refilled(now) < BURST);
            if self.budgets.len() >= MAX_TRACKED {
                return false;
            }
        }
        let b = self.budgets.entry(source).or_insert(Budget {
            tokens: BURST,
            at: now,
        });
        b.tokens = b.refilled(now) - 1.0;
        b.at = now;
        if b.tokens >= 0.0 {
            return false;
        }
        self.budgets.remove(&source);
        self.cut.retain(|_, until| *until > now);
        self.cut.insert(source, now + COOL_DOWN);
        true
    }

    /// Whether `peer` is refused for flooding at `now`.
    pub(crate) fn is_cut(&self, peer: &P, now: Instant) -> bool {
        self.cut.get(peer).is_some_and(|until| *until > now)
    }

    /// How many neighbours are refused for flooding at `now`.
    pub(crate) fn cut_count(&self, now: Instant) -> usize {
        self.cut.values().filter(|until| **until > now).count()
    }

    /// Forgets `peer`'s budget (it disconnected); a cut stays.
    pub(crate) fn forget(&mut self, peer: &P) {
        self.budgets.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn an_honest_relay_forwarding_a_steady_trickle_is_never_cut() {
        let mut g = FloodGuard::default();
        let t0 = Instant::now();
        // 150 useless messages a second for ten minutes.
        for i in 0..150 * 600 {
            assert!(!g.useless(1, at(t0, i * 1000 / 150)), "cut at message {i}");
        }
    }

    #[test]
    fn a_burst_up_to_the_budget_is_forgiven_and_one_more_is_not() {
        let mut g = FloodGuard::default();
        let t0 = Instant::now();
        for _ in 0..BURST as usize {
            assert!(!g.useless(1, t0));
        }
        assert!(g.useless(1, t0));
        assert!(g.is_cut(&1, t0));
    }

    #[test]
    fn a_flood_of_thousands_a_second_is_cut_within_half_a_second() {
        let mut g = FloodGuard::default();
        let t0 = Instant::now();
        let cut_at = (0..10_000u64)
            .find(|i| g.useless(7, at(t0, i * 1000 / 3_000)))
            .expect("cut");
        assert!(cut_at * 1000 / 3_000 < 500, "cut after {cut_at} messages");
        assert_eq!(g.cut_count(at(t0, 1_000)), 1);
    }

    #[test]
    fn a_cut_neighbour_is_refused_for_the_cool_down_and_then_starts_afresh() {
        let mut g = FloodGuard::default();
        let t0 = Instant::now();
        while !g.useless(3, t0) {}
        let later = t0 + COOL_DOWN - Duration::from_secs(1);
        assert!(g.is_cut(&3, later));
        assert!(!g.useless(3, later), "a cut neighbour is not cut twice");
        let after = t0 + COOL_DOWN;
        assert!(!g.is_cut(&3, after));
        assert!(!g.useless(3, after), "a full budget again");
    }

    #[test]
    fn one_neighbours_flood_costs_another_nothing() {
        let mut g = FloodGuard::default();
        let t0 = Instant::now();
        while !g.useless(1, t0) {}
        for _ in 0..BURST as usize {
            assert!(!g.useless(2, t0));
        }
    }

    #[test]
    fn tracking_is_bounded_and_forgets_full_budgets_first() {
        let mut g = FloodGuard::default();
        let t0 = Instant::now();
        for p in 0..MAX_TRACKED as u32 {
            g.useless(p, t0);
        }
        // All have refilled a second later: a newcomer's message makes room.
        let later = at(t0, 1_000);
        g.useless(u32::MAX, later);
        assert!(g.budgets.len() <= MAX_TRACKED);
        assert!(g.budgets.contains_key(&u32::MAX));
    }
}

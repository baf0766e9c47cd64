//! # primes
//!
//! Counts the primes in a range: a compute-bound kernel with no I/O, used by
//! the benchmarks to compare the same code as WASM (the `primes` job) and
//! native (this library, a plain dependency of the benchmark).
//!
//! Two methods over the half-open range `[lo, hi)`:
//! - [`Method::Sieve`] (default): a segmented sieve of Eratosthenes over odd
//!   numbers, 32 KiB segments: memory-bound in the small, fast overall.
//! - [`Method::Trial`]: trial division by every odd number up to √n: pure
//!   integer division, the harder test of a compiler.
//!
//! The map step counts one range ([`Range`] → [`Count`]); the reduce step
//! ([`total`]) adds up ranges that tile one larger range.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use agora_sdk::Error;
use serde::{Deserialize, Serialize};

/// Largest `hi` accepted (2⁴⁰): the sieve's base primes then stay under 2²⁰.
pub const MAX_HI: u64 = 1 << 40;

/// How to count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Segmented sieve of Eratosthenes.
    #[default]
    Sieve,
    /// Trial division.
    Trial,
}

/// One task input: count the primes `p` with `lo <= p < hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Inclusive lower end.
    pub lo: u64,
    /// Exclusive upper end, at most [`MAX_HI`].
    pub hi: u64,
    /// How to count; defaults to the sieve.
    #[serde(default)]
    pub method: Method,
}

/// One task output (and the reduced result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Count {
    /// Inclusive lower end.
    pub lo: u64,
    /// Exclusive upper end.
    pub hi: u64,
    /// Primes in `[lo, hi)`.
    pub count: u64,
}

/// The map step: checks the range and counts.
pub fn count(range: Range) -> Result<Count, Error> {
    if range.lo > range.hi || range.hi > MAX_HI {
        return Err(Error::msg(format!(
            "range [{}, {}) must have lo <= hi <= 2^40",
            range.lo, range.hi
        )));
    }
    let count = match range.method {
        Method::Sieve => count_sieve(range.lo, range.hi),
        Method::Trial => count_trial(range.lo, range.hi),
    };
    Ok(Count {
        lo: range.lo,
        hi: range.hi,
        count,
    })
}

/// Whether `n` is prime, by trial division.
pub fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Primes in `[lo, hi)` by trial division (`hi` at most [`MAX_HI`]).
pub fn count_trial(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

/// Odd numbers per sieve segment: 32 KiB of flags.
const SEGMENT: usize = 32 * 1024;

/// Primes in `[lo, hi)` by a segmented sieve (`hi` at most [`MAX_HI`]).
pub fn count_sieve(lo: u64, hi: u64) -> u64 {
    if hi <= 2 || lo >= hi {
        return 0;
    }
    let mut count = u64::from(lo <= 2);
    // Odd candidates from the first odd number >= max(lo, 3).
    let start = lo.max(3) | 1;
    if start >= hi {
        return count;
    }
    let base = odd_primes_up_to((hi - 1).isqrt());
    let mut flags = vec![true; SEGMENT];
    let mut seg_lo = start;
    while seg_lo < hi {
        let seg_hi = (seg_lo + 2 * SEGMENT as u64).min(hi);
        // Flag j stands for seg_lo + 2j.
        let len = (seg_hi - seg_lo).div_ceil(2) as usize;
        let flags = &mut flags[..len];
        flags.fill(true);
        for &p in &base {
            let p = u64::from(p);
            if p * p >= seg_hi {
                break;
            }
            // The first odd multiple of p at or after max(p², seg_lo).
            let mut m = (p * p).max(seg_lo.div_ceil(p) * p);
            if m.is_multiple_of(2) {
                m += p;
            }
            let mut j = ((m - seg_lo) / 2) as usize;
            while j < len {
                flags[j] = false;
                j += p as usize;
            }
        }
        count += flags.iter().filter(|&&f| f).count() as u64;
        seg_lo = seg_hi + u64::from(seg_hi.is_multiple_of(2));
    }
    count
}

/// The odd primes up to `limit`, by a plain sieve.
fn odd_primes_up_to(limit: u64) -> Vec<u32> {
    let limit = limit as usize;
    let mut composite = vec![false; limit + 1];
    let mut primes = Vec::new();
    let mut n = 3;
    while n <= limit {
        if !composite[n] {
            primes.push(n as u32);
            let mut m = n * n;
            while m <= limit {
                composite[m] = true;
                m += 2 * n;
            }
        }
        n += 2;
    }
    primes
}

/// The reduce step: adds up counts whose ranges, in any order, tile one range
/// `[lo, hi)` with no gap or overlap.
pub fn total(mut counts: Vec<Count>) -> Result<Count, Error> {
    counts.sort_by_key(|c| (c.lo, c.hi));
    let Some(first) = counts.first() else {
        return Err(Error::msg("no ranges to add up: the job had no tasks"));
    };
    let mut total = Count {
        lo: first.lo,
        hi: first.lo,
        count: 0,
    };
    for c in &counts {
        if c.lo != total.hi {
            let what = if c.lo > total.hi { "a gap" } else { "an overlap" };
            return Err(Error::msg(format!(
                "the ranges leave {what} at {}: [{}, {}) follows one ending at {}",
                c.lo.min(total.hi),
                c.lo,
                c.hi,
                total.hi
            )));
        }
        total.hi = c.hi;
        total.count += c.count;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_prime_counts() {
        // π(10^k) for k = 1..=6.
        let pi = [4, 25, 168, 1229, 9592, 78498];
        for (k, &expected) in pi.iter().enumerate() {
            let hi = 10u64.pow(k as u32 + 1);
            assert_eq!(count_sieve(0, hi), expected, "sieve below {hi}");
            if hi <= 100_000 {
                assert_eq!(count_trial(0, hi), expected, "trial below {hi}");
            }
        }
        assert_eq!(count_sieve(0, 10_000_000), 664_579);
    }

    #[test]
    fn sieve_agrees_with_trial_division_on_awkward_ranges() {
        let ranges = [
            (0, 0),
            (0, 2),
            (0, 3),
            (2, 3),
            (3, 4),
            (4, 5),
            (9, 10),
            (65_530, 65_550),
            (1_000_000_000, 1_000_100_000),
            (999_999_000_000, 999_999_002_001),
            (MAX_HI - 2_000, MAX_HI),
        ];
        for (lo, hi) in ranges {
            assert_eq!(count_sieve(lo, hi), count_trial(lo, hi), "[{lo}, {hi})");
        }
    }

    #[test]
    fn count_checks_the_range() {
        assert!(
            count(Range {
                lo: 5,
                hi: 4,
                method: Method::Sieve
            })
            .is_err()
        );
        assert!(
            count(Range {
                lo: 0,
                hi: MAX_HI + 1,
                method: Method::Sieve
            })
            .is_err()
        );
        let c = count(Range {
            lo: 10,
            hi: 20,
            method: Method::Trial,
        })
        .unwrap();
        assert_eq!(
            c,
            Count {
                lo: 10,
                hi: 20,
                count: 4
            }
        );
    }

    #[test]
    fn range_json_defaults_to_the_sieve() {
        let r: Range = serde_json::from_str(r#"{"lo": 0, "hi": 100}"#).unwrap();
        assert_eq!(r.method, Method::Sieve);
        let r: Range = serde_json::from_str(r#"{"lo": 0, "hi": 100, "method": "trial"}"#).unwrap();
        assert_eq!(r.method, Method::Trial);
    }

    #[test]
    fn total_adds_up_tiling_ranges_in_any_order() {
        let parts = [(200, 300), (0, 100), (100, 200)];
        let counts = parts
            .iter()
            .map(|&(lo, hi)| Count {
                lo,
                hi,
                count: count_sieve(lo, hi),
            })
            .collect();
        assert_eq!(
            total(counts).unwrap(),
            Count {
                lo: 0,
                hi: 300,
                count: 62
            }
        );
        let gap = vec![
            Count {
                lo: 0,
                hi: 10,
                count: 4,
            },
            Count {
                lo: 11,
                hi: 20,
                count: 4,
            },
        ];
        assert!(total(gap).unwrap_err().to_string().contains("a gap at 10"));
        let overlap = vec![
            Count {
                lo: 0,
                hi: 10,
                count: 4,
            },
            Count {
                lo: 5,
                hi: 20,
                count: 5,
            },
        ];
        assert!(total(overlap).unwrap_err().to_string().contains("an overlap"));
        assert!(total(Vec::new()).is_err());
    }
}

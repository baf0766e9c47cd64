//! # montecarlo-pi
//!
//! Estimates π by throwing random points at the unit square and counting
//! those inside the quarter circle, spread over many independent samplers.
//!
//! - Map ([`sample`]): a task draws `samples` points from its seed and
//!   `stream` and reports how many hit ([`Count`]).
//! - Reduce ([`estimate`]): the hits of every task, pooled, give π ≈ 4·H/N
//!   with its standard error 4·√(p(1−p)/N), p = H/N ([`Estimate`]).
//!
//! Points are 32-bit integer coordinates, so the test `x² + y² < 2⁶⁴` is
//! exact integer arithmetic: no float rounding can differ between providers.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use agora_sdk::{Error, Rng};
use serde::{Deserialize, Serialize};

/// One task input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Points to draw.
    pub samples: u64,
    /// Which sampler this is (e.g. the task's index): mixed into the seed so
    /// that tasks are independent even if the node gave them equal seeds.
    #[serde(default)]
    pub stream: u64,
}

/// One task output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Count {
    /// Points drawn.
    pub samples: u64,
    /// Points inside the quarter circle.
    pub hits: u64,
}

/// The job's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate of π.
    pub pi: f64,
    /// Its standard error (one standard deviation of the estimate).
    pub std_error: f64,
    /// Points drawn, over all tasks.
    pub samples: u64,
    /// Hits, over all tasks.
    pub hits: u64,
    /// Tasks pooled.
    pub tasks: usize,
}

/// Counts the points among `samples` draws of `rng` that fall inside the
/// quarter circle of radius 2³².
pub fn count_hits(rng: &mut Rng, samples: u64) -> u64 {
    let mut hits = 0;
    for _ in 0..samples {
        let r = rng.next_u64();
        hits += u64::from(inside(r >> 32, r & 0xffff_ffff));
    }
    hits
}

/// Whether the point `(x, y)`, both below 2³², lies inside the circle of
/// radius 2³²: x² and y² each fit in a `u64`, and their sum overflows exactly
/// when it reaches 2⁶⁴ = radius².
#[inline]
pub fn inside(x: u64, y: u64) -> bool {
    (x * x).checked_add(y * y).is_some()
}

/// The map step: `task.samples` draws from the seed and the task's stream.
pub fn sample(seed: u64, task: Task) -> Count {
    let mut rng = Rng::with_stream(seed, task.stream);
    Count {
        samples: task.samples,
        hits: count_hits(&mut rng, task.samples),
    }
}

/// The reduce step: pools every task's count.
pub fn estimate(counts: &[Count]) -> Result<Estimate, Error> {
    let (mut samples, mut hits) = (0u64, 0u64);
    for (i, c) in counts.iter().enumerate() {
        if c.hits > c.samples {
            return Err(Error::msg(format!(
                "task {i} reports {} hits out of {} samples",
                c.hits, c.samples
            )));
        }
        samples = samples
            .checked_add(c.samples)
            .ok_or_else(|| Error::msg("more than 2^64 samples in total"))?;
        hits += c.hits;
    }
    if samples == 0 {
        return Err(Error::msg(
            "no samples to estimate from: the job had no tasks, or none drew any",
        ));
    }
    let p = hits as f64 / samples as f64;
    Ok(Estimate {
        pi: 4.0 * p,
        std_error: 4.0 * (p * (1.0 - p) / samples as f64).sqrt(),
        samples,
        hits,
        tasks: counts.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quarter_circle_test_is_exact_at_its_edge() {
        let max = u64::from(u32::MAX);
        assert!(inside(max, 0) && inside(0, max) && inside(0, 0));
        // On the diagonal the edge is at 2^31.5 ≈ 3_037_000_499.98.
        assert!(inside(3_037_000_499, 3_037_000_499));
        assert!(!inside(3_037_000_500, 3_037_000_500));
        assert!(!inside(max, max));
    }

    #[test]
    fn the_same_seed_and_stream_give_the_same_count() {
        let t = Task {
            samples: 10_000,
            stream: 3,
        };
        assert_eq!(sample(42, t), sample(42, t));
        assert_ne!(sample(42, t), sample(42, Task { stream: 4, ..t }));
        assert_ne!(sample(42, t), sample(43, t));
    }

    #[test]
    fn many_samplers_estimate_pi_within_their_error() {
        let counts: Vec<Count> = (0..20)
            .map(|s| {
                sample(
                    7,
                    Task {
                        samples: 50_000,
                        stream: s,
                    },
                )
            })
            .collect();
        let e = estimate(&counts).unwrap();
        assert_eq!((e.samples, e.tasks), (1_000_000, 20));
        // 4·√(π/4·(1−π/4)/10⁶) ≈ 0.00164; allow five standard errors.
        assert!((e.std_error - 0.00164).abs() < 0.0001, "{e:?}");
        assert!((e.pi - std::f64::consts::PI).abs() < 5.0 * e.std_error, "{e:?}");
    }

    #[test]
    fn estimate_rejects_impossible_or_empty_counts() {
        assert!(estimate(&[]).is_err());
        assert!(estimate(&[Count { samples: 0, hits: 0 }]).is_err());
        assert!(estimate(&[Count { samples: 1, hits: 2 }]).is_err());
    }

    #[test]
    fn task_json_defaults_the_stream() {
        let t: Task = serde_json::from_str(r#"{"samples": 5}"#).unwrap();
        assert_eq!(
            t,
            Task {
                samples: 5,
                stream: 0
            }
        );
        assert!(serde_json::from_str::<Task>(r#"{"samples": 5, "seed": 1}"#).is_err());
    }
}

//! # checkpointed-pi
//!
//! A long task that estimates π by throwing random points at the unit square,
//! in rounds, and saves its progress after each round with
//! [`agora_sdk::checkpoint_json`]. If its provider is interrupted, the task
//! resumes (on the same node or another) after the last saved round, and
//! prints exactly what an uninterrupted run prints.
//!
//! That holds because the whole [`State`] is in the checkpoint: the round,
//! the counts, and the generator ([`SplitMix64`], one `u64`), rather than a
//! generator rebuilt from the seed that would start its stream over.
//!
//! Points are 32-bit integer coordinates and the test `x² + y² < 2⁶⁴` is exact
//! integer arithmetic, as in `montecarlo-pi`: no float rounding can differ
//! between providers.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use agora_sdk::Error;
use serde::{Deserialize, Serialize};

/// Rounds played when no argument says.
pub const DEFAULT_ROUNDS: u32 = 40;
/// Points per round when no argument says.
pub const DEFAULT_SAMPLES: u64 = 2_000_000;

/// The task's arguments: `[ROUNDS [SAMPLES]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Rounds to play, at least 1.
    pub rounds: u32,
    /// Points per round, at least 1.
    pub samples: u64,
}

impl Params {
    /// Parses `[ROUNDS [SAMPLES]]` (digits, `_` allowed as a separator).
    pub fn from_args(args: &[String]) -> Result<Params, Error> {
        let usage = "arguments: [ROUNDS [SAMPLES]], e.g. 40 2000000";
        let (rounds, samples) = match args {
            [] => (DEFAULT_ROUNDS, DEFAULT_SAMPLES),
            [r] => (count("ROUNDS", r)?, DEFAULT_SAMPLES),
            [r, s] => (count("ROUNDS", r)?, count("SAMPLES", s)?),
            _ => return Err(Error::msg(format!("too many arguments; {usage}"))),
        };
        if rounds == 0 || samples == 0 {
            return Err(Error::msg(format!(
                "ROUNDS and SAMPLES must be at least 1; {usage}"
            )));
        }
        if u64::from(rounds).checked_mul(samples).is_none() {
            return Err(Error::msg("ROUNDS × SAMPLES must be below 2^64"));
        }
        Ok(Params { rounds, samples })
    }
}

fn count<T: std::str::FromStr>(name: &str, arg: &str) -> Result<T, Error> {
    arg.replace('_', "")
        .parse()
        .map_err(|_| Error::msg(format!("{name} must be a whole number, not {arg:?}")))
}

/// SplitMix64: a generator whose whole state is one `u64`, so it goes into
/// the checkpoint as it is and a resumed run draws on where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Everything the task knows after some rounds: what it checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Rounds played.
    pub round: u32,
    /// Points inside the quarter circle so far.
    pub inside: u64,
    /// Points drawn so far.
    pub total: u64,
    /// The generator, where the next round draws from.
    pub rng: SplitMix64,
}

impl State {
    /// No rounds played, the generator at `seed`.
    pub fn new(seed: u64) -> State {
        State {
            round: 0,
            inside: 0,
            total: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// Plays one round of `samples` points.
    pub fn play_round(&mut self, samples: u64) {
        // A local copy keeps the generator in a register in the hot loop.
        let mut rng = self.rng;
        let mut inside = 0;
        for _ in 0..samples {
            let r = rng.next_u64();
            inside += u64::from(in_circle(r >> 32, r & 0xffff_ffff));
        }
        self.rng = rng;
        self.inside += inside;
        self.total += samples;
        self.round += 1;
    }

    /// The estimate after the rounds played so far.
    pub fn estimate(&self) -> Estimate {
        Estimate {
            rounds: self.round,
            samples: self.total,
            inside: self.inside,
            pi: 4.0 * self.inside as f64 / self.total as f64,
        }
    }
}

/// Whether the point `(x, y)`, both below 2³², lies inside the circle of
/// radius 2³²: x² and y² each fit in a `u64`, and their sum overflows exactly
/// when it reaches 2⁶⁴ = radius².
#[inline]
pub fn in_circle(x: u64, y: u64) -> bool {
    (x * x).checked_add(y * y).is_some()
}

/// The task's output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Rounds played.
    pub rounds: u32,
    /// Points drawn, over all rounds.
    pub samples: u64,
    /// Points inside the quarter circle.
    pub inside: u64,
    /// 4 · inside / samples.
    pub pi: f64,
}

/// The task: resumes from the checkpoint if there is one (else starts at
/// the task's seed), plays the remaining rounds with a checkpoint after
/// each, and returns the estimate.
///
/// A checkpoint that fails is logged and the task goes on: it only means
/// more rounds to replay if the task is interrupted.
pub fn run(params: Params) -> Result<Estimate, Error> {
    let mut state = match agora_sdk::restore_json::<State>()? {
        Some(state) => {
            agora_sdk::log!("resumed after round {}/{}", state.round, params.rounds);
            state
        }
        None => State::new(agora_sdk::seed()),
    };
    while state.round < params.rounds {
        state.play_round(params.samples);
        agora_sdk::log!("round {}/{}", state.round, params.rounds);
        if let Err(e) = agora_sdk::checkpoint_json(&state) {
            agora_sdk::log!("no checkpoint after round {}: {e}", state.round);
        }
    }
    Ok(state.estimate())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn played(mut state: State, rounds: u32, samples: u64) -> State {
        for _ in 0..rounds {
            state.play_round(samples);
        }
        state
    }

    #[test]
    fn splitmix64_matches_reference() {
        // Vigna's splitmix64.c seeded with 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn resuming_from_a_saved_state_at_any_round_ends_where_a_straight_run_does() {
        let (rounds, samples) = (6, 1000);
        let straight = played(State::new(42), rounds, samples);
        for k in 0..=rounds {
            let saved = serde_json::to_vec(&played(State::new(42), k, samples)).unwrap();
            let restored: State = serde_json::from_slice(&saved).unwrap();
            assert_eq!(restored.round, k);
            assert_eq!(
                played(restored, rounds - k, samples),
                straight,
                "resumed after round {k}"
            );
        }
        assert_ne!(played(State::new(43), rounds, samples), straight);
    }

    #[test]
    fn an_interrupted_run_resumes_through_the_sdk_and_prints_the_same_result() {
        let params = Params {
            rounds: 5,
            samples: 2000,
        };
        agora_sdk::set_resume_for_tests(None);
        let straight = serde_json::to_string(&run(params).unwrap()).unwrap();
        assert_eq!(
            agora_sdk::last_checkpoint_for_tests()
                .map(|s| serde_json::from_slice::<State>(&s).unwrap().round),
            Some(5),
            "a checkpoint after every round, the last one included"
        );

        // Interrupted after round 2: its last checkpoint is where the next run starts.
        run(Params { rounds: 2, ..params }).unwrap();
        agora_sdk::set_resume_for_tests(agora_sdk::last_checkpoint_for_tests());
        let resumed = serde_json::to_string(&run(params).unwrap()).unwrap();
        assert_eq!(resumed, straight);
    }

    #[test]
    fn the_estimate_is_near_pi() {
        // 10⁶ points: a standard error of about 0.0016.
        let e = played(State::new(7), 10, 100_000).estimate();
        assert_eq!((e.rounds, e.samples), (10, 1_000_000));
        assert!((e.pi - std::f64::consts::PI).abs() < 0.01, "{e:?}");
    }

    #[test]
    fn the_output_is_the_documented_json() {
        let e = Estimate {
            rounds: 2,
            samples: 8,
            inside: 6,
            pi: 3.0,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"rounds":2,"samples":8,"inside":6,"pi":3.0}"#
        );
    }

    #[test]
    fn arguments_default_and_are_checked() {
        let p = |a: &[&str]| Params::from_args(&args(a));
        assert_eq!(
            p(&[]).unwrap(),
            Params {
                rounds: 40,
                samples: 2_000_000
            }
        );
        assert_eq!(p(&["100"]).unwrap().rounds, 100);
        assert_eq!(p(&["3", "5_000_000"]).unwrap().samples, 5_000_000);
        assert!(p(&["0"]).is_err());
        assert!(p(&["3", "x"]).is_err());
        assert!(p(&["1", "2", "3"]).is_err());
        assert!(p(&["4294967295", "18446744073709551615"]).is_err());
    }

    /// Prints how long one round of the default size takes natively:
    /// `cargo test --release -p checkpointed-pi -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: prints a figure"]
    fn one_round_of_the_default_size() {
        let mut state = State::new(1);
        state.play_round(DEFAULT_SAMPLES); // warm-up
        let start = std::time::Instant::now();
        let rounds = 10;
        for _ in 0..rounds {
            state.play_round(DEFAULT_SAMPLES);
        }
        let per_round = start.elapsed() / rounds;
        println!(
            "one round of {DEFAULT_SAMPLES} samples: {per_round:?} natively (pi ≈ {})",
            state.estimate().pi
        );
        assert_eq!(state.total, 11 * DEFAULT_SAMPLES);
    }
}

//! The checkpointed-pi job: one long task that estimates π in rounds.
//!
//! - arguments: `[ROUNDS [SAMPLES]]`, rounds to play (default 40) and points
//!   per round (default 2000000) ([`checkpointed_pi::Params`]).
//! - stdin: ignored (may be empty).
//! - stdout, at the end: `{"rounds":R,"samples":N,"inside":I,"pi":P}`
//!   ([`checkpointed_pi::Estimate`]).
//! - stderr: `round 3/40` after each round.
//!
//! It checkpoints after every round and, if it was interrupted, resumes
//! after the last round it saved, with the same result.

fn main() -> Result<(), agora_sdk::Error> {
    let params = checkpointed_pi::Params::from_args(&agora_sdk::args())?;
    agora_sdk::output_json(&checkpointed_pi::run(params)?)
}

//! The montecarlo-pi job's map step.
//!
//! - stdin: `{"samples": N, "stream": K}` ([`montecarlo_pi::Task`]; `stream`
//!   defaults to 0, give each task its own, e.g. its index).
//! - stdout: `{"samples":N,"hits":H}` ([`montecarlo_pi::Count`]).
//!
//! The points come from the task's seed ([`agora_sdk::seed`]) and the stream.

fn main() -> Result<(), agora_sdk::Error> {
    agora_sdk::map(|task: montecarlo_pi::Task| montecarlo_pi::sample(agora_sdk::seed(), task))
}

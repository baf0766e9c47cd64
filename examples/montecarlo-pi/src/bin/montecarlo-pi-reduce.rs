//! The montecarlo-pi job's reduce step.
//!
//! - stdin: every task's `{"samples":N,"hits":H}`, framed as in `agora_sdk::frame`.
//! - stdout: `{"pi":…,"std_error":…,"samples":…,"hits":…,"tasks":…}`.

fn main() -> Result<(), agora_sdk::Error> {
    agora_sdk::try_reduce(|counts: Vec<montecarlo_pi::Count>| montecarlo_pi::estimate(&counts))
}

//! The primes job's reduce step.
//!
//! - stdin: every task's `{"lo":…,"hi":…,"count":…}`, framed as in `agora_sdk::frame`.
//! - stdout: `{"lo":…,"hi":…,"count":…}` for the union of the ranges, which
//!   must tile it with no gap or overlap ([`primes::total`]).

fn main() -> Result<(), agora_sdk::Error> {
    agora_sdk::try_reduce(primes::total)
}

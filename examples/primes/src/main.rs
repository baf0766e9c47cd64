//! The primes job's map step.
//!
//! - stdin: `{"lo": A, "hi": B, "method": "sieve" | "trial"}` ([`primes::Range`];
//!   `method` defaults to `"sieve"`).
//! - stdout: `{"lo":A,"hi":B,"count":N}` ([`primes::Count`]): the primes `p`
//!   with `A <= p < B`.

fn main() -> Result<(), agora_sdk::Error> {
    agora_sdk::try_map(primes::count)
}

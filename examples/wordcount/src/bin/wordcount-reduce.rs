//! The wordcount job's reduce step.
//!
//! - stdin: every shard's `{"word":count,…}`, framed as in `agora_sdk::frame`.
//! - stdout: the merged `{"word":count,…}`, keys sorted ([`wordcount::merge`]).

fn main() -> Result<(), agora_sdk::Error> {
    agora_sdk::reduce(wordcount::merge)
}

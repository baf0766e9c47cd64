//! The wordcount job's map step.
//!
//! - stdin: one shard of UTF-8 text (invalid bytes count as separators).
//! - stdout: `{"word":count,…}`, keys sorted ([`wordcount::count_words`]).

fn main() -> Result<(), agora_sdk::Error> {
    let input = agora_sdk::input()?;
    let text = String::from_utf8_lossy(&input);
    if let std::borrow::Cow::Owned(_) = text {
        agora_sdk::log!("wordcount: the input is not valid UTF-8; invalid bytes separate words");
    }
    agora_sdk::output_json(&wordcount::count_words(&text))
}

//! A second pipeline stage after the wordcount map: the most frequent words
//! of one shard's counts.
//!
//! - stdin: one shard's `{"word":count,…}` (the map step's output).
//! - args: `N`, how many words (default 10).
//! - stdout: `count word` lines, most frequent first, ties by word
//!   ([`wordcount::top`]).

fn main() -> Result<(), agora_sdk::Error> {
    let n = match agora_sdk::args().first() {
        Some(a) => a
            .parse()
            .map_err(|_| agora_sdk::Error::msg(format!("`{a}` is not a number of words")))?,
        None => 10,
    };
    let counts: wordcount::Counts = agora_sdk::input_json()?;
    let mut out = String::new();
    for (word, count) in wordcount::top(&counts, n) {
        out.push_str(&format!("{count} {word}\n"));
    }
    agora_sdk::output_text(&out)
}

//! # wordcount
//!
//! Word frequencies of a large text, map/reduce style.
//!
//! - Map ([`count_words`]): a task's input is one shard of the text; its
//!   output is a JSON object from word to count, keys sorted.
//! - Reduce ([`merge`]): adds the counts of every shard into one object of the
//!   same format, so reduces could themselves be reduced.
//!
//! A *word* is a maximal run of alphanumeric characters (Unicode), where an
//! apostrophe (`'` or `’`) between two such characters belongs to the word
//! (`don't`, `rock'n'roll`); words are lowercased and `’` becomes `'`.
//! Whitespace is never part of a word, so a text cut into shards at
//! whitespace ([`shard`]) counts the same as the whole.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::BTreeMap;

/// Word counts, sorted by word (serialised as a JSON object in that order).
pub type Counts = BTreeMap<String, u64>;

/// Calls `f` with each word of `text`, lowercased.
pub fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut word = String::new();
    let mut apostrophe = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if apostrophe {
                word.push('\'');
                apostrophe = false;
            }
            word.extend(c.to_lowercase());
        } else if (c == '\'' || c == '\u{2019}') && !word.is_empty() && !apostrophe {
            apostrophe = true;
        } else {
            if !word.is_empty() {
                f(&word);
                word.clear();
            }
            apostrophe = false;
        }
    }
    if !word.is_empty() {
        f(&word);
    }
}

/// The map step: counts the words of one shard.
pub fn count_words(text: &str) -> Counts {
    let mut counts = Counts::new();
    for_each_word(text, |w| {
        // Look up by &str first so that repeated words allocate nothing.
        match counts.get_mut(w) {
            Some(n) => *n += 1,
            None => {
                counts.insert(w.to_owned(), 1);
            }
        }
    });
    counts
}

/// The reduce step: adds up the counts of every shard.
pub fn merge(shards: Vec<Counts>) -> Counts {
    let mut shards = shards.into_iter();
    let mut total = shards.next().unwrap_or_default();
    for counts in shards {
        for (word, n) in counts {
            *total.entry(word).or_insert(0) += n;
        }
    }
    total
}

/// The `n` most frequent words, most frequent first; equal counts in word
/// order.
pub fn top(counts: &Counts, n: usize) -> Vec<(&str, u64)> {
    let mut v: Vec<(&str, u64)> = counts.iter().map(|(w, c)| (w.as_str(), *c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.truncate(n);
    v
}

/// Cuts `text` into `n` shards of roughly equal size, each cut at a
/// whitespace character (which starts the next shard), so that no word is
/// split. Shards may be empty when the text has too little whitespace;
/// joined, they are the text.
pub fn shard(text: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let mut shards = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..n {
        let mut target = (text.len() * i / n).max(start);
        // The target may fall inside a multi-byte character.
        while !text.is_char_boundary(target) {
            target += 1;
        }
        let cut = text[target..]
            .char_indices()
            .find(|(_, c)| c.is_whitespace())
            .map_or(text.len(), |(at, _)| target + at);
        shards.push(&text[start..cut]);
        start = cut;
    }
    shards.push(&text[start..]);
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut v = Vec::new();
        for_each_word(text, |w| v.push(w.to_owned()));
        v
    }

    #[test]
    fn top_words_come_most_frequent_first_and_ties_in_word_order() {
        let c = count_words("b a c b a b d");
        assert_eq!(top(&c, 3), [("b", 3), ("a", 2), ("c", 1)]);
        assert_eq!(top(&c, 0), []);
        assert_eq!(top(&c, 10).len(), 4);
    }

    #[test]
    fn words_are_lowercased_alphanumeric_runs_with_inner_apostrophes() {
        assert_eq!(
            words("Don't stop—ROCK’N’ROLL, 'tis the dogs' 2nd  Straße!"),
            [
                "don't",
                "stop",
                "rock'n'roll",
                "tis",
                "the",
                "dogs",
                "2nd",
                "straße"
            ]
        );
        assert_eq!(words("a''b"), ["a", "b"]);
        assert!(words(" \n\t—!").is_empty());
    }

    #[test]
    fn count_words_counts() {
        let c = count_words("the cat and THE hat; the end");
        assert_eq!(c["the"], 3);
        assert_eq!(c["cat"], 1);
        assert_eq!(c.len(), 5);
        assert_eq!(
            serde_json::to_string(&count_words("b a b")).unwrap(),
            r#"{"a":1,"b":2}"#
        );
    }

    #[test]
    fn merged_shard_counts_equal_the_whole_count() {
        let text = "It was the best of times, it was the worst of times, \
                    it was the age of wisdom, it was the age of foolishness… Ünïcödé ünïcödé";
        for n in 1..12 {
            let shards = shard(text, n);
            assert_eq!(shards.len(), n);
            assert_eq!(shards.concat(), text);
            let merged = merge(shards.iter().map(|s| count_words(s)).collect());
            assert_eq!(merged, count_words(text), "{n} shards");
        }
    }

    #[test]
    fn shard_handles_text_without_whitespace() {
        assert_eq!(shard("ééé", 3), ["ééé", "", ""]);
        assert_eq!(shard("é é é", 3), ["é", " é", " é"]);
        assert_eq!(shard("", 2), ["", ""]);
    }

    #[test]
    fn merge_of_nothing_is_empty() {
        assert!(merge(Vec::new()).is_empty());
    }
}

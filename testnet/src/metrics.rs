//! Reading a node's metrics (`GET /metrics`, Prometheus text format).
//!
//! The benchmarks, the chaos scenarios, the in-process testnet and the
//! end-to-end tests all read counters off nodes. They read them here, so
//! that "the value of a series" and "a metric summed over its labels" mean
//! one thing everywhere: a series is a metric's name with its labels as
//! the node prints them (`agora_market_frames_sent_total{kind="batch"}`).

/// Every sample of `text`: its series (name and labels) and its value.
/// Comments and lines without a number are skipped.
pub fn samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        Some((series.trim_end(), value.parse().ok()?))
    })
}

/// The value of one series (name and labels, exactly as printed), if
/// `text` has it.
pub fn value(text: &str, series: &str) -> Option<f64> {
    samples(text).find_map(|(s, v)| (s == series).then_some(v))
}

/// A metric summed over all its labels (0 if `text` has none of it).
pub fn sum(text: &str, name: &str) -> f64 {
    samples(text)
        .filter(|(s, _)| s.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP agora_market_frames_sent_total Frames sent.\n\
                        # TYPE agora_market_frames_sent_total counter\n\
                        agora_market_frames_sent_total{kind=\"batch\"} 12\n\
                        agora_market_frames_sent_total{kind=\"single\"} 3\n\
                        agora_market_frames_sent_total_extra 100\n\
                        agora_receipts_sent_total 7\n";

    #[test]
    fn a_series_is_read_by_its_name_and_labels_exactly() {
        assert_eq!(
            value(TEXT, "agora_market_frames_sent_total{kind=\"single\"}"),
            Some(3.0)
        );
        assert_eq!(value(TEXT, "agora_receipts_sent_total"), Some(7.0));
        assert_eq!(value(TEXT, "agora_market_frames_sent_total"), None);
        assert_eq!(value(TEXT, "agora_receipts_sent"), None);
    }

    #[test]
    fn a_sum_covers_every_label_of_one_name_and_no_other_name() {
        assert_eq!(sum(TEXT, "agora_market_frames_sent_total"), 15.0);
        assert_eq!(sum(TEXT, "agora_receipts_sent_total"), 7.0);
        assert_eq!(sum(TEXT, "agora_absent_total"), 0.0);
    }

    #[test]
    fn comments_and_lines_without_a_number_are_skipped() {
        let text = "# TYPE x counter\nx{a=\"b\"} NaNish\nx 2\n";
        assert_eq!(samples(text).collect::<Vec<_>>(), vec![("x", 2.0)]);
    }
}

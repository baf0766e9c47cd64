//! The owner's `max_upload`: content this node serves to others goes out
//! at that rate on average.
//!
//! A content response is one message (SPEC §7), so it cannot be slowed
//! part way; the pacer instead spaces responses: each starts once the
//! ones before it would have finished at the rate. Over any stretch of
//! serving, the bytes sent stay within the rate plus one response. A
//! pure schedule behind a lock; the waiting is the caller's.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Spaces content responses to a rate. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct UploadPacer {
    /// Bits per second (none: unpaced), and when the link is next free.
    state: Mutex<(Option<u64>, Option<Instant>)>,
}

impl UploadPacer {
    /// Sets the rate, bits per second; `None` lifts it.
    pub(crate) fn set(&self, rate: Option<u64>) {
        let mut g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.0 != rate {
            *g = (rate, None);
        }
    }

    /// Books `len` bytes arriving `now`: when they may start.
    pub(crate) fn book(&self, len: usize, now: Instant) -> Instant {
        let mut g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(rate) = g.0.filter(|r| *r > 0) else {
            return now;
        };
        let start = g.1.map_or(now, |free| free.max(now));
        g.1 = Some(start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64));
        start
    }

    /// Waits until `len` bytes may go.
    pub(crate) async fn wait(&self, len: usize) {
        let start = self.book(len, Instant::now());
        tokio::time::sleep_until(start.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_spaced_so_that_the_average_stays_within_the_rate() {
        let p = UploadPacer::default();
        let t = Instant::now();
        // Unpaced: at once.
        assert_eq!(p.book(1_000_000, t), t);
        p.set(Some(8_000_000)); // 1 MB/s
        assert_eq!(p.book(1_000_000, t), t);
        assert_eq!(p.book(500_000, t), t + Duration::from_secs(1));
        assert_eq!(p.book(10, t), t + Duration::from_millis(1500));
        // After an idle stretch the link is free again at once.
        let later = t + Duration::from_secs(10);
        assert_eq!(p.book(10, later), later);
        // Lifted: at once again.
        p.set(None);
        assert_eq!(p.book(1_000_000, later), later);
    }
}

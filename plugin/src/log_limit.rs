//! Rate-limited logging for loss and error sites that can fire per record: the first occurrence
//! is logged, then at most one line per interval saying how many were not logged. Every
//! occurrence is still counted where it happens (and exported as a metric).

use std::time::{Duration, Instant};

pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether this occurrence may be logged; if so, how many were not logged since the last.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_per_interval_with_the_count_in_between() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.allow_at(t0), Some(0));
        assert_eq!(l.allow_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow_at(t0 + Duration::from_secs(9)), None);
        assert_eq!(l.allow_at(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(l.allow_at(t0 + Duration::from_secs(11)), None);
    }
}

//! Rate-limited warnings for hot failure paths: the first occurrence is logged at
//! once, later ones at most once per interval, with how many were suppressed.

use std::time::{Duration, Instant};

/// One rate-limited warning site.
#[derive(Debug)]
pub struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// A site that logs at most once per `every`.
    pub const fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Logs `message` unless one was logged less than the interval ago.
    pub fn warn(&mut self, message: impl FnOnce() -> String) {
        self.warn_at(Instant::now(), message);
    }

    fn warn_at(&mut self, now: Instant, message: impl FnOnce() -> String) -> bool {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return false;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        tracing::warn!(suppressed_since_last = suppressed, "{}", message());
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_first_then_once_per_interval() {
        let mut r = RateLimited::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(r.warn_at(t0, || "a".into()));
        assert!(!r.warn_at(t0 + Duration::from_secs(1), || "b".into()));
        assert!(!r.warn_at(t0 + Duration::from_secs(9), || "c".into()));
        assert_eq!(r.suppressed, 2);
        assert!(r.warn_at(t0 + Duration::from_secs(10), || "d".into()));
        assert_eq!(r.suppressed, 0);
    }
}

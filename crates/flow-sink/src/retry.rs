//! When to retry a delivery, and how long to wait: pure functions of the attempt
//! number, the outcome and a random number, so tests drive them with simulated time
//! and chosen randomness.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::error::SinkError;

/// The longest wait a peer's `Retry-After` can impose: 15 minutes. A `Retry-After`
/// is honoured in full up to this, whatever the policy's
/// [`max_backoff`](RetryPolicy::max_backoff) (a receiver asking 300 s is given
/// 300 s, not the 60 s of the default backoff); a longer one (a misconfigured or
/// hostile peer, a date far ahead) is cut to this, so that a sink never falls
/// silent for hours. A flush or a reconfiguration still cuts any wait short.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// What to do with a chunk after one delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// The collector has it (2xx): forget it.
    Delivered,
    /// Try again later: no answer (connection refused or reset, timeout), 408, 429 or
    /// 5xx.
    Retry,
    /// Never retry these bytes: any other status (other 4xx, 3xx, 1xx). The chunk is
    /// set aside, logged with the response and counted.
    Reject,
}

impl Disposition {
    /// The disposition of an HTTP status code.
    pub fn of_status(status: u16) -> Disposition {
        match status {
            200..=299 => Disposition::Delivered,
            408 | 429 | 500..=599 => Disposition::Retry,
            _ => Disposition::Reject,
        }
    }

    /// The disposition of a request that got no HTTP answer (connection refused, reset,
    /// timed out, TLS handshake failed): always [`Retry`](Disposition::Retry), since
    /// the collector may come back.
    pub fn of_transport_error() -> Disposition {
        Disposition::Retry
    }
}

/// Exponential backoff with full jitter, and an optional cap on attempts.
///
/// Before retry `n` (the first retry is `n = 1`) the sender waits a uniformly random
/// time in `[0, min(max_backoff, initial_backoff * 2^(n-1)))` ("full jitter": many
/// exporters that lost the same collector come back spread out instead of in step).
/// A `Retry-After` from the collector raises the wait to at least that long, capped
/// at [`MAX_RETRY_AFTER`] (not at `max_backoff`, which bounds the sink's own
/// backoff only).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Upper bound of the first wait. Default 500 ms.
    pub initial_backoff: Duration,
    /// Upper bound of any wait. Default 60 s.
    pub max_backoff: Duration,
    /// Attempts per chunk before giving up, counting the first; `None` retries
    /// forever. A spooling sink keeps retrying (the spool bounds what is kept); a
    /// sink without a spool gives up after this many. Default `None`.
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// Sets [`initial_backoff`](RetryPolicy::initial_backoff).
    pub fn with_initial_backoff(mut self, d: Duration) -> RetryPolicy {
        self.initial_backoff = d;
        self
    }

    /// Sets [`max_backoff`](RetryPolicy::max_backoff).
    pub fn with_max_backoff(mut self, d: Duration) -> RetryPolicy {
        self.max_backoff = d;
        self
    }

    /// Sets [`max_attempts`](RetryPolicy::max_attempts).
    pub fn with_max_attempts(mut self, n: Option<u32>) -> RetryPolicy {
        self.max_attempts = n;
        self
    }

    /// Checks the policy: a non-zero initial backoff no larger than the maximum, and
    /// at least one attempt.
    pub fn validate(&self) -> Result<(), SinkError> {
        let bad = |key, value: String, reason| SinkError::InvalidConfig { key, value, reason };
        if self.initial_backoff.is_zero() {
            return Err(bad(
                "initial_backoff",
                format!("{:?}", self.initial_backoff),
                "must be more than zero",
            ));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(bad(
                "max_backoff",
                format!("{:?}", self.max_backoff),
                "must be at least initial_backoff",
            ));
        }
        if self.max_attempts == Some(0) {
            return Err(bad("max_attempts", "0".into(), "must be at least 1"));
        }
        Ok(())
    }

    /// The backoff ceiling before retry `retry` (from 1):
    /// `min(max_backoff, initial_backoff * 2^(retry-1))`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(63);
        let factor = 1u64 << exp;
        let nanos = self
            .initial_backoff
            .as_nanos()
            .saturating_mul(u128::from(factor));
        let cap = self.max_backoff.as_nanos();
        Duration::from_nanos(u64::try_from(nanos.min(cap)).unwrap_or(u64::MAX))
    }

    /// How long to wait before retry `retry` (from 1), given `unit`, a uniformly
    /// random number in `[0, 1)`, and the collector's `Retry-After` if any: the
    /// jittered backoff, or the `Retry-After` (up to [`MAX_RETRY_AFTER`]) if longer.
    pub fn backoff(&self, retry: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let jittered = self.ceiling(retry).mul_f64(unit);
        match retry_after {
            Some(after) => jittered.max(after.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }

    /// Whether another attempt may follow `attempts` attempts already made.
    pub fn may_retry(&self, attempts: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempts < max)
    }
}

/// A peer's `Retry-After`, in seconds or as an HTTP date (the time from `now` to it;
/// zero when it has passed); `None` when absent or unreadable. The caller caps it at
/// [`MAX_RETRY_AFTER`] through [`RetryPolicy::backoff`].
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(5))
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(Disposition::of_status(200), Disposition::Delivered);
        assert_eq!(Disposition::of_status(204), Disposition::Delivered);
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(Disposition::of_status(s), Disposition::Retry, "{s}");
        }
        for s in [100, 301, 307, 400, 401, 403, 404, 405, 413, 415, 422] {
            assert_eq!(Disposition::of_status(s), Disposition::Reject, "{s}");
        }
        assert_eq!(Disposition::of_transport_error(), Disposition::Retry);
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = policy();
        let ms: Vec<u128> = (1..=9).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // No overflow however long the outage.
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(5));
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let p = policy();
        assert_eq!(p.backoff(3, 0.0, None), Duration::ZERO);
        assert_eq!(p.backoff(3, 0.5, None), Duration::from_millis(200));
        assert!(p.backoff(3, 0.999_999, None) < Duration::from_millis(400));
        // Out-of-range randomness is clamped rather than trusted.
        assert_eq!(p.backoff(3, 7.0, None), Duration::from_millis(400));
        assert_eq!(p.backoff(3, f64::NAN, None), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_floor_capped_by_max_retry_after_not_max_backoff() {
        let p = policy();
        let after = Some(Duration::from_secs(2));
        assert_eq!(p.backoff(1, 0.0, after), Duration::from_secs(2));
        // Longer than the policy's longest backoff (5 s here, 60 s by default):
        // honoured in full.
        assert_eq!(
            p.backoff(1, 0.0, Some(Duration::from_secs(300))),
            Duration::from_secs(300)
        );
        assert_eq!(
            RetryPolicy::default().backoff(1, 0.0, Some(Duration::from_secs(300))),
            Duration::from_secs(300)
        );
        // Up to the cap, and no further.
        assert_eq!(p.backoff(1, 0.0, Some(MAX_RETRY_AFTER)), MAX_RETRY_AFTER);
        for long in [3_600, 86_400, u64::MAX] {
            assert_eq!(
                p.backoff(1, 0.0, Some(Duration::from_secs(long))),
                MAX_RETRY_AFTER,
                "{long} s"
            );
        }
        assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(900));
        // A short Retry-After does not shorten the jittered backoff.
        assert_eq!(
            p.backoff(9, 0.5, Some(Duration::from_secs(1))),
            Duration::from_millis(2_500)
        );
        assert_eq!(
            p.backoff(9, 0.5, Some(Duration::ZERO)),
            Duration::from_millis(2_500)
        );
    }

    /// A whole outage in simulated time: the waits stay under their ceilings, spread
    /// out, and the total for 20 retries is bounded by the sum of the ceilings.
    #[test]
    fn simulated_outage_with_seeded_randomness() {
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(42);
        let mut now = Duration::ZERO;
        let mut waits = Vec::new();
        for retry in 1..=20 {
            let wait = p.backoff(retry, rng.f64(), None);
            assert!(wait <= p.ceiling(retry), "retry {retry}: {wait:?}");
            waits.push(wait);
            now += wait;
        }
        let bound: Duration = (1..=20).map(|n| p.ceiling(n)).sum();
        assert!(now <= bound);
        // Full jitter: not every late wait sits at the cap.
        assert!(waits[10..].iter().any(|w| *w < Duration::from_secs(4)));
        // Same seed, same schedule.
        let mut again = fastrand::Rng::with_seed(42);
        let replay: Vec<Duration> = (1..=20).map(|n| p.backoff(n, again.f64(), None)).collect();
        assert_eq!(waits, replay);
    }

    #[test]
    fn attempts_cap() {
        let p = policy().with_max_attempts(Some(3));
        assert!(p.may_retry(1) && p.may_retry(2) && !p.may_retry(3));
        assert!(RetryPolicy::default().may_retry(u32::MAX));
        assert!(p.validate().is_ok());
        assert!(policy().with_max_attempts(Some(0)).validate().is_err());
        assert!(
            policy()
                .with_initial_backoff(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(
            policy()
                .with_max_backoff(Duration::from_millis(1))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_as_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, " 7 ".parse().expect("value"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        // 2015-10-21T07:28:00Z is 1_445_412_480.
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("value"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(10)));
        let later = now + Duration::from_secs(60);
        assert_eq!(retry_after(&headers, later), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "soon".parse().expect("value"));
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, "-3".parse().expect("value"));
        assert_eq!(retry_after(&headers, now), None);
    }
}

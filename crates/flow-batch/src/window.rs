//! Wall-clock windows and the millisecond arithmetic behind them.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Times past this many milliseconds since the Unix epoch (about year 287,000) are
/// treated as this value, so window arithmetic never overflows.
pub(crate) const MAX_TIME_MS: u64 = 1 << 53;

/// A half-open wall-clock interval `[start, end)` in whole milliseconds since the Unix
/// epoch.
///
/// Windows made by [`MinuteBatcher`](crate::MinuteBatcher) start at a multiple of the
/// window length since the epoch; a decoded chunk carries whatever its sender wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    start_ms: u64,
    end_ms: u64,
}

impl Window {
    /// The window `[start_ms, end_ms)`; `None` unless `start_ms < end_ms`.
    pub fn from_millis(start_ms: u64, end_ms: u64) -> Option<Window> {
        (start_ms < end_ms).then_some(Window { start_ms, end_ms })
    }

    /// The window of length `len_ms` that contains `t_ms`, aligned to the epoch.
    pub(crate) fn aligned(t_ms: u64, len_ms: u64) -> Window {
        let start_ms = align_down(t_ms, len_ms);
        Window {
            start_ms,
            end_ms: start_ms + len_ms,
        }
    }

    /// Start, in milliseconds since the Unix epoch (inclusive).
    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// End, in milliseconds since the Unix epoch (exclusive).
    pub fn end_ms(&self) -> u64 {
        self.end_ms
    }

    /// Start, as wall-clock time (inclusive).
    pub fn start(&self) -> SystemTime {
        from_ms(self.start_ms)
    }

    /// End, as wall-clock time (exclusive).
    pub fn end(&self) -> SystemTime {
        from_ms(self.end_ms)
    }

    /// Its length.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.end_ms - self.start_ms)
    }

    /// Whether `t` falls in `[start, end)`.
    pub fn contains(&self, t: SystemTime) -> bool {
        t >= self.start() && t < self.end()
    }

    /// Whether `t_ms` (ms since the epoch) falls in `[start, end)`.
    pub(crate) fn contains_ms(&self, t_ms: u64) -> bool {
        self.start_ms <= t_ms && t_ms < self.end_ms
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} ms, {} ms)", self.start_ms, self.end_ms)
    }
}

/// Milliseconds since the Unix epoch, rounded down; 0 before the epoch, at most
/// [`MAX_TIME_MS`].
pub(crate) fn to_ms(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(d.subsec_millis()))
            .min(MAX_TIME_MS),
        Err(_) => 0,
    }
}

/// The wall-clock time `ms` milliseconds after the Unix epoch.
pub(crate) fn from_ms(ms: u64) -> SystemTime {
    // Every u64 of milliseconds fits a Linux `SystemTime` (i64 seconds); the fallback
    // only exists so that no platform can panic here.
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// `t_ms` rounded down to a multiple of `len_ms` (which is not zero).
pub(crate) fn align_down(t_ms: u64, len_ms: u64) -> u64 {
    t_ms - t_ms % len_ms
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_windows_are_half_open() {
        let w = Window::aligned(10_000, 5_000);
        assert_eq!((w.start_ms(), w.end_ms()), (10_000, 15_000));
        let w = Window::aligned(14_999, 5_000);
        assert_eq!((w.start_ms(), w.end_ms()), (10_000, 15_000));
        assert!(w.contains(from_ms(10_000)));
        assert!(!w.contains(from_ms(15_000)));
    }

    #[test]
    fn time_conversion_saturates() {
        assert_eq!(to_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(
            to_ms(UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)),
            MAX_TIME_MS
        );
        assert_eq!(to_ms(UNIX_EPOCH + Duration::from_nanos(1_999_999)), 1);
        assert_eq!(from_ms(1_500), UNIX_EPOCH + Duration::from_millis(1_500));
    }

    #[test]
    fn from_millis_rejects_empty() {
        assert!(Window::from_millis(5, 5).is_none());
        assert!(Window::from_millis(6, 5).is_none());
        assert!(Window::from_millis(5, 6).is_some());
    }
}

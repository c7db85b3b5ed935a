//! Times as the engine keeps them: nanoseconds since the Unix epoch in a `u64`,
//! saturating (before 1970 is 0, after the year 2554 is `u64::MAX`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch.
pub(crate) type Nanos = u64;

/// `t` in nanoseconds since the Unix epoch, saturating at both ends.
pub(crate) fn nanos(t: SystemTime) -> Nanos {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A duration in nanoseconds, saturating.
pub(crate) fn span(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The wall-clock time `n` nanoseconds after the Unix epoch.
pub(crate) fn system_time(n: Nanos) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

/// The interval a record covers: `[t_start, t_end]`, or `[t_end, t_end]` when the
/// start is unknown; a start after the end (a clock step) is taken as the end.
pub(crate) fn interval(t_start: Option<SystemTime>, t_end: SystemTime) -> (Nanos, Nanos) {
    let end = nanos(t_end);
    let start = t_start.map_or(end, nanos).min(end);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_and_round_trip() {
        assert_eq!(nanos(UNIX_EPOCH - Duration::from_secs(1)), 0);
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(nanos(t), 1_700_000_000_123_456_789);
        assert_eq!(system_time(nanos(t)), t);
        assert_eq!(span(Duration::MAX), u64::MAX);
        assert_eq!(span(Duration::from_millis(3)), 3_000_000);
    }

    #[test]
    fn interval_of_a_record() {
        let end = UNIX_EPOCH + Duration::from_secs(10);
        let start = UNIX_EPOCH + Duration::from_secs(4);
        assert_eq!(interval(Some(start), end), (4_000_000_000, 10_000_000_000));
        assert_eq!(interval(None, end), (10_000_000_000, 10_000_000_000));
        // A start after the end is the end.
        assert_eq!(interval(Some(end), start), (4_000_000_000, 4_000_000_000));
    }
}

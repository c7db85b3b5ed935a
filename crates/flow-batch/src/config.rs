//! Batching limits and their validation.

use std::time::Duration;

use crate::error::BatchError;

/// Default window length: one minute.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default allowed lateness: how long after its end a window still takes records.
/// Records reach user space within a ring-buffer poll (about 100 ms), so 2 s leaves
/// room for a stalled reader.
pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(2);
/// Default tolerance for records whose close time is ahead of `now`.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(2);
/// Default record limit of one chunk.
pub const DEFAULT_MAX_RECORDS: usize = 16_384;
/// Default byte limit of one chunk (encoded, before compression): 4 MiB.
pub const DEFAULT_MAX_BYTES: usize = 4 << 20;

/// Shortest window accepted.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Longest window accepted.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Largest `max_records` accepted.
pub const MAX_RECORDS_LIMIT: usize = 1 << 20;
/// Smallest `max_bytes` accepted (a few records).
pub const MIN_BYTES_LIMIT: usize = 1024;
/// Largest `max_bytes` accepted: 256 MiB.
pub const MAX_BYTES_LIMIT: usize = 256 << 20;

/// Limits of a [`MinuteBatcher`](crate::MinuteBatcher).
///
/// Fields are public so a caller can set them one by one on [`BatchConfig::default`];
/// [`BatchConfig::validate`] (called by `MinuteBatcher::new`) checks them.
///
/// At most `1 + ceil(allowed_lateness / window) + ceil(max_future_skew / window)`
/// windows (3 with valid limits) are open at once, each holding less than `max_records`
/// records and about `max_bytes` encoded bytes, so the batcher's memory is bounded by
/// these limits whatever the record rate (chunks not yet taken with
/// [`poll_chunk`](crate::MinuteBatcher::poll_chunk) aside).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchConfig {
    /// Window length. Windows start at multiples of it since the Unix epoch. Whole
    /// milliseconds, from [`MIN_WINDOW`] to [`MAX_WINDOW`].
    pub window: Duration,
    /// A window closes once `now >= window end + allowed_lateness`; a record for a
    /// closed window is late. Less than `window`; counted in whole milliseconds.
    pub allowed_lateness: Duration,
    /// A record whose close time is more than this ahead of `now` is counted as
    /// future (clock skew) and placed in the current window. At most `window`;
    /// counted in whole milliseconds.
    pub max_future_skew: Duration,
    /// A window holding this many records ships them as a chunk at once. From 1 to
    /// [`MAX_RECORDS_LIMIT`].
    pub max_records: usize,
    /// A chunk's records never encode to more than this many bytes (before
    /// compression) unless a single record does. From [`MIN_BYTES_LIMIT`] to
    /// [`MAX_BYTES_LIMIT`].
    pub max_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> BatchConfig {
        BatchConfig {
            window: DEFAULT_WINDOW,
            allowed_lateness: DEFAULT_ALLOWED_LATENESS,
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
            max_records: DEFAULT_MAX_RECORDS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl BatchConfig {
    /// The defaults with `window`, and the allowed lateness and future skew at most
    /// half of it (their defaults otherwise), so that any window from 1 s validates.
    pub fn for_window(window: Duration) -> BatchConfig {
        BatchConfig::default()
            .with_window(window)
            .with_allowed_lateness(DEFAULT_ALLOWED_LATENESS.min(window / 2))
            .with_max_future_skew(DEFAULT_MAX_FUTURE_SKEW.min(window / 2))
    }

    /// Sets [`window`](BatchConfig::window). A window of 2 s or less also needs a
    /// shorter `allowed_lateness` and `max_future_skew` than the defaults.
    pub fn with_window(mut self, window: Duration) -> BatchConfig {
        self.window = window;
        self
    }

    /// Sets [`allowed_lateness`](BatchConfig::allowed_lateness).
    pub fn with_allowed_lateness(mut self, lateness: Duration) -> BatchConfig {
        self.allowed_lateness = lateness;
        self
    }

    /// Sets [`max_future_skew`](BatchConfig::max_future_skew).
    pub fn with_max_future_skew(mut self, skew: Duration) -> BatchConfig {
        self.max_future_skew = skew;
        self
    }

    /// Sets [`max_records`](BatchConfig::max_records).
    pub fn with_max_records(mut self, max_records: usize) -> BatchConfig {
        self.max_records = max_records;
        self
    }

    /// Sets [`max_bytes`](BatchConfig::max_bytes).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> BatchConfig {
        self.max_bytes = max_bytes;
        self
    }

    /// Checks every limit; the error names the first bad key and its value.
    pub fn validate(&self) -> Result<(), BatchError> {
        let duration = |key, d: Duration, reason| BatchError::InvalidConfig {
            key,
            value: format!("{d:?}"),
            reason,
        };
        let count = |key, n: usize, reason| BatchError::InvalidConfig {
            key,
            value: n.to_string(),
            reason,
        };
        if self.window < MIN_WINDOW || self.window > MAX_WINDOW {
            return Err(duration("window", self.window, "must be from 1 s to 1 h"));
        }
        if !self.window.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(duration(
                "window",
                self.window,
                "must be a whole number of milliseconds",
            ));
        }
        if self.allowed_lateness >= self.window {
            return Err(duration(
                "allowed_lateness",
                self.allowed_lateness,
                "must be shorter than the window",
            ));
        }
        if self.max_future_skew > self.window {
            return Err(duration(
                "max_future_skew",
                self.max_future_skew,
                "must not exceed the window",
            ));
        }
        if self.max_records == 0 || self.max_records > MAX_RECORDS_LIMIT {
            return Err(count(
                "max_records",
                self.max_records,
                "must be from 1 to 1048576",
            ));
        }
        if self.max_bytes < MIN_BYTES_LIMIT || self.max_bytes > MAX_BYTES_LIMIT {
            return Err(count(
                "max_bytes",
                self.max_bytes,
                "must be from 1024 (1 KiB) to 268435456 (256 MiB)",
            ));
        }
        Ok(())
    }
}

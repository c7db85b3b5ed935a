//! When interim records are taken: a snapshot of the open connections shortly before
//! each window's end (so that their `t_end` falls in the window they report on), run
//! on a blocking thread while records keep flowing.
//!
//! The lead before the end is a tenth of the window, at most a second, and grows with
//! the snapshots' own duration (twice the last one, plus 100 ms, at most half the
//! window), so that a host with very many open connections still gets its snapshot
//! inside the window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flow_capture::{CaptureError, OpenSocketScanner, Snapshot};
use tokio::task::JoinHandle;

/// The least lead before a window's end, at most.
const LEAD: Duration = Duration::from_secs(1);
/// Added to twice the last snapshot's duration for the lead.
const LEAD_MARGIN_MS: u64 = 100;

/// The interim snapshots of a running pipeline.
pub(crate) struct Interim {
    scanner: OpenSocketScanner,
    window_ms: u64,
    /// The least lead.
    base_lead_ms: u64,
    /// The lead in force.
    lead_ms: u64,
    /// The end (ms) of the last window a snapshot was started in.
    done_until_ms: u64,
    next_at: SystemTime,
    running: Option<JoinHandle<Result<Snapshot, CaptureError>>>,
}

impl Interim {
    /// Snapshots with `scanner` before the end of every window of length `window`,
    /// the first one the next due after `now`.
    pub(crate) fn new(scanner: OpenSocketScanner, window: Duration, now: SystemTime) -> Interim {
        let window_ms = (window.as_millis() as u64).max(1);
        let base_lead_ms = (window_ms / 10).min(LEAD.as_millis() as u64);
        let mut me = Interim {
            scanner,
            window_ms,
            base_lead_ms,
            lead_ms: base_lead_ms,
            done_until_ms: 0,
            next_at: UNIX_EPOCH,
            running: None,
        };
        me.next_at = next_due(ms(now), window_ms, me.lead_ms, 0);
        me
    }

    /// When the next snapshot is due (`None` while one runs).
    pub(crate) fn next_at(&self) -> Option<SystemTime> {
        self.running.is_none().then_some(self.next_at)
    }

    /// Starts the snapshot if it is due at `now` and none runs.
    pub(crate) fn start_if_due(&mut self, now: SystemTime) {
        if self.running.is_some() || now < self.next_at {
            return;
        }
        let now_ms = ms(now);
        self.done_until_ms = now_ms - now_ms % self.window_ms + self.window_ms;
        let scanner = self.scanner.clone();
        self.running = Some(tokio::task::spawn_blocking(move || scanner.snapshot()));
    }

    /// Completes with the running snapshot's result, and schedules the next one;
    /// pending while none runs. Cancel-safe: a dropped call leaves the snapshot
    /// running.
    pub(crate) async fn finished(this: &mut Option<Interim>) -> Result<Snapshot, CaptureError> {
        let Some(interim) = this.as_mut() else {
            return std::future::pending().await;
        };
        let Some(handle) = interim.running.as_mut() else {
            return std::future::pending().await;
        };
        let result = handle.await;
        interim.running = None;
        let result = result.unwrap_or_else(|e| {
            Err(CaptureError::Io {
                operation: "the interim snapshot's thread",
                source: std::io::Error::other(e),
            })
        });
        if let Ok(snapshot) = &result {
            interim.lead_ms = lead_ms(snapshot.elapsed, interim.base_lead_ms, interim.window_ms);
        }
        interim.next_at = next_due(
            ms(SystemTime::now()),
            interim.window_ms,
            interim.lead_ms,
            interim.done_until_ms,
        );
        result
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The lead after a snapshot that took `elapsed`: twice that plus a margin, at least
/// `base_ms`, at most half the window.
fn lead_ms(elapsed: Duration, base_ms: u64, window_ms: u64) -> u64 {
    let wanted = 2 * elapsed.as_millis() as u64 + LEAD_MARGIN_MS;
    wanted.max(base_ms).min(window_ms / 2)
}

/// When the next snapshot is due at `now_ms`: `lead_ms` before the end of the
/// current window, or of the next one if the current one's snapshot was started
/// already (its end is at most `done_until_ms`). A time already past means now.
fn next_due(now_ms: u64, window_ms: u64, lead_ms: u64, done_until_ms: u64) -> SystemTime {
    let mut end = now_ms - now_ms % window_ms + window_ms;
    if end <= done_until_ms {
        end += window_ms;
    }
    UNIX_EPOCH + Duration::from_millis(end - lead_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn a_snapshot_is_due_shortly_before_each_window_ends() {
        // 5 s windows, 0.5 s lead.
        assert_eq!(next_due(100_000, 5_000, 500, 0), at(104_500));
        assert_eq!(next_due(104_499, 5_000, 500, 0), at(104_500));
        // Past the time but not the end, and not taken yet: now.
        assert_eq!(next_due(104_700, 5_000, 500, 0), at(104_500));
        // Taken already: the next window's.
        assert_eq!(next_due(104_700, 5_000, 500, 105_000), at(109_500));
        // 60 s windows, 1 s lead.
        assert_eq!(next_due(120_000, 60_000, 1_000, 0), at(179_000));
    }

    #[test]
    fn the_lead_follows_the_snapshots_duration() {
        assert_eq!(lead_ms(Duration::from_millis(10), 1_000, 60_000), 1_000);
        assert_eq!(lead_ms(Duration::from_millis(700), 1_000, 60_000), 1_500);
        assert_eq!(lead_ms(Duration::from_secs(40), 1_000, 60_000), 30_000);
        assert_eq!(lead_ms(Duration::from_millis(10), 500, 5_000), 500);
    }
}

//! Conflicts are counted always, and logged at most once per 10 s (of the `now` the
//! caller passes in), with how many happened since the last line and one example.

use std::net::IpAddr;

use flow_record::WorkloadId;

use crate::attribution::time::Nanos;

/// Shortest time between two log lines.
const LOG_INTERVAL: Nanos = 10_000_000_000;

/// One conflict, to show in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConflictExample {
    /// The IP both workloads claimed.
    pub(crate) ip: IpAddr,
    /// Whether the IP is scoped to one host (loopback, link-local).
    pub(crate) scoped: bool,
    /// The workload that claimed the time first.
    pub(crate) first: WorkloadId,
    /// The workload whose heartbeat overlapped it.
    pub(crate) second: WorkloadId,
}

/// Conflicts not logged yet.
#[derive(Debug, Default)]
pub(crate) struct ConflictLog {
    pending: u64,
    pub(crate) example: Option<ConflictExample>,
    last_log: Option<Nanos>,
}

impl ConflictLog {
    /// Notes one conflict (the first since the last log line is the example).
    pub(crate) fn note(&mut self, example: impl FnOnce() -> Option<ConflictExample>) {
        self.pending += 1;
        if self.example.is_none() {
            self.example = example();
        }
    }

    /// Logs the conflicts noted since the last line, if the last line is at least
    /// 10 s old; returns how many it logged.
    pub(crate) fn flush(&mut self, now: Nanos) -> u64 {
        if self.pending == 0
            || self
                .last_log
                .is_some_and(|last| now < last.saturating_add(LOG_INTERVAL))
        {
            return 0;
        }
        let count = std::mem::take(&mut self.pending);
        match self.example.take() {
            Some(ex) => tracing::warn!(
                conflicts = count,
                ip = %ex.ip,
                scoped_to_host = ex.scoped,
                first = %ex.first,
                second = %ex.second,
                "workloads claimed the same IP at overlapping times; flows to it then stay unattributed"
            ),
            None => tracing::warn!(
                conflicts = count,
                "workloads claimed the same IP at overlapping times; flows to it then stay unattributed"
            ),
        }
        self.last_log = Some(now);
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(n: u8) -> Option<ConflictExample> {
        Some(ConflictExample {
            ip: IpAddr::from([10, 0, 0, n]),
            scoped: false,
            first: WorkloadId::new("a").ok()?,
            second: WorkloadId::new("b").ok()?,
        })
    }

    #[test]
    fn logs_at_most_once_per_interval() {
        let mut log = ConflictLog::default();
        assert_eq!(log.flush(0), 0);
        log.note(|| example(1));
        log.note(|| example(2));
        assert_eq!(log.flush(1_000), 2);
        log.note(|| example(3));
        // Within 10 s of the last line: kept for later.
        assert_eq!(log.flush(1_000 + LOG_INTERVAL - 1), 0);
        log.note(|| example(4));
        assert_eq!(log.example.as_ref().map(|e| e.ip), example(3).map(|e| e.ip));
        assert_eq!(log.flush(1_000 + LOG_INTERVAL), 2);
        assert_eq!(log.flush(u64::MAX), 0);
    }
}

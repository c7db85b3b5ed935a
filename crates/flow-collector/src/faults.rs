//! Ways to make the collector misbehave, for tests.

use std::time::Duration;

/// Ways to make the collector misbehave, for tests. The default misbehaves in no way.
///
/// Request numbers count every request to the chunk path, from 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultInjection {
    /// Answer the first this many requests with `fail_status`, without reading them.
    pub fail_first: u32,
    /// Then answer every `fail_every`-th request with `fail_status` (0: never).
    pub fail_every: u32,
    /// The status of injected failures. 0 means 503.
    pub fail_status: u16,
    /// Store every `lose_ack_every`-th accepted chunk but answer 503, as if the
    /// acknowledgement were lost (0: never): the sender retries, the collector must
    /// drop the duplicate.
    pub lose_ack_every: u32,
    /// Wait this long before answering each request (a slow collector).
    pub delay: Duration,
    /// Answer every request with this status (e.g. 400: a collector that refuses
    /// everything for good).
    pub reject_all: Option<u16>,
    /// Fail every write of the output, as a full disk would (answers 503).
    pub fail_writes: bool,
}

impl FaultInjection {
    /// Sets [`fail_first`](FaultInjection::fail_first).
    pub fn with_fail_first(mut self, n: u32) -> FaultInjection {
        self.fail_first = n;
        self
    }

    /// Sets [`fail_every`](FaultInjection::fail_every).
    pub fn with_fail_every(mut self, n: u32) -> FaultInjection {
        self.fail_every = n;
        self
    }

    /// Sets [`fail_status`](FaultInjection::fail_status).
    pub fn with_fail_status(mut self, status: u16) -> FaultInjection {
        self.fail_status = status;
        self
    }

    /// Sets [`lose_ack_every`](FaultInjection::lose_ack_every).
    pub fn with_lose_ack_every(mut self, n: u32) -> FaultInjection {
        self.lose_ack_every = n;
        self
    }

    /// Sets [`delay`](FaultInjection::delay).
    pub fn with_delay(mut self, delay: Duration) -> FaultInjection {
        self.delay = delay;
        self
    }

    /// Sets [`reject_all`](FaultInjection::reject_all).
    pub fn with_reject_all(mut self, status: Option<u16>) -> FaultInjection {
        self.reject_all = status;
        self
    }

    /// Sets [`fail_writes`](FaultInjection::fail_writes).
    pub fn with_fail_writes(mut self, fail: bool) -> FaultInjection {
        self.fail_writes = fail;
        self
    }
}

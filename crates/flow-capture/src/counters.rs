//! Counters of the capture core: what the kernel program did, and what the reader did.

use flow_common::KernelCounter;

/// Totals of the kernel program's per-CPU counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureCounters {
    /// Records written to the ring buffer.
    pub records_submitted: u64,
    /// Records lost because the ring buffer was full.
    pub lost_ring_full: u64,
    /// Socket opens that could not be recorded in the socket table (their records are
    /// still emitted, with an unknown start).
    pub start_not_recorded: u64,
    /// Records emitted with at least one failed kernel read (flagged `incomplete`).
    pub read_failed: u64,
    /// Socket opens and closes that the primary program missed (it was already running
    /// on that CPU when an interrupt raised them) and its backup attachment handled.
    pub recovered_by_backup: u64,
    /// TCP closes the program saw (each became a record or a loss).
    pub closes_seen: u64,
}

impl CaptureCounters {
    pub(crate) fn set(&mut self, counter: KernelCounter, value: u64) {
        match counter {
            KernelCounter::RecordsSubmitted => self.records_submitted = value,
            KernelCounter::LostRingFull => self.lost_ring_full = value,
            KernelCounter::StartNotRecorded => self.start_not_recorded = value,
            KernelCounter::ReadFailed => self.read_failed = value,
            KernelCounter::RecoveredByBackup => self.recovered_by_backup = value,
            KernelCounter::ClosesSeen => self.closes_seen = value,
        }
    }

    /// Records lost in the kernel, all reasons.
    pub fn lost(&self) -> u64 {
        self.lost_ring_full
    }
}

/// What a [`crate::FlowReader`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderCounters {
    /// Records decoded and handed on.
    pub records_read: u64,
    /// Ring-buffer entries too short to be a record (dropped; never expected).
    pub malformed: u64,
}

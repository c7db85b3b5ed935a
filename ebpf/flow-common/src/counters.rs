//! Indices of the kernel program's per-CPU counters (`FLOW_COUNTERS` map).

/// One slot of the per-CPU counter array kept by the kernel program.
///
/// The discriminant is the array index. Counters are per CPU so the program needs no
/// atomics; user space sums the CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelCounter {
    /// Flow records written to the ring buffer.
    RecordsSubmitted = 0,
    /// Flow records lost because the ring buffer had no room (`bpf_ringbuf_reserve` failed).
    LostRingFull = 1,
    /// Socket opens that could not be recorded in the socket table; their records are
    /// still emitted, flagged with an unknown start.
    StartNotRecorded = 2,
    /// Kernel reads that failed; the record is still emitted, flagged as incomplete.
    ReadFailed = 3,
    /// Socket opens and closes the primary program missed (the kernel skipped it
    /// because it was already running on that CPU) and the backup attachment handled.
    RecoveredByBackup = 4,
    /// TCP closes the program saw (counted before the ring reservation, so that every
    /// close is either a record or a loss).
    ClosesSeen = 5,
}

impl KernelCounter {
    /// Number of slots in the counter array.
    pub const COUNT: u32 = 6;

    /// Every counter, in index order.
    pub const ALL: [KernelCounter; Self::COUNT as usize] = [
        KernelCounter::RecordsSubmitted,
        KernelCounter::LostRingFull,
        KernelCounter::StartNotRecorded,
        KernelCounter::ReadFailed,
        KernelCounter::RecoveredByBackup,
        KernelCounter::ClosesSeen,
    ];
}

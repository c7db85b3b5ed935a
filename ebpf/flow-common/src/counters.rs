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
    /// Sockets whose per-socket storage could not be created; their records are still
    /// emitted, flagged with an unknown start.
    StorageUnavailable = 2,
    /// Kernel reads that failed; the record is still emitted, flagged as incomplete.
    ReadFailed = 3,
}

impl KernelCounter {
    /// Number of slots in the counter array.
    pub const COUNT: u32 = 4;

    /// Every counter, in index order.
    pub const ALL: [KernelCounter; Self::COUNT as usize] = [
        KernelCounter::RecordsSubmitted,
        KernelCounter::LostRingFull,
        KernelCounter::StorageUnavailable,
        KernelCounter::ReadFailed,
    ];
}

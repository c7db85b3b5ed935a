//! Per-window close counts: the kernel counts every close it sees in the bucket of its
//! batch window, so that user space can say for each window how many closes there
//! were and how many of them became records.

/// Buckets of the per-CPU window table; window `w` uses slot `w % WINDOW_SLOTS`.
/// User space reads a window a little after it ends, long before its slot is reused.
pub const WINDOW_SLOTS: u32 = 8;

/// One CPU's counts for one window (a slot of `FLOW_WINDOWS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// The window's index: `(end_ns + offset_ns) / window_ns`, see [`ClockConfig`].
    /// A slot whose index is not the one asked for holds another window's counts.
    pub window: u64,
    /// Closes seen.
    pub closes: u64,
    /// Records written to the ring buffer.
    pub submitted: u64,
    /// Records lost because the ring buffer was full.
    pub ring_full: u64,
}

/// How the kernel maps a close to its window (`FLOW_CLOCK`, written by user space).
///
/// A close at `CLOCK_BOOTTIME` `end_ns` falls in window
/// `(end_ns + offset_ns) / window_ns`: `offset_ns` is `CLOCK_REALTIME -
/// CLOCK_BOOTTIME`, so the window is the wall-clock one the batcher uses. A zero
/// `window_ns` turns the counting off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockConfig {
    /// Window length in ns.
    pub window_ns: u64,
    /// Wall-clock ns since the Unix epoch at boot time 0.
    pub offset_ns: u64,
}

const _: () = assert!(core::mem::size_of::<WindowCounts>() == 32);

#[cfg(feature = "user")]
// SAFETY: plain-old-data: `#[repr(C)]`, integer fields only, no padding.
unsafe impl aya::Pod for WindowCounts {}
#[cfg(feature = "user")]
// SAFETY: plain-old-data: `#[repr(C)]`, integer fields only, no padding.
unsafe impl aya::Pod for ClockConfig {}

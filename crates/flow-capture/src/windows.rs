//! Close counts per batch window: the kernel counts every close it sees in its
//! window's bucket before it reserves ring space, and the reader counts the records it
//! reads by the same rule, so a window's numbers add up exactly:
//! `closes == records read + lost_ring_full`.
//!
//! Kernel and reader agree on a close's window because they use the same boot-to-wall
//! offset: the reader writes the one it uses into `FLOW_CLOCK`, and changes it only
//! when the wall clock was stepped (by more than [`STEP`]); records in flight across
//! such a step may be counted in a neighbouring window.

use std::{collections::BTreeMap, time::Duration};

use aya::maps::{Array, MapData, PerCpuArray};
use flow_common::{ClockConfig, WINDOW_SLOTS, WindowCounts};

use crate::{clock::BootClock, error::CaptureError};

/// A change of the boot-to-wall offset larger than this is a clock step, adopted.
pub const STEP: Duration = Duration::from_millis(1);

/// The kernel's counts for one window, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelWindowCounts {
    /// Closes the program saw in the window.
    pub closes: u64,
    /// Records it wrote to the ring buffer.
    pub submitted: u64,
    /// Records lost because the ring was full.
    pub ring_full: u64,
}

/// The index of the window of length `window` that starts `start_ms` after the
/// epoch, as the kernel numbers windows.
pub fn window_index(start_ms: u64, window: Duration) -> u64 {
    let len_ms = window.as_millis().max(1) as u64;
    start_ms / len_ms
}

/// The kernel's per-window table (`FLOW_WINDOWS`).
pub(crate) struct WindowTable {
    pub(crate) map: PerCpuArray<MapData, WindowCounts>,
}

impl WindowTable {
    /// The counts of window `index` (zero when the kernel saw no close in it, or its
    /// slot was already reused by a later window).
    pub(crate) fn counts(&self, index: u64) -> Result<KernelWindowCounts, CaptureError> {
        let slot = (index % u64::from(WINDOW_SLOTS)) as u32;
        let values = self.map.get(&slot, 0).map_err(|source| CaptureError::Map {
            name: "FLOW_WINDOWS",
            source,
        })?;
        let mut out = KernelWindowCounts::default();
        for cpu in values.iter().filter(|c| c.window == index) {
            out.closes += cpu.closes;
            out.submitted += cpu.submitted;
            out.ring_full += cpu.ring_full;
        }
        Ok(out)
    }
}

/// The reader's side: the offset it converts with (shared with the kernel) and the
/// records it read per window.
pub(crate) struct WindowClock {
    map: Array<MapData, ClockConfig>,
    window_ns: u64,
    clock: BootClock,
    /// The offset as the kernel has it (`FLOW_CLOCK`): records are counted with the
    /// kernel's own arithmetic.
    offset_ns: u64,
    /// Final records read, by window index; the oldest are forgotten.
    read: BTreeMap<u64, u64>,
}

/// Windows of read counts kept (the caller asks a little after a window ends).
const KEEP: u64 = 4 * WINDOW_SLOTS as u64;

impl WindowClock {
    /// Starts counting windows of `window`: writes the offset measured now.
    pub(crate) fn start(
        map: Array<MapData, ClockConfig>,
        window: Duration,
    ) -> Result<WindowClock, CaptureError> {
        let mut me = WindowClock {
            map,
            window_ns: window.as_nanos().clamp(1, u128::from(u64::MAX)) as u64,
            clock: BootClock::measure(),
            offset_ns: 0,
            read: BTreeMap::new(),
        };
        me.publish()?;
        Ok(me)
    }

    fn publish(&mut self) -> Result<(), CaptureError> {
        self.offset_ns = self.clock.offset_ns().max(0) as u64;
        let config = ClockConfig {
            window_ns: self.window_ns,
            offset_ns: self.offset_ns,
        };
        self.map
            .set(0, config, 0)
            .map_err(|source| CaptureError::Map {
                name: "FLOW_CLOCK",
                source,
            })
    }

    /// The clock to convert this drain's records with: the one in use, unless the
    /// wall clock was stepped since (then the new offset, published to the kernel).
    pub(crate) fn clock(&mut self) -> BootClock {
        let now = BootClock::measure();
        let moved = (now.offset_ns() - self.clock.offset_ns()).unsigned_abs();
        if moved > STEP.as_nanos() {
            self.clock = now;
            if let Err(e) = self.publish() {
                tracing::warn!("publishing the stepped clock to the kernel: {e}");
            }
        }
        self.clock
    }

    /// Counts a final record closed at boot time `end_ns`.
    pub(crate) fn count(&mut self, end_ns: u64) {
        // What the kernel program computes for the same close (`windows.rs` there).
        let index = end_ns.wrapping_add(self.offset_ns) / self.window_ns;
        *self.read.entry(index).or_default() += 1;
        if self.read.len() as u64 > KEEP
            && let Some((&oldest, _)) = self.read.first_key_value()
        {
            self.read.remove(&oldest);
        }
    }

    /// Final records read in window `index`.
    pub(crate) fn read_in(&self, index: u64) -> u64 {
        self.read.get(&index).copied().unwrap_or(0)
    }
}

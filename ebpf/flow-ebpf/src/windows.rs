//! Close counts per batch window (`FLOW_WINDOWS`), bucketed by the close's time.

use core::ptr;

use aya_ebpf::{
    btf_maps::{Array, PerCpuArray},
    macros::btf_map,
};
use flow_common::{ClockConfig, WINDOW_SLOTS, WindowCounts};

use crate::words;

/// The window length and the boot-to-wall offset; written by user space (a zero
/// window length turns the counting off).
#[btf_map]
static FLOW_CLOCK: Array<ClockConfig, 1> = Array::new();

/// Per-CPU close counts, slot `window % WINDOW_SLOTS`.
#[btf_map]
static FLOW_WINDOWS: PerCpuArray<WindowCounts, { WINDOW_SLOTS as usize }> = PerCpuArray::new();

/// Counts a close at `end_ns` in its window's slot and returns the slot, or `None`
/// when counting is off.
#[inline(always)]
pub fn count_close(end_ns: u64) -> Option<*mut WindowCounts> {
    let clock = FLOW_CLOCK.get_ptr(0)?;
    // SAFETY: a valid pointer to the map's value for this program run.
    let (window_ns, offset_ns) = unsafe {
        (
            ptr::read_volatile(ptr::addr_of!((*clock).window_ns)),
            ptr::read_volatile(ptr::addr_of!((*clock).offset_ns)),
        )
    };
    if window_ns == 0 {
        return None;
    }
    let window = end_ns.wrapping_add(offset_ns) / window_ns;
    let slot = FLOW_WINDOWS.get_ptr_mut((window % u64::from(WINDOW_SLOTS)) as u32)?;
    // SAFETY: this CPU's slot, valid for this program run. The counts are added
    // atomically (the second attachment can run nested inside the first on this
    // CPU); the reset, once per window and CPU at its first close, is not: a nested
    // close at that very instant could be counted in the slot's previous window.
    unsafe {
        if (*slot).window != window {
            // The slot held a window long past: start it afresh.
            (*slot).closes = 0;
            (*slot).submitted = 0;
            (*slot).ring_full = 0;
            (*slot).window = window;
        }
        words::add(ptr::addr_of_mut!((*slot).closes), 1);
    }
    Some(slot)
}

/// Counts what became of a close counted by [`count_close`].
#[inline(always)]
pub fn count_outcome(slot: Option<*mut WindowCounts>, submitted: bool) {
    if let Some(slot) = slot {
        // SAFETY: as in `count_close`, same program run.
        unsafe {
            if submitted {
                words::add(ptr::addr_of_mut!((*slot).submitted), 1);
            } else {
                words::add(ptr::addr_of_mut!((*slot).ring_full), 1);
            }
        }
    }
}

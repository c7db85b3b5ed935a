//! The synchronous reader: a plain file descriptor and a drain loop, so that any event
//! loop (or none) can drive it.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use flow_common::{RawFlowEvent, kind};

use crate::{
    FlowRecord, clock::BootClock, counters::ReaderCounters, error::CaptureError,
    windows::WindowClock,
};

/// Reads closed-socket records from the kernel's ring buffer.
///
/// The kernel wakes the reader only when many records are waiting, so a caller must
/// also drain on a timer: [`FlowReader::wait`] returns at the latest after the poll
/// interval. It is readable (`POLLIN`) when woken, for use with `epoll` or `AsyncFd`.
pub struct FlowReader {
    ring: RingBuf<MapData>,
    poll_interval: Duration,
    counters: ReaderCounters,
    /// Set when the capture counts closes per window.
    windows: Option<WindowClock>,
}

impl FlowReader {
    pub(crate) fn new(
        ring: RingBuf<MapData>,
        poll_interval: Duration,
        windows: Option<WindowClock>,
    ) -> FlowReader {
        FlowReader {
            ring,
            poll_interval,
            counters: ReaderCounters::default(),
            windows,
        }
    }

    /// Hands every record now in the ring to `f`, oldest first; returns how many.
    ///
    /// When the capture counts closes per window
    /// ([`FlowCaptureBuilder::window_counts`](crate::FlowCaptureBuilder::window_counts)),
    /// the records are also counted by their window
    /// ([`records_in_window`](FlowReader::records_in_window)).
    pub fn read_available(&mut self, mut f: impl FnMut(FlowRecord)) -> usize {
        let mut windows = self.windows.take();
        let clock = windows
            .as_mut()
            .map_or_else(BootClock::measure, WindowClock::clock);
        let n = self.read_raw(|ev| {
            if let Some(w) = windows.as_mut()
                && ev.kind == kind::FINAL
            {
                w.count(ev.end_ns);
            }
            f(crate::decode_record(ev, &clock))
        });
        self.windows = windows;
        n
    }

    /// Final records read whose close falls in window `index`
    /// ([`window_index`](crate::window_index)); 0 unless the capture counts windows.
    pub fn records_in_window(&self, index: u64) -> u64 {
        self.windows.as_ref().map_or(0, |w| w.read_in(index))
    }

    /// Like [`FlowReader::read_available`], but hands on the kernel's raw events.
    pub fn read_raw(&mut self, mut f: impl FnMut(&RawFlowEvent)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            match decode(&item) {
                Some(ev) => {
                    f(&ev);
                    n += 1;
                }
                None => self.counters.malformed += 1,
            }
        }
        self.counters.records_read += n as u64;
        n
    }

    /// Blocks until the kernel wakes the reader or `timeout` passes; returns whether it
    /// was woken. Either way, call [`FlowReader::read_available`] next.
    pub fn wait(&self, timeout: Duration) -> Result<bool, CaptureError> {
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(CaptureError::Io {
                operation: "poll on the flow ring buffer",
                source: err,
            });
        }
        Ok(rc > 0)
    }

    /// How often to drain when not woken.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// What this reader did so far.
    pub fn counters(&self) -> ReaderCounters {
        self.counters
    }
}

/// Copies one ring-buffer entry out as a record, or `None` when it is too short.
pub fn decode(bytes: &[u8]) -> Option<RawFlowEvent> {
    if bytes.len() < RawFlowEvent::SIZE {
        return None;
    }
    // SAFETY: length checked; `RawFlowEvent` is plain old data valid for any bytes, and
    // the read makes no alignment assumption.
    Some(unsafe { bytes.as_ptr().cast::<RawFlowEvent>().read_unaligned() })
}

impl AsFd for FlowReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for FlowReader {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_entries_are_refused() {
        assert!(decode(&[0u8; RawFlowEvent::SIZE - 1]).is_none());
        let mut ev = RawFlowEvent::zeroed();
        ev.local_port = 4242;
        ev.srtt_us_x8 = 800;
        // SAFETY: viewing a POD value as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const RawFlowEvent).cast::<u8>(),
                RawFlowEvent::SIZE,
            )
        };
        assert_eq!(decode(bytes), Some(ev));
    }
}

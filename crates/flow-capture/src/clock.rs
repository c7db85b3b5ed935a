//! Conversion of kernel `CLOCK_BOOTTIME` stamps to wall-clock (UTC) time.
//!
//! The kernel program stamps records with `bpf_ktime_get_boot_ns()`. `CLOCK_REALTIME`
//! and `CLOCK_BOOTTIME` advance at the same (NTP-disciplined) rate, so their difference
//! changes only when the wall clock is stepped. The reader measures that difference
//! again before every drain, so a step is picked up at once and nothing drifts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The current `CLOCK_REALTIME - CLOCK_BOOTTIME` offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootClock {
    /// Wall-clock ns since the Unix epoch at boot time 0.
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks exist on every supported kernel.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl BootClock {
    /// Measures the offset now: the wall-clock read bracketed by two boot-clock reads,
    /// best of three (the narrowest bracket).
    pub fn measure() -> BootClock {
        let mut best: Option<(i128, i128)> = None;
        for _ in 0..3 {
            let b0 = now_ns(libc::CLOCK_BOOTTIME);
            let r = now_ns(libc::CLOCK_REALTIME);
            let b1 = now_ns(libc::CLOCK_BOOTTIME);
            let width = b1 - b0;
            let offset = r - (b0 + width / 2);
            if best.is_none_or(|(w, _)| width < w) {
                best = Some((width, offset));
            }
        }
        BootClock {
            offset_ns: best.map_or(0, |(_, o)| o),
        }
    }

    /// A clock with a fixed offset, for tests and replays.
    pub fn with_offset_ns(offset_ns: i128) -> BootClock {
        BootClock { offset_ns }
    }

    /// Wall-clock ns since the Unix epoch at boot time 0.
    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    /// The current `CLOCK_BOOTTIME` in ns.
    pub fn boot_now_ns() -> u64 {
        now_ns(libc::CLOCK_BOOTTIME) as u64
    }

    /// The wall-clock time of a `CLOCK_BOOTTIME` stamp.
    pub fn to_wall(&self, boot_ns: u64) -> SystemTime {
        let unix_ns = boot_ns as i128 + self.offset_ns;
        if unix_ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(unix_ns as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(unix_ns.unsigned_abs() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_with_offset() {
        let c = BootClock::with_offset_ns(1_000_000_000_000_000_000);
        assert_eq!(
            c.to_wall(5)
                .duration_since(UNIX_EPOCH)
                .expect("after epoch"),
            Duration::from_nanos(1_000_000_000_000_000_005)
        );
    }

    #[test]
    fn measured_offset_maps_boot_now_to_wall_now() {
        let c = BootClock::measure();
        let before = SystemTime::now();
        let wall = c.to_wall(BootClock::boot_now_ns());
        let after = SystemTime::now();
        // Within the time it took to read the clocks (and a generous 5 ms bound).
        assert!(
            wall + Duration::from_millis(5) >= before,
            "{wall:?} vs {before:?}"
        );
        assert!(
            wall <= after + Duration::from_millis(5),
            "{wall:?} vs {after:?}"
        );
    }
}

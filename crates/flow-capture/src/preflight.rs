//! Checks made before loading: kernel version and privileges.

use std::{fmt, fs};

use crate::error::CaptureError;

/// A kernel version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest kernel the program is meant for: 5.10 (LTS). It needs BPF ring buffers
/// (5.8), BTF tracepoints (5.5) and `bpf_skc_to_tcp_sock` for tracing programs (5.9).
/// Tested on 6.18.
pub const MIN_KERNEL: KernelVersion = KernelVersion {
    major: 5,
    minor: 10,
};

impl KernelVersion {
    /// Parses a release string such as `6.18.44-fc-v782`.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(KernelVersion { major, minor })
    }

    /// The running kernel's version.
    pub fn running() -> Result<KernelVersion, CaptureError> {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").map_err(|source| {
            CaptureError::Io {
                operation: "reading /proc/sys/kernel/osrelease",
                source,
            }
        })?;
        let release = release.trim();
        KernelVersion::parse(release).ok_or_else(|| CaptureError::UnknownKernelVersion {
            release: release.to_string(),
        })
    }
}

/// Fails unless the running kernel is at least [`MIN_KERNEL`].
pub fn check_kernel() -> Result<KernelVersion, CaptureError> {
    let found = KernelVersion::running()?;
    if found < MIN_KERNEL {
        return Err(CaptureError::KernelTooOld {
            found,
            required: MIN_KERNEL,
        });
    }
    Ok(found)
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails unless the effective capability set allows loading a tracing program.
pub fn check_privileges() -> Result<(), CaptureError> {
    let status = fs::read_to_string("/proc/self/status").map_err(|source| CaptureError::Io {
        operation: "reading /proc/self/status",
        source,
    })?;
    let eff = effective_caps(&status).unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing.push("CAP_SYS_ADMIN");
    Err(CaptureError::NotPrivileged {
        missing: missing.join(", "),
    })
}

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
pub(crate) fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_strings() {
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v782"),
            Some(KernelVersion {
                major: 6,
                minor: 18
            })
        );
        assert_eq!(
            KernelVersion::parse("5.4.0-150-generic"),
            Some(KernelVersion { major: 5, minor: 4 })
        );
        assert_eq!(KernelVersion::parse("garbage"), None);
        assert!(KernelVersion { major: 5, minor: 4 } < MIN_KERNEL);
        assert!(KernelVersion { major: 6, minor: 1 } > MIN_KERNEL);
    }

    #[test]
    fn reads_effective_caps() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }
}

//! Checks of the host made before loading, each written once: the loader runs the
//! typed probes ([`check_kernel`], [`check_privileges`], then the BTF and tracepoint
//! checks on the BTF it parses anyway) and stops at the first error; [`diagnose`] runs
//! the same probes and reports every one, with what to do, for a person
//! (`flowexporter check`).
//!
//! ```no_run
//! use flow_capture::preflight::{self, Status};
//!
//! // The typed probes, as the loader runs them ...
//! let kernel = preflight::check_kernel()?;
//! preflight::check_privileges()?;
//! println!("Linux {kernel}: ready to load");
//! // ... and the same probes as a report.
//! for d in preflight::diagnose() {
//!     println!("{:14}  {}  {}", d.name, d.status.as_str(), d.detail);
//! }
//! # Ok::<(), flow_capture::CaptureError>(())
//! ```

use std::fmt;

use caps::{CapSet, Capability};

use crate::error::CaptureError;

mod diagnose;

pub use diagnose::{Diagnostic, Status, diagnose};

/// Where the running kernel tells its release (`uname -r`).
const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// What to do about missing privileges, in the words of the error and of `check`.
pub const GRANT_ADVICE: &str = "run as root, or grant CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): \
     systemd `AmbientCapabilities=CAP_BPF CAP_PERFMON`, or \
     `setcap cap_bpf,cap_perfmon+ep /usr/local/bin/flowexporter`";

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
        let release = kernel_release()?;
        KernelVersion::parse(&release).ok_or(CaptureError::UnknownKernelVersion { release })
    }
}

/// The running kernel's release string (`6.18.44-fc-v782`), as `uname -r` prints it.
///
/// A one-line read: the `procfs` crate's `KernelVersion::current()` reads the same
/// file and would add a dependency, not a better answer.
pub fn kernel_release() -> Result<String, CaptureError> {
    std::fs::read_to_string(OSRELEASE)
        .map(|r| r.trim().to_string())
        .map_err(|source| CaptureError::Io {
            operation: "reading /proc/sys/kernel/osrelease",
            source,
        })
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

/// Who this thread is and what it may do, as far as loading a tracing program goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privileges {
    /// The effective user ID.
    pub euid: u32,
    /// The effective capability set, one bit per capability number.
    pub effective: u64,
}

impl Privileges {
    /// This thread's effective user ID and capability set (`capget(2)` through the
    /// `caps` crate: the calling thread's own set, which is what the `bpf(2)` calls
    /// made from it are checked against).
    pub fn current() -> Result<Privileges, CaptureError> {
        let set = caps::read(None, CapSet::Effective).map_err(|e| CaptureError::Io {
            operation: "reading the effective capability set",
            source: std::io::Error::other(e.to_string()),
        })?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        Ok(Privileges {
            euid,
            effective: set.iter().fold(0, |mask, c| mask | c.bitmask()),
        })
    }

    /// Whether `cap` is in the effective set.
    pub fn has(&self, cap: Capability) -> bool {
        self.effective & cap.bitmask() != 0
    }

    /// Whether the set allows loading and attaching the tracer: CAP_BPF and
    /// CAP_PERFMON, or CAP_SYS_ADMIN.
    pub fn can_load(&self) -> bool {
        self.has(Capability::CAP_SYS_ADMIN)
            || (self.has(Capability::CAP_BPF) && self.has(Capability::CAP_PERFMON))
    }

    /// The capabilities to grant when [`Privileges::can_load`] is false, by name:
    /// CAP_BPF and CAP_PERFMON where missing, then CAP_SYS_ADMIN as the alternative.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (Capability::CAP_BPF, "CAP_BPF"),
            (Capability::CAP_PERFMON, "CAP_PERFMON"),
        ]
        .into_iter()
        .filter(|(c, _)| !self.has(*c))
        .map(|(_, name)| name)
        .chain(["CAP_SYS_ADMIN"])
        .collect()
    }

    /// Fails, naming what is missing, unless [`Privileges::can_load`].
    pub fn check(&self) -> Result<(), CaptureError> {
        if self.can_load() {
            return Ok(());
        }
        Err(CaptureError::NotPrivileged {
            missing: self.missing().join(", "),
        })
    }
}

/// Fails unless this thread's effective capability set allows loading a tracing
/// program.
pub fn check_privileges() -> Result<(), CaptureError> {
    Privileges::current()?.check()
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
    fn privileges_name_what_is_missing() {
        let bit = |c: Capability| c.bitmask();
        let none = Privileges {
            euid: 65534,
            effective: 0,
        };
        assert!(!none.can_load());
        assert_eq!(none.missing(), ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"]);
        assert!(matches!(
            none.check(),
            Err(CaptureError::NotPrivileged { missing }) if missing == "CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN"
        ));
        let bpf_only = Privileges {
            euid: 1000,
            effective: bit(Capability::CAP_BPF),
        };
        assert_eq!(bpf_only.missing(), ["CAP_PERFMON", "CAP_SYS_ADMIN"]);
        for effective in [
            bit(Capability::CAP_SYS_ADMIN),
            bit(Capability::CAP_BPF) | bit(Capability::CAP_PERFMON),
        ] {
            let p = Privileges { euid: 0, effective };
            assert!(p.can_load() && p.check().is_ok(), "{effective:#x}");
        }
        // The bits are the kernel's capability numbers.
        assert_eq!(bit(Capability::CAP_SYS_ADMIN), 1 << 21);
        assert_eq!(bit(Capability::CAP_BPF), 1 << 39);
    }
}

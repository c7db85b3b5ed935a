//! The one error type of `flow-capture`.

use std::{io, path::PathBuf};

use crate::preflight::KernelVersion;

/// Why the capture core could not load, attach or read. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The process may not load BPF programs.
    #[error(
        "missing privileges: loading the tracer needs root, or CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); effective set lacks {missing}. Run as root or grant these capabilities"
    )]
    NotPrivileged {
        /// The capabilities that are missing, by name.
        missing: String,
    },
    /// The kernel exposes no BTF, which the BTF tracepoint and member offsets require.
    #[error(
        "kernel BTF not readable at {path}: the kernel needs CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.x have it)"
    )]
    NoBtf {
        /// Where BTF was looked for.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// The kernel BTF could not be parsed.
    #[error("kernel BTF at {path} could not be parsed")]
    BadBtf {
        /// The BTF file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: btf_rs::Error,
    },
    /// A structure member the program reads is not in the kernel's BTF.
    #[error(
        "kernel BTF has no member `{member}` in `struct {structure}` (or it is a bitfield): this kernel is not supported; flowexporter needs Linux {min} or newer",
        min = crate::preflight::MIN_KERNEL
    )]
    MissingKernelMember {
        /// The structure searched.
        structure: &'static str,
        /// The member not found.
        member: &'static str,
    },
    /// The `inet_sock_set_state` tracepoint does not exist in this kernel.
    #[error(
        "kernel has no BTF tracepoint `{name}`: it appeared in Linux 4.16; flowexporter needs Linux {min} or newer",
        min = crate::preflight::MIN_KERNEL
    )]
    TracepointMissing {
        /// The tracepoint's name.
        name: &'static str,
    },
    /// The kernel is older than the oldest one the program can run on.
    #[error(
        "kernel {found} is too old: flowexporter needs Linux {required} or newer (BPF ring buffer, BTF tracepoints, bpf_skc_to_tcp_sock in tracing programs)"
    )]
    KernelTooOld {
        /// The running kernel.
        found: KernelVersion,
        /// The oldest supported kernel.
        required: KernelVersion,
    },
    /// The running kernel's release string could not be read or parsed.
    #[error("cannot tell the kernel version from `{release}`")]
    UnknownKernelVersion {
        /// What `uname -r` gave.
        release: String,
    },
    /// A ring buffer size that the kernel would refuse.
    #[error(
        "ring buffer size {size} bytes is invalid: it must be a power of two and a multiple of the page size ({page} bytes), at most 1 GiB"
    )]
    InvalidRingSize {
        /// The size asked for.
        size: u64,
        /// The page size.
        page: u64,
    },
    /// The kernel refused to load the program or create its maps.
    #[error("loading the kernel program failed (the kernel log or verifier output below says why)")]
    Load(#[source] aya::EbpfError),
    /// The kernel refused to load or attach the tracepoint program.
    #[error("the tracepoint program `{program}` could not be loaded or attached")]
    Program {
        /// The program's name.
        program: &'static str,
        /// The loader's error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map of the program is missing or has the wrong type.
    #[error("map `{name}` of the kernel program could not be opened")]
    Map {
        /// The map's name.
        name: &'static str,
        /// The loader's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// The kernel object embedded in this build lacks a map or program it should have.
    #[error(
        "the embedded kernel object has no {what} named `{name}`: it does not match this library"
    )]
    ObjectMismatch {
        /// "map" or "program".
        what: &'static str,
        /// The missing name.
        name: &'static str,
    },
    /// The identity pin directory cannot be used, or a map pinned there is not the
    /// exporter's (flow-identity's check of the pins, which writers share).
    #[error(transparent)]
    IdentityPins(#[from] flow_identity::IdentityError),
    /// A workload ID that cannot be stored: empty, longer than 64 bytes, or with a NUL
    /// or another control character.
    #[error(transparent)]
    InvalidWorkloadId(#[from] flow_record::InvalidWorkloadId),
    /// The open-socket iterator (interim records) could not be loaded.
    #[error("interim records are unavailable: {reason}")]
    InterimUnavailable {
        /// Why the iterator program could not be loaded or linked.
        reason: String,
    },
    /// The reader was already taken from this capture.
    #[error("the flow reader of this capture was already taken")]
    ReaderTaken,
    /// An operating-system call failed.
    #[error("{operation} failed")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

//! The preflight probes as a report for a person: one [`Diagnostic`] per probe, with
//! what was found and, on a failure, what to do.

use std::{collections::HashSet, path::Path};

use btf_rs::{Btf, Type};
use caps::Capability;

use super::{GRANT_ADVICE, KernelVersion, MIN_KERNEL, Privileges, kernel_release};
use crate::{
    btf_offsets::{self, TRACEPOINT, VMLINUX_BTF},
    error::CaptureError,
};

/// How a probe went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The host is fine in this respect.
    Pass,
    /// Something worth knowing that does not stop the capture.
    Warn,
    /// A requirement is not met: the capture cannot load until it is fixed.
    Fail,
    /// Not probed (an earlier probe failed, or there was nothing to probe).
    Skip,
}

impl Status {
    /// `pass`, `warn`, `fail` or `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// The outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// What was probed (`kernel version`, `privileges`, ...).
    pub name: &'static str,
    /// How it went.
    pub status: Status,
    /// What was found and, on a failure, what to do. May span lines.
    pub detail: String,
}

impl Diagnostic {
    /// A diagnostic.
    pub fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Diagnostic {
        Diagnostic {
            name,
            status,
            detail: detail.into(),
        }
    }
}

/// Runs every probe that loading depends on and reports each, in this order: `kernel
/// version`, `privileges`, `kernel BTF`, `tracepoint`, `ring buffer`. The probes are
/// those [`FlowCaptureBuilder::load`](crate::FlowCaptureBuilder::load) runs; loading
/// itself (the verifier) is not tried here.
pub fn diagnose() -> Vec<Diagnostic> {
    let mut out = vec![kernel_version(), privileges()];
    let (btf_outcome, btf) = kernel_btf(Path::new(VMLINUX_BTF));
    out.push(btf_outcome);
    out.push(tracepoint(btf.as_ref()));
    out.push(ring_buffer(btf.as_ref()));
    out
}

/// `error` and its sources, joined with `: `.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn kernel_version() -> Diagnostic {
    const NAME: &str = "kernel version";
    let release = kernel_release().unwrap_or_default();
    match KernelVersion::running() {
        Ok(v) if v >= MIN_KERNEL => Diagnostic::new(
            NAME,
            Status::Pass,
            format!("{release} (needs {MIN_KERNEL} or newer)"),
        ),
        Ok(v) => Diagnostic::new(
            NAME,
            Status::Fail,
            format!(
                "{v} ({release}) is too old: upgrade to Linux {MIN_KERNEL} or newer (BPF ring buffer, BTF tracepoints, bpf_ktime_get_boot_ns)"
            ),
        ),
        Err(e) => Diagnostic::new(NAME, Status::Fail, chain(&e)),
    }
}

fn privileges() -> Diagnostic {
    const NAME: &str = "privileges";
    let p = match Privileges::current() {
        Ok(p) => p,
        Err(e) => return Diagnostic::new(NAME, Status::Fail, chain(&e)),
    };
    let who = match p.euid {
        0 => "root".to_string(),
        n => format!("uid {n}"),
    };
    if p.has(Capability::CAP_BPF) && p.has(Capability::CAP_PERFMON) {
        let extra = if p.has(Capability::CAP_SYS_ADMIN) {
            " and CAP_SYS_ADMIN"
        } else {
            ""
        };
        return Diagnostic::new(
            NAME,
            Status::Pass,
            format!("{who}: effective set has CAP_BPF, CAP_PERFMON{extra}"),
        );
    }
    if p.can_load() {
        return Diagnostic::new(
            NAME,
            Status::Pass,
            format!("{who}: effective set has CAP_SYS_ADMIN"),
        );
    }
    Diagnostic::new(
        NAME,
        Status::Fail,
        format!(
            "{who}: effective set {:#x} lacks {}: {GRANT_ADVICE}",
            p.effective,
            p.missing().join(", ")
        ),
    )
}

/// Parses the kernel BTF as the loader does; the parsed BTF is handed to the probes
/// that need it.
fn kernel_btf(path: &Path) -> (Diagnostic, Option<Btf>) {
    const NAME: &str = "kernel BTF";
    match btf_offsets::load_btf(path) {
        Ok(btf) => {
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            let detail = format!("{} parsed ({size} bytes)", path.display());
            (Diagnostic::new(NAME, Status::Pass, detail), Some(btf))
        }
        Err(CaptureError::NoBtf { path, source }) => (
            Diagnostic::new(
                NAME,
                Status::Fail,
                format!(
                    "{} not readable ({source}): the kernel needs CONFIG_DEBUG_INFO_BTF=y (every mainstream distribution kernel has it); use such a kernel",
                    path.display()
                ),
            ),
            None,
        ),
        Err(CaptureError::BadBtf { path, source }) => (
            Diagnostic::new(
                NAME,
                Status::Fail,
                format!(
                    "{} could not be parsed ({source}): the kernel's BTF is unusable; report the kernel version",
                    path.display()
                ),
            ),
            None,
        ),
        Err(e) => (Diagnostic::new(NAME, Status::Fail, chain(&e)), None),
    }
}

fn tracepoint(btf: Option<&Btf>) -> Diagnostic {
    const NAME: &str = "tracepoint";
    let Some(btf) = btf else {
        return Diagnostic::new(NAME, Status::Skip, "needs the kernel BTF (see above)");
    };
    match btf_offsets::check_tracepoint(btf) {
        Ok(()) => Diagnostic::new(
            NAME,
            Status::Pass,
            format!("BTF tracepoint {TRACEPOINT} (btf_trace_{TRACEPOINT} in BTF)"),
        ),
        Err(_) => Diagnostic::new(
            NAME,
            Status::Fail,
            format!(
                "no btf_trace_{TRACEPOINT} in the kernel BTF: the kernel lacks the {TRACEPOINT} BTF tracepoint; upgrade to Linux {MIN_KERNEL} or newer"
            ),
        ),
    }
}

/// The member names of the enum `name` in `btf`, if it is there.
fn enum_members(btf: &Btf, name: &str) -> Option<HashSet<String>> {
    let types = btf.resolve_types_by_name(name).ok()?;
    types.into_iter().find_map(|t| match t {
        Type::Enum(e) => Some(
            e.members
                .iter()
                .filter_map(|m| btf.resolve_name(m).ok())
                .collect(),
        ),
        _ => None,
    })
}

fn ring_buffer(btf: Option<&Btf>) -> Diagnostic {
    const NAME: &str = "ring buffer";
    let Some(btf) = btf else {
        return Diagnostic::new(
            NAME,
            Status::Skip,
            "needs the kernel BTF (see above); the program load below tells",
        );
    };
    let upgrade = format!("upgrade to Linux {MIN_KERNEL} or newer (BPF ring buffers came in 5.8)");
    let Some(map_types) = enum_members(btf, "bpf_map_type") else {
        return Diagnostic::new(
            NAME,
            Status::Warn,
            "enum bpf_map_type not in the kernel BTF: cannot tell; the program load below tells",
        );
    };
    if !map_types.contains("BPF_MAP_TYPE_RINGBUF") {
        return Diagnostic::new(
            NAME,
            Status::Fail,
            format!("no BPF_MAP_TYPE_RINGBUF in this kernel: {upgrade}"),
        );
    }
    let helpers = [
        "BPF_FUNC_ringbuf_reserve",
        "BPF_FUNC_ringbuf_submit",
        "BPF_FUNC_ringbuf_query",
    ];
    match enum_members(btf, "bpf_func_id") {
        Some(ids) => {
            let missing: Vec<&str> = helpers.into_iter().filter(|h| !ids.contains(*h)).collect();
            if missing.is_empty() {
                Diagnostic::new(
                    NAME,
                    Status::Pass,
                    "BPF_MAP_TYPE_RINGBUF and the ringbuf reserve/submit/query helpers",
                )
            } else {
                Diagnostic::new(
                    NAME,
                    Status::Fail,
                    format!("kernel lacks {}: {upgrade}", missing.join(", ")),
                )
            }
        }
        None => Diagnostic::new(
            NAME,
            Status::Pass,
            "BPF_MAP_TYPE_RINGBUF (helper list not in BTF)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_reports_once_in_order() {
        let names: Vec<&str> = diagnose().iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            [
                "kernel version",
                "privileges",
                "kernel BTF",
                "tracepoint",
                "ring buffer"
            ]
        );
    }

    #[test]
    fn a_missing_btf_file_fails_and_skips_what_needs_it() {
        let (d, btf) = kernel_btf(Path::new("/nonexistent/vmlinux"));
        assert_eq!(d.status, Status::Fail);
        assert!(d.detail.contains("CONFIG_DEBUG_INFO_BTF=y"), "{}", d.detail);
        assert!(btf.is_none());
        assert_eq!(tracepoint(None).status, Status::Skip);
        assert_eq!(ring_buffer(None).status, Status::Skip);
    }
}

//! `flowexporter check`: probes this host and prints a table, one row per check, with
//! what to do about each failure. The exit status is 0 only when every required check
//! passes; warnings (things the exporter does not need) and skipped checks do not fail.

use std::{
    collections::HashSet,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use btf_rs::{Btf, Type};
use flow_capture::{
    FlowCaptureBuilder, KernelVersion, MIN_KERNEL, UnattributedReason, identity_maps,
};
use flow_identity::{CertificateIdentity, IdentityError, IdentityField};
use flow_sink::error_chain;

use crate::cli::{CertField, CheckArgs};

/// Where the running kernel publishes its BTF.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The BTF type that exists when the kernel has the `inet_sock_set_state` BTF tracepoint.
const TRACEPOINT_BTF: &str = "btf_trace_inet_sock_set_state";
/// Where the BPF filesystem is expected.
const BPFFS: &str = "/sys/fs/bpf";
/// Where `run` keeps its state when not told otherwise.
const DEFAULT_STATE_DIRS: [&str; 2] = [
    "/var/lib/flowexporter/spool",
    "/var/lib/flowexporter/journal",
];

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

const GRANT_ADVICE: &str = "run as root, or grant CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): \
     systemd `AmbientCapabilities=CAP_BPF CAP_PERFMON`, or \
     `setcap cap_bpf,cap_perfmon+ep /usr/local/bin/flowexporter`";

/// The result of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The host is fine in this respect.
    Pass,
    /// A requirement is not met: the exporter cannot run (or not fully) until fixed.
    Fail,
    /// Something worth knowing that does not stop the exporter.
    Warn,
    /// Not checked (not asked for, or an earlier check failed).
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Warn => "warn",
            Status::Skip => "skip",
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct CheckOutcome {
    /// What was checked.
    pub name: &'static str,
    /// How it went.
    pub status: Status,
    /// What was found and, on a failure, what to do. May span lines (a verifier log).
    pub detail: String,
}

impl CheckOutcome {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> CheckOutcome {
        CheckOutcome {
            name,
            status,
            detail: detail.into(),
        }
    }
    fn pass(name: &'static str, detail: impl Into<String>) -> CheckOutcome {
        CheckOutcome::new(name, Status::Pass, detail)
    }
    fn fail(name: &'static str, detail: impl Into<String>) -> CheckOutcome {
        CheckOutcome::new(name, Status::Fail, detail)
    }
    fn warn(name: &'static str, detail: impl Into<String>) -> CheckOutcome {
        CheckOutcome::new(name, Status::Warn, detail)
    }
    fn skip(name: &'static str, detail: impl Into<String>) -> CheckOutcome {
        CheckOutcome::new(name, Status::Skip, detail)
    }
}

/// Runs the host checks, prints the table, and fails unless every required check passed.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let outcomes = run_checks(&args);
    print_table(&mut io::stdout().lock(), &outcomes)?;
    let total = outcomes.len();
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let failed = count(Status::Fail);
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {total} checks failed: fix them (see WHAT TO DO above) before running flowexporter here"
        );
    }
    println!(
        "all required checks passed ({} warning(s), {} skipped): this host can run flowexporter",
        count(Status::Warn),
        count(Status::Skip)
    );
    Ok(())
}

/// Every check, in the order printed.
fn run_checks(args: &CheckArgs) -> Vec<CheckOutcome> {
    let mut out = vec![kernel_version(), privileges()];
    let (btf_outcome, btf) = kernel_btf(Path::new(VMLINUX_BTF));
    out.push(btf_outcome);
    out.push(tracepoint(btf.as_ref()));
    out.push(ring_buffer(btf.as_ref()));
    drop(btf);
    out.push(program_load());
    let mounts = read_mounts();
    out.push(tracefs(&mounts));
    out.push(bpffs(&mounts));
    out.push(pin_dir(&args.pin_dir, &mounts));
    out.push(certificate(
        args.identity_cert.as_deref(),
        args.identity_field,
    ));
    if args.state_dirs.is_empty() {
        out.extend(
            DEFAULT_STATE_DIRS
                .iter()
                .map(|d| state_dir(Path::new(d), " (run's default)")),
        );
    } else {
        out.extend(args.state_dirs.iter().map(|d| state_dir(d, "")));
    }
    out
}

/// Writes the table; multi-line details (a verifier log) follow it in full.
fn print_table(w: &mut impl Write, outcomes: &[CheckOutcome]) -> io::Result<()> {
    const HEADER: [&str; 3] = ["CHECK", "RESULT", "DETAIL / WHAT TO DO"];
    let name_w = outcomes
        .iter()
        .map(|o| o.name.len())
        .chain([HEADER[0].len()])
        .max()
        .unwrap_or(0);
    let res_w = HEADER[1].len();
    writeln!(
        w,
        "{:name_w$}  {:res_w$}  {}",
        HEADER[0], HEADER[1], HEADER[2]
    )?;
    let mut long = Vec::new();
    for o in outcomes {
        let mut lines = o.detail.lines();
        let first = lines.next().unwrap_or("");
        let more = lines.next().is_some();
        let first = if more {
            format!("{first} (full text below)")
        } else {
            first.to_string()
        };
        writeln!(
            w,
            "{:name_w$}  {:res_w$}  {first}",
            o.name,
            o.status.as_str()
        )?;
        if more {
            long.push(o);
        }
    }
    for o in long {
        writeln!(
            w,
            "\n--- {} ({}) ---\n{}",
            o.name,
            o.status.as_str(),
            o.detail
        )?;
    }
    w.flush()
}

fn kernel_version() -> CheckOutcome {
    const NAME: &str = "kernel version";
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    match KernelVersion::running() {
        Ok(v) if v >= MIN_KERNEL => {
            CheckOutcome::pass(NAME, format!("{release} (needs {MIN_KERNEL} or newer)"))
        }
        Ok(v) => CheckOutcome::fail(
            NAME,
            format!(
                "{v} ({release}) is too old: upgrade to Linux {MIN_KERNEL} or newer (BPF ring buffer, BTF tracepoints, bpf_ktime_get_boot_ns)"
            ),
        ),
        Err(e) => CheckOutcome::fail(NAME, error_chain(&e)),
    }
}

/// `(effective uid, CapEff)` from a `/proc/<pid>/status` text.
fn uid_and_caps(status: &str) -> (Option<u32>, Option<u64>) {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let uid = field("Uid:")
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok());
    let caps = field("CapEff:").and_then(|v| u64::from_str_radix(v, 16).ok());
    (uid, caps)
}

fn privileges() -> CheckOutcome {
    const NAME: &str = "privileges";
    let status = match fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => return CheckOutcome::fail(NAME, format!("cannot read /proc/self/status: {e}")),
    };
    let (uid, caps) = uid_and_caps(&status);
    let Some(eff) = caps else {
        return CheckOutcome::fail(NAME, "no CapEff line in /proc/self/status");
    };
    let who = match uid {
        Some(0) => "root".to_string(),
        Some(n) => format!("uid {n}"),
        None => "unknown uid".to_string(),
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_BPF) && has(CAP_PERFMON) {
        let extra = if has(CAP_SYS_ADMIN) {
            " and CAP_SYS_ADMIN"
        } else {
            ""
        };
        return CheckOutcome::pass(
            NAME,
            format!("{who}: effective set has CAP_BPF, CAP_PERFMON{extra}"),
        );
    }
    if has(CAP_SYS_ADMIN) {
        return CheckOutcome::pass(NAME, format!("{who}: effective set has CAP_SYS_ADMIN"));
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .chain(["CAP_SYS_ADMIN"])
        .collect();
    CheckOutcome::fail(
        NAME,
        format!(
            "{who}: effective set {eff:#x} lacks {}: {GRANT_ADVICE}",
            missing.join(", ")
        ),
    )
}

/// Parses the kernel BTF; the parsed BTF is handed to the checks that need it.
fn kernel_btf(path: &Path) -> (CheckOutcome, Option<Btf>) {
    const NAME: &str = "kernel BTF";
    let size = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            return (
                CheckOutcome::fail(
                    NAME,
                    format!(
                        "{} not readable ({e}): the kernel needs CONFIG_DEBUG_INFO_BTF=y (every mainstream distribution kernel has it); use such a kernel",
                        path.display()
                    ),
                ),
                None,
            );
        }
    };
    match Btf::from_file(path) {
        Ok(btf) => (
            CheckOutcome::pass(NAME, format!("{} parsed ({size} bytes)", path.display())),
            Some(btf),
        ),
        Err(e) => (
            CheckOutcome::fail(
                NAME,
                format!(
                    "{} could not be parsed ({e}): the kernel's BTF is unusable; report the kernel version",
                    path.display()
                ),
            ),
            None,
        ),
    }
}

fn tracepoint(btf: Option<&Btf>) -> CheckOutcome {
    const NAME: &str = "tracepoint";
    let Some(btf) = btf else {
        return CheckOutcome::skip(NAME, "needs the kernel BTF (see above)");
    };
    match btf.resolve_ids_by_name(TRACEPOINT_BTF) {
        Ok(ids) if !ids.is_empty() => CheckOutcome::pass(
            NAME,
            format!("BTF tracepoint inet_sock_set_state ({TRACEPOINT_BTF} in BTF)"),
        ),
        _ => CheckOutcome::fail(
            NAME,
            format!(
                "no {TRACEPOINT_BTF} in the kernel BTF: the kernel lacks the inet_sock_set_state BTF tracepoint; upgrade to Linux {MIN_KERNEL} or newer"
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

fn ring_buffer(btf: Option<&Btf>) -> CheckOutcome {
    const NAME: &str = "ring buffer";
    let Some(btf) = btf else {
        return CheckOutcome::skip(
            NAME,
            "needs the kernel BTF (see above); the program load below tells",
        );
    };
    let upgrade = format!("upgrade to Linux {MIN_KERNEL} or newer (BPF ring buffers came in 5.8)");
    let Some(map_types) = enum_members(btf, "bpf_map_type") else {
        return CheckOutcome::warn(
            NAME,
            "enum bpf_map_type not in the kernel BTF: cannot tell; the program load below tells",
        );
    };
    if !map_types.contains("BPF_MAP_TYPE_RINGBUF") {
        return CheckOutcome::fail(
            NAME,
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
                CheckOutcome::pass(
                    NAME,
                    "BPF_MAP_TYPE_RINGBUF and the ringbuf reserve/submit/query helpers",
                )
            } else {
                CheckOutcome::fail(
                    NAME,
                    format!("kernel lacks {}: {upgrade}", missing.join(", ")),
                )
            }
        }
        None => CheckOutcome::pass(NAME, "BPF_MAP_TYPE_RINGBUF (helper list not in BTF)"),
    }
}

/// The honest probe: load and attach the capture core exactly as `run` does, then
/// detach it again.
fn program_load() -> CheckOutcome {
    const NAME: &str = "program load";
    match FlowCaptureBuilder::new().load() {
        Ok(capture) => {
            drop(capture);
            CheckOutcome::pass(
                NAME,
                "the tracer loaded (verifier accepted it, ring buffer created), attached to inet_sock_set_state, and detached again",
            )
        }
        Err(e) => CheckOutcome::fail(NAME, error_chain(&e)),
    }
}

/// One line of `/proc/self/mounts`: where, and which filesystem type.
struct Mount {
    point: PathBuf,
    fstype: String,
}

/// Undoes the octal escapes (`\040` for a space, ...) of `/proc/self/mounts`.
fn unescape_mount_path(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn read_mounts() -> Result<Vec<Mount>, String> {
    let text = fs::read_to_string("/proc/self/mounts")
        .map_err(|e| format!("cannot read /proc/self/mounts: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _source = f.next()?;
            let point = unescape_mount_path(f.next()?);
            let fstype = f.next()?.to_string();
            Some(Mount { point, fstype })
        })
        .collect())
}

/// The type of the filesystem that holds `path` (an existing, absolute, canonical
/// path): the innermost mount, the last one mounted when several are stacked.
fn fstype_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a str> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.point))
        .max_by_key(|(i, m)| (m.point.components().count(), *i))
        .map(|(_, m)| m.fstype.as_str())
}

/// The type of the filesystem mounted exactly at `point`, if any (the top one).
fn mounted_at<'a>(mounts: &'a [Mount], point: &Path) -> Option<&'a str> {
    mounts
        .iter()
        .rev()
        .find(|m| m.point == point)
        .map(|m| m.fstype.as_str())
}

fn tracefs(mounts: &Result<Vec<Mount>, String>) -> CheckOutcome {
    const NAME: &str = "tracefs";
    const NOTE: &str = "the exporter does not need it (BTF tracepoints attach without it)";
    let mounts = match mounts {
        Ok(m) => m,
        Err(e) => return CheckOutcome::warn(NAME, format!("{e}; {NOTE}")),
    };
    let found = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|p| mounted_at(mounts, Path::new(p)) == Some("tracefs"));
    match found {
        Some(p) => CheckOutcome::pass(NAME, format!("mounted at {p}; {NOTE}")),
        None => CheckOutcome::warn(
            NAME,
            format!(
                "not mounted: {NOTE}; for debugging with bpftool/perf: mount -t tracefs nodev /sys/kernel/tracing"
            ),
        ),
    }
}

fn bpffs(mounts: &Result<Vec<Mount>, String>) -> CheckOutcome {
    const NAME: &str = "bpffs";
    let mounts = match mounts {
        Ok(m) => m,
        Err(e) => return CheckOutcome::fail(NAME, e.clone()),
    };
    match mounted_at(mounts, Path::new(BPFFS)) {
        Some("bpf") => CheckOutcome::pass(NAME, format!("mounted at {BPFFS}")),
        other => CheckOutcome::fail(
            NAME,
            format!(
                "{}: the identity maps cannot be pinned and shared with `flowexporter identity`; mount -t bpf bpf {BPFFS} (systemd mounts it at boot; or add `bpf {BPFFS} bpf defaults 0 0` to /etc/fstab)",
                match other {
                    Some(t) => format!("{BPFFS} is a {t} mount, not bpf"),
                    None => format!("no BPF filesystem at {BPFFS}"),
                }
            ),
        ),
    }
}

/// The nearest ancestor of `path` (or `path` itself) that exists.
fn nearest_existing(path: &Path) -> Result<(PathBuf, fs::Metadata), String> {
    let abs = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut probe = abs.as_path();
    loop {
        match fs::metadata(probe) {
            Ok(m) => return Ok((probe.to_path_buf(), m)),
            // Not there, or a file where a directory should be: look further up.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                match probe.parent() {
                    Some(p) => probe = p,
                    None => return Err(format!("no part of {} exists", path.display())),
                }
            }
            Err(e) => return Err(format!("cannot inspect {}: {e}", probe.display())),
        }
    }
}

/// A name for a probe file or directory that nothing else uses (no dot: the BPF
/// filesystem refuses names with one).
fn probe_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("flowexporter-check-{}-{nanos}", std::process::id())
}

/// Creates a file in `dir`, writes and syncs it, and removes it again.
fn probe_write_file(dir: &Path) -> io::Result<()> {
    let path = dir.join(probe_name());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let written = file
        .write_all(b"flowexporter check\n")
        .and_then(|()| file.sync_all());
    drop(file);
    let removed = fs::remove_file(&path);
    written.and(removed)
}

/// Creates a directory in `dir` and removes it again (works on the BPF filesystem).
fn probe_mkdir(dir: &Path) -> io::Result<()> {
    let path = dir.join(probe_name());
    fs::create_dir(&path)?;
    fs::remove_dir(&path)
}

fn pin_dir(dir: &Path, mounts: &Result<Vec<Mount>, String>) -> CheckOutcome {
    const NAME: &str = "pin dir";
    let d = dir.display();
    let mounts = match mounts {
        Ok(m) => m,
        Err(e) => return CheckOutcome::fail(NAME, e.clone()),
    };
    let (existing, meta) = match nearest_existing(dir) {
        Ok(x) => x,
        Err(e) => return CheckOutcome::fail(NAME, format!("{d}: {e}")),
    };
    if !meta.is_dir() {
        return CheckOutcome::fail(
            NAME,
            format!(
                "{d}: {} is not a directory: use another --pin-dir",
                existing.display()
            ),
        );
    }
    let canonical = fs::canonicalize(&existing).unwrap_or_else(|_| existing.clone());
    match fstype_of(mounts, &canonical) {
        Some("bpf") => {}
        other => {
            return CheckOutcome::fail(
                NAME,
                format!(
                    "{d} is not on a BPF filesystem ({} is on {}): mount -t bpf bpf {BPFFS}, or use a --pin-dir on one",
                    existing.display(),
                    other.unwrap_or("an unknown filesystem")
                ),
            );
        }
    }
    if let Err(e) = probe_mkdir(&existing) {
        return CheckOutcome::fail(
            NAME,
            format!(
                "{d}: cannot create entries in {} ({e}): {GRANT_ADVICE}, and give it write access there",
                existing.display()
            ),
        );
    }
    if existing != std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()) {
        return CheckOutcome::pass(
            NAME,
            format!("{d} does not exist yet; it will be created on the BPF filesystem"),
        );
    }
    let mut pinned = Vec::new();
    for spec in [identity_maps::IP_MAP, identity_maps::CONNECT_MAP] {
        match identity_maps::check_pinned(dir, &spec) {
            Ok(true) => pinned.push(spec.file),
            Ok(false) => {}
            Err(e) => return CheckOutcome::fail(NAME, error_chain(&e)),
        }
    }
    let state = if pinned.is_empty() {
        "no identity maps pinned yet (created on start)".to_string()
    } else {
        format!(
            "{} pinned with flowexporter's definition",
            pinned.join(" and ")
        )
    };
    CheckOutcome::pass(NAME, format!("{d}: writable, {state}"))
}

fn certificate(path: Option<&Path>, field: CertField) -> CheckOutcome {
    const NAME: &str = "certificate";
    let Some(path) = path else {
        return CheckOutcome::skip(
            NAME,
            "no --identity-cert given (records the identity maps do not attribute stay unattributed)",
        );
    };
    let field = match field {
        CertField::SanUri => IdentityField::SanUri,
        CertField::Cn => IdentityField::SubjectCn,
    };
    let (cert, load_error) = CertificateIdentity::load(path, field);
    match load_error
        .map(Err)
        .unwrap_or_else(|| cert.check(SystemTime::now()))
    {
        Ok(id) => CheckOutcome::pass(NAME, format!("{}: workload {id}", path.display())),
        Err(e) => CheckOutcome::fail(NAME, format!("{e}: {}", certificate_advice(&e))),
    }
}

fn certificate_advice(e: &IdentityError) -> &'static str {
    let IdentityError::Certificate { reason, .. } = e else {
        return "fix the certificate or --identity-cert";
    };
    match reason {
        UnattributedReason::CertificateMissing => {
            "put the host's certificate there, or fix --identity-cert"
        }
        UnattributedReason::CertificateUnreadable => {
            "make it readable by the user the exporter runs as"
        }
        UnattributedReason::CertificateMalformed => "it must be a PEM X.509 certificate",
        UnattributedReason::CertificateExpired => {
            "renew it (the running exporter picks up a replaced file)"
        }
        UnattributedReason::CertificateNotYetValid => "check the host's clock, or the certificate",
        UnattributedReason::CertificateHasNoIdentity => {
            "it has no field naming the workload: pick the other --identity-field (san-uri or cn)"
        }
        _ => "fix the certificate or --identity-cert",
    }
}

fn state_dir(dir: &Path, note: &str) -> CheckOutcome {
    const NAME: &str = "state dir";
    let d = dir.display();
    let (existing, meta) = match nearest_existing(dir) {
        Ok(x) => x,
        Err(e) => {
            return CheckOutcome::fail(
                NAME,
                format!("{d}{note}: {e}: use a directory the exporter's user can reach"),
            );
        }
    };
    if !meta.is_dir() {
        return CheckOutcome::fail(
            NAME,
            format!(
                "{d}{note}: {} is not a directory, so {d} cannot be created: use another directory or remove the file",
                existing.display()
            ),
        );
    }
    let exists = existing == std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match probe_write_file(&existing) {
        Ok(()) if exists => CheckOutcome::pass(
            NAME,
            format!("{d}{note}: writable (file created, synced, removed)"),
        ),
        Ok(()) => CheckOutcome::pass(
            NAME,
            format!(
                "{d}{note}: does not exist yet; {} is writable, so it can be created",
                existing.display()
            ),
        ),
        Err(e) => CheckOutcome::fail(
            NAME,
            format!(
                "{d}{note}: cannot write in {} ({e}): make it writable by the exporter's user (systemd: StateDirectory=flowexporter, ReadWritePaths=)",
                existing.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_uid_and_caps() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nCapEff:\t000001ffffffffff\n";
        assert_eq!(uid_and_caps(status), (Some(0), Some(0x1ff_ffff_ffff)));
    }

    #[test]
    fn finds_the_innermost_mount() {
        let mounts = vec![
            Mount {
                point: "/".into(),
                fstype: "ext4".into(),
            },
            Mount {
                point: "/sys".into(),
                fstype: "sysfs".into(),
            },
            Mount {
                point: "/sys/fs/bpf".into(),
                fstype: "bpf".into(),
            },
        ];
        assert_eq!(fstype_of(&mounts, Path::new("/sys/fs/bpf/x")), Some("bpf"));
        assert_eq!(fstype_of(&mounts, Path::new("/sys/fs/bpfx")), Some("sysfs"));
        assert_eq!(fstype_of(&mounts, Path::new("/tmp")), Some("ext4"));
        assert_eq!(unescape_mount_path("/a\\040b"), PathBuf::from("/a b"));
    }
}

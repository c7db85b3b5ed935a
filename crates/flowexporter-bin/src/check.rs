//! `flowexporter check`: probes this host and prints a table, one row per check, with
//! what to do about each failure. The exit status is 0 only when every required check
//! passes; warnings (things the exporter does not need) and skipped checks do not fail.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use flow_capture::{
    FlowCaptureBuilder, UnattributedReason, identity_maps,
    preflight::{self, Diagnostic, GRANT_ADVICE, Status},
};
use flow_identity::{CertificateIdentity, IdentityError, IdentityField};
use flow_sink::error_chain;

use crate::cli::{CertField, CheckArgs};

/// Where the BPF filesystem is expected.
const BPFFS: &str = "/sys/fs/bpf";
/// Where `run` keeps its state when not told otherwise.
const DEFAULT_STATE_DIRS: [&str; 2] = [
    "/var/lib/flowexporter/spool",
    "/var/lib/flowexporter/journal",
];

fn pass(name: &'static str, detail: impl Into<String>) -> Diagnostic {
    Diagnostic::new(name, Status::Pass, detail)
}
fn fail(name: &'static str, detail: impl Into<String>) -> Diagnostic {
    Diagnostic::new(name, Status::Fail, detail)
}
fn warn(name: &'static str, detail: impl Into<String>) -> Diagnostic {
    Diagnostic::new(name, Status::Warn, detail)
}
fn skip(name: &'static str, detail: impl Into<String>) -> Diagnostic {
    Diagnostic::new(name, Status::Skip, detail)
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

/// Every check, in the order printed: the capture core's own preflight probes
/// (kernel version, privileges, kernel BTF, tracepoint, ring buffer), then what only
/// `check` looks at.
fn run_checks(args: &CheckArgs) -> Vec<Diagnostic> {
    let mut out = preflight::diagnose();
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
    if let Some(kafka) = kafka_topic(&args.kafka) {
        out.push(kafka);
    }
    out.extend(crate::export_checks::diagnostics(&args.exports));
    out
}

/// With `--kafka-brokers`: the topic `run` would produce to, asked of the cluster
/// with the same settings (TLS, SASL) and the same check the Kafka sink makes at
/// start. A failure says whether no broker answered, the topic is missing or access
/// was refused.
fn kafka_topic(args: &crate::cli::KafkaArgs) -> Option<Diagnostic> {
    const NAME: &str = "kafka topic";
    let target = match args.target() {
        Ok(Some(target)) => target,
        Ok(None) => return None,
        Err(e) => return Some(fail(NAME, format!("{e:#}"))),
    };
    let settings = target
        .settings
        .with_property("allow.auto.create.topics", "false");
    let found = flow_sink::kafka_sink::check_topic(
        &settings,
        &target.topic,
        std::time::Duration::from_secs(10),
    );
    Some(match found {
        Ok(info) => pass(
            NAME,
            format!(
                "topic {:?} on {}: {} partition(s)",
                info.topic, settings.brokers, info.partitions
            ),
        ),
        Err(e) => fail(NAME, error_chain(&e)),
    })
}

/// Writes the table; multi-line details (a verifier log) follow it in full.
fn print_table(w: &mut impl Write, outcomes: &[Diagnostic]) -> io::Result<()> {
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

/// The honest probe: load and attach the capture core exactly as `run` does, then
/// detach it again.
fn program_load() -> Diagnostic {
    const NAME: &str = "program load";
    match FlowCaptureBuilder::new().load() {
        Ok(capture) => {
            drop(capture);
            pass(
                NAME,
                "the tracer loaded (verifier accepted it, ring buffer created), attached to inet_sock_set_state, and detached again",
            )
        }
        Err(e) => fail(NAME, error_chain(&e)),
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

/// The mount table. Read by hand on purpose: the `procfs` crate (0.18) undoes only
/// `\011`, `\012`, `\134` and `\043` in `/proc/mounts` (not `\040`, a space) and none
/// in `mountinfo`, and keeps paths as UTF-8 strings.
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

fn tracefs(mounts: &Result<Vec<Mount>, String>) -> Diagnostic {
    const NAME: &str = "tracefs";
    const NOTE: &str = "the exporter does not need it (BTF tracepoints attach without it)";
    let mounts = match mounts {
        Ok(m) => m,
        Err(e) => return warn(NAME, format!("{e}; {NOTE}")),
    };
    let found = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|p| mounted_at(mounts, Path::new(p)) == Some("tracefs"));
    match found {
        Some(p) => pass(NAME, format!("mounted at {p}; {NOTE}")),
        None => warn(
            NAME,
            format!(
                "not mounted: {NOTE}; for debugging with bpftool/perf: mount -t tracefs nodev /sys/kernel/tracing"
            ),
        ),
    }
}

fn bpffs(mounts: &Result<Vec<Mount>, String>) -> Diagnostic {
    const NAME: &str = "bpffs";
    let mounts = match mounts {
        Ok(m) => m,
        Err(e) => return fail(NAME, e.clone()),
    };
    match mounted_at(mounts, Path::new(BPFFS)) {
        Some("bpf") => pass(NAME, format!("mounted at {BPFFS}")),
        other => fail(
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

fn pin_dir(dir: &Path, mounts: &Result<Vec<Mount>, String>) -> Diagnostic {
    const NAME: &str = "pin dir";
    let d = dir.display();
    let mounts = match mounts {
        Ok(m) => m,
        Err(e) => return fail(NAME, e.clone()),
    };
    let (existing, meta) = match nearest_existing(dir) {
        Ok(x) => x,
        Err(e) => return fail(NAME, format!("{d}: {e}")),
    };
    if !meta.is_dir() {
        return fail(
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
            return fail(
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
        return fail(
            NAME,
            format!(
                "{d}: cannot create entries in {} ({e}): {GRANT_ADVICE}, and give it write access there",
                existing.display()
            ),
        );
    }
    if existing != std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()) {
        return pass(
            NAME,
            format!("{d} does not exist yet; it will be created on the BPF filesystem"),
        );
    }
    let mut pinned = Vec::new();
    for spec in [identity_maps::IP_MAP, identity_maps::CONNECT_MAP] {
        match identity_maps::check_pinned(dir, &spec) {
            Ok(true) => pinned.push(spec.file),
            Ok(false) => {}
            Err(e) => return fail(NAME, error_chain(&e)),
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
    pass(NAME, format!("{d}: writable, {state}"))
}

fn certificate(path: Option<&Path>, field: CertField) -> Diagnostic {
    const NAME: &str = "certificate";
    let Some(path) = path else {
        return skip(
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
        Ok(id) => pass(NAME, format!("{}: workload {id}", path.display())),
        Err(e) => fail(NAME, format!("{e}: {}", certificate_advice(&e))),
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

fn state_dir(dir: &Path, note: &str) -> Diagnostic {
    const NAME: &str = "state dir";
    let d = dir.display();
    let (existing, meta) = match nearest_existing(dir) {
        Ok(x) => x,
        Err(e) => {
            return fail(
                NAME,
                format!("{d}{note}: {e}: use a directory the exporter's user can reach"),
            );
        }
    };
    if !meta.is_dir() {
        return fail(
            NAME,
            format!(
                "{d}{note}: {} is not a directory, so {d} cannot be created: use another directory or remove the file",
                existing.display()
            ),
        );
    }
    let exists = existing == std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match probe_write_file(&existing) {
        Ok(()) if exists => pass(
            NAME,
            format!("{d}{note}: writable (file created, synced, removed)"),
        ),
        Ok(()) => pass(
            NAME,
            format!(
                "{d}{note}: does not exist yet; {} is writable, so it can be created",
                existing.display()
            ),
        ),
        Err(e) => fail(
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

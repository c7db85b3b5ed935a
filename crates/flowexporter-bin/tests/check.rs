//! The real `flowexporter check` binary on this host (as root): it passes and names
//! every check; a missing certificate, an unwritable state directory, a foreign map at
//! the pin path and a missing privilege each make it fail with what to do.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

const BIN: &str = env!("CARGO_BIN_EXE_flowexporter");

/// Every check `check` prints, in order.
const CHECKS: [&str; 11] = [
    "kernel version",
    "privileges",
    "kernel BTF",
    "tracepoint",
    "ring buffer",
    "program load",
    "tracefs",
    "bpffs",
    "pin dir",
    "certificate",
    "state dir",
];

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A scratch directory (removed on drop) and a pin directory on the BPF filesystem
/// that does not exist yet (removed on drop).
struct Scratch {
    tmp: PathBuf,
    pins: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        flow_testkit::mount_kernel_filesystems();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("fe-check-{}-{tag}-{n}", std::process::id());
        let tmp = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&tmp).expect("temp dir");
        Scratch {
            tmp,
            pins: Path::new("/sys/fs/bpf").join(name),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

fn check(bin: &Path, args: &[&str]) -> (Output, String) {
    let out = Command::new(bin)
        .arg("check")
        .args(args)
        .output()
        .expect("run flowexporter check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// The (result, detail) of every row named `name`.
fn rows(stdout: &[u8], name: &str) -> Vec<(String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !rest.starts_with("  ") {
                return None;
            }
            let rest = rest.trim_start();
            let (status, detail) = rest.split_once("  ")?;
            Some((status.to_string(), detail.trim_start().to_string()))
        })
        .collect()
}

fn row(stdout: &[u8], name: &str) -> (String, String) {
    rows(stdout, name)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{}", String::from_utf8_lossy(stdout)))
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn passes_on_this_host_and_names_every_check() {
    let s = Scratch::new("ok");
    let cert = s.tmp.join("host.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://prod.example/app/billing".try_into().expect("ia5"),
    )];
    let key = rcgen::KeyPair::generate().expect("key");
    std::fs::write(&cert, params.self_signed(&key).expect("sign").pem()).expect("write");
    let existing = s.tmp.join("spool");
    std::fs::create_dir_all(&existing).expect("spool dir");
    let not_yet = s.tmp.join("journal/sub");

    let (out, text) = check(
        Path::new(BIN),
        &[
            "--pin-dir",
            &path_arg(&s.pins),
            "--identity-cert",
            &path_arg(&cert),
            "--state-dir",
            &path_arg(&existing),
            "--state-dir",
            &path_arg(&not_yet),
        ],
    );
    println!("{text}");
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("CHECK"), "{stdout}");
    assert!(stdout.contains("DETAIL / WHAT TO DO"), "{stdout}");
    for name in CHECKS {
        let (status, detail) = row(&out.stdout, name);
        if name == "tracefs" {
            assert!(
                status == "pass" || status == "warn",
                "{name}: {status} {detail}"
            );
        } else {
            assert_eq!(status, "pass", "{name}: {detail}");
        }
    }
    assert_eq!(rows(&out.stdout, "state dir").len(), 2, "{stdout}");
    assert!(
        row(&out.stdout, "certificate")
            .1
            .contains("spiffe://prod.example/app/billing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("this host can run flowexporter"),
        "{stdout}"
    );
    // The probes left nothing behind.
    assert!(!s.pins.exists(), "the pin dir was created");
    assert!(!not_yet.exists(), "the state dir was created");
    assert_eq!(std::fs::read_dir(&existing).expect("ls").count(), 0);
}

#[test]
fn a_missing_certificate_fails_with_its_path() {
    let s = Scratch::new("cert");
    let missing = s.tmp.join("no-such-cert.pem");
    let (out, text) = check(
        Path::new(BIN),
        &[
            "--pin-dir",
            &path_arg(&s.pins),
            "--state-dir",
            &path_arg(&s.tmp),
            "--identity-cert",
            &path_arg(&missing),
        ],
    );
    assert!(!out.status.success(), "{text}");
    let (status, detail) = row(&out.stdout, "certificate");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.contains(&path_arg(&missing)), "{detail}");
    assert!(detail.contains("--identity-cert"), "{detail}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of 11 checks failed"),
        "{text}"
    );
}

#[test]
fn an_unwritable_state_dir_fails() {
    let s = Scratch::new("state");
    let file = s.tmp.join("a-file");
    std::fs::write(&file, b"x").expect("file");
    let under_file = file.join("spool");
    let (out, text) = check(
        Path::new(BIN),
        &[
            "--pin-dir",
            &path_arg(&s.pins),
            "--state-dir",
            &path_arg(&s.tmp),
            "--state-dir",
            &path_arg(&under_file),
        ],
    );
    assert!(!out.status.success(), "{text}");
    let dirs = rows(&out.stdout, "state dir");
    assert_eq!(dirs.len(), 2, "{text}");
    assert_eq!(dirs[0].0, "pass", "{text}");
    assert_eq!(dirs[1].0, "fail", "{text}");
    assert!(dirs[1].1.contains(&path_arg(&under_file)), "{text}");
    assert!(dirs[1].1.contains("not a directory"), "{text}");
}

#[test]
fn a_foreign_map_at_the_pin_path_fails() {
    let s = Scratch::new("foreign");
    std::fs::create_dir_all(&s.pins).expect("pin dir");
    let ip_map = s.pins.join("ip_map");
    flow_testkit::pin_foreign_map(&ip_map, 16, 8);
    let (out, text) = check(
        Path::new(BIN),
        &[
            "--pin-dir",
            &path_arg(&s.pins),
            "--state-dir",
            &path_arg(&s.tmp),
        ],
    );
    assert!(!out.status.success(), "{text}");
    let (status, detail) = row(&out.stdout, "pin dir");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.contains(&path_arg(&ip_map)), "{detail}");
    assert!(detail.contains("8-byte values"), "{detail}");
    assert!(detail.contains("rm "), "{detail}");
    // The foreign map is left as it was.
    assert!(ip_map.exists());
    // Everything else still passes.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of 11 checks failed"),
        "{text}"
    );
}

#[test]
fn without_privileges_it_fails_with_what_to_do() {
    let s = Scratch::new("unpriv");
    // A copy the unprivileged user can execute wherever the checkout lives.
    let bin_dir = s.tmp.join("bin");
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    let bin = bin_dir.join("flowexporter");
    std::fs::copy(BIN, &bin).expect("copy binary");
    let state = s.tmp.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    for p in [&s.tmp, &bin_dir, &bin] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    // setpriv drops to nobody with no capabilities at all.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .args([
            "check",
            "--pin-dir",
            &path_arg(&s.pins),
            "--state-dir",
            &path_arg(&state),
        ])
        .output()
        .expect("run setpriv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    let (status, detail) = row(&out.stdout, "privileges");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.contains("uid 65534"), "{detail}");
    assert!(detail.contains("run as root"), "{detail}");
    assert!(
        detail.contains("CAP_BPF") && detail.contains("CAP_PERFMON"),
        "{detail}"
    );
    let (status, detail) = row(&out.stdout, "program load");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.contains("missing privileges"), "{detail}");
    // What does not need privileges still passes.
    for name in ["kernel version", "kernel BTF", "tracepoint", "state dir"] {
        assert_eq!(row(&out.stdout, name).0, "pass", "{name}: {text}");
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checks failed"),
        "{text}"
    );
}

#[test]
fn the_exports_are_probed_an_otlp_endpoint_and_an_ipfix_collector() {
    let s = Scratch::new("exports");
    let pins = path_arg(&s.pins);
    let port = flow_testkit::free_port();
    let receiver = flow_testkit::otlp::Receiver::start(port, &s.tmp.join("otlp.jsonl"), "");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr").port();
    let closed = flow_testkit::free_port();
    let otlp = format!("http://127.0.0.1:{port}");
    let tcp = format!("tcp://127.0.0.1:{open}");
    let (out, text) = check(
        Path::new(BIN),
        &[
            "--pin-dir",
            &pins,
            "--otlp-endpoint",
            &otlp,
            "--otlp-header",
            "x-probe=1",
            "--ipfix-collector",
            &tcp,
        ],
    );
    assert!(out.status.success(), "{text}");
    let (status, detail) = row(&out.stdout, "otlp endpoint");
    assert_eq!(status, "pass", "{text}");
    assert!(detail.contains(&format!("{otlp}/v1/logs")), "{text}");
    // The receiver decoded the probe: an empty request, with the header.
    let probes = receiver.requests();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(probes[0]["headers"]["x-probe"], "1");
    assert_eq!(flow_testkit::otlp::log_records(&probes[0]).len(), 0);
    assert_eq!(row(&out.stdout, "ipfix collector").0, "pass", "{text}");
    drop(receiver);

    // Nothing listens: both warn (run spools meanwhile), saying where; check passes.
    let otlp = format!("http://127.0.0.1:{closed}");
    let tcp = format!("tcp://127.0.0.1:{closed}");
    let (out, text) = check(
        Path::new(BIN),
        &[
            "--pin-dir",
            &pins,
            "--otlp-endpoint",
            &otlp,
            "--ipfix-collector",
            &tcp,
        ],
    );
    assert!(out.status.success(), "{text}");
    let (status, detail) = row(&out.stdout, "otlp endpoint");
    assert_eq!(status, "warn", "{text}");
    assert!(detail.contains("no answer"), "{text}");
    let (status, detail) = row(&out.stdout, "ipfix collector");
    assert_eq!(status, "warn", "{text}");
    assert!(detail.contains(&format!("127.0.0.1:{closed}")), "{text}");
    // UDP cannot be probed: the name resolves, and the row says what it cannot know.
    let udp = format!("udp://127.0.0.1:{closed}");
    let (out, text) = check(
        Path::new(BIN),
        &["--pin-dir", &pins, "--ipfix-collector", &udp],
    );
    let (status, detail) = row(&out.stdout, "ipfix collector");
    assert_eq!(status, "pass", "{text}");
    assert!(detail.contains("over UDP nothing answers"), "{text}");
    // A malformed setting fails, and a header's value is never shown.
    let (out, text) = check(
        Path::new(BIN),
        &[
            "--pin-dir",
            &pins,
            "--otlp-endpoint",
            &otlp,
            "--otlp-header",
            "Bearer s3cret",
        ],
    );
    assert!(!out.status.success(), "{text}");
    assert_eq!(row(&out.stdout, "exports").0, "fail", "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    // The variable's list: its second item is named by position, never its value.
    let out = Command::new(BIN)
        .args(["check", "--pin-dir", &pins, "--otlp-endpoint", &otlp])
        .env("FLOWEXPORTER_OTLP_HEADERS", "x-a=1,Bearer%20s3cret")
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, detail) = row(&out.stdout, "exports");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.contains("header 2"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    // --help never shows the variable's value.
    let help = Command::new(BIN)
        .args(["run", "--help"])
        .env("FLOWEXPORTER_OTLP_HEADERS", "authorization=Bearer s3cret")
        .output()
        .expect("run --help");
    assert!(!String::from_utf8_lossy(&help.stdout).contains("s3cret"));
}

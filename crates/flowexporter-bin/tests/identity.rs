//! `flowexporter identity` and `tail` with identity, as a user runs them: map an IP,
//! see the workload in `tail --json`; a certificate for the rest.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_flowexporter");

struct PinDir(PathBuf);

impl PinDir {
    fn new(tag: &str) -> PinDir {
        flow_testkit::mount_kernel_filesystems();
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/fe-cli-{}-{tag}",
            std::process::id()
        )))
    }
    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn flowexporter(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run flowexporter")
}

/// Starts `tail --json` with `args`; returns the child and its JSON lines.
fn start_tail(args: &[&str]) -> (Child, mpsc::Receiver<serde_json::Value>) {
    let mut child = Command::new(BIN)
        .arg("tail")
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tail");
    let stderr = child.stderr.take().expect("stderr");
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("tail: {line}");
            if line.contains("tracing TCP closes") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("tail attached");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line).expect("JSON line");
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// One connection from `from` (bound first) to a fresh listener on 127.0.0.1; returns
/// the server port.
fn one_connection(from: &str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: std::net::SocketAddr = format!("{from}:0").parse().expect("addr");
    s.bind(&local.into()).expect("bind client");
    s.connect(&listener.local_addr().expect("addr").into())
        .expect("connect");
    let mut client: TcpStream = s.into();
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"hi").expect("write");
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).expect("read");
    port
}

fn records_for(
    rx: &mpsc::Receiver<serde_json::Value>,
    port: u16,
    n: usize,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200))
            && (v["local_port"] == port || v["remote_port"] == port)
            && v["record_kind"] != "interim"
        {
            out.push(v);
        }
    }
    assert_eq!(out.len(), n, "{out:#?}");
    out
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().expect("wait").success());
}

#[test]
fn map_an_ip_with_the_cli_and_see_it_in_tail() {
    let pins = PinDir::new("ip");
    let ok = flowexporter(&[
        "identity",
        "ip",
        "set",
        "127.0.0.66",
        "billing",
        "--pin-dir",
        &pins.arg(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ls = flowexporter(&["identity", "ip", "ls", "--pin-dir", &pins.arg()]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "127.0.0.66\tbilling\n");

    let (child, rx) = start_tail(&["--pin-dir", &pins.arg()]);
    let port = one_connection("127.0.0.66");
    let records = records_for(&rx, port, 2);
    let client = records
        .iter()
        .find(|v| v["local_ip"] == "127.0.0.66")
        .expect("client record");
    assert_eq!(client["local_workload_id"], "billing");
    assert_eq!(client["identity_source"], "ip_map");
    assert!(client["unattributed_reason"].is_null());
    let server = records
        .iter()
        .find(|v| v["local_ip"] == "127.0.0.1")
        .expect("server record");
    assert!(server["local_workload_id"].is_null());
    assert_eq!(server["identity_source"], "none");
    assert_eq!(server["unattributed_reason"], "no_match");
    stop(child);

    let rm = flowexporter(&[
        "identity",
        "ip",
        "rm",
        "127.0.0.66",
        "--pin-dir",
        &pins.arg(),
    ]);
    assert!(rm.status.success());
    let ls = flowexporter(&["identity", "ip", "ls", "--pin-dir", &pins.arg()]);
    assert!(ls.stdout.is_empty());
}

#[test]
fn connect_map_cli_round_trip() {
    let pins = PinDir::new("connect");
    let ok = flowexporter(&[
        "identity",
        "connect",
        "set",
        "10.1.2.3",
        "40001",
        "billing",
        "--pin-dir",
        &pins.arg(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ls = flowexporter(&["identity", "connect", "ls", "--pin-dir", &pins.arg()]);
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout),
        "10.1.2.3\t40001\tbilling\n"
    );
    let v6 = flowexporter(&[
        "identity",
        "connect",
        "set",
        "2001:db8::1",
        "1",
        "x",
        "--pin-dir",
        &pins.arg(),
    ]);
    assert!(!v6.status.success());
    assert!(String::from_utf8_lossy(&v6.stderr).contains("IPv4"));
    let rm = flowexporter(&[
        "identity",
        "connect",
        "rm",
        "10.1.2.3",
        "40001",
        "--pin-dir",
        &pins.arg(),
    ]);
    assert!(rm.status.success());
}

#[test]
fn over_long_and_empty_ids_are_refused_at_write_time() {
    let pins = PinDir::new("bad");
    let long = "x".repeat(65);
    for bad in [long.as_str(), ""] {
        let out = flowexporter(&[
            "identity",
            "ip",
            "set",
            "10.0.0.1",
            bad,
            "--pin-dir",
            &pins.arg(),
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid workload ID"), "{err}");
    }
    let ls = flowexporter(&["identity", "ip", "ls", "--pin-dir", &pins.arg()]);
    assert!(ls.stdout.is_empty(), "nothing was written");
}

#[test]
fn certificate_identity_in_tail() {
    let pins = PinDir::new("cert");
    let dir = std::env::temp_dir().join(format!("fe-cli-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cert = dir.join("host.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://prod.example/app/billing".try_into().expect("ia5"),
    )];
    let key = rcgen::KeyPair::generate().expect("key");
    std::fs::write(&cert, params.self_signed(&key).expect("sign").pem()).expect("write");

    let (child, rx) = start_tail(&[
        "--pin-dir",
        &pins.arg(),
        "--identity-cert",
        &cert.display().to_string(),
    ]);
    let port = one_connection("127.0.0.1");
    for r in records_for(&rx, port, 2) {
        assert_eq!(r["local_workload_id"], "spiffe://prod.example/app/billing");
        assert_eq!(r["identity_source"], "certificate");
    }
    stop(child);
}

/// Writes `bytes` (NUL-padded to 64) under `key` into the map pinned at `pin`, as
/// another tool might: straight through the `bpf()` system call, no validation.
fn write_raw_value(pin: &std::path::Path, key: &[u8], bytes: &[u8]) {
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_OBJ_GET: libc::c_long = 7;
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes()).expect("path");
    // `union bpf_attr`, as 8-byte words; the kernel wants the unused tail zeroed.
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    let size = std::mem::size_of_val(&attr) as libc::c_long;
    // SAFETY: `attr` is a valid bpf_attr for BPF_OBJ_GET of `size` bytes; `path` lives.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_mut_ptr(), size) };
    assert!(fd >= 0, "BPF_OBJ_GET {}", std::io::Error::last_os_error());
    let mut value = [0u8; 64];
    value[..bytes.len()].copy_from_slice(bytes);
    let mut attr = [0u64; 16];
    attr[0] = fd as u64; // map_fd (u32), then padding
    attr[1] = key.as_ptr() as u64;
    attr[2] = value.as_ptr() as u64;
    attr[3] = 0; // BPF_ANY
    // SAFETY: a valid bpf_attr for BPF_MAP_UPDATE_ELEM; `key` and `value` live and
    // have the map's key and value sizes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_ELEM, attr.as_mut_ptr(), size) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor BPF_OBJ_GET returned.
    unsafe { libc::close(fd as i32) };
    assert_eq!(rc, 0, "BPF_MAP_UPDATE_ELEM {err}");
}

/// The IP map's key of an IPv4 address (IPv4-mapped IPv6).
fn ip_key(ip: [u8; 4]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[10] = 0xff;
    k[11] = 0xff;
    k[12..].copy_from_slice(&ip);
    k
}

#[test]
fn control_characters_are_refused_at_write_time() {
    let pins = PinDir::new("ctl");
    for (bad, at) in [
        ("ab\u{1b}cd", 2),
        ("line\nbreak", 4),
        ("del\u{7f}", 3),
        ("c1\u{9b}31m", 2),
    ] {
        for args in [
            ["identity", "ip", "set", "10.0.0.1", bad].as_slice(),
            ["identity", "connect", "set", "10.0.0.1", "4000", bad].as_slice(),
        ] {
            let mut args = args.to_vec();
            let pin = pins.arg();
            args.extend(["--pin-dir", &pin]);
            let out = flowexporter(&args);
            assert!(!out.status.success(), "{bad:?} was accepted");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("invalid workload ID")
                    && err.contains("control character")
                    && err.contains(&format!("at byte {at}")),
                "{err}"
            );
            assert!(!err.contains(bad), "the ID was echoed raw: {err:?}");
        }
    }
    for kind in ["ip", "connect"] {
        let ls = flowexporter(&["identity", kind, "ls", "--pin-dir", &pins.arg()]);
        assert!(ls.status.success());
        assert!(ls.stdout.is_empty(), "nothing was written");
    }
}

#[test]
fn invalid_values_written_by_another_tool_are_listed_escaped() {
    let pins = PinDir::new("raw");
    // `ls` creates the maps when they are not there yet.
    let ls = flowexporter(&["identity", "ip", "ls", "--pin-dir", &pins.arg()]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let ip_map = pins.0.join("ip_map");
    write_raw_value(&ip_map, &ip_key([10, 0, 0, 7]), b"ab\x1b[2Jcd");
    write_raw_value(&ip_map, &ip_key([10, 0, 0, 8]), b"ab\0cd");
    write_raw_value(&ip_map, &ip_key([10, 0, 0, 9]), "x\u{85}\n".as_bytes());
    write_raw_value(&ip_map, &ip_key([10, 0, 0, 10]), b"fine");
    let ls = flowexporter(&["identity", "ip", "ls", "--pin-dir", &pins.arg()]);
    assert!(ls.status.success());
    assert!(
        !ls.stdout
            .iter()
            .any(|&b| b < 0x20 && b != b'\t' && b != b'\n' || b == 0x7f),
        "raw control bytes in {:?}",
        String::from_utf8_lossy(&ls.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout),
        "10.0.0.7\t(invalid value \"ab\\u{1b}[2Jcd\": it contains the control character U+001B at byte 2)\n\
         10.0.0.8\t(invalid value \"ab\\0cd\": it contains a NUL byte at byte 2)\n\
         10.0.0.9\t(invalid value \"x\\u{85}\\n\": it contains the control character U+0085 at byte 1)\n\
         10.0.0.10\tfine\n"
    );

    let mut key = [0u8; 8];
    key[..4].copy_from_slice(&[10, 1, 2, 3]);
    key[4..6].copy_from_slice(&40001u16.to_ne_bytes());
    write_raw_value(&pins.0.join("connect_map"), &key, b"a\x07b");
    let ls = flowexporter(&["identity", "connect", "ls", "--pin-dir", &pins.arg()]);
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout),
        "10.1.2.3\t40001\t(invalid value \"a\\u{7}b\": it contains the control character U+0007 at byte 1)\n"
    );
}

#[test]
fn a_map_value_with_an_escape_is_attributed_as_invalid_in_tail() {
    let pins = PinDir::new("esc");
    let ls = flowexporter(&["identity", "ip", "ls", "--pin-dir", &pins.arg()]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    write_raw_value(
        &pins.0.join("ip_map"),
        &ip_key([127, 0, 0, 67]),
        b"ab\x1bcd",
    );
    write_raw_value(&pins.0.join("ip_map"), &ip_key([127, 0, 0, 68]), b"ab\0cd");
    let (child, rx) = start_tail(&["--pin-dir", &pins.arg()]);
    for from in ["127.0.0.67", "127.0.0.68"] {
        let port = one_connection(from);
        let records = records_for(&rx, port, 2);
        let client = records
            .iter()
            .find(|v| v["local_ip"] == from)
            .expect("client record");
        assert!(client["local_workload_id"].is_null(), "{client}");
        assert_eq!(client["identity_source"], "none");
        assert_eq!(client["unattributed_reason"], "invalid_map_value");
    }
    stop(child);
}

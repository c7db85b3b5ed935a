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

//! The real `flowexporter tail` binary: JSON lines for real connections, a clean
//! drain on SIGTERM, and a clear error without privileges.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime},
};

const BIN: &str = env!("CARGO_BIN_EXE_flowexporter");

fn parse_time(v: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("time string")).expect("RFC 3339")
}

#[test]
fn tail_json_prints_each_record_and_drains_on_sigterm() {
    // Returns once the tracer is attached (it says so on stderr).
    let (mut child, lines) = start_tail(&["--json"]);

    let before = SystemTime::now();
    let listener = TcpListener::bind("[::1]:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(&[1u8; 4_321]).expect("write");
    let mut buf = vec![0u8; 4_321];
    server.read_exact(&mut buf).expect("read");
    let client_port = client.local_addr().expect("local").port();
    drop(client);
    drop(server);

    // Records are printed as they are captured, before any signal.
    let mut mine = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mine.len() < 2 && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value =
                serde_json::from_str(&line).expect("one JSON object per line");
            if v["local_port"] == port || v["remote_port"] == port {
                mine.push(v);
            }
        }
    }
    assert_eq!(mine.len(), 2, "{mine:#?}");
    let after = SystemTime::now();
    let client_rec = mine
        .iter()
        .find(|v| v["local_port"] == client_port)
        .expect("client record");
    assert_eq!(client_rec["local_ip"], "::1");
    assert_eq!(client_rec["remote_ip"], "::1");
    assert_eq!(client_rec["remote_port"], port);
    assert_eq!(client_rec["direction"], "outbound");
    assert_eq!(client_rec["bytes_sent"], 4_321);
    assert_eq!(client_rec["bytes_received"], 0);
    assert_eq!(client_rec["close_reason"], "normal");
    assert_eq!(client_rec["close_state"], "FIN_WAIT2");
    assert!(client_rec["local_workload_id"].is_null());
    assert_eq!(client_rec["identity_source"], "none");
    for key in ["segs_in", "segs_out", "retransmits", "srtt_us"] {
        assert!(client_rec[key].is_u64(), "{key}: {client_rec}");
    }
    let (start, end) = (
        parse_time(&client_rec["t_start"]),
        parse_time(&client_rec["t_end"]),
    );
    assert!(before <= start && start <= end && end <= after);

    // SIGTERM: the exporter detaches, drains and exits 0.
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn without_privileges_the_error_says_what_to_do() {
    // A copy the unprivileged user can execute wherever the checkout lives.
    let dir = std::env::temp_dir().join(format!("flowexporter-unpriv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bin = dir.join("flowexporter");
    std::fs::copy(BIN, &bin).expect("copy binary");
    for p in [&dir, &bin] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    // setpriv drops to nobody with no capabilities at all.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .arg("tail")
        .output()
        .expect("run setpriv");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing privileges"), "{stderr}");
    assert!(stderr.contains("CAP_BPF"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `tail` with `args`; returns it and its stdout lines once it has attached.
fn start_tail(args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg("tail")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flowexporter");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("tracing TCP closes") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("tracer attached");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The JSON lines about `port` printed within `wait`.
fn lines_about(
    lines: &mpsc::Receiver<String>,
    port: u16,
    wait: Duration,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + wait;
    let mut mine = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
            if v["local_port"] == port || v["remote_port"] == port {
                mine.push(v);
            }
        }
    }
    mine
}

#[test]
fn tail_prints_interim_records_only_when_asked() {
    for (args, want_interim) in [
        (&["--json", "--window", "1s"][..], false),
        (&["--json", "--interim", "--window", "1s"][..], true),
    ] {
        let (child, lines) = start_tail(args);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(&[1u8; 100]).expect("write");
        let mut buf = [0u8; 100];
        server.read_exact(&mut buf).expect("read");
        // Open across at least two 1 s windows.
        let open = lines_about(&lines, port, Duration::from_millis(2_500));
        drop(client);
        drop(server);
        let closed = lines_about(&lines, port, Duration::from_secs(2));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let mut child = child;
        assert!(child.wait().expect("exit").success());

        let interim: Vec<_> = open
            .iter()
            .chain(closed.iter())
            .filter(|v| v["record_kind"] == "interim")
            .collect();
        let finals: Vec<_> = closed
            .iter()
            .filter(|v| v["record_kind"] == "final")
            .collect();
        assert_eq!(finals.len(), 2, "{args:?}: {closed:#?}");
        match want_interim {
            false => assert!(interim.is_empty(), "{args:?}: {interim:#?}"),
            true => {
                assert!(interim.len() >= 2, "both ends, every window: {open:#?}");
                for v in &interim {
                    assert!(v["close_reason"].is_null());
                    let id = &v["flow_id"];
                    assert!(
                        finals.iter().any(|f| &f["flow_id"] == id),
                        "the final record shares the flow ID: {v:#}"
                    );
                }
            }
        }
    }
}

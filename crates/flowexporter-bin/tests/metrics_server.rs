//! The metrics endpoint of `flowexporter run` against hostile clients, with the real
//! binary under a real RLIMIT_NOFILE: a flood of idle connections must not take the
//! file descriptors the spool and journal need, and the endpoint answers only what it
//! serves.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use flow_collector::FaultInjection;

/// Starts the exporter sending to the collector at `collector_port` with 2 s windows,
/// its metrics at `metrics_addr`, and its RLIMIT_NOFILE set to `nofile` (soft and
/// hard) before it runs.
fn start_limited(
    collector_port: u16,
    scratch: &Scratch,
    metrics_addr: &str,
    nofile: u64,
) -> (Child, Logs) {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        "--collector",
        &format!("http://127.0.0.1:{collector_port}"),
        "--window",
        "2s",
        "--retry-max-backoff",
        "1s",
        "--host-id",
        "test-host",
        "--metrics-addr",
        metrics_addr,
    ])
    .arg("--spool-dir")
    .arg(scratch.path("spool"))
    .arg("--journal-dir")
    .arg(scratch.path("journal"))
    .arg("--pin-dir")
    .arg(scratch.pins())
    .stdout(Stdio::null());
    let limit = libc::rlimit {
        rlim_cur: nofile,
        rlim_max: nofile,
    };
    // SAFETY: setrlimit is async-signal-safe and `limit` is a valid rlimit; nothing
    // else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    spawn_logged(cmd)
}

/// True once the peer closed `s` (end of stream or reset) within `within`.
fn closed_within(mut s: &TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// Sends `request` on a fresh connection; the whole answer.
fn exchange(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("answer");
    text
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn idle_connection_flood_under_a_128_file_limit_leaves_the_exporter_running() {
    let scratch = Scratch::new("metrics-flood");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let (mut exporter, _logs) = start_limited(collector_port, &scratch, &metrics_addr, 128);
    let baseline = open_files(exporter.id());
    eprintln!("exporter has {baseline} files open");

    // 200 connections that never send a byte.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&metrics_addr).expect("connect"))
        .collect();
    let started = Instant::now();
    // Those over the cap (64) are closed at once: as soon as the server accepts them,
    // which on a loaded machine may take a moment, but far less than the 5 s header
    // timeout that closes the others.
    let mut closed_at_once = 0;
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        closed_at_once = idle
            .iter()
            .filter(|s| closed_within(s, Duration::from_millis(1)))
            .count();
        if closed_at_once >= 200 - 64 {
            break;
        }
    }
    assert!(
        closed_at_once >= 200 - 64,
        "only {closed_at_once} of 200 closed within 3 s"
    );
    // 64 connections at most, plus slack for the exporter's own files opened since
    // the baseline (a collector connection, a journal rotation).
    assert!(open_files(exporter.id()) <= baseline + 64 + 16);

    // The exporter keeps capturing, spooling and delivering meanwhile.
    // (Each loopback connection closes two sockets: two records.)
    let port = connections(50);
    let seen = wait_for(&out, port, 100, Duration::from_secs(30));
    assert_exactly_once(&seen, 100);
    assert!(
        exporter.try_wait().expect("status").is_none(),
        "the exporter exited"
    );

    // Past the header timeout (5 s) every idle connection is gone ...
    for (i, s) in idle.iter().enumerate() {
        let left = Duration::from_secs(12).saturating_sub(started.elapsed());
        assert!(
            closed_within(s, left.max(Duration::from_millis(20))),
            "idle connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    // ... and a fresh GET is answered, with the endpoint's own counters.
    let text = scrape(&metrics_addr);
    let refused = metric(
        &text,
        r#"flowexporter_metrics_connections_total{result="refused_over_cap"}"#,
    );
    assert!(refused >= (200 - 64) as u64, "{text}");
    let timed_out = metric(&text, "flowexporter_metrics_connections_timed_out_total");
    assert!(timed_out >= 1, "{text}");
    assert!(
        exporter.try_wait().expect("status").is_none(),
        "the exporter exited"
    );
    stop(exporter);
    rt.block_on(collector.shutdown());
}

#[test]
fn metrics_answers_get_and_head_and_refuses_other_methods_with_405() {
    let scratch = Scratch::new("metrics-methods");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let (exporter, _logs) = start_limited(collector_port, &scratch, &metrics_addr, 4096);

    let get = exchange(
        &metrics_addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    assert!(get.contains("flowexporter_records_captured_total"), "{get}");

    let head = exchange(
        &metrics_addr,
        "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.contains("flowexporter_records_captured_total"),
        "{head}"
    );

    for method in ["POST", "PUT", "DELETE"] {
        let answer = exchange(
            &metrics_addr,
            &format!(
                "{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 405"), "{method}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nallow: get, head\r\n"),
            "{method}: {answer}"
        );
    }

    let missing = exchange(
        &metrics_addr,
        "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    stop(exporter);
    rt.block_on(collector.shutdown());
}

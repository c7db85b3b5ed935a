//! SIGTERM with the collector down: the exporter must exit promptly (once chunks are
//! spooled, stopping needs no network), well inside the systemd unit's
//! `TimeoutStopSec=60`, and lose nothing: after a restart with a working collector,
//! every record arrives exactly once.

mod common;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::Child,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use flow_collector::FaultInjection;

/// What the test allows a stop to take (the exporter's own bound is 5 s of flushing).
const STOP_BOUND: Duration = Duration::from_secs(10);

/// A "collector" that accepts connections and never answers.
struct BlackHole {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&accepted);
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                count.fetch_add(1, Ordering::SeqCst);
                held.push(conn);
            }
        });
        BlackHole { addr, accepted }
    }
}

/// SIGTERM; waits for the exit, which must be a success; returns how long it took.
fn stop_timed(mut child: Child) -> Duration {
    let started = Instant::now();
    signal(&child, libc::SIGTERM);
    let status = child.wait().expect("wait");
    let took = started.elapsed();
    assert!(status.success(), "exporter exit status {status}");
    took
}

/// Runs the exporter against `url` (a collector that is down), stops it with SIGTERM
/// once chunks are spooled and a request was tried, and checks the stop's duration;
/// then restarts it with a working collector and checks that every record arrives
/// exactly once.
fn stop_with_collector_down_then_restart(tag: &str, url: &str, tried: impl Fn() -> bool) {
    let scratch = Scratch::new(tag);
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let (exporter, _logs) = start_exporter_at(url, &scratch, "1s", &[]);
    let first = connections(40);
    // Windows close, chunks are spooled, the sender tries the collector.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tried() {
        assert!(
            Instant::now() < deadline,
            "the exporter never tried the collector"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = connections(20); // in the open window at the stop
    std::thread::sleep(Duration::from_millis(1500));
    let took = stop_timed(exporter);
    eprintln!("{tag}: the stop took {took:?}");
    assert!(took < STOP_BOUND, "the stop took {took:?}");
    assert!(
        std::fs::read_dir(scratch.path("spool"))
            .expect("spool dir")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".chunk")),
        "the chunks stay spooled"
    );

    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let exporter = start_exporter(collector_port, &scratch, "1s");
    let third = connections(10);
    assert_exactly_once(&wait_for(&out, first, 80, Duration::from_secs(30)), 80);
    assert_exactly_once(&wait_for(&out, second, 40, Duration::from_secs(30)), 40);
    assert_exactly_once(&wait_for(&out, third, 20, Duration::from_secs(30)), 20);
    stop(exporter);
    assert_exactly_once(&records_for(&out, first), 80);
    assert_exactly_once(&records_for(&out, second), 40);
    assert_exactly_once(&records_for(&out, third), 20);
    rt.block_on(collector.shutdown());
}

#[test]
fn sigterm_with_a_collector_that_never_answers_exits_promptly_and_loses_nothing() {
    let hole = BlackHole::start();
    let accepted = Arc::clone(&hole.accepted);
    stop_with_collector_down_then_restart("stop-hung", &format!("http://{}", hole.addr), || {
        accepted.load(Ordering::SeqCst) >= 1
    });
}

#[test]
fn sigterm_with_nothing_listening_exits_promptly_and_loses_nothing() {
    let port = free_port();
    // Nothing tells when a refused attempt happened: give the first window time to
    // close and be tried.
    let started = Instant::now();
    stop_with_collector_down_then_restart(
        "stop-refused",
        &format!("http://127.0.0.1:{port}"),
        || started.elapsed() > Duration::from_secs(3),
    );
}

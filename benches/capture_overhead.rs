//! Capture overhead, side by side in one run: loopback TCP connections per second
//! without the tracer (A) and with it attached and drained (B), alternating A/B rounds,
//! plus the kernel program's mean run time per invocation and per closed socket
//! (BPF run-time statistics), and records lost.
//!
//! Run as root: `cargo bench --bench capture_overhead`
//! Knobs (environment): `FLOW_BENCH_CONNECTIONS` per round (default 20000),
//! `FLOW_BENCH_ROUNDS` A/B pairs (default 3).

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use aya::sys::{Stats, enable_stats};
use flowexporter::capture::{FlowCaptureBuilder, FlowRecord};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Opens and closes `n` loopback connections as fast as one client and one server
/// thread can; returns connections per second.
fn churn(n: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let mut buf = [0u8; 1];
        for _ in 0..n {
            let (mut s, _) = listener.accept().expect("accept");
            // Wait for the client's FIN, then close: a full, orderly close.
            let _ = s.read(&mut buf);
        }
    });
    let start = Instant::now();
    for _ in 0..n {
        let c = TcpStream::connect(addr).expect("connect");
        drop(c);
    }
    server.join().expect("server");
    n as f64 / start.elapsed().as_secs_f64()
}

struct Round {
    a_cps: f64,
    b_cps: f64,
    records: u64,
    runs: u64,
    run_ns: u128,
    lost: u64,
    missed: u64,
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n = env_or("FLOW_BENCH_CONNECTIONS", 20_000);
    let rounds = env_or("FLOW_BENCH_ROUNDS", 3);
    let _stats = enable_stats(Stats::RunTime).expect("enable BPF run-time statistics (root)");
    churn(2_000); // warm up the stack and the allocator
    let mut results = Vec::new();
    for round in 1..=rounds {
        let a_cps = churn(n);

        let mut capture = FlowCaptureBuilder::new().load().expect("load capture");
        let mut reader = capture.take_reader().expect("reader");
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(AtomicU64::new(0));
        let drain = {
            let (stop, records) = (stop.clone(), records.clone());
            thread::spawn(move || {
                let mut sink: Vec<FlowRecord> = Vec::with_capacity(4096);
                loop {
                    let done = stop.load(Ordering::Acquire);
                    let _ = reader.wait(reader.poll_interval());
                    let got = reader.read_available(|r| sink.push(r));
                    records.fetch_add(got as u64, Ordering::Relaxed);
                    sink.clear();
                    if done {
                        break;
                    }
                }
            })
        };
        let before = capture.program_stats().expect("stats");
        let b_cps = churn(n);
        let after = capture.program_stats().expect("stats");
        let counters = capture.counters().expect("counters");
        thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Release);
        drain.join().expect("drain");
        let r = Round {
            a_cps,
            b_cps,
            records: records.load(Ordering::Relaxed),
            runs: after.run_count - before.run_count,
            run_ns: (after.run_time - before.run_time).as_nanos(),
            lost: counters.lost(),
            missed: after.recursion_misses - before.recursion_misses,
        };
        eprintln!(
            "round {round}: A {:.0}/s  B {:.0}/s  ratio {:.3}  {:.0} ns/invocation  {} records  {} lost  {} missed",
            r.a_cps,
            r.b_cps,
            r.b_cps / r.a_cps,
            r.run_ns as f64 / r.runs.max(1) as f64,
            r.records,
            r.lost,
            r.missed
        );
        results.push(r);
        drop(capture);
    }
    report(n, &results);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(n: usize, rounds: &[Round]) {
    println!(
        "| round | A: no capture (conn/s) | B: capture (conn/s) | B/A | BPF ns/invocation | invocations/socket | BPF ns/closed socket | records | lost (ring full) | missed (recursion) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (i, r) in rounds.iter().enumerate() {
        let per_inv = r.run_ns as f64 / r.runs.max(1) as f64;
        let sockets = r.records.max(1) as f64;
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.0} | {:.1} | {:.0} | {} | {} | {} |",
            i + 1,
            r.a_cps,
            r.b_cps,
            r.b_cps / r.a_cps,
            per_inv,
            r.runs as f64 / sockets,
            r.run_ns as f64 / sockets,
            r.records,
            r.lost,
            r.missed
        );
    }
    let ratio = median(rounds.iter().map(|r| r.b_cps / r.a_cps).collect());
    let per_inv = median(
        rounds
            .iter()
            .map(|r| r.run_ns as f64 / r.runs.max(1) as f64)
            .collect(),
    );
    println!(
        "\nmedian over {} rounds of {n} connections: B/A = {ratio:.3}, {per_inv:.0} ns per invocation; lost {}, missed {}",
        rounds.len(),
        rounds.iter().map(|r| r.lost).sum::<u64>(),
        rounds.iter().map(|r| r.missed).sum::<u64>()
    );
}

//! Capture overhead, side by side in one run: loopback TCP connections per second
//! without the tracer (A) and with it attached and drained (B), alternating A/B rounds,
//! plus the kernel program's mean run time per invocation and per closed socket
//! (BPF run-time statistics), and records lost.
//!
//! The identity maps are pinned and populated (the loopback client's address is in
//! the IP map among 1,000 others, and 1,000 connect-map entries), so every socket pays
//! for its identity lookups as on a container host.
//!
//! Run as root: `cargo bench --bench capture_overhead`
//! Knobs (environment): `FLOW_BENCH_CONNECTIONS` per round (default 20000),
//! `FLOW_BENCH_ROUNDS` A/B pairs (default 3).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use aya::sys::{Stats, enable_stats};
use flowexporter::{
    capture::{FlowCaptureBuilder, FlowRecord, WorkloadId},
    identity::IdentityMaps,
};
use flowexporter_loadgen::churn::{self, ChurnConfig, Family};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Opens and closes `n` loopback connections as fast as the load generator can (one
/// client thread, one server thread, the server closing first); returns connections
/// per second.
fn churn(n: usize) -> f64 {
    let config = ChurnConfig {
        connections: n,
        rate: None,
        family: Family::V4,
        payload: 0,
        across_netns: false,
    };
    churn::run(&config).expect("loopback churn").rate()
}

/// User + system CPU time of this process so far (all threads: client, server, and in
/// round B the reader), in µs.
fn cpu_us() -> f64 {
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Runs `churn(n)`; returns connections per second and CPU µs per connection.
fn measured_churn(n: usize) -> (f64, f64) {
    let cpu0 = cpu_us();
    let cps = churn(n);
    (cps, (cpu_us() - cpu0) / n as f64)
}

/// A thread that wakes on the reader's timer and does nothing, so that round A has the
/// same wakeup pattern (and CPU idle behaviour) as round B.
fn idle_waker(stop: Arc<AtomicBool>, every: Duration) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            thread::sleep(every);
        }
    })
}

struct Round {
    a_cps: f64,
    b_cps: f64,
    a_cpu: f64,
    b_cpu: f64,
    records: u64,
    runs: u64,
    run_ns: u128,
    lost: u64,
    missed: u64,
    recovered: u64,
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n = env_or("FLOW_BENCH_CONNECTIONS", 20_000);
    let rounds = env_or("FLOW_BENCH_ROUNDS", 3);
    let _stats = enable_stats(Stats::RunTime).expect("enable BPF run-time statistics (root)");
    let pin_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/fe-bench-{}", std::process::id()));
    populate_identity_maps(&pin_dir);
    churn(2_000); // warm up the stack and the allocator
    let mut results = Vec::new();
    for round in 1..=rounds {
        let stop_a = Arc::new(AtomicBool::new(false));
        let waker = idle_waker(stop_a.clone(), flowexporter::capture::DEFAULT_POLL_INTERVAL);
        let (a_cps, a_cpu) = measured_churn(n);
        stop_a.store(true, Ordering::Release);
        waker.join().expect("waker");

        let mut capture = FlowCaptureBuilder::new()
            .identity_pin_dir(&pin_dir)
            .load()
            .expect("load capture");
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
        let (b_cps, b_cpu) = measured_churn(n);
        let after = capture.program_stats().expect("stats");
        let counters = capture.counters().expect("counters");
        thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Release);
        drain.join().expect("drain");
        let r = Round {
            a_cps,
            b_cps,
            a_cpu,
            b_cpu,
            records: records.load(Ordering::Relaxed),
            runs: after.run_count - before.run_count,
            run_ns: (after.run_time - before.run_time).as_nanos(),
            lost: counters.lost(),
            missed: after.recursion_misses - before.recursion_misses,
            recovered: counters.recovered_by_backup,
        };
        eprintln!(
            "round {round}: A {:.0}/s  B {:.0}/s  ratio {:.3}  {:.0} ns/invocation  {} records  {} lost  {} skipped, {} recovered",
            r.a_cps,
            r.b_cps,
            r.b_cps / r.a_cps,
            r.run_ns as f64 / r.runs.max(1) as f64,
            r.records,
            r.lost,
            r.missed,
            r.recovered
        );
        results.push(r);
        drop(capture);
    }
    report(n, &results);
    let _ = std::fs::remove_dir_all(&pin_dir);
}

/// Pins the identity maps under `dir` and fills them as a busy container host would.
fn populate_identity_maps(dir: &std::path::Path) {
    let mut maps = IdentityMaps::open_or_create(dir).expect("identity maps (is bpffs mounted?)");
    let id = |s: String| WorkloadId::new(s).expect("id");
    maps.set_ip(
        "127.0.0.1".parse().expect("ip"),
        &id("bench-loopback".into()),
    )
    .expect("set");
    for i in 0..1_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        let ip = std::net::Ipv4Addr::new(10, a, b, c);
        maps.set_ip(ip.into(), &id(format!("workload-{i}")))
            .expect("set ip");
        let local =
            std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(100, 64, a, c), 40_000 + b as u16);
        maps.set_connect(local, &id(format!("conn-{i}")))
            .expect("set connect");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(n: usize, rounds: &[Round]) {
    println!(
        "| round | A: no capture (conn/s) | B: capture (conn/s) | B/A | A CPU µs/conn | B CPU µs/conn | B-A CPU µs/conn | BPF ns/invocation | BPF ns/socket event | invocations/closed socket | BPF ns/closed socket | records | lost (ring full) | skipped (recursion) | recovered by backup |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (i, r) in rounds.iter().enumerate() {
        let per_inv = r.run_ns as f64 / r.runs.max(1) as f64;
        let sockets = r.records.max(1) as f64;
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {} | {} | {} | {} |",
            i + 1,
            r.a_cps,
            r.b_cps,
            r.b_cps / r.a_cps,
            r.a_cpu,
            r.b_cpu,
            r.b_cpu - r.a_cpu,
            per_inv,
            per_inv * 2.0,
            r.runs as f64 / sockets,
            r.run_ns as f64 / sockets,
            r.records,
            r.lost,
            r.missed,
            r.recovered
        );
    }
    let ratio = median(rounds.iter().map(|r| r.b_cps / r.a_cps).collect());
    let cpu_ratio = median(rounds.iter().map(|r| r.a_cpu / r.b_cpu).collect());
    let per_inv = median(
        rounds
            .iter()
            .map(|r| r.run_ns as f64 / r.runs.max(1) as f64)
            .collect(),
    );
    println!(
        "\nmedian over {} rounds of {n} connections: B/A = {ratio:.3} (conn/s), A/B = {cpu_ratio:.3} (CPU per connection), {per_inv:.0} ns per invocation; lost {}, skipped {}",
        rounds.len(),
        rounds.iter().map(|r| r.lost).sum::<u64>(),
        rounds.iter().map(|r| r.missed).sum::<u64>()
    );
}

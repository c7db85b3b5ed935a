//! Capture overhead, side by side in one run: loopback TCP connections per second
//! without the tracer (A) and with it attached and drained (B), alternating A/B rounds,
//! plus the kernel program's mean run time per invocation and per closed socket
//! (BPF run-time statistics), and records lost.
//!
//! The identity maps are pinned and populated (the loopback client's address is in
//! the IP map among 1,000 others, and 1,000 connect-map entries), so every socket pays
//! for its identity lookups as on a container host.
//!
//! Each capture counts closes per 60 s window, as the exporter does.
//!
//! Run as root: `cargo bench --bench capture_overhead`
//! Knobs (environment): `FLOW_BENCH_CONNECTIONS` per round (default 20000),
//! `FLOW_BENCH_ROUNDS` A/B pairs (default 3), `FLOW_BENCH_BASELINE_OBJECT` another
//! build of the kernel object (e.g. the previous commit's) to run in each round next to
//! the bundled one, alternating which goes first.

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

/// One churn with the capture core loaded and drained.
struct Captured {
    cps: f64,
    cpu: f64,
    records: u64,
    runs: u64,
    run_ns: u128,
    lost: u64,
    missed: u64,
    recovered: u64,
}

impl Captured {
    fn ns_per_invocation(&self) -> f64 {
        self.run_ns as f64 / self.runs.max(1) as f64
    }
}

struct Round {
    a_cps: f64,
    a_cpu: f64,
    /// The bundled kernel object.
    b: Captured,
    /// The baseline object (`FLOW_BENCH_BASELINE_OBJECT`), when given.
    baseline: Option<Captured>,
}

/// Loads the capture core (the bundled object, or `object`), drains it from a reader
/// thread, and churns `n` connections.
fn captured_churn(n: usize, pin_dir: &std::path::Path, object: Option<&'static [u8]>) -> Captured {
    // Closes counted per 60 s window, as the exporter does (`FLOW_BENCH_NO_WINDOWS`
    // set: not, for an object from before per-window counts).
    let mut builder = FlowCaptureBuilder::new().identity_pin_dir(pin_dir);
    if std::env::var_os("FLOW_BENCH_NO_WINDOWS").is_none() {
        builder = builder.window_counts(Duration::from_secs(60));
    }
    if let Some(object) = object {
        builder = builder.kernel_object(object);
    }
    let mut capture = builder.load().expect("load capture");
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
    let (cps, cpu) = measured_churn(n);
    let after = capture.program_stats().expect("stats");
    let counters = capture.counters().expect("counters");
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    drain.join().expect("drain");
    Captured {
        cps,
        cpu,
        records: records.load(Ordering::Relaxed),
        runs: after.run_count - before.run_count,
        run_ns: (after.run_time - before.run_time).as_nanos(),
        lost: counters.lost(),
        missed: after.recursion_misses - before.recursion_misses,
        recovered: counters.recovered_by_backup,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n = env_or("FLOW_BENCH_CONNECTIONS", 20_000);
    let rounds = env_or("FLOW_BENCH_ROUNDS", 3);
    // Another build of the kernel object to run side by side with the bundled one,
    // e.g. the previous commit's: `git show HEAD~1:ebpf/flowexporter.bpf.o > /tmp/old.o`.
    let baseline: Option<&'static [u8]> = std::env::var_os("FLOW_BENCH_BASELINE_OBJECT").map(|p| {
        let bytes = std::fs::read(&p)
            .unwrap_or_else(|e| panic!("FLOW_BENCH_BASELINE_OBJECT {}: {e}", p.to_string_lossy()));
        &*Box::leak(bytes.into_boxed_slice())
    });
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
        // Alternate which object goes first, so that neither always follows round A.
        let (b, baseline) = match baseline {
            Some(object) if round % 2 == 0 => {
                let base = captured_churn(n, &pin_dir, Some(object));
                (captured_churn(n, &pin_dir, None), Some(base))
            }
            Some(object) => {
                let b = captured_churn(n, &pin_dir, None);
                (b, Some(captured_churn(n, &pin_dir, Some(object))))
            }
            None => (captured_churn(n, &pin_dir, None), None),
        };
        let r = Round {
            a_cps,
            a_cpu,
            b,
            baseline,
        };
        let line = |name: &str, c: &Captured| {
            eprintln!(
                "round {round} {name}: A {:.0}/s  B {:.0}/s  ratio {:.3}  {:.0} ns/invocation  {} records  {} lost  {} skipped, {} recovered",
                r.a_cps,
                c.cps,
                c.cps / r.a_cps,
                c.ns_per_invocation(),
                c.records,
                c.lost,
                c.missed,
                c.recovered
            )
        };
        line("bundled", &r.b);
        if let Some(base) = &r.baseline {
            line("baseline", base);
        }
        results.push(r);
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
        "| round | object | A: no capture (conn/s) | B: capture (conn/s) | B/A | A CPU µs/conn | B CPU µs/conn | B-A CPU µs/conn | BPF ns/invocation | BPF ns/socket event | invocations/closed socket | BPF ns/closed socket | records | lost (ring full) | skipped (recursion) | recovered by backup |"
    );
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (i, r) in rounds.iter().enumerate() {
        let variants =
            std::iter::once(("bundled", &r.b)).chain(r.baseline.as_ref().map(|b| ("baseline", b)));
        for (name, c) in variants {
            let per_inv = c.ns_per_invocation();
            let sockets = c.records.max(1) as f64;
            println!(
                "| {} | {name} | {:.0} | {:.0} | {:.3} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {} | {} | {} | {} |",
                i + 1,
                r.a_cps,
                c.cps,
                c.cps / r.a_cps,
                r.a_cpu,
                c.cpu,
                c.cpu - r.a_cpu,
                per_inv,
                per_inv * 2.0,
                c.runs as f64 / sockets,
                c.run_ns as f64 / sockets,
                c.records,
                c.lost,
                c.missed,
                c.recovered
            );
        }
    }
    let summary = |name: &str, pick: &dyn Fn(&Round) -> Option<&Captured>| {
        let picked: Vec<(f64, &Captured)> = rounds
            .iter()
            .filter_map(|r| pick(r).map(|c| (r.a_cps, c)))
            .collect();
        if picked.is_empty() {
            return;
        }
        let ratio = median(picked.iter().map(|(a, c)| c.cps / a).collect());
        let per_inv = median(picked.iter().map(|(_, c)| c.ns_per_invocation()).collect());
        let per_socket = median(
            picked
                .iter()
                .map(|(_, c)| c.run_ns as f64 / c.records.max(1) as f64)
                .collect(),
        );
        println!(
            "{name}: median over {} rounds of {n} connections: B/A = {ratio:.3} (conn/s), {per_inv:.0} ns per invocation, {per_socket:.0} ns per closed socket; lost {}, skipped {}",
            picked.len(),
            picked.iter().map(|(_, c)| c.lost).sum::<u64>(),
            picked.iter().map(|(_, c)| c.missed).sum::<u64>()
        );
    };
    println!();
    summary("bundled", &|r| Some(&r.b));
    summary("baseline", &|r| r.baseline.as_ref());
}

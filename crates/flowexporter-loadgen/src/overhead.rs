//! A/B overhead runs with the real exporter process: round A churns with no exporter,
//! round B with `flowexporter run` attached (default pipeline, a reference collector
//! on loopback, identity maps populated); rounds alternate. Reported per round:
//! connections per second and the B/A ratio, the BPF program's run time per
//! invocation and per closed socket (from the exporter's metrics, with BPF run-time
//! statistics enabled here), the exporter's CPU time per record (user + system, from
//! /proc), its peak RSS, and records lost in the kernel and in user space.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aya::sys::{Stats, enable_stats};
use flow_capture::WorkloadId;
use flow_collector::{CollectorOptions, FlowCollector};
use flow_identity::IdentityMaps;

use crate::churn::{self, ChurnConfig, ChurnReport};

/// What to run.
#[derive(Clone, Debug)]
pub struct OverheadConfig {
    /// The `flowexporter` binary.
    pub exporter: PathBuf,
    /// A/B pairs.
    pub rounds: usize,
    /// The churn of each round.
    pub churn: ChurnConfig,
    /// Scratch directory (spool, journal, collector output).
    pub scratch: PathBuf,
}

/// One A/B pair.
#[derive(Clone, Debug, Default)]
pub struct RoundReport {
    /// Round A (no exporter).
    pub a: ChurnReport,
    /// Round B (exporter running).
    pub b: ChurnReport,
    /// BPF invocations during B (both attachments).
    pub bpf_runs: u64,
    /// BPF run time during B, ns.
    pub bpf_ns: u64,
    /// Records the exporter read during B.
    pub records: u64,
    /// Exporter CPU time (user + system) during B, ns.
    pub exporter_cpu_ns: u64,
    /// Exporter peak RSS since its start (VmHWM: includes parsing the kernel BTF at
    /// load), KiB.
    pub exporter_peak_rss_kib: u64,
    /// Exporter's largest RSS sampled every 50 ms during the churn, KiB.
    pub exporter_running_rss_kib: u64,
    /// Records lost in the kernel (ring full) during B.
    pub lost_kernel: u64,
    /// Records of B's connections that did not reach the collector.
    pub lost_user: i64,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// GETs the exporter's metrics.
fn scrape(addr: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("metrics at {addr}"))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The current RSS of a process, KiB (0 if it cannot be read).
fn current_rss_kib(pid: u32) -> u64 {
    process(pid)
        .and_then(|p| p.status())
        .ok()
        .and_then(|s| s.vmrss)
        .unwrap_or(0)
}

/// The process `pid` in `/proc`.
fn process(pid: u32) -> procfs::ProcResult<procfs::process::Process> {
    procfs::process::Process::new(pid as i32)
}

/// CPU time of every live thread of a process, ns, by thread ID, from
/// `/proc/<pid>/task/<tid>/schedstat` (the scheduler's exact run time, where
/// `/proc/<pid>/stat` rounds to 10 ms clock ticks: too coarse for a few µs per record).
fn thread_cpu_ns(pid: u32) -> anyhow::Result<std::collections::HashMap<u32, u64>> {
    let mut threads = std::collections::HashMap::new();
    for task in process(pid)?.tasks()? {
        // A thread that exits meanwhile simply has no files any more.
        let Ok(task) = task else { continue };
        if let Ok(stat) = task.schedstat() {
            threads.insert(task.tid as u32, stat.sum_exec_runtime);
        }
    }
    Ok(threads)
}

/// CPU ns the process spent between two [`thread_cpu_ns`] readings: threads started
/// meanwhile count whole; a thread that ended meanwhile is missing its last stretch
/// (the runtime's idle blocking threads, if any).
fn cpu_between(
    before: &std::collections::HashMap<u32, u64>,
    after: &std::collections::HashMap<u32, u64>,
) -> u64 {
    after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// Peak RSS KiB (`VmHWM`) of a process.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    Ok(process(pid)?.status()?.vmhwm.unwrap_or(0))
}

struct Exporter {
    child: Child,
    metrics: String,
    pin_dir: PathBuf,
}

fn start_exporter(
    config: &OverheadConfig,
    collector_url: &str,
    round: usize,
) -> anyhow::Result<Exporter> {
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/fe-loadgen-{}", std::process::id()));
    let dir = |name: &str| config.scratch.join(format!("{name}-{round}"));
    let mut child = Command::new(&config.exporter)
        .args(["run", "--collector", collector_url, "--window", "60s"])
        .arg("--spool-dir")
        .arg(dir("spool"))
        .arg("--journal-dir")
        .arg(dir("journal"))
        .arg("--pin-dir")
        .arg(&pin_dir)
        .args(["--metrics-addr", &metrics])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", config.exporter.display()))?;
    let stderr = child.stderr.take().context("exporter stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("tracing TCP closes") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .context("the exporter did not start within 30 s")?;
    Ok(Exporter {
        child,
        metrics,
        pin_dir,
    })
}

/// Fills the identity maps as a busy container host would: the loopback addresses
/// among 1,000 others, and 1,000 connect-map entries.
fn populate(pin_dir: &Path) -> anyhow::Result<()> {
    let mut maps = IdentityMaps::open_or_create(pin_dir)?;
    for ip in [
        "127.0.0.1",
        "::1",
        "10.77.0.1",
        "10.77.0.2",
        "fd77::1",
        "fd77::2",
    ] {
        maps.set_ip(ip.parse()?, &WorkloadId::new(format!("loadgen-{ip}"))?)?;
    }
    for i in 0..1_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        maps.set_ip(
            Ipv4Addr::new(10, a, b, c).into(),
            &WorkloadId::new(format!("wl-{i}"))?,
        )?;
        let local = SocketAddrV4::new(Ipv4Addr::new(100, 64, a, c), 40_000 + u16::from(b));
        maps.set_connect(local, &WorkloadId::new(format!("conn-{i}"))?)?;
    }
    Ok(())
}

fn records_for(out: &Path, port: u16) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["local_port"] == port || v["remote_port"] == port)
        .count()
}

/// Runs the A/B rounds.
pub fn run(config: &OverheadConfig) -> anyhow::Result<Vec<RoundReport>> {
    if !config.exporter.exists() {
        bail!(
            "no exporter binary at {} (build it: cargo build --release -p flowexporter-bin)",
            config.exporter.display()
        );
    }
    std::fs::create_dir_all(&config.scratch)?;
    let _stats = enable_stats(Stats::RunTime).context("enabling BPF run-time statistics (root)")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let out = config.scratch.join("collector.jsonl");
    let _ = std::fs::remove_file(&out);
    let listen = ([127, 0, 0, 1], free_port()?).into();
    let collector = rt.block_on(FlowCollector::start(
        CollectorOptions::new(listen, &out).with_hold_back(std::time::Duration::ZERO),
    ))?;
    let url = collector.url();
    churn::run(&ChurnConfig {
        connections: 1_000,
        ..config.churn.clone()
    })?; // warm-up
    let mut rounds = Vec::new();
    for round in 0..config.rounds {
        let a = churn::run(&config.churn)?;
        let exporter = start_exporter(config, &url, round)?;
        populate(&exporter.pin_dir)?;
        std::thread::sleep(Duration::from_millis(1_100)); // a fresh metrics snapshot
        let before = scrape(&exporter.metrics)?;
        let cpu0 = thread_cpu_ns(exporter.child.id())?;
        let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let (pid, sampling) = (exporter.child.id(), sampling.clone());
            std::thread::spawn(move || {
                let mut peak = 0;
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(current_rss_kib(pid));
                    std::thread::sleep(Duration::from_millis(50));
                }
                peak
            })
        };
        let b = churn::run(&config.churn)?;
        std::thread::sleep(Duration::from_millis(1_500));
        let after = scrape(&exporter.metrics)?;
        let cpu1 = thread_cpu_ns(exporter.child.id())?;
        let hwm = peak_rss_kib(exporter.child.id())?;
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let running_rss = sampler.join().unwrap_or(0);
        let delta = |name: &str| metric(&after, name).saturating_sub(metric(&before, name));
        let mut report = RoundReport {
            a,
            b,
            bpf_runs: delta("flowexporter_bpf_runs_total "),
            bpf_ns: delta("flowexporter_bpf_run_time_nanoseconds_total "),
            records: delta("flowexporter_records_captured_total "),
            exporter_cpu_ns: cpu_between(&cpu0, &cpu1),
            exporter_peak_rss_kib: hwm,
            exporter_running_rss_kib: running_rss,
            lost_kernel: delta(
                r#"flowexporter_records_dropped_total{reason="ring_full",intentional="false"} "#,
            ),
            lost_user: 0,
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(exporter.child.id() as i32, libc::SIGTERM) };
        let mut child = exporter.child;
        child.wait()?;
        let _ = std::fs::remove_dir_all(&exporter.pin_dir);
        let expected = 2 * b.connections;
        let deadline = Instant::now() + Duration::from_secs(10);
        while records_for(&out, b.server_port) < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        report.lost_user = expected as i64 - records_for(&out, b.server_port) as i64;
        eprintln!(
            "round {}: A {:.0}/s, B {:.0}/s, B/A {:.3}",
            round + 1,
            report.a.rate(),
            report.b.rate(),
            report.b.rate() / report.a.rate()
        );
        rounds.push(report);
    }
    rt.block_on(collector.shutdown());
    Ok(rounds)
}

/// The rounds as a Markdown table, with the medians.
pub fn table(rounds: &[RoundReport]) -> String {
    let mut s = String::from(
        "| round | A conn/s | B conn/s | B/A | BPF ns/invocation | BPF ns/closed socket | exporter CPU ns/record | exporter RSS while running MiB | exporter VmHWM MiB | lost in kernel | lost in user space |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let per = |num: u64, den: u64| num as f64 / den.max(1) as f64;
    for (i, r) in rounds.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {} |\n",
            i + 1,
            r.a.rate(),
            r.b.rate(),
            r.b.rate() / r.a.rate(),
            per(r.bpf_ns, r.bpf_runs),
            per(r.bpf_ns, r.records),
            per(r.exporter_cpu_ns, r.records),
            r.exporter_running_rss_kib as f64 / 1024.0,
            r.exporter_peak_rss_kib as f64 / 1024.0,
            r.lost_kernel,
            r.lost_user,
        ));
    }
    let mut ratios: Vec<f64> = rounds.iter().map(|r| r.b.rate() / r.a.rate()).collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    if let Some(m) = ratios.get(ratios.len() / 2) {
        s.push_str(&format!(
            "\nmedian B/A over {} rounds: {m:.3}\n",
            rounds.len()
        ));
    }
    s
}

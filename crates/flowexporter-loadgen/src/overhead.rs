//! A/B overhead runs with the real exporter process: round A churns with no exporter,
//! round B with `flowexporter run` attached (default pipeline, a reference collector
//! on loopback, identity maps populated); rounds alternate. Reported per round:
//! connections per second and the B/A ratio, the BPF program's run time per
//! invocation and per closed socket (from the exporter's metrics, with BPF run-time
//! statistics enabled here), the exporter's CPU time per record (user + system, from
//! /proc), its peak RSS, and records lost in the kernel and in user space.
//!
//! Round B's exporter sends to the reference collector (`--collector`, the default)
//! or, with [`Export`], to a minimal receiver of a standard export on loopback
//! ([`crate::receivers`]: OTLP/HTTP, IPFIX over UDP or TCP). With a
//! [`window`](OverheadConfig::window), the measured interval runs until the sink has
//! sent every chunk made so far, the churn's last window included, so that the
//! export's encoding and sending are in it; without one (60 s windows), the churn's
//! chunks are made and sent after the interval (at the exporter's shutdown).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use aya::sys::{Stats, enable_stats};
use flow_capture::WorkloadId;
use flow_collector::{CollectorOptions, FlowCollector};
use flow_identity::IdentityMaps;

use crate::{
    churn::{self, ChurnConfig, ChurnReport},
    receivers::{self, Receiver},
};

/// Where round B's exporter sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Export {
    /// The reference collector (`--collector`, HTTP chunks).
    #[default]
    Collector,
    /// OTLP/HTTP logs (`--otlp-endpoint`).
    Otlp,
    /// IPFIX over UDP (`--ipfix-collector udp://`).
    IpfixUdp,
    /// IPFIX over TCP (`--ipfix-collector tcp://`).
    IpfixTcp,
}

impl Export {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Export::Collector => "collector",
            Export::Otlp => "otlp",
            Export::IpfixUdp => "ipfix-udp",
            Export::IpfixTcp => "ipfix-tcp",
        }
    }

    /// The exporter's metrics of this sink: records sent, bytes sent.
    fn sent_metrics(self) -> [&'static str; 2] {
        match self {
            Export::Collector => [
                "flowexporter_records_sent_total ",
                "flowexporter_sent_bytes_total ",
            ],
            Export::Otlp => [
                "flowexporter_otlp_sent_log_records_total ",
                "flowexporter_otlp_sent_bytes_total ",
            ],
            Export::IpfixUdp | Export::IpfixTcp => [
                "flowexporter_ipfix_exported_records_total ",
                "flowexporter_ipfix_message_bytes_total ",
            ],
        }
    }
}

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
    /// Where round B's exporter sends.
    pub export: Export,
    /// The exporter's batch window (`--window`). `None`: 60 s, and the interval ends
    /// 1.5 s after the churn (the churn's chunks are sent at shutdown, outside it).
    /// `Some`: the interval ends once every record of the churn arrived (at least
    /// 1.5 s after the churn).
    pub window: Option<Duration>,
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
    /// Records of B's connections that did not reach the collector or receiver
    /// (after the exporter's shutdown).
    pub lost_user: i64,
    /// The measured interval's length after the churn ended, s.
    pub tail_s: f64,
    /// Exporter CPU while idle, just before the churn (1 s), ns per second.
    pub idle_cpu_ns_per_s: u64,
    /// Records the sink sent during the interval (its metrics).
    pub sent_records: u64,
    /// Bytes the sink sent during the interval (its metrics: chunk frames, OTLP
    /// bodies as sent, IPFIX messages).
    pub sent_bytes: u64,
    /// Whether every record of the churn had arrived at the collector or receiver
    /// when the interval ended (always false without a window).
    pub drained: bool,
    /// Requests (OTLP), datagrams (IPFIX UDP) or reads (IPFIX TCP) and bytes the
    /// receiver got during the round, shutdown flush included (0 for the collector).
    pub received: (u64, u64),
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
    export_args: &[String],
    round: usize,
) -> anyhow::Result<Exporter> {
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/fe-loadgen-{}", std::process::id()));
    let dir = |name: &str| config.scratch.join(format!("{name}-{round}"));
    let mut child = Command::new(&config.exporter)
        .arg("run")
        .args(export_args)
        .arg("--window")
        .arg(
            humantime::format_duration(config.window.unwrap_or(Duration::from_secs(60)))
                .to_string(),
        )
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

/// Where round B's exporter sends: the reference collector and its output file, or a
/// receiver.
enum Target {
    Collector {
        collector: FlowCollector,
        out: PathBuf,
    },
    Receiver(Receiver),
}

impl Target {
    /// Records of the connections to or from `port` that arrived.
    fn records_for(&self, port: u16) -> usize {
        match self {
            Target::Collector { out, .. } => records_for(out, port),
            Target::Receiver(r) => r.records(port).with_port as usize,
        }
    }
}

/// Waits until the churn's records (`expected` of them, with `port`) arrived at the
/// collector or receiver: first until the window holding `churn_end` closed (its end
/// and the allowed lateness the exporter uses for `window`), then polling every
/// 250 ms for at most 30 s. What arrived is counted here, not from the exporter's
/// metrics: those are a snapshot refreshed about every second, which may predate the
/// window's close. Returns whether they all arrived.
fn wait_arrived(
    target: &Target,
    window: Duration,
    churn_end: SystemTime,
    port: u16,
    expected: usize,
) -> anyhow::Result<bool> {
    let since = churn_end.duration_since(SystemTime::UNIX_EPOCH)?;
    let w = window.as_nanos().max(1);
    let window_end = Duration::from_nanos(u64::try_from((since.as_nanos() / w + 1) * w)?);
    let lateness = Duration::from_secs(2).min(window / 2);
    let close = SystemTime::UNIX_EPOCH + window_end + lateness;
    if let Ok(wait) = close.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let arrived = target.records_for(port);
        if arrived >= expected {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            eprintln!(
                "{arrived} of the churn's {expected} records arrived by 30 s after its last window closed"
            );
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
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
    let (target, export_args) = match config.export {
        Export::Collector => {
            let out = config.scratch.join("collector.jsonl");
            let _ = std::fs::remove_file(&out);
            let listen = ([127, 0, 0, 1], free_port()?).into();
            let collector = rt.block_on(FlowCollector::start(
                CollectorOptions::new(listen, &out).with_hold_back(std::time::Duration::ZERO),
            ))?;
            let args = vec!["--collector".to_string(), collector.url()];
            (Target::Collector { collector, out }, args)
        }
        export => {
            let receiver = Receiver::start(match export {
                Export::Otlp => receivers::Kind::Otlp,
                Export::IpfixUdp => receivers::Kind::IpfixUdp,
                _ => receivers::Kind::IpfixTcp,
            })?;
            let args = receiver.exporter_args();
            (Target::Receiver(receiver), args)
        }
    };
    churn::run(&ChurnConfig {
        connections: 1_000,
        ..config.churn.clone()
    })?; // warm-up
    let mut rounds = Vec::new();
    for round in 0..config.rounds {
        let a = churn::run(&config.churn)?;
        if let Target::Receiver(r) = &target {
            r.clear();
        }
        let exporter = start_exporter(config, &export_args, round)?;
        populate(&exporter.pin_dir)?;
        std::thread::sleep(Duration::from_millis(1_100)); // a fresh metrics snapshot
        let idle0 = thread_cpu_ns(exporter.child.id())?;
        std::thread::sleep(Duration::from_secs(1));
        let idle1 = thread_cpu_ns(exporter.child.id())?;
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
        let churn_end = SystemTime::now();
        let churn_ended = Instant::now();
        let expected = 2 * b.connections;
        let drained = match config.window {
            Some(window) => wait_arrived(&target, window, churn_end, b.server_port, expected)?,
            None => false,
        };
        // At least 1.5 s after the churn (as without a window): the metrics snapshot
        // then counts every record captured.
        if let Some(rest) = Duration::from_millis(1_500).checked_sub(churn_ended.elapsed()) {
            std::thread::sleep(rest);
        }
        let after = scrape(&exporter.metrics)?;
        let cpu1 = thread_cpu_ns(exporter.child.id())?;
        let tail_s = churn_ended.elapsed().as_secs_f64();
        let hwm = peak_rss_kib(exporter.child.id())?;
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let running_rss = sampler.join().unwrap_or(0);
        let delta = |name: &str| metric(&after, name).saturating_sub(metric(&before, name));
        let [records_sent, bytes_sent] = config.export.sent_metrics();
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
            tail_s,
            idle_cpu_ns_per_s: cpu_between(&idle0, &idle1),
            sent_records: delta(records_sent),
            sent_bytes: delta(bytes_sent),
            drained,
            received: (0, 0),
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(exporter.child.id() as i32, libc::SIGTERM) };
        let mut child = exporter.child;
        child.wait()?;
        let _ = std::fs::remove_dir_all(&exporter.pin_dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        while target.records_for(b.server_port) < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        report.lost_user = expected as i64 - target.records_for(b.server_port) as i64;
        if let Target::Receiver(r) = &target {
            report.received = r.received();
            let records = r.records(b.server_port);
            if records.undecodable > 0 {
                eprintln!(
                    "round {}: {} payloads the receiver could not decode",
                    round + 1,
                    records.undecodable
                );
            }
        }
        eprintln!(
            "round {}: A {:.0}/s, B {:.0}/s, B/A {:.3}, exporter {:.0} ns/record",
            round + 1,
            report.a.rate(),
            report.b.rate(),
            report.b.rate() / report.a.rate(),
            report.exporter_cpu_ns as f64 / report.records.max(1) as f64,
        );
        rounds.push(report);
    }
    if let Target::Collector { collector, .. } = target {
        rt.block_on(collector.shutdown());
    }
    Ok(rounds)
}

/// Exporter CPU ns per record less what it would have spent idle during the tail
/// (the idle rate measured just before the churn, times the tail's length).
fn less_idle(r: &RoundReport) -> f64 {
    let idle_ns = r.idle_cpu_ns_per_s as f64 * r.tail_s;
    (r.exporter_cpu_ns as f64 - idle_ns).max(0.0) / r.records.max(1) as f64
}

/// The rounds as a Markdown table, with the medians.
pub fn table(rounds: &[RoundReport], export: Export) -> String {
    let mut s = String::from(
        "| round | A conn/s | B conn/s | B/A | BPF ns/invocation | BPF ns/closed socket | exporter CPU ns/record | exporter RSS while running MiB | exporter VmHWM MiB | lost in kernel | lost in user space | export | tail s | sent in interval | sent bytes/record | exporter idle µs/s | exporter CPU ns/record less idle tail |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let per = |num: u64, den: u64| num as f64 / den.max(1) as f64;
    for (i, r) in rounds.iter().enumerate() {
        let sent = if r.drained {
            format!("{} records (all arrived)", r.sent_records)
        } else {
            format!("{} records", r.sent_records)
        };
        let bytes_per_record = if r.sent_records > 0 {
            format!("{:.1}", per(r.sent_bytes, r.sent_records))
        } else {
            "n/a".to_string()
        };
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {:.1} | {} | {} | {:.0} | {:.0} |\n",
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
            export.name(),
            r.tail_s,
            sent,
            bytes_per_record,
            r.idle_cpu_ns_per_s as f64 / 1_000.0,
            less_idle(r),
        ));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied()
    };
    if let Some(m) = median(rounds.iter().map(|r| r.b.rate() / r.a.rate()).collect()) {
        s.push_str(&format!(
            "\nmedian B/A over {} rounds: {m:.3}\n",
            rounds.len()
        ));
    }
    if let Some(m) = median(
        rounds
            .iter()
            .map(|r| per(r.exporter_cpu_ns, r.records))
            .collect(),
    ) {
        s.push_str(&format!(
            "median exporter CPU ns/record ({}): {m:.0}\n",
            export.name()
        ));
    }
    if let Some(m) = median(rounds.iter().map(less_idle).collect()) {
        s.push_str(&format!(
            "median exporter CPU ns/record less idle tail ({}): {m:.0}\n",
            export.name()
        ));
    }
    s
}

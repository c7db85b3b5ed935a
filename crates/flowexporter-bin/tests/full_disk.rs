//! `flowexporter run` with its spool and journal on a full disk: a real tmpfs, filled
//! by another file, and the collector down. Failures of the journal (appends, syncs,
//! chunk intents) and of the spool must not end the run: the exporter keeps
//! capturing, keeps chunks in memory, and once the disk has room and the collector is
//! up, every record arrives exactly once.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::*;
use flow_collector::FaultInjection;
use flow_testkit::{Tmpfs, fill_disk};

/// The journal segment files in `dir`.
fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".wal"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Scrapes the metrics at `addr` until `ok` accepts them or `timeout` passes;
/// returns the last scrape.
fn scrape_until(addr: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = scrape(addr);
        if ok(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The sum of `flowexporter_records_dropped_total` over its labels.
fn records_dropped(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("flowexporter_records_dropped_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Distinct records in the collector's output, of any connection.
fn distinct_records(out: &Path) -> usize {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let keys: std::collections::HashSet<&str> = text.lines().collect();
    keys.len()
}

/// Asserts that every record the exporter captured up to `text` (a scrape) reaches
/// the collector or is counted as dropped: waits until the collector holds at least
/// `captured - dropped` distinct records.
fn assert_captured_are_delivered_or_counted(addr: &str, out: &Path) {
    let text = scrape(addr);
    let captured = metric(&text, "flowexporter_records_captured_total ");
    let dropped = records_dropped(&text);
    let want = captured.saturating_sub(dropped) as usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while distinct_records(out) < want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let delivered = distinct_records(out);
    assert!(
        delivered + dropped as usize >= captured as usize,
        "captured {captured}, delivered {delivered}, counted as dropped {dropped}:\n{text}"
    );
}

fn metrics_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[test]
fn a_full_disk_under_spool_and_journal_does_not_stop_the_exporter() {
    // The spool and the journal live in `state`, a small tmpfs; the collector's
    // output elsewhere.
    let state = Scratch::new("full-disk");
    let elsewhere = Scratch::new("full-disk-out");
    // Declared after `state`: unmounted before `state` is removed.
    let _tmpfs = Tmpfs::mount_at(&state.path(""), "4m");
    let rt = runtime();
    let out = elsewhere.path("flows.jsonl");
    let collector_port = free_port(); // down for now
    let addr = metrics_addr();
    let mut exporter =
        start_exporter_with(collector_port, &state, "1s", &["--metrics-addr", &addr]);

    let ballast = state.path("ballast");
    fill_disk(&ballast);
    let first = connections(30);
    // Past journal syncs and window closes: every write to the disk fails.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        exporter.try_wait().expect("try_wait").is_none(),
        "the exporter stopped on a full disk"
    );
    // The fault was hit, and counted.
    let during = scrape(&addr);
    assert!(
        metric(&during, "flowexporter_journal_write_failures_total ") > 0,
        "{during}"
    );
    assert!(
        metric(&during, "flowexporter_sink_unspooled_chunks_total ") > 0
            || metric(
                &during,
                "flowexporter_spool_disk_full_dropped_chunks_total "
            ) > 0,
        "{during}"
    );

    // Room again, and the collector comes up.
    std::fs::remove_file(&ballast).expect("free the disk");
    let second = connections(20);
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    assert_exactly_once(&wait_for(&out, first, 60, Duration::from_secs(30)), 60);
    assert_exactly_once(&wait_for(&out, second, 40, Duration::from_secs(30)), 40);

    // The journal writes again and, everything kept in memory being delivered, lets
    // go of its old segments.
    let after = scrape_until(&addr, Duration::from_secs(30), |t| {
        metric(t, "flowexporter_journal_degraded ") == 0
            && metric(t, "flowexporter_journal_open_chunks ") == 0
            && metric(t, "flowexporter_sink_memory_chunks ") == 0
            && metric(t, "flowexporter_journal_segments ") <= 2
    });
    assert_eq!(
        metric(&after, "flowexporter_journal_degraded "),
        0,
        "{after}"
    );
    assert!(
        metric(&after, "flowexporter_journal_resumed_total ") >= 1,
        "{after}"
    );
    assert_eq!(
        metric(&after, "flowexporter_sink_memory_chunks "),
        0,
        "{after}"
    );
    assert_eq!(
        metric(&after, "flowexporter_journal_open_chunks "),
        0,
        "chunks delivered from memory still pin the journal:\n{after}"
    );
    let segments = segment_files(&state.path("journal"));
    assert!(segments.len() <= 2, "journal segments left: {segments:?}");
    // Nothing captured went missing uncounted.
    assert_captured_are_delivered_or_counted(&addr, &out);

    stop(exporter);
    assert_exactly_once(&records_for(&out, first), 60);
    assert_exactly_once(&records_for(&out, second), 40);
    let segments = segment_files(&state.path("journal"));
    assert!(segments.len() <= 2, "journal segments left: {segments:?}");
    rt.block_on(collector.shutdown());
}

/// Starts the exporter with its spool in `spool` and its journal in `journal`.
fn start_exporter_split(
    collector_port: u16,
    spool: &Path,
    journal: &Path,
    pins: &Path,
    extra: &[&str],
) -> std::process::Child {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        "--collector",
        &format!("http://127.0.0.1:{collector_port}"),
        "--window",
        "1s",
        "--retry-max-backoff",
        "1s",
        "--host-id",
        "test-host",
    ])
    .arg("--spool-dir")
    .arg(spool)
    .arg("--journal-dir")
    .arg(journal)
    .arg("--pin-dir")
    .arg(pins)
    .args(extra)
    .stdout(std::process::Stdio::null());
    spawn_logged(cmd).0
}

/// The spool's disk full, the journal's fine: chunks kept in memory hold their
/// journal intents only until they are delivered; then the journal lets them go
/// (otherwise it would keep every segment until the next start, and that start would
/// send them all again).
#[test]
fn chunks_delivered_from_memory_are_marked_done_in_the_journal() {
    let state = Scratch::new("full-spool");
    let elsewhere = Scratch::new("full-spool-out");
    let spool = state.path("spool");
    let _tmpfs = Tmpfs::mount_at(&spool, "1m");
    let rt = runtime();
    let out = elsewhere.path("flows.jsonl");
    let collector_port = free_port(); // down for now
    let addr = metrics_addr();
    let mut exporter = start_exporter_split(
        collector_port,
        &spool,
        &state.path("journal"),
        state.pins(),
        &["--metrics-addr", &addr],
    );
    fill_disk(&spool.join("ballast"));
    let first = connections(30);
    // Chunks go to memory, and their intents stay open: they are not durable.
    let during = scrape_until(&addr, Duration::from_secs(15), |t| {
        metric(t, "flowexporter_sink_unspooled_chunks_total ") > 0
            && metric(t, "flowexporter_journal_open_chunks ") > 0
    });
    assert!(
        metric(&during, "flowexporter_sink_unspooled_chunks_total ") > 0,
        "{during}"
    );
    assert!(
        metric(&during, "flowexporter_journal_open_chunks ") > 0,
        "{during}"
    );
    assert_eq!(
        metric(&during, "flowexporter_journal_degraded "),
        0,
        "{during}"
    );
    assert!(exporter.try_wait().expect("try_wait").is_none());

    // The collector comes up; the spool stays full. Chunks go from memory to the
    // collector, and the journal marks them done.
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    assert_exactly_once(&wait_for(&out, first, 60, Duration::from_secs(30)), 60);
    let after = scrape_until(&addr, Duration::from_secs(30), |t| {
        metric(t, "flowexporter_journal_open_chunks ") == 0
            && metric(t, "flowexporter_sink_memory_chunks ") == 0
    });
    assert_eq!(
        metric(&after, "flowexporter_journal_open_chunks "),
        0,
        "chunks delivered from memory still pin the journal:\n{after}"
    );
    assert_captured_are_delivered_or_counted(&addr, &out);
    stop(exporter);

    // A new start has nothing to send again: every chunk was marked done.
    let (exporter, mut logs) = {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "run",
            "--collector",
            &format!("http://127.0.0.1:{collector_port}"),
            "--window",
            "1s",
            "--host-id",
            "test-host",
        ])
        .arg("--spool-dir")
        .arg(&spool)
        .arg("--journal-dir")
        .arg(state.path("journal"))
        .arg("--pin-dir")
        .arg(state.pins())
        .stdout(std::process::Stdio::null());
        spawn_logged(cmd)
    };
    stop(exporter);
    let recovered: Vec<_> = logs
        .all()
        .iter()
        .filter(|l| l.contains("recovered from the journal") && !l.contains("chunks=0"))
        .cloned()
        .collect();
    assert!(recovered.is_empty(), "chunks sent again: {recovered:?}");
    assert_exactly_once(&records_for(&out, first), 60);
    rt.block_on(collector.shutdown());
}

//! `flowexporter run` end to end with real processes: the exporter binary, the
//! reference collector on loopback, real TCP connections. Every record must arrive
//! exactly once through outages, failures, SIGTERM and `kill -9`.

mod common;

use std::time::Duration;

use common::*;
use flow_collector::FaultInjection;

#[test]
fn sigterm_mid_window_delivers_every_record_exactly_once() {
    let scratch = Scratch::new("sigterm");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    // A 60 s window: nothing would be sent for a minute without the early close.
    let exporter = start_exporter(collector_port, &scratch, "60s");
    let port = connections(100);
    std::thread::sleep(Duration::from_millis(500)); // captured and read (50 ms poll)
    stop(exporter);
    assert_exactly_once(&records_for(&out, port), 200);
    let stats = collector.stats();
    assert!(stats.chunks_accepted >= 1, "{stats:?}");
    rt.block_on(collector.shutdown());
}

#[test]
fn collector_down_at_start_then_up_loses_and_duplicates_nothing() {
    let scratch = Scratch::new("down");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port(); // nothing listens there yet
    let exporter = start_exporter(collector_port, &scratch, "2s");
    let first = connections(50);
    std::thread::sleep(Duration::from_secs(5)); // windows close, sends fail, chunks spool
    assert!(
        std::fs::read_dir(scratch.path("spool"))
            .expect("spool dir")
            .count()
            > 0
    );
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let second = connections(50);
    let seen_first = wait_for(&out, first, 100, Duration::from_secs(30));
    let seen_second = wait_for(&out, second, 100, Duration::from_secs(30));
    stop(exporter);
    assert_exactly_once(&seen_first, 100);
    assert_exactly_once(&seen_second, 100);
    assert_exactly_once(&records_for(&out, first), 100);
    rt.block_on(collector.shutdown());
}

#[test]
fn intermittent_503s_and_a_slow_collector_lose_nothing() {
    let scratch = Scratch::new("flaky");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let faults = FaultInjection::default()
        .with_fail_every(2)
        .with_fail_status(503)
        .with_lose_ack_every(3)
        .with_delay(Duration::from_millis(300));
    let collector = start_collector(&rt, collector_port, &out, faults);
    let exporter = start_exporter(collector_port, &scratch, "1s");
    let mut ports = Vec::new();
    for _ in 0..4 {
        ports.push(connections(25));
        std::thread::sleep(Duration::from_millis(700));
    }
    for port in &ports {
        assert_exactly_once(&wait_for(&out, *port, 50, Duration::from_secs(30)), 50);
    }
    stop(exporter);
    for port in &ports {
        assert_exactly_once(&records_for(&out, *port), 50);
    }
    let stats = collector.stats();
    assert!(
        stats.chunks_duplicate > 0,
        "lost acknowledgements were retried and dropped: {stats:?}"
    );
    rt.block_on(collector.shutdown());
}

#[test]
fn kill_9_during_an_outage_then_restart_loses_nothing() {
    let scratch = Scratch::new("kill9");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let exporter = start_exporter(collector_port, &scratch, "2s");
    let before = connections(60);
    // Past the journal's 1 s sync, and past a window close (so chunks were spooled).
    std::thread::sleep(Duration::from_millis(3500));
    signal(&exporter, libc::SIGKILL);
    let mut exporter = exporter;
    let _ = exporter.wait();

    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let exporter = start_exporter(collector_port, &scratch, "2s");
    let after = connections(40);
    let seen_before = wait_for(&out, before, 120, Duration::from_secs(30));
    let seen_after = wait_for(&out, after, 80, Duration::from_secs(30));
    stop(exporter);
    assert_exactly_once(&seen_before, 120);
    assert_exactly_once(&seen_after, 80);
    rt.block_on(collector.shutdown());
}

#[test]
fn no_capabilities_remain_after_the_program_is_attached() {
    let scratch = Scratch::new("caps");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let exporter = start_exporter(collector_port, &scratch, "1s");
    assert_no_capabilities(exporter.id());
    // And it still works without them: records flow to the collector.
    let port = connections(10);
    assert_exactly_once(&wait_for(&out, port, 20, Duration::from_secs(15)), 20);
    stop(exporter);
    rt.block_on(collector.shutdown());
}

#[test]
fn metrics_are_served_and_follow_the_traffic() {
    let scratch = Scratch::new("metrics");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let exporter = start_exporter_with(
        collector_port,
        &scratch,
        "1s",
        &["--metrics-addr", &metrics_addr],
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = scrape(&metrics_addr);
    let captured = metric(&before, "flowexporter_records_captured_total ");
    let port = connections(30);
    wait_for(&out, port, 60, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1500)); // one more refresh of the snapshot
    let after = scrape(&metrics_addr);
    assert!(
        metric(&after, "flowexporter_records_captured_total ") >= captured + 60,
        "{after}"
    );
    assert!(
        metric(&after, "flowexporter_records_sent_total ") >= 60,
        "{after}"
    );
    assert!(
        metric(&after, "flowexporter_chunks_sent_total ") >= 1,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            r#"flowexporter_records_dropped_total{reason="ring_full",intentional="false"} "#
        ),
        0
    );
    assert!(
        after.contains("# TYPE flowexporter_spool_bytes gauge"),
        "{after}"
    );
    assert!(
        after.contains(r#"flowexporter_identity_records_total{source="none",reason="no_match"}"#)
    );
    stop(exporter);
    rt.block_on(collector.shutdown());
}

#[test]
fn sighup_reloads_the_certificate() {
    let scratch = Scratch::new("hup");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let cert = scratch.path("host.pem");
    write_cert(&cert, "spiffe://x/before");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let cert_arg = cert.display().to_string();
    let (exporter, mut logs) = start_exporter_logged(
        collector_port,
        &scratch,
        "1s",
        &["--identity-cert", &cert_arg],
    );
    signal(&exporter, libc::SIGHUP);
    logs.wait_for(&["SIGHUP: identity certificate unchanged"]);
    std::thread::sleep(Duration::from_millis(20));
    write_cert(&cert, "spiffe://x/after");
    signal(&exporter, libc::SIGHUP);
    logs.wait_for(&["SIGHUP: identity certificate reloaded"]);
    let port = connections(5);
    wait_for(&out, port, 10, Duration::from_secs(15));
    let text = std::fs::read_to_string(&out).expect("out");
    let mine: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["local_port"] == port || v["remote_port"] == port)
        .filter(|v| v["record_kind"] != "interim")
        .collect();
    assert_eq!(mine.len(), 10);
    assert!(
        mine.iter()
            .all(|v| v["local_workload_id"] == "spiffe://x/after"),
        "{mine:#?}"
    );
    stop(exporter);
    rt.block_on(collector.shutdown());
}

//! The Prometheus text endpoint (`--metrics-addr`): what the exporter captured,
//! attributed, batched, sent, spooled, and every place a record was dropped, with the
//! reason. Names follow `flowexporter_<name>_<unit>_total` for counters.
//!
//! The main loop renders a snapshot of every component's counters on each timer tick
//! (every 200 ms); the server only hands out the latest rendering.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use bytes::Bytes;
use flow_batch::BatchCounters;
use flow_capture::{CaptureCounters, ProgramStats, ReaderCounters};
use flow_identity::IdentityCounters;
use flow_sink::{
    CollectorCounters,
    http_server::{self, ConnectionCounters, ConnectionLimits, ConnectionStats},
};
use flowexporter::JournalCounters;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
};

use crate::reload::ReloadCounters;

/// Everything the endpoint reports, as read from the components.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The kernel program's counters.
    pub kernel: CaptureCounters,
    /// Its run statistics.
    pub program: ProgramStats,
    /// The reader's counters.
    pub reader: ReaderCounters,
    /// Identity outcomes.
    pub identity: IdentityCounters,
    /// The batcher (collector mode).
    pub batch: Option<BatchCounters>,
    /// Records the batcher refused.
    pub batch_refused: u64,
    /// Journal operations that failed in the pipeline (logged; the run went on).
    pub pipeline_journal_errors: u64,
    /// Chunks whose delivery failed in the pipeline (logged; given up).
    pub pipeline_delivery_errors: u64,
    /// Records of those chunks (lost).
    pub pipeline_records_dropped: u64,
    /// The collector sink and its spool (collector mode).
    pub sink: Option<CollectorCounters>,
    /// The record journal (collector mode).
    pub journal: Option<JournalCounters>,
    /// SIGHUP reloads of the configuration.
    pub reloads: ReloadCounters,
}

/// The latest rendering, shared with the server.
#[derive(Debug, Default)]
pub struct Metrics {
    text: Mutex<String>,
}

impl Metrics {
    /// Renders `snapshot` as the current exposition.
    pub fn update(&self, snapshot: &Snapshot) {
        let text = render(snapshot);
        if let Ok(mut slot) = self.text.lock() {
            *slot = text;
        }
    }

    fn current(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Connections the metrics endpoint keeps open at once; one more is closed as soon as
/// it is accepted. A scraper needs one; the cap keeps a flood of connections from
/// taking the file descriptors the spool and journal need.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers (and the longest a keep-alive
/// connection stays idle between requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection on which nothing moved for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` (and `HEAD`) on `addr` until the runtime stops, within
/// [`MAX_CONNECTIONS`], [`HEADER_READ_TIMEOUT`] and [`IDLE_TIMEOUT`]. A failing
/// `accept` (out of file descriptors) is logged at most every 10 s and retried after
/// 100 ms; it never stops the server or the exporter.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    let limits = ConnectionLimits::new(MAX_CONNECTIONS, HEADER_READ_TIMEOUT, IDLE_TIMEOUT);
    let counters = Arc::new(ConnectionCounters::default());
    tokio::spawn(http_server::serve(
        listener,
        limits,
        Arc::clone(&counters),
        std::future::pending(),
        move |stream, _peer| {
            let metrics = Arc::clone(&metrics);
            let counters = Arc::clone(&counters);
            let server = Arc::clone(&counters);
            http_server::serve_connection(stream, limits, counters, move |req| {
                std::future::ready(respond(&req, &metrics, &server.snapshot()))
            })
        },
    ));
    Ok(())
}

/// The answer to one request: the exposition for `GET` or `HEAD /metrics` (hyper
/// leaves the body out for `HEAD`), `405` with `Allow` for another method there, `404`
/// elsewhere.
fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    server: &ConnectionStats,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut text = metrics.current();
    render_server(&mut text, server);
    *response.body_mut() = Full::new(Bytes::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// The endpoint's own connection counters, appended to the exposition.
fn render_server(text: &mut String, s: &ConnectionStats) {
    let mut o = Out(std::mem::take(text));
    o.family(
        "flowexporter_metrics_connections_total",
        "counter",
        "Connections to the metrics endpoint: served, or closed at once because the cap was reached.",
        &[
            (r#"result="accepted""#, s.accepted),
            (r#"result="refused_over_cap""#, s.refused_over_cap),
        ],
    );
    o.counter(
        "flowexporter_metrics_connections_timed_out_total",
        "Metrics connections closed for sending no request headers or no traffic in time.",
        s.timed_out,
    );
    o.counter(
        "flowexporter_metrics_accept_errors_total",
        "Failed accepts on the metrics endpoint (e.g. out of file descriptors).",
        s.accept_errors,
    );
    o.gauge(
        "flowexporter_metrics_connections_open",
        "Connections to the metrics endpoint open now.",
        s.open,
    );
    *text = o.0;
}

/// A metric family being written: HELP and TYPE once, then samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {value}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
    }
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help, &[("", value)]);
    }
    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help, &[("", value)]);
    }
}

/// The exposition text of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::new());
    o.counter(
        "flowexporter_records_captured_total",
        "Flow records read from the kernel.",
        s.reader.records_read,
    );
    o.counter(
        "flowexporter_kernel_records_submitted_total",
        "Flow records the kernel program wrote to the ring buffer.",
        s.kernel.records_submitted,
    );
    let mut dropped = vec![
        (
            r#"reason="ring_full",intentional="false""#,
            s.kernel.lost_ring_full,
        ),
        (
            r#"reason="malformed",intentional="false""#,
            s.reader.malformed,
        ),
        (
            r#"reason="batch_refused",intentional="false""#,
            s.batch_refused,
        ),
        (
            r#"reason="delivery_failed",intentional="false""#,
            s.pipeline_records_dropped,
        ),
    ];
    if let Some(sink) = &s.sink {
        dropped.push((
            r#"reason="rejected_by_collector",intentional="false""#,
            sink.records_rejected,
        ));
        dropped.push((
            r#"reason="memory_queue_full",intentional="true""#,
            sink.records_dropped_memory,
        ));
        if let Some(spool) = &sink.spool {
            dropped.push((
                r#"reason="spool_full",intentional="true""#,
                spool.records_dropped_full,
            ));
            dropped.push((
                r#"reason="disk_full",intentional="true""#,
                spool.records_dropped_no_space,
            ));
        }
    }
    o.family(
        "flowexporter_records_dropped_total",
        "counter",
        "Records dropped, by reason and whether the drop was a configured choice.",
        &dropped,
    );
    o.counter(
        "flowexporter_kernel_start_not_recorded_total",
        "Socket opens the kernel could not record (their records have an unknown start).",
        s.kernel.start_not_recorded,
    );
    o.counter(
        "flowexporter_kernel_read_failed_total",
        "Records emitted with a failed kernel read (flagged incomplete).",
        s.kernel.read_failed,
    );
    o.counter(
        "flowexporter_kernel_recursion_misses_total",
        "Program invocations the kernel skipped (recursion on one CPU), either attachment.",
        s.program.recursion_misses,
    );
    o.counter(
        "flowexporter_kernel_recovered_by_backup_total",
        "Socket events the primary attachment missed and the backup handled.",
        s.kernel.recovered_by_backup,
    );
    o.counter(
        "flowexporter_bpf_runs_total",
        "Program invocations (kept only while BPF run-time statistics are enabled).",
        s.program.run_count,
    );
    o.counter(
        "flowexporter_bpf_run_time_nanoseconds_total",
        "Program run time (kept only while BPF run-time statistics are enabled).",
        s.program.run_time.as_nanos() as u64,
    );
    let i = &s.identity;
    o.family(
        "flowexporter_identity_records_total",
        "counter",
        "Records by identity source, and unattributed ones by reason.",
        &[
            (r#"source="connect_map""#, i.connect_map),
            (r#"source="ip_map""#, i.ip_map),
            (r#"source="certificate""#, i.certificate),
            (
                r#"source="none",reason="no_match""#,
                i.unattributed_no_match,
            ),
            (
                r#"source="none",reason="invalid_map_value""#,
                i.unattributed_invalid_map_value,
            ),
            (
                r#"source="none",reason="certificate""#,
                i.unattributed_certificate,
            ),
        ],
    );
    o.counter(
        "flowexporter_certificate_errors_total",
        "Times the identity certificate could not be used.",
        i.certificate_errors,
    );
    o.counter(
        "flowexporter_certificate_reloads_total",
        "Times a replaced identity certificate was picked up.",
        i.certificate_reloads,
    );
    o.family(
        "flowexporter_config_reloads_total",
        "counter",
        "SIGHUP reloads of the configuration: applied, or failed (the configuration in force kept).",
        &[
            (r#"result="applied""#, s.reloads.applied),
            (r#"result="failed""#, s.reloads.failed),
        ],
    );
    if let Some(b) = &s.batch {
        o.family(
            "flowexporter_batch_records_total",
            "counter",
            "Records through the batcher: in, out, and those placed late or from the future.",
            &[
                (r#"stage="in""#, b.records_in),
                (r#"stage="out""#, b.records_out),
                (r#"stage="late""#, b.records_late),
                (r#"stage="future""#, b.records_future),
            ],
        );
        o.counter(
            "flowexporter_batch_chunks_total",
            "Chunks produced.",
            b.chunks_out,
        );
        o.gauge(
            "flowexporter_batch_open_windows",
            "Windows open now.",
            b.open_windows,
        );
        o.gauge(
            "flowexporter_batch_buffered_records",
            "Records waiting in open windows.",
            b.buffered_records,
        );
    }
    if let Some(c) = &s.sink {
        o.counter(
            "flowexporter_chunks_sent_total",
            "Chunks the collector accepted.",
            c.chunks_sent,
        );
        o.counter(
            "flowexporter_records_sent_total",
            "Records the collector accepted.",
            c.records_sent,
        );
        o.counter(
            "flowexporter_sent_bytes_total",
            "Bytes of chunks the collector accepted.",
            c.bytes_sent,
        );
        o.counter(
            "flowexporter_sink_requests_total",
            "Requests to the collector.",
            c.requests,
        );
        o.counter(
            "flowexporter_sink_retries_total",
            "Retried requests.",
            c.retries,
        );
        o.family(
            "flowexporter_sink_failures_total",
            "counter",
            "Failed requests, by kind.",
            &[
                (r#"kind="transport""#, c.transport_errors),
                (r#"kind="retriable_status""#, c.retriable_statuses),
                (r#"kind="rejected""#, c.chunks_rejected),
            ],
        );
        o.counter(
            "flowexporter_sink_unspooled_chunks_total",
            "Chunks the spool could not take (disk full or failing), kept in memory instead.",
            c.chunks_unspooled,
        );
        o.counter(
            "flowexporter_sink_memory_respooled_chunks_total",
            "Chunks kept in memory that were moved to the spool once it took chunks again.",
            c.chunks_respooled,
        );
        o.counter(
            "flowexporter_sink_memory_dropped_chunks_total",
            "Chunks dropped from the in-memory queue (full) while the spool could not take them.",
            c.chunks_dropped_memory,
        );
        o.gauge(
            "flowexporter_sink_memory_chunks",
            "Chunks held in memory now, waiting to be sent.",
            c.memory_chunks,
        );
        o.gauge(
            "flowexporter_sink_memory_bytes",
            "Bytes of chunks held in memory now.",
            c.memory_bytes,
        );
        if let Some(sp) = &c.spool {
            o.gauge(
                "flowexporter_spool_files",
                "Chunks waiting in the spool.",
                sp.files,
            );
            o.gauge(
                "flowexporter_spool_bytes",
                "Bytes waiting in the spool.",
                sp.bytes,
            );
            o.counter(
                "flowexporter_spool_dropped_chunks_total",
                "Chunks dropped because the spool was full.",
                sp.chunks_dropped_full,
            );
            o.counter(
                "flowexporter_spool_disk_full_dropped_chunks_total",
                "Oldest spooled chunks dropped because the disk was full (ENOSPC, EDQUOT).",
                sp.chunks_dropped_no_space,
            );
            o.counter(
                "flowexporter_spool_disk_full_refused_chunks_total",
                "Chunks the spool could not write even when empty (the disk full).",
                sp.chunks_refused_no_space,
            );
            o.counter(
                "flowexporter_spool_unreadable_files_total",
                "Spool files that could not be read (permissions, I/O error, not a file), set aside.",
                sp.unreadable_files,
            );
            o.counter(
                "flowexporter_spool_foreign_entries_total",
                "Entries in the spool directory that are not ours (links, FIFOs, directories), moved aside.",
                sp.foreign_entries,
            );
            o.counter(
                "flowexporter_spool_corrupt_files_total",
                "Spool files that failed verification (moved aside).",
                sp.corrupt_files,
            );
            o.gauge(
                "flowexporter_spool_set_aside_bytes",
                "Bytes in the spool's rejected/ and corrupt/ folders.",
                sp.set_aside_bytes,
            );
            o.counter(
                "flowexporter_spool_set_aside_deleted_files_total",
                "Rejected or corrupt chunks deleted to keep those folders under their cap.",
                sp.set_aside_files_deleted,
            );
        }
    }
    if let Some(j) = &s.journal {
        o.counter(
            "flowexporter_journal_records_total",
            "Records journaled.",
            j.records_appended,
        );
        o.counter(
            "flowexporter_journal_syncs_total",
            "Journal syncs.",
            j.syncs,
        );
        o.counter(
            "flowexporter_journal_written_bytes_total",
            "Bytes written to the journal.",
            j.bytes_written,
        );
        o.gauge(
            "flowexporter_journal_segments",
            "Journal segment files (the oldest are deleted once every chunk of their records is delivered, spooled or given up).",
            j.segments,
        );
        o.gauge(
            "flowexporter_journal_open_chunks",
            "Chunks announced in the journal and not yet durable (kept in memory by the sink, or being handed to it).",
            j.open_chunks,
        );
        o.gauge(
            "flowexporter_journal_degraded",
            "1 while the journal cannot write (disk full or failing): a crash then loses the records not yet in a delivered chunk.",
            j.degraded,
        );
        o.counter(
            "flowexporter_journal_write_failures_total",
            "Journal writes or syncs that failed: while running each starts or prolongs the degraded state; a failed directory sync at start only counts here.",
            j.write_failures,
        );
        o.counter(
            "flowexporter_journal_records_not_journaled_total",
            "Records captured while the journal could not write (still batched and sent).",
            j.records_not_journaled,
        );
        o.counter(
            "flowexporter_journal_resumed_total",
            "Times the journal resumed writing after a failure.",
            j.resumed,
        );
        o.counter(
            "flowexporter_journal_damaged_segments_total",
            "Journal segments found damaged at start (intact records kept, segment moved to damaged/).",
            j.damaged_segments,
        );
        o.counter(
            "flowexporter_journal_bad_entries_total",
            "Damaged journal entries skipped at start.",
            j.bad_entries,
        );
        o.counter(
            "flowexporter_journal_set_aside_entries_total",
            "Entries under a segment's name that are not readable files of ours, moved to damaged/.",
            j.entries_set_aside,
        );
    }
    o.family(
        "flowexporter_pipeline_errors_total",
        "counter",
        "Failures the pipeline survived (logged; the run went on), by stage.",
        &[
            (r#"stage="journal""#, s.pipeline_journal_errors),
            (r#"stage="delivery""#, s.pipeline_delivery_errors),
        ],
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_once_with_labels() {
        let mut s = Snapshot::default();
        s.kernel.lost_ring_full = 3;
        s.reader.records_read = 10;
        s.identity.ip_map = 7;
        s.reloads.failed = 2;
        let text = render(&s);
        assert!(
            text.contains("flowexporter_records_captured_total 10\n"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flowexporter_records_dropped_total{reason="ring_full",intentional="false"} 3"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"flowexporter_identity_records_total{source="ip_map"} 7"#));
        assert!(text.contains("flowexporter_config_reloads_total{result=\"applied\"} 0\n"));
        assert!(text.contains("flowexporter_config_reloads_total{result=\"failed\"} 2\n"));
        assert_eq!(
            text.matches("# TYPE flowexporter_records_dropped_total counter")
                .count(),
            1
        );
        // Without a collector, no sink families.
        assert!(!text.contains("flowexporter_chunks_sent_total"));
    }

    #[test]
    fn every_drop_and_degradation_of_the_state_directories_is_exposed() {
        let mut spool = flow_sink::SpoolCounters::default();
        spool.records_dropped_no_space = 5;
        spool.chunks_dropped_no_space = 1;
        spool.unreadable_files = 2;
        spool.foreign_entries = 3;
        let mut sink = CollectorCounters::default();
        sink.records_dropped_memory = 7;
        sink.memory_chunks = 4;
        sink.chunks_respooled = 14;
        sink.spool = Some(spool);
        let mut journal = JournalCounters::default();
        journal.degraded = 1;
        journal.segments = 12;
        journal.open_chunks = 13;
        journal.records_not_journaled = 9;
        journal.entries_set_aside = 6;
        let s = Snapshot {
            sink: Some(sink),
            journal: Some(journal),
            pipeline_delivery_errors: 8,
            pipeline_records_dropped: 11,
            ..Snapshot::default()
        };
        let text = render(&s);
        for line in [
            r#"flowexporter_records_dropped_total{reason="disk_full",intentional="true"} 5"#,
            r#"flowexporter_records_dropped_total{reason="memory_queue_full",intentional="true"} 7"#,
            "flowexporter_spool_disk_full_dropped_chunks_total 1",
            "flowexporter_spool_unreadable_files_total 2",
            "flowexporter_spool_foreign_entries_total 3",
            "flowexporter_sink_memory_chunks 4",
            "flowexporter_sink_memory_respooled_chunks_total 14",
            "flowexporter_journal_degraded 1",
            "flowexporter_journal_segments 12",
            "flowexporter_journal_open_chunks 13",
            "flowexporter_journal_records_not_journaled_total 9",
            "flowexporter_journal_set_aside_entries_total 6",
            r#"flowexporter_pipeline_errors_total{stage="delivery"} 8"#,
            r#"flowexporter_records_dropped_total{reason="delivery_failed",intentional="false"} 11"#,
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line} missing in:\n{text}"
            );
        }
    }
}

//! `GET /metrics` on the collector's own listener: what it received, stored,
//! attributed (by source) and left unattributed (by reason), what it holds back, the
//! size of the ownership map, the ledger and the output. OpenMetrics text from
//! `prometheus-client`, encoded from one snapshot per scrape (a [`Collector`] over
//! constant metrics), so the numbers of one scrape are read together.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode, header};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    CollectorStats, PartsSnapshot, State,
    attribution::{RemoteIdentitySource, RemoteUnattributedReason},
    completeness::WindowStatus,
};

/// The path of the metrics.
pub(crate) const METRICS_PATH: &str = "/metrics";

/// The OpenMetrics content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything one scrape shows.
#[derive(Debug)]
struct Snapshot {
    stats: CollectorStats,
    parts: PartsSnapshot,
    /// The dependency graph's.
    graph: crate::graph::GraphStats,
    /// The Kafka parts' counters, when they run.
    #[cfg(feature = "kafka")]
    kafka: Option<Arc<crate::kafka::KafkaStats>>,
}

/// Labels of one series.
type Labels = Vec<(&'static str, &'static str)>;

/// One series: labels and value.
type Series = (Labels, u64);

impl Snapshot {
    /// `(name, help, type, series)` of every family.
    fn families(&self) -> Vec<(&'static str, &'static str, MetricType, Vec<Series>)> {
        let s = &self.stats;
        let a = &self.parts.attribution;
        let l = &self.parts.ledger;
        let r = &self.parts.recovery;
        let w = &self.parts.completeness;
        let g = &self.graph;
        let one = |v: u64| vec![(Vec::new(), v)];
        let counter = MetricType::Counter;
        let gauge = MetricType::Gauge;
        let mut unattributed = Vec::new();
        for reason in RemoteUnattributedReason::ALL {
            unattributed.push((
                vec![("reason", reason.as_str())],
                a.unattributed_for(reason),
            ));
        }
        let windows = WindowStatus::ALL
            .iter()
            .map(|status| (vec![("status", status.as_str())], w.windows_for(*status)))
            .collect();
        vec![
            (
                "flowcollector_requests",
                "Requests to the chunk path.",
                counter,
                one(s.requests),
            ),
            (
                "flowcollector_chunks",
                "Chunk requests by result: accepted (stored), duplicate (a batch ID stored before), undecodable (400), too_large (413), content_type (415), body_timeout (408), store_failed (503, the ledger could not store it), busy (503, the output is behind), ack_timeout (503, stored but Kafka did not acknowledge its flows in time).",
                counter,
                vec![
                    (vec![("result", "accepted")], s.chunks_accepted),
                    (vec![("result", "duplicate")], s.chunks_duplicate),
                    (vec![("result", "undecodable")], s.rejected_undecodable),
                    (vec![("result", "too_large")], s.rejected_too_large),
                    (vec![("result", "content_type")], s.rejected_content_type),
                    (vec![("result", "body_timeout")], s.body_timeouts),
                    (vec![("result", "store_failed")], s.write_failures),
                    (vec![("result", "busy")], s.refused_busy),
                    (vec![("result", "ack_timeout")], s.ack_timeouts),
                ],
            ),
            (
                "flowcollector_flows_in",
                "Flows (records) in the chunks stored.",
                counter,
                one(s.records_accepted),
            ),
            (
                "flowcollector_flows_out",
                "Flows written to the output.",
                counter,
                one(s.flows_written),
            ),
            (
                "flowcollector_flows_attributed",
                "Flows whose remote side was attributed, by source.",
                counter,
                vec![
                    (
                        vec![("source", RemoteIdentitySource::PeerRecord.as_str())],
                        a.attributed_peer_record,
                    ),
                    (
                        vec![("source", RemoteIdentitySource::Heartbeat.as_str())],
                        a.attributed_heartbeat,
                    ),
                    (
                        vec![("source", RemoteIdentitySource::Static.as_str())],
                        a.attributed_static,
                    ),
                ],
            ),
            (
                "flowcollector_flows_unattributed",
                "Flows whose remote side was left unattributed, by reason.",
                counter,
                unattributed,
            ),
            (
                "flowcollector_flows_held",
                "Flows held back now, waiting for their peer's record or for heartbeats.",
                gauge,
                one(a.held),
            ),
            (
                "flowcollector_flows_waiting_for_output",
                "Decided flows the output has not taken yet (it is failing).",
                gauge,
                one(self.parts.unwritten),
            ),
            (
                "flowcollector_output_failures",
                "Output writes or commits that failed (the flows are kept and retried).",
                counter,
                one(s.output_failures),
            ),
            (
                "flowcollector_checkpoint_failures",
                "Checkpoints of the ledger that could not be written.",
                counter,
                one(s.checkpoint_failures),
            ),
            (
                "flowcollector_heartbeats",
                "Heartbeats (records naming their local workload) applied to the ownership map.",
                counter,
                one(a.heartbeats),
            ),
            (
                "flowcollector_heartbeats_too_old",
                "Heartbeats ignored because they ended before what the map still holds.",
                counter,
                one(a.heartbeats_too_old),
            ),
            (
                "flowcollector_shared_heartbeats_out",
                "Heartbeats taken out of the attributor for the other collector nodes (the heartbeat topic), and their time ranges.",
                counter,
                vec![
                    (vec![("unit", "heartbeats")], a.heartbeats_shared_out),
                    (vec![("unit", "ranges")], a.heartbeat_ranges_shared_out),
                ],
            ),
            (
                "flowcollector_shared_heartbeats_pending",
                "Keys (host, IP, claim) with claims not taken out for the other nodes yet.",
                gauge,
                one(a.heartbeat_book_entries),
            ),
            (
                "flowcollector_shared_heartbeats_applied",
                "Other nodes' heartbeats applied to the ownership map, their ranges, and the ranges ignored as older than the map holds.",
                counter,
                vec![
                    (vec![("unit", "heartbeats")], a.heartbeats_applied_remote),
                    (vec![("unit", "ranges")], a.heartbeat_ranges_remote),
                    (
                        vec![("unit", "ranges_too_old")],
                        a.heartbeat_ranges_remote_too_old,
                    ),
                ],
            ),
            (
                "flowcollector_ownership_conflicts",
                "Times two workloads claimed overlapping time on one IP; the overlap is never used to attribute.",
                counter,
                one(a.conflicts),
            ),
            (
                "flowcollector_ownership_ips",
                "IPs the ownership map tracks.",
                gauge,
                one(a.tracked_ips),
            ),
            (
                "flowcollector_ownership_ranges",
                "Ranges in the ownership map (conflict and shared marks included).",
                gauge,
                one(a.ranges),
            ),
            (
                "flowcollector_ownership_bytes",
                "Estimated memory of the ownership map, in bytes.",
                gauge,
                one(a.map_bytes),
            ),
            (
                "flowcollector_ownership_ranges_removed",
                "Ranges removed from the ownership map: expired (older than the retention) or evicted (the size cap).",
                counter,
                vec![
                    (vec![("why", "expired")], a.ranges_expired),
                    (vec![("why", "evicted")], a.ranges_evicted),
                ],
            ),
            (
                "flowcollector_peer_index_records",
                "Records kept to match the two ends of a connection.",
                gauge,
                one(a.peer_index_entries),
            ),
            (
                "flowcollector_peer_index_evicted",
                "Records that left the peer index early because it was full (a flow whose peer left this way may go unattributed).",
                counter,
                one(a.peer_index_evicted),
            ),
            (
                "flowcollector_ledger_bytes",
                "Bytes of stored chunks in the ledger.",
                gauge,
                one(l.bytes),
            ),
            (
                "flowcollector_ledger_pending_chunks",
                "Stored chunks with flows not yet written and committed to the output.",
                gauge,
                one(l.pending_chunks),
            ),
            (
                "flowcollector_recovery_flows_lost",
                "Flows lost at the last start: of stored chunks that no longer decode (undecodable), and chunks the checkpoint listed as unwritten that the log no longer holds (missing_chunks, counted per chunk).",
                counter,
                vec![
                    (vec![("reason", "undecodable")], r.flows_undecodable),
                    (vec![("reason", "missing_chunks")], r.pending_missing),
                ],
            ),
            (
                "flowcollector_ledger_damaged_bytes",
                "Bytes of damaged ledger stretches skipped at the last start (their chunks are lost).",
                counter,
                one(r.damaged_bytes),
            ),
            (
                "flowcollector_ledger_checkpoint_lost",
                "1 when the last start found no intact checkpoint and replayed every retained chunk (flows may have been written twice).",
                gauge,
                one(r.checkpoint_lost),
            ),
            (
                "flowcollector_ledger_skipped_files",
                "Files in the state directory that are not the ledger's (links, FIFOs, odd names): skipped, never opened.",
                counter,
                one(l.skipped_files),
            ),
            (
                "flowcollector_dedup_runs",
                "Exporter runs whose stored batch IDs the collector remembers.",
                gauge,
                one(l.dedup_runs),
            ),
            (
                "flowcollector_dedup_runs_forgotten",
                "Exporter runs forgotten after storing nothing for 7 days.",
                counter,
                one(l.dedup_runs_forgotten),
            ),
            (
                "flowcollector_window_completeness_windows",
                "Exporter windows reported, by status: all_chunks (the last chunk, with the window's completeness, and every chunk before it arrived), chunks_missing (the last chunk arrived, not every chunk before it within the grace), last_chunk_missing (the last chunk did not arrive within the grace).",
                counter,
                windows,
            ),
            (
                "flowcollector_window_completeness_not_adding_up",
                "Exporter windows reported whose numbers do not add up: closes seen != records emitted + lost in the ring, or final records received != emitted - lost in the journal - lost in the spool (every last_chunk_missing window counts).",
                counter,
                one(w.windows_not_adding_up),
            ),
            (
                "flowcollector_window_completeness_closes_seen",
                "TCP closes the exporters' kernel programs saw, in the windows reported.",
                counter,
                one(w.closes_seen),
            ),
            (
                "flowcollector_window_completeness_records_emitted",
                "Final records the exporters' kernel programs emitted, in the windows reported.",
                counter,
                one(w.records_emitted),
            ),
            (
                "flowcollector_window_completeness_records_received",
                "Final records received, in the windows reported.",
                counter,
                one(w.records_received),
            ),
            (
                "flowcollector_window_completeness_records_lost",
                "Records the exporters reported lost, in the windows reported, by reason: ring_full (the kernel's ring buffer was full), recursion (an upper bound of closes the kernel program missed), journal (not replayed after an exporter crash), spool (dropped from a full spool).",
                counter,
                vec![
                    (vec![("reason", "ring_full")], w.lost_ring_full),
                    (vec![("reason", "recursion")], w.lost_recursion),
                    (vec![("reason", "journal")], w.lost_journal),
                    (vec![("reason", "spool")], w.lost_spool),
                ],
            ),
            (
                "flowcollector_window_completeness_interim_records",
                "Interim records the exporters reported emitting, in the windows reported.",
                counter,
                one(w.interim_records),
            ),
            (
                "flowcollector_window_completeness_late_chunks",
                "Chunks that arrived for an exporter window already reported (their records are in no completeness record).",
                counter,
                one(w.late_chunks),
            ),
            (
                "flowcollector_window_completeness_evicted",
                "Exporter windows closed early (reported with what had arrived) because the collector tracked too many.",
                counter,
                one(w.windows_evicted),
            ),
            (
                "flowcollector_window_completeness_windows_open",
                "Exporter windows waiting for chunks now.",
                gauge,
                one(w.windows_open),
            ),
            (
                "flowcollector_window_completeness_written",
                "Completeness records written to the output.",
                counter,
                one(s.completeness_written),
            ),
            (
                "flowcollector_graph_edges",
                "Edges the dependency graph holds now (all minutes).",
                gauge,
                one(g.edges_held),
            ),
            (
                "flowcollector_graph_minutes",
                "Minutes the dependency graph holds now.",
                gauge,
                one(g.minutes_held),
            ),
            (
                "flowcollector_graph_flows",
                "Flows given to the dependency graph, by result: aggregated (in their minute), out_of_range (t_end older than the retention or more than 10 minutes ahead: dropped), dropped_busy (the graph was held, by a query or another writer, while 100,000 written flows already waited for it: not aggregated).",
                counter,
                vec![
                    (vec![("result", "aggregated")], g.flows_aggregated),
                    (vec![("result", "out_of_range")], g.flows_out_of_range),
                    (vec![("result", "dropped_busy")], g.flows_dropped_busy),
                ],
            ),
            (
                "flowcollector_graph_flows_counted_by_peer",
                "Flows aggregated that counted neither a connection nor traffic: records of a connection whose other end's record came first and counts it (only their retransmits are added).",
                counter,
                one(g.flows_counted_by_peer),
            ),
            (
                "flowcollector_graph_edges_folded",
                "Edges folded into other (beyond the top N of their node in a minute, or the total cap reached).",
                counter,
                one(g.edges_folded),
            ),
            (
                "flowcollector_graph_minutes_evicted",
                "Minutes of the dependency graph dropped before their retention because the edge cap was reached.",
                counter,
                one(g.minutes_evicted),
            ),
            (
                "flowcollector_graph_open_connections",
                "Connections whose interim records the dependency graph tracks now.",
                gauge,
                one(g.open_connections),
            ),
            (
                "flowcollector_graph_connections_untracked",
                "Interim records whose connection could not be tracked (table full): counted whole.",
                counter,
                one(g.connections_untracked),
            ),
            (
                "flowcollector_graph_connections_matched",
                "Connections in the dependency graph's table of connection ends (one end seen or both; full in steady state: the latest 500,000 connections).",
                gauge,
                one(g.connections_matched),
            ),
            (
                "flowcollector_graph_connections_forgotten",
                "Connections evicted from the table of connection ends before both their final records came: mostly connections only one end reports (to untraced peers); a later record of an evicted connection's other end counts it again.",
                counter,
                one(g.connections_forgotten),
            ),
            (
                "flowcollector_connections",
                "Connections: accepted, refused (over the cap), timed_out.",
                counter,
                vec![
                    (vec![("result", "accepted")], s.connections_accepted),
                    (vec![("result", "refused")], s.connections_refused),
                    (vec![("result", "timed_out")], s.connections_timed_out),
                ],
            ),
            (
                "flowcollector_connections_open",
                "Connections open now.",
                gauge,
                one(s.connections_open),
            ),
        ]
    }
}

/// The Kafka families (`docs/kafka.md`).
#[cfg(feature = "kafka")]
fn kafka_families(
    k: &crate::kafka::KafkaStats,
) -> Vec<(&'static str, &'static str, MetricType, Vec<Series>)> {
    use crate::kafka::KafkaStats as K;
    use flow_kafka::ErrorKind;
    let one = |v: u64| vec![(Vec::new(), v)];
    let by_kind = |counters: &[std::sync::atomic::AtomicU64; ErrorKind::ALL.len()]| {
        ErrorKind::ALL
            .iter()
            .map(|kind| {
                (
                    vec![("kind", kind.as_str())],
                    K::get(&counters[kind.index()]),
                )
            })
            .collect::<Vec<Series>>()
    };
    let counter = MetricType::Counter;
    let gauge = MetricType::Gauge;
    vec![
        (
            "flowcollector_kafka_output_messages",
            "Flow and completeness messages produced to the output topic (retries included).",
            counter,
            one(K::get(&k.output_produced)),
        ),
        (
            "flowcollector_kafka_output_bytes",
            "Bytes of the messages produced to the output topic (values).",
            counter,
            one(K::get(&k.output_bytes)),
        ),
        (
            "flowcollector_kafka_output_acknowledged",
            "Output messages the brokers acknowledged.",
            counter,
            one(K::get(&k.output_acknowledged)),
        ),
        (
            "flowcollector_kafka_output_retried",
            "Output messages produced again after a failed delivery.",
            counter,
            one(K::get(&k.output_retried)),
        ),
        (
            "flowcollector_kafka_output_dropped_too_large",
            "Output messages dropped because the brokers refuse them as too large.",
            counter,
            one(K::get(&k.output_dropped_too_large)),
        ),
        (
            "flowcollector_kafka_output_errors",
            "Output produce and delivery errors by kind.",
            counter,
            by_kind(&k.output_errors),
        ),
        (
            "flowcollector_kafka_heartbeats_published",
            "Heartbeat messages published to the heartbeat topic.",
            counter,
            one(K::get(&k.heartbeats_published)),
        ),
        (
            "flowcollector_kafka_heartbeat_bytes_published",
            "Bytes of the heartbeat messages published.",
            counter,
            one(K::get(&k.heartbeat_bytes_published)),
        ),
        (
            "flowcollector_kafka_heartbeats_dropped",
            "Heartbeats dropped because the producer refused them (queue full after a long outage, or an error).",
            counter,
            one(K::get(&k.heartbeats_dropped)),
        ),
        (
            "flowcollector_kafka_heartbeat_errors",
            "Heartbeat publish errors by kind.",
            counter,
            by_kind(&k.heartbeat_errors),
        ),
        (
            "flowcollector_kafka_heartbeats_consumed",
            "Other nodes' heartbeat messages consumed.",
            counter,
            one(K::get(&k.heartbeats_consumed)),
        ),
        (
            "flowcollector_kafka_heartbeats_undecodable",
            "Heartbeat messages that did not decode (skipped).",
            counter,
            one(K::get(&k.heartbeats_undecodable)),
        ),
        (
            "flowcollector_kafka_heartbeats_rebuilt",
            "Heartbeats applied while rebuilding the ownership map at start.",
            counter,
            one(K::get(&k.heartbeats_rebuilt)),
        ),
        (
            "flowcollector_kafka_heartbeat_rebuild_microseconds",
            "How long the rebuild of the ownership map from the heartbeat topic took at start.",
            gauge,
            one(K::get(&k.rebuild_micros)),
        ),
        (
            "flowcollector_kafka_heartbeat_lag",
            "Messages between the heartbeat reader and the end of the heartbeat topic.",
            gauge,
            one(K::get(&k.heartbeat_lag)),
        ),
        (
            "flowcollector_kafka_input_messages",
            "Chunk messages consumed from the input topic.",
            counter,
            one(K::get(&k.input_consumed)),
        ),
        (
            "flowcollector_kafka_input_bytes",
            "Bytes of the chunk messages consumed.",
            counter,
            one(K::get(&k.input_bytes)),
        ),
        (
            "flowcollector_kafka_input_undecodable",
            "Input messages that were not chunk frames (skipped, committed).",
            counter,
            one(K::get(&k.input_undecodable)),
        ),
        (
            "flowcollector_kafka_input_duplicates",
            "Input messages whose batch ID was stored before.",
            counter,
            one(K::get(&k.input_duplicates)),
        ),
        (
            "flowcollector_kafka_input_retried",
            "Input messages read again because the pipeline could not take them (store failed, busy).",
            counter,
            one(K::get(&k.input_retried)),
        ),
        (
            "flowcollector_kafka_input_commits",
            "Offset commits of the input consumer group.",
            counter,
            one(K::get(&k.input_commits)),
        ),
        (
            "flowcollector_kafka_input_lag",
            "Messages between this node's positions and the ends of its input partitions.",
            gauge,
            one(K::get(&k.input_lag)),
        ),
        (
            "flowcollector_kafka_input_uncommitted",
            "Input messages taken whose offsets wait for their chunks' flows to be written and acknowledged.",
            gauge,
            one(K::get(&k.input_uncommitted)),
        ),
        (
            "flowcollector_kafka_routed_records",
            "Records this node's intake routed, undecided, to the connection topic (--connection-topic).",
            counter,
            one(K::get(&k.routed_records)),
        ),
        (
            "flowcollector_kafka_connection_messages",
            "Connection-topic messages consumed (records of this node's partitions).",
            counter,
            one(K::get(&k.connection_consumed)),
        ),
        (
            "flowcollector_kafka_connection_bytes",
            "Bytes of the connection-topic messages consumed.",
            counter,
            one(K::get(&k.connection_bytes)),
        ),
        (
            "flowcollector_kafka_connection_records",
            "Records taken from the connection topic (duplicates not counted).",
            counter,
            one(K::get(&k.connection_records)),
        ),
        (
            "flowcollector_kafka_connection_duplicates",
            "Routed records dropped because the same flow (batch ID and index) waited in this node's connection stage already.",
            counter,
            one(K::get(&k.connection_duplicates)),
        ),
        (
            "flowcollector_kafka_connection_released",
            "Held records let go, undecided, because their connection-topic partition was taken away (its next owner reads and decides them).",
            counter,
            one(K::get(&k.connection_released)),
        ),
        (
            "flowcollector_kafka_connection_batches_open",
            "Batches with records of this node's partitions not yet written or acknowledged.",
            gauge,
            one(K::get(&k.connection_batches_open)),
        ),
        (
            "flowcollector_kafka_connection_undecodable",
            "Connection-topic messages that did not decode (skipped, logged).",
            counter,
            one(K::get(&k.connection_undecodable)),
        ),
        (
            "flowcollector_kafka_connection_dropped",
            "Attributed flows of the connection stage dropped because their output line could not be encoded (logged).",
            counter,
            one(K::get(&k.connection_dropped)),
        ),
        (
            "flowcollector_kafka_connection_partitions",
            "Connection-topic partitions this node owns (attributes the records of).",
            gauge,
            one(K::get(&k.connection_partitions)),
        ),
        (
            "flowcollector_kafka_connection_commits",
            "Offset commits of the connection consumer group.",
            counter,
            one(K::get(&k.connection_commits)),
        ),
        (
            "flowcollector_kafka_connection_lag",
            "Messages between this node's positions and the ends of its connection-topic partitions.",
            gauge,
            one(K::get(&k.connection_lag)),
        ),
        (
            "flowcollector_kafka_connection_uncommitted",
            "Connection-topic messages taken whose offsets wait (records held back, or not yet acknowledged by the output).",
            gauge,
            one(K::get(&k.connection_uncommitted)),
        ),
        (
            "flowcollector_kafka_consumer_errors",
            "Consumer errors (input, heartbeat and connection topics) by kind.",
            counter,
            by_kind(&k.consumer_errors),
        ),
    ]
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        #[cfg(feature = "kafka")]
        let kafka = self
            .kafka
            .as_deref()
            .map(kafka_families)
            .unwrap_or_default();
        #[cfg(not(feature = "kafka"))]
        let kafka = Vec::new();
        for (name, help, kind, series) in self.families().into_iter().chain(kafka) {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (labels, value) in &series {
                let metric = family.encode_family(labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(*value).encode(metric)?,
                    _ => {
                        ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX)).encode(metric)?
                    }
                }
            }
        }
        Ok(())
    }
}

/// The OpenMetrics text of `snapshot`.
fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = text::encode(&mut text, &registry);
    text
}

/// Answers a request to [`METRICS_PATH`].
pub(crate) async fn answer(state: &Arc<State>, method: &Method) -> Response<Full<Bytes>> {
    let mut response = if method != Method::GET {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"metrics are read with GET\n",
        )));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r
    } else {
        let parts = state.parts().await;
        let stats = state.stats.snapshot(state.connections.snapshot());
        // Never waits for a query (the counters as last read then), but may add
        // flows that waited for one: off the runtime.
        let shared = Arc::clone(&state.graph);
        let graph = tokio::task::spawn_blocking(move || shared.stats())
            .await
            .unwrap_or_default();
        Response::new(Full::new(Bytes::from(render(Snapshot {
            stats,
            parts,
            graph,
            #[cfg(feature = "kafka")]
            kafka: state.kafka.as_ref().map(|k| Arc::clone(&k.stats)),
        }))))
    };
    let content_type = if response.status() == StatusCode::OK {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_renders_with_its_type_and_labels() {
        let text = render(Snapshot {
            stats: CollectorStats::default(),
            parts: PartsSnapshot::default(),
            graph: crate::graph::GraphStats::default(),
            #[cfg(feature = "kafka")]
            kafka: Some(Arc::default()),
        });
        assert!(
            text.contains("# TYPE flowcollector_chunks counter"),
            "{text}"
        );
        assert!(text.contains("flowcollector_chunks_total{result=\"accepted\"} 0"));
        assert!(
            text.contains("flowcollector_flows_unattributed_total{reason=\"no_owner_known\"} 0")
        );
        assert!(text.contains("flowcollector_flows_attributed_total{source=\"peer_record\"} 0"));
        assert!(text.contains("# TYPE flowcollector_flows_held gauge"));
        assert!(text.contains(
            "flowcollector_window_completeness_windows_total{status=\"last_chunk_missing\"} 0"
        ));
        assert!(text.contains(
            "flowcollector_window_completeness_records_lost_total{reason=\"ring_full\"} 0"
        ));
        assert!(text.contains("flowcollector_window_completeness_not_adding_up_total 0"));
        assert!(text.contains("# TYPE flowcollector_window_completeness_windows_open gauge"));
        assert!(text.contains("# TYPE flowcollector_graph_edges gauge"));
        assert!(text.contains("flowcollector_graph_flows_total{result=\"aggregated\"} 0"));
        #[cfg(feature = "kafka")]
        assert!(text.contains("flowcollector_kafka_output_errors_total{kind=\"unreachable\"} 0"));
        assert!(text.ends_with("# EOF\n"));
    }
}

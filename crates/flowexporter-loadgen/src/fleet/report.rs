//! What a run found: the verdicts, the collector's speed and memory.

use std::{fmt, time::Duration};

use flow_collector::{
    attribution::{AttributionStats, RemoteUnattributedReason},
    completeness::WindowStatus,
    graph::GraphResponse,
};
use serde_json::{Value, json};

use crate::fleet::{
    check::Tally,
    collector::{CollectorCounters, PeakMap, StageTimes, WindowTally},
    config::{FleetConfig, Routing},
    traffic::{ConnKind, TrafficCounts},
};

/// What happened to the chunks on their way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Chunks sent.
    pub chunks: u64,
    /// Records in them.
    pub records: u64,
    /// Chunks that never arrived.
    pub dropped: u64,
    /// Records in those.
    pub records_dropped: u64,
    /// Extra copies sent (duplicates).
    pub duplicated: u64,
    /// Chunks delayed (late).
    pub late: u64,
    /// Chunks held back past their host's next chunk.
    pub reordered: u64,
    /// Frames (and connection-topic messages) still on their way when the run ended
    /// (0 unless the tail is too short).
    pub undelivered: u64,
}

/// What one collector node did.
#[derive(Clone, Debug)]
pub struct NodeReport {
    /// What its collector side did.
    pub collector: CollectorCounters,
    /// The verdicts on the flows it handed out.
    pub tally: Tally,
    /// Its attributor's stats at the end.
    pub stats: AttributionStats,
    /// Its windows' completeness records, judged.
    pub windows: WindowTally,
    /// Its ownership map at its largest.
    pub peak_map: PeakMap,
    /// Its time (decode, deduplicate, attribute, serialize, heartbeats).
    pub busy: Duration,
    /// The same, by stage.
    pub stages: StageTimes,
}

impl NodeReport {
    /// Flows it attributed correctly, percent of the flows it handed out.
    pub fn attributed_percent(&self) -> f64 {
        percent(self.tally.correct(), self.tally.checked)
    }
}

/// Everything a run reports.
#[derive(Clone, Debug)]
pub struct FleetReport {
    /// The settings.
    pub config: FleetConfig,
    /// What was generated.
    pub traffic: TrafficCounts,
    /// What happened on the way.
    pub delivery: Delivery,
    /// What the collector side did.
    pub collector: CollectorCounters,
    /// The verdicts.
    pub tally: Tally,
    /// The first misattributions, in full.
    pub examples: Vec<String>,
    /// Flows sent (in chunks not dropped) that never came out of the collector.
    pub missing: u64,
    /// Time of the collector side (decode, deduplicate, attribute, serialize).
    pub collector_time: Duration,
    /// The same, by stage.
    pub stages: StageTimes,
    /// Time of the generation (world, traffic, encoding).
    pub generation_time: Duration,
    /// Time of the whole run.
    pub wall_time: Duration,
    /// The process's peak resident set, KiB (simulator and collector together).
    pub peak_rss_kib: u64,
    /// The attributor's stats at the end.
    pub final_stats: AttributionStats,
    /// The ownership map at its largest.
    pub peak_map: PeakMap,
    /// Workloads that ran.
    pub workloads: u64,
    /// The windows' completeness records, judged (nodes together).
    pub windows: WindowTally,
    /// Each collector node (one unless [`FleetConfig::nodes`] says more). The other
    /// fields are their sums (`peak_map`: the largest node's).
    pub nodes: Vec<NodeReport>,
    /// With [`FleetConfig::graph`]: the dependency graph of the whole run, as
    /// `GET /api/v1/graph` answers it (every node's flows in one graph).
    pub graph: Option<GraphResponse>,
}

impl FleetReport {
    /// Records that should come out: every one sent, except those in dropped chunks.
    pub fn expected_out(&self) -> u64 {
        self.traffic.records - self.delivery.records_dropped
    }

    /// Whether every flow sent came out exactly once, and nothing else did.
    pub fn counts_add_up(&self) -> bool {
        self.delivery.records == self.traffic.records
            && self.tally.checked == self.expected_out()
            && self.collector.flows_out == self.tally.checked
            && self.tally.unknown() == 0
            && self.missing == 0
            && self.delivery.undelivered == 0
            && self.collector.duplicates == self.delivery.duplicated
            && self.collector.decode_errors == 0
            && self.routed_records_add_up()
    }

    /// Whether every record routed by connection reached a node that attributed it
    /// (trivially true with the other routings, which route nothing).
    pub fn routed_records_add_up(&self) -> bool {
        let c = &self.collector;
        c.route_errors == 0
            && c.intake_errors == 0
            && c.routed_decode_errors == 0
            && c.routed_messages_in == c.routed_messages_out
            && c.routed_records_in == c.routed_records_out
            && (self.config.routing != Routing::ByConnection
                || c.routed_records_out == c.records_in)
    }

    /// Whether the windows' completeness records are right: a window every chunk of
    /// which arrived adds up, one with chunks missing does not (the simulated hosts
    /// lose nothing, so nothing explains them), every window's last chunk carried its
    /// completeness, and every interim record came out.
    pub fn windows_are_right(&self) -> bool {
        let w = &self.windows;
        w.all_chunks_not_adding_up == 0
            && w.missing_chunks_adding_up == 0
            && w.without_completeness == 0
            && w.total() > 0
            && w.records_received + w.interim_received <= self.collector.flows_out
    }

    /// Whether each window's chunks all reach one node, so that its completeness
    /// record can be judged: one node, or chunks to their intake node by host (by
    /// host, or by connection, whose intakes count the windows). Round robin splits
    /// a window's chunks across nodes, each of which reports what it saw.
    pub fn windows_judged(&self) -> bool {
        self.config.nodes == 1 || self.config.routing.host_affinity()
    }

    /// Whether the run passes: nothing misattributed, the counts add up, and the
    /// windows' completeness records are right (where they can be judged).
    pub fn passed(&self) -> bool {
        self.tally.misattributed == 0
            && self.counts_add_up()
            && (!self.windows_judged() || self.windows_are_right())
            && self.collector.heartbeat_decode_errors == 0
    }

    /// Flows attributed correctly, percent of the flows checked.
    pub fn attributed_percent(&self) -> f64 {
        percent(self.tally.correct(), self.tally.checked)
    }

    /// Heartbeat messages published per simulated minute of traffic per 1,000 hosts
    /// (every node's together: each record's claim is published by the one node that
    /// received its chunk, routed by connection too: its intake).
    pub fn heartbeats_per_minute_per_1000_hosts(&self) -> f64 {
        self.per_minute_per_1000_hosts(self.collector.heartbeats_out)
    }

    /// Their bytes (encoded messages, without Kafka's framing) per simulated minute
    /// per 1,000 hosts.
    pub fn heartbeat_bytes_per_minute_per_1000_hosts(&self) -> f64 {
        self.per_minute_per_1000_hosts(self.collector.heartbeat_bytes_out)
    }

    /// Connection-topic messages written per simulated minute of traffic per 1,000
    /// hosts (routed by connection).
    pub fn routed_messages_per_minute_per_1000_hosts(&self) -> f64 {
        self.per_minute_per_1000_hosts(self.collector.routed_messages_out)
    }

    /// Their bytes (encoded messages, without Kafka's framing) per simulated minute
    /// per 1,000 hosts.
    pub fn routed_bytes_per_minute_per_1000_hosts(&self) -> f64 {
        self.per_minute_per_1000_hosts(self.collector.routed_bytes_out)
    }

    fn per_minute_per_1000_hosts(&self, n: u64) -> f64 {
        let c = &self.config;
        n as f64 / f64::from(c.minutes.max(1)) * 1000.0 / f64::from(c.hosts.max(1))
    }

    /// Unattributed flows, percent of the flows checked.
    pub fn unattributed_percent(&self) -> f64 {
        percent(self.tally.unattributed_total(), self.tally.checked)
    }

    /// Unattributed flows whose truth had a name, percent of the flows whose truth
    /// had one.
    pub fn unattributed_answerable_percent(&self) -> f64 {
        let answerable = self.tally.checked - self.tally.unanswerable;
        percent(self.tally.unattributed_answerable_total(), answerable)
    }

    /// Flows per second of the collector side.
    pub fn throughput(&self) -> f64 {
        self.collector.flows_out as f64 / self.collector_time.as_secs_f64().max(1e-9)
    }

    /// Ownership map bytes per tracked IP, at the map's largest.
    pub fn bytes_per_ip(&self) -> f64 {
        self.peak_map.map_bytes as f64 / self.peak_map.tracked_ips.max(1) as f64
    }

    /// Ownership map bytes per range, at the map's largest.
    pub fn bytes_per_range(&self) -> f64 {
        self.peak_map.map_bytes as f64 / self.peak_map.ranges.max(1) as f64
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let c = &self.config;
        let t = &self.tally;
        let reasons = |counts: &[u64]| -> Value {
            RemoteUnattributedReason::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), json!(counts[r.index()])))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let kinds: serde_json::Map<String, Value> = ConnKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), json!(self.traffic.of(*k))))
            .collect();
        let s = &self.final_stats;
        let config = json!({
            "hosts": c.hosts,
            "workloads_per_host": c.workloads_per_host,
            "minutes": c.minutes,
            "connections_per_minute": c.connections_per_minute,
            "seed": c.seed,
            "drop_chunks": c.drop_chunks,
            "duplicate_chunks": c.duplicate_chunks,
            "late_chunks": c.late_chunks,
            "reorder_chunks": c.reorder_chunks,
            "max_late_s": c.max_late.as_secs_f64(),
            "max_skew_s": c.max_skew.as_secs_f64(),
            "hold_back_s": c.hold_back.as_secs_f64(),
            "tolerance_s": c.tolerance.as_secs_f64(),
            "mean_lifetime_s": c.mean_lifetime.as_secs_f64(),
        });
        let map = json!({
            "peak_map_bytes": self.peak_map.map_bytes,
            "peak_tracked_ips": self.peak_map.tracked_ips,
            "peak_ranges": self.peak_map.ranges,
            "bytes_per_ip": self.bytes_per_ip(),
            "bytes_per_range": self.bytes_per_range(),
            "peak_held": self.peak_map.held,
            "peak_peer_index_entries": self.peak_map.peer_index_entries,
            "final_tracked_ips": s.tracked_ips,
            "final_ranges": s.ranges,
            "final_map_bytes": s.map_bytes,
            "heartbeats": s.heartbeats,
            "heartbeats_too_old": s.heartbeats_too_old,
            "conflicts": s.conflicts,
            "ranges_evicted": s.ranges_evicted,
            "ranges_expired": s.ranges_expired,
        });
        let windows = json!({
            "all_chunks": self.windows.of(WindowStatus::AllChunks),
            "chunks_missing": self.windows.of(WindowStatus::ChunksMissing),
            "last_chunk_missing": self.windows.of(WindowStatus::LastChunkMissing),
            "adding_up": self.windows.adding_up,
            "all_chunks_not_adding_up": self.windows.all_chunks_not_adding_up,
            "late_chunks": self.windows.late_chunks,
            "right": self.windows_are_right(),
        });
        let mut report = json!({
            "config": config,
            "passed": self.passed(),
            "counts_add_up": self.counts_add_up(),
            "workloads": self.workloads,
            "connections": self.traffic.total(),
            "connections_by_kind": kinds,
            "flows": self.traffic.records,
            "chunks": self.delivery.chunks,
            "chunks_dropped": self.delivery.dropped,
            "flows_in_dropped_chunks": self.delivery.records_dropped,
            "chunks_duplicated": self.delivery.duplicated,
            "chunks_late": self.delivery.late,
            "chunks_reordered": self.delivery.reordered,
            "duplicates_dropped_by_collector": self.collector.duplicates,
            "flows_out": self.collector.flows_out,
            "flows_expected_out": self.expected_out(),
            "flows_missing": self.missing,
            "flows_unknown": t.unknown(),
            "misattributed": t.misattributed,
            "misattributed_examples": self.examples,
            "attributed": {
                "peer_record": t.correct_peer_record,
                "heartbeat": t.correct_heartbeat,
                "static": t.correct_static,
            },
            "unattributed": t.unattributed_total(),
            "unattributed_percent": self.unattributed_percent(),
            "unattributed_by_reason": reasons(&t.unattributed),
            "unattributed_without_reason": t.unattributed_without_reason,
            "truth_without_name": t.unanswerable,
            "unattributed_answerable": t.unattributed_answerable_total(),
            "unattributed_answerable_percent": self.unattributed_answerable_percent(),
            "unattributed_answerable_by_reason": reasons(&t.unattributed_answerable),
            "collector_seconds": self.collector_time.as_secs_f64(),
            "collector_flows_per_second": self.throughput(),
            "collector_decode_seconds": self.stages.decode.as_secs_f64(),
            "collector_attribute_seconds": self.stages.attribute.as_secs_f64(),
            "collector_serialize_seconds": self.stages.serialize.as_secs_f64(),
            "attribute_flows_per_second": self.collector.flows_out as f64 / self.stages.attribute.as_secs_f64().max(1e-9),
            "generation_seconds": self.generation_time.as_secs_f64(),
            "wall_seconds": self.wall_time.as_secs_f64(),
            "json_bytes": self.collector.json_bytes,
            "peak_rss_kib": self.peak_rss_kib,
            "map": map,
        });
        // Added after: one json! of every key would pass the macro's recursion limit.
        report["collector_windows_seconds"] = json!(self.stages.windows.as_secs_f64());
        report["interim_flows"] = json!(self.traffic.interim_records);
        report["interim_flows_out"] = json!(self.collector.interim_out);
        report["windows"] = windows;
        report["attributed_percent"] = json!(self.attributed_percent());
        report["decisions_digest"] = json!(format!("{:016x}", t.decisions));
        report["nodes"] = json!({
            "count": c.nodes,
            "routing": c.routing.as_str(),
            "heartbeat_delay_s": c.heartbeat_delay.as_secs_f64(),
            "connection_partitions": c.connection_partitions,
            "routing_delay_s": c.routing_delay_in_force().as_secs_f64(),
            "share_heartbeats": c.sharing(),
            "windows_judged": self.windows_judged(),
            "per_node": self.nodes.iter().map(|n| json!({
                "frames": n.collector.frames,
                "flows_out": n.collector.flows_out,
                "misattributed": n.tally.misattributed,
                "attributed": n.tally.correct(),
                "attributed_percent": n.attributed_percent(),
                "attributed_peer_record": n.tally.correct_peer_record,
                "attributed_heartbeat": n.tally.correct_heartbeat,
                "attributed_static": n.tally.correct_static,
                "unattributed": n.tally.unattributed_total(),
                "heartbeats_out": n.collector.heartbeats_out,
                "heartbeats_in": n.collector.heartbeats_in,
                "routed_records_out": n.collector.routed_records_out,
                "routed_records_in": n.collector.routed_records_in,
                "seconds": n.busy.as_secs_f64(),
                "peak_map_bytes": n.peak_map.map_bytes,
            })).collect::<Vec<_>>(),
        });
        report["heartbeats"] = json!({
            "messages": self.collector.heartbeats_out,
            "bytes": self.collector.heartbeat_bytes_out,
            "ranges": self.collector.heartbeat_ranges_out,
            "decode_errors": self.collector.heartbeat_decode_errors,
            "applied": self.collector.heartbeats_in,
            "messages_per_minute_per_1000_hosts": self.heartbeats_per_minute_per_1000_hosts(),
            "bytes_per_minute_per_1000_hosts": self.heartbeat_bytes_per_minute_per_1000_hosts(),
            "bytes_per_message": self.collector.heartbeat_bytes_out as f64
                / self.collector.heartbeats_out.max(1) as f64,
            "ranges_too_old": s.heartbeat_ranges_remote_too_old,
            "seconds": self.stages.heartbeats.as_secs_f64(),
        });
        if c.routing == Routing::ByConnection {
            let k = &self.collector;
            report["connection_topic"] = json!({
                "partitions": c.connection_partitions,
                "messages": k.routed_messages_out,
                "records": k.routed_records_out,
                "bytes": k.routed_bytes_out,
                "messages_in": k.routed_messages_in,
                "records_in": k.routed_records_in,
                "decode_errors": k.routed_decode_errors,
                "route_errors": k.route_errors,
                "intake_errors": k.intake_errors,
                "messages_per_minute_per_1000_hosts": self.routed_messages_per_minute_per_1000_hosts(),
                "bytes_per_minute_per_1000_hosts": self.routed_bytes_per_minute_per_1000_hosts(),
                "bytes_per_record": k.routed_bytes_out as f64 / k.routed_records_out.max(1) as f64,
                "seconds": self.stages.route.as_secs_f64(),
                "intake_attributor_seconds": self.stages.intake.as_secs_f64(),
            });
        }
        report
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let t = &self.tally;
        let d = &self.delivery;
        writeln!(
            f,
            "fleet: {} hosts x {} workloads, {} min, {} connections/host/min, seed {}; {} workloads ran",
            c.hosts,
            c.workloads_per_host,
            c.minutes,
            c.connections_per_minute,
            c.seed,
            self.workloads
        )?;
        writeln!(
            f,
            "faults: drop {} duplicate {} late {} (up to {:?}) reorder {}; skew up to {:?}; hold-back {:?}",
            c.drop_chunks,
            c.duplicate_chunks,
            c.late_chunks,
            c.max_late,
            c.reorder_chunks,
            c.max_skew,
            c.hold_back
        )?;
        if c.generate_only {
            writeln!(f, "generate only: nothing was delivered to the collector")?;
        }
        write!(f, "connections: {}", self.traffic.total())?;
        for k in ConnKind::ALL {
            write!(f, ", {} {}", k.as_str(), self.traffic.of(k))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "chunks: {} sent, {} dropped ({} flows), {} duplicated ({} dropped by the collector), {} late, {} reordered",
            d.chunks,
            d.dropped,
            d.records_dropped,
            d.duplicated,
            self.collector.duplicates,
            d.late,
            d.reordered
        )?;
        let w = &self.windows;
        writeln!(
            f,
            "windows: {} reported ({} all chunks, {} chunks missing, {} last chunk missing), {} add up, {} with every chunk do not, {} late chunks: {}",
            w.total(),
            w.of(WindowStatus::AllChunks),
            w.of(WindowStatus::ChunksMissing),
            w.of(WindowStatus::LastChunkMissing),
            w.adding_up,
            w.all_chunks_not_adding_up,
            w.late_chunks,
            if !self.windows_judged() {
                "not judged (round robin splits each window's chunks across nodes)"
            } else if self.windows_are_right() {
                "right"
            } else {
                "WRONG"
            }
        )?;
        writeln!(
            f,
            "flows: {} generated ({} interim), {} expected out, {} out, {} missing, {} unknown or twice: {}",
            self.traffic.records,
            self.traffic.interim_records,
            self.expected_out(),
            self.collector.flows_out,
            self.missing,
            t.unknown(),
            if self.counts_add_up() {
                "counts add up"
            } else {
                "COUNTS DO NOT ADD UP"
            }
        )?;
        writeln!(
            f,
            "attributed correctly: {} (peer_record {}, heartbeat {}, static {})",
            t.correct(),
            t.correct_peer_record,
            t.correct_heartbeat,
            t.correct_static
        )?;
        write!(
            f,
            "unattributed: {} ({:.2}%; {} of them had no name to give)",
            t.unattributed_total(),
            self.unattributed_percent(),
            t.unanswerable
        )?;
        for r in RemoteUnattributedReason::ALL {
            let n = t.unattributed[r.index()];
            if n > 0 {
                write!(f, ", {} {}", r.as_str(), n)?;
            }
        }
        writeln!(f)?;
        write!(
            f,
            "unattributed although the truth had a name: {} ({:.2}%)",
            t.unattributed_answerable_total(),
            self.unattributed_answerable_percent()
        )?;
        for r in RemoteUnattributedReason::ALL {
            let n = t.unattributed_answerable[r.index()];
            if n > 0 {
                write!(f, ", {} {}", r.as_str(), n)?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "attributed: {:.2}% of the flows checked",
            self.attributed_percent()
        )?;
        writeln!(f, "MISATTRIBUTED: {}", t.misattributed)?;
        for (i, e) in self.examples.iter().enumerate() {
            writeln!(f, "--- misattribution {} ---\n{}", i + 1, e.trim_end())?;
        }
        writeln!(
            f,
            "collector (decode + dedup + windows + attribute + serialize + heartbeats + routing + intake, one thread per node, nodes added up): {:.3} s, {:.0} flows/s (decode {:.3} s, windows {:.3} s, attribute {:.3} s, serialize {:.3} s, heartbeats {:.3} s, routing {:.3} s, intake attributor {:.3} s)",
            self.collector_time.as_secs_f64(),
            self.throughput(),
            self.stages.decode.as_secs_f64(),
            self.stages.windows.as_secs_f64(),
            self.stages.attribute.as_secs_f64(),
            self.stages.serialize.as_secs_f64(),
            self.stages.heartbeats.as_secs_f64(),
            self.stages.route.as_secs_f64(),
            self.stages.intake.as_secs_f64()
        )?;
        writeln!(
            f,
            "generation {:.3} s, wall {:.3} s, peak RSS {:.1} MiB (simulator and collector)",
            self.generation_time.as_secs_f64(),
            self.wall_time.as_secs_f64(),
            self.peak_rss_kib as f64 / 1024.0
        )?;
        if c.sharing() {
            let k = &self.collector;
            writeln!(
                f,
                "heartbeats: {} published ({} bytes, {:.1} bytes each, {} ranges), {} applied by the nodes, {} decode errors; {:.0} messages and {:.0} bytes per simulated minute per 1,000 hosts; {:.3} s taking, encoding and decoding",
                k.heartbeats_out,
                k.heartbeat_bytes_out,
                k.heartbeat_bytes_out as f64 / k.heartbeats_out.max(1) as f64,
                k.heartbeat_ranges_out,
                k.heartbeats_in,
                k.heartbeat_decode_errors,
                self.heartbeats_per_minute_per_1000_hosts(),
                self.heartbeat_bytes_per_minute_per_1000_hosts(),
                self.stages.heartbeats.as_secs_f64()
            )?;
        }
        if c.routing == Routing::ByConnection {
            let k = &self.collector;
            writeln!(
                f,
                "connection topic ({} partitions, records {:?} late): {} messages ({} records, {} bytes, {:.1} bytes a record), {} taken ({} records), {} decode errors, {} route errors: {}; {:.0} messages and {:.0} bytes per simulated minute per 1,000 hosts; {:.3} s routing, encoding and decoding",
                c.connection_partitions,
                c.routing_delay,
                k.routed_messages_out,
                k.routed_records_out,
                k.routed_bytes_out,
                k.routed_bytes_out as f64 / k.routed_records_out.max(1) as f64,
                k.routed_messages_in,
                k.routed_records_in,
                k.routed_decode_errors,
                k.route_errors,
                if self.routed_records_add_up() {
                    "every record routed was attributed"
                } else {
                    "ROUTED RECORDS DO NOT ADD UP"
                },
                self.routed_messages_per_minute_per_1000_hosts(),
                self.routed_bytes_per_minute_per_1000_hosts(),
                self.stages.route.as_secs_f64()
            )?;
        }
        if self.nodes.len() > 1 {
            writeln!(
                f,
                "{} nodes, chunks {}, heartbeats {:?} late:",
                self.nodes.len(),
                c.routing.as_str(),
                c.heartbeat_delay
            )?;
            for (i, n) in self.nodes.iter().enumerate() {
                writeln!(
                    f,
                    "  node {i}: {} frames, {} records routed out, {} in, {} flows out, {} attributed ({:.2}%: peer_record {}, heartbeat {}, static {}), {} unattributed, {} misattributed; heartbeats {} out, {} in; {:.3} s",
                    n.collector.frames,
                    n.collector.routed_records_out,
                    n.collector.routed_records_in,
                    n.collector.flows_out,
                    n.tally.correct(),
                    n.attributed_percent(),
                    n.tally.correct_peer_record,
                    n.tally.correct_heartbeat,
                    n.tally.correct_static,
                    n.tally.unattributed_total(),
                    n.tally.misattributed,
                    n.collector.heartbeats_out,
                    n.collector.heartbeats_in,
                    n.busy.as_secs_f64()
                )?;
            }
        }
        let s = &self.final_stats;
        writeln!(
            f,
            "ownership map at its largest: {} bytes, {} IPs, {} ranges: {:.1} bytes/IP, {:.1} bytes/range; held at most {}, peer index at most {}",
            self.peak_map.map_bytes,
            self.peak_map.tracked_ips,
            self.peak_map.ranges,
            self.bytes_per_ip(),
            self.bytes_per_range(),
            self.peak_map.held,
            self.peak_map.peer_index_entries
        )?;
        writeln!(
            f,
            "attributor at the end: {} heartbeats ({} too old), {} conflicts, {} ranges evicted, {} expired",
            s.heartbeats, s.heartbeats_too_old, s.conflicts, s.ranges_evicted, s.ranges_expired
        )?;
        if let Some(g) = &self.graph {
            let workloads = g.nodes.iter().filter(|n| n.kind == "workload").count();
            writeln!(
                f,
                "graph {} to {}: {} nodes ({} workloads), {} edges{}, {} flows ({:.1}% unattributed), {} edge-minutes folded, {} windows reported ({} incomplete)",
                g.from,
                g.to,
                g.nodes.len(),
                workloads,
                g.edges.len(),
                if g.truncated { " (truncated)" } else { "" },
                g.flows,
                g.unattributed_share * 100.0,
                g.folded.edges,
                g.windows.reported,
                g.windows.incomplete
            )?;
        }
        Ok(())
    }
}

//! The request as the sink first built it: prost messages (`super::super::proto`),
//! every attribute key and value its own `String`, encoded with
//! `prost::Message::encode_to_vec`. Kept as the reference the hand-written encoder
//! ([`RequestEncoder::encode`]) must match byte for byte (the unit tests) and as the
//! bench's baseline; never on the sink's path.

use std::time::SystemTime;

use flow_batch::{Completeness, wire::DecodedChunk};
use flow_record::FlowRecord;
use prost::Message;

use super::{EVENT_NAME, RequestEncoder, SERVICE_NAME, SEVERITY_NUMBER, SEVERITY_TEXT, unix_nanos};
use crate::otlp_sink::proto::{
    AnyValue, ExportLogsServiceRequest, InstrumentationScope, KeyValue, LogRecord, Resource,
    ResourceLogs, ScopeLogs, Value,
};

impl RequestEncoder {
    /// What [`RequestEncoder::encode`] returns, built the slow way (prost messages,
    /// a `String` per attribute): the reference for the tests and the bench only.
    #[doc(hidden)]
    pub fn encode_reference(&self, chunk: &DecodedChunk, observed: SystemTime) -> Vec<u8> {
        self.request(chunk, observed).encode_to_vec()
    }

    /// `chunk` as a request message.
    fn request(&self, chunk: &DecodedChunk, observed: SystemTime) -> ExportLogsServiceRequest {
        let header = &chunk.header;
        let batch_id = header.batch_id().to_string();
        let observed = unix_nanos(observed);
        let log_records = chunk
            .records
            .iter()
            .enumerate()
            .map(|(index, record)| log_record(record, &batch_id, index, observed))
            .collect();
        let mut resource = Vec::with_capacity(5);
        resource.push(kv("host.id", text(&header.host)));
        if let Some(name) = &self.host_name {
            resource.push(kv("host.name", text(name)));
        }
        resource.push(kv("service.name", text(SERVICE_NAME)));
        resource.push(kv("service.version", text(&self.service_version)));
        resource.push(kv(
            "service.instance.id",
            text(&header.instance.to_string()),
        ));
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: resource,
                    dropped_attributes_count: 0,
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: SERVICE_NAME.to_owned(),
                        version: self.service_version.clone(),
                        attributes: scope_attributes(chunk),
                        dropped_attributes_count: 0,
                    }),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }
}

/// The chunk's own attributes, on its instrumentation scope: its window, position,
/// and the window's completeness on its last chunk.
fn scope_attributes(chunk: &DecodedChunk) -> Vec<KeyValue> {
    let h = &chunk.header;
    let mut attributes = vec![
        kv(
            "flowexporter.window.start_unix_nano",
            int_u64(h.window.start_ms().saturating_mul(1_000_000)),
        ),
        kv(
            "flowexporter.window.end_unix_nano",
            int_u64(h.window.end_ms().saturating_mul(1_000_000)),
        ),
        kv(
            "flowexporter.chunk.index",
            int_u64(u64::from(h.chunk_index)),
        ),
        kv("flowexporter.chunk.last", Value::BoolValue(h.last)),
    ];
    if let Some(c) = &chunk.completeness {
        attributes.extend(completeness_attributes(c));
    }
    attributes
}

/// A window's completeness as scope attributes (`flowexporter.completeness.*`, named
/// as the collector's completeness records name them).
fn completeness_attributes(c: &Completeness) -> [KeyValue; 10] {
    let n = |key: &'static str, v: u64| kv(key, int_u64(v));
    [
        kv(
            "flowexporter.completeness.running_whole_window",
            Value::BoolValue(c.running_whole_window),
        ),
        n("flowexporter.completeness.closes_seen", c.closes_seen),
        n(
            "flowexporter.completeness.records_emitted",
            c.records_emitted,
        ),
        n("flowexporter.completeness.lost_ring_full", c.lost_ring_full),
        n("flowexporter.completeness.lost_recursion", c.lost_recursion),
        n("flowexporter.completeness.lost_journal", c.lost_journal),
        n("flowexporter.completeness.lost_spool", c.lost_spool),
        n(
            "flowexporter.completeness.interim_records",
            c.interim_records,
        ),
        n(
            "flowexporter.completeness.records_replayed",
            c.records_replayed,
        ),
        n(
            "flowexporter.completeness.records_expected",
            c.records_expected(),
        ),
    ]
}

/// One record as a log record: its attributes in the order of `docs/schema.md`'s
/// table, fields without a value (null) left out, then `network.transport` and
/// `network.type`.
fn log_record(record: &FlowRecord, batch_id: &str, index: usize, observed: u64) -> LogRecord {
    let s = &record.stats;
    let mut a = Vec::with_capacity(32);
    a.push(kv("source.address", text(&record.local.ip().to_string())));
    a.push(kv("source.port", int(i64::from(record.local.port()))));
    a.push(kv(
        "destination.address",
        text(&record.remote.ip().to_string()),
    ));
    a.push(kv("destination.port", int(i64::from(record.remote.port()))));
    a.push(kv(
        "flowexporter.direction",
        text(record.direction.as_str()),
    ));
    if let Some(t_start) = record.t_start {
        a.push(kv("flowexporter.t_start", int_u64(unix_nanos(t_start))));
    }
    a.push(kv("flowexporter.bytes_sent", int_u64(s.bytes_sent)));
    a.push(kv("flowexporter.bytes_received", int_u64(s.bytes_received)));
    a.push(kv("flowexporter.segments_in", int(i64::from(s.segs_in))));
    a.push(kv("flowexporter.segments_out", int(i64::from(s.segs_out))));
    a.push(kv(
        "flowexporter.tcp.retransmits",
        int(i64::from(s.retransmits)),
    ));
    a.push(kv("flowexporter.tcp.srtt_us", int(i64::from(s.srtt_us))));
    a.push(kv(
        "flowexporter.tcp.rttvar_us",
        int(i64::from(s.rttvar_us)),
    ));
    a.push(kv(
        "flowexporter.tcp.bytes_retransmitted",
        int_u64(s.bytes_retransmitted),
    ));
    a.push(kv(
        "flowexporter.tcp.close_state",
        text(record.close_state.as_str()),
    ));
    // An interim record's connection has not closed: no reason (null in JSON).
    if record.record_kind == flow_record::RecordKind::Final {
        a.push(kv(
            "flowexporter.tcp.close_reason",
            Value::StringValue(record.close_reason.as_str().into_owned()),
        ));
    }
    if let Some(w) = &record.local_workload_id {
        a.push(kv("flowexporter.source.workload", text(w.as_str())));
    }
    a.push(kv(
        "flowexporter.source.identity_source",
        text(record.identity_source.as_str()),
    ));
    if let Some(reason) = record.identity_source.unattributed_reason() {
        a.push(kv(
            "flowexporter.source.unattributed_reason",
            text(reason.as_str()),
        ));
    }
    a.push(kv(
        "flowexporter.incomplete",
        Value::BoolValue(record.incomplete),
    ));
    a.push(kv(
        "flowexporter.record_kind",
        text(record.record_kind.as_str()),
    ));
    if let Some(id) = &record.flow_id {
        a.push(kv("flowexporter.flow_id", text(&id.to_string())));
    }
    if let Some(p) = &record.process {
        a.push(kv("process.pid", int(i64::from(p.pid))));
        a.push(kv("process.executable.name", text(&p.comm())));
        // An ID: kept bit for bit (a receiver reads it back as u64).
        a.push(kv(
            "flowexporter.cgroup_id",
            int(i64::from_ne_bytes(p.cgroup_id.to_ne_bytes())),
        ));
    }
    a.push(kv("flowexporter.batch_id", text(batch_id)));
    a.push(kv(
        "flowexporter.record_index",
        int(i64::try_from(index).unwrap_or(i64::MAX)),
    ));
    a.push(kv("network.transport", text("tcp")));
    a.push(kv(
        "network.type",
        text(if record.local.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        }),
    ));
    LogRecord {
        time_unix_nano: unix_nanos(record.t_end),
        observed_time_unix_nano: observed,
        severity_number: SEVERITY_NUMBER,
        severity_text: SEVERITY_TEXT.to_owned(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(format!(
                "tcp {} -> {} ({}, {})",
                record.local,
                record.remote,
                record.direction.as_str(),
                record.record_kind.as_str()
            ))),
        }),
        attributes: a,
        dropped_attributes_count: 0,
        flags: 0,
        trace_id: Vec::new(),
        span_id: Vec::new(),
        event_name: EVENT_NAME.to_owned(),
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn text(s: &str) -> Value {
    Value::StringValue(s.to_owned())
}

fn int(v: i64) -> Value {
    Value::IntValue(v)
}

/// A count or time as OTLP's int64: `i64::MAX` above it.
fn int_u64(v: u64) -> Value {
    Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX))
}

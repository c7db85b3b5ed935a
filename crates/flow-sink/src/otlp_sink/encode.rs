//! A decoded chunk as one `ExportLogsServiceRequest`: every record a log record with
//! the attributes of `docs/schema.md`'s OpenTelemetry column, the host as the
//! resource, the chunk (its window, and its completeness on a window's last chunk) as
//! the instrumentation scope's attributes. See the [module docs](super#what-is-sent).

//!
//! The protobuf is written by hand ([`pb`]) into one buffer, every key a constant
//! and every value written without a heap allocation of its own: the request is
//! byte for byte what prost makes of the same messages (`proto.rs`, fields in field
//! number order, proto3 defaults left out), which the unit tests check against the
//! prost-built [reference](RequestEncoder::encode_reference).

mod pb;
mod reference;

use std::{
    fmt::Write as _,
    io::Write,
    net::{Ipv4Addr, SocketAddr},
    ops::Range,
    time::{SystemTime, UNIX_EPOCH},
};

use flow_batch::{Completeness, wire::DecodedChunk};
use flow_record::{FlowId, FlowRecord};

use self::pb::{I64, LEN, StackText, VARINT, Value, key};

/// `service.name` and the instrumentation scope's name.
pub const SERVICE_NAME: &str = "flowexporter";
/// Every log record's `event_name`.
pub const EVENT_NAME: &str = "flowexporter.flow";
/// Every log record's `severity_number`: `SEVERITY_NUMBER_INFO`.
pub const SEVERITY_NUMBER: i32 = 9;
/// Every log record's `severity_text`.
pub const SEVERITY_TEXT: &str = "INFO";

/// How a request body is compressed ([`OtlpSinkConfig::compression`](super::OtlpSinkConfig::compression)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Sent as it is, without `Content-Encoding`.
    None,
    /// gzip (`Content-Encoding: gzip`), at zlib's fastest level (1): OTLP's repeated
    /// attribute keys compress about as well there as at higher levels, for much
    /// less CPU.
    #[default]
    Gzip,
}

impl Compression {
    /// The `Content-Encoding` header's value, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
        }
    }

    /// `body` compressed (or as it is, without compression). Compressing into memory
    /// fails only if the compressor does.
    pub fn apply(self, body: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(body),
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 8 + 64),
                    flate2::Compression::fast(),
                );
                gz.write_all(&body)?;
                gz.finish()
            }
        }
    }
}

/// Builds OTLP logs requests from decoded chunks; see the
/// [module docs](super#what-is-sent) for the mapping.
#[derive(Clone, Debug)]
pub struct RequestEncoder {
    service_version: String,
    host_name: Option<String>,
}

/// Field keys, by message (see `proto.rs` for the field numbers).
mod keys {
    use super::{I64, LEN, VARINT, key};

    /// `ExportLogsServiceRequest.resource_logs`.
    pub const RESOURCE_LOGS: u8 = key(1, LEN);
    /// `ResourceLogs.resource`.
    pub const RESOURCE: u8 = key(1, LEN);
    /// `ResourceLogs.scope_logs`.
    pub const SCOPE_LOGS: u8 = key(2, LEN);
    /// `Resource.attributes`.
    pub const RESOURCE_ATTRIBUTES: u8 = key(1, LEN);
    /// `ScopeLogs.scope`.
    pub const SCOPE: u8 = key(1, LEN);
    /// `ScopeLogs.log_records`.
    pub const LOG_RECORDS: u8 = key(2, LEN);
    /// `InstrumentationScope.name`.
    pub const SCOPE_NAME: u8 = key(1, LEN);
    /// `InstrumentationScope.version`.
    pub const SCOPE_VERSION: u8 = key(2, LEN);
    /// `InstrumentationScope.attributes`.
    pub const SCOPE_ATTRIBUTES: u8 = key(3, LEN);
    /// `LogRecord.time_unix_nano`.
    pub const TIME: u8 = key(1, I64);
    /// `LogRecord.severity_number`.
    pub const SEVERITY_NUMBER: u8 = key(2, VARINT);
    /// `LogRecord.severity_text`.
    pub const SEVERITY_TEXT: u8 = key(3, LEN);
    /// `LogRecord.body`.
    pub const BODY: u8 = key(5, LEN);
    /// `LogRecord.attributes`.
    pub const ATTRIBUTES: u8 = key(6, LEN);
    /// `LogRecord.observed_time_unix_nano`.
    pub const OBSERVED_TIME: u8 = key(11, I64);
    /// `LogRecord.event_name`.
    pub const EVENT_NAME: u8 = key(12, LEN);
    /// `AnyValue.string_value`.
    pub const STRING_VALUE: u8 = key(1, LEN);
}

/// Bytes guessed per log record, to size the buffer and the length slots of the
/// messages around them (the length is exact whatever the guess).
const RECORD_BYTES_GUESS: usize = 1_200;

impl RequestEncoder {
    /// An encoder naming the service version `service_version` and, when given, the
    /// host's name (`host.name`) in every request's resource.
    pub fn new(service_version: impl Into<String>, host_name: Option<String>) -> RequestEncoder {
        RequestEncoder {
            service_version: service_version.into(),
            host_name,
        }
    }

    /// `chunk` as the protobuf bytes of one `ExportLogsServiceRequest` (not
    /// compressed), its records observed at `observed`.
    pub fn encode(&self, chunk: &DecodedChunk, observed: SystemTime) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(chunk, observed, &mut out);
        out
    }

    /// [`encode`](RequestEncoder::encode) into `out`, cleared first: a caller
    /// building request after request keeps one buffer.
    pub fn encode_into(&self, chunk: &DecodedChunk, observed: SystemTime, out: &mut Vec<u8>) {
        use keys::*;
        let batch_id = chunk.header.batch_id().to_string();
        let observed = unix_nanos(observed);
        let records_guess = chunk.records.len().saturating_mul(RECORD_BYTES_GUESS);
        out.clear();
        out.reserve(records_guess.saturating_add(4_096));
        let width = pb::varint_len(records_guess as u64 + 1_024);

        let resource_logs = pb::open(out, RESOURCE_LOGS, width);
        self.resource(out, chunk);
        let scope_logs = pb::open(out, SCOPE_LOGS, width);
        self.scope(out, chunk);
        for (index, record) in chunk.records.iter().enumerate() {
            log_record(out, record, &batch_id, index, observed);
        }
        pb::close(out, scope_logs);
        pb::close(out, resource_logs);
    }

    /// `chunk`'s resource, scope and log records, each encoded once, its records
    /// observed at `observed`: what [`EncodedChunk::request_into`] makes requests of,
    /// each with some of the records (their `flowexporter.record_index` their
    /// positions in the chunk, whatever request they are in).
    pub fn encode_parts(&self, chunk: &DecodedChunk, observed: SystemTime) -> EncodedChunk {
        let batch_id = chunk.header.batch_id().to_string();
        let observed = unix_nanos(observed);
        let mut resource = Vec::with_capacity(256);
        self.resource(&mut resource, chunk);
        let mut scope = Vec::with_capacity(1_024);
        self.scope(&mut scope, chunk);
        let mut records =
            Vec::with_capacity(chunk.records.len().saturating_mul(RECORD_BYTES_GUESS));
        let mut ends = Vec::with_capacity(chunk.records.len());
        for (index, record) in chunk.records.iter().enumerate() {
            log_record(&mut records, record, &batch_id, index, observed);
            ends.push(records.len());
        }
        EncodedChunk {
            resource,
            scope,
            records,
            ends,
        }
    }

    /// The `resource` field of the `ResourceLogs`: the host and the service.
    fn resource(&self, out: &mut Vec<u8>, chunk: &DecodedChunk) {
        use keys::*;
        let header = &chunk.header;
        let resource = pb::open(out, RESOURCE, 2);
        let text = |out: &mut Vec<u8>, k: &str, v: &str| {
            pb::attribute(out, RESOURCE_ATTRIBUTES, k, Value::Str(v.as_bytes()))
        };
        text(out, "host.id", &header.host);
        if let Some(name) = &self.host_name {
            text(out, "host.name", name);
        }
        text(out, "service.name", SERVICE_NAME);
        text(out, "service.version", &self.service_version);
        let mut instance = StackText::<32>::new();
        // 32 hex digits: always fits.
        let _ = write!(instance, "{}", header.instance);
        match instance.bytes() {
            Some(id) => pb::attribute(
                out,
                RESOURCE_ATTRIBUTES,
                "service.instance.id",
                Value::Str(id),
            ),
            None => text(out, "service.instance.id", &header.instance.to_string()),
        }
        pb::close(out, resource);
    }

    /// The `scope` field of the `ScopeLogs`: the instrumentation scope, with the
    /// chunk's attributes.
    fn scope(&self, out: &mut Vec<u8>, chunk: &DecodedChunk) {
        use keys::*;
        let scope = pb::open(out, SCOPE, 2);
        pb::bytes(out, SCOPE_NAME, SERVICE_NAME.as_bytes());
        if !self.service_version.is_empty() {
            pb::bytes(out, SCOPE_VERSION, self.service_version.as_bytes());
        }
        scope_attributes(out, chunk);
        pb::close(out, scope);
    }
}

/// A chunk encoded in parts ([`RequestEncoder::encode_parts`]): its resource, its
/// scope and its log records, from which requests with any run of its records are
/// assembled without encoding anything again.
#[derive(Clone, Debug)]
pub struct EncodedChunk {
    /// `ResourceLogs.resource`, key and length included.
    resource: Vec<u8>,
    /// `ScopeLogs.scope`, key and length included.
    scope: Vec<u8>,
    /// Every `ScopeLogs.log_records` field, keys and lengths included, in order.
    records: Vec<u8>,
    /// Where each record ends in `records`.
    ends: Vec<usize>,
}

impl EncodedChunk {
    /// The chunk's records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the chunk has no records (its request still carries its scope).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where the records of `range` lie in `records`.
    fn span(&self, range: &Range<usize>) -> Range<usize> {
        let start = match range.start {
            0 => 0,
            n => self.ends[n - 1],
        };
        let end = match range.end {
            0 => 0,
            n => self.ends[n - 1],
        };
        start..end.max(start)
    }

    /// The lengths of the `ScopeLogs` and the `ResourceLogs` of a request with
    /// `records_len` bytes of log records.
    fn lengths(&self, records_len: usize) -> (usize, usize) {
        let scope_logs = self.scope.len() + records_len;
        let resource_logs =
            self.resource.len() + 1 + pb::varint_len(scope_logs as u64) + scope_logs;
        (scope_logs, resource_logs)
    }

    /// Bytes of the request with the records of `range` (not compressed).
    ///
    /// # Panics
    ///
    /// If `range` goes past the chunk's records.
    pub fn request_len(&self, range: Range<usize>) -> usize {
        let span = self.span(&range);
        let (_, resource_logs) = self.lengths(span.len());
        1 + pb::varint_len(resource_logs as u64) + resource_logs
    }

    /// The request (`ExportLogsServiceRequest`, not compressed) with the records of
    /// `range` (all of them for `0..len()`: what [`RequestEncoder::encode`] makes of
    /// the chunk), into `out`, cleared first.
    ///
    /// # Panics
    ///
    /// If `range` goes past the chunk's records.
    pub fn request_into(&self, range: Range<usize>, out: &mut Vec<u8>) {
        use keys::*;
        let span = self.span(&range);
        let (scope_logs, resource_logs) = self.lengths(span.len());
        out.clear();
        out.reserve(resource_logs + 12);
        out.push(RESOURCE_LOGS);
        pb::varint(out, resource_logs as u64);
        out.extend_from_slice(&self.resource);
        out.push(SCOPE_LOGS);
        pb::varint(out, scope_logs as u64);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(&self.records[span]);
    }

    /// The records of the next request from record `from`: as many as fit in
    /// `max_bytes` (the request's bytes, not compressed) and `max_records`, at
    /// least one (a record larger than `max_bytes` alone); empty only when `from` is
    /// past the last record.
    pub fn next_request(&self, from: usize, max_bytes: usize, max_records: usize) -> Range<usize> {
        let from = from.min(self.len());
        let mut end = from;
        while end < self.len()
            && (end == from
                || (end - from < max_records && self.request_len(from..end + 1) <= max_bytes))
        {
            end += 1;
        }
        from..end
    }
}

/// The chunk's own attributes, on its instrumentation scope: its window, position,
/// and the window's completeness on its last chunk.
fn scope_attributes(out: &mut Vec<u8>, chunk: &DecodedChunk) {
    let h = &chunk.header;
    let n = |out: &mut Vec<u8>, k: &str, v: u64| {
        pb::attribute(out, keys::SCOPE_ATTRIBUTES, k, Value::Int(int_u64(v)))
    };
    n(
        out,
        "flowexporter.window.start_unix_nano",
        h.window.start_ms().saturating_mul(1_000_000),
    );
    n(
        out,
        "flowexporter.window.end_unix_nano",
        h.window.end_ms().saturating_mul(1_000_000),
    );
    n(out, "flowexporter.chunk.index", u64::from(h.chunk_index));
    pb::attribute(
        out,
        keys::SCOPE_ATTRIBUTES,
        "flowexporter.chunk.last",
        Value::Bool(h.last),
    );
    if let Some(c) = &chunk.completeness {
        completeness_attributes(out, c);
    }
}

/// A window's completeness as scope attributes (`flowexporter.completeness.*`, named
/// as the collector's completeness records name them).
fn completeness_attributes(out: &mut Vec<u8>, c: &Completeness) {
    let n = |out: &mut Vec<u8>, k: &str, v: u64| {
        pb::attribute(out, keys::SCOPE_ATTRIBUTES, k, Value::Int(int_u64(v)))
    };
    pb::attribute(
        out,
        keys::SCOPE_ATTRIBUTES,
        "flowexporter.completeness.running_whole_window",
        Value::Bool(c.running_whole_window),
    );
    n(out, "flowexporter.completeness.closes_seen", c.closes_seen);
    n(
        out,
        "flowexporter.completeness.records_emitted",
        c.records_emitted,
    );
    n(
        out,
        "flowexporter.completeness.lost_ring_full",
        c.lost_ring_full,
    );
    n(
        out,
        "flowexporter.completeness.lost_recursion",
        c.lost_recursion,
    );
    n(
        out,
        "flowexporter.completeness.lost_journal",
        c.lost_journal,
    );
    n(out, "flowexporter.completeness.lost_spool", c.lost_spool);
    n(
        out,
        "flowexporter.completeness.interim_records",
        c.interim_records,
    );
    n(
        out,
        "flowexporter.completeness.records_replayed",
        c.records_replayed,
    );
    n(
        out,
        "flowexporter.completeness.records_expected",
        c.records_expected(),
    );
}

/// One record as a log record (fields in field number order, as prost writes
/// them): its attributes in the order of `docs/schema.md`'s table, fields without a
/// value (null) left out, then `network.transport` and `network.type`.
fn log_record(out: &mut Vec<u8>, record: &FlowRecord, batch_id: &str, index: usize, observed: u64) {
    use keys::*;
    let s = &record.stats;
    // A record is some hundreds of bytes to a few KiB: 2 bytes of length.
    let log_record = pb::open(out, LOG_RECORDS, 2);
    let time = unix_nanos(record.t_end);
    if time != 0 {
        pb::fixed64(out, TIME, time);
    }
    out.push(keys::SEVERITY_NUMBER);
    // int32: a negative value would be sign-extended to 10 bytes.
    pb::varint(out, i64::from(self::SEVERITY_NUMBER) as u64);
    pb::bytes(out, keys::SEVERITY_TEXT, self::SEVERITY_TEXT.as_bytes());

    // The body, an AnyValue's string_value: `tcp <local> -> <remote> (<direction>,
    // <kind>)`.
    let body = pb::open(out, BODY, 1);
    let text = pb::open(out, STRING_VALUE, 1);
    out.extend_from_slice(b"tcp ");
    socket_addr(out, &record.local);
    out.extend_from_slice(b" -> ");
    socket_addr(out, &record.remote);
    out.extend_from_slice(b" (");
    out.extend_from_slice(record.direction.as_str().as_bytes());
    out.extend_from_slice(b", ");
    out.extend_from_slice(record.record_kind.as_str().as_bytes());
    out.push(b')');
    pb::close(out, text);
    pb::close(out, body);

    let a = |out: &mut Vec<u8>, k: &str, v: Value<'_>| pb::attribute(out, ATTRIBUTES, k, v);
    let str = |out: &mut Vec<u8>, k: &str, v: &str| a(out, k, Value::Str(v.as_bytes()));
    let int = |out: &mut Vec<u8>, k: &str, v: i64| a(out, k, Value::Int(v));
    let count = |out: &mut Vec<u8>, k: &str, v: u64| a(out, k, Value::Int(int_u64(v)));

    ip(out, "source.address", record.local);
    int(out, "source.port", i64::from(record.local.port()));
    ip(out, "destination.address", record.remote);
    int(out, "destination.port", i64::from(record.remote.port()));
    str(out, "flowexporter.direction", record.direction.as_str());
    if let Some(t_start) = record.t_start {
        count(out, "flowexporter.t_start", unix_nanos(t_start));
    }
    count(out, "flowexporter.bytes_sent", s.bytes_sent);
    count(out, "flowexporter.bytes_received", s.bytes_received);
    int(out, "flowexporter.segments_in", i64::from(s.segs_in));
    int(out, "flowexporter.segments_out", i64::from(s.segs_out));
    int(
        out,
        "flowexporter.tcp.retransmits",
        i64::from(s.retransmits),
    );
    int(out, "flowexporter.tcp.srtt_us", i64::from(s.srtt_us));
    int(out, "flowexporter.tcp.rttvar_us", i64::from(s.rttvar_us));
    count(
        out,
        "flowexporter.tcp.bytes_retransmitted",
        s.bytes_retransmitted,
    );
    str(
        out,
        "flowexporter.tcp.close_state",
        record.close_state.as_str(),
    );
    // An interim record's connection has not closed: no reason (null in JSON).
    if record.record_kind == flow_record::RecordKind::Final {
        // Borrowed but for an errno's name.
        str(
            out,
            "flowexporter.tcp.close_reason",
            &record.close_reason.as_str(),
        );
    }
    if let Some(w) = &record.local_workload_id {
        str(out, "flowexporter.source.workload", w.as_str());
    }
    str(
        out,
        "flowexporter.source.identity_source",
        record.identity_source.as_str(),
    );
    if let Some(reason) = record.identity_source.unattributed_reason() {
        str(
            out,
            "flowexporter.source.unattributed_reason",
            reason.as_str(),
        );
    }
    a(
        out,
        "flowexporter.incomplete",
        Value::Bool(record.incomplete),
    );
    str(out, "flowexporter.record_kind", record.record_kind.as_str());
    if let Some(id) = &record.flow_id {
        let mut text = [0u8; FlowId::TEXT_LEN];
        id.write_text(&mut text);
        a(out, "flowexporter.flow_id", Value::Str(&text));
    }
    if let Some(p) = &record.process {
        int(out, "process.pid", i64::from(p.pid));
        // Borrowed unless the name is not UTF-8.
        str(out, "process.executable.name", &p.comm());
        // An ID: kept bit for bit (a receiver reads it back as u64).
        int(
            out,
            "flowexporter.cgroup_id",
            i64::from_ne_bytes(p.cgroup_id.to_ne_bytes()),
        );
    }
    str(out, "flowexporter.batch_id", batch_id);
    int(
        out,
        "flowexporter.record_index",
        i64::try_from(index).unwrap_or(i64::MAX),
    );
    str(out, "network.transport", "tcp");
    str(
        out,
        "network.type",
        if record.local.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        },
    );

    if observed != 0 {
        pb::fixed64(out, OBSERVED_TIME, observed);
    }
    pb::bytes(out, keys::EVENT_NAME, self::EVENT_NAME.as_bytes());
    pb::close(out, log_record);
}

/// The attribute `key` = `addr`'s IP address as text (as `Display` writes it),
/// formatted on the stack.
fn ip(out: &mut Vec<u8>, key: &str, addr: SocketAddr) {
    // An IPv6 address is at most 45 characters (`ffff:...:255.255.255.255`).
    let mut text = StackText::<64>::new();
    match addr {
        SocketAddr::V4(a) => ipv4(&mut text, *a.ip()),
        SocketAddr::V6(a) => {
            let _ = write!(text, "{}", a.ip());
        }
    }
    match text.bytes() {
        Some(text) => pb::attribute(out, keys::ATTRIBUTES, key, Value::Str(text)),
        // Never: the address fits.
        None => {
            let text = addr.ip().to_string();
            pb::attribute(out, keys::ATTRIBUTES, key, Value::Str(text.as_bytes()));
        }
    }
}

/// `addr` as `Display` writes it (`10.0.0.1:443`, `[2001:db8::1]:443`).
fn socket_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            ipv4(out, *a.ip());
            out.push(b':');
            pb::decimal(out, u64::from(a.port()));
        }
        // std's, for its zero compression and scope ID; a Vec never fails.
        SocketAddr::V6(a) => {
            let _ = write!(pb::VecText(out), "{a}");
        }
    }
}

/// An IPv4 address as `Display` writes it: four decimal octets.
fn ipv4(out: &mut impl Extend<u8>, ip: Ipv4Addr) {
    let [a, b, c, d] = ip.octets();
    pb::decimal(out, u64::from(a));
    out.extend([b'.']);
    pb::decimal(out, u64::from(b));
    out.extend([b'.']);
    pb::decimal(out, u64::from(c));
    out.extend([b'.']);
    pb::decimal(out, u64::from(d));
}

/// ns since the Unix epoch: 0 before it, `u64::MAX` from 2554 on.
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A count or time as OTLP's int64: `i64::MAX` above it.
fn int_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv6Addr, SocketAddrV6},
        time::Duration,
    };

    use flow_batch::{
        Chunk, Window,
        wire::{ChunkDecoder, ChunkEncoder, DecodeLimits, InstanceId},
    };
    use flow_record::{
        CloseReason, Direction, IdentitySource, ProcessInfo, RecordKind, SocketStats, TcpState,
        UnattributedReason,
    };
    use prost::Message;

    use super::*;
    use crate::otlp_sink::proto::ExportLogsServiceRequest;

    /// Records varied in every field the request carries: both families (and
    /// addresses the wire format never carries: a scope ID, IPv4-mapped IPv6), every
    /// direction, interim and final, every null, every identity, close reasons
    /// with an errno, counts and IDs above `i64::MAX`, times at and before the epoch.
    fn records() -> Vec<FlowRecord> {
        let mut records = Vec::new();
        let directions = [Direction::Outbound, Direction::Inbound, Direction::Unknown];
        let reasons = [
            CloseReason::Normal,
            CloseReason::Refused,
            CloseReason::Reset,
            CloseReason::TimedOut,
            CloseReason::Error(113),
        ];
        let identities = [
            None,
            Some(IdentitySource::ConnectMap),
            Some(IdentitySource::IpMap),
            Some(IdentitySource::Certificate),
        ];
        let unattributed = [
            UnattributedReason::NoMatch,
            UnattributedReason::InvalidMapValue,
            UnattributedReason::CertificateMalformed,
        ];
        for n in 0..240u64 {
            let (local, remote): (SocketAddr, SocketAddr) = match n % 4 {
                0 => (
                    ([10, 0, (n % 256) as u8, 1], 443).into(),
                    ([192, 168, 255, (n * 7 % 256) as u8], 65_535).into(),
                ),
                1 => (
                    "[2001:db8::1]:30000".parse().expect("v6"),
                    SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n as u16),
                        0,
                        0,
                        if n % 8 == 1 { 4_294_967_295 } else { 0 },
                    )),
                ),
                2 => (
                    ([0, 0, 0, 0], 0).into(),
                    "[::ffff:10.1.2.3]:8080".parse().expect("mapped"),
                ),
                _ => (
                    ([255, 255, 255, 255], 1).into(),
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:9"
                        .parse()
                        .expect("v6"),
                ),
            };
            let big = n % 5 == 0;
            let mut b = flow_testkit::record()
                .local(local)
                .remote(remote)
                .direction(directions[n as usize % 3])
                .stats(SocketStats {
                    bytes_sent: if big { u64::MAX } else { n * 1_000_003 },
                    bytes_received: if big { i64::MAX as u64 + 1 } else { n },
                    segs_in: if big { u32::MAX } else { n as u32 },
                    segs_out: 0,
                    retransmits: (n % 3) as u32,
                    bytes_retransmitted: if big { i64::MAX as u64 } else { n * 3 },
                    srtt_us: (n * 13) as u32,
                    rttvar_us: u32::MAX - n as u32,
                })
                .close(TcpState((n % 13) as u8), reasons[n as usize % 5])
                .incomplete(n % 6 == 0)
                .flow_id((n % 7 != 0).then_some(FlowId {
                    boot_id: [n as u8; 16],
                    cookie: if big { u64::MAX } else { n },
                }));
            b = match identities[n as usize % 4] {
                Some(source) => b.workload(format!("k8s:ns/workload-{n}-ü"), source),
                None => b.unattributed(unattributed[n as usize % 3]),
            };
            if n % 2 == 0 {
                b = b.process(Some(ProcessInfo::new(
                    if big { u32::MAX } else { n as u32 },
                    ["java", "", "a-15-bytes-long"][n as usize % 3],
                    if big { u64::MAX - n } else { n },
                )));
            }
            if n % 3 == 2 {
                b = b.kind(RecordKind::Interim);
            }
            b = match n % 11 {
                0 => b.t_end(UNIX_EPOCH),
                1 => b.t_end(UNIX_EPOCH + Duration::from_nanos(1)),
                2 => b.t_end(UNIX_EPOCH + Duration::from_secs(20_000_000_000)),
                _ => b.t_end(UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789 + n)),
            };
            let mut record = b.build();
            match n % 9 {
                0 => record.t_start = None,
                1 => record.t_start = Some(UNIX_EPOCH - Duration::from_secs(1)),
                _ => {}
            }
            if let (Some(p), 4) = (&mut record.process, n % 9) {
                // Not UTF-8: replaced in the text, as `comm()` does.
                p.comm = *b"ab\xffcd\0\0\0\0\0\0\0\0\0\0\0";
            }
            if n == 13 {
                record.t_end = UNIX_EPOCH - Duration::from_secs(5);
            }
            records.push(record);
        }
        records
    }

    fn decoded(records: Vec<FlowRecord>, completeness: bool, host: &str) -> DecodedChunk {
        let window = Window::from_millis(1_700_000_000_000, 1_700_000_060_000).expect("window");
        let n = records.len();
        let mut chunk = Chunk::new(window, 7, 3, completeness, vec![]);
        if completeness {
            chunk.completeness = Some(Completeness {
                closes_seen: u64::MAX,
                records_emitted: 12,
                running_whole_window: false,
                lost_spool: i64::MAX as u64 + 5,
                ..Completeness::default()
            });
        }
        let frame = ChunkEncoder::new("host-a", InstanceId::new(0xabc_def))
            .expect("encoder")
            .encode_to_vec(&chunk)
            .expect("encode");
        let mut decoded = ChunkDecoder::new(DecodeLimits::default())
            .expect("decoder")
            .decode(&frame)
            .expect("decode");
        // Set after decoding: addresses and names the wire format would not carry.
        decoded.records = records;
        decoded.header.host = host.to_owned();
        assert_eq!(decoded.records.len(), n);
        decoded
    }

    #[track_caller]
    fn same(encoder: &RequestEncoder, chunk: &DecodedChunk, observed: SystemTime) {
        let reference = encoder.encode_reference(chunk, observed);
        let fast = encoder.encode(chunk, observed);
        if fast != reference {
            let at = fast
                .iter()
                .zip(&reference)
                .position(|(a, b)| a != b)
                .unwrap_or(fast.len().min(reference.len()));
            panic!(
                "{} bytes, the reference {}; first difference at {at}: {:02x?} / {:02x?}",
                fast.len(),
                reference.len(),
                &fast[at.saturating_sub(8)..(at + 8).min(fast.len())],
                &reference[at.saturating_sub(8)..(at + 8).min(reference.len())],
            );
        }
        // And it decodes.
        ExportLogsServiceRequest::decode(&fast[..]).expect("decodes");
    }

    #[test]
    fn the_request_is_byte_for_byte_the_prost_encoders() {
        let observed = UNIX_EPOCH + Duration::from_nanos(1_700_000_100_000_000_001);
        for encoder in [
            RequestEncoder::new("0.1.0", Some("host-a.example".into())),
            RequestEncoder::new("", None),
            RequestEncoder::new("1.2.3-rc.1+büild", Some(String::new())),
        ] {
            for completeness in [false, true] {
                for host in ["host-a", "", "h/ö"] {
                    let chunk = decoded(records(), completeness, host);
                    same(&encoder, &chunk, observed);
                    same(&encoder, &chunk, UNIX_EPOCH);
                    same(&encoder, &chunk, UNIX_EPOCH - Duration::from_secs(1));
                    // Each record alone: the guessed length slots are wrong.
                    for record in records().into_iter().step_by(7) {
                        same(
                            &encoder,
                            &decoded(vec![record], completeness, host),
                            observed,
                        );
                    }
                    same(&encoder, &decoded(vec![], completeness, host), observed);
                }
            }
        }
    }

    #[test]
    fn large_chunks_and_the_longest_records_keep_exact_lengths() {
        let encoder = RequestEncoder::new("0.1.0", Some("host-a.example".into()));
        let observed = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        // Over 2 MiB of records: the outer lengths take 4 bytes, not the guessed 3.
        let many: Vec<FlowRecord> = records().into_iter().cycle().take(3_000).collect();
        let chunk = decoded(many, true, "host-a");
        same(&encoder, &chunk, observed);
        assert!(encoder.encode(&chunk, observed).len() > 1 << 21);
        // The longest workload ID.
        let mut longest = records().swap_remove(3);
        let id = "w".repeat(flow_record::WORKLOAD_ID_MAX);
        longest.local_workload_id = Some(flow_record::WorkloadId::new(id).expect("workload"));
        same(&encoder, &decoded(vec![longest], false, "host-a"), observed);
    }

    #[test]
    fn encode_into_reuses_the_buffer() {
        let encoder = RequestEncoder::new("0.1.0", None);
        let observed = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let big = decoded(records(), true, "host-a");
        let small = decoded(records().into_iter().take(2).collect(), false, "host-a");
        let mut out = Vec::new();
        encoder.encode_into(&big, observed, &mut out);
        assert_eq!(out, encoder.encode_reference(&big, observed));
        encoder.encode_into(&small, observed, &mut out);
        assert_eq!(out, encoder.encode_reference(&small, observed));
    }
    #[test]
    fn the_parts_make_the_whole_request_and_any_run_of_its_records() {
        let encoder = RequestEncoder::new("0.1.0", Some("host-a.example".into()));
        let observed = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        for completeness in [false, true] {
            let many: Vec<FlowRecord> = records().into_iter().cycle().take(400).collect();
            let chunk = decoded(many, completeness, "host-a");
            let parts = encoder.encode_parts(&chunk, observed);
            assert_eq!(parts.len(), 400);
            let whole = encoder.encode_reference(&chunk, observed);
            let mut out = Vec::new();
            parts.request_into(0..parts.len(), &mut out);
            assert!(out == whole, "the whole chunk differs");
            assert_eq!(parts.request_len(0..parts.len()), whole.len());
            let reference = ExportLogsServiceRequest::decode(&whole[..]).expect("decodes");
            let all = &reference.resource_logs[0].scope_logs[0].log_records;
            // Requests of at most 20 KiB: each a whole request, its records the
            // chunk's, with their positions in the chunk.
            let mut from = 0;
            let mut requests = 0;
            while from < parts.len() {
                let range = parts.next_request(from, 20 << 10, usize::MAX);
                assert!(!range.is_empty());
                parts.request_into(range.clone(), &mut out);
                assert_eq!(out.len(), parts.request_len(range.clone()));
                assert!(out.len() <= 20 << 10 || range.len() == 1);
                let request = ExportLogsServiceRequest::decode(&out[..]).expect("decodes");
                let (r, w) = (&request.resource_logs[0], &reference.resource_logs[0]);
                assert_eq!(r.resource, w.resource);
                assert_eq!(r.scope_logs[0].scope, w.scope_logs[0].scope);
                assert_eq!(r.scope_logs[0].log_records, all[range.clone()]);
                // Full: the next record would not have fitted.
                if range.end < parts.len() {
                    assert!(parts.request_len(range.start..range.end + 1) > 20 << 10);
                }
                from = range.end;
                requests += 1;
            }
            assert!(requests > 5, "{requests} requests");
            // A record limit, and a byte limit below one record: one record a request.
            assert_eq!(parts.next_request(10, usize::MAX, 7), 10..17);
            assert_eq!(parts.next_request(10, 1, 7), 10..11);
            assert_eq!(parts.next_request(10, usize::MAX, 0), 10..11);
            assert_eq!(parts.next_request(399, usize::MAX, 7), 399..400);
            assert_eq!(parts.next_request(400, usize::MAX, 7), 400..400);
            assert_eq!(parts.next_request(900, usize::MAX, 7), 400..400);
        }
        // No records: the request still carries the scope (the completeness).
        let empty = decoded(vec![], true, "host-a");
        let parts = encoder.encode_parts(&empty, observed);
        assert!(parts.is_empty());
        let mut out = Vec::new();
        parts.request_into(0..0, &mut out);
        assert_eq!(out, encoder.encode_reference(&empty, observed));
    }
}

//! `OtlpSink`: every record an OpenTelemetry log record, sent as OTLP/HTTP protobuf
//! to a logs endpoint (`/v1/logs`), through the same durable spool as the
//! [`CollectorSink`](crate::CollectorSink) (feature `otlp`). `docs/otlp.md` is the
//! operator's view.
//!
//! # What is sent
//!
//! A chunk's records, in order, in one or more `ExportLogsServiceRequest`s (each
//! its records in one `ResourceLogs` with one `ScopeLogs`),
//! `Content-Type: application/x-protobuf`, gzipped (`Content-Encoding: gzip`) unless
//! [`compression`](OtlpSinkConfig::compression) says otherwise, POSTed to
//! [`logs_url`] of the endpoint with the configured
//! [`headers`](OtlpSinkConfig::headers).
//!
//! A request holds as many of the chunk's records as fit in
//! [`max_request_bytes`](OtlpSinkConfig::max_request_bytes) of protobuf before
//! compression (default 4 MiB: a full chunk of 16,384 records is some 18 MB, over
//! most receivers' body limits), at least one: a chunk larger than that is sent as
//! several requests, one after the other, each a whole request with the same
//! resource and scope attributes, its records' `flowexporter.record_index` their
//! positions in the chunk. The chunk is done with once every request is accepted.
//!
//! - **resource** attributes: `host.id` (the chunk's host ID), `host.name` (when
//!   [configured](OtlpSinkConfig::host_name)), `service.name` = `flowexporter`,
//!   `service.version`, `service.instance.id` (the exporter run that made the chunk,
//!   32 hex digits, as in its batch ID);
//! - **scope**: name `flowexporter`, the version, and the chunk's attributes:
//!   `flowexporter.window.start_unix_nano`, `flowexporter.window.end_unix_nano`,
//!   `flowexporter.chunk.index`, `flowexporter.chunk.last`, and on a window's last
//!   chunk its completeness, `flowexporter.completeness.*` (`running_whole_window`,
//!   `closes_seen`, `records_emitted`, `lost_ring_full`, `lost_recursion`,
//!   `lost_journal`, `lost_spool`, `interim_records`, `records_replayed`,
//!   `records_expected`: the fields of the collector's completeness records);
//! - **each log record**: `time_unix_nano` = `t_end`, `observed_time_unix_nano` =
//!   when the request was built, severity `INFO` (9), `event_name` =
//!   `flowexporter.flow`, a short text body (`tcp 10.0.0.1:443 -> 10.0.0.2:50000
//!   (inbound, final)`), and the attributes of `docs/schema.md`'s OpenTelemetry
//!   column, in its order: a field without a value (null in JSON: `t_start`,
//!   `close_reason` of an interim record, the workload, the unattributed reason,
//!   `flow_id`, the process fields) is left out, never sent empty; then
//!   `network.transport` = `tcp` and `network.type` = `ipv4` or `ipv6`. Strings are
//!   `string_value`, integers `int_value`, `incomplete` a `bool_value`; `t_start` is
//!   ns since the Unix epoch. A count above `i64::MAX` is sent as `i64::MAX`;
//!   `cgroup_id`, an ID, is sent bit for bit (read it back as a u64).
//!   `flowexporter.batch_id` and `flowexporter.record_index` identify a flow
//!   uniquely: a receiver drops the duplicates of a resent chunk by them.
//!
//! # Delivery: the spool and the journal are unchanged
//!
//! The sink is the collector sink's machinery with an OTLP carrier in place of its
//! HTTP POST of frames: [`deliver`](crate::FlowSink::deliver) writes the chunk's
//! frame (the collector wire format) to the spool (`fsync`ed) and returns; one task
//! sends spooled frames oldest first, one at a time, each decoded and built into its
//! request at every attempt, and deletes each once the receiver answered 2xx.
//! Everything the [collector sink's docs](crate::collector_sink) say of the spool,
//! the memory queue for a full disk, the records dropped in a window's completeness,
//! `take_settled`, `flush` and `close` holds word for word.
//!
//! The guarantee is **at least once**: a request whose answer was lost (a crash, a
//! shut down with a request in flight, a timeout after the receiver stored it) is
//! sent again, and its log records arrive twice, with the same
//! `flowexporter.batch_id` and `flowexporter.record_index`. A chunk sent in several
//! requests resumes where it stopped: the sink remembers, under its batch ID, which
//! of its records the receiver accepted, and a retry sends only the others (within
//! a run: after a restart the whole chunk is sent again).
//!
//! # What each answer does
//!
//! | answer | the sink |
//! | --- | --- |
//! | 2xx | the chunk's next request; after its last, forgets the chunk. A `partial_success` with rejected log records is counted ([`OtlpCounters::log_records_rejected_by_receiver`]) and logged at most every [`error_log_interval`](OtlpSinkConfig::error_log_interval), not retried |
//! | 413 (too large) | the request's records are sent again in two halves, and no later request of the chunk holds more than a half ([`OtlpCounters::requests_split_on_413`]); a single record answered 413 is left out for good, logged at error level and counted ([`OtlpCounters::log_records_too_large`]), and the chunk goes on |
//! | 408, 429, 502, 503, 504; no answer (refused, reset, timed out, TLS) | retries with backoff ([`RetryPolicy`], for as long as it takes with a spool) from the first request not accepted, waiting at least the answer's `Retry-After` (seconds or an HTTP date, up to [`MAX_RETRY_AFTER`](crate::retry::MAX_RETRY_AFTER), 15 minutes, whatever the policy's longest backoff) |
//! | anything else (400, 401, 403, 404, 500, a redirect, ...) | refused for good (OTLP's rule: retrying cannot change it): the chunk is moved to the spool's `rejected/` with the status and the start of the body, logged at error level, counted; later chunks go on. Its requests accepted before, if any, stay delivered |
//!
//! An answer's body is read for at most 64 KiB and 2 s, never whole.

mod config;
mod counters;
mod encode;
mod proto;
mod send;

use std::sync::Arc;

use async_trait::async_trait;
use flow_batch::{Chunk, wire::BatchId};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use self::send::{CarrierState, OtlpCarrier};
pub use self::{
    config::{DEFAULT_MAX_REQUEST_BYTES, LOGS_PATH, OtlpSinkConfig, logs_url},
    counters::OtlpCounters,
    encode::{
        Compression, EVENT_NAME, EncodedChunk, RequestEncoder, SERVICE_NAME, SEVERITY_NUMBER,
        SEVERITY_TEXT,
    },
    send::PROTOBUF_CONTENT_TYPE,
};
use crate::{
    ClientTls,
    collector_sink::{
        client::build_client,
        core::{CoreConfig, SinkCore},
        transport::Transport,
    },
    error::SinkError,
    retry::RetryPolicy,
    sink::{Accepted, FlowSink},
};

/// Sends every record as an OTLP log record; see the [module docs](self).
pub struct OtlpSink {
    core: SinkCore,
    state: Arc<CarrierState>,
    /// What a reconfiguration keeps.
    headers: HeaderMap,
    compression: Compression,
    encoder: RequestEncoder,
    max_request_bytes: usize,
    connect_timeout: std::time::Duration,
    request_timeout: std::time::Duration,
}

impl std::fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSink")
            .field("destination", &self.core.destination())
            .finish_non_exhaustive()
    }
}

impl OtlpSink {
    /// Validates `config` (the endpoint, the headers, the retry policy), builds the
    /// HTTP client (reading the TLS files), opens the spool (picking up what a
    /// previous run left) and starts the sending task. Never contacts the receiver:
    /// chunks are spooled until it takes them. Must be called inside a tokio runtime.
    pub fn start(config: OtlpSinkConfig) -> Result<OtlpSink, SinkError> {
        let (url, headers, client) = endpoint(&config)?;
        if config.max_request_bytes == 0 {
            return Err(SinkError::InvalidConfig {
                key: "otlp max_request_bytes",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let state = Arc::new(CarrierState::new(config.error_log_interval)?);
        let encoder = RequestEncoder::new(config.service_version.clone(), config.host_name.clone());
        let carrier = OtlpCarrier {
            client,
            headers: headers.clone(),
            compression: config.compression,
            encoder: encoder.clone(),
            state: Arc::clone(&state),
            max_request_bytes: config.max_request_bytes,
        };
        let core = SinkCore::start(
            CoreConfig {
                destination: url,
                host: config.host.clone(),
                instance: config.instance,
                transport: Transport::Carrier(Arc::new(carrier)),
                retry: config.retry.clone(),
                spool_dir: config.spool_dir.clone(),
                spool: config.spool.clone(),
                memory_max_bytes: config.memory_max_bytes,
                memory_max_chunks: config.memory_max_chunks,
                flush_timeout: config.flush_timeout,
            },
            "OtlpSink::start must be called inside a tokio runtime",
        )?;
        Ok(OtlpSink {
            core,
            state,
            headers,
            compression: config.compression,
            encoder,
            max_request_bytes: config.max_request_bytes,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
        })
    }

    /// The URL requests go to ([`logs_url`] of the endpoint), as logs and errors
    /// name the sink.
    pub fn destination(&self) -> &str {
        self.core.destination()
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.core.retry_policy()
    }

    /// Replaces the TLS settings and the retry policy of the running sink, as
    /// [`CollectorSink::reconfigure`](crate::CollectorSink::reconfigure) does: the
    /// TLS files are read again even under the same paths; on error the sink keeps
    /// what it had; a sender waiting to retry tries again at once.
    pub fn reconfigure(&self, tls: &ClientTls, retry: RetryPolicy) -> Result<(), SinkError> {
        retry.validate()?;
        let client = build_client(
            tls,
            self.connect_timeout,
            self.request_timeout,
            self.core.destination(),
        )?;
        self.core.replace(self.transport(client), retry)
    }

    /// A snapshot of the counters (and of the spool's).
    pub fn counters(&self) -> OtlpCounters {
        OtlpCounters::from_parts(self.core.counters(), &self.state.own)
    }

    /// Sends an already encoded frame (the collector wire format) as it is, keeping
    /// its batch ID. Same contract as [`deliver`](crate::FlowSink::deliver); says
    /// where the frame went.
    pub async fn accept_frame(&self, frame: Vec<u8>) -> Result<Accepted, SinkError> {
        self.core.accept_frame(frame).await
    }

    /// [`deliver`](crate::FlowSink::deliver), saying where the chunk went:
    /// [`Accepted::InMemory`] when the spool could not take it.
    pub async fn accept_chunk(&self, chunk: &Chunk) -> Result<Accepted, SinkError> {
        self.core.encode_and_hand_over(chunk, None).await
    }

    /// The batch IDs of the frames kept in memory ([`Accepted::InMemory`]) that were
    /// settled since the last call (see
    /// [`CollectorSink::take_settled`](crate::CollectorSink::take_settled)).
    pub fn take_settled(&self) -> Vec<BatchId> {
        self.core.take_settled()
    }

    /// Stops the sending task at once, a request in flight included (its chunk stays
    /// spooled; if the receiver stored it anyway, the next run sends its log records
    /// again), and writes the frames kept in memory to the spool if it takes them.
    /// Call [`flush`](crate::FlowSink::flush) first to give the receiver a chance.
    /// [`FlowSink::close`] is this.
    pub async fn shut_down(&self) -> Result<(), SinkError> {
        self.core.shut_down("OTLP sink sender").await
    }

    /// A carrier with `client` and the sink's other settings.
    fn transport(&self, client: reqwest::Client) -> Transport {
        Transport::Carrier(Arc::new(OtlpCarrier {
            client,
            headers: self.headers.clone(),
            compression: self.compression,
            encoder: self.encoder.clone(),
            state: Arc::clone(&self.state),
            max_request_bytes: self.max_request_bytes,
        }))
    }
}

#[async_trait]
impl FlowSink for OtlpSink {
    fn name(&self) -> &str {
        "otlp"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        self.accept_chunk(chunk).await.map(|_| ())
    }

    /// Encodes `chunk` under `id`, so that its `flowexporter.batch_id` is the one the
    /// caller's journal knows.
    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        self.core.encode_and_hand_over(chunk, Some(id)).await
    }

    fn take_settled(&self) -> Vec<BatchId> {
        OtlpSink::take_settled(self)
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.core.flush().await
    }

    async fn close(&self) -> Result<(), SinkError> {
        self.shut_down().await
    }
}

/// Asks the endpoint of `config` whether it takes OTLP logs: POSTs an empty
/// `ExportLogsServiceRequest` (zero bytes, a valid message with no log records) with
/// the sink's own client (TLS, timeouts) and headers; answers the HTTP status. Sends no
/// record and touches no spool: what `flowexporter check` asks before `run`.
pub async fn probe(config: &OtlpSinkConfig) -> Result<u16, SinkError> {
    let (url, headers, client) = endpoint(config)?;
    let answer = client
        .post(&url)
        .headers(headers)
        .header(reqwest::header::CONTENT_TYPE, PROTOBUF_CONTENT_TYPE)
        .body(Vec::new())
        .send()
        .await
        .map_err(|source| SinkError::Transport {
            url: url.clone(),
            source,
        })?;
    Ok(answer.status().as_u16())
}

/// The logs URL of `config`, its headers (checked) and the HTTP client (TLS files
/// read, timeouts set), as the sink and [`probe`] use them.
fn endpoint(config: &OtlpSinkConfig) -> Result<(String, HeaderMap, reqwest::Client), SinkError> {
    let url = logs_url(&config.endpoint)?;
    let headers = header_map(&config.headers)?;
    let client = build_client(
        &config.tls,
        config.connect_timeout,
        config.request_timeout,
        &url,
    )?;
    Ok((url, headers, client))
}

/// The configured headers, checked: valid names and values, and none of those the
/// sink sets itself.
fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, SinkError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let invalid = |reason| SinkError::InvalidConfig {
            key: "otlp headers",
            value: name.clone(),
            reason,
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| invalid("is not a valid HTTP header name"))?;
        if [
            reqwest::header::CONTENT_TYPE,
            reqwest::header::CONTENT_ENCODING,
            reqwest::header::CONTENT_LENGTH,
            reqwest::header::HOST,
            reqwest::header::TRANSFER_ENCODING,
        ]
        .contains(&name)
        {
            return Err(invalid("is set by the sink itself"));
        }
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| invalid("has a value that is not valid in an HTTP header"))?;
        // Credentials stay out of debug output.
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked_and_the_sinks_own_refused() {
        let ok = header_map(&[
            ("Authorization".into(), "Bearer x".into()),
            ("x-scope-orgid".into(), " tenant-a ".into()),
        ])
        .expect("valid headers");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok["x-scope-orgid"], "tenant-a");
        for (name, value, why) in [
            ("bad name", "v", "header name"),
            ("x-a", "line\nbreak", "not valid"),
            ("Content-Type", "application/json", "set by the sink"),
            ("content-encoding", "zstd", "set by the sink"),
        ] {
            let error = header_map(&[(name.into(), value.into())])
                .expect_err(name)
                .to_string();
            assert!(error.contains(why), "{name}: {error}");
        }
    }
}

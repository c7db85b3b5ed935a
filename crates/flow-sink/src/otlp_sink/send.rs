//! One attempt: the spooled frame decoded, encoded in parts, cut into requests of
//! at most `max_request_bytes` (protobuf, not compressed), each compressed and
//! POSTed in turn, and what the answers mean (the OTLP side of the send task's
//! [`Transport`](crate::collector_sink::transport::Transport)).
//!
//! | answer to a request | the sink |
//! | --- | --- |
//! | 2xx | its records are delivered: the next request; after the last, forgets the frame. A `partial_success` is counted and logged (at most every `error_log_interval`) |
//! | 413 | sends its records again in two halves (and no request of the frame larger from then on); a single record answered 413 is left out for good (counted, logged), the frame goes on |
//! | 408, 429, 502, 503, 504, or none (refused, reset, timed out, TLS) | the attempt ends: the send task retries with backoff, waiting at least the `Retry-After` (seconds or HTTP date, up to [`MAX_RETRY_AFTER`](crate::retry::MAX_RETRY_AFTER)); the next attempt starts with the first request not delivered |
//! | anything else (400, 401, 403, 404, 500, 3xx, ...) | refused for good: the frame goes to `rejected/` with the status and the start of the body (with the records of its requests already delivered) |
//! | the spooled frame cannot be decoded | refused for good, likewise |
//!
//! How far the attempts at a frame got ([`Progress`]: its records delivered, the
//! largest request after a 413) is kept in the [`CarrierState`] under its batch ID
//! until the frame is done with, so a retry resends only what was not delivered.

use std::{
    ops::Range,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use flow_batch::wire::{BatchId, ChunkDecoder, DecodeLimits};
use prost::Message;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap};

use super::{
    counters::OwnCounters,
    encode::{Compression, EncodedChunk, RequestEncoder},
    proto::ExportLogsServiceResponse,
};
use crate::collector_sink::{
    body,
    counters::bump,
    frame::Frame,
    shared::Shared,
    transport::{Attempt, AttemptFuture, Failure, FrameCarrier, Refusal},
};

/// The content type of OTLP/HTTP protobuf requests.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";

/// Most bytes of a 2xx answer read (an `ExportLogsServiceResponse` with its partial
/// success message); a longer body is not read on.
const RESPONSE_LIMIT: usize = 64 << 10;

/// What every carrier of one sink shares (a reconfiguration makes a new carrier):
/// the decoder, the counters and the log limiter.
pub(crate) struct CarrierState {
    decoder: Mutex<ChunkDecoder>,
    pub(crate) own: OwnCounters,
    error_log_interval: Duration,
    last_partial_log: Mutex<Option<Instant>>,
    last_split_log: Mutex<Option<Instant>>,
    /// How far the frame being sent got: the send task sends one frame at a time
    /// and retries it until it is done with it, so one is kept, the last one an
    /// attempt was made at (a frame dropped meanwhile is replaced by the next one).
    progress: Mutex<Option<Progress>>,
}

/// How far the attempts at one frame got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The frame's batch ID.
    batch_id: BatchId,
    /// And its records (the same ID for another frame would be a bug elsewhere:
    /// not trusted then).
    records: u32,
    /// Its first records that need no sending again: delivered (2xx), or each
    /// refused alone as too large (413).
    done: usize,
    /// Most records in one request, after a 413 (`usize::MAX` before one).
    max_records: usize,
}

impl CarrierState {
    pub(crate) fn new(error_log_interval: Duration) -> Result<CarrierState, crate::SinkError> {
        let decoder = ChunkDecoder::new(DecodeLimits::default()).map_err(|source| {
            crate::SinkError::Codec {
                operation: "set up the chunk decoder",
                source,
            }
        })?;
        Ok(CarrierState {
            decoder: Mutex::new(decoder),
            own: OwnCounters::default(),
            error_log_interval,
            last_partial_log: Mutex::new(None),
            last_split_log: Mutex::new(None),
            progress: Mutex::new(None),
        })
    }

    /// Where attempts at `frame` start: after what an earlier attempt at it
    /// delivered, or from its first record.
    fn progress(&self, frame: &Frame) -> Progress {
        let kept = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        match &*kept {
            Some(p) if p.batch_id == frame.batch_id && p.records == frame.records => p.clone(),
            _ => Progress {
                batch_id: frame.batch_id.clone(),
                records: frame.records,
                done: 0,
                max_records: usize::MAX,
            },
        }
    }

    /// Keeps `progress` for the next attempt at its frame.
    fn save(&self, progress: &Progress) {
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = Some(progress.clone());
    }

    /// Done with `frame`: its progress forgotten.
    fn forget(&self, frame: &Frame) {
        let mut kept = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        if kept.as_ref().is_some_and(|p| p.batch_id == frame.batch_id) {
            *kept = None;
        }
    }

    /// Whether a message limited by `last` may be logged now (at most every
    /// `error_log_interval`).
    fn may_log(&self, last: &Mutex<Option<Instant>>) -> bool {
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.error_log_interval) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Carries frames to an OTLP/HTTP logs endpoint ([`Shared::destination`]).
pub(crate) struct OtlpCarrier {
    pub(crate) client: reqwest::Client,
    pub(crate) headers: HeaderMap,
    pub(crate) compression: Compression,
    pub(crate) encoder: RequestEncoder,
    pub(crate) state: Arc<CarrierState>,
    /// Most bytes of a request's protobuf, not compressed (a record larger alone
    /// is sent alone).
    pub(crate) max_request_bytes: usize,
}

/// Why a request could not be built.
enum BuildError {
    /// The frame cannot be decoded: it never will be.
    Undecodable(String),
    /// Compression failed.
    Compress(std::io::Error),
}

/// What one request's answer means for the chunk.
enum Posted {
    /// 2xx: its records are delivered.
    Delivered,
    /// 413: too large for the receiver.
    TooLarge { body: String },
    /// The chunk's attempt ends here (a retriable answer or none; a refusal for
    /// good).
    End(Attempt),
}

impl OtlpCarrier {
    /// The frame decoded and encoded in parts, requests to be cut from.
    fn encode(&self, frame: &[u8]) -> Result<EncodedChunk, BuildError> {
        let started = Instant::now();
        let decoded = {
            let mut decoder = self.state.decoder.lock().unwrap_or_else(|p| p.into_inner());
            decoder
                .decode(frame)
                .map_err(|e| BuildError::Undecodable(crate::error_chain(&e)))?
        };
        let parts = self.encoder.encode_parts(&decoded, SystemTime::now());
        self.build_time(started);
        Ok(parts)
    }

    /// The request body with the records `range` of `parts`, compressed.
    fn build(&self, parts: &EncodedChunk, range: Range<usize>) -> Result<Vec<u8>, BuildError> {
        let started = Instant::now();
        let mut body = Vec::new();
        parts.request_into(range, &mut body);
        let body = self.compression.apply(body).map_err(BuildError::Compress)?;
        self.build_time(started);
        Ok(body)
    }

    fn build_time(&self, started: Instant) {
        bump(
            &self.state.own.build_time_ns,
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        );
    }

    /// Runs `work` (decoding, encoding or compressing thousands of records, which
    /// is milliseconds of CPU) on the blocking pool, not on a runtime worker; a
    /// failure as the attempt's outcome.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&OtlpCarrier) -> Result<T, BuildError> + Send + 'static,
    ) -> Result<T, Attempt> {
        let carrier = Arc::clone(self);
        match tokio::task::spawn_blocking(move || work(&carrier)).await {
            Ok(Ok(built)) => Ok(built),
            Ok(Err(BuildError::Undecodable(reason))) => Err(Attempt::Reject(Refusal::Carrier {
                reason: format!("the spooled frame cannot be decoded: {reason}"),
            })),
            Ok(Err(BuildError::Compress(e))) => Err(Attempt::Retry {
                failure: Failure::Carrier {
                    what: "compressing an OTLP request",
                    source: Box::new(e),
                },
                retry_after: None,
            }),
            Err(e) => Err(Attempt::Retry {
                failure: Failure::Carrier {
                    what: "building an OTLP request",
                    source: Box::new(e),
                },
                retry_after: None,
            }),
        }
    }

    /// One attempt at `frame`: its records in requests of at most
    /// `max_request_bytes`, from the first one not yet delivered (by an earlier
    /// attempt at the same frame) on, a request answered 413 split in half.
    async fn send(self: Arc<Self>, shared: Arc<Shared>, frame: Frame) -> Attempt {
        let counters = &shared.counters;
        let parts = match self
            .blocking({
                let bytes = frame.bytes.clone();
                move |carrier| carrier.encode(&bytes)
            })
            .await
        {
            Ok(parts) => Arc::new(parts),
            Err(attempt) => {
                self.state.forget(&frame);
                return attempt;
            }
        };
        let mut progress = self.state.progress(&frame);
        // A chunk without records is still sent, once: its scope carries its
        // window's completeness.
        let mut first = true;
        loop {
            let range =
                parts.next_request(progress.done, self.max_request_bytes, progress.max_records);
            if range.is_empty() && !(first && parts.is_empty()) {
                break;
            }
            first = false;
            let body = match self
                .blocking({
                    let parts = Arc::clone(&parts);
                    let range = range.clone();
                    move |carrier| carrier.build(&parts, range)
                })
                .await
            {
                Ok(body) => body,
                Err(attempt) => return self.end(&frame, progress, attempt),
            };
            let body_len = body.len() as u64;
            match self.post(&shared, &frame, &range, body).await {
                Posted::Delivered => {
                    bump(&self.state.own.requests_sent, 1);
                    bump(&counters.records_sent, range.len() as u64);
                    bump(&counters.bytes_sent, body_len);
                    progress.done = range.end;
                    self.state.save(&progress);
                    if parts.is_empty() {
                        break;
                    }
                }
                Posted::TooLarge { body } if range.len() > 1 => {
                    // In half, and no request of this chunk larger from now on.
                    progress.max_records = range.len().div_ceil(2);
                    self.state.save(&progress);
                    bump(&self.state.own.requests_split_on_413, 1);
                    if self.state.may_log(&self.state.last_split_log) {
                        tracing::warn!(
                            url = %shared.destination,
                            batch_id = %frame.batch_id,
                            records = range.len(),
                            bytes = parts.request_len(range.clone()),
                            body,
                            "OTLP receiver refused a request as too large (413); sending its records in two halves (lower max_request_bytes to the receiver's limit)"
                        );
                    }
                }
                Posted::TooLarge { body } if !range.is_empty() => {
                    // One record the receiver will never take: left out, the rest
                    // of the chunk goes on.
                    bump(&self.state.own.log_records_too_large, 1);
                    tracing::error!(
                        url = %shared.destination,
                        batch_id = %frame.batch_id,
                        record_index = range.start,
                        bytes = parts.request_len(range.clone()),
                        body,
                        "OTLP receiver refused a single log record as too large (413); left out for good"
                    );
                    progress.done = range.end;
                    self.state.save(&progress);
                }
                Posted::TooLarge { body } => {
                    let attempt = Attempt::Reject(Refusal::Carrier {
                        reason: format!("HTTP 413: {body}"),
                    });
                    return self.end(&frame, progress, attempt);
                }
                Posted::End(attempt) => return self.end(&frame, progress, attempt),
            }
        }
        self.state.forget(&frame);
        bump(&counters.chunks_sent, 1);
        Attempt::Delivered
    }

    /// The attempt ends with `attempt`: the progress kept for a retry, forgotten
    /// when the frame is done with.
    fn end(&self, frame: &Frame, progress: Progress, attempt: Attempt) -> Attempt {
        match &attempt {
            Attempt::Retry { .. } => self.state.save(&progress),
            Attempt::Delivered | Attempt::Reject(_) => self.state.forget(frame),
        }
        attempt
    }

    /// POSTs one request (`body`, the records `range` of `frame`).
    async fn post(
        &self,
        shared: &Shared,
        frame: &Frame,
        range: &Range<usize>,
        body: Vec<u8>,
    ) -> Posted {
        let counters = &shared.counters;
        bump(&counters.requests, 1);
        let started = Instant::now();
        let mut request = self
            .client
            .post(&shared.destination)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, PROTOBUF_CONTENT_TYPE);
        if let Some(encoding) = self.compression.content_encoding() {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        let response = match request.body(body).send().await {
            Ok(r) => r,
            Err(error) => {
                bump(&counters.transport_errors, 1);
                tracing::debug!(url = %shared.destination, batch_id = %frame.batch_id, records = ?range, error = %crate::error_chain(&error), "OTLP request failed");
                return Posted::End(Attempt::Retry {
                    failure: Failure::Transport(error),
                    retry_after: None,
                });
            }
        };
        bump(&counters.requests_timed, 1);
        bump(
            &counters.request_time_ns,
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        );
        let status = response.status().as_u16();
        match disposition(status) {
            Answer::Delivered => {
                let (prefix, _) =
                    body::read_prefix(response, RESPONSE_LIMIT, body::BODY_READ_TIME).await;
                self.partial_success(shared, frame, &prefix);
                Posted::Delivered
            }
            Answer::Retry => {
                bump(&counters.retriable_statuses, 1);
                let retry_after = crate::retry::retry_after(response.headers(), SystemTime::now());
                let body = body::snippet(response).await;
                tracing::debug!(url = %shared.destination, batch_id = %frame.batch_id, records = ?range, status, body, "OTLP receiver asked to retry");
                Posted::End(Attempt::Retry {
                    failure: Failure::Status(status),
                    retry_after,
                })
            }
            Answer::TooLarge => Posted::TooLarge {
                body: body::snippet(response).await,
            },
            Answer::Refused => {
                let body = body::snippet(response).await;
                Posted::End(Attempt::Reject(Refusal::Carrier {
                    reason: format!("HTTP {status}: {body}"),
                }))
            }
        }
    }

    /// Counts (and logs, at most every `error_log_interval`) the partial success a
    /// 2xx answer's body reports, if any.
    fn partial_success(&self, shared: &Shared, frame: &Frame, body: &[u8]) {
        let Ok(response) = ExportLogsServiceResponse::decode(body) else {
            return;
        };
        let Some(partial) = response.partial_success else {
            return;
        };
        if partial.rejected_log_records <= 0 && partial.error_message.is_empty() {
            return;
        }
        let own = &self.state.own;
        bump(&own.partial_successes, 1);
        let rejected = u64::try_from(partial.rejected_log_records).unwrap_or(0);
        bump(&own.log_records_rejected, rejected);
        if self.state.may_log(&self.state.last_partial_log) {
            tracing::warn!(
                url = %shared.destination,
                batch_id = %frame.batch_id,
                rejected,
                message = %body::text_within(partial.error_message.as_bytes(), body::BODY_SNIPPET),
                "OTLP receiver rejected some log records of a chunk (not retried)"
            );
        }
    }
}

impl FrameCarrier for OtlpCarrier {
    fn attempt(self: Arc<Self>, shared: Arc<Shared>, frame: Frame) -> AttemptFuture {
        Box::pin(self.send(shared, frame))
    }
}

/// What a status means.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Delivered,
    Retry,
    /// 413: the request is too large; smaller ones may pass.
    TooLarge,
    Refused,
}

/// OTLP/HTTP's rule: 2xx delivered; 429, 502, 503 and 504 retriable (and 408, a
/// request timeout); anything else refused for good, but 413 (Content Too Large),
/// which smaller requests of the same records may pass.
fn disposition(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Delivered,
        408 | 429 | 502 | 503 | 504 => Answer::Retry,
        413 => Answer::TooLarge,
        _ => Answer::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_otlps_retry_rule() {
        for s in [200, 202, 204] {
            assert_eq!(disposition(s), Answer::Delivered, "{s}");
        }
        for s in [408, 429, 502, 503, 504] {
            assert_eq!(disposition(s), Answer::Retry, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 415, 500, 501] {
            assert_eq!(disposition(s), Answer::Refused, "{s}");
        }
        assert_eq!(disposition(413), Answer::TooLarge);
    }
}

//! One attempt: the spooled frame decoded, built into a request, compressed and
//! POSTed, and what the answer means (the OTLP side of the send task's
//! [`Transport`](crate::collector_sink::transport::Transport)).
//!
//! | answer | the sink |
//! | --- | --- |
//! | 2xx | forgets the frame; a `partial_success` is counted and logged (at most every `error_log_interval`) |
//! | 408, 429, 502, 503, 504, or none (refused, reset, timed out, TLS) | retries with backoff, waiting at least the `Retry-After` (seconds or HTTP date, up to the policy's longest backoff) |
//! | anything else (400, 401, 403, 404, 413, 500, 3xx, ...) | refused for good: the frame goes to `rejected/` with the status and the start of the body |
//! | the spooled frame cannot be decoded | refused for good, likewise |

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use flow_batch::wire::{ChunkDecoder, DecodeLimits};
use prost::Message;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use super::{
    counters::OwnCounters,
    encode::{Compression, RequestEncoder},
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
        })
    }

    /// Whether a partial success may be logged now (at most every
    /// `error_log_interval`).
    fn may_log(&self) -> bool {
        let mut last = self
            .last_partial_log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
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
}

/// Why a request could not be built.
enum BuildError {
    /// The frame cannot be decoded: it never will be.
    Undecodable(String),
    /// Compression failed.
    Compress(std::io::Error),
}

impl OtlpCarrier {
    /// The frame's request body, compressed.
    fn build(&self, frame: &[u8]) -> Result<Vec<u8>, BuildError> {
        let started = Instant::now();
        let decoded = {
            let mut decoder = self.state.decoder.lock().unwrap_or_else(|p| p.into_inner());
            decoder
                .decode(frame)
                .map_err(|e| BuildError::Undecodable(crate::error_chain(&e)))?
        };
        let body = self.encoder.encode(&decoded, SystemTime::now());
        let body = self.compression.apply(body).map_err(BuildError::Compress)?;
        bump(
            &self.state.own.build_time_ns,
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        );
        Ok(body)
    }

    async fn send(self: Arc<Self>, shared: Arc<Shared>, frame: Frame) -> Attempt {
        let counters = &shared.counters;
        // Decoding, building and compressing a chunk of thousands of records is
        // milliseconds of CPU: on the blocking pool, not on a runtime worker.
        let built = tokio::task::spawn_blocking({
            let carrier = Arc::clone(&self);
            let bytes = frame.bytes.clone();
            move || carrier.build(&bytes)
        })
        .await;
        let body = match built {
            Ok(Ok(body)) => body,
            Ok(Err(BuildError::Undecodable(reason))) => {
                return Attempt::Reject(Refusal::Carrier {
                    reason: format!("the spooled frame cannot be decoded: {reason}"),
                });
            }
            Ok(Err(BuildError::Compress(e))) => {
                return Attempt::Retry {
                    failure: Failure::Carrier {
                        what: "compressing an OTLP request",
                        source: Box::new(e),
                    },
                    retry_after: None,
                };
            }
            Err(e) => {
                return Attempt::Retry {
                    failure: Failure::Carrier {
                        what: "building an OTLP request",
                        source: Box::new(e),
                    },
                    retry_after: None,
                };
            }
        };
        let body_len = body.len() as u64;
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
                tracing::debug!(url = %shared.destination, batch_id = %frame.batch_id, error = %crate::error_chain(&error), "OTLP request failed");
                return Attempt::Retry {
                    failure: Failure::Transport(error),
                    retry_after: None,
                };
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
                self.partial_success(&shared, &frame, &prefix);
                bump(&counters.chunks_sent, 1);
                bump(&counters.records_sent, u64::from(frame.records));
                bump(&counters.bytes_sent, body_len);
                Attempt::Delivered
            }
            Answer::Retry => {
                bump(&counters.retriable_statuses, 1);
                let retry_after = retry_after(response.headers(), SystemTime::now());
                let body = body::snippet(response).await;
                tracing::debug!(url = %shared.destination, batch_id = %frame.batch_id, status, body, "OTLP receiver asked to retry");
                Attempt::Retry {
                    failure: Failure::Status(status),
                    retry_after,
                }
            }
            Answer::Refused => {
                let body = body::snippet(response).await;
                Attempt::Reject(Refusal::Carrier {
                    reason: format!("HTTP {status}: {body}"),
                })
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
        if self.state.may_log() {
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
    Refused,
}

/// OTLP/HTTP's rule: 2xx delivered; 429, 502, 503 and 504 retriable (and 408, a
/// request timeout); anything else refused for good.
fn disposition(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Delivered,
        408 | 429 | 502 | 503 | 504 => Answer::Retry,
        _ => Answer::Refused,
    }
}

/// A `Retry-After` in seconds or as an HTTP date (the time from `now` to it; zero
/// when it has passed).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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
        for s in [301, 400, 401, 403, 404, 413, 415, 500, 501] {
            assert_eq!(disposition(s), Answer::Refused, "{s}");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_as_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, " 7 ".parse().expect("value"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        // 2015-10-21T07:28:00Z is 1_445_412_480.
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("value"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(10)));
        let later = now + Duration::from_secs(60);
        assert_eq!(retry_after(&headers, later), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "soon".parse().expect("value"));
        assert_eq!(retry_after(&headers, now), None);
    }
}

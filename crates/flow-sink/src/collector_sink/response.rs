//! One request and what its answer means: a status is delivered (2xx), to be retried
//! (no answer, 408, 429, 5xx, with `Retry-After` honoured) or refused for good
//! (anything else); see [`Disposition`].

use std::{sync::Arc, time::Duration};

use super::{
    CHUNK_CONTENT_TYPE, RESULT_HEADER, Shared, body,
    counters::{Counters, bump},
    frame::Frame,
};
use crate::retry::Disposition;

/// The outcome of one request.
#[derive(Debug)]
pub(super) enum Attempt {
    /// The collector has the frame (2xx).
    Delivered,
    /// Try again later.
    Retry {
        /// The answer's status, if there was an answer.
        status: Option<u16>,
        /// The transport error, if there was no answer.
        error: Option<reqwest::Error>,
        /// The collector's `Retry-After`, in seconds.
        retry_after: Option<Duration>,
    },
    /// Refused for good.
    Reject {
        /// The answer's status.
        status: u16,
        /// The start of its body.
        body: String,
    },
}

/// One POST of `frame` with `client`, classified and counted. Owns what it uses, so
/// that the send task can go on with other work while it runs.
pub(super) async fn post(client: reqwest::Client, shared: Arc<Shared>, frame: Frame) -> Attempt {
    let counters = &shared.counters;
    bump(&counters.requests, 1);
    let started = std::time::Instant::now();
    let sent = client
        .post(&shared.url)
        .header(reqwest::header::CONTENT_TYPE, CHUNK_CONTENT_TYPE)
        .body(frame.bytes.clone())
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(error) => {
            bump(&counters.transport_errors, 1);
            tracing::debug!(url = %shared.url, batch_id = %frame.batch_id, error = %crate::error_chain(&error), "collector request failed");
            return Attempt::Retry {
                status: None,
                error: Some(error),
                retry_after: None,
            };
        }
    };
    bump(&counters.requests_timed, 1);
    bump(
        &counters.request_time_ns,
        started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64,
    );
    let status = response.status().as_u16();
    match Disposition::of_status(status) {
        Disposition::Delivered => {
            let duplicate = response
                .headers()
                .get(RESULT_HEADER)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"duplicate"));
            // Read a short body so the connection can be reused; never a long one.
            let _ = body::read_prefix(response, body::ACK_BODY_LIMIT, body::BODY_READ_TIME).await;
            count_delivered(counters, &frame, duplicate);
            Attempt::Delivered
        }
        Disposition::Retry => {
            bump(&counters.retriable_statuses, 1);
            let retry_after = retry_after(response.headers());
            let body = body::snippet(response).await;
            tracing::debug!(url = %shared.url, batch_id = %frame.batch_id, status, body, "collector asked to retry");
            Attempt::Retry {
                status: Some(status),
                error: None,
                retry_after,
            }
        }
        _ => Attempt::Reject {
            status,
            body: body::snippet(response).await,
        },
    }
}

/// A `Retry-After` in seconds (the HTTP-date form is not honoured).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn count_delivered(counters: &Counters, frame: &Frame, duplicate: bool) {
    bump(&counters.chunks_sent, 1);
    bump(&counters.records_sent, u64::from(frame.records));
    bump(&counters.bytes_sent, frame.bytes.len() as u64);
    if duplicate {
        bump(&counters.chunks_duplicate, 1);
    }
}

/// Counts and logs `frame`, refused for good, once it is set aside (or its caller
/// told).
pub(super) fn count_rejected(shared: &Shared, frame: &Frame, status: u16, body: &str) {
    bump(&shared.counters.chunks_rejected, 1);
    bump(&shared.counters.records_rejected, u64::from(frame.records));
    tracing::error!(
        url = %shared.url,
        batch_id = %frame.batch_id,
        records = frame.records,
        status,
        body,
        "collector rejected a chunk for good; not retrying it"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_is_read_and_anything_else_ignored() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, " 7 ".parse().expect("value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("value"),
        );
        assert_eq!(retry_after(&headers), None);
    }
}

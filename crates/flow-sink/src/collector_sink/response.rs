//! One request and what its answer means: a status is delivered (2xx), to be retried
//! (no answer, 408, 429, 5xx, with `Retry-After` honoured) or refused for good
//! (anything else); see [`Disposition`]. The HTTP side of
//! [`Transport`](super::transport::Transport).

use std::{sync::Arc, time::SystemTime};

use super::{
    CHUNK_CONTENT_TYPE, RESULT_HEADER, body,
    counters::{Counters, bump},
    frame::Frame,
    shared::Shared,
    transport::{Attempt, Failure, Refusal},
};
use crate::retry::Disposition;

/// One POST of `frame` with `client`, classified and counted. Owns what it uses, so
/// that the send task can go on with other work while it runs.
pub(crate) async fn post(client: reqwest::Client, shared: Arc<Shared>, frame: Frame) -> Attempt {
    let counters = &shared.counters;
    bump(&counters.requests, 1);
    let started = std::time::Instant::now();
    let sent = client
        .post(&shared.destination)
        .header(reqwest::header::CONTENT_TYPE, CHUNK_CONTENT_TYPE)
        .body(frame.bytes.clone())
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(error) => {
            bump(&counters.transport_errors, 1);
            tracing::debug!(url = %shared.destination, batch_id = %frame.batch_id, error = %crate::error_chain(&error), "collector request failed");
            return Attempt::Retry {
                failure: Failure::Transport(error),
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
            let retry_after = crate::retry::retry_after(response.headers(), SystemTime::now());
            let body = body::snippet(response).await;
            tracing::debug!(url = %shared.destination, batch_id = %frame.batch_id, status, body, "collector asked to retry");
            Attempt::Retry {
                failure: Failure::Status(status),
                retry_after,
            }
        }
        _ => Attempt::Reject(Refusal::Status {
            status,
            body: body::snippet(response).await,
        }),
    }
}

fn count_delivered(counters: &Counters, frame: &Frame, duplicate: bool) {
    bump(&counters.chunks_sent, 1);
    bump(&counters.records_sent, u64::from(frame.records));
    bump(&counters.bytes_sent, frame.bytes.len() as u64);
    if duplicate {
        bump(&counters.chunks_duplicate, 1);
    }
}

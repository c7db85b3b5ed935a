//! The request handler: checks the path, method, content type and size of a
//! request, applies the [`FaultInjection`](crate::FaultInjection), stores the chunk
//! and says how it went; `GET /metrics` is answered by the metrics module,
//! `GET /api/v1/graph` by the dependency graph (`docs/graph.md`), `GET /` and
//! `GET /assets/...` with the page's files.

use std::sync::{Arc, atomic::Ordering};

use bytes::Bytes;
use flow_batch::wire::{CHUNK_CONTENT_TYPE, CHUNKS_PATH, RESULT_HEADER};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};

use crate::{State, pipeline::Stored, stats::bump};

/// A response with a one-line text body.
type Answer = Response<Full<Bytes>>;

/// A response with `status`, the result header (if any) and `text` as its body.
fn answer(status: StatusCode, result: Option<&'static str>, text: String) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(result) = result {
        headers.insert(RESULT_HEADER, header::HeaderValue::from_static(result));
    }
    response
}

/// A `200` with `body` of `content_type`.
fn content(body: Bytes, content_type: &'static str) -> Answer {
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// `GET /api/v1/graph`: the query parsed (400 naming the bad parameter), answered
/// on the blocking pool (writers meanwhile never wait: [`crate::graph::SharedGraph`]).
async fn graph(state: &Arc<State>, req: &Request<Incoming>) -> Answer {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "the graph is read with GET".into(),
        );
    }
    let now = std::time::SystemTime::now();
    let retention = state.options.graph.retention;
    let query = match crate::graph::GraphQuery::parse(req.uri().query(), now, retention) {
        Ok(query) => query,
        Err(reason) => return answer(StatusCode::BAD_REQUEST, None, reason),
    };
    let Some(_permit) = admit_graph_query(&state.graph_queries) else {
        return graph_busy();
    };
    let graph = Arc::clone(&state.graph);
    let body = tokio::task::spawn_blocking(move || {
        let mut response = graph.query(&query, now);
        response.collector = Some(match crate::host_name() {
            "" => "unknown".to_owned(),
            name => name.to_owned(),
        });
        serde_json::to_vec(&response)
    })
    .await;
    match body {
        Ok(Ok(body)) => content(Bytes::from(body), "application/json"),
        Ok(Err(e)) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            format!("encoding the graph failed: {e}"),
        ),
        Err(_) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "the graph's task failed".into(),
        ),
    }
}

/// Graph queries answered at once; more are answered `503` with `Retry-After: 1`.
pub(crate) const GRAPH_QUERIES: usize = 2;

/// A graph query's turn, or `None` when [`GRAPH_QUERIES`] are being answered: a
/// query holds the graph for up to seconds, so the rest are refused ([`graph_busy`])
/// rather than queued (each would hold a thread of the blocking pool the pipeline
/// needs).
fn admit_graph_query(queries: &tokio::sync::Semaphore) -> Option<tokio::sync::SemaphorePermit<'_>> {
    queries.try_acquire().ok()
}

/// The `503` (`Retry-After: 1`) refusing a graph query past [`GRAPH_QUERIES`].
fn graph_busy() -> Answer {
    let mut busy = answer(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        format!("{GRAPH_QUERIES} graph queries are being answered; try again"),
    );
    busy.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    busy
}

/// The graph's paths when it is turned off.
fn graph_off() -> Answer {
    answer(
        StatusCode::NOT_FOUND,
        None,
        "the dependency graph is off on this collector (--no-graph or [graph] enabled = false)"
            .into(),
    )
}

/// `GET /` and `GET /assets/<path>`: the page's files, if `path` is one.
fn page(req: &Request<Incoming>) -> Option<Answer> {
    let path = req.uri().path();
    let asset = if path == "/" {
        ""
    } else {
        path.strip_prefix("/assets/")?
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Some(answer(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "the page is read with GET".into(),
        ));
    }
    let (bytes, content_type) = crate::page::asset(asset)?;
    let mut response = content(Bytes::from_static(bytes), content_type);
    let headers = response.headers_mut();
    // The page loads nothing but its own files and the API, and shows host-supplied
    // strings (workload IDs): forbid everything else, should an escape ever be missed.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Some(response)
}

/// The page's Content-Security-Policy: its own scripts only, its own styles (and
/// the inline ones its layout sets), requests to the collector alone, no framing.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Answers one request.
pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Answer {
    if req.uri().path() == crate::metrics::METRICS_PATH {
        return crate::metrics::answer(&state, req.method()).await;
    }
    let graph_on = state.options.graph.enabled;
    if req.uri().path() == crate::graph::GRAPH_PATH {
        if !graph_on {
            return graph_off();
        }
        return graph(&state, &req).await;
    }
    if let Some(page) = page(&req) {
        return if graph_on { page } else { graph_off() };
    }
    if req.uri().path() != CHUNKS_PATH {
        return answer(
            StatusCode::NOT_FOUND,
            None,
            format!("no such path; chunks go to {CHUNKS_PATH}"),
        );
    }
    if req.method() != Method::POST {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "chunks are sent with POST".into(),
        );
    }
    let number = state
        .stats
        .requests
        .fetch_add(1, Ordering::Relaxed)
        .saturating_add(1);
    let faults = state
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    let fail_status = StatusCode::from_u16(if faults.fail_status == 0 {
        503
    } else {
        faults.fail_status
    })
    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    if let Some(status) = faults.reject_all {
        bump(&state.stats.faults_injected);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        return answer(status, None, "injected refusal".into());
    }
    let fail_first = number <= u64::from(faults.fail_first);
    let fail_nth = faults.fail_every > 0
        && number > u64::from(faults.fail_first)
        && (number - u64::from(faults.fail_first)).is_multiple_of(u64::from(faults.fail_every));
    if fail_first || fail_nth {
        bump(&state.stats.faults_injected);
        return answer(fail_status, None, "injected failure".into());
    }

    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != CHUNK_CONTENT_TYPE {
        bump(&state.stats.rejected_content_type);
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            format!("content type must be {CHUNK_CONTENT_TYPE}"),
        );
    }
    let max = state.options.max_body_bytes;
    let too_large = || {
        bump(&state.stats.rejected_too_large);
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!("body larger than {max} bytes"),
        )
    };
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let timeout = state.options.body_read_timeout;
    let collected =
        match tokio::time::timeout(timeout, Limited::new(req.into_body(), max).collect()).await {
            Ok(collected) => collected,
            Err(_) => {
                bump(&state.stats.body_timeouts);
                return answer(
                    StatusCode::REQUEST_TIMEOUT,
                    None,
                    format!(
                        "the body did not arrive within {}",
                        humantime::format_duration(timeout)
                    ),
                );
            }
        };
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(error) => {
            return answer(
                StatusCode::BAD_REQUEST,
                None,
                format!("reading the body failed: {error}"),
            );
        }
    };

    let lose_ack = faults.lose_ack_every > 0;
    let fail_writes = faults.fail_writes;
    let acks = state.acks.clone();
    let outcome = state
        .with_pipeline(move |pipeline, stats| {
            let stored = pipeline.accept(&body, std::time::SystemTime::now(), fail_writes, stats);
            // Every flow written so far, this chunk's decided ones included, is below
            // the mark.
            (stored, acks.map(|a| (a.mark(), a)))
        })
        .await;
    let Some((outcome, waiting)) = outcome else {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "storing task failed".into(),
        );
    };
    // With an output that acknowledges later (Kafka), a chunk is answered 2xx only
    // once its decided flows, and everything written before them, are acknowledged.
    if let (Stored::Accepted { .. } | Stored::Duplicate { .. }, Some((mark, acks))) =
        (&outcome, waiting)
    {
        let timeout = state.options.output_ack_timeout;
        if !acks.wait(mark, timeout).await {
            bump(&state.stats.ack_timeouts);
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                format!(
                    "stored, but the output has not acknowledged its flows within {} ({} writes outstanding); retry later",
                    humantime::format_duration(timeout),
                    acks.outstanding()
                ),
            );
        }
    }
    match outcome {
        Stored::Accepted { batch_id, records } => {
            let accepted = state.stats.chunks_accepted.load(Ordering::Relaxed);
            if lose_ack && accepted.is_multiple_of(u64::from(faults.lose_ack_every)) {
                bump(&state.stats.faults_injected);
                return answer(fail_status, None, "injected lost acknowledgement".into());
            }
            answer(
                StatusCode::OK,
                Some("accepted"),
                format!("accepted {batch_id} records={records}"),
            )
        }
        Stored::Duplicate { batch_id } => answer(
            StatusCode::OK,
            Some("duplicate"),
            format!("duplicate {batch_id}"),
        ),
        Stored::Undecodable(reason) => answer(StatusCode::BAD_REQUEST, None, reason),
        Stored::WriteFailed(reason) | Stored::Busy(reason) => {
            answer(StatusCode::SERVICE_UNAVAILABLE, None, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_queries_beyond_the_limit_are_refused_until_one_ends() {
        let queries = tokio::sync::Semaphore::new(GRAPH_QUERIES);
        let held: Vec<_> = (0..GRAPH_QUERIES)
            .map(|_| admit_graph_query(&queries).expect("a turn"))
            .collect();
        assert!(
            admit_graph_query(&queries).is_none(),
            "a query past {GRAPH_QUERIES} was let in"
        );
        let busy = graph_busy();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        drop(held);
        assert!(admit_graph_query(&queries).is_some());
    }
}

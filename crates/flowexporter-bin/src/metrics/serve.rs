//! Serving the exposition over HTTP with `flow_http`'s limits.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use flow_http::{ConnectionCounters, ConnectionLimits, ConnectionStats};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
};

use super::Metrics;

/// Connections the metrics endpoint keeps open at once; one more is closed as soon as
/// it is accepted. A scraper needs one; the cap keeps a flood of connections from
/// taking the file descriptors the spool and journal need.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers (and the longest a keep-alive
/// connection stays idle between requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection on which nothing moved for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The media type of the OpenMetrics text that `prometheus-client` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` (and `HEAD`) on `addr` until the runtime stops, within
/// [`MAX_CONNECTIONS`], [`HEADER_READ_TIMEOUT`] and [`IDLE_TIMEOUT`]. A failing
/// `accept` (out of file descriptors) is logged at most every 10 s and retried after
/// 100 ms; it never stops the server or the exporter.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    let limits = ConnectionLimits::new(MAX_CONNECTIONS, HEADER_READ_TIMEOUT, IDLE_TIMEOUT);
    let counters = Arc::new(ConnectionCounters::default());
    tokio::spawn(flow_http::serve(
        listener,
        limits,
        Arc::clone(&counters),
        std::future::pending(),
        move |stream, _peer| {
            let metrics = Arc::clone(&metrics);
            let counters = Arc::clone(&counters);
            let server = Arc::clone(&counters);
            flow_http::serve_connection(stream, limits, counters, move |req| {
                std::future::ready(respond(&req, &metrics, &server.snapshot()))
            })
        },
    ));
    Ok(())
}

/// The answer to one request: the exposition for `GET` or `HEAD /metrics` (hyper
/// leaves the body out for `HEAD`), `405` with `Allow` for another method there, `404`
/// elsewhere.
fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    server: &ConnectionStats,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    *response.body_mut() = Full::new(Bytes::from(metrics.encode(server)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

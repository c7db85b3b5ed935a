//! [`serve_connection`]: HTTP/1.1 on one connection, with the header read timeout and
//! the idle timeout.

use std::{convert::Infallible, future::Future, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};

use crate::{
    ConnectionCounters, ConnectionLimits,
    activity::{Activity, Busy, Tracked},
    counters::bump,
};

/// Serves HTTP/1.1 on one connection with `handler`, within the timeouts of `limits`;
/// returns when the peer closes, a timeout closes it, or the connection fails.
pub async fn serve_connection<IO, H, F>(
    io: IO,
    limits: ConnectionLimits,
    counters: Arc<ConnectionCounters>,
    handler: H,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Tracked::new(io, Arc::clone(&activity));
    let handler = Arc::new(handler);
    let service_activity = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req| {
        let busy = Busy::start(Arc::clone(&service_activity));
        let answer = handler(req);
        async move {
            let response = answer.await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    loop {
        let deadline = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    if error.is_timeout() {
                        bump(&counters.timed_out);
                    }
                    tracing::debug!(%error, "connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if activity.busy() {
                    // A request is being handled: its handler bounds its own time.
                    activity.touch();
                } else if activity.last() + limits.idle_timeout <= Instant::now() {
                    bump(&counters.timed_out);
                    tracing::debug!("closing an idle connection");
                    return;
                }
            }
        }
    }
}

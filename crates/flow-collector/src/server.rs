//! Serving connections: plain or TLS, through `flow_http` (connection caps and
//! timeouts).

use std::sync::Arc;

use flow_http::{ConnectionCounters, ConnectionLimits};
use tokio::sync::watch;

use crate::{State, handler::handle};

/// Accepts and serves connections until `shutdown` turns true.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = state.options.connection_limits();
    let counters = Arc::clone(&state.connections);
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    flow_http::serve(listener, limits, counters, stopped, move |stream, peer| {
        let state = Arc::clone(&state);
        let acceptor = acceptor.clone();
        async move {
            let counters = Arc::clone(&state.connections);
            match acceptor {
                None => serve_connection(stream, limits, counters, state).await,
                Some(acceptor) => {
                    // The handshake is bounded like a request's headers.
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => serve_connection(tls, limits, counters, state).await,
                        Ok(Err(error)) => {
                            tracing::info!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::info!(%peer, "TLS handshake timed out");
                        }
                    }
                }
            }
        }
    })
    .await;
}

/// Serves the requests of one (plain or TLS) connection.
async fn serve_connection<IO>(
    io: IO,
    limits: ConnectionLimits,
    counters: Arc<ConnectionCounters>,
    state: Arc<State>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    flow_http::serve_connection(io, limits, counters, move |req| {
        handle(Arc::clone(&state), req)
    })
    .await;
}

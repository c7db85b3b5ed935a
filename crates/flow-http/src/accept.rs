//! [`serve`]: the accept loop, with the connection cap and the backoff after a failed
//! `accept`.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinSet,
    time::Instant,
};

use crate::{
    ConnectionCounters, ConnectionLimits,
    counters::{OpenGuard, bump},
};

/// How often, at most, a failing `accept` is logged.
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until `shutdown` completes, within `limits`, and
/// runs `on_connection` for each in a task of its own; on shutdown every open
/// connection is dropped.
///
/// `on_connection` receives the stream and the peer's address; it typically ends in
/// [`serve_connection`](crate::serve_connection) (after a TLS handshake, for
/// instance).
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: ConnectionLimits,
    counters: Arc<ConnectionCounters>,
    shutdown: impl Future<Output = ()>,
    mut on_connection: H,
) where
    H: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    // Semaphore::new panics above MAX_PERMITS; no cap that large means anything.
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut connections = JoinSet::new();
    let mut accept_log = RateLimitedLog::default();
    let mut cap_log = RateLimitedLog::default();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        bump(&counters.refused_over_cap);
                        cap_log.warn(|suppressed| {
                            tracing::warn!(
                                %peer,
                                max_connections = limits.max_connections,
                                suppressed,
                                "too many connections open: closing a new one at once"
                            );
                        });
                        drop(stream);
                        continue;
                    };
                    bump(&counters.accepted);
                    let guard = OpenGuard::open(Arc::clone(&counters));
                    let connection = on_connection(stream, peer);
                    connections.spawn(async move {
                        connection.await;
                        drop(guard);
                        drop(permit);
                    });
                }
                Err(error) => {
                    bump(&counters.accept_errors);
                    let exhausted = matches!(
                        rustix::io::Errno::from_io_error(&error),
                        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
                    );
                    accept_log.warn(|suppressed| {
                        tracing::warn!(
                            %error,
                            file_descriptors_exhausted = exhausted,
                            suppressed,
                            backoff = ?limits.accept_backoff,
                            "accepting a connection failed; waiting before the next accept"
                        );
                    });
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(limits.accept_backoff) => {}
                    }
                }
            },
        }
    }
    connections.shutdown().await;
}

/// Logs at most once per [`ACCEPT_ERROR_LOG_INTERVAL`], with how many were skipped.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < ACCEPT_ERROR_LOG_INTERVAL)
        {
            self.suppressed = self.suppressed.saturating_add(1);
            return;
        }
        log(self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

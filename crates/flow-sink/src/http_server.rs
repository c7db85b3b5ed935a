//! Serving HTTP/1.1 to peers that may be hostile, for the reference collector and the
//! exporter's metrics endpoint.
//!
//! Every connection costs a file descriptor, and a process that runs out of them fails
//! somewhere else entirely (a spool `fsync`, a journal rotation). So [`serve`]:
//!
//! - caps the connections open at once ([`ConnectionLimits::max_connections`]); a
//!   connection over the cap is closed as soon as it is accepted, and counted;
//! - gives a peer [`ConnectionLimits::header_read_timeout`] to send a request's
//!   headers, counted from when the server starts waiting for them: a fresh connection
//!   that sends nothing and a keep-alive connection idle between requests are both
//!   closed after it (hyper's own timer, on [`TokioTimer`]);
//! - closes a connection on which no byte moved either way for
//!   [`ConnectionLimits::idle_timeout`] while no request is being handled (a peer that
//!   stops reading its answers, or trickles a request body without end);
//! - treats a failed `accept` (`EMFILE`, `ENFILE`, `ENOBUFS`, ...) as a reason to wait
//!   [`ConnectionLimits::accept_backoff`] and try again, logged at most once per
//!   [`ACCEPT_ERROR_LOG_INTERVAL`]: it never ends the server.
//!
//! What each connection did is counted in [`ConnectionCounters`].

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinSet,
    time::Instant,
};

/// How often, at most, a failing `accept` is logged.
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Limits on the connections of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionLimits {
    /// Connections open at once; one more is closed as soon as it is accepted. Taken
    /// as at least 1 (and at most tokio's `Semaphore::MAX_PERMITS`).
    pub max_connections: usize,
    /// Time a peer has to send a request's headers, counted from when the server
    /// waits for them (so also the longest a keep-alive connection stays idle between
    /// requests).
    pub header_read_timeout: Duration,
    /// A connection on which nothing was read or written for this long, while no
    /// request is being handled, is closed.
    pub idle_timeout: Duration,
    /// Wait after a failed `accept` before the next one.
    pub accept_backoff: Duration,
}

impl ConnectionLimits {
    /// `max_connections` at once (at least 1), `header_read_timeout` for headers,
    /// `idle_timeout` without traffic; 100 ms of backoff after a failed `accept`.
    pub fn new(
        max_connections: usize,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: max_connections.max(1),
            header_read_timeout,
            idle_timeout,
            accept_backoff: Duration::from_millis(100),
        }
    }

    /// Sets [`accept_backoff`](ConnectionLimits::accept_backoff).
    pub fn with_accept_backoff(mut self, backoff: Duration) -> ConnectionLimits {
        self.accept_backoff = backoff;
        self
    }
}

/// What a server's connections did, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    accepted: AtomicU64,
    refused_over_cap: AtomicU64,
    timed_out: AtomicU64,
    accept_errors: AtomicU64,
    open: AtomicU64,
}

/// A snapshot of [`ConnectionCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections closed at once because `max_connections` were open.
    pub refused_over_cap: u64,
    /// Connections closed by the header read timeout or the idle timeout.
    pub timed_out: u64,
    /// Failed `accept` calls (each followed by the backoff).
    pub accept_errors: u64,
    /// Connections open now.
    pub open: u64,
}

impl ConnectionCounters {
    /// The counts so far.
    pub fn snapshot(&self) -> ConnectionStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnectionStats {
            accepted: get(&self.accepted),
            refused_over_cap: get(&self.refused_over_cap),
            timed_out: get(&self.timed_out),
            accept_errors: get(&self.accept_errors),
            open: get(&self.open),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts one open connection for as long as it lives.
struct OpenGuard(Arc<ConnectionCounters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections on `listener` until `shutdown` completes, within `limits`, and
/// runs `on_connection` for each in a task of its own; on shutdown every open
/// connection is dropped.
///
/// `on_connection` receives the stream and the peer's address; it typically ends in
/// [`serve_connection`] (after a TLS handshake, for instance).
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
                    counters.open.fetch_add(1, Ordering::Relaxed);
                    let guard = OpenGuard(Arc::clone(&counters));
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
    let io = Tracked {
        io,
        activity: Arc::clone(&activity),
    };
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

/// When bytes last moved on a connection, and how many requests are being handled.
struct Activity {
    last: Mutex<Instant>,
    busy: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            last: Mutex::new(Instant::now()),
            busy: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }
}

/// Marks a request as being handled while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that notes when bytes move through it.
struct Tracked<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

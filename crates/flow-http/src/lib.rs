//! Serving HTTP/1.1 to peers that may be hostile: the server loop of flowexporter's
//! reference collector (`flow-collector`) and of the exporter's metrics endpoint.
//!
//! Every connection costs a file descriptor, and a process that runs out of them fails
//! somewhere else entirely (a spool `fsync`, a journal rotation). So [`serve`]:
//!
//! - caps the connections open at once ([`ConnectionLimits::max_connections`]); a
//!   connection over the cap is closed as soon as it is accepted, and counted;
//! - treats a failed `accept` (`EMFILE`, `ENFILE`, `ENOBUFS`, ...) as a reason to wait
//!   [`ConnectionLimits::accept_backoff`] and try again, logged at most once per
//!   [`ACCEPT_ERROR_LOG_INTERVAL`]: it never ends the server.
//!
//! and [`serve_connection`], which serves one connection's requests with a handler:
//!
//! - gives a peer [`ConnectionLimits::header_read_timeout`] to send a request's
//!   headers, counted from when the server starts waiting for them: a fresh connection
//!   that sends nothing and a keep-alive connection idle between requests are both
//!   closed after it (hyper's own timer, on tokio);
//! - closes a connection on which no byte moved either way for
//!   [`ConnectionLimits::idle_timeout`] while no request is being handled (a peer that
//!   stops reading its answers, or trickles a request body without end).
//!
//! What each connection did is counted in [`ConnectionCounters`]. The handler bounds
//! its own time (reading a request body, for instance); TLS, if any, is the caller's:
//! `serve`'s per-connection closure does the handshake and then calls
//! `serve_connection` on the TLS stream.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//!
//! use bytes::Bytes;
//! use flow_http::{ConnectionCounters, ConnectionLimits, serve, serve_connection};
//! use http_body_util::Full;
//! use hyper::Response;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! // 16 connections at once, 5 s for a request's headers, 10 s without traffic.
//! let limits = ConnectionLimits::new(16, Duration::from_secs(5), Duration::from_secs(10));
//! let counters = Arc::new(ConnectionCounters::default());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let per_connection = Arc::clone(&counters);
//! let server = tokio::spawn(serve(
//!     listener,
//!     limits,
//!     Arc::clone(&counters),
//!     async {
//!         let _ = stopped.await;
//!     },
//!     move |stream, _peer| {
//!         serve_connection(stream, limits, Arc::clone(&per_connection), |_request| async {
//!             Response::new(Full::new(Bytes::from_static(b"hello\n")))
//!         })
//!     },
//! ));
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await?;
//! client
//!     .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
//!     .await?;
//! let mut answer = String::new();
//! client.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hello\n"));
//!
//! let _ = stop.send(());
//! server.await?;
//! assert_eq!(counters.snapshot().accepted, 1);
//! # Ok(())
//! # }
//! ```

mod accept;
mod activity;
mod connection;
mod counters;
mod limits;

pub use accept::{ACCEPT_ERROR_LOG_INTERVAL, serve};
pub use connection::serve_connection;
pub use counters::{ConnectionCounters, ConnectionStats};
pub use limits::ConnectionLimits;

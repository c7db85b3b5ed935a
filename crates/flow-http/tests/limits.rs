//! The server loop's limits against raw TCP peers: the connection cap and the idle
//! timeout.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use flow_http::{ConnectionCounters, ConnectionLimits, ConnectionStats, serve, serve_connection};
use http_body_util::Full;
use hyper::Response;
use tokio::{io::AsyncReadExt, net::TcpStream, sync::oneshot, task::JoinHandle};

/// A server answering `ok` within `limits`, its address, its counters and its stop.
async fn start(
    limits: ConnectionLimits,
) -> (
    std::net::SocketAddr,
    Arc<ConnectionCounters>,
    oneshot::Sender<()>,
    JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counters = Arc::new(ConnectionCounters::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let per_connection = Arc::clone(&counters);
    let server = tokio::spawn(serve(
        listener,
        limits,
        Arc::clone(&counters),
        async {
            let _ = stopped.await;
        },
        move |stream, _peer| {
            serve_connection(stream, limits, Arc::clone(&per_connection), |_req| async {
                Response::new(Full::new(Bytes::from_static(b"ok")))
            })
        },
    ));
    (addr, counters, stop, server)
}

/// Waits up to 5 s for the counters to satisfy `done`.
async fn wait_for(counters: &ConnectionCounters, done: impl Fn(&ConnectionStats) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done(&counters.snapshot()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "counters: {:?}",
            counters.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_connection_over_the_cap_is_closed_at_once_and_counted() {
    let limits = ConnectionLimits::new(1, Duration::from_secs(30), Duration::from_secs(30));
    let (addr, counters, stop, server) = start(limits).await;
    let _first = TcpStream::connect(addr).await.expect("connect");
    wait_for(&counters, |s| s.open == 1).await;

    let mut second = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("closed within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    wait_for(&counters, |s| s.refused_over_cap == 1).await;
    assert_eq!(counters.snapshot().accepted, 1);

    let _ = stop.send(());
    server.await.expect("server");
    assert_eq!(counters.snapshot().open, 0);
}

#[tokio::test]
async fn a_silent_connection_is_closed_by_a_timeout_and_counted() {
    let limits = ConnectionLimits::new(4, Duration::from_millis(200), Duration::from_millis(200));
    let (addr, counters, stop, server) = start(limits).await;
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    wait_for(&counters, |s| s.timed_out == 1 && s.open == 0).await;

    let _ = stop.send(());
    server.await.expect("server");
}

//! The collector sink against a misbehaving HTTP peer: answers whose body never ends
//! (chunked, or a huge `Content-Length`) or trickles. The sink must settle the
//! delivery promptly, keep at most 512 bytes of a refusal's body, and drop the
//! connection instead of reading on: the peer counts what it could write before the
//! client went away.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use flow_sink::{CollectorConfig, CollectorSink, FlowSink, SinkError};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What the peer writes after the status line and headers are sent.
#[derive(Clone, Copy, Debug)]
enum Body {
    /// `Transfer-Encoding: chunked`, 64 KiB chunks, as fast as the client takes them.
    Chunked,
    /// `Content-Length` of 1 TB, 64 KiB writes, as fast as the client takes them.
    HugeLength,
    /// `Content-Length` of 1 MB, one byte every 20 ms.
    Trickle,
}

/// The peer stops writing (and closes) after this much: the old, unbounded reads
/// would otherwise eat the machine's memory.
const PEER_CAP: u64 = 64 << 20;
/// A client that reads on no further than it needs stops the peer far below this.
const BOUND: u64 = 16 << 20;

struct Peer {
    addr: SocketAddr,
    /// Bytes written by the connections that ended (the client went away, or the cap).
    written: Arc<AtomicU64>,
    /// Connections that ended.
    ended: Arc<AtomicU64>,
}

async fn hostile_peer(status: &'static str, body: Body) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let written = Arc::new(AtomicU64::new(0));
    let ended = Arc::new(AtomicU64::new(0));
    let (w, e) = (Arc::clone(&written), Arc::clone(&ended));
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let (w, e) = (Arc::clone(&w), Arc::clone(&e));
            tokio::spawn(async move {
                let n = answer(conn, status, body).await;
                w.fetch_add(n, Ordering::SeqCst);
                e.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Peer {
        addr,
        written,
        ended,
    }
}

/// Reads one request, answers `status` and writes `body` until the client goes away
/// or [`PEER_CAP`]; returns the body bytes written.
async fn answer(mut conn: TcpStream, status: &str, body: Body) -> u64 {
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    let header_end = loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return 0,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < header_end + length {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return 0,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let headers = match body {
        Body::Chunked => "Transfer-Encoding: chunked\r\n",
        Body::HugeLength => "Content-Length: 1000000000000\r\n",
        Body::Trickle => "Content-Length: 1000000\r\n",
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n{headers}\r\n");
    if conn.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let data = vec![b'x'; 64 << 10];
    let mut written = 0u64;
    while written < PEER_CAP {
        let sent = match body {
            Body::Chunked => {
                let mut piece = format!("{:x}\r\n", data.len()).into_bytes();
                piece.extend_from_slice(&data);
                piece.extend_from_slice(b"\r\n");
                conn.write_all(&piece).await.map(|()| data.len())
            }
            Body::HugeLength => conn.write_all(&data).await.map(|()| data.len()),
            Body::Trickle => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                conn.write_all(b"x").await.map(|()| 1)
            }
        };
        match sent {
            Ok(n) => written += n as u64,
            Err(_) => return written,
        }
    }
    written
}

fn config(addr: SocketAddr, instance: u128) -> CollectorConfig {
    CollectorConfig::new(
        format!("http://{addr}/v1/chunks"),
        HOST,
        flow_batch::wire::InstanceId::new(instance),
    )
    .with_retry(fast_retry().with_max_attempts(Some(1)))
    .with_request_timeout(Duration::from_secs(30))
}

/// Delivers one chunk without a spool; returns the result and how long it took.
async fn deliver_once(peer: &Peer, instance: u128) -> (Result<(), SinkError>, Duration) {
    let sink = CollectorSink::start(config(peer.addr, instance)).expect("sink");
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), sink.deliver(&chunk(0, 0, 10)))
        .await
        .expect("the delivery settles");
    (result, started.elapsed())
}

/// Waits for the peer's connection to end (the client dropped it); returns what the
/// peer could write.
async fn written_until_dropped(peer: &Peer) -> u64 {
    eventually(
        Duration::from_secs(10),
        "the client drops the connection",
        || peer.ended.load(Ordering::SeqCst) >= 1,
    )
    .await;
    peer.written.load(Ordering::SeqCst)
}

fn assert_prompt(took: Duration) {
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_chunked_200_is_delivered_and_not_read_on() {
    let peer = hostile_peer("200 OK", Body::Chunked).await;
    let (result, took) = deliver_once(&peer, 40).await;
    result.expect("a 200 is a delivery");
    assert_prompt(took);
    let written = written_until_dropped(&peer).await;
    assert!(written < BOUND, "the peer wrote {written} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_with_a_huge_content_length_is_delivered_and_not_read_on() {
    let peer = hostile_peer("200 OK", Body::HugeLength).await;
    let (result, took) = deliver_once(&peer, 41).await;
    result.expect("a 200 is a delivery");
    assert_prompt(took);
    let written = written_until_dropped(&peer).await;
    assert!(written < BOUND, "the peer wrote {written} bytes");
}

fn assert_short_reason(result: Result<(), SinkError>) {
    match result {
        Err(SinkError::Rejected {
            status: 400, body, ..
        }) => {
            assert!(body.len() <= 512, "a reason of {} bytes", body.len());
            assert!(body.starts_with("xxxx"), "{body}");
        }
        other => panic!("expected a 400 rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_chunked_400_is_rejected_with_512_bytes_of_reason() {
    let peer = hostile_peer("400 Bad Request", Body::Chunked).await;
    let (result, took) = deliver_once(&peer, 42).await;
    assert_short_reason(result);
    assert_prompt(took);
    let written = written_until_dropped(&peer).await;
    assert!(written < BOUND, "the peer wrote {written} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_with_a_huge_content_length_is_rejected_with_512_bytes_of_reason() {
    let peer = hostile_peer("400 Bad Request", Body::HugeLength).await;
    let (result, took) = deliver_once(&peer, 43).await;
    assert_short_reason(result);
    assert_prompt(took);
    let written = written_until_dropped(&peer).await;
    assert!(written < BOUND, "the peer wrote {written} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_does_not_hold_the_sender() {
    let peer = hostile_peer("200 OK", Body::Trickle).await;
    let (result, took) = deliver_once(&peer, 44).await;
    result.expect("a 200 is a delivery");
    assert_prompt(took);
    written_until_dropped(&peer).await;

    let peer = hostile_peer("400 Bad Request", Body::Trickle).await;
    let (result, took) = deliver_once(&peer, 45).await;
    match result {
        Err(SinkError::Rejected {
            status: 400, body, ..
        }) => assert!(body.len() <= 512, "{body}"),
        other => panic!("expected a 400 rejection, got {other:?}"),
    }
    assert_prompt(took);
    written_until_dropped(&peer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_spool_an_endless_400_is_set_aside_with_a_short_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let peer = hostile_peer("400 Bad Request", Body::Chunked).await;
    let sink = CollectorSink::start(
        sink_config(&format!("http://{}/v1/chunks", peer.addr), 46, &spool_dir)
            .with_request_timeout(Duration::from_secs(30)),
    )
    .expect("sink");
    let started = Instant::now();
    sink.deliver(&chunk(0, 0, 10)).await.expect("spooled");
    eventually(Duration::from_secs(20), "the rejection", || {
        sink.counters().chunks_rejected == 1
    })
    .await;
    assert_prompt(started.elapsed());
    let reasons: Vec<_> = std::fs::read_dir(spool_dir.join("rejected"))
        .expect("rejected dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "reason"))
        .collect();
    assert_eq!(reasons.len(), 1);
    let text = std::fs::read_to_string(&reasons[0]).expect("reason");
    assert!(text.contains("HTTP 400"), "{text}");
    assert!(text.len() < 1024, "a reason file of {} bytes", text.len());
    let written = written_until_dropped(&peer).await;
    assert!(written < BOUND, "the peer wrote {written} bytes");
    sink.close().await.expect("close");
}

//! The IPFIX sink against a real collector: Debian's `nfcapd` (nfdump 1.7), started by
//! the tests on a loopback UDP port, its files read back with `nfdump -o json` and
//! compared field by field with the records exported. nfcapd has no TCP listener:
//! the TCP tests put a relay in front of it that cuts the TCP stream into messages
//! by their length fields and forwards each as a datagram, so nfcapd still decodes
//! every message; the relay also checks that each connection starts with the
//! templates and sequence number 0 (nfcapd keeps templates per exporter address, so
//! it would not notice a connection without them). What nfdump does not show (our
//! enterprise elements, the nanosecond times, the options record) is checked by an
//! independent decoder of the messages written here, and docs/schema.md's IPFIX
//! column and docs/ipfix.md's element table are compared with the templates, row by
//! row.
//!
//! The tests need `nfcapd` and `nfdump` (Debian package `nfdump`) and fail without them.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{HOST, eventually, fast_retry};
use flow_batch::{Chunk, Window, wire::InstanceId};
use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, UnattributedReason,
};
use flow_sink::{
    FlowSink, IpfixSink, IpfixSinkConfig,
    ipfix_sink::{
        ELEMENTS, IpfixEncoder, Messages, REVERSE_PEN, Registry, TEMPLATE_EXPORTER,
        elements::{DATA_TEMPLATES, template_elements},
        observation_domain_for,
    },
};
use flow_testkit::nfdump::{Nfcapd, Stored, parse_utc_ms};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const PEN: u32 = 32473;

// ---------------------------------------------------------------------------------
// Records built field by field.
// ---------------------------------------------------------------------------------

/// `(close_state, close_reason)` of the records, in turn: every reason, from the
/// states it comes from.
const CLOSES: [(u8, CloseReason); 13] = [
    (6, CloseReason::Normal),          // TIME_WAIT
    (5, CloseReason::Reset),           // FIN_WAIT2
    (2, CloseReason::Refused),         // SYN_SENT
    (2, CloseReason::ConnectTimedOut), // SYN_SENT
    (3, CloseReason::ConnectAborted),  // SYN_RECV
    (1, CloseReason::Aborted),         // ESTABLISHED
    (8, CloseReason::Aborted),         // CLOSE_WAIT
    (1, CloseReason::TimedOut),        // ESTABLISHED
    (9, CloseReason::Normal),          // LAST_ACK
    (1, CloseReason::Error(113)),      // ESTABLISHED
    (7, CloseReason::Normal),          // CLOSE
    (4, CloseReason::Normal),          // FIN_WAIT1
    (11, CloseReason::Normal),         // CLOSING
];

/// Record `n`: IPv6 when `n % 3 == 1`, no start time when `n % 7 == 3`, interim when
/// `n % 5 == 4`; every number derived from `n` so that it can be found again.
fn record(n: u64) -> FlowRecord {
    let t_end = UNIX_EPOCH
        + Duration::from_millis(1_700_000_000_000 + n * 1_001)
        + Duration::from_nanos(123_456);
    let (local, remote): (SocketAddr, SocketAddr) = if n % 3 == 1 {
        (
            format!("[2001:db8::{:x}]:{}", n + 1, 1000 + n)
                .parse()
                .expect("v6"),
            format!("[2001:db8:1::{:x}]:{}", n + 7, 40_000 + n)
                .parse()
                .expect("v6"),
        )
    } else {
        (
            format!("10.1.{}.{}:{}", n / 250, n % 250 + 1, 1000 + n)
                .parse()
                .expect("v4"),
            format!("192.168.{}.{}:{}", n / 250, n % 250 + 2, 40_000 + n)
                .parse()
                .expect("v4"),
        )
    };
    let direction = [Direction::Outbound, Direction::Inbound, Direction::Unknown][(n % 3) as usize];
    let t_start = (n % 7 != 3).then(|| t_end - Duration::from_millis(250 + n));
    let kind = if n % 5 == 4 {
        RecordKind::Interim
    } else {
        RecordKind::Final
    };
    // The states and reasons a connection closes with (an interim record: the state
    // it is in, no reason).
    let (state, reason) = CLOSES[(n % CLOSES.len() as u64) as usize];
    let (state, reason) = match kind {
        RecordKind::Final => (TcpState(state), reason),
        RecordKind::Interim if TcpState(state).is_handshake() => (TcpState(1), CloseReason::Normal),
        RecordKind::Interim => (TcpState(state), CloseReason::Normal),
    };
    let stats = SocketStats {
        bytes_sent: 1_000_000 + n * 17,
        bytes_received: 5_000 + n * 3,
        segs_in: 10 + n as u32,
        segs_out: 20 + 2 * n as u32,
        retransmits: (n % 4) as u32,
        bytes_retransmitted: n * 100,
        srtt_us: 150 + n as u32,
        rttvar_us: 30 + n as u32,
    };
    let mut builder = flow_testkit::record()
        .local(local)
        .remote(remote)
        .direction(direction)
        .t_end(t_end)
        .t_start(t_start)
        .stats(stats)
        .close(state, reason)
        .kind(kind)
        .incomplete(n.is_multiple_of(11))
        .flow_id((n % 4 != 2).then_some(FlowId {
            boot_id: [n as u8; 16],
            cookie: 0x1000 + n,
        }))
        .process(
            (direction == Direction::Outbound)
                .then(|| ProcessInfo::new(1000 + n as u32, "curl", 5000 + n)),
        );
    builder = if n.is_multiple_of(2) {
        builder.workload(format!("k8s:prod/api-{n}"), IdentitySource::ConnectMap)
    } else {
        builder.unattributed(UnattributedReason::NoMatch)
    };
    builder.build()
}

fn window() -> Window {
    Window::from_millis(1_700_000_000_000, 1_700_000_060_000).expect("window")
}

/// Chunk `sequence` with records `first..first + count`.
fn chunk(sequence: u64, first: u64, count: u64) -> Chunk {
    Chunk::new(
        window(),
        sequence as u32,
        sequence,
        false,
        (first..first + count).map(record).collect(),
    )
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

fn config(url: &str, spool: &Path, instance: u128) -> IpfixSinkConfig {
    IpfixSinkConfig::from_url(url, HOST, InstanceId::new(instance))
        .expect("url")
        .with_retry(fast_retry())
        .with_spool_dir(spool)
        .with_flush_timeout(WAIT)
        .with_error_log_interval(Duration::ZERO)
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(2))
}

// ---------------------------------------------------------------------------------
// What nfdump shows, against the records.
// ---------------------------------------------------------------------------------

/// A JSON field as text (nfdump writes some numbers as strings).
fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => panic!("nfdump shows no {key:?} in {v}"),
    }
}

/// The `tcpControlBits` docs/ipfix.md says record `r` carries: the flags its
/// connection's life implies.
fn implied_flags(r: &FlowRecord) -> u16 {
    let handshake = matches!(r.close_state.0, 2 | 3); // SYN_SENT, SYN_RECV
    let known_reason = match r.record_kind {
        RecordKind::Final if !r.incomplete => Some(r.close_reason),
        _ => None,
    };
    let connect_failed = r.record_kind == RecordKind::Final
        && matches!(
            r.close_reason,
            CloseReason::Refused | CloseReason::ConnectTimedOut | CloseReason::ConnectAborted
        );
    let syn = r.t_start.is_some() || handshake;
    let ack = !handshake && !connect_failed;
    // FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING.
    let fin = matches!(r.close_state.0, 4 | 5 | 6 | 8 | 9 | 11)
        || known_reason == Some(CloseReason::Normal);
    let rst = matches!(
        known_reason,
        Some(CloseReason::Reset | CloseReason::Refused | CloseReason::Aborted)
    );
    u16::from(fin) | u16::from(syn) << 1 | u16::from(rst) << 2 | u16::from(ack) << 4
}

/// nfdump's rendering of TCP flags (`tcp_flags` in its JSON, `%flg`): CWR ECE URG ACK
/// PSH RST SYN FIN, a dot for a clear bit.
fn nfdump_flags(bits: u16) -> String {
    "CEUAPRSF"
        .chars()
        .enumerate()
        .map(|(i, c)| if bits & (0x80 >> i) != 0 { c } else { '.' })
        .collect()
}

fn number(v: &Value, key: &str) -> u64 {
    text(v, key)
        .parse()
        .unwrap_or_else(|_| panic!("{key} of {v} is not a number"))
}

/// Asserts that what nfcapd stored is exactly `records`, field by field (found by
/// source address and port, unique per record), and, when `in_sequence`, that it
/// counted no sequence error.
fn assert_stored(stored: &Stored, records: &[FlowRecord], in_sequence: bool) {
    let mut by_source: BTreeMap<(String, u16), &Value> = BTreeMap::new();
    for flow in &stored.flows {
        let ip = flow
            .get("src4_addr")
            .or_else(|| flow.get("src6_addr"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("a flow without a source address: {flow}"));
        let key = (ip.to_owned(), number(flow, "src_port") as u16);
        assert!(
            by_source.insert(key.clone(), flow).is_none(),
            "flow {key:?} twice"
        );
    }
    assert_eq!(
        by_source.len(),
        records.len(),
        "one flow per record; nfcapd: {}",
        stored.log
    );
    for r in records {
        let key = (r.local.ip().to_string(), r.local.port());
        let flow = by_source
            .get(&key)
            .unwrap_or_else(|| panic!("no flow for {key:?}"));
        let what = format!("record {key:?}: {flow}");
        let (src, dst) = match (r.local.ip(), r.remote.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => ("src4_addr", "dst4_addr"),
            _ => ("src6_addr", "dst6_addr"),
        };
        assert_eq!(text(flow, src), r.local.ip().to_string(), "{what}");
        assert_eq!(text(flow, dst), r.remote.ip().to_string(), "{what}");
        assert_eq!(
            number(flow, "src_port"),
            u64::from(r.local.port()),
            "{what}"
        );
        assert_eq!(
            number(flow, "dst_port"),
            u64::from(r.remote.port()),
            "{what}"
        );
        assert_eq!(number(flow, "proto"), 6, "{what}");
        assert_eq!(number(flow, "in_bytes"), r.stats.bytes_sent, "{what}");
        assert_eq!(
            number(flow, "in_packets"),
            u64::from(r.stats.segs_out),
            "{what}"
        );
        assert_eq!(number(flow, "out_bytes"), r.stats.bytes_received, "{what}");
        assert_eq!(
            number(flow, "out_packets"),
            u64::from(r.stats.segs_in),
            "{what}"
        );
        assert_eq!(parse_utc_ms(&text(flow, "last")), millis(r.t_end), "{what}");
        assert_eq!(
            text(flow, "tcp_flags"),
            nfdump_flags(implied_flags(r)),
            "tcpControlBits of {} {} {:?} {}: {what}",
            r.close_state,
            r.close_reason.as_str(),
            r.record_kind,
            if r.incomplete {
                "incomplete"
            } else {
                "complete"
            },
        );
        // No start time: the templates without one; nfdump shows 0 (1970).
        let first = r.t_start.map_or(0, millis);
        assert_eq!(parse_utc_ms(&text(flow, "first")), first, "{what}");
        let (bfd, end) = stored
            .extra
            .get(&r.local.port())
            .copied()
            .unwrap_or_else(|| panic!("no fmt line: {what}"));
        let direction = match r.direction {
            Direction::Unknown => 0,
            Direction::Outbound => 1,
            Direction::Inbound => 2,
        };
        assert_eq!(bfd, direction, "biflowDirection: {what}");
        let reason = match r.record_kind {
            RecordKind::Final => 3,
            RecordKind::Interim => 2,
        };
        assert_eq!(end, reason, "flowEndReason: {what}");
    }
    assert!(
        !in_sequence || stored.log.contains("Sequence Errors: 0"),
        "nfcapd counted sequence errors: {}",
        stored.log
    );
}

// ---------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn udp_records_reach_nfcapd_field_by_field() {
    let port = flow_testkit::free_port();
    let nfcapd = Nfcapd::start(port);
    let spool = tempfile::tempdir().expect("spool");
    let sink = IpfixSink::start(config(&format!("udp://127.0.0.1:{port}"), spool.path(), 1))
        .expect("start");
    let chunks: Vec<Chunk> = (0..4).map(|s| chunk(s, s * 120, 120)).collect();
    for c in &chunks {
        sink.deliver(c).await.expect("deliver");
    }
    sink.flush().await.expect("flush");
    let counters = sink.counters();
    sink.close().await.expect("close");
    let stored = tokio::task::block_in_place(|| nfcapd.stop());
    println!("{}\n{counters:?}", stored.log);
    let records: Vec<FlowRecord> = chunks.iter().flat_map(|c| c.records.clone()).collect();
    assert_stored(&stored, &records, true);
}

// ---------------------------------------------------------------------------------
// TCP: a relay in front of nfcapd.
// ---------------------------------------------------------------------------------

/// What the relay saw of one TCP connection, in the order it arrived.
#[derive(Clone, Debug, Default)]
struct Connection {
    /// The sequence number of the connection's first message.
    first_sequence: Option<u32>,
    /// The set IDs of its first message, in order.
    first_sets: Vec<u16>,
    /// The template IDs its first message defines (template and options template
    /// sets).
    first_templates: BTreeSet<u16>,
    /// Data sets whose template had not been defined earlier in this connection.
    undefined: Vec<u16>,
    /// What the independent decoder ([`Decoder`], one per connection) found wrong:
    /// a sequence number that is not the data records sent before it on the
    /// connection, a length, a set without its template.
    errors: Vec<String>,
    /// Messages read.
    messages: usize,
    /// Closed by the relay (idle after [`Relay::close_idle`]).
    closed_by_relay: bool,
}

/// Accepts TCP connections on 127.0.0.1:`port`, cuts each stream into messages by
/// their length field and forwards every message as one datagram to nfcapd on
/// `nfcapd_port`. It reads each message's set headers and template IDs, and reports
/// per connection ([`Relay::connections`]) what the first message held and any data
/// set sent before its template on that connection: nfcapd keeps templates per
/// exporter address and domain across connections, so only this can tell that a new
/// connection starts with the templates. After [`Relay::close_idle`], it closes
/// every connection that has carried a message and then stays idle for 100 ms (a
/// collector that goes away between two chunks). Stops when dropped.
struct Relay {
    task: tokio::task::JoinHandle<()>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<Connection>>>,
    close_idle: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Walks message `m`'s sets: `(set ID, template IDs it defines)` each.
fn sets(m: &[u8]) -> Vec<(u16, Vec<u16>)> {
    let be16 = |at: usize| u16::from_be_bytes([m[at], m[at + 1]]);
    let mut out = Vec::new();
    let mut at = 16;
    while at + 4 <= m.len() {
        let (id, len) = (be16(at), usize::from(be16(at + 2)));
        assert!(len >= 4 && at + len <= m.len(), "set length");
        let mut defined = Vec::new();
        if id == 2 || id == 3 {
            // Template records: ID, field count, [scope count,] specifiers.
            let end = at + len;
            let mut t = at + 4;
            while t + 4 <= end {
                let count = be16(t + 2);
                defined.push(be16(t));
                t += if id == 3 { 6 } else { 4 };
                for _ in 0..count {
                    t += if be16(t) & 0x8000 != 0 { 8 } else { 4 };
                }
            }
        }
        out.push((id, defined));
        at += len;
    }
    out
}

impl Relay {
    async fn start(port: u16, nfcapd_port: u16) -> Relay {
        use std::sync::{Arc, Mutex, atomic::AtomicBool, atomic::Ordering};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("relay listen");
        let connections: Arc<Mutex<Vec<Connection>>> = Arc::default();
        let close_idle = Arc::new(AtomicBool::new(false));
        let (all, closing) = (connections.clone(), close_idle.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let index = {
                    let mut all = all.lock().expect("connections");
                    all.push(Connection::default());
                    all.len() - 1
                };
                let (all, closing) = (all.clone(), closing.clone());
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
                        .await
                        .expect("relay udp");
                    udp.connect(("127.0.0.1", nfcapd_port))
                        .await
                        .expect("relay connect");
                    let mut defined = BTreeSet::new();
                    let mut decoder = Decoder::default();
                    loop {
                        // Peeking reads nothing: a wait cut short loses no byte.
                        let mut peek = [0u8; 1];
                        match tokio::time::timeout(
                            Duration::from_millis(100),
                            stream.peek(&mut peek),
                        )
                        .await
                        {
                            Ok(Ok(0) | Err(_)) => return,
                            Ok(Ok(_)) => {}
                            Err(_) => {
                                let mut all = all.lock().expect("connections");
                                if closing.load(Ordering::SeqCst) && all[index].messages > 0 {
                                    all[index].closed_by_relay = true;
                                    return;
                                }
                                continue;
                            }
                        }
                        let mut header = [0u8; 16];
                        if stream.read_exact(&mut header).await.is_err() {
                            return;
                        }
                        assert_eq!(
                            u16::from_be_bytes([header[0], header[1]]),
                            10,
                            "not an IPFIX message"
                        );
                        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
                        let mut message = header.to_vec();
                        message.resize(len, 0);
                        if stream.read_exact(&mut message[16..]).await.is_err() {
                            return;
                        }
                        {
                            let mut all = all.lock().expect("connections");
                            let c = &mut all[index];
                            let message_sets = sets(&message);
                            if c.messages == 0 {
                                c.first_sequence = Some(u32::from_be_bytes([
                                    header[8], header[9], header[10], header[11],
                                ]));
                                c.first_sets = message_sets.iter().map(|(id, _)| *id).collect();
                                c.first_templates = message_sets
                                    .iter()
                                    .flat_map(|(_, t)| t.iter().copied())
                                    .collect();
                            }
                            for (id, templates) in message_sets {
                                defined.extend(templates);
                                if id >= 256 && !defined.contains(&id) {
                                    c.undefined.push(id);
                                }
                            }
                            c.messages += 1;
                            let decoded =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    decoder.message(&message)
                                }));
                            if let Err(panic) = decoded {
                                let text = panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                c.errors.push(format!("message {}: {text}", c.messages));
                            }
                        }
                        let _ = udp.send(&message).await;
                        // nfcapd reads datagrams one at a time: no burst larger than its buffer.
                        tokio::task::yield_now().await;
                    }
                });
            }
        });
        Relay {
            task,
            connections,
            close_idle,
        }
    }

    /// What it saw of each connection so far.
    fn connections(&self) -> Vec<Connection> {
        self.connections.lock().expect("connections").clone()
    }

    /// From now on, closes each connection once it is idle.
    fn close_idle(&self) {
        self.close_idle
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Asserts that every connection began with the templates: its first message has
    /// sequence number 0 (RFC 7011 §3.1: the data records sent "in the current
    /// stream"; the sink starts again at 0 in each transport session) and opens with a template set (ID
    /// 2) defining the four data templates, then the options template; and that no
    /// data set came before its template on its connection; and that every message
    /// of a connection decoded, its sequence number the data records sent before it
    /// on the connection.
    fn assert_each_connection_starts_with_the_templates(&self) {
        let connections = self.connections();
        assert!(!connections.is_empty(), "no connection reached the relay");
        for (i, c) in connections.iter().enumerate() {
            let what = format!("connection {i} of {}: {c:?}", connections.len());
            assert!(c.messages > 0, "no message: {what}");
            assert_eq!(c.first_sequence, Some(0), "first sequence number: {what}");
            assert_eq!(
                c.first_sets.first(),
                Some(&2),
                "the first set is a template set: {what}"
            );
            let first_data = c.first_sets.iter().position(|&id| id >= 256);
            let options = c.first_sets.iter().position(|&id| id == 3);
            assert!(
                options.is_some() && first_data.is_none_or(|d| options < Some(d)),
                "the options template before any data set: {what}"
            );
            let expected: BTreeSet<u16> = DATA_TEMPLATES
                .into_iter()
                .chain([TEMPLATE_EXPORTER])
                .collect();
            assert_eq!(c.first_templates, expected, "templates defined: {what}");
            assert!(
                c.undefined.is_empty(),
                "data sets before their template: {what}"
            );
            assert!(c.errors.is_empty(), "decoding the connection: {what}");
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_records_reach_nfcapd_through_a_relay_after_a_refused_start_and_a_reconnect() {
    let nfcapd_port = flow_testkit::free_port();
    let relay_port = flow_testkit::free_port();
    let nfcapd = Nfcapd::start(nfcapd_port);
    let spool = tempfile::tempdir().expect("spool");
    let sink = IpfixSink::start(
        config(&format!("tcp://127.0.0.1:{relay_port}"), spool.path(), 2)
            .with_max_message_bytes(16_384),
    )
    .expect("start");
    // Nothing listens yet: refused, spooled, retried.
    let chunks: Vec<Chunk> = (0..3).map(|s| chunk(s, 1000 + s * 300, 300)).collect();
    for c in &chunks {
        sink.deliver(c).await.expect("deliver");
    }
    eventually(WAIT, "a refused attempt", || {
        sink.counters().failed_attempts >= 2
    })
    .await;
    assert_eq!(sink.counters().chunks_exported, 0);
    let relay = Relay::start(relay_port, nfcapd_port).await;
    sink.flush().await.expect("flush");
    let counters = sink.counters();
    assert_eq!(
        (counters.chunks_exported, counters.records_exported),
        (3, 900),
        "{counters:?}"
    );
    assert_eq!(counters.sessions_opened, 1, "one connection: {counters:?}");
    assert_eq!(
        counters.template_messages_sent, 1,
        "templates once per connection: {counters:?}"
    );
    // The collector closes the connection after those chunks: the next chunk goes
    // over a new connection, which starts with the templates and sequence number 0.
    relay.close_idle();
    eventually(WAIT, "the relay closing the first connection", || {
        relay
            .connections()
            .first()
            .is_some_and(|c| c.closed_by_relay)
    })
    .await;
    let last = chunk(3, 1900, 200);
    sink.deliver(&last).await.expect("deliver");
    sink.flush().await.expect("flush");
    let counters = sink.counters();
    assert_eq!(
        (counters.chunks_exported, counters.records_exported),
        (4, 1100),
        "{counters:?}"
    );
    assert_eq!(
        counters.sessions_opened, 2,
        "a new connection: {counters:?}"
    );
    assert_eq!(
        counters.template_messages_sent, 2,
        "templates at the start of each connection: {counters:?}"
    );
    sink.close().await.expect("close");
    // The relay forwards as it reads: give nfcapd a moment for the last datagrams.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let connections = relay.connections();
    assert_eq!(connections.len(), 2, "{connections:?}");
    relay.assert_each_connection_starts_with_the_templates();
    drop(relay);
    let stored = tokio::task::block_in_place(|| nfcapd.stop());
    let records: Vec<FlowRecord> = chunks
        .iter()
        .chain([&last])
        .flat_map(|c| c.records.clone())
        .collect();
    // Sequence numbers are per transport session (RFC 7011 §3.1: the data records
    // sent "in the current stream"; the new connection starts again at 0, as the relay checked); nfcapd, which sees the
    // relay's datagrams, keys them by exporter address and domain only, so the
    // restart counts as sequence errors there.
    assert_stored(&stored, &records, false);
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_a_collector_that_stops_reading_times_out_and_the_chunk_is_retried() {
    let port = flow_testkit::free_port();
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("bind");
    let listener = socket.listen(4).expect("listen");
    // Accepts and holds the connections, never reads.
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            streams.push(s);
        }
    });
    let spool = tempfile::tempdir().expect("spool");
    let sink = IpfixSink::start(
        config(&format!("tcp://127.0.0.1:{port}"), spool.path(), 3)
            .with_timeouts(Duration::from_secs(1), Duration::from_millis(500)),
    )
    .expect("start");
    sink.deliver(&chunk(0, 0, 5000)).await.expect("deliver");
    eventually(WAIT, "a write timeout", || sink.counters().timeouts >= 2).await;
    let counters = sink.counters();
    assert_eq!(counters.chunks_exported, 0, "{counters:?}");
    assert!(
        counters.sessions_opened >= 2,
        "a new connection per retry: {counters:?}"
    );
    // Still spooled: shutting down returns at once, the frame stays for the next run.
    tokio::time::timeout(Duration::from_secs(5), sink.close())
        .await
        .expect("close is bounded")
        .expect("close");
    held.abort();
}

// ---------------------------------------------------------------------------------
// UDP: template refresh, a collector down, a restart over the spool.
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn udp_a_collector_started_late_decodes_after_the_template_refresh() {
    let port = flow_testkit::free_port();
    // Takes the first templates (and records) in place of a collector, silently.
    let absorber = std::net::UdpSocket::bind(("127.0.0.1", port)).expect("absorber");
    let spool = tempfile::tempdir().expect("spool");
    let refresh = Duration::from_secs(3);
    let sink = IpfixSink::start(
        config(&format!("udp://127.0.0.1:{port}"), spool.path(), 4)
            .with_template_refresh(refresh, 0),
    )
    .expect("start");
    let started = Instant::now();
    sink.deliver(&chunk(0, 0, 50)).await.expect("deliver");
    sink.flush().await.expect("flush");
    drop(absorber);
    let nfcapd = tokio::task::block_in_place(|| Nfcapd::start(port));
    // Before the refresh: nfcapd has no templates, so these are lost to it.
    let early = chunk(1, 100, 50);
    sink.deliver(&early).await.expect("deliver");
    sink.flush().await.expect("flush");
    assert!(
        started.elapsed() < refresh,
        "the test was too slow to send before the refresh"
    );
    tokio::time::sleep(refresh).await;
    let late = chunk(2, 200, 50);
    sink.deliver(&late).await.expect("deliver");
    sink.flush().await.expect("flush");
    let counters = sink.counters();
    assert_eq!(counters.template_messages_sent, 2, "{counters:?}");
    assert_eq!(counters.sessions_opened, 1, "no send failed: {counters:?}");
    sink.close().await.expect("close");
    let stored = tokio::task::block_in_place(|| nfcapd.stop());
    assert_stored(&stored, &late.records, false);
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_chunks_spooled_while_the_collector_is_down_reach_it_after_a_restart() {
    let port = flow_testkit::free_port();
    let spool = tempfile::tempdir().expect("spool");
    let url = format!("udp://127.0.0.1:{port}");
    let first: Vec<Chunk> = (0..2).map(|s| chunk(s, 2000 + s * 100, 100)).collect();
    {
        let sink = IpfixSink::start(config(&url, spool.path(), 5)).expect("start");
        for c in &first {
            sink.deliver(c).await.expect("deliver");
        }
        // Nothing listens: ICMP port unreachable fails the sends.
        eventually(WAIT, "failed attempts", || {
            sink.counters().failed_attempts >= 2
        })
        .await;
        assert_eq!(sink.counters().chunks_exported, 0);
        sink.close().await.expect("close");
    }
    let nfcapd = tokio::task::block_in_place(|| Nfcapd::start(port));
    let sink = IpfixSink::start(config(&url, spool.path(), 6)).expect("restart");
    let later = chunk(0, 2500, 100);
    sink.deliver(&later).await.expect("deliver");
    sink.flush().await.expect("flush");
    let counters = sink.counters();
    assert_eq!(
        (counters.chunks_exported, counters.records_exported),
        (3, 300),
        "{counters:?}"
    );
    sink.close().await.expect("close");
    let stored = tokio::task::block_in_place(|| nfcapd.stop());
    let records: Vec<FlowRecord> = first
        .iter()
        .chain([&later])
        .flat_map(|c| c.records.clone())
        .collect();
    assert_stored(&stored, &records, true);
}

// ---------------------------------------------------------------------------------
// An independent decoder: what nfdump does not show.
// ---------------------------------------------------------------------------------

/// A field specifier: (enterprise number, 0 for IANA; element ID; length).
type Specifier = (u32, u16, u16);

/// One decoded data record: its template, and its values by (enterprise, ID).
#[derive(Debug)]
struct DataRecord {
    template: u16,
    domain: u32,
    values: BTreeMap<(u32, u16), Vec<u8>>,
}

/// Decodes IPFIX messages (RFC 7011) from scratch: templates, options templates, data
/// records (variable-length values included); checks every length and the sequence
/// numbers (per domain: the data records before each message).
#[derive(Default)]
struct Decoder {
    templates: BTreeMap<u16, Vec<Specifier>>,
    sequences: BTreeMap<u32, u32>,
    records: Vec<DataRecord>,
}

impl Decoder {
    fn message(&mut self, m: &[u8]) {
        let be16 = |at: usize| u16::from_be_bytes([m[at], m[at + 1]]);
        let be32 = |at: usize| u32::from_be_bytes([m[at], m[at + 1], m[at + 2], m[at + 3]]);
        assert_eq!(be16(0), 10, "version");
        assert_eq!(usize::from(be16(2)), m.len(), "message length");
        let (sequence, domain) = (be32(8), be32(12));
        let expected = self.sequences.entry(domain).or_insert(sequence);
        assert_eq!(sequence, *expected, "sequence number of domain {domain}");
        let mut at = 16;
        let mut count = 0u32;
        while at < m.len() {
            let (id, len) = (be16(at), usize::from(be16(at + 2)));
            assert!(len >= 4 && at + len <= m.len(), "set length");
            let set = &m[at + 4..at + len];
            match id {
                2 | 3 => self.template_set(set, id == 3),
                256.. => count += self.data_set(id, domain, set),
                _ => panic!("set ID {id}"),
            }
            at += len;
        }
        *self.sequences.get_mut(&domain).expect("domain") = sequence.wrapping_add(count);
    }

    fn template_set(&mut self, mut s: &[u8], options: bool) {
        while s.len() >= 4 {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let count = u16::from_be_bytes([s[2], s[3]]);
            s = &s[4..];
            if options {
                let scope = u16::from_be_bytes([s[0], s[1]]);
                assert_eq!(scope, 1, "one scope field");
                s = &s[2..];
            }
            let mut fields = Vec::new();
            for _ in 0..count {
                let raw = u16::from_be_bytes([s[0], s[1]]);
                let len = u16::from_be_bytes([s[2], s[3]]);
                s = &s[4..];
                let pen = if raw & 0x8000 != 0 {
                    let pen = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
                    s = &s[4..];
                    pen
                } else {
                    0
                };
                fields.push((pen, raw & 0x7fff, len));
            }
            self.templates.insert(id, fields);
        }
        assert!(s.is_empty(), "template set padding");
    }

    fn data_set(&mut self, id: u16, domain: u32, mut s: &[u8]) -> u32 {
        let fields = self
            .templates
            .get(&id)
            .unwrap_or_else(|| panic!("no template {id}"))
            .clone();
        let mut count = 0;
        while !s.is_empty() {
            let mut values = BTreeMap::new();
            for &(pen, element, len) in &fields {
                let len = if len == 65535 {
                    let first = usize::from(s[0]);
                    if first < 255 {
                        s = &s[1..];
                        first
                    } else {
                        let l = usize::from(u16::from_be_bytes([s[1], s[2]]));
                        s = &s[3..];
                        l
                    }
                } else {
                    usize::from(len)
                };
                values.insert((pen, element), s[..len].to_vec());
                s = &s[len..];
            }
            self.records.push(DataRecord {
                template: id,
                domain,
                values,
            });
            count += 1;
        }
        count
    }
}

fn be(v: &[u8]) -> u64 {
    v.iter().fold(0, |n, b| (n << 8) | u64::from(*b))
}

fn string(v: &[u8]) -> String {
    String::from_utf8(v.to_vec()).expect("UTF-8")
}

#[test]
fn every_element_decodes_to_its_field_with_an_independent_decoder() {
    let encoder = IpfixEncoder::new(PEN, 1400).expect("encoder");
    let records: Vec<FlowRecord> = (0..300).map(record).collect();
    let domain = observation_domain_for(HOST);
    let mut messages = Messages::new();
    let mut sequence = encoder.encode_templates(domain, HOST, 1_700_000_000, 0, &mut messages);
    let mut next = 0;
    while next < records.len() {
        let taken = encoder.encode_message(
            &records[next..],
            domain,
            1_700_000_000,
            sequence,
            &mut messages,
        );
        assert!(taken > 0);
        next += taken;
        sequence += taken as u32;
    }
    assert!(messages.len() > 40, "several messages: {}", messages.len());
    let mut decoder = Decoder::default();
    for m in messages.iter() {
        assert!(m.len() <= 1400, "a message of {} bytes", m.len());
        decoder.message(m);
    }
    assert_eq!(
        messages.iter().map(<[u8]>::len).sum::<usize>(),
        messages.as_bytes().len()
    );
    // The options record: the domain and the host.
    let (options, data): (Vec<_>, Vec<_>) = decoder
        .records
        .iter()
        .partition(|r| r.template == TEMPLATE_EXPORTER);
    assert_eq!(options.len(), 1);
    assert_eq!(be(&options[0].values[&(0, 149)]), u64::from(domain));
    assert_eq!(string(&options[0].values[&(PEN, 15)]), HOST);
    assert_eq!(data.len(), records.len());
    for (r, d) in records.iter().zip(&data) {
        assert_eq!(d.domain, domain);
        let v = |pen: u32, id: u16| -> &[u8] {
            d.values
                .get(&(pen, id))
                .unwrap_or_else(|| panic!("no element {pen}/{id} in {d:?}"))
        };
        let ours = |id: u16| v(PEN, id);
        // IANA, as nfdump reads them too.
        assert_eq!(be(v(0, 7)), u64::from(r.local.port()));
        assert_eq!(be(v(0, 11)), u64::from(r.remote.port()));
        assert_eq!(be(v(0, 4)), 6);
        assert_eq!(be(v(0, 85)), r.stats.bytes_sent);
        assert_eq!(be(v(REVERSE_PEN, 85)), r.stats.bytes_received);
        assert_eq!(be(v(0, 86)), u64::from(r.stats.segs_out));
        assert_eq!(be(v(REVERSE_PEN, 86)), u64::from(r.stats.segs_in));
        assert_eq!(be(v(0, 153)), millis(r.t_end));
        let flags = v(0, 6);
        assert_eq!(flags.len(), 2, "tcpControlBits is unsigned16");
        assert_eq!(be(flags), u64::from(implied_flags(r)));
        // Nanoseconds: NTP seconds since 1900 and a binary fraction.
        let ntp = |t: SystemTime| {
            let d = t.duration_since(UNIX_EPOCH).expect("after 1970");
            ((d.as_secs() + 2_208_988_800) << 32)
                | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
        };
        assert_eq!(be(v(0, 157)), ntp(r.t_end));
        match r.t_start {
            Some(t) => {
                assert_eq!(be(v(0, 152)), millis(t));
                assert_eq!(be(v(0, 156)), ntp(t));
            }
            None => {
                assert!(!d.values.contains_key(&(0, 152)) && !d.values.contains_key(&(0, 156)));
            }
        }
        match (r.local.ip(), r.remote.ip()) {
            (IpAddr::V4(l), IpAddr::V4(rm)) => {
                assert_eq!(v(0, 8), l.octets());
                assert_eq!(v(0, 12), rm.octets());
            }
            (IpAddr::V6(l), IpAddr::V6(rm)) => {
                assert_eq!(v(0, 27), l.octets());
                assert_eq!(v(0, 28), rm.octets());
            }
            _ => unreachable!("records have one family"),
        }
        // Ours, under the enterprise number.
        assert_eq!(be(ours(1)), u64::from(r.stats.retransmits));
        assert_eq!(be(ours(2)), u64::from(r.stats.srtt_us));
        assert_eq!(be(ours(3)), u64::from(r.stats.rttvar_us));
        assert_eq!(be(ours(4)), r.stats.bytes_retransmitted);
        assert_eq!(string(ours(5)), r.close_state.as_str());
        let reason = match r.record_kind {
            RecordKind::Final => r.close_reason.as_str().into_owned(),
            RecordKind::Interim => String::new(),
        };
        assert_eq!(string(ours(6)), reason);
        assert_eq!(
            string(ours(7)),
            r.local_workload_id.as_ref().map_or("", |w| w.as_str())
        );
        assert_eq!(string(ours(8)), r.identity_source.as_str());
        assert_eq!(
            string(ours(9)),
            r.identity_source
                .unattributed_reason()
                .map_or("", |u| u.as_str())
        );
        assert_eq!(be(ours(10)), if r.incomplete { 1 } else { 2 });
        let flow_id = r.flow_id.map(|id| {
            let mut text = [0u8; FlowId::TEXT_LEN];
            id.write_text(&mut text);
            string(&text)
        });
        assert_eq!(string(ours(11)), flow_id.unwrap_or_default());
        assert_eq!(
            be(ours(12)),
            u64::from(r.process.as_ref().map_or(0, |p| p.pid))
        );
        assert_eq!(
            string(ours(13)),
            r.process
                .as_ref()
                .map_or(String::new(), |p| p.comm().into_owned())
        );
        assert_eq!(be(ours(14)), r.process.as_ref().map_or(0, |p| p.cgroup_id));
    }
}

// ---------------------------------------------------------------------------------
// docs/schema.md's IPFIX column against the templates.
// ---------------------------------------------------------------------------------

/// An element as the docs name it: (registry, name, number when given).
type Named = (String, String, Option<u16>);

fn registry_name(registry: Registry) -> &'static str {
    match registry {
        Registry::Iana => "iana",
        Registry::Reverse => "reverse",
        Registry::Enterprise => "enterprise",
    }
}

fn read_doc(name: &str) -> String {
    let path = format!("{}/../../docs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// docs/schema.md's table, row by row: each field (the first column) and the elements
/// its IPFIX cell names. `enterprise `x` (N)` is ours, `reverse `x` (29305/N)` RFC
/// 5103's, any other name in backticks IANA's.
fn documented_rows() -> Vec<(String, BTreeSet<Named>)> {
    let doc = read_doc("schema.md");
    let mut rows = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | field | type | unit | meaning | IPFIX | OpenTelemetry | AWS |
        let field = cells[1].trim_matches('`').to_owned();
        let cell = cells.get(5).copied().unwrap_or_default();
        let parts: Vec<&str> = cell.split('`').collect();
        let mut named = BTreeSet::new();
        // Odd parts are the names in backticks.
        for i in (1..parts.len()).step_by(2) {
            let before = parts[i - 1].trim_end();
            let registry = if before.ends_with("enterprise") {
                "enterprise"
            } else if before.ends_with("reverse") {
                "reverse"
            } else {
                "iana"
            };
            let after = parts.get(i + 1).copied().unwrap_or_default().trim_start();
            let number = after
                .strip_prefix('(')
                .and_then(|a| a.split(')').next())
                .map(|n| n.trim_start_matches("29305/"))
                .and_then(|n| n.parse::<u16>().ok());
            named.insert((registry.to_owned(), parts[i].to_owned(), number));
        }
        rows.push((field, named));
    }
    assert!(rows.len() >= 30, "docs/schema.md's table not found");
    rows
}

/// Row by row: each field's IPFIX cell names exactly the elements that carry that
/// field (`InformationElement::record_field`), with their registry and number; no
/// element is named in another field's row, and every element's field is a row.
#[test]
fn docs_schema_names_each_fields_elements_in_its_row() {
    let mut code: BTreeMap<String, BTreeSet<Named>> = BTreeMap::new();
    for e in ELEMENTS {
        // protocolIdentifier carries no field (every flow is TCP): the paragraph
        // above the table names it.
        let Some(field) = e.record_field else {
            assert_eq!(e.name, "protocolIdentifier");
            continue;
        };
        code.entry(field.to_owned()).or_default().insert((
            registry_name(e.registry).to_owned(),
            e.name.to_owned(),
            Some(e.id),
        ));
    }
    // The options record's element carries the frame's host ID.
    code.entry("host_id".to_owned()).or_default().insert((
        "enterprise".to_owned(),
        "exporterHostId".to_owned(),
        Some(15),
    ));
    let rows = documented_rows();
    let fields: BTreeSet<&str> = rows.iter().map(|(f, _)| f.as_str()).collect();
    for field in code.keys() {
        assert!(
            fields.contains(field.as_str()),
            "an element carries {field:?}, which docs/schema.md has no row for"
        );
    }
    for (field, documented) in &rows {
        let expected = code.get(field).cloned().unwrap_or_default();
        assert_eq!(
            documented, &expected,
            "docs/schema.md's IPFIX cell of {field:?} vs the elements that carry it"
        );
    }
}

/// docs/ipfix.md's element table, in order, against the templates: name and
/// registry, the templates that hold the element, PEN, ID, length, type, and the
/// record field when the value column starts with one.
#[test]
fn docs_ipfix_lists_every_element_with_its_definition_in_template_order() {
    let doc = read_doc("ipfix.md");
    let rows: Vec<Vec<&str>> = doc
        .lines()
        .filter(|l| l.starts_with("| `") || l.starts_with("| reverse `"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(
        rows.len(),
        ELEMENTS.len(),
        "docs/ipfix.md's element table: one row per element"
    );
    for (cells, e) in rows.iter().zip(ELEMENTS) {
        // | element | PEN | ID | length | type | value |
        let element = cells[1];
        let reverse = element.starts_with("reverse ");
        let name = element.split('`').nth(1).expect("a name in backticks");
        let templates: Vec<u16> = match element.split_once('(') {
            Some((_, list)) => list
                .trim_end_matches(')')
                .split(',')
                .map(|t| t.trim().parse().expect("a template ID"))
                .collect(),
            None => DATA_TEMPLATES.to_vec(),
        };
        let holding: Vec<u16> = DATA_TEMPLATES
            .into_iter()
            .filter(|&t| template_elements(t).any(|x| (x.registry, x.id) == (e.registry, e.id)))
            .collect();
        let registry = match (cells[2], reverse) {
            ("0", false) => Registry::Iana,
            ("29305", true) => Registry::Reverse,
            ("ours", false) => Registry::Enterprise,
            other => panic!("PEN {other:?} of {element}"),
        };
        let what = format!("docs/ipfix.md's row {element:?} vs {e:?}");
        assert_eq!((name, registry), (e.name, e.registry), "{what}");
        assert_eq!(templates, holding, "templates: {what}");
        assert_eq!(cells[3].parse::<u16>().ok(), Some(e.id), "ID: {what}");
        assert_eq!(
            cells[4].parse::<u16>().ok(),
            Some(e.length),
            "length: {what}"
        );
        assert_eq!(cells[5], e.data_type, "type: {what}");
        if let Some(value) = cells[6].strip_prefix('`') {
            let field = value.split('`').next();
            assert_eq!(field, e.record_field, "record field: {what}");
        }
    }
}

//! Minimal receivers on loopback for the overhead runs' standard exports: an OTLP/HTTP
//! logs endpoint (answers every POST `200` with an empty protobuf body), an IPFIX UDP
//! socket and an IPFIX TCP listener. Each keeps what arrived as is (request bodies,
//! datagrams, TCP streams) and counts messages and bytes as they arrive; the records
//! are counted only when asked ([`Receiver::records`]), after the measured interval,
//! so that the receiver's own work while the exporter is measured is a read and a copy.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;

/// What a receiver stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// OTLP/HTTP logs (`POST /v1/logs`, protobuf, gzip or not).
    Otlp,
    /// IPFIX over UDP (one message per datagram).
    IpfixUdp,
    /// IPFIX over TCP (a stream of messages).
    IpfixTcp,
}

#[derive(Default)]
struct Store {
    /// Request bodies (OTLP, with whether each was gzipped), datagrams (UDP), or one
    /// stream per connection (TCP), by arrival.
    payloads: Mutex<Vec<Payload>>,
    messages: AtomicU64,
    bytes: AtomicU64,
}

struct Payload {
    /// The TCP connection it came on (0 for a datagram).
    conn: u64,
    gzip: bool,
    bytes: Vec<u8>,
}

/// A receiver running on its own threads until the process exits.
pub struct Receiver {
    kind: Kind,
    port: u16,
    store: Arc<Store>,
}

/// Records found in what a receiver got.
#[derive(Clone, Copy, Debug, Default)]
pub struct Records {
    /// Every record (OTLP log records, IPFIX data records of the flow template).
    pub all: u64,
    /// Those with `port` as their local or remote port.
    pub with_port: u64,
    /// Payloads that could not be decoded.
    pub undecodable: u64,
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1 (a free port).
    pub fn start(kind: Kind) -> anyhow::Result<Receiver> {
        let store = Arc::new(Store::default());
        let port = match kind {
            Kind::Otlp | Kind::IpfixTcp => {
                let listener = TcpListener::bind("127.0.0.1:0")?;
                let port = listener.local_addr()?.port();
                let store = store.clone();
                std::thread::spawn(move || {
                    for (conn, stream) in (1..).zip(listener.incoming()) {
                        let Ok(stream) = stream else { continue };
                        let store = store.clone();
                        std::thread::spawn(move || {
                            let result = match kind {
                                Kind::Otlp => serve_otlp(stream, &store),
                                _ => read_stream(stream, conn, &store),
                            };
                            if let Err(e) = result {
                                eprintln!("receiver: {e:#}");
                            }
                        });
                    }
                });
                port
            }
            Kind::IpfixUdp => {
                let socket = UdpSocket::bind("127.0.0.1:0")?;
                let port = socket.local_addr()?.port();
                large_receive_buffer(&socket);
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0; 65_536];
                    while let Ok(n) = socket.recv(&mut buf) {
                        store.messages.fetch_add(1, Ordering::Relaxed);
                        store.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        store.payloads.lock().expect("lock").push(Payload {
                            conn: 0,
                            gzip: false,
                            bytes: buf[..n].to_vec(),
                        });
                    }
                });
                port
            }
        };
        Ok(Receiver { kind, port, store })
    }

    /// The exporter's flags that send here.
    pub fn exporter_args(&self) -> Vec<String> {
        match self.kind {
            Kind::Otlp => vec![
                "--otlp-endpoint".into(),
                format!("http://127.0.0.1:{}", self.port),
            ],
            Kind::IpfixUdp => vec![
                "--ipfix-collector".into(),
                format!("udp://127.0.0.1:{}", self.port),
            ],
            Kind::IpfixTcp => vec![
                "--ipfix-collector".into(),
                format!("tcp://127.0.0.1:{}", self.port),
            ],
        }
    }

    /// Forgets what arrived so far (between rounds, no exporter running).
    pub fn clear(&self) {
        self.store.payloads.lock().expect("lock").clear();
        self.store.messages.store(0, Ordering::Relaxed);
        self.store.bytes.store(0, Ordering::Relaxed);
    }

    /// Requests (OTLP), datagrams (IPFIX UDP) or reads (IPFIX TCP) so far, and their
    /// bytes (bodies as sent; datagrams; stream bytes).
    pub fn received(&self) -> (u64, u64) {
        (
            self.store.messages.load(Ordering::Relaxed),
            self.store.bytes.load(Ordering::Relaxed),
        )
    }

    /// Decodes everything that arrived since [`clear`](Receiver::clear) and counts
    /// the records, and those of the connections to or from `port`.
    pub fn records(&self, port: u16) -> Records {
        let payloads = self.store.payloads.lock().expect("lock");
        let mut records = Records::default();
        match self.kind {
            Kind::Otlp => {
                for p in payloads.iter() {
                    match otlp_records(p, port) {
                        Some((all, with_port)) => {
                            records.all += all;
                            records.with_port += with_port;
                        }
                        None => records.undecodable += 1,
                    }
                }
            }
            Kind::IpfixUdp | Kind::IpfixTcp => {
                // Templates live per transport session; one exporter at a time here, so
                // one table, refreshed by every template set seen.
                let mut templates = HashMap::new();
                for p in payloads.iter() {
                    if !ipfix_records(&p.bytes, port, &mut templates, &mut records) {
                        records.undecodable += 1;
                    }
                }
            }
        }
        records
    }
}

/// A 32 MiB receive buffer (root may exceed `net.core.rmem_max`), so that a chunk's
/// burst of datagrams is not dropped by the socket while the reader catches up.
fn large_receive_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 32 << 20;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and an int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Reads a TCP stream to its end, appending to this connection's payload.
fn read_stream(mut stream: TcpStream, conn: u64, store: &Store) -> anyhow::Result<()> {
    let mut buf = vec![0; 256 << 10];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        store.messages.fetch_add(1, Ordering::Relaxed);
        store.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let mut payloads = store.payloads.lock().expect("lock");
        match payloads.iter_mut().rev().find(|p| p.conn == conn) {
            Some(p) => p.bytes.extend_from_slice(&buf[..n]),
            None => payloads.push(Payload {
                conn,
                gzip: false,
                bytes: buf[..n].to_vec(),
            }),
        }
    }
}

/// Serves HTTP/1.1 requests on one connection (keep-alive) until it closes: each
/// body read whole (`Content-Length`) and kept, each answered `200` with an empty
/// `application/x-protobuf` body (an `ExportLogsServiceResponse` with no partial
/// success).
fn serve_otlp(stream: TcpStream, store: &Store) -> anyhow::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // closed between requests
        }
        let mut length = None;
        let mut gzip = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                anyhow::bail!("connection closed in the headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("Content-Length")?);
            } else if name.eq_ignore_ascii_case("content-encoding") {
                gzip = value.eq_ignore_ascii_case("gzip");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                anyhow::bail!("Transfer-Encoding {value} is not supported here");
            }
        }
        let length = length.context("a request without Content-Length")?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        store.messages.fetch_add(1, Ordering::Relaxed);
        store.bytes.fetch_add(length as u64, Ordering::Relaxed);
        store.payloads.lock().expect("lock").push(Payload {
            conn: 0,
            gzip,
            bytes: body,
        });
        writer.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        )?;
    }
}

/// A protobuf field's value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The fields of a protobuf message, or `None` if it is malformed.
fn fields(b: &[u8]) -> Option<Vec<(u64, Value<'_>)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(b, &mut i)?),
            1 => {
                i += 8;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(varint(b, &mut i)?).ok()?;
                let bytes = b.get(i..i.checked_add(len)?)?;
                i += len;
                Value::Bytes(bytes)
            }
            5 => {
                i += 4;
                Value::Fixed
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    (i == b.len()).then_some(out)
}

/// The messages in field `tag` of a message.
fn messages(b: &[u8], tag: u64) -> Option<Vec<&[u8]>> {
    Some(
        fields(b)?
            .into_iter()
            .filter_map(|(t, v)| match v {
                Value::Bytes(m) if t == tag => Some(m),
                _ => None,
            })
            .collect(),
    )
}

/// Log records in an `ExportLogsServiceRequest`, and those whose `source.port` or
/// `destination.port` is `port`.
fn otlp_records(p: &Payload, port: u16) -> Option<(u64, u64)> {
    let mut plain = Vec::new();
    let body = if p.gzip {
        flate2::read::GzDecoder::new(&p.bytes[..])
            .read_to_end(&mut plain)
            .ok()?;
        &plain[..]
    } else {
        &p.bytes[..]
    };
    let (mut all, mut with_port) = (0, 0);
    for resource_logs in messages(body, 1)? {
        for scope_logs in messages(resource_logs, 2)? {
            for record in messages(scope_logs, 2)? {
                all += 1;
                let mut matched = false;
                for kv in messages(record, 6)? {
                    let kv = fields(kv)?;
                    let is_port = kv.iter().any(|(t, v)| {
                        *t == 1
                            && matches!(v, Value::Bytes(k) if *k == b"source.port" || *k == b"destination.port")
                    });
                    if !is_port {
                        continue;
                    }
                    for (t, v) in &kv {
                        if let (2, Value::Bytes(any)) = (*t, v)
                            && fields(any)?
                                .iter()
                                .any(|(t, v)| matches!(v, Value::Varint(n) if *t == 3 && *n == u64::from(port)))
                        {
                            matched = true;
                        }
                    }
                }
                with_port += u64::from(matched);
            }
        }
    }
    Some((all, with_port))
}

/// One field of a template: IANA element ID (enterprise elements are `None`) and
/// length (65535: variable).
type Template = Vec<(Option<u16>, u16)>;

/// Counts the data records of IPFIX messages (one datagram, or a TCP stream of them)
/// into `records`; false if they could not all be decoded.
fn ipfix_records(
    mut b: &[u8],
    port: u16,
    templates: &mut HashMap<u16, Template>,
    records: &mut Records,
) -> bool {
    let be16 = |b: &[u8], i: usize| b.get(i..i + 2).map(|s| u16::from_be_bytes([s[0], s[1]]));
    while !b.is_empty() {
        let (Some(10), Some(len)) = (be16(b, 0), be16(b, 2)) else {
            return false;
        };
        let len = usize::from(len);
        if len < 16 || len > b.len() {
            return false;
        }
        let (message, rest) = b.split_at(len);
        b = rest;
        let mut sets = &message[16..];
        while sets.len() >= 4 {
            let (set_id, set_len) = (be16(sets, 0).unwrap_or(0), be16(sets, 2).unwrap_or(0));
            let set_len = usize::from(set_len);
            if set_len < 4 || set_len > sets.len() {
                return false;
            }
            let body = &sets[4..set_len];
            sets = &sets[set_len..];
            match set_id {
                2 | 3 => {
                    let mut i = 0;
                    while i + 4 <= body.len() {
                        let (id, count) =
                            (be16(body, i).unwrap_or(0), be16(body, i + 2).unwrap_or(0));
                        i += if set_id == 3 { 6 } else { 4 };
                        let mut template = Template::new();
                        for _ in 0..count {
                            let (Some(ie), Some(flen)) = (be16(body, i), be16(body, i + 2)) else {
                                return false;
                            };
                            i += 4;
                            if ie & 0x8000 != 0 {
                                i += 4;
                                template.push((None, flen));
                            } else {
                                template.push((Some(ie), flen));
                            }
                        }
                        templates.insert(id, template);
                    }
                }
                id if id >= 256 => {
                    let Some(template) = templates.get(&id) else {
                        return false;
                    };
                    // Only the flow template's records count (it has the ports); the
                    // exporter options record does not.
                    let flows = template.iter().any(|(ie, _)| *ie == Some(7));
                    let mut i = 0;
                    while i < body.len() {
                        let mut has_port = false;
                        for (ie, flen) in template {
                            let flen = if *flen == 65535 {
                                let Some(&l) = body.get(i) else { return false };
                                i += 1;
                                if l == 255 {
                                    let Some(l) = be16(body, i) else { return false };
                                    i += 2;
                                    usize::from(l)
                                } else {
                                    usize::from(l)
                                }
                            } else {
                                usize::from(*flen)
                            };
                            if i + flen > body.len() {
                                return false;
                            }
                            if matches!(ie, Some(7) | Some(11))
                                && flen == 2
                                && be16(body, i) == Some(port)
                            {
                                has_port = true;
                            }
                            i += flen;
                        }
                        if flows {
                            records.all += 1;
                            records.with_port += u64::from(has_port);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    true
}

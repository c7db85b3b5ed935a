//! One export attempt: a spooled frame decoded and its records sent as IPFIX messages
//! over the transport session, opened (again) when there is none. The IPFIX side of
//! the send task's [`Transport`](crate::collector_sink::transport::Transport).

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flow_batch::wire::{ChunkDecoder, DecodeLimits, DecodedChunk};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpStream, UdpSocket},
};

use super::{
    config::{IpfixCollector, IpfixProtocol},
    counters::OwnCounters,
    encode::{IpfixEncoder, Messages, export_time_now, observation_domain_for},
};
use crate::{
    collector_sink::{
        counters::bump,
        frame::Frame,
        shared::Shared,
        transport::{Attempt, AttemptFuture, Failure, FrameCarrier, Refusal},
    },
    error::SinkError,
};

/// What the carrier is set up with.
pub(crate) struct CarrierSettings {
    pub(crate) collector: IpfixCollector,
    pub(crate) encoder: IpfixEncoder,
    pub(crate) observation_domain_id: Option<u32>,
    pub(crate) refresh_interval: Duration,
    pub(crate) refresh_messages: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) log_interval: Duration,
}

/// Sends frames' records as IPFIX messages; keeps the transport session between
/// attempts.
pub(crate) struct IpfixCarrier {
    settings: CarrierSettings,
    decoder: Mutex<ChunkDecoder>,
    /// The session; taken out for the length of an attempt and put back only when it
    /// succeeded, so that an attempt that failed or was dropped halfway (its stream
    /// may end inside a message) leaves none.
    session: tokio::sync::Mutex<Option<Session>>,
    own: Arc<OwnCounters>,
    last_logged: Mutex<Option<Instant>>,
}

/// A transport session (RFC 7011's): a connected UDP socket or a TCP connection, and
/// each observation domain's state in it.
struct Session {
    link: Link,
    domains: HashMap<u32, DomainState>,
}

enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// An observation domain in a session.
#[derive(Clone, Copy, Debug)]
struct DomainState {
    /// Data records sent so far (the next message's sequence number).
    sequence: u32,
    /// When its templates were last sent.
    templates_at: Instant,
    /// Data messages sent since.
    messages_since: u32,
}

/// Why an attempt failed.
struct SendError {
    what: &'static str,
    source: io::Error,
}

impl SendError {
    fn new(what: &'static str, source: io::Error) -> SendError {
        SendError { what, source }
    }

    fn timed_out(what: &'static str, after: Duration) -> SendError {
        SendError {
            what,
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {after:?}"),
            ),
        }
    }
}

impl IpfixCarrier {
    /// A carrier without a session yet (the first attempt opens it).
    pub(crate) fn new(
        settings: CarrierSettings,
        own: Arc<OwnCounters>,
    ) -> Result<IpfixCarrier, SinkError> {
        let decoder =
            ChunkDecoder::new(DecodeLimits::default()).map_err(|source| SinkError::Codec {
                operation: "set up the chunk decoder",
                source,
            })?;
        Ok(IpfixCarrier {
            settings,
            decoder: Mutex::new(decoder),
            session: tokio::sync::Mutex::new(None),
            own,
            last_logged: Mutex::new(None),
        })
    }

    /// Closes the session (a TCP connection is shut down; a stream cut inside a
    /// message cannot be, as no attempt runs).
    pub(crate) async fn close(&self) {
        let session = self.session.lock().await.take();
        if let Some(Session {
            link: Link::Tcp(mut stream),
            ..
        }) = session
        {
            let _ = tokio::time::timeout(self.settings.write_timeout, stream.shutdown()).await;
        }
    }

    async fn export(self: Arc<Self>, shared: Arc<Shared>, frame: Frame) -> Attempt {
        let counters = &shared.counters;
        bump(&counters.requests, 1);
        let decoded = {
            let mut decoder = self.decoder.lock().unwrap_or_else(|p| p.into_inner());
            decoder.decode(&frame.bytes)
        };
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                return Attempt::Reject(Refusal::Carrier {
                    reason: format!(
                        "the frame does not decode, so its records cannot be exported: {}",
                        crate::error_chain(&error)
                    ),
                });
            }
        };
        let started = Instant::now();
        let mut slot = self.session.lock().await;
        let session = slot.take();
        match self.send(session, &decoded).await {
            Ok(session) => {
                *slot = Some(session);
                bump(&counters.requests_timed, 1);
                bump(
                    &counters.request_time_ns,
                    started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64,
                );
                bump(&counters.chunks_sent, 1);
                bump(&counters.records_sent, u64::from(frame.records));
                bump(&counters.bytes_sent, frame.bytes.len() as u64);
                tracing::trace!(batch_id = %frame.batch_id, records = frame.records, "chunk exported over IPFIX");
                Attempt::Delivered
            }
            Err(error) => {
                drop(slot);
                bump(&counters.transport_errors, 1);
                if error.source.kind() == io::ErrorKind::TimedOut {
                    bump(&self.own.timeouts, 1);
                }
                self.log(&shared, &frame, &error);
                Attempt::Retry {
                    failure: Failure::Carrier {
                        what: error.what,
                        source: Box::new(error.source),
                    },
                    retry_after: None,
                }
            }
        }
    }

    /// A warning at most every `log_interval`.
    fn log(&self, shared: &Shared, frame: &Frame, error: &SendError) {
        let now = Instant::now();
        let mut last = self.last_logged.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < self.settings.log_interval) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            destination = %shared.destination,
            batch_id = %frame.batch_id,
            records = frame.records,
            error = %error.source,
            "{} failed; the chunk stays spooled and is exported again (further failures are logged at most every {:?})",
            error.what,
            self.settings.log_interval,
        );
    }

    /// Sends `decoded`'s records over `session` (a new one when there is none or it
    /// was closed); the session back when every message left.
    async fn send(
        &self,
        session: Option<Session>,
        decoded: &DecodedChunk,
    ) -> Result<Session, SendError> {
        let mut session = match session {
            Some(mut s) => {
                if s.is_usable() {
                    s
                } else {
                    self.open().await?
                }
            }
            None => self.open().await?,
        };
        let s = &self.settings;
        let host = &decoded.header.host;
        let domain = s
            .observation_domain_id
            .unwrap_or_else(|| observation_domain_for(host));
        let udp = matches!(session.link, Link::Udp(_));
        let now = Instant::now();
        let export_time = export_time_now();
        let mut state = session.domains.get(&domain).copied();
        let mut messages = Messages::new();
        let mut template_messages = 0;
        let records = &decoded.records;
        let mut next = 0;
        loop {
            let due = match state {
                None => true,
                Some(_) if !udp => false,
                Some(st) => {
                    now.duration_since(st.templates_at) >= s.refresh_interval
                        || (s.refresh_messages > 0 && st.messages_since >= s.refresh_messages)
                }
            };
            let mut st = match state {
                Some(st) if !due => st,
                _ => {
                    let sequence = state.map_or(0, |st| st.sequence);
                    let before = messages.len();
                    let options = s.encoder.encode_templates(
                        domain,
                        host,
                        export_time,
                        sequence,
                        &mut messages,
                    );
                    template_messages += messages.len() - before;
                    DomainState {
                        sequence: sequence.wrapping_add(options),
                        templates_at: now,
                        messages_since: 0,
                    }
                }
            };
            if next < records.len() {
                let taken = s.encoder.encode_message(
                    &records[next..],
                    domain,
                    export_time,
                    st.sequence,
                    &mut messages,
                );
                next += taken;
                st.sequence = st.sequence.wrapping_add(taken as u32);
                st.messages_since = st.messages_since.saturating_add(1);
            }
            state = Some(st);
            if next >= records.len() {
                break;
            }
        }
        self.transmit(&mut session.link, &messages).await?;
        bump(&self.own.template_messages, template_messages as u64);
        if let Some(st) = state {
            session.domains.insert(domain, st);
        }
        Ok(session)
    }

    /// Sends `messages`: UDP one datagram each; TCP the whole stream, then waits until
    /// the collector's host acknowledged every byte. Bounded by the write timeout.
    async fn transmit(&self, link: &mut Link, messages: &Messages) -> Result<(), SendError> {
        let timeout = self.settings.write_timeout;
        let own = &self.own;
        let sending = async {
            match link {
                Link::Udp(socket) => {
                    for message in messages.iter() {
                        socket
                            .send(message)
                            .await
                            .map_err(|e| SendError::new("sending IPFIX messages over UDP", e))?;
                        bump(&own.messages, 1);
                        bump(&own.message_bytes, message.len() as u64);
                    }
                    Ok(())
                }
                Link::Tcp(stream) => {
                    stream
                        .write_all(messages.as_bytes())
                        .await
                        .map_err(|e| SendError::new("writing IPFIX messages over TCP", e))?;
                    bump(&own.messages, messages.len() as u64);
                    bump(&own.message_bytes, messages.as_bytes().len() as u64);
                    acknowledged(stream).await
                }
            }
        };
        match tokio::time::timeout(timeout, sending).await {
            Ok(sent) => sent,
            Err(_) => Err(SendError::timed_out(
                "sending IPFIX messages (the collector does not take them)",
                timeout,
            )),
        }
    }

    /// A new session: the collector's name resolved, a UDP socket connected to its
    /// first address or a TCP connection to the first that answers.
    async fn open(&self) -> Result<Session, SendError> {
        let s = &self.settings;
        let target = (s.collector.host.as_str(), s.collector.port);
        let addresses: Vec<SocketAddr> =
            match tokio::time::timeout(s.connect_timeout, tokio::net::lookup_host(target)).await {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(e)) => {
                    return Err(SendError::new("resolving the IPFIX collector's host", e));
                }
                Err(_) => {
                    return Err(SendError::timed_out(
                        "resolving the IPFIX collector's host",
                        s.connect_timeout,
                    ));
                }
            };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
        for address in addresses {
            let link = match s.collector.protocol {
                IpfixProtocol::Udp => connect_udp(address).await.map(Link::Udp),
                IpfixProtocol::Tcp => {
                    match tokio::time::timeout(s.connect_timeout, TcpStream::connect(address)).await
                    {
                        Ok(Ok(stream)) => {
                            let _ = stream.set_nodelay(true);
                            Ok(Link::Tcp(stream))
                        }
                        Ok(Err(e)) => Err(e),
                        Err(_) => {
                            last = io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!(
                                    "connecting to {address} timed out after {:?}",
                                    s.connect_timeout
                                ),
                            );
                            continue;
                        }
                    }
                }
            };
            match link {
                Ok(link) => {
                    bump(&self.own.sessions, 1);
                    tracing::debug!(collector = %s.collector, %address, "IPFIX transport session opened");
                    return Ok(Session {
                        link,
                        domains: HashMap::new(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(SendError::new("connecting to the IPFIX collector", last))
    }
}

impl FrameCarrier for IpfixCarrier {
    fn attempt(self: Arc<Self>, shared: Arc<Shared>, frame: Frame) -> AttemptFuture {
        Box::pin(self.export(shared, frame))
    }
}

impl Session {
    /// Whether the session can carry another frame. A TCP connection the collector
    /// closed (or reset) is not: a write into it would be taken by our kernel and
    /// lost. A UDP socket that got an ICMP error since the last send (the collector
    /// was unreachable, so some messages may not have arrived) starts a new session,
    /// which sends the templates at once.
    fn is_usable(&mut self) -> bool {
        match &self.link {
            Link::Udp(socket) => matches!(socket.take_error(), Ok(None)),
            Link::Tcp(stream) => {
                let mut buf = [0u8; 512];
                loop {
                    match stream.try_read(&mut buf) {
                        // Closed by the collector.
                        Ok(0) => return false,
                        // A collector sends nothing over IPFIX; what it sent anyway
                        // is dropped.
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(_) => return false,
                    }
                }
            }
        }
    }
}

/// A UDP socket of `address`'s family, connected to it (so that an ICMP error for a
/// datagram shows as an error of a later send).
async fn connect_udp(address: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if address.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(address).await?;
    Ok(socket)
}

/// Waits until the peer's TCP stack acknowledged every byte written to `stream` (the
/// send queue, `SIOCOUTQ`, is empty), or the connection failed. The caller bounds the
/// wait.
async fn acknowledged(stream: &TcpStream) -> Result<(), SendError> {
    use std::os::fd::AsRawFd;
    let what = "waiting for the IPFIX collector to acknowledge the messages";
    let mut pause = Duration::from_micros(200);
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer, which points
        // to a live c_int; the descriptor is the stream's own, open for the borrow.
        let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if rc != 0 {
            return Err(SendError::new(what, io::Error::last_os_error()));
        }
        if queued == 0 {
            return Ok(());
        }
        if let Ok(Some(e)) = stream.take_error() {
            return Err(SendError::new(what, e));
        }
        let mut buf = [0u8; 1];
        match stream.try_read(&mut buf) {
            Ok(0) => {
                return Err(SendError::new(
                    what,
                    io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the collector closed the connection",
                    ),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(SendError::new(what, e)),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

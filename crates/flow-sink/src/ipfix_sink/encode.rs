//! IPFIX messages (RFC 7011) from records: [`IpfixEncoder`] writes the template
//! messages and the data messages into [`Messages`], each at most the configured size.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::{SystemTime, UNIX_EPOCH},
};

use flow_record::{CloseReason, Direction, FlowId, FlowRecord, RecordKind};

use super::elements::{
    DATA_TEMPLATES, ELEMENTS, EXPORTER_HOST_ID, Field, OBSERVATION_DOMAIN_ID, REVERSE_PEN,
    Registry, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TEMPLATE_EXPORTER, VARIABLE_LENGTH,
    template_elements, template_for,
};
use crate::error::SinkError;

/// IPFIX's version number, the first field of every message header.
pub const IPFIX_VERSION: u16 = 10;
/// Length of a message header.
pub const MESSAGE_HEADER_LEN: usize = 16;
/// Length of a set header.
const SET_HEADER_LEN: usize = 4;
/// Set ID of a template set.
const TEMPLATE_SET_ID: u16 = 2;
/// Set ID of an options template set.
const OPTIONS_TEMPLATE_SET_ID: u16 = 3;
/// The largest message IPFIX allows (its length field is 16 bits).
pub const MAX_MESSAGE_LEN: usize = 65535;
/// The smallest [`max_message_bytes`](super::IpfixSinkConfig::max_message_bytes)
/// accepted: room for the templates, for the exporter options record with the longest
/// host ID a frame carries (1,024 bytes), and for the longest record.
pub const MIN_MESSAGE_BYTES: usize = 1100;
/// Seconds from the NTP era 0 epoch (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// `flowEndReason` of a final record: end of flow detected.
pub const END_OF_FLOW: u8 = 3;
/// `flowEndReason` of an interim record: active timeout.
pub const ACTIVE_TIMEOUT: u8 = 2;

/// IPFIX messages, one after the other: [`as_bytes`](Messages::as_bytes) is the
/// stream a TCP connection carries, [`iter`](Messages::iter) the datagrams of UDP.
#[derive(Clone, Debug, Default)]
pub struct Messages {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Messages {
    /// No messages.
    pub fn new() -> Messages {
        Messages::default()
    }

    /// Forgets the messages, keeping the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// How many messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// All messages, one after the other.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Each message.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let message = &self.bytes[start..end];
            start = end;
            message
        })
    }

    /// Starts a message: its header, length filled in by [`end`](Messages::end).
    fn begin(&mut self, domain: u32, export_time: u32, sequence: u32) -> usize {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&IPFIX_VERSION.to_be_bytes());
        self.bytes.extend_from_slice(&[0, 0]);
        self.bytes.extend_from_slice(&export_time.to_be_bytes());
        self.bytes.extend_from_slice(&sequence.to_be_bytes());
        self.bytes.extend_from_slice(&domain.to_be_bytes());
        start
    }

    /// Ends the message begun at `start`.
    fn end(&mut self, start: usize) {
        let len = self.bytes.len() - start;
        patch_len(&mut self.bytes, start + 2, len);
        self.ends.push(self.bytes.len());
    }
}

/// Writes `len` (at most 65,535: callers keep messages and sets below it) at `at`.
fn patch_len(bytes: &mut [u8], at: usize, len: usize) {
    let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    bytes[at..at + 2].copy_from_slice(&len);
}

/// Writes IPFIX messages from records: the templates of [`elements`](super::elements)
/// under one enterprise number, messages of at most a given size.
#[derive(Clone, Debug)]
pub struct IpfixEncoder {
    enterprise_number: u32,
    max_message_bytes: usize,
    /// The template set and the options template set, as sent.
    template_sets: Vec<u8>,
    /// Each data template's fields, by index in [`DATA_TEMPLATES`].
    fields: [Vec<Field>; 4],
}

impl IpfixEncoder {
    /// An encoder of messages of at most `max_message_bytes` (from
    /// [`MIN_MESSAGE_BYTES`] to [`MAX_MESSAGE_LEN`]) with our elements under
    /// `enterprise_number`.
    pub fn new(
        enterprise_number: u32,
        max_message_bytes: usize,
    ) -> Result<IpfixEncoder, SinkError> {
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_LEN).contains(&max_message_bytes) {
            return Err(SinkError::InvalidConfig {
                key: "ipfix max_message_bytes",
                value: max_message_bytes.to_string(),
                reason: "must be from 1100 to 65535",
            });
        }
        if enterprise_number == 0 || enterprise_number == REVERSE_PEN {
            return Err(SinkError::InvalidConfig {
                key: "ipfix enterprise_number",
                value: enterprise_number.to_string(),
                reason: "must be a private enterprise number other than 0 (IANA) and 29305 (RFC 5103's reverse elements)",
            });
        }
        let fields = DATA_TEMPLATES.map(|id| template_elements(id).map(|e| e.field).collect());
        Ok(IpfixEncoder {
            enterprise_number,
            max_message_bytes,
            template_sets: template_sets(enterprise_number),
            fields,
        })
    }

    /// The enterprise number of our elements.
    pub fn enterprise_number(&self) -> u32 {
        self.enterprise_number
    }

    /// The largest message written.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Appends the template messages of observation domain `domain`: the four data
    /// templates, the exporter options template and its one record (`domain`,
    /// `host`), in one message, or in two when `host` is too long for one. Returns the
    /// data records written (1, the options record: it counts in the sequence
    /// numbers).
    pub fn encode_templates(
        &self,
        domain: u32,
        host: &str,
        export_time: u32,
        sequence: u32,
        out: &mut Messages,
    ) -> u32 {
        let options_len = SET_HEADER_LEN + 4 + varlen_len(host.len());
        let mut start = out.begin(domain, export_time, sequence);
        out.bytes.extend_from_slice(&self.template_sets);
        if MESSAGE_HEADER_LEN + self.template_sets.len() + options_len > self.max_message_bytes {
            out.end(start);
            start = out.begin(domain, export_time, sequence);
        }
        let set = out.bytes.len();
        out.bytes
            .extend_from_slice(&TEMPLATE_EXPORTER.to_be_bytes());
        out.bytes.extend_from_slice(&[0, 0]);
        out.bytes.extend_from_slice(&domain.to_be_bytes());
        put_str(&mut out.bytes, host);
        let len = out.bytes.len() - set;
        patch_len(&mut out.bytes, set + 2, len);
        out.end(start);
        1
    }

    /// Appends one data message holding as many of `records`, from the first, as fit
    /// in [`max_message_bytes`](IpfixEncoder::max_message_bytes) (one at least, when
    /// there is one); returns how many it holds. `sequence` is the header's sequence
    /// number: the data records sent before in this observation domain.
    pub fn encode_message(
        &self,
        records: &[FlowRecord],
        domain: u32,
        export_time: u32,
        sequence: u32,
        out: &mut Messages,
    ) -> usize {
        let start = out.begin(domain, export_time, sequence);
        let mut set: Option<(u16, usize)> = None;
        let mut taken = 0;
        for record in records {
            let ipv6 = record.local.is_ipv6() || record.remote.is_ipv6();
            let template = template_for(ipv6, record.t_start.is_some());
            let mark = out.bytes.len();
            let opened = match set {
                Some((id, _)) if id == template => false,
                _ => {
                    if let Some((_, at)) = set {
                        patch_len(&mut out.bytes, at + 2, mark - at);
                    }
                    out.bytes.extend_from_slice(&template.to_be_bytes());
                    out.bytes.extend_from_slice(&[0, 0]);
                    true
                }
            };
            let index = DATA_TEMPLATES
                .iter()
                .position(|&t| t == template)
                .unwrap_or(0);
            put_record(record, &self.fields[index], &mut out.bytes);
            if out.bytes.len() - start > self.max_message_bytes && taken > 0 {
                out.bytes.truncate(mark);
                break;
            }
            if opened {
                set = Some((template, mark));
            }
            taken += 1;
        }
        if let Some((_, at)) = set {
            let len = out.bytes.len() - at;
            patch_len(&mut out.bytes, at + 2, len);
        }
        out.end(start);
        taken
    }
}

/// Appends `r`'s data record: `fields`, in order.
fn put_record(r: &FlowRecord, fields: &[Field], out: &mut Vec<u8>) {
    for field in fields {
        match field {
            Field::SourceV4 | Field::DestinationV4 => {
                let addr = if *field == Field::SourceV4 {
                    r.local
                } else {
                    r.remote
                };
                match addr.ip() {
                    IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
                    IpAddr::V6(_) => out.extend_from_slice(&[0; 4]),
                }
            }
            Field::SourceV6 | Field::DestinationV6 => {
                let addr = if *field == Field::SourceV6 {
                    r.local
                } else {
                    r.remote
                };
                let ip: Ipv6Addr = match addr.ip() {
                    IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                    IpAddr::V6(ip) => ip,
                };
                out.extend_from_slice(&ip.octets());
            }
            Field::SourcePort => out.extend_from_slice(&r.local.port().to_be_bytes()),
            Field::DestinationPort => out.extend_from_slice(&r.remote.port().to_be_bytes()),
            Field::Protocol => out.push(6),
            Field::BiflowDirection => out.push(match r.direction {
                Direction::Unknown => 0,
                Direction::Outbound => 1,
                Direction::Inbound => 2,
            }),
            Field::StartMs => put_u64(out, r.t_start.map_or(0, millis)),
            Field::EndMs => put_u64(out, millis(r.t_end)),
            Field::StartNs => put_u64(out, r.t_start.map_or(0, ntp)),
            Field::EndNs => put_u64(out, ntp(r.t_end)),
            Field::Octets => put_u64(out, r.stats.bytes_sent),
            Field::ReverseOctets => put_u64(out, r.stats.bytes_received),
            Field::Packets => put_u64(out, u64::from(r.stats.segs_out)),
            Field::ReversePackets => put_u64(out, u64::from(r.stats.segs_in)),
            Field::EndReason => out.push(match r.record_kind {
                RecordKind::Final => END_OF_FLOW,
                RecordKind::Interim => ACTIVE_TIMEOUT,
            }),
            Field::ControlBits => out.extend_from_slice(&tcp_control_bits(r).to_be_bytes()),
            Field::Retransmits => out.extend_from_slice(&r.stats.retransmits.to_be_bytes()),
            Field::SmoothedRtt => out.extend_from_slice(&r.stats.srtt_us.to_be_bytes()),
            Field::RttVariance => out.extend_from_slice(&r.stats.rttvar_us.to_be_bytes()),
            Field::RetransmittedOctets => put_u64(out, r.stats.bytes_retransmitted),
            Field::CloseState => put_str(out, r.close_state.as_str()),
            Field::CloseReason => match r.record_kind {
                RecordKind::Final => put_str(out, &r.close_reason.as_str()),
                RecordKind::Interim => out.push(0),
            },
            Field::Workload => {
                put_str(out, r.local_workload_id.as_ref().map_or("", |w| w.as_str()))
            }
            Field::IdentitySource => put_str(out, r.identity_source.as_str()),
            Field::UnattributedReason => put_str(
                out,
                r.identity_source
                    .unattributed_reason()
                    .map_or("", |u| u.as_str()),
            ),
            // RFC 7011 §6.1.5: true is 1, false is 2.
            Field::Incomplete => out.push(if r.incomplete { 1 } else { 2 }),
            Field::FlowId => match &r.flow_id {
                Some(id) => {
                    let mut text = [0; FlowId::TEXT_LEN];
                    id.write_text(&mut text);
                    out.push(FlowId::TEXT_LEN as u8);
                    out.extend_from_slice(&text);
                }
                None => out.push(0),
            },
            Field::ProcessId => {
                out.extend_from_slice(&r.process.as_ref().map_or(0, |p| p.pid).to_be_bytes())
            }
            Field::ProcessName => match &r.process {
                Some(p) => put_str(out, &p.comm()),
                None => out.push(0),
            },
            Field::CgroupId => put_u64(out, r.process.as_ref().map_or(0, |p| p.cgroup_id)),
        }
    }
}

/// `tcpControlBits` of `r`: the flags its connection's life implies, not an OR of
/// flags seen on segments (the exporter sees the socket's state changes, not its
/// segments).
///
/// - **SYN**: the open was seen (`t_start` known), or the socket was still in its
///   handshake (`close_state` `SYN_SENT`, `SYN_RECV`).
/// - **ACK**: the connection was established: `close_state` is not a handshake state
///   (the record's own rule: no state leads back to them) and, for a final record,
///   `close_reason` is not a connect failure (`refused`, `connect_timed_out`,
///   `connect_aborted`).
/// - **FIN**: a FIN was sent or received: `close_state` is one only a FIN leads to
///   (`FIN_WAIT1`, `FIN_WAIT2`, `CLOSING`, `TIME_WAIT`, `CLOSE_WAIT`, `LAST_ACK`), or
///   a final record's `close_reason` is `normal`.
/// - **RST**: a final record's `close_reason` is `reset` (the peer's RST), `refused`
///   (the peer's RST in answer to the SYN) or `aborted` (this host's RST).
///
/// `timed_out`, `connect_timed_out`, `connect_aborted` and `errno_N` add neither FIN
/// nor RST (whether one went out is not known). An interim record (the connection is
/// open) has no `close_reason`: SYN, ACK and a FIN its state implies. An `incomplete`
/// record's `close_reason` rests on a kernel read that may have failed: only what
/// `t_start` and `close_state` (read apart from it) imply.
pub fn tcp_control_bits(r: &FlowRecord) -> u16 {
    let reason = match r.record_kind {
        RecordKind::Final if !r.incomplete => Some(r.close_reason),
        _ => None,
    };
    let handshake = r.close_state.is_handshake();
    let mut bits = 0;
    if r.t_start.is_some() || handshake {
        bits |= TCP_SYN;
    }
    let connect_failed = r.record_kind == RecordKind::Final && r.close_reason.is_connect_failure();
    if !handshake && !connect_failed {
        bits |= TCP_ACK;
    }
    let fin_state = matches!(
        r.close_state.as_str(),
        "FIN_WAIT1" | "FIN_WAIT2" | "CLOSING" | "TIME_WAIT" | "CLOSE_WAIT" | "LAST_ACK"
    );
    if fin_state || reason == Some(CloseReason::Normal) {
        bits |= TCP_FIN;
    }
    if matches!(
        reason,
        Some(CloseReason::Reset | CloseReason::Refused | CloseReason::Aborted)
    ) {
        bits |= TCP_RST;
    }
    bits
}

/// The observation domain ID of exporter `host` when none is configured: the 32-bit
/// FNV-1a hash of its host ID (1 in place of 0, which RFC 7011 reserves for "no
/// specific domain"). Stable across runs and versions: a collector keeps one
/// exporter's records apart from another's by it.
pub fn observation_domain_for(host: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in host.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.max(1)
}

/// The template set (the four data templates) and the options template set, as sent.
fn template_sets(enterprise_number: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    for id in DATA_TEMPLATES {
        let fields: Vec<_> = template_elements(id).collect();
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for e in fields {
            put_specifier(&mut out, e.registry, e.id, e.length, enterprise_number);
        }
    }
    let len = out.len();
    patch_len(&mut out, 2, len);
    let set = out.len();
    out.extend_from_slice(&OPTIONS_TEMPLATE_SET_ID.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&TEMPLATE_EXPORTER.to_be_bytes());
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    put_specifier(
        &mut out,
        Registry::Iana,
        OBSERVATION_DOMAIN_ID,
        4,
        enterprise_number,
    );
    put_specifier(
        &mut out,
        Registry::Enterprise,
        EXPORTER_HOST_ID,
        VARIABLE_LENGTH,
        enterprise_number,
    );
    let len = out.len() - set;
    patch_len(&mut out, set + 2, len);
    debug_assert_eq!(ELEMENTS.len(), 32);
    out
}

/// A field specifier (RFC 7011 §3.2): the enterprise bit and number for a reverse
/// element and for ours.
fn put_specifier(out: &mut Vec<u8>, registry: Registry, id: u16, length: u16, pen: u32) {
    let pen = match registry {
        Registry::Iana => None,
        Registry::Reverse => Some(REVERSE_PEN),
        Registry::Enterprise => Some(pen),
    };
    let id = if pen.is_some() { id | 0x8000 } else { id };
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    if let Some(pen) = pen {
        out.extend_from_slice(&pen.to_be_bytes());
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Bytes of a variable-length value of `len` bytes on the wire.
fn varlen_len(len: usize) -> usize {
    if len < 255 { 1 + len } else { 3 + len }
}

/// A variable-length string (RFC 7011 §7): one length byte below 255, else 255 and
/// two; an empty string is the absent value. Longer than 65,535 bytes is cut (no
/// record field comes near).
fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    if bytes.len() < 255 {
        out.push(bytes.len() as u8);
    } else {
        out.push(255);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// Milliseconds since the Unix epoch (0 before it).
fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 7011 §6.1.10 `dateTimeNanoseconds`: NTP format, seconds since 1900 (modulo
/// 2^32: era 1 begins in 2036) and a binary fraction of a second.
fn ntp(t: SystemTime) -> u64 {
    let Ok(d) = t.duration_since(UNIX_EPOCH) else {
        return 0;
    };
    let seconds = (d.as_secs() + NTP_UNIX_OFFSET) & 0xffff_ffff;
    let fraction = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// The export time of a message sent now: seconds since the Unix epoch (modulo
/// 2^32, as RFC 7011's header field).
pub fn export_time_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At the smallest message size, the templates and the options record with the
    /// longest host a frame carries fit (in two messages at most), and so does a
    /// record with every string at its longest.
    #[test]
    fn the_smallest_message_size_holds_the_templates_and_the_longest_record() {
        let encoder = IpfixEncoder::new(32473, MIN_MESSAGE_BYTES).expect("encoder");
        let host = "h".repeat(flow_batch::wire::MAX_HOST_LEN);
        let mut out = Messages::new();
        assert_eq!(encoder.encode_templates(7, &host, 0, 0, &mut out), 1);
        assert!(out.len() <= 2);
        assert!(
            out.iter().all(|m| m.len() <= MIN_MESSAGE_BYTES),
            "{:?}",
            out.iter().map(<[u8]>::len).collect::<Vec<_>>()
        );
        let record = flow_record::FlowRecord {
            local: "[2001:db8::1]:1".parse().expect("addr"),
            remote: "[2001:db8::2]:2".parse().expect("addr"),
            direction: Direction::Outbound,
            t_start: Some(UNIX_EPOCH),
            t_end: UNIX_EPOCH,
            close_state: flow_record::TcpState(1),
            close_reason: flow_record::CloseReason::Error(u32::MAX),
            stats: flow_record::SocketStats::default(),
            local_workload_id: Some(
                flow_record::WorkloadId::new("w".repeat(64)).expect("workload"),
            ),
            identity_source: flow_record::IdentitySource::ConnectMap,
            incomplete: true,
            record_kind: RecordKind::Final,
            flow_id: Some(FlowId {
                boot_id: [0xff; 16],
                cookie: u64::MAX,
            }),
            process: Some(flow_record::ProcessInfo::from_comm_bytes(1, &[0xff; 16], 1)),
        };
        let records = vec![record; 10];
        out.clear();
        let taken = encoder.encode_message(&records, 7, 0, 0, &mut out);
        assert!(taken >= 2, "{taken}");
        assert!(out.as_bytes().len() <= MIN_MESSAGE_BYTES);
    }

    /// The flags each kind of connection's life implies, spelled out.
    #[test]
    fn tcp_control_bits_are_the_flags_the_life_implies() {
        use flow_record::{CloseReason as R, TcpState};
        let record = |state: u8, reason: R, start: bool, kind: RecordKind, incomplete: bool| {
            flow_testkit::record()
                .t_start(start.then_some(UNIX_EPOCH))
                .close(TcpState(state), reason)
                .kind(kind)
                .incomplete(incomplete)
                .build()
        };
        let (fin, syn, rst, ack) = (0x01, 0x02, 0x04, 0x10);
        let final_ = RecordKind::Final;
        let cases = [
            // TIME_WAIT, normal: the whole life.
            (record(6, R::Normal, true, final_, false), syn | ack | fin),
            // The open not seen: no SYN.
            (record(6, R::Normal, false, final_, false), ack | fin),
            (record(7, R::Normal, true, final_, false), syn | ack | fin),
            (
                record(5, R::Reset, true, final_, false),
                syn | ack | fin | rst,
            ),
            (record(1, R::Reset, true, final_, false), syn | ack | rst),
            (record(2, R::Refused, true, final_, false), syn | rst),
            (record(2, R::ConnectTimedOut, true, final_, false), syn),
            (record(3, R::ConnectAborted, false, final_, false), syn),
            (record(1, R::Aborted, true, final_, false), syn | ack | rst),
            (
                record(8, R::Aborted, true, final_, false),
                syn | ack | fin | rst,
            ),
            (record(1, R::TimedOut, true, final_, false), syn | ack),
            (record(1, R::Error(113), true, final_, false), syn | ack),
            // Incomplete: the reason may rest on a failed read.
            (record(7, R::Normal, true, final_, true), syn | ack),
            (record(5, R::Reset, true, final_, true), syn | ack | fin),
            // Interim: what is known so far.
            (
                record(1, R::Normal, true, RecordKind::Interim, false),
                syn | ack,
            ),
            (
                record(8, R::Normal, true, RecordKind::Interim, false),
                syn | ack | fin,
            ),
            (record(1, R::Normal, false, RecordKind::Interim, false), ack),
        ];
        for (r, bits) in cases {
            assert_eq!(
                tcp_control_bits(&r),
                bits,
                "{} {} {:?} incomplete {}",
                r.close_state,
                r.close_reason.as_str(),
                r.record_kind,
                r.incomplete
            );
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(IpfixEncoder::new(32473, MIN_MESSAGE_BYTES - 1).is_err());
        assert!(IpfixEncoder::new(32473, MAX_MESSAGE_LEN + 1).is_err());
        assert!(IpfixEncoder::new(0, 1400).is_err());
        assert!(IpfixEncoder::new(29305, 1400).is_err());
    }
}

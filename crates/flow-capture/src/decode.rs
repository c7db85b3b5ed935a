//! Decoding the kernel's [`RawFlowEvent`] into a [`FlowRecord`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use flow_common::{RawFlowEvent, flags, identity, kind, tcp};
use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, UnattributedReason, WorkloadId,
};

use crate::clock::BootClock;

/// Decodes a kernel event, converting its boot-clock stamps with `clock`.
///
/// The workload IDs of the kernel's events are interned per thread: a workload
/// value seen recently (up to 256 distinct values are kept) is neither validated
/// nor allocated again, its record shares the ID decoded the first time.
///
/// The flow ID is this host's boot ID ([`crate::boot_id`]) with the event's socket
/// cookie; a process comes with an event that names one (an active open).
pub fn decode_record(ev: &RawFlowEvent, clock: &BootClock) -> FlowRecord {
    let (local_ip, remote_ip) = addresses(ev);
    let close_state = TcpState(ev.close_state);
    let start_known = ev.flags & flags::START_UNKNOWN == 0;
    // No state leads back to SYN_SENT/SYN_RECV from ESTABLISHED, so a socket that
    // closed from any other state had been established.
    let established = !close_state.is_handshake();
    let direction = match flow_common::Direction::from_u8(ev.direction) {
        flow_common::Direction::Outbound => Direction::Outbound,
        flow_common::Direction::Inbound => Direction::Inbound,
        flow_common::Direction::Unknown => Direction::Unknown,
    };
    let (local_workload_id, identity_source) = kernel_identity(ev);
    let record_kind = match ev.kind {
        kind::INTERIM => RecordKind::Interim,
        _ => RecordKind::Final,
    };
    let close_reason = match record_kind {
        RecordKind::Final => CloseReason::classify(close_state, established, ev.sk_err),
        RecordKind::Interim => CloseReason::Normal,
    };
    FlowRecord {
        local: SocketAddr::new(local_ip, ev.local_port),
        remote: SocketAddr::new(remote_ip, ev.remote_port),
        direction,
        t_start: start_known.then(|| clock.to_wall(ev.start_ns)),
        t_end: clock.to_wall(ev.end_ns),
        close_state,
        close_reason,
        stats: stats(ev, direction, established),
        local_workload_id,
        identity_source,
        incomplete: ev.flags & flags::READ_FAILED != 0,
        record_kind,
        flow_id: flow_id(ev),
        process: process(ev),
    }
}

/// The connection's ID: the boot ID and the socket cookie (none without either).
fn flow_id(ev: &RawFlowEvent) -> Option<FlowId> {
    if ev.cookie == 0 {
        return None;
    }
    crate::boot_id::boot_id().map(|boot_id| FlowId {
        boot_id,
        cookie: ev.cookie,
    })
}

/// The task that made the active open, when the kernel recorded one.
fn process(ev: &RawFlowEvent) -> Option<ProcessInfo> {
    // In the one form the wire format carries, whatever follows the kernel's NUL.
    (ev.pid != 0).then(|| ProcessInfo::from_comm_bytes(ev.pid, &ev.comm, ev.cgroup_id))
}

/// The identity the kernel resolved, if any.
fn kernel_identity(ev: &RawFlowEvent) -> (Option<WorkloadId>, IdentitySource) {
    let source = match ev.identity_source {
        identity::source::CONNECT_MAP => IdentitySource::ConnectMap,
        identity::source::IP_MAP => IdentitySource::IpMap,
        _ => return (None, IdentitySource::None(UnattributedReason::NoMatch)),
    };
    match WorkloadId::interned(&ev.workload) {
        Some(id) => (Some(id), source),
        None => (
            None,
            IdentitySource::None(UnattributedReason::InvalidMapValue),
        ),
    }
}

fn addresses(ev: &RawFlowEvent) -> (IpAddr, IpAddr) {
    if ev.family == tcp::AF_INET6 {
        let l = Ipv6Addr::from(ev.local_addr);
        let r = Ipv6Addr::from(ev.remote_addr);
        match (l.to_ipv4_mapped(), r.to_ipv4_mapped()) {
            (Some(l4), Some(r4)) => (IpAddr::V4(l4), IpAddr::V4(r4)),
            _ => (IpAddr::V6(l), IpAddr::V6(r)),
        }
    } else {
        let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
        (v4(&ev.local_addr), v4(&ev.remote_addr))
    }
}

/// Payload byte counts from the kernel's sequence-space counters.
///
/// `bytes_acked` counts every acknowledged sequence number: the SYN of an active open
/// (a passive child starts with its SYN-ACK already acknowledged), the payload, and
/// our FIN once acked. The FIN comes after all payload, so capping at the payload
/// actually sent (`bytes_sent - bytes_retrans`) removes it exactly. `bytes_received`
/// counts the payload plus the peer's FIN, which the kernel program reports.
fn stats(ev: &RawFlowEvent, direction: Direction, established: bool) -> SocketStats {
    let syn = u64::from(direction == Direction::Outbound && established);
    let payload_sent = ev.bytes_sent.saturating_sub(ev.bytes_retrans);
    let bytes_sent = ev.bytes_acked.saturating_sub(syn).min(payload_sent);
    let fin_received = u64::from(ev.flags & flags::FIN_RECEIVED != 0);
    SocketStats {
        bytes_sent,
        bytes_received: ev.bytes_received.saturating_sub(fin_received),
        segs_in: ev.segs_in,
        segs_out: ev.segs_out,
        retransmits: ev.total_retrans,
        bytes_retransmitted: ev.bytes_retrans,
        srtt_us: ev.srtt_us_x8 >> 3,
        rttvar_us: ev.mdev_us_x4 >> 2,
    }
}

#[cfg(test)]
mod tests {
    use flow_common::WorkloadValue;
    use flow_record::WorkloadIdProblem;

    use super::*;

    fn value(id: &[u8]) -> WorkloadValue {
        let mut v = WorkloadValue::EMPTY;
        v.id[..id.len()].copy_from_slice(id);
        v
    }

    #[test]
    fn a_nul_inside_a_kernel_value_is_attributed_as_invalid() {
        let clock = BootClock::with_offset_ns(0);
        let mut ev = RawFlowEvent::zeroed();
        ev.family = tcp::AF_INET;
        ev.close_state = tcp::TCP_CLOSE;
        ev.identity_source = identity::source::CONNECT_MAP;
        // Seen as `ab` first, so a cache keyed on the ID's text would answer `ab`.
        ev.workload = value(b"ab");
        let ab = decode_record(&ev, &clock);
        assert_eq!(
            ab.local_workload_id.as_ref().map(WorkloadId::as_str),
            Some("ab")
        );
        ev.workload = value(b"ab\0cd");
        for _ in 0..2 {
            let r = decode_record(&ev, &clock);
            assert_eq!(r.local_workload_id, None);
            assert_eq!(
                r.identity_source,
                IdentitySource::None(UnattributedReason::InvalidMapValue)
            );
        }
    }

    #[test]
    fn a_map_value_with_control_characters_is_invalid_and_shown_escaped() {
        let esc = value(b"ab\x1b[2Jcd");
        let err = WorkloadId::decode_value(&esc).expect_err("ESC");
        assert_eq!(
            err.problem(),
            WorkloadIdProblem::ControlCharacter {
                at: 2,
                ch: '\u{1b}'
            }
        );
        assert_eq!(err.escaped(), "ab\\u{1b}[2Jcd");
        let shown = err.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        let c1 = value("x\u{9b}y\n".as_bytes());
        assert_eq!(
            WorkloadId::decode_value(&c1).expect_err("C1").escaped(),
            "x\\u{9b}y\\n"
        );
        let not_utf8 = value(&[b'a', 0xff, 0x1b]);
        let err = WorkloadId::decode_value(&not_utf8).expect_err("not UTF-8");
        assert_eq!(err.problem(), WorkloadIdProblem::NotUtf8 { at: 1 });
        assert_eq!(err.escaped(), "a\\xff\\u{1b}");

        let clock = BootClock::with_offset_ns(0);
        let mut ev = RawFlowEvent::zeroed();
        ev.family = tcp::AF_INET;
        ev.close_state = tcp::TCP_CLOSE;
        ev.identity_source = identity::source::IP_MAP;
        ev.workload = esc;
        let r = decode_record(&ev, &clock);
        assert_eq!(r.local_workload_id, None);
        assert_eq!(
            r.identity_source,
            IdentitySource::None(UnattributedReason::InvalidMapValue)
        );
    }

    #[test]
    fn from_raw_decodes_the_kernel_identity() {
        let clock = BootClock::with_offset_ns(0);
        let mut ev = RawFlowEvent::zeroed();
        ev.family = tcp::AF_INET;
        ev.close_state = tcp::TCP_CLOSE;
        ev.identity_source = identity::source::IP_MAP;
        ev.workload = value(b"billing");
        let first = decode_record(&ev, &clock);
        let second = decode_record(&ev, &clock);
        assert_eq!(first.identity_source, IdentitySource::IpMap);
        assert_eq!(
            first.local_workload_id.as_ref().map(WorkloadId::as_str),
            Some("billing")
        );
        assert_eq!(first, second);
        ev.workload = value(&[0xff]);
        let bad = decode_record(&ev, &clock);
        assert_eq!(bad.local_workload_id, None);
        assert_eq!(
            bad.identity_source,
            IdentitySource::None(UnattributedReason::InvalidMapValue)
        );
        ev.identity_source = identity::source::NONE;
        let none = decode_record(&ev, &clock);
        assert_eq!(
            none.identity_source,
            IdentitySource::None(UnattributedReason::NoMatch)
        );
    }
}

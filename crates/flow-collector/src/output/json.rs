//! The collector's JSON line: one attributed flow per line.
//!
//! Fields: every field of [`flow_record::json`] (the exporter's record, in its order,
//! ending with the connection's `record_kind`, `flow_id`, `pid`, `comm` and
//! `cgroup_id`), then `host_id` (the exporter's host ID), `batch_id` (`host/instance/sequence`),
//! `record_index` (the flow's position in its chunk, from 0: with `batch_id`, the
//! flow's unique ID), `remote_workload_id` (null when unattributed),
//! `remote_identity_source` (`peer_record`, `heartbeat`, `static` or `none`) and
//! `remote_unattributed_reason` (null when attributed).

use std::{
    borrow::Cow,
    io::{self, Write},
    net::IpAddr,
};

use flow_record::{FlowId, RecordKind, WorkloadId, json::write_rfc3339};

use crate::{attribution::AttributedFlow, completeness::WindowReport};

/// Appends `flow` to `out` as one JSON object followed by `\n`.
///
/// `close_reason` is null for an interim record (a connection still open: its
/// close reason means nothing).
///
/// Written by hand rather than derived: the keys are constant and need no escaping,
/// and times and numbers go straight into `out` (about twice as fast as serde's
/// derive with a flattened `JsonFlow`). The exporter's fields come in
/// `flow_record::json::JsonFlow`'s order with its values: a test checks that the line
/// begins with exactly what `flow_record::json::write_line` writes.
pub fn write_json_line(out: &mut Vec<u8>, flow: &AttributedFlow) -> io::Result<()> {
    let r = &flow.record;
    let s = &r.stats;
    out.extend_from_slice(b"{\"local_ip\":\"");
    ip(out, r.local.ip())?;
    out.extend_from_slice(b"\",\"local_port\":");
    int(out, r.local.port());
    out.extend_from_slice(b",\"remote_ip\":\"");
    ip(out, r.remote.ip())?;
    out.extend_from_slice(b"\",\"remote_port\":");
    int(out, r.remote.port());
    out.extend_from_slice(b",\"direction\":");
    name(out, r.direction.as_str());
    out.extend_from_slice(b",\"t_start\":");
    match r.t_start {
        Some(t) => time(out, t),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"t_end\":");
    time(out, r.t_end);
    out.extend_from_slice(b",\"bytes_sent\":");
    int(out, s.bytes_sent);
    out.extend_from_slice(b",\"bytes_received\":");
    int(out, s.bytes_received);
    out.extend_from_slice(b",\"segs_in\":");
    int(out, s.segs_in);
    out.extend_from_slice(b",\"segs_out\":");
    int(out, s.segs_out);
    out.extend_from_slice(b",\"retransmits\":");
    int(out, s.retransmits);
    out.extend_from_slice(b",\"srtt_us\":");
    int(out, s.srtt_us);
    out.extend_from_slice(b",\"rttvar_us\":");
    int(out, s.rttvar_us);
    out.extend_from_slice(b",\"bytes_retransmitted\":");
    int(out, s.bytes_retransmitted);
    out.extend_from_slice(b",\"close_state\":");
    name(out, r.close_state.as_str());
    out.extend_from_slice(b",\"close_reason\":");
    match (r.record_kind, r.close_reason.as_str()) {
        (RecordKind::Interim, _) => out.extend_from_slice(b"null"),
        (RecordKind::Final, Cow::Borrowed(s)) => name(out, s),
        (RecordKind::Final, Cow::Owned(s)) => text(out, &s)?,
    }
    out.extend_from_slice(b",\"local_workload_id\":");
    workload(out, r.local_workload_id.as_ref())?;
    out.extend_from_slice(b",\"identity_source\":");
    name(out, r.identity_source.as_str());
    out.extend_from_slice(b",\"unattributed_reason\":");
    optional_name(
        out,
        r.identity_source.unattributed_reason().map(|u| u.as_str()),
    );
    out.extend_from_slice(b",\"incomplete\":");
    out.extend_from_slice(if r.incomplete { b"true" } else { b"false" });
    out.extend_from_slice(b",\"record_kind\":");
    name(out, r.record_kind.as_str());
    out.extend_from_slice(b",\"flow_id\":");
    match &r.flow_id {
        Some(id) => {
            let mut text = [0u8; FlowId::TEXT_LEN];
            id.write_text(&mut text);
            out.push(b'"');
            out.extend_from_slice(&text);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    match &r.process {
        Some(p) => {
            out.extend_from_slice(b",\"pid\":");
            int(out, p.pid);
            out.extend_from_slice(b",\"comm\":");
            text(out, &p.comm())?;
            out.extend_from_slice(b",\"cgroup_id\":");
            int(out, p.cgroup_id);
        }
        None => out.extend_from_slice(b",\"pid\":null,\"comm\":null,\"cgroup_id\":null"),
    }
    out.extend_from_slice(b",\"host_id\":");
    let host_at = out.len();
    text(out, &flow.batch.host)?;
    // The host text without its closing quote.
    let host_end = out.len() - 1;
    out.extend_from_slice(b",\"batch_id\":");
    // The host escaped as in host_id, then the two numbers (no escaping needed).
    out.extend_from_within(host_at..host_end);
    out.push(b'/');
    hex32(out, flow.batch.instance.as_u128());
    out.push(b'/');
    int(out, flow.batch.sequence);
    out.push(b'"');
    out.extend_from_slice(b",\"record_index\":");
    int(out, flow.record_index);
    out.extend_from_slice(b",\"remote_workload_id\":");
    workload(out, flow.remote_workload_id.as_ref())?;
    out.extend_from_slice(b",\"remote_identity_source\":");
    name(out, flow.remote_identity_source.as_str());
    out.extend_from_slice(b",\"remote_unattributed_reason\":");
    optional_name(out, flow.remote_unattributed_reason.map(|r| r.as_str()));
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// Appends `report` to `out` as one JSON object followed by `\n`: a completeness
/// record, told apart from flows by its first field, `"record_type":"completeness"`
/// (fields in `docs/collector-output.md`). The completeness counters are null when
/// the window's last chunk did not arrive.
pub fn write_completeness_line(out: &mut Vec<u8>, report: &WindowReport) -> io::Result<()> {
    let c = report.completeness;
    let counter = |out: &mut Vec<u8>, key: &[u8], value: Option<u64>| {
        out.extend_from_slice(key);
        match value {
            Some(v) => int(out, v),
            None => out.extend_from_slice(b"null"),
        }
    };
    out.extend_from_slice(b"{\"record_type\":\"completeness\",\"host_id\":");
    let host_at = out.len();
    text(out, &report.batch.host)?;
    let host_end = out.len() - 1;
    out.extend_from_slice(b",\"instance\":\"");
    hex32(out, report.instance.as_u128());
    out.extend_from_slice(b"\",\"window_start\":");
    time(out, report.window_start());
    out.extend_from_slice(b",\"window_end\":");
    time(out, report.window_end());
    out.extend_from_slice(b",\"status\":");
    name(out, report.status.as_str());
    out.extend_from_slice(b",\"running_whole_window\":");
    out.extend_from_slice(match c.map(|c| c.running_whole_window) {
        Some(true) => b"true",
        Some(false) => b"false",
        None => b"null",
    });
    counter(out, b",\"closes_seen\":", c.map(|c| c.closes_seen));
    counter(out, b",\"records_emitted\":", c.map(|c| c.records_emitted));
    counter(out, b",\"lost_ring_full\":", c.map(|c| c.lost_ring_full));
    counter(out, b",\"lost_recursion\":", c.map(|c| c.lost_recursion));
    counter(out, b",\"lost_journal\":", c.map(|c| c.lost_journal));
    counter(out, b",\"lost_spool\":", c.map(|c| c.lost_spool));
    counter(out, b",\"interim_records\":", c.map(|c| c.interim_records));
    counter(
        out,
        b",\"records_replayed\":",
        c.map(|c| c.records_replayed),
    );
    counter(out, b",\"records_expected\":", report.records_expected());
    counter(
        out,
        b",\"records_received\":",
        Some(report.records_received),
    );
    counter(
        out,
        b",\"interim_records_received\":",
        Some(report.interim_records_received),
    );
    counter(
        out,
        b",\"chunks_expected\":",
        report.chunks_expected.map(u64::from),
    );
    counter(
        out,
        b",\"chunks_received\":",
        Some(u64::from(report.chunks_received)),
    );
    out.extend_from_slice(b",\"adds_up\":");
    out.extend_from_slice(if report.adds_up() { b"true" } else { b"false" });
    out.extend_from_slice(b",\"batch_id\":");
    out.extend_from_within(host_at..host_end);
    out.push(b'/');
    hex32(out, report.batch.instance.as_u128());
    out.push(b'/');
    int(out, report.batch.sequence);
    out.push(b'"');
    out.extend_from_slice(b",\"record_index\":");
    int(out, report.record_index);
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// A JSON string, escaped. Most strings here (enum names, workload IDs, which hold no
/// control character) need no escaping: they are copied as they are.
fn text(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    // Without an early exit, so that the loop is vectorized.
    let escape = s
        .bytes()
        .fold(false, |e, b| e | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if !escape {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return Ok(());
    }
    serde_json::to_writer(&mut *out, s).map_err(io::Error::other)
}

/// A name of the crate's enums (`'static`, lowercase ASCII letters, digits and `_`,
/// or the kernel's upper-case TCP state names): nothing to escape.
fn name(out: &mut Vec<u8>, s: &'static str) {
    debug_assert!(s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// An enum name, or null.
fn optional_name(out: &mut Vec<u8>, s: Option<&'static str>) {
    match s {
        Some(s) => name(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A workload ID, or null. A valid ID holds no control character: only `"` and `\`
/// could need escaping.
fn workload(out: &mut Vec<u8>, w: Option<&WorkloadId>) -> io::Result<()> {
    let Some(w) = w else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    let s = w.as_str();
    let escape = s.bytes().fold(false, |e, b| e | (b == b'"') | (b == b'\\'));
    if escape {
        return text(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

/// An IP address as its `Display` writes it: IPv4 by hand, IPv6 (rare) through `fmt`.
fn ip(out: &mut Vec<u8>, addr: IpAddr) -> io::Result<()> {
    match addr {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            out.extend_from_slice(&buf[..n]);
            Ok(())
        }
        IpAddr::V6(v6) => write!(out, "{v6}"),
    }
}

/// A time in quotes, RFC 3339 UTC with nanoseconds (or `@<seconds>.<nanoseconds>`
/// when RFC 3339 cannot write it).
fn time(out: &mut Vec<u8>, t: std::time::SystemTime) {
    out.push(b'"');
    write_rfc3339(out, t);
    out.push(b'"');
}

/// 32 lowercase hex digits (an instance ID, as its `Display` writes it).
fn hex32(out: &mut Vec<u8>, v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((v >> (4 * (31 - i))) & 0xf) as usize];
    }
    out.extend_from_slice(&buf);
}

/// An integer.
fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use flow_batch::wire::{BatchId, InstanceId};
    use flow_record::{Direction, IdentitySource, SocketStats, WorkloadId};

    use super::*;
    use crate::attribution::{RemoteIdentitySource, RemoteUnattributedReason};

    fn flow(attributed: bool) -> AttributedFlow {
        let record = flow_testkit::record()
            .local("10.0.0.1:40000")
            .remote("[2001:db8::1]:443")
            .direction(Direction::Outbound)
            .t_start(Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)))
            .t_end(UNIX_EPOCH + Duration::new(1_700_000_001, 123_456_789))
            .stats(SocketStats {
                bytes_sent: 10,
                bytes_received: 20,
                segs_in: 3,
                segs_out: 4,
                retransmits: 1,
                bytes_retransmitted: 1448,
                srtt_us: 55,
                rttvar_us: 7,
            })
            .workload("k8s:prod/api", IdentitySource::IpMap)
            .incomplete(true)
            .build();
        let batch = Arc::new(BatchId {
            host: "node-\"7\"".to_string(),
            instance: InstanceId::new(0xabc),
            sequence: 42,
        });
        AttributedFlow {
            record,
            batch,
            record_index: 3,
            remote_workload_id: attributed
                .then(|| WorkloadId::new("k8s:prod/db").expect("workload")),
            remote_identity_source: if attributed {
                RemoteIdentitySource::Heartbeat
            } else {
                RemoteIdentitySource::None
            },
            remote_unattributed_reason: (!attributed)
                .then_some(RemoteUnattributedReason::ConflictingOwners),
        }
    }

    #[test]
    fn writes_ips_as_display_does() {
        for a in [
            "0.0.0.0",
            "10.0.0.1",
            "9.99.100.255",
            "192.168.10.200",
            "255.255.255.255",
            "::",
            "2001:db8::1",
            "::ffff:10.1.2.3",
        ] {
            let addr: IpAddr = a.parse().expect("ip");
            let mut out = Vec::new();
            ip(&mut out, addr).expect("ip");
            assert_eq!(out, addr.to_string().into_bytes());
        }
    }

    pub(super) fn flow_for_speed() -> AttributedFlow {
        flow(true)
    }

    fn parse(flow: &AttributedFlow) -> serde_json::Value {
        let mut out = Vec::new();
        write_json_line(&mut out, flow).expect("write");
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).expect("json")
    }

    #[test]
    fn writes_every_field_of_an_attributed_flow() {
        let v = parse(&flow(true));
        assert_eq!(v["local_ip"], "10.0.0.1");
        assert_eq!(v["local_port"], 40000);
        assert_eq!(v["remote_ip"], "2001:db8::1");
        assert_eq!(v["remote_port"], 443);
        assert_eq!(v["direction"], "outbound");
        assert_eq!(v["t_start"], "2023-11-14T22:13:20.000000005Z");
        assert_eq!(v["t_end"], "2023-11-14T22:13:21.123456789Z");
        assert_eq!(v["bytes_sent"], 10);
        assert_eq!(v["bytes_received"], 20);
        assert_eq!(v["segs_in"], 3);
        assert_eq!(v["segs_out"], 4);
        assert_eq!(v["retransmits"], 1);
        assert_eq!(v["srtt_us"], 55);
        assert_eq!(v["rttvar_us"], 7);
        assert_eq!(v["bytes_retransmitted"], 1448);
        assert!(v["close_state"].is_string());
        assert!(v["close_reason"].is_string());
        assert_eq!(v["local_workload_id"], "k8s:prod/api");
        assert_eq!(v["identity_source"], "ip_map");
        assert!(v["unattributed_reason"].is_null());
        assert_eq!(v["incomplete"], true);
        assert_eq!(v["record_kind"], "final");
        assert!(v["flow_id"].is_null());
        assert!(v["pid"].is_null() && v["comm"].is_null() && v["cgroup_id"].is_null());
        assert_eq!(v["host_id"], "node-\"7\"");
        assert_eq!(
            v["batch_id"],
            "node-\"7\"/00000000000000000000000000000abc/42"
        );
        assert_eq!(v["record_index"], 3);
        assert_eq!(v["remote_workload_id"], "k8s:prod/db");
        assert_eq!(v["remote_identity_source"], "heartbeat");
        assert!(v["remote_unattributed_reason"].is_null());
        assert_eq!(v.as_object().map(|o| o.len()), Some(32), "no other field");
    }

    #[test]
    fn an_unattributed_flow_has_a_null_workload_and_a_reason() {
        let v = parse(&flow(false));
        assert!(v["remote_workload_id"].is_null());
        assert_eq!(v["remote_identity_source"], "none");
        assert_eq!(v["remote_unattributed_reason"], "conflicting_owners");
        assert_eq!(v.as_object().map(|o| o.len()), Some(32));
    }

    #[test]
    fn an_interim_record_has_its_kind_its_id_its_process_and_no_close_reason() {
        let mut f = flow(true);
        f.record.record_kind = RecordKind::Interim;
        f.record.flow_id = Some(FlowId {
            boot_id: [0x0f; 16],
            cookie: 0xfeed,
        });
        f.record.process = Some(flow_record::ProcessInfo::new(4242, "cu\"rl\n", 99));
        let v = parse(&f);
        assert_eq!(v["record_kind"], "interim");
        assert!(v["close_reason"].is_null());
        assert_eq!(
            v["flow_id"],
            "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f-000000000000feed"
        );
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["comm"], "cu\"rl\n");
        assert_eq!(v["cgroup_id"], 99);
        assert_eq!(v.as_object().map(|o| o.len()), Some(32));
        // The same connection's final record: its close reason is back.
        f.record.record_kind = RecordKind::Final;
        let v = parse(&f);
        assert_eq!(v["record_kind"], "final");
        assert!(v["close_reason"].is_string());
    }

    #[test]
    fn a_command_name_that_is_not_utf8_is_written_replaced() {
        let mut f = flow(true);
        let mut process = flow_record::ProcessInfo::new(1, "", 2);
        process.comm[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        f.record.process = Some(process);
        let v = parse(&f);
        assert_eq!(v["comm"], "a\u{fffd}b");
    }

    #[test]
    fn the_exporter_fields_come_first_in_their_order() {
        // The collector's line is the exporter's line with more fields at the end, for
        // final and interim records, with and without their connection's ID and
        // process.
        let mut interim = flow(true);
        interim.record.record_kind = RecordKind::Interim;
        interim.record.flow_id = Some(FlowId {
            boot_id: [7; 16],
            cookie: 9,
        });
        interim.record.process = Some(flow_record::ProcessInfo::new(3, "sh\"", 4));
        for f in [flow(true), interim] {
            let mut out = Vec::new();
            write_json_line(&mut out, &f).expect("write");
            let mut plain = Vec::new();
            flow_record::json::write_line(&mut plain, &f.record).expect("write");
            let prefix = &plain[..plain.len() - 2]; // without "}\n"
            assert!(
                out.starts_with(prefix),
                "{}\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&plain)
            );
            assert!(out[prefix.len()..].starts_with(b",\"host_id\":"));
        }
    }
}

#[cfg(test)]
mod completeness_tests {
    use std::sync::Arc;

    use flow_batch::{
        Completeness, Window,
        wire::{BatchId, InstanceId},
    };

    use super::write_completeness_line;
    use crate::completeness::{CompletenessConfig, Slot, WindowChunk, WindowTracker};

    fn line(report: &crate::completeness::WindowReport) -> serde_json::Value {
        let mut out = Vec::new();
        write_completeness_line(&mut out, report).expect("write");
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).expect("JSON")
    }

    fn chunk(sequence: u64, index: u32, last: bool, c: Option<Completeness>) -> WindowChunk {
        let batch = Arc::new(BatchId {
            host: "node-\"7\"".into(),
            instance: InstanceId::new(0xab),
            sequence,
        });
        let window = Window::from_millis(1_700_000_040_000, 1_700_000_100_000).expect("window");
        let mut chunk = WindowChunk::new(batch, window, index, last, c, &[]);
        chunk.final_records = 5;
        chunk.interim_records = 2;
        chunk
    }

    #[test]
    fn writes_every_field_of_a_window_that_adds_up() {
        let mut t = WindowTracker::new(CompletenessConfig::default());
        let c = Completeness {
            closes_seen: 12,
            records_emitted: 11,
            lost_ring_full: 1,
            lost_recursion: 3,
            lost_journal: 2,
            lost_spool: 6,
            interim_records: 2,
            records_replayed: 0,
            running_whole_window: false,
        };
        t.observe(
            &chunk(41, 0, true, Some(c)),
            Slot::Unwritten,
            std::time::UNIX_EPOCH,
        );
        let v = line(&t.pop_report().expect("report"));
        assert_eq!(v["record_type"], "completeness");
        assert_eq!(v["host_id"], "node-\"7\"");
        assert_eq!(v["instance"], "000000000000000000000000000000ab");
        assert_eq!(v["window_start"], "2023-11-14T22:14:00.000000000Z");
        assert_eq!(v["window_end"], "2023-11-14T22:15:00.000000000Z");
        assert_eq!(v["status"], "all_chunks");
        assert_eq!(v["running_whole_window"], false);
        assert_eq!(v["closes_seen"], 12);
        assert_eq!(v["records_emitted"], 11);
        assert_eq!(v["lost_ring_full"], 1);
        assert_eq!(v["lost_recursion"], 3);
        assert_eq!(v["lost_journal"], 2);
        assert_eq!(v["lost_spool"], 6);
        assert_eq!(v["interim_records"], 2);
        assert_eq!(v["records_replayed"], 0);
        assert_eq!(v["records_expected"], 7);
        assert_eq!(v["records_received"], 5);
        assert_eq!(v["interim_records_received"], 2);
        assert_eq!(v["chunks_expected"], 1);
        assert_eq!(v["chunks_received"], 1);
        assert_eq!(v["adds_up"], true);
        assert_eq!(
            v["batch_id"],
            "node-\"7\"/000000000000000000000000000000ab/41"
        );
        assert_eq!(v["record_index"], 7);
        assert_eq!(v.as_object().map(|o| o.len()), Some(23));
    }

    #[test]
    fn a_window_without_its_last_chunk_has_null_counts() {
        let mut t = WindowTracker::new(CompletenessConfig::default());
        t.observe(
            &chunk(41, 0, false, None),
            Slot::Unwritten,
            std::time::UNIX_EPOCH,
        );
        t.advance(std::time::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000));
        let v = line(&t.pop_report().expect("report"));
        assert_eq!(v["status"], "last_chunk_missing");
        for key in [
            "running_whole_window",
            "closes_seen",
            "records_emitted",
            "lost_ring_full",
            "lost_recursion",
            "lost_journal",
            "lost_spool",
            "interim_records",
            "records_replayed",
            "records_expected",
            "chunks_expected",
        ] {
            assert!(v[key].is_null(), "{key}: {v}");
        }
        assert_eq!(v["records_received"], 5);
        assert_eq!(v["chunks_received"], 1);
        assert_eq!(v["adds_up"], false);
        assert_eq!(v.as_object().map(|o| o.len()), Some(23));
    }
}

#[cfg(test)]
mod speed {
    /// Run with `cargo test --release -p flowcollector --lib json_line_speed -- --ignored
    /// --nocapture`. The best of 20 rounds, to see through a busy machine.
    #[test]
    #[ignore = "a measurement, in release mode"]
    fn json_line_speed() {
        let flow = super::tests::flow_for_speed();
        let mut out = Vec::with_capacity(1 << 20);
        let n = 100_000;
        let mut best = f64::MAX;
        let mut plain_best = f64::MAX;
        for _ in 0..20 {
            let start = std::time::Instant::now();
            for _ in 0..n {
                out.clear();
                super::write_json_line(&mut out, &flow).expect("write");
            }
            best = best.min(start.elapsed().as_secs_f64());
            let start = std::time::Instant::now();
            for _ in 0..n {
                out.clear();
                flow_record::json::write_line(&mut out, &flow.record).expect("write");
            }
            plain_best = plain_best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{:.0} lines/s ({:.0} exporter lines/s)",
            n as f64 / best,
            n as f64 / plain_best
        );
    }
}

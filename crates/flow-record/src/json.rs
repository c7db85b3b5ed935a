//! One JSON object per record, one record per line.
//!
//! Fields: `local_ip`, `local_port`, `remote_ip`, `remote_port`, `direction`,
//! `t_start`, `t_end` (RFC 3339 UTC with nanoseconds; `t_start` is null when the open
//! was not seen; for an interim record `t_end` is the time of the snapshot),
//! `bytes_sent`, `bytes_received`, `segs_in`, `segs_out`, `retransmits`, `srtt_us`,
//! `rttvar_us`, `bytes_retransmitted`, `close_state` (for an interim record, the state
//! the connection is in), `close_reason` (null for an interim record),
//! `local_workload_id` (null when unattributed), `identity_source`,
//! `unattributed_reason` (null when attributed), `incomplete` (true when some
//! kernel reads failed: the fields they would have filled are zero), `record_kind`
//! (`final`: the connection closed; `interim`: still open at the close of a batch
//! window), `flow_id` (the connection's ID, shared by its interim records and its final
//! record: the boot ID's 32 hex digits, `-`, the socket cookie's 16; null when not
//! known), `pid`, `comm` and `cgroup_id` (the task that made an outbound connection:
//! process ID, command name with bytes that are not UTF-8 written as U+FFFD, cgroup v2
//! ID; all three null when not known).
//!
//! The form of `flowexporter tail --json`, of the JSON-lines sinks and of the
//! reference collector's output file.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! use flow_record::{
//!     CloseReason, Direction, FlowRecord, RecordKind, IdentitySource, SocketStats, TcpState,
//!     UnattributedReason, json,
//! };
//!
//! let record = FlowRecord {
//!     local: "10.0.0.5:41000".parse()?,
//!     remote: "10.0.0.9:443".parse()?,
//!     direction: Direction::Outbound,
//!     t_start: None,
//!     t_end: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
//!     close_state: TcpState(7),
//!     close_reason: CloseReason::Normal,
//!     stats: SocketStats::default(),
//!     local_workload_id: None,
//!     identity_source: IdentitySource::None(UnattributedReason::NoMatch),
//!     incomplete: false,
//!     record_kind: RecordKind::Final,
//!     flow_id: None,
//!     process: None,
//! };
//! let mut out = Vec::new();
//! json::write_line(&mut out, &record)?;
//! let line = String::from_utf8(out)?;
//! assert!(line.starts_with(r#"{"local_ip":"10.0.0.5","local_port":41000,"#));
//! assert!(line.contains(r#""t_end":"2023-11-14T22:13:20.000000000Z""#));
//! assert!(line.ends_with("\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{
    borrow::Cow,
    io,
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use crate::{FlowId, FlowRecord, RecordKind};

/// The JSON view of a [`FlowRecord`].
#[derive(Debug, Serialize)]
pub struct JsonFlow<'a> {
    /// Local IP address.
    pub local_ip: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote IP address.
    pub remote_ip: IpAddr,
    /// Remote port.
    pub remote_port: u16,
    /// `outbound`, `inbound` or `unknown`.
    pub direction: &'static str,
    /// Open time, RFC 3339 UTC with nanoseconds; null when not seen.
    pub t_start: Option<String>,
    /// Close time, RFC 3339 UTC with nanoseconds.
    pub t_end: String,
    /// Payload bytes sent and acknowledged.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Segments received.
    pub segs_in: u32,
    /// Segments sent.
    pub segs_out: u32,
    /// Segments retransmitted.
    pub retransmits: u32,
    /// Smoothed RTT, µs.
    pub srtt_us: u32,
    /// RTT mean deviation, µs.
    pub rttvar_us: u32,
    /// Payload bytes retransmitted.
    pub bytes_retransmitted: u64,
    /// The TCP state the socket closed from.
    pub close_state: &'static str,
    /// Why it closed: `normal`, `refused`, `reset`, `timed_out`, ...; null for an
    /// interim record (the connection has not closed).
    pub close_reason: Option<Cow<'static, str>>,
    /// The local workload, null when unattributed.
    pub local_workload_id: Option<&'a str>,
    /// Which source resolved the identity (`none` when unattributed).
    pub identity_source: &'static str,
    /// Why the record is unattributed (`no_match`, `certificate_expired`, ...); null
    /// when attributed.
    pub unattributed_reason: Option<&'static str>,
    /// Some kernel reads failed: the fields they would have filled are zero.
    pub incomplete: bool,
    /// `final` (the connection closed) or `interim` (still open when a batch window
    /// closed).
    pub record_kind: &'static str,
    /// The connection's ID ([`FlowId`]'s text form); null when not known.
    pub flow_id: Option<String>,
    /// The process ID of the task that made an outbound connection; null when not
    /// known.
    pub pid: Option<u32>,
    /// That task's command name (bytes that are not UTF-8 replaced by U+FFFD); null
    /// when not known.
    pub comm: Option<Cow<'a, str>>,
    /// That task's cgroup v2 ID; null when not known.
    pub cgroup_id: Option<u64>,
}

/// 10000-01-01T00:00:00Z: RFC 3339 has four digits for the year.
const RFC3339_END: Duration = Duration::from_secs(253_402_300_800);

/// Formats a time as RFC 3339 UTC with nanoseconds. A time RFC 3339 cannot write
/// (before 1970 or from the year 10000 on; a decoded chunk can carry one) is written as
/// `@<seconds since the epoch>.<nanoseconds>` (`@-…` before it) instead of panicking.
pub fn rfc3339(t: SystemTime) -> String {
    Rfc3339(t).to_string()
}

/// [`rfc3339`] without the `String`: displays the same text (for serializers that
/// write straight into their output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339(pub SystemTime);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.duration_since(UNIX_EPOCH) {
            Ok(d) if d < RFC3339_END => {
                let mut buf = [0u8; RFC3339_LEN];
                rfc3339_digits(d, &mut buf);
                // Only ASCII digits and separators are written.
                f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
            }
            Ok(d) => write!(f, "@{}.{:09}", d.as_secs(), d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                write!(f, "@-{}.{:09}", d.as_secs(), d.subsec_nanos())
            }
        }
    }
}

/// Length of `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub const RFC3339_LEN: usize = 30;

/// Appends `t` as [`Rfc3339`] does, without going through `fmt` (the collector writes
/// two per output line).
pub fn write_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d < RFC3339_END => {
            let mut buf = [0u8; RFC3339_LEN];
            rfc3339_digits(d, &mut buf);
            out.extend_from_slice(&buf);
        }
        _ => {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{}", Rfc3339(t));
        }
    }
}

/// "00" to "99".
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// `d` after the epoch (before the year 10000) as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`:
/// the proleptic Gregorian date from the day count (Howard Hinnant's `civil_from_days`),
/// the same text as `humantime::format_rfc3339_nanos`.
fn rfc3339_digits(d: Duration, buf: &mut [u8; RFC3339_LEN]) {
    let secs = d.as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3_600, rem % 3_600 / 60, rem % 60);
    // civil_from_days, shifted to start the era on 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    // Two digits at a time, the groups independent of each other (short dependency
    // chains, where dividing one number by ten nine times is one long chain).
    fn pair(buf: &mut [u8; RFC3339_LEN], at: usize, v: u64) {
        let i = 2 * (v % 100) as usize;
        buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[i..i + 2]);
    }
    pair(buf, 0, year / 100);
    pair(buf, 2, year % 100);
    pair(buf, 5, month);
    pair(buf, 8, day);
    pair(buf, 11, hour);
    pair(buf, 14, minute);
    pair(buf, 17, second);
    let nanos = u64::from(d.subsec_nanos());
    let (high, middle, low) = (nanos / 1_000_000, nanos / 1_000 % 1_000, nanos % 1_000);
    for (at, group) in [(20, high), (23, middle), (26, low)] {
        buf[at] = b'0' + (group / 100) as u8;
        pair(buf, at + 1, group % 100);
    }
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        buf[at] = c;
    }
    buf[29] = b'Z';
}

impl<'a> From<&'a FlowRecord> for JsonFlow<'a> {
    fn from(r: &'a FlowRecord) -> JsonFlow<'a> {
        JsonFlow {
            local_ip: r.local.ip(),
            local_port: r.local.port(),
            remote_ip: r.remote.ip(),
            remote_port: r.remote.port(),
            direction: r.direction.as_str(),
            t_start: r.t_start.map(rfc3339),
            t_end: rfc3339(r.t_end),
            bytes_sent: r.stats.bytes_sent,
            bytes_received: r.stats.bytes_received,
            segs_in: r.stats.segs_in,
            segs_out: r.stats.segs_out,
            retransmits: r.stats.retransmits,
            srtt_us: r.stats.srtt_us,
            rttvar_us: r.stats.rttvar_us,
            bytes_retransmitted: r.stats.bytes_retransmitted,
            close_state: r.close_state.as_str(),
            close_reason: match r.record_kind {
                RecordKind::Final => Some(r.close_reason.as_str()),
                RecordKind::Interim => None,
            },
            local_workload_id: r.local_workload_id.as_ref().map(|w| w.as_str()),
            identity_source: r.identity_source.as_str(),
            unattributed_reason: r.identity_source.unattributed_reason().map(|u| u.as_str()),
            incomplete: r.incomplete,
            record_kind: r.record_kind.as_str(),
            flow_id: r.flow_id.as_ref().map(FlowId::to_string),
            pid: r.process.as_ref().map(|p| p.pid),
            comm: r.process.as_ref().map(|p| p.comm()),
            cgroup_id: r.process.as_ref().map(|p| p.cgroup_id),
        }
    }
}

/// Writes `record` as one JSON line (with the trailing newline).
pub fn write_line(out: &mut impl io::Write, record: &FlowRecord) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &JsonFlow::from(record)).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_rfc3339_cannot_write_are_written_as_epoch_seconds() {
        use super::{Duration, UNIX_EPOCH, rfc3339};
        let last = UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999);
        assert_eq!(rfc3339(last), "9999-12-31T23:59:59.999999999Z");
        let next = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(rfc3339(next), "@253402300800.000000000");
        let far = UNIX_EPOCH + Duration::new(u64::MAX / 4, 5);
        assert_eq!(rfc3339(far), format!("@{}.000000005", u64::MAX / 4));
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(rfc3339(before), "@-1.500000000");
    }

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{
        CloseReason, Direction, IdentitySource, ProcessInfo, RecordKind, SocketStats, TcpState,
        UnattributedReason,
    };

    #[test]
    fn writes_every_field() {
        let r = FlowRecord {
            local: "10.0.0.1:40000".parse().expect("addr"),
            remote: "[2001:db8::1]:443".parse().expect("addr"),
            direction: Direction::Outbound,
            t_start: None,
            t_end: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            close_state: TcpState(5),
            close_reason: CloseReason::Normal,
            stats: SocketStats {
                bytes_sent: 10,
                bytes_received: 20,
                segs_in: 3,
                segs_out: 4,
                retransmits: 1,
                bytes_retransmitted: 1448,
                srtt_us: 55,
                rttvar_us: 7,
            },
            local_workload_id: None,
            identity_source: IdentitySource::None(UnattributedReason::NoMatch),
            incomplete: true,
            record_kind: RecordKind::Final,
            flow_id: None,
            process: None,
        };
        let mut out = Vec::new();
        write_line(&mut out, &r).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["local_ip"], "10.0.0.1");
        assert_eq!(v["local_port"], 40000);
        assert_eq!(v["remote_ip"], "2001:db8::1");
        assert_eq!(v["remote_port"], 443);
        assert_eq!(v["direction"], "outbound");
        assert!(v["t_start"].is_null());
        assert_eq!(v["t_end"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["bytes_sent"], 10);
        assert_eq!(v["bytes_received"], 20);
        assert_eq!(v["segs_in"], 3);
        assert_eq!(v["segs_out"], 4);
        assert_eq!(v["retransmits"], 1);
        assert_eq!(v["srtt_us"], 55);
        assert_eq!(v["rttvar_us"], 7);
        assert_eq!(v["bytes_retransmitted"], 1448);
        assert_eq!(v["close_state"], "FIN_WAIT2");
        assert_eq!(v["close_reason"], "normal");
        assert!(v["local_workload_id"].is_null());
        assert_eq!(v["identity_source"], "none");
        assert_eq!(v["unattributed_reason"], "no_match");
        assert_eq!(v["incomplete"], true);
        assert_eq!(v["record_kind"], "final");
        assert!(v["flow_id"].is_null());
        assert!(v["pid"].is_null());
        assert!(v["comm"].is_null());
        assert!(v["cgroup_id"].is_null());
        assert_eq!(v.as_object().map(|o| o.len()), Some(26), "no other field");
    }

    #[test]
    fn an_interim_record_has_no_close_reason_and_names_its_flow_and_process() {
        let mut r: FlowRecord = FlowRecord {
            local: "10.0.0.1:40000".parse().expect("addr"),
            remote: "10.0.0.2:443".parse().expect("addr"),
            direction: Direction::Outbound,
            t_start: Some(UNIX_EPOCH + Duration::from_secs(1_699_999_000)),
            t_end: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            close_state: TcpState(1),
            close_reason: CloseReason::Normal,
            stats: SocketStats::default(),
            local_workload_id: None,
            identity_source: IdentitySource::None(UnattributedReason::NoMatch),
            incomplete: false,
            record_kind: RecordKind::Interim,
            flow_id: Some(FlowId {
                boot_id: [0xab; 16],
                cookie: 0x1234,
            }),
            process: Some(ProcessInfo::from_comm_bytes(4242, b"tab\tname\xff", 0x1122)),
        };
        let mut out = Vec::new();
        write_line(&mut out, &r).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        // The exact tail of the line: control characters escaped, invalid UTF-8 as
        // U+FFFD.
        let tail = "\"incomplete\":false,\"record_kind\":\"interim\",\
             \"flow_id\":\"abababababababababababababababab-0000000000001234\",\
             \"pid\":4242,\"comm\":\"tab\\tname\u{fffd}\",\"cgroup_id\":4386}\n";
        assert!(text.ends_with(tail), "{text}");
        assert!(text.contains("\"close_reason\":null,"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert!(v["close_reason"].is_null());
        assert_eq!(v["close_state"], "ESTABLISHED");
        assert_eq!(v["record_kind"], "interim");
        assert_eq!(
            v["flow_id"],
            "abababababababababababababababab-0000000000001234"
        );
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["comm"], "tab\tname\u{fffd}");
        assert_eq!(v["cgroup_id"], 0x1122);

        // The same connection's final record.
        r.record_kind = RecordKind::Final;
        r.close_reason = CloseReason::Reset;
        let mut out = Vec::new();
        write_line(&mut out, &r).expect("write");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["close_reason"], "reset");
        assert_eq!(v["record_kind"], "final");
    }

    #[test]
    fn rfc3339_matches_humantime_everywhere_it_can_write() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let edges = [
            0,
            1,
            86_399,
            86_400,
            951_782_400,   // 2000-02-29
            4_107_542_400, // 2100-03-01
            253_402_300_799,
        ];
        let mut times: Vec<(u64, u32)> = edges.iter().map(|s| (*s, 999_999_999)).collect();
        for _ in 0..100_000 {
            times.push((next() % 253_402_300_800, (next() % 1_000_000_000) as u32));
        }
        for (secs, nanos) in times {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            let expected = humantime::format_rfc3339_nanos(t).to_string();
            let mut out = Vec::new();
            write_rfc3339(&mut out, t);
            assert_eq!(String::from_utf8(out).expect("ASCII"), expected);
            assert_eq!(rfc3339(t), expected);
        }
    }
}

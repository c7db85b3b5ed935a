//! Reading one record of the payload, in either format version.
//!
//! The fields version 1 has (everything up to `incomplete`) are read by bincode into
//! [`RecordV1`]; version 2 appends the record kind, the flow ID and the process, read
//! here field by field so that an invalid value is reported with its field and offset.
//! Before bincode runs, the record's times are checked on its bytes
//! ([`check_times`]): serde would carry nanoseconds of 10^9 or more into the seconds.

use std::{net::SocketAddr, time::SystemTime};

use bincode::Options;
use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, WorkloadId,
};
use serde::Deserialize;

use super::{
    FORMAT_VERSION, MIN_FORMAT_VERSION, TIME_LIMIT_SECS, record::FLOW_ID_LEN, record_options,
};
use crate::error::BatchError;

/// A version 1 record: the fields of [`FlowRecord`] up to `incomplete`, in its order
/// (bincode reads structs as their fields in order, so these are also the first bytes
/// of a version 2 record).
#[derive(Deserialize)]
struct RecordV1 {
    local: SocketAddr,
    remote: SocketAddr,
    direction: Direction,
    t_start: Option<SystemTime>,
    t_end: SystemTime,
    close_state: TcpState,
    close_reason: CloseReason,
    stats: SocketStats,
    local_workload_id: Option<WorkloadId>,
    identity_source: IdentitySource,
    incomplete: bool,
}

impl RecordV1 {
    fn into_record(
        self,
        record_kind: RecordKind,
        flow_id: Option<FlowId>,
        process: Option<ProcessInfo>,
    ) -> FlowRecord {
        FlowRecord {
            local: self.local,
            remote: self.remote,
            direction: self.direction,
            t_start: self.t_start,
            t_end: self.t_end,
            close_state: self.close_state,
            close_reason: self.close_reason,
            stats: self.stats,
            local_workload_id: self.local_workload_id,
            identity_source: self.identity_source,
            incomplete: self.incomplete,
            record_kind,
            flow_id,
            process,
        }
    }
}

/// Decodes the record at the start of `bytes`, encoded as wire format `version`
/// ([`MIN_FORMAT_VERSION`] to [`FORMAT_VERSION`]) encodes it, with every check
/// [`ChunkDecoder`](super::ChunkDecoder) makes on a record; returns it and its length
/// in bytes (what follows it is not looked at). A version 1 record comes back final,
/// without flow ID or process.
///
/// Errors name record index 0 and offsets from the start of `bytes`; a `version` this
/// crate does not read is [`BatchError::UnsupportedVersion`]. What keeps records of its
/// own (a journal) reads them with it.
pub fn decode_record(bytes: &[u8], version: u16) -> Result<(FlowRecord, usize), BatchError> {
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(BatchError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    decode_at(bytes, version, 0, 0)
}

/// [`decode_record`] for record `index` of a payload, which starts at offset `at` of
/// the decompressed payload (for errors). `version` is one this crate reads.
pub(super) fn decode_at(
    bytes: &[u8],
    version: u16,
    index: u32,
    at: usize,
) -> Result<(FlowRecord, usize), BatchError> {
    check_times(bytes, index, at)?;
    let mut rest = bytes;
    // The limit keeps bincode from allocating a string longer than what is left.
    let v1: RecordV1 = record_options()
        .with_limit(bytes.len() as u64)
        .deserialize_from(&mut rest)
        .map_err(|source| BatchError::RecordDecode {
            index,
            offset: at,
            source,
        })?;
    let consumed = bytes.len() - rest.len();
    if version == 1 {
        return Ok((v1.into_record(RecordKind::Final, None, None), consumed));
    }
    let mut tail = Tail {
        bytes,
        pos: consumed,
        index,
        at,
    };
    let record_kind = match u32::from_le_bytes(tail.take::<4>("record_kind")?) {
        0 => RecordKind::Final,
        1 => RecordKind::Interim,
        _ => {
            return Err(tail.invalid(
                tail.pos - 4,
                "record_kind",
                "unknown record kind (0 = final, 1 = interim)",
            ));
        }
    };
    let flow_id = match tail.option_tag("flow_id")? {
        false => None,
        true => {
            let id = tail.take::<FLOW_ID_LEN>("flow_id")?;
            let mut boot_id = [0u8; 16];
            boot_id.copy_from_slice(&id[..16]);
            let mut cookie = [0u8; 8];
            cookie.copy_from_slice(&id[16..]);
            Some(FlowId {
                boot_id,
                cookie: u64::from_le_bytes(cookie),
            })
        }
    };
    let process = match tail.option_tag("process")? {
        false => None,
        true => {
            let pid = u32::from_le_bytes(tail.take::<4>("process.pid")?);
            let cgroup_id = u64::from_le_bytes(tail.take::<8>("process.cgroup_id")?);
            let comm_at = tail.pos;
            let comm = tail.take::<16>("process.comm")?;
            if let Some((i, reason)) = comm_problem(&comm) {
                return Err(tail.invalid(comm_at + i, "process.comm", reason));
            }
            Some(ProcessInfo {
                pid,
                cgroup_id,
                comm,
            })
        }
    };
    Ok((v1.into_record(record_kind, flow_id, process), tail.pos))
}

/// Where and why a `comm` is not in its one form (at most 15 bytes of name, then only
/// NULs): the offending byte's index and the reason; `None` when it is.
fn comm_problem(comm: &[u8; 16]) -> Option<(usize, &'static str)> {
    let Some(end) = comm.iter().position(|&b| b == 0) else {
        return Some((
            comm.len() - 1,
            "no NUL in its 16 bytes (a command name is at most 15 bytes)",
        ));
    };
    let after = comm[end..].iter().position(|&b| b != 0)?;
    Some((end + after, "a byte other than NUL after the first NUL"))
}

/// The version 2 fields after bincode's part of a record.
struct Tail<'a> {
    /// The record's bytes (and whatever follows them).
    bytes: &'a [u8],
    /// Where the next field starts in `bytes`.
    pos: usize,
    index: u32,
    /// Where `bytes` starts in the decompressed payload.
    at: usize,
}

impl Tail<'_> {
    fn invalid(&self, pos: usize, field: &'static str, reason: &'static str) -> BatchError {
        BatchError::InvalidRecord {
            index: self.index,
            offset: self.at + pos,
            field,
            reason,
        }
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], BatchError> {
        let Some(b) = self
            .bytes
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk::<N>())
        else {
            return Err(self.invalid(self.pos, field, "the payload ends inside it"));
        };
        self.pos += N;
        Ok(*b)
    }

    /// An `Option`'s tag: `false` for 0 (none), `true` for 1 (some).
    fn option_tag(&mut self, field: &'static str) -> Result<bool, BatchError> {
        match self.take::<1>(field)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(self.invalid(
                self.pos - 1,
                field,
                "option tag is neither 0 (none) nor 1 (some)",
            )),
        }
    }
}

/// Checks the times of the record at the start of `bytes` (record `index`, at offset
/// `at` of the decompressed payload) before bincode decodes it: nanoseconds below
/// 10^9 (serde would carry more into the seconds, giving one time two encodings) and
/// seconds below [`TIME_LIMIT_SECS`]. The fields before the times have fixed sizes
/// once the address families and the `t_start` tag are known (in both versions); when
/// those are not valid (or the bytes run out), nothing is checked here and bincode
/// reports the error.
fn check_times(bytes: &[u8], index: u32, at: usize) -> Result<(), BatchError> {
    let u32_at = |offset: usize| {
        let b = bytes.get(offset..)?.first_chunk::<4>()?;
        Some(u32::from_le_bytes(*b))
    };
    // A socket address: the variant, then 4 + 2 or 16 + 2 bytes.
    let address_len = |offset: usize| match u32_at(offset)? {
        0 => Some(10),
        1 => Some(22),
        _ => None,
    };
    let Some(local) = address_len(0) else {
        return Ok(());
    };
    let Some(remote) = address_len(local) else {
        return Ok(());
    };
    // The direction (4 bytes), then the t_start tag.
    let tag_at = local + remote + 4;
    let t_end_at = match bytes.get(tag_at) {
        Some(0) => tag_at + 1,
        Some(1) => {
            check_time(bytes, tag_at + 1, "t_start", index, at)?;
            tag_at + 13
        }
        _ => return Ok(()),
    };
    check_time(bytes, t_end_at, "t_end", index, at)
}

/// Checks the time (`u64` seconds, `u32` nanoseconds) at `offset` of a record's bytes.
fn check_time(
    bytes: &[u8],
    offset: usize,
    field: &'static str,
    index: u32,
    at: usize,
) -> Result<(), BatchError> {
    let Some((seconds, rest)) = bytes.get(offset..).and_then(|b| b.split_first_chunk::<8>()) else {
        return Ok(());
    };
    let Some(nanos) = rest.first_chunk::<4>() else {
        return Ok(());
    };
    let (seconds, nanos) = (u64::from_le_bytes(*seconds), u32::from_le_bytes(*nanos));
    let reason = if nanos >= 1_000_000_000 {
        "nanoseconds are not below 10^9"
    } else if seconds >= TIME_LIMIT_SECS {
        "not before 10000-01-01T00:00:00Z (253402300800 s)"
    } else {
        return Ok(());
    };
    Err(BatchError::InvalidTime {
        index,
        offset: at + offset,
        field,
        seconds,
        nanos,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_has_one_form() {
        let mut comm = [0u8; 16];
        assert_eq!(comm_problem(&comm), None, "empty");
        comm[..4].copy_from_slice(b"curl");
        assert_eq!(comm_problem(&comm), None);
        comm[9] = b'x';
        assert_eq!(comm_problem(&comm).map(|p| p.0), Some(9));
        let full = [b'a'; 16];
        assert_eq!(comm_problem(&full).map(|p| p.0), Some(15));
        let mut fifteen = [b'a'; 16];
        fifteen[15] = 0;
        assert_eq!(comm_problem(&fifteen), None);
        for comm in [[0u8; 16], fifteen, *b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0"] {
            let p = ProcessInfo {
                pid: 1,
                cgroup_id: 2,
                comm,
            };
            assert!(p.comm_is_canonical());
        }
        let p = ProcessInfo {
            pid: 1,
            cgroup_id: 2,
            comm: full,
        };
        assert!(!p.comm_is_canonical(), "the encoder's check agrees");
    }
}

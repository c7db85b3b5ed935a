//! Matching a chunk's records to their journal positions: by the tag they carry, or
//! by content (a fingerprint of their fields) for records pushed without one.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
    net::{IpAddr, SocketAddr},
    time::{SystemTime, UNIX_EPOCH},
};

use flow_record::{FlowRecord, RecordKind};

use super::{Positions, RecordJournal, format::Lsn};

/// What a chunk's record is matched to its journal position by: both ends, close and
/// open time, the byte counts, the record kind and the flow ID's cookie, mixed into 64
/// bits. Computed from the fields (not
/// the encoded record), so matching a chunk costs no second encoding; records that
/// agree on all of these are interchangeable, and are matched in journal order.
pub(super) fn fingerprint(record: &FlowRecord) -> u64 {
    let nanos = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let ip = |a: &SocketAddr| match a.ip() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) ^ (1 << 127),
    };
    let (local, remote) = (ip(&record.local), ip(&record.remote));
    let words = [
        local as u64,
        (local >> 64) as u64,
        remote as u64,
        (remote >> 64) as u64,
        u64::from(record.local.port()) << 16 | u64::from(record.remote.port()),
        nanos(record.t_end),
        record.t_start.map_or(0, nanos),
        record.stats.bytes_sent,
        record.stats.bytes_received,
        match record.record_kind {
            RecordKind::Final => 0,
            RecordKind::Interim => 1,
        },
        record.flow_id.map_or(0, |id| id.cookie ^ (1 << 63)),
    ];
    words.into_iter().fold(0x243F_6A88_85A3_08D3, mix)
}

/// One round of splitmix64's finalizer over `h ^ v`: every input bit reaches about half
/// of the output bits.
fn mix(h: u64, v: u64) -> u64 {
    let mut z = (h ^ v).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a [`fingerprint`] (already mixed) as itself.
#[derive(Default)]
pub(super) struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Pending records by fingerprint.
pub(super) type PendingMap = HashMap<u64, Positions, BuildHasherDefault<FingerprintHasher>>;

impl RecordJournal {
    pub(super) fn add_pending(&mut self, fp: u64, at: Lsn) {
        self.pending_count += 1;
        match self.pending.get_mut(&fp) {
            None => {
                self.pending.insert(fp, Positions::One(at));
            }
            Some(Positions::One(first)) => {
                let first = *first;
                self.pending
                    .insert(fp, Positions::Many(VecDeque::from([first, at])));
            }
            Some(Positions::Many(q)) => q.push_back(at),
        }
    }

    pub(super) fn take_pending(&mut self, fp: u64) -> Option<Lsn> {
        let at = match self.pending.get_mut(&fp)? {
            Positions::One(at) => {
                let at = *at;
                self.pending.remove(&fp);
                at
            }
            Positions::Many(q) => {
                let at = q.pop_front()?;
                if q.is_empty() {
                    self.pending.remove(&fp);
                }
                at
            }
        };
        self.pending_count -= 1;
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, time::Duration};

    use super::*;

    /// flow-testkit's defaults (10.0.0.1:443 from 10.0.0.2:50000, closed 5 ms after it
    /// opened), with byte counts other than zero.
    fn record() -> FlowRecord {
        flow_testkit::record().bytes(10, 20).build()
    }

    #[test]
    fn fingerprints_tell_records_apart_by_each_field_they_cover() {
        let base = record();
        assert_eq!(fingerprint(&base), fingerprint(&base.clone()));
        let variants: [fn(&mut FlowRecord); 11] = [
            |r| r.local.set_port(444),
            |r| r.remote.set_port(50001),
            |r| r.remote = "[::ffff:10.0.0.2]:50000".parse().expect("addr"),
            |r| r.local = "10.0.0.3:443".parse().expect("addr"),
            |r| r.t_end += Duration::from_nanos(1),
            |r| r.t_start = None,
            |r| r.stats.bytes_sent += 1,
            |r| r.stats.bytes_received += 1,
            |r| r.record_kind = RecordKind::Interim,
            |r| {
                r.flow_id = Some(flow_record::FlowId {
                    boot_id: [1; 16],
                    cookie: 0,
                })
            },
            |r| {
                r.flow_id = Some(flow_record::FlowId {
                    boot_id: [1; 16],
                    cookie: 7,
                })
            },
        ];
        let mut seen = HashSet::from([fingerprint(&base)]);
        for change in variants {
            let mut r = base.clone();
            change(&mut r);
            assert!(seen.insert(fingerprint(&r)), "{r:?}");
        }
    }
}

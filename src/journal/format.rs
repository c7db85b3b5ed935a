//! The segment format: the header, the entry framing (length + CRC-32C), and a reader
//! that keeps every intact entry of a damaged segment.
//!
//! A segment is a 16-byte header, then entries: `u32` body length, `u32` CRC-32C of the
//! body, the body (a kind byte, then the bincode 1 encoding with fixed little-endian
//! integers of a record, an intent or a done mark). A record is in the wire format's
//! record encoding: version 2 in a version 3 segment, version 1 in the segments of
//! older releases (versions 1 and 2); it is read back with the wire format's decoder
//! and handed on in version 2, whatever it was stored in. An intent in a version 3
//! segment ends with its chunk's completeness (an option: a `0` byte, or a `1` byte and
//! the 65 bytes of [`StoredCompleteness`]); the intents of older releases end with
//! their positions, and are read as having none. The reader accepts an entry only if
//! its length is sane, its checksum matches, its body decodes to exactly its length, and
//! — after damage, when it is searching for a place to start again — the entry right
//! after it is acceptable too (or it ends the segment). So resynchronisation never
//! invents an entry from the inside of another one, short of a 32-bit checksum
//! collision that also decodes and is followed by a well-formed entry.

use std::collections::{BTreeMap, HashSet};

use bincode::Options;
use flow_batch::{
    Completeness,
    wire::{BatchId, InstanceId, decode_record, encode_record},
};
use flow_record::FlowRecord;
use serde::{Deserialize, Serialize};

/// The first bytes of a segment.
pub(super) const MAGIC: [u8; 4] = *b"FXWJ";
/// Version 1: a record's position is its ordinal in its segment; records in wire
/// format 1.
pub(super) const VERSION_ORDINALS: u16 = 1;
/// Version 2: a record's position is its byte offset in its segment, so a lost entry
/// does not shift the positions of the entries after it; records in wire format 1.
pub(super) const VERSION_OFFSETS: u16 = 2;
/// Version 3 (written now): as version 2, with records in wire format 2 (record kind,
/// flow ID, process) and intents that end with their chunk's completeness.
pub(super) const VERSION: u16 = 3;
/// Header length.
pub(super) const HEADER_LEN: usize = 16;
/// Length of an entry's framing (length and checksum).
pub(super) const ENTRY_HEAD_LEN: usize = 8;
/// Largest entry body accepted (an intent names 8 bytes per record of its chunk).
pub(super) const MAX_ENTRY_LEN: u32 = 64 << 20;
/// Largest record entry body accepted: a record is a few hundred bytes, its workload
/// ID included. A tighter limit for the most common kind keeps resynchronisation from
/// checksumming long stretches at positions that only look like an entry.
const MAX_RECORD_LEN: u32 = 64 << 10;
/// Header flag: this segment was started by the recovery whose first segment is the
/// header's `u64` field; it counts only once that first segment is in place (its
/// `.tmp` name is gone).
pub(super) const FLAG_RECOVERY: u16 = 1;
pub(super) const KIND_RECORD: u8 = 1;
pub(super) const KIND_INTENT: u8 = 2;
pub(super) const KIND_DONE: u8 = 3;

pub(super) fn options() -> impl Options + Copy {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
}

/// A position in the journal: segment number (high 32 bits) and the record's byte
/// offset in it (ordinal in a version 1 segment).
pub(super) type Lsn = u64;

pub(super) fn lsn(segment: u64, at: u32) -> Lsn {
    (segment << 32) | u64::from(at)
}

pub(super) fn lsn_segment(lsn: Lsn) -> u64 {
    lsn >> 32
}

/// An intent: a chunk handed to a sink, with the positions of its records.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct IntentBody {
    pub(super) host: String,
    pub(super) instance: u128,
    pub(super) sequence: u64,
    pub(super) window_start_ms: u64,
    pub(super) window_end_ms: u64,
    pub(super) index: u32,
    pub(super) last: bool,
    pub(super) lsns: Vec<u64>,
    /// The chunk's completeness (a window's last chunk); in version 3 segments only
    /// (`None` for an intent of an older release).
    #[serde(with = "stored_completeness")]
    pub(super) completeness: Option<Completeness>,
}

/// An intent as the segments of older releases (versions 1 and 2) hold it: without
/// completeness.
#[derive(Deserialize)]
struct LegacyIntentBody {
    host: String,
    instance: u128,
    sequence: u64,
    window_start_ms: u64,
    window_end_ms: u64,
    index: u32,
    last: bool,
    lsns: Vec<u64>,
}

impl From<LegacyIntentBody> for IntentBody {
    fn from(legacy: LegacyIntentBody) -> IntentBody {
        let LegacyIntentBody {
            host,
            instance,
            sequence,
            window_start_ms,
            window_end_ms,
            index,
            last,
            lsns,
        } = legacy;
        IntentBody {
            host,
            instance,
            sequence,
            window_start_ms,
            window_end_ms,
            index,
            last,
            lsns,
            completeness: None,
        }
    }
}

/// Whether the intents of a segment of version `version` (read from its header bytes,
/// even when the rest of the header is damaged) end with a completeness: not in the
/// segments of older releases.
fn intents_have_completeness(version: u16) -> bool {
    !matches!(version, VERSION_ORDINALS | VERSION_OFFSETS)
}

/// A [`Completeness`] as an intent stores it: the journal's own copy of its fields, so
/// that a field added to [`Completeness`] does not change the segment format unseen
/// (the conversions name every field: adding one fails to compile until the format
/// is decided on).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredCompleteness {
    closes_seen: u64,
    records_emitted: u64,
    lost_ring_full: u64,
    lost_recursion: u64,
    lost_journal: u64,
    lost_spool: u64,
    interim_records: u64,
    records_replayed: u64,
    running_whole_window: bool,
}

/// Length of a [`StoredCompleteness`] (bincode 1, fixed integers): 8 `u64` and a
/// `bool`.
const COMPLETENESS_LEN: usize = 8 * 8 + 1;

impl From<Completeness> for StoredCompleteness {
    fn from(c: Completeness) -> StoredCompleteness {
        let Completeness {
            closes_seen,
            records_emitted,
            lost_ring_full,
            lost_recursion,
            lost_journal,
            lost_spool,
            interim_records,
            records_replayed,
            running_whole_window,
        } = c;
        StoredCompleteness {
            closes_seen,
            records_emitted,
            lost_ring_full,
            lost_recursion,
            lost_journal,
            lost_spool,
            interim_records,
            records_replayed,
            running_whole_window,
        }
    }
}

impl From<StoredCompleteness> for Completeness {
    fn from(c: StoredCompleteness) -> Completeness {
        let StoredCompleteness {
            closes_seen,
            records_emitted,
            lost_ring_full,
            lost_recursion,
            lost_journal,
            lost_spool,
            interim_records,
            records_replayed,
            running_whole_window,
        } = c;
        Completeness {
            closes_seen,
            records_emitted,
            lost_ring_full,
            lost_recursion,
            lost_journal,
            lost_spool,
            interim_records,
            records_replayed,
            running_whole_window,
        }
    }
}

/// (De)serializes an intent's `Option<Completeness>` as an `Option<StoredCompleteness>`.
mod stored_completeness {
    use flow_batch::Completeness;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::StoredCompleteness;

    pub(super) fn serialize<S: Serializer>(
        completeness: &Option<Completeness>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        completeness
            .map(StoredCompleteness::from)
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Completeness>, D::Error> {
        Ok(Option::<StoredCompleteness>::deserialize(deserializer)?.map(Completeness::from))
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct DoneBody {
    pub(super) host: String,
    pub(super) instance: u128,
    pub(super) sequence: u64,
}

impl DoneBody {
    pub(super) fn id(&self) -> BatchId {
        BatchId {
            host: self.host.clone(),
            instance: InstanceId::new(self.instance),
            sequence: self.sequence,
        }
    }
}

/// A segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) version: u16,
    pub(super) flags: u16,
    /// Without [`FLAG_RECOVERY`]: segments numbered below it are obsolete (a recovery
    /// wrote their live content into this one). With it: the recovery's first segment.
    pub(super) field: u64,
}

pub(super) fn encode_header(flags: u16, field: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4..6].copy_from_slice(&VERSION.to_le_bytes());
    header[6..8].copy_from_slice(&flags.to_le_bytes());
    header[8..16].copy_from_slice(&field.to_le_bytes());
    header
}

/// The header, if it is one (right magic, known version, known flags).
fn decode_header(bytes: &[u8]) -> Option<Header> {
    let b = bytes.get(..HEADER_LEN)?;
    let version = u16::from_le_bytes([b[4], b[5]]);
    let flags = u16::from_le_bytes([b[6], b[7]]);
    let mut field = [0u8; 8];
    field.copy_from_slice(&b[8..16]);
    let known = b[..4] == MAGIC
        && (version == VERSION
            || version == VERSION_OFFSETS
            || (version == VERSION_ORDINALS && flags == 0))
        && flags & !FLAG_RECOVERY == 0;
    known.then_some(Header {
        version,
        flags,
        field: u64::from_le_bytes(field),
    })
}

/// The wire format version of the records in a segment of version `version` (read
/// from its header bytes, even when the rest of the header is damaged): 1 in the
/// segments of older releases, 2 (the current one) otherwise.
fn record_version(version: u16) -> u16 {
    match version {
        VERSION_ORDINALS | VERSION_OFFSETS => 1,
        _ => 2,
    }
}

/// One decoded entry.
pub(super) enum Entry {
    Record {
        record: FlowRecord,
        /// Its encoding in the current wire format (without the kind byte): what a
        /// recovery writes into a new segment.
        bytes: Vec<u8>,
        /// Length of its body in the segment (kind byte included).
        stored_len: usize,
    },
    Intent {
        body: IntentBody,
        /// Length of its body in the segment (kind byte included): an older
        /// release's intent is shorter than its encoding now.
        stored_len: usize,
    },
    Done(DoneBody),
}

/// Bytes the reading of one segment may checksum, whatever it holds: eight times its
/// size, and at least [`MIN_CHECKSUM_BUDGET`]. Reading an intact segment checksums each
/// byte once; resynchronising after real damage costs little more. A segment crafted
/// so that a plausible entry starts at every few bytes would otherwise cost a checksum
/// over up to 64 KiB per position; past the budget the rest of the segment is given up
/// on (a bad stretch: the segment is damaged, and set aside).
const CHECKSUM_BUDGET_FACTOR: u64 = 8;
/// The smallest checksum budget of a segment: 16 MiB.
const MIN_CHECKSUM_BUDGET: u64 = 16 << 20;

/// What is left of the checksum budget of the segment being read.
struct Budget {
    left: u64,
    exhausted: bool,
}

impl Budget {
    fn for_segment(len: usize) -> Budget {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        Budget {
            left: len
                .saturating_mul(CHECKSUM_BUDGET_FACTOR)
                .max(MIN_CHECKSUM_BUDGET),
            exhausted: false,
        }
    }

    /// Takes `n` bytes from the budget; `false` (and exhausted from now on) when they
    /// are not left.
    fn take(&mut self, n: u32) -> bool {
        match self.left.checked_sub(u64::from(n)) {
            Some(left) if !self.exhausted => {
                self.left = left;
                true
            }
            _ => {
                self.exhausted = true;
                false
            }
        }
    }
}

/// The entry starting at `at`, if one is acceptable there (and the checksum `budget`
/// allows checking it), and where it ends, in a segment of version `version` (read
/// from its header bytes).
fn entry_at(bytes: &[u8], at: usize, version: u16, budget: &mut Budget) -> Option<(Entry, usize)> {
    let head = bytes.get(at..at.checked_add(ENTRY_HEAD_LEN)?)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_ENTRY_LEN {
        return None;
    }
    let start = at + ENTRY_HEAD_LEN;
    let end = start.checked_add(len as usize)?;
    let body = bytes.get(start..end)?;
    let shaped = match body[0] {
        KIND_RECORD => len <= MAX_RECORD_LEN,
        KIND_INTENT | KIND_DONE => has_its_length(body, version),
        _ => false,
    };
    // Checked before the checksum: when resynchronising over garbage, a position that
    // merely looks like the start of a long entry must not cost a checksum over
    // megabytes.
    if !shaped || !budget.take(len) || crc32c::crc32c(body) != crc {
        return None;
    }
    let entry = match body[0] {
        KIND_RECORD => {
            let record_version = record_version(version);
            let encoded = &body[1..];
            let (record, len) = decode_record(encoded, record_version).ok()?;
            if len != encoded.len() {
                return None;
            }
            let bytes = if record_version == 2 {
                encoded.to_vec()
            } else {
                // An older release's record: in the current encoding from here on, so
                // that a recovery writes what this release reads.
                let mut current = Vec::with_capacity(encoded.len() + 6);
                encode_record(&record, &mut current).ok()?;
                current
            };
            Entry::Record {
                record,
                bytes,
                stored_len: body.len(),
            }
        }
        KIND_INTENT => Entry::Intent {
            body: decode_intent(&body[1..], version)?,
            stored_len: body.len(),
        },
        _ => Entry::Done(options().deserialize(&body[1..]).ok()?),
    };
    Some((entry, end))
}

/// An intent's encoding (without the kind byte) in a segment of version `version`.
fn decode_intent(bytes: &[u8], version: u16) -> Option<IntentBody> {
    if intents_have_completeness(version) {
        options().deserialize(bytes).ok()
    } else {
        let legacy: LegacyIntentBody = options().deserialize(bytes).ok()?;
        Some(legacy.into())
    }
}

/// Whether an intent or done body (kind byte included) in a segment of version
/// `version` is exactly as long as the lengths inside it say (bincode 1, fixed
/// integers): a host string (`u64` length and bytes), then for a done mark 24 bytes
/// (instance, sequence), for an intent 45 bytes (instance, sequence, window, index,
/// last), a `u64` count and 8 bytes per position, and in a version 3 segment a
/// completeness: a `0` byte, or a `1` byte and [`COMPLETENESS_LEN`] bytes.
fn has_its_length(body: &[u8], version: u16) -> bool {
    let u64_at = |at: usize| -> Option<usize> {
        let b = body.get(at..at.checked_add(8)?)?;
        usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok()
    };
    let expected = || -> Option<usize> {
        let host = u64_at(1)?;
        let fixed = 1usize.checked_add(8)?.checked_add(host)?;
        if body[0] == KIND_DONE {
            return fixed.checked_add(24);
        }
        let count_at = fixed.checked_add(45)?;
        let count = u64_at(count_at)?;
        let positions_end = count_at
            .checked_add(8)?
            .checked_add(count.checked_mul(8)?)?;
        if !intents_have_completeness(version) {
            return Some(positions_end);
        }
        let completeness = match body.get(positions_end)? {
            0 => 0,
            1 => COMPLETENESS_LEN,
            _ => return None,
        };
        positions_end.checked_add(1 + completeness)
    };
    expected() == Some(body.len())
}

/// Whether an entry well-formed enough to trust starts at `at` (or the segment ends
/// there).
fn confirmed(bytes: &[u8], end: usize, version: u16, budget: &mut Budget) -> bool {
    end == bytes.len() || entry_at(bytes, end, version, budget).is_some()
}

/// What reading one segment found.
#[derive(Default)]
pub(super) struct Parsed {
    /// The header, when it is intact. `None` with `damaged` set: the entries were
    /// read from right after where the header should end.
    pub(super) header: Option<Header>,
    /// Positions are ordinals (a version 1 segment; from the version bytes even when
    /// the rest of the header is damaged).
    pub(super) ordinals: bool,
    /// Entries that passed every check, with their byte offset.
    pub(super) entries: Vec<(usize, Entry)>,
    /// Damage was found (a bad header, or bad bytes followed by intact entries): the
    /// segment is set aside once its intact content has been journaled again.
    pub(super) damaged: bool,
    /// Stretches of bad bytes skipped between intact entries (each lost at least one
    /// entry).
    pub(super) bad_regions: u64,
    /// Bytes skipped in those stretches.
    pub(super) bad_bytes: u64,
    /// Bytes at the end that are no whole entry: what a crash in the middle of a write
    /// leaves (the normal case, not damage).
    pub(super) torn_tail: u64,
}

/// Reads a segment, keeping every intact entry: after bad bytes it resynchronises at
/// the next position where an acceptable entry starts.
pub(super) fn parse(bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    if bytes.len() < HEADER_LEN {
        // Created, and the crash came before its header was written.
        parsed.torn_tail = bytes.len() as u64;
        return parsed;
    }
    parsed.header = decode_header(bytes);
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    parsed.ordinals = version == VERSION_ORDINALS;
    if parsed.header.is_none() {
        parsed.damaged = true;
    }
    let mut budget = Budget::for_segment(bytes.len());
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        if let Some((entry, end)) = entry_at(bytes, at, version, &mut budget) {
            parsed.entries.push((at, entry));
            at = end;
            continue;
        }
        let next = if budget.exhausted {
            None
        } else {
            resync(bytes, at + 1, version, &mut budget)
        };
        match next {
            Some(next) => {
                parsed.damaged = true;
                parsed.bad_regions += 1;
                parsed.bad_bytes += (next - at) as u64;
                at = next;
            }
            None if budget.exhausted => {
                // Too costly to search further: the rest is a bad stretch.
                parsed.damaged = true;
                parsed.bad_regions += 1;
                parsed.bad_bytes += (bytes.len() - at) as u64;
                break;
            }
            None => {
                parsed.torn_tail = (bytes.len() - at) as u64;
                break;
            }
        }
    }
    parsed
}

/// The first position at or after `from` where an acceptable entry starts that is
/// followed by another (or by the end of the segment). `None` also when the checksum
/// `budget` runs out first.
fn resync(bytes: &[u8], from: usize, version: u16, budget: &mut Budget) -> Option<usize> {
    let last = bytes.len().checked_sub(ENTRY_HEAD_LEN + 1)?;
    for at in from..=last {
        if entry_at(bytes, at, version, budget)
            .is_some_and(|(_, end)| confirmed(bytes, end, version, budget))
        {
            return Some(at);
        }
        if budget.exhausted {
            return None;
        }
    }
    None
}

/// Where the positions of version 1 records whose ordinal is unknown start: above any
/// real ordinal (a segment never holds 2^31 records).
const ORPHANS: u32 = 1 << 31;

/// The live content of the segments a previous run left.
#[derive(Default)]
pub(super) struct OldContent {
    /// Records by position, with their encoding.
    pub(super) records: BTreeMap<Lsn, (FlowRecord, Vec<u8>)>,
    /// Intents, with the segment each was found in.
    pub(super) intents: Vec<(u64, IntentBody)>,
    pub(super) done: HashSet<BatchId>,
}

impl OldContent {
    /// Adds the entries of segment `number`.
    pub(super) fn add(&mut self, number: u64, parsed: Parsed) {
        let ordinals = parsed.ordinals;
        let mut ordinal: u32 = 0;
        let mut orphan: u32 = ORPHANS;
        let mut lost_track = false;
        let mut expected = HEADER_LEN;
        for (offset, entry) in parsed.entries {
            if offset != expected {
                lost_track = true;
            }
            match entry {
                Entry::Record {
                    record,
                    bytes,
                    stored_len,
                } => {
                    expected = offset + ENTRY_HEAD_LEN + stored_len;
                    let at = if ordinals && lost_track {
                        // Its ordinal is unknown after damage: a position no intent
                        // names, so that it comes back as a record in no chunk.
                        orphan = orphan.saturating_add(1);
                        orphan
                    } else if ordinals {
                        ordinal = ordinal.saturating_add(1);
                        ordinal - 1
                    } else {
                        u32::try_from(offset).unwrap_or(u32::MAX)
                    };
                    self.records.insert(lsn(number, at), (record, bytes));
                }
                Entry::Intent { body, stored_len } => {
                    expected = offset + ENTRY_HEAD_LEN + stored_len;
                    self.intents.push((number, body));
                }
                Entry::Done(done) => {
                    expected = end_of(offset, &done);
                    self.done.insert(done.id());
                }
            }
        }
    }
}

fn end_of(offset: usize, body: &impl Serialize) -> usize {
    let len = options().serialized_size(body).unwrap_or(0) as usize;
    offset + ENTRY_HEAD_LEN + 1 + len
}

/// Frames `body` (kind byte included) as an entry: its head.
pub(super) fn entry_head(body: &[u8]) -> [u8; ENTRY_HEAD_LEN] {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut head = [0u8; ENTRY_HEAD_LEN];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend_from_slice(payload);
        let mut out = entry_head(&body).to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn done(sequence: u64) -> Vec<u8> {
        let body = DoneBody {
            host: "h".into(),
            instance: 1,
            sequence,
        };
        framed(KIND_DONE, &options().serialize(&body).expect("encode"))
    }

    fn segment(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = encode_header(0, 1).to_vec();
        for e in entries {
            bytes.extend_from_slice(e);
        }
        bytes
    }

    fn sequences(parsed: &Parsed) -> Vec<u64> {
        parsed
            .entries
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Done(d) => Some(d.sequence),
                Entry::Intent { body, .. } => Some(body.sequence),
                Entry::Record { .. } => None,
            })
            .collect()
    }

    /// A completeness whose every field differs from the others.
    fn a_completeness() -> Completeness {
        Completeness {
            closes_seen: 11,
            records_emitted: 12,
            lost_ring_full: 13,
            lost_recursion: 14,
            lost_journal: 15,
            lost_spool: 16,
            interim_records: 17,
            records_replayed: 18,
            running_whole_window: true,
        }
    }

    fn intent_body(sequence: u64, completeness: Option<Completeness>) -> IntentBody {
        IntentBody {
            host: "host-a".into(),
            instance: 7,
            sequence,
            window_start_ms: 60_000,
            window_end_ms: 120_000,
            index: 2,
            last: completeness.is_some(),
            lsns: vec![lsn(1, 16), lsn(1, 80), lsn(2, 16)],
            completeness,
        }
    }

    /// An intent body (kind byte included) as a segment of `version` holds it: without
    /// completeness in the segments of older releases.
    fn intent_bytes(body: &IntentBody, version: u16) -> Vec<u8> {
        let mut bytes = vec![KIND_INTENT];
        bytes.extend(options().serialize(body).expect("encode"));
        if !intents_have_completeness(version) {
            assert!(body.completeness.is_none());
            assert_eq!(bytes.pop(), Some(0), "the None tag");
        }
        bytes
    }

    fn framed_intent(body: &IntentBody, version: u16) -> Vec<u8> {
        let bytes = intent_bytes(body, version);
        framed(bytes[0], &bytes[1..])
    }

    #[test]
    fn every_single_byte_flip_keeps_the_other_entries() {
        let dones: Vec<_> = (0..6).map(done).collect();
        every_flip_keeps_the_others(&dones, VERSION);
        for completeness in [None, Some(a_completeness())] {
            let intents: Vec<_> = (0..6)
                .map(|s| framed_intent(&intent_body(s, completeness), VERSION))
                .collect();
            every_flip_keeps_the_others(&intents, VERSION);
        }
        for version in [VERSION_ORDINALS, VERSION_OFFSETS] {
            let intents: Vec<_> = (0..6)
                .map(|s| framed_intent(&intent_body(s, None), version))
                .collect();
            every_flip_keeps_the_others(&intents, version);
        }
    }

    /// Flips each byte of a segment of `version` holding `entries` (framed, of one
    /// length, with sequences 0 to 5) in turn: every other entry is kept.
    fn every_flip_keeps_the_others(entries: &[Vec<u8>], version: u16) {
        let mut clean = header_of(version);
        for e in entries {
            clean.extend_from_slice(e);
        }
        let entry_len = entries[0].len();
        assert!(entries.iter().all(|e| e.len() == entry_len));
        assert_eq!(sequences(&parse(&clean)), (0..6).collect::<Vec<_>>());
        for i in 0..clean.len() {
            if (4..6).contains(&i) && version != VERSION {
                // The version bytes of an older release's segment: the current
                // version (any unknown one) reads its intents as too short.
                continue;
            }
            let mut bytes = clean.clone();
            bytes[i] ^= 0x55;
            let parsed = parse(&bytes);
            let got = sequences(&parsed);
            if i < HEADER_LEN {
                assert_eq!(got, (0..6).collect::<Vec<_>>(), "flip at {i}");
                continue;
            }
            let hit = ((i - HEADER_LEN) / entry_len) as u64;
            let want: Vec<u64> = (0..6).filter(|&s| s != hit).collect();
            assert_eq!(got, want, "flip at {i}");
            if hit == 5 {
                assert!(!parsed.damaged, "the last entry looks torn");
                assert_eq!(parsed.torn_tail, entry_len as u64);
            } else {
                assert!(parsed.damaged && parsed.bad_regions == 1, "flip at {i}");
                assert_eq!(parsed.bad_bytes, entry_len as u64);
            }
        }
    }

    #[test]
    fn an_entry_inside_another_is_not_taken_for_one() {
        // A done mark whose host field holds a complete framed done mark: after damage
        // in front of it, resynchronisation must not accept the inner one (it is not
        // followed by a well-formed entry).
        let inner = done(99);
        let mut payload = options()
            .serialize(&DoneBody {
                host: String::new(),
                instance: 1,
                sequence: 7,
            })
            .expect("encode");
        // A Vec<u8>-shaped host: length prefix then the inner entry verbatim.
        let mut host_bytes = (inner.len() as u64).to_le_bytes().to_vec();
        host_bytes.extend_from_slice(&inner);
        payload.splice(0..8, host_bytes);
        let outer = framed(KIND_DONE, &payload);
        let mut bytes = segment(&[done(0)]);
        bytes[HEADER_LEN + 2] ^= 0xff; // damage the first entry
        bytes.extend_from_slice(&outer);
        bytes.extend_from_slice(&done(1));
        let parsed = parse(&bytes);
        assert!(!sequences(&parsed).contains(&99), "no false entry");
    }

    #[test]
    fn garbage_is_read_quickly_and_yields_nothing() {
        // Pseudo-random bytes: positions that look like the start of a long intent
        // are refused by their shape before any checksum over megabytes.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut bytes = encode_header(0, 1).to_vec();
        bytes.extend((0..(8 << 20)).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        let started = std::time::Instant::now();
        let parsed = parse(&bytes);
        assert!(parsed.entries.is_empty());
        assert_eq!(parsed.torn_tail, (bytes.len() - HEADER_LEN) as u64);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn a_plausible_entry_at_every_fourth_byte_is_read_quickly() {
        // `01 FF 00 00` repeated: at every 4th offset a record entry of 65,281 bytes
        // (the kind byte is the next length's first byte) with a wrong checksum. Each
        // position would cost a checksum over 64 KiB: 16,000 times the segment's size.
        let mut bytes = encode_header(0, 1).to_vec();
        let mut crafted: Vec<u8> = [0x01, 0xFF, 0x00, 0x00].repeat(4 << 20);
        crafted.extend_from_slice(&done(7));
        bytes.extend_from_slice(&done(1));
        bytes.extend_from_slice(&crafted);
        let started = std::time::Instant::now();
        let parsed = parse(&bytes);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(sequences(&parsed), vec![1], "what came before is kept");
        assert!(parsed.damaged && parsed.bad_regions == 1);
        assert_eq!(parsed.bad_bytes, crafted.len() as u64);
        assert_eq!(parsed.torn_tail, 0);
    }

    #[test]
    fn the_budget_does_not_cut_a_long_intact_segment_short() {
        let entries: Vec<_> = (0..200_000).map(done).collect();
        let parsed = parse(&segment(&entries));
        assert_eq!(parsed.entries.len(), 200_000);
        assert!(!parsed.damaged);
    }

    #[test]
    fn real_intents_and_done_marks_have_their_length() {
        let all = [VERSION_ORDINALS, VERSION_OFFSETS, VERSION];
        for completeness in [None, Some(a_completeness())] {
            let mut body = intent_bytes(&intent_body(3, completeness), VERSION);
            assert!(has_its_length(&body, VERSION));
            // Not in the segments of older releases: their intents end earlier.
            assert!(!has_its_length(&body, VERSION_ORDINALS));
            assert!(!has_its_length(&body, VERSION_OFFSETS));
            // A version unknown (a damaged header) is read as the current one.
            assert!(has_its_length(&body, 0xffff));
            body.push(0);
            assert!(!all.iter().any(|&v| has_its_length(&body, v)));
            body.truncate(body.len() - 2);
            assert!(!has_its_length(&body, VERSION), "one byte short");
            // Without its `None` tag, an intent is an older release's one.
            let legacy = completeness.is_none();
            assert_eq!(has_its_length(&body, VERSION_OFFSETS), legacy);
        }
        // An option tag other than 0 or 1 is no intent, whatever follows it.
        let mut body = intent_bytes(&intent_body(3, None), VERSION);
        *body.last_mut().expect("tag") = 2;
        assert!(!has_its_length(&body, VERSION));
        body.extend([0; COMPLETENESS_LEN]);
        assert!(!has_its_length(&body, VERSION));
        // The intents of older releases: their positions end them.
        for version in [VERSION_ORDINALS, VERSION_OFFSETS] {
            let mut body = intent_bytes(&intent_body(3, None), version);
            assert!(has_its_length(&body, version));
            assert!(!has_its_length(&body, VERSION), "one byte short");
            body.push(0);
            assert!(!has_its_length(&body, version));
            assert!(has_its_length(&body, VERSION), "as a current one with None");
        }
        let mut body = vec![KIND_DONE];
        body.extend(
            options()
                .serialize(&DoneBody {
                    host: "h".into(),
                    instance: 1,
                    sequence: 2,
                })
                .expect("encode"),
        );
        for version in all {
            assert!(has_its_length(&body, version));
        }
        body.pop();
        assert!(!all.iter().any(|&v| has_its_length(&body, v)));
    }

    #[test]
    fn a_stored_completeness_is_65_bytes_and_keeps_every_field() {
        let c = a_completeness();
        let stored = options()
            .serialize(&StoredCompleteness::from(c))
            .expect("encode");
        assert_eq!(stored.len(), COMPLETENESS_LEN);
        let back: StoredCompleteness = options().deserialize(&stored).expect("decode");
        assert_eq!(Completeness::from(back), c);
        // A bool that is neither 0 nor 1 is no completeness.
        let mut bad = stored;
        bad[COMPLETENESS_LEN - 1] = 2;
        assert!(options().deserialize::<StoredCompleteness>(&bad).is_err());
    }

    #[test]
    fn intents_come_back_with_their_completeness_in_current_segments_only() {
        let intents = |parsed: &Parsed| -> Vec<(Option<Completeness>, usize)> {
            parsed
                .entries
                .iter()
                .filter_map(|(_, e)| match e {
                    Entry::Intent { body, stored_len } => Some((body.completeness, *stored_len)),
                    _ => None,
                })
                .collect()
        };
        let with = intent_body(1, Some(a_completeness()));
        let without = intent_body(2, None);
        let mut bytes = header_of(VERSION);
        bytes.extend(framed_intent(&with, VERSION));
        bytes.extend(done(5));
        bytes.extend(framed_intent(&without, VERSION));
        let parsed = parse(&bytes);
        assert!(!parsed.damaged && parsed.torn_tail == 0);
        let found = intents(&parsed);
        let (with_len, without_len) = (
            intent_bytes(&with, VERSION).len(),
            intent_bytes(&without, VERSION).len(),
        );
        assert_eq!(with_len, without_len + COMPLETENESS_LEN);
        assert_eq!(
            found,
            vec![(Some(a_completeness()), with_len), (None, without_len)]
        );
        let mut content = OldContent::default();
        content.add(3, parsed);
        let (segment, body) = &content.intents[0];
        assert_eq!(*segment, 3);
        assert_eq!(body.lsns, with.lsns);
        assert_eq!(
            (
                body.window_start_ms,
                body.window_end_ms,
                body.index,
                body.last
            ),
            (60_000, 120_000, 2, true)
        );

        // A segment of an older release: the same intent, without completeness, is
        // read; one with a completeness is not (its length is wrong there).
        for version in [VERSION_ORDINALS, VERSION_OFFSETS] {
            let mut bytes = header_of(version);
            bytes.extend(framed_intent(&without, version));
            let parsed = parse(&bytes);
            assert!(
                !parsed.damaged && parsed.torn_tail == 0,
                "version {version}"
            );
            assert_eq!(intents(&parsed), vec![(None, without_len - 1)]);
            let mut bytes = header_of(version);
            bytes.extend(framed_intent(&with, VERSION));
            let parsed = parse(&bytes);
            assert!(intents(&parsed).is_empty(), "version {version}");
        }
    }

    #[test]
    fn records_after_an_older_release_s_intent_keep_their_positions() {
        // An older release's intent is one byte shorter than the same intent encoded
        // now: the records after it must not be taken for records after damage (in a
        // version 1 segment, their ordinals would be lost).
        let record = flow_testkit::record().bytes(10, 20).build();
        let mut current = Vec::new();
        encode_record(&record, &mut current).expect("encode");
        let v1 = current[..current.len() - 6].to_vec();
        for version in [VERSION_ORDINALS, VERSION_OFFSETS] {
            let mut bytes = header_of(version);
            bytes.extend_from_slice(&framed(KIND_RECORD, &v1));
            bytes.extend(framed_intent(&intent_body(1, None), version));
            let third = bytes.len();
            bytes.extend_from_slice(&framed(KIND_RECORD, &v1));
            bytes.extend(done(1));
            let fourth = bytes.len();
            bytes.extend_from_slice(&framed(KIND_RECORD, &v1));
            let parsed = parse(&bytes);
            assert!(!parsed.damaged, "version {version}");
            let mut content = OldContent::default();
            content.add(7, parsed);
            let positions: Vec<u32> = content.records.keys().map(|at| *at as u32).collect();
            let expected = if version == VERSION_ORDINALS {
                vec![0, 1, 2]
            } else {
                vec![HEADER_LEN as u32, third as u32, fourth as u32]
            };
            assert_eq!(positions, expected, "version {version}");
            assert_eq!(content.intents.len(), 1);
            assert_eq!(content.done.len(), 1);
        }
    }

    /// A segment header of `version`, without flags.
    fn header_of(version: u16) -> Vec<u8> {
        let mut header = encode_header(0, 1).to_vec();
        header[4..6].copy_from_slice(&version.to_le_bytes());
        header
    }

    #[test]
    fn records_of_older_releases_come_back_in_the_current_encoding() {
        let record = flow_testkit::record().bytes(10, 20).build();
        let mut current = Vec::new();
        encode_record(&record, &mut current).expect("encode");
        // Wire format 1: the same bytes without record kind, flow ID and process.
        assert_eq!(current[current.len() - 6..], [0; 6]);
        let v1 = current[..current.len() - 6].to_vec();
        let records = |parsed: &Parsed| -> Vec<(FlowRecord, Vec<u8>, usize)> {
            parsed
                .entries
                .iter()
                .filter_map(|(_, e)| match e {
                    Entry::Record {
                        record,
                        bytes,
                        stored_len,
                    } => Some((record.clone(), bytes.clone(), *stored_len)),
                    _ => None,
                })
                .collect()
        };
        for version in [VERSION_ORDINALS, VERSION_OFFSETS] {
            let mut bytes = header_of(version);
            bytes.extend_from_slice(&framed(KIND_RECORD, &v1));
            bytes.extend_from_slice(&done(3));
            bytes.extend_from_slice(&framed(KIND_RECORD, &v1));
            let parsed = parse(&bytes);
            assert!(
                parsed.header.is_some() && !parsed.damaged,
                "version {version}"
            );
            assert_eq!(parsed.ordinals, version == VERSION_ORDINALS);
            let found = records(&parsed);
            assert_eq!(found.len(), 2, "version {version}");
            for (r, encoded, stored_len) in found {
                assert_eq!(r, record);
                assert_eq!(encoded, current, "handed on in the current encoding");
                assert_eq!(stored_len, 1 + v1.len(), "its length in the segment");
            }
            // Positions follow the stored lengths: no entry is taken for lost.
            let mut content = OldContent::default();
            content.add(7, parsed);
            let positions: Vec<u32> = content.records.keys().map(|at| *at as u32).collect();
            let second = HEADER_LEN + ENTRY_HEAD_LEN + 1 + v1.len() + done(3).len();
            let expected = if version == VERSION_ORDINALS {
                vec![0, 1]
            } else {
                vec![HEADER_LEN as u32, second as u32]
            };
            assert_eq!(positions, expected, "version {version}");
        }
        // In a current segment, a record in the old encoding is no record; one in the
        // current encoding is.
        let mut bytes = header_of(VERSION);
        bytes.extend_from_slice(&framed(KIND_RECORD, &v1));
        assert!(records(&parse(&bytes)).is_empty());
        let mut bytes = header_of(VERSION);
        bytes.extend_from_slice(&framed(KIND_RECORD, &current));
        let found = records(&parse(&bytes));
        assert_eq!(found, vec![(record, current.clone(), 1 + current.len())]);
    }

    #[test]
    fn a_short_file_is_a_torn_header() {
        let parsed = parse(&MAGIC);
        assert!(!parsed.damaged);
        assert_eq!(parsed.torn_tail, 4);
    }
}

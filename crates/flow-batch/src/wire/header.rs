//! The header layout: constants, field offsets, and writing it.

use super::ChunkHeader;
use crate::completeness::Completeness;

/// The first four bytes of every frame: `FXCB` (flowexporter chunk batch).
pub const MAGIC: [u8; 4] = *b"FXCB";
/// The format version this crate writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this crate reads: version 1 frames (no record kind, flow
/// ID, process or completeness) decode into records that are final and carry none of
/// them.
pub const MIN_FORMAT_VERSION: u16 = 1;
/// Bytes of the header before the host identity.
pub const FIXED_HEADER_LEN: usize = 70;
/// Bytes of the header checksum that follows the host identity (and the completeness
/// block, when there is one).
pub const HEADER_CRC_LEN: usize = 4;
/// Longest host identity, in bytes.
pub const MAX_HOST_LEN: usize = 1024;
/// Bit of the `flags` byte set on a window's final chunk.
pub const FLAG_LAST: u8 = 0x01;
/// Bit of the `flags` byte set when the header carries the window's
/// [`Completeness`] (version 2 on; only with [`FLAG_LAST`]). Reserved in version 1.
pub const FLAG_COMPLETENESS: u8 = 0x02;
/// Bytes of the completeness block that follows the host identity when
/// [`FLAG_COMPLETENESS`] is set: eight `u64` counters and a flags byte.
pub const COMPLETENESS_LEN: usize = 65;
/// Bit of the completeness block's flags byte: the exporter captured for the whole
/// window ([`Completeness::running_whole_window`]). Other bits are reserved and zero.
pub const COMPLETENESS_FLAG_WHOLE_WINDOW: u8 = 0x01;
/// The longest header, its checksum included: the longest host identity and a
/// completeness block.
pub const MAX_HEADER_LEN: usize =
    FIXED_HEADER_LEN + MAX_HOST_LEN + COMPLETENESS_LEN + HEADER_CRC_LEN;

/// Field offsets, from the start of the frame. Every integer is little-endian.
pub(crate) mod offset {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const CODEC: usize = 6;
    pub const FLAGS: usize = 7;
    pub const INSTANCE: usize = 8;
    pub const SEQUENCE: usize = 24;
    pub const WINDOW_START: usize = 32;
    pub const WINDOW_END: usize = 40;
    pub const CHUNK_INDEX: usize = 48;
    pub const RECORD_COUNT: usize = 52;
    pub const RAW_LEN: usize = 56;
    pub const PAYLOAD_LEN: usize = 60;
    pub const PAYLOAD_CRC: usize = 64;
    pub const HOST_LEN: usize = 68;
    pub const HOST: usize = 70;
}

/// Offsets in the completeness block, from its start (`70 + N`).
pub(crate) mod completeness_offset {
    pub const CLOSES_SEEN: usize = 0;
    pub const RECORDS_EMITTED: usize = 8;
    pub const LOST_RING_FULL: usize = 16;
    pub const LOST_RECURSION: usize = 24;
    pub const LOST_JOURNAL: usize = 32;
    pub const LOST_SPOOL: usize = 40;
    pub const INTERIM_RECORDS: usize = 48;
    pub const RECORDS_REPLAYED: usize = 56;
    pub const FLAGS: usize = 64;
}

/// The completeness block of `c`.
pub(crate) fn completeness_block(c: &Completeness) -> [u8; COMPLETENESS_LEN] {
    use completeness_offset as at;
    let mut block = [0u8; COMPLETENESS_LEN];
    for (offset, value) in [
        (at::CLOSES_SEEN, c.closes_seen),
        (at::RECORDS_EMITTED, c.records_emitted),
        (at::LOST_RING_FULL, c.lost_ring_full),
        (at::LOST_RECURSION, c.lost_recursion),
        (at::LOST_JOURNAL, c.lost_journal),
        (at::LOST_SPOOL, c.lost_spool),
        (at::INTERIM_RECORDS, c.interim_records),
        (at::RECORDS_REPLAYED, c.records_replayed),
    ] {
        block[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }
    if c.running_whole_window {
        block[at::FLAGS] = COMPLETENESS_FLAG_WHOLE_WINDOW;
    }
    block
}

/// The completeness a block holds, or the offset (in the block) and reason of what is
/// wrong with it.
pub(crate) fn read_completeness(
    block: &[u8; COMPLETENESS_LEN],
) -> Result<Completeness, (usize, &'static str)> {
    use completeness_offset as at;
    let u64_at = |offset: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&block[offset..offset + 8]);
        u64::from_le_bytes(a)
    };
    let flags = block[at::FLAGS];
    if flags & !COMPLETENESS_FLAG_WHOLE_WINDOW != 0 {
        return Err((at::FLAGS, "reserved bits are set"));
    }
    Ok(Completeness {
        closes_seen: u64_at(at::CLOSES_SEEN),
        records_emitted: u64_at(at::RECORDS_EMITTED),
        lost_ring_full: u64_at(at::LOST_RING_FULL),
        lost_recursion: u64_at(at::LOST_RECURSION),
        lost_journal: u64_at(at::LOST_JOURNAL),
        lost_spool: u64_at(at::LOST_SPOOL),
        interim_records: u64_at(at::INTERIM_RECORDS),
        records_replayed: u64_at(at::RECORDS_REPLAYED),
        running_whole_window: flags & COMPLETENESS_FLAG_WHOLE_WINDOW != 0,
    })
}

/// Writes `h` into `buf`, which is exactly `h.header_len()` bytes, checksum included.
pub(crate) fn write_header(buf: &mut [u8], h: &ChunkHeader) {
    let mut put = |at: usize, bytes: &[u8]| buf[at..at + bytes.len()].copy_from_slice(bytes);
    let mut flags = 0;
    if h.last {
        flags |= FLAG_LAST;
    }
    if h.completeness.is_some() {
        flags |= FLAG_COMPLETENESS;
    }
    put(offset::MAGIC, &MAGIC);
    put(offset::VERSION, &h.version.to_le_bytes());
    put(offset::CODEC, &[h.codec.as_u8()]);
    put(offset::FLAGS, &[flags]);
    put(offset::INSTANCE, &h.instance.as_u128().to_le_bytes());
    put(offset::SEQUENCE, &h.sequence.to_le_bytes());
    put(offset::WINDOW_START, &h.window.start_ms().to_le_bytes());
    put(offset::WINDOW_END, &h.window.end_ms().to_le_bytes());
    put(offset::CHUNK_INDEX, &h.chunk_index.to_le_bytes());
    put(offset::RECORD_COUNT, &h.record_count.to_le_bytes());
    put(offset::RAW_LEN, &h.raw_len.to_le_bytes());
    put(offset::PAYLOAD_LEN, &h.payload_len.to_le_bytes());
    put(offset::PAYLOAD_CRC, &h.payload_crc32c.to_le_bytes());
    // The encoder checked the host against MAX_HOST_LEN, so it fits a u16.
    put(offset::HOST_LEN, &(h.host.len() as u16).to_le_bytes());
    put(offset::HOST, h.host.as_bytes());
    let mut crc_at = offset::HOST + h.host.len();
    if let Some(c) = &h.completeness {
        put(crc_at, &completeness_block(c));
        crc_at += COMPLETENESS_LEN;
    }
    let crc = crc32c::crc32c(&buf[..crc_at]);
    buf[crc_at..crc_at + HEADER_CRC_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Reads little-endian integers from the fixed part of a header.
pub(crate) struct Fixed<'a>(pub &'a [u8; FIXED_HEADER_LEN]);

impl Fixed<'_> {
    pub fn u8(&self, at: usize) -> u8 {
        self.0[at]
    }

    pub fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.array(at))
    }

    pub fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.array(at))
    }

    pub fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.array(at))
    }

    pub fn u128(&self, at: usize) -> u128 {
        u128::from_le_bytes(self.array(at))
    }

    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a = [0; N];
        a.copy_from_slice(&self.0[at..at + N]);
        a
    }
}

//! The header layout: constants, field offsets, and writing it.

use super::ChunkHeader;

/// The first four bytes of every frame: `FXCB` (flowexporter chunk batch).
pub const MAGIC: [u8; 4] = *b"FXCB";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the header before the host identity.
pub const FIXED_HEADER_LEN: usize = 70;
/// Bytes of the header checksum that follows the host identity.
pub const HEADER_CRC_LEN: usize = 4;
/// Longest host identity, in bytes.
pub const MAX_HOST_LEN: usize = 1024;
/// Bit of the `flags` byte set on a window's final chunk. Other bits are reserved and
/// zero in version 1.
pub const FLAG_LAST: u8 = 0x01;

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

/// Writes `h` into `buf`, which is exactly `h.header_len()` bytes, checksum included.
pub(crate) fn write_header(buf: &mut [u8], h: &ChunkHeader) {
    let mut put = |at: usize, bytes: &[u8]| buf[at..at + bytes.len()].copy_from_slice(bytes);
    put(offset::MAGIC, &MAGIC);
    put(offset::VERSION, &h.version.to_le_bytes());
    put(offset::CODEC, &[h.codec.as_u8()]);
    put(offset::FLAGS, &[if h.last { FLAG_LAST } else { 0 }]);
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
    let crc_at = offset::HOST + h.host.len();
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

//! A frame ready to send, with what the logs and counters need.

use bytes::Bytes;
use flow_batch::{
    Chunk,
    wire::{BatchId, ChunkEncoder, DecodeLimits, decode_header},
};

use crate::error::SinkError;

/// An encoded chunk frame, its batch ID and record count (from its header).
#[derive(Clone, Debug)]
pub(super) struct Frame {
    /// The frame's bytes, exactly as sent.
    pub(super) bytes: Bytes,
    /// Its batch ID.
    pub(super) batch_id: BatchId,
    /// Records in it.
    pub(super) records: u32,
}

impl Frame {
    /// Reads the header of `bytes`: refused if it is not a frame.
    pub(super) fn new(bytes: Vec<u8>) -> Result<Frame, SinkError> {
        let header = decode_header(&bytes, &DecodeLimits::default())
            .map_err(|source| SinkError::InvalidFrame { source })?;
        Ok(Frame {
            batch_id: header.batch_id(),
            records: header.record_count,
            bytes: Bytes::from(bytes),
        })
    }
}

/// `chunk`'s frame under the host and instance of `id`.
pub(super) fn encode_as(chunk: &Chunk, id: &BatchId) -> Result<Vec<u8>, SinkError> {
    let encode = |source| SinkError::Encode {
        sequence: chunk.sequence,
        source,
    };
    if chunk.sequence != id.sequence {
        return Err(SinkError::InvalidConfig {
            key: "batch_id",
            value: format!("{id} for chunk {}", chunk.sequence),
            reason: "the batch ID's sequence must be the chunk's",
        });
    }
    ChunkEncoder::new(id.host.clone(), id.instance)
        .map_err(encode)?
        .encode_to_vec(chunk)
        .map_err(encode)
}

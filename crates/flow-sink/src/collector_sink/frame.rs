//! A frame ready to send, with what the logs and counters need.

use std::sync::Mutex;

use bytes::Bytes;
use flow_batch::{
    Chunk,
    wire::{BatchId, ChunkEncoder, DecodeLimits, decode_header},
};

use crate::error::SinkError;

/// An encoded chunk frame, its batch ID and record count (from its header).
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    /// The frame's bytes, exactly as sent.
    pub(crate) bytes: Bytes,
    /// Its batch ID.
    pub(crate) batch_id: BatchId,
    /// Records in it.
    pub(crate) records: u32,
}

impl Frame {
    /// Reads the header of `bytes`: refused if it is not a frame.
    pub(crate) fn new(bytes: Vec<u8>) -> Result<Frame, SinkError> {
        let header = decode_header(&bytes, &DecodeLimits::default())
            .map_err(|source| SinkError::InvalidFrame { source })?;
        Ok(Frame {
            batch_id: header.batch_id(),
            records: header.record_count,
            bytes: Bytes::from(bytes),
        })
    }
}

/// `chunk`'s frame under the host and instance of `id` (the sink's own without one):
/// with the sink's encoder (and its compression context) when they are the same, as
/// they are for every chunk of the run the sink was configured for; with an encoder
/// of their own otherwise (a chunk recovered from a previous run).
pub(crate) fn encode_as(
    encoder: &Mutex<ChunkEncoder>,
    chunk: &Chunk,
    id: Option<&BatchId>,
) -> Result<Vec<u8>, SinkError> {
    let encode = |source| SinkError::Encode {
        sequence: chunk.sequence,
        source,
    };
    let mut ours = encoder.lock().unwrap_or_else(|p| p.into_inner());
    let Some(id) = id else {
        return ours.encode_to_vec(chunk).map_err(encode);
    };
    if chunk.sequence != id.sequence {
        return Err(SinkError::InvalidConfig {
            key: "batch_id",
            value: format!("{id} for chunk {}", chunk.sequence),
            reason: "the batch ID's sequence must be the chunk's",
        });
    }
    if ours.host() == id.host && ours.instance() == id.instance {
        return ours.encode_to_vec(chunk).map_err(encode);
    }
    drop(ours);
    ChunkEncoder::new(id.host.clone(), id.instance)
        .map_err(encode)?
        .encode_to_vec(chunk)
        .map_err(encode)
}

//! What a journal recovered from a previous run.

use flow_batch::{
    Chunk,
    wire::{BatchId, InstanceId},
};
use flow_record::FlowRecord;

/// A chunk a previous run had handed to a sink without knowing whether it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveredChunk {
    /// The host identity it was encoded with.
    pub host: String,
    /// The exporter instance it was encoded with (the previous run's).
    pub instance: InstanceId,
    /// The chunk: same window, index, sequence, `last`, records and completeness as
    /// before (an older release's journal kept no completeness: `None` then).
    pub chunk: Chunk,
}

impl RecoveredChunk {
    /// Its batch ID: the one it had before the crash.
    pub fn batch_id(&self) -> BatchId {
        BatchId {
            host: self.host.clone(),
            instance: self.instance,
            sequence: self.chunk.sequence,
        }
    }
}

/// What [`RecordJournal::open`](super::RecordJournal::open) found from a previous run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// Chunks to deliver again under their original batch ID, oldest first; call
    /// [`RecordJournal::end_chunk`](super::RecordJournal::end_chunk) with each one's [`batch_id`](RecoveredChunk::batch_id)
    /// once delivered or spooled.
    pub chunks: Vec<RecoveredChunk>,
    /// Records that were in no chunk, in capture order, to push into the batcher
    /// again. They are already re-journaled: do not append them a second time.
    pub records: Vec<FlowRecord>,
}

impl Recovered {
    /// Whether nothing was recovered.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.records.is_empty()
    }
}

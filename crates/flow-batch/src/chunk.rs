//! The batcher's output: a numbered slice of one window's records.

use flow_record::FlowRecord;

use crate::{completeness::Completeness, window::Window};

/// Records of one window, ready to encode and send.
///
/// A window that received records yields chunks with `index` 0, 1, 2, ... and exactly
/// one of them has `last` set: the one emitted when the window closed. That last chunk
/// is empty only when the window's records all left in earlier, limit-triggered
/// chunks.
///
/// Records keep their own `t_end`. A record whose `t_end` lies before `window` arrived
/// after its own window had closed (late); one whose `t_end` lies after it carried a
/// clock too far ahead (future). Both are counted in
/// [`BatchCounters`](crate::BatchCounters).
///
/// Two chunks are equal when their window, position, sequence, `last` flag and records
/// are: the [`tags`](Chunk::tags) are the caller's and not part of the wire format, so a
/// tagged chunk equals its own decoded frame.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Chunk {
    /// The window the chunk belongs to.
    pub window: Window,
    /// Position of the chunk within its window, from 0.
    pub index: u32,
    /// Position of the chunk among all chunks of this batcher, from 0, with no gaps.
    /// With the host and exporter instance it identifies the chunk (its batch ID).
    pub sequence: u64,
    /// Whether this is the window's final chunk.
    pub last: bool,
    /// The records, in the order they were pushed.
    pub records: Vec<FlowRecord>,
    /// How complete the window's records are; set by the exporter on a window's last
    /// chunk (the batcher leaves it `None`), carried from wire format 2 on.
    pub completeness: Option<Completeness>,
    /// The tags given with the records ([`MinuteBatcher::push_tagged`](crate::MinuteBatcher::push_tagged)):
    /// `tags[i]` is `records[i]`'s, [`NO_TAG`] for a record pushed without one. Empty
    /// when no record of the chunk was tagged. Not part of the wire format.
    pub tags: Vec<u64>,
}

impl PartialEq for Chunk {
    fn eq(&self, other: &Chunk) -> bool {
        self.window == other.window
            && self.index == other.index
            && self.sequence == other.sequence
            && self.last == other.last
            && self.records == other.records
            && self.completeness == other.completeness
    }
}

impl Eq for Chunk {}

/// The tag of a record pushed without one (see [`Chunk::tags`]).
pub const NO_TAG: u64 = u64::MAX;

impl Chunk {
    /// A chunk built by hand (for tests, replays or custom batching).
    pub fn new(
        window: Window,
        index: u32,
        sequence: u64,
        last: bool,
        records: Vec<FlowRecord>,
    ) -> Chunk {
        Chunk {
            window,
            index,
            sequence,
            last,
            records,
            completeness: None,
            tags: Vec::new(),
        }
    }
}

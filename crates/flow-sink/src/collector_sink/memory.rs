//! Frames the spool could not take (its disk full or failing), kept in memory until
//! the sender has them delivered: a bounded FIFO, oldest dropped first.

use std::collections::VecDeque;

use super::frame::Frame;

/// Identifies a frame in the [`MemoryQueue`] (the sender checks that the frame it is
/// retrying was not dropped meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemoryId(u64);

/// A bounded FIFO of frames.
#[derive(Debug)]
pub(crate) struct MemoryQueue {
    frames: VecDeque<(MemoryId, Frame)>,
    bytes: u64,
    max_bytes: u64,
    max_frames: usize,
    next: u64,
}

/// What [`MemoryQueue::push`] did.
#[derive(Debug)]
pub(crate) enum Pushed {
    /// Kept; the frames dropped (oldest first) to make room for it.
    Kept(Vec<Frame>),
    /// Larger than the whole queue: not kept, nothing dropped.
    TooLarge(Frame),
}

impl MemoryQueue {
    /// An empty queue holding at most `max_bytes` of frames and `max_frames` frames
    /// (each at least 1).
    pub(crate) fn new(max_bytes: u64, max_frames: usize) -> MemoryQueue {
        MemoryQueue {
            frames: VecDeque::new(),
            bytes: 0,
            max_bytes: max_bytes.max(1),
            max_frames: max_frames.max(1),
            next: 0,
        }
    }

    /// Whether a frame of `len` bytes fits without dropping anything.
    pub(crate) fn has_room_for(&self, len: u64) -> bool {
        self.frames.len() < self.max_frames && self.bytes + len <= self.max_bytes
    }

    /// Appends `frame`, dropping the oldest frames while it would not fit.
    pub(crate) fn push(&mut self, frame: Frame) -> Pushed {
        let len = frame.bytes.len() as u64;
        if len > self.max_bytes {
            return Pushed::TooLarge(frame);
        }
        let mut dropped = Vec::new();
        while self.frames.len() >= self.max_frames || self.bytes + len > self.max_bytes {
            match self.pop() {
                Some(old) => dropped.push(old),
                None => break,
            }
        }
        let id = MemoryId(self.next);
        self.next += 1;
        self.bytes += len;
        self.frames.push_back((id, frame));
        Pushed::Kept(dropped)
    }

    /// The oldest frame, left in the queue.
    pub(crate) fn front(&self) -> Option<(MemoryId, Frame)> {
        self.frames.front().cloned()
    }

    /// Whether `id` is still queued.
    pub(crate) fn contains(&self, id: MemoryId) -> bool {
        self.frames.iter().any(|(i, _)| *i == id)
    }

    /// Removes `id` if it is still queued.
    pub(crate) fn remove(&mut self, id: MemoryId) -> Option<Frame> {
        let at = self.frames.iter().position(|(i, _)| *i == id)?;
        let (_, frame) = self.frames.remove(at)?;
        self.bytes -= frame.bytes.len() as u64;
        Some(frame)
    }

    /// Removes the oldest frame.
    pub(crate) fn pop(&mut self) -> Option<Frame> {
        let (_, frame) = self.frames.pop_front()?;
        self.bytes -= frame.bytes.len() as u64;
        Some(frame)
    }

    /// Frames queued.
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    /// Bytes queued.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(n: usize) -> Frame {
        Frame {
            bytes: Bytes::from(vec![0; n]),
            batch_id: flow_batch::wire::BatchId {
                host: "h".into(),
                instance: flow_batch::wire::InstanceId::new(1),
                sequence: n as u64,
            },
            records: 1,
        }
    }

    #[test]
    fn drops_the_oldest_to_stay_within_its_bounds() {
        let mut q = MemoryQueue::new(100, 3);
        for n in [10, 20, 30] {
            assert!(matches!(q.push(frame(n)), Pushed::Kept(d) if d.is_empty()));
        }
        // The frame count bound.
        let Pushed::Kept(d) = q.push(frame(5)) else {
            panic!("kept")
        };
        assert_eq!(d.iter().map(|f| f.bytes.len()).collect::<Vec<_>>(), [10]);
        // The count drops 20; then the bytes, 30 + 5 + 70 > 100, drop 30.
        let Pushed::Kept(d) = q.push(frame(70)) else {
            panic!("kept")
        };
        assert_eq!(
            d.iter().map(|f| f.bytes.len()).collect::<Vec<_>>(),
            [20, 30]
        );
        assert_eq!((q.len(), q.bytes()), (2, 75));
        assert!(matches!(q.push(frame(101)), Pushed::TooLarge(_)));
        let (id, f) = q.front().expect("front");
        assert_eq!(f.bytes.len(), 5);
        assert!(q.contains(id));
        assert!(q.remove(id).is_some());
        assert!(!q.contains(id));
        assert_eq!((q.len(), q.bytes()), (1, 70));
    }
}

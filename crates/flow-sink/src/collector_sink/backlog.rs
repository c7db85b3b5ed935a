//! Where frames wait to be sent: the spool, and the memory queue for frames the spool
//! could not take. Owned by the send task; every spool operation runs on the blocking
//! pool.

use std::sync::Arc;

use bytes::Bytes;
use flow_batch::wire::{DecodeLimits, decode_header};

use super::{
    counters::{Gauges, bump},
    frame::Frame,
    memory::{self, MemoryId, MemoryQueue},
    shared::Shared,
};
use crate::{
    error::SinkError,
    sink::Accepted,
    spool::{Spool, SpoolId},
};

/// Where the frame being sent lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// In the spool.
    Spool(SpoolId),
    /// In the memory queue.
    Memory(MemoryId),
}

/// The spool and the memory queue.
pub(crate) struct Backlog {
    /// Always `Some` but while an operation has it on the blocking pool.
    spool: Option<Spool>,
    memory: MemoryQueue,
    /// Whether the last spool write failed (to log the changes, not every failure).
    spool_failing: bool,
    shared: Arc<Shared>,
}

impl Backlog {
    /// Frames wait in `spool`, or in a memory queue of at most `memory_max_bytes` and
    /// `memory_max_chunks` when it cannot take them.
    pub(crate) fn new(
        spool: Spool,
        memory_max_bytes: u64,
        memory_max_chunks: usize,
        shared: Arc<Shared>,
    ) -> Backlog {
        Backlog {
            spool: Some(spool),
            memory: MemoryQueue::new(memory_max_bytes, memory_max_chunks),
            spool_failing: false,
            shared,
        }
    }

    fn spool(&self) -> &Spool {
        self.spool
            .as_ref()
            .expect("the spool is put back after every operation")
    }

    /// Runs `f` on the spool, on the blocking pool.
    async fn on_spool<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> T {
        let mut spool = self
            .spool
            .take()
            .expect("the spool is put back after every operation");
        let done = tokio::task::spawn_blocking(move || {
            let out = f(&mut spool);
            (spool, out)
        })
        .await;
        match done {
            Ok((spool, out)) => {
                self.spool = Some(spool);
                out
            }
            // The spool is gone with the panic: so is this task.
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("spool I/O was cancelled: {error}"),
            },
        }
    }

    /// What waits now.
    pub(crate) fn gauges(&self) -> Gauges {
        let spool = self.spool();
        Gauges {
            spooled: spool.len(),
            memory_chunks: self.memory.len(),
            memory_bytes: self.memory.bytes(),
            spool: Some(spool.counters()),
        }
    }

    /// Takes a frame: into the spool or, if the spool cannot take it (an I/O error),
    /// into memory. Once the spool takes a frame again, the frames kept in memory move
    /// to it; returns where each went, so that the sender can follow the one it sends.
    pub(crate) async fn accept(
        &mut self,
        frame: Frame,
    ) -> (Result<Accepted, SinkError>, Vec<(MemoryId, SpoolId)>) {
        let bytes = frame.bytes.clone();
        // On a full disk, the memory queue takes the frame while it has room; only
        // then are the oldest spooled frames dropped to make room.
        let room = self.memory.has_room_for(bytes.len() as u64);
        let pushed = self
            .on_spool(move |spool| match room {
                true => spool.push_keeping_oldest(&bytes),
                false => spool.push(&bytes),
            })
            .await;
        match pushed {
            Ok(_) => {
                if std::mem::take(&mut self.spool_failing) {
                    tracing::info!(batch_id = %frame.batch_id, "the spool takes chunks again");
                }
                (Ok(Accepted::Spooled), self.respool_memory().await)
            }
            Err(error @ SinkError::Io { .. }) => (self.keep_in_memory(frame, error), Vec::new()),
            Err(error) => (Err(error), Vec::new()),
        }
    }

    /// The spool failed to take `frame` with `error`: keeps it in memory, dropping the
    /// oldest frames there if it does not fit.
    fn keep_in_memory(&mut self, frame: Frame, error: SinkError) -> Result<Accepted, SinkError> {
        let batch_id = frame.batch_id.clone();
        let records = frame.records;
        let dropped = match self.memory.push(frame) {
            memory::Pushed::Kept(dropped) => dropped,
            memory::Pushed::TooLarge(frame) => {
                tracing::error!(
                    batch_id = %frame.batch_id,
                    bytes = frame.bytes.len(),
                    error = %crate::error_chain(&error),
                    "the spool cannot take a chunk and it is larger than the memory queue"
                );
                return Err(error);
            }
        };
        let counters = &self.shared.counters;
        bump(&counters.chunks_unspooled, 1);
        bump(&counters.records_unspooled, u64::from(records));
        if std::mem::replace(&mut self.spool_failing, true) {
            tracing::debug!(%batch_id, error = %crate::error_chain(&error), "chunk kept in memory");
        } else {
            tracing::warn!(
                %batch_id,
                error = %crate::error_chain(&error),
                "the spool cannot take chunks; keeping them in memory until they are sent"
            );
        }
        for old in &dropped {
            self.note_dropped(old);
        }
        tracing::debug!(
            chunks = self.memory.len(),
            bytes = self.memory.bytes(),
            "chunks waiting in memory"
        );
        Ok(Accepted::InMemory)
    }

    /// Counts and logs `frame`, dropped from the full memory queue, notes its records
    /// for its window's completeness, and settles it.
    fn note_dropped(&self, frame: &Frame) {
        self.shared.settle(frame.batch_id.clone());
        // Read once already (`Frame::new`, with these limits): it is a frame.
        if let Ok(header) = decode_header(&frame.bytes, &DecodeLimits::default()) {
            self.shared.losses.dropped(&header);
        }
        let counters = &self.shared.counters;
        bump(&counters.chunks_dropped_memory, 1);
        bump(&counters.records_dropped_memory, u64::from(frame.records));
        bump(&counters.bytes_dropped_memory, frame.bytes.len() as u64);
        tracing::warn!(
            batch_id = %frame.batch_id,
            records = frame.records,
            why = "the memory queue is full",
            "dropped a chunk kept in memory (the spool could not take it)"
        );
    }

    /// The spool took a frame again: moves the frames kept in memory to it, oldest
    /// first, never dropping a spooled frame for them, so that a crash no longer loses
    /// them (each is settled once spooled). The first one the spool refuses stays at
    /// the front of the queue, and the rest with it.
    async fn respool_memory(&mut self) -> Vec<(MemoryId, SpoolId)> {
        let mut moved = Vec::new();
        // The frame leaves the queue only once the spool has it: it is never in neither.
        while let Some((memory_id, frame)) = self.memory.front() {
            let bytes = frame.bytes.clone();
            match self.push_keeping_oldest(bytes).await {
                Ok(spool_id) => {
                    self.memory.remove(memory_id);
                    bump(&self.shared.counters.chunks_respooled, 1);
                    self.shared.settle(frame.batch_id.clone());
                    moved.push((memory_id, spool_id));
                }
                Err(error) => {
                    tracing::debug!(
                        batch_id = %frame.batch_id,
                        error = %crate::error_chain(&error),
                        "moving a chunk kept in memory to the spool failed"
                    );
                    break;
                }
            }
        }
        if !moved.is_empty() {
            tracing::info!(
                chunks = moved.len(),
                "chunks kept in memory moved to the spool"
            );
        }
        moved
    }

    async fn push_keeping_oldest(&mut self, bytes: Bytes) -> Result<SpoolId, SinkError> {
        self.on_spool(move |spool| spool.push_keeping_oldest(&bytes))
            .await
    }

    /// The next frame to send: those kept in memory first (a crash would lose them,
    /// not the spooled ones), then the oldest spooled one. `spool_too`: whether the
    /// spool may be read now (not while its reads fail and back off).
    pub(crate) async fn next(
        &mut self,
        spool_too: bool,
    ) -> Result<Option<(Place, Frame)>, SinkError> {
        if let Some((id, frame)) = self.memory.front() {
            return Ok(Some((Place::Memory(id), frame)));
        }
        if !spool_too {
            return Ok(None);
        }
        let oldest = self.on_spool(Spool::oldest).await?;
        Ok(oldest.map(|chunk| {
            let frame = Frame {
                bytes: Bytes::from(chunk.frame),
                batch_id: chunk.batch_id,
                records: chunk.records,
            };
            (Place::Spool(chunk.id), frame)
        }))
    }

    /// Whether the frame at `place` is still waiting: a full spool (or memory queue)
    /// may have dropped it meanwhile.
    pub(crate) fn contains(&self, place: Place) -> bool {
        match place {
            Place::Spool(id) => self.spool().contains(id),
            Place::Memory(id) => self.memory.contains(id),
        }
    }

    /// The frame at `place` is done with: delivered (`reason` `None`), or refused for
    /// good (`reason` says how; a spooled frame is set aside in `rejected/`). A frame
    /// kept in memory is settled either way.
    pub(crate) async fn finish(&mut self, place: Place, reason: Option<String>) {
        let done = match place {
            Place::Memory(id) => {
                // A refused frame kept in memory is not set aside: the spool could not
                // take it. It was logged and counted as rejected.
                if let Some(frame) = self.memory.remove(id) {
                    self.shared.settle(frame.batch_id);
                }
                Ok(())
            }
            Place::Spool(id) => {
                self.on_spool(move |spool| match reason {
                    None => spool.remove(id).map(|_| ()),
                    Some(reason) => spool.reject(id, &reason).map(|_| ()),
                })
                .await
            }
        };
        if let Err(error) = done {
            tracing::error!(error = %crate::error_chain(&error), "updating the spool failed");
        }
    }

    /// At close: writes the frames still in memory to the spool, oldest first, never
    /// dropping a spooled frame for them. Those it cannot take are not settled: a
    /// caller with a record journal keeps their intents open and sends them again at
    /// its next start; they are counted in `chunks_unsaved_at_close` and logged.
    pub(crate) async fn save_memory(&mut self) {
        while let Some(frame) = self.memory.pop() {
            match self.push_keeping_oldest(frame.bytes.clone()).await {
                Ok(_) => self.shared.settle(frame.batch_id.clone()),
                Err(error) => {
                    let counters = &self.shared.counters;
                    bump(&counters.chunks_unsaved_at_close, 1);
                    bump(&counters.records_unsaved_at_close, u64::from(frame.records));
                    tracing::warn!(
                        batch_id = %frame.batch_id,
                        records = frame.records,
                        error = %crate::error_chain(&error),
                        "closing, and the spool cannot take a chunk kept in memory: it is left to the journal (a caller without one loses it)"
                    );
                }
            }
        }
    }
}

//! Chunks in the journal: the intent written before a chunk leaves, the done mark
//! after, and the segments deleted once every record in them is done.

use super::*;

impl RecordJournal {
    /// Records durably that `chunk` (of this run's host and instance) is about to be
    /// handed to a sink, and which journaled records it holds. Returns its batch ID,
    /// for [`end_chunk`](RecordJournal::end_chunk). Syncs before returning.
    ///
    /// Calling it again for a chunk already begun only returns its ID. While the
    /// journal cannot write, the intent is kept in memory and written when it writes
    /// again (a crash before then re-sends the chunk's journaled records under a new
    /// batch ID).
    pub fn begin_chunk(&mut self, chunk: &Chunk) -> Result<BatchId, JournalError> {
        let id = BatchId {
            host: self.host.clone(),
            instance: self.instance,
            sequence: chunk.sequence,
        };
        if self.intents.contains_key(&id) {
            return Ok(id);
        }
        let mut lsns = Vec::with_capacity(chunk.records.len());
        for (i, record) in chunk.records.iter().enumerate() {
            // Tagged by `append_tagged`: the position itself. Otherwise (untagged, or
            // recovered and journaled again at open) found by the record's fields.
            let found = match chunk.tags.get(i).copied() {
                Some(NOT_JOURNALED) => continue, // counted when appended
                Some(at) if at != NO_TAG => {
                    self.pending_count = self.pending_count.saturating_sub(1);
                    Some(at)
                }
                _ => self.take_pending(fingerprint(record)),
            };
            match found {
                Some(at) => lsns.push(at),
                None => self.counters.records_unmatched += 1,
            }
        }
        let body = IntentBody {
            host: id.host.clone(),
            instance: id.instance.as_u128(),
            sequence: chunk.sequence,
            window_start_ms: chunk.window.start_ms(),
            window_end_ms: chunk.window.end_ms(),
            index: chunk.index,
            last: chunk.last,
            lsns,
            completeness: chunk.completeness,
        };
        let now = Instant::now();
        if self.degraded.is_some() && !self.try_resume(now) {
            if !body.lsns.is_empty() {
                // Nothing to protect otherwise: none of its records is journaled.
                self.intents
                    .insert(id.clone(), open_intent(None, &body.lsns));
                self.backlog.push(Mark::Intent(id.clone(), body));
            }
            return Ok(id);
        }
        let written = self
            .write_intent(id.clone(), body)
            .and_then(|()| self.flush_and_sync(now));
        if let Err(e) = written {
            self.fail(&e, now);
        }
        Ok(id)
    }

    /// Records that the chunk `id` (begun here, or recovered) has been delivered or
    /// spooled: its records are no longer needed. Segments left with nothing live are
    /// deleted. Unknown IDs are ignored.
    ///
    /// While the journal cannot write, the done mark is kept in memory and written
    /// when it writes again.
    pub fn end_chunk(&mut self, id: &BatchId) -> Result<(), JournalError> {
        let Some(intent) = self.intents.remove(id) else {
            return Ok(());
        };
        for (segment, count) in &intent.per_segment {
            if let Some(s) = self.segments.get_mut(segment) {
                s.live = s.live.saturating_sub(*count);
            }
        }
        if let Some(s) = intent.segment.and_then(|n| self.segments.get_mut(&n)) {
            s.open_intents = s.open_intents.saturating_sub(1);
        }
        let body = DoneBody {
            host: id.host.clone(),
            instance: id.instance.as_u128(),
            sequence: id.sequence,
        };
        if self.degraded.is_some() {
            self.backlog.push(Mark::Done(body));
            self.try_resume(Instant::now());
            return Ok(());
        }
        let written = self.write_done(body).and_then(|()| self.collect());
        if let Err(e) = written {
            self.fail(&e, Instant::now());
        }
        Ok(())
    }

    /// Starts a new segment when the active one is full or settled, and deletes the
    /// old segments with nothing live.
    pub(super) fn collect(&mut self) -> Result<(), JournalError> {
        let settled = |s: &Segment| s.live == 0 && s.open_intents == 0;
        let active_settled = self.segments.get(&self.active.number).is_some_and(settled);
        if !self.active.empty
            && (active_settled || self.active.bytes >= self.config.segment_limit())
        {
            self.rotate()?;
        }
        let deletable: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(n, s)| **n != self.active.number && settled(s))
            .map(|(n, _)| *n)
            .collect();
        if deletable.is_empty() {
            return Ok(());
        }
        // The done marks that settle these segments must be durable first, and so
        // must the rename of a recovery that supersedes some of them.
        if self.dirty || !self.unsynced.is_empty() {
            self.flush_and_sync(Instant::now())?;
        }
        if self.rename_unsynced {
            self.sync_dir()?;
            self.rename_unsynced = false;
        }
        for n in deletable {
            let name = segment_name(n);
            if self.segments.get(&n).is_some_and(|s| s.damaged) {
                set_aside(
                    &self.dir,
                    &name,
                    "damaged segment",
                    "everything intact in it is done",
                );
                self.segments.remove(&n);
                continue;
            }
            match self.dir.remove_file(&name) {
                Ok(_) => {
                    self.segments.remove(&n);
                    self.counters.segments_deleted += 1;
                }
                Err(e) => {
                    tracing::warn!(
                        file = %self.dir.join(&name).display(),
                        error = %error_chain(&e),
                        "journal: cannot delete a segment whose records are all delivered"
                    );
                    break;
                }
            }
        }
        self.sync_dir()
    }
}

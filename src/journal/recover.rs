//! Recovery at open: what a previous run left is journaled again into new segments
//! (or, when that cannot be written, its segments serve as this run's journal), and
//! the old segments are deleted or set aside.

use super::*;

impl RecordJournal {
    /// Writes the live content of the old segments into new ones, starting with
    /// `first`: written as `.tmp` and renamed only once it (and the segments it
    /// continues into) holds all of it, which it then supersedes.
    pub(super) fn recover_into_new_segments(
        &mut self,
        first: u64,
        content: OldContent,
    ) -> Result<Recovered, JournalError> {
        let tmp = tmp_name(first);
        self.active = start_segment(&self.dir, first, &tmp, 0, first, &mut self.counters)?;
        self.segments.insert(first, Segment::default());
        self.recovering = Some(first);
        let recovered = self.rejournal(content)?;
        self.flush_and_sync(Instant::now())?;
        let name = segment_name(first);
        self.dir
            .rename(&tmp, &self.dir, &name)
            .map_err(|e| JournalError::io("rename into place", self.dir.join(&tmp), e))?;
        if self.active.number == first {
            self.active.name = name;
        }
        self.recovering = None;
        // The recovery is complete and in place: a failed directory fsync must not
        // undo it (that would delete the segments it continues into). But the rename
        // may not be durable then, so the old segments must stay until a directory
        // fsync succeeds: until then a crash leaves either the recovery in place (they
        // are obsolete) or its `.tmp` (a recovery cut short: they are read again).
        self.rename_unsynced = !self.sync_dir_or_warn();
        Ok(recovered)
    }

    /// After a complete recovery: deletes the old segments, or sets them aside when
    /// damaged.
    pub(super) fn remove_old_segments(&mut self, old: Vec<scan::OldSegment>) {
        if self.rename_unsynced {
            // Kept, settled: `collect` deletes them (lowest numbers first, so before
            // the recovery's segments) once a directory fsync succeeds.
            for segment in old {
                let damaged = segment.damaged && !segment.obsolete;
                self.segments.insert(
                    segment.number,
                    Segment {
                        damaged,
                        ..Segment::default()
                    },
                );
            }
            return;
        }
        for segment in old {
            if segment.damaged {
                set_aside(
                    &self.dir,
                    &segment.name,
                    "damaged segment",
                    "its intact entries were recovered",
                );
                continue;
            }
            match self.dir.remove_file(&segment.name) {
                Ok(_) => self.counters.segments_deleted += 1,
                Err(e) => tracing::warn!(
                    file = %self.dir.join(&segment.name).display(),
                    error = %error_chain(&e),
                    "journal: cannot delete a recovered segment (it is superseded, and \
                     will be ignored)"
                ),
            }
        }
        self.sync_dir_or_warn();
    }

    /// After a recovery that could not be written: removes what it wrote (the `.tmp`
    /// segment last, so that a crash in between leaves a recovery cut short, which
    /// counts for nothing) and hands back what a new journal is made of, with the
    /// highest segment number used.
    pub(super) fn abandon_recovery(
        self,
        first: u64,
    ) -> (StateDir, JournalConfig, String, JournalCounters, u64) {
        let RecordJournal {
            dir,
            config,
            host,
            counters,
            active,
            ..
        } = self;
        let last = active.number;
        drop(active);
        for number in (first + 1..=last).rev() {
            let _ = dir.remove_file(segment_name(number));
        }
        let _ = dir.sync();
        let _ = dir.remove_file(tmp_name(first));
        let _ = dir.sync();
        (dir, config, host, counters, last)
    }

    /// When the recovery cannot be written (`error`): the old segments stay as they
    /// are and serve as this run's journal (their records are found by position, the
    /// intents of their open chunks are in them), and the journal starts without
    /// journaling; the first resume starts a fresh segment after them.
    pub(super) fn recover_in_place(
        &mut self,
        old: scan::Scan,
        error: &JournalError,
    ) -> Result<Recovered, JournalError> {
        // Obsolete segments go first: they must not outlive the segment whose header
        // makes them obsolete.
        for segment in &old.old {
            if segment.obsolete {
                match self.dir.remove_file(&segment.name) {
                    Ok(_) => self.counters.segments_deleted += 1,
                    Err(e) => tracing::warn!(
                        file = %self.dir.join(&segment.name).display(),
                        error = %error_chain(&e),
                        "journal: cannot delete an obsolete segment"
                    ),
                }
            } else {
                self.segments.insert(
                    segment.number,
                    Segment {
                        damaged: segment.damaged,
                        ..Segment::default()
                    },
                );
            }
        }
        let _ = self.dir.sync();
        let OldContent {
            records,
            intents,
            done,
        } = old.content;
        let mut covered = HashSet::new();
        for (_, intent) in &intents {
            covered.extend(intent.lsns.iter().copied());
        }
        let mut recovered = Recovered::default();
        for (at, (record, _)) in &records {
            if covered.contains(at) {
                continue;
            }
            self.add_pending(fingerprint(record), *at);
            if let Some(s) = self.segments.get_mut(&lsn_segment(*at)) {
                s.live += 1;
            }
            recovered.records.push(record.clone());
        }
        let mut seen = HashSet::new();
        for (segment, intent) in intents {
            let id = BatchId {
                host: intent.host.clone(),
                instance: InstanceId::new(intent.instance),
                sequence: intent.sequence,
            };
            if done.contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            let Some(window) = Window::from_millis(intent.window_start_ms, intent.window_end_ms)
            else {
                continue;
            };
            let present: Vec<Lsn> = intent
                .lsns
                .iter()
                .copied()
                .filter(|at| records.contains_key(at))
                .collect();
            let chunk_records = present.iter().map(|at| records[at].0.clone()).collect();
            for at in &present {
                if let Some(s) = self.segments.get_mut(&lsn_segment(*at)) {
                    s.live += 1;
                }
            }
            if let Some(s) = self.segments.get_mut(&segment) {
                s.open_intents += 1;
            }
            self.intents
                .insert(id.clone(), open_intent(Some(segment), &present));
            let mut chunk = Chunk::new(
                window,
                intent.index,
                intent.sequence,
                intent.last,
                chunk_records,
            );
            chunk.completeness = intent.completeness;
            recovered.chunks.push(RecoveredChunk {
                host: id.host,
                instance: id.instance,
                chunk,
            });
        }
        tracing::warn!(
            dir = %self.dir.path().display(),
            "journal: the recovery cannot be written; what the previous run journaled \
             stays in its segments"
        );
        self.fail(error, Instant::now());
        Ok(recovered)
    }

    /// Writes the recovered content of old segments into the active one (and those it
    /// continues into) and returns what the caller must redo.
    pub(super) fn rejournal(&mut self, content: OldContent) -> Result<Recovered, JournalError> {
        let OldContent {
            records,
            intents,
            done,
        } = content;
        let mut covered = HashSet::new();
        for (_, intent) in &intents {
            covered.extend(intent.lsns.iter().copied());
        }
        let mut recovered = Recovered::default();
        let unbatched = records
            .iter()
            .filter(|(at, _)| !covered.contains(at))
            .map(|(_, r)| r);
        for (record, bytes) in unbatched {
            let new_at = self.rewrite_record(bytes)?;
            self.add_pending(fingerprint(record), new_at);
            recovered.records.push(record.clone());
        }
        let mut seen = HashSet::new();
        for (_, intent) in intents {
            let id = BatchId {
                host: intent.host.clone(),
                instance: InstanceId::new(intent.instance),
                sequence: intent.sequence,
            };
            if done.contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            let Some(window) = Window::from_millis(intent.window_start_ms, intent.window_end_ms)
            else {
                tracing::warn!(batch_id = %id, "journal intent with an empty window skipped");
                continue;
            };
            let mut chunk_records = Vec::with_capacity(intent.lsns.len());
            let mut lsns = Vec::with_capacity(intent.lsns.len());
            for at in &intent.lsns {
                if let Some((record, bytes)) = records.get(at) {
                    lsns.push(self.rewrite_record(bytes)?);
                    chunk_records.push(record.clone());
                }
            }
            let mut chunk = Chunk::new(
                window,
                intent.index,
                intent.sequence,
                intent.last,
                chunk_records,
            );
            chunk.completeness = intent.completeness;
            // Written again with its completeness too: after another crash it replays
            // the same.
            let body = IntentBody { lsns, ..intent };
            self.write_intent(id.clone(), body)?;
            recovered.chunks.push(RecoveredChunk {
                host: id.host,
                instance: id.instance,
                chunk,
            });
        }
        Ok(recovered)
    }

    /// Writes a recovered record's encoding as a record entry; returns its position.
    pub(super) fn rewrite_record(&mut self, bytes: &[u8]) -> Result<Lsn, JournalError> {
        self.rotate_if_full()?;
        self.scratch.clear();
        self.scratch.push(KIND_RECORD);
        self.scratch.extend_from_slice(bytes);
        self.write_scratch_record()
    }
}

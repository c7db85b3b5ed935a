//! The state where the journal cannot write (a full disk, a quota, an I/O error): it
//! stops journaling records, keeps the intents and done marks it could not make
//! durable, and tries a fresh segment every `sync_interval`.

use super::*;

/// How many names past the active segment a journal that cannot write looks at for a
/// free one when it tries again.
const FRESH_NAMES: u64 = 1000;

impl RecordJournal {
    /// Enters (or stays in) the state where the journal does not write, after `error`.
    pub(super) fn fail(&mut self, error: &JournalError, now: Instant) {
        self.counters.write_failures += 1;
        // What was written since the last sync may not be on disk: its intents and
        // done marks are written again when the journal writes again.
        self.backlog.splice(0..0, self.unsynced.drain(..));
        let retry_at = now + self.config.sync_interval;
        match &mut self.degraded {
            Some(d) => {
                d.retry_at = retry_at;
                tracing::debug!(
                    error = %error_chain(error),
                    "journal still cannot write"
                );
            }
            None => {
                tracing::warn!(
                    dir = %self.dir.path().display(),
                    error = %error_chain(error),
                    retry_every = ?self.config.sync_interval,
                    "journal cannot write: records are no longer journaled, so a crash now \
                     loses the records not yet in a delivered chunk (capture and delivery \
                     go on); trying again every sync interval"
                );
                self.degraded = Some(Degraded {
                    since: now,
                    retry_at,
                    not_journaled_before: self.counters.records_not_journaled,
                });
            }
        }
    }

    /// While the journal cannot write and a retry is due at `now`: starts a fresh
    /// segment, writes the backlog of intents and done marks into it and syncs.
    /// Returns whether the journal writes again (and synced).
    pub(super) fn try_resume(&mut self, now: Instant) -> bool {
        let Some(d) = &self.degraded else {
            return true;
        };
        if now < d.retry_at {
            return false;
        }
        let (since, before) = (d.since, d.not_journaled_before);
        match self.resume() {
            Ok(()) => {
                self.degraded = None;
                self.counters.resumed += 1;
                tracing::warn!(
                    dir = %self.dir.path().display(),
                    after = ?now.saturating_duration_since(since),
                    records_not_journaled = self.counters.records_not_journaled - before,
                    "journal writes again: records are journaled again (those captured \
                     meanwhile are not, and a crash loses them until they are in a \
                     delivered chunk)"
                );
                if let Err(e) = self.collect() {
                    self.fail(&e, now);
                    return false;
                }
                true
            }
            Err(e) => {
                self.fail(&e, now);
                false
            }
        }
    }

    pub(super) fn resume(&mut self) -> Result<(), JournalError> {
        // What the failed segment still buffers may go out now; its fate does not
        // matter (a torn end is read as such).
        if let Some(writer) = self.active.writer.as_mut() {
            let _ = writer.flush();
            let _ = writer.get_ref().sync_data();
        }
        self.rotate_fresh()?;
        let backlog = std::mem::take(&mut self.backlog);
        for mark in &backlog {
            let result = match mark {
                Mark::Intent(id, body) => self.write_intent_entry(body).map(|()| {
                    if let Some(intent) = self.intents.get_mut(id)
                        && intent.segment.is_none()
                    {
                        intent.segment = Some(self.active.number);
                        if let Some(s) = self.segments.get_mut(&self.active.number) {
                            s.open_intents += 1;
                        }
                    }
                }),
                Mark::Done(body) => self.write_done_entry(body),
            };
            if result.is_err() {
                // Intents already accounted stay so; writing them again is harmless.
                self.backlog = backlog;
                return result;
            }
        }
        self.unsynced = backlog;
        self.flush_and_sync(Instant::now())
    }

    /// After a failure: starts a segment under the first number past the active one
    /// whose name is free (whatever is in the way is left for the next start-up scan).
    /// A failed attempt removes the file it created, so retries do not pile up empty
    /// segments; when none of the next [`FRESH_NAMES`] names is free, the attempt
    /// fails (and is tried again later) rather than taking an occupied name.
    pub(super) fn rotate_fresh(&mut self) -> Result<(), JournalError> {
        let mut number = self.active.number + 1;
        for _ in 0..FRESH_NAMES {
            match self.dir.kind(segment_name(number)) {
                Ok(None) => return self.start_next(number),
                Ok(Some(_)) => number += 1,
                Err(e) => return Err(JournalError::io("inspect", self.dir.path(), e)),
            }
        }
        Err(JournalError::io(
            "create a segment in",
            self.dir.path(),
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "the {FRESH_NAMES} segment names after {} are all taken",
                    segment_name(self.active.number)
                ),
            ),
        ))
    }
}

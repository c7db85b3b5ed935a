//! Writing entries and segments: intents, done marks, scratch buffers, rotation and
//! directory syncs.

use std::{
    io::{BufWriter, Write},
    time::Instant,
};

use bincode::Options;
use flow_batch::wire::BatchId;
use flow_sink::{error_chain, state_dir::StateDir};
use serde::Serialize;

use super::{
    Active, JournalCounters, JournalError, Mark, RecordJournal, Segment,
    format::{
        DoneBody, ENTRY_HEAD_LEN, FLAG_RECOVERY, HEADER_LEN, IntentBody, KIND_DONE, KIND_INTENT,
        Lsn, encode_header, entry_head, lsn, options,
    },
    open_intent,
    scan::segment_name,
};

impl RecordJournal {
    /// `fsync`s the directory where a failure must not stop the journal (at open):
    /// logs it and counts it in [`write_failures`](JournalCounters::write_failures).
    /// What it would have made durable (a rename, deletions) is redone or undone
    /// safely by the next start-up scan.
    /// Returns whether it synced.
    pub(super) fn sync_dir_or_warn(&mut self) -> bool {
        let Err(e) = self.sync_dir() else {
            return true;
        };
        self.counters.write_failures += 1;
        tracing::warn!(
            dir = %self.dir.path().display(),
            error = %error_chain(&e),
            "journal: fsync of the journal directory failed; going on"
        );
        false
    }

    pub(super) fn sync_dir(&self) -> Result<(), JournalError> {
        self.dir
            .sync()
            .map_err(|e| JournalError::io("fsync", self.dir.path(), e))
    }

    /// Syncs the active segment and starts the next one.
    pub(super) fn rotate(&mut self) -> Result<(), JournalError> {
        self.flush_and_sync(Instant::now())?;
        self.start_next(self.active.number + 1)
    }

    pub(super) fn start_next(&mut self, number: u64) -> Result<(), JournalError> {
        let (flags, field) = match self.recovering {
            Some(first) => (FLAG_RECOVERY, first),
            None => (0, 0),
        };
        let name = segment_name(number);
        let active = start_segment(&self.dir, number, &name, flags, field, &mut self.counters)?;
        self.active = active;
        self.segments.insert(number, Segment::default());
        self.dirty = false;
        Ok(())
    }

    /// Writes an intent, and takes note of it as open. Until a sync succeeds it is not
    /// known to be durable (and after a failed write it is not written at all): it is
    /// kept, to be written again if the journal fails before then.
    pub(super) fn write_intent(
        &mut self,
        id: BatchId,
        body: IntentBody,
    ) -> Result<(), JournalError> {
        let written = self.write_intent_entry(&body);
        let segment = written.is_ok().then_some(self.active.number);
        if let Some(s) = segment.and_then(|n| self.segments.get_mut(&n)) {
            s.open_intents += 1;
        }
        self.intents
            .insert(id.clone(), open_intent(segment, &body.lsns));
        self.unsynced.push(Mark::Intent(id, body));
        written
    }

    pub(super) fn write_intent_entry(&mut self, body: &IntentBody) -> Result<(), JournalError> {
        self.encode_entry(KIND_INTENT, body)?;
        self.write_scratch()?;
        self.counters.chunks_begun += 1;
        Ok(())
    }

    /// Writes a done mark, kept (like an intent) until a sync succeeds.
    pub(super) fn write_done(&mut self, body: DoneBody) -> Result<(), JournalError> {
        let written = self.write_done_entry(&body);
        self.unsynced.push(Mark::Done(body));
        written
    }

    pub(super) fn write_done_entry(&mut self, body: &DoneBody) -> Result<(), JournalError> {
        self.encode_entry(KIND_DONE, body)?;
        self.write_scratch()?;
        self.counters.chunks_ended += 1;
        Ok(())
    }

    /// Puts the entry `kind` + `body` into `scratch`.
    pub(super) fn encode_entry(
        &mut self,
        kind: u8,
        body: &impl Serialize,
    ) -> Result<(), JournalError> {
        self.scratch.clear();
        self.scratch.push(kind);
        options()
            .serialize_into(&mut self.scratch, body)
            .map_err(|e| {
                JournalError::io(
                    "encode an entry for",
                    self.dir.join(&self.active.name),
                    std::io::Error::other(e),
                )
            })
    }

    /// Writes the record entry in `scratch` and returns its position (its offset).
    pub(super) fn write_scratch_record(&mut self) -> Result<Lsn, JournalError> {
        // Below SEGMENT_MAX_BYTES_LIMIT plus one entry: fits.
        let offset = u32::try_from(self.active.bytes).unwrap_or(u32::MAX);
        let at = lsn(self.active.number, offset);
        self.write_scratch()?;
        if let Some(s) = self.segments.get_mut(&self.active.number) {
            s.live += 1;
        }
        self.counters.records_appended += 1;
        Ok(at)
    }

    /// Writes `scratch` as one entry of the active segment.
    pub(super) fn write_scratch(&mut self) -> Result<(), JournalError> {
        let head = entry_head(&self.scratch);
        let written = match self.active.writer.as_mut() {
            Some(writer) => writer
                .write_all(&head)
                .and_then(|()| writer.write_all(&self.scratch)),
            None => Err(no_segment()),
        };
        written.map_err(|e| JournalError::io("write", self.dir.join(&self.active.name), e))?;
        let n = (ENTRY_HEAD_LEN + self.scratch.len()) as u64;
        self.active.bytes += n;
        self.active.empty = false;
        self.counters.bytes_written += n;
        self.dirty = true;
        Ok(())
    }
}

/// The error of a write before the first segment exists.
pub(super) fn no_segment() -> std::io::Error {
    std::io::Error::other("no segment could be created yet")
}

/// Creates segment `number` as `name` (mode `0600`), writes its header and makes both
/// durable. On failure, the file it created is removed again.
pub(super) fn start_segment(
    dir: &StateDir,
    number: u64,
    name: &str,
    flags: u16,
    field: u64,
    counters: &mut JournalCounters,
) -> Result<Active, JournalError> {
    if dir
        .kind(name)
        .map_err(|e| JournalError::io("inspect", dir.join(name), e))?
        .is_some()
    {
        return Err(JournalError::io(
            "create",
            dir.join(name),
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ));
    }
    let file = dir
        .create_file(name)
        .map_err(|e| JournalError::io("create", dir.join(name), e))?;
    let mut writer = BufWriter::with_capacity(64 << 10, file);
    let header = encode_header(flags, field);
    let written = writer
        .write_all(&header)
        .and_then(|()| writer.flush())
        .and_then(|()| writer.get_ref().sync_data())
        .map_err(|e| JournalError::io("write", dir.join(name), e))
        .and_then(|()| {
            dir.sync()
                .map_err(|e| JournalError::io("fsync", dir.path(), e))
        });
    if let Err(e) = written {
        // Creating an empty file works on a full disk: without this, every retry
        // would leave one more empty segment behind. The name was free before the
        // create and `remove_file` deletes only a regular file, so this is the file
        // just created. Its buffered header is dropped unwritten.
        drop(writer.into_parts());
        if let Err(remove) = dir.remove_file(name) {
            tracing::debug!(
                file = %dir.join(name).display(),
                error = %error_chain(&remove),
                "journal: cannot remove a segment it failed to start"
            );
        }
        return Err(e);
    }
    counters.segments_created += 1;
    counters.bytes_written += HEADER_LEN as u64;
    counters.syncs += 1;
    Ok(Active {
        number,
        name: name.to_owned(),
        writer: Some(writer),
        bytes: HEADER_LEN as u64,
        empty: true,
    })
}

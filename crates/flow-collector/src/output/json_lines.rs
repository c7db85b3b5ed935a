//! [`JsonLinesOutput`]: attributed flows as JSON lines in a file, rotated by size or
//! age.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::Deserialize;

use super::{
    FlowKey, FlowOutput, OutputError, OutputPosition, position::FilePosition, rotation,
    rotation::Rotation, write_completeness_line, write_json_line,
};
use crate::{attribution::AttributedFlow, completeness::WindowReport, ledger::files};

/// What a [`JsonLinesOutput`] has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutputStats {
    /// Lines written since open.
    pub lines_written: u64,
    /// Writes that failed (cut back: no partial line stays).
    pub write_failures: u64,
    /// Files rotated since open.
    pub rotations: u64,
    /// Rotations that failed (the file goes on growing; retried at the next commit).
    pub rotation_failures: u64,
    /// Rotated files deleted beyond [`Rotation::keep`].
    pub rotated_deleted: u64,
    /// Partial last lines (a crash mid-write) cut off the file.
    pub torn_lines_cut: u64,
    /// Lines [`written_since`](FlowOutput::written_since) could not parse (skipped).
    pub unparsable_lines: u64,
    /// Positions [`written_since`](FlowOutput::written_since) could not use (not
    /// decodable, or naming a file no longer there): it then reports the current
    /// file's flows, or nothing.
    pub positions_lost: u64,
}

/// The current file.
#[derive(Debug)]
struct Current {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes written (all of them whole lines).
    len: u64,
    /// When this collector opened or created it.
    opened: SystemTime,
    /// A failed write could not be cut back: cut to `len` before the next write.
    dirty: bool,
}

/// JSON lines in a file, rotated by size or time (see [`Rotation`]).
///
/// - [`write`](FlowOutput::write) appends the flows' lines (one `write(2)`), and
///   [`write_completeness`](FlowOutput::write_completeness) the windows' completeness
///   records; a failed write is cut back, so the file never holds a partial line from
///   it.
/// - [`commit`](FlowOutput::commit) `fdatasync`s the file, rotates it when due, and
///   returns the position: the file (name, device, inode) and its length.
/// - [`written_since`](FlowOutput::written_since) reads what lies beyond a position
///   (following the file across rotations) and returns each line's flow key; with no
///   position it returns nothing, because a collector without a checkpoint knows of no
///   emitted flow and will replay its ledger whole.
///
/// The file is created mode 0640. A path that is a symbolic link, a FIFO or anything
/// but a regular file is refused at open. A partial last line found at open (a crash
/// mid-write) is cut off.
#[derive(Debug)]
pub struct JsonLinesOutput {
    path: PathBuf,
    dir: PathBuf,
    base: String,
    rotation: Rotation,
    /// `None` after a rotation renamed the file but could not create the new one.
    current: Option<Current>,
    buf: Vec<u8>,
    stats: OutputStats,
    /// The files (device, inode) named by the last two positions handed out: a
    /// checkpoint may name either, so `--rotate-keep` never deletes them.
    protected: [Option<(u64, u64)>; 2],
    /// Tests: the next write writes this many bytes, then fails with `ENOSPC`.
    #[cfg(test)]
    pub(super) fail_next_write: Option<usize>,
}

/// The longest line read back (ours are under 2 KiB: a host ID of up to 1,024 bytes
/// twice, two workload IDs of up to 64): a longer one is not a line of this output.
const MAX_LINE: u64 = 16 << 10;

/// The two fields `written_since` needs of a line.
#[derive(Deserialize)]
struct LineKey {
    batch_id: String,
    record_index: u32,
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OutputError {
    let path = path.to_path_buf();
    move |source| OutputError::Io {
        operation,
        path,
        source,
    }
}

impl JsonLinesOutput {
    /// Opens (creating, mode 0640) `path` for appending; its age for rotation counts
    /// from now.
    pub fn open(
        path: impl AsRef<Path>,
        rotation: Rotation,
    ) -> Result<JsonLinesOutput, OutputError> {
        JsonLinesOutput::open_at(path, rotation, SystemTime::now())
    }

    /// [`open`](JsonLinesOutput::open), with the time of opening given.
    pub fn open_at(
        path: impl AsRef<Path>,
        rotation: Rotation,
        now: SystemTime,
    ) -> Result<JsonLinesOutput, OutputError> {
        let path = path.as_ref().to_path_buf();
        let base = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                io_error("open", &path)(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the output path needs a UTF-8 file name",
                ))
            })?
            .to_owned();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut output = JsonLinesOutput {
            path,
            dir,
            base,
            rotation,
            current: None,
            buf: Vec::new(),
            stats: OutputStats::default(),
            protected: [None, None],
            #[cfg(test)]
            fail_next_write: None,
        };
        output.reopen(now)?;
        Ok(output)
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What it has done.
    pub fn stats(&self) -> OutputStats {
        self.stats
    }

    /// Opens `path` as the current file, cutting a partial last line off.
    fn reopen(&mut self, now: SystemTime) -> Result<(), OutputError> {
        let file = files::open_append(&self.path, false).map_err(io_error("open", &self.path))?;
        let meta = file.metadata().map_err(io_error("open", &self.path))?;
        let len = meta.len();
        let whole = last_line_end(&file, len).map_err(io_error("open", &self.path))?;
        // Never cut (or append to) a file that is not this output: its last whole line
        // must be one of ours, and a torn tail no longer than a line.
        if len > 0 && (len - whole > MAX_LINE || !ends_with_our_line(&file, whole)) {
            return Err(io_error("open", &self.path)(io::Error::new(
                io::ErrorKind::InvalidData,
                "the file is not a flowcollector output (its last line is not a JSON object); refusing to append to it",
            )));
        }
        if whole < len {
            file.set_len(whole).map_err(io_error("open", &self.path))?;
            file.sync_data().map_err(io_error("sync", &self.path))?;
            self.stats.torn_lines_cut += 1;
            tracing::warn!(path = %self.path.display(), cut = len - whole,
                "partial last line of the output cut off");
        }
        self.current = Some(Current {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            len: whole,
            opened: now,
            dirty: false,
        });
        Ok(())
    }

    /// The current file, reopened if a rotation left none.
    fn current(&mut self) -> Result<&mut Current, OutputError> {
        if self.current.is_none() {
            self.reopen(SystemTime::now())?;
        }
        self.current
            .as_mut()
            .ok_or_else(|| io_error("open", &self.path)(io::Error::other("no output file")))
    }

    /// [`commit`](FlowOutput::commit) at time `now` (for rotation by age).
    pub fn commit_at(&mut self, now: SystemTime) -> Result<OutputPosition, OutputError> {
        let path = self.path.clone();
        let rotation = self.rotation.clone();
        let current = self.current()?;
        if current.dirty {
            current
                .file
                .set_len(current.len)
                .map_err(io_error("write", &path))?;
            current.dirty = false;
        }
        current.file.sync_data().map_err(io_error("sync", &path))?;
        let due = rotation.due(current.len, current.opened, now);
        if due {
            match self.rotate(now) {
                Ok(()) => self.stats.rotations += 1,
                Err(e) => {
                    self.stats.rotation_failures += 1;
                    tracing::warn!(error = %e, source = ?std::error::Error::source(&e),
                        "rotating the output failed; retried at the next commit");
                }
            }
        }
        if let Some(c) = &self.current {
            self.protected = [Some((c.dev, c.ino)), self.protected[0]];
        }
        self.prune_rotated();
        let (name, current) = match &self.current {
            Some(c) => (self.base.clone(), c),
            None => {
                // Renamed, but the new file could not be created: the position names
                // the rotated file (found again by its inode).
                return Err(io_error("rotate", &self.path)(io::Error::other(
                    "the new output file could not be created",
                )));
            }
        };
        Ok(FilePosition::new(&name, current.dev, current.ino, current.len).encode())
    }

    /// Renames the current file to its rotated name and creates a new one.
    fn rotate(&mut self, now: SystemTime) -> Result<(), OutputError> {
        let stamp = rotation::timestamp(now);
        let mut n = 0;
        let target = loop {
            let candidate = self.dir.join(rotation::rotated_name(&self.base, &stamp, n));
            if !files::exists(&candidate).map_err(io_error("rotate", &candidate))? {
                break candidate;
            }
            n += 1;
        };
        std::fs::rename(&self.path, &target).map_err(io_error("rotate", &self.path))?;
        self.current = None;
        let created = self.reopen(now);
        files::sync_dir(&self.dir).map_err(io_error("sync", &self.dir))?;
        created
    }

    /// Deletes the oldest rotated files beyond [`Rotation::keep`] (regular files with a
    /// rotated name only; links are never followed nor deleted).
    fn prune_rotated(&mut self) {
        let Some(keep) = self.rotation.keep else {
            return;
        };
        let rotated = match self.rotated_files() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "listing rotated output files failed");
                return;
            }
        };
        let protected = self.protected;
        let excess = rotated.len().saturating_sub(keep);
        let mut deleted = 0;
        // The oldest first, but never a file a checkpoint may name.
        let doomed = rotated.into_iter().take(excess).filter(|r| {
            std::fs::symlink_metadata(r)
                .map(|m| !protected.contains(&Some((m.dev(), m.ino()))))
                .unwrap_or(true)
        });
        for path in doomed {
            match std::fs::remove_file(&path) {
                Ok(()) => deleted += 1,
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "deleting a rotated output file failed"),
            }
        }
        if deleted > 0 {
            self.stats.rotated_deleted += deleted;
            if let Err(e) = files::sync_dir(&self.dir) {
                tracing::warn!(error = %e, "syncing the output directory failed");
            }
        }
    }

    /// The rotated files (regular files only), oldest first.
    fn rotated_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        for item in std::fs::read_dir(&self.dir)? {
            let item = item?;
            let name = item.file_name();
            let Some(key) = name
                .to_str()
                .and_then(|n| rotation::parse_rotated(&self.base, n))
            else {
                continue;
            };
            if item.file_type()?.is_file() {
                found.push((key, item.path()));
            }
        }
        found.sort();
        Ok(found.into_iter().map(|(_, p)| p).collect())
    }

    /// The flow keys of the whole lines of `path` from `start`; a partial last line is
    /// cut off when `path` is the current file, counted otherwise.
    fn keys_from(
        &mut self,
        path: &Path,
        start: u64,
        out: &mut Vec<FlowKey>,
    ) -> Result<(), OutputError> {
        let file = files::open_read(path).map_err(io_error("read", path))?;
        let meta = file.metadata().map_err(io_error("read", path))?;
        let size = meta.len();
        let start = start.min(size);
        let mut reader = BufReader::with_capacity(256 << 10, &file);
        reader
            .seek(SeekFrom::Start(start))
            .map_err(io_error("read", path))?;
        let mut reader = reader.take(size - start);
        let mut line = Vec::new();
        let mut at = start;
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .map_err(io_error("read", path))?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') && n as u64 == MAX_LINE {
                // Not a line of ours: skip to its end, counted.
                self.stats.unparsable_lines += 1;
                at += n as u64;
                let mut skip = Vec::new();
                loop {
                    skip.clear();
                    let m = (&mut reader)
                        .take(MAX_LINE)
                        .read_until(b'\n', &mut skip)
                        .map_err(io_error("read", path))?;
                    at += m as u64;
                    if m == 0 || skip.last() == Some(&b'\n') {
                        break;
                    }
                }
                continue;
            }
            if line.last() != Some(&b'\n') {
                self.cut_torn(path, &meta, at)?;
                break;
            }
            at += n as u64;
            match serde_json::from_slice::<LineKey>(&line) {
                Ok(k) => out.push((k.batch_id, k.record_index)),
                Err(_) => self.stats.unparsable_lines += 1,
            }
        }
        Ok(())
    }

    /// Cuts a partial line at `at` off the file `meta` describes, if it is the
    /// current one.
    fn cut_torn(
        &mut self,
        path: &Path,
        meta: &std::fs::Metadata,
        at: u64,
    ) -> Result<(), OutputError> {
        self.stats.torn_lines_cut += 1;
        if let Some(c) = self.current.as_mut()
            && (c.dev, c.ino) == (meta.dev(), meta.ino())
        {
            c.file.set_len(at).map_err(io_error("write", path))?;
            c.file.sync_data().map_err(io_error("sync", path))?;
            c.len = at;
            tracing::warn!(path = %path.display(), "partial last line of the output cut off");
        }
        Ok(())
    }
}

/// Whether the whole line that ends at `end` (the file's last) is a JSON object, as
/// every line of this output is.
fn ends_with_our_line(file: &File, end: u64) -> bool {
    if end == 0 {
        return false;
    }
    let start = end.saturating_sub(MAX_LINE);
    let mut tail = vec![0u8; (end - start) as usize];
    if file.read_exact_at(&mut tail, start).is_err() {
        return false;
    }
    // Without its newline, from the previous newline on.
    let body = &tail[..tail.len() - 1];
    let line = match body.iter().rposition(|b| *b == b'\n') {
        Some(i) => &body[i + 1..],
        None if start == 0 => body,
        None => return false,
    };
    // Any JSON object: the crash that tore the tail may have left an odd line before
    // it, which written_since skips and counts; a text file, a log or a binary is
    // refused.
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line).is_ok()
}

/// The length of `file` up to and including its last newline (0 when none), reading
/// backwards in blocks.
fn last_line_end(file: &File, len: u64) -> io::Result<u64> {
    const BLOCK: u64 = 64 << 10;
    let mut end = len;
    let mut block = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let chunk = &mut block[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if end == len && chunk.last() == Some(&b'\n') {
            return Ok(len);
        }
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

impl FlowOutput for JsonLinesOutput {
    fn write(&mut self, flows: &[AttributedFlow]) -> Result<(), OutputError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for flow in flows {
            write_json_line(&mut buf, flow).map_err(io_error("write", &self.path))?;
        }
        let result = self.append(&buf);
        self.buf = buf;
        if result.is_ok() {
            self.stats.lines_written += flows.len() as u64;
        } else {
            self.stats.write_failures += 1;
        }
        result
    }

    fn write_completeness(&mut self, reports: &[WindowReport]) -> Result<(), OutputError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for report in reports {
            write_completeness_line(&mut buf, report).map_err(io_error("write", &self.path))?;
        }
        let result = self.append(&buf);
        self.buf = buf;
        if result.is_ok() {
            self.stats.lines_written += reports.len() as u64;
        } else {
            self.stats.write_failures += 1;
        }
        result
    }

    fn commit(&mut self) -> Result<OutputPosition, OutputError> {
        self.commit_at(SystemTime::now())
    }

    fn written_since(
        &mut self,
        position: Option<&OutputPosition>,
    ) -> Result<Vec<FlowKey>, OutputError> {
        let Some(position) = position else {
            return Ok(Vec::new());
        };
        let Some(p) = FilePosition::decode(position) else {
            self.stats.positions_lost += 1;
            tracing::warn!("the checkpoint's output position is not one of this output");
            return Ok(Vec::new());
        };
        let path = self.path.clone();
        let current = self.current()?;
        let (cur_dev, cur_ino) = (current.dev, current.ino);
        let mut out = Vec::new();
        if (cur_dev, cur_ino) == (p.dev, p.ino) {
            self.keys_from(&path, p.len, &mut out)?;
            return Ok(out);
        }
        let rotated = self.rotated_files().map_err(io_error("read", &self.dir))?;
        let found = rotated.iter().position(|r| {
            std::fs::symlink_metadata(r).is_ok_and(|m| (m.dev(), m.ino()) == (p.dev, p.ino))
        });
        match found {
            Some(i) => {
                for (j, r) in rotated.iter().enumerate().skip(i) {
                    self.keys_from(r, if j == i { p.len } else { 0 }, &mut out)?;
                }
            }
            None => {
                self.stats.positions_lost += 1;
                tracing::warn!(file = %p.file,
                    "the checkpoint's output file is gone: reading the current file whole");
            }
        }
        self.keys_from(&path, 0, &mut out)?;
        Ok(out)
    }
}

impl JsonLinesOutput {
    /// Appends `bytes` (whole lines) to the current file; on failure cuts the file back.
    fn append(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        let path = self.path.clone();
        #[cfg(test)]
        let injected = self.fail_next_write.take();
        #[cfg(not(test))]
        let injected: Option<usize> = None;
        let current = self.current()?;
        if current.dirty {
            current
                .file
                .set_len(current.len)
                .map_err(io_error("write", &path))?;
            current.dirty = false;
        }
        let written = match injected {
            Some(partial) => current
                .file
                .write_all(bytes.get(..partial).unwrap_or(bytes))
                .and(Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::NOSPC.raw_os_error(),
                ))),
            None => current.file.write_all(bytes),
        };
        match written {
            Ok(()) => {
                current.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                if current.file.set_len(current.len).is_err() {
                    current.dirty = true;
                }
                Err(io_error("write", &path)(e))
            }
        }
    }
}

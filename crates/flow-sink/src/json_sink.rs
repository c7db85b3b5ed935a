//! `StdoutSink` and `FileSink`: JSON lines, one record per line, with the field set of
//! `flowexporter tail --json` (see [`json`](mod@crate::json)).

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use flow_batch::Chunk;

use crate::{error::SinkError, json, sink::FlowSink};

/// What a JSON-lines sink has written, read with `counters()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsonSinkCounters {
    /// Chunks written.
    pub chunks_written: u64,
    /// Records written (lines).
    pub records_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
}

#[derive(Debug, Default)]
struct AtomicJsonCounters {
    chunks: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
}

impl AtomicJsonCounters {
    fn add(&self, records: usize, bytes: usize) {
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> JsonSinkCounters {
        JsonSinkCounters {
            chunks_written: self.chunks.load(Ordering::Relaxed),
            records_written: self.records.load(Ordering::Relaxed),
            bytes_written: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The JSON lines of every record of `chunk`, appended to `out`.
pub fn encode_chunk(chunk: &Chunk, out: &mut Vec<u8>) {
    for record in &chunk.records {
        // Writing into a Vec cannot fail and every field serialises.
        let _ = json::write_line(out, record);
    }
}

/// Writes every record to standard output as one JSON line, and flushes after each
/// chunk. The embedded default when no collector is configured.
///
/// A chunk is encoded first, then written with one call on tokio's blocking pool (a
/// slow reader of the pipe holds a blocking thread, not a runtime thread).
#[derive(Debug, Default)]
pub struct StdoutSink {
    counters: AtomicJsonCounters,
}

impl StdoutSink {
    /// A sink on the process's standard output.
    pub fn new() -> StdoutSink {
        StdoutSink::default()
    }

    /// What it has written.
    pub fn counters(&self) -> JsonSinkCounters {
        self.counters.snapshot()
    }
}

#[async_trait]
impl FlowSink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(chunk.records.len() * 400);
        encode_chunk(chunk, &mut buf);
        let bytes = buf.len();
        blocking("stdout sink write", move || {
            let mut out = io::stdout().lock();
            out.write_all(&buf)
                .and_then(|()| out.flush())
                .map_err(|source| SinkError::Stdout { source })
        })
        .await?;
        self.counters.add(chunk.records.len(), bytes);
        Ok(())
    }
}

/// Appends every record to a file as one JSON line; the file is created if missing.
///
/// Each chunk is written with one `write` and, unless turned off with
/// [`with_sync`](FileSink::with_sync), `fdatasync`ed before `deliver` returns (both on
/// tokio's blocking pool, never on a runtime thread), so a
/// delivered chunk survives a crash of the machine. A failed write can leave a partial
/// last line; the next chunk starts on a new line only if the previous one was whole,
/// so readers should skip a line that does not parse.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    /// Shared with the blocking pool's writes; they lock it one chunk at a time.
    file: Arc<Mutex<File>>,
    sync: bool,
    counters: AtomicJsonCounters,
}

impl FileSink {
    /// Opens `path` for appending, creating it if missing.
    pub fn open(path: impl AsRef<Path>) -> Result<FileSink, SinkError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| SinkError::io("open for appending", &path, e))?;
        Ok(FileSink {
            path,
            file: Arc::new(Mutex::new(file)),
            sync: true,
            counters: AtomicJsonCounters::default(),
        })
    }

    /// Whether to `fdatasync` after each chunk (default true).
    pub fn with_sync(mut self, sync: bool) -> FileSink {
        self.sync = sync;
        self
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What it has written.
    pub fn counters(&self) -> JsonSinkCounters {
        self.counters.snapshot()
    }
}

#[async_trait]
impl FlowSink for FileSink {
    fn name(&self) -> &str {
        "file"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(chunk.records.len() * 400);
        encode_chunk(chunk, &mut buf);
        let bytes = buf.len();
        let (file, path, sync) = (Arc::clone(&self.file), self.path.clone(), self.sync);
        blocking("file sink write", move || {
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            file.write_all(&buf)
                .map_err(|e| SinkError::io("append to", &path, e))?;
            if sync {
                file.sync_data()
                    .map_err(|e| SinkError::io("fdatasync", &path, e))?;
            }
            Ok(())
        })
        .await?;
        self.counters.add(chunk.records.len(), bytes);
        Ok(())
    }
}

/// Runs the blocking write `f` on tokio's blocking pool.
async fn blocking(
    task: &'static str,
    f: impl FnOnce() -> Result<(), SinkError> + Send + 'static,
) -> Result<(), SinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| SinkError::Task { task, source })?
}

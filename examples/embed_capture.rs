//! Embedding the capture core in another program, with its own sink: capture ->
//! minute batches -> a summary printed per chunk, and optionally a collector, with the
//! record journal so that a crash loses at most about a second of records.
//!
//! Needs root (or CAP_BPF + CAP_PERFMON) to load the kernel program:
//!
//! ```text
//! cargo build --example embed_capture
//! sudo target/debug/examples/embed_capture --window 10s
//! sudo target/debug/examples/embed_capture --window 10s \
//!     --collector http://127.0.0.1:9000 --spool-dir /tmp/embed/spool --journal-dir /tmp/embed/journal
//! ```
//!
//! Stop it with Ctrl-C: the capture is detached, the ring drained, the open window
//! closed early and delivered (or spooled).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use async_trait::async_trait;
use clap::Parser;
use flowexporter::{
    JournalConfig, RecordJournal,
    batch::{BatchConfig, Chunk, MinuteBatcher, NO_TAG, wire::InstanceId},
    capture::{AsyncFlowReader, FlowCaptureBuilder, FlowRecord},
    sink::{Accepted, CollectorConfig, CollectorSink, FlowSink, SinkError},
};

#[derive(Debug, Parser)]
struct Args {
    /// Window length (e.g. 10s, 1m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Also send chunks to this collector.
    #[arg(long)]
    collector: Option<String>,
    /// Spool directory of the collector sink.
    #[arg(long, default_value = "/var/tmp/embed_capture/spool")]
    spool_dir: PathBuf,
    /// Journal captured records here (crash safety).
    #[arg(long)]
    journal_dir: Option<PathBuf>,
}

/// Our own sink: one summary line per chunk.
struct SummarySink;

#[async_trait]
impl FlowSink for SummarySink {
    fn name(&self) -> &str {
        "summary"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        let bytes: u64 = chunk
            .records
            .iter()
            .map(|r| r.stats.bytes_sent + r.stats.bytes_received)
            .sum();
        let failed = chunk
            .records
            .iter()
            .filter(|r| r.close_reason.is_connect_failure())
            .count();
        println!(
            "window {} chunk {}{}: {} flows, {} payload bytes, {} failed connects",
            flowexporter::sink::json::rfc3339(chunk.window.start()),
            chunk.index,
            if chunk.last { " (last)" } else { "" },
            chunk.records.len(),
            bytes,
            failed,
        );
        Ok(())
    }
}

/// The record pipeline: journal (optional) -> batcher -> sinks.
struct Pipeline {
    batcher: MinuteBatcher,
    journal: Option<RecordJournal>,
    sinks: Vec<Arc<dyn FlowSink>>,
    /// The collector sink, when there is one: it may hold a chunk in memory on a full
    /// disk, so its chunks are ended in the journal only once settled.
    collector: Option<Arc<CollectorSink>>,
}

impl Pipeline {
    fn push(&mut self, record: FlowRecord) {
        // The journal position rides along with the record as its tag, so that the
        // journal knows a chunk's records without searching for them.
        let tag = match self.journal.as_mut().map(|j| j.append_tagged(&record)) {
            Some(Ok(at)) => at,
            Some(Err(e)) => {
                eprintln!("not journaled: {e}");
                NO_TAG
            }
            None => NO_TAG,
        };
        if let Err(e) = self.batcher.push_tagged(record, tag, SystemTime::now()) {
            eprintln!("record refused: {e}");
        }
    }

    /// Sends every ready chunk: intent in the journal, deliver, done.
    async fn drain(&mut self) -> Result<(), SinkError> {
        while let Some(chunk) = self.batcher.poll_chunk() {
            let id = match &mut self.journal {
                Some(j) => Some(j.begin_chunk(&chunk)?),
                None => None,
            };
            self.sinks.deliver(&chunk).await?;
            let durable = match &self.collector {
                Some(c) => c.accept_chunk(&chunk).await? != Accepted::InMemory,
                None => true,
            };
            if let (Some(j), Some(id), true) = (&mut self.journal, id, durable) {
                j.end_chunk(&id)?;
            }
        }
        self.settle()
    }

    /// Ends the chunks the collector sink held in memory and has now delivered,
    /// spooled or dropped.
    fn settle(&mut self) -> Result<(), SinkError> {
        if let (Some(c), Some(j)) = (&self.collector, &mut self.journal) {
            for id in c.take_settled() {
                j.end_chunk(&id)?;
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    // A new instance per run: sequence numbers restart at 0, batch IDs never repeat.
    let instance = InstanceId::random();

    let batcher = MinuteBatcher::new(BatchConfig::for_window(args.window))?;
    let collector = match &args.collector {
        Some(url) => Some(Arc::new(CollectorSink::start(
            CollectorConfig::new(url, &host, instance).with_spool_dir(&args.spool_dir),
        )?)),
        None => None,
    };
    let sinks: Vec<Arc<dyn FlowSink>> = vec![Arc::new(SummarySink)];
    let mut pipeline = Pipeline {
        batcher,
        journal: None,
        sinks,
        collector: collector.clone(),
    };

    if let Some(dir) = &args.journal_dir {
        let (mut journal, recovered) =
            RecordJournal::open(dir, &host, instance, JournalConfig::default())?;
        // Chunks in flight at the crash go out again under their old batch ID.
        for rc in &recovered.chunks {
            let durable = match &collector {
                Some(c) => c.accept_frame(rc.encode()?).await? != Accepted::InMemory,
                None => {
                    SummarySink.deliver(&rc.chunk).await?;
                    true
                }
            };
            if durable {
                journal.end_chunk(&rc.batch_id())?;
            }
        }
        pipeline.journal = Some(journal);
        // Records in no chunk are batched again (already journaled).
        for record in recovered.records {
            if let Err(e) = pipeline.batcher.push(record, SystemTime::now()) {
                eprintln!("record refused: {e}");
            }
        }
    }

    let mut capture = FlowCaptureBuilder::new().load()?;
    let mut reader = AsyncFlowReader::new(capture.take_reader()?)?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut records = Vec::new();
    loop {
        tokio::select! {
            read = reader.next_batch(&mut records) => {
                read?;
                for record in records.drain(..) {
                    pipeline.push(record);
                }
            }
            _ = tick.tick() => pipeline.batcher.handle_timeout(SystemTime::now()),
            _ = tokio::signal::ctrl_c() => break,
        }
        if let Some(journal) = &mut pipeline.journal {
            journal.sync_if_due(Instant::now())?;
        }
        pipeline.drain().await?;
    }

    // Shutdown: detach, take what is still in the ring, close the open windows early.
    drop(capture);
    reader.drain(&mut records);
    for record in records.drain(..) {
        pipeline.push(record);
    }
    pipeline.batcher.flush(SystemTime::now());
    pipeline.drain().await?;
    pipeline.sinks.flush().await?;
    if let Some(c) = &collector {
        c.flush().await?;
        c.shut_down().await?;
    }
    pipeline.settle()?;
    if let Some(journal) = &mut pipeline.journal {
        journal.sync()?;
    }
    let counters = pipeline.batcher.counters();
    println!(
        "{} records in, {} chunks out, {} late",
        counters.records_in, counters.chunks_out, counters.records_late
    );
    Ok(())
}

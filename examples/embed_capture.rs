//! Embedding the exporter in another agent, with a sink of its own: every closed TCP
//! socket as one JSON line on stdout (the fields of `flowexporter tail --json`),
//! delivered per window, with the record journal: a crash (even `kill -9`) loses at
//! most the last journal sync, and the next start delivers what was journaled, once.
//!
//! Needs root (or CAP_BPF + CAP_PERFMON) to load the kernel program:
//!
//! ```text
//! sudo cargo run --release --example embed_capture -- --window 10s --journal-dir /tmp/embed
//! ```
//!
//! Ctrl-C or SIGTERM: the capture is detached, the ring drained, the open window closed
//! early and delivered.

use std::{io::Write, path::PathBuf, time::Duration};

use async_trait::async_trait;
use clap::Parser;
use flowexporter::{
    CaptureSource, Exporter, JournalConfig,
    batch::Chunk,
    capture::FlowCaptureBuilder,
    identity::NoIdentity,
    sink::{FlowSink, SinkError, json},
};

#[derive(Debug, Parser)]
struct Args {
    /// Window length (e.g. 10s, 1m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// The record journal's directory.
    #[arg(long, default_value = "/var/tmp/embed_capture/journal")]
    journal_dir: PathBuf,
    /// Longest time between two journal syncs: what a crash may lose at most.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    journal_sync: Duration,
}

/// Our own sink: one JSON line per record, written and flushed per chunk.
struct JsonLines;

#[async_trait]
impl FlowSink for JsonLines {
    fn name(&self) -> &str {
        "json-lines"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        let mut lines = Vec::new();
        for record in &chunk.records {
            json::write_line(&mut lines, record).map_err(SinkError::other)?;
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&lines)
            .and_then(|()| out.flush())
            .map_err(SinkError::other)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let source = CaptureSource::new(FlowCaptureBuilder::new().load()?)?;
    let journal = JournalConfig::default().with_sync_interval(args.journal_sync);
    let exporter = Exporter::builder()
        .window(args.window)
        .journal(&args.journal_dir, journal)
        .build(source, NoIdentity::new(), JsonLines)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!("embed_capture: capturing; Ctrl-C or SIGTERM to stop");
    let report = exporter
        .run_until(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    eprintln!(
        "embed_capture: {} records in, {} chunks out",
        report.batch.records_in, report.batch.chunks_out
    );
    Ok(())
}

//! `flowexporter tail`: print records as they are captured until SIGINT/SIGTERM, then
//! detach and drain what was already captured.

use std::io;

use anyhow::Context;
use flow_capture::{AsyncFlowReader, FlowCapture, FlowRecord};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::TailArgs,
    output::{Format, RecordWriter},
    privileges,
    resolver::ReloadableResolver,
    setup,
};

/// Runs `tail` to completion.
pub fn run(args: TailArgs) -> anyhow::Result<()> {
    // Load and attach, then give up every capability before anything else runs.
    let (capture, resolver) = setup::capture_and_identity(&args.capture)?;
    privileges::drop_all(None)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(tail(args, capture, resolver))
}

async fn tail(
    args: TailArgs,
    mut capture: FlowCapture,
    mut resolver: ReloadableResolver,
) -> anyhow::Result<()> {
    let format = if args.json {
        Format::Json
    } else {
        Format::Table
    };
    let mut reader = AsyncFlowReader::new(capture.take_reader()?)?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut out = RecordWriter::new(io::stdout().lock(), format)?;
    let mut batch: Vec<FlowRecord> = Vec::new();
    tracing::info!("tracing TCP closes; SIGINT or SIGTERM to stop");
    loop {
        tokio::select! {
            r = reader.next_batch(&mut batch) => { r?; }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        resolver.resolve_all(&mut batch);
        if !write_all(&mut out, &mut batch)? {
            return Ok(());
        }
    }
    // Detach first, then drain: every record captured before the detach is printed.
    let counters = capture.counters()?;
    let stats = capture.program_stats()?;
    drop(capture);
    reader.drain(&mut batch);
    batch.iter_mut().for_each(|r| resolver.resolve(r));
    write_all(&mut out, &mut batch)?;
    let read = reader.get_ref().counters();
    tracing::info!(
        records = read.records_read,
        lost_in_kernel = counters.lost(),
        missed_in_interrupts = stats.recursion_misses,
        "stopped"
    );
    Ok(())
}

/// Writes and clears `batch`; returns false when stdout is closed (e.g. `| head`).
fn write_all<W: io::Write>(
    out: &mut RecordWriter<W>,
    batch: &mut Vec<FlowRecord>,
) -> anyhow::Result<bool> {
    for r in batch.drain(..) {
        match out.write(&r) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    Ok(true)
}

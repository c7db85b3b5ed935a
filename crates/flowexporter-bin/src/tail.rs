//! `flowexporter tail`: print records as they are captured until SIGINT/SIGTERM, then
//! detach and drain what was already captured. The same pipeline as `run`, shipping
//! every read at once to a terminal sink.

use std::sync::Arc;

use anyhow::Context;
use flowexporter::{CaptureSource, Exporter, Shipping};
use tokio::sync::Notify;

use crate::{
    cli::TailArgs,
    output::{Format, TerminalSink},
    privileges,
    run::stop_signal,
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
    let format = match args.json {
        true => Format::Json,
        false => Format::Table,
    };
    runtime.block_on(async move {
        let source = CaptureSource::new(capture).context("reading the flow tracer")?;
        // Stdout closed (`| head`): stop as on a signal.
        let closed = Arc::new(Notify::new());
        let sink = TerminalSink::new(format, closed.clone()).context("writing to stdout")?;
        let exporter = Exporter::builder()
            .shipping(Shipping::Immediately)
            .build(source, resolver, sink)
            .context("starting the pipeline")?;
        let signal = stop_signal()?;
        tracing::info!("tracing TCP closes; SIGINT or SIGTERM to stop");
        let stop = async move {
            tokio::select! {
                () = signal => {}
                () = closed.notified() => {}
            }
        };
        exporter.run_until(stop).await?;
        Ok(())
    })
}

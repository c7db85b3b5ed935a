//! `flowexporter tail`: print records as they are captured until SIGINT/SIGTERM, then
//! detach and drain what was already captured. The same pipeline as `run`, shipping
//! every read at once to a terminal sink.

use anyhow::Context;
use flow_sink::{TerminalFormat, TerminalSink};
use flowexporter::{CaptureSource, Exporter, Shipping};

use crate::{cli::TailArgs, privileges, run::stop_signal, setup};

/// Runs `tail` to completion.
pub fn run(args: TailArgs) -> anyhow::Result<()> {
    // Load and attach, then give up every capability before anything else runs.
    let (capture, resolver) = setup::capture_and_identity(&args.capture, None)?;
    privileges::drop_all(None)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let format = match args.json {
        true => TerminalFormat::Json,
        false => TerminalFormat::Table,
    };
    runtime.block_on(async move {
        let source = CaptureSource::new(capture).context("reading the flow tracer")?;
        let sink = TerminalSink::new(format).context("writing to stdout")?;
        // Stdout closed (`| head`): stop as on a signal.
        let closed = sink.closed();
        let exporter = Exporter::builder()
            .window(args.window)
            .interim_records(args.interim)
            .shipping(Shipping::Immediately)
            .build(source, resolver, sink)
            .context("starting the pipeline")?;
        let signal = stop_signal()?;
        tracing::info!("tracing TCP closes; SIGINT or SIGTERM to stop");
        let stop = async move {
            tokio::select! {
                () = signal => {}
                () = closed => {}
            }
        };
        exporter.run_until(stop).await?;
        Ok(())
    })
}

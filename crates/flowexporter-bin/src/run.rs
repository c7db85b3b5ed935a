//! `flowexporter run`: capture -> identity -> minute batches -> collector (or JSON
//! lines on stdout without a collector). SIGTERM/SIGINT close the open window early
//! and deliver or spool it, give the collector at most [`SHUTDOWN_FLUSH`] to take what
//! is spooled, and exit (the rest stays spooled for the next start); a crash (even
//! `kill -9`) loses at most the records of the last journal sync interval. SIGHUP
//! reloads the identity certificate and the configuration (`reload.rs`). Failures of
//! the journal or of the sink do not stop the exporter (`pipeline.rs`).

use std::{io, sync::Arc, time::Duration};

use anyhow::Context;
use flow_batch::{BatchConfig, MinuteBatcher, wire::InstanceId};
use flow_capture::{AsyncFlowReader, FlowCapture, FlowRecord};
use flow_sink::{CollectorConfig, CollectorSink, FlowSink, SpoolConfig, collector_sink::Accepted};
use flowexporter::{JournalConfig, RecordJournal};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::RunArgs,
    metrics::{self, Metrics, Snapshot},
    output::{Format, RecordWriter},
    pipeline::Pipeline,
    privileges,
    reload::Reloader,
    resolver::ReloadableResolver,
    setup,
    user::ServiceUser,
};

/// How often windows are checked for closing and the journal for syncing.
const TICK: Duration = Duration::from_millis(200);

/// How long a stopping exporter gives the collector to take what is spooled. Once
/// chunks are spooled, shutdown needs no network: this bounds the whole stop well
/// inside the systemd unit's `TimeoutStopSec=60`, even with the collector down or
/// not answering. What is not sent stays in the spool for the next start.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Runs the exporter with the configuration in force in `reloader` until SIGTERM or
/// SIGINT.
pub fn run(mut reloader: Reloader) -> anyhow::Result<()> {
    let args = reloader.config().args.clone();
    // An unknown user stops the start before anything is loaded.
    let user = args.user.as_deref().map(ServiceUser::lookup).transpose()?;
    // Load and attach while this is the only thread, then give up root before the
    // runtime starts any other thread.
    let (capture, resolver) = setup::capture_and_identity(&args.capture)?;
    give_up_privileges(user.as_ref(), &args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let metrics = Arc::new(Metrics::default());
        if let Some(addr) = args.metrics_addr {
            metrics::serve(addr, metrics.clone()).await?;
        }
        match args.collector.clone() {
            Some(url) => to_collector(args, url, capture, resolver, reloader, metrics).await,
            None => to_stdout(capture, resolver, &mut reloader, metrics).await,
        }
    })
}

/// Hands the spool and journal directories (when sending to a collector) to `user`,
/// becomes it, and drops every capability. Call it while the process has one thread.
fn give_up_privileges(user: Option<&ServiceUser>, args: &RunArgs) -> anyhow::Result<()> {
    let state_dirs = match args.collector {
        Some(_) => vec![&args.spool_dir, &args.journal_dir],
        None => Vec::new(),
    };
    if let Some(user) = user {
        for dir in &state_dirs {
            user.hand_over(dir)?;
        }
    }
    privileges::drop_all(user)?;
    if let Some(user) = user {
        for dir in &state_dirs {
            user.check_access(dir)?;
        }
    }
    Ok(())
}

/// How often the metrics snapshot is refreshed.
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// Reads every component's counters into the metrics endpoint.
fn publish(
    metrics: &Metrics,
    capture: &FlowCapture,
    reader: &AsyncFlowReader,
    resolver: &ReloadableResolver,
    reloader: &Reloader,
    pipeline: Option<&Pipeline>,
) {
    let mut s = Snapshot {
        reader: reader.get_ref().counters(),
        identity: resolver.counters(),
        reloads: reloader.counters(),
        ..Snapshot::default()
    };
    match capture.counters() {
        Ok(k) => s.kernel = k,
        Err(e) => tracing::debug!("kernel counters unavailable: {e}"),
    }
    match capture.program_stats() {
        Ok(p) => s.program = p,
        Err(e) => tracing::debug!("program statistics unavailable: {e}"),
    }
    if let Some(p) = pipeline {
        s.batch = Some(p.batcher.counters());
        s.batch_refused = p.refused;
        s.sink = Some(p.sink.counters());
        s.journal = Some(p.journal.counters());
        s.pipeline_journal_errors = p.journal_errors;
        s.pipeline_delivery_errors = p.delivery_errors;
        s.pipeline_records_dropped = p.records_dropped;
    }
    metrics.update(&s);
}

fn host_id(args: &RunArgs) -> String {
    args.host_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown-host".into())
    })
}

/// Waits for SIGTERM or SIGINT.
struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stop {
    fn install() -> anyhow::Result<Stop> {
        Ok(Stop {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Without a collector: records as JSON lines on stdout as soon as they are captured.
async fn to_stdout(
    mut capture: FlowCapture,
    mut resolver: ReloadableResolver,
    reloader: &mut Reloader,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let mut reader = AsyncFlowReader::new(capture.take_reader()?)?;
    let mut stop = Stop::install()?;
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut out = RecordWriter::new(io::stdout().lock(), Format::Json)?;
    let mut batch: Vec<FlowRecord> = Vec::new();
    tracing::info!("tracing TCP closes, JSON lines on stdout (no --collector given)");
    let mut tick = tokio::time::interval(METRICS_EVERY);
    loop {
        let hup = tokio::select! {
            r = reader.next_batch(&mut batch) => { r?; false }
            _ = tick.tick() => {
                publish(&metrics, &capture, &reader, &resolver, reloader, None);
                false
            }
            _ = hangup.recv() => hangup_begins(&mut resolver, &mut reader, &mut batch),
            _ = stop.wait() => break,
        };
        resolver.resolve_all(&mut batch);
        for r in batch.drain(..) {
            out.write(&r).context("writing to stdout")?;
        }
        if hup {
            reloader.reload(&mut resolver, None);
        }
    }
    drop(capture);
    reader.drain(&mut batch);
    resolver.resolve_all(&mut batch);
    for r in batch.drain(..) {
        out.write(&r).context("writing to stdout")?;
    }
    Ok(())
}

async fn to_collector(
    args: RunArgs,
    url: String,
    capture: FlowCapture,
    resolver: ReloadableResolver,
    mut reloader: Reloader,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let host = host_id(&args);
    // A new instance per start: batch IDs (host, instance, sequence) never repeat.
    let instance = InstanceId::random();
    let batcher =
        MinuteBatcher::new(BatchConfig::for_window(args.window)).context("batch configuration")?;
    let config = CollectorConfig::new(&url, &host, instance)
        .with_spool_dir(&args.spool_dir)
        .with_spool(SpoolConfig::default().with_max_bytes(args.spool_max_bytes))
        .with_retry(args.retry_policy())
        .with_tls(args.collector_tls())
        // Flushed only when stopping.
        .with_flush_timeout(SHUTDOWN_FLUSH);
    let sink = CollectorSink::start(config).context("starting the collector sink")?;
    let (journal, recovered) = RecordJournal::open(
        &args.journal_dir,
        &host,
        instance,
        JournalConfig::default().with_sync_interval(args.journal_sync),
    )
    .context("opening the record journal")?;
    let mut pipeline = Pipeline::new(batcher, journal, sink);
    // Chunks in flight at a crash go out again under their original batch ID (the
    // collector drops duplicates); records in no chunk are batched again.
    if !recovered.is_empty() {
        tracing::info!(
            chunks = recovered.chunks.len(),
            records = recovered.records.len(),
            "recovered from the journal"
        );
    }
    for rc in &recovered.chunks {
        recover_chunk(&mut pipeline, rc).await;
    }
    for record in recovered.records {
        pipeline.push_journaled(record);
    }

    let result = capture_loop(
        capture,
        resolver,
        &mut reloader,
        &mut pipeline,
        &metrics,
        &url,
    )
    .await;
    // Whatever happened, close the open windows early and deliver or spool them.
    pipeline.batcher.flush(std::time::SystemTime::now());
    pipeline.drain().await;
    pipeline.sync();
    // One attempt, bounded by SHUTDOWN_FLUSH; shutting down does not wait for the
    // collector.
    if let Err(e) = pipeline.sink.flush().await {
        tracing::warn!("flushing the spool: {}", flow_sink::error_chain(&e));
    }
    let sent = pipeline.sink.counters();
    if let Err(e) = pipeline.sink.shut_down().await {
        tracing::warn!("closing the collector sink: {}", flow_sink::error_chain(&e));
    }
    // Chunks kept in memory are now delivered, spooled or dropped: done.
    pipeline.settle();
    pipeline.sync();
    let counters = pipeline.batcher.counters();
    let (journal_errors, delivery_errors) = (pipeline.journal_errors, pipeline.delivery_errors);
    tracing::info!(
        records = counters.records_in,
        chunks = counters.chunks_out,
        late = counters.records_late,
        refused = pipeline.refused,
        journal_errors,
        delivery_errors,
        ?sent,
        "stopped"
    );
    result
}

/// Delivers a chunk the journal recovered (in flight at a crash) under its original
/// batch ID, then marks it done. When the sink could only keep it in memory, its
/// intent stays open until the sink settles it (`Pipeline::settle`); when the sink
/// could not take it at all, it is given up like any chunk (`Pipeline::give_up`).
async fn recover_chunk(pipeline: &mut Pipeline, rc: &flowexporter::RecoveredChunk) {
    let accepted = match rc.encode() {
        Ok(frame) => pipeline.sink.accept_frame(frame).await,
        Err(e) => Err(e),
    };
    let batch_id = rc.batch_id();
    match accepted {
        Ok(Accepted::InMemory) => {}
        Ok(_) => pipeline.end_chunk(&batch_id),
        Err(e) => {
            let what = format!("recovered chunk {batch_id}");
            pipeline.give_up(Some(&batch_id), &what, rc.chunk.records.len(), &e);
        }
    }
}

/// SIGHUP, first part: look at the identity certificate file again now, and take the
/// records already in the ring, so that they are resolved before the configuration
/// read next (which may name another certificate) applies. Returns true: the caller
/// resolves and passes on `batch`, then reloads the configuration.
fn hangup_begins(
    resolver: &mut ReloadableResolver,
    reader: &mut AsyncFlowReader,
    batch: &mut Vec<FlowRecord>,
) -> bool {
    resolver.refresh_now();
    reader.drain(batch);
    true
}

/// Reads records until a stop signal, then detaches and takes what is left.
async fn capture_loop(
    mut capture: FlowCapture,
    mut resolver: ReloadableResolver,
    reloader: &mut Reloader,
    pipeline: &mut Pipeline,
    metrics: &Metrics,
    url: &str,
) -> anyhow::Result<()> {
    let mut reader = AsyncFlowReader::new(capture.take_reader()?)?;
    let mut stop = Stop::install()?;
    let mut tick = tokio::time::interval(TICK);
    let mut batch: Vec<FlowRecord> = Vec::new();
    let mut published = std::time::Instant::now();
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    publish(
        metrics,
        &capture,
        &reader,
        &resolver,
        reloader,
        Some(pipeline),
    );
    // Said once every signal handler is in place.
    tracing::info!(%url, window = ?pipeline.batcher.config().window, "tracing TCP closes, sending to the collector");
    loop {
        let hup = tokio::select! {
            r = reader.next_batch(&mut batch) => { r?; false }
            _ = tick.tick() => false,
            _ = hangup.recv() => hangup_begins(&mut resolver, &mut reader, &mut batch),
            _ = stop.wait() => break,
        };
        resolver.resolve_all(&mut batch);
        pipeline.push_all(batch.drain(..));
        if hup {
            reloader.reload(&mut resolver, Some(&pipeline.sink));
        }
        // Failures are logged and counted there; the loop goes on.
        pipeline.tick();
        pipeline.drain().await;
        if published.elapsed() >= METRICS_EVERY {
            publish(
                metrics,
                &capture,
                &reader,
                &resolver,
                reloader,
                Some(pipeline),
            );
            published = std::time::Instant::now();
        }
    }
    // Detach first, then drain: every record captured before the detach is kept.
    let kernel = capture.counters()?;
    drop(capture);
    reader.drain(&mut batch);
    resolver.resolve_all(&mut batch);
    pipeline.push_all(batch.drain(..));
    tracing::info!(
        lost_in_kernel = kernel.lost(),
        identity = ?resolver.counters(),
        "capture detached"
    );
    Ok(())
}

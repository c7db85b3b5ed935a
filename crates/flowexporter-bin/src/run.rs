//! `flowexporter run`: wires the configuration into the exporter library's pipeline
//! (capture -> identity -> journal -> minute batches -> collector sink, Kafka sink or
//! both, or JSON lines on stdout without either) and runs it until SIGTERM/SIGINT.
//!
//! The pipeline (`flowexporter::Exporter`) closes the open window early on stop and
//! delivers or spools it; the collector gets at most [`SHUTDOWN_FLUSH`] to take what is
//! spooled (the rest stays spooled for the next start); a crash (even `kill -9`) loses
//! at most the records of the last journal sync interval. SIGHUP reloads the identity
//! certificate and the configuration (`reload.rs`) inside the running pipeline.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use flow_batch::wire::InstanceId;
use flow_identity::ReloadableResolver;
use flow_sink::{
    CollectorConfig, CollectorSink, FlowSink, IpfixSink, KafkaSink, KafkaSinkConfig, OtlpSink,
    SpoolConfig, TerminalFormat, TerminalSink,
};
use flowexporter::{CaptureSource, Exporter, ExporterBuilder, JournalConfig, Shipping, View};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::RunArgs,
    config::KafkaTarget,
    exports::{self, Targets},
    metrics::{self, Metrics, Snapshot},
    outputs::{Outputs, Sinks},
    privileges,
    reload::Reloader,
    setup,
    user::ServiceUser,
};

/// How long a stopping exporter gives the collector to take what is spooled. Once
/// chunks are spooled, shutdown needs no network: this bounds the whole stop well
/// inside the systemd unit's `TimeoutStopSec=60`, even with the collector down or
/// not answering. What is not sent stays in the spool for the next start.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Runs the exporter with the configuration in force in `reloader` until SIGTERM or
/// SIGINT.
pub fn run(reloader: Reloader) -> anyhow::Result<()> {
    let args = reloader.config().args.clone();
    // An unknown user stops the start before anything is loaded, and so does a
    // Kafka password file that cannot be read (it is read once, as root).
    let user = args.user.as_deref().map(ServiceUser::lookup).transpose()?;
    let kafka = args.kafka.target()?;
    let exports = args.exports.targets()?;
    // Load and attach while this is the only thread, then give up root before the
    // runtime starts any other thread.
    let (capture, resolver) = setup::capture_and_identity(&args.capture, Some(args.window))?;
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
        let source = CaptureSource::new(capture).context("reading the flow tracer")?;
        let reloader = Arc::new(Mutex::new(reloader));
        let host = host_id(&args);
        // A new instance per start: batch IDs (host, instance, sequence) never repeat.
        let instance = InstanceId::random();
        match outputs(&args, kafka, exports, &host, instance)? {
            Some(sink) => {
                let builder = Exporter::builder()
                    .host_id(host)
                    .instance(instance)
                    .window(args.window)
                    .interim_records(args.interim)
                    .journal(
                        &args.journal_dir,
                        JournalConfig::default().with_sync_interval(args.journal_sync),
                    );
                let outputs = sink.destinations().join(", ");
                let window = args.window;
                let ready = move || tracing::info!(%outputs, ?window, "tracing TCP closes, sending chunks");
                let parts = Parts {
                    source,
                    resolver,
                    sink,
                    also_stop: std::future::pending(),
                };
                run_pipeline(builder, parts, reloader, metrics, ready).await
            }
            None => {
                // Records as JSON lines as soon as they are read.
                let builder = Exporter::builder()
                    .window(args.window)
                    .interim_records(args.interim)
                    .shipping(Shipping::Immediately);
                let ready =
                    || tracing::info!("tracing TCP closes, JSON lines on stdout (no --collector or --kafka-brokers given)");
                let sink = TerminalSink::new(TerminalFormat::Json).context("writing to stdout")?;
                // Stdout closed (`| head`): stop as on a signal.
                let also_stop = sink.closed();
                let parts = Parts {
                    source,
                    resolver,
                    sink,
                    also_stop,
                };
                run_pipeline(builder, parts, reloader, metrics, ready).await
            }
        }
    })
}

/// The sinks chunks go to: the collector sink (`--collector`), the Kafka sink
/// (`--kafka-brokers`, spooling in the spool directory's `kafka`), the OTLP and IPFIX
/// sinks (in `otlp` and `ipfix`), or several; `None` without any. Each is flushed for
/// at most [`SHUTDOWN_FLUSH`] when stopping.
fn outputs(
    args: &RunArgs,
    kafka: Option<KafkaTarget>,
    exports: Targets,
    host: &str,
    instance: InstanceId,
) -> anyhow::Result<Option<Outputs>> {
    let spool = SpoolConfig::default().with_max_bytes(args.spool_max_bytes);
    let collector = match &args.collector {
        Some(url) => {
            let config = CollectorConfig::new(url, host, instance)
                .with_spool_dir(&args.spool_dir)
                .with_spool(spool.clone())
                .with_retry(args.retry_policy())
                .with_tls(args.collector_tls())
                // Flushed only when stopping.
                .with_flush_timeout(SHUTDOWN_FLUSH);
            Some(CollectorSink::start(config).context("starting the collector sink")?)
        }
        None => None,
    };
    let kafka = match kafka {
        Some(KafkaTarget { settings, topic }) => {
            let config = KafkaSinkConfig::new(settings, topic, host, instance)
                .with_spool_dir(args.kafka_spool_dir())
                .with_spool(spool.clone())
                .with_retry(args.retry_policy())
                .with_flush_timeout(SHUTDOWN_FLUSH);
            Some(KafkaSink::start(config).context("starting the Kafka sink")?)
        }
        None => None,
    };
    let common = exports::Common {
        host,
        instance,
        spool_dir: &args.spool_dir,
        spool,
        retry: args.retry_policy(),
        flush_timeout: SHUTDOWN_FLUSH,
    };
    let otlp = exports::otlp_sink(&args.exports, exports.otlp, &common)?;
    let ipfix = exports::ipfix_sink(&args.exports, exports.ipfix, &common)?;
    Ok(Outputs::new(Sinks {
        collector,
        kafka,
        otlp,
        ipfix,
    }))
}

/// Hands the spool and journal directories (when sending chunks: the Kafka sink's
/// spool is inside the spool directory) to `user`,
/// becomes it, and drops every capability. Call it while the process has one thread.
fn give_up_privileges(user: Option<&ServiceUser>, args: &RunArgs) -> anyhow::Result<()> {
    let state_dirs = match args.sends_chunks() {
        true => vec![&args.spool_dir, &args.journal_dir],
        false => Vec::new(),
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

/// The sinks `run` wires, as a SIGHUP reload and the metrics see them.
trait RunSink: FlowSink + 'static {
    /// The sinks chunks go to (whose TLS and retry settings a reload may change),
    /// unless records are JSON lines on stdout.
    fn outputs(&self) -> Option<&Outputs>;
}

impl RunSink for Outputs {
    fn outputs(&self) -> Option<&Outputs> {
        Some(self)
    }
}

impl RunSink for TerminalSink {
    fn outputs(&self) -> Option<&Outputs> {
        None
    }
}

/// What `run` builds the exporter from.
struct Parts<K, F> {
    source: CaptureSource,
    resolver: ReloadableResolver,
    sink: K,
    /// Stops the exporter as SIGTERM does when it completes (stdout closed).
    also_stop: F,
}

/// Builds the exporter from `builder`, publishes its counters on the metrics endpoint,
/// applies SIGHUP reloads inside it, and runs it until SIGTERM or SIGINT (or
/// `also_stop`). `ready` is called once every signal handler is in place and the
/// metrics endpoint shows the running pipeline (so that whoever waits for its log line
/// finds every metric family).
async fn run_pipeline<K: RunSink, F: Future<Output = ()> + Send + 'static>(
    builder: ExporterBuilder,
    parts: Parts<K, F>,
    reloader: Arc<Mutex<Reloader>>,
    metrics: Arc<Metrics>,
    ready: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let Parts {
        source,
        resolver,
        sink,
        also_stop,
    } = parts;
    let published = reloader.clone();
    let exporter = builder
        .build(source, resolver, sink)
        .context("starting the pipeline")?;
    let handle = exporter.handle();
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let reloader = reloader.clone();
            let applied = handle.reload(move |resolver: &mut ReloadableResolver, sink: &K| {
                lock(&reloader).reload(resolver, sink.outputs())
            });
            if !applied {
                break;
            }
        }
    });
    let signal = stop_signal()?;
    let mut ready = Some(ready);
    let exporter = exporter.observe(METRICS_EVERY, move |view| {
        let reloads = lock(&published).counters();
        metrics.update(&snapshot(view, reloads));
        if let Some(ready) = ready.take() {
            ready();
        }
    });
    let stop = async move {
        tokio::select! {
            () = signal => {}
            () = also_stop => {}
        }
    };
    exporter.run_until(stop).await?;
    Ok(())
}

/// The reloader, whichever thread panicked while holding it.
fn lock(reloader: &Mutex<Reloader>) -> std::sync::MutexGuard<'_, Reloader> {
    reloader.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every component's counters, for the metrics endpoint.
fn snapshot<K: RunSink>(
    view: &View<'_, CaptureSource, ReloadableResolver, K>,
    reloads: crate::reload::ReloadCounters,
) -> Snapshot {
    let outputs = view.sink.outputs();
    let mut s = Snapshot {
        reader: view.source.reader_counters(),
        identity: view.resolver.counters(),
        reloads,
        batch: Some(view.batch),
        pipeline: view.pipeline,
        sink: outputs
            .and_then(Outputs::collector)
            .map(CollectorSink::counters),
        kafka: outputs.and_then(Outputs::kafka).map(KafkaSink::counters),
        otlp: outputs.and_then(Outputs::otlp).map(OtlpSink::counters),
        ipfix: outputs.and_then(Outputs::ipfix).map(IpfixSink::counters),
        journal: view.journal,
        ..Snapshot::default()
    };
    if let Some((kernel, program)) = view.source.kernel_counters() {
        s.kernel = kernel;
        s.program = program;
    }
    s
}

fn host_id(args: &RunArgs) -> String {
    args.host_id.clone().unwrap_or_else(flowexporter::host_name)
}

/// Completes on SIGTERM or SIGINT.
pub fn stop_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

//! The exporter as a library: [`ExporterBuilder`] -> [`Exporter`] -> [`run`](Exporter::run).

use std::{future::Future, path::PathBuf, time::Duration};

use flow_batch::{BatchConfig, BatchCounters, wire::InstanceId};
use flow_identity::IdentityResolver;
use flow_sink::{FlowSink, RetryPolicy};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    counters::PipelineCounters,
    error::ExporterError,
    journal::{JournalConfig, JournalCounters, RecordJournal, Recovered},
    pipeline::{
        backlog::BacklogLimits,
        core::{PipelineCore, Shipping},
        driver::Driver,
    },
    source::RecordSource,
};

/// How long a stopping exporter gives its sink at most, by default: for the last
/// chunks, the flush and the close together (see [`ExporterBuilder::shutdown_timeout`]).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A change to make inside the running pipeline ([`ExporterHandle::reload`]).
pub(crate) type Command<R, K> = Box<dyn FnOnce(&mut R, &K) + Send>;

/// A look at the running pipeline's parts, for metrics ([`Exporter::observe`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct View<'a, S, R, K> {
    /// The record source (e.g. [`CaptureSource`](crate::CaptureSource), for the
    /// kernel's counters).
    pub source: &'a S,
    /// The identity resolver.
    pub resolver: &'a R,
    /// The sink.
    pub sink: &'a K,
    /// The pipeline's own counters.
    pub pipeline: PipelineCounters,
    /// The batcher's counters.
    pub batch: BatchCounters,
    /// The journal's counters, when there is a journal.
    pub journal: Option<JournalCounters>,
}

/// A callback given a [`View`] periodically.
pub(crate) struct Observer<S, R, K> {
    pub(crate) every: Duration,
    #[allow(clippy::type_complexity)]
    pub(crate) f: Box<dyn FnMut(&View<'_, S, R, K>) + Send>,
}

/// What a finished run counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The pipeline's own counters.
    pub pipeline: PipelineCounters,
    /// The batcher's counters.
    pub batch: BatchCounters,
    /// The journal's counters, when there was a journal.
    pub journal: Option<JournalCounters>,
}

/// The settings of an exporter; [`build`](ExporterBuilder::build) it with a source, an
/// identity resolver and a sink.
#[derive(Clone, Debug)]
pub struct ExporterBuilder {
    host: Option<String>,
    instance: Option<InstanceId>,
    batch: BatchConfig,
    shipping: Shipping,
    journal: Option<(PathBuf, JournalConfig)>,
    retry: RetryPolicy,
    backlog: BacklogLimits,
    shutdown_timeout: Duration,
    interim: bool,
}

impl Default for ExporterBuilder {
    fn default() -> Self {
        ExporterBuilder {
            host: None,
            instance: None,
            batch: BatchConfig::default(),
            shipping: Shipping::Windows,
            journal: None,
            retry: RetryPolicy::default(),
            backlog: BacklogLimits::default(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            interim: true,
        }
    }
}

impl ExporterBuilder {
    /// The host's identity in batch IDs. Default: the kernel's host name.
    pub fn host_id(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The run's instance in batch IDs. Default: a random one per build, so that
    /// batch IDs never repeat across restarts.
    pub fn instance(mut self, instance: InstanceId) -> Self {
        self.instance = Some(instance);
        self
    }

    /// The window length (default 60 s). The allowed lateness and future skew are
    /// lowered to half the window when they are longer (so that any window from 1 s
    /// is valid); the other batching limits stay as they are.
    pub fn window(mut self, window: Duration) -> Self {
        let (lateness, skew) = (self.batch.allowed_lateness, self.batch.max_future_skew);
        self.batch = self
            .batch
            .with_window(window)
            .with_allowed_lateness(lateness.min(window / 2))
            .with_max_future_skew(skew.min(window / 2));
        self
    }

    /// Every batching limit.
    pub fn batching(mut self, batch: BatchConfig) -> Self {
        self.batch = batch;
        self
    }

    /// When chunks leave (default: when their window closes).
    pub fn shipping(mut self, shipping: Shipping) -> Self {
        self.shipping = shipping;
        self
    }

    /// Journals every record in `dir` before batching it, so that a crash (even
    /// `kill -9`) loses at most the last sync interval of records: the next start
    /// replays the chunks in flight under their batch IDs and batches the rest again.
    pub fn journal(mut self, dir: impl Into<PathBuf>, config: JournalConfig) -> Self {
        self.journal = Some((dir.into(), config));
        self
    }

    /// How a chunk the sink failed to take (`Err`, not permanent) is tried again
    /// (default: [`RetryPolicy::default`], 0.5 s doubling to 60 s, full jitter, for as
    /// long as the backlog holds).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How many chunks (and records) may wait for the sink at most; past that the
    /// oldest is dropped, counted (default [`BacklogLimits::default`]).
    pub fn backlog(mut self, limits: BacklogLimits) -> Self {
        self.backlog = limits;
        self
    }

    /// How long a stopping exporter gives its sink at most, for the last chunks, the
    /// flush and the close together (default [`DEFAULT_SHUTDOWN_TIMEOUT`]); what the
    /// sink has not taken by then stays journaled (or in the sink's spool) for the next
    /// start.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Whether every connection still open shortly before a window closes yields an
    /// interim record in that window (default: yes, when the source can scan its
    /// open sockets, as the kernel capture can).
    pub fn interim_records(mut self, on: bool) -> Self {
        self.interim = on;
        self
    }

    /// The exporter: records from `source`, identity completed by `resolver`,
    /// chunks to `sink`. Nothing is opened yet: the journal is opened (and what it
    /// recovered replayed first) when the exporter runs, on its own thread.
    pub fn build<S, R, K>(
        self,
        source: S,
        resolver: R,
        sink: K,
    ) -> Result<Exporter<S, R, K>, ExporterError>
    where
        S: RecordSource + 'static,
        R: IdentityResolver + 'static,
        K: FlowSink + 'static,
    {
        let host = match self.host {
            Some(host) => host,
            None => host_name(),
        };
        if host.is_empty() {
            return Err(ExporterError::InvalidSetting {
                key: "host_id",
                reason: "must not be empty".into(),
            });
        }
        self.batch.validate()?;
        self.retry
            .validate()
            .map_err(|e| ExporterError::InvalidSetting {
                key: "retry",
                reason: flow_sink::error_chain(&e),
            })?;
        let setup = CoreSetup {
            batch: self.batch,
            shipping: self.shipping,
            journal: self.journal,
            host,
            instance: self.instance.unwrap_or_else(InstanceId::random),
            retry: self.retry,
            backlog: self.backlog,
        };
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (stop_tx, stopped) = watch::channel(false);
        Ok(Exporter {
            driver: Driver {
                source,
                resolver,
                sink,
                setup,
                commands,
                stopped,
                observer: None,
                shutdown_timeout: self.shutdown_timeout,
                interim: self.interim,
            },
            handle: ExporterHandle {
                commands: commands_tx,
                stop: std::sync::Arc::new(stop_tx),
            },
        })
    }
}

/// What the pipeline thread makes its core from.
#[derive(Debug)]
pub(crate) struct CoreSetup {
    batch: BatchConfig,
    shipping: Shipping,
    journal: Option<(PathBuf, JournalConfig)>,
    host: String,
    instance: InstanceId,
    retry: RetryPolicy,
    backlog: BacklogLimits,
}

impl CoreSetup {
    /// Opens the journal, if any, and makes the core, which takes what the journal
    /// recovered (replayed first).
    pub(crate) fn open(self) -> Result<PipelineCore, ExporterError> {
        let (journal, recovered) = match &self.journal {
            Some((dir, config)) => {
                let (journal, recovered) =
                    RecordJournal::open(dir, &self.host, self.instance, config.clone())
                        .map_err(ExporterError::Journal)?;
                (Some(journal), recovered)
            }
            None => (None, Recovered::default()),
        };
        let mut core =
            PipelineCore::new(self.batch, self.shipping, journal, self.host, self.instance)?
                .with_delivery_retry(self.retry, self.backlog);
        core.recover(recovered, std::time::SystemTime::now());
        Ok(core)
    }
}

/// The kernel's host name (the UTS namespace's, from `uname`), `unknown-host` if it
/// has none: the default host ID of batch IDs.
pub fn host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().trim().to_owned();
    match name.is_empty() {
        true => "unknown-host".into(),
        false => name,
    }
}

/// The whole exporter pipeline: source -> identity -> journal -> batcher -> sink,
/// with crash recovery and a graceful drain. Built by [`ExporterBuilder`].
///
/// [`run`](Exporter::run) runs the pipeline on a thread of its own (named
/// `flowexporter-pipeline`) inside the caller's tokio runtime, so that the journal's
/// writes and `fsync`s never stall the runtime's workers (the sink's network tasks, a
/// metrics endpoint). The source, resolver and sink are used from that thread.
pub struct Exporter<S, R, K> {
    driver: Driver<S, R, K>,
    handle: ExporterHandle<R, K>,
}

impl<S, R, K> std::fmt::Debug for Exporter<S, R, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter<(), (), ()> {
    /// The builder, with every default.
    pub fn builder() -> ExporterBuilder {
        ExporterBuilder::default()
    }
}

impl<S, R, K> Exporter<S, R, K>
where
    S: RecordSource + 'static,
    R: IdentityResolver + 'static,
    K: FlowSink + 'static,
{
    /// A handle to stop the running exporter or change it (e.g. on SIGHUP).
    pub fn handle(&self) -> ExporterHandle<R, K> {
        self.handle.clone()
    }

    /// Calls `f` with a view of the pipeline's parts when the run starts (before the
    /// journal's recovered chunks are replayed and before any record is read), every
    /// `every` while it runs, and once more when it has stopped (for metrics).
    pub fn observe(
        mut self,
        every: Duration,
        f: impl FnMut(&View<'_, S, R, K>) + Send + 'static,
    ) -> Self {
        self.driver.observer = Some(crate::exporter::Observer {
            every,
            f: Box::new(f),
        });
        self
    }

    /// Runs until [`ExporterHandle::stop`] or until the source ends; see
    /// [`run_until`](Exporter::run_until).
    pub async fn run(self) -> Result<Report, ExporterError> {
        self.run_until(std::future::pending()).await
    }

    /// Runs until `stop` completes (e.g. SIGTERM), [`ExporterHandle::stop`] is
    /// called, or the source ends. Then it stops the source (a capture detaches) and
    /// takes every record it still holds, closes the open windows early and, within the
    /// shutdown timeout, hands their chunks to the sink (a send under way when the stop
    /// came is finished first), syncs the journal and flushes the sink; then closes the
    /// sink (within what is left of the timeout, or a second). What the sink has not
    /// taken stays journaled for the next start. A source error stops it the same
    /// way, and is returned afterwards. The drain needs the caller's runtime to keep
    /// running until this future completes.
    ///
    /// Must be called inside a tokio runtime (multi-threaded, or current-thread
    /// driven by `block_on`). Dropping the returned future before it completes stops
    /// the exporter as [`ExporterHandle::stop`] does (the pipeline thread drains, then
    /// ends).
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Report, ExporterError> {
        let runtime = tokio::runtime::Handle::current();
        let (done, result) = oneshot::channel();
        let driver = self.driver;
        // Dropping this future (a cancelled task, a select! that went the other way)
        // stops the pipeline, which drains, instead of leaving it running unseen.
        let _stop_on_drop = StopOnDrop(self.handle.stop.clone());
        std::thread::Builder::new()
            .name("flowexporter-pipeline".into())
            .spawn(move || {
                let outcome = runtime.block_on(driver.run(stop));
                let _ = done.send(outcome);
            })
            .map_err(|_| ExporterError::Thread("could not be started"))?;
        result
            .await
            .map_err(|_| ExporterError::Thread("ended without an answer (it panicked)"))?
    }
}

/// Says stop when dropped.
struct StopOnDrop(std::sync::Arc<watch::Sender<bool>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Controls a running [`Exporter`]; cheap to clone.
pub struct ExporterHandle<R, K> {
    commands: mpsc::UnboundedSender<Command<R, K>>,
    stop: std::sync::Arc<watch::Sender<bool>>,
}

impl<R, K> Clone for ExporterHandle<R, K> {
    fn clone(&self) -> Self {
        ExporterHandle {
            commands: self.commands.clone(),
            stop: self.stop.clone(),
        }
    }
}

impl<R, K> std::fmt::Debug for ExporterHandle<R, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterHandle").finish_non_exhaustive()
    }
}

impl<R, K> ExporterHandle<R, K> {
    /// Stops the exporter (it drains first, see [`Exporter::run_until`]).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Changes the running pipeline: the resolver looks at its sources again
    /// ([`IdentityResolver::refresh_now`]), the records already captured are resolved
    /// and batched with the settings in force, then `change` runs with the resolver
    /// and the sink (e.g. a new certificate path, new TLS files). Returns false when
    /// the exporter has already stopped.
    pub fn reload(&self, change: impl FnOnce(&mut R, &K) + Send + 'static) -> bool {
        self.commands.send(Box::new(change)).is_ok()
    }
}

//! The async driver of [`PipelineCore`]: reads the source, resolves identity, feeds
//! the core, hands its chunks to the sink, arms its timers, and drains on shutdown.

use std::{
    future::Future,
    pin::Pin,
    time::{Duration, Instant, SystemTime},
};

use flow_capture::{CaptureError, Snapshot};
use flow_identity::IdentityResolver;
use flow_record::FlowRecord;
use flow_sink::{Accepted, FlowSink, SinkError, error_chain};
use tokio::sync::{mpsc, watch};

use super::{
    core::{PipelineCore, Transmit},
    interim::Interim,
};
use crate::{
    error::ExporterError,
    exporter::{Command, CoreSetup, Observer, Report, View},
    source::RecordSource,
};

/// Longest wait between two looks at the timers and at the sink's settled chunks.
const TICK: Duration = Duration::from_millis(200);

/// Everything the pipeline thread is given.
pub(crate) struct Driver<S, R, K> {
    pub(crate) source: S,
    pub(crate) resolver: R,
    pub(crate) sink: K,
    pub(crate) setup: CoreSetup,
    pub(crate) commands: mpsc::UnboundedReceiver<Command<R, K>>,
    pub(crate) stopped: watch::Receiver<bool>,
    pub(crate) observer: Option<Observer<S, R, K>>,
    pub(crate) shutdown_timeout: Duration,
    /// Whether to take interim records of the open connections at each window's close.
    pub(crate) interim: bool,
}

/// The running pipeline.
struct Running<S, R, K> {
    source: S,
    resolver: R,
    sink: K,
    core: PipelineCore,
    commands: mpsc::UnboundedReceiver<Command<R, K>>,
    stopped: watch::Receiver<bool>,
    observer: Option<Observer<S, R, K>>,
    shutdown_timeout: Duration,
    /// Set when the stop is first seen: what the sink does from then on (a send in
    /// flight, the last chunks, the flush) must be over by then.
    deadline: Option<tokio::time::Instant>,
    /// Interim records: when the next snapshot is due, and the one running.
    interim: Option<Interim>,
}

/// What became of one send.
enum Sent {
    /// The sink answered.
    Answered(Result<Accepted, SinkError>),
    /// The stop came during the send; the sink answered before the deadline.
    AnsweredThenStop(Result<Accepted, SinkError>),
    /// The deadline passed first: the sink has not taken the chunk.
    NotTaken,
}

/// The stop signals a send is raced against.
type Stop<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send)>;

impl<S, R, K> Driver<S, R, K>
where
    S: RecordSource,
    R: IdentityResolver,
    K: FlowSink,
{
    /// Opens the journal (recovering what a previous run left), then runs until
    /// `stop` completes, the handle says stop, or the source ends; then drains.
    pub(crate) async fn run(
        self,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<Report, ExporterError> {
        // On this thread: the journal's recovery reads and rewrites files.
        let mut core = self.setup.open()?;
        let window = core.batch_config().window;
        match self.source.completeness_window() {
            Some(counted) if counted == window => core.report_windows(SystemTime::now()),
            Some(counted) => tracing::warn!(
                ?counted,
                ?window,
                "the capture counts closes by another window length than the batcher's: \
                 chunks carry no completeness"
            ),
            None => {}
        }
        let interim = match self.interim {
            true => self
                .source
                .open_socket_scanner()
                .map(|scanner| Interim::new(scanner, window, SystemTime::now())),
            false => None,
        };
        let running = Running {
            source: self.source,
            resolver: self.resolver,
            sink: self.sink,
            core,
            commands: self.commands,
            stopped: self.stopped,
            observer: self.observer,
            shutdown_timeout: self.shutdown_timeout,
            deadline: None,
            interim,
        };
        running.run(stop).await
    }
}

impl<S, R, K> Running<S, R, K>
where
    S: RecordSource,
    R: IdentityResolver,
    K: FlowSink,
{
    async fn run(mut self, stop: impl Future<Output = ()> + Send) -> Result<Report, ExporterError> {
        let mut stop = std::pin::pin!(stop);
        let mut stopped = self.stopped.clone();
        let mut stop_signals = std::pin::pin!(async move {
            tokio::select! {
                () = &mut stop => {}
                () = wait_stopped(&mut stopped) => {}
            }
        });
        // Observed once before anything else (the caller may say it is ready then).
        self.observe_now();
        // Chunks recovered from the journal go out before anything new.
        let mut ended = !self.send_ready(Some(stop_signals.as_mut())).await;
        let mut batch: Vec<FlowRecord> = Vec::new();
        let mut observed = Instant::now();
        let mut result = Ok(());
        while !ended {
            let mut command = None;
            let wait = self.until_due();
            ended = tokio::select! {
                read = self.source.next_batch(&mut batch) => match read {
                    Ok(more) => !more,
                    Err(e) => {
                        result = Err(e);
                        true
                    }
                },
                _ = tokio::time::sleep(wait) => false,
                Some(c) = self.commands.recv() => {
                    // The records captured so far are resolved with the settings they
                    // were captured under, before the command may change them.
                    self.resolver.refresh_now();
                    self.source.take_ready(&mut batch);
                    command = Some(c);
                    false
                }
                snapshot = Interim::finished(&mut self.interim) => {
                    self.take_snapshot(snapshot, &mut batch);
                    false
                }
                () = stop_signals.as_mut() => {
                    self.stop_seen();
                    true
                }
            };
            if let Some(interim) = &mut self.interim {
                interim.start_if_due(SystemTime::now());
            }
            self.resolver.resolve_all(&mut batch);
            let now = SystemTime::now();
            self.report_windows(now, false);
            self.core.push(batch.drain(..), now);
            if let Some(command) = command {
                command(&mut self.resolver, &self.sink);
            }
            self.core.handle_settled(self.sink.take_settled());
            self.core.handle_timeout(now, Instant::now());
            if !ended {
                ended = !self.send_ready(Some(stop_signals.as_mut())).await;
            }
            if let Some(observer) = &self.observer
                && observed.elapsed() >= observer.every
            {
                self.observe_now();
                observed = Instant::now();
            }
        }
        let report = self.shut_down().await;
        result.map(|()| report)
    }

    /// Hands the source's completeness of the windows closing at `now` (every open
    /// one with `all`) to the core, before their last chunks are made.
    fn report_windows(&mut self, now: SystemTime, all: bool) {
        for window in self.core.windows_to_report(now, all) {
            if let Some(counts) = self.source.completeness(window) {
                self.core.supply_completeness(window, counts);
            }
        }
    }

    /// Appends a finished snapshot's interim records to `batch`.
    fn take_snapshot(
        &mut self,
        snapshot: Result<Snapshot, CaptureError>,
        batch: &mut Vec<FlowRecord>,
    ) {
        match snapshot {
            Ok(snapshot) => {
                tracing::debug!(
                    records = snapshot.records.len(),
                    files = snapshot.files,
                    elapsed = ?snapshot.elapsed,
                    "interim snapshot"
                );
                self.core.count_snapshot(&snapshot);
                batch.extend(snapshot.records);
            }
            Err(e) => {
                self.core.count_failed_snapshot();
                tracing::warn!("interim snapshot failed: {}", error_chain(&e));
            }
        }
    }

    /// How long until the core's next timer (or [`TICK`], whichever is sooner).
    fn until_due(&self) -> Duration {
        let (window, mono) = self.core.poll_timeout();
        let mut wait = TICK;
        if let Some(at) = self.interim.as_ref().and_then(Interim::next_at) {
            wait = wait.min(
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
        if let Some(at) = window {
            wait = wait.min(
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
        if let Some(at) = mono {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        wait
    }

    /// The shutdown deadline, set the first time the stop is seen.
    fn stop_seen(&mut self) -> tokio::time::Instant {
        *self
            .deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + self.shutdown_timeout)
    }

    /// Hands every chunk that is due to the sink, and tells the core what became of
    /// it. When `stop` completes during a send, the send still runs until the
    /// shutdown deadline (a sink that cannot take back a write, a terminal say, must
    /// not see the chunk twice); a send the deadline cuts short leaves its chunk
    /// waiting. Once stopping (`stop` is `None`), every send is bounded by the
    /// deadline. Returns false when the stop came or the deadline passed.
    async fn send_ready(&mut self, mut stop: Option<Stop<'_>>) -> bool {
        while let Some(transmit) = self.core.poll_transmit(Instant::now()) {
            // Past the deadline no send starts: it would only be cut short.
            if self
                .deadline
                .is_some_and(|d| d <= tokio::time::Instant::now())
            {
                self.core.put_back(transmit);
                return false;
            }
            let sent = {
                let mut sending = std::pin::pin!(send(&self.sink, &transmit));
                match stop.as_mut() {
                    Some(stop) => tokio::select! {
                        result = sending.as_mut() => Sent::Answered(result),
                        () = stop.as_mut() => {
                            let deadline = *self.deadline.get_or_insert_with(|| {
                                tokio::time::Instant::now() + self.shutdown_timeout
                            });
                            match tokio::time::timeout_at(deadline, sending.as_mut()).await {
                                Ok(result) => Sent::AnsweredThenStop(result),
                                Err(_) => Sent::NotTaken,
                            }
                        }
                    },
                    None => match self.deadline {
                        Some(deadline) => tokio::time::timeout_at(deadline, sending.as_mut())
                            .await
                            .map_or(Sent::NotTaken, Sent::Answered),
                        None => Sent::Answered(sending.await),
                    },
                }
            };
            match sent {
                Sent::Answered(result) => {
                    self.core.handle_accepted(transmit, result, Instant::now())
                }
                Sent::AnsweredThenStop(result) => {
                    self.core.handle_accepted(transmit, result, Instant::now());
                    return false;
                }
                Sent::NotTaken => {
                    self.core.put_back(transmit);
                    return false;
                }
            }
        }
        true
    }

    fn observe_now(&mut self) {
        if let Some(observer) = &mut self.observer {
            let view = View {
                source: &self.source,
                resolver: &self.resolver,
                sink: &self.sink,
                pipeline: self.core.counters(),
                batch: self.core.batch_counters(),
                journal: self.core.journal_counters(),
            };
            (observer.f)(&view);
        }
    }

    /// Stops the source and takes what it still has, closes every window early, and
    /// by the shutdown deadline: hands the last chunks to the sink (one more attempt
    /// for a chunk that failed), syncs the journal, flushes the sink; then closes it
    /// (by the deadline, or within a second). Chunks the sink did not take stay
    /// journaled for the next start (without a journal they are counted as lost), and
    /// the intents of what it settled end.
    async fn shut_down(mut self) -> Report {
        let deadline = self.stop_seen();
        let mut rest = Vec::new();
        self.source.finish(&mut rest);
        self.resolver.resolve_all(&mut rest);
        let now = SystemTime::now();
        self.report_windows(now, true);
        self.core.push(rest, now);
        self.core.close_windows(now);
        self.core.retry_now();
        let all_sent = self.send_ready(None).await;
        self.core.sync();
        if !all_sent {
            tracing::warn!(
                sink = self.sink.name(),
                timeout = ?self.shutdown_timeout,
                "gave up waiting for the sink; what it has not taken stays journaled for the \
                 next start"
            );
        }
        match tokio::time::timeout_at(deadline, self.sink.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(sink = self.sink.name(), "flushing: {}", error_chain(&e)),
            Err(_) => tracing::warn!(
                sink = self.sink.name(),
                "gave up flushing; what the sink keeps (its spool) stays there for the next start"
            ),
        }
        // Closing stops the sink's own tasks: by the deadline, or within a second.
        let close_by = deadline.max(tokio::time::Instant::now() + Duration::from_secs(1));
        match tokio::time::timeout_at(close_by, self.sink.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(sink = self.sink.name(), "closing: {}", error_chain(&e)),
            Err(_) => tracing::warn!(sink = self.sink.name(), "closing timed out"),
        }
        // Chunks kept in memory are now delivered, spooled or dropped: done.
        self.core.handle_settled(self.sink.take_settled());
        self.core.abandon_backlog();
        self.core.sync();
        self.observe_now();
        let report = Report {
            pipeline: self.core.counters(),
            batch: self.core.batch_counters(),
            journal: self.core.journal_counters(),
        };
        tracing::info!(
            records = report.batch.records_in,
            chunks = report.batch.chunks_out,
            late = report.batch.records_late,
            refused = report.pipeline.batch_refused,
            journal_errors = report.pipeline.journal_errors,
            delivery_errors = report.pipeline.delivery_errors,
            delivery_retries = report.pipeline.delivery_retries,
            records_dropped = report.pipeline.records_dropped,
            "stopped"
        );
        report
    }
}

/// `t` to the sink: `replay` for a recovered chunk, `accept` otherwise.
async fn send<K: FlowSink>(sink: &K, t: &Transmit) -> Result<Accepted, SinkError> {
    match t.replay {
        true => sink.replay(&t.chunk, &t.batch_id).await,
        false => sink.accept(&t.chunk, &t.batch_id).await,
    }
}

/// Completes once `stopped` says stop (or never, once nobody can say it any more).
async fn wait_stopped(stopped: &mut watch::Receiver<bool>) {
    if stopped.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

//! The async driver of [`PipelineCore`]: reads the source, resolves identity, feeds
//! the core, hands its chunks to the sink, arms its timers, and drains on shutdown.

use std::{
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use flow_identity::IdentityResolver;
use flow_record::FlowRecord;
use flow_sink::{FlowSink, error_chain};
use tokio::sync::{mpsc, watch};

use super::core::{PipelineCore, Transmit};
use crate::{
    error::ExporterError,
    exporter::{Command, Observer, Report, View},
    source::RecordSource,
};

/// Longest wait between two looks at the timers and at the sink's settled chunks.
const TICK: Duration = Duration::from_millis(200);

/// Everything the running pipeline owns.
pub(crate) struct Driver<S, R, K> {
    pub(crate) source: S,
    pub(crate) resolver: R,
    pub(crate) sink: K,
    pub(crate) core: PipelineCore,
    pub(crate) commands: mpsc::UnboundedReceiver<Command<R, K>>,
    pub(crate) stopped: watch::Receiver<bool>,
    pub(crate) observer: Option<Observer<S, R, K>>,
    pub(crate) shutdown_timeout: Duration,
}

impl<S, R, K> Driver<S, R, K>
where
    S: RecordSource,
    R: IdentityResolver,
    K: FlowSink,
{
    /// Runs until `stop` completes, the handle says stop, or the source ends; then
    /// drains (see [`shut_down`](Driver::shut_down)).
    pub(crate) async fn run(
        mut self,
        stop: impl Future<Output = ()>,
    ) -> Result<Report, ExporterError> {
        // Chunks recovered from the journal go out before anything new.
        self.send_ready().await;
        self.observe_now();
        tokio::pin!(stop);
        let mut batch: Vec<FlowRecord> = Vec::new();
        let mut observed = Instant::now();
        let mut result = Ok(());
        loop {
            let mut command = None;
            let wait = self.until_due();
            let ended = tokio::select! {
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
                _ = stopped(&mut self.stopped) => true,
                () = &mut stop => true,
            };
            self.resolver.resolve_all(&mut batch);
            self.core.push(batch.drain(..), SystemTime::now());
            if let Some(command) = command {
                command(&mut self.resolver, &self.sink);
            }
            self.core.handle_settled(self.sink.take_settled());
            self.core.handle_timeout(SystemTime::now(), Instant::now());
            self.send_ready().await;
            if let Some(observer) = &self.observer
                && observed.elapsed() >= observer.every
            {
                self.observe_now();
                observed = Instant::now();
            }
            if ended {
                break;
            }
        }
        let report = self.shut_down().await;
        result.map(|()| report)
    }

    /// How long until the core's next timer (or [`TICK`], whichever is sooner).
    fn until_due(&self) -> Duration {
        let (window, sync) = self.core.poll_timeout();
        let mut wait = TICK;
        if let Some(at) = window {
            wait = wait.min(
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
        if let Some(at) = sync {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        wait
    }

    /// Hands every ready chunk to the sink, and tells the core what became of it.
    async fn send_ready(&mut self) {
        while let Some(transmit) = self.core.poll_transmit() {
            let result = self.send(&transmit).await;
            self.core.handle_accepted(&transmit, &result);
        }
    }

    async fn send(&self, t: &Transmit) -> Result<flow_sink::Accepted, flow_sink::SinkError> {
        match t.replay {
            true => self.sink.replay(&t.chunk, &t.batch_id).await,
            false => self.sink.accept(&t.chunk, &t.batch_id).await,
        }
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

    /// Stops the source and takes what it still has, closes every window early,
    /// delivers (or spools) the last chunks, gives the sink at most the shutdown
    /// timeout to flush, closes it, and ends the intents of what it settled.
    async fn shut_down(mut self) -> Report {
        let mut rest = Vec::new();
        self.source.finish(&mut rest);
        self.resolver.resolve_all(&mut rest);
        let now = SystemTime::now();
        self.core.push(rest, now);
        self.core.close_windows(now);
        self.send_ready().await;
        self.core.sync();
        match tokio::time::timeout(self.shutdown_timeout, self.sink.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(sink = self.sink.name(), "flushing: {}", error_chain(&e)),
            Err(_) => tracing::warn!(
                sink = self.sink.name(),
                timeout = ?self.shutdown_timeout,
                "gave up flushing; what the sink keeps stays there for the next start"
            ),
        }
        if let Err(e) = self.sink.close().await {
            tracing::warn!(sink = self.sink.name(), "closing: {}", error_chain(&e));
        }
        // Chunks kept in memory are now delivered, spooled or dropped: done.
        self.core.handle_settled(self.sink.take_settled());
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
            records_dropped = report.pipeline.records_dropped,
            "stopped"
        );
        report
    }
}

/// Completes once `stopped` says stop (or its sender is gone: nobody can say it
/// any more, so it never completes).
async fn stopped(stopped: &mut watch::Receiver<bool>) {
    if stopped.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

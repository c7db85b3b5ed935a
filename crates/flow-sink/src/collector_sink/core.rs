//! The handle every spooling sink of this crate is: it encodes chunks in the caller's
//! task, hands frames to the send task, and reads what the send task publishes. The
//! [`CollectorSink`](super::CollectorSink) and the `KafkaSink` are this core with a
//! transport of their own ([`Transport`]).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use flow_batch::{
    Chunk,
    wire::{BatchId, ChunkEncoder, InstanceId},
};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use super::{
    backlog::Backlog,
    counters::{Counters, Gauges},
    frame::{Frame, encode_as},
    send_task::{Command, SendTask},
    shared::{Settings, Shared},
    transport::Transport,
};
use crate::{
    CollectorCounters,
    error::SinkError,
    retry::RetryPolicy,
    sink::Accepted,
    spool::{Spool, SpoolConfig},
    window_losses::{WindowKey, WindowLosses},
};

/// What a [`SinkCore`] starts with.
pub(crate) struct CoreConfig {
    /// Where frames go, for logs and errors.
    pub(crate) destination: String,
    /// The host identity written into every frame.
    pub(crate) host: String,
    /// This exporter run.
    pub(crate) instance: InstanceId,
    pub(crate) transport: Transport,
    pub(crate) retry: RetryPolicy,
    pub(crate) spool_dir: Option<PathBuf>,
    pub(crate) spool: SpoolConfig,
    pub(crate) memory_max_bytes: u64,
    pub(crate) memory_max_chunks: usize,
    pub(crate) flush_timeout: Duration,
}

/// The handle of a sink: see the [module docs](self).
pub(crate) struct SinkCore {
    pub(crate) shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    settings: watch::Sender<Settings>,
    gauges: watch::Receiver<Gauges>,
    /// Encoding is CPU work: done by the caller, not by the send task.
    encoder: Mutex<ChunkEncoder>,
    /// Taken by the first shut down.
    task: Mutex<Option<JoinHandle<()>>>,
    spooled: bool,
    /// The run chunks handed over without a batch ID are encoded as.
    instance: InstanceId,
    flush_timeout: Duration,
}

impl SinkCore {
    /// Validates the retry policy, opens the spool (picking up what a previous run
    /// left) and starts the send task. `sink` names the sink in the error returned
    /// outside a tokio runtime.
    pub(crate) fn start(
        config: CoreConfig,
        outside_runtime: &'static str,
    ) -> Result<SinkCore, SinkError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SinkError::InvalidConfig {
                key: "runtime",
                value: "none".into(),
                reason: outside_runtime,
            });
        }
        config.retry.validate()?;
        let encoder =
            ChunkEncoder::new(config.host.clone(), config.instance).map_err(|source| {
                SinkError::Codec {
                    operation: "set up the chunk encoder",
                    source,
                }
            })?;
        let shared = Arc::new(Shared {
            destination: config.destination,
            counters: Counters::default(),
            settled: Mutex::default(),
            losses: WindowLosses::default(),
        });
        let backlog = match &config.spool_dir {
            Some(dir) => Some(Backlog::new(
                Spool::open_noting_losses(dir, config.spool.clone(), Some(shared.losses.clone()))?,
                config.memory_max_bytes,
                config.memory_max_chunks,
                Arc::clone(&shared),
            )),
            None => None,
        };
        let (gauges_tx, gauges) = watch::channel(
            backlog
                .as_ref()
                .map_or_else(Gauges::default, Backlog::gauges),
        );
        let (settings, settings_rx) = watch::channel(Settings {
            transport: config.transport,
            retry: config.retry,
        });
        let (commands, commands_rx) = mpsc::channel(16);
        let spooled = backlog.is_some();
        let task = SendTask::new(
            Arc::clone(&shared),
            commands_rx,
            settings_rx,
            gauges_tx,
            backlog,
        );
        Ok(SinkCore {
            shared,
            commands,
            settings,
            gauges,
            encoder: Mutex::new(encoder),
            task: Mutex::new(Some(tokio::spawn(task.run()))),
            spooled,
            instance: config.instance,
            flush_timeout: config.flush_timeout,
        })
    }

    /// Where frames go.
    pub(crate) fn destination(&self) -> &str {
        &self.shared.destination
    }

    /// The retry policy in force.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.settings.borrow().retry.clone()
    }

    /// Replaces the transport and the retry policy (checked first); wakes a sender
    /// waiting to retry, which tries at once with them.
    pub(crate) fn replace(
        &self,
        transport: Transport,
        retry: RetryPolicy,
    ) -> Result<(), SinkError> {
        retry.validate()?;
        self.settings.send_replace(Settings { transport, retry });
        Ok(())
    }

    /// A snapshot of the counters (and of the spool's).
    pub(crate) fn counters(&self) -> CollectorCounters {
        self.shared
            .counters
            .snapshot(&self.gauges.borrow(), self.shared.losses.counts())
    }

    /// Hands over an already encoded frame as it is.
    pub(crate) async fn accept_frame(&self, frame: Vec<u8>) -> Result<Accepted, SinkError> {
        self.hand_over(Frame::new(frame)?).await
    }

    /// Encodes `chunk` (under `id`, or the sink's own host and instance) and hands the
    /// frame over. A window's last chunk first reports in its completeness the records
    /// of the window the sink dropped (see the
    /// [collector sink's docs](super#records-dropped-and-the-windows-completeness));
    /// the chunk is copied only when there is something to add.
    pub(crate) async fn encode_and_hand_over(
        &self,
        chunk: &Chunk,
        id: Option<&BatchId>,
    ) -> Result<Accepted, SinkError> {
        // Only a spool or a memory queue drops frames: without one, nothing to report.
        let window = (self.spooled && chunk.last).then(|| WindowKey {
            instance: id.map_or(self.instance, |id| id.instance),
            start_ms: chunk.window.start_ms(),
        });
        let lost = window.map_or(0, |key| {
            self.shared
                .losses
                .take_for_last(key, chunk.completeness.is_some())
        });
        let reported;
        let chunk = match chunk.completeness {
            Some(mut completeness) if lost > 0 => {
                completeness.lost_spool = completeness.lost_spool.saturating_add(lost);
                let mut copy = chunk.clone();
                copy.completeness = Some(completeness);
                reported = copy;
                &reported
            }
            _ => chunk,
        };
        let result = match encode_as(&self.encoder, chunk, id).and_then(Frame::new) {
            Ok(frame) => self.hand_over(frame).await,
            Err(error) => Err(error),
        };
        // Not taken: the caller may hand the chunk over again.
        if result.is_err()
            && let Some(key) = window
        {
            self.shared.losses.give_back(key, lost);
        }
        result
    }

    /// Gives `frame` to the send task and waits for where it went.
    async fn hand_over(&self, frame: Frame) -> Result<Accepted, SinkError> {
        let closed = || SinkError::Closed {
            url: self.shared.destination.clone(),
        };
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Accept { frame, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// The batch IDs of the frames kept in memory that were settled since the last
    /// call, in the order they were settled.
    pub(crate) fn take_settled(&self) -> Vec<BatchId> {
        let mut settled = self
            .shared
            .settled
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        settled.drain(..).collect()
    }

    /// Stops the send task at once (see
    /// [`CollectorSink::shut_down`](super::CollectorSink::shut_down)); `task` names it
    /// in the error if it ended abnormally.
    pub(crate) async fn shut_down(&self, task: &'static str) -> Result<(), SinkError> {
        let Some(handle) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        let (reply, done) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
        handle
            .await
            .map_err(|source| SinkError::Task { task, source })
    }

    /// Makes a sender waiting out a backoff try at once, and waits (up to the flush
    /// timeout) until nothing is left to send. Without a spool, returns at once.
    pub(crate) async fn flush(&self) -> Result<(), SinkError> {
        if !self.spooled {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.flush_timeout;
        // A sender waiting out a backoff tries now: the peer may be back.
        if self.commands.send(Command::RetryNow).await.is_err() {
            return Ok(());
        }
        let mut gauges = self.gauges.clone();
        let drained = tokio::time::timeout_at(deadline, gauges.wait_for(|g| g.backlog() == 0));
        if !matches!(drained.await, Ok(Ok(_))) {
            tracing::info!(
                destination = %self.shared.destination,
                spooled = self.gauges.borrow().backlog(),
                "flush timed out; the rest stays spooled"
            );
        }
        Ok(())
    }
}

impl Drop for SinkCore {
    fn drop(&mut self) {
        // Without shut_down: stop at once, saving nothing (the spool keeps what it has).
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

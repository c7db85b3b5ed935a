//! The send task: the one task that sends. It owns the backlog (spool and memory
//! queue) or, without a spool, the frames callers wait on; takes frames and orders
//! through a channel; and runs the one retry loop, for frames from any of them.

use std::{collections::VecDeque, pin::Pin, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Sleep,
};

use super::{
    backlog::{Backlog, Place},
    counters::{Gauges, bump},
    frame::Frame,
    shared::{Settings, Shared},
    transport::{Attempt, AttemptFuture, Failure, Refusal},
};
use crate::{error::SinkError, sink::Accepted};

/// What the sink asks of its send task.
pub(crate) enum Command {
    /// Take a frame; the answer says where it went (without a spool: once sent).
    Accept {
        frame: Frame,
        reply: oneshot::Sender<Result<Accepted, SinkError>>,
    },
    /// Stop waiting out a backoff: try now (a flush began).
    RetryNow,
    /// Stop at once, write what is in memory to the spool if it takes it, then
    /// answer.
    Shutdown { reply: oneshot::Sender<()> },
}

/// Where the frame being sent comes from.
enum Source {
    /// The backlog: with a spool.
    Waiting(Place),
    /// A caller waiting for it to be sent (without a spool).
    Caller(oneshot::Sender<Result<Accepted, SinkError>>),
}

/// An attempt in flight, or the wait before the next one.
enum Phase {
    Posting(AttemptFuture),
    BackingOff(Pin<Box<Sleep>>),
}

/// The frame being sent.
struct Job {
    source: Source,
    frame: Frame,
    /// Requests made for it so far.
    attempts: u32,
    phase: Phase,
}

/// What woke the task.
enum Event {
    Command(Option<Command>),
    Reconfigured,
    Answered(Attempt),
    BackoffOver,
    SpoolReadable,
}

/// The send task's state.
pub(crate) struct SendTask {
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    settings: watch::Receiver<Settings>,
    gauges: watch::Sender<Gauges>,
    /// With a spool: what waits to be sent.
    backlog: Option<Backlog>,
    /// Without a spool: frames whose callers wait, oldest first.
    callers: VecDeque<(Frame, oneshot::Sender<Result<Accepted, SinkError>>)>,
    job: Option<Job>,
    /// Reading the spool failed: not before this wait is over.
    spool_backoff: Option<Pin<Box<Sleep>>>,
    spool_failures: u32,
}

impl SendTask {
    /// A task sending what `backlog` holds (or, without one, what callers hand it).
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        settings: watch::Receiver<Settings>,
        gauges: watch::Sender<Gauges>,
        backlog: Option<Backlog>,
    ) -> SendTask {
        SendTask {
            shared,
            commands,
            settings,
            gauges,
            backlog,
            callers: VecDeque::new(),
            job: None,
            spool_backoff: None,
            spool_failures: 0,
        }
    }

    /// Runs until shut down, or until the sink is dropped.
    pub(crate) async fn run(mut self) {
        loop {
            if self.job.is_none() {
                self.job = self.next_job().await;
            }
            let event = tokio::select! {
                command = self.commands.recv() => Event::Command(command),
                changed = self.settings.changed() => match changed {
                    Ok(()) => Event::Reconfigured,
                    Err(_) => Event::Command(None),
                },
                event = job_event(&mut self.job, &mut self.spool_backoff) => event,
            };
            match event {
                // The sink is gone: stop as `Drop` did, without saving anything.
                Event::Command(None) => return,
                Event::Command(Some(Command::Shutdown { reply })) => {
                    // A request in flight is dropped: its frame stays where it is.
                    self.job = None;
                    self.callers.clear();
                    if let Some(backlog) = &mut self.backlog {
                        backlog.save_memory().await;
                    }
                    self.publish();
                    let _ = reply.send(());
                    return;
                }
                Event::Command(Some(Command::Accept { frame, reply })) => {
                    self.accept(frame, reply).await;
                }
                Event::Command(Some(Command::RetryNow)) | Event::Reconfigured => {
                    self.spool_backoff = None;
                    if matches!(
                        &self.job,
                        Some(Job {
                            phase: Phase::BackingOff(_),
                            ..
                        })
                    ) {
                        self.retry();
                    }
                }
                Event::Answered(attempt) => self.answered(attempt).await,
                Event::BackoffOver => self.retry(),
                Event::SpoolReadable => self.spool_backoff = None,
            }
        }
    }

    /// Says what waits now.
    fn publish(&self) {
        let gauges = self
            .backlog
            .as_ref()
            .map_or_else(Gauges::default, Backlog::gauges);
        self.gauges.send_replace(gauges);
    }

    async fn accept(&mut self, frame: Frame, reply: oneshot::Sender<Result<Accepted, SinkError>>) {
        let Some(backlog) = &mut self.backlog else {
            self.callers.push_back((frame, reply));
            return;
        };
        let (accepted, moved) = backlog.accept(frame).await;
        // The frame being sent from memory may have moved to the spool.
        if let Some(Job {
            source: Source::Waiting(place),
            ..
        }) = &mut self.job
            && let Some((_, spool_id)) = moved.iter().find(|(m, _)| Place::Memory(*m) == *place)
        {
            *place = Place::Spool(*spool_id);
        }
        if accepted.is_ok() {
            bump(&self.shared.counters.chunks_accepted, 1);
        }
        self.publish();
        let _ = reply.send(accepted);
    }

    /// The next frame to send, its first request started.
    async fn next_job(&mut self) -> Option<Job> {
        let (source, frame) = match &mut self.backlog {
            None => {
                let (frame, reply) = self.callers.pop_front()?;
                (Source::Caller(reply), frame)
            }
            Some(backlog) => match backlog.next(self.spool_backoff.is_none()).await {
                Ok(Some((place, frame))) => {
                    self.spool_failures = 0;
                    (Source::Waiting(place), frame)
                }
                Ok(None) => {
                    self.publish();
                    return None;
                }
                Err(error) => {
                    tracing::error!(error = %crate::error_chain(&error), "reading the spool failed");
                    // Failures of the spool itself back off like failed requests.
                    self.spool_failures = self.spool_failures.saturating_add(1);
                    let wait = self.backoff(self.spool_failures, None);
                    self.spool_backoff = Some(Box::pin(tokio::time::sleep(wait)));
                    return None;
                }
            },
        };
        let phase = self.post(&frame);
        Some(Job {
            source,
            frame,
            attempts: 1,
            phase,
        })
    }

    fn post(&self, frame: &Frame) -> Phase {
        let transport = self.settings.borrow().transport.clone();
        Phase::Posting(transport.attempt(Arc::clone(&self.shared), frame.clone()))
    }

    /// The wait before the next attempt, for every sink on this task (collector,
    /// Kafka, OTLP, IPFIX): the policy's jittered backoff, or the peer's
    /// `Retry-After` if longer, honoured up to
    /// [`MAX_RETRY_AFTER`](crate::retry::MAX_RETRY_AFTER) rather than the policy's
    /// `max_backoff`.
    fn backoff(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        self.settings
            .borrow()
            .retry
            .backoff(attempts, fastrand::f64(), retry_after)
    }

    /// The answer to the job's request: done with the frame, or wait and retry.
    async fn answered(&mut self, attempt: Attempt) {
        let Some(mut job) = self.job.take() else {
            return;
        };
        match attempt {
            Attempt::Delivered => self.finish(job, None).await,
            Attempt::Reject(refusal) => self.finish(job, Some(refusal)).await,
            Attempt::Retry {
                failure,
                retry_after,
            } => {
                // Only a caller waits for an answer; the spool and memory keep trying.
                if let Source::Caller(_) = &job.source
                    && !self.settings.borrow().retry.may_retry(job.attempts)
                {
                    return self.give_up(job, failure);
                }
                let wait = self.backoff(job.attempts, retry_after);
                job.phase = Phase::BackingOff(Box::pin(tokio::time::sleep(wait)));
                self.job = Some(job);
            }
        }
    }

    /// The backoff is over (or cut short): the next request for the job's frame,
    /// unless it was dropped meanwhile (then it is gone, and counted as dropped).
    fn retry(&mut self) {
        let Some(mut job) = self.job.take() else {
            return;
        };
        if let (Source::Waiting(place), Some(backlog)) = (&job.source, &self.backlog)
            && !backlog.contains(*place)
        {
            return;
        }
        bump(&self.shared.counters.retries, 1);
        job.attempts = job.attempts.saturating_add(1);
        job.phase = self.post(&job.frame);
        self.job = Some(job);
    }

    /// Done with the job's frame: delivered (`rejected` `None`) or refused for good.
    /// A refusal is counted once the frame is set aside.
    async fn finish(&mut self, job: Job, rejected: Option<Refusal>) {
        if let (Source::Waiting(place), Some(backlog)) = (&job.source, &mut self.backlog) {
            let reason = rejected
                .as_ref()
                .map(|refusal| refusal.note(&self.shared.destination));
            backlog.finish(*place, reason).await;
        }
        if let Some(refusal) = &rejected {
            refusal.count(&self.shared, &job.frame);
        }
        match job.source {
            Source::Caller(reply) => {
                let answer = match rejected {
                    None => {
                        bump(&self.shared.counters.chunks_accepted, 1);
                        Ok(Accepted::Sent)
                    }
                    Some(refusal) => Err(refusal.into_error(&self.shared.destination, &job.frame)),
                };
                let _ = reply.send(answer);
            }
            Source::Waiting(_) => self.publish(),
        }
    }

    /// A caller's frame ran out of attempts: the caller gets the last failure.
    fn give_up(&mut self, job: Job, failure: Failure) {
        bump(&self.shared.counters.chunks_failed, 1);
        let failure = failure.into_error(&self.shared.destination, job.attempts);
        if let Source::Caller(reply) = job.source {
            let _ = reply.send(Err(failure));
        }
    }
}

/// Completes when the job's request is answered or its backoff is over, or (with no
/// job) when the spool may be read again; never otherwise.
async fn job_event(job: &mut Option<Job>, spool_backoff: &mut Option<Pin<Box<Sleep>>>) -> Event {
    match job {
        Some(Job {
            phase: Phase::Posting(request),
            ..
        }) => Event::Answered(request.await),
        Some(Job {
            phase: Phase::BackingOff(wait),
            ..
        }) => {
            wait.await;
            Event::BackoffOver
        }
        None => match spool_backoff {
            Some(wait) => {
                wait.await;
                Event::SpoolReadable
            }
            None => std::future::pending().await,
        },
    }
}

//! Where the pipeline's records come from: the kernel capture, or anything else that
//! produces [`FlowRecord`]s (a test, a replay, another agent's own capture).

use async_trait::async_trait;
use flow_capture::{AsyncFlowReader, CaptureCounters, FlowCapture, ProgramStats, ReaderCounters};
use flow_record::FlowRecord;
use tokio::sync::mpsc;

use crate::error::ExporterError;

/// A source of flow records for the [`Exporter`](crate::Exporter).
///
/// The pipeline waits on [`next_batch`](RecordSource::next_batch) together with its
/// timers and its stop signal, so the future must be **cancel-safe**: dropping it
/// before it completes loses no record.
#[async_trait]
pub trait RecordSource: Send {
    /// Waits until records are available and appends them to `out`. `Ok(false)` once
    /// the source has ended (nothing more will come; the pipeline then stops as on its
    /// stop signal). An error stops the pipeline (what was captured is still delivered).
    async fn next_batch(&mut self, out: &mut Vec<FlowRecord>) -> Result<bool, ExporterError>;

    /// Appends the records ready now, without waiting (before a reload, so that they
    /// are resolved with the settings they were captured under).
    fn take_ready(&mut self, out: &mut Vec<FlowRecord>);

    /// Stops the source and appends every record it produced before stopping. Called
    /// once, at shutdown.
    fn finish(&mut self, out: &mut Vec<FlowRecord>);
}

#[async_trait]
impl<S: RecordSource + ?Sized> RecordSource for Box<S> {
    async fn next_batch(&mut self, out: &mut Vec<FlowRecord>) -> Result<bool, ExporterError> {
        (**self).next_batch(out).await
    }

    fn take_ready(&mut self, out: &mut Vec<FlowRecord>) {
        (**self).take_ready(out)
    }

    fn finish(&mut self, out: &mut Vec<FlowRecord>) {
        (**self).finish(out)
    }
}

/// The kernel capture as a source: the loaded program and its ring buffer.
///
/// [`finish`](RecordSource::finish) detaches the program first, then drains the ring:
/// every record captured before the detach is kept.
pub struct CaptureSource {
    /// `None` once detached.
    capture: Option<FlowCapture>,
    reader: AsyncFlowReader,
    /// The kernel's counters at the detach.
    detached: Option<(CaptureCounters, ProgramStats)>,
}

impl std::fmt::Debug for CaptureSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureSource")
            .field("attached", &self.capture.is_some())
            .finish_non_exhaustive()
    }
}

impl CaptureSource {
    /// Takes the ring buffer reader of `capture` and registers it with the current
    /// tokio runtime (call it inside one).
    pub fn new(mut capture: FlowCapture) -> Result<CaptureSource, ExporterError> {
        let reader = AsyncFlowReader::new(capture.take_reader()?)?;
        Ok(CaptureSource {
            capture: Some(capture),
            reader,
            detached: None,
        })
    }

    /// The loaded capture, until [`finish`](RecordSource::finish) detaches it.
    pub fn capture(&self) -> Option<&FlowCapture> {
        self.capture.as_ref()
    }

    /// What the reader has read and decoded.
    pub fn reader_counters(&self) -> ReaderCounters {
        self.reader.get_ref().counters()
    }

    /// The kernel's counters and the program's statistics: live while attached, as
    /// they were at the detach afterwards. `None` when they cannot be read.
    pub fn kernel_counters(&self) -> Option<(CaptureCounters, ProgramStats)> {
        match &self.capture {
            Some(c) => match (c.counters(), c.program_stats()) {
                (Ok(k), Ok(p)) => Some((k, p)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!("kernel counters unavailable: {e}");
                    None
                }
            },
            None => self.detached,
        }
    }
}

#[async_trait]
impl RecordSource for CaptureSource {
    async fn next_batch(&mut self, out: &mut Vec<FlowRecord>) -> Result<bool, ExporterError> {
        self.reader.next_batch(out).await?;
        Ok(true)
    }

    fn take_ready(&mut self, out: &mut Vec<FlowRecord>) {
        self.reader.drain(out);
    }

    fn finish(&mut self, out: &mut Vec<FlowRecord>) {
        self.detached = self.kernel_counters();
        // Detach first, then drain: every record captured before the detach is kept.
        drop(self.capture.take());
        self.reader.drain(out);
        let read = self.reader_counters();
        match self.detached {
            Some((kernel, stats)) => tracing::info!(
                records = read.records_read,
                lost_in_kernel = kernel.lost(),
                missed_in_interrupts = stats.recursion_misses,
                "capture detached"
            ),
            None => tracing::info!(records = read.records_read, "capture detached"),
        }
    }
}

/// The sending half of a [`ChannelSource`]: records pushed here come out of the
/// pipeline. Dropping every sender ends the source (and so the pipeline).
pub type RecordSender = mpsc::Sender<FlowRecord>;

/// Records from a channel: for tests, replays, or an agent with a capture of its own.
#[derive(Debug)]
pub struct ChannelSource {
    rx: mpsc::Receiver<FlowRecord>,
}

/// A source fed through a bounded channel of `capacity` records.
pub fn channel(capacity: usize) -> (RecordSender, ChannelSource) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (tx, ChannelSource { rx })
}

/// Most records taken from the channel in one batch.
const CHANNEL_BATCH: usize = 1024;

#[async_trait]
impl RecordSource for ChannelSource {
    async fn next_batch(&mut self, out: &mut Vec<FlowRecord>) -> Result<bool, ExporterError> {
        // `recv_many` is cancel-safe: a dropped call has taken nothing.
        Ok(self.rx.recv_many(out, CHANNEL_BATCH).await > 0)
    }

    fn take_ready(&mut self, out: &mut Vec<FlowRecord>) {
        while let Ok(record) = self.rx.try_recv() {
            out.push(record);
        }
    }

    fn finish(&mut self, out: &mut Vec<FlowRecord>) {
        self.rx.close();
        self.take_ready(out);
    }
}

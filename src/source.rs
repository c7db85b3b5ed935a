//! Where the pipeline's records come from: the kernel capture, or anything else that
//! produces [`FlowRecord`]s (a test, a replay, another agent's own capture).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flow_batch::{Completeness, Window};
use flow_capture::{
    AsyncFlowReader, CaptureCounters, FlowCapture, OpenSocketScanner, ProgramStats, ReaderCounters,
    window_index,
};
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

    /// A scanner of the open TCP sockets, for interim records at each window's close;
    /// `None` (the default) when the source has none.
    fn open_socket_scanner(&self) -> Option<OpenSocketScanner> {
        None
    }

    /// The window length this source counts closes by, if it does
    /// ([`completeness`](RecordSource::completeness)); the default counts none.
    fn completeness_window(&self) -> Option<Duration> {
        None
    }

    /// What the source knows of `window`'s completeness, asked once as the window
    /// closes, after every record of it was taken (`closes_seen`, `records_emitted`,
    /// the kernel's losses, whether it ran the whole window); `None` by default.
    fn completeness(&mut self, _window: Window) -> Option<Completeness> {
        None
    }
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

    fn open_socket_scanner(&self) -> Option<OpenSocketScanner> {
        (**self).open_socket_scanner()
    }

    fn completeness_window(&self) -> Option<Duration> {
        (**self).completeness_window()
    }

    fn completeness(&mut self, window: Window) -> Option<Completeness> {
        (**self).completeness(window)
    }
}

/// The kernel capture as a source: the loaded program and its ring buffer.
///
/// [`finish`](RecordSource::finish) detaches the program first, then drains the ring:
/// every record captured before the detach is kept.
///
/// Built on a capture that counts closes per window
/// ([`FlowCaptureBuilder::window_counts`](flow_capture::FlowCaptureBuilder::window_counts)),
/// it reports each window's completeness; it offers the capture's open-socket scanner
/// for interim records.
pub struct CaptureSource {
    /// Kept after the detach (its maps hold the last windows' counts).
    capture: Option<FlowCapture>,
    reader: AsyncFlowReader,
    /// The kernel's counters at the detach.
    detached: Option<(CaptureCounters, ProgramStats)>,
    /// When the program was attached (as far as this source knows: when it was made).
    attached_at: SystemTime,
    /// When it was detached.
    detached_at: Option<SystemTime>,
    /// The backup attachment's recursion misses when the last window was reported.
    misses_reported: u64,
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
        let misses_reported = capture.unrecovered_misses().unwrap_or(0);
        Ok(CaptureSource {
            capture: Some(capture),
            reader,
            detached: None,
            attached_at: SystemTime::now(),
            detached_at: None,
            misses_reported,
        })
    }

    /// The loaded capture, until [`finish`](RecordSource::finish) detaches it.
    pub fn capture(&self) -> Option<&FlowCapture> {
        match self.detached_at {
            None => self.capture.as_ref(),
            Some(_) => None,
        }
    }

    /// What the reader has read and decoded.
    pub fn reader_counters(&self) -> ReaderCounters {
        self.reader.get_ref().counters()
    }

    /// The kernel's counters and the program's statistics: live while attached, as
    /// they were at the detach afterwards. `None` when they cannot be read.
    pub fn kernel_counters(&self) -> Option<(CaptureCounters, ProgramStats)> {
        match self.capture() {
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
        // The maps stay (the last windows' counts are read from them).
        if let Some(capture) = self.capture.as_mut()
            && let Err(e) = capture.detach()
        {
            tracing::warn!("detaching the capture: {e}; dropping it instead");
            self.capture = None;
        }
        self.detached_at = Some(SystemTime::now());
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

    fn open_socket_scanner(&self) -> Option<OpenSocketScanner> {
        match self.capture()?.open_socket_scanner() {
            Ok(scanner) => Some(scanner),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }

    fn completeness_window(&self) -> Option<Duration> {
        self.capture.as_ref()?.window_length()
    }

    fn completeness(&mut self, window: Window) -> Option<Completeness> {
        let capture = self.capture.as_ref()?;
        let index = window_index(window.start_ms(), capture.window_length()?);
        let kernel = match capture.window_counts(index)? {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!("reading the window counts of {window}: {e}");
                return None;
            }
        };
        let lost_recursion = match self.detached_at {
            None => {
                let misses = capture.unrecovered_misses().unwrap_or(self.misses_reported);
                let delta = misses.saturating_sub(self.misses_reported);
                self.misses_reported = misses;
                delta
            }
            Some(_) => 0,
        };
        Some(Completeness {
            closes_seen: kernel.closes,
            records_emitted: self.reader.get_ref().records_in_window(index),
            lost_ring_full: kernel.ring_full,
            lost_recursion,
            running_whole_window: self.attached_at <= window.start()
                && self.detached_at.is_none_or(|at| at >= window.end()),
            ..Completeness::default()
        })
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

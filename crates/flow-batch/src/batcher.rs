//! The sans-IO state machine that groups records into wall-clock windows.

use std::{collections::VecDeque, mem, time::SystemTime};

use flow_capture::FlowRecord;

use crate::{
    chunk::Chunk,
    config::BatchConfig,
    counters::BatchCounters,
    error::BatchError,
    window::{self, Window},
    wire,
};

/// Groups flow records into windows on wall-clock boundaries and emits them as chunks.
///
/// A deterministic state machine in the style of `quinn-proto`: it does no I/O and
/// reads no clock. The caller passes the current time to every input and drives it:
///
/// - [`push`](MinuteBatcher::push) a record as it arrives;
/// - arm a timer for [`poll_timeout`](MinuteBatcher::poll_timeout) and call
///   [`handle_timeout`](MinuteBatcher::handle_timeout) when it fires;
/// - after each of those, take every ready chunk with
///   [`poll_chunk`](MinuteBatcher::poll_chunk) until it returns `None`;
/// - on shutdown, [`flush`](MinuteBatcher::flush) and drain the chunks.
///
/// A record goes to the window that contains its own `t_end`. A window closes, and its
/// remaining records are emitted as its `last` chunk, once
/// `now >= window end + allowed_lateness`. A record for a window that has already
/// closed (late), or with a `t_end` more than `max_future_skew` ahead of `now`
/// (future), is counted and placed in the current window: the one containing `now`, or
/// the first window not yet closed if `now` went backwards. It is never dropped.
/// A window that reaches `max_records` records or `max_bytes` encoded bytes emits them
/// at once as a numbered chunk.
#[derive(Debug)]
pub struct MinuteBatcher {
    config: BatchConfig,
    window_ms: u64,
    lateness_ms: u64,
    skew_ms: u64,
    /// Open windows, by start time.
    open: Vec<OpenWindow>,
    /// Every window ending at or before this time (ms since the epoch) is closed.
    closed_until_ms: u64,
    next_sequence: u64,
    ready: VecDeque<Chunk>,
    counters: BatchCounters,
}

#[derive(Debug)]
struct OpenWindow {
    window: Window,
    next_index: u32,
    records: Vec<FlowRecord>,
    bytes: usize,
}

impl MinuteBatcher {
    /// A batcher with validated limits; no window is open yet.
    pub fn new(config: BatchConfig) -> Result<MinuteBatcher, BatchError> {
        config.validate()?;
        Ok(MinuteBatcher {
            window_ms: window::duration_ms(config.window),
            lateness_ms: window::duration_ms(config.allowed_lateness),
            skew_ms: window::duration_ms(config.max_future_skew),
            config,
            open: Vec::new(),
            closed_until_ms: 0,
            next_sequence: 0,
            ready: VecDeque::new(),
            counters: BatchCounters::default(),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Adds a record that arrived at `now`.
    ///
    /// Windows whose time has passed are closed first, as by
    /// [`handle_timeout`](MinuteBatcher::handle_timeout). Fails only for a record that
    /// cannot be encoded (a time before the Unix epoch); that record is counted in
    /// `records_rejected` and handed back inside the error.
    pub fn push(&mut self, record: FlowRecord, now: SystemTime) -> Result<(), BatchError> {
        self.advance(now);
        self.counters.records_in += 1;
        let size = match wire::record_encoded_len(&record) {
            Ok(size) => size,
            Err(source) => {
                self.counters.records_rejected += 1;
                return Err(BatchError::UnencodableRecord {
                    record: Box::new(record),
                    source,
                });
            }
        };
        let now_ms = window::to_ms(now);
        let t_end_ms = window::to_ms(record.t_end);
        let mut target = Window::aligned(t_end_ms, self.window_ms);
        if target.end_ms() <= self.closed_until_ms {
            self.counters.records_late += 1;
            target = self.current_window(now_ms);
        } else if t_end_ms > now_ms.saturating_add(self.skew_ms) {
            self.counters.records_future += 1;
            target = self.current_window(now_ms);
        }
        self.add(target, record, size);
        Ok(())
    }

    /// When [`handle_timeout`](MinuteBatcher::handle_timeout) should next be called:
    /// the close time of the oldest open window. `None` while no window is open.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        self.open
            .first()
            .map(|w| window::from_ms(w.window.end_ms().saturating_add(self.lateness_ms)))
    }

    /// Closes every window whose time (plus the allowed lateness) has passed at `now`.
    pub fn handle_timeout(&mut self, now: SystemTime) {
        self.advance(now);
    }

    /// Closes every open window at once (for shutdown); their last chunks become ready.
    ///
    /// Records pushed afterwards for those windows count as late.
    pub fn flush(&mut self, now: SystemTime) {
        self.advance(now);
        let open = mem::take(&mut self.open);
        for w in open {
            self.closed_until_ms = self.closed_until_ms.max(w.window.end_ms());
            self.counters.windows_flushed += 1;
            self.close(w);
        }
    }

    /// The next chunk ready to send, oldest first.
    pub fn poll_chunk(&mut self) -> Option<Chunk> {
        self.ready.pop_front()
    }

    /// A snapshot of the counters and gauges.
    pub fn counters(&self) -> BatchCounters {
        let mut c = self.counters;
        c.open_windows = self.open.len() as u64;
        c.buffered_records = self.open.iter().map(|w| w.records.len() as u64).sum();
        c.buffered_bytes = self.open.iter().map(|w| w.bytes as u64).sum();
        c.pending_chunks = self.ready.len() as u64;
        c
    }

    /// The window late and future records go to: the one containing `now`, or the
    /// first one not closed yet if `now` went backwards.
    fn current_window(&self, now_ms: u64) -> Window {
        let start = window::align_down(now_ms, self.window_ms).max(self.closed_until_ms);
        Window::aligned(start, self.window_ms)
    }

    fn advance(&mut self, now: SystemTime) {
        let cutoff = window::to_ms(now).saturating_sub(self.lateness_ms);
        let until = window::align_down(cutoff, self.window_ms);
        if until <= self.closed_until_ms {
            return;
        }
        self.closed_until_ms = until;
        let due = self
            .open
            .iter()
            .take_while(|w| w.window.end_ms() <= until)
            .count();
        let closing: Vec<OpenWindow> = self.open.drain(..due).collect();
        for w in closing {
            self.counters.windows_closed += 1;
            self.close(w);
        }
    }

    fn add(&mut self, target: Window, record: FlowRecord, size: usize) {
        let i = match self
            .open
            .binary_search_by_key(&target.start_ms(), |w| w.window.start_ms())
        {
            Ok(i) => i,
            Err(i) => {
                self.open.insert(
                    i,
                    OpenWindow {
                        window: target,
                        next_index: 0,
                        records: Vec::new(),
                        bytes: 0,
                    },
                );
                i
            }
        };
        let (max_records, max_bytes) = (self.config.max_records, self.config.max_bytes);
        let w = &mut self.open[i];
        if !w.records.is_empty() && w.bytes + size > max_bytes {
            let chunk = self.split(i);
            self.emit(chunk);
        }
        let w = &mut self.open[i];
        w.records.push(record);
        w.bytes += size;
        if w.records.len() >= max_records || w.bytes >= max_bytes {
            let chunk = self.split(i);
            self.emit(chunk);
        }
    }

    /// Takes the records of open window `i` as a chunk that is not its last.
    fn split(&mut self, i: usize) -> (Chunk, usize) {
        let w = &mut self.open[i];
        // The next chunk of a busy window is likely as large as this one.
        let capacity = w.records.len();
        let records = mem::replace(&mut w.records, Vec::with_capacity(capacity));
        let bytes = mem::take(&mut w.bytes);
        let index = w.next_index;
        w.next_index += 1;
        self.counters.chunks_split += 1;
        let chunk = Chunk::new(w.window, index, 0, false, records);
        (chunk, bytes)
    }

    fn close(&mut self, w: OpenWindow) {
        let chunk = Chunk::new(w.window, w.next_index, 0, true, w.records);
        self.emit((chunk, w.bytes));
    }

    fn emit(&mut self, (mut chunk, bytes): (Chunk, usize)) {
        chunk.sequence = self.next_sequence;
        self.next_sequence += 1;
        self.counters.chunks_out += 1;
        self.counters.records_out += chunk.records.len() as u64;
        self.counters.bytes_out += bytes as u64;
        self.ready.push_back(chunk);
    }
}

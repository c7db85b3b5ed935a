//! The sans-IO state machine that groups records into wall-clock windows.

use std::{
    collections::VecDeque,
    mem,
    time::{SystemTime, UNIX_EPOCH},
};

use flow_record::FlowRecord;

use crate::{
    chunk::{Chunk, NO_TAG},
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
    /// The last `now` passed in, converted: the records of one drain share it.
    now: Now,
    /// The window of the last record's `t_end`: most records fall in the same one.
    recent: Recent,
    next_sequence: u64,
    ready: VecDeque<Chunk>,
    counters: BatchCounters,
}

/// A `now` and what follows from it.
#[derive(Clone, Copy, Debug)]
struct Now {
    time: SystemTime,
    /// `time` in ms since the epoch.
    ms: u64,
    /// Every window ending at or before this (ms since the epoch) may close at `time`.
    closable_until_ms: u64,
    /// A record closing at or after this is from the future (more than
    /// `max_future_skew` ahead of `time`, in whole milliseconds).
    future_from: SystemTime,
}

impl Now {
    fn at(time: SystemTime, window_ms: u64, lateness_ms: u64, skew_ms: u64) -> Now {
        let ms = window::to_ms(time);
        let cutoff = ms.saturating_sub(lateness_ms);
        Now {
            time,
            ms,
            closable_until_ms: window::align_down(cutoff, window_ms),
            future_from: window::from_ms(ms.saturating_add(skew_ms).saturating_add(1)),
        }
    }
}

/// A window and its bounds as wall-clock times, to place a record in it without
/// converting the record's `t_end` to milliseconds.
#[derive(Clone, Copy, Debug)]
struct Recent {
    window: Window,
    start: SystemTime,
    end: SystemTime,
}

impl Recent {
    fn new(window: Window) -> Recent {
        Recent {
            window,
            start: window.start(),
            end: window.end(),
        }
    }

    /// Whether `t` lies in the window: the same as its milliseconds do, as both
    /// bounds are whole milliseconds.
    fn contains(&self, t: SystemTime) -> bool {
        self.start <= t && t < self.end
    }
}

#[derive(Debug)]
struct OpenWindow {
    window: Window,
    next_index: u32,
    records: Vec<FlowRecord>,
    /// `records[i]`'s tag ([`MinuteBatcher::push_tagged`]); empty while no record of
    /// the current chunk was tagged.
    tags: Vec<u64>,
    bytes: usize,
}

impl MinuteBatcher {
    /// A batcher with validated limits; no window is open yet.
    pub fn new(config: BatchConfig) -> Result<MinuteBatcher, BatchError> {
        config.validate()?;
        let window_ms = window::duration_ms(config.window);
        let lateness_ms = window::duration_ms(config.allowed_lateness);
        let skew_ms = window::duration_ms(config.max_future_skew);
        Ok(MinuteBatcher {
            window_ms,
            lateness_ms,
            skew_ms,
            config,
            open: Vec::new(),
            closed_until_ms: 0,
            // Any time will do until the first call converts its own.
            now: Now::at(UNIX_EPOCH, window_ms, lateness_ms, skew_ms),
            recent: Recent::new(Window::aligned(0, window_ms)),
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
    /// cannot be encoded (a time before the Unix epoch or from 10000-01-01 on); that
    /// record is counted in `records_rejected` and handed back inside the error.
    pub fn push(&mut self, record: FlowRecord, now: SystemTime) -> Result<(), BatchError> {
        self.push_tagged(record, NO_TAG, now)
    }

    /// Adds a record with a tag of the caller's that comes out with it in
    /// [`Chunk::tags`] (e.g. where the record lies in a write-ahead journal, so that
    /// a chunk can be matched to its records' positions without searching); otherwise
    /// as [`push`](MinuteBatcher::push).
    pub fn push_tagged(
        &mut self,
        record: FlowRecord,
        tag: u64,
        now: SystemTime,
    ) -> Result<(), BatchError> {
        let now = self.advance(now);
        self.counters.records_in += 1;
        let size = match wire::encoded_record_len(&record) {
            Ok(size) => size,
            Err(source) => return Err(self.reject(record, source)),
        };
        let target = self.target_window(record.t_end, now);
        let i = self.make_room(target, size);
        // The record goes into its window here rather than through a helper: moving
        // the large `FlowRecord` into each call cost a copy.
        let w = &mut self.open[i];
        if tag != NO_TAG && w.tags.len() < w.records.len() {
            // The first tagged record of this chunk: the untagged ones before it.
            w.tags.resize(w.records.len(), NO_TAG);
        }
        w.records.push(record);
        if tag != NO_TAG || !w.tags.is_empty() {
            w.tags.push(tag);
        }
        w.bytes += size;
        if w.records.len() >= self.config.max_records || w.bytes >= self.config.max_bytes {
            let chunk = self.split(i);
            self.emit(chunk);
        }
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

    /// Ships the records of every open window at once, as chunks that are not their
    /// window's last (counted in `chunks_split`); the windows stay open, and close as
    /// usual. For consumers that want records as soon as they are read (a terminal, a
    /// stream) while keeping chunks within window boundaries.
    pub fn ship_open(&mut self) {
        for i in 0..self.open.len() {
            if !self.open[i].records.is_empty() {
                let chunk = self.split(i);
                self.emit(chunk);
            }
        }
    }

    /// Opens the window containing `now` (unless it is open or closed already) without
    /// a record, so that it closes with a last chunk even if no record comes: for a
    /// sender that reports on every window (its completeness, say), not only on
    /// windows with records. Windows whose time has passed are closed first.
    pub fn open_current(&mut self, now: SystemTime) {
        let now = self.advance(now);
        let current = self.current_window(now.ms);
        self.make_room(current, 0);
    }

    /// The open windows that close at `now` (their end plus the allowed lateness has
    /// passed), oldest first: what [`handle_timeout`](MinuteBatcher::handle_timeout)
    /// or a push at `now` would close.
    pub fn closing_at(&self, now: SystemTime) -> impl Iterator<Item = Window> + '_ {
        let until = Now::at(now, self.window_ms, self.lateness_ms, self.skew_ms).closable_until_ms;
        self.open
            .iter()
            .take_while(move |w| w.window.end_ms() <= until)
            .map(|w| w.window)
    }

    /// The window a record closing at `t_end` pushed at `now` goes to: its own, or
    /// the current one if it is late or from the future. Changes nothing.
    pub fn window_for(&self, t_end: SystemTime, now: SystemTime) -> Window {
        let now = Now::at(now, self.window_ms, self.lateness_ms, self.skew_ms);
        // What a push at `now` closes first.
        let closed_until = self.closed_until_ms.max(now.closable_until_ms);
        let t_end_ms = window::to_ms(t_end);
        let own = Window::aligned(t_end_ms, self.window_ms);
        if own.end_ms() <= closed_until || t_end_ms > now.ms.saturating_add(self.skew_ms) {
            let start = window::align_down(now.ms, self.window_ms).max(closed_until);
            Window::aligned(start, self.window_ms)
        } else {
            own
        }
    }

    /// Every open window, oldest first (what [`flush`](MinuteBatcher::flush) closes).
    pub fn open_windows(&self) -> impl Iterator<Item = Window> + '_ {
        self.open.iter().map(|w| w.window)
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

    /// The window that contains `t_ms`.
    fn window_of(&mut self, t_ms: u64) -> Window {
        if !self.recent.window.contains_ms(t_ms) {
            self.recent = Recent::new(Window::aligned(t_ms, self.window_ms));
        }
        self.recent.window
    }

    /// `now` and what follows from it, converted only when it changed since the last
    /// call (the records of one drain share their `now`).
    fn observe(&mut self, now: SystemTime) -> Now {
        if now != self.now.time {
            self.now = Now::at(now, self.window_ms, self.lateness_ms, self.skew_ms);
        }
        self.now
    }

    /// Closes the windows whose time has passed at `now`, and returns `now` converted.
    #[inline]
    fn advance(&mut self, now: SystemTime) -> Now {
        let now = self.observe(now);
        if now.closable_until_ms > self.closed_until_ms {
            self.close_until(now.closable_until_ms);
        }
        now
    }

    /// Closes every open window ending at or before `until` (ms since the epoch).
    fn close_until(&mut self, until: u64) {
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

    /// Counts a record that cannot be encoded and hands it back in the error.
    #[cold]
    fn reject(&mut self, record: FlowRecord, source: bincode::Error) -> BatchError {
        self.counters.records_rejected += 1;
        BatchError::UnencodableRecord {
            record: Box::new(record),
            source,
        }
    }

    /// The window a record closing at `t_end` goes to when pushed at `now`: its own,
    /// or the current one if it is late or from the future (and counted so).
    fn target_window(&mut self, t_end: SystemTime, now: Now) -> Window {
        let recent = self.recent;
        if recent.contains(t_end)
            && recent.window.end_ms() > self.closed_until_ms
            && t_end < now.future_from
        {
            // Its own window, the same as the last record's, neither late nor future:
            // what follows would find the same without a conversion.
            return recent.window;
        }
        let (t_end_ms, now_ms) = (window::to_ms(t_end), now.ms);
        let own = self.window_of(t_end_ms);
        if own.end_ms() <= self.closed_until_ms {
            self.counters.records_late += 1;
            self.current_window(now_ms)
        } else if t_end_ms > now_ms.saturating_add(self.skew_ms) {
            self.counters.records_future += 1;
            self.current_window(now_ms)
        } else {
            own
        }
    }

    /// The position of `target` among the open windows (opened if need be), once it has
    /// room for a record of `size` bytes: a window whose records would pass `max_bytes`
    /// with it ships them first.
    fn make_room(&mut self, target: Window, size: usize) -> usize {
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
                        tags: Vec::new(),
                        bytes: 0,
                    },
                );
                i
            }
        };
        let w = &self.open[i];
        if !w.records.is_empty() && w.bytes + size > self.config.max_bytes {
            let chunk = self.split(i);
            self.emit(chunk);
        }
        i
    }

    /// Takes the records of open window `i` as a chunk that is not its last.
    fn split(&mut self, i: usize) -> (Chunk, usize) {
        let w = &mut self.open[i];
        // The next chunk of a busy window is likely as large as this one.
        let capacity = w.records.len();
        let records = mem::replace(&mut w.records, Vec::with_capacity(capacity));
        let tag_capacity = w.tags.len();
        let tags = mem::replace(&mut w.tags, Vec::with_capacity(tag_capacity));
        let bytes = mem::take(&mut w.bytes);
        let index = w.next_index;
        w.next_index += 1;
        self.counters.chunks_split += 1;
        let mut chunk = Chunk::new(w.window, index, 0, false, records);
        chunk.tags = tags;
        (chunk, bytes)
    }

    fn close(&mut self, w: OpenWindow) {
        let mut chunk = Chunk::new(w.window, w.next_index, 0, true, w.records);
        chunk.tags = w.tags;
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

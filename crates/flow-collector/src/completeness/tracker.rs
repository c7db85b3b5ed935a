//! The [`WindowTracker`]: chunks in, window reports out, on the caller's clock.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    sync::Arc,
    time::SystemTime,
};

use flow_batch::{
    Completeness, Window,
    wire::{BatchId, InstanceId},
};

use crate::{
    attribution::time::{Nanos, nanos, span},
    completeness::{
        CompletenessConfig, CompletenessStats, Slot, WindowChunk, WindowReport, WindowStatus,
    },
};

/// A window: one exporter run's batch window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct WindowKey {
    host: String,
    instance: InstanceId,
    window: Window,
}

impl WindowKey {
    fn of(chunk: &WindowChunk) -> WindowKey {
        WindowKey {
            host: chunk.batch.host.clone(),
            instance: chunk.batch.instance,
            window: chunk.window,
        }
    }
}

/// A window waiting for its chunks.
#[derive(Clone, Debug)]
struct Open {
    /// The chunk holding the report's slot, and the slot (`None`: the report went out
    /// before a restart under a chunk no longer replayed).
    owner: Option<(Arc<BatchId>, u32)>,
    /// The report was written before a restart: followed, not reported again.
    written: bool,
    final_records: u64,
    interim_records: u64,
    chunks_received: u32,
    /// The last chunk's index plus one, and the completeness it carried.
    last: Option<(u32, Option<Completeness>)>,
}

/// Where a window is.
#[derive(Clone, Debug)]
enum State {
    Open(Box<Open>),
    /// Reported; remembered until its deadline.
    Reported,
}

#[derive(Clone, Debug)]
struct Entry {
    key: WindowKey,
    /// When it is reported (open) or forgotten (reported).
    deadline: Nanos,
    state: State,
}

/// Counts every exporter window's records and reports each window once (sans-IO: the
/// caller passes the time in; see the [module docs](crate::completeness)).
///
/// Feed it every chunk stored, in arrival order, with
/// [`observe`](WindowTracker::observe) (asking [`wants_slot`](WindowTracker::wants_slot)
/// first, before the chunk is stored); call [`advance`](WindowTracker::advance) as
/// time passes; take the reports with [`pop_report`](WindowTracker::pop_report) and
/// the slots resolved without a report with [`pop_silent`](WindowTracker::pop_silent).
#[derive(Debug)]
pub struct WindowTracker {
    config: CompletenessConfig,
    grace: Nanos,
    remember: Nanos,
    /// The latest `now` passed in (time never goes back inside).
    clock: Nanos,
    by_key: crate::attribution::FastMap<WindowKey, u64>,
    entries: crate::attribution::FastMap<u64, Entry>,
    next_id: u64,
    /// (deadline, entry) of open windows; stale once the entry's deadline moved.
    open_deadlines: BinaryHeap<Reverse<(Nanos, u64)>>,
    /// Reported windows in the order they are forgotten (their deadlines rise).
    remembered: VecDeque<u64>,
    open: usize,
    ready: VecDeque<WindowReport>,
    silent: VecDeque<(Arc<BatchId>, u32)>,
    stats: CompletenessStats,
    replaying: bool,
}

impl WindowTracker {
    /// An empty tracker.
    pub fn new(config: CompletenessConfig) -> WindowTracker {
        WindowTracker {
            grace: span(config.grace),
            remember: span(config.remember),
            config,
            clock: 0,
            by_key: Default::default(),
            entries: Default::default(),
            next_id: 0,
            open_deadlines: BinaryHeap::new(),
            remembered: VecDeque::new(),
            open: 0,
            ready: VecDeque::new(),
            silent: VecDeque::new(),
            stats: CompletenessStats::default(),
            replaying: false,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &CompletenessConfig {
        &self.config
    }

    /// While `true`, chunks are replayed from the ledger after a restart: late chunks
    /// are not counted again (windows reported before the restart never are).
    pub fn set_replaying(&mut self, replaying: bool) {
        self.replaying = replaying;
    }

    /// Whether a chunk of `batch`'s run and `window`, about to be stored at `now`,
    /// should hold its window's report slot: it is the first chunk of a window not
    /// seen yet (windows due by `now` are reported first, as by
    /// [`observe`](WindowTracker::observe)).
    pub fn wants_slot(&mut self, batch: &BatchId, window: Window, now: SystemTime) -> bool {
        self.advance(now);
        let key = WindowKey {
            host: batch.host.clone(),
            instance: batch.instance,
            window,
        };
        !self.by_key.contains_key(&key)
    }

    /// Takes one stored chunk, received at `now`, whose ledger entry holds the
    /// window's report slot or not (`slot`). Windows due by `now` are reported first.
    pub fn observe(&mut self, chunk: &WindowChunk, slot: Slot, now: SystemTime) {
        self.advance(now);
        let key = WindowKey::of(chunk);
        let slot_here = (slot != Slot::None).then(|| {
            let index = u32::try_from(chunk.records()).unwrap_or(u32::MAX);
            (Arc::clone(&chunk.batch), index)
        });
        let id = match self.by_key.get(&key) {
            Some(id) => *id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                let state = match &slot_here {
                    Some(owner) => State::Open(Box::new(Open {
                        owner: Some(owner.clone()),
                        written: slot == Slot::Written,
                        final_records: 0,
                        interim_records: 0,
                        chunks_received: 0,
                        last: None,
                    })),
                    // Replayed: the first chunk of this window still in the ledger has
                    // no slot, so the window was reported before it arrived.
                    None => State::Open(Box::new(Open {
                        owner: None,
                        written: true,
                        final_records: 0,
                        interim_records: 0,
                        chunks_received: 0,
                        last: None,
                    })),
                };
                self.by_key.insert(key.clone(), id);
                self.entries.insert(
                    id,
                    Entry {
                        key,
                        deadline: 0,
                        state,
                    },
                );
                self.open += 1;
                self.enforce_cap(id);
                id
            }
        };
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let open = match &mut entry.state {
            State::Reported => {
                if !self.replaying {
                    self.stats.late_chunks += 1;
                }
                if let (Some(owner), Slot::Unwritten) = (slot_here, slot) {
                    self.silent.push_back(owner);
                }
                return;
            }
            State::Open(open) => open,
        };
        if let Some(owner) = slot_here
            && open.owner.as_ref() != Some(&owner)
        {
            // A second slot for one window (replay only): resolved without a report.
            if slot == Slot::Unwritten {
                self.silent.push_back(owner);
            }
        }
        open.final_records += chunk.final_records;
        open.interim_records += chunk.interim_records;
        open.chunks_received = open.chunks_received.saturating_add(1);
        let now = self.clock;
        if chunk.last {
            open.last = Some((chunk.chunk_index.saturating_add(1), chunk.completeness));
            entry.deadline = now.saturating_add(self.grace);
        } else if open.last.is_none() {
            let end = nanos(chunk.window.end());
            entry.deadline = now.max(end).saturating_add(self.grace);
        }
        let complete = open
            .last
            .is_some_and(|(expected, _)| open.chunks_received >= expected);
        if complete {
            self.finish(id, false);
        } else {
            let deadline = entry.deadline;
            self.open_deadlines.push(Reverse((deadline, id)));
        }
    }

    /// Reports the windows whose grace ended by `now`, forgets the reported windows
    /// remembered long enough.
    pub fn advance(&mut self, now: SystemTime) {
        self.clock = self.clock.max(nanos(now));
        while let Some(&Reverse((deadline, id))) = self.open_deadlines.peek() {
            if deadline > self.clock {
                break;
            }
            self.open_deadlines.pop();
            let due = self
                .entries
                .get(&id)
                .is_some_and(|e| e.deadline == deadline && matches!(e.state, State::Open(_)));
            if due {
                self.finish(id, false);
            }
        }
        while let Some(&id) = self.remembered.front() {
            let done = self
                .entries
                .get(&id)
                .is_none_or(|e| e.deadline <= self.clock);
            if !done {
                break;
            }
            self.remembered.pop_front();
            self.forget(id);
        }
    }

    /// The next report, if any.
    pub fn pop_report(&mut self) -> Option<WindowReport> {
        self.ready.pop_front()
    }

    /// The next slot resolved without a report (a window whose last chunk carried no
    /// completeness): the caller marks it written.
    pub fn pop_silent(&mut self) -> Option<(Arc<BatchId>, u32)> {
        self.silent.pop_front()
    }

    /// When [`advance`](WindowTracker::advance) has something to do next.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        let open = self.open_deadlines.peek().map(|Reverse((d, _))| *d);
        let remembered = self
            .remembered
            .front()
            .and_then(|id| self.entries.get(id))
            .map(|e| e.deadline);
        [open, remembered]
            .into_iter()
            .flatten()
            .min()
            .map(crate::attribution::time::system_time)
    }

    /// Counters and sizes.
    pub fn stats(&self) -> CompletenessStats {
        let mut s = self.stats;
        s.windows_open = self.open as u64;
        s.windows_remembered = (self.entries.len() - self.open) as u64;
        s
    }

    /// Reports the open window `id` (unless written before a restart, or without a
    /// completeness) and remembers it.
    fn finish(&mut self, id: u64, evicted: bool) {
        let remember_until = self.clock.saturating_add(self.remember);
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let State::Open(open) = std::mem::replace(&mut entry.state, State::Reported) else {
            return;
        };
        let open = *open;
        entry.deadline = remember_until;
        self.open -= 1;
        self.remembered.push_back(id);
        self.stats.windows_evicted += u64::from(evicted);
        let Some((batch, record_index)) = open.owner else {
            return;
        };
        if open.written {
            return;
        }
        let status = match open.last {
            Some((expected, _)) if open.chunks_received >= expected => WindowStatus::AllChunks,
            Some(_) => WindowStatus::ChunksMissing,
            None => WindowStatus::LastChunkMissing,
        };
        let completeness = open.last.and_then(|(_, c)| c);
        if completeness.is_none() && status != WindowStatus::LastChunkMissing {
            // An exporter that does not report completeness (wire format 1).
            self.silent.push_back((batch, record_index));
            return;
        }
        let report = WindowReport {
            batch,
            record_index,
            instance: entry.key.instance,
            window: entry.key.window,
            status,
            completeness,
            chunks_expected: open.last.map(|(n, _)| n),
            chunks_received: open.chunks_received,
            records_received: open.final_records,
            interim_records_received: open.interim_records,
        };
        let s = &mut self.stats;
        s.windows[status.index()] += 1;
        s.windows_not_adding_up += u64::from(!report.adds_up());
        s.records_received += report.records_received;
        if let Some(c) = completeness {
            s.closes_seen += c.closes_seen;
            s.records_emitted += c.records_emitted;
            s.lost_ring_full += c.lost_ring_full;
            s.lost_recursion += c.lost_recursion;
            s.lost_journal += c.lost_journal;
            s.lost_spool += c.lost_spool;
            s.interim_records += c.interim_records;
        }
        self.ready.push_back(report);
    }

    /// Drops the reported window `id`.
    fn forget(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            if matches!(entry.state, State::Open(_)) {
                self.open -= 1;
            }
            self.by_key.remove(&entry.key);
        }
    }

    /// Above the cap: forgets the oldest reported windows, then reports the open
    /// windows nearest their deadline (never `keep`, the window being added).
    fn enforce_cap(&mut self, keep: u64) {
        while self.entries.len() > self.config.max_windows {
            if let Some(id) = self.remembered.pop_front() {
                self.forget(id);
                continue;
            }
            let Some(Reverse((deadline, id))) = self.open_deadlines.pop() else {
                break;
            };
            let live = self
                .entries
                .get(&id)
                .is_some_and(|e| e.deadline == deadline && matches!(e.state, State::Open(_)));
            if live && id != keep {
                self.finish(id, true);
                // Reported, and remembered: forgotten at the next turn if still over.
            }
        }
    }
}

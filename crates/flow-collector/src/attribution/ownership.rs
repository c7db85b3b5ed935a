//! The ownership map: per IP, a sorted list of non-overlapping time segments, each
//! owned by one workload, marked as a conflict (two workloads claimed it), or marked
//! shared (the connect map's shared IPv4: workloads told apart by port only).
//!
//! One segment costs `size_of::<Segment>()` = 24 bytes (two `u64` times and a
//! [`Mark`] of 8 bytes; workloads are interned to 4-byte symbols). An IP costs its
//! hash table slot (`size_of::<(IpKey, IpEntry)>()` = 64 bytes and a control byte,
//! at a load factor of at most 7/8), which holds its first segment, the allocation
//! of its segments when it has more than one, and one entry (20 bytes) in the
//! bucket list of its oldest segment's end.
//!
//! Forgetting (retention and the size cap) goes oldest end first, through buckets of
//! one second of end time: each IP is filed under the bucket of its first segment's
//! end, so the oldest ranges are found without scanning the map. Whatever ends at or
//! before the *horizon* has been, or may have been, forgotten: a lookup whose window
//! reaches back to the horizon answers [`MapAnswer::BeforeRetention`].

use std::{
    collections::{BTreeMap, hash_map::Entry},
    mem::size_of,
};

use flow_record::WorkloadId;

use crate::attribution::{
    FastMap,
    conflict_log::{ConflictExample, ConflictLog},
    ip_key::IpKey,
    time::Nanos,
    workloads::{Sym, Workloads},
};

/// Width of a bucket of end times.
const BUCKET: Nanos = 1_000_000_000;

/// What a segment says about its time span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Mark {
    /// One workload's heartbeats, and no other's.
    Owned(Sym),
    /// Two workloads claimed it: never used to attribute.
    Conflict,
    /// A shared IPv4 of the connect map: only the peer's record can tell.
    Shared,
}

/// A time span of one IP, both ends included. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// First nanosecond.
    pub(crate) start: Nanos,
    /// Last nanosecond.
    pub(crate) end: Nanos,
    /// What it says.
    pub(crate) mark: Mark,
}

/// One IP's segments, and the bucket it is filed under. With its key, 64 bytes: an
/// IP with one segment (most of them) costs one cache line and no allocation.
#[derive(Debug)]
pub(crate) struct IpEntry {
    segs: Segs,
    filed: u64,
}

/// An IP's sorted segments: one inline, or more on the heap.
#[derive(Debug)]
enum Segs {
    One(Segment),
    Many(Vec<Segment>),
}

impl Segs {
    fn as_slice(&self) -> &[Segment] {
        match self {
            Segs::One(s) => std::slice::from_ref(s),
            Segs::Many(v) => v,
        }
    }

    fn last_mut(&mut self) -> Option<&mut Segment> {
        match self {
            Segs::One(s) => Some(s),
            Segs::Many(v) => v.last_mut(),
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Segments allocated on the heap.
    fn heap_capacity(&self) -> usize {
        match self {
            Segs::One(_) => 0,
            Segs::Many(v) => v.capacity(),
        }
    }

    /// Applies `f` to the segments as a vector (one inline segment goes to the heap
    /// for it, and comes back inline when one is left).
    fn with_vec(&mut self, f: impl FnOnce(&mut Vec<Segment>)) {
        match self {
            Segs::Many(v) => f(v),
            Segs::One(seg) => {
                let mut v = vec![*seg];
                f(&mut v);
                *self = match v.as_slice() {
                    [one] => Segs::One(*one),
                    _ => Segs::Many(v),
                };
            }
        }
    }
}

/// What a heartbeat claims (the engine interns the workload itself and calls
/// [`OwnershipMap::insert_mark`]).
#[cfg(test)]
#[derive(Clone, Debug)]
pub(crate) enum Claim<'a> {
    /// The workload owns the IP.
    Owned(&'a WorkloadId),
    /// The IP is shared through the connect map.
    Shared,
}

/// What the map says about an IP near a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MapAnswer {
    /// One workload, and no other claim, within the window.
    Owner(WorkloadId),
    /// Nothing within the window.
    NoOwner,
    /// A conflict within the window.
    Conflicting,
    /// A shared mark within the window.
    Shared,
    /// Two workloads one after the other within the window.
    OwnerChanged,
    /// The window reaches back to what was forgotten.
    BeforeRetention,
    /// One workload, and no other claim, within the window, but its heartbeats do not
    /// confirm the flow's time: they neither cover the whole window nor began while
    /// the flow was alive for at least the tolerance (see [`OwnershipMap::lookup_flow`]).
    Unconfirmed,
}

/// How long the map must have known an IP's history with no owner before a first
/// owner's claim is trusted for a flow that began just before it (5 minutes: five
/// chunk windows; a previous owner would have had to lose every record of them).
pub(crate) const FRESH_GUARD: Nanos = 300_000_000_000;

/// Counters of the map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MapCounters {
    /// Heartbeats applied.
    pub(crate) heartbeats: u64,
    /// Heartbeats that ended at or before the horizon.
    pub(crate) heartbeats_too_old: u64,
    /// Overlaps of two workloads' claims.
    pub(crate) conflicts: u64,
    /// Segments removed by the size cap.
    pub(crate) evicted: u64,
    /// Segments removed by retention.
    pub(crate) expired: u64,
}

/// The ownership map.
#[derive(Debug)]
pub(crate) struct OwnershipMap {
    ips: FastMap<IpKey, IpEntry>,
    /// Bucket (end time / [`BUCKET`]) -> IPs filed under it (some stale).
    buckets: BTreeMap<u64, Vec<IpKey>>,
    workloads: Workloads,
    /// Segments in the map.
    ranges: usize,
    /// Segments the IPs' allocations can hold.
    seg_capacity: usize,
    horizon: Nanos,
    /// When the map started listening (the first chunk's arrival): before it, and
    /// before the horizon, the map knows nothing of any IP.
    known_since: Option<Nanos>,
    merge_gap: Nanos,
    tolerance: Nanos,
    /// How far a shared mark reaches before and after its record (0: its interval).
    shared_reach: Nanos,
    scratch: Vec<Segment>,
    counters: MapCounters,
    log: ConflictLog,
}

/// How far apart two segments of one mark may be and still join: touching for
/// conflicts, the merge gap (at least touching) for the others.
fn join_gap(mark: Mark, merge_gap: Nanos) -> Nanos {
    match mark {
        Mark::Conflict => 1,
        Mark::Owned(_) | Mark::Shared => merge_gap.max(1),
    }
}

impl OwnershipMap {
    /// An empty map.
    pub(crate) fn new(merge_gap: Nanos, tolerance: Nanos) -> OwnershipMap {
        OwnershipMap {
            ips: FastMap::default(),
            buckets: BTreeMap::new(),
            workloads: Workloads::default(),
            ranges: 0,
            seg_capacity: 0,
            horizon: 0,
            known_since: None,
            merge_gap,
            tolerance,
            shared_reach: 0,
            scratch: Vec::new(),
            counters: MapCounters::default(),
            log: ConflictLog::default(),
        }
    }

    /// Notes the time chunks arrive (the first one starts the map's knowledge).
    pub(crate) fn observe(&mut self, now: Nanos) {
        if self.known_since.is_none() {
            self.known_since = Some(now);
        }
    }

    /// Whether `seg`, the first segment of its IP, began long enough after the map
    /// started knowing the IP's history ([`FRESH_GUARD`]) that no earlier owner can
    /// have gone unseen, except one whose every record in that time was lost.
    fn is_fresh(&self, seg_start: Nanos) -> bool {
        let Some(since) = self.known_since else {
            return false;
        };
        seg_start >= since.max(self.horizon).saturating_add(FRESH_GUARD)
    }

    /// Applies a heartbeat: `claim` over `[start, end]` on `key`. Returns whether it
    /// was applied (it is not when it ended at or before the horizon).
    #[cfg(test)]
    pub(crate) fn insert(
        &mut self,
        key: IpKey,
        start: Nanos,
        end: Nanos,
        claim: Claim<'_>,
    ) -> bool {
        if self.horizon > 0 && end <= self.horizon {
            self.counters.heartbeats_too_old += 1;
            return false;
        }
        let mark = match claim {
            Claim::Owned(id) => match self.workloads.intern(id) {
                Some(sym) => Mark::Owned(sym),
                // Four billion live workloads: nothing sane reaches it; not a claim.
                None => return false,
            },
            Claim::Shared => Mark::Shared,
        };
        self.insert_mark(key, start, end, mark)
    }

    /// Makes every shared mark reach `reach` before and after its record's interval.
    ///
    /// A shared IPv4 stays shared: the host's own records (certificate or IP map, for
    /// sockets the connect map does not know) claim the same IP as one owner's, which
    /// a flow to one of the per-port workloads must never be given. With the
    /// retention as the reach, no per-IP answer is given on such an IP while the map
    /// remembers any of its connect-map records.
    pub(crate) fn with_shared_reach(mut self, reach: Nanos) -> OwnershipMap {
        self.shared_reach = reach;
        self
    }

    /// The symbol of `id`, interned on first sight (`None` when every symbol is
    /// taken): what [`insert_mark`](OwnershipMap::insert_mark) and the peer index take.
    #[inline]
    pub(crate) fn intern(&mut self, id: &WorkloadId) -> Option<Sym> {
        self.workloads.intern(id)
    }

    /// The workload a symbol stands for.
    #[inline]
    pub(crate) fn workload(&self, sym: Sym) -> Option<&WorkloadId> {
        self.workloads.name(sym)
    }

    /// Applies a heartbeat: `mark` over `[start, end]` on `key` (a claim with its
    /// workload already interned). Returns whether it was applied (it is not when it
    /// ended at or before the horizon).
    pub(crate) fn insert_mark(&mut self, key: IpKey, start: Nanos, end: Nanos, mark: Mark) -> bool {
        let (start, end) = match mark {
            Mark::Shared => (
                start.saturating_sub(self.shared_reach),
                end.saturating_add(self.shared_reach),
            ),
            _ => (start, end),
        };
        if self.horizon > 0 && end <= self.horizon {
            self.counters.heartbeats_too_old += 1;
            return false;
        }
        let start = start.min(end);
        self.counters.heartbeats += 1;
        let gap = join_gap(mark, self.merge_gap);
        let entry = match self.ips.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let bucket = end / BUCKET;
                v.insert(IpEntry {
                    segs: Segs::One(Segment { start, end, mark }),
                    filed: bucket,
                });
                self.buckets.entry(bucket).or_default().push(key);
                self.ranges += 1;
                return true;
            }
        };
        // The common case: the same claim again, extending the IP's last segment.
        if let Some(last) = entry.segs.last_mut()
            && last.mark == mark
            && start >= last.start
            && start <= last.end.saturating_add(gap)
        {
            last.end = last.end.max(end);
            return true;
        }
        let cap_before = entry.segs.heap_capacity();
        let len_before = entry.segs.len();
        let mut conflicts_with = None;
        let (scratch, merge_gap, conflicts) = (
            &mut self.scratch,
            self.merge_gap,
            &mut self.counters.conflicts,
        );
        entry.segs.with_vec(|segs| {
            splice_claim(
                segs,
                scratch,
                start,
                end,
                mark,
                merge_gap,
                |other| conflicts_with = Some(other),
                conflicts,
            );
        });
        self.ranges = self.ranges + entry.segs.len() - len_before;
        self.seg_capacity = self.seg_capacity + entry.segs.heap_capacity() - cap_before;
        if let Some(first) = entry.segs.as_slice().first() {
            let bucket = first.end / BUCKET;
            if bucket < entry.filed {
                entry.filed = bucket;
                self.buckets.entry(bucket).or_default().push(key);
            }
        }
        if let (Some(other), Mark::Owned(sym)) = (conflicts_with, mark) {
            let workloads = &self.workloads;
            self.log.note(|| {
                Some(ConflictExample {
                    ip: key.ip(),
                    scoped: key.is_scoped(),
                    first: workloads.name(other)?.clone(),
                    second: workloads.name(sym)?.clone(),
                })
            });
        }
        true
    }

    /// What the map says about `key` at `t` (within the tolerance).
    #[cfg(test)]
    pub(crate) fn lookup(&self, key: &IpKey, t: Nanos) -> MapAnswer {
        self.lookup_flow(key, t, t)
    }

    /// Who owned `key` at `t`, the start of a flow that lasted until `flow_end`.
    ///
    /// Every segment within `t ± tolerance` must be owned by one workload W, and W's
    /// claim must confirm the time: either one of W's segments covers the whole window
    /// (the clocks' skew cannot put the flow outside it), or W's segment begins inside
    /// the window (the first connection to a new owner: the client's socket opens
    /// before the server's) and the flow was alive for at least the tolerance after
    /// that beginning. A flow that ended before W's first heartbeat (plus the
    /// tolerance) may have reached the IP's previous owner, whose last records were
    /// lost: it is [`MapAnswer::Unconfirmed`], never W, unless W is the first owner
    /// the IP had since the map has known it for [`FRESH_GUARD`]. So is a flow near the end of
    /// W's last heartbeat, where the next owner's first records may be the ones lost.
    pub(crate) fn lookup_flow(&self, key: &IpKey, t: Nanos, flow_end: Nanos) -> MapAnswer {
        let lo = t.saturating_sub(self.tolerance);
        let hi = t.saturating_add(self.tolerance);
        if self.horizon > 0 && lo <= self.horizon {
            return MapAnswer::BeforeRetention;
        }
        let Some(entry) = self.ips.get(key) else {
            return MapAnswer::NoOwner;
        };
        let segs = entry.segs.as_slice();
        let first = segs.partition_point(|s| s.end < lo);
        let mut owner = None;
        let (mut changed, mut shared, mut confirmed) = (false, false, false);
        for (i, seg) in segs[first..]
            .iter()
            .enumerate()
            .take_while(|(_, s)| s.start <= hi)
        {
            match seg.mark {
                Mark::Conflict => return MapAnswer::Conflicting,
                Mark::Shared => shared = true,
                Mark::Owned(sym) => {
                    match owner {
                        Some(o) if o != sym => changed = true,
                        _ => owner = Some(sym),
                    }
                    let covers = seg.start <= lo && seg.end >= hi;
                    let begins_inside = seg.start > lo;
                    let lived_into = begins_inside
                        && flow_end.max(t).min(seg.end) >= seg.start.saturating_add(self.tolerance);
                    // The first owner an IP ever had (in what the map knows): nobody
                    // else's connection can have been cut short by the handover.
                    let first_owner = begins_inside && first + i == 0 && self.is_fresh(seg.start);
                    confirmed |= covers || lived_into || first_owner;
                }
            }
        }
        if shared {
            MapAnswer::Shared
        } else if changed {
            MapAnswer::OwnerChanged
        } else {
            match owner.and_then(|sym| self.workloads.name(sym)) {
                Some(id) if confirmed => MapAnswer::Owner(id.clone()),
                Some(_) => MapAnswer::Unconfirmed,
                None => MapAnswer::NoOwner,
            }
        }
    }

    /// Forgets the segments that ended before `cutoff` (retention): the horizon rises
    /// to `cutoff`. Segments are removed one whole bucket at a time, once the bucket
    /// lies entirely before the cutoff; those still in the map but behind the horizon
    /// are never used.
    pub(crate) fn expire(&mut self, cutoff: Nanos) {
        self.horizon = self.horizon.max(cutoff);
        while let Some((&bucket, _)) = self.buckets.first_key_value() {
            if bucket.saturating_add(1).saturating_mul(BUCKET) > cutoff {
                break;
            }
            let removed = self.forget_bucket(bucket, cutoff);
            self.counters.expired += removed.0;
        }
    }

    /// Evicts the oldest segments (by end) while there are more than `max`, down to
    /// 90 % of it; the horizon rises to the last evicted end.
    pub(crate) fn enforce_cap(&mut self, max: usize) {
        if self.ranges <= max {
            return;
        }
        let target = max - max / 10;
        while self.ranges > target {
            let Some((&bucket, _)) = self.buckets.first_key_value() else {
                break;
            };
            let limit = bucket.saturating_add(1).saturating_mul(BUCKET);
            let (removed, last_end) = self.forget_bucket(bucket, limit);
            self.counters.evicted += removed;
            if let Some(end) = last_end {
                self.horizon = self.horizon.max(end);
            }
        }
    }

    /// Removes the segments ending before `limit` of the IPs filed under `bucket`,
    /// and refiles the IPs that keep some. Returns how many it removed and the
    /// latest end among them.
    fn forget_bucket(&mut self, bucket: u64, limit: Nanos) -> (u64, Option<Nanos>) {
        let Some(keys) = self.buckets.remove(&bucket) else {
            return (0, None);
        };
        let (mut removed, mut last_end) = (0u64, None::<Nanos>);
        for key in keys {
            let Some(entry) = self.ips.get_mut(&key) else {
                continue;
            };
            if entry.filed != bucket {
                // Filed again under an earlier bucket since: a stale entry.
                continue;
            }
            let segs = entry.segs.as_slice();
            let n = segs.partition_point(|s| s.end < limit);
            if n >= segs.len() {
                if let Some(last) = segs.last() {
                    let end = last.end;
                    last_end = Some(last_end.map_or(end, |e: Nanos| e.max(end)));
                }
                removed += n as u64;
                self.ranges -= n;
                self.seg_capacity -= entry.segs.heap_capacity();
                self.ips.remove(&key);
                continue;
            }
            let cap = entry.segs.heap_capacity();
            if n > 0 {
                let end = segs[n - 1].end;
                last_end = Some(last_end.map_or(end, |e: Nanos| e.max(end)));
                // Only a heap list can keep some after losing some.
                if let Segs::Many(v) = &mut entry.segs {
                    v.drain(..n);
                }
                removed += n as u64;
                self.ranges -= n;
            }
            if let Segs::Many(v) = &mut entry.segs
                && cap > 4
                && v.len() * 4 <= cap
            {
                v.shrink_to(v.len() * 2);
            }
            self.seg_capacity = self.seg_capacity + entry.segs.heap_capacity() - cap;
            if let Some(first) = entry.segs.as_slice().first() {
                let next = first.end / BUCKET;
                entry.filed = next;
                self.buckets.entry(next).or_default().push(key);
            }
        }
        (removed, last_end)
    }

    /// Frees the workload symbols no segment uses, when enough were created since the
    /// last time to be worth a scan of the map.
    #[cfg(test)]
    pub(crate) fn collect_workloads(&mut self) {
        self.collect_workloads_with(|_| {});
    }

    /// [`collect_workloads`](OwnershipMap::collect_workloads), keeping also the
    /// symbols `also_used` marks (the peer index's).
    pub(crate) fn collect_workloads_with(&mut self, also_used: impl FnOnce(&mut [bool])) {
        if !self.workloads.wants_collection() {
            return;
        }
        let mut used = vec![false; self.workloads.capacity()];
        also_used(&mut used);
        for entry in self.ips.values() {
            for seg in entry.segs.as_slice() {
                if let Mark::Owned(sym) = seg.mark
                    && let Some(u) = used.get_mut(sym.0 as usize)
                {
                    *u = true;
                }
            }
        }
        self.workloads.collect(&used);
    }

    /// Logs the conflicts noted since the last log line, at most once per 10 s.
    pub(crate) fn log_conflicts(&mut self, now: Nanos) {
        self.log.flush(now);
    }

    /// Counters so far.
    pub(crate) fn counters(&self) -> MapCounters {
        self.counters
    }

    /// Segments in the map.
    pub(crate) fn ranges(&self) -> usize {
        self.ranges
    }

    /// IPs in the map.
    pub(crate) fn tracked_ips(&self) -> usize {
        self.ips.len()
    }

    /// Everything ending at or before it may have been forgotten.
    #[cfg(test)]
    pub(crate) fn horizon(&self) -> Nanos {
        self.horizon
    }

    /// When [`expire`](OwnershipMap::expire) next has something to remove, given
    /// the retention: the end of the oldest bucket plus the retention.
    pub(crate) fn next_expiry(&self, retention: Nanos) -> Option<Nanos> {
        self.buckets.first_key_value().map(|(&bucket, _)| {
            bucket
                .saturating_add(1)
                .saturating_mul(BUCKET)
                .saturating_add(retention)
        })
    }

    /// Estimated bytes: the IP table, the segments, the buckets and the workload
    /// symbols.
    pub(crate) fn bytes(&self) -> usize {
        // A BTreeMap entry: its key and value, and its share of a node's overhead.
        const BTREE_ENTRY: usize = size_of::<(u64, Vec<IpKey>)>() + 16;
        let buckets: usize = self
            .buckets
            .values()
            .map(|keys| BTREE_ENTRY + keys.capacity() * size_of::<IpKey>())
            .sum();
        self.ips.capacity() * (size_of::<(IpKey, IpEntry)>() + 1)
            + self.seg_capacity * size_of::<Segment>()
            + buckets
            + self.scratch.capacity() * size_of::<Segment>()
            + self.workloads.bytes()
    }

    /// The segments of `key` (for tests).
    #[cfg(test)]
    pub(crate) fn segments(&self, key: &IpKey) -> Vec<(Nanos, Nanos, Option<WorkloadId>, Mark)> {
        self.ips.get(key).map_or_else(Vec::new, |e| {
            e.segs
                .as_slice()
                .iter()
                .map(|s| {
                    let name = match s.mark {
                        Mark::Owned(sym) => self.workloads.name(sym).cloned(),
                        _ => None,
                    };
                    (s.start, s.end, name, s.mark)
                })
                .collect()
        })
    }
}

/// Applies `mark` over `[start, end]` to the sorted segments `segs`, through
/// `scratch`: the gaps it covers take the mark; where it meets another owner the
/// overlap becomes a conflict (`conflict` is called with the other owner and
/// `conflicts` counts it); conflicts stay conflicts and shared marks stay shared (a
/// shared claim turns what it overlaps of an owner into shared); then neighbours of
/// one mark join when at most their join gap apart.
#[allow(clippy::too_many_arguments)]
fn splice_claim(
    segs: &mut Vec<Segment>,
    scratch: &mut Vec<Segment>,
    start: Nanos,
    end: Nanos,
    mark: Mark,
    merge_gap: Nanos,
    mut conflict: impl FnMut(Sym),
    conflicts: &mut u64,
) {
    let gap = join_gap(mark, merge_gap);
    // Every segment the claim overlaps or could join.
    let lo = segs.partition_point(|s| s.end.saturating_add(gap) < start);
    let hi = segs.partition_point(|s| s.start <= end.saturating_add(gap));
    scratch.clear();
    // The first point of the claim not placed yet (None: all of it is).
    let mut cursor = Some(start);
    let mut flushed = false;
    let flush = |scratch: &mut Vec<Segment>, cursor: Option<Nanos>| {
        if let Some(c) = cursor
            && c <= end
        {
            scratch.push(Segment {
                start: c,
                end,
                mark,
            });
        }
    };
    for seg in &segs[lo..hi] {
        if seg.end < start {
            scratch.push(*seg);
            continue;
        }
        if seg.start > end {
            if !flushed {
                flush(scratch, cursor);
                flushed = true;
            }
            scratch.push(*seg);
            continue;
        }
        if let Some(c) = cursor
            && c < seg.start
        {
            scratch.push(Segment {
                start: c,
                end: seg.start - 1,
                mark,
            });
        }
        // The part of `seg` the claim overlaps.
        let (ov_start, ov_end) = (seg.start.max(start), seg.end.min(end));
        let overlap = match (mark, seg.mark) {
            (Mark::Owned(new), Mark::Owned(old)) if new != old => {
                *conflicts += 1;
                conflict(old);
                Some(Mark::Conflict)
            }
            (Mark::Shared, Mark::Owned(_)) => Some(Mark::Shared),
            _ => None,
        };
        match overlap {
            None => scratch.push(*seg),
            Some(overlap_mark) => {
                if seg.start < ov_start {
                    scratch.push(Segment {
                        end: ov_start - 1,
                        ..*seg
                    });
                }
                scratch.push(Segment {
                    start: ov_start,
                    end: ov_end,
                    mark: overlap_mark,
                });
                if seg.end > ov_end {
                    scratch.push(Segment {
                        start: ov_end + 1,
                        ..*seg
                    });
                }
            }
        }
        cursor = match (cursor, seg.end.checked_add(1)) {
            (Some(c), Some(next)) => Some(c.max(next)),
            _ => None,
        };
    }
    if !flushed {
        flush(scratch, cursor);
    }
    // Join neighbours of one mark.
    let mut out = 0;
    for i in 0..scratch.len() {
        let seg = scratch[i];
        if out > 0 {
            let prev = &mut scratch[out - 1];
            if prev.mark == seg.mark
                && seg.start <= prev.end.saturating_add(join_gap(seg.mark, merge_gap))
            {
                prev.end = prev.end.max(seg.end);
                continue;
            }
        }
        scratch[out] = seg;
        out += 1;
    }
    scratch.truncate(out);
    segs.splice(lo..hi, scratch.drain(..));
}

#[cfg(test)]
#[path = "ownership_tests.rs"]
mod tests;

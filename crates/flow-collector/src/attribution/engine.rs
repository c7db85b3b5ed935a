//! The attributor: heartbeats in, decided flows out.
//!
//! A pushed record is, in this order: a heartbeat for its local IP (when it names its
//! local workload), an entry of the peer index, and a flow to attribute. A flow whose
//! peer (the other end's record of the same connection) is indexed is decided at
//! once. The others are held: until their peer wait ends only a peer can decide them;
//! then the ownership map is asked (one owner: attributed; a conflict, a shared
//! address, a change of owner or a time the map forgot: unattributed, as more
//! heartbeats could not undo it); when it knows nothing yet, every heartbeat on the
//! remote IP asks it again, until the hold-back ends: then the map once more, the
//! static table, or unattributed.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
    time::SystemTime,
};

use flow_batch::wire::BatchId;
use flow_record::{FlowRecord, IdentitySource, WorkloadId};

use crate::attribution::{
    AttributedFlow, AttributionConfig, AttributionStats, RemoteIdentitySource,
    RemoteUnattributedReason,
    heartbeats::{Book, BookKey, Heartbeat, HeartbeatClaim, MAX_HEARTBEAT_RANGES},
    held::{Held, HeldFlows, HeldRef, Phase},
    ip_key::{Hosts, IpKey},
    ownership::{MapAnswer, Mark, OwnershipMap},
    peers::{ConnRef, PeerAnswer, PeerIndex, PeerKey},
    time::{Nanos, interval, nanos, span, system_time},
    workloads::Sym,
};

/// What a flow's remote side was decided to be.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decision {
    workload: Option<WorkloadId>,
    source: RemoteIdentitySource,
    reason: Option<RemoteUnattributedReason>,
}

impl Decision {
    fn attributed(workload: WorkloadId, source: RemoteIdentitySource) -> Decision {
        Decision {
            workload: Some(workload),
            source,
            reason: None,
        }
    }

    fn unattributed(reason: RemoteUnattributedReason) -> Decision {
        Decision {
            workload: None,
            source: RemoteIdentitySource::None,
            reason: Some(reason),
        }
    }
}

/// A record of the chunk being pushed, its keys computed once.
#[derive(Clone, Copy, Debug)]
struct Keyed {
    key: PeerKey,
    conn: ConnRef,
    start: Nanos,
    end: Nanos,
    /// Its local workload, interned (`None`: not a heartbeat, nor a peer entry).
    sym: Option<Sym>,
    /// What its heartbeat claims.
    mark: Option<Mark>,
}

/// How far a map evaluation may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// While held: only what more heartbeats cannot change decides.
    Waiting,
    /// At the hold-back deadline: the static table, then unattributed.
    Final,
}

/// Flow counters.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    flows_in: u64,
    flows_out: u64,
    peer_record: u64,
    heartbeat: u64,
    static_table: u64,
    unattributed: [u64; RemoteUnattributedReason::ALL.len()],
    shared_out: u64,
    ranges_shared_out: u64,
    applied_remote: u64,
    ranges_remote: u64,
    ranges_remote_too_old: u64,
    remote_refused: u64,
}

/// Attributes the remote side of flows from the heartbeats of every host (sans-IO).
///
/// Memory is bounded by the configuration: the ownership map by
/// [`max_ranges`](AttributionConfig::max_ranges) (24 bytes a range, plus about 90
/// bytes an IP, whose first range is inline), the held flows by
/// [`max_held`](AttributionConfig::max_held) (a 304-byte slot each, the record
/// included, plus 8 bytes of deadline queue: see `held`), and the peer index by the hold-back plus the tolerance, and at most
/// `max_held` records too (the oldest leave first; about 60 bytes a record when both
/// ends of a connection export: one 104-byte entry per connection).
#[derive(Debug)]
pub struct Attributor {
    config: AttributionConfig,
    hold_back: Nanos,
    peer_wait: Nanos,
    tolerance: Nanos,
    retention: Nanos,
    /// The latest `now` passed in (time never goes back inside).
    clock: Nanos,
    hosts: Hosts,
    map: OwnershipMap,
    peers: PeerIndex,
    held: HeldFlows,
    /// The local records' claims, for the other nodes (only when sharing is on).
    book: Option<Book>,
    ready: VecDeque<AttributedFlow>,
    counters: Counters,
    /// Reused per chunk: the records' keys and intervals, the flows to re-examine,
    /// the IPs that received heartbeats.
    keys: Vec<Keyed>,
    woken: Vec<HeldRef>,
    touched: HashSet<IpKey, foldhash::fast::RandomState>,
}

impl Attributor {
    /// An empty attributor.
    pub fn new(config: AttributionConfig) -> Attributor {
        let hold_back = span(config.hold_back);
        let tolerance = span(config.tolerance);
        Attributor {
            hold_back,
            peer_wait: span(config.peer_wait).min(hold_back),
            tolerance,
            retention: span(config.retention),
            clock: 0,
            hosts: Hosts::default(),
            map: OwnershipMap::new(span(config.merge_gap), tolerance)
                .with_shared_reach(span(config.retention)),
            peers: PeerIndex::new(config.max_held),
            held: HeldFlows::default(),
            book: config.share_heartbeats.then(Book::default),
            ready: VecDeque::new(),
            counters: Counters::default(),
            keys: Vec::new(),
            woken: Vec::new(),
            touched: HashSet::default(),
            config,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &AttributionConfig {
        &self.config
    }

    /// Takes one chunk's records, received at `now`: each is a heartbeat for its local
    /// IP (when it names its local workload), a candidate peer for other flows, and a
    /// flow to attribute. Flows that can be decided at once become ready.
    pub fn push_chunk(&mut self, batch: Arc<BatchId>, records: Vec<FlowRecord>, now: SystemTime) {
        self.push(batch, records, None, now);
    }

    /// Takes some of a chunk's records, received at `now`, each with its index in
    /// the chunk (`indices[i]` is the index of `records[i]`; the decided flows carry
    /// it): what a node that receives a chunk's records routed by connection
    /// (`connection_partition`) pushes. Otherwise as
    /// [`push_chunk`](Attributor::push_chunk). Records beyond `indices` are dropped.
    pub fn push_records(
        &mut self,
        batch: Arc<BatchId>,
        mut records: Vec<FlowRecord>,
        indices: &[u32],
        now: SystemTime,
    ) {
        records.truncate(indices.len());
        self.push(batch, records, Some(indices), now);
    }

    fn push(
        &mut self,
        batch: Arc<BatchId>,
        records: Vec<FlowRecord>,
        indices: Option<&[u32]>,
        now: SystemTime,
    ) {
        if self.config.route_only {
            self.pass_through(batch, records, indices);
            return;
        }
        let now = self.tick(now);
        self.map.observe(now);
        let host = self.hosts.intern(&batch.host);
        let leaves_at = now
            .saturating_add(self.hold_back)
            .saturating_add(self.tolerance);
        let mut keys = std::mem::take(&mut self.keys);
        let mut woken = std::mem::take(&mut self.woken);
        keys.clear();
        woken.clear();
        self.touched.clear();
        // Heartbeats and peer entries first, so that both records of a connection in
        // one chunk find each other.
        // One loop per structure, so that the processor overlaps the cache misses of
        // consecutive records (each loop's iterations are independent).
        for record in &records {
            let key = PeerKey::of(record, host);
            let conn = self.peers.conn(&key);
            let (start, end) = interval(record.t_start, record.t_end);
            let (sym, mark) = self.claim_of(record);
            keys.push(Keyed {
                key,
                conn,
                start,
                end,
                sym,
                mark,
            });
        }
        for k in &keys {
            if let Some(mark) = k.mark
                && self.map.insert_mark(k.key.local, k.start, k.end, mark)
                && self.held.has_waiters_on(&k.key.local)
            {
                self.touched.insert(k.key.local);
            }
        }
        if let Some(book) = self.book.as_mut() {
            for k in &keys {
                if let Some(mark) = k.mark {
                    let key = BookKey {
                        ip: k.key.local,
                        host,
                        mark,
                    };
                    book.add(key, k.start, k.end);
                }
            }
        }
        for k in &keys {
            if let Some(sym) = k.sym {
                let waiters = self.peers.insert(&k.conn, k.start, k.end, sym, leaves_at);
                self.held
                    .waiting_for_peer(waiters, k.conn.side(), &mut woken);
            }
        }
        // Flows held earlier whose peer just arrived.
        for r in woken.drain(..) {
            self.try_peer(r);
        }
        // Flows held earlier on an IP that just received heartbeats.
        self.wake_touched(&mut woken);
        // This chunk's flows.
        for (
            index,
            (
                record,
                Keyed {
                    conn, start, end, ..
                },
            ),
        ) in records.into_iter().zip(keys.drain(..)).enumerate()
        {
            self.counters.flows_in += 1;
            let index = index_of(indices, index);
            let lo = start.saturating_sub(self.tolerance);
            let hi = end.saturating_add(self.tolerance);
            match self.peer_workload(self.peers.lookup(&conn, lo, hi)) {
                Some(w) => self.emit(
                    record,
                    batch.clone(),
                    index,
                    Decision::attributed(w, RemoteIdentitySource::PeerRecord),
                ),
                None => {
                    self.held.insert(
                        Held::new(record, batch.clone(), index, host, now),
                        &conn,
                        &mut self.peers,
                    );
                }
            }
        }
        self.keys = keys;
        self.woken = woken;
        while self.held.len() > self.config.max_held {
            self.overflow();
        }
        self.map.enforce_cap(self.config.max_ranges);
        self.map.log_conflicts(now);
    }

    /// Decides what the passing of time allows: flows whose peer wait or hold-back
    /// ended, flows whose remote IP received heartbeats; expires old ranges.
    pub fn advance(&mut self, now: SystemTime) {
        let now = self.tick(now);
        self.map.expire(now.saturating_sub(self.retention));
        self.map.enforce_cap(self.config.max_ranges);
        let (peers, book) = (&self.peers, &self.book);
        self.map.collect_workloads_with(|used| {
            peers.mark_used(used);
            if let Some(book) = book {
                book.mark_used(used);
            }
        });
        self.peers.expire(now);
        // Peer waits that ended: the map, or wait for heartbeats.
        while let Some((r, arrival)) = self.held.front_peer().map(|(r, h)| (r, h.arrival)) {
            if arrival.saturating_add(self.peer_wait) > now {
                break;
            }
            if !self.try_peer(r) && !self.try_map(r, Stage::Waiting) {
                self.held.enter_map_phase(r);
            }
        }
        // Hold-backs that ended.
        while let Some((r, arrival)) = self.held.front_map().map(|(r, h)| (r, h.arrival)) {
            if arrival.saturating_add(self.hold_back) > now {
                break;
            }
            if !self.try_peer(r) {
                self.try_map(r, Stage::Final);
            }
        }
        self.map.log_conflicts(now);
    }

    /// Takes out the claims of the records pushed in since the last call, for the
    /// other collector nodes to [apply](Attributor::apply_heartbeats): one
    /// [`Heartbeat`] per host, IP and claim (a workload, or the connect map's shared
    /// mark), with the exact union of the records' intervals (more than one heartbeat
    /// when it has more than [`MAX_HEARTBEAT_RANGES`] ranges), in a fixed order. Empty
    /// unless [`share_heartbeats`](AttributionConfig::share_heartbeats) is on.
    ///
    /// Call it every second or so: the claims are kept until then.
    pub fn take_heartbeats(&mut self) -> Vec<Heartbeat> {
        let Some(book) = self.book.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, ranges) in book.drain() {
            let Some(host) = self.hosts.name(key.host) else {
                continue;
            };
            let claim = match key.mark {
                Mark::Owned(sym) => match self.map.workload(sym) {
                    Some(w) => HeartbeatClaim::Owned(w.clone()),
                    // The book keeps its symbols alive (see advance).
                    None => continue,
                },
                Mark::Shared => HeartbeatClaim::Shared,
                // Records never claim a conflict.
                Mark::Conflict => continue,
            };
            self.counters.ranges_shared_out += ranges.len() as u64;
            for part in ranges.chunks(MAX_HEARTBEAT_RANGES) {
                out.push(Heartbeat::from_book(
                    host,
                    key.ip.ip(),
                    claim.clone(),
                    part.to_vec(),
                ));
            }
        }
        self.counters.shared_out += out.len() as u64;
        out
    }

    /// Applies other nodes' heartbeats, received at `now`, to the ownership map
    /// exactly as their records' claims would have been applied had the records been
    /// pushed here (each range a claim; those that ended before what the map still
    /// holds are ignored and counted), then decides the held flows waiting on the IPs
    /// they touched that the map can now decide. Applying a heartbeat the map already
    /// has changes nothing. They are not shared again.
    pub fn apply_heartbeats(&mut self, heartbeats: &[Heartbeat], now: SystemTime) {
        let now = self.tick(now);
        self.map.observe(now);
        self.insert_heartbeats(heartbeats);
        let mut woken = std::mem::take(&mut self.woken);
        woken.clear();
        self.wake_touched(&mut woken);
        self.woken = woken;
        self.map.enforce_cap(self.config.max_ranges);
        self.map.log_conflicts(now);
    }

    /// Applies heartbeats read back at start (a restarted node's rebuild from the
    /// heartbeat topic), before anything else is pushed: like
    /// [`apply_heartbeats`](Attributor::apply_heartbeats), but without moving the
    /// internal clock, so that the ledger's chunks replayed next are pushed at their
    /// own arrival times. The map counts as knowing the fleet from `now` on (the
    /// conservative choice: an IP's first owner is only taken as such once the map
    /// has watched long enough after the restart).
    pub fn restore_heartbeats(&mut self, heartbeats: &[Heartbeat], now: SystemTime) {
        self.map.observe(nanos(now));
        self.insert_heartbeats(heartbeats);
        self.touched.clear();
        self.map.enforce_cap(self.config.max_ranges);
    }

    /// Inserts the marks of `heartbeats`, noting in `touched` the IPs with held flows.
    fn insert_heartbeats(&mut self, heartbeats: &[Heartbeat]) {
        self.touched.clear();
        for heartbeat in heartbeats {
            let host = self.hosts.intern(heartbeat.host());
            let key = IpKey::new(heartbeat.ip(), host);
            let mark = match heartbeat.claim() {
                HeartbeatClaim::Owned(w) => match self.map.intern(w) {
                    Some(sym) => Mark::Owned(sym),
                    None => {
                        self.counters.remote_refused += 1;
                        continue;
                    }
                },
                HeartbeatClaim::Shared => Mark::Shared,
            };
            self.counters.applied_remote += 1;
            for &(start, end) in heartbeat.ranges() {
                self.counters.ranges_remote += 1;
                if !self.map.insert_mark(key, start, end, mark) {
                    self.counters.ranges_remote_too_old += 1;
                } else if self.held.has_waiters_on(&key) {
                    self.touched.insert(key);
                }
            }
        }
    }

    /// Forgets the held flows `which` selects (by chunk and index), without deciding
    /// them: their records are someone else's to decide now (a connection-topic
    /// partition taken away from this node, whose next owner reads them again).
    /// Returns them, by chunk and index. They count in neither `flows_out` nor
    /// `held` afterwards.
    pub fn forget_held(
        &mut self,
        mut which: impl FnMut(&BatchId, u32) -> bool,
    ) -> Vec<(Arc<BatchId>, u32)> {
        let mut forgotten = Vec::new();
        for r in self.held.all() {
            let chosen = self
                .held
                .get(r)
                .is_some_and(|held| which(&held.batch, held.index));
            if chosen && let Some(held) = self.held.remove(r, &mut self.peers) {
                forgotten.push((held.batch, held.index));
            }
        }
        forgotten
    }

    /// The next decided flow, if any.
    pub fn pop_ready(&mut self) -> Option<AttributedFlow> {
        let flow = self.ready.pop_front()?;
        self.counters.flows_out += 1;
        Some(flow)
    }

    /// When [`advance`](Attributor::advance) has something to do next.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        let peer = self
            .held
            .front_peer()
            .map(|(_, h)| h.arrival.saturating_add(self.peer_wait));
        let hold = self
            .held
            .front_map()
            .map(|(_, h)| h.arrival.saturating_add(self.hold_back));
        [
            peer,
            hold,
            self.peers.next_expiry(),
            self.map.next_expiry(self.retention),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(system_time)
    }

    /// Decides every held flow now (at shutdown): peer record or, once its peer wait
    /// is over, the ownership map and the static table as at its deadline; a flow
    /// that could still have waited for them goes out unattributed, `shutdown`.
    pub fn drain(&mut self, now: SystemTime) {
        self.advance(now);
        for r in self.held.all() {
            if self.try_peer(r) {
                continue;
            }
            let Some(phase) = self.held.get(r).map(|h| h.phase) else {
                continue;
            };
            match phase {
                // advance() moved every flow whose peer wait ended to the map phase.
                Phase::Map => {
                    self.try_map(r, Stage::Final);
                }
                Phase::Peer => self.decide(
                    r,
                    Decision::unattributed(RemoteUnattributedReason::Shutdown),
                ),
            }
        }
    }

    /// Counters and sizes.
    pub fn stats(&self) -> AttributionStats {
        let c = &self.counters;
        let m = self.map.counters();
        AttributionStats {
            flows_in: c.flows_in,
            flows_out: c.flows_out,
            attributed_peer_record: c.peer_record,
            attributed_heartbeat: c.heartbeat,
            attributed_static: c.static_table,
            unattributed: c.unattributed,
            heartbeats: m.heartbeats,
            heartbeats_too_old: m.heartbeats_too_old,
            heartbeats_shared_out: c.shared_out,
            heartbeat_ranges_shared_out: c.ranges_shared_out,
            heartbeat_book_entries: self.book.as_ref().map_or(0, |b| b.len() as u64),
            heartbeats_applied_remote: c.applied_remote,
            heartbeat_ranges_remote: c.ranges_remote,
            heartbeat_ranges_remote_too_old: c.ranges_remote_too_old,
            heartbeats_remote_refused: c.remote_refused,
            conflicts: m.conflicts,
            ranges_evicted: m.evicted,
            ranges_expired: m.expired,
            held: self.held.len() as u64,
            tracked_ips: self.map.tracked_ips() as u64,
            ranges: self.map.ranges() as u64,
            peer_index_entries: self.peers.len() as u64,
            peer_index_evicted: self.peers.evicted(),
            map_bytes: self.map.bytes() as u64,
        }
    }

    /// The ownership map's segments of `key` (tests).
    #[cfg(test)]
    pub(crate) fn map_segments(
        &self,
        key: &IpKey,
    ) -> Vec<(Nanos, Nanos, Option<WorkloadId>, Mark)> {
        self.map.segments(key)
    }

    /// Connections the peer index has an entry for (tests).
    #[cfg(test)]
    pub(crate) fn peer_connections(&self) -> usize {
        self.peers.table_len()
    }

    /// Advances the internal clock to `now` (never back) and returns it.
    fn tick(&mut self, now: SystemTime) -> Nanos {
        self.clock = self.clock.max(nanos(now));
        self.clock
    }

    /// Decides the held flow `r` from its peer's record, if it is indexed.
    fn try_peer(&mut self, r: HeldRef) -> bool {
        let Some(held) = self.held.get(r) else {
            return false;
        };
        let (start, end) = interval(held.record.t_start, held.record.t_end);
        let lo = start.saturating_sub(self.tolerance);
        let hi = end.saturating_add(self.tolerance);
        match self.peer_workload(self.peers.lookup_key(&held.key(), lo, hi)) {
            Some(w) => {
                self.decide(r, Decision::attributed(w, RemoteIdentitySource::PeerRecord));
                true
            }
            None => false,
        }
    }

    /// The workload a peer answer names, if it names one.
    fn peer_workload(&self, answer: PeerAnswer) -> Option<WorkloadId> {
        match answer {
            PeerAnswer::Workload(sym) => self.map.workload(sym).cloned(),
            PeerAnswer::Unknown | PeerAnswer::Disagree => None,
        }
    }

    /// Decides the held flow `r` from the ownership map (and at the `Final` stage the
    /// static table), if they allow it.
    fn try_map(&mut self, r: HeldRef, stage: Stage) -> bool {
        let Some(held) = self.held.get(r) else {
            return false;
        };
        let Some(decision) = self.map_decision(&held.record, held.key().remote, stage) else {
            return false;
        };
        self.decide(r, decision);
        true
    }

    /// What the map (and at the `Final` stage the static table) says about `record`,
    /// whose remote IP key is `remote`; `None` while waiting can still help.
    fn map_decision(&self, record: &FlowRecord, remote: IpKey, stage: Stage) -> Option<Decision> {
        use RemoteUnattributedReason as R;
        let t = record.t_start.map_or(nanos(record.t_end), nanos);
        let reason = match self.map.lookup_flow(&remote, t, nanos(record.t_end)) {
            MapAnswer::Owner(w) => {
                return Some(Decision::attributed(w, RemoteIdentitySource::Heartbeat));
            }
            MapAnswer::Conflicting => R::ConflictingOwners,
            MapAnswer::Shared => R::SharedAddress,
            MapAnswer::OwnerChanged => R::OwnerChanged,
            MapAnswer::BeforeRetention => R::BeforeRetention,
            // More heartbeats of the owner may still confirm it.
            MapAnswer::Unconfirmed => match stage {
                Stage::Waiting => return None,
                Stage::Final => R::OwnerUnconfirmed,
            },
            MapAnswer::NoOwner => match stage {
                Stage::Waiting => return None,
                Stage::Final => {
                    if let Some(w) = self.config.static_owners.lookup(record.remote.ip()) {
                        return Some(Decision::attributed(
                            w.clone(),
                            RemoteIdentitySource::Static,
                        ));
                    }
                    if record.t_start.is_none() {
                        R::NoStartTime
                    } else {
                        R::NoOwnerKnown
                    }
                }
            },
        };
        Some(Decision::unattributed(reason))
    }

    /// The held flow limit is exceeded: the oldest goes out now, from its peer, or
    /// from the map when its peer wait is over and the map has an answer, else
    /// unattributed (`hold_back_full`).
    fn overflow(&mut self) {
        let Some(r) = self.held.oldest() else {
            return;
        };
        if self.try_peer(r) {
            return;
        }
        let peer_wait_over = self.held.get(r).is_some_and(|h| {
            h.phase == Phase::Map || h.arrival.saturating_add(self.peer_wait) <= self.clock
        });
        if peer_wait_over && self.try_map(r, Stage::Waiting) {
            return;
        }
        self.decide(
            r,
            Decision::unattributed(RemoteUnattributedReason::HoldBackFull),
        );
    }

    /// Takes the held flow `r` out with `decision`.
    fn decide(&mut self, r: HeldRef, decision: Decision) {
        if let Some(held) = self.held.remove(r, &mut self.peers) {
            self.emit(held.record, held.batch, held.index, decision);
        }
    }

    /// Asks the map again for the held flows on the IPs that just received
    /// heartbeats (`touched`), using `woken` (emptied) as scratch.
    fn wake_touched(&mut self, woken: &mut Vec<HeldRef>) {
        let touched = std::mem::take(&mut self.touched);
        for ip in &touched {
            self.held.waiting_on_ip(ip, woken);
        }
        self.touched = touched;
        for r in woken.drain(..) {
            self.try_map(r, Stage::Waiting);
        }
    }

    /// What `record` claims for its local IP: its workload, interned, and the mark
    /// (owned, or shared through the connect map); nothing without a workload (or
    /// with four billion live workloads, which nothing sane reaches).
    fn claim_of(&mut self, record: &FlowRecord) -> (Option<Sym>, Option<Mark>) {
        let sym = record
            .local_workload_id
            .as_ref()
            .and_then(|w| self.map.intern(w));
        let mark = sym.map(|sym| match record.identity_source {
            IdentitySource::ConnectMap => Mark::Shared,
            _ => Mark::Owned(sym),
        });
        (sym, mark)
    }

    /// Route-only mode: every record leaves at once, undecided; its claim goes into
    /// the book, when heartbeats are shared (the nodes that attribute the records
    /// apply them from there).
    fn pass_through(
        &mut self,
        batch: Arc<BatchId>,
        records: Vec<FlowRecord>,
        indices: Option<&[u32]>,
    ) {
        if self.book.is_some() {
            let host = self.hosts.intern(&batch.host);
            for record in &records {
                let (_, Some(mark)) = self.claim_of(record) else {
                    continue;
                };
                let (start, end) = interval(record.t_start, record.t_end);
                let key = BookKey {
                    ip: IpKey::new(record.local.ip(), host),
                    host,
                    mark,
                };
                if let Some(book) = self.book.as_mut() {
                    book.add(key, start, end);
                }
            }
        }
        for (i, record) in records.into_iter().enumerate() {
            self.counters.flows_in += 1;
            self.emit(
                record,
                Arc::clone(&batch),
                index_of(indices, i),
                Decision {
                    workload: None,
                    source: RemoteIdentitySource::None,
                    reason: None,
                },
            );
        }
    }

    /// Counts a decided flow and makes it ready.
    fn emit(&mut self, record: FlowRecord, batch: Arc<BatchId>, index: u32, d: Decision) {
        let c = &mut self.counters;
        match (d.source, d.reason) {
            (RemoteIdentitySource::PeerRecord, _) => c.peer_record += 1,
            (RemoteIdentitySource::Heartbeat, _) => c.heartbeat += 1,
            (RemoteIdentitySource::Static, _) => c.static_table += 1,
            (_, Some(reason)) => c.unattributed[reason.index()] += 1,
            (_, None) => {}
        }
        self.ready.push_back(AttributedFlow {
            record,
            batch,
            record_index: index,
            remote_workload_id: d.workload,
            remote_identity_source: d.source,
            remote_unattributed_reason: d.reason,
        });
    }
}

/// The chunk index of the `i`th record pushed: its own position, or the one given.
#[inline]
fn index_of(indices: Option<&[u32]>, i: usize) -> u32 {
    match indices.and_then(|ix| ix.get(i)) {
        Some(index) => *index,
        None => u32::try_from(i).unwrap_or(u32::MAX),
    }
}

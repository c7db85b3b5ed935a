//! The collector's side, as the real collector runs it on one thread: decode each
//! frame, drop batch IDs seen before, count it in its window
//! ([`WindowTracker`]), push the records into the [`Attributor`] at the simulated
//! arrival time, advance it, take the decided flows out and serialize each as the
//! collector's JSON line, and each window's completeness record too. With several
//! nodes, one of these per node, which also takes its heartbeats out (encoding and
//! decoding them as the heartbeat topic carries them) and applies the others'. Routed
//! by connection, a node is two stages, each with its own attributor, as the real
//! collector runs them: the intake takes a chunk (decode, drop a batch ID seen
//! before, count it in its window), pushes it into a route-only attributor that
//! keeps the chunk's claims for the heartbeat topic (`route_only` and
//! `share_heartbeats`) and writes the records it hands back, undecided, to the
//! connection topic ([`CollectorSide::receive_and_route`]); the attributing stage
//! takes the messages of its partitions ([`CollectorSide::receive_routed`]) into an
//! attributor that shares nothing and applies every node's heartbeats, its own
//! intake's included. Only this work is timed.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use flow_batch::wire::{BatchId, ChunkDecoder, DecodeLimits, InstanceId};
use flow_collector::{
    attribution::{
        AttributedFlow, AttributionConfig, AttributionStats, Attributor, Heartbeat,
        RemoteIdentitySource,
    },
    completeness::{
        CompletenessConfig, Slot, WindowChunk, WindowReport, WindowStatus, WindowTracker,
    },
    connections::decode_routed,
    output::{write_completeness_line, write_json_line},
};
use flow_record::{FlowRecord, RecordKind};

use crate::fleet::{
    routing::{ConnectionRouter, RoutedMessage},
    world::{Micros, system_time},
};

/// Serialized output is dropped once the buffer holds this much (the bytes are
/// counted, not kept).
const OUT_BUFFER: usize = 1 << 20;

/// What the collector side did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectorCounters {
    /// Frames received (duplicates included).
    pub frames: u64,
    /// Frames whose batch ID had been seen before (dropped).
    pub duplicates: u64,
    /// Frames that did not decode.
    pub decode_errors: u64,
    /// Records pushed into the attributor.
    pub records_in: u64,
    /// Flows taken out.
    pub flows_out: u64,
    /// Interim records among them.
    pub interim_out: u64,
    /// Bytes of JSON lines written.
    pub json_bytes: u64,
    /// Heartbeats taken out for the other nodes (messages on the heartbeat topic;
    /// routed by connection, by the intake, for every node).
    pub heartbeats_out: u64,
    /// Their encoded bytes.
    pub heartbeat_bytes_out: u64,
    /// Time ranges in them.
    pub heartbeat_ranges_out: u64,
    /// Heartbeats that did not decode (must be 0).
    pub heartbeat_decode_errors: u64,
    /// Heartbeats applied (other nodes'; routed by connection, every node's
    /// intake's, this one's included).
    pub heartbeats_in: u64,
    /// Messages written to the connection topic by this node's intake (routed by
    /// connection).
    pub routed_messages_out: u64,
    /// Records in them.
    pub routed_records_out: u64,
    /// Their encoded bytes.
    pub routed_bytes_out: u64,
    /// Chunks whose records could not be routed (must be 0).
    pub route_errors: u64,
    /// Records the intake's route-only attributor handed back decided, or not
    /// handed back (must be 0).
    pub intake_errors: u64,
    /// Connection-topic messages this node attributed.
    pub routed_messages_in: u64,
    /// Records in them.
    pub routed_records_in: u64,
    /// Connection-topic messages that did not decode (must be 0).
    pub routed_decode_errors: u64,
}

/// Where the collector's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Decoding frames (checksums, zstd, records) and deduplicating batch IDs.
    pub decode: Duration,
    /// The attributor: push, advance, pop.
    pub attribute: Duration,
    /// Writing the JSON lines.
    pub serialize: Duration,
    /// Counting every window's records against its completeness.
    pub windows: Duration,
    /// Taking the heartbeats out, encoding and decoding them (applying them is in
    /// [`attribute`](StageTimes::attribute)).
    pub heartbeats: Duration,
    /// Routed by connection: grouping a chunk's records by partition and encoding
    /// the connection topic's messages (intake), and decoding them (attributing
    /// node).
    pub route: Duration,
    /// Routed by connection: the intake's route-only attributor (pushing a chunk,
    /// which keeps its claims for the heartbeats, taking the records back out,
    /// advancing it).
    pub intake: Duration,
}

impl StageTimes {
    /// Adds `other`'s times (nodes together).
    pub fn add(&mut self, other: &StageTimes) {
        self.decode += other.decode;
        self.attribute += other.attribute;
        self.serialize += other.serialize;
        self.windows += other.windows;
        self.heartbeats += other.heartbeats;
        self.route += other.route;
        self.intake += other.intake;
    }
}

/// The windows' completeness records, judged: the simulated exporters lose nothing on
/// their hosts, so a window every chunk of which arrived must add up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowTally {
    /// Windows reported, in [`WindowStatus::ALL`] order.
    pub reported: [u64; WindowStatus::ALL.len()],
    /// Windows whose numbers add up.
    pub adding_up: u64,
    /// Windows every chunk of which arrived whose numbers do not add up (must be 0).
    pub all_chunks_not_adding_up: u64,
    /// Windows reported with chunks missing that add up all the same (must be 0:
    /// nothing on the hosts says those records were lost).
    pub missing_chunks_adding_up: u64,
    /// Final records counted in the reports.
    pub records_received: u64,
    /// Interim records counted in the reports.
    pub interim_received: u64,
    /// Windows whose last chunk carried no completeness (must be 0).
    pub without_completeness: u64,
    /// Chunks that arrived after their window was reported.
    pub late_chunks: u64,
}

impl WindowTally {
    /// Windows reported.
    pub fn total(&self) -> u64 {
        self.reported.iter().sum()
    }

    /// Windows reported with `status`.
    pub fn of(&self, status: WindowStatus) -> u64 {
        self.reported[status.index()]
    }

    /// Adds `other`'s counts (nodes together).
    pub fn add(&mut self, other: &WindowTally) {
        for (sum, n) in self.reported.iter_mut().zip(other.reported) {
            *sum += n;
        }
        self.adding_up += other.adding_up;
        self.all_chunks_not_adding_up += other.all_chunks_not_adding_up;
        self.missing_chunks_adding_up += other.missing_chunks_adding_up;
        self.records_received += other.records_received;
        self.interim_received += other.interim_received;
        self.without_completeness += other.without_completeness;
        self.late_chunks += other.late_chunks;
    }

    fn note(&mut self, report: &WindowReport) {
        self.reported[report.status.index()] += 1;
        let adds_up = report.adds_up();
        self.adding_up += u64::from(adds_up);
        match report.status {
            WindowStatus::AllChunks => self.all_chunks_not_adding_up += u64::from(!adds_up),
            _ => self.missing_chunks_adding_up += u64::from(adds_up),
        }
        self.records_received += report.records_received;
        self.interim_received += report.interim_records_received;
    }
}

impl CollectorCounters {
    /// Adds `other`'s counts (nodes together).
    pub fn add(&mut self, other: &CollectorCounters) {
        self.frames += other.frames;
        self.duplicates += other.duplicates;
        self.decode_errors += other.decode_errors;
        self.records_in += other.records_in;
        self.flows_out += other.flows_out;
        self.interim_out += other.interim_out;
        self.json_bytes += other.json_bytes;
        self.heartbeats_out += other.heartbeats_out;
        self.heartbeat_bytes_out += other.heartbeat_bytes_out;
        self.heartbeat_ranges_out += other.heartbeat_ranges_out;
        self.heartbeat_decode_errors += other.heartbeat_decode_errors;
        self.heartbeats_in += other.heartbeats_in;
        self.routed_messages_out += other.routed_messages_out;
        self.routed_records_out += other.routed_records_out;
        self.routed_bytes_out += other.routed_bytes_out;
        self.route_errors += other.route_errors;
        self.intake_errors += other.intake_errors;
        self.routed_messages_in += other.routed_messages_in;
        self.routed_records_in += other.routed_records_in;
        self.routed_decode_errors += other.routed_decode_errors;
    }
}

/// The ownership map at its largest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeakMap {
    /// Its estimated bytes.
    pub map_bytes: u64,
    /// IPs tracked then.
    pub tracked_ips: u64,
    /// Ranges then.
    pub ranges: u64,
    /// The most flows held back at a sample.
    pub held: u64,
    /// The most peer index entries at a sample.
    pub peer_index_entries: u64,
}

/// The collector: decoder, deduplication set, attributor and output buffer (and,
/// routed by connection, the intake's route-only attributor).
pub struct CollectorSide {
    attributor: Attributor,
    /// Routed by connection: the intake's attributor, which decides nothing and
    /// keeps the claims of the chunks it takes in when heartbeats are shared.
    intake: Option<Attributor>,
    windows: WindowTracker,
    window_tally: WindowTally,
    decoder: ChunkDecoder,
    /// Sequences seen, per host and exporter instance (the ledger's in-memory part).
    seen: HashMap<String, HashMap<InstanceId, HashSet<u64>>>,
    out: Vec<u8>,
    ready: Vec<AttributedFlow>,
    /// The windows' completeness records reported since the last
    /// [`take_reports`](CollectorSide::take_reports), when kept.
    reports: Option<Vec<WindowReport>>,
    busy: Duration,
    stages: StageTimes,
    counters: CollectorCounters,
    peak: PeakMap,
}

impl std::fmt::Debug for CollectorSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorSide")
            .field("counters", &self.counters)
            .field("busy", &self.busy)
            .finish_non_exhaustive()
    }
}

impl CollectorSide {
    /// A collector attributing with `config`.
    pub fn new(config: AttributionConfig) -> anyhow::Result<CollectorSide> {
        CollectorSide::with(Attributor::new(config), None)
    }

    /// A node routing by connection, as the real collector runs one: its intake's
    /// attributor routes only, and keeps the claims of the chunks it takes in for the
    /// heartbeat topic when `config` shares heartbeats; its attributing stage's
    /// attributor attributes with `config` but shares nothing (the intake, which sees
    /// whole chunks, publishes every claim once) and applies the heartbeats of every
    /// node, its own node's intake's included.
    pub fn routing_by_connection(config: AttributionConfig) -> anyhow::Result<CollectorSide> {
        let mut intake = config.clone();
        intake.route_only = true;
        let mut attributing = config;
        attributing.route_only = false;
        attributing.share_heartbeats = false;
        CollectorSide::with(Attributor::new(attributing), Some(Attributor::new(intake)))
    }

    fn with(attributor: Attributor, intake: Option<Attributor>) -> anyhow::Result<CollectorSide> {
        Ok(CollectorSide {
            attributor,
            intake,
            windows: WindowTracker::new(CompletenessConfig::default()),
            window_tally: WindowTally::default(),
            decoder: ChunkDecoder::new(DecodeLimits::default())?,
            seen: HashMap::new(),
            out: Vec::with_capacity(OUT_BUFFER + 4096),
            ready: Vec::new(),
            reports: None,
            busy: Duration::ZERO,
            stages: StageTimes::default(),
            counters: CollectorCounters::default(),
            peak: PeakMap::default(),
        })
    }

    /// Receives one frame at `now`: first decides what time allows up to `now`, then
    /// decodes, deduplicates and pushes. The flows decided meanwhile are in
    /// [`ready`](CollectorSide::ready) until the next call.
    pub fn receive(&mut self, frame: &[u8], now: Micros) {
        let started = Instant::now();
        self.ready.clear();
        self.advance_to(now);
        if let Some((batch, records)) = self.take_in(frame, now) {
            let pushing = Instant::now();
            self.counters.records_in += records.len() as u64;
            self.attributor.push_chunk(batch, records, system_time(now));
            self.stages.attribute += pushing.elapsed();
        }
        self.take_ready();
        self.busy += started.elapsed();
    }

    /// The intake's stage of connection routing: receives one frame at `now` as
    /// [`receive`](CollectorSide::receive) does (decides what time allows, decodes,
    /// deduplicates, counts the chunk in its window) but attributes none of its
    /// records: pushes them into the intake's route-only attributor (which keeps
    /// their claims for [`publish_heartbeats`](CollectorSide::publish_heartbeats)
    /// when sharing), takes them back out undecided and returns the connection
    /// topic's messages that carry them to the nodes that attribute them (none for a
    /// duplicate or a frame that does not decode). Without an intake's attributor
    /// ([`new`](CollectorSide::new)), routes the records as they are.
    pub fn receive_and_route(
        &mut self,
        frame: &[u8],
        now: Micros,
        router: &mut ConnectionRouter,
    ) -> Vec<RoutedMessage> {
        let started = Instant::now();
        self.ready.clear();
        self.advance_to(now);
        self.advance_intake(now);
        let mut messages = Vec::new();
        if let Some((batch, records)) = self.take_in(frame, now) {
            let routed = match self.intake.as_mut() {
                None => {
                    let routing = Instant::now();
                    let routed = router.route(&batch, &records);
                    self.stages.route += routing.elapsed();
                    routed
                }
                Some(intake) => {
                    let pushing = Instant::now();
                    let pushed = records.len();
                    intake.push_chunk(Arc::clone(&batch), records, system_time(now));
                    let flows: Vec<AttributedFlow> =
                        std::iter::from_fn(|| intake.pop_ready()).collect();
                    self.stages.intake += pushing.elapsed();
                    // Every record comes back at once, undecided, from this chunk.
                    let decided = flows
                        .iter()
                        .filter(|f| {
                            f.remote_identity_source != RemoteIdentitySource::None
                                || f.remote_unattributed_reason.is_some()
                                || !Arc::ptr_eq(&f.batch, &batch)
                        })
                        .count();
                    self.counters.intake_errors += (decided + pushed.abs_diff(flows.len())) as u64;
                    let routing = Instant::now();
                    let routed = router.route_flows(&batch, &flows);
                    self.stages.route += routing.elapsed();
                    routed
                }
            };
            match routed {
                Ok(routed) => messages = routed,
                Err(_) => self.counters.route_errors += 1,
            }
            for m in &messages {
                self.counters.routed_messages_out += 1;
                self.counters.routed_records_out += u64::from(m.records);
                self.counters.routed_bytes_out += m.bytes.len() as u64;
            }
        }
        self.take_ready();
        self.busy += started.elapsed();
        messages
    }

    /// The attributing stage of connection routing: receives one connection-topic
    /// message at `now`: first decides what time allows up to `now`, then decodes it
    /// and pushes its records, each with its index in its chunk. The flows decided
    /// meanwhile are in [`ready`](CollectorSide::ready) until the next call.
    pub fn receive_routed(&mut self, message: &[u8], now: Micros) {
        let started = Instant::now();
        self.ready.clear();
        self.advance_to(now);
        self.counters.routed_messages_in += 1;
        let decoding = Instant::now();
        let decoded = decode_routed(message);
        self.stages.route += decoding.elapsed();
        match decoded {
            Ok(routed) => {
                let pushing = Instant::now();
                let n = routed.records.len() as u64;
                self.counters.routed_records_in += n;
                self.counters.records_in += n;
                self.attributor.push_records(
                    routed.batch,
                    routed.records,
                    &routed.indices,
                    system_time(now),
                );
                self.stages.attribute += pushing.elapsed();
                self.take_ready();
            }
            Err(_) => self.counters.routed_decode_errors += 1,
        }
        self.busy += started.elapsed();
    }

    /// Takes one frame in at `now` (the intake's work, whatever attributes it):
    /// decodes it, drops it if its batch ID was seen, counts it in its window.
    /// Returns the chunk's batch and records when it is new.
    fn take_in(&mut self, frame: &[u8], now: Micros) -> Option<(Arc<BatchId>, Vec<FlowRecord>)> {
        self.counters.frames += 1;
        let decoding = Instant::now();
        let decoded = self.decoder.decode(frame);
        self.stages.decode += decoding.elapsed();
        let Ok(chunk) = decoded else {
            self.counters.decode_errors += 1;
            return None;
        };
        let header = chunk.header;
        let fresh = match self.seen.get_mut(header.host.as_str()) {
            Some(instances) => instances
                .entry(header.instance)
                .or_default()
                .insert(header.sequence),
            None => {
                let sequences = HashSet::from([header.sequence]);
                self.seen.insert(
                    header.host.clone(),
                    HashMap::from([(header.instance, sequences)]),
                );
                true
            }
        };
        if !fresh {
            self.counters.duplicates += 1;
            return None;
        }
        let counting = Instant::now();
        let batch = Arc::new(BatchId {
            host: header.host,
            instance: header.instance,
            sequence: header.sequence,
        });
        let window = WindowChunk::new(
            Arc::clone(&batch),
            header.window,
            header.chunk_index,
            header.last,
            header.completeness,
            &chunk.records,
        );
        let at = system_time(now);
        let slot = self.windows.wants_slot(&batch, header.window, at);
        let slot = if slot { Slot::Unwritten } else { Slot::None };
        self.windows.observe(&window, slot, at);
        self.stages.windows += counting.elapsed();
        Some((batch, chunk.records))
    }

    /// Decides what time allows up to `now`.
    pub fn advance(&mut self, now: Micros) {
        let started = Instant::now();
        self.ready.clear();
        self.advance_to(now);
        self.advance_intake(now);
        self.busy += started.elapsed();
    }

    /// Advances the intake's route-only attributor to `now` (it decides nothing,
    /// but forgets the workloads its book no longer names), as the real intake's
    /// pipeline does before each chunk and every second.
    fn advance_intake(&mut self, now: Micros) {
        if let Some(intake) = self.intake.as_mut() {
            let advancing = Instant::now();
            intake.advance(system_time(now));
            self.stages.intake += advancing.elapsed();
        }
    }

    /// Decides every held flow (shutdown at `now`).
    pub fn drain(&mut self, now: Micros) {
        let started = Instant::now();
        self.ready.clear();
        self.advance_to(now);
        let draining = Instant::now();
        self.attributor.drain(system_time(now));
        self.stages.attribute += draining.elapsed();
        // Every window still waiting for chunks is reported as it would be after its
        // grace.
        let grace = self.windows.config().grace;
        self.windows.advance(system_time(now) + grace);
        self.take_ready();
        self.busy += started.elapsed();
    }

    /// Advances the attributor to `now`, as the collector's pipeline does before each
    /// chunk and every second: what became due before `now` is decided at `now`, with
    /// the same evidence, since nothing arrived in between.
    fn advance_to(&mut self, now: Micros) {
        let started = Instant::now();
        self.attributor.advance(system_time(now));
        self.stages.attribute += started.elapsed();
        let counting = Instant::now();
        self.windows.advance(system_time(now));
        self.stages.windows += counting.elapsed();
        self.take_ready();
    }

    /// Takes the decided flows out and writes their JSON lines.
    fn take_ready(&mut self) {
        let popping = Instant::now();
        let first = self.ready.len();
        while let Some(flow) = self.attributor.pop_ready() {
            self.ready.push(flow);
        }
        let serializing = Instant::now();
        self.stages.attribute += serializing - popping;
        for flow in &self.ready[first..] {
            if self.out.len() >= OUT_BUFFER {
                self.counters.json_bytes += self.out.len() as u64;
                self.out.clear();
            }
            // Writing into a Vec fails only if serde_json does (it does not for
            // these types); the flow is checked all the same.
            let _ = write_json_line(&mut self.out, flow);
            self.counters.interim_out += u64::from(flow.record.record_kind == RecordKind::Interim);
        }
        while let Some(report) = self.windows.pop_report() {
            self.window_tally.note(&report);
            let _ = write_completeness_line(&mut self.out, &report);
            if let Some(kept) = self.reports.as_mut() {
                kept.push(report);
            }
        }
        while self.windows.pop_silent().is_some() {
            self.window_tally.without_completeness += 1;
        }
        self.window_tally.late_chunks = self.windows.stats().late_chunks;
        self.counters.flows_out += (self.ready.len() - first) as u64;
        self.stages.serialize += serializing.elapsed();
    }

    /// The windows' completeness records so far, judged.
    pub fn windows(&self) -> &WindowTally {
        &self.window_tally
    }

    /// The flows decided by the last call.
    pub fn ready(&self) -> &[AttributedFlow] {
        &self.ready
    }

    /// Keeps the windows' completeness records from now on, for
    /// [`take_reports`](CollectorSide::take_reports) (the dependency graph takes
    /// them); without it they are only written and judged.
    pub fn keep_reports(&mut self) {
        self.reports.get_or_insert_with(Vec::new);
    }

    /// The completeness records kept since the last call (none unless
    /// [`keep_reports`](CollectorSide::keep_reports) was called).
    pub fn take_reports(&mut self) -> Vec<WindowReport> {
        self.reports
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Time spent in the collector's work so far (decode, deduplicate, attribute,
    /// serialize).
    pub fn busy(&self) -> Duration {
        self.busy
    }

    /// Where the time went, by stage (the rest of [`busy`](CollectorSide::busy) is
    /// the loop around them and dropping the flows taken out).
    pub fn stages(&self) -> StageTimes {
        self.stages
    }

    /// What it did.
    pub fn counters(&self) -> CollectorCounters {
        let mut c = self.counters.clone();
        c.json_bytes += self.out.len() as u64;
        c
    }

    /// The attributor's counters and sizes now (not timed); routed by connection,
    /// the attributing stage's, with the heartbeats the intake shared.
    pub fn stats(&self) -> AttributionStats {
        let mut s = self.attributor.stats();
        if let Some(intake) = &self.intake {
            let i = intake.stats();
            s.heartbeats_shared_out += i.heartbeats_shared_out;
            s.heartbeat_ranges_shared_out += i.heartbeat_ranges_shared_out;
            s.heartbeat_book_entries += i.heartbeat_book_entries;
        }
        s
    }

    /// Takes the heartbeats of the chunks pushed since the last call out (routed by
    /// connection, the intake's: the claims of the chunks it took in), encodes each
    /// as the heartbeat topic's message and decodes it as every node that applies
    /// it would: returns them as decoded (decoding is timed once, here, for all the
    /// receivers).
    pub fn publish_heartbeats(&mut self) -> Vec<Heartbeat> {
        let started = Instant::now();
        let taken = match self.intake.as_mut() {
            Some(intake) => intake.take_heartbeats(),
            None => self.attributor.take_heartbeats(),
        };
        let mut decoded = Vec::with_capacity(taken.len());
        for heartbeat in &taken {
            let message = heartbeat.encode();
            self.counters.heartbeats_out += 1;
            self.counters.heartbeat_bytes_out += message.len() as u64;
            self.counters.heartbeat_ranges_out += heartbeat.ranges().len() as u64;
            match Heartbeat::decode(&message) {
                Ok(h) => decoded.push(h),
                Err(_) => self.counters.heartbeat_decode_errors += 1,
            }
        }
        let elapsed = started.elapsed();
        self.stages.heartbeats += elapsed;
        self.busy += elapsed;
        decoded
    }

    /// Receives heartbeats at `now` (other nodes', or routed by connection any
    /// node's intake's, this one's included): first decides what time allows up to
    /// `now`, then applies them to the attributor that attributes. The flows decided meanwhile are in
    /// [`ready`](CollectorSide::ready) until the next call.
    pub fn apply_heartbeats(&mut self, heartbeats: &[Heartbeat], now: Micros) {
        let started = Instant::now();
        self.ready.clear();
        self.advance_to(now);
        let applying = Instant::now();
        self.attributor
            .apply_heartbeats(heartbeats, system_time(now));
        self.counters.heartbeats_in += heartbeats.len() as u64;
        self.stages.attribute += applying.elapsed();
        self.take_ready();
        self.busy += started.elapsed();
    }

    /// Notes the ownership map's size if it is the largest seen (not timed).
    pub fn sample(&mut self) {
        let s = self.attributor.stats();
        if s.map_bytes >= self.peak.map_bytes {
            self.peak.map_bytes = s.map_bytes;
            self.peak.tracked_ips = s.tracked_ips;
            self.peak.ranges = s.ranges;
        }
        self.peak.held = self.peak.held.max(s.held);
        self.peak.peer_index_entries = self.peak.peer_index_entries.max(s.peer_index_entries);
    }

    /// The largest map seen by [`sample`](CollectorSide::sample).
    pub fn peak(&self) -> &PeakMap {
        &self.peak
    }
}

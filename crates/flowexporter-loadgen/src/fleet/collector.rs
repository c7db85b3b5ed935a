//! The collector's side, as the real collector runs it on one thread: decode each
//! frame, drop batch IDs seen before, push the records into the [`Attributor`] at the
//! simulated arrival time, advance it, take the decided flows out and serialize each
//! as the collector's JSON line. Only this work is timed.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use flow_batch::wire::{BatchId, ChunkDecoder, DecodeLimits, InstanceId};
use flow_collector::{
    attribution::{AttributedFlow, AttributionConfig, AttributionStats, Attributor},
    output::write_json_line,
};

use crate::fleet::world::{Micros, system_time};

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
    /// Bytes of JSON lines written.
    pub json_bytes: u64,
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

/// The collector: decoder, deduplication set, attributor and output buffer.
pub struct CollectorSide {
    attributor: Attributor,
    decoder: ChunkDecoder,
    /// Sequences seen, per host and exporter instance (the ledger's in-memory part).
    seen: HashMap<String, HashMap<InstanceId, HashSet<u64>>>,
    out: Vec<u8>,
    ready: Vec<AttributedFlow>,
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
        Ok(CollectorSide {
            attributor: Attributor::new(config),
            decoder: ChunkDecoder::new(DecodeLimits::default())?,
            seen: HashMap::new(),
            out: Vec::with_capacity(OUT_BUFFER + 4096),
            ready: Vec::new(),
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
        self.counters.frames += 1;
        let decoding = Instant::now();
        let decoded = self.decoder.decode(frame);
        self.stages.decode += decoding.elapsed();
        match decoded {
            Ok(chunk) => {
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
                if fresh {
                    let pushing = Instant::now();
                    self.counters.records_in += chunk.records.len() as u64;
                    let batch = Arc::new(BatchId {
                        host: header.host,
                        instance: header.instance,
                        sequence: header.sequence,
                    });
                    self.attributor
                        .push_chunk(batch, chunk.records, system_time(now));
                    self.stages.attribute += pushing.elapsed();
                    self.take_ready();
                } else {
                    self.counters.duplicates += 1;
                }
            }
            Err(_) => self.counters.decode_errors += 1,
        }
        self.busy += started.elapsed();
    }

    /// Decides what time allows up to `now`.
    pub fn advance(&mut self, now: Micros) {
        let started = Instant::now();
        self.ready.clear();
        self.advance_to(now);
        self.busy += started.elapsed();
    }

    /// Decides every held flow (shutdown at `now`).
    pub fn drain(&mut self, now: Micros) {
        let started = Instant::now();
        self.ready.clear();
        self.advance_to(now);
        let draining = Instant::now();
        self.attributor.drain(system_time(now));
        self.stages.attribute += draining.elapsed();
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
        }
        self.counters.flows_out += (self.ready.len() - first) as u64;
        self.stages.serialize += serializing.elapsed();
    }

    /// The flows decided by the last call.
    pub fn ready(&self) -> &[AttributedFlow] {
        &self.ready
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

    /// The attributor's counters and sizes now (not timed).
    pub fn stats(&self) -> AttributionStats {
        self.attributor.stats()
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

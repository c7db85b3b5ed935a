//! The simulation loop: minute by minute, the fleet runs, its workloads connect, each
//! exporter ships the window that closed as real frames (the last one with the
//! window's completeness: every close emitted, nothing lost on the host), the network
//! delays, repeats or loses them, and the collector takes what arrived.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    path::Path,
    rc::Rc,
    time::{Duration, Instant},
};

use flow_batch::{Chunk, Completeness, Window, wire::ChunkEncoder};
use flow_collector::attribution::{AttributionConfig, StaticOwners};
use flow_record::RecordKind;

use crate::fleet::{
    check::{Checker, ChunkFate},
    collector::CollectorSide,
    config::FleetConfig,
    faults::Faults,
    report::{Delivery, FleetReport},
    traffic::{Pending, Traffic},
    truth::{Truth, TruthTable},
    world::{MINUTE, Micros, SECOND, STATIC_TABLE, T0_SECS, World},
};

/// How long after its window's end (in its host's clock) an exporter sends a chunk:
/// the batcher's default allowed lateness.
const SEND_AFTER: Micros = 2 * SECOND;

/// A frame on its way.
#[derive(Debug)]
struct Arrival {
    at: Micros,
    order: u64,
    frame: Rc<[u8]>,
}

impl PartialEq for Arrival {
    fn eq(&self, other: &Arrival) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl Eq for Arrival {}

impl PartialOrd for Arrival {
    fn partial_cmp(&self, other: &Arrival) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Arrival {
    fn cmp(&self, other: &Arrival) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// One host's exporter: its next sequence number. Its encoder is made for each chunk:
/// a zstd context kept per host costs about 175 KiB once used, which at 1,000 hosts
/// would outweigh the collector being measured.
struct Exporter {
    sequence: u64,
}

/// Independent seeds for the world, the traffic and the faults (SplitMix64), so that
/// changing the faults does not change the traffic.
fn seeds(seed: u64) -> [u64; 3] {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    [next(), next(), next()]
}

/// The simulation's state between minutes.
struct Sim<'c> {
    config: &'c FleetConfig,
    world: World,
    traffic: Traffic,
    faults: Faults,
    exporters: Vec<Exporter>,
    pending: Vec<Vec<Pending>>,
    network: BinaryHeap<Reverse<Arrival>>,
    order: u64,
    truths: TruthTable,
    collector: CollectorSide,
    checker: Checker,
    delivery: Delivery,
    generation: Duration,
    /// Every chunk's fate (kept for describing misattributions).
    chunk_log: Vec<ChunkFate>,
}

/// Runs the simulation `config` describes and reports.
pub fn run(config: &FleetConfig) -> anyhow::Result<FleetReport> {
    config.validate().map_err(anyhow::Error::msg)?;
    let wall = Instant::now();
    let [world_seed, traffic_seed, fault_seed] = seeds(config.seed);
    let world = World::new(config, world_seed);
    let static_owners = StaticOwners::parse(STATIC_TABLE, Path::new("fleet static owners"))?;
    let attribution = AttributionConfig::default()
        .with_hold_back(config.hold_back)
        .with_tolerance(config.tolerance)
        .with_static_owners(static_owners);
    let exporters = world
        .hosts
        .iter()
        .map(|_| Exporter { sequence: 0 })
        .collect();
    let mut sim = Sim {
        config,
        pending: vec![Vec::new(); world.hosts.len()],
        world,
        traffic: Traffic::new(traffic_seed, i64::from(config.minutes) * MINUTE),
        faults: Faults::new(config, fault_seed),
        exporters,
        network: BinaryHeap::new(),
        order: 0,
        truths: TruthTable::new(),
        collector: CollectorSide::new(attribution)?,
        checker: Checker::new(),
        delivery: Delivery::default(),
        generation: Duration::ZERO,
        chunk_log: Vec::new(),
    };
    let total = i64::from(config.minutes) + i64::from(config.tail_minutes());
    for m in 0..total {
        sim.minute(m)?;
    }
    // The tail lets every chunk arrive and every held flow wait out its hold-back;
    // then the collector shuts down.
    let end = total * MINUTE;
    sim.deliver(end);
    sim.delivery.undelivered = sim.network.len() as u64;
    sim.collector.drain(end);
    sim.check();
    let peak_rss_kib = peak_rss_kib();
    Ok(FleetReport {
        config: config.clone(),
        traffic: sim.traffic.counts().clone(),
        delivery: sim.delivery,
        collector: sim.collector.counters(),
        tally: sim.checker.tally,
        examples: sim.checker.examples,
        missing: sim.truths.pending(),
        collector_time: sim.collector.busy(),
        stages: sim.collector.stages(),
        generation_time: sim.generation,
        wall_time: wall.elapsed(),
        peak_rss_kib,
        final_stats: sim.collector.stats(),
        windows: sim.collector.windows().clone(),
        peak_map: sim.collector.peak().clone(),
        workloads: sim.world.workloads.len() as u64,
    })
}

impl Sim<'_> {
    /// Minute `m`: the fleet runs and talks, the windows that closed are sent, the
    /// collector takes what arrived up to the minute's start.
    fn minute(&mut self, m: i64) -> anyhow::Result<()> {
        let started = Instant::now();
        let (from, to) = (m * MINUTE, (m + 1) * MINUTE);
        self.world.run_minute(from, to);
        if m < i64::from(self.config.minutes) {
            self.traffic.minute(
                &mut self.world,
                from,
                to,
                self.config.connections_per_minute,
                &mut self.pending,
            );
        }
        // A record generated in minute m closes, in its host's clock, in window m - 1,
        // m or m + 1: window m - 1 is complete now and is sent about now.
        for h in 0..self.pending.len() {
            self.flush(h, m - 1, from)?;
        }
        // Misattributions are described from the chunks of the last minutes only.
        self.chunk_log.retain(|c| c.window >= m - 15);
        self.generation += started.elapsed();
        self.deliver(from);
        self.collector.sample();
        Ok(())
    }

    /// Sends host `h`'s windows up to `upto`, no earlier than `now`.
    fn flush(&mut self, h: usize, upto: i64, now: Micros) -> anyhow::Result<()> {
        if self.pending[h].is_empty() {
            return Ok(());
        }
        let mut due: Vec<Pending> = self.pending[h]
            .extract_if(.., |p| p.window <= upto)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        due.sort_by_key(|p| (p.window, p.record.t_end));
        let skew = self.world.hosts[h].skew;
        let max = self.config.max_records_per_chunk;
        let mut rest = due.as_slice();
        while let Some(first) = rest.first() {
            let window = first.window;
            let in_window = rest.iter().take_while(|p| p.window == window).count();
            let (this, next) = rest.split_at(in_window);
            rest = next;
            let chunks = this.len().div_ceil(max);
            // What the exporter counted of the window: its kernel saw every close and
            // emitted a record for each, and nothing was lost on the host.
            let interim = this
                .iter()
                .filter(|p| p.record.record_kind == RecordKind::Interim)
                .count() as u64;
            let finals = this.len() as u64 - interim;
            let completeness = Completeness {
                closes_seen: finals,
                records_emitted: finals,
                interim_records: interim,
                running_whole_window: true,
                ..Completeness::default()
            };
            for (index, part) in this.chunks(max).enumerate() {
                let last = (index + 1 == chunks).then_some(completeness);
                // The window ends at (window + 1) minutes in the host's clock.
                let send = ((window + 1) * MINUTE + SEND_AFTER - skew).max(now + SEND_AFTER);
                self.send(h, window, index as u32, last, part, send)?;
            }
        }
        Ok(())
    }

    /// Encodes and sends one chunk (the window's last when it carries the window's
    /// completeness).
    fn send(
        &mut self,
        h: usize,
        window: i64,
        index: u32,
        last: Option<Completeness>,
        part: &[Pending],
        send: Micros,
    ) -> anyhow::Result<()> {
        let window_index = window;
        let start_ms = (T0_SECS as i64 * 1000 + window * 60_000) as u64;
        let window = Window::from_millis(start_ms, start_ms + 60_000)
            .ok_or_else(|| anyhow::anyhow!("window {window} is empty"))?;
        let exporter = &mut self.exporters[h];
        let sequence = exporter.sequence;
        exporter.sequence += 1;
        let records = part.iter().map(|p| p.record.clone()).collect();
        let mut chunk = Chunk::new(window, index, sequence, last.is_some(), records);
        chunk.completeness = last;
        let host = &self.world.hosts[h];
        let mut encoder = ChunkEncoder::new(host.name.clone(), host.instance)?;
        let frame: Rc<[u8]> = encoder.encode_to_vec(&chunk)?.into();
        let fate = self.faults.next_fate();
        self.chunk_log.push(ChunkFate {
            host: h as u32,
            sequence,
            window: window_index,
            records: part.len() as u32,
            sent: send,
            arrivals: fate.delays.iter().map(|d| send + d).collect(),
        });
        self.delivery.chunks += 1;
        self.delivery.records += part.len() as u64;
        if self.config.generate_only {
            return Ok(());
        }
        if fate.dropped() {
            self.delivery.dropped += 1;
            self.delivery.records_dropped += part.len() as u64;
            return Ok(());
        }
        self.delivery.late += u64::from(fate.late);
        self.delivery.reordered += u64::from(fate.reordered);
        self.delivery.duplicated += fate.delays.len() as u64 - 1;
        let truths: Vec<Truth> = part.iter().map(|p| p.truth).collect();
        let host = &self.world.hosts[h];
        self.truths
            .insert(h as u32, host.instance, sequence, truths);
        for delay in fate.delays {
            self.order += 1;
            self.network.push(Reverse(Arrival {
                at: send + delay,
                order: self.order,
                frame: Rc::clone(&frame),
            }));
        }
        Ok(())
    }

    /// The collector receives every frame that arrives up to `upto`, in order of
    /// arrival, then advances to `upto`.
    fn deliver(&mut self, upto: Micros) {
        while let Some(Reverse(arrival)) = self.network.peek() {
            if arrival.at > upto {
                break;
            }
            let Some(Reverse(arrival)) = self.network.pop() else {
                break;
            };
            self.collector.receive(&arrival.frame, arrival.at);
            self.check();
        }
        self.collector.advance(upto);
        self.check();
    }

    fn check(&mut self) {
        self.checker.check(
            self.collector.ready(),
            &mut self.truths,
            &self.world,
            &self.chunk_log,
        );
    }
}

/// The process's peak resident set (`VmHWM`), KiB; 0 when unknown.
fn peak_rss_kib() -> u64 {
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .ok()
        .and_then(|s| s.vmhwm)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_and_repeat() {
        let a = seeds(1);
        assert_eq!(a, seeds(1));
        assert_ne!(a[0], a[1]);
        assert_ne!(a, seeds(2));
    }
}

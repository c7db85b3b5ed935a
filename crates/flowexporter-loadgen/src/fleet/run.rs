//! The simulation loop: minute by minute, the fleet runs, its workloads connect, each
//! exporter ships the window that closed as real frames (the last one with the
//! window's completeness: every close emitted, nothing lost on the host), the network
//! delays, repeats or loses them, and the collector takes what arrived. With several
//! collector nodes, each chunk goes to one node ([`Routing`]); after each chunk a
//! node takes its heartbeats out, and they reach every other node
//! [`heartbeat_delay`](FleetConfig::heartbeat_delay) later. Routed by connection,
//! the chunk's node (its intake) routes its records instead of attributing them:
//! they reach the nodes that own their connections' partitions
//! [`routing_delay`](FleetConfig::routing_delay) later, which attribute them; the
//! intake takes the chunk's heartbeats out (it saw every record's claim), and they
//! reach every node, the intake's own included, the heartbeat delay later.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    path::Path,
    rc::Rc,
    time::{Duration, Instant},
};

use flow_batch::{Chunk, Completeness, Window, wire::ChunkEncoder};
use flow_collector::{
    attribution::{AttributionConfig, AttributionStats, Heartbeat, StaticOwners},
    graph::{GraphAggregator, GraphConfig, GraphQuery, GraphResponse},
};
use flow_record::RecordKind;

use crate::fleet::{
    check::{Checker, ChunkFate, EXAMPLES, Tally},
    collector::{CollectorCounters, CollectorSide, PeakMap, StageTimes, WindowTally},
    config::{FleetConfig, Routing},
    faults::Faults,
    report::{Delivery, FleetReport, NodeReport},
    routing::{ConnectionRouter, RoutedMessage, intake_node},
    traffic::{Pending, Traffic},
    truth::{Truth, TruthTable},
    world::{MINUTE, Micros, SECOND, STATIC_TABLE, T0_SECS, World, system_time},
};

/// How long after its window's end (in its host's clock) an exporter sends a chunk:
/// the batcher's default allowed lateness.
const SEND_AFTER: Micros = 2 * SECOND;

/// What travels: a chunk's frame to a node, a chunk's connection-topic messages to a
/// node that owns their partitions (what one poll of its consumer returns), or a
/// node's heartbeats to every node but `skip` (every other, or, routed by
/// connection, every one).
#[derive(Debug)]
enum Payload {
    Frame {
        node: usize,
        frame: Rc<[u8]>,
    },
    Routed {
        node: usize,
        messages: Vec<Vec<u8>>,
    },
    Heartbeats {
        skip: Option<usize>,
        heartbeats: Rc<[Heartbeat]>,
    },
}

/// A frame or heartbeats on their way.
#[derive(Debug)]
struct Arrival {
    at: Micros,
    order: u64,
    payload: Payload,
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
    /// The collector nodes, and the checker of each one's flows.
    nodes: Vec<CollectorSide>,
    checkers: Vec<Checker>,
    /// The node the next chunk goes to, when they go round robin.
    next_node: usize,
    /// The intakes' connection routing (routed by connection).
    router: Option<ConnectionRouter>,
    delivery: Delivery,
    generation: Duration,
    /// Every chunk's fate (kept for describing misattributions).
    chunk_log: Vec<ChunkFate>,
    /// The dependency graph of every node's flows and completeness records
    /// ([`FleetConfig::graph`]).
    graph: Option<GraphAggregator>,
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
        .with_static_owners(static_owners)
        .with_heartbeat_sharing(config.sharing());
    let mut nodes = (0..config.nodes)
        .map(|_| match config.routing {
            Routing::ByConnection => CollectorSide::routing_by_connection(attribution.clone()),
            Routing::ByHost | Routing::RoundRobin => CollectorSide::new(attribution.clone()),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if config.graph {
        for node in &mut nodes {
            node.keep_reports();
        }
    }
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
        checkers: nodes.iter().map(|_| Checker::new()).collect(),
        nodes,
        next_node: 0,
        router: (config.routing == Routing::ByConnection)
            .then(|| ConnectionRouter::new(config.connection_partitions, config.nodes)),
        delivery: Delivery::default(),
        generation: Duration::ZERO,
        chunk_log: Vec::new(),
        // The collector's own settings (`--graph-*` left at their defaults).
        graph: config
            .graph
            .then(|| GraphAggregator::new(GraphConfig::default())),
    };
    let total = i64::from(config.minutes) + i64::from(config.tail_minutes());
    for m in 0..total {
        sim.minute(m)?;
    }
    // The tail lets every chunk arrive and every held flow wait out its hold-back;
    // then the collector shuts down.
    let end = total * MINUTE;
    sim.deliver(end);
    sim.delivery.undelivered = sim
        .network
        .iter()
        .filter(|Reverse(a)| !matches!(a.payload, Payload::Heartbeats { .. }))
        .count() as u64;
    for n in 0..sim.nodes.len() {
        sim.nodes[n].drain(end);
        sim.check(n, end);
    }
    let graph = sim.graph.as_mut().map(|graph| whole_run(graph, end));
    let peak_rss_kib = peak_rss_kib();
    let nodes: Vec<NodeReport> = sim
        .nodes
        .iter()
        .zip(&sim.checkers)
        .map(|(node, checker)| NodeReport {
            collector: node.counters(),
            tally: checker.tally.clone(),
            stats: node.stats(),
            windows: node.windows().clone(),
            peak_map: node.peak().clone(),
            busy: node.busy(),
            stages: node.stages(),
        })
        .collect();
    let (mut collector, mut tally, mut windows, mut stages) = (
        CollectorCounters::default(),
        Tally::default(),
        WindowTally::default(),
        StageTimes::default(),
    );
    let mut collector_time = Duration::ZERO;
    let mut peak_map = PeakMap::default();
    for node in &nodes {
        collector.add(&node.collector);
        tally.add(&node.tally);
        windows.add(&node.windows);
        stages.add(&node.stages);
        collector_time += node.busy;
        if node.peak_map.map_bytes >= peak_map.map_bytes {
            peak_map = node.peak_map.clone();
        }
    }
    let examples = sim
        .checkers
        .iter()
        .flat_map(|c| c.examples.iter().cloned())
        .take(EXAMPLES)
        .collect();
    let final_stats = sum_stats(nodes.iter().map(|n| &n.stats));
    Ok(FleetReport {
        config: config.clone(),
        traffic: sim.traffic.counts().clone(),
        delivery: sim.delivery,
        collector,
        tally,
        examples,
        missing: sim.truths.pending(),
        collector_time,
        stages,
        generation_time: sim.generation,
        wall_time: wall.elapsed(),
        peak_rss_kib,
        final_stats,
        windows,
        peak_map,
        workloads: sim.world.workloads.len() as u64,
        nodes,
        graph,
    })
}

/// The graph's answer for the whole run, `end` being its last moment: every minute
/// from the one before the traffic's start (skewed clocks run up to half
/// [`FleetConfig::max_skew`], at most 15 s, behind) to the one after `end`,
/// workload or not. The simulation is far shorter than the retention, so nothing
/// was dropped.
fn whole_run(graph: &mut GraphAggregator, end: Micros) -> GraphResponse {
    graph.advance(system_time(end));
    graph.query(&GraphQuery::new(
        system_time(-MINUTE),
        system_time(end + MINUTE),
        None,
    ))
}

/// The nodes' attributor stats added up (counters, and gauges: the nodes' maps
/// together).
fn sum_stats<'a>(all: impl Iterator<Item = &'a AttributionStats>) -> AttributionStats {
    let mut s = AttributionStats::default();
    for n in all {
        s.flows_in += n.flows_in;
        s.flows_out += n.flows_out;
        s.attributed_peer_record += n.attributed_peer_record;
        s.attributed_heartbeat += n.attributed_heartbeat;
        s.attributed_static += n.attributed_static;
        for (sum, x) in s.unattributed.iter_mut().zip(n.unattributed) {
            *sum += x;
        }
        s.heartbeats += n.heartbeats;
        s.heartbeats_too_old += n.heartbeats_too_old;
        s.heartbeats_shared_out += n.heartbeats_shared_out;
        s.heartbeat_ranges_shared_out += n.heartbeat_ranges_shared_out;
        s.heartbeat_book_entries += n.heartbeat_book_entries;
        s.heartbeats_applied_remote += n.heartbeats_applied_remote;
        s.heartbeat_ranges_remote += n.heartbeat_ranges_remote;
        s.heartbeat_ranges_remote_too_old += n.heartbeat_ranges_remote_too_old;
        s.heartbeats_remote_refused += n.heartbeats_remote_refused;
        s.conflicts += n.conflicts;
        s.ranges_evicted += n.ranges_evicted;
        s.ranges_expired += n.ranges_expired;
        s.held += n.held;
        s.tracked_ips += n.tracked_ips;
        s.ranges += n.ranges;
        s.peer_index_entries += n.peer_index_entries;
        s.peer_index_evicted += n.peer_index_evicted;
        s.map_bytes += n.map_bytes;
    }
    s
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
        for node in &mut self.nodes {
            node.sample();
        }
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
        let nodes = self.nodes.len();
        let node = match self.config.routing {
            Routing::ByHost | Routing::ByConnection => intake_node(&host.name, nodes),
            Routing::RoundRobin => {
                let node = self.next_node;
                self.next_node = (node + 1) % nodes;
                node
            }
        };
        for delay in fate.delays {
            self.order += 1;
            self.network.push(Reverse(Arrival {
                at: send + delay,
                order: self.order,
                payload: Payload::Frame {
                    node,
                    frame: Rc::clone(&frame),
                },
            }));
        }
        Ok(())
    }

    /// The nodes receive every frame, connection-topic message and node's heartbeats
    /// that arrive up to `upto`, in order of arrival, then advance to `upto`. A node
    /// that received a frame takes its heartbeats out then (when sharing), for the
    /// other nodes (routed by connection: its intake's, for every node); an intake
    /// that routes a frame's records sends them on first.
    fn deliver(&mut self, upto: Micros) {
        while let Some(Reverse(arrival)) = self.network.peek() {
            if arrival.at > upto {
                break;
            }
            let Some(Reverse(arrival)) = self.network.pop() else {
                break;
            };
            match arrival.payload {
                Payload::Frame { node, frame } => match self.router.as_mut() {
                    None => {
                        self.nodes[node].receive(&frame, arrival.at);
                        self.check(node, arrival.at);
                        if self.config.sharing() {
                            self.publish(node, arrival.at);
                        }
                    }
                    Some(router) => {
                        let messages =
                            self.nodes[node].receive_and_route(&frame, arrival.at, router);
                        self.check(node, arrival.at);
                        self.route(messages, arrival.at);
                        if self.config.sharing() {
                            self.publish(node, arrival.at);
                        }
                    }
                },
                // The attributing stage shares nothing: its records' claims went out
                // with their intake's heartbeats.
                Payload::Routed { node, messages } => {
                    for message in &messages {
                        self.nodes[node].receive_routed(message, arrival.at);
                        self.check(node, arrival.at);
                    }
                }
                Payload::Heartbeats { skip, heartbeats } => {
                    for n in (0..self.nodes.len()).filter(|&n| Some(n) != skip) {
                        self.nodes[n].apply_heartbeats(&heartbeats, arrival.at);
                        self.check(n, arrival.at);
                    }
                }
            }
        }
        for n in 0..self.nodes.len() {
            self.nodes[n].advance(upto);
            self.check(n, upto);
        }
    }

    /// An intake's connection-topic messages of one chunk, written at `now`: each
    /// node receives those of its partitions together, in partition order, after the
    /// routing delay.
    fn route(&mut self, messages: Vec<RoutedMessage>, now: Micros) {
        let delay = i64::try_from(self.config.routing_delay.as_micros()).unwrap_or(i64::MAX);
        let mut by_node: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.nodes.len()];
        for m in messages {
            by_node[m.node].push(m.bytes);
        }
        for (node, messages) in by_node.into_iter().enumerate() {
            if messages.is_empty() {
                continue;
            }
            self.order += 1;
            self.network.push(Reverse(Arrival {
                at: now.saturating_add(delay),
                order: self.order,
                payload: Payload::Routed { node, messages },
            }));
        }
    }

    /// Node `node` takes its heartbeats out at `now`; they reach every other node
    /// after the heartbeat delay (with one node, nobody: only their cost and volume
    /// are counted). Routed by connection, they are its intake's, and reach every
    /// node, its own included (one node too): its attributing stage has seen only
    /// the records of its partitions.
    fn publish(&mut self, node: usize, now: Micros) {
        let heartbeats = self.nodes[node].publish_heartbeats();
        let skip = (self.config.routing != Routing::ByConnection).then_some(node);
        let receivers = self.nodes.len() - usize::from(skip.is_some());
        if heartbeats.is_empty() || receivers == 0 {
            return;
        }
        let delay = i64::try_from(self.config.heartbeat_delay.as_micros()).unwrap_or(i64::MAX);
        self.order += 1;
        self.network.push(Reverse(Arrival {
            at: now.saturating_add(delay),
            order: self.order,
            payload: Payload::Heartbeats {
                skip,
                heartbeats: heartbeats.into(),
            },
        }));
    }

    /// Checks the flows node `node` decided last, at `now`, and (with
    /// [`FleetConfig::graph`]) aggregates them and the completeness records it
    /// reported into the graph, as the collector's output does.
    fn check(&mut self, node: usize, now: Micros) {
        self.checkers[node].check(
            self.nodes[node].ready(),
            &mut self.truths,
            &self.world,
            &self.chunk_log,
        );
        if let Some(graph) = self.graph.as_mut() {
            let now = system_time(now);
            graph.add_flows(self.nodes[node].ready(), now);
            graph.add_reports(&self.nodes[node].take_reports(), now);
        }
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

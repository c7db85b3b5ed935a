//! The dependency graph's aggregation and queries (`flow_collector::graph`,
//! `docs/graph.md`), on simulated time, with no I/O, at the default `GraphConfig`
//! (retention 6 h, top 50 edges per node and minute, 500,000 edge-minutes, answers
//! of at most 5,000 edges):
//!
//! - `add_flows`: the cost per flow in steady state. 200 workloads with 10 distinct
//!   peers each (9 other workloads on ports 443/8080/5432/6379/9090, 1 unattributed
//!   address: 2,000 edges), 5 final records per edge and minute (10,000 flows a
//!   minute), their `t_end` spread over the minute, RTTs and bytes varied, 2% of the
//!   unattributed edge's connections refused; added in calls of 100 flows with the
//!   clock following the flows. The aggregator is filled with 6 hours of them first
//!   (so it evicts the oldest minute at the edge cap as it goes); one iteration is
//!   one minute's flows, so the throughput is flows per second (ns per flow = 1 /
//!   it). Making the flows is not timed.
//! - `query/default_15min`: the default range (the 15 minutes before now) over the
//!   same graph, one hour held.
//! - `query/cap_6h` and `query/cap_6h_workload`: the whole retention at the memory
//!   cap, every edge and one workload's (`workload=`): 200 workloads x 7 edges (1,400
//!   edges a minute, 3 records each) until about 500,000 edge-minutes are held.
//! - `query/churn_cap_6h` and `query/churn_cap_6h_workload`: the same, with every
//!   minute's 1,400 edges new (each workload's peers are unattributed addresses that
//!   never repeat): the query merges about 500,000 distinct edges and cuts the answer
//!   to 5,000, its worst case.
//!
//! A query is timed from its call until its answer is built (what the collector does
//! holding the graph's lock); dropping the answer and serializing it are not. The
//! sizes of the graphs and of the answers are printed once each (stderr).
//!
//! ```text
//! cargo bench -p flowcollector --bench graph
//! cargo bench -p flowcollector --bench graph -- query/cap   # a subset
//! ```

use std::{
    cell::OnceCell,
    hint::black_box,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use flow_batch::wire::{BatchId, InstanceId};
use flow_collector::{
    attribution::{AttributedFlow, RemoteIdentitySource, RemoteUnattributedReason},
    graph::{GraphAggregator, GraphConfig, GraphQuery},
};
use flow_record::{CloseReason, Direction, FlowId, FlowRecord, IdentitySource, WorkloadId};

/// The first simulated minute (2026-12-01T00:00:00Z, in minutes since the epoch).
const FIRST_MINUTE: u64 = 1_796_083_200 / 60;

/// Flows per `add_flows` call (one written batch of the pipeline).
const FLOWS_PER_CALL: usize = 100;

/// Workloads per simulated host (each host's flows come in its own batches).
const WORKLOADS_PER_HOST: u32 = 10;

/// The server ports of the edges between workloads, by peer.
const PORTS: [u16; 5] = [443, 8080, 5432, 6379, 9090];

/// The graph's workloads: `workloads` of them, each the client of `peers` edges
/// (all but the last to other workloads, the last to an unattributed address),
/// `flows_per_edge` records per edge and minute.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Workloads (clients), at most 250.
    workloads: u32,
    /// Edges of each workload per minute.
    peers: u32,
    /// Records per edge and minute.
    flows_per_edge: u32,
    /// Every minute's edges are new: each workload's peers are unattributed
    /// addresses never seen before.
    churn: bool,
}

impl Shape {
    /// Records per simulated minute.
    fn flows_per_minute(self) -> u64 {
        u64::from(self.workloads * self.peers * self.flows_per_edge)
    }
}

/// A small, fast pseudo-random generator (SplitMix64): the same flows on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[0, n)`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One edge of the graph: its record's fixed fields and its remote side.
struct Edge {
    /// The client's record, without its per-flow fields.
    template: FlowRecord,
    /// The server's workload, `None` when unattributed.
    remote: Option<WorkloadId>,
    /// The edge's typical smoothed RTT (µs).
    rtt_us: u32,
    /// The client's host (its index).
    host: u32,
}

/// The ID of workload `w`.
fn workload_id(w: u32) -> String {
    format!("spiffe://prod/ns-{}/workload-{w}", w % 20)
}

/// The address of workload `w` (its pod IP).
fn workload_ip(w: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (w / 250) as u8, (w % 250 + 1) as u8)
}

/// Edge `k` of workload `w`, to `server`, its remote named `remote`.
fn edge(w: u32, k: u32, server: SocketAddr, remote: Option<WorkloadId>) -> Edge {
    let template = flow_testkit::record()
        .local(SocketAddr::new(IpAddr::V4(workload_ip(w)), 40_000))
        .remote(server)
        .direction(Direction::Outbound)
        .workload(workload_id(w), IdentitySource::IpMap)
        .build();
    Edge {
        template,
        remote,
        // 200 µs to about 20 ms, fixed per edge.
        rtt_us: 200 + (w * 7_919 + k * 104_729) % 20_000,
        host: w / WORKLOADS_PER_HOST,
    }
}

/// The edges of a graph whose edges do not change (`shape.churn` false).
fn stable_edges(shape: Shape) -> Vec<Edge> {
    let mut edges = Vec::new();
    for w in 0..shape.workloads {
        for k in 0..shape.peers {
            if k + 1 == shape.peers {
                // An outside database nobody attributes.
                let db = SocketAddr::from(([198, 51, 100, (w % 50 + 1) as u8], 5432));
                edges.push(edge(w, k, db, None));
            } else {
                // Distinct for each k (1 + 19k < 200 when k < 10), never w itself.
                let r = (w + 1 + k * 19) % shape.workloads;
                let server = SocketAddr::new(IpAddr::V4(workload_ip(r)), PORTS[k as usize % 5]);
                let id = WorkloadId::new(workload_id(r)).expect("a valid workload ID");
                edges.push(edge(w, k, server, Some(id)));
            }
        }
    }
    edges
}

/// The edges of minute `m` of a churning graph: each workload's peers are
/// unattributed addresses (in 100.64.0.0/10) no other minute has.
fn churn_edges(shape: Shape, m: u64) -> Vec<Edge> {
    let mut edges = Vec::new();
    for w in 0..shape.workloads {
        for k in 0..shape.peers {
            let n = (m * u64::from(shape.workloads * shape.peers) + u64::from(w * shape.peers + k))
                % (1 << 22);
            let ip = Ipv4Addr::new(100, 64 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
            edges.push(edge(w, k, SocketAddr::new(IpAddr::V4(ip), 443), None));
        }
    }
    edges
}

/// Makes the flows of each simulated minute.
struct Generator {
    shape: Shape,
    /// The edges when they do not change.
    stable: Vec<Edge>,
    /// The next minute (since the epoch).
    minute: u64,
    /// Connections made so far (their cookies, their client ports).
    connections: u64,
    /// The next chunk sequence number.
    sequence: u64,
    rng: Rng,
}

impl Generator {
    fn new(shape: Shape) -> Generator {
        Generator {
            shape,
            stable: if shape.churn {
                Vec::new()
            } else {
                stable_edges(shape)
            },
            minute: FIRST_MINUTE,
            connections: 0,
            sequence: 0,
            rng: Rng(0x5EED),
        }
    }

    /// The start of the minute the next [`next_minute`](Generator::next_minute)
    /// makes.
    fn next_start(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.minute * 60)
    }

    /// The next minute's flows, by `t_end` (final records of connections that closed
    /// in it), each host's in a batch of its own.
    fn next_minute(&mut self) -> Vec<AttributedFlow> {
        let start = self.next_start();
        let churned;
        let edges = if self.shape.churn {
            churned = churn_edges(self.shape, self.minute);
            &churned
        } else {
            &self.stable
        };
        let hosts = self.shape.workloads.div_ceil(WORKLOADS_PER_HOST);
        let batches: Vec<Arc<BatchId>> = (0..hosts)
            .map(|h| {
                self.sequence += 1;
                Arc::new(BatchId {
                    host: format!("host-{h}"),
                    instance: InstanceId::new(u128::from(h) + 1),
                    sequence: self.sequence,
                })
            })
            .collect();
        let mut indexes = vec![0u32; hosts as usize];
        let mut flows = Vec::with_capacity(self.shape.flows_per_minute() as usize);
        for edge in edges {
            for _ in 0..self.shape.flows_per_edge {
                self.connections += 1;
                let rng = &mut self.rng;
                let mut record = edge.template.clone();
                let t_end = start + Duration::from_millis(rng.below(60_000));
                record.t_end = t_end;
                record.t_start = Some(t_end - Duration::from_millis(1 + rng.below(30_000)));
                record
                    .local
                    .set_port(32_768 + (self.connections % 28_000) as u16);
                record.stats.bytes_sent = 200 + rng.below(20_000);
                record.stats.bytes_received = 500 + rng.below(200_000);
                record.stats.segs_out = 4 + rng.below(40) as u32;
                record.stats.segs_in = 4 + rng.below(200) as u32;
                record.stats.retransmits = u32::from(rng.below(20) == 0);
                // 0.7 to 1.6 times the edge's RTT.
                record.stats.srtt_us = edge.rtt_us * (70 + rng.below(90) as u32) / 100;
                if edge.remote.is_none() && rng.below(50) == 0 {
                    record.close_reason = CloseReason::Refused;
                    record.stats.bytes_sent = 0;
                    record.stats.bytes_received = 0;
                }
                record.flow_id = Some(FlowId {
                    boot_id: [edge.host as u8 + 1; 16],
                    cookie: self.connections,
                });
                let host = edge.host as usize;
                let record_index = indexes[host];
                indexes[host] += 1;
                let (source, reason) = match edge.remote {
                    Some(_) => (RemoteIdentitySource::Heartbeat, None),
                    None => (
                        RemoteIdentitySource::None,
                        Some(RemoteUnattributedReason::NoOwnerKnown),
                    ),
                };
                flows.push(AttributedFlow {
                    record,
                    batch: Arc::clone(&batches[host]),
                    record_index,
                    remote_workload_id: edge.remote.clone(),
                    remote_identity_source: source,
                    remote_unattributed_reason: reason,
                });
            }
        }
        flows.sort_by_key(|f| f.record.t_end);
        self.minute += 1;
        flows
    }
}

/// Adds `flows` (sorted by `t_end`) as the pipeline would: [`FLOWS_PER_CALL`] at a
/// time, each call at the latest `t_end` of its flows plus a second.
fn add(graph: &mut GraphAggregator, flows: &[AttributedFlow]) {
    for call in flows.chunks(FLOWS_PER_CALL) {
        let now = call
            .last()
            .map_or(SystemTime::UNIX_EPOCH, |f| f.record.t_end)
            + Duration::from_secs(1);
        graph.add_flows(call, now);
    }
}

/// A filled aggregator and the time it was filled at.
struct Filled {
    graph: GraphAggregator,
    /// The last minute's end (its flows all added).
    now: SystemTime,
}

/// An aggregator at the default settings with `minutes` minutes of `shape`'s flows.
fn fill(name: &str, shape: Shape, minutes: u64) -> Filled {
    let started = Instant::now();
    let mut graph = GraphAggregator::new(GraphConfig::default());
    let mut generator = Generator::new(shape);
    for _ in 0..minutes {
        add(&mut graph, &generator.next_minute());
    }
    let now = generator.next_start();
    graph.advance(now);
    let stats = graph.stats();
    eprintln!(
        "graph {name}: {} workloads x {} edges a minute, {} flows per edge-minute{}, {minutes} \
         minutes added: {} edge-minutes held in {} minutes, {} minutes evicted by the edge \
         cap, {} edges folded (filled in {:.1} s)",
        shape.workloads,
        shape.peers,
        shape.flows_per_edge,
        if shape.churn {
            ", new edges every minute"
        } else {
            ""
        },
        graph.edges_held(),
        stats.minutes_held,
        stats.minutes_evicted,
        stats.edges_folded,
        started.elapsed().as_secs_f64(),
    );
    Filled { graph, now }
}

/// The steady-state cost of `add_flows`.
fn add_flows(c: &mut Criterion) {
    let shape = Shape {
        workloads: 200,
        peers: 10,
        flows_per_edge: 5,
        churn: false,
    };
    let mut group = c.benchmark_group("add_flows");
    group.throughput(Throughput::Elements(shape.flows_per_minute()));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(15));
    // Filled when the benchmark runs (not when it is filtered out), once.
    let mut state: Option<(GraphAggregator, Generator)> = None;
    group.bench_function("200x10_edges_5_flows_per_edge_minute", |b| {
        let (graph, generator) = state.get_or_insert_with(|| {
            let mut generator = Generator::new(shape);
            let mut graph = GraphAggregator::new(GraphConfig::default());
            // The whole retention first: the steady state, evicting as it adds.
            for _ in 0..360 {
                add(&mut graph, &generator.next_minute());
            }
            let stats = graph.stats();
            eprintln!(
                "add_flows: 6 h of 10,000 flows a minute added first: {} edge-minutes held in \
                 {} minutes ({} evicted by the edge cap)",
                graph.edges_held(),
                stats.minutes_held,
                stats.minutes_evicted
            );
            (graph, generator)
        });
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let flows = generator.next_minute();
                let started = Instant::now();
                add(graph, black_box(&flows));
                timed += started.elapsed();
            }
            timed
        });
    });
    group.finish();
}

/// Times `query` on `filled`: from its call until its answer is built. Prints the
/// answer's size the first time.
fn time_query(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    filled: &OnceCell<Filled>,
    make: impl Fn() -> Filled,
    query: impl Fn(SystemTime) -> GraphQuery,
) {
    let mut printed = false;
    group.bench_function(name, |b| {
        let filled = filled.get_or_init(&make);
        let query = query(filled.now);
        if !printed {
            printed = true;
            let started = Instant::now();
            let answer = filled.graph.query(&query);
            eprintln!(
                "{name}: {} minutes, {} nodes, {} edges, truncated {}, {} flows (one query: \
                 {:.1} ms)",
                answer.minutes,
                answer.nodes.len(),
                answer.edges.len(),
                answer.truncated,
                answer.flows,
                started.elapsed().as_secs_f64() * 1e3,
            );
        }
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let answer = filled.graph.query(black_box(&query));
                timed += started.elapsed();
                drop(black_box(answer));
            }
            timed
        });
    });
}

/// The query of the `range` before `now`: every edge, or workload `workload`'s.
fn before(now: SystemTime, range: Duration, workload: Option<u32>) -> GraphQuery {
    GraphQuery::new(now - range, now, workload.map(workload_id))
}

/// The queries' latency.
fn queries(c: &mut Criterion) {
    const QUARTER: Duration = Duration::from_secs(15 * 60);
    const RETENTION: Duration = Duration::from_secs(6 * 3600);
    let mut group = c.benchmark_group("query");

    let hour = OnceCell::new();
    let shape = Shape {
        workloads: 200,
        peers: 10,
        flows_per_edge: 5,
        churn: false,
    };
    time_query(
        &mut group,
        "default_15min",
        &hour,
        || fill("default_15min", shape, 60),
        |now| before(now, QUARTER, None),
    );
    drop(hour);

    // The cap: 1,400 edges a minute reach 500,000 edge-minutes in 357 minutes.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (label, churn) in [("cap_6h", false), ("churn_cap_6h", true)] {
        let shape = Shape {
            workloads: 200,
            peers: 7,
            flows_per_edge: 3,
            churn,
        };
        let cap = OnceCell::new();
        let make = || fill(label, shape, 362);
        time_query(&mut group, label, &cap, make, |now| {
            before(now, RETENTION, None)
        });
        time_query(
            &mut group,
            &format!("{label}_workload"),
            &cap,
            make,
            |now| before(now, RETENTION, Some(0)),
        );
    }
    group.finish();
}

criterion_group!(benches, add_flows, queries);
criterion_main!(benches);

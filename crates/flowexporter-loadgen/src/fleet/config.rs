//! What to simulate: the fleet's size, its traffic, the faults on the way to the
//! collector, and the collector's settings.

use std::time::Duration;

/// Largest `workloads_per_host`: a pod host's pool (a /24) holds a quarter more IPs
/// than it has workload slots, so that IPs are reused minutes after their release.
pub const MAX_WORKLOADS_PER_HOST: u16 = 200;

/// Most hosts: pod CIDRs are /24s in 10.128.0.0/9 and host IPs are in 10.0.0.0/16.
pub const MAX_HOSTS: u32 = 32_000;

/// Most collector nodes.
pub const MAX_NODES: u32 = 64;

/// Most partitions of the simulated connection topic ([`Routing::ByConnection`]).
pub const MAX_CONNECTION_PARTITIONS: u32 = 4096;

/// How the chunks reach the collector nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Routing {
    /// Each host's chunks go to one node, `hash(host) % nodes` (FNV-1a of the host
    /// ID): a load balancer with affinity, or a Kafka topic keyed by host.
    #[default]
    ByHost,
    /// Chunk after chunk to the next node, whatever its host (a load balancer without
    /// affinity): one host's records, even one window's, are split across nodes. A
    /// chunk's copies (duplicates) go where its first went, so that the "out once"
    /// check stays about attribution: a retry reaching another node would be written
    /// by both (their batch ID lets a reader drop one).
    RoundRobin,
    /// Connection routing, in two stages as a Kafka deployment runs it: each chunk
    /// goes to an intake node by host (as [`ByHost`](Routing::ByHost)), which
    /// decodes it, drops it if its batch ID was seen and counts it in its window, but
    /// attributes nothing: it writes the chunk's records to the connection topic, one
    /// message per partition, each record in partition
    /// [`connection_partition`](flow_collector::attribution::connection_partition)
    /// (of [`connection_partitions`](FleetConfig::connection_partitions)) with its
    /// index in the chunk. Partition `p` is consumed by node `p % nodes`, which
    /// attributes the records [`routing_delay`](FleetConfig::routing_delay) after the
    /// chunk reached the intake. Both ends' records of a connection meet on one node,
    /// whose peer index pairs them as a single node's would. The intake's attributor
    /// routes only but keeps the chunk's claims, and the intake publishes them (once
    /// per chunk, as a node routed by host would); every node's attributing stage
    /// shares nothing and applies every node's heartbeats, its own intake's
    /// included.
    ByConnection,
}

impl Routing {
    /// Every routing, in command-line order.
    pub const ALL: [Routing; 3] = [Routing::ByHost, Routing::RoundRobin, Routing::ByConnection];

    /// Its name on the command line: `by-host`, `round-robin`, `by-connection`.
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::ByHost => "by-host",
            Routing::RoundRobin => "round-robin",
            Routing::ByConnection => "by-connection",
        }
    }

    /// Whether every chunk of one host reaches one node, so that the node's
    /// completeness record of each window can be judged (by host and by connection;
    /// round robin splits a window's chunks across nodes).
    pub fn host_affinity(self) -> bool {
        self != Routing::RoundRobin
    }
}

/// Settings of one fleet simulation. Every field has a default
/// ([`FleetConfig::default`]); [`FleetConfig::validate`] checks the ranges.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// Hosts that run an exporter (pod hosts, shared-IPv4 hosts and VMs; see
    /// [`HostKind`](crate::fleet::world::HostKind)).
    pub hosts: u32,
    /// Workload slots per host (a VM has one workload whatever this says). Each slot
    /// runs one workload at a time; a stopped one is replaced after a gap.
    pub workloads_per_host: u16,
    /// Simulated minutes of traffic (the run goes on until every chunk has arrived
    /// and every held flow has been decided).
    pub minutes: u32,
    /// Connections each host's workloads open per minute (all hosts together open
    /// `hosts` times as many).
    pub connections_per_minute: u32,
    /// Seed of every random choice: the same seed gives the same fleet, traffic and
    /// faults.
    pub seed: u64,
    /// Probability that a chunk never arrives.
    pub drop_chunks: f64,
    /// Probability that a chunk arrives twice (a retry after a lost acknowledgement).
    pub duplicate_chunks: f64,
    /// Probability that a chunk arrives late: delayed by up to `max_late`.
    pub late_chunks: f64,
    /// Probability that a chunk arrives after its host's next chunk (out of order).
    pub reorder_chunks: f64,
    /// Longest delay of a late chunk.
    pub max_late: Duration,
    /// Largest difference between two hosts' clocks: each host's clock is off by up to
    /// half of it, either way.
    pub max_skew: Duration,
    /// The collector's hold-back (how long a flow may wait for heartbeats).
    pub hold_back: Duration,
    /// The collector's clock tolerance.
    pub tolerance: Duration,
    /// Mean lifetime of a workload (pod or container); VMs live through the run.
    pub mean_lifetime: Duration,
    /// Most records in one chunk; a host's minute with more is sent as several chunks.
    pub max_records_per_chunk: usize,
    /// Generate and encode everything but deliver nothing: measures the simulator's
    /// own time and memory, to tell them apart from the collector's.
    pub generate_only: bool,
    /// Collector nodes. With more than one, each node attributes the chunks
    /// [`routing`](FleetConfig::routing) sends it (or, routed by connection, the
    /// records of its partitions) and shares its heartbeats with the others, which
    /// receive them [`heartbeat_delay`](FleetConfig::heartbeat_delay) later (encoded
    /// and decoded as the heartbeat topic carries them; routed by connection, the
    /// intake shares the claims of the chunks it takes in, with every node).
    pub nodes: u32,
    /// How chunks (and, by connection, records) are spread over the nodes.
    pub routing: Routing,
    /// Time from a chunk's arrival at a node to its heartbeats' arrival at every
    /// other node: the publishing interval (about 1 s) plus Kafka's latency. Routed
    /// by connection, from the chunk's arrival at its intake to its heartbeats'
    /// arrival at every node.
    pub heartbeat_delay: Duration,
    /// Partitions of the connection topic ([`Routing::ByConnection`]), like a Kafka
    /// topic's: node `i` owns the partitions `p` with `p % nodes == i`.
    pub connection_partitions: u32,
    /// Time from a chunk's arrival at its intake node to its records' arrival at the
    /// nodes that attribute them ([`Routing::ByConnection`]): producing to the
    /// connection topic and consuming from it.
    pub routing_delay: Duration,
    /// Keep and take heartbeats even with one node (nowhere to send them): measures
    /// their cost and volume. Always on with more than one node.
    pub share_heartbeats: bool,
    /// Aggregate every attributed flow and completeness record into the collector's
    /// dependency graph ([`GraphAggregator`](flow_collector::graph::GraphAggregator),
    /// the collector's default [`GraphConfig`](flow_collector::graph::GraphConfig))
    /// and answer a query of the whole run in
    /// [`FleetReport::graph`](crate::fleet::FleetReport::graph).
    pub graph: bool,
}

impl Default for FleetConfig {
    fn default() -> FleetConfig {
        FleetConfig {
            hosts: 20,
            workloads_per_host: 5,
            minutes: 10,
            connections_per_minute: 20,
            seed: 1,
            drop_chunks: 0.0,
            duplicate_chunks: 0.0,
            late_chunks: 0.0,
            reorder_chunks: 0.0,
            max_late: Duration::from_secs(90),
            max_skew: Duration::from_secs(1),
            hold_back: Duration::from_secs(120),
            tolerance: Duration::from_secs(2),
            mean_lifetime: Duration::from_secs(20 * 60),
            max_records_per_chunk: 4096,
            generate_only: false,
            nodes: 1,
            routing: Routing::ByHost,
            heartbeat_delay: Duration::from_secs(2),
            connection_partitions: 12,
            routing_delay: Duration::from_millis(50),
            share_heartbeats: false,
            graph: false,
        }
    }
}

impl FleetConfig {
    /// Checks the ranges; the error says which setting is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.hosts == 0 || self.hosts > MAX_HOSTS {
            return Err(format!("hosts must be 1 to {MAX_HOSTS}"));
        }
        if self.workloads_per_host == 0 || self.workloads_per_host > MAX_WORKLOADS_PER_HOST {
            return Err(format!(
                "workloads per host must be 1 to {MAX_WORKLOADS_PER_HOST}"
            ));
        }
        if self.minutes == 0 {
            return Err("minutes must be at least 1".into());
        }
        for (name, p) in [
            ("drop-chunks", self.drop_chunks),
            ("duplicate-chunks", self.duplicate_chunks),
            ("late-chunks", self.late_chunks),
            ("reorder-chunks", self.reorder_chunks),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be a probability from 0 to 1, not {p}"));
            }
        }
        if self.max_skew > Duration::from_secs(30) {
            return Err("max-skew must be at most 30 s".into());
        }
        if self.mean_lifetime < Duration::from_secs(60) {
            return Err("mean-lifetime must be at least 1 minute".into());
        }
        if self.max_records_per_chunk == 0 {
            return Err("max-records-per-chunk must be at least 1".into());
        }
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(format!("nodes must be 1 to {MAX_NODES}"));
        }
        if self.heartbeat_delay > Duration::from_secs(600) {
            return Err("heartbeat-delay must be at most 10 minutes".into());
        }
        if self.connection_partitions == 0 || self.connection_partitions > MAX_CONNECTION_PARTITIONS
        {
            return Err(format!(
                "connection-partitions must be 1 to {MAX_CONNECTION_PARTITIONS}"
            ));
        }
        if self.routing_delay > Duration::from_secs(600) {
            return Err("routing-delay must be at most 10 minutes".into());
        }
        Ok(())
    }

    /// Whether the nodes keep and take heartbeats: always with more than one node
    /// (routed by connection too: a node attributes flows whose remote IP's claims
    /// were in chunks other intakes took in).
    pub fn sharing(&self) -> bool {
        self.nodes > 1 || self.share_heartbeats
    }

    /// The routing delay, when records are routed by connection (else zero).
    pub fn routing_delay_in_force(&self) -> Duration {
        if self.routing == Routing::ByConnection {
            self.routing_delay
        } else {
            Duration::ZERO
        }
    }

    /// Minutes the run goes on after the traffic stops: long enough for the latest
    /// chunk (late, reordered or duplicated) to arrive, its records to be routed,
    /// its heartbeats to reach the other nodes, and its flows to be held back as long
    /// as the collector holds them.
    pub fn tail_minutes(&self) -> u32 {
        let late = self.max_late.as_secs() + 2 * 60; // a reordered chunk waits up to 2 min
        let routed = self.routing_delay_in_force().as_secs_f64().ceil() as u64;
        let wait = late + routed + self.heartbeat_delay.as_secs() + self.hold_back.as_secs() + 60;
        u32::try_from(wait.div_ceil(60)).unwrap_or(u32::MAX) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_ranges_are_checked() {
        assert_eq!(FleetConfig::default().validate(), Ok(()));
        let bad = FleetConfig {
            drop_chunks: 1.5,
            ..FleetConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = FleetConfig {
            workloads_per_host: 201,
            ..FleetConfig::default()
        };
        assert!(bad.validate().is_err());
        for nodes in [0, MAX_NODES + 1] {
            let bad = FleetConfig {
                nodes,
                ..FleetConfig::default()
            };
            assert!(bad.validate().is_err());
        }
        assert!(!FleetConfig::default().sharing());
        for connection_partitions in [0, MAX_CONNECTION_PARTITIONS + 1] {
            let bad = FleetConfig {
                connection_partitions,
                ..FleetConfig::default()
            };
            assert!(bad.validate().is_err());
        }
        let bad = FleetConfig {
            routing_delay: Duration::from_secs(601),
            ..FleetConfig::default()
        };
        assert!(bad.validate().is_err());
        // Only connection routing waits for the routing delay.
        assert_eq!(
            FleetConfig::default().routing_delay_in_force(),
            Duration::ZERO
        );
        let routed = FleetConfig {
            routing: Routing::ByConnection,
            ..FleetConfig::default()
        };
        assert_eq!(routed.routing_delay_in_force(), routed.routing_delay);
        let names: Vec<&str> = Routing::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["by-host", "round-robin", "by-connection"]);
    }

    #[test]
    fn the_tail_outlasts_the_latest_chunk_and_the_hold_back() {
        let c = FleetConfig::default();
        let tail = u64::from(c.tail_minutes()) * 60;
        assert!(tail > c.max_late.as_secs() + 120 + c.hold_back.as_secs());
        let slow = FleetConfig {
            routing: Routing::ByConnection,
            routing_delay: Duration::from_secs(300),
            ..FleetConfig::default()
        };
        assert!(slow.tail_minutes() >= c.tail_minutes() + 5);
    }
}

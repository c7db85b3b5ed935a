//! `flowexporter-loadgen`: TCP churn for benchmarks, and A/B overhead runs.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use flowexporter_loadgen::{
    churn::{self, ChurnConfig, Family},
    fleet::{self, FleetConfig, config::Routing},
    overhead::{self, Export, OverheadConfig},
};

/// Load generator and overhead runs for flowexporter. Needs root for namespaces and
/// for the overhead runs.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Open and close TCP connections and report the rate achieved.
    Churn(ChurnArgs),
    /// Alternate rounds without and with the exporter and compare.
    Overhead {
        /// The exporter binary.
        #[arg(long, default_value = "target/release/flowexporter")]
        exporter: PathBuf,
        /// A/B pairs.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Scratch directory.
        #[arg(long, default_value = "/tmp/flowexporter-loadgen")]
        scratch: PathBuf,
        /// Where round B's exporter sends: the reference collector (--collector), or
        /// a minimal receiver on loopback of OTLP/HTTP logs (--otlp-endpoint) or of
        /// IPFIX over UDP or TCP (--ipfix-collector).
        #[arg(long, value_enum, default_value = "collector")]
        export: ExportArg,
        /// The exporter's batch window (--window). Given, the measured interval runs
        /// until every record of the churn arrived at the collector or receiver
        /// (decoded and counted there); without it the window is 60 s and the interval ends 1.5 s after the churn, before the
        /// churn's chunks are made and sent (at the exporter's shutdown).
        #[arg(long, value_parser = humantime::parse_duration)]
        window: Option<Duration>,
        #[command(flatten)]
        churn: ChurnArgs,
    },
    /// Simulate a fleet of hosts and their exporters against the collector's remote
    /// attribution (simulated time) and check every flow against the truth; exits
    /// non-zero if any flow was misattributed or the counts do not add up.
    Fleet(FleetArgs),
}

/// A probability from 0 to 1.
fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not from 0 to 1"))
    }
}

#[derive(Debug, clap::Args)]
struct FleetArgs {
    /// Hosts running an exporter (one in ten shares its IPv4 among containers, one
    /// in ten is a VM, the rest run pods with their own IPs).
    #[arg(long, default_value_t = 20)]
    hosts: u32,
    /// Workload slots per host.
    #[arg(long, default_value_t = 5)]
    workloads_per_host: u16,
    /// Simulated minutes of traffic.
    #[arg(long, default_value_t = 10)]
    minutes: u32,
    /// Connections each host's workloads open per simulated minute.
    #[arg(long, default_value_t = 20)]
    connections_per_minute: u32,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probability that a chunk never arrives.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    drop_chunks: f64,
    /// Probability that a chunk arrives twice.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    duplicate_chunks: f64,
    /// Probability that a chunk arrives late (by up to --max-late).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    late_chunks: f64,
    /// Probability that a chunk arrives after its host's next chunk.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    reorder_chunks: f64,
    /// Longest delay of a late chunk.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    max_late: Duration,
    /// Largest difference between two hosts' clocks.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    max_skew: Duration,
    /// The collector's hold-back.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    hold_back: Duration,
    /// The collector's clock tolerance.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    clock_tolerance: Duration,
    /// Mean lifetime of a pod or container.
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    mean_lifetime: Duration,
    /// Most records per chunk.
    #[arg(long, default_value_t = 4096)]
    max_records_per_chunk: usize,
    /// Generate and encode, deliver nothing: the simulator's own time and memory.
    #[arg(long)]
    generate_only: bool,
    /// Collector nodes: each attributes the chunks it receives (or, routed by
    /// connection, the records of its partitions) and shares its heartbeats with the
    /// others (routed by connection, its intake shares the claims of the chunks it
    /// takes in, with every node).
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// How chunks are spread over the nodes: by host (affinity), round robin, or by
    /// connection (chunks by host to an intake, which routes each record by its
    /// connection to the node owning its partition).
    #[arg(long, value_enum, default_value = "by-host")]
    routing: RoutingArg,
    /// Time from a chunk's arrival at a node to its heartbeats' arrival at the others
    /// (by connection: at every node, from the chunk's arrival at its intake).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    heartbeat_delay: Duration,
    /// Partitions of the connection topic (--routing by-connection); node i owns the
    /// partitions p with p % nodes == i.
    #[arg(long, default_value_t = 12)]
    connection_partitions: u32,
    /// Time from a chunk's arrival at its intake to its records' arrival at the nodes
    /// that attribute them (--routing by-connection).
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    routing_delay: Duration,
    /// Keep, take and encode heartbeats even with one node (their cost and volume).
    #[arg(long)]
    share_heartbeats: bool,
    /// Print the report as JSON (one object) after the human one.
    #[arg(long)]
    json: bool,
    /// Aggregate every attributed flow and completeness record into the collector's
    /// dependency graph (its default settings) and write the graph of the whole run
    /// to FILE, as `GET /api/v1/graph` answers it (e.g. for `graph_page.py measure
    /// --fixture FILE`).
    #[arg(long, value_name = "FILE")]
    graph_json: Option<PathBuf>,
}

impl FleetArgs {
    fn config(&self) -> FleetConfig {
        FleetConfig {
            hosts: self.hosts,
            workloads_per_host: self.workloads_per_host,
            minutes: self.minutes,
            connections_per_minute: self.connections_per_minute,
            seed: self.seed,
            drop_chunks: self.drop_chunks,
            duplicate_chunks: self.duplicate_chunks,
            late_chunks: self.late_chunks,
            reorder_chunks: self.reorder_chunks,
            max_late: self.max_late,
            max_skew: self.max_skew,
            hold_back: self.hold_back,
            tolerance: self.clock_tolerance,
            mean_lifetime: self.mean_lifetime,
            max_records_per_chunk: self.max_records_per_chunk,
            generate_only: self.generate_only,
            nodes: self.nodes,
            routing: match self.routing {
                RoutingArg::ByHost => Routing::ByHost,
                RoutingArg::RoundRobin => Routing::RoundRobin,
                RoutingArg::ByConnection => Routing::ByConnection,
            },
            heartbeat_delay: self.heartbeat_delay,
            connection_partitions: self.connection_partitions,
            routing_delay: self.routing_delay,
            share_heartbeats: self.share_heartbeats,
            graph: self.graph_json.is_some(),
        }
    }
}

/// How chunks are spread over the collector nodes.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoutingArg {
    /// Each host's chunks to one node.
    ByHost,
    /// Chunk after chunk to the next node.
    RoundRobin,
    /// Chunks by host to an intake node, records by connection to the node that
    /// attributes them.
    ByConnection,
}

/// Where the overhead run's exporter sends.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportArg {
    /// The reference collector (HTTP chunks).
    Collector,
    /// OTLP/HTTP logs.
    Otlp,
    /// IPFIX over UDP.
    IpfixUdp,
    /// IPFIX over TCP.
    IpfixTcp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FamilyArg {
    V4,
    V6,
}

#[derive(Debug, clap::Args)]
struct ChurnArgs {
    /// Connections per run.
    #[arg(long, default_value_t = 20_000)]
    connections: usize,
    /// Target connections per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Address family.
    #[arg(long, value_enum, default_value = "v4")]
    family: FamilyArg,
    /// Bytes sent on each connection.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// Client and server in two network namespaces joined by a veth pair.
    #[arg(long)]
    across_netns: bool,
}

impl ChurnArgs {
    fn config(&self) -> ChurnConfig {
        ChurnConfig {
            connections: self.connections,
            rate: self.rate,
            family: match self.family {
                FamilyArg::V4 => Family::V4,
                FamilyArg::V6 => Family::V6,
            },
            payload: self.payload,
            across_netns: self.across_netns,
        }
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Churn(args) => {
            let r = churn::run(&args.config())?;
            println!(
                "{} connections in {:.3} s: {:.0} connections/s, {} errors, server port {}",
                r.connections,
                r.elapsed.as_secs_f64(),
                r.rate(),
                r.errors,
                r.server_port
            );
        }
        Cmd::Overhead {
            exporter,
            rounds,
            scratch,
            export,
            window,
            churn,
        } => {
            let export = match export {
                ExportArg::Collector => Export::Collector,
                ExportArg::Otlp => Export::Otlp,
                ExportArg::IpfixUdp => Export::IpfixUdp,
                ExportArg::IpfixTcp => Export::IpfixTcp,
            };
            let rounds = overhead::run(&OverheadConfig {
                exporter,
                rounds,
                churn: churn.config(),
                scratch,
                export,
                window,
            })?;
            print!("{}", overhead::table(&rounds, export));
        }
        Cmd::Fleet(args) => {
            let report = fleet::run(&args.config())?;
            print!("{report}");
            if args.json {
                println!("{}", report.to_json());
            }
            if let (Some(path), Some(graph)) = (&args.graph_json, &report.graph) {
                let json = serde_json::to_vec(graph).context("serializing the graph")?;
                std::fs::write(path, json)
                    .with_context(|| format!("writing the graph to {}", path.display()))?;
            }
            if args.generate_only {
                return Ok(());
            }
            if report.tally.misattributed > 0 {
                anyhow::bail!("{} flows misattributed", report.tally.misattributed);
            }
            if !report.counts_add_up() {
                anyhow::bail!("the counts do not add up");
            }
        }
    }
    Ok(())
}

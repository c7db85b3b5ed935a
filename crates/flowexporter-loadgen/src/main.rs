//! `flowexporter-loadgen`: TCP churn for benchmarks, and A/B overhead runs.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use flowexporter_loadgen::{
    churn::{self, ChurnConfig, Family},
    overhead::{self, OverheadConfig},
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
        #[command(flatten)]
        churn: ChurnArgs,
    },
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
            churn,
        } => {
            let rounds = overhead::run(&OverheadConfig {
                exporter,
                rounds,
                churn: churn.config(),
                scratch,
            })?;
            print!("{}", overhead::table(&rounds));
        }
    }
    Ok(())
}

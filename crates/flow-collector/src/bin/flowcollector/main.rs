//! `flowcollector`: receives flowexporter chunks over HTTP, stores each once
//! (durably, before acknowledging it), attributes the remote side of every flow from
//! the exporters' heartbeats and writes JSON lines.
//!
//! ```text
//! cargo run --release -p flowcollector -- --listen 127.0.0.1:9000 --out /tmp/flows.jsonl
//! flowcollector config check --config /etc/flowcollector/config.toml
//! ```
//!
//! It prints `listening on ADDR` on standard output once it accepts connections (with
//! `--listen 127.0.0.1:0` the port is picked by the system). On SIGINT or SIGTERM it
//! stops listening, waits (at most `--drain-timeout`) for held-back flows to be
//! decided, writes the rest unattributed with reason `shutdown`, and exits.
//! `docs/collector-protocol.md` describes the exchange with exporters and
//! `docs/attribution.md` the attribution; the logic lives in the `flow_collector`
//! library.

mod cli;
mod config;
mod generate;

use std::{io::Write, process::ExitCode};

use clap::Parser;
use flow_collector::FlowCollector;

use crate::cli::{Cli, Command, ConfigAction, RunArgs};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(&cli.run),
        Some(Command::Run(args)) => run(&args),
        Some(Command::Config {
            action: ConfigAction::Check { file, mut args },
        }) => {
            if file.is_some() {
                args.config = file;
            }
            check(&args)
        }
        Some(Command::Config {
            action: ConfigAction::Example,
        }) => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Some(Command::Generate(cmd)) => generate::run(cmd).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "flowcollector: {}",
                flow_collector::error_chain(error.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

/// `config check`.
fn check(args: &RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let resolved = config::resolve(args)?;
    println!("{}", config::describe(&resolved));
    Ok(())
}

/// Runs the collector until SIGINT or SIGTERM.
fn run(args: &RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let resolved = config::resolve(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let collector = FlowCollector::start(resolved.options).await?;
        println!("listening on {}", collector.local_addr());
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        collector
            .run_until(async {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                tracing::info!("stopping: draining held-back flows");
            })
            .await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

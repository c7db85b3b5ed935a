//! `flowexporter`: one flow record per closed TCP socket on this host.

mod cli;
mod identity;
mod output;
mod pipeline;
mod run;
mod setup;
mod tail;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWEXPORTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        cli::Command::Tail(args) => tail::run(args),
        cli::Command::Run(args) => run::run(*args),
        cli::Command::Identity(cmd) => identity::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowexporter: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! `flowexporter`: one flow record per closed TCP socket on this host.

mod check;
mod cli;
mod identity;
mod metrics;
mod output;
mod pipeline;
mod privileges;
mod ratelimit;
mod run;
mod setup;
mod tail;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWEXPORTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        cli::LogFormat::Text => logs.init(),
        cli::LogFormat::Json => logs.json().init(),
    }
    let result = match cli.command {
        cli::Command::Tail(args) => tail::run(args),
        cli::Command::Run(args) => run::run(*args),
        cli::Command::Identity(cmd) => identity::run(cmd),
        cli::Command::Check(args) => check::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowexporter: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

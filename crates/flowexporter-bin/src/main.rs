//! `flowexporter`: one flow record per closed TCP socket on this host.

mod check;
mod cli;
mod config;
mod identity;
mod metrics;
mod output;
mod pipeline;
mod privileges;
mod ratelimit;
mod run;
mod setup;
mod tail;

use clap::{CommandFactory, FromArgMatches};

fn main() -> std::process::ExitCode {
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowexporter: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start() -> anyhow::Result<()> {
    let matches = cli::Cli::command().get_matches();
    let mut cli = cli::Cli::from_arg_matches(&matches).map_err(|e| e.exit())?;
    // `run` takes its configuration file into account before anything else happens.
    if let (cli::Command::Run(args), Some(("run", run_matches))) =
        (&mut cli.command, matches.subcommand())
    {
        if let Some(path) = config::path_for(args) {
            let file = config::read(&path)?;
            if let Some(format) = config::apply(args, file, run_matches)? {
                cli.log_format = format;
            }
        }
        config::validate(args)?;
    }
    init_logging(cli.log_format);
    match cli.command {
        cli::Command::Tail(args) => tail::run(args),
        cli::Command::Run(args) => run::run(*args),
        cli::Command::Identity(cmd) => identity::run(cmd),
        cli::Command::Check(args) => check::run(args),
        cli::Command::Config(cmd) => config_command(cmd),
    }
}

fn init_logging(format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWEXPORTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        cli::LogFormat::Text => logs.init(),
        cli::LogFormat::Json => logs.json().init(),
    }
}

fn config_command(cmd: cli::ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        cli::ConfigCommand::Example => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        cli::ConfigCommand::Check { file } => {
            // Parse as `run` would: the file's values over the defaults, then validate.
            let matches = cli::Cli::command()
                .try_get_matches_from(["flowexporter", "run"])
                .map_err(anyhow::Error::from)?;
            let cli = cli::Cli::from_arg_matches(&matches)?;
            let (cli::Command::Run(mut args), Some(("run", m))) =
                (cli.command, matches.subcommand())
            else {
                anyhow::bail!("internal: run arguments");
            };
            config::apply(&mut args, config::read(&file)?, m)?;
            config::validate(&args)?;
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}

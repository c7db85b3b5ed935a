//! `flowexporter`: one flow record per closed TCP socket on this host.

mod check;
mod cli;
mod config;
mod export_checks;
mod exports;
mod generate;
mod identity;
mod logging;
mod memory;
mod metrics;
mod otlp_headers;
mod outputs;
mod privileges;
mod reload;
mod run;
mod setup;
mod tail;
mod user;

use clap::{CommandFactory, FromArgMatches};

fn main() -> std::process::ExitCode {
    memory::one_arena();
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
    let cli = cli::Cli::from_arg_matches(&matches).map_err(|e| e.exit())?;
    if let cli::Command::Run(_) = cli.command {
        // `run` takes its configuration file into account before anything else
        // happens, and keeps the command line to read the file the same way on SIGHUP.
        let config = config::load(&matches, None)?;
        let log = logging::init(config.log_format, &config.log_level);
        return run::run(reload::Reloader::new(matches, config, log));
    }
    logging::init(cli.log_format, &cli.log_level);
    match cli.command {
        cli::Command::Tail(args) => tail::run(args),
        cli::Command::Run(_) => anyhow::bail!("internal: run was handled above"),
        cli::Command::Identity(cmd) => identity::run(cmd),
        cli::Command::Check(args) => check::run(*args),
        cli::Command::Config(cmd) => config_command(cmd),
        cli::Command::Generate(cmd) => generate::run(cmd),
    }
}

fn config_command(cmd: cli::ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        cli::ConfigCommand::Example => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        cli::ConfigCommand::Check { file } => {
            // Read as `run` would: the file's values over the defaults, then validate.
            let matches = cli::Cli::command()
                .try_get_matches_from(["flowexporter", "run"])
                .map_err(anyhow::Error::from)?;
            config::load(&matches, Some(&file))?;
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}

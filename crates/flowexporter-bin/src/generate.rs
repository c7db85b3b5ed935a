//! `flowexporter generate ...` (hidden): the manual pages and shell completions, made
//! from the command-line definition itself so that they never disagree with `--help`.
//! The packages are built with them (`packaging/build-debs.sh`).

use std::{io::Write, path::PathBuf};

use anyhow::Context;
use clap::{CommandFactory, Subcommand, ValueEnum};

/// `flowexporter generate ...`.
#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write the manual pages (section 1: flowexporter.1 and one page per subcommand)
    /// into a directory.
    Man {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// Print the completion script for a shell on standard output.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// The shells completions are made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Runs `flowexporter generate ...`.
pub fn run(cmd: GenerateCommand) -> anyhow::Result<()> {
    let command = crate::cli::Cli::command();
    match cmd {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))
        }
        GenerateCommand::Completions { shell } => {
            let mut command = command;
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            // Into memory first: clap_complete panics on a failed write, and
            // standard output may be a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "flowexporter", &mut script);
            std::io::stdout()
                .lock()
                .write_all(&script)
                .context("cannot write the completion script")
        }
    }
}

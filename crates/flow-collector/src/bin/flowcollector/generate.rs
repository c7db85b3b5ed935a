//! `flowcollector generate ...` (hidden): the manual pages and shell completions, made
//! from the command-line definition itself so that they never disagree with `--help`.
//! The packages are built with them (`packaging/build-debs.sh`).

use std::{io::Write, path::PathBuf};

use clap::{CommandFactory, Subcommand, ValueEnum};

/// `flowcollector generate ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum GenerateCommand {
    /// Write the manual pages (section 1: flowcollector.1 and one page per subcommand)
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
pub(crate) enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Runs `flowcollector generate ...`.
pub(crate) fn run(cmd: GenerateCommand) -> Result<(), String> {
    let command = crate::cli::Cli::command();
    match cmd {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .map_err(|e| format!("cannot write the manual pages into {}: {e}", dir.display()))
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
            clap_complete::generate(shell, &mut command, "flowcollector", &mut script);
            std::io::stdout()
                .lock()
                .write_all(&script)
                .map_err(|e| format!("cannot write the completion script: {e}"))
        }
    }
}

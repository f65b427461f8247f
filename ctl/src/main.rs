//! strata-ctl: the command-line client of Strata.
//!
//! `main` only parses the command line, runs the command and turns the
//! outcome into an exit status; see `commands` for what each command does
//! and `failure` for the exit-status contract.

mod args;
mod audit;
mod commands;
mod credentials;
mod failure;
mod fleet;
mod local_token;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let argv = args::normalize_argv(std::env::args_os());
    // Usage errors exit 2 and --help/--version exit 0, as clap does.
    let cli = args::Cli::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            for line in failure.describe() {
                eprintln!("{line}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

//! The `unseen` binary: argument parsing and exit codes. The work is in the library
//! crates; this edge only wires them and turns errors into messages (`anyhow`).

mod args;
mod progress;
mod scan;
mod summary;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Exit codes, documented in the README.
mod exit {
    /// Unusable input or configuration: nothing was reported.
    pub const FATAL: u8 = 1;
    /// `--fail-on-error` and some records or points were malformed.
    pub const MALFORMED: u8 = 3;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(args) => scan::run(args, std::io::stderr().is_terminal()),
    };
    match result {
        Ok(scan::Outcome::Clean) => ExitCode::SUCCESS,
        Ok(scan::Outcome::MalformedInput) => ExitCode::from(exit::MALFORMED),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::FATAL)
        }
    }
}

//! The `unseen` binary: argument parsing and exit codes. The work is in the library
//! crates; this edge only wires them and turns errors into messages (`anyhow`).

mod api_client;
mod args;
mod backtest;
mod baseline;
mod config;
mod generate;
mod progress;
mod scan;
mod serve;
mod summary;
mod suppress;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// mimalloc, not the system's malloc: `serve` allocates a few small blocks per point (the
/// key's parts, the evidence) and frees them a batch later, on another thread; glibc's
/// malloc spent about a fifth of the server's CPU on that (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's own: returns the memory freed so far to the operating system.
    fn mi_collect(force: bool);
}

/// Returns what was freed to the operating system now rather than when mimalloc gets to
/// it: loading a state of millions of keys frees a few hundred megabytes of buffers that
/// would otherwise stay in the server's RSS for a while.
pub(crate) fn release_freed_memory() {
    // SAFETY: `mi_collect` is part of the mimalloc library that `ALLOCATOR` links (the
    // global allocator above); it takes a plain bool and may be called at any time.
    unsafe { mi_collect(true) }
}

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
        Command::Generate(args) => {
            generate::run(args, std::io::stderr().is_terminal()).map(|()| scan::Outcome::Clean)
        }
        Command::Serve(args) => serve::run(args).map(|()| scan::Outcome::Clean),
        Command::CheckConfig(args) => serve::check_config(args).map(|()| scan::Outcome::Clean),
        Command::Baseline(args) => baseline::run(args),
        Command::Backtest(args) => backtest::run(args),
        Command::Suppress(args) => suppress::run(args).map(|()| scan::Outcome::Clean),
        // Their own exit codes and messages: 1 is an answer there (`images REF`: not
        // known), so errors are 2.
        Command::Incidents(args) => return api_client::incidents(args),
        Command::Images(args) => return api_client::images(args),
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

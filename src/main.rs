//! `olc`: the one binary GPU owners, job submitters and coordinators run.

mod cli;
mod commands;
mod config;
mod paths;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain: "cannot load key: … : permission denied".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so that `--json` output on stdout stays machine-readable. The level
/// applies to OLC's own crates; libraries speak only of warnings unless `RUST_LOG` says
/// otherwise.
fn init_logging(verbose: u8, quiet: bool) {
    use std::io::IsTerminal;

    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let ours = [
        "olc",
        "olc_protocol",
        "olc_gpu",
        "olc_worker",
        "olc_coordinator",
    ]
    .map(|krate| format!("{krate}={level}"))
    .join(",");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,{ours}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

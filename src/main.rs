//! `olc`: the one binary GPU owners, job submitters and coordinators run.

mod cli;
mod commands;
mod config;
mod limits;
mod paths;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if !cli.command.is_daemon() {
        default_sigpipe();
    }
    init_logging(cli.verbose, cli.quiet);
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The whole context chain on one line ("cannot load key: … : permission denied"), each
/// cause once: some errors already print their source in their own message, and a chain
/// that repeats it reads as two failures.
fn error_chain(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A one-shot command whose reader went away (`olc job list | head`) ends quietly, as `ls`
/// or `cat` do, instead of panicking on its next print: Rust ignores SIGPIPE, so every
/// write to a closed pipe would be an error. Daemons keep ignoring it: they must outlive
/// whatever reads their output.
fn default_sigpipe() {
    // SAFETY: called at start-up before any thread exists; it changes only how this
    // process reacts to SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
        "olc_gateway",
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

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read key.pem: {0}")]
    struct Echoes(#[source] std::io::Error);

    #[test]
    fn a_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = anyhow::Error::new(Echoes(io)).context("cannot start the worker");
        assert_eq!(
            error_chain(&err),
            "cannot start the worker: cannot read key.pem: entity not found"
        );
        let plain = anyhow::anyhow!("disk full").context("cannot save");
        assert_eq!(error_chain(&plain), "cannot save: disk full");
    }
}

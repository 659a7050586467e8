//! The command line. Every group users will have is listed here; groups that a later
//! release fills in say so when run (see `commands::pending`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "olc",
    version,
    about = "Open Ledger Compute: a verifiable GPU compute network that pays for data",
    long_about = "Open Ledger Compute: a peer-to-peer network of GPU workers.\n\n\
        GPU owners run `olc worker start`; job submitters use `olc job`; coordinators run \
        `olc coordinator start`. `olc devnet` runs a whole network on this machine."
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and show the ed25519 key that identifies you on the network.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a worker daemon that sells this machine's compute [not in this build yet]
    Worker(Pending),
    /// Run a coordinator: matches jobs to workers, verifies results, settles fees [not in this build yet]
    Coordinator(Pending),
    /// Submit jobs to a coordinator and follow them [not in this build yet]
    Job(Pending),
    /// Run inference or fine-tuning locally, without a network [not in this build yet]
    Run(Pending),
    /// Create and inspect model checkpoints [not in this build yet]
    Model(Pending),
    /// Show and verify signed receipts offline [not in this build yet]
    Receipt(Pending),
    /// Run a whole network (coordinator + workers) on this machine [not in this build yet]
    Devnet(Pending),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new key (refuses to overwrite an existing one without --force).
    New(KeysNew),
    /// Show a key's public key and peer id.
    Show(KeysShow),
}

#[derive(Debug, Args)]
pub struct KeysNew {
    /// Where to write the key [default: the platform data dir, e.g. ~/.local/share/olc/key.pem]
    #[arg(long, value_name = "FILE", env = "OLC_KEY")]
    pub out: Option<PathBuf>,
    /// Replace an existing key file. The old key is lost, with any stake it holds.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeysShow {
    /// The key file [default: the platform data dir, e.g. ~/.local/share/olc/key.pem]
    #[arg(long, value_name = "FILE", env = "OLC_KEY")]
    pub key: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A command group that a later release implements. It accepts any arguments so that
/// users get the "not implemented yet" explanation rather than a usage error.
#[derive(Debug, Args)]
pub struct Pending {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

mod coordinator;
mod daemon;
mod finetune;
mod keys;
mod model;
mod pending;
mod run;
mod worker;
mod workers;

use anyhow::Result;

use crate::cli::Command;

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Keys(cmd) => keys::run(cmd),
        Command::Worker(cmd) => worker::run(cmd),
        Command::Coordinator(cmd) => coordinator::run(cmd),
        Command::Workers(args) => workers::run(args),
        Command::Job(_) => pending::not_yet("job", pending::JOBS),
        Command::Run(cmd) => run::run(cmd),
        Command::Model(cmd) => model::run(cmd),
        Command::Receipt(_) => pending::not_yet("receipt", pending::JOBS),
        Command::Devnet(_) => pending::not_yet("devnet", pending::JOBS),
    }
}

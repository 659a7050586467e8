mod account;
mod coordinator;
mod daemon;
mod devnet;
mod finetune;
mod gateway;
mod job;
mod keys;
mod model;
mod remote;
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
        Command::Account(cmd) => account::run(cmd),
        Command::Workers(args) => workers::run(args),
        Command::Job(cmd) => job::run(cmd),
        Command::Run(cmd) => run::run(cmd),
        Command::Model(cmd) => model::run(cmd),
        Command::Receipt(cmd) => job::run_receipt(cmd),
        Command::Devnet(args) => devnet::run(args),
        Command::Gateway(args) => gateway::run(args),
    }
}

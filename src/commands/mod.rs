mod keys;
mod pending;

use anyhow::Result;

use crate::cli::Command;

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Keys(cmd) => keys::run(cmd),
        Command::Worker(_) => pending::not_yet("worker", pending::NETWORK),
        Command::Coordinator(_) => pending::not_yet("coordinator", pending::NETWORK),
        Command::Job(_) => pending::not_yet("job", pending::JOBS),
        Command::Run(_) => pending::not_yet("run", pending::ENGINE),
        Command::Model(_) => pending::not_yet("model", pending::ENGINE),
        Command::Receipt(_) => pending::not_yet("receipt", pending::JOBS),
        Command::Devnet(_) => pending::not_yet("devnet", pending::JOBS),
    }
}

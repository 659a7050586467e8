//! `olc account …`: your balance and stake at a coordinator.

use anyhow::{Context, Result};
use olc_protocol::{AccountAction, AccountView, Amount};

use super::daemon;
use super::job::connect;
use crate::cli::{AccountAmount, AccountBalance, AccountCommand};

pub fn run(command: AccountCommand) -> Result<()> {
    let rt = daemon::runtime()?;
    match command {
        AccountCommand::Balance(args) => rt.block_on(balance(args)),
        AccountCommand::Deposit(args) => {
            rt.block_on(act(args, |amount| AccountAction::Deposit { amount }))
        }
        AccountCommand::Stake(args) => {
            rt.block_on(act(args, |amount| AccountAction::Stake { amount }))
        }
        AccountCommand::Unstake(args) => {
            rt.block_on(act(args, |amount| AccountAction::Unstake { amount }))
        }
    }
}

async fn balance(args: AccountBalance) -> Result<()> {
    let submitter = connect(&args.coordinator).await?;
    let key = args.of.unwrap_or_else(|| submitter.identity().public_key());
    let view = submitter
        .balance(key)
        .await
        .context("cannot read the account")?;
    show(&view, args.json)
}

async fn act(args: AccountAmount, action: impl FnOnce(Amount) -> AccountAction) -> Result<()> {
    let submitter = connect(&args.coordinator).await?;
    let view = submitter
        .account(action(Amount(args.amount)))
        .await
        .context("the coordinator did not carry out the request")?;
    show(&view, args.json)
}

fn show(view: &AccountView, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(view)?);
        return Ok(());
    }
    println!("account     {}", view.key);
    println!("balance     {}", view.balance.0);
    println!("bonded      {}", view.bonded.0);
    println!("unbonding   {}", view.unbonding.0);
    println!(
        "reputation  {:.3} ({} verified jobs, {} slashes)",
        view.reputation, view.jobs_verified, view.slashes
    );
    if let Some(until) = view.jailed_until_ms {
        println!("jailed until {until} (unix ms): not matched to jobs");
    }
    Ok(())
}

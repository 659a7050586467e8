//! `olc account …`: your balance and stake at a coordinator.

use anyhow::{Context, Result};
use olc_protocol::{AccountAction, AccountView, Amount};

use super::daemon;
use super::remote::with_submitter;
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
    let view = with_submitter(&args.coordinator, async |submitter| {
        let key = args.of.unwrap_or_else(|| submitter.identity().public_key());
        submitter
            .balance(key)
            .await
            .context("cannot read the account")
    })
    .await?;
    show(&view, args.json)
}

async fn act(args: AccountAmount, action: impl FnOnce(Amount) -> AccountAction) -> Result<()> {
    let view = with_submitter(&args.coordinator, async |submitter| {
        submitter
            .account(action(Amount(args.amount)))
            .await
            .context("the coordinator did not carry out the request")
    })
    .await?;
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
    for release in &view.unbonding_releases {
        println!(
            "  {} unlock {}",
            release.amount,
            when(release.unlocks_ms, olc_net::unix_ms())
        );
    }
    println!(
        "reputation  {:.3} ({} verified jobs, {} slashes)",
        view.reputation, view.jobs_verified, view.slashes
    );
    if let Some(until) = view.jailed_until_ms {
        println!(
            "jailed      until {}: not matched to jobs",
            when(until, olc_net::unix_ms())
        );
    }
    Ok(())
}

/// A moment of the coordinator's clock, for a person: "in 5m 3s (unix ms 1764…)".
fn when(at_ms: u64, now_ms: u64) -> String {
    let left = std::time::Duration::from_millis(at_ms.saturating_sub(now_ms) / 1000 * 1000);
    if left.is_zero() {
        format!("now (unix ms {at_ms})")
    } else {
        format!("in {} (unix ms {at_ms})", humantime::format_duration(left))
    }
}

#[cfg(test)]
mod tests {
    use super::when;

    #[test]
    fn unlock_times_read_as_a_wait() {
        assert_eq!(when(1_000, 5_000), "now (unix ms 1000)");
        assert_eq!(when(65_500, 1_000), "in 1m 4s (unix ms 65500)");
    }
}

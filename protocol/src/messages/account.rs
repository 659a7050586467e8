//! Accounts at a coordinator: a key's balance and stake, and the signed requests that
//! move them. Every request is signed by the account's own key, so nobody can stake,
//! unstake or fund an account that is not theirs; the nonce makes each one count once.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::{Amount, Message, PublicKey};

/// A signed request about the signer's own account.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct AccountRequest {
    pub action: AccountAction,
    /// Must exceed every nonce this account used before: a replayed request is refused
    /// rather than staking or unstaking twice.
    pub nonce: u64,
}

impl Message for AccountRequest {
    const NAME: &'static str = "olc/account-request";
    const MAX_SIZE: usize = 256;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum AccountAction {
    /// Mints credits into the account: only coordinators running a faucet (devnets)
    /// accept it.
    Deposit { amount: Amount },
    /// Bonds part of the balance as stake, which a worker needs to be matched.
    Stake { amount: Amount },
    /// Starts unbonding stake: it stops backing new work at once and returns to the
    /// balance after the coordinator's unbonding period.
    Unstake { amount: Amount },
}

/// One account as the coordinator reports it.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct AccountView {
    pub key: PublicKey,
    pub balance: Amount,
    pub bonded: Amount,
    /// Unstaked but still slashable until its release time.
    pub unbonding: Amount,
    /// Each pending unbonding, earliest first: `unbonding` is their sum.
    pub unbonding_releases: Vec<UnbondingRelease>,
    /// 0..=1, 0.5 for a worker with no history.
    pub reputation: f64,
    /// Unix ms until which the worker is not matched, after a slash.
    pub jailed_until_ms: Option<u64>,
    pub slashes: u64,
    pub jobs_verified: u64,
}

/// Unstaked credits and when they return to the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct UnbondingRelease {
    pub amount: Amount,
    /// Unix ms (the coordinator's clock) at which they stop being slashable and become
    /// spendable.
    pub unlocks_ms: u64,
}

/// The whole ledger, as `olc coordinator ledger` shows it.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct LedgerView {
    pub minted: Amount,
    /// Balances + stakes + escrows + treasury: equals `minted` unless something is wrong.
    pub total: Amount,
    pub treasury: Amount,
    pub escrowed: Amount,
    pub open_escrows: u64,
    pub settled_jobs: u64,
    pub accounts: Vec<AccountView>,
}

impl LedgerView {
    pub fn balanced(&self) -> bool {
        self.total == self.minted
    }
}

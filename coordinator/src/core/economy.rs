//! Everything the coordinator owes and is owed, beyond the jobs themselves: the ledger,
//! each worker's standing (reputation, jail, slash count), the nonces of account requests
//! and who owns which adapter. One value, stored in the same transaction as the job
//! records it pays for, so a crash can never separate a job's state from its money.
//!
//! The rules applied here live in [`crate::core::rules`]; this only keeps their results.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use olc_protocol::messages::account::UnbondingRelease;
use olc_protocol::messages::rpc::WorkerStanding;
use olc_protocol::{
    AccountAction, AccountRequest, AccountView, Amount, Commitment, ContentId, LedgerView,
    MAX_MESSAGE_BYTES, Message, PublicKey, RegisteredWorker, Signed, Slash, SlashReason,
};

use crate::core::ledger::{Ledger, LedgerConfig, LedgerError};
use crate::core::notice::Notice;
use crate::core::rules::{self, Policy, UNKNOWN_REPUTATION};

/// Most credits one faucet deposit may mint: enough for any devnet, far from overflowing
/// the ledger's u64 however often it is asked.
pub const MAX_FAUCET_DEPOSIT: u64 = 1_000_000_000_000;

/// What the coordinator has seen of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Encode, Decode)]
pub struct Standing {
    /// 0..=1, see [`rules::update_reputation`].
    pub reputation: f64,
    /// Unix ms before which the worker is not matched.
    pub jailed_until_ms: u64,
    pub slashes: u64,
    /// Jobs whose output was checked (by agreement or by the referee) and found right.
    pub verified: u64,
}

impl Default for Standing {
    fn default() -> Self {
        Self {
            reputation: UNKNOWN_REPUTATION,
            jailed_until_ms: 0,
            slashes: 0,
            verified: 0,
        }
    }
}

/// Why an account request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("bad signature: {0}")]
    Signature(String),
    #[error("nonce {got} is not above this account's last nonce {last} (a replayed request?)")]
    Nonce { got: u64, last: u64 },
    #[error("this coordinator runs no faucet; deposits are only for devnets (--faucet)")]
    NoFaucet,
    #[error("a faucet deposit is at most {MAX_FAUCET_DEPOSIT} credits")]
    FaucetLimit,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct Economy {
    ledger: Ledger,
    standing: BTreeMap<PublicKey, Standing>,
    account_nonces: BTreeMap<PublicKey, u64>,
    /// Adapter manifest id -> the submitter of the fine-tune that produced it, who earns
    /// the royalty when others use it.
    adapter_owners: BTreeMap<ContentId, PublicKey>,
}

impl Message for Economy {
    const NAME: &'static str = "olc/coordinator-economy";
    const MAX_SIZE: usize = MAX_MESSAGE_BYTES;
}

impl Economy {
    pub fn new(config: LedgerConfig) -> Self {
        Self {
            ledger: Ledger::new(config),
            ..Self::default()
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    pub fn standing(&self, worker: &PublicKey) -> Standing {
        self.standing.get(worker).copied().unwrap_or_default()
    }

    /// Why a worker may not be matched now, if it may not: too little stake (nothing to
    /// slash if it lies) or jailed after a slash.
    pub fn ineligible(&self, policy: &Policy, worker: &PublicKey, now_ms: u64) -> Option<String> {
        let bonded = self.ledger.bonded(*worker);
        if bonded < policy.min_stake {
            return Some(format!(
                "stake {bonded} is below the minimum of {}",
                policy.min_stake
            ));
        }
        let until = self.standing(worker).jailed_until_ms;
        (now_ms < until).then(|| format!("jailed until {until}"))
    }

    /// A live worker as `olc workers` shows it: its stake, jail and whether the matcher
    /// takes it now.
    pub fn worker_standing(
        &self,
        policy: &Policy,
        worker: RegisteredWorker,
        now_ms: u64,
    ) -> WorkerStanding {
        let key = worker.public_key;
        let s = self.standing(&key);
        WorkerStanding {
            bonded: Amount(self.ledger.bonded(key)),
            jailed_until_ms: (s.jailed_until_ms > now_ms).then_some(s.jailed_until_ms),
            reputation: s.reputation,
            ineligible: self.ineligible(policy, &key, now_ms),
            worker,
        }
    }

    /// Carries out a signed request on the signer's own account.
    pub fn account_request(
        &mut self,
        signed: &Signed<AccountRequest>,
        faucet: bool,
        now_ms: u64,
    ) -> Result<(), AccountError> {
        let request = signed
            .verify()
            .map_err(|e| AccountError::Signature(e.to_string()))?;
        let who = signed.signer();
        let last = self.account_nonces.get(&who).copied();
        if let Some(last) = last
            && request.nonce <= last
        {
            return Err(AccountError::Nonce {
                got: request.nonce,
                last,
            });
        }
        match request.action {
            AccountAction::Deposit { amount } => {
                if !faucet {
                    return Err(AccountError::NoFaucet);
                }
                if amount.0 > MAX_FAUCET_DEPOSIT {
                    return Err(AccountError::FaucetLimit);
                }
                self.ledger.deposit(who, amount.0)?;
            }
            AccountAction::Stake { amount } => self.ledger.stake(who, amount.0)?,
            AccountAction::Unstake { amount } => self.ledger.unstake(who, amount.0, now_ms)?,
        }
        self.account_nonces.insert(who, request.nonce);
        Ok(())
    }

    pub fn account_view(&self, key: PublicKey, now_ms: u64) -> AccountView {
        let s = self.standing(&key);
        AccountView {
            key,
            balance: Amount(self.ledger.balance(key)),
            bonded: Amount(self.ledger.bonded(key)),
            unbonding: Amount(self.ledger.unbonding(key)),
            unbonding_releases: self
                .ledger
                .unbonding_releases(key)
                .into_iter()
                .map(|(unlocks_ms, amount)| UnbondingRelease {
                    amount: Amount(amount),
                    unlocks_ms,
                })
                .collect(),
            reputation: s.reputation,
            jailed_until_ms: (s.jailed_until_ms > now_ms).then_some(s.jailed_until_ms),
            slashes: s.slashes,
            jobs_verified: s.verified,
        }
    }

    pub fn ledger_view(&self, now_ms: u64) -> LedgerView {
        let mut keys: Vec<PublicKey> = self.ledger.accounts().iter().map(|a| a.key).collect();
        keys.extend(self.standing.keys().copied());
        keys.sort();
        keys.dedup();
        LedgerView {
            minted: Amount(self.ledger.minted()),
            total: Amount(self.ledger.total().unwrap_or(u64::MAX)),
            treasury: Amount(self.ledger.treasury()),
            escrowed: Amount(self.ledger.escrowed_total()),
            open_escrows: self.ledger.open_escrows() as u64,
            settled_jobs: self.ledger.settled_count() as u64,
            accounts: keys
                .into_iter()
                .map(|k| self.account_view(k, now_ms))
                .collect(),
        }
    }

    /// Slashes `worker` for `reason` by the policy's fraction of everything it has at
    /// stake (bonded and unbonding), shares it between the `honest` workers of the same
    /// job and the treasury, lowers its reputation and, unless it merely missed a
    /// deadline, jails it. Returns the slash as the receipt records it, with the amount
    /// actually taken, and a notice when the ledger refused it.
    pub fn slash(
        &mut self,
        policy: &Policy,
        worker: PublicKey,
        reason: SlashReason,
        honest: &[PublicKey],
        evidence: Vec<Signed<Commitment>>,
        now_ms: u64,
    ) -> (Slash, Option<Notice>) {
        let stake = self
            .ledger
            .bonded(worker)
            .saturating_add(self.ledger.unbonding(worker));
        let (amount, to) = rules::slash_plan(policy, reason, stake, honest);
        let mut notice = None;
        let taken = if amount == 0 {
            0
        } else {
            // The plan never asks for more than the stake and its shares sum to the amount,
            // so the ledger takes it whole; an error would leave the ledger untouched.
            self.ledger.slash(worker, amount, &to).unwrap_or_else(|e| {
                notice = Some(Notice::SlashNotApplied {
                    worker,
                    error: e.to_string(),
                });
                0
            })
        };
        let s = self.standing.entry(worker).or_default();
        s.reputation = rules::update_reputation(s.reputation, false);
        s.slashes += 1;
        if reason != SlashReason::MissedDeadline {
            s.jailed_until_ms = s.jailed_until_ms.max(now_ms.saturating_add(policy.jail_ms));
        }
        let slash = Slash {
            worker,
            amount: Amount(taken),
            reason,
            evidence,
        };
        (slash, notice)
    }

    /// A worker's output was checked and found right.
    pub fn verified(&mut self, worker: PublicKey) {
        let s = self.standing.entry(worker).or_default();
        s.reputation = rules::update_reputation(s.reputation, true);
        s.verified += 1;
    }

    pub fn record_adapter(&mut self, adapter: ContentId, owner: PublicKey) {
        self.adapter_owners.entry(adapter).or_insert(owner);
    }

    pub fn adapter_owner(&self, adapter: &ContentId) -> Option<PublicKey> {
        self.adapter_owners.get(adapter).copied()
    }
}

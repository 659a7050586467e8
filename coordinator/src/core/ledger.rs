//! The coordinator's ledger: balances, stakes, escrows and the treasury, as a pure state
//! machine so every rule is tested without a clock, a network or a disk. It is stored,
//! inside [`crate::core::economy::Economy`], by [`crate::store::JobStore`].
//!
//! Amounts are integer credits (u64) and every sum is checked: an overflow is an error,
//! never a wrap-around or a panic. Every operation either succeeds as a whole or returns
//! an error having changed nothing, so the invariant
//! `balances + stakes (bonded + unbonding) + escrows + treasury == minted`
//! holds after each one, whether it succeeded or not.

use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};
use olc_protocol::{ContentId, MAX_MESSAGE_BYTES, Message, PublicKey};
use serde::Serialize;

/// How the ledger behaves, as opposed to what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct LedgerConfig {
    /// How long unstaked credits stay slashable before they can be spent. It must outlast
    /// the time it takes to catch a fault (a job's deadline plus a referee run), or a
    /// worker could cheat, unstake and leave before the evidence lands.
    pub unbonding_ms: u64,
}

impl LedgerConfig {
    /// A week: far longer than any job's deadline plus its referee run.
    pub const DEFAULT_UNBONDING_MS: u64 = 7 * 24 * 60 * 60 * 1000;
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            unbonding_ms: Self::DEFAULT_UNBONDING_MS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("{who} has {have} credits available but {need} are needed")]
    Insufficient {
        who: PublicKey,
        need: u64,
        have: u64,
    },
    #[error("{who} has {have} credits bonded but {need} are needed")]
    InsufficientStake {
        who: PublicKey,
        need: u64,
        have: u64,
    },
    #[error("job {0} has no escrow")]
    NoEscrow(ContentId),
    #[error("job {0} already has an escrow")]
    EscrowExists(ContentId),
    #[error("job {0} is already settled and cannot be escrowed again")]
    AlreadySettled(ContentId),
    #[error("payouts of {payouts} credits for job {job} exceed its escrow of {escrow}")]
    PayoutsExceedEscrow {
        job: ContentId,
        payouts: u64,
        escrow: u64,
    },
    #[error("amount overflows the ledger's 64-bit credits")]
    Overflow,
    #[error("ledger holds {total} credits but {minted} were minted")]
    Invariant { total: u64, minted: u64 },
    #[error("an amount of zero moves nothing and is refused")]
    ZeroAmount,
}

/// Who receives credits from a settlement or a slash (the fee and slash rules in
/// [`crate::core::rules`] speak of the same payees).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize)]
pub enum Payee {
    Account(PublicKey),
    Treasury,
}

/// The outcome of [`Ledger::settle`]. `Already` is a success, not an error, because
/// retries after a restart are expected and must be harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The job was paid now; `refund` went back to the payer.
    Done { refund: u64 },
    /// The job had been paid before; nothing changed.
    Already,
}

/// One account as `olc coordinator ledger --json` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AccountView {
    pub key: PublicKey,
    pub balance: u64,
    pub bonded: u64,
    pub unbonding: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
struct Stake {
    bonded: u64,
    /// Release time (ms) -> amount. Keyed by time so that release and slashing order are
    /// defined by the map itself, and unstakes maturing together merge into one entry.
    unbonding: BTreeMap<u64, u64>,
}

impl Stake {
    fn unbonding_total(&self) -> Result<u64, LedgerError> {
        self.unbonding.values().try_fold(0, |acc, &a| add(acc, a))
    }

    fn is_empty(&self) -> bool {
        self.bonded == 0 && self.unbonding.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
struct Escrow {
    payer: PublicKey,
    amount: u64,
}

/// The whole ledger. Zero balances and empty stakes are removed rather than kept, so two
/// ledgers holding the same credits compare (and encode) equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Ledger {
    config: LedgerConfig,
    balances: BTreeMap<PublicKey, u64>,
    stakes: BTreeMap<PublicKey, Stake>,
    escrows: BTreeMap<ContentId, Escrow>,
    treasury: u64,
    minted: u64,
    /// Every job ever settled: the guard that makes settlement idempotent. It is never
    /// pruned, since a retry may come at any time after a restart.
    settled: BTreeSet<ContentId>,
}

impl Message for Ledger {
    const NAME: &'static str = "olc/coordinator-ledger";
    // The codec caps every value at this; with 32 bytes per settled job that is room for
    // about a quarter of a million settled jobs.
    const MAX_SIZE: usize = MAX_MESSAGE_BYTES;
}

fn add(a: u64, b: u64) -> Result<u64, LedgerError> {
    a.checked_add(b).ok_or(LedgerError::Overflow)
}

fn sub(a: u64, b: u64) -> Result<u64, LedgerError> {
    a.checked_sub(b).ok_or(LedgerError::Overflow)
}

fn nonzero(amount: u64) -> Result<(), LedgerError> {
    if amount == 0 {
        Err(LedgerError::ZeroAmount)
    } else {
        Ok(())
    }
}

/// Credits gathered before any is applied, so an operation that fails part-way (an
/// overflow on its last payee) leaves the ledger untouched.
#[derive(Default)]
struct Credits {
    accounts: BTreeMap<PublicKey, u64>,
    treasury: u64,
}

/// The new balances and treasury that [`Credits`] amount to, computed but not applied.
struct Prepared {
    balances: Vec<(PublicKey, u64)>,
    treasury: u64,
}

impl Credits {
    fn add(&mut self, payee: Payee, amount: u64) -> Result<(), LedgerError> {
        match payee {
            Payee::Account(key) => {
                let slot = self.accounts.entry(key).or_default();
                *slot = add(*slot, amount)?;
            }
            Payee::Treasury => self.treasury = add(self.treasury, amount)?,
        }
        Ok(())
    }

    fn prepare(&self, ledger: &Ledger) -> Result<Prepared, LedgerError> {
        let balances = self
            .accounts
            .iter()
            .map(|(&key, &amount)| Ok((key, add(ledger.balance(key), amount)?)))
            .collect::<Result<_, LedgerError>>()?;
        Ok(Prepared {
            balances,
            treasury: add(ledger.treasury, self.treasury)?,
        })
    }
}

impl Ledger {
    pub fn new(config: LedgerConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn config(&self) -> LedgerConfig {
        self.config
    }

    /// Replaces the configuration of a loaded ledger with the operator's current one.
    /// Unstakes already made keep the release time they were given.
    pub fn set_config(&mut self, config: LedgerConfig) {
        self.config = config;
    }

    /// The faucet: creates credits. Devnet only; the caller decides who may call it.
    pub fn deposit(&mut self, to: PublicKey, amount: u64) -> Result<(), LedgerError> {
        nonzero(amount)?;
        let minted = add(self.minted, amount)?;
        let balance = add(self.balance(to), amount)?;
        self.minted = minted;
        self.set_balance(to, balance);
        Ok(())
    }

    /// Bonds part of a balance as stake, which the matcher requires and faults slash.
    pub fn stake(&mut self, who: PublicKey, amount: u64) -> Result<(), LedgerError> {
        nonzero(amount)?;
        let balance = self.debit(who, amount)?;
        let mut stake = self.stakes.get(&who).cloned().unwrap_or_default();
        stake.bonded = add(stake.bonded, amount)?;
        self.set_balance(who, balance);
        self.stakes.insert(who, stake);
        Ok(())
    }

    /// Starts unbonding: the credits stop backing new work at once but stay slashable
    /// until `now_ms + unbonding_ms`, when [`Ledger::release_unbonded`] frees them.
    pub fn unstake(&mut self, who: PublicKey, amount: u64, now_ms: u64) -> Result<(), LedgerError> {
        nonzero(amount)?;
        let mut stake = self.stakes.get(&who).cloned().unwrap_or_default();
        if stake.bonded < amount {
            return Err(LedgerError::InsufficientStake {
                who,
                need: amount,
                have: stake.bonded,
            });
        }
        let release_at = add(now_ms, self.config.unbonding_ms)?;
        stake.bonded = sub(stake.bonded, amount)?;
        let slot = stake.unbonding.entry(release_at).or_default();
        *slot = add(*slot, amount)?;
        self.stakes.insert(who, stake);
        Ok(())
    }

    /// Moves every unbonding amount whose release time is at or before `now_ms` back to
    /// its owner's balance, and returns how much moved.
    pub fn release_unbonded(&mut self, now_ms: u64) -> Result<u64, LedgerError> {
        let mut moved = 0;
        let mut balances = Vec::new();
        for (&who, stake) in &self.stakes {
            let matured = stake
                .unbonding
                .range(..=now_ms)
                .try_fold(0, |acc, (_, &a)| add(acc, a))?;
            if matured > 0 {
                moved = add(moved, matured)?;
                balances.push((who, add(self.balance(who), matured)?));
            }
        }
        for (who, balance) in balances {
            if let Some(stake) = self.stakes.get_mut(&who) {
                stake.unbonding.retain(|&at, _| at > now_ms);
                if stake.is_empty() {
                    self.stakes.remove(&who);
                }
            }
            self.set_balance(who, balance);
        }
        Ok(moved)
    }

    /// Holds a job's maximum fee until it settles. A zero escrow is allowed: it still
    /// records that the job was accepted and must be settled exactly once.
    pub fn escrow(
        &mut self,
        job: ContentId,
        payer: PublicKey,
        amount: u64,
    ) -> Result<(), LedgerError> {
        if self.settled.contains(&job) {
            return Err(LedgerError::AlreadySettled(job));
        }
        if self.escrows.contains_key(&job) {
            return Err(LedgerError::EscrowExists(job));
        }
        let balance = self.debit(payer, amount)?;
        self.set_balance(payer, balance);
        self.escrows.insert(job, Escrow { payer, amount });
        Ok(())
    }

    /// Pays a job from its escrow, refunds the rest to the payer, closes the escrow and
    /// records the job as settled, all at once. Settling a settled job again is
    /// `Ok(Settled::Already)` and changes nothing, so a restart or a retry never pays
    /// twice. Payouts summing above the escrow are refused whole.
    pub fn settle(
        &mut self,
        job: ContentId,
        payouts: &[(Payee, u64)],
    ) -> Result<Settled, LedgerError> {
        if self.settled.contains(&job) {
            return Ok(Settled::Already);
        }
        let escrow = *self.escrows.get(&job).ok_or(LedgerError::NoEscrow(job))?;
        let mut credits = Credits::default();
        let mut paid = 0;
        for &(payee, amount) in payouts {
            paid = add(paid, amount)?;
            credits.add(payee, amount)?;
        }
        if paid > escrow.amount {
            return Err(LedgerError::PayoutsExceedEscrow {
                job,
                payouts: paid,
                escrow: escrow.amount,
            });
        }
        let refund = sub(escrow.amount, paid)?;
        credits.add(Payee::Account(escrow.payer), refund)?;
        let prepared = credits.prepare(self)?;
        self.escrows.remove(&job);
        self.settled.insert(job);
        self.apply(prepared);
        Ok(Settled::Done { refund })
    }

    /// Takes up to `amount` from a worker's stake (bonded first, then unbonding, latest
    /// release first: the stake that left bonding last backed the most recent work) and
    /// shares it among `to` in proportion to the weights given. Shares are rounded down
    /// and what rounding leaves goes to the treasury, as does everything when the weights
    /// sum to zero, so no credit is created or lost. Returns the amount actually taken,
    /// which is less than `amount` when the stake is smaller.
    pub fn slash(
        &mut self,
        worker: PublicKey,
        amount: u64,
        to: &[(Payee, u64)],
    ) -> Result<u64, LedgerError> {
        let Some(stake) = self.stakes.get(&worker) else {
            return Ok(0);
        };
        let mut stake = stake.clone();
        let from_bonded = amount.min(stake.bonded);
        stake.bonded = sub(stake.bonded, from_bonded)?;
        let mut taken = from_bonded;
        let mut rest = sub(amount, from_bonded)?;
        while rest > 0 {
            let Some(mut entry) = stake.unbonding.last_entry() else {
                break;
            };
            let take = rest.min(*entry.get());
            *entry.get_mut() = sub(*entry.get(), take)?;
            if *entry.get() == 0 {
                entry.remove();
            }
            rest = sub(rest, take)?;
            taken = add(taken, take)?;
        }
        if taken == 0 {
            return Ok(0);
        }

        let total_weight = to.iter().try_fold(0u128, |acc, &(_, w)| {
            acc.checked_add(u128::from(w)).ok_or(LedgerError::Overflow)
        })?;
        let mut credits = Credits::default();
        let mut shared = 0;
        for &(payee, weight) in to {
            // taken * weight fits in u128 exactly, and the quotient is at most taken. A
            // zero total weight means every weight is zero: all goes to the treasury below.
            let share = u128::from(taken)
                .checked_mul(u128::from(weight))
                .ok_or(LedgerError::Overflow)?
                .checked_div(total_weight)
                .unwrap_or(0);
            let share = u64::try_from(share).map_err(|_| LedgerError::Overflow)?;
            shared = add(shared, share)?;
            credits.add(payee, share)?;
        }
        credits.add(Payee::Treasury, sub(taken, shared)?)?;
        let prepared = credits.prepare(self)?;
        if stake.is_empty() {
            self.stakes.remove(&worker);
        } else {
            self.stakes.insert(worker, stake);
        }
        self.apply(prepared);
        Ok(taken)
    }

    pub fn balance(&self, who: PublicKey) -> u64 {
        self.balances.get(&who).copied().unwrap_or(0)
    }

    pub fn bonded(&self, who: PublicKey) -> u64 {
        self.stakes.get(&who).map_or(0, |s| s.bonded)
    }

    /// Saturates rather than failing: a worker's unbonding is part of `minted`, so it can
    /// only exceed u64 in a ledger that [`Ledger::check_invariant`] already rejects.
    pub fn unbonding(&self, who: PublicKey) -> u64 {
        self.stakes
            .get(&who)
            .map_or(0, |s| s.unbonding_total().unwrap_or(u64::MAX))
    }

    /// Each pending unbonding of `who` as (release time in ms, amount), earliest first.
    pub fn unbonding_releases(&self, who: PublicKey) -> Vec<(u64, u64)> {
        self.stakes
            .get(&who)
            .map(|s| s.unbonding.iter().map(|(&at, &a)| (at, a)).collect())
            .unwrap_or_default()
    }

    pub fn escrowed(&self, job: ContentId) -> Option<u64> {
        self.escrows.get(&job).map(|e| e.amount)
    }

    pub fn treasury(&self) -> u64 {
        self.treasury
    }

    pub fn minted(&self) -> u64 {
        self.minted
    }

    pub fn is_settled(&self, job: ContentId) -> bool {
        self.settled.contains(&job)
    }

    pub fn settled_jobs(&self) -> impl Iterator<Item = ContentId> + '_ {
        self.settled.iter().copied()
    }

    pub fn settled_count(&self) -> usize {
        self.settled.len()
    }

    pub fn open_escrows(&self) -> usize {
        self.escrows.len()
    }

    /// Saturates like [`Ledger::unbonding`]: escrows are part of `minted`.
    pub fn escrowed_total(&self) -> u64 {
        self.escrows
            .values()
            .try_fold(0, |acc, e| add(acc, e.amount))
            .unwrap_or(u64::MAX)
    }

    /// Everything the ledger holds, wherever it sits.
    pub fn total(&self) -> Result<u64, LedgerError> {
        let mut total = self.treasury;
        for &b in self.balances.values() {
            total = add(total, b)?;
        }
        for stake in self.stakes.values() {
            total = add(total, stake.bonded)?;
            total = add(total, stake.unbonding_total()?)?;
        }
        for escrow in self.escrows.values() {
            total = add(total, escrow.amount)?;
        }
        Ok(total)
    }

    /// No credit created or lost: what the ledger holds equals what was minted.
    pub fn check_invariant(&self) -> Result<(), LedgerError> {
        let total = self.total()?;
        if total == self.minted {
            Ok(())
        } else {
            Err(LedgerError::Invariant {
                total,
                minted: self.minted,
            })
        }
    }

    /// Breaks the invariant on purpose, for tests of the code that must catch it.
    #[cfg(test)]
    pub(crate) fn forge_minted(&mut self, extra: u64) {
        self.minted += extra;
    }

    /// Every account with a balance or a stake, in key order.
    pub fn accounts(&self) -> Vec<AccountView> {
        let keys: BTreeSet<PublicKey> = self
            .balances
            .keys()
            .chain(self.stakes.keys())
            .copied()
            .collect();
        keys.into_iter()
            .map(|key| AccountView {
                key,
                balance: self.balance(key),
                bonded: self.bonded(key),
                unbonding: self.unbonding(key),
            })
            .collect()
    }

    /// The payer's balance after taking `amount`, or why it cannot be taken.
    fn debit(&self, who: PublicKey, amount: u64) -> Result<u64, LedgerError> {
        let have = self.balance(who);
        have.checked_sub(amount).ok_or(LedgerError::Insufficient {
            who,
            need: amount,
            have,
        })
    }

    fn set_balance(&mut self, who: PublicKey, balance: u64) {
        if balance == 0 {
            self.balances.remove(&who);
        } else {
            self.balances.insert(who, balance);
        }
    }

    fn apply(&mut self, prepared: Prepared) {
        for (who, balance) in prepared.balances {
            self.set_balance(who, balance);
        }
        self.treasury = prepared.treasury;
    }
}

#[cfg(test)]
mod tests;

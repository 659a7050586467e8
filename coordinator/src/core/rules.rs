//! The verifier's and settlement's decision rules, as pure functions: who was right, who
//! is slashed and by how much, how an escrow is split, which jobs are audited, how
//! reputation moves. Keeping them free of I/O and state means every rule is tested
//! exhaustively here, and the ledger and job book only carry out what they decide.
//!
//! Money is integer credits (`u64`). No rule creates or loses a credit through rounding:
//! wherever a total is divided by weights it is apportioned by largest remainder (see
//! [`apportion`]), so the parts always add up to the total.

use bincode::{Decode, Encode};
use olc_protocol::{ContentId, Identity, Message, PayoutRole, PublicKey, Signed, SlashReason};

/// Basis points in one whole.
pub const BPS: u32 = 10_000;

/// Coordinator policy. The defaults are the network's published economics; a coordinator
/// that changes them should say so, since workers stake against them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Treasury's cut, in bps of the total compute fee, charged on top of it (default 500).
    pub treasury_bps: u32,
    /// Adapter owner's royalty, in bps of the total compute fee, only when the job used
    /// an adapter that has an owner (default 1000).
    pub royalty_bps: u32,
    /// Data contributors' share, in bps of the total compute fee, only when the job's
    /// adapter carries provenance (default 1000).
    pub data_bps: u32,
    /// Slash for a wrong output or equivocation, in bps of stake (default 5000: half).
    pub slash_bps: u32,
    /// Slash for accepting a job and missing its deadline, in bps of stake (default 500).
    /// Smaller than [`Policy::slash_bps`]: a late worker wasted time, it did not lie.
    pub deadline_slash_bps: u32,
    /// Part of a slash shared equally by the honest workers of the same job, in bps; the
    /// rest goes to the treasury (default 5000). Rewarding the honest replicas makes
    /// disagreeing worth more than copying.
    pub slash_to_honest_bps: u32,
    /// How long a slashed worker is not matched (default 10 minutes).
    pub jail_ms: u64,
    /// Stake below which a worker is not matched (default 100): a worker with nothing to
    /// lose cannot be punished for lying.
    pub min_stake: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            treasury_bps: 500,
            royalty_bps: 1000,
            data_bps: 1000,
            slash_bps: 5000,
            deadline_slash_bps: 500,
            slash_to_honest_bps: 5000,
            jail_ms: 10 * 60 * 1000,
            min_stake: 100,
        }
    }
}

impl Policy {
    /// Rejects fractions of a stake or of a slash above one whole, which would slash more
    /// than a worker has or pay out more than was slashed. The fee shares may exceed one
    /// whole (they are charged on top), so they are not checked.
    pub fn validate(&self) -> Result<(), RuleError> {
        for (field, bps) in [
            ("slash_bps", self.slash_bps),
            ("deadline_slash_bps", self.deadline_slash_bps),
            ("slash_to_honest_bps", self.slash_to_honest_bps),
        ] {
            if bps > BPS {
                return Err(RuleError::BpsOutOfRange { field, bps });
            }
        }
        Ok(())
    }
}

/// Why a rule could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("arithmetic overflow computing {0}")]
    Overflow(&'static str),
    #[error("policy field {field} is {bps} bps, more than the whole (10000)")]
    BpsOutOfRange { field: &'static str, bps: u32 },
}

/// Who receives a payout: the ledger's own payee, so a split settles without translation.
pub use crate::core::ledger::Payee;

/// One worker's metered work on a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub worker: PublicKey,
    /// Tokens of work, as the worker's signed execution receipt reports them.
    pub tokens: u64,
    /// The worker's advertised price, credits per 1000 tokens.
    pub price_per_ktoken: u64,
    /// Most this worker can earn on the job, whatever it metered.
    pub fee_cap: u64,
}

/// Everything settlement needs to split one job's escrow.
#[derive(Debug, Clone, Copy)]
pub struct FeeInputs<'a> {
    /// The submitter's escrowed max fee: a hard cap on everything paid out.
    pub escrow: u64,
    pub work: &'a [Work],
    /// Owner of the adapter the job used, if it used one that has an owner.
    pub adapter_owner: Option<PublicKey>,
    /// The adapter's provenance: each data contributor and the tokens their records
    /// trained. Empty when the job used no adapter or one without provenance.
    pub contributors: &'a [(PublicKey, u64)],
}

/// How an escrow is split. `sum(payouts) + refund == escrow`, always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// In a fixed order: compute (in `work` order), royalty, data contributors (in
    /// `contributors` order), treasury. Zero amounts are left out.
    pub payouts: Vec<(Payee, u64, PayoutRole)>,
    pub refund: u64,
}

impl Split {
    pub fn paid_out(&self) -> u64 {
        self.payouts.iter().map(|(_, amount, _)| amount).sum()
    }
}

/// Splits a job's escrow.
///
/// - Each worker's compute fee is `floor(tokens * price_per_ktoken / 1000)`, capped at its
///   `fee_cap`: metering never rounds in the worker's favour, and never past its cap.
/// - Royalty, data share and treasury cut are each `floor(total compute fee * bps / 10000)`,
///   charged on top of the compute fee. The royalty needs an adapter owner; the data share
///   needs provenance (at least one contributor with tokens).
/// - The data share is apportioned among contributors by tokens trained.
/// - If the total exceeds the escrow (the submitter's max fee is a hard cap), the shares
///   are cut in this order, each only once the previous is gone: the treasury first (the
///   network's own cut yields before anyone who contributed), then royalty and data share
///   together, proportionally (attribution keeps its internal ratio), and compute fees last,
///   proportionally among the workers.
/// - What is left is refunded.
///
/// Every proportional division is by largest remainder, so `sum(payouts) + refund ==
/// escrow` exactly.
pub fn split_fee(policy: &Policy, inputs: &FeeInputs<'_>) -> Result<Split, RuleError> {
    // Everything is wanted in u128 (it can exceed u64 before the escrow caps it); only
    // amounts at most the escrow are paid, so they fit back into u64.
    let fees: Vec<u128> = inputs
        .work
        .iter()
        .map(|w| {
            (u128::from(w.tokens) * u128::from(w.price_per_ktoken) / 1000).min(w.fee_cap.into())
        })
        .collect();
    let compute: u128 = fees.iter().sum();
    let share = |bps: u32| -> Result<u128, RuleError> {
        compute
            .checked_mul(bps.into())
            .map(|x| x / u128::from(BPS))
            .ok_or(RuleError::Overflow("a share of the compute fee"))
    };
    let royalty = match inputs.adapter_owner {
        Some(_) => share(policy.royalty_bps)?,
        None => 0,
    };
    let data_tokens: u128 = inputs
        .contributors
        .iter()
        .map(|(_, t)| u128::from(*t))
        .sum();
    let data = if data_tokens > 0 {
        share(policy.data_bps)?
    } else {
        0
    };
    let treasury = share(policy.treasury_bps)?;

    // Fill in priority order: compute, attribution, treasury; the rest is refunded.
    let mut left = u128::from(inputs.escrow);
    let mut take = |wanted: u128| {
        let got = wanted.min(left);
        left -= got;
        got
    };
    let compute_paid = take(compute);
    let attribution_paid = take(royalty + data);
    let treasury_paid = take(treasury);
    let refund = left;

    let worker_fees = if compute_paid < compute {
        let weights: Vec<(PublicKey, u128)> = inputs
            .work
            .iter()
            .map(|w| w.worker)
            .zip(fees.iter().copied())
            .collect();
        apportion(compute_paid, &weights)?
    } else {
        fees
    };
    let (royalty_paid, data_paid) = if attribution_paid < royalty + data {
        // Key 0 before 1: on a tie for the last unit, the royalty takes it.
        let parts = apportion(attribution_paid, &[(0u8, royalty), (1u8, data)])?;
        let royalty_paid = parts.first().copied().unwrap_or(0);
        (royalty_paid, attribution_paid - royalty_paid)
    } else {
        (royalty, data)
    };
    let contributor_weights: Vec<(PublicKey, u128)> = inputs
        .contributors
        .iter()
        .map(|(k, t)| (*k, u128::from(*t)))
        .collect();
    let contributor_shares = if data_paid > 0 {
        apportion(data_paid, &contributor_weights)?
    } else {
        vec![0; contributor_weights.len()]
    };

    let mut payouts = Vec::new();
    let mut push = |payee: Payee, amount: u128, role: PayoutRole| -> Result<(), RuleError> {
        if amount > 0 {
            let amount = u64::try_from(amount).map_err(|_| RuleError::Overflow("a payout"))?;
            payouts.push((payee, amount, role));
        }
        Ok(())
    };
    for (w, fee) in inputs.work.iter().zip(worker_fees) {
        push(Payee::Account(w.worker), fee, PayoutRole::Compute)?;
    }
    if let Some(owner) = inputs.adapter_owner {
        push(
            Payee::Account(owner),
            royalty_paid,
            PayoutRole::AdapterRoyalty,
        )?;
    }
    for ((k, _), amount) in inputs.contributors.iter().zip(contributor_shares) {
        push(Payee::Account(*k), amount, PayoutRole::DataContributor)?;
    }
    push(Payee::Treasury, treasury_paid, PayoutRole::Treasury)?;

    let refund = u64::try_from(refund).map_err(|_| RuleError::Overflow("the refund"))?;
    Ok(Split { payouts, refund })
}

/// Divides `total` in proportion to `weights`, exactly: each part is first
/// `floor(total * weight / sum)`, then the units left over (fewer than the number of
/// parts) go one each to the parts with the largest fractional remainders, ties going to
/// the smaller key, then to the earlier position. Only parts with a non-zero remainder
/// can receive a leftover unit, so a zero weight always gets zero.
///
/// Fails if the weights sum to zero while `total` is not zero (there is no one to give it
/// to), or on overflow.
pub fn apportion<K: Ord>(total: u128, weights: &[(K, u128)]) -> Result<Vec<u128>, RuleError> {
    let sum = weights
        .iter()
        .try_fold(0u128, |acc, (_, w)| acc.checked_add(*w))
        .ok_or(RuleError::Overflow("the sum of weights"))?;
    if sum == 0 {
        return if total == 0 {
            Ok(vec![0; weights.len()])
        } else {
            Err(RuleError::Overflow("an apportionment with no weight"))
        };
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, (_, w)) in weights.iter().enumerate() {
        let product = total
            .checked_mul(*w)
            .ok_or(RuleError::Overflow("an apportioned part"))?;
        parts.push(product / sum);
        remainders.push((product % sum, i));
    }
    let assigned: u128 = parts.iter().sum();
    let leftover = total - assigned;
    remainders.sort_by(|(ra, ia), (rb, ib)| {
        rb.cmp(ra)
            .then_with(|| weights[*ia].0.cmp(&weights[*ib].0))
            .then_with(|| ia.cmp(ib))
    });
    // `leftover` < number of parts, because each remainder is below `sum`.
    for (_, i) in remainders
        .iter()
        .take(usize::try_from(leftover).unwrap_or(usize::MAX))
    {
        parts[*i] += 1;
    }
    Ok(parts)
}

/// The verifier's verdict on a job's revealed commitments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every replica committed to this output.
    Agreed(ContentId),
    /// Replicas disagree: the referee must re-execute before anyone is paid or slashed.
    NeedsReferee,
    /// The referee's output is the right one; `wrong` committed to something else.
    Decided {
        correct: ContentId,
        wrong: Vec<PublicKey>,
        honest: Vec<PublicKey>,
    },
}

/// Judges a set of `(worker, committed output)`.
///
/// The engine is deterministic, so the right answer is one hash and a vote means nothing:
/// once the referee has re-executed, every worker whose commitment differs from the
/// referee's is wrong, even a majority. With a referee's output the verdict is always
/// [`Verdict::Decided`]; without it, [`Verdict::Agreed`] needs at least one commitment
/// and all of them equal. A worker listed twice with different outputs (which the
/// job book should already treat as equivocation) is wrong if any of them is, and is
/// listed once, in order of first appearance.
pub fn judge(commitments: &[(PublicKey, ContentId)], referee: Option<ContentId>) -> Verdict {
    let Some(correct) = referee else {
        return match commitments.split_first() {
            Some(((_, first), rest)) if rest.iter().all(|(_, c)| c == first) => {
                Verdict::Agreed(*first)
            }
            _ => Verdict::NeedsReferee,
        };
    };
    let mut wrong: Vec<PublicKey> = Vec::new();
    for (worker, output) in commitments {
        if *output != correct && !wrong.contains(worker) {
            wrong.push(*worker);
        }
    }
    let mut honest: Vec<PublicKey> = Vec::new();
    for (worker, _) in commitments {
        if !wrong.contains(worker) && !honest.contains(worker) {
            honest.push(*worker);
        }
    }
    Verdict::Decided {
        correct,
        wrong,
        honest,
    }
}

/// How much of a worker's `stake` to slash for `reason`, and who receives it.
///
/// The amount is `floor(stake * bps / 10000)`, with `slash_bps` for a wrong output or
/// equivocation and `deadline_slash_bps` for a missed deadline, never more than the stake.
/// `floor(amount * slash_to_honest_bps / 10000)` of it is shared equally among the
/// distinct `honest` workers (by largest remainder: leftover units to the smallest keys);
/// the treasury gets the rest, including the honest part when there is no honest worker.
/// Returns the amount and its recipients (honest workers in key order, then the
/// treasury; zero amounts left out), which always sum to the amount.
pub fn slash_plan(
    policy: &Policy,
    reason: SlashReason,
    stake: u64,
    honest: &[PublicKey],
) -> (u64, Vec<(Payee, u64)>) {
    let bps = match reason {
        SlashReason::WrongOutput | SlashReason::Equivocation => policy.slash_bps,
        SlashReason::MissedDeadline => policy.deadline_slash_bps,
    };
    let amount = bps_of(stake, bps);
    let mut honest: Vec<PublicKey> = honest.to_vec();
    honest.sort();
    honest.dedup();
    let to_honest = if honest.is_empty() {
        0
    } else {
        bps_of(amount, policy.slash_to_honest_bps)
    };
    let weights: Vec<(PublicKey, u128)> = honest.iter().map(|k| (*k, 1)).collect();
    let mut plan = Vec::with_capacity(honest.len() + 1);
    let mut given = 0u64;
    if let Ok(shares) = apportion(to_honest.into(), &weights) {
        for (k, share) in honest.iter().zip(shares) {
            // Each share is at most `to_honest`, a u64.
            let share = u64::try_from(share).unwrap_or(0);
            if share > 0 {
                plan.push((Payee::Account(*k), share));
                given += share;
            }
        }
    }
    let rest = amount - given;
    if rest > 0 {
        plan.push((Payee::Treasury, rest));
    }
    (amount, plan)
}

/// `floor(value * bps / 10000)`, never more than `value` (a bps above the whole is
/// clamped to it).
fn bps_of(value: u64, bps: u32) -> u64 {
    let bps = bps.min(BPS);
    let part = u128::from(value) * u128::from(bps) / u128::from(BPS);
    // part <= value because bps <= BPS.
    u64::try_from(part).unwrap_or(value)
}

/// The secret behind `sample:P` audits. A worker that could predict which jobs are
/// audited would cheat on the others, so the choice is a keyed hash whose key only the
/// coordinator knows. It is derived from the coordinator's own key (an ed25519 signature
/// is deterministic), so the same coordinator makes the same choices across restarts with
/// nothing extra to store, and two coordinators audit different jobs.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// The fixed message a coordinator signs to derive its audit key. It has its own domain
/// tag, and no code path signs one on anyone else's behalf, so no one can obtain the
/// signature from the coordinator.
#[derive(Debug, Encode, Decode)]
struct AuditKeySeed {
    purpose: String,
}

impl Message for AuditKeySeed {
    const NAME: &'static str = "olc/audit-key-seed";
    const MAX_SIZE: usize = 256;
}

impl AuditKey {
    const CONTEXT: &'static str = "olc sample audit v1";

    pub fn from_identity(identity: &Identity) -> Self {
        let seed = AuditKeySeed {
            purpose: Self::CONTEXT.to_owned(),
        };
        let signed = Signed::sign(identity, &seed)
            .expect("a short fixed message is always within its encoding limit");
        Self(blake3::derive_key(
            Self::CONTEXT,
            signed.signature().as_bytes(),
        ))
    }

    /// Whether to audit this replica: BLAKE3 keyed with the audit key over the job id and
    /// the assignment id; audited iff the digest's first 8 bytes, as a little-endian u64,
    /// are below `probability_ppm * 2^64 / 1e6`. `probability_ppm` of 1,000,000 or more
    /// audits everything, 0 audits nothing.
    pub fn audit(&self, job: &ContentId, assignment: &ContentId, probability_ppm: u32) -> bool {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(job.as_bytes()).update(assignment.as_bytes());
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        let draw = u128::from(u64::from_le_bytes(first));
        let threshold = (u128::from(probability_ppm) << 64) / 1_000_000;
        draw < threshold
    }
}

/// Reputation of a worker never seen before: neither trusted nor distrusted.
pub const UNKNOWN_REPUTATION: f64 = 0.5;

/// Weight of the newest outcome: about the last ten outcomes dominate, so a worker
/// recovers from an old slash but one good job does not erase a recent one.
pub const REPUTATION_ALPHA: f64 = 0.1;

/// Reputation in `0..=1`: an exponential moving average of outcomes (1 for a verified
/// good job, 0 for a slash). A stored value outside the range, or not a number, is
/// treated as clamped into it (NaN as unknown), so one corrupt record cannot poison
/// matching.
pub fn update_reputation(old: f64, good: bool) -> f64 {
    let old = if old.is_nan() {
        UNKNOWN_REPUTATION
    } else {
        old.clamp(0.0, 1.0)
    };
    let outcome = if good { 1.0 } else { 0.0 };
    (old + REPUTATION_ALPHA * (outcome - old)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests;

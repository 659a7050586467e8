//! The verifier: once a job's replicas have revealed, decide whether the output is
//! accepted, the referee must re-run the job, or workers are slashed; and, on acceptance,
//! split the escrow and sign the settlement receipt. The decision rules themselves are
//! [`crate::core::rules`]; this applies them to a job record.
//!
//! Honest workers never lose a cent to a false alarm: nobody is slashed for a wrong
//! output unless the referee, running the same deterministic engine, produced something
//! else.

use olc_protocol::{
    Amount, Commitment, ContentId, Identity, JobKind, JobOutput, JobSpec, JobState, Payout,
    PayoutRole, PublicKey, Reveal, SettlementReceipt, Signed, SlashReason, VerificationPolicy,
};

use crate::core::action::Action;
use crate::core::economy::Economy;
use crate::core::notice::Notice;
use crate::core::record::{JobRecord, ReplicaState, derive_state, fail};
use crate::core::rules::{self, AuditKey, FeeInputs, Payee, Policy, Verdict, Work};

/// What judging needs besides the job.
pub(crate) struct Ctx<'a> {
    pub economy: &'a mut Economy,
    pub policy: &'a Policy,
    pub identity: &'a Identity,
    pub audit_key: &'a AuditKey,
    /// The job's spec as verified on entry; `None` when the stored job no longer verifies.
    pub spec: Option<&'a JobSpec>,
    pub notices: &'a mut Vec<Notice>,
    pub now_ms: u64,
}

/// Whether a reveal backs the worker's commitment: its receipt is the worker's own, for
/// this job and assignment, reporting the committed output, and the output hashes to it.
pub(crate) fn check_reveal(
    worker: PublicKey,
    job_id: &ContentId,
    assignment_id: &ContentId,
    committed: &Commitment,
    reveal: &Reveal,
) -> Result<(), String> {
    if reveal.receipt.signer() != worker {
        return Err("receipt signed by another key".into());
    }
    let receipt = reveal.receipt.verify().map_err(|e| e.to_string())?;
    if receipt.job_id != *job_id || receipt.assignment != *assignment_id {
        return Err("receipt is for another job or assignment".into());
    }
    if receipt.output != committed.output {
        return Err("receipt's output differs from the commitment".into());
    }
    let output_id = match &reveal.output {
        JobOutput::Inference { tokens, .. } => olc_protocol::inference_commitment(tokens),
        JobOutput::Finetune { commitment, .. } => *commitment,
    };
    if output_id != committed.output {
        return Err("revealed output does not match the commitment".into());
    }
    Ok(())
}

/// Judges a job whose replicas may all have revealed. Returns a referee request when one
/// is needed; otherwise the job is accepted (done), or its wrong replicas are slashed and
/// dropped so the matcher fills their slots.
pub(crate) fn judge(job: &mut JobRecord, ctx: &mut Ctx<'_>) -> Vec<Action> {
    if job.state.is_final() {
        return Vec::new();
    }
    let active: Vec<_> = job.active().collect();
    if active.len() < job.replicas_needed()
        || !active
            .iter()
            .all(|r| matches!(r.state, ReplicaState::Revealed { .. }))
    {
        return Vec::new();
    }
    let first_assignment = active.first().map(|r| r.assignment_id);
    let commitments: Vec<(PublicKey, ContentId)> = job
        .replicas
        .iter()
        .filter_map(|r| {
            let c = r.commitment()?.body();
            Some((r.worker, c.output))
        })
        .collect();
    let job_id = job.job_id;
    let referee_wanted = || vec![Action::Referee { job_id }];
    match rules::judge(&commitments, job.referee) {
        Verdict::Agreed(output) => {
            if let (None, Some(first)) = (job.audited, first_assignment)
                && let VerificationPolicy::Sample { probability_ppm } = job.verification
            {
                let drawn = ctx.audit_key.audit(&job.job_id, &first, probability_ppm);
                job.audited = Some(drawn);
                if drawn {
                    job.state = JobState::Verifying;
                    return referee_wanted();
                }
            }
            // Checked only if two distinct workers agreed independently.
            let checked = commitments.len() >= 2;
            accept(job, ctx, output, checked);
            Vec::new()
        }
        Verdict::NeedsReferee => {
            job.state = JobState::Verifying;
            referee_wanted()
        }
        Verdict::Decided {
            correct,
            wrong,
            honest,
        } => {
            for r in job.replicas.iter_mut() {
                if !wrong.contains(&r.worker) {
                    continue;
                }
                let Some(evidence) = r.commitment().map(|c| c.signed().clone()) else {
                    continue;
                };
                r.state = ReplicaState::Dropped("slashed: wrong output".into());
                job.excluded.push(r.worker);
                let (slash, notice) = ctx.economy.slash(
                    ctx.policy,
                    r.worker,
                    SlashReason::WrongOutput,
                    &honest,
                    vec![evidence],
                    ctx.now_ms,
                );
                ctx.notices.extend(notice);
                ctx.notices.push(Notice::SlashedForWrongOutput {
                    job: job.job_id,
                    worker: r.worker,
                    amount: slash.amount.0,
                });
                job.slashes.push(slash);
            }
            let any_right = job.replicas.iter().any(|r| {
                matches!(r.state, ReplicaState::Revealed { .. })
                    && r.commitment().map(|c| c.body().output) == Some(correct)
            });
            if any_right {
                accept(job, ctx, correct, true);
            } else {
                // Nobody delivered the right output: the slots go back to the matcher, and
                // the new replicas are judged against the referee's answer directly.
                job.state = JobState::Running;
                job.state = derive_state(job);
            }
            Vec::new()
        }
    }
}

/// Accepts `output`: pays the replicas that revealed it (compute at their price, capped),
/// the adapter's owner and its data contributors, and the treasury, refunds the rest, and
/// signs the receipt. The ledger carries the payouts out when the job book touches the
/// finished job, from this very receipt.
fn accept(job: &mut JobRecord, ctx: &mut Ctx<'_>, output: ContentId, checked: bool) {
    let Some(spec) = ctx.spec else {
        fail(job, "the stored job no longer verifies");
        return;
    };
    let mut work = Vec::new();
    let mut executions = Vec::new();
    let mut delivered = None;
    for r in &job.replicas {
        let ReplicaState::Revealed { commitment, reveal } = &r.state else {
            continue;
        };
        if commitment.body().output != output {
            continue;
        }
        let tokens = reveal
            .receipt
            .verify()
            .map(|e| e.metrics.tokens)
            .unwrap_or(0);
        let fee_cap = r.assignment.verify().map(|a| a.fee_cap.0).unwrap_or(0);
        work.push(Work {
            worker: r.worker,
            tokens,
            price_per_ktoken: r.price_per_ktoken,
            fee_cap,
        });
        executions.push(reveal.receipt.clone());
        delivered.get_or_insert_with(|| reveal.output.clone());
    }
    let adapter = match &spec.kind {
        JobKind::Inference(j) => j.adapter,
        JobKind::Finetune(j) => j.params.init_adapter,
    };
    let adapter_owner = adapter.and_then(|a| ctx.economy.adapter_owner(&a));
    let escrow = ctx.economy.ledger().escrowed(job.job_id).unwrap_or(0);
    let split = match rules::split_fee(
        ctx.policy,
        &FeeInputs {
            escrow,
            work: &work,
            adapter_owner,
            contributors: &job.attribution,
        },
    ) {
        Ok(split) => split,
        Err(e) => {
            fail(job, &format!("cannot split the fee: {e}"));
            return;
        }
    };
    let treasury = ctx.identity.public_key();
    let payouts = split
        .payouts
        .iter()
        .map(|(payee, amount, role)| Payout {
            to: match payee {
                Payee::Account(k) => *k,
                Payee::Treasury => treasury,
            },
            amount: Amount(*amount),
            role: *role,
        })
        .collect();
    let receipt = SettlementReceipt {
        job_id: job.job_id,
        job: job.signed.clone(),
        assignments: job.replicas.iter().map(|r| r.assignment.clone()).collect(),
        output,
        executions,
        payouts,
        slashes: job.slashes.clone(),
        refund: Amount(split.refund),
        settled_ms: ctx.now_ms,
    };
    match Signed::sign(ctx.identity, &receipt) {
        Ok(signed) => {
            if checked {
                for w in &work {
                    ctx.economy.verified(w.worker);
                }
            }
            if let (JobKind::Finetune(_), Some(JobOutput::Finetune { adapter, .. })) =
                (&spec.kind, &delivered)
            {
                ctx.economy.record_adapter(*adapter, job.signed.signer());
            }
            job.receipt = Some(signed);
            job.output = delivered;
            job.state = JobState::Done;
        }
        Err(e) => fail(job, &format!("cannot sign the receipt: {e}")),
    }
}

/// The payee a receipt's payout stands for (treasury payouts name the coordinator's key).
pub(crate) fn payee_of(payout: &Payout) -> Payee {
    match payout.role {
        PayoutRole::Treasury => Payee::Treasury,
        _ => Payee::Account(payout.to),
    }
}

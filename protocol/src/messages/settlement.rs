//! The end of a job: who was paid what, who was slashed and why, signed by the
//! coordinator and verifiable offline by anyone.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::{
    Amount, Assignment, Commitment, ContentId, ExecutionReceipt, JobSpec, Message, PublicKey,
    Signed,
};

#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct SettlementReceipt {
    pub job_id: ContentId,
    /// The submitter's signed spec: its id is `job_id`.
    pub job: Signed<JobSpec>,
    /// The coordinator's signed assignments that the executions answer, so a reader can
    /// check that each worker was given the job it claims to have run.
    pub assignments: Vec<Signed<Assignment>>,
    /// The output the coordinator accepted.
    pub output: ContentId,
    /// The workers' own signed receipts, so a reader need not trust the coordinator about
    /// who computed what.
    pub executions: Vec<Signed<ExecutionReceipt>>,
    pub payouts: Vec<Payout>,
    pub slashes: Vec<Slash>,
    /// Returned to the submitter: escrow minus everything paid out.
    pub refund: Amount,
    pub settled_ms: u64,
}

impl Message for SettlementReceipt {
    const NAME: &'static str = "olc/settlement-receipt";
    const MAX_SIZE: usize = crate::MAX_MESSAGE_BYTES;
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Payout {
    pub to: PublicKey,
    pub amount: Amount,
    pub role: PayoutRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutRole {
    /// Metered work at the worker's advertised price.
    Compute,
    /// The adapter owner's royalty.
    AdapterRoyalty,
    /// A data contributor's share, by the tokens their records trained.
    DataContributor,
    Treasury,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct Slash {
    pub worker: PublicKey,
    pub amount: Amount,
    pub reason: SlashReason,
    /// The worker's own signed commitments: for a wrong output, the one that contradicts
    /// the accepted output (anyone can check it by re-running the job); for equivocation,
    /// two different ones for the same assignment. Empty for a missed deadline, whose
    /// evidence is the assignment's deadline and the absence of a commitment.
    pub evidence: Vec<Signed<Commitment>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlashReason {
    WrongOutput,
    MissedDeadline,
    Equivocation,
}

/// What an offline check of a settlement receipt found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the coordinator's signature does not verify: {0}")]
    Coordinator(String),
    #[error("the submitter's job signature does not verify: {0}")]
    Job(String),
    #[error("the receipt names job {claimed} but the embedded job is {actual}")]
    JobId {
        claimed: ContentId,
        actual: ContentId,
    },
    #[error("assignment {index}: {reason}")]
    Assignment { index: usize, reason: String },
    #[error("execution receipt {index}: {reason}")]
    Execution { index: usize, reason: String },
    #[error("slash {index}: {reason}")]
    Slash { index: usize, reason: String },
}

/// A receipt whose every signature and link was checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedReceipt {
    pub coordinator: PublicKey,
    pub submitter: PublicKey,
    pub receipt: SettlementReceipt,
    pub job: JobSpec,
    /// The workers whose executions the receipt embeds, in order.
    pub workers: Vec<PublicKey>,
}

/// Checks a settlement receipt offline: the coordinator's signature, the submitter's
/// signature over the job and that the job is the one named, every assignment signed by
/// the same coordinator for this job, and every execution receipt signed by the worker its
/// assignment names, for this job, with the accepted output.
pub fn verify_receipt(signed: &Signed<SettlementReceipt>) -> Result<VerifiedReceipt, ReceiptError> {
    let receipt = signed
        .verify()
        .map_err(|e| ReceiptError::Coordinator(e.to_string()))?;
    let coordinator = signed.signer();
    let job = receipt
        .job
        .verify()
        .map_err(|e| ReceiptError::Job(e.to_string()))?;
    if receipt.job.id() != receipt.job_id {
        return Err(ReceiptError::JobId {
            claimed: receipt.job_id,
            actual: receipt.job.id(),
        });
    }
    let mut assignments = Vec::with_capacity(receipt.assignments.len());
    for (index, a) in receipt.assignments.iter().enumerate() {
        let bad = |reason: &str| ReceiptError::Assignment {
            index,
            reason: reason.to_string(),
        };
        if a.signer() != coordinator {
            return Err(bad("not signed by the receipt's coordinator"));
        }
        let body = a.verify().map_err(|e| bad(&e.to_string()))?;
        if body.job_id != receipt.job_id || body.job != receipt.job {
            return Err(bad("is for another job"));
        }
        assignments.push((a.id(), body.worker));
    }
    let mut workers = Vec::with_capacity(receipt.executions.len());
    for (index, e) in receipt.executions.iter().enumerate() {
        let bad = |reason: &str| ReceiptError::Execution {
            index,
            reason: reason.to_string(),
        };
        let body = e.verify().map_err(|err| bad(&err.to_string()))?;
        let Some((_, worker)) = assignments.iter().find(|(id, _)| *id == body.assignment) else {
            return Err(bad("answers no assignment in the receipt"));
        };
        if e.signer() != *worker {
            return Err(bad("not signed by the assigned worker"));
        }
        if body.job_id != receipt.job_id {
            return Err(bad("is for another job"));
        }
        if body.output != receipt.output {
            return Err(bad("reports an output other than the accepted one"));
        }
        workers.push(*worker);
    }
    for (index, slash) in receipt.slashes.iter().enumerate() {
        check_evidence(slash, &receipt).map_err(|reason| ReceiptError::Slash { index, reason })?;
    }
    Ok(VerifiedReceipt {
        coordinator,
        submitter: receipt.job.signer(),
        job,
        receipt,
        workers,
    })
}

/// A slash must carry the slashed worker's own signatures on commitments for this job:
/// one that contradicts the accepted output (wrong output), or two that differ for one
/// assignment (equivocation). A missed deadline carries none.
fn check_evidence(slash: &Slash, receipt: &SettlementReceipt) -> Result<(), String> {
    let mut bodies = Vec::with_capacity(slash.evidence.len());
    for c in &slash.evidence {
        if c.signer() != slash.worker {
            return Err("evidence not signed by the slashed worker".into());
        }
        let body = c.verify().map_err(|e| format!("evidence: {e}"))?;
        if body.job_id != receipt.job_id {
            return Err("evidence is for another job".into());
        }
        bodies.push(body);
    }
    match slash.reason {
        SlashReason::MissedDeadline => Ok(()),
        SlashReason::WrongOutput => match bodies.first() {
            Some(c) if c.output != receipt.output => Ok(()),
            Some(_) => Err("the evidence agrees with the accepted output".into()),
            None => Err("a wrong-output slash without the worker's commitment".into()),
        },
        SlashReason::Equivocation => match bodies.as_slice() {
            [a, b] if a.assignment == b.assignment && a.output != b.output => Ok(()),
            _ => Err("equivocation needs two different commitments for one assignment".into()),
        },
    }
}

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
    /// The worker's own signed commitment that contradicts the accepted output: anyone can
    /// check it by re-running the job.
    pub evidence: Option<Signed<Commitment>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlashReason {
    WrongOutput,
    MissedDeadline,
    Equivocation,
}

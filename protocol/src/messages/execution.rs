//! What passes between coordinator and worker while a job runs: the assignment, the
//! worker's commitment to its output (commit-reveal), and its execution receipt.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::{Amount, ContentId, JobSpec, Message, PublicKey, Signed};

/// The coordinator's signed instruction to one worker to run one replica of a job. It
/// embeds the submitter's signed spec, so the worker checks both signatures itself and
/// never runs a job that no submitter asked for.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct Assignment {
    pub job_id: ContentId,
    pub job: Signed<JobSpec>,
    pub worker: PublicKey,
    /// Which replica this is (0-based), so two assignments of one job differ.
    pub replica: u8,
    /// The most this worker will be paid for it (at its advertised price).
    pub fee_cap: Amount,
    /// Unix ms by which the worker must commit; a worker that accepts and misses it is
    /// penalised.
    pub deadline_ms: u64,
    pub issued_ms: u64,
}

impl Message for Assignment {
    const NAME: &'static str = "olc/assignment";
    const MAX_SIZE: usize = JobSpec::MAX_SIZE + 4 * 1024;
}

/// A worker's binding statement of its output's hash, sent before any output is
/// revealed, so a worker cannot copy another's answer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Commitment {
    pub job_id: ContentId,
    /// Id of the signed assignment being answered: ties the commitment to one job and one
    /// replica, so it cannot be replayed for another.
    pub assignment: ContentId,
    /// BLAKE3 over the canonical serialization of the output.
    pub output: ContentId,
}

impl Message for Commitment {
    const NAME: &'static str = "olc/commitment";
    const MAX_SIZE: usize = 1024;
}

/// The worker's signed account of one execution: what it ran, what it produced, and what
/// it cost. Settlement receipts embed these.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct ExecutionReceipt {
    pub job_id: ContentId,
    pub assignment: ContentId,
    pub output: ContentId,
    pub model: ContentId,
    pub adapter: Option<ContentId>,
    pub metrics: Metrics,
    /// For a fine-tune: the id of the adapter's provenance record (whose data trained it).
    pub provenance: Option<ContentId>,
    pub finished_ms: u64,
}

impl Message for ExecutionReceipt {
    const NAME: &'static str = "olc/execution-receipt";
    const MAX_SIZE: usize = 4 * 1024;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode, Serialize, Deserialize)]
pub struct Metrics {
    /// Tokens of work: prompt + generated for inference, trained tokens for fine-tunes.
    pub tokens: u64,
    pub wall_ms: u64,
    pub peak_memory_bytes: u64,
}

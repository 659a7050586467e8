//! The job traffic between submitter, coordinator and worker, carried by `/olc/rpc/1`:
//! what each side asks and what the coordinator reports about a job.

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::{Amount, ContentId, Message, PublicKey, SettlementReceipt, Signed, Slash};

/// A worker's report on a running job (fine-tune step and loss), signed so the coordinator
/// can show it to the submitter as the worker's word.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct JobProgress {
    pub job_id: ContentId,
    pub assignment: ContentId,
    pub step: u32,
    pub total: u32,
    pub loss: f32,
}

impl Message for JobProgress {
    const NAME: &'static str = "olc/job-progress";
    const MAX_SIZE: usize = 512;
}

/// A worker's report that it could not run its assignment (bad inputs, an error inside
/// the engine, a cancelled run), so the coordinator can reassign at once instead of
/// waiting for the deadline. Signed: only the assigned worker can give up its replica.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct JobFailure {
    pub job_id: ContentId,
    pub assignment: ContentId,
    pub reason: String,
    /// Whose fault it is: the job's inputs (no worker will do better) or this worker's.
    pub kind: FailureKind,
}

/// Why a run failed, as the worker classified its error where it arose. The input kinds
/// say the job itself cannot work: the engine is deterministic, so every honest worker
/// meets the same error on the same inputs, and when enough distinct workers agree the
/// coordinator fails the job and refunds it instead of trying worker after worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// This worker could not run it (out of memory, cancelled, its deadline, a fault of
    /// its own, an input it could not fetch): another worker may succeed.
    Worker,
    /// The dataset does not parse, or no record of it can be trained.
    Dataset,
    /// The base model's files do not load (config, weights, tokenizer).
    Model,
    /// The adapter does not load or does not fit the model.
    Adapter,
    /// The prompt cannot be run (token ids outside the vocabulary, longer than the
    /// context).
    Prompt,
    /// The job's settings cannot be run on these inputs (a target the model lacks, a
    /// max_len past its context, a learning rate that makes training diverge).
    Settings,
}

impl FailureKind {
    /// Whether the job's inputs are to blame rather than the worker.
    pub fn is_input(self) -> bool {
        self != Self::Worker
    }

    /// What is wrong, in words: "the dataset", "the model", …
    pub fn subject(self) -> &'static str {
        match self {
            Self::Worker => "the worker",
            Self::Dataset => "the dataset",
            Self::Model => "the model",
            Self::Adapter => "the adapter",
            Self::Prompt => "the prompt",
            Self::Settings => "the job's settings",
        }
    }
}

impl Message for JobFailure {
    const NAME: &'static str = "olc/job-failure";
    const MAX_SIZE: usize = 8 * 1024;
}

/// One piece of a blob pushed to a coordinator (the submitter's inputs, a worker's
/// fine-tuned adapter). The receiver checks the whole against `id` when the last piece
/// arrives and keeps nothing that does not hash to it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BlobUpload {
    pub id: ContentId,
    pub total: u64,
    pub offset: u64,
    pub data: Vec<u8>,
}

impl BlobUpload {
    /// The pieces that push `data` (whose id is `id`), one chunk each, in order. An empty
    /// blob is one empty piece, so the receiver still sees it complete.
    pub fn pieces(id: ContentId, data: &[u8]) -> impl Iterator<Item = BlobUpload> + '_ {
        let total = data.len() as u64;
        let step = crate::blob::CHUNK_SIZE as usize;
        let count = data.len().div_ceil(step).max(1);
        (0..count).map(move |i| {
            let start = (i * step).min(data.len());
            let end = (start + step).min(data.len());
            BlobUpload {
                id,
                total,
                offset: start as u64,
                data: data[start..end].to_vec(),
            }
        })
    }
}

/// What a job produced, as revealed after every replica has committed.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum JobOutput {
    Inference {
        tokens: Vec<u32>,
        text: String,
    },
    Finetune {
        /// Manifest id of the adapter directory (adapter files and provenance.json), whose
        /// blobs the worker uploaded to the coordinator.
        adapter: ContentId,
        /// The adapter's commitment (BLAKE3 over its tensors in name order).
        commitment: ContentId,
        first_loss: f32,
        last_loss: f32,
    },
}

/// A worker's answer to a reveal request: its output and its signed execution receipt.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct Reveal {
    pub output: JobOutput,
    pub receipt: Signed<crate::ExecutionReceipt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker (the view's `waiting` says why, if no worker fits).
    Queued,
    /// Assignments sent; no worker has started.
    Assigned,
    Running,
    /// Every replica committed; outputs being revealed.
    Committed,
    /// The outputs disagree, or the job was drawn for a `sample:P` audit: the
    /// coordinator's referee is re-running it.
    Verifying,
    Done,
    Failed(String),
}

impl JobState {
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Done | Self::Failed(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Assigned => "assigned",
            Self::Running => "running",
            Self::Committed => "committed",
            Self::Verifying => "verifying",
            Self::Done => "done",
            Self::Failed(_) => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct ReplicaView {
    pub worker: PublicKey,
    pub replica: u8,
    /// `assigned`, `running`, `committed`, `revealed`, `declined: …`, `timed out`, …
    pub state: String,
    pub progress: Option<JobProgress>,
    pub commitment: Option<ContentId>,
}

/// What the coordinator tells anyone about one job.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct JobView {
    pub job_id: ContentId,
    pub submitter: PublicKey,
    /// `inference` or `finetune`.
    pub kind: String,
    pub state: JobState,
    /// Why the job is not running yet, in words, when no worker can take it.
    pub waiting: Option<String>,
    /// With `waiting`: workers that could run the job exist, but none is free now (busy,
    /// or just answered "busy"); it is taken once one frees up. `false` when no worker
    /// could run it as the network stands.
    pub waiting_busy: bool,
    pub replicas: Vec<ReplicaView>,
    pub output: Option<JobOutput>,
    pub receipt: Option<Signed<SettlementReceipt>>,
    /// Workers penalised on this job so far (the receipt repeats them once it settles).
    pub slashes: Vec<Slash>,
    /// What went back to the submitter when the job settled or failed.
    pub refund: Option<Amount>,
    pub submitted_ms: u64,
    pub updated_ms: u64,
}

/// The commitment of an inference output: BLAKE3 over the generated token ids as
/// little-endian u32 (the canonical serialization of DESIGN.md).
pub fn inference_commitment(tokens: &[u32]) -> ContentId {
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    ContentId::of(&bytes)
}

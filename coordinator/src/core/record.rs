//! One job as the coordinator stores it: the signed spec, its replicas and what each
//! worker answered, the money it moved; and the job state its replicas imply. Shared by
//! the book, which changes records, and the verifier, which judges them.

use bincode::{Decode, Encode};
use olc_protocol::messages::jobs_api::FailureKind;
use olc_protocol::{
    Amount, Assignment, Commitment, ContentId, JobKind, JobOutput, JobProgress, JobSpec, JobState,
    JobView, Message, PublicKey, ReplicaView, Reveal, SettlementReceipt, Signed, Slash,
    VerificationPolicy,
};

use crate::core::verified::Verified;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum ReplicaState {
    /// Sent; no answer yet.
    Offered,
    Running,
    Committed(Verified<Commitment>),
    Revealed {
        commitment: Verified<Commitment>,
        reveal: Reveal,
    },
    /// Committed, then revealed something that does not back the commitment (another
    /// worker's output, a receipt signed by someone else). It no longer counts towards
    /// the job, but its commitment is still judged: if it differs from the right output,
    /// the worker is slashed with it as evidence.
    Unbacked {
        commitment: Verified<Commitment>,
        why: String,
    },
    /// No longer counts: declined, timed out, lost, slashed, or a bad answer.
    Dropped(String),
    /// No longer counts: the worker reported that it could not run the job, and whether
    /// the job's inputs or the worker were to blame.
    Failed {
        kind: FailureKind,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Replica {
    pub index: u8,
    pub worker: PublicKey,
    pub assignment: Signed<Assignment>,
    pub assignment_id: ContentId,
    pub deadline_ms: u64,
    /// The worker's advertised price when it was matched: what its compute fee is
    /// metered at.
    pub price_per_ktoken: u64,
    pub state: ReplicaState,
    pub progress: Option<JobProgress>,
}

impl Replica {
    pub(crate) fn active(&self) -> bool {
        !matches!(
            self.state,
            ReplicaState::Dropped(_) | ReplicaState::Failed { .. } | ReplicaState::Unbacked { .. }
        )
    }

    /// The worker's commitment, if it made one that still counts or is still to be judged.
    pub(crate) fn commitment(&self) -> Option<&Verified<Commitment>> {
        match &self.state {
            ReplicaState::Committed(c)
            | ReplicaState::Revealed { commitment: c, .. }
            | ReplicaState::Unbacked { commitment: c, .. } => Some(c),
            _ => None,
        }
    }
}

/// A generation its submitter cancelled: every replica's output is cut to the tokens
/// already streamed, which then settle (verified as usual) as the job's output.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CutState {
    pub keep: u32,
    /// Assignments that have not answered the cut yet: until they all have, no reveal is
    /// asked for, since a worker that had finished answers with a new commitment.
    pub unanswered: Vec<ContentId>,
    /// Assignments whose commitment was made again for the cut output: an older
    /// commitment of theirs that arrives late is not equivocation.
    pub recommitted: Vec<ContentId>,
}

/// One job as stored durably.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct JobRecord {
    pub job_id: ContentId,
    pub signed: Signed<JobSpec>,
    pub state: JobState,
    pub waiting: Option<String>,
    /// With `waiting`: some worker could run the job once free (see `JobView`).
    pub waiting_busy: bool,
    pub replicas: Vec<Replica>,
    /// Workers never to ask again for this job.
    pub excluded: Vec<PublicKey>,
    pub output: Option<JobOutput>,
    pub receipt: Option<Signed<SettlementReceipt>>,
    /// The job's verification policy, with "the coordinator's default" resolved when it
    /// was accepted.
    pub verification: VerificationPolicy,
    /// The data contributors of the adapter the job uses, and the tokens their records
    /// trained (from its provenance): who shares the data fee.
    pub attribution: Vec<(PublicKey, u64)>,
    /// Every slash made on this job, in order.
    pub slashes: Vec<Slash>,
    /// The referee's output, once it has re-run the job.
    pub referee: Option<ContentId>,
    /// For `sample:P`: whether the audit was drawn (`None` until the first commitment is
    /// judged).
    pub audited: Option<bool>,
    /// What was refunded to the submitter when the job's escrow closed.
    pub refund: Option<u64>,
    /// Set when the submitter cancelled the job while it was generating.
    pub cut: Option<CutState>,
    pub submitted_ms: u64,
    pub updated_ms: u64,
}

impl Message for JobRecord {
    const NAME: &'static str = "olc/coordinator-job-record";
    const MAX_SIZE: usize = 64 * 1024 * 1024;
}

impl JobRecord {
    pub fn spec(&self) -> Option<JobSpec> {
        self.signed.verify().ok()
    }

    pub fn view(&self) -> JobView {
        let kind = match self.spec().map(|s| s.kind) {
            Some(JobKind::Inference(_)) => "inference",
            Some(JobKind::Finetune(_)) => "finetune",
            None => "unknown",
        };
        JobView {
            job_id: self.job_id,
            submitter: self.signed.signer(),
            kind: kind.into(),
            state: self.state.clone(),
            waiting: self.waiting.clone(),
            waiting_busy: self.waiting.is_some() && self.waiting_busy,
            replicas: self
                .replicas
                .iter()
                .map(|r| ReplicaView {
                    worker: r.worker,
                    replica: r.index,
                    state: match &r.state {
                        ReplicaState::Offered => "assigned".into(),
                        ReplicaState::Running => "running".into(),
                        ReplicaState::Committed(_) => "committed".into(),
                        ReplicaState::Revealed { .. } => "revealed".into(),
                        ReplicaState::Unbacked { why, .. } => format!("bad reveal: {why}"),
                        ReplicaState::Dropped(why) => format!("dropped: {why}"),
                        ReplicaState::Failed { reason, .. } => {
                            format!("dropped: failed: {reason}")
                        }
                    },
                    progress: r.progress.clone(),
                    commitment: r.commitment().map(|c| c.body().output),
                })
                .collect(),
            output: self.output.clone(),
            receipt: self.receipt.clone(),
            slashes: self.slashes.clone(),
            refund: self.refund.map(Amount),
            submitted_ms: self.submitted_ms,
            updated_ms: self.updated_ms,
        }
    }

    pub(crate) fn replicas_needed(&self) -> usize {
        usize::from(self.verification.initial_replicas()).max(1)
    }

    pub(crate) fn active(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|r| r.active())
    }
}

pub(crate) fn fail(job: &mut JobRecord, why: &str) {
    job.state = JobState::Failed(why.to_string());
}

/// The state implied by the replicas (never moves a final job, nor one the referee is
/// checking).
pub(crate) fn derive_state(job: &JobRecord) -> JobState {
    if job.state.is_final() || job.state == JobState::Verifying {
        return job.state.clone();
    }
    let needed = job.replicas_needed();
    let active: Vec<&Replica> = job.active().collect();
    if active.is_empty() {
        return JobState::Queued;
    }
    let cut_unanswered = |r: &&Replica| {
        job.cut
            .as_ref()
            .is_some_and(|c| c.unanswered.contains(&r.assignment_id))
    };
    if active.len() >= needed
        && active.iter().all(|r| r.commitment().is_some())
        && !active.iter().any(cut_unanswered)
    {
        return JobState::Committed;
    }
    if active.iter().any(|r| r.state != ReplicaState::Offered) {
        JobState::Running
    } else {
        JobState::Assigned
    }
}

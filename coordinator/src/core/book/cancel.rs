//! A submitter's cancel: a job not generating yet fails with a full refund; a generating
//! inference is cut at the tokens already streamed, and those settle as its output,
//! committed, revealed and verified like any other.

use olc_protocol::{CancelJob, Commitment, ContentId, JobKind, JobSpec, Signed};

use super::{JobBook, Refusal};
use crate::core::action::Action;
use crate::core::record::{CutState, ReplicaState, fail};
use crate::core::verified::Verified;

/// What a cancel did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// Nothing was generated yet: the job failed and its escrow went back; the actions
    /// stop the workers that had started.
    Refunded { actions: Vec<Action> },
    /// The generation stops at `keep` tokens; the actions tell the workers.
    Cut { keep: u32, actions: Vec<Action> },
    /// Too late: the job has ended, or its output is already committed.
    TooLate(String),
}

/// A worker's answer to a cut.
#[derive(Debug, Clone, PartialEq)]
pub enum CutAnswer {
    /// The run will stop there (or had nothing past it, or was not there at all).
    Applied,
    /// The run had ended: its commitment to the cut output.
    Recommitted(Signed<Commitment>),
    /// No answer came: ask again.
    Unreachable,
}

impl JobBook {
    /// Whether `signed` is a cancel its job's submitter signed; the job it names. Checked
    /// when a cancel is carried out, and when a follower hands one over to be kept for when
    /// it leaves.
    pub fn check_cancel(&self, signed: &Signed<CancelJob>) -> Result<ContentId, Refusal> {
        let c = signed
            .verify()
            .map_err(|e| Refusal::Signature(e.to_string()))?;
        let job = self
            .jobs
            .get(&c.job_id)
            .ok_or(Refusal::UnknownJob(c.job_id))?;
        if job.signed.signer() != signed.signer() {
            return Err(Refusal::BadAnswer(
                "only the job's submitter can cancel it".into(),
            ));
        }
        Ok(c.job_id)
    }

    /// The submitter's signed cancel, sent now or kept from a follow whose connection has
    /// closed. `streamed` is how many tokens of the job were streamed to followers so far
    /// (the coordinator's count, not the worker's).
    pub fn cancel(
        &mut self,
        signed: &Signed<CancelJob>,
        streamed: u32,
        now_ms: u64,
    ) -> Result<Cancelled, Refusal> {
        let job_id = self.check_cancel(signed)?;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return Err(Refusal::UnknownJob(job_id));
        };
        if job.state.is_final() {
            return Ok(Cancelled::TooLate("the job has already ended".into()));
        }
        if let Some(cut) = &job.cut {
            return Ok(Cancelled::Cut {
                keep: cut.keep,
                actions: Vec::new(),
            });
        }
        if job.active().any(|r| r.commitment().is_some()) {
            return Ok(Cancelled::TooLate(
                "the output is already committed; the job settles as it is".into(),
            ));
        }
        let running: Vec<_> = job
            .active()
            .filter(|r| r.state == ReplicaState::Running)
            .map(|r| (r.worker, r.assignment_id))
            .collect();
        let is_inference = matches!(job.spec().map(|s| s.kind), Some(JobKind::Inference(_)));
        if !running.is_empty() && !is_inference {
            return Ok(Cancelled::TooLate(
                "a running fine-tune cannot be cancelled; it settles when it ends".into(),
            ));
        }
        let cuts = |keep: u32| -> Vec<Action> {
            running
                .iter()
                .map(|&(worker, assignment_id)| Action::Cut {
                    worker,
                    job_id,
                    assignment_id,
                    keep,
                })
                .collect()
        };
        if running.is_empty() || streamed == 0 {
            let actions = cuts(0);
            fail(job, "cancelled by its submitter");
            self.touch(&job_id, now_ms);
            return Ok(Cancelled::Refunded { actions });
        }
        job.cut = Some(CutState {
            keep: streamed,
            unanswered: running.iter().map(|(_, a)| *a).collect(),
            recommitted: Vec::new(),
        });
        let actions = cuts(streamed);
        self.touch(&job_id, now_ms);
        Ok(Cancelled::Cut {
            keep: streamed,
            actions,
        })
    }

    /// A worker's answer to a cut.
    pub fn on_cut_answer(
        &mut self,
        job_id: &ContentId,
        assignment_id: &ContentId,
        answer: CutAnswer,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        if answer == CutAnswer::Unreachable {
            return Ok(());
        }
        let (job, i) = super::answers::replica_in(&mut self.jobs, job_id, assignment_id)?;
        let Some(cut) = job.cut.as_mut() else {
            return Err(Refusal::BadAnswer("the job was not cut".into()));
        };
        if !cut.unanswered.contains(assignment_id) {
            return Ok(());
        }
        if let CutAnswer::Recommitted(signed) = answer {
            let verified =
                Verified::check(signed).map_err(|e| Refusal::Signature(e.to_string()))?;
            let r = &mut job.replicas[i];
            let body = verified.body();
            if verified.signer() != r.worker
                || body.job_id != *job_id
                || body.assignment != *assignment_id
            {
                return Err(Refusal::BadAnswer(
                    "a new commitment that is not this replica's".into(),
                ));
            }
            if matches!(
                r.state,
                ReplicaState::Offered | ReplicaState::Running | ReplicaState::Committed(_)
            ) {
                r.state = ReplicaState::Committed(verified);
                cut.recommitted.push(*assignment_id);
            }
        }
        // The next tick derives the state and asks for the reveals once all is in.
        cut.unanswered.retain(|a| a != assignment_id);
        self.touch(job_id, now_ms);
        Ok(())
    }

    /// Cuts no worker has answered yet: sent again until they are.
    pub fn pending_cuts(&self) -> Vec<Action> {
        self.jobs
            .values()
            .filter(|j| !j.state.is_final())
            .filter_map(|j| j.cut.as_ref().map(|c| (j, c)))
            .flat_map(|(j, cut)| {
                j.active()
                    .filter(|r| r.state != ReplicaState::Offered)
                    .filter(|r| cut.unanswered.contains(&r.assignment_id))
                    .map(|r| Action::Cut {
                        worker: r.worker,
                        job_id: j.job_id,
                        assignment_id: r.assignment_id,
                        keep: cut.keep,
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The spec the referee re-runs: the job's, a cut job's limited to the tokens kept.
    pub fn referee_spec(&self, id: &ContentId) -> Option<JobSpec> {
        let mut spec = self.spec(id)?.clone();
        let cut = self.jobs.get(id).and_then(|j| j.cut.as_ref());
        if let (Some(cut), JobKind::Inference(j)) = (cut, &mut spec.kind) {
            j.max_tokens = j.max_tokens.min(cut.keep);
        }
        Some(spec)
    }
}

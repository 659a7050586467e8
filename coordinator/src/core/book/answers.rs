//! What workers and the referee tell the book about the jobs it assigned: yes or no to an
//! assignment, progress, failures, commitments, reveals and the referee's own output, and
//! the verdict once a job's answers are all in.

use std::collections::BTreeMap;

use olc_protocol::{
    Commitment, ContentId, Identity, JobFailure, JobProgress, JobState, PublicKey, Reveal, Signed,
    SlashReason,
};

use super::quorum::{INPUT_QUORUM, input_verdict};
use super::{JobBook, Refusal};
use crate::core::action::Action;
use crate::core::record::{JobRecord, ReplicaState, derive_state, fail};
use crate::core::rules::AuditKey;
use crate::core::verified::Verified;
use crate::core::verify;

impl JobBook {
    fn replica_mut(
        &mut self,
        job_id: &ContentId,
        assignment_id: &ContentId,
    ) -> Result<(&mut JobRecord, usize), Refusal> {
        replica_in(&mut self.jobs, job_id, assignment_id)
    }

    /// The worker's answer to an assignment: `Ok(())` accepted, `Err(reason)` declined.
    /// A worker that declined is not asked again for this job.
    pub fn on_assign_answer(
        &mut self,
        job_id: &ContentId,
        assignment_id: &ContentId,
        answer: Result<(), String>,
        now_ms: u64,
    ) {
        self.answer_assignment(job_id, assignment_id, answer, true, now_ms);
    }

    /// The worker had no free slot, or could not be reached: the slot goes back to the
    /// matcher, and the worker may be asked again once it is free.
    pub fn on_assign_busy(
        &mut self,
        job_id: &ContentId,
        assignment_id: &ContentId,
        why: String,
        now_ms: u64,
    ) {
        self.answer_assignment(job_id, assignment_id, Err(why), false, now_ms);
    }

    fn answer_assignment(
        &mut self,
        job_id: &ContentId,
        assignment_id: &ContentId,
        answer: Result<(), String>,
        exclude: bool,
        now_ms: u64,
    ) {
        let Ok((job, i)) = self.replica_mut(job_id, assignment_id) else {
            return;
        };
        let r = &mut job.replicas[i];
        if r.state != ReplicaState::Offered {
            return;
        }
        match answer {
            Ok(()) => {
                r.state = ReplicaState::Running;
                let id = r.assignment_id;
                if let Some(cut) = job.cut.as_mut()
                    && !cut.unanswered.contains(&id)
                {
                    cut.unanswered.push(id);
                }
            }
            Err(why) => {
                r.state = ReplicaState::Dropped(format!("declined: {why}"));
                let w = r.worker;
                if exclude {
                    job.excluded.push(w);
                }
            }
        }
        job.state = derive_state(job);
        self.touch(job_id, now_ms);
    }

    /// A worker left the network: its unfinished replicas go back to the matcher.
    pub fn worker_gone(&mut self, worker: &PublicKey, now_ms: u64) {
        for job in self.jobs.values_mut().filter(|j| !j.state.is_final()) {
            let mut changed = false;
            for r in job.replicas.iter_mut().filter(|r| r.worker == *worker) {
                if matches!(r.state, ReplicaState::Offered | ReplicaState::Running) {
                    r.state = ReplicaState::Dropped("worker left the network".into());
                    changed = true;
                }
            }
            if changed {
                job.excluded.push(*worker);
                job.state = derive_state(job);
                job.updated_ms = now_ms;
                self.dirty.insert(job.job_id);
            }
        }
    }

    /// A worker gave up its replica. The slot goes back to the matcher with that worker
    /// excluded. The job fails, with a full refund, when [`INPUT_QUORUM`] distinct workers
    /// blame the same input (or, at the next tick, when every worker able to run it has);
    /// and after more failures of any kind than the job could need (replicas + 2), with the
    /// last reason: one worker's word cannot fail a job (it may be lazy), but a job that
    /// nobody can run must not cycle until its deadline.
    pub fn on_failure(&mut self, signed: &Signed<JobFailure>, now_ms: u64) -> Result<(), Refusal> {
        let f = signed
            .verify()
            .map_err(|e| Refusal::Signature(e.to_string()))?;
        let (job, i) = self.replica_mut(&f.job_id, &f.assignment)?;
        let r = &mut job.replicas[i];
        if r.worker != signed.signer() {
            return Err(Refusal::BadAnswer(
                "failure reported by another worker".into(),
            ));
        }
        if !matches!(r.state, ReplicaState::Offered | ReplicaState::Running) {
            return Ok(());
        }
        let reason: String = f.reason.chars().take(500).collect();
        r.state = ReplicaState::Failed {
            kind: f.kind,
            reason: reason.clone(),
        };
        let w = r.worker;
        job.excluded.push(w);
        let failures = job
            .replicas
            .iter()
            .filter(|r| match &r.state {
                ReplicaState::Failed { .. } => true,
                // Written before failures carried their kind.
                ReplicaState::Dropped(why) => why.starts_with("failed: "),
                _ => false,
            })
            .count();
        if let Some(verdict) = input_verdict(job).filter(|v| v.workers >= INPUT_QUORUM) {
            fail(job, &verdict.describe());
        } else if failures >= job.replicas_needed() + 2 {
            fail(
                job,
                &format!("{failures} workers could not run it; the last said: {reason}"),
            );
        } else {
            job.state = derive_state(job);
        }
        self.touch(&f.job_id, now_ms);
        Ok(())
    }

    pub fn on_progress(
        &mut self,
        signed: &Signed<JobProgress>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let p = signed
            .verify()
            .map_err(|e| Refusal::Signature(e.to_string()))?;
        let (job, i) = self.replica_mut(&p.job_id, &p.assignment)?;
        let r = &mut job.replicas[i];
        if r.worker != signed.signer() {
            return Err(Refusal::BadAnswer(
                "progress signed by another worker".into(),
            ));
        }
        if r.state == ReplicaState::Offered {
            r.state = ReplicaState::Running;
        }
        r.progress = Some(p);
        job.state = derive_state(job);
        job.updated_ms = now_ms;
        // Progress is shown, not stored durably: losing it on a crash loses nothing.
        Ok(())
    }

    /// A worker's signed commitment. A second, different commitment for the same
    /// assignment is equivocation: both signed statements are kept as evidence, the
    /// worker is slashed and jailed, and its replica goes back to the matcher.
    pub fn on_commit(&mut self, signed: Signed<Commitment>, now_ms: u64) -> Result<(), Refusal> {
        let verified = Verified::check(signed).map_err(|e| Refusal::Signature(e.to_string()))?;
        let c = verified.body().clone();
        let (job, i) = replica_in(&mut self.jobs, &c.job_id, &c.assignment)?;
        let r = &mut job.replicas[i];
        if r.worker != verified.signer() {
            return Err(Refusal::BadAnswer(
                "commitment signed by a worker other than the assigned one".into(),
            ));
        }
        let recommitted = job
            .cut
            .as_ref()
            .is_some_and(|cut| cut.recommitted.contains(&c.assignment));
        match &r.state {
            ReplicaState::Offered | ReplicaState::Running => {}
            // Made before the run was cut, and replaced since by the commitment to the
            // cut output: late, not two answers.
            ReplicaState::Committed(_) if recommitted => return Ok(()),
            ReplicaState::Committed(prev)
            | ReplicaState::Revealed {
                commitment: prev, ..
            }
            | ReplicaState::Unbacked {
                commitment: prev, ..
            } => {
                if prev.body().output == c.output {
                    return Ok(());
                }
                if job.state.is_final() {
                    return Err(Refusal::BadAnswer(
                        "a different commitment for a job that has ended".into(),
                    ));
                }
                let evidence = vec![prev.signed().clone(), verified.signed().clone()];
                let worker = r.worker;
                r.state = ReplicaState::Dropped("slashed: equivocation".into());
                job.excluded.push(worker);
                let (slash, notice) = self.economy.slash(
                    &self.policy,
                    worker,
                    SlashReason::Equivocation,
                    &[],
                    evidence,
                    now_ms,
                );
                self.notices.extend(notice);
                job.slashes.push(slash);
                job.state = derive_state(job);
                self.economy_dirty = true;
                self.touch(&c.job_id, now_ms);
                return Err(Refusal::BadAnswer(
                    "a different commitment was already made for this assignment: slashed for equivocation"
                        .into(),
                ));
            }
            ReplicaState::Dropped(why) | ReplicaState::Failed { reason: why, .. } => {
                return Err(Refusal::BadAnswer(format!(
                    "this replica no longer counts: {why}"
                )));
            }
        }
        r.state = ReplicaState::Committed(verified);
        self.touch(&c.job_id, now_ms);
        Ok(())
    }

    /// A worker's reveal, checked against its commitment and its assignment. Once every
    /// replica has revealed, the job is judged: it settles, or the referee is called
    /// (the returned action).
    pub fn on_reveal(
        &mut self,
        identity: &Identity,
        job_id: &ContentId,
        assignment_id: &ContentId,
        reveal: Reveal,
        now_ms: u64,
    ) -> Result<Vec<Action>, Refusal> {
        let (job, i) = self.replica_mut(job_id, assignment_id)?;
        let r = &mut job.replicas[i];
        let ReplicaState::Committed(commitment) = &r.state else {
            return Ok(Vec::new());
        };
        let verdict =
            verify::check_reveal(r.worker, job_id, assignment_id, commitment.body(), &reveal);
        let commitment = commitment.clone();
        if let Err(why) = verdict {
            r.state = ReplicaState::Unbacked {
                commitment,
                why: why.clone(),
            };
            job.state = derive_state(job);
            self.touch(job_id, now_ms);
            return Err(Refusal::BadAnswer(why));
        }
        r.state = ReplicaState::Revealed { commitment, reveal };
        let actions = self.judge(identity, job_id, now_ms);
        Ok(actions)
    }

    /// The referee's re-execution of a job: the output's commitment, or why it could not
    /// run. A referee that cannot run fails the job with a full refund and slashes no one:
    /// without the right answer nobody can be shown to be wrong.
    pub fn on_referee(
        &mut self,
        identity: &Identity,
        job_id: &ContentId,
        result: Result<ContentId, String>,
        now_ms: u64,
    ) -> Vec<Action> {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return Vec::new();
        };
        if job.state != JobState::Verifying {
            return Vec::new();
        }
        match result {
            Ok(output) => {
                job.referee = Some(output);
                self.judge(identity, job_id, now_ms)
            }
            Err(why) => {
                fail(job, &format!("the referee could not re-run the job: {why}"));
                self.touch(job_id, now_ms);
                Vec::new()
            }
        }
    }

    /// Referee runs still owed (after a restart).
    pub fn pending_referees(&self) -> Vec<Action> {
        self.jobs
            .values()
            .filter(|j| j.state == JobState::Verifying)
            .map(|j| Action::Referee { job_id: j.job_id })
            .collect()
    }

    fn judge(&mut self, identity: &Identity, job_id: &ContentId, now_ms: u64) -> Vec<Action> {
        let key = self
            .audit_key
            .get_or_insert_with(|| AuditKey::from_identity(identity))
            .clone();
        let Some(job) = self.jobs.get_mut(job_id) else {
            return Vec::new();
        };
        let mut ctx = verify::Ctx {
            economy: &mut self.economy,
            policy: &self.policy,
            identity,
            audit_key: &key,
            spec: self.specs.get(job_id).map(Verified::body),
            notices: &mut self.notices,
            now_ms,
        };
        let actions = verify::judge(job, &mut ctx);
        self.economy_dirty = true;
        self.touch(job_id, now_ms);
        actions
    }
}

/// The job and the index of the replica an answer names. A free function so that callers
/// can hold it while using the book's other fields.
pub(super) fn replica_in<'a>(
    jobs: &'a mut BTreeMap<ContentId, JobRecord>,
    job_id: &ContentId,
    assignment_id: &ContentId,
) -> Result<(&'a mut JobRecord, usize), Refusal> {
    let job = jobs.get_mut(job_id).ok_or(Refusal::UnknownJob(*job_id))?;
    let i = job
        .replicas
        .iter()
        .position(|r| r.assignment_id == *assignment_id)
        .ok_or_else(|| {
            Refusal::BadAnswer(format!("no assignment {assignment_id} in job {job_id}"))
        })?;
    Ok((job, i))
}

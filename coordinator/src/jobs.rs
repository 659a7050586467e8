//! The life of every job the coordinator accepted, as a plain state machine: the node
//! feeds it submissions, worker answers and the clock, and carries out the actions it
//! returns (send an assignment, ask for a reveal). Nothing here does I/O, so every rule
//! is tested without a network; the node persists the records it marks dirty.
//!
//! States: queued → assigned → running → committed → done | failed(reason). A replica
//! whose worker declines, vanishes or misses its deadline is dropped and its slot goes
//! back to the matcher with that worker excluded.

use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};
use olc_protocol::{
    Amount, Assignment, Commitment, ContentId, Identity, JobFailure, JobKind, JobOutput,
    JobProgress, JobSpec, JobState, JobView, Message, PublicKey, ReplicaView, Reveal,
    SettlementReceipt, Signed,
};

/// Tunables of the job flow.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// How long a worker has from assignment to commitment (capped by the job's deadline).
    pub assignment_timeout_ms: u64,
    /// How long after the deadline committed outputs may still be revealed.
    pub reveal_grace_ms: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            assignment_timeout_ms: 10 * 60 * 1000,
            reveal_grace_ms: 60 * 1000,
        }
    }
}

/// What the node must do on the book's behalf.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Assign {
        worker: PublicKey,
        assignment: Signed<Assignment>,
    },
    Reveal {
        worker: PublicKey,
        job_id: ContentId,
        assignment_id: ContentId,
    },
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum ReplicaState {
    /// Sent; no answer yet.
    Offered,
    Running,
    Committed(Signed<Commitment>),
    Revealed {
        commitment: Signed<Commitment>,
        reveal: Reveal,
    },
    /// No longer counts: declined, timed out, lost, or a bad answer.
    Dropped(String),
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Replica {
    pub index: u8,
    pub worker: PublicKey,
    pub assignment: Signed<Assignment>,
    pub assignment_id: ContentId,
    pub deadline_ms: u64,
    pub state: ReplicaState,
    pub progress: Option<JobProgress>,
}

impl Replica {
    fn active(&self) -> bool {
        !matches!(self.state, ReplicaState::Dropped(_))
    }

    fn commitment(&self) -> Option<&Signed<Commitment>> {
        match &self.state {
            ReplicaState::Committed(c) | ReplicaState::Revealed { commitment: c, .. } => Some(c),
            _ => None,
        }
    }
}

/// One job as stored durably.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct JobRecord {
    pub job_id: ContentId,
    pub signed: Signed<JobSpec>,
    pub state: JobState,
    pub waiting: Option<String>,
    pub replicas: Vec<Replica>,
    /// Workers never to ask again for this job.
    pub excluded: Vec<PublicKey>,
    pub output: Option<JobOutput>,
    pub receipt: Option<Signed<SettlementReceipt>>,
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
                        ReplicaState::Dropped(why) => format!("dropped: {why}"),
                    },
                    progress: r.progress.clone(),
                    commitment: r
                        .commitment()
                        .and_then(|c| c.verify().ok())
                        .map(|c| c.output),
                })
                .collect(),
            output: self.output.clone(),
            receipt: self.receipt.clone(),
            submitted_ms: self.submitted_ms,
            updated_ms: self.updated_ms,
        }
    }

    fn replicas_needed(&self) -> usize {
        self.spec()
            .map_or(1, |s| usize::from(s.verification.initial_replicas()).max(1))
    }

    fn active(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|r| r.active())
    }
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("bad signature: {0}")]
    Signature(String),
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("job {0} was already submitted")]
    Duplicate(ContentId),
    #[error("nonce {nonce} was already used by this submitter (a replayed job?)")]
    Replayed { nonce: u64 },
    #[error("no such job {0}")]
    UnknownJob(ContentId),
    #[error("{0}")]
    BadAnswer(String),
}

/// The matcher as the book sees it: `(spec, excluded workers, replicas wanted)` to
/// distinct workers, or why none fit.
pub type Pick<'a> = dyn FnMut(&JobSpec, &[PublicKey], usize) -> Result<Vec<PublicKey>, String> + 'a;

#[derive(Debug, Default)]
pub struct JobBook {
    config: JobsConfig,
    jobs: BTreeMap<ContentId, JobRecord>,
    /// (submitter, nonce) of every accepted job, kept forever: replay protection.
    nonces: BTreeSet<(PublicKey, u64)>,
    dirty: BTreeSet<ContentId>,
}

impl JobBook {
    pub fn new(config: JobsConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Rebuilds the book from stored records (after a restart).
    pub fn restore(config: JobsConfig, records: Vec<JobRecord>) -> Self {
        let mut book = Self::new(config);
        for r in records {
            if let Some(spec) = r.spec() {
                book.nonces.insert((r.signed.signer(), spec.nonce));
            }
            book.jobs.insert(r.job_id, r);
        }
        book
    }

    pub fn get(&self, id: &ContentId) -> Option<&JobRecord> {
        self.jobs.get(id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    /// Records changed since the last call, for the node to persist.
    pub fn take_dirty(&mut self) -> Vec<ContentId> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Whether any open job lacks replicas: only then is the registry worth copying for
    /// the matcher.
    pub fn wants_workers(&self) -> bool {
        self.jobs
            .values()
            .any(|j| !j.state.is_final() && j.active().count() < j.replicas_needed())
    }

    /// Jobs each worker is running now (for the matcher's load).
    pub fn load_of(&self, worker: &PublicKey) -> u32 {
        self.jobs
            .values()
            .filter(|j| !j.state.is_final())
            .flat_map(|j| j.replicas.iter())
            .filter(|r| {
                r.worker == *worker
                    && matches!(r.state, ReplicaState::Offered | ReplicaState::Running)
            })
            .count() as u32
    }

    /// Checks and queues a signed job. The caller has already checked that its inputs are
    /// present; it must persist the record before answering.
    pub fn submit(&mut self, signed: Signed<JobSpec>, now_ms: u64) -> Result<ContentId, Refusal> {
        let spec = signed
            .verify()
            .map_err(|e| Refusal::Signature(e.to_string()))?;
        spec.validate(now_ms)
            .map_err(|e| Refusal::Invalid(e.to_string()))?;
        let job_id = signed.id();
        if self.jobs.contains_key(&job_id) {
            return Err(Refusal::Duplicate(job_id));
        }
        let key = (signed.signer(), spec.nonce);
        if self.nonces.contains(&key) {
            return Err(Refusal::Replayed { nonce: spec.nonce });
        }
        self.nonces.insert(key);
        self.jobs.insert(
            job_id,
            JobRecord {
                job_id,
                signed,
                state: JobState::Queued,
                waiting: None,
                replicas: Vec::new(),
                excluded: Vec::new(),
                output: None,
                receipt: None,
                submitted_ms: now_ms,
                updated_ms: now_ms,
            },
        );
        self.dirty.insert(job_id);
        Ok(job_id)
    }

    /// Advances every open job: deadlines, timeouts, matching. Call it often.
    pub fn tick(&mut self, identity: &Identity, now_ms: u64, pick: &mut Pick<'_>) -> Vec<Action> {
        let mut actions = Vec::new();
        let ids: Vec<ContentId> = self
            .jobs
            .values()
            .filter(|j| !j.state.is_final())
            .map(|j| j.job_id)
            .collect();
        for id in ids {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let Some(spec) = job.spec() else {
                fail(job, "the stored job no longer verifies", now_ms);
                self.dirty.insert(id);
                continue;
            };
            let mut changed = false;
            for r in job.replicas.iter_mut() {
                if matches!(r.state, ReplicaState::Offered | ReplicaState::Running)
                    && now_ms > r.deadline_ms
                {
                    r.state = ReplicaState::Dropped("missed its deadline".into());
                    job.excluded.push(r.worker);
                    changed = true;
                }
            }
            // Committed work is given a grace period to be revealed (the workers did it in
            // time); anything else ends at the deadline.
            let committed = job.state == JobState::Committed;
            let limit = if committed {
                spec.deadline_ms.saturating_add(self.config.reveal_grace_ms)
            } else {
                spec.deadline_ms
            };
            if now_ms > limit {
                let why = match (&job.waiting, committed) {
                    (_, true) => "the committed outputs were not revealed in time".into(),
                    (Some(w), false) => format!("deadline passed while waiting: {w}"),
                    (None, false) => "deadline passed before every replica committed".into(),
                };
                fail(job, &why, now_ms);
                self.dirty.insert(id);
                continue;
            }
            let missing = job.replicas_needed().saturating_sub(job.active().count());
            if missing > 0 {
                let mut exclude: Vec<PublicKey> = job.excluded.clone();
                exclude.extend(job.active().map(|r| r.worker));
                match pick(&spec, &exclude, missing) {
                    Err(why) => {
                        if job.waiting.as_ref() != Some(&why) {
                            job.waiting = Some(why);
                            changed = true;
                        }
                    }
                    Ok(workers) => {
                        job.waiting = None;
                        let per_replica = Amount(spec.max_fee.0 / job.replicas_needed() as u64);
                        for worker in workers.into_iter().take(missing) {
                            let index = job.replicas.len().min(u8::MAX as usize) as u8;
                            let deadline_ms = spec
                                .deadline_ms
                                .min(now_ms.saturating_add(self.config.assignment_timeout_ms));
                            let assignment = Assignment {
                                job_id: id,
                                job: job.signed.clone(),
                                worker,
                                replica: index,
                                fee_cap: per_replica,
                                deadline_ms,
                                issued_ms: now_ms,
                            };
                            let Ok(signed) = Signed::sign(identity, &assignment) else {
                                continue;
                            };
                            job.replicas.push(Replica {
                                index,
                                worker,
                                assignment_id: signed.id(),
                                assignment: signed.clone(),
                                deadline_ms,
                                state: ReplicaState::Offered,
                                progress: None,
                            });
                            actions.push(Action::Assign {
                                worker,
                                assignment: signed,
                            });
                        }
                        changed = true;
                    }
                }
            }
            let new_state = derive_state(job);
            if new_state != job.state {
                if new_state == JobState::Committed {
                    for r in job.active() {
                        actions.push(Action::Reveal {
                            worker: r.worker,
                            job_id: id,
                            assignment_id: r.assignment_id,
                        });
                    }
                }
                job.state = new_state;
                changed = true;
            }
            if changed {
                job.updated_ms = now_ms;
                self.dirty.insert(id);
            }
        }
        actions
    }

    /// Reveal requests still owed (after a restart, or when a worker did not answer).
    pub fn pending_reveals(&self) -> Vec<Action> {
        self.jobs
            .values()
            .filter(|j| j.state == JobState::Committed)
            .flat_map(|j| {
                j.replicas
                    .iter()
                    .filter(|r| matches!(r.state, ReplicaState::Committed(_)))
                    .map(|r| Action::Reveal {
                        worker: r.worker,
                        job_id: j.job_id,
                        assignment_id: r.assignment_id,
                    })
            })
            .collect()
    }

    fn replica_mut(
        &mut self,
        job_id: &ContentId,
        assignment_id: &ContentId,
    ) -> Result<(&mut JobRecord, usize), Refusal> {
        let job = self
            .jobs
            .get_mut(job_id)
            .ok_or(Refusal::UnknownJob(*job_id))?;
        let i = job
            .replicas
            .iter()
            .position(|r| r.assignment_id == *assignment_id)
            .ok_or_else(|| {
                Refusal::BadAnswer(format!("no assignment {assignment_id} in job {job_id}"))
            })?;
        Ok((job, i))
    }

    /// The worker's answer to an assignment: `Ok(())` accepted, `Err(reason)` declined or
    /// unreachable.
    pub fn on_assign_answer(
        &mut self,
        job_id: &ContentId,
        assignment_id: &ContentId,
        answer: Result<(), String>,
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
            Ok(()) => r.state = ReplicaState::Running,
            Err(why) => {
                r.state = ReplicaState::Dropped(format!("declined: {why}"));
                let w = r.worker;
                job.excluded.push(w);
            }
        }
        job.state = derive_state(job);
        job.updated_ms = now_ms;
        self.dirty.insert(*job_id);
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
    /// excluded; after more failures than the job could need (replicas + 2), the job fails
    /// with the last reason: one worker's word cannot fail a job (it may be lazy), but a
    /// job that nobody can run must not cycle until its deadline.
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
        r.state = ReplicaState::Dropped(format!("failed: {reason}"));
        let w = r.worker;
        job.excluded.push(w);
        let failures = job
            .replicas
            .iter()
            .filter(
                |r| matches!(&r.state, ReplicaState::Dropped(why) if why.starts_with("failed: ")),
            )
            .count();
        if failures >= job.replicas_needed() + 2 {
            fail(
                job,
                &format!("{failures} workers could not run it; the last said: {reason}"),
                now_ms,
            );
        } else {
            job.state = derive_state(job);
            job.updated_ms = now_ms;
        }
        self.dirty.insert(f.job_id);
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
    /// assignment is refused (equivocation).
    pub fn on_commit(&mut self, signed: Signed<Commitment>, now_ms: u64) -> Result<(), Refusal> {
        let c = signed
            .verify()
            .map_err(|e| Refusal::Signature(e.to_string()))?;
        let (job, i) = self.replica_mut(&c.job_id, &c.assignment)?;
        let r = &mut job.replicas[i];
        if r.worker != signed.signer() {
            return Err(Refusal::BadAnswer(
                "commitment signed by a worker other than the assigned one".into(),
            ));
        }
        match &r.state {
            ReplicaState::Offered | ReplicaState::Running => {}
            ReplicaState::Committed(prev)
            | ReplicaState::Revealed {
                commitment: prev, ..
            } => {
                return if prev.verify().ok().map(|p| p.output) == Some(c.output) {
                    Ok(())
                } else {
                    Err(Refusal::BadAnswer(
                        "a different commitment was already made for this assignment".into(),
                    ))
                };
            }
            ReplicaState::Dropped(why) => {
                return Err(Refusal::BadAnswer(format!(
                    "this replica no longer counts: {why}"
                )));
            }
        }
        r.state = ReplicaState::Committed(signed);
        job.updated_ms = now_ms;
        self.dirty.insert(c.job_id);
        Ok(())
    }

    /// A worker's reveal. Checked against its commitment and its assignment; when every
    /// replica has revealed, the job is settled.
    pub fn on_reveal(
        &mut self,
        identity: &Identity,
        job_id: &ContentId,
        assignment_id: &ContentId,
        reveal: Reveal,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let (job, i) = self.replica_mut(job_id, assignment_id)?;
        let r = &mut job.replicas[i];
        let ReplicaState::Committed(commitment) = &r.state else {
            return Ok(());
        };
        let committed = commitment
            .verify()
            .map_err(|e| Refusal::Signature(e.to_string()))?;
        let check = || -> Result<(), String> {
            if reveal.receipt.signer() != r.worker {
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
        };
        let verdict = check();
        let commitment = commitment.clone();
        if let Err(why) = verdict {
            r.state = ReplicaState::Dropped(format!("bad reveal: {why}"));
            let w = r.worker;
            job.excluded.push(w);
            job.state = derive_state(job);
            job.updated_ms = now_ms;
            self.dirty.insert(*job_id);
            return Err(Refusal::BadAnswer(why));
        }
        r.state = ReplicaState::Revealed { commitment, reveal };
        job.updated_ms = now_ms;
        settle_if_revealed(job, identity, now_ms);
        self.dirty.insert(*job_id);
        Ok(())
    }
}

fn fail(job: &mut JobRecord, why: &str, now_ms: u64) {
    job.state = JobState::Failed(why.to_string());
    job.updated_ms = now_ms;
}

/// The state implied by the replicas (never moves a final job).
fn derive_state(job: &JobRecord) -> JobState {
    if job.state.is_final() {
        return job.state.clone();
    }
    let needed = job.replicas_needed();
    let active: Vec<&Replica> = job.active().collect();
    if active.is_empty() {
        return JobState::Queued;
    }
    if active.len() >= needed && active.iter().all(|r| r.commitment().is_some()) {
        return JobState::Committed;
    }
    if active.iter().any(|r| r.state != ReplicaState::Offered) {
        JobState::Running
    } else {
        JobState::Assigned
    }
}

/// Done when every active replica revealed and they agree; the coordinator signs a receipt
/// embedding the job, the assignments and the workers' execution receipts.
fn settle_if_revealed(job: &mut JobRecord, identity: &Identity, now_ms: u64) {
    let active: Vec<&Replica> = job.active().collect();
    if active.len() < job.replicas_needed()
        || !active
            .iter()
            .all(|r| matches!(r.state, ReplicaState::Revealed { .. }))
    {
        return;
    }
    let mut outputs = Vec::new();
    let mut executions = Vec::new();
    let mut assignments = Vec::new();
    let mut first_output = None;
    for r in &active {
        if let ReplicaState::Revealed { commitment, reveal } = &r.state {
            if let Ok(c) = commitment.verify() {
                outputs.push(c.output);
            }
            executions.push(reveal.receipt.clone());
            assignments.push(r.assignment.clone());
            first_output.get_or_insert_with(|| reveal.output.clone());
        }
    }
    outputs.dedup();
    if outputs.len() != 1 {
        fail(
            job,
            &format!("the {} replicas disagree about the output", active.len()),
            now_ms,
        );
        return;
    }
    let receipt = SettlementReceipt {
        job_id: job.job_id,
        job: job.signed.clone(),
        assignments,
        output: outputs[0],
        executions,
        payouts: Vec::new(),
        slashes: Vec::new(),
        refund: Amount(0),
        settled_ms: now_ms,
    };
    match Signed::sign(identity, &receipt) {
        Ok(signed) => {
            job.receipt = Some(signed);
            job.output = first_output;
            job.state = JobState::Done;
            job.updated_ms = now_ms;
        }
        Err(e) => fail(job, &format!("cannot sign the receipt: {e}"), now_ms),
    }
}

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;

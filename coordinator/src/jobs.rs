//! The life of every job the coordinator accepted, as a plain state machine: the node
//! feeds it submissions, worker answers and the clock, and carries out the actions it
//! returns (send an assignment, ask for a reveal). Nothing here does I/O, so every rule
//! is tested without a network; the node persists the records it marks dirty.
//!
//! States: queued → assigned → running → committed → (verifying) → done | failed(reason).
//! A replica whose worker declines, vanishes or misses its deadline is dropped and its
//! slot goes back to the matcher with that worker excluded.
//!
//! A job whose inputs cannot work (a dataset that does not parse, model files that do not
//! load) fails at once with a full refund, rather than cycling through every worker until
//! its deadline, when distinct workers agree on it (see [`INPUT_QUORUM`]).
//!
//! The book also holds the [`Economy`]: a job's escrow is taken when it is accepted, its
//! slashes when they happen, and its payouts or refund when it ends, all in the same
//! state that is persisted with the job (see [`crate::verify`] for the verdicts).

use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};
use olc_protocol::messages::jobs_api::FailureKind;
use olc_protocol::{
    AccountRequest, AccountView, Amount, Assignment, Commitment, ContentId, Identity, JobFailure,
    JobKind, JobOutput, JobProgress, JobSpec, JobState, JobView, Message, PublicKey, ReplicaView,
    Reveal, SettlementReceipt, Signed, Slash, SlashReason, VerificationPolicy,
};

use crate::economy::{AccountError, Economy};
use crate::ledger::{LedgerConfig, Payee, Settled};
use crate::matcher::FeeLimit;
use crate::rules::{AuditKey, Policy};
use crate::verify;

/// Tunables of the job flow.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// How long a worker has from assignment to commitment (capped by the job's deadline).
    pub assignment_timeout_ms: u64,
    /// How long after the deadline committed outputs may still be revealed.
    pub reveal_grace_ms: u64,
    /// The policy of jobs that ask for the coordinator's default.
    pub default_verification: VerificationPolicy,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            assignment_timeout_ms: 10 * 60 * 1000,
            reveal_grace_ms: 60 * 1000,
            default_verification: VerificationPolicy::Sample {
                probability_ppm: 100_000,
            },
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
    /// Re-execute the job on the coordinator's own engine and report the output's
    /// commitment through [`JobBook::on_referee`].
    Referee { job_id: ContentId },
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
    /// Committed, then revealed something that does not back the commitment (another
    /// worker's output, a receipt signed by someone else). It no longer counts towards
    /// the job, but its commitment is still judged: if it differs from the right output,
    /// the worker is slashed with it as evidence.
    Unbacked {
        commitment: Signed<Commitment>,
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
    pub(crate) fn commitment(&self) -> Option<&Signed<Commitment>> {
        match &self.state {
            ReplicaState::Committed(c)
            | ReplicaState::Revealed { commitment: c, .. }
            | ReplicaState::Unbacked { commitment: c, .. } => Some(c),
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
                        ReplicaState::Unbacked { why, .. } => format!("bad reveal: {why}"),
                        ReplicaState::Dropped(why) => format!("dropped: {why}"),
                        ReplicaState::Failed { reason, .. } => {
                            format!("dropped: failed: {reason}")
                        }
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
    #[error("cannot escrow the job's max fee: {0}")]
    Funds(String),
    #[error(
        "max fee {max_fee} is below the {needed} credits this job needs at the cheapest \
         worker's price ({price} per 1000 tokens, {declared} tokens declared{})",
        if *replicas > 1 { format!(", for {replicas} replicas") } else { String::new() }
    )]
    FeeTooLow {
        max_fee: Amount,
        needed: Amount,
        price: Amount,
        declared: u64,
        replicas: usize,
    },
    #[error("{0}")]
    BadAnswer(String),
}

/// Distinct workers whose reports of the same input problem fail a job while other
/// workers could still try it. One worker's word never fails a job that others could run
/// (it may be lazy, or lying to make the submitter go away); three that agree, each
/// running the same deterministic engine on the same inputs, are not all wrong. With
/// fewer workers able to run the job, every one of them must have tried it and reported
/// the problem: two when there are two, the one when it is alone.
pub const INPUT_QUORUM: usize = 3;

/// What the book asks the matcher for one job.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest<'a> {
    pub spec: &'a JobSpec,
    /// Workers not to pick: those excluded from the job and those running it.
    pub exclude: &'a [PublicKey],
    /// How many more distinct workers the job needs.
    pub replicas: usize,
    /// The job's declared size and its fee per replica: no worker whose price for the
    /// size exceeds the fee may be picked. `None` when the size is not known (a fine-tune
    /// by epochs whose dataset is not here).
    pub fee: Option<FeeLimit>,
}

/// The matcher as the book sees it: distinct workers with their advertised prices
/// (credits per 1000 tokens), or why none fit.
pub type Pick<'a> = dyn FnMut(&PickRequest<'_>) -> Picked + 'a;

/// The matcher's answer: workers with their prices, or why none fit.
pub type Picked = Result<Vec<(PublicKey, u64)>, NoPick>;

/// Why no worker was picked, and whether asking again could ever help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPick {
    /// In words, for the submitter: shown as the job's `waiting`.
    pub reason: String,
    /// Workers that could run the job (eligible, hardware and price fit, busy or not)
    /// and were not excluded from it: 0 means nobody is left to ask.
    pub untried: usize,
}

/// The size lookup the book prices jobs with: a blob's length in bytes, if the
/// coordinator has it (a fine-tune by epochs is sized by its dataset).
pub type BlobLen<'a> = dyn Fn(&ContentId) -> Option<u64> + 'a;

/// What the network charges now, for refusing at submission a fee no online worker would
/// take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quote {
    /// The lowest price per 1000 tokens any online worker asks; `None` when no worker is
    /// online (the job is then accepted and waits).
    pub cheapest_price: Option<Amount>,
    /// The size of the job's dataset, for a fine-tune by epochs.
    pub dataset_bytes: Option<u64>,
}

/// What changed since the node last persisted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    pub jobs: Vec<ContentId>,
    pub economy: bool,
}

#[derive(Debug, Default)]
pub struct JobBook {
    config: JobsConfig,
    policy: Policy,
    economy: Economy,
    jobs: BTreeMap<ContentId, JobRecord>,
    /// (submitter, nonce) of every accepted job, kept forever: replay protection.
    nonces: BTreeSet<(PublicKey, u64)>,
    dirty: BTreeSet<ContentId>,
    economy_dirty: bool,
    /// Derived from the coordinator's identity on first use.
    audit_key: Option<AuditKey>,
}

impl JobBook {
    pub fn new(config: JobsConfig, policy: Policy, ledger: LedgerConfig) -> Self {
        Self {
            config,
            policy,
            economy: Economy::new(ledger),
            ..Self::default()
        }
    }

    /// Rebuilds the book from stored records and economy (after a restart).
    pub fn restore(
        config: JobsConfig,
        policy: Policy,
        ledger: LedgerConfig,
        economy: Option<Economy>,
        records: Vec<JobRecord>,
    ) -> Self {
        let mut book = Self::new(config, policy, ledger);
        if let Some(mut economy) = economy {
            economy.ledger_mut().set_config(ledger);
            book.economy = economy;
        }
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

    /// What changed since the last call, for the node to persist in one transaction.
    pub fn take_dirty(&mut self) -> Dirty {
        Dirty {
            jobs: std::mem::take(&mut self.dirty).into_iter().collect(),
            economy: std::mem::take(&mut self.economy_dirty),
        }
    }

    pub fn economy(&self) -> &Economy {
        &self.economy
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Why `worker` may not be matched now (too little stake, jailed), if it may not.
    pub fn ineligible(&self, worker: &PublicKey, now_ms: u64) -> Option<String> {
        self.economy.ineligible(&self.policy, worker, now_ms)
    }

    /// Deposit, stake or unstake, signed by the account's own key.
    pub fn account_request(
        &mut self,
        signed: &Signed<AccountRequest>,
        faucet: bool,
        now_ms: u64,
    ) -> Result<AccountView, AccountError> {
        self.economy.account_request(signed, faucet, now_ms)?;
        self.economy_dirty = true;
        Ok(self.economy.account_view(signed.signer(), now_ms))
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

    /// [`JobBook::submit_quoted`] with no price to compare the fee with.
    pub fn submit(
        &mut self,
        signed: Signed<JobSpec>,
        attribution: Vec<(PublicKey, u64)>,
        now_ms: u64,
    ) -> Result<ContentId, Refusal> {
        self.submit_quoted(signed, attribution, Quote::default(), now_ms)
    }

    /// Checks a signed job, escrows its max fee from the submitter's balance, and queues
    /// it. The caller has already checked that its inputs are present and read the
    /// `attribution` of the adapter it uses; it must persist before answering.
    ///
    /// A max fee that cannot pay even the cheapest online worker for the job's declared
    /// size, on every replica, is refused with the sum needed: such a job could only wait
    /// for its deadline with the submitter's credits locked.
    pub fn submit_quoted(
        &mut self,
        signed: Signed<JobSpec>,
        attribution: Vec<(PublicKey, u64)>,
        quote: Quote,
        now_ms: u64,
    ) -> Result<ContentId, Refusal> {
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
        let verification = match spec.verification {
            VerificationPolicy::Default => self.config.default_verification,
            chosen => chosen,
        };
        if let (Some(price), Some(declared)) = (
            quote.cheapest_price,
            spec.declared_tokens(quote.dataset_bytes),
        ) {
            let replicas = usize::from(verification.initial_replicas()).max(1);
            let needed = Amount::price_of(declared, price)
                .checked_mul(replicas as u64)
                .unwrap_or(Amount(u64::MAX));
            if spec.max_fee < needed {
                return Err(Refusal::FeeTooLow {
                    max_fee: spec.max_fee,
                    needed,
                    price,
                    declared,
                    replicas,
                });
            }
        }
        self.economy
            .ledger_mut()
            .escrow(job_id, signed.signer(), spec.max_fee.0)
            .map_err(|e| Refusal::Funds(e.to_string()))?;
        self.economy_dirty = true;
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
                verification,
                attribution,
                slashes: Vec::new(),
                referee: None,
                audited: None,
                refund: None,
                submitted_ms: now_ms,
                updated_ms: now_ms,
            },
        );
        self.dirty.insert(job_id);
        Ok(job_id)
    }

    /// [`JobBook::tick_sized`] knowing no blob's size.
    pub fn tick(&mut self, identity: &Identity, now_ms: u64, pick: &mut Pick<'_>) -> Vec<Action> {
        self.tick_sized(identity, now_ms, pick, &|_| None)
    }

    /// Advances every open job: deadlines, timeouts, matching, and settles any job that
    /// ended without its escrow closing. Call it often. `blob_len` sizes the datasets of
    /// fine-tunes by epochs, whose declared size depends on them.
    pub fn tick_sized(
        &mut self,
        identity: &Identity,
        now_ms: u64,
        pick: &mut Pick<'_>,
        blob_len: &BlobLen<'_>,
    ) -> Vec<Action> {
        match self.economy.ledger_mut().release_unbonded(now_ms) {
            Ok(0) => {}
            Ok(_) => self.economy_dirty = true,
            Err(e) => tracing::error!(error = %e, "cannot release unbonded stake"),
        }
        let mut actions = Vec::new();
        let ids: Vec<ContentId> = self
            .jobs
            .values()
            .filter(|j| !j.state.is_final() || !self.economy.ledger().is_settled(j.job_id))
            .map(|j| j.job_id)
            .collect();
        for id in ids {
            let changed = self.tick_job(&id, identity, now_ms, pick, blob_len, &mut actions);
            if changed {
                self.touch(&id, now_ms);
            }
        }
        actions
    }

    fn tick_job(
        &mut self,
        id: &ContentId,
        identity: &Identity,
        now_ms: u64,
        pick: &mut Pick<'_>,
        blob_len: &BlobLen<'_>,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some(job) = self.jobs.get_mut(id) else {
            return false;
        };
        if job.state.is_final() {
            // Ended without its escrow closing (a store written before settlement was
            // part of every transition): touching it settles it now.
            return self.economy.ledger().escrowed(*id).is_some();
        }
        let Some(spec) = job.spec() else {
            fail(job, "the stored job no longer verifies");
            return true;
        };
        let mut changed = false;
        for i in 0..job.replicas.len() {
            let r = &mut job.replicas[i];
            let late = now_ms > r.deadline_ms;
            match r.state {
                // It never said yes: nothing was promised, nothing is penalised.
                ReplicaState::Offered if late => {
                    r.state = ReplicaState::Dropped("never answered the assignment".into());
                }
                ReplicaState::Running if late => {
                    r.state = ReplicaState::Dropped("missed its deadline".into());
                    let worker = r.worker;
                    let slash = self.economy.slash(
                        &self.policy,
                        worker,
                        SlashReason::MissedDeadline,
                        &[],
                        Vec::new(),
                        now_ms,
                    );
                    job.slashes.push(slash);
                    self.economy_dirty = true;
                }
                _ => continue,
            }
            let worker = job.replicas[i].worker;
            job.excluded.push(worker);
            changed = true;
        }
        // Committed work is given a grace period to be revealed and verified (the workers
        // did it in time); anything else ends at the deadline.
        let committed = matches!(job.state, JobState::Committed | JobState::Verifying);
        let limit = if committed {
            spec.deadline_ms.saturating_add(self.config.reveal_grace_ms)
        } else {
            spec.deadline_ms
        };
        if now_ms > limit {
            let why = match (&job.waiting, committed) {
                (_, true) => "the committed outputs were not revealed and verified in time".into(),
                (Some(w), false) => format!("deadline passed while waiting: {w}"),
                (None, false) => "deadline passed before every replica committed".into(),
            };
            fail(job, &why);
            return true;
        }
        let missing = job.replicas_needed().saturating_sub(job.active().count());
        if missing > 0 && job.state != JobState::Verifying {
            if let Some(verdict) = input_verdict(job).filter(|v| v.workers >= INPUT_QUORUM) {
                fail(job, &verdict.describe());
                return true;
            }
            let mut exclude: Vec<PublicKey> = job.excluded.clone();
            exclude.extend(job.active().map(|r| r.worker));
            let per_replica = Amount(spec.max_fee.0 / job.replicas_needed() as u64);
            let dataset_bytes = match &spec.kind {
                JobKind::Finetune(j) if spec.declared_size_needs_dataset() => blob_len(&j.dataset),
                _ => None,
            };
            let fee = spec
                .declared_tokens(dataset_bytes)
                .map(|declared_tokens| FeeLimit {
                    declared_tokens,
                    fee_per_replica: per_replica,
                });
            let request = PickRequest {
                spec: &spec,
                exclude: &exclude,
                replicas: missing,
                fee,
            };
            match pick(&request) {
                Err(NoPick { reason, untried }) => {
                    // Nobody left to ask, nobody still running it, and the workers that did
                    // say the input is bad: waiting for the deadline would change nothing.
                    if untried < missing
                        && job.active().count() == 0
                        && let Some(verdict) = input_verdict(job)
                    {
                        fail(job, &verdict.describe());
                        return true;
                    }
                    if job.waiting.as_ref() != Some(&reason) {
                        job.waiting = Some(reason);
                        changed = true;
                    }
                }
                Ok(workers) => {
                    job.waiting = None;
                    for (worker, price) in workers.into_iter().take(missing) {
                        // The most this worker is paid: its price for the declared size, so a
                        // receipt metering more tokens than the job can use is paid no more.
                        let fee_cap = match fee {
                            Some(f) => per_replica.min(f.price_at(Amount(price))),
                            None => per_replica,
                        };
                        let index = job.replicas.len().min(u8::MAX as usize) as u8;
                        let deadline_ms = spec
                            .deadline_ms
                            .min(now_ms.saturating_add(self.config.assignment_timeout_ms));
                        let assignment = Assignment {
                            job_id: *id,
                            job: job.signed.clone(),
                            worker,
                            replica: index,
                            fee_cap,
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
                            price_per_ktoken: price,
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
                        job_id: *id,
                        assignment_id: r.assignment_id,
                    });
                }
            }
            job.state = new_state;
            changed = true;
        }
        changed
    }

    /// Marks a job changed: persisted at the next [`JobBook::take_dirty`], and, if it has
    /// ended, its escrow closed (paid out as its receipt says, or refunded whole) in the
    /// same state.
    fn touch(&mut self, id: &ContentId, now_ms: u64) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        job.updated_ms = now_ms;
        self.dirty.insert(*id);
        if job.state.is_final()
            && !self.economy.ledger().is_settled(*id)
            && self.economy.ledger().escrowed(*id).is_some()
        {
            let payouts: Vec<(Payee, u64)> = job
                .receipt
                .as_ref()
                .and_then(|r| r.verify().ok())
                .map(|r| {
                    r.payouts
                        .iter()
                        .map(|p| (verify::payee_of(p), p.amount.0))
                        .collect()
                })
                .unwrap_or_default();
            match self.economy.ledger_mut().settle(*id, &payouts) {
                Ok(Settled::Done { refund }) => job.refund = Some(refund),
                Ok(Settled::Already) => {}
                Err(e) => tracing::error!(job = %id, error = %e, "cannot settle the job"),
            }
            self.economy_dirty = true;
        }
    }

    /// Assignments whose worker has not answered yet: sent again after a restart (the
    /// answer may have been lost with the old process), and harmless to repeat, since a
    /// worker acknowledges an assignment it already took without running it twice.
    pub fn pending_assignments(&self) -> Vec<Action> {
        self.jobs
            .values()
            .filter(|j| !j.state.is_final())
            .flat_map(|j| {
                j.replicas
                    .iter()
                    .filter(|r| r.state == ReplicaState::Offered)
                    .map(|r| Action::Assign {
                        worker: r.worker,
                        assignment: r.assignment.clone(),
                    })
            })
            .collect()
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
            Ok(()) => r.state = ReplicaState::Running,
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
        let c = signed
            .verify()
            .map_err(|e| Refusal::Signature(e.to_string()))?;
        let (job, i) = replica_in(&mut self.jobs, &c.job_id, &c.assignment)?;
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
            }
            | ReplicaState::Unbacked {
                commitment: prev, ..
            } => {
                if prev.verify().ok().map(|p| p.output) == Some(c.output) {
                    return Ok(());
                }
                if job.state.is_final() {
                    return Err(Refusal::BadAnswer(
                        "a different commitment for a job that has ended".into(),
                    ));
                }
                let evidence = vec![prev.clone(), signed];
                let worker = r.worker;
                r.state = ReplicaState::Dropped("slashed: equivocation".into());
                job.excluded.push(worker);
                let slash = self.economy.slash(
                    &self.policy,
                    worker,
                    SlashReason::Equivocation,
                    &[],
                    evidence,
                    now_ms,
                );
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
        r.state = ReplicaState::Committed(signed);
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
        let committed = commitment
            .verify()
            .map_err(|e| Refusal::Signature(e.to_string()))?;
        let verdict = verify::check_reveal(r.worker, job_id, assignment_id, &committed, &reveal);
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
fn replica_in<'a>(
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

/// The input problem the most distinct workers blamed for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InputVerdict {
    kind: FailureKind,
    /// The first report of it, in the worker's words.
    reason: String,
    /// Distinct workers that reported it.
    workers: usize,
}

impl InputVerdict {
    fn describe(&self) -> String {
        let workers = if self.workers == 1 {
            "1 worker".to_string()
        } else {
            format!("{} workers", self.workers)
        };
        format!(
            "{} cannot be used: {} (reported by {workers})",
            self.kind.subject(),
            self.reason
        )
    }
}

/// Groups the job's input failures by kind and returns the kind most distinct workers
/// reported (the earliest reported on a tie), if any did.
fn input_verdict(job: &JobRecord) -> Option<InputVerdict> {
    let mut by_kind: Vec<(FailureKind, &str, BTreeSet<PublicKey>)> = Vec::new();
    for r in &job.replicas {
        let ReplicaState::Failed { kind, reason } = &r.state else {
            continue;
        };
        if !kind.is_input() {
            continue;
        }
        match by_kind.iter_mut().find(|(k, _, _)| k == kind) {
            Some((_, _, workers)) => {
                workers.insert(r.worker);
            }
            None => by_kind.push((*kind, reason, BTreeSet::from([r.worker]))),
        }
    }
    let mut best: Option<&(FailureKind, &str, BTreeSet<PublicKey>)> = None;
    for entry in &by_kind {
        if best.is_none_or(|b| entry.2.len() > b.2.len()) {
            best = Some(entry);
        }
    }
    best.map(|(kind, reason, workers)| InputVerdict {
        kind: *kind,
        reason: (*reason).to_string(),
        workers: workers.len(),
    })
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
    if active.len() >= needed && active.iter().all(|r| r.commitment().is_some()) {
        return JobState::Committed;
    }
    if active.iter().any(|r| r.state != ReplicaState::Offered) {
        JobState::Running
    } else {
        JobState::Assigned
    }
}

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;

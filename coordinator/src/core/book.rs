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
//! state that is persisted with the job (see [`crate::core::verify`] for the verdicts).

use std::collections::{BTreeMap, BTreeSet};

use olc_protocol::{
    AccountRequest, AccountView, Amount, Assignment, ContentId, Identity, JobKind, JobSpec,
    JobState, PublicKey, Signed, SlashReason, VerificationPolicy,
};

use crate::core::action::Action;
use crate::core::economy::{AccountError, Economy};
use crate::core::ledger::{LedgerConfig, Payee, Settled};
use crate::core::matcher::FeeLimit;
use crate::core::notice::Notice;
use crate::core::record::{JobRecord, Replica, ReplicaState, derive_state, fail};
use crate::core::rules::{AuditKey, Policy};
use crate::core::verified::Verified;
use crate::core::verify;

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

/// A worker's running jobs by the slots they take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub jobs: u32,
    pub streams: u32,
}

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
    /// Every job's spec, its signature checked once when the job was accepted or restored:
    /// ticks read these instead of verifying the stored envelope again. A stored job
    /// without one no longer verifies.
    specs: BTreeMap<ContentId, Verified<JobSpec>>,
    dirty: BTreeSet<ContentId>,
    economy_dirty: bool,
    /// Whether anything changed since the last matching pass (see
    /// [`JobBook::take_match_due`]).
    match_due: bool,
    /// What the node should log, drained by [`JobBook::take_notices`].
    notices: Vec<Notice>,
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
            if let Ok(spec) = Verified::check(r.signed.clone()) {
                book.nonces.insert((spec.signer(), spec.body().nonce));
                book.specs.insert(r.job_id, spec);
            }
            book.jobs.insert(r.job_id, r);
        }
        // Queued jobs from before the restart wait for a pass like new ones.
        book.match_due = true;
        book
    }

    pub fn get(&self, id: &ContentId) -> Option<&JobRecord> {
        self.jobs.get(id)
    }

    /// A job's spec as verified when it was accepted; `None` for an unknown job or a stored
    /// one that no longer verifies.
    pub fn spec(&self, id: &ContentId) -> Option<&JobSpec> {
        self.specs.get(id).map(Verified::body)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    /// What changed since the last call, for the node to persist in one transaction.
    pub fn take_dirty(&mut self) -> Dirty {
        let dirty = Dirty {
            jobs: std::mem::take(&mut self.dirty).into_iter().collect(),
            economy: std::mem::take(&mut self.economy_dirty),
        };
        // Persisting a change must not hide it from the next matching pass.
        self.match_due |= !dirty.jobs.is_empty() || dirty.economy;
        dirty
    }

    /// Whether a full matching pass is due, and clears it: something changed since the
    /// last call (a submission, a worker's answer or failure, a commitment, a stake, a job
    /// the clock moved). Reading the book (a status request) changes nothing, so a node
    /// that asks after every request only matches when there is something new to match.
    /// Timers (deadlines, adverts, back-offs) are the node's to force a pass for.
    pub fn take_match_due(&mut self) -> bool {
        let due = self.match_due || !self.dirty.is_empty() || self.economy_dirty;
        self.match_due = false;
        due
    }

    /// What happened since the last call that an operator should read in the log.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
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

    /// Jobs each worker is running now (for the matcher's load): fine-tunes and
    /// inference jobs apart, since they take different slots.
    pub fn load_of(&self, worker: &PublicKey) -> Load {
        let mut load = Load::default();
        for j in self.jobs.values().filter(|j| !j.state.is_final()) {
            let running = j
                .replicas
                .iter()
                .filter(|r| {
                    r.worker == *worker
                        && matches!(r.state, ReplicaState::Offered | ReplicaState::Running)
                })
                .count() as u32;
            if running == 0 {
                continue;
            }
            match self.spec(&j.job_id).map(|s| &s.kind) {
                Some(JobKind::Inference(_)) => load.streams += running,
                _ => load.jobs += running,
            }
        }
        load
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
        let verified = Verified::check(signed).map_err(|e| Refusal::Signature(e.to_string()))?;
        self.submit_verified(verified, attribution, quote, now_ms)
    }

    /// [`JobBook::submit_quoted`] for a job whose signature the caller already checked.
    pub fn submit_verified(
        &mut self,
        verified: Verified<JobSpec>,
        attribution: Vec<(PublicKey, u64)>,
        quote: Quote,
        now_ms: u64,
    ) -> Result<ContentId, Refusal> {
        let signed = verified.signed().clone();
        let spec = verified.body();
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
        self.specs.insert(job_id, verified);
        self.jobs.insert(
            job_id,
            JobRecord {
                job_id,
                signed,
                state: JobState::Queued,
                waiting: None,
                waiting_busy: false,
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
                cut: None,
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
            Err(e) => self.notices.push(Notice::UnbondedNotReleased {
                error: e.to_string(),
            }),
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
        let Some(spec) = self.specs.get(id).map(|v| v.body().clone()) else {
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
                    let (slash, notice) = self.economy.slash(
                        &self.policy,
                        worker,
                        SlashReason::MissedDeadline,
                        &[],
                        Vec::new(),
                        now_ms,
                    );
                    self.notices.extend(notice);
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
                    let busy = untried >= missing;
                    if job.waiting.as_ref() != Some(&reason) || job.waiting_busy != busy {
                        job.waiting = Some(reason);
                        job.waiting_busy = busy;
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
                Err(e) => self.notices.push(Notice::NotSettled {
                    job: *id,
                    error: e.to_string(),
                }),
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
}

mod answers;
mod cancel;
mod quorum;

pub use cancel::{Cancelled, CutAnswer};

pub use quorum::INPUT_QUORUM;
use quorum::input_verdict;

#[cfg(test)]
mod tests;

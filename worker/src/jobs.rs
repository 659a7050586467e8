//! Job intake and execution on the worker: check an assignment, fetch its inputs into the
//! cache, run it on a blocking thread, upload what it produced, commit, and keep the
//! reveal until the coordinator asks for it.
//!
//! The swarm loop only checks assignments and answers reveals (both synchronous and
//! cheap); everything slow runs in a task per job that talks to the coordinator through
//! its own connection, re-dialed as needed, so a coordinator restart mid-job costs a
//! retry, not the job.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use futures::future::BoxFuture;
use olc_content::BlobStore;
use olc_net::{Link, Outbound, unix_ms};
use olc_protocol::messages::jobs_api::FailureKind;

use crate::advert::Holding;
use olc_protocol::{
    Amount, Assignment, BlobUpload, Commitment, ContentId, Cut, ExecutionReceipt, Identity,
    JobFailure, JobKind, JobOutput, JobProgress, JobSpec, PeerId, Reveal, RpcRequest, RpcResponse,
    Signed, TokenChunk,
};

use olc_content::{self as content, Fetch};
use olc_exec::{self as executor, ExecOptions, ExecOutput, JobInputs, Runner};

/// How long a job waits before asking its coordinator again after a failed request.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Progress reports are sent at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Deliberately wrong behaviour, for the devnet and adversarial tests of the verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Conduct {
    #[default]
    Honest,
    /// Computes the job, then commits to a different output.
    WrongOutput,
    /// Skips the work and commits to garbage.
    Lazy,
}

/// Why a worker turned an assignment down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decline {
    /// Every job slot is taken: worth offering again later.
    Busy(String),
    /// Not for this worker, or not valid: offering it again changes nothing.
    Refused(String),
}

impl std::fmt::Display for Decline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy(why) | Self::Refused(why) => f.write_str(why),
        }
    }
}

/// Why a run ended without a commitment, and whose fault that is (told to the coordinator
/// in the [`JobFailure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunError {
    reason: String,
    kind: FailureKind,
}

/// Failures outside the executor (fetching, uploading, reaching the coordinator) are the
/// worker's: another worker may do better.
impl From<String> for RunError {
    fn from(reason: String) -> Self {
        Self {
            reason,
            kind: FailureKind::Worker,
        }
    }
}

impl From<executor::ExecError> for RunError {
    fn from(e: executor::ExecError) -> Self {
        Self {
            kind: e.kind(),
            reason: e.to_string(),
        }
    }
}

/// Everything a job task needs, shared by all of them.
#[derive(Debug)]
pub struct JobRunner {
    pub(crate) identity: Identity,
    pub(crate) store: Arc<BlobStore>,
    pub(crate) dirs_root: PathBuf,
    pub(crate) work_root: PathBuf,
    pub(crate) threads: usize,
    /// Requests to coordinators go out through the worker's event loop, on its own
    /// connection and identity.
    pub(crate) outbound: mpsc::Sender<Outbound>,
    pub(crate) max_jobs: u32,
    /// Inference jobs at once: they share forward passes on the resident models, so they
    /// have slots of their own instead of taking a fine-tune's.
    pub(crate) max_streams: u32,
    pub(crate) conduct: Conduct,
    /// Where jobs execute (in this process today, with its resident models).
    executor: Arc<dyn Runner>,
    /// Credits per 1000 tokens this worker advertises: an assignment whose fee cap cannot
    /// pay it for the job's declared size is declined. 0 (the default) accepts any fee.
    price_per_ktoken: AtomicU64,
    active: AtomicU32,
    streams: AtomicU32,
    /// Set when the worker stops: running jobs end at their next step instead of
    /// finishing work nobody will collect.
    stopping: Arc<AtomicBool>,
    reveals: Mutex<HashMap<ContentId, (PeerId, Reveal)>>,
    /// The token limit of each assignment not yet committed: lowered by a coordinator's
    /// cut while the run goes on.
    limits: Mutex<HashMap<ContentId, Arc<AtomicU32>>>,
    /// Every assignment taken, so one sent again (a coordinator that restarted before it
    /// heard our answer) is acknowledged, not run twice.
    taken: Mutex<BTreeSet<ContentId>>,
    /// Manifests materialized here, advertised as cached.
    cached: Mutex<BTreeSet<ContentId>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl JobRunner {
    #[allow(clippy::too_many_arguments)] // built once, from the worker's config
    pub fn new(
        identity: Identity,
        store: Arc<BlobStore>,
        dirs_root: PathBuf,
        work_root: PathBuf,
        threads: usize,
        outbound: mpsc::Sender<Outbound>,
        max_jobs: u32,
        max_streams: u32,
        conduct: Conduct,
        executor: Arc<dyn Runner>,
    ) -> Self {
        Self {
            identity,
            store,
            dirs_root,
            work_root,
            threads: threads.max(1),
            outbound,
            max_jobs,
            max_streams,
            conduct,
            executor,
            price_per_ktoken: AtomicU64::new(0),
            active: AtomicU32::new(0),
            streams: AtomicU32::new(0),
            stopping: Arc::new(AtomicBool::new(false)),
            reveals: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            taken: Mutex::new(BTreeSet::new()),
            cached: Mutex::new(BTreeSet::new()),
        }
    }

    /// The price this worker advertises, which assignments must be able to pay.
    pub fn set_price_per_ktoken(&self, price: Amount) {
        self.price_per_ktoken.store(price.0, Ordering::Relaxed);
    }

    pub fn price_per_ktoken(&self) -> Amount {
        Amount(self.price_per_ktoken.load(Ordering::Relaxed))
    }

    /// Refuses a fee cap that cannot pay our price for `declared` tokens: the coordinator
    /// caps the payout at it, so the work would be paid less than we asked.
    fn check_fee(&self, fee_cap: Amount, declared: u64) -> Result<(), String> {
        let price = self.price_per_ktoken();
        let needed = Amount::price_of(declared, price);
        if fee_cap < needed {
            return Err(format!(
                "the fee cap of {fee_cap} credits cannot pay this worker's price for the \
                 declared work: {declared} tokens at {price} per 1000 tokens need {needed}"
            ));
        }
        Ok(())
    }

    /// Cancels every running job (their fine-tunes stop at the next step).
    pub fn cancel_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn active_jobs(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn active_streams(&self) -> u32 {
        self.streams.load(Ordering::Relaxed)
    }

    /// Models the executor loaded from disk so far.
    pub fn model_loads(&self) -> u64 {
        self.executor.model_loads()
    }

    /// What the worker holds now, for its advert.
    pub fn holding(&self) -> Holding {
        Holding {
            active_jobs: self.active_jobs(),
            active_streams: self.active_streams(),
            cached: lock(&self.cached).iter().copied().collect(),
            resident: self.executor.resident(),
            resident_adapters: u32::try_from(self.executor.resident_adapters()).unwrap_or(u32::MAX),
        }
    }

    /// The slot counter and limit a job of this kind takes.
    fn slots_for(&self, spec: &JobSpec) -> (&AtomicU32, u32, &'static str) {
        match spec.kind {
            JobKind::Inference(_) => (&self.streams, self.max_streams, "inference"),
            JobKind::Finetune(_) => (&self.active, self.max_jobs, "fine-tune"),
        }
    }

    /// Checks an assignment from `from`: both signatures, that it is for us, that the
    /// job is valid and not past its deadline, and that we have a free slot. Takes the
    /// slot if so. `Ok(None)`: this very assignment was taken before; nothing to start.
    pub fn accept(
        &self,
        signed: &Signed<Assignment>,
        from: PeerId,
    ) -> Result<Option<(Assignment, JobSpec)>, Decline> {
        let checked = self.check(signed, from).map_err(Decline::Refused)?;
        let mut taken_ids = lock(&self.taken);
        if taken_ids.contains(&signed.id()) {
            return Ok(None);
        }
        let (slots, max, kind) = self.slots_for(&checked.1);
        let taken = slots.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < max).then_some(n + 1)
        });
        if taken.is_err() {
            return Err(Decline::Busy(format!(
                "busy: {max} of {max} {kind} slots in use"
            )));
        }
        taken_ids.insert(signed.id());
        Ok(Some(checked))
    }

    fn check(
        &self,
        signed: &Signed<Assignment>,
        from: PeerId,
    ) -> Result<(Assignment, JobSpec), String> {
        let body = signed
            .verify()
            .map_err(|e| format!("assignment signature: {e}"))?;
        if signed.signer().to_peer_id().ok() != Some(from) {
            return Err("the assignment is not signed by the peer that sent it".into());
        }
        if body.worker != self.identity.public_key() {
            return Err("the assignment is for another worker".into());
        }
        let spec = body
            .job
            .verify()
            .map_err(|e| format!("job signature: {e}"))?;
        if body.job.id() != body.job_id {
            return Err("the assignment names another job than the one it carries".into());
        }
        let now = unix_ms();
        spec.validate(now)
            .map_err(|e| format!("invalid job: {e}"))?;
        if body.deadline_ms <= now {
            return Err("the assignment's deadline has passed".into());
        }
        // A fine-tune by epochs is sized by its dataset, checked once it is fetched.
        if let Some(declared) = spec.declared_tokens(None) {
            self.check_fee(body.fee_cap, declared)?;
        }
        Ok((body, spec))
    }

    /// The reveal for an assignment, once committed; only for the coordinator that
    /// assigned it.
    pub fn reveal(&self, assignment: &ContentId, from: PeerId) -> Option<Reveal> {
        lock(&self.reveals)
            .get(assignment)
            .filter(|(p, _)| *p == from)
            .map(|(_, r)| r.clone())
    }

    /// A coordinator's cut: the submitter cancelled after `keep` tokens. A run still going
    /// stops there (and commits to those); a run already over has its output cut now and
    /// its commitment made again, which is the answer. Only for the coordinator that
    /// assigned it. The reveals' lock is held throughout, as the run holds it from reading
    /// its limit to keeping its reveal, so a cut is never missed between the two.
    pub fn cut(&self, cut: Cut, from: PeerId) -> RpcResponse {
        let mut reveals = lock(&self.reveals);
        if let Some((coordinator, reveal)) = reveals.get_mut(&cut.assignment) {
            if *coordinator != from {
                return RpcResponse::Refused("not the coordinator of this assignment".into());
            }
            return match self.cut_revealed(reveal, cut.keep) {
                Ok(Some(c)) => RpcResponse::Recommitted(c),
                Ok(None) => RpcResponse::Ok,
                Err(why) => RpcResponse::Refused(why),
            };
        }
        match lock(&self.limits).get(&cut.assignment) {
            Some(limit) => {
                limit.fetch_min(cut.keep, Ordering::SeqCst);
                RpcResponse::Ok
            }
            None => RpcResponse::Refused(format!("no run of {} here", cut.assignment)),
        }
    }

    /// Cuts an inference output to `keep` tokens, its text decoded again; whether it was
    /// longer.
    fn cut_output(
        &self,
        model: ContentId,
        output: &mut JobOutput,
        keep: u32,
    ) -> Result<bool, String> {
        let JobOutput::Inference { tokens, text } = output else {
            return Ok(false);
        };
        if tokens.len() <= keep as usize {
            return Ok(false);
        }
        tokens.truncate(keep as usize);
        *text = self
            .executor
            .decode(model, tokens)
            .ok_or("the run is over and its model is no longer in memory")?
            .map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Cuts a finished inference's kept output to `keep` tokens and signs its receipt and
    /// commitment again; `None` if it was no longer than that.
    fn cut_revealed(
        &self,
        reveal: &mut Reveal,
        keep: u32,
    ) -> Result<Option<Signed<Commitment>>, String> {
        let receipt = reveal.receipt.verify().map_err(|e| e.to_string())?;
        let mut output = reveal.output.clone();
        let before = generated(&output);
        if !self.cut_output(receipt.model, &mut output, keep)? {
            return Ok(None);
        }
        let commitment = output_commitment(&output);
        let receipt = ExecutionReceipt {
            output: commitment,
            metrics: cut_metrics(receipt.metrics, before, keep),
            ..receipt
        };
        let c = Commitment {
            job_id: receipt.job_id,
            assignment: receipt.assignment,
            output: commitment,
        };
        let signed = Signed::sign(&self.identity, &c).map_err(|e| e.to_string())?;
        reveal.receipt = Signed::sign(&self.identity, &receipt).map_err(|e| e.to_string())?;
        reveal.output = output;
        Ok(Some(signed))
    }

    /// Runs an accepted assignment to its commitment in the background.
    pub fn spawn(
        self: &Arc<Self>,
        signed: Signed<Assignment>,
        body: Assignment,
        spec: JobSpec,
        coordinator: PeerId,
    ) {
        let runner = self.clone();
        lock(&self.limits).insert(signed.id(), Arc::new(AtomicU32::new(u32::MAX)));
        tokio::spawn(async move {
            let job = body.job_id;
            let courier = Courier {
                link: Link::new(coordinator, runner.outbound.clone()),
                deadline_ms: body.deadline_ms,
            };
            match runner
                .run(&courier, &signed, &body, &spec, coordinator)
                .await
            {
                Ok(()) => tracing::info!(%job, "job committed"),
                Err(RunError { reason, kind }) => {
                    tracing::warn!(%job, %reason, ?kind, "job failed");
                    // Tell the coordinator, so the job is reassigned now, not at its deadline
                    // (or, if its inputs are to blame, failed for good).
                    let failure = JobFailure {
                        job_id: job,
                        assignment: signed.id(),
                        reason,
                        kind,
                    };
                    if let Ok(f) = Signed::sign(&runner.identity, &failure) {
                        let _ = courier.once(RpcRequest::Failed(f)).await;
                    }
                }
            }
            lock(&runner.limits).remove(&signed.id());
            runner.slots_for(&spec).0.fetch_sub(1, Ordering::SeqCst);
        });
    }

    async fn run(
        self: &Arc<Self>,
        courier: &Courier,
        signed: &Signed<Assignment>,
        body: &Assignment,
        spec: &JobSpec,
        coordinator: PeerId,
    ) -> Result<(), RunError> {
        let assignment_id = signed.id();
        let inputs = self.fetch_inputs(courier, spec).await?;
        if spec.declared_size_needs_dataset() {
            let bytes = inputs
                .dataset_path
                .as_deref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len());
            if let Some(declared) = spec.declared_tokens(bytes) {
                self.check_fee(body.fee_cap, declared)?;
            }
        }
        let deadline =
            Instant::now() + Duration::from_millis(body.deadline_ms.saturating_sub(unix_ms()));
        let work_dir = self.work_root.join(assignment_id.to_string());
        let opts = ExecOptions {
            threads: self.threads,
            deadline,
            work_dir: work_dir.clone(),
        };

        let (tx, mut rx) = tokio::sync::watch::channel(None::<(u32, u32, f32)>);
        let latest = tx.subscribe();
        let reporter = {
            let courier = courier.clone();
            let identity = self.identity.clone();
            let job_id = body.job_id;
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let Some((step, total, loss)) = *rx.borrow_and_update() else {
                        continue;
                    };
                    let p = JobProgress {
                        job_id,
                        assignment: assignment_id,
                        step,
                        total,
                        loss,
                    };
                    if let Ok(s) = Signed::sign(&identity, &p) {
                        let _ = courier.once(RpcRequest::Progress(s)).await;
                    }
                    tokio::time::sleep(PROGRESS_EVERY).await;
                }
            })
        };
        // The job's declared memory is its limit: a run that grows the process by more is
        // cancelled at its next step (fine-tunes) or failed when it ends (inference).
        // Process-wide figures, so concurrent jobs on one worker are measured together.
        let limit = spec.requirements.min_memory_bytes;
        let cancel = Arc::new(AtomicBool::new(false));
        let over = Arc::new(AtomicBool::new(false));
        let lazy = self.conduct == Conduct::Lazy;
        let spec_owned = spec.clone();
        let (stopping, job_cancel, job_over) =
            (self.stopping.clone(), cancel.clone(), over.clone());
        let job_executor = self.executor.clone();
        let (pieces, streamer) = match spec.kind {
            JobKind::Inference(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let streamer = tokio::spawn(stream_tokens(
                    rx,
                    courier.clone(),
                    self.identity.clone(),
                    body.job_id,
                    assignment_id,
                ));
                (Some(tx), Some(streamer))
            }
            JobKind::Finetune(_) => (None, None),
        };
        let token_limit = lock(&self.limits)
            .get(&assignment_id)
            .cloned()
            .unwrap_or_else(|| Arc::new(AtomicU32::new(u32::MAX)));
        let result = tokio::task::spawn_blocking(move || {
            if lazy {
                return Err(executor::ExecError::Input(
                    "lazy worker skipped the work".into(),
                ));
            }
            let (rss0, peak0) = (
                executor::current_memory_bytes(),
                executor::peak_memory_bytes(),
            );
            let grew_too_much = |now: u64, base: u64| limit > 0 && now.saturating_sub(base) > limit;
            let mut watch = RunWatch {
                on_step: |s, t, l| {
                    if stopping.load(Ordering::Relaxed) {
                        job_cancel.store(true, Ordering::Relaxed);
                    }
                    if grew_too_much(executor::current_memory_bytes(), rss0) {
                        job_over.store(true, Ordering::Relaxed);
                        job_cancel.store(true, Ordering::Relaxed);
                    }
                    let _ = tx.send(Some((s, t, l)));
                },
                pieces,
                token_limit,
            };
            let result = job_executor.run(&spec_owned, &inputs, &opts, &job_cancel, &mut watch);
            if grew_too_much(executor::peak_memory_bytes(), peak0) {
                job_over.store(true, Ordering::Relaxed);
            }
            result
        })
        .await
        .map_err(|e| format!("the job's thread died: {e}"));
        // Every streamed chunk goes out before the commitment.
        if let Some(streamer) = streamer {
            let _ = streamer.await;
        }
        reporter.abort();
        if over.load(Ordering::Relaxed) {
            return Err(format!(
                "the job grew the worker's memory by more than its limit of {limit} bytes"
            )
            .into());
        }
        // The reporter sends at most every PROGRESS_EVERY, so the last steps may not have
        // gone out: send the latest now, so the job shows its final step and loss.
        let last = *latest.borrow();
        if let Some((step, total, loss)) = last
            && matches!(result, Ok(Ok(_)))
        {
            let p = JobProgress {
                job_id: body.job_id,
                assignment: assignment_id,
                step,
                total,
                loss,
            };
            if let Ok(s) = Signed::sign(&self.identity, &p) {
                let _ = courier.once(RpcRequest::Progress(s)).await;
            }
        }

        let (mut output, mut commitment, metrics, adapter_manifest, provenance) =
            match (result, lazy) {
                (_, true) => (
                    JobOutput::Inference {
                        tokens: vec![0],
                        text: String::new(),
                    },
                    olc_protocol::inference_commitment(&[0]),
                    Default::default(),
                    None,
                    None,
                ),
                (Ok(Ok(done)), false) => {
                    let (output, manifest, provenance) = match done.output {
                        ExecOutput::Inference { tokens, text } => {
                            (JobOutput::Inference { tokens, text }, None, None)
                        }
                        ExecOutput::Finetune {
                            adapter_dir,
                            commitment,
                            first_loss,
                            last_loss,
                            provenance,
                        } => {
                            let (manifest, files) = content::publish_dir(&self.store, &adapter_dir)
                                .map_err(|e| format!("cannot store the adapter: {e}"))?;
                            let mut all = files;
                            all.push(manifest);
                            self.upload(courier, &all).await?;
                            (
                                JobOutput::Finetune {
                                    adapter: manifest,
                                    commitment,
                                    first_loss,
                                    last_loss,
                                },
                                Some(manifest),
                                Some(provenance),
                            )
                        }
                    };
                    (output, done.commitment, done.metrics, manifest, provenance)
                }
                (Ok(Err(e)), false) => return Err(e.into()),
                (Err(e), false) => return Err(e.into()),
            };
        let _ = std::fs::remove_dir_all(&work_dir);
        if self.conduct == Conduct::WrongOutput {
            // A consistent liar: the wrong output, its commitment and its reveal all agree,
            // so only comparison with other replicas (or a referee) can catch it.
            match &mut output {
                JobOutput::Inference { tokens, .. } => {
                    tokens.push(1);
                    commitment = olc_protocol::inference_commitment(tokens);
                }
                JobOutput::Finetune {
                    commitment: claimed,
                    ..
                } => {
                    let mut bytes = claimed.as_bytes().to_vec();
                    bytes.push(1);
                    *claimed = ContentId::of(&bytes);
                    commitment = *claimed;
                }
            }
        }
        let (model, adapter) = match &spec.kind {
            JobKind::Inference(j) => (j.model, j.adapter),
            JobKind::Finetune(j) => (j.model, adapter_manifest),
        };
        let c = self.keep_reveal(
            body,
            assignment_id,
            coordinator,
            (model, adapter),
            (output, commitment, metrics, provenance),
        )?;
        match courier.until_deadline(RpcRequest::Commit(c)).await? {
            RpcResponse::Ok => Ok(()),
            RpcResponse::Refused(why) => Err(format!("commitment refused: {why}").into()),
            other => Err(format!("unexpected answer to the commitment: {other:?}").into()),
        }
    }

    /// Cuts the output to the assignment's token limit, signs its receipt, keeps the reveal
    /// and returns the commitment to send. From reading the limit to keeping the reveal,
    /// under the reveals' lock: a cut that comes meanwhile is either seen here or finds
    /// the reveal (see [`JobRunner::cut`]).
    fn keep_reveal(
        &self,
        body: &Assignment,
        assignment_id: ContentId,
        coordinator: PeerId,
        (model, adapter): (ContentId, Option<ContentId>),
        (mut output, mut commitment, mut metrics, provenance): (
            JobOutput,
            ContentId,
            olc_protocol::Metrics,
            Option<ContentId>,
        ),
    ) -> Result<Signed<Commitment>, RunError> {
        let mut reveals = lock(&self.reveals);
        let keep = lock(&self.limits)
            .get(&assignment_id)
            .map_or(u32::MAX, |l| l.load(Ordering::SeqCst));
        let before = generated(&output);
        if self.cut_output(model, &mut output, keep)? {
            commitment = output_commitment(&output);
            metrics = cut_metrics(metrics, before, keep);
        }
        let receipt = ExecutionReceipt {
            job_id: body.job_id,
            assignment: assignment_id,
            output: commitment,
            model,
            adapter,
            metrics,
            provenance,
            finished_ms: unix_ms(),
        };
        let receipt = Signed::sign(&self.identity, &receipt).map_err(|e| e.to_string())?;
        reveals.insert(assignment_id, (coordinator, Reveal { output, receipt }));
        let c = Commitment {
            job_id: body.job_id,
            assignment: assignment_id,
            output: commitment,
        };
        Ok(Signed::sign(&self.identity, &c).map_err(|e| e.to_string())?)
    }

    async fn fetch_inputs(&self, courier: &Courier, spec: &JobSpec) -> Result<JobInputs, String> {
        let (inputs, manifests) =
            content::lay_out(&self.store, courier, spec, &self.dirs_root).await?;
        lock(&self.cached).extend(manifests);
        Ok(inputs)
    }

    /// Pushes blobs the coordinator lacks, in chunk-sized pieces.
    async fn upload(&self, courier: &Courier, ids: &[ContentId]) -> Result<(), String> {
        let missing = match courier
            .until_deadline(RpcRequest::MissingBlobs(ids.to_vec()))
            .await?
        {
            RpcResponse::Missing(m) => m,
            other => return Err(format!("unexpected answer: {other:?}")),
        };
        for id in missing {
            let bytes = self
                .store
                .get(&id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("blob {id} vanished from the store"))?;
            for piece in BlobUpload::pieces(id, &bytes) {
                match courier.until_deadline(RpcRequest::PutBlob(piece)).await? {
                    RpcResponse::Ok => {}
                    RpcResponse::Refused(why) => return Err(format!("upload refused: {why}")),
                    other => return Err(format!("unexpected answer: {other:?}")),
                }
            }
        }
        Ok(())
    }
}

/// The job's way to its coordinator: the worker's own connection ([`Link`]), retried
/// through connection failures until the job's deadline.
#[derive(Debug, Clone)]
struct Courier {
    link: Link,
    deadline_ms: u64,
}

impl Courier {
    /// One attempt.
    async fn once(&self, request: RpcRequest) -> Result<RpcResponse, String> {
        self.link.rpc(request).await.map_err(|e| e.to_string())
    }

    /// Retries through connection failures until the job's deadline.
    async fn until_deadline(&self, request: RpcRequest) -> Result<RpcResponse, String> {
        self.retrying("coordinator unreachable", || self.once(request.clone()))
            .await
            .map_err(|e| format!("cannot reach the coordinator before the deadline: {e}"))
    }

    /// `attempt` until it succeeds or the job's deadline has passed; the last error then.
    async fn retrying<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, E> {
        loop {
            match attempt().await {
                Ok(r) => return Ok(r),
                Err(e) if unix_ms() >= self.deadline_ms => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "{what}; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
}

impl Fetch for Courier {
    fn fetch(&self, id: ContentId, cap: u64) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            self.retrying(&format!("fetch of {id} failed"), || {
                self.link.fetch_blob(id, cap)
            })
            .await
            .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use olc_protocol::{Amount, InferenceJob, Prompt, Requirements, Sampling, VerificationPolicy};

    use super::*;

    fn runner(dir: &std::path::Path, me: &Identity, max_jobs: u32) -> JobRunner {
        let store = BlobStore::open(&dir.join("blobs"), Some(1 << 20)).unwrap();
        JobRunner::new(
            me.clone(),
            Arc::new(store),
            dir.join("dirs"),
            dir.join("work"),
            1,
            mpsc::channel(1).0,
            max_jobs,
            max_jobs,
            Conduct::Honest,
            Arc::new(olc_exec::InProcess::new(olc_exec::EnginePool::new(0))),
        )
    }

    fn assignment(
        coordinator: &Identity,
        worker: &Identity,
        deadline_ms: u64,
    ) -> Signed<Assignment> {
        let spec = JobSpec {
            kind: JobKind::Inference(InferenceJob {
                model: ContentId::of(b"m"),
                adapter: None,
                prompt: Prompt::Tokens(vec![1]),
                sampling: Sampling::Greedy,
                max_tokens: 1,
                seed: 0,
            }),
            requirements: Requirements::default(),
            max_fee: Amount(1),
            verification: VerificationPolicy::Single,
            deadline_ms,
            nonce: 1,
        };
        let job = Signed::sign(&Identity::from_seed(&[7; 32]), &spec).unwrap();
        let a = Assignment {
            job_id: job.id(),
            job,
            worker: worker.public_key(),
            replica: 0,
            fee_cap: Amount(1),
            deadline_ms,
            issued_ms: unix_ms(),
        };
        Signed::sign(coordinator, &a).unwrap()
    }

    #[test]
    fn assignments_are_taken_only_when_both_signatures_hold_and_a_slot_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::from_seed(&[1; 32]);
        let coordinator = Identity::from_seed(&[2; 32]);
        let r = runner(dir.path(), &me, 1);
        let later = unix_ms() + 60_000;
        let from = coordinator.peer_id();

        // Sent by a peer other than its signer.
        let a = assignment(&coordinator, &me, later);
        let err = r
            .accept(&a, Identity::from_seed(&[3; 32]).peer_id())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not signed by the peer"), "{err}");
        // For another worker.
        let other = assignment(&coordinator, &Identity::from_seed(&[4; 32]), later);
        assert!(
            r.accept(&other, from)
                .unwrap_err()
                .to_string()
                .contains("another worker")
        );
        // A tampered envelope no longer verifies.
        let mut bytes = a.to_bytes().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = Signed::<Assignment>::from_bytes(&bytes).unwrap();
        assert!(
            r.accept(&tampered, from)
                .unwrap_err()
                .to_string()
                .contains("signature")
        );
        // Past its deadline.
        let late = assignment(&coordinator, &me, unix_ms().saturating_sub(1));
        assert!(r.accept(&late, from).is_err());
        // A good one takes the only inference slot (not a fine-tune's); the same one sent
        // again is acknowledged without a second run; another is declined as busy, which
        // is worth retrying later.
        assert!(r.accept(&a, from).unwrap().is_some());
        assert_eq!((r.active_streams(), r.active_jobs()), (1, 0));
        assert!(r.accept(&a, from).unwrap().is_none());
        assert_eq!(r.active_streams(), 1);
        let next = assignment(&coordinator, &me, later + 1);
        let err = r.accept(&next, from).unwrap_err();
        assert!(matches!(err, Decline::Busy(_)), "{err}");
        // Nothing to reveal before the job committed, and never to another peer.
        assert!(r.reveal(&a.id(), from).is_none());
    }

    /// The assignment's fee cap (1 credit) for a job of 2 declared tokens (one prompt
    /// token, one to generate) pays a price of up to 500 per 1000 tokens, rounded up.
    #[test]
    fn an_assignment_whose_fee_cannot_pay_the_price_of_the_declared_work_is_declined() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::from_seed(&[1; 32]);
        let coordinator = Identity::from_seed(&[2; 32]);
        let from = coordinator.peer_id();
        let r = runner(dir.path(), &me, 4);
        let later = unix_ms() + 60_000;
        r.set_price_per_ktoken(Amount(501));
        let err = r
            .accept(&assignment(&coordinator, &me, later), from)
            .unwrap_err();
        let Decline::Refused(why) = &err else {
            panic!("{err:?}")
        };
        assert!(
            why.contains("fee cap of 1 credits cannot pay")
                && why.contains("2 tokens at 501 per 1000 tokens need 2"),
            "{why}"
        );
        assert_eq!(r.active_streams(), 0, "a declined assignment takes no slot");
        r.set_price_per_ktoken(Amount(500));
        assert!(
            r.accept(&assignment(&coordinator, &me, later + 1), from)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn failures_outside_the_executor_are_the_workers() {
        let e = RunError::from("cannot reach the coordinator".to_string());
        assert_eq!(e.kind, FailureKind::Worker);
        let e = RunError::from(executor::ExecError::Settings("no such target".into()));
        assert_eq!(e.kind, FailureKind::Settings);
        assert_eq!(e.reason, "bad job settings: no such target");
    }
}

/// Tokens an output generated (0 for a fine-tune).
fn generated(output: &JobOutput) -> usize {
    match output {
        JobOutput::Inference { tokens, .. } => tokens.len(),
        JobOutput::Finetune { .. } => 0,
    }
}

/// An inference output's commitment (a fine-tune's is the adapter's).
fn output_commitment(output: &JobOutput) -> ContentId {
    match output {
        JobOutput::Inference { tokens, .. } => olc_protocol::inference_commitment(tokens),
        JobOutput::Finetune { commitment, .. } => *commitment,
    }
}

/// The metrics of a run whose `generated` tokens were cut to `keep`: the tokens it is paid
/// for are the prompt's and the kept ones.
fn cut_metrics(
    metrics: olc_protocol::Metrics,
    generated: usize,
    keep: u32,
) -> olc_protocol::Metrics {
    olc_protocol::Metrics {
        tokens: metrics
            .tokens
            .saturating_sub(generated as u64)
            .saturating_add(u64::from(keep)),
        ..metrics
    }
}

/// What a run streams: its tokens and their text, in order.
#[derive(Debug)]
enum Piece {
    Token(u32),
    Text(String),
}

/// A run as the worker watches it: a fine-tune's steps go to `on_step`, an inference's
/// tokens to the streamer, and the coordinator's cut is its token limit.
struct RunWatch<F> {
    on_step: F,
    pieces: Option<mpsc::UnboundedSender<Piece>>,
    token_limit: Arc<AtomicU32>,
}

impl<F: FnMut(u32, u32, f32)> executor::Watch for RunWatch<F> {
    fn progress(&mut self, step: u32, total: u32, loss: f32) {
        (self.on_step)(step, total, loss)
    }

    fn token(&mut self, token: u32) {
        if let Some(p) = &self.pieces {
            let _ = p.send(Piece::Token(token));
        }
    }

    fn text(&mut self, piece: &str) {
        if let Some(p) = &self.pieces {
            let _ = p.send(Piece::Text(piece.to_string()));
        }
    }

    fn token_limit(&self) -> u32 {
        self.token_limit.load(Ordering::Relaxed)
    }
}

/// Sends a run's tokens to its coordinator as signed chunks, one request at a time:
/// whatever was generated while the previous chunk travelled goes in the next, so a slow
/// link means bigger chunks, never a queue of requests. Ends when the run drops its
/// sender and the last chunk is out.
async fn stream_tokens(
    mut pieces: mpsc::UnboundedReceiver<Piece>,
    courier: Courier,
    identity: Identity,
    job_id: ContentId,
    assignment: ContentId,
) {
    let mut offset = 0u32;
    while let Some(first) = pieces.recv().await {
        let mut chunk = TokenChunk {
            job_id,
            assignment,
            offset,
            tokens: Vec::new(),
            text: String::new(),
        };
        let mut add = |piece| match piece {
            Piece::Token(t) => chunk.tokens.push(t),
            Piece::Text(t) => chunk.text.push_str(&t),
        };
        add(first);
        while let Ok(piece) = pieces.try_recv() {
            add(piece);
        }
        offset = offset.saturating_add(u32::try_from(chunk.tokens.len()).unwrap_or(u32::MAX));
        let Ok(signed) = Signed::sign(&identity, &chunk) else {
            continue;
        };
        if let Err(e) = courier.once(RpcRequest::Tokens(signed)).await {
            tracing::debug!(job = %job_id, error = %e, "a token chunk did not reach the coordinator");
        }
    }
}

//! olc-exec: the one executor. A job spec and its laid-out inputs in; the engine's run;
//! the output, its commitment and the metrics out. The worker runs jobs with it and the
//! coordinator's referee re-runs them with it. Blocking: daemons call [`execute`] in
//! `spawn_blocking`.
//!
//! A job's output must be exactly what `olc run infer` / `olc run finetune` print for the
//! same inputs (redundancy checks compare hashes, and submitters check results locally), so
//! those commands call the same code: [`infer::generate_text`] and [`train::train_adapter`].
//! What is a job's alone (checking that the laid-out inputs are the job's, cancellation,
//! the deadline, metrics) is here, and so is how daemons reach it: the [`Runner`] seam
//! (in-process today) and the [`EnginePool`] of resident models.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use olc_gpu::engine::EngineError;
use olc_gpu::model::{Checkpoint, LinearModule, ModelConfig, ModelError};
use olc_gpu::train::{Budget, DataError, Hyper, LoraSpec, StepReport, TrainError, resolve_max_len};
use olc_protocol::messages::jobs_api::FailureKind;
use olc_protocol::{
    ContentId, FinetuneJob, InferenceJob, JobKind, JobSpec, Metrics, PROVENANCE_FILE, TargetModule,
    TrainingLength, TrainingParams,
};

pub mod detokenize;
pub mod infer;
pub mod pool;
pub mod provenance;
pub mod runner;
pub mod serve;
pub mod train;

use infer::EngineChoice;

pub use pool::{DEFAULT_MODEL_CACHE_BYTES, EnginePool, LoadedModel, Resident};
pub use runner::{InProcess, Runner, Watch};

pub use olc_content::JobInputs;

#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Compute threads; never changes the output.
    pub threads: usize,
    pub deadline: Instant,
    /// A fine-tune writes its adapter (and provenance.json) to `work_dir/adapter`.
    pub work_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExecOutput {
    Inference {
        tokens: Vec<u32>,
        text: String,
    },
    Finetune {
        adapter_dir: PathBuf,
        commitment: ContentId,
        first_loss: f32,
        last_loss: f32,
        /// BLAKE3 of the provenance.json bytes.
        provenance: ContentId,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecResult {
    pub output: ExecOutput,
    /// What the worker commits to: [`inference_commitment`] of the generated tokens, or the
    /// adapter's commitment.
    pub commitment: ContentId,
    pub metrics: Metrics,
}

/// Why a job did not run. [`ExecError::kind`] says whose fault that is, which is decided
/// here, where each error arises: only the executor knows whether a file that does not
/// load was the model, the adapter or the dataset.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The inputs laid out for the job are missing or are another job's (or the daemon
    /// asked for no threads): a fault of this worker's daemon, not of the job.
    #[error("bad job input: {0}")]
    Input(String),
    /// The job's settings cannot run on its inputs (a target the model lacks, a max_len
    /// past the model's context, sampling settings the engine refuses).
    #[error("bad job settings: {0}")]
    Settings(String),
    /// The base model's files do not load.
    #[error("model: {0}")]
    Model(#[from] ModelError),
    /// The adapter (to serve, or to continue training from) does not load or does not fit
    /// the model.
    #[error("adapter: {0}")]
    Adapter(#[source] ModelError),
    #[error("training failed: {0}")]
    Train(#[source] TrainError),
    #[error("the engine failed: {0}")]
    Engine(#[from] EngineError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the job's deadline passed")]
    DeadlinePassed,
    #[error("the job was cancelled")]
    Cancelled,
    /// A bug in the engine; the daemon survives it and reports the job as failed.
    #[error("the executor panicked: {0}")]
    Panicked(String),
    /// The loop batching a resident model's generations failed or ended.
    #[error("serving failed: {0}")]
    Serving(String),
}

impl ExecError {
    /// Whose fault the failure is: an input kind when every worker would meet the same
    /// error on these inputs (the engine is deterministic), [`FailureKind::Worker`] when
    /// another worker may succeed (cancelled, out of time, out of memory or disk, a panic,
    /// a daemon fault). When unsure, it is the worker's: a job wrongly blamed is failed
    /// for everyone, a worker wrongly blamed only passes the job on.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Input(_)
            | Self::Io { .. }
            | Self::DeadlinePassed
            | Self::Cancelled
            | Self::Panicked(_)
            | Self::Serving(_) => FailureKind::Worker,
            Self::Settings(_) => FailureKind::Settings,
            Self::Model(e) => file_kind(e, FailureKind::Model),
            Self::Adapter(e) => file_kind(e, FailureKind::Adapter),
            Self::Engine(e) => engine_kind(e),
            Self::Train(e) => match e {
                TrainError::Data(DataError::Io { .. }) => FailureKind::Worker,
                TrainError::Data(_) => FailureKind::Dataset,
                TrainError::Model(e) => file_kind(e, FailureKind::Model),
                TrainError::Engine(e) => engine_kind(e),
                TrainError::Invalid(_) | TrainError::Diverged { .. } => FailureKind::Settings,
                TrainError::Compute(_) | TrainError::Cancelled { .. } => FailureKind::Worker,
            },
        }
    }
}

/// A file that does not load is the input's fault, unless reading it failed for a reason
/// of the worker's own disk (a file that is not there is the input's: its manifest lacks
/// it).
fn file_kind(e: &ModelError, input: FailureKind) -> FailureKind {
    match e {
        ModelError::Io { source, .. } if source.kind() != std::io::ErrorKind::NotFound => {
            FailureKind::Worker
        }
        _ => input,
    }
}

fn engine_kind(e: &EngineError) -> FailureKind {
    match e {
        EngineError::TokenOutOfRange { .. }
        | EngineError::TooLong { .. }
        | EngineError::EmptyPrompt => FailureKind::Prompt,
        EngineError::BadSampling(_) => FailureKind::Settings,
        // Thread pools, instruction sets and shapes the loader accepted are the engine's.
        EngineError::Compute(_) | EngineError::CacheMismatch => FailureKind::Worker,
    }
}

impl From<TrainError> for ExecError {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Model(e) => Self::Model(e),
            TrainError::Engine(e) => Self::Engine(e),
            e => Self::Train(e),
        }
    }
}

/// Runs `job` (a validated spec) with the inputs laid out in `inputs`, loading its model
/// for this run only. Daemons run jobs through a [`Runner`] instead, which keeps models
/// resident.
///
/// Whatever happens inside, this returns: a panic is caught and becomes
/// [`ExecError::Panicked`] (the workspace builds with `panic = "unwind"`, the default).
/// Fine-tunes report `(step, total, loss)` through `progress` after every optimizer step
/// and stop at the next step once `cancel` is set or the deadline has passed; inference
/// cannot be interrupted and checks both before and after.
pub fn execute(
    job: &JobSpec,
    inputs: &JobInputs,
    opts: &ExecOptions,
    cancel: &AtomicBool,
    mut progress: &mut dyn FnMut(u32, u32, f32),
) -> Result<ExecResult, ExecError> {
    run_job(
        job,
        inputs,
        opts,
        cancel,
        &mut progress,
        &EnginePool::new(0),
    )
}

/// [`execute`], taking the model from `engines`.
pub(crate) fn run_job(
    job: &JobSpec,
    inputs: &JobInputs,
    opts: &ExecOptions,
    cancel: &AtomicBool,
    watch: &mut dyn Watch,
    engines: &EnginePool,
) -> Result<ExecResult, ExecError> {
    catch(|| {
        let started = Instant::now();
        check_stop(opts, cancel)?;
        if opts.threads == 0 {
            return Err(ExecError::Input("threads must be at least 1".into()));
        }
        let (output, commitment, tokens) = match &job.kind {
            JobKind::Inference(job) => infer(job, inputs, opts, cancel, watch, engines)?,
            JobKind::Finetune(job) => finetune(job, inputs, opts, cancel, &mut |s, t, l| {
                watch.progress(s, t, l)
            })?,
        };
        check_stop(opts, cancel)?;
        Ok(ExecResult {
            output,
            commitment,
            metrics: Metrics {
                tokens,
                wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                peak_memory_bytes: peak_memory_bytes(),
            },
        })
    })
}

/// Runs `f`, turning a panic into [`ExecError::Panicked`] so that it never unwinds into
/// the daemon.
pub fn catch<T>(f: impl FnOnce() -> Result<T, ExecError>) -> Result<T, ExecError> {
    // Nothing `f` borrows is used after a panic except to be dropped, so observing it in
    // a half-updated state is not possible.
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(ExecError::Panicked(panic_message(&*payload))))
}

/// What a caught panic said.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn check_stop(opts: &ExecOptions, cancel: &AtomicBool) -> Result<(), ExecError> {
    if cancel.load(Ordering::Relaxed) {
        Err(ExecError::Cancelled)
    } else if Instant::now() >= opts.deadline {
        Err(ExecError::DeadlinePassed)
    } else {
        Ok(())
    }
}

/// The process's peak resident memory (VmHWM) in bytes, 0 where /proc is unavailable.
/// Process-wide: with several jobs at once, or after an earlier larger one, it overstates a
/// job's own use; it is a report, never a basis for payment.
pub fn peak_memory_bytes() -> u64 {
    proc_status_bytes("VmHWM:")
}

/// The process's resident memory now (`VmRSS`), for the per-job memory limit; 0 where
/// `/proc` is not available.
pub fn current_memory_bytes() -> u64 {
    proc_status_bytes("VmRSS:")
}

fn proc_status_bytes(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024))
}

/// Loads a checkpoint directory or a GGUF file.
pub(crate) fn load_checkpoint(path: &Path) -> Result<Checkpoint, ExecError> {
    if !path.exists() {
        return Err(ExecError::Input(format!(
            "the model {} does not exist",
            path.display()
        )));
    }
    Ok(Checkpoint::load(path)?)
}

/// An inference job: [`infer::generate_text`] on its laid-out inputs, as `olc run infer`.
fn infer(
    job: &InferenceJob,
    inputs: &JobInputs,
    opts: &ExecOptions,
    cancel: &AtomicBool,
    watch: &mut dyn Watch,
    engines: &EnginePool,
) -> Result<(ExecOutput, ContentId, u64), ExecError> {
    job.validate()
        .map_err(|e| ExecError::Settings(e.to_string()))?;
    same_id("model", job.model, Some(inputs.model_id))?;
    let adapter_dir = match (job.adapter, &inputs.adapter_dir) {
        (None, _) => None,
        (Some(id), dir) => {
            same_id("adapter", id, inputs.adapter_id)?;
            Some(dir.as_deref().ok_or_else(|| {
                ExecError::Input(format!(
                    "the job names adapter {id}, but no adapter directory was given"
                ))
            })?)
        }
    };
    let choice = infer::EngineChoice::detect(opts.threads);
    let resident = engines.get(inputs.model_id, &inputs.model_dir, &choice)?;
    let adapter = match (job.adapter, adapter_dir) {
        (Some(id), Some(dir)) => Some((id, resident.adapter(id, dir)?)),
        _ => None,
    };
    let generated = infer::generate_served(
        &resident,
        &infer::GenerateRequest {
            model_dir: &inputs.model_dir,
            adapter_dir,
            prompt: &job.prompt,
            sampling: job.sampling,
            seed: job.seed,
            max_tokens: job.max_tokens,
        },
        adapter,
        &|| check_stop(opts, cancel).err(),
        watch,
    )?;
    let tokens = (generated.prompt_tokens.len() + generated.tokens.len()) as u64;
    Ok((
        ExecOutput::Inference {
            tokens: generated.tokens,
            text: generated.text,
        },
        generated.commitment,
        tokens,
    ))
}

/// Refuses inputs laid out for another job: the ids end up in receipts and provenance, so
/// a mix-up in the daemon must fail loudly rather than be signed.
fn same_id(what: &str, job: ContentId, given: Option<ContentId>) -> Result<(), ExecError> {
    match given {
        Some(given) if given != job => Err(ExecError::Input(format!(
            "the job names {what} {job}, but the inputs are {what} {given}"
        ))),
        _ => Ok(()),
    }
}

fn linear_module(t: TargetModule) -> Result<LinearModule, ExecError> {
    LinearModule::from_name(t.hf_name())
        .ok_or_else(|| ExecError::Settings(format!("the engine cannot adapt {t}")))
}

/// The trainer's hyperparameters for `params`: the one conversion, used by
/// [`train::train_adapter`] for fine-tune jobs and `olc run finetune` alike. With an initial adapter, the adapter's own config
/// decides rank, alpha and targets and `lora` is only checked.
pub fn hyper(params: &TrainingParams) -> Result<Hyper, ExecError> {
    let targets = params
        .targets
        .iter()
        .map(|t| linear_module(*t))
        .collect::<Result<Vec<_>, _>>()?;
    let budget = match params.length {
        TrainingLength::Steps(s) => Budget::Steps(s),
        TrainingLength::Epochs(e) => Budget::Epochs(e),
    };
    let mut hyper = Hyper {
        lora: LoraSpec {
            rank: params.rank as usize,
            alpha: params.alpha,
            targets,
        },
        lr: params.learning_rate,
        batch: params.batch_size as usize,
        grad_accum: params.grad_accum as usize,
        budget,
        warmup: params.warmup_steps,
        seed: params.seed,
        ..Hyper::default()
    };
    hyper.optimizer.weight_decay = params.weight_decay;
    hyper
        .check()
        .map_err(|e| ExecError::Settings(e.to_string()))?;
    Ok(hyper)
}

/// The longest record trained: the parameters' value, else the model's context up to 2048.
pub fn max_len(params: &TrainingParams, config: &ModelConfig) -> Result<usize, ExecError> {
    resolve_max_len(params.max_len.map(|n| n as usize), config)
        .map_err(|e| ExecError::Settings(e.to_string()))
}

/// Why the progress callback stopped training.
#[derive(Clone, Copy)]
enum Stop {
    Cancelled,
    Deadline,
}

/// A fine-tune job: [`train::train_adapter`] on its laid-out inputs, as
/// `olc run finetune`, stopping at the next step once cancelled or out of time.
fn finetune(
    job: &FinetuneJob,
    inputs: &JobInputs,
    opts: &ExecOptions,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u32, u32, f32),
) -> Result<(ExecOutput, ContentId, u64), ExecError> {
    same_id("model", job.model, Some(inputs.model_id))?;
    let dataset_path = inputs
        .dataset_path
        .as_deref()
        .ok_or_else(|| ExecError::Input("a fine-tune needs its dataset".into()))?;
    let adapter_dir = opts.work_dir.join("adapter");
    let model_id = inputs.model_id.to_string();
    let request = train::TrainRequest {
        model_dir: &inputs.model_dir,
        model_id: &model_id,
        dataset_path,
        expect_dataset: Some(job.dataset),
        params: &job.params,
        init_adapter_dir: inputs.init_adapter_dir.as_deref(),
        out_dir: &adapter_dir,
    };
    let mut stop = None;
    let trained = train::train_adapter(
        &request,
        &EngineChoice::detect(opts.threads),
        &mut |r: &StepReport| {
            progress(r.step, r.total, r.loss as f32);
            stop = if cancel.load(Ordering::Relaxed) {
                Some(Stop::Cancelled)
            } else if Instant::now() >= opts.deadline {
                Some(Stop::Deadline)
            } else {
                None
            };
            stop.is_none()
        },
        // A stop asked for at the last step does not interrupt the trainer; honour it
        // before the evaluation pass and the writes.
        &|| check_stop(opts, cancel),
    );
    let outcome = match trained {
        Ok(trained) => trained.outcome,
        Err(ExecError::Train(TrainError::Cancelled { .. })) => {
            return Err(match stop {
                Some(Stop::Deadline) => ExecError::DeadlinePassed,
                Some(Stop::Cancelled) | None => ExecError::Cancelled,
            });
        }
        Err(e) => return Err(e),
    };
    let provenance_path = adapter_dir.join(PROVENANCE_FILE);
    let provenance_bytes = std::fs::read(&provenance_path).map_err(|source| ExecError::Io {
        path: provenance_path,
        source,
    })?;
    let commitment: ContentId = outcome.commitment.parse().map_err(|e| {
        ExecError::Train(TrainError::Invalid(format!(
            "the trainer's commitment {:?} is not a content id: {e}",
            outcome.commitment
        )))
    })?;
    Ok((
        ExecOutput::Finetune {
            adapter_dir,
            commitment,
            first_loss: outcome.first_loss() as f32,
            last_loss: outcome.last_loss() as f32,
            provenance: ContentId::of(&provenance_bytes),
        },
        commitment,
        outcome.tokens_processed,
    ))
}

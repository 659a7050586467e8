//! What a submitter asks for. A `JobSpec` is signed by the submitter; the job id is the
//! id of that signed spec, so a job cannot be altered after submission without it becoming
//! a different job.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::messages::advert::Backend;
use crate::{Amount, ContentId, Message};

#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct JobSpec {
    pub kind: JobKind,
    pub requirements: Requirements,
    /// The most the submitter will pay; escrowed at submission, the unused part refunded.
    pub max_fee: Amount,
    pub verification: VerificationPolicy,
    /// Unix time in milliseconds after which the result is no longer wanted.
    pub deadline_ms: u64,
    /// Unique per submitter: the coordinator refuses a nonce it has seen (no replay).
    pub nonce: u64,
}

impl Message for JobSpec {
    const NAME: &'static str = "olc/job-spec";
    const MAX_SIZE: usize = 2 * 1024 * 1024;
}

#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum JobKind {
    Inference(InferenceJob),
    Finetune(FinetuneJob),
}

#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct InferenceJob {
    /// Manifest id of the base model's directory.
    pub model: ContentId,
    /// Manifest id of a LoRA adapter's directory, if any.
    pub adapter: Option<ContentId>,
    pub prompt: Prompt,
    pub sampling: Sampling,
    pub max_tokens: u32,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prompt {
    /// Tokenized by the worker with the model's tokenizer.json.
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Sampling {
    Greedy,
    /// `top_k == 0` and `top_p == 1.0` disable those filters.
    Sample {
        temperature: f32,
        top_k: u32,
        top_p: f32,
    },
}

#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct FinetuneJob {
    pub model: ContentId,
    /// Content id of the JSONL dataset.
    pub dataset: ContentId,
    pub params: TrainingParams,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct TrainingParams {
    pub rank: u32,
    /// f64 like the trainer's own settings, so a job trains exactly what `olc run finetune`
    /// with the same flags trains.
    pub alpha: f64,
    pub targets: Vec<TargetModule>,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Records longer than this many tokens are skipped; `None`: the trainer's default.
    pub max_len: Option<u32>,
    pub batch_size: u32,
    pub grad_accum: u32,
    pub length: TrainingLength,
    pub warmup_steps: u32,
    /// Fixes the data order and the adapter's initialisation.
    pub seed: u64,
    /// Continue training from this adapter instead of a fresh initialisation.
    pub init_adapter: Option<ContentId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainingLength {
    Steps(u32),
    Epochs(u32),
}

/// The projections a LoRA adapter may target, named as in Hugging Face checkpoints.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TargetModule {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl TargetModule {
    pub const ALL: [Self; 7] = [
        Self::QProj,
        Self::KProj,
        Self::VProj,
        Self::OProj,
        Self::GateProj,
        Self::UpProj,
        Self::DownProj,
    ];

    pub fn hf_name(self) -> &'static str {
        match self {
            Self::QProj => "q_proj",
            Self::KProj => "k_proj",
            Self::VProj => "v_proj",
            Self::OProj => "o_proj",
            Self::GateProj => "gate_proj",
            Self::UpProj => "up_proj",
            Self::DownProj => "down_proj",
        }
    }
}

impl fmt::Display for TargetModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hf_name())
    }
}

impl FromStr for TargetModule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.hf_name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|t| t.hf_name()).collect();
                format!(
                    "unknown target module {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode, Serialize, Deserialize)]
pub struct Requirements {
    /// Memory the job needs on the device that runs it (GPU memory, or RAM for the CPU
    /// backend).
    pub min_memory_bytes: u64,
    /// Run only on this backend; `None` accepts any.
    pub backend: Option<Backend>,
}

/// How the coordinator checks a job's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "lowercase")]
pub enum VerificationPolicy {
    /// Whatever the coordinator's operator chose (`olc coordinator start
    /// --default-verify`); the coordinator resolves it when it accepts the job.
    Default,
    /// One worker, trusted.
    Single,
    /// `replicas` distinct workers run the job and their commitments are compared.
    Replicate { replicas: u8 },
    /// One worker; with this probability (parts per million) its answer is re-run.
    Sample { probability_ppm: u32 },
}

impl VerificationPolicy {
    /// How many workers run the job at first.
    pub fn initial_replicas(self) -> u8 {
        match self {
            Self::Replicate { replicas } => replicas,
            Self::Default | Self::Single | Self::Sample { .. } => 1,
        }
    }
}

impl fmt::Display for VerificationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Single => f.write_str("single"),
            Self::Replicate { replicas } => write!(f, "replicate:{replicas}"),
            Self::Sample { probability_ppm } => {
                write!(f, "sample:{}", f64::from(*probability_ppm) / 1e6)
            }
        }
    }
}

/// Parses `single`, `replicate:K` (2 ≤ K ≤ 16) or `sample:P` (0 < P ≤ 1).
impl FromStr for VerificationPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage =
            "expected default, single, replicate:K (K from 2 to 16) or sample:P (0 < P <= 1)";
        match s.split_once(':') {
            None if s == "default" => Ok(Self::Default),
            None if s == "single" => Ok(Self::Single),
            Some(("replicate", k)) => match k.parse::<u8>() {
                Ok(replicas @ 2..=MAX_REPLICAS) => Ok(Self::Replicate { replicas }),
                _ => Err(format!("bad replica count {k:?}: {usage}")),
            },
            Some(("sample", p)) => match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 1.0 => {
                    // Rounded to parts per million; a P below one in a million is refused
                    // rather than silently becoming "never".
                    let ppm = (p * 1e6).round() as u32;
                    if ppm == 0 {
                        Err(format!("sample probability {p} is below 1e-6: {usage}"))
                    } else {
                        Ok(Self::Sample {
                            probability_ppm: ppm,
                        })
                    }
                }
                _ => Err(format!("bad sample probability {p:?}: {usage}")),
            },
            _ => Err(format!("unknown verification policy {s:?}: {usage}")),
        }
    }
}

pub const MAX_REPLICAS: u8 = 16;
pub const MAX_GENERATED_TOKENS: u32 = 1 << 16;
pub const MAX_PROMPT_TOKENS: usize = 1 << 18;
pub const MAX_LORA_RANK: u32 = 1024;

/// Why a well-formed spec is still not a job anyone should run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidJob {
    #[error("{field} must be {expected}, got {got}")]
    OutOfRange {
        field: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("no target modules given")]
    NoTargets,
    #[error("target module {0} is listed twice")]
    DuplicateTarget(TargetModule),
    #[error("the deadline has passed ({deadline_ms} <= now {now_ms})")]
    DeadlinePassed { deadline_ms: u64, now_ms: u64 },
}

fn check<T: fmt::Display>(
    ok: bool,
    field: &'static str,
    expected: &'static str,
    got: T,
) -> Result<(), InvalidJob> {
    if ok {
        Ok(())
    } else {
        Err(InvalidJob::OutOfRange {
            field,
            expected,
            got: got.to_string(),
        })
    }
}

impl JobSpec {
    /// Checks every field a peer could set to something no worker can honour. Decoding
    /// already bounded sizes; this bounds meanings (NaN learning rates, zero batch sizes).
    pub fn validate(&self, now_ms: u64) -> Result<(), InvalidJob> {
        if self.deadline_ms <= now_ms {
            return Err(InvalidJob::DeadlinePassed {
                deadline_ms: self.deadline_ms,
                now_ms,
            });
        }
        match self.verification {
            VerificationPolicy::Default | VerificationPolicy::Single => {}
            VerificationPolicy::Replicate { replicas } => check(
                (2..=MAX_REPLICAS).contains(&replicas),
                "replicas",
                "between 2 and 16",
                replicas,
            )?,
            VerificationPolicy::Sample { probability_ppm } => check(
                (1..=1_000_000).contains(&probability_ppm),
                "sample probability (ppm)",
                "between 1 and 1000000",
                probability_ppm,
            )?,
        }
        match &self.kind {
            JobKind::Inference(job) => job.validate(),
            JobKind::Finetune(job) => job.params.validate(),
        }
    }
}

impl InferenceJob {
    pub fn validate(&self) -> Result<(), InvalidJob> {
        match &self.prompt {
            Prompt::Text(t) if t.is_empty() => return Err(InvalidJob::EmptyPrompt),
            Prompt::Tokens(t) if t.is_empty() => return Err(InvalidJob::EmptyPrompt),
            Prompt::Tokens(t) => check(
                t.len() <= MAX_PROMPT_TOKENS,
                "prompt tokens",
                "at most 262144",
                t.len(),
            )?,
            Prompt::Text(_) => {}
        }
        check(
            (1..=MAX_GENERATED_TOKENS).contains(&self.max_tokens),
            "max_tokens",
            "between 1 and 65536",
            self.max_tokens,
        )?;
        if let Sampling::Sample {
            temperature, top_p, ..
        } = self.sampling
        {
            check(
                temperature.is_finite() && temperature > 0.0 && temperature <= 100.0,
                "temperature",
                "a number in (0, 100]",
                temperature,
            )?;
            check(
                top_p.is_finite() && top_p > 0.0 && top_p <= 1.0,
                "top_p",
                "a number in (0, 1]",
                top_p,
            )?;
        }
        Ok(())
    }
}

impl TrainingParams {
    pub fn validate(&self) -> Result<(), InvalidJob> {
        check(
            (1..=MAX_LORA_RANK).contains(&self.rank),
            "rank",
            "between 1 and 1024",
            self.rank,
        )?;
        check(
            self.alpha.is_finite() && self.alpha > 0.0,
            "alpha",
            "a positive number",
            self.alpha,
        )?;
        check(
            self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate <= 1.0,
            "learning rate",
            "a number in (0, 1]",
            self.learning_rate,
        )?;
        check(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "weight decay",
            "a number >= 0",
            self.weight_decay,
        )?;
        check(
            self.batch_size >= 1,
            "batch size",
            "at least 1",
            self.batch_size,
        )?;
        check(
            self.grad_accum >= 1,
            "gradient accumulation",
            "at least 1",
            self.grad_accum,
        )?;
        match self.length {
            TrainingLength::Steps(n) => check(n >= 1, "steps", "at least 1", n)?,
            TrainingLength::Epochs(n) => check(n >= 1, "epochs", "at least 1", n)?,
        }
        if self.targets.is_empty() {
            return Err(InvalidJob::NoTargets);
        }
        for (i, t) in self.targets.iter().enumerate() {
            if self.targets[..i].contains(t) {
                return Err(InvalidJob::DuplicateTarget(*t));
            }
        }
        Ok(())
    }
}

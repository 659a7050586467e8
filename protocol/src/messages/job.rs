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
    /// The catalog name to publish the trained adapter under when the job settles (as the
    /// submitter's, with the job's model as its base).
    #[serde(default)]
    pub publish_as: Option<String>,
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

// The ranges a fine-tune's settings must lie in: `TrainingParams::validate` refuses
// anything outside them, for jobs and for local runs alike. The upper bounds are far past
// what any real run needs; they exist so that a typo cannot ask for years of work or
// overflow the trainer's arithmetic.

/// LoRA rank: `MIN_LORA_RANK..=MAX_LORA_RANK`.
pub const MIN_LORA_RANK: u32 = 1;
pub const MAX_LORA_RANK: u32 = 1024;
/// Learning rate: a number in `(0, MAX_LEARNING_RATE]` (zero itself is refused).
pub const MAX_LEARNING_RATE: f64 = 1.0;
/// Examples per micro-batch: `1..=MAX_BATCH_SIZE`.
pub const MAX_BATCH_SIZE: u32 = 4096;
/// Micro-batches per optimizer step: `1..=MAX_GRAD_ACCUM`.
pub const MAX_GRAD_ACCUM: u32 = 4096;
/// Longest record, in tokens: `MIN_MAX_LEN..=MAX_MAX_LEN` (a training example needs two
/// tokens: one to read and one to predict).
pub const MIN_MAX_LEN: u32 = 2;
pub const MAX_MAX_LEN: u32 = 131_072;
/// Optimizer steps: `1..=MAX_TRAINING_STEPS` (the trainer's own limit).
pub const MAX_TRAINING_STEPS: u32 = 10_000_000;
/// Passes over the data: `1..=MAX_EPOCHS`.
pub const MAX_EPOCHS: u32 = 10_000;

/// The longest record a fine-tune trains on when it names none: the trainer resolves it to
/// the model's context, at most this (`olc_gpu::train::DEFAULT_MAX_LEN`, checked equal by
/// the worker's tests). The declared size uses this bound because the coordinator prices a
/// job before anyone has read the model's config.
pub const DEFAULT_TRAINING_MAX_LEN: u32 = 2048;

/// Tokens a text prompt may add beyond one per byte: the special tokens a tokenizer's
/// post-processor puts around it (BOS, EOS, a template's markers). Byte-level BPE and
/// byte-fallback tokenizers never make more than one token per byte of text.
pub const PROMPT_SPECIAL_TOKENS: u64 = 16;

/// The shortest line a dataset record can be, with the newline that separates it from the
/// next: `{"text":""}` is 11 bytes. So a dataset of `n` bytes holds at most
/// `(n + 1) / MIN_RECORD_BYTES` records.
pub const MIN_RECORD_BYTES: u64 = 12;

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
    #[error("the adapter's catalog name: {0}")]
    BadName(String),
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
        // A zero fee pays no worker anything, whatever its price: such a job could only
        // ever wait for its deadline.
        check(
            self.max_fee.0 >= 1,
            "max fee",
            "at least 1 credit",
            self.max_fee,
        )?;
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
            JobKind::Finetune(job) => {
                if let Some(why) = job.publish_as.as_deref().and_then(crate::check_name) {
                    return Err(InvalidJob::BadName(why));
                }
                job.params.validate()
            }
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
        check_generation(&self.sampling, self.max_tokens)
    }
}

/// The limits of how to generate, the same for a job and for `olc run infer`.
pub fn check_generation(sampling: &Sampling, max_tokens: u32) -> Result<(), InvalidJob> {
    check(
        (1..=MAX_GENERATED_TOKENS).contains(&max_tokens),
        "max_tokens",
        "between 1 and 65536",
        max_tokens,
    )?;
    if let Sampling::Sample {
        temperature, top_p, ..
    } = *sampling
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

impl TrainingParams {
    pub fn validate(&self) -> Result<(), InvalidJob> {
        check(
            (MIN_LORA_RANK..=MAX_LORA_RANK).contains(&self.rank),
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
            self.learning_rate.is_finite()
                && self.learning_rate > 0.0
                && self.learning_rate <= MAX_LEARNING_RATE,
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
            (1..=MAX_BATCH_SIZE).contains(&self.batch_size),
            "batch size",
            "between 1 and 4096",
            self.batch_size,
        )?;
        check(
            (1..=MAX_GRAD_ACCUM).contains(&self.grad_accum),
            "gradient accumulation",
            "between 1 and 4096",
            self.grad_accum,
        )?;
        if let Some(max_len) = self.max_len {
            check(
                (MIN_MAX_LEN..=MAX_MAX_LEN).contains(&max_len),
                "max_len",
                "between 2 and 131072 tokens",
                max_len,
            )?;
        }
        match self.length {
            TrainingLength::Steps(n) => check(
                (1..=MAX_TRAINING_STEPS).contains(&n),
                "steps",
                "between 1 and 10000000",
                n,
            )?,
            TrainingLength::Epochs(n) => check(
                (1..=MAX_EPOCHS).contains(&n),
                "epochs",
                "between 1 and 10000",
                n,
            )?,
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

    /// The longest record this fine-tune can train on: its own `max_len`, or the most the
    /// trainer's default can resolve to.
    pub fn declared_max_len(&self) -> u32 {
        self.max_len.unwrap_or(DEFAULT_TRAINING_MAX_LEN)
    }

    /// The most tokens the trainer can run through the model (what the worker meters):
    /// every optimizer step trains at most `batch_size × grad_accum` examples of at most
    /// [`TrainingParams::declared_max_len`] tokens, and an epoch trains each record once.
    /// With `Steps(n)`: `n × batch_size × grad_accum × max_len`. With `Epochs(e)`:
    /// `e × records × max_len`, where `records` is bounded by the dataset's size
    /// (`(dataset_bytes + 1) / MIN_RECORD_BYTES`); `None` when that size is not known.
    /// Saturating: a size past `u64` reads as unaffordable.
    pub fn declared_tokens(&self, dataset_bytes: Option<u64>) -> Option<u64> {
        let max_len = u64::from(self.declared_max_len());
        match self.length {
            TrainingLength::Steps(n) => Some(
                u64::from(n)
                    .saturating_mul(u64::from(self.batch_size))
                    .saturating_mul(u64::from(self.grad_accum))
                    .saturating_mul(max_len),
            ),
            TrainingLength::Epochs(e) => {
                let records = dataset_bytes?.saturating_add(1) / MIN_RECORD_BYTES;
                Some(u64::from(e).saturating_mul(records).saturating_mul(max_len))
            }
        }
    }
}

impl InferenceJob {
    /// The most tokens the engine can be metered at: the prompt's tokens (a text prompt:
    /// one per byte plus [`PROMPT_SPECIAL_TOKENS`]) and every token it may generate.
    pub fn declared_tokens(&self) -> u64 {
        let prompt = match &self.prompt {
            Prompt::Tokens(t) => t.len() as u64,
            Prompt::Text(t) => (t.len() as u64).saturating_add(PROMPT_SPECIAL_TOKENS),
        };
        prompt.saturating_add(u64::from(self.max_tokens))
    }
}

impl JobSpec {
    /// The job's declared size: an upper bound of the tokens of work one replica can be
    /// metered at, and so what its fee must be able to pay (see
    /// [`crate::Amount::price_of`]). A pure function of the spec, except that a fine-tune
    /// counted in epochs needs its dataset's size in bytes (`None` without it).
    pub fn declared_tokens(&self, dataset_bytes: Option<u64>) -> Option<u64> {
        match &self.kind {
            JobKind::Inference(job) => Some(job.declared_tokens()),
            JobKind::Finetune(job) => job.params.declared_tokens(dataset_bytes),
        }
    }

    /// Whether [`JobSpec::declared_tokens`] needs the dataset's size.
    pub fn declared_size_needs_dataset(&self) -> bool {
        matches!(
            &self.kind,
            JobKind::Finetune(FinetuneJob {
                params: TrainingParams {
                    length: TrainingLength::Epochs(_),
                    ..
                },
                ..
            })
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn params() -> TrainingParams {
        TrainingParams {
            rank: 8,
            alpha: 16.0,
            targets: vec![TargetModule::QProj],
            learning_rate: 0.01,
            weight_decay: 0.0,
            max_len: None,
            batch_size: 4,
            grad_accum: 1,
            length: TrainingLength::Steps(60),
            warmup_steps: 0,
            seed: 0,
            init_adapter: None,
        }
    }

    fn inference(prompt: Prompt, max_tokens: u32) -> JobSpec {
        JobSpec {
            kind: JobKind::Inference(InferenceJob {
                model: ContentId::of(b"m"),
                adapter: None,
                prompt,
                sampling: Sampling::Greedy,
                max_tokens,
                seed: 0,
            }),
            requirements: Requirements::default(),
            max_fee: Amount(1),
            verification: VerificationPolicy::Single,
            deadline_ms: 2,
            nonce: 0,
        }
    }

    /// Sets one training setting to a value.
    type Setter = fn(&mut TrainingParams, u32);

    fn out_of_range(p: &TrainingParams) -> String {
        match p.validate() {
            Err(e @ InvalidJob::OutOfRange { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        }
    }

    /// Each bound is the constant that names it: the constant itself passes, one past it
    /// is refused with the accepted range in words.
    #[test]
    fn training_settings_have_upper_bounds_that_name_the_range() {
        params().validate().unwrap();
        let cases: [(Setter, u32, u32, &str); 6] = [
            (
                |p, n| p.rank = n,
                MIN_LORA_RANK,
                MAX_LORA_RANK,
                "rank must be between 1 and 1024",
            ),
            (
                |p, n| p.batch_size = n,
                1,
                MAX_BATCH_SIZE,
                "batch size must be between 1 and 4096",
            ),
            (
                |p, n| p.grad_accum = n,
                1,
                MAX_GRAD_ACCUM,
                "gradient accumulation must be between 1 and 4096",
            ),
            (
                |p, n| p.max_len = Some(n),
                MIN_MAX_LEN,
                MAX_MAX_LEN,
                "max_len must be between 2 and 131072 tokens",
            ),
            (
                |p, n| p.length = TrainingLength::Steps(n),
                1,
                MAX_TRAINING_STEPS,
                "steps must be between 1 and 10000000",
            ),
            (
                |p, n| p.length = TrainingLength::Epochs(n),
                1,
                MAX_EPOCHS,
                "epochs must be between 1 and 10000",
            ),
        ];
        for (set, low, high, words) in cases {
            for ok in [low, high] {
                let mut p = params();
                set(&mut p, ok);
                p.validate().unwrap();
            }
            for bad in [low - 1, high + 1, u32::MAX] {
                let mut p = params();
                set(&mut p, bad);
                let err = out_of_range(&p);
                assert!(err.starts_with(words), "{err}");
                assert!(err.ends_with(&format!("got {bad}")), "{err}");
            }
        }
        for (lr, ok) in [
            (MAX_LEARNING_RATE, true),
            (1e-9, true),
            (0.0, false),
            (MAX_LEARNING_RATE + 1e-9, false),
            (f64::NAN, false),
        ] {
            let p = TrainingParams {
                learning_rate: lr,
                ..params()
            };
            assert_eq!(p.validate().is_ok(), ok, "{lr}");
            if !ok {
                assert!(out_of_range(&p).contains("a number in (0, 1]"));
            }
        }
    }

    #[test]
    fn a_zero_max_fee_is_invalid() {
        let mut spec = inference(Prompt::Tokens(vec![1]), 1);
        spec.validate(1).unwrap();
        spec.max_fee = Amount::ZERO;
        let err = spec.validate(1).unwrap_err().to_string();
        assert_eq!(err, "max fee must be at least 1 credit, got 0");
    }

    #[test]
    fn the_declared_size_bounds_every_token_a_job_can_be_metered_for() {
        // Inference: the prompt's tokens and every token it may generate.
        let spec = inference(Prompt::Tokens(vec![1, 2, 3]), 4);
        assert_eq!(spec.declared_tokens(None), Some(7));
        // A text prompt: a token per byte, plus the special tokens around it.
        let spec = inference(Prompt::Text("héllo".into()), 10);
        assert_eq!(
            spec.declared_tokens(None),
            Some(6 + PROMPT_SPECIAL_TOKENS + 10)
        );
        // A fine-tune by steps: steps × batch × grad_accum × max_len, the default max_len
        // being the trainer's largest default.
        let ft = |params: TrainingParams| JobSpec {
            kind: JobKind::Finetune(FinetuneJob {
                publish_as: None,
                model: ContentId::of(b"m"),
                dataset: ContentId::of(b"d"),
                params,
            }),
            ..inference(Prompt::Tokens(vec![1]), 1)
        };
        let spec = ft(params());
        assert_eq!(spec.declared_tokens(None), Some(60 * 4 * 2048));
        assert!(!spec.declared_size_needs_dataset());
        let spec = ft(TrainingParams {
            max_len: Some(100),
            grad_accum: 3,
            ..params()
        });
        assert_eq!(spec.declared_tokens(Some(5)), Some(60 * 4 * 3 * 100));
        // By epochs: each record once per epoch, the records bounded by the bytes.
        let spec = ft(TrainingParams {
            max_len: Some(100),
            length: TrainingLength::Epochs(3),
            ..params()
        });
        assert!(spec.declared_size_needs_dataset());
        assert_eq!(spec.declared_tokens(None), None);
        // 3 shortest records: `{"text":""}` twice with newlines, once without: 35 bytes.
        assert_eq!(spec.declared_tokens(Some(35)), Some(3 * 3 * 100));
        assert_eq!(spec.declared_tokens(Some(34)), Some(3 * 2 * 100));
        // Absurd sizes saturate rather than wrap.
        let spec = ft(TrainingParams {
            max_len: Some(MAX_MAX_LEN),
            batch_size: MAX_BATCH_SIZE,
            grad_accum: MAX_GRAD_ACCUM,
            length: TrainingLength::Steps(MAX_TRAINING_STEPS),
            ..params()
        });
        assert_eq!(spec.declared_tokens(None), Some(u64::MAX));
    }
}

//! Generation from a model directory: the one path both an inference job and
//! `olc run infer` take, so a job's tokens are what the command prints for the same flags.

use std::path::Path;

use olc_gpu::compute::Isa;
use olc_gpu::engine::{self, StopReason, generate};
use olc_gpu::model::Adapter;
use olc_protocol::{ContentId, Prompt, Sampling, check_generation, inference_commitment};

use crate::ExecError;
use crate::pool::LoadedModel;

/// What to generate and how.
#[derive(Debug, Clone, Copy)]
pub struct GenerateRequest<'a> {
    pub model_dir: &'a Path,
    pub adapter_dir: Option<&'a Path>,
    pub prompt: &'a Prompt,
    pub sampling: Sampling,
    /// The sampling stream's seed (unused when greedy).
    pub seed: u64,
    pub max_tokens: u32,
}

/// How to run the engine; none of it changes a single output bit.
#[derive(Debug, Clone, Copy)]
pub struct EngineChoice {
    pub isa: Isa,
    pub threads: usize,
    /// Feed the prompt in chunks of this many tokens (0: whole).
    pub prefill_chunk: usize,
}

impl EngineChoice {
    /// This CPU's best instruction set, the whole prompt at once.
    pub fn detect(threads: usize) -> Self {
        Self {
            isa: Isa::detect(),
            threads,
            prefill_chunk: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub prompt_tokens: Vec<u32>,
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    /// The logits each generated token was chosen from, `[tokens.len(), vocab]`.
    pub logits: Vec<f32>,
    /// BLAKE3 over the generated token ids (`inference_commitment`).
    pub commitment: ContentId,
}

/// Loads the model (and adapter), tokenizes the prompt and generates.
pub fn generate_text(
    request: &GenerateRequest<'_>,
    choice: &EngineChoice,
) -> Result<Generated, ExecError> {
    let sampling = engine_sampling(request)?;
    let model = LoadedModel::load(request.model_dir, choice, usize::MAX)?;
    generate_on(&model, request, &sampling, choice.prefill_chunk)
}

/// [`generate_text`] on a model already loaded (a resident one, from the pool); the
/// request's `model_dir` is not read again.
pub fn generate_loaded(
    model: &LoadedModel,
    request: &GenerateRequest<'_>,
    prefill_chunk: usize,
) -> Result<Generated, ExecError> {
    let sampling = engine_sampling(request)?;
    generate_on(model, request, &sampling, prefill_chunk)
}

/// The request's sampling as the engine takes it, refused before any loading if invalid.
fn engine_sampling(request: &GenerateRequest<'_>) -> Result<engine::Sampling, ExecError> {
    check_generation(&request.sampling, request.max_tokens)
        .map_err(|e| ExecError::Settings(e.to_string()))?;
    let sampling = match request.sampling {
        Sampling::Greedy => engine::Sampling::Greedy,
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } => engine::Sampling::Sample {
            temperature,
            top_k,
            top_p,
            seed: request.seed,
        },
    };
    sampling.check().map_err(ExecError::Settings)?;
    Ok(sampling)
}

fn generate_on(
    model: &LoadedModel,
    request: &GenerateRequest<'_>,
    sampling: &engine::Sampling,
    prefill_chunk: usize,
) -> Result<Generated, ExecError> {
    let adapter = request
        .adapter_dir
        .map(|dir| Adapter::load(dir, model.engine.config()).map_err(ExecError::Adapter))
        .transpose()?;
    let prompt_tokens = match request.prompt {
        Prompt::Text(text) => model.tokenizer.encode(text)?,
        Prompt::Tokens(tokens) => tokens.clone(),
    };
    let generation = generate(
        &model.engine,
        adapter.as_ref(),
        &prompt_tokens,
        request.max_tokens as usize,
        prefill_chunk,
        sampling,
    )?;
    let text = model.tokenizer.decode(&generation.tokens, true)?;
    Ok(Generated {
        commitment: inference_commitment(&generation.tokens),
        prompt_tokens,
        tokens: generation.tokens,
        text,
        stop: generation.stop,
        logits: generation.logits,
    })
}

//! Generation from a model directory: the one path both an inference job and
//! `olc run infer` take, so a job's tokens are what the command prints for the same flags.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use olc_gpu::compute::Isa;
use olc_gpu::engine::{self, StopReason, generate};
use olc_gpu::model::Adapter;
use olc_protocol::{ContentId, Prompt, Sampling, check_generation, inference_commitment};

use crate::detokenize::Detokenizer;
use crate::pool::{LoadedModel, Resident};
use crate::serve::batcher::{Failure, GenerationRequest, collect};
use crate::{ExecError, Watch};

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

/// [`generate_text`] on a resident model, batched with whatever else it is generating:
/// the same tokens, bit for bit. `stop` is asked between steps and ends the generation
/// with its error; `watch` hears each token as soon as it is sampled and the text as it
/// completes, and its [`Watch::token_limit`] ends the generation early (successfully,
/// with that many tokens). The request's `model_dir` and `adapter_dir` are not read (the
/// adapter comes loaded); the result has no logits.
pub fn generate_served(
    resident: &Resident,
    request: &GenerateRequest<'_>,
    adapter: Option<(ContentId, Arc<Adapter>)>,
    stop: &dyn Fn() -> Option<ExecError>,
    watch: &mut dyn Watch,
) -> Result<Generated, ExecError> {
    let sampling = engine_sampling(request)?;
    let model = &resident.model;
    let prompt_tokens = encode_prompt(model, request.prompt)?;
    let (events, heard) = mpsc::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    resident
        .batcher
        .submit(GenerationRequest {
            prompt: prompt_tokens.clone(),
            adapter: adapter.map(|(id, a)| (*id.as_bytes(), a)),
            sampling,
            max_tokens: request.max_tokens as usize,
            cancel: cancel.clone(),
            events,
        })
        .map_err(|_| ExecError::Serving("the model's batcher has stopped".into()))?;
    let mut why_stopped = None;
    let mut so_far = Vec::new();
    let mut detokenizer = Detokenizer::default();
    let watch = std::cell::RefCell::new(watch);
    let outcome = collect(
        &heard,
        &cancel,
        &mut || {
            why_stopped = stop();
            why_stopped.is_some()
        },
        &mut |t| {
            let mut watch = watch.borrow_mut();
            watch.token(t);
            so_far.push(t);
            if let Some(piece) = detokenizer.next_piece(&model.tokenizer, &so_far) {
                watch.text(&piece);
            }
        },
        &|| watch.borrow().token_limit() as usize,
    );
    let (tokens, stop) = match outcome {
        Ok(done) => done,
        Err(None) => return Err(why_stopped.unwrap_or(ExecError::Cancelled)),
        Err(Some(Failure::Request(e))) => return Err(ExecError::Engine(e)),
        Err(Some(Failure::Engine(e))) => return Err(ExecError::Serving(e)),
    };
    let text = model.tokenizer.decode(&tokens, true)?;
    // What the window held back (an unfinished character at the very end) is the rest of
    // the text; an output cut shorter than what was heard has no rest to add.
    if so_far.len() == tokens.len()
        && let Some(rest) = detokenizer.rest(&text)
    {
        watch.borrow_mut().text(rest);
    }
    Ok(Generated {
        commitment: inference_commitment(&tokens),
        prompt_tokens,
        tokens,
        text,
        stop,
        logits: Vec::new(),
    })
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

/// The prompt's token ids: text through the model's tokenizer, ids as given.
fn encode_prompt(model: &LoadedModel, prompt: &Prompt) -> Result<Vec<u32>, ExecError> {
    Ok(match prompt {
        Prompt::Text(text) => model.tokenizer.encode(text)?,
        Prompt::Tokens(tokens) => tokens.clone(),
    })
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
    let prompt_tokens = encode_prompt(model, request.prompt)?;
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

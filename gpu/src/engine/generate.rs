//! Generation: prefill, then one token at a time until EOS or the token budget.

use super::sample::Sampling;
use super::{Engine, EngineError};
use crate::model::Adapter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    MaxTokens,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    /// The logits each generated token was chosen from, `[tokens.len(), vocab]`.
    pub logits: Vec<f32>,
    pub stop: StopReason,
}

/// Greedy decoding: [`generate`] with [`Sampling::Greedy`].
pub fn generate_greedy(
    engine: &Engine,
    adapter: Option<&Adapter>,
    prompt: &[u32],
    max_tokens: usize,
    chunk: usize,
) -> Result<Generation, EngineError> {
    generate(
        engine,
        adapter,
        prompt,
        max_tokens,
        chunk,
        &Sampling::Greedy,
    )
}

/// Prefills `prompt` in chunks of `chunk` tokens (0 = whole), then chooses tokens with
/// `sampling` until an EOS token of the model or `max_tokens`.
pub fn generate(
    engine: &Engine,
    adapter: Option<&Adapter>,
    prompt: &[u32],
    max_tokens: usize,
    chunk: usize,
    sampling: &Sampling,
) -> Result<Generation, EngineError> {
    sampling.check().map_err(EngineError::BadSampling)?;
    if prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    let mut cache = engine.new_cache();
    let step = if chunk == 0 { prompt.len() } else { chunk };
    let mut last = Vec::new();
    for piece in prompt.chunks(step) {
        last = engine.forward(piece, &mut cache, adapter, false)?;
    }
    let mut tokens = Vec::new();
    let mut logits = Vec::new();
    let eos = &engine.config().eos_token_ids;
    while tokens.len() < max_tokens {
        let next = sampling.choose(&last, (prompt.len() + tokens.len()) as u64);
        logits.extend_from_slice(&last);
        tokens.push(next);
        if eos.contains(&next) {
            return Ok(Generation {
                tokens,
                logits,
                stop: StopReason::Eos,
            });
        }
        if tokens.len() == max_tokens {
            break;
        }
        last = engine.forward(&[next], &mut cache, adapter, false)?;
    }
    Ok(Generation {
        tokens,
        logits,
        stop: StopReason::MaxTokens,
    })
}

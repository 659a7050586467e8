//! Greedy decoding. Seeded sampling (temperature, top-k, top-p with a ChaCha stream per
//! position) is not implemented yet; callers must refuse those options.

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

/// The highest logit; ties go to the lowest token id, so the choice is one bit pattern.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Prefills `prompt` in chunks of `chunk` tokens (0 = whole), then decodes greedily until
/// an EOS token of the model or `max_tokens`.
pub fn generate_greedy(
    engine: &Engine,
    adapter: Option<&Adapter>,
    prompt: &[u32],
    max_tokens: usize,
    chunk: usize,
) -> Result<Generation, EngineError> {
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
        let next = argmax(&last);
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

//! Generation: prefill, then one token at a time until EOS or the token budget.

use super::sample::Sampling;
use super::{Engine, EngineError};
use crate::compute::Backend;
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
pub fn generate_greedy<B: Backend>(
    engine: &Engine<B>,
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
/// `sampling` until an EOS token of the model or `max_tokens`: a batch of one.
pub fn generate<B: Backend>(
    engine: &Engine<B>,
    adapter: Option<&Adapter>,
    prompt: &[u32],
    max_tokens: usize,
    chunk: usize,
    sampling: &Sampling,
) -> Result<Generation, EngineError> {
    let request = Request {
        prompt,
        adapter,
        sampling: *sampling,
        max_tokens,
    };
    let mut out = generate_batch(engine, std::slice::from_ref(&request), chunk)?;
    out.pop().ok_or(EngineError::EmptyPrompt)
}

/// One sequence of a batched generation.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub prompt: &'a [u32],
    pub adapter: Option<&'a Adapter>,
    pub sampling: Sampling,
    pub max_tokens: usize,
}

/// Generates for many sequences at once: prompts are prefilled together (in chunks of
/// `chunk` tokens per sequence, 0 = whole), then every step decodes one token for each
/// sequence still running, in one batched forward pass. Each sequence's result is
/// bit-identical to generating it alone.
pub fn generate_batch<B: Backend>(
    engine: &Engine<B>,
    requests: &[Request<'_>],
    chunk: usize,
) -> Result<Vec<Generation>, EngineError> {
    for r in requests {
        r.sampling.check().map_err(EngineError::BadSampling)?;
        if r.prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
    }
    // Each cache holds what its sequence can reach, not the engine's whole context: a
    // resident engine is sized for the model's context, a request rarely needs it.
    let mut caches: Vec<_> = requests
        .iter()
        .map(|r| engine.new_cache_for(r.prompt.len().saturating_add(r.max_tokens)))
        .collect();
    let mut last: Vec<Vec<f32>> = vec![Vec::new(); requests.len()];
    let longest = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
    let step = if chunk == 0 { longest.max(1) } else { chunk };
    let mut offset = 0;
    while offset < longest {
        let mut items = Vec::new();
        let mut owners = Vec::new();
        for (i, (r, cache)) in requests.iter().zip(caches.iter_mut()).enumerate() {
            if offset < r.prompt.len() {
                let end = (offset + step).min(r.prompt.len());
                items.push(super::BatchItem {
                    tokens: &r.prompt[offset..end],
                    cache,
                    adapter: r.adapter,
                });
                owners.push(i);
            }
        }
        for (i, logits) in owners
            .into_iter()
            .zip(engine.forward_batch(&mut items, false)?)
        {
            last[i] = logits;
        }
        offset += step;
    }

    let mut out: Vec<Generation> = requests
        .iter()
        .map(|_| Generation {
            tokens: Vec::new(),
            logits: Vec::new(),
            stop: StopReason::MaxTokens,
        })
        .collect();
    let mut running: Vec<bool> = requests.iter().map(|r| r.max_tokens > 0).collect();
    let eos = &engine.config().eos_token_ids;
    loop {
        let mut next_tokens = vec![0u32; requests.len()];
        for (i, r) in requests.iter().enumerate() {
            if !running[i] {
                continue;
            }
            let g = &mut out[i];
            let next = r
                .sampling
                .choose(&last[i], (r.prompt.len() + g.tokens.len()) as u64);
            g.logits.extend_from_slice(&last[i]);
            g.tokens.push(next);
            next_tokens[i] = next;
            if eos.contains(&next) {
                g.stop = StopReason::Eos;
                running[i] = false;
            } else if g.tokens.len() == r.max_tokens {
                running[i] = false;
            }
        }
        let mut items = Vec::new();
        let mut owners = Vec::new();
        for (i, cache) in caches.iter_mut().enumerate() {
            if running[i] {
                items.push(super::BatchItem {
                    tokens: std::slice::from_ref(&next_tokens[i]),
                    cache,
                    adapter: requests[i].adapter,
                });
                owners.push(i);
            }
        }
        if items.is_empty() {
            return Ok(out);
        }
        for (i, logits) in owners
            .into_iter()
            .zip(engine.forward_batch(&mut items, false)?)
        {
            last[i] = logits;
        }
    }
}

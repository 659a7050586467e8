//! The forward pass of a Llama-family model (Llama, Mistral, Qwen2) with optional LoRA,
//! built only from the canonical ops of a [`Backend`] (the CPU one unless told otherwise),
//! so that its output bits depend on neither the backend, nor the SIMD path, nor the thread
//! count, nor how a prompt is chunked.
//!
//! Each token's row goes through every op independently of the other rows of its chunk
//! (matmul rows never mix; attention reads the cache up to the row's own position), which
//! is what makes chunked prefill give the same bits as whole prefill.

mod adapter_cache;
mod cache;
mod generate;
pub(crate) mod layers;
mod resident;
mod sample;

pub use adapter_cache::{AdapterCache, CacheError, adapter_bytes};
pub use cache::KvCache;
pub use generate::{Generation, Request, StopReason, generate, generate_batch, generate_greedy};
pub use sample::{GREEDY_TEMPERATURE_THRESHOLD, Sampling, argmax};

use crate::compute::{
    self, AlignedVec, Backend, ComputeError, CpuBackend, Isa, RopeTable, WeightShape,
};
use crate::model::{Adapter, LinearModule, LlamaWeights, ModelConfig};
use resident::Resident;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Compute(#[from] ComputeError),
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error("the sequence would reach {needed} positions; this engine allows {max}")]
    TooLong { needed: usize, max: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the KV cache was made for another model shape")]
    CacheMismatch,
    #[error("bad sampling settings: {0}")]
    BadSampling(String),
}

/// One sequence's share of a batched forward pass.
#[derive(Debug)]
pub struct BatchItem<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub adapter: Option<&'a Adapter>,
}

/// How the CPU engine computes: never what it computes.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub isa: Isa,
    pub threads: usize,
    /// Longest sequence (prompt + generated) the RoPE table and caches are sized for.
    pub max_positions: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            isa: Isa::detect(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_positions: 4096,
        }
    }
}

/// A loaded model, ready to run on backend `B`.
#[derive(Debug)]
pub struct Engine<B: Backend = CpuBackend> {
    config: ModelConfig,
    /// Norms, biases and every matrix's shape; the matrices' values moved to `resident`.
    weights: LlamaWeights,
    resident: Resident<B>,
    rope: RopeTable,
    max_positions: usize,
    backend: B,
}

impl Engine<CpuBackend> {
    /// A model on the CPU backend with `options`' instruction set and threads.
    pub fn new(
        config: ModelConfig,
        weights: LlamaWeights,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
        let backend = CpuBackend::new(options.isa, options.threads.max(1))?;
        Self::with_backend(config, weights, backend, options.max_positions)
    }

    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            isa: self.backend.isa(),
            threads: self.backend.threads(),
            max_positions: self.max_positions,
        }
    }
}

impl<B: Backend> Engine<B> {
    /// A model on `backend`, for sequences of up to `max_positions` (capped by the model's
    /// own limit).
    pub fn with_backend(
        config: ModelConfig,
        mut weights: LlamaWeights,
        backend: B,
        max_positions: usize,
    ) -> Result<Self, EngineError> {
        let max_positions = max_positions.min(config.max_sequence_len()).max(1);
        let scaling = config
            .rope_scaling
            .as_ref()
            .map(|s| compute::Llama3RopeScaling {
                factor: s.factor,
                low_freq_factor: s.low_freq_factor,
                high_freq_factor: s.high_freq_factor,
                original_max_position_embeddings: s.original_max_position_embeddings as f64,
            });
        let rope = RopeTable::new(
            config.head_dim,
            config.rope_theta,
            max_positions,
            scaling.as_ref(),
        )?;
        let resident = Resident::take(&backend, &mut weights)?;
        Ok(Self {
            config,
            weights,
            resident,
            rope,
            max_positions,
            backend,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Longest sequence (prompt + generated) this engine runs.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Norms, biases and every matrix's shape. The matmul weights live in the backend:
    /// see [`Engine::linear`], [`Engine::head`] and [`Engine::embedding_table`].
    pub fn weights(&self) -> &LlamaWeights {
        &self.weights
    }

    /// One projection's `[out, in]` weight.
    pub fn linear(&self, layer: usize, m: LinearModule) -> Option<&B::Weights> {
        self.resident.linear(layer, m)
    }

    /// The LM head `[vocab, hidden]`.
    pub fn head(&self) -> &B::Weights {
        self.resident.head()
    }

    /// The input embedding table `[vocab, hidden]` (the LM head when tied).
    pub fn embedding_table(&self) -> &B::Weights {
        self.resident.embeddings()
    }

    pub fn rope(&self) -> &RopeTable {
        &self.rope
    }

    pub fn new_cache(&self) -> KvCache {
        self.new_cache_for(self.max_positions)
    }

    /// A cache for sequences of up to `positions` (capped by the engine's limit).
    pub fn new_cache_for(&self, positions: usize) -> KvCache {
        KvCache::new(
            self.config.num_hidden_layers,
            self.config.num_key_value_heads * self.config.head_dim,
            positions.min(self.max_positions),
        )
    }

    /// Runs `tokens` at the positions following what `cache` holds, appends their keys and
    /// values to it, and returns logits: `[tokens.len(), vocab]` if `all_logits`, else
    /// only the last token's `[vocab]`.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        adapter: Option<&Adapter>,
        all_logits: bool,
    ) -> Result<Vec<f32>, EngineError> {
        let mut batch = [BatchItem {
            tokens,
            cache,
            adapter,
        }];
        let mut out = self.forward_batch(&mut batch, all_logits)?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Runs several sequences at once. Their rows share every base-weight matmul (one pass
    /// over the weights for the whole batch); each sequence adds its own adapter's
    /// low-rank product and attends to its own cache. Rows never mix, so a sequence's
    /// output bits do not depend on what else is in the batch. Returns, per item, the
    /// logits of its last token (or of all its tokens if `all_logits`).
    pub fn forward_batch(
        &self,
        batch: &mut [BatchItem<'_>],
        all_logits: bool,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        // One entry into the backend's context per pass, not one per op: see `Backend::run`.
        self.backend
            .run(|| self.forward_in_context(batch, all_logits))?
    }

    fn forward_in_context(
        &self,
        batch: &mut [BatchItem<'_>],
        all_logits: bool,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let trunk = self.run_layers(batch, None)?;
        if trunk.x.is_empty() {
            return Ok(Vec::new());
        }
        let b = &self.backend;
        let hidden = self.config.hidden_size;
        let eps = self.config.rms_norm_eps as f32;
        // Final norm and LM head over the rows whose logits are wanted, in one matmul.
        let wanted: Vec<(usize, usize)> = trunk
            .spans
            .iter()
            .map(|s| {
                if all_logits {
                    (s.row0, s.rows)
                } else {
                    (s.row0 + s.rows - 1, 1)
                }
            })
            .collect();
        let n: usize = wanted.iter().map(|w| w.1).sum();
        let mut normed = AlignedVec::zeros(n * hidden);
        let mut at = 0;
        for &(row0, rows) in &wanted {
            let src = &trunk.x[row0 * hidden..(row0 + rows) * hidden];
            b.rmsnorm(
                src,
                &self.weights.norm,
                eps,
                &mut normed[at..at + src.len()],
            )?;
            at += src.len();
        }
        let head = self.head();
        let vocab = head.rows();
        let mut logits = vec![0.0f32; n * vocab];
        b.matmul(&normed, n, head, None, &mut logits)?;
        let mut out = Vec::with_capacity(batch.len());
        let mut at = 0;
        for &(_, rows) in &wanted {
            out.push(logits[at * vocab..(at + rows) * vocab].to_vec());
            at += rows;
        }
        Ok(out)
    }
}

//! The forward pass of a Llama-family model (Llama, Mistral, Qwen2) with optional LoRA,
//! built only from the canonical kernels of [`crate::compute`], so that its output bits
//! depend on neither the SIMD path, nor the thread count, nor how a prompt is chunked.
//!
//! Each token's row goes through every op independently of the other rows of its chunk
//! (matmul rows never mix; attention reads the cache up to the row's own position), which
//! is what makes chunked prefill give the same bits as whole prefill.

mod cache;
mod generate;
mod sample;

pub use cache::KvCache;
pub use generate::{Generation, StopReason, generate, generate_greedy};
pub use sample::{Sampling, argmax};

use crate::compute::{self, ComputeError, Isa, RopeTable};
use crate::model::{Adapter, LinearModule, LlamaWeights, Matrix, ModelConfig};

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

/// How the engine computes: never what it computes.
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

/// A loaded model, ready to run.
#[derive(Debug)]
pub struct Engine {
    config: ModelConfig,
    weights: LlamaWeights,
    rope: RopeTable,
    options: EngineOptions,
}

impl Engine {
    pub fn new(
        config: ModelConfig,
        weights: LlamaWeights,
        mut options: EngineOptions,
    ) -> Result<Self, EngineError> {
        options.max_positions = options.max_positions.min(config.max_sequence_len()).max(1);
        options.threads = options.threads.max(1);
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
            options.max_positions,
            scaling.as_ref(),
        )?;
        Ok(Self {
            config,
            weights,
            rope,
            options,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.config.num_hidden_layers,
            self.config.num_key_value_heads * self.config.head_dim,
            self.options.max_positions,
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
        let c = &self.config;
        let (isa, threads) = (self.options.isa, self.options.threads);
        let t = tokens.len();
        if t == 0 {
            return Err(EngineError::EmptyPrompt);
        }
        if !cache.fits(c.num_hidden_layers, c.num_key_value_heads * c.head_dim) {
            return Err(EngineError::CacheMismatch);
        }
        let start = cache.len();
        let needed = start + t;
        if needed > cache.capacity().min(self.options.max_positions) {
            return Err(EngineError::TooLong {
                needed,
                max: cache.capacity().min(self.options.max_positions),
            });
        }
        let hidden = c.hidden_size;
        let (hd, q_dim, kv_dim) = (c.head_dim, c.q_dim(), c.num_key_value_heads * c.head_dim);
        let eps = c.rms_norm_eps as f32;

        let mut x = vec![0.0f32; t * hidden];
        for (row, &tok) in x.chunks_exact_mut(hidden).zip(tokens) {
            let id = tok as usize;
            if id >= c.vocab_size {
                return Err(EngineError::TokenOutOfRange {
                    token: tok,
                    vocab: c.vocab_size,
                });
            }
            row.copy_from_slice(&self.weights.embed_tokens.data[id * hidden..][..hidden]);
        }
        let mut xn = vec![0.0f32; t * hidden];
        let mut q = vec![0.0f32; t * q_dim];
        let mut k = vec![0.0f32; t * kv_dim];
        let mut v = vec![0.0f32; t * kv_dim];
        let mut attn = vec![0.0f32; t * q_dim];
        let mut proj = vec![0.0f32; t * hidden];
        let mut gate = vec![0.0f32; t * c.intermediate_size];
        let mut up = vec![0.0f32; t * c.intermediate_size];
        let mut scores = vec![0.0f32; needed];

        for (l, layer) in self.weights.layers.iter().enumerate() {
            let lin = |m: LinearModule, input: &[f32], bias: Option<&[f32]>, out: &mut [f32]| {
                self.linear(layer.linear(m), l, m, adapter, input, t, bias, out)
            };
            rmsnorm_rows(isa, &x, &layer.input_layernorm, eps, &mut xn)?;
            lin(LinearModule::QProj, &xn, layer.q_bias.as_deref(), &mut q)?;
            lin(LinearModule::KProj, &xn, layer.k_bias.as_deref(), &mut k)?;
            lin(LinearModule::VProj, &xn, layer.v_bias.as_deref(), &mut v)?;
            for i in 0..t {
                self.rope.apply(start + i, &mut q[i * q_dim..][..q_dim])?;
                self.rope.apply(start + i, &mut k[i * kv_dim..][..kv_dim])?;
            }
            cache.write(l, start, &k, &v);
            let (kc, vc) = cache.layer(l);
            for i in 0..t {
                let visible = start + i + 1;
                for h in 0..c.num_attention_heads {
                    let kvh = compute::kv_head(h, c.num_attention_heads, c.num_key_value_heads)?;
                    let qh = &q[i * q_dim + h * hd..][..hd];
                    let out = &mut attn[i * q_dim + h * hd..][..hd];
                    compute::attention(
                        isa,
                        qh,
                        &kc[kvh * hd..],
                        &vc[kvh * hd..],
                        visible,
                        kv_dim,
                        &mut scores,
                        out,
                    )?;
                }
            }
            lin(LinearModule::OProj, &attn, None, &mut proj)?;
            add_in_place(&mut x, &proj);

            rmsnorm_rows(isa, &x, &layer.post_attention_layernorm, eps, &mut xn)?;
            lin(LinearModule::GateProj, &xn, None, &mut gate)?;
            lin(LinearModule::UpProj, &xn, None, &mut up)?;
            let mut act = vec![0.0f32; gate.len()];
            compute::swiglu(isa, &gate, &up, &mut act)?;
            lin(LinearModule::DownProj, &act, None, &mut proj)?;
            add_in_place(&mut x, &proj);
        }
        cache.advance(t);

        let rows: &[f32] = if all_logits {
            &x
        } else {
            &x[(t - 1) * hidden..]
        };
        let n = rows.len() / hidden;
        let mut normed = vec![0.0f32; rows.len()];
        rmsnorm_rows(isa, rows, &self.weights.norm, eps, &mut normed)?;
        let head = self.weights.lm_head();
        let mut logits = vec![0.0f32; n * head.rows];
        compute::matmul(
            isa,
            threads,
            &normed,
            n,
            hidden,
            &head.data,
            head.rows,
            None,
            &mut logits,
        )?;
        Ok(logits)
    }

    /// `out = input · Wᵀ (+ bias)`, plus the adapter's `(input · Aᵀ · Bᵀ) · scale` for this
    /// module if it has one: added after the base product, as PEFT does.
    #[allow(clippy::too_many_arguments)] // one call site pattern; a struct would only rename them
    fn linear(
        &self,
        w: &Matrix,
        layer: usize,
        module: LinearModule,
        adapter: Option<&Adapter>,
        input: &[f32],
        rows: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<(), EngineError> {
        let (isa, threads) = (self.options.isa, self.options.threads);
        compute::matmul(
            isa, threads, input, rows, w.cols, &w.data, w.rows, bias, out,
        )?;
        if let Some(lora) = adapter.and_then(|a| a.modules.get(&(layer, module))) {
            let r = lora.a.rows;
            let mut low = vec![0.0f32; rows * r];
            compute::matmul(
                isa,
                threads,
                input,
                rows,
                lora.a.cols,
                &lora.a.data,
                r,
                None,
                &mut low,
            )?;
            let mut delta = vec![0.0f32; rows * lora.b.rows];
            compute::matmul(
                isa,
                threads,
                &low,
                rows,
                r,
                &lora.b.data,
                lora.b.rows,
                None,
                &mut delta,
            )?;
            for (o, d) in out.iter_mut().zip(&delta) {
                *o += *d * lora.scale;
            }
        }
        Ok(())
    }
}

fn rmsnorm_rows(
    isa: Isa,
    x: &[f32],
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), ComputeError> {
    let n = weight.len();
    for (row, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        compute::rmsnorm(isa, row, weight, eps, o)?;
    }
    Ok(())
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += *b;
    }
}

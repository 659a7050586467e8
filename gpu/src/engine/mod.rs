//! The forward pass of a Llama-family model (Llama, Mistral, Qwen2) with optional LoRA,
//! built only from the canonical kernels of [`crate::compute`], so that its output bits
//! depend on neither the SIMD path, nor the thread count, nor how a prompt is chunked.
//!
//! Each token's row goes through every op independently of the other rows of its chunk
//! (matmul rows never mix; attention reads the cache up to the row's own position), which
//! is what makes chunked prefill give the same bits as whole prefill.

mod adapter_cache;
mod cache;
mod generate;
mod sample;

pub use adapter_cache::{AdapterCache, CacheError, adapter_bytes};
pub use cache::KvCache;
pub use generate::{Generation, Request, StopReason, generate, generate_batch, generate_greedy};
pub use sample::{GREEDY_TEMPERATURE_THRESHOLD, Sampling, argmax};

use std::ops::Range;

use rayon::prelude::*;

use crate::compute::{self, AlignedVec, ComputeError, Isa, RopeTable};
use crate::model::{Adapter, LinearModule, LlamaWeights, LoraWeights, ModelConfig};

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
    /// Norms, biases and untied input embeddings; the matmul weights moved to `packed`.
    weights: LlamaWeights,
    packed: Packed,
    rope: RopeTable,
    options: EngineOptions,
}

/// Every matmul weight (each layer's seven projections, then the LM head) in one arena,
/// each matrix starting on a 64-byte boundary and the whole backed by huge pages where
/// possible (see [`AlignedVec`]): loaded `Vec`s start 16 bytes past a cache line and sit
/// on 4 KiB pages, which costs prefill split loads and decode TLB misses. Same values, so
/// same bits.
#[derive(Debug)]
struct Packed {
    arena: AlignedVec,
    /// Per layer, each projection's place in `arena`, indexed by `LinearModule as usize`.
    layers: Vec<[Range<usize>; 7]>,
    /// `[vocab, hidden]`; with tied embeddings also the input embedding table.
    head: Range<usize>,
}

impl Packed {
    /// Moves the matrices' data out of `weights` one by one (leaving them empty, shapes
    /// intact), so that at most one matrix exists twice at any moment.
    fn take(weights: &mut LlamaWeights) -> Self {
        let head = match weights.lm_head.as_mut() {
            Some(m) => m,
            None => &mut weights.embed_tokens,
        };
        let total: usize = weights
            .layers
            .iter()
            .flat_map(|l| LinearModule::ALL.map(|m| l.linear(m).data.len()))
            .chain([head.data.len()])
            .map(|n| n.next_multiple_of(16))
            .sum();
        let mut arena = AlignedVec::with_capacity(total);
        let mut put = |m: &mut Vec<f32>| arena.push_aligned(&std::mem::take(m));
        let layers = weights
            .layers
            .iter_mut()
            .map(|l| {
                [
                    &mut l.q_proj,
                    &mut l.k_proj,
                    &mut l.v_proj,
                    &mut l.o_proj,
                    &mut l.gate_proj,
                    &mut l.up_proj,
                    &mut l.down_proj,
                ]
                .map(|m| put(&mut m.data))
            })
            .collect();
        let head = put(&mut head.data);
        Packed {
            arena,
            layers,
            head,
        }
    }
}

impl Engine {
    pub fn new(
        config: ModelConfig,
        mut weights: LlamaWeights,
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
        let packed = Packed::take(&mut weights);
        Ok(Self {
            config,
            weights,
            packed,
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

    /// Norms, biases and every matrix's shape. The matmul weights' values live in the
    /// engine's aligned arena: read them through [`Engine::linear_weight`],
    /// [`Engine::head_weight`] and [`Engine::embeddings`].
    pub fn weights(&self) -> &LlamaWeights {
        &self.weights
    }

    /// One projection's `[out, in]` weight values.
    pub fn linear_weight(&self, layer: usize, m: LinearModule) -> &[f32] {
        self.packed
            .layers
            .get(layer)
            .map_or(&[], |l| &self.packed.arena[l[m as usize].clone()])
    }

    /// The LM head `[vocab, hidden]`.
    pub fn head_weight(&self) -> &[f32] {
        &self.packed.arena[self.packed.head.clone()]
    }

    /// The input embedding table `[vocab, hidden]` (the LM head's values when tied).
    pub fn embeddings(&self) -> &[f32] {
        match self.weights.lm_head {
            Some(_) => &self.weights.embed_tokens.data,
            None => self.head_weight(),
        }
    }

    pub fn rope(&self) -> &RopeTable {
        &self.rope
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
        // One hand-off to the thread pool per pass, not one per matmul: see `in_pool`.
        compute::in_pool(self.options.threads, || {
            self.forward_in_pool(batch, all_logits)
        })?
    }

    fn forward_in_pool(
        &self,
        batch: &mut [BatchItem<'_>],
        all_logits: bool,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let c = &self.config;
        let (isa, threads) = (self.options.isa, self.options.threads);
        let hidden = c.hidden_size;
        let (q_dim, kv_dim) = (c.q_dim(), c.num_key_value_heads * c.head_dim);
        let eps = c.rms_norm_eps as f32;
        let limit = self.options.max_positions;

        // Where each item's rows sit in the batch, and the position of its first token.
        let mut spans = Vec::with_capacity(batch.len());
        let mut t = 0;
        let mut longest = 0;
        for item in batch.iter() {
            if item.tokens.is_empty() {
                return Err(EngineError::EmptyPrompt);
            }
            if !item.cache.fits(c.num_hidden_layers, kv_dim) {
                return Err(EngineError::CacheMismatch);
            }
            let start = item.cache.len();
            let needed = start + item.tokens.len();
            let max = item.cache.capacity().min(limit);
            if needed > max {
                return Err(EngineError::TooLong { needed, max });
            }
            longest = longest.max(needed);
            spans.push((t, item.tokens.len(), start));
            t += item.tokens.len();
        }
        if t == 0 {
            return Ok(Vec::new());
        }

        let embeddings = self.embeddings();
        let mut x = vec![0.0f32; t * hidden];
        let all_tokens = batch.iter().flat_map(|item| item.tokens.iter());
        for (row, &tok) in x.chunks_exact_mut(hidden).zip(all_tokens) {
            let id = tok as usize;
            if id >= c.vocab_size {
                return Err(EngineError::TokenOutOfRange {
                    token: tok,
                    vocab: c.vocab_size,
                });
            }
            row.copy_from_slice(&embeddings[id * hidden..][..hidden]);
        }
        let mut xn = vec![0.0f32; t * hidden];
        let mut q = vec![0.0f32; t * q_dim];
        let mut k = vec![0.0f32; t * kv_dim];
        let mut v = vec![0.0f32; t * kv_dim];
        let mut attn = vec![0.0f32; t * q_dim];
        let mut proj = vec![0.0f32; t * hidden];
        let mut gate = vec![0.0f32; t * c.intermediate_size];
        let mut up = vec![0.0f32; t * c.intermediate_size];
        let mut act = vec![0.0f32; t * c.intermediate_size];
        let adapters: Vec<Option<&Adapter>> = batch.iter().map(|item| item.adapter).collect();

        for (l, layer) in self.weights.layers.iter().enumerate() {
            let lin = |m: LinearModule, input: &[f32], bias: Option<&[f32]>, out: &mut [f32]| {
                let w = layer.linear(m);
                let data = self.linear_weight(l, m);
                compute::matmul(isa, threads, input, t, w.cols, data, w.rows, bias, out)?;
                // Each sequence's low-rank product writes only its own rows, so they run
                // in parallel (a decode batch with many adapters would otherwise leave all
                // threads but one idle); who computes a row never changes its bits.
                let mut work = Vec::with_capacity(spans.len());
                let mut rest = &mut out[..];
                for (adapter, &(row0, rows, _)) in adapters.iter().zip(&spans) {
                    let (mine, tail) = std::mem::take(&mut rest).split_at_mut(rows * w.rows);
                    rest = tail;
                    if let Some(lora) = adapter.and_then(|a| a.modules.get(&(l, m))) {
                        let inp = &input[row0 * w.cols..(row0 + rows) * w.cols];
                        work.push((lora, inp, rows, mine));
                    }
                }
                work.into_par_iter()
                    .try_for_each(|(lora, inp, rows, o)| self.add_lora(lora, inp, rows, o))?;
                Ok::<(), EngineError>(())
            };
            rmsnorm_rows(isa, &x, &layer.input_layernorm, eps, &mut xn)?;
            lin(LinearModule::QProj, &xn, layer.q_bias.as_deref(), &mut q)?;
            lin(LinearModule::KProj, &xn, layer.k_bias.as_deref(), &mut k)?;
            lin(LinearModule::VProj, &xn, layer.v_bias.as_deref(), &mut v)?;
            for (item, &(row0, rows, start)) in batch.iter_mut().zip(&spans) {
                for i in 0..rows {
                    let r = row0 + i;
                    self.rope.apply(start + i, &mut q[r * q_dim..][..q_dim])?;
                    self.rope.apply(start + i, &mut k[r * kv_dim..][..kv_dim])?;
                }
                let span = row0 * kv_dim..(row0 + rows) * kv_dim;
                item.cache.write(l, start, &k[span.clone()], &v[span]);
            }
            self.attend(l, batch, &spans, longest, &q, &mut attn)?;
            lin(LinearModule::OProj, &attn, None, &mut proj)?;
            add_in_place(&mut x, &proj);

            rmsnorm_rows(isa, &x, &layer.post_attention_layernorm, eps, &mut xn)?;
            lin(LinearModule::GateProj, &xn, None, &mut gate)?;
            lin(LinearModule::UpProj, &xn, None, &mut up)?;
            compute::swiglu(isa, &gate, &up, &mut act)?;
            lin(LinearModule::DownProj, &act, None, &mut proj)?;
            add_in_place(&mut x, &proj);
        }
        for (item, &(_, rows, _)) in batch.iter_mut().zip(&spans) {
            item.cache.advance(rows);
        }

        // Final norm and LM head over the rows whose logits are wanted, in one matmul.
        let wanted: Vec<(usize, usize)> = spans
            .iter()
            .map(|&(row0, rows, _)| {
                if all_logits {
                    (row0, rows)
                } else {
                    (row0 + rows - 1, 1)
                }
            })
            .collect();
        let n: usize = wanted.iter().map(|w| w.1).sum();
        let mut normed = vec![0.0f32; n * hidden];
        let mut at = 0;
        for &(row0, rows) in &wanted {
            let src = &x[row0 * hidden..(row0 + rows) * hidden];
            rmsnorm_rows(
                isa,
                src,
                &self.weights.norm,
                eps,
                &mut normed[at..at + src.len()],
            )?;
            at += src.len();
        }
        let head = self.weights.lm_head();
        let mut logits = vec![0.0f32; n * head.rows];
        compute::matmul(
            isa,
            threads,
            &normed,
            n,
            hidden,
            self.head_weight(),
            head.rows,
            None,
            &mut logits,
        )?;
        let mut out = Vec::with_capacity(batch.len());
        let mut at = 0;
        for &(_, rows) in &wanted {
            out.push(logits[at * head.rows..(at + rows) * head.rows].to_vec());
            at += rows;
        }
        Ok(out)
    }

    /// Attention of every row of the batch at layer `l`, in parallel over (row, head):
    /// each task writes its own `head_dim` slice of `attn` and reads only its sequence's
    /// cache, so who runs it does not matter. Rows are `[row, head, head_dim]` in `attn`.
    fn attend(
        &self,
        l: usize,
        batch: &[BatchItem<'_>],
        spans: &[(usize, usize, usize)],
        longest: usize,
        q: &[f32],
        attn: &mut [f32],
    ) -> Result<(), EngineError> {
        let c = &self.config;
        let (hd, heads, kv_heads) = (c.head_dim, c.num_attention_heads, c.num_key_value_heads);
        let caches: Vec<(&[f32], &[f32])> = batch.iter().map(|item| item.cache.layer(l)).collect();
        // Each row's sequence and position.
        let rows: Vec<(usize, usize)> = spans
            .iter()
            .enumerate()
            .flat_map(|(s, &(_, n, start))| (start..start + n).map(move |pos| (s, pos)))
            .collect();
        attn.par_chunks_mut(hd).enumerate().try_for_each_init(
            || vec![0.0f32; longest],
            |scores, (g, out)| {
                let (r, h) = (g / heads, g % heads);
                let (s, pos) = rows[r];
                let (kc, vc) = caches[s];
                let kvh = compute::kv_head(h, heads, kv_heads)?;
                compute::attention(
                    self.options.isa,
                    &q[g * hd..][..hd],
                    &kc[kvh * hd..],
                    &vc[kvh * hd..],
                    pos + 1,
                    kv_heads * hd,
                    scores,
                    out,
                )
            },
        )?;
        Ok(())
    }

    /// Adds an adapter's `(input · Aᵀ · Bᵀ) · scale` to `out`, after the base product, as
    /// PEFT does.
    fn add_lora(
        &self,
        lora: &LoraWeights,
        input: &[f32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<(), EngineError> {
        // A sequence's low-rank product is far too small to be worth the thread pool's
        // hand-off; one thread gives the same bits (threads never change them).
        let (isa, threads) = (self.options.isa, 1);
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

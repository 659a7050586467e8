//! The decoder layers of a forward pass, shared by inference and training (rule T1: the
//! trainer's forward is exactly the engine's). The engine runs them with one reused set of
//! buffers; the trainer asks for a tape and gets each layer's buffers back, plus the few
//! values only a backward pass needs (layer input, mid-layer residual, attention
//! probabilities, LoRA's `x·Aᵀ`).

use std::collections::BTreeMap;

use super::{BatchItem, Engine, EngineError};
use crate::compute::{
    AlignedVec, AttentionShape, Backend, ComputeError, KvView, LoraProduct, MatrixRef, QueryRow,
    WeightShape,
};
use crate::model::{Adapter, LinearModule, Matrix, ModelConfig};

/// Where one item's rows sit in a pass, and the position of its first token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) row0: usize,
    pub(crate) rows: usize,
    pub(crate) start: usize,
}

/// The residual stream after the last layer, `[rows, hidden]`, and each item's rows.
#[derive(Debug)]
pub(crate) struct Trunk {
    pub(crate) x: AlignedVec,
    pub(crate) spans: Vec<Span>,
}

/// One layer's values over every row of a pass, row-major `[rows, width]` each. They are
/// matmul operands, so they are 64-byte aligned like the weights: with `Vec`s, whether a
/// row's loads split cache lines depended on where the allocator happened to put each
/// buffer, which moved prefill speed by ~10% from one build to another.
#[derive(Debug)]
pub(crate) struct LayerActs {
    /// The layer's input (taped passes only).
    pub(crate) x_in: AlignedVec,
    pub(crate) xn1: AlignedVec,
    /// After RoPE.
    pub(crate) q: AlignedVec,
    /// After RoPE.
    pub(crate) k: AlignedVec,
    pub(crate) v: AlignedVec,
    /// `[rows, heads, probs_width]` attention probabilities, zeros past each row's own
    /// position (taped passes only).
    pub(crate) probs: AlignedVec,
    pub(crate) probs_width: usize,
    pub(crate) attn: AlignedVec,
    /// The residual stream after attention (taped passes only).
    pub(crate) x_mid: AlignedVec,
    pub(crate) xn2: AlignedVec,
    pub(crate) gate: AlignedVec,
    pub(crate) up: AlignedVec,
    pub(crate) act: AlignedVec,
    /// Scratch for the o and down projections before their residual add.
    proj: AlignedVec,
    /// `x·Aᵀ` of each adapted projection, `[rows, r]` (taped passes only).
    pub(crate) low: BTreeMap<LinearModule, Vec<f32>>,
}

impl LayerActs {
    fn new(c: &ModelConfig, rows: usize, longest: usize, taped: bool) -> Self {
        let mut acts = Self {
            x_in: AlignedVec::default(),
            xn1: AlignedVec::default(),
            q: AlignedVec::default(),
            k: AlignedVec::default(),
            v: AlignedVec::default(),
            probs: AlignedVec::default(),
            probs_width: 0,
            attn: AlignedVec::default(),
            x_mid: AlignedVec::default(),
            xn2: AlignedVec::default(),
            gate: AlignedVec::default(),
            up: AlignedVec::default(),
            act: AlignedVec::default(),
            proj: AlignedVec::default(),
            low: BTreeMap::new(),
        };
        acts.reshape(c, rows, longest, taped);
        acts
    }

    /// Sizes every buffer for a pass of `rows` rows, reusing the allocations. Every op of
    /// the layer overwrites its whole output, so old contents never leak into a pass.
    fn reshape(&mut self, c: &ModelConfig, rows: usize, longest: usize, taped: bool) {
        let (hidden, inter) = (c.hidden_size, c.intermediate_size);
        self.probs_width = if taped { longest } else { 0 };
        for (buf, width) in [
            (&mut self.xn1, hidden),
            (&mut self.q, c.q_dim()),
            (&mut self.k, c.kv_dim()),
            (&mut self.v, c.kv_dim()),
            (&mut self.probs, c.num_attention_heads * self.probs_width),
            (&mut self.attn, c.q_dim()),
            (&mut self.xn2, hidden),
            (&mut self.gate, inter),
            (&mut self.up, inter),
            (&mut self.act, inter),
            (&mut self.proj, hidden),
        ] {
            buf.resize(rows * width);
        }
        self.low.clear();
    }
}

/// What a projection needs to know about the pass: where each sequence's rows are, and
/// its adapter.
struct Rows<'a> {
    spans: &'a [Span],
    adapters: &'a [Option<&'a Adapter>],
}

impl<B: Backend> Engine<B> {
    /// Checks `batch`, embeds its tokens and runs every layer, appending each item's keys
    /// and values to its cache. With a `tape`, layer `l` leaves its [`LayerActs`] in
    /// `tape[l]` (reusing what a previous pass left there).
    pub(crate) fn run_layers(
        &self,
        batch: &mut [BatchItem<'_>],
        tape: Option<&mut Vec<LayerActs>>,
    ) -> Result<Trunk, EngineError> {
        let c = &self.config;
        let hidden = c.hidden_size;
        let kv_dim = c.kv_dim();

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
            let max = item.cache.capacity().min(self.max_positions);
            if needed > max {
                return Err(EngineError::TooLong { needed, max });
            }
            longest = longest.max(needed);
            spans.push(Span {
                row0: t,
                rows: item.tokens.len(),
                start,
            });
            t += item.tokens.len();
        }
        if t == 0 {
            return Ok(Trunk {
                x: AlignedVec::default(),
                spans,
            });
        }

        let tokens: Vec<u32> = batch
            .iter()
            .flat_map(|item| item.tokens.iter().copied())
            .collect();
        if let Some(&token) = tokens.iter().find(|&&tok| tok as usize >= c.vocab_size) {
            return Err(EngineError::TokenOutOfRange {
                token,
                vocab: c.vocab_size,
            });
        }
        let mut x = AlignedVec::zeros(t * hidden);
        self.backend
            .embed(self.embedding_table(), &tokens, &mut x)?;

        // Each row's sequence and how many positions it sees.
        let queries: Vec<QueryRow> = spans
            .iter()
            .enumerate()
            .flat_map(|(seq, s)| {
                (s.start..s.start + s.rows).map(move |pos| QueryRow {
                    seq,
                    visible: pos + 1,
                })
            })
            .collect();
        let adapters: Vec<Option<&Adapter>> = batch.iter().map(|item| item.adapter).collect();
        let rows = Rows {
            spans: &spans,
            adapters: &adapters,
        };
        let n_layers = self.weights.layers.len();
        match tape {
            None => {
                let mut acts = LayerActs::new(c, t, longest, false);
                for l in 0..n_layers {
                    self.layer(l, &mut x, batch, &rows, &queries, &mut acts, false)?;
                }
            }
            Some(tape) => {
                tape.truncate(n_layers);
                for acts in tape.iter_mut() {
                    acts.reshape(c, t, longest, true);
                }
                while tape.len() < n_layers {
                    tape.push(LayerActs::new(c, t, longest, true));
                }
                for (l, acts) in tape.iter_mut().enumerate() {
                    self.layer(l, &mut x, batch, &rows, &queries, acts, true)?;
                }
            }
        }
        for (item, s) in batch.iter_mut().zip(&spans) {
            item.cache.advance(s.rows);
        }
        Ok(Trunk { x, spans })
    }

    /// Layer `l` on the residual stream `x`, in place.
    #[allow(clippy::too_many_arguments)] // the pass's state, passed down from `run_layers`
    fn layer(
        &self,
        l: usize,
        x: &mut [f32],
        batch: &mut [BatchItem<'_>],
        rows: &Rows<'_>,
        queries: &[QueryRow],
        acts: &mut LayerActs,
        taped: bool,
    ) -> Result<(), EngineError> {
        let c = &self.config;
        let b = &self.backend;
        let layer = &self.weights.layers[l];
        let eps = c.rms_norm_eps as f32;
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        let mut low = taped.then_some(&mut acts.low);
        if taped {
            acts.x_in.resize(x.len());
            acts.x_in.copy_from_slice(x);
        }

        b.rmsnorm(x, &layer.input_layernorm, eps, &mut acts.xn1)?;
        let bias = [&layer.q_bias, &layer.k_bias, &layer.v_bias].map(|b| b.as_deref());
        for (m, out, bias) in [
            (LinearModule::QProj, &mut acts.q, bias[0]),
            (LinearModule::KProj, &mut acts.k, bias[1]),
            (LinearModule::VProj, &mut acts.v, bias[2]),
        ] {
            self.project(l, m, &acts.xn1, bias, out, rows, low.as_deref_mut())?;
        }
        for (item, s) in batch.iter_mut().zip(rows.spans) {
            let (q, k) = (
                &mut acts.q[s.row0 * q_dim..(s.row0 + s.rows) * q_dim],
                &mut acts.k[s.row0 * kv_dim..(s.row0 + s.rows) * kv_dim],
            );
            b.rope(&self.rope, s.start, q_dim, q)?;
            b.rope(&self.rope, s.start, kv_dim, k)?;
            let span = s.row0 * kv_dim..(s.row0 + s.rows) * kv_dim;
            item.cache
                .write(l, s.start, &acts.k[span.clone()], &acts.v[span]);
        }
        let kv: Vec<KvView<'_>> = batch
            .iter()
            .map(|item| {
                let (k, v) = item.cache.layer(l);
                KvView { k, v }
            })
            .collect();
        let shape = AttentionShape {
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        };
        let probs = taped.then_some(&mut acts.probs[..]);
        b.attention(shape, &acts.q, &kv, queries, &mut acts.attn, probs)?;
        drop(kv);
        self.project(
            l,
            LinearModule::OProj,
            &acts.attn,
            None,
            &mut acts.proj,
            rows,
            low.as_deref_mut(),
        )?;
        add_in_place(x, &acts.proj);
        if taped {
            acts.x_mid.resize(x.len());
            acts.x_mid.copy_from_slice(x);
        }

        b.rmsnorm(x, &layer.post_attention_layernorm, eps, &mut acts.xn2)?;
        for (m, out) in [
            (LinearModule::GateProj, &mut acts.gate),
            (LinearModule::UpProj, &mut acts.up),
        ] {
            self.project(l, m, &acts.xn2, None, out, rows, low.as_deref_mut())?;
        }
        b.swiglu(&acts.gate, &acts.up, &mut acts.act)?;
        self.project(
            l,
            LinearModule::DownProj,
            &acts.act,
            None,
            &mut acts.proj,
            rows,
            low,
        )?;
        add_in_place(x, &acts.proj);
        Ok(())
    }

    /// `out = input·Wᵀ (+ bias)`, then each sequence's own adapter product on its rows
    /// (rule T3's forward). With `low`, LoRA's `x·Aᵀ` of every adapted row is kept under `m`.
    #[allow(clippy::too_many_arguments)] // the projection, its operands, the pass's rows
    fn project(
        &self,
        l: usize,
        m: LinearModule,
        input: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
        rows: &Rows<'_>,
        low: Option<&mut BTreeMap<LinearModule, Vec<f32>>>,
    ) -> Result<(), EngineError> {
        let w = self.linear(l, m).ok_or(ComputeError::Invalid {
            op: "forward",
            reason: "no such layer",
        })?;
        let (out_dim, in_dim) = (w.rows(), w.cols());
        let t: usize = rows.spans.iter().map(|s| s.rows).sum();
        self.backend.matmul(input, t, w, bias, out)?;

        let loras: Vec<Option<&crate::model::LoraWeights>> = rows
            .adapters
            .iter()
            .map(|a| a.and_then(|a| a.modules.get(&(l, m))))
            .collect();
        if loras.iter().all(Option::is_none) {
            return Ok(());
        }
        let kept: usize = rows
            .spans
            .iter()
            .zip(&loras)
            .filter_map(|(s, lora)| lora.map(|w| s.rows * w.a.rows))
            .sum();
        let mut low_buf = if low.is_some() {
            vec![0.0f32; kept]
        } else {
            Vec::new()
        };
        // Each sequence's product writes only its own rows, so the backend may run them at
        // once (a decode batch with many adapters would otherwise leave all threads but one
        // idle); who computes a row never changes its bits.
        let mut products = Vec::with_capacity(rows.spans.len());
        let mut rest_out = &mut out[..];
        let mut rest_low = &mut low_buf[..];
        for (s, lora) in rows.spans.iter().zip(&loras) {
            let (mine, tail) = std::mem::take(&mut rest_out).split_at_mut(s.rows * out_dim);
            rest_out = tail;
            let Some(lora) = lora else { continue };
            let keep = if low.is_some() {
                let (k, tail) = std::mem::take(&mut rest_low).split_at_mut(s.rows * lora.a.rows);
                rest_low = tail;
                Some(k)
            } else {
                None
            };
            products.push(LoraProduct {
                x: &input[s.row0 * in_dim..(s.row0 + s.rows) * in_dim],
                rows: s.rows,
                a: matrix_ref(&lora.a),
                b: matrix_ref(&lora.b),
                scale: lora.scale,
                out: mine,
                low: keep,
            });
        }
        self.backend.lora(products)?;
        if let Some(low) = low {
            low.insert(m, low_buf);
        }
        Ok(())
    }
}

fn matrix_ref(m: &Matrix) -> MatrixRef<'_> {
    MatrixRef {
        rows: m.rows,
        cols: m.cols,
        data: &m.data,
    }
}

pub(crate) fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += *b;
    }
}

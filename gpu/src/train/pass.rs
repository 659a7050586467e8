//! One micro-batch: the engine's forward with a tape (T1; the layer code is the engine's
//! own, `engine::layers`), then the loss (T2) and the backward pass into the step's lane
//! accumulators (T3–T7).

use std::collections::BTreeMap;

use super::lanes::LaneAcc;
use super::loss::cross_entropy_backward;
use crate::compute::{
    AttentionGrads, AttentionShape, AttentionTape, Backend, ComputeError, CpuBackend, transpose,
};
use crate::engine::layers::{LayerActs, Span, add_in_place};
use crate::engine::{BatchItem, Engine, EngineError, KvCache};
use crate::model::{Adapter, LinearModule, LoraWeights};

/// The base weights transposed (`[in, out]`), built once per training run: the input
/// gradient `g·W` is then a rule-2 matmul with contiguous operands.
#[derive(Debug)]
pub(crate) struct Transposed<B: Backend = CpuBackend> {
    layers: Vec<BTreeMap<LinearModule, B::Weights>>,
    head: B::Weights,
}

impl<B: Backend> Transposed<B> {
    pub(crate) fn new(engine: &Engine<B>) -> Result<Self, ComputeError> {
        let b = engine.backend();
        let layers = (0..engine.weights().layers.len())
            .map(|l| {
                LinearModule::ALL
                    .iter()
                    .map(|&m| Ok((m, b.transposed(base(engine, l, m)?)?)))
                    .collect::<Result<_, ComputeError>>()
            })
            .collect::<Result<_, ComputeError>>()?;
        Ok(Self {
            layers,
            head: b.transposed(engine.head())?,
        })
    }

    fn get(&self, layer: usize, m: LinearModule) -> Result<&B::Weights, ComputeError> {
        self.layers
            .get(layer)
            .and_then(|l| l.get(&m))
            .ok_or(NO_SUCH_LAYER)
    }
}

const NO_SUCH_LAYER: ComputeError = ComputeError::Invalid {
    op: "train",
    reason: "no such layer",
};

fn base<B: Backend>(
    engine: &Engine<B>,
    l: usize,
    m: LinearModule,
) -> Result<&B::Weights, ComputeError> {
    engine.linear(l, m).ok_or(NO_SUCH_LAYER)
}

/// The step's gradient sums for one adapted projection.
#[derive(Debug, Clone)]
pub(crate) struct ModuleGrad {
    pub(crate) a: LaneAcc,
    pub(crate) b: LaneAcc,
}

impl ModuleGrad {
    pub(crate) fn for_weights(w: &LoraWeights) -> Self {
        Self {
            a: LaneAcc::new(w.a.rows, w.a.cols),
            b: LaneAcc::new(w.b.rows, w.b.cols),
        }
    }
}

pub(crate) type Grads = BTreeMap<(usize, LinearModule), ModuleGrad>;

/// One sequence of the micro-batch: its tokens and the index of its first trained token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seq<'a> {
    pub(crate) tokens: &'a [u32],
    pub(crate) trained_from: usize,
}

impl Seq<'_> {
    /// Positions `i` whose token is a label: row `i - 1` predicts it.
    fn targets(&self) -> std::ops::Range<usize> {
        self.trained_from.max(1)..self.tokens.len()
    }
}

/// Loss summed over one sequence's trained predictions, and their number.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SeqLoss {
    pub(crate) sum: f64,
    pub(crate) count: usize,
}

/// Buffers a training run reuses from one micro-batch to the next: the forward's tape and
/// each example's KV cache. Allocated afresh for every micro-batch, they went back to the
/// allocator at its end, which (for a tape of tens of MB) returned them to the OS, and the
/// next micro-batch took a page fault per 4 KiB to get them back: ~10% of a `small` step.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    tape: Vec<LayerActs>,
    caches: Vec<KvCache>,
}

pub(crate) struct Pass<'a, B: Backend = CpuBackend> {
    pub(crate) engine: &'a Engine<B>,
    pub(crate) base_t: &'a Transposed<B>,
    pub(crate) adapter: &'a Adapter,
}

impl<B: Backend> Pass<'_, B> {
    fn backend(&self) -> &B {
        self.engine.backend()
    }

    /// Runs `seqs` forward and backward, adding their gradients to `grads` with the step's
    /// rows numbered from `t0`. `n` is the number of trained predictions in the whole step.
    /// Call it inside the backend's [`Backend::run`].
    #[cfg(test)]
    pub(crate) fn run(
        &self,
        seqs: &[Seq<'_>],
        t0: usize,
        n: f32,
        grads: &mut Grads,
    ) -> Result<Vec<SeqLoss>, ComputeError> {
        self.run_with(&mut Scratch::default(), seqs, t0, n, grads)
    }

    /// [`Pass::run`] with buffers kept from the previous micro-batch.
    pub(crate) fn run_with(
        &self,
        scratch: &mut Scratch,
        seqs: &[Seq<'_>],
        t0: usize,
        n: f32,
        grads: &mut Grads,
    ) -> Result<Vec<SeqLoss>, ComputeError> {
        let b = self.backend();
        let c = self.engine.config();
        let h = c.hidden_size;
        let eps = c.rms_norm_eps as f32;
        let weights = self.engine.weights();

        // T1: each example is a sequence of its own from position 0, so each gets an empty
        // cache with room for it.
        let Scratch { tape, caches } = scratch;
        let (layers, kv_dim) = (c.num_hidden_layers, c.kv_dim());
        for (i, s) in seqs.iter().enumerate() {
            let len = s.tokens.len();
            match caches.get_mut(i) {
                Some(cache) if cache.fits(layers, kv_dim) && cache.capacity() >= len => {
                    cache.clear()
                }
                Some(cache) => *cache = KvCache::new(layers, kv_dim, len),
                None => caches.push(KvCache::new(layers, kv_dim, len)),
            }
        }
        let mut batch: Vec<BatchItem<'_>> = seqs
            .iter()
            .zip(caches.iter_mut())
            .map(|(s, cache)| BatchItem {
                tokens: s.tokens,
                cache,
                adapter: Some(self.adapter),
            })
            .collect();
        let trunk = self
            .engine
            .run_layers(&mut batch, Some(tape))
            .map_err(as_compute)?;
        let (x, spans) = (trunk.x, trunk.spans);
        let rows = x.len() / h.max(1);

        // T2 over the rows that predict a trained token.
        let mut pred_rows = Vec::new();
        let mut targets = Vec::new();
        for (s, span) in seqs.iter().zip(&spans) {
            for i in s.targets() {
                pred_rows.push(span.row0 + i - 1);
                targets.push(s.tokens[i] as usize);
            }
        }
        let np = pred_rows.len();
        let mut xf = vec![0.0f32; np * h];
        for (dst, &r) in xf.chunks_exact_mut(h).zip(&pred_rows) {
            b.rmsnorm(&x[r * h..][..h], &weights.norm, eps, dst)?;
        }
        let head = weights.lm_head();
        let vocab = head.rows;
        let mut logits = vec![0.0f32; np * vocab];
        b.matmul(&xf, np, self.engine.head(), None, &mut logits)?;
        let mut losses = vec![SeqLoss::default(); seqs.len()];
        let mut p = 0;
        for (si, s) in seqs.iter().enumerate() {
            for _ in s.targets() {
                let row = &mut logits[p * vocab..][..vocab];
                losses[si].sum += cross_entropy_backward(b, row, targets[p], n)?;
                losses[si].count += 1;
                p += 1;
            }
        }
        let mut dxf = vec![0.0f32; np * h];
        b.matmul(&logits, np, &self.base_t.head, None, &mut dxf)?;
        drop(logits);
        let mut g = vec![0.0f32; rows * h];
        for (d, &r) in dxf.chunks_exact(h).zip(&pred_rows) {
            b.rmsnorm_backward(
                &x[r * h..][..h],
                &weights.norm,
                eps,
                d,
                &mut g[r * h..][..h],
            )?;
        }

        for (l, acts) in tape.iter().enumerate().rev() {
            g = self.layer_backward(l, acts, g, &spans, t0, grads)?;
        }
        Ok(losses)
    }

    /// T3 for one projection: adds its LoRA gradients to `grads` and returns `dx` if wanted.
    #[allow(clippy::too_many_arguments)] // the projection, its input, its gradient, the step
    fn linear_backward(
        &self,
        l: usize,
        m: LinearModule,
        g: &[f32],
        x: &[f32],
        low: Option<&Vec<f32>>,
        want_dx: bool,
        t0: usize,
        grads: &mut Grads,
    ) -> Result<Option<Vec<f32>>, ComputeError> {
        let b = self.backend();
        let w = self.engine.weights().layers[l].linear(m);
        let (out_dim, in_dim) = (w.rows, w.cols);
        let rows = g.len() / out_dim;
        let mut dx = if want_dx {
            let mut dx = vec![0.0f32; rows * in_dim];
            b.matmul(g, rows, self.base_t.get(l, m)?, None, &mut dx)?;
            Some(dx)
        } else {
            None
        };
        let (Some(lora), Some(low), Some(mg)) = (
            self.adapter.modules.get(&(l, m)),
            low,
            grads.get_mut(&(l, m)),
        ) else {
            return Ok(dx);
        };
        let r = lora.a.rows;
        let gs: Vec<f32> = g.iter().map(|v| *v * lora.scale).collect();
        mg.b.add_outer(b, &gs, low, t0)?;
        let bt = transpose(&lora.b.data, out_dim, r);
        let mut u = vec![0.0f32; rows * r];
        b.matmul_slices(&gs, rows, out_dim, &bt, r, &mut u)?;
        mg.a.add_outer(b, &u, x, t0)?;
        if let Some(dx) = dx.as_mut() {
            let at = transpose(&lora.a.data, r, in_dim);
            let mut extra = vec![0.0f32; rows * in_dim];
            b.matmul_slices(&u, rows, r, &at, in_dim, &mut extra)?;
            add_in_place(dx, &extra);
        }
        Ok(dx)
    }

    fn layer_backward(
        &self,
        l: usize,
        tape: &LayerActs,
        g: Vec<f32>,
        spans: &[Span],
        t0: usize,
        grads: &mut Grads,
    ) -> Result<Vec<f32>, ComputeError> {
        let b = self.backend();
        let c = self.engine.config();
        let layer = &self.engine.weights().layers[l];
        let eps = c.rms_norm_eps as f32;
        let h = c.hidden_size;
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        let rows = g.len() / h;
        let low = |m: LinearModule| tape.low.get(&m);
        let missing = || ComputeError::Invalid {
            op: "train",
            reason: "missing input gradient",
        };

        // MLP.
        let d_act = self
            .linear_backward(
                l,
                LinearModule::DownProj,
                &g,
                &tape.act,
                low(LinearModule::DownProj),
                true,
                t0,
                grads,
            )?
            .ok_or_else(missing)?;
        let mut d_gate = vec![0.0f32; d_act.len()];
        let mut d_up = vec![0.0f32; d_act.len()];
        b.swiglu_backward(&tape.gate, &tape.up, &d_act, &mut d_gate, &mut d_up)?;
        let mut dxn2 = self
            .linear_backward(
                l,
                LinearModule::GateProj,
                &d_gate,
                &tape.xn2,
                low(LinearModule::GateProj),
                true,
                t0,
                grads,
            )?
            .ok_or_else(missing)?;
        let dxn2_up = self
            .linear_backward(
                l,
                LinearModule::UpProj,
                &d_up,
                &tape.xn2,
                low(LinearModule::UpProj),
                true,
                t0,
                grads,
            )?
            .ok_or_else(missing)?;
        add_in_place(&mut dxn2, &dxn2_up);
        let mut d_mid = g;
        norm_backward_add(
            b,
            &tape.x_mid,
            &layer.post_attention_layernorm,
            eps,
            &dxn2,
            &mut d_mid,
        )?;

        // Attention.
        let d_attn = self
            .linear_backward(
                l,
                LinearModule::OProj,
                &d_mid,
                &tape.attn,
                low(LinearModule::OProj),
                true,
                t0,
                grads,
            )?
            .ok_or_else(missing)?;
        let mut dq = vec![0.0f32; rows * q_dim];
        let mut dk = vec![0.0f32; rows * kv_dim];
        let mut dv = vec![0.0f32; rows * kv_dim];
        let shape = AttentionShape {
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        };
        let per_row = shape.heads * tape.probs_width;
        let rope = self.engine.rope();
        for s in spans {
            let (q_rows, kv_rows) = (
                s.row0 * q_dim..(s.row0 + s.rows) * q_dim,
                s.row0 * kv_dim..(s.row0 + s.rows) * kv_dim,
            );
            let seq = AttentionTape {
                len: s.rows,
                q: &tape.q[q_rows.clone()],
                k: &tape.k[kv_rows.clone()],
                v: &tape.v[kv_rows.clone()],
                probs: &tape.probs[s.row0 * per_row..(s.row0 + s.rows) * per_row],
            };
            let out = AttentionGrads {
                dq: &mut dq[q_rows.clone()],
                dk: &mut dk[kv_rows.clone()],
                dv: &mut dv[kv_rows.clone()],
            };
            b.attention_backward(shape, seq, &d_attn[q_rows.clone()], out)?;
            b.rope_backward(rope, s.start, q_dim, &mut dq[q_rows])?;
            b.rope_backward(rope, s.start, kv_dim, &mut dk[kv_rows])?;
        }
        // Layer 0's input is the frozen embedding: only the LoRA gradients are needed.
        let want = l > 0;
        let dx_q = self.linear_backward(
            l,
            LinearModule::QProj,
            &dq,
            &tape.xn1,
            low(LinearModule::QProj),
            want,
            t0,
            grads,
        )?;
        let dx_k = self.linear_backward(
            l,
            LinearModule::KProj,
            &dk,
            &tape.xn1,
            low(LinearModule::KProj),
            want,
            t0,
            grads,
        )?;
        let dx_v = self.linear_backward(
            l,
            LinearModule::VProj,
            &dv,
            &tape.xn1,
            low(LinearModule::VProj),
            want,
            t0,
            grads,
        )?;
        let (Some(mut dxn1), Some(dx_k), Some(dx_v)) = (dx_q, dx_k, dx_v) else {
            return Ok(Vec::new());
        };
        add_in_place(&mut dxn1, &dx_k);
        add_in_place(&mut dxn1, &dx_v);
        norm_backward_add(
            b,
            &tape.x_in,
            &layer.input_layernorm,
            eps,
            &dxn1,
            &mut d_mid,
        )?;
        Ok(d_mid)
    }
}

/// The forward's refusals as the trainer has always reported them, compute errors (which
/// the worker classifies as its own): only a token outside the vocabulary can reach here,
/// since `Trainer::train` checks lengths and the caches are made to fit.
fn as_compute(e: EngineError) -> ComputeError {
    match e {
        EngineError::Compute(e) => e,
        EngineError::TokenOutOfRange { .. } => ComputeError::Invalid {
            op: "train",
            reason: "token id outside the vocabulary",
        },
        _ => ComputeError::Invalid {
            op: "train",
            reason: "an example does not fit the engine",
        },
    }
}

/// `acc += rmsnorm_backward(x, w, g)` (the residual gradient first, then the norm's, as
/// T4's caller defines).
fn norm_backward_add<B: Backend>(
    backend: &B,
    x: &[f32],
    w: &[f32],
    eps: f32,
    g: &[f32],
    acc: &mut [f32],
) -> Result<(), ComputeError> {
    let mut dx = vec![0.0f32; x.len()];
    backend.rmsnorm_backward(x, w, eps, g, &mut dx)?;
    add_in_place(acc, &dx);
    Ok(())
}

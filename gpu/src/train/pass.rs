//! One micro-batch: the forward pass with the activations the backward pass needs (T1),
//! then the backward pass into the step's lane accumulators (T2–T7).

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::grad_ops::{cross_entropy_backward, rmsnorm_backward, rope_backward, swiglu_backward};
use super::lanes::{LaneAcc, transpose};
use crate::compute::{self, AlignedVec, ComputeError, Isa};
use crate::engine::Engine;
use crate::model::{Adapter, LinearModule, LoraWeights};

/// The base weights transposed (`[in, out]`), built once per training run: the input
/// gradient `g·W` is then a rule-2 matmul with contiguous operands. Aligned (and on huge
/// pages) like the engine's own weights, which the matmul streams ~1.4× faster.
#[derive(Debug)]
pub(crate) struct Transposed {
    layers: Vec<BTreeMap<LinearModule, AlignedVec>>,
    head: AlignedVec,
}

impl Transposed {
    pub(crate) fn new(engine: &Engine) -> Self {
        let w = engine.weights();
        let layers = w
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                LinearModule::ALL
                    .iter()
                    .map(|&m| {
                        let mat = layer.linear(m);
                        let t = transpose(engine.linear_weight(l, m), mat.rows, mat.cols);
                        (m, AlignedVec::from_slice(&t))
                    })
                    .collect()
            })
            .collect();
        let head = w.lm_head();
        Self {
            layers,
            head: AlignedVec::from_slice(&transpose(engine.head_weight(), head.rows, head.cols)),
        }
    }

    fn get(&self, layer: usize, m: LinearModule) -> &[f32] {
        self.layers
            .get(layer)
            .and_then(|l| l.get(&m))
            .map_or(&[], |v| &v[..])
    }
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

struct LayerTape {
    x_in: Vec<f32>,
    xn1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Per sequence, per head: `[T, T]` probabilities, zero above the diagonal.
    probs: Vec<Vec<Vec<f32>>>,
    attn: Vec<f32>,
    x_mid: Vec<f32>,
    xn2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
    /// `x·Aᵀ` of each adapted projection.
    low: BTreeMap<LinearModule, Vec<f32>>,
}

pub(crate) struct Pass<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) base_t: &'a Transposed,
    pub(crate) adapter: &'a Adapter,
}

impl Pass<'_> {
    fn isa(&self) -> Isa {
        self.engine.options().isa
    }

    fn threads(&self) -> usize {
        self.engine.options().threads
    }

    /// Runs `seqs` forward and backward, adding their gradients to `grads` with the step's
    /// rows numbered from `t0`. `n` is the number of trained predictions in the whole step.
    pub(crate) fn run(
        &self,
        seqs: &[Seq<'_>],
        t0: usize,
        n: f32,
        grads: &mut Grads,
    ) -> Result<Vec<SeqLoss>, ComputeError> {
        let c = self.engine.config();
        let (isa, threads) = (self.isa(), self.threads());
        let h = c.hidden_size;
        let eps = c.rms_norm_eps as f32;
        let weights = self.engine.weights();

        let mut spans = Vec::with_capacity(seqs.len());
        let mut rows = 0;
        for s in seqs {
            spans.push(rows);
            rows += s.tokens.len();
        }
        let mut x = Vec::with_capacity(rows * h);
        for &tok in seqs.iter().flat_map(|s| s.tokens) {
            let start = tok as usize * h;
            let row =
                self.engine
                    .embeddings()
                    .get(start..start + h)
                    .ok_or(ComputeError::Invalid {
                        op: "train",
                        reason: "token id outside the vocabulary",
                    })?;
            x.extend_from_slice(row);
        }

        let mut tapes = Vec::with_capacity(weights.layers.len());
        for l in 0..weights.layers.len() {
            let (tape, out) = self.layer_forward(l, x, seqs, &spans)?;
            tapes.push(tape);
            x = out;
        }

        // T2 over the rows that predict a trained token.
        let mut pred_rows = Vec::new();
        let mut targets = Vec::new();
        for (s, &row0) in seqs.iter().zip(&spans) {
            for i in s.targets() {
                pred_rows.push(row0 + i - 1);
                targets.push(s.tokens[i] as usize);
            }
        }
        let np = pred_rows.len();
        let mut xf = vec![0.0f32; np * h];
        for (dst, &r) in xf.chunks_exact_mut(h).zip(&pred_rows) {
            compute::rmsnorm(isa, &x[r * h..][..h], &weights.norm, eps, dst)?;
        }
        let head = weights.lm_head();
        let vocab = head.rows;
        let mut logits = vec![0.0f32; np * vocab];
        compute::matmul(
            isa,
            threads,
            &xf,
            np,
            h,
            self.engine.head_weight(),
            vocab,
            None,
            &mut logits,
        )?;
        let mut losses = vec![SeqLoss::default(); seqs.len()];
        let mut p = 0;
        for (si, s) in seqs.iter().enumerate() {
            for _ in s.targets() {
                let row = &mut logits[p * vocab..][..vocab];
                losses[si].sum += cross_entropy_backward(isa, row, targets[p], n)?;
                losses[si].count += 1;
                p += 1;
            }
        }
        let mut dxf = vec![0.0f32; np * h];
        compute::matmul(
            isa,
            threads,
            &logits,
            np,
            vocab,
            &self.base_t.head,
            h,
            None,
            &mut dxf,
        )?;
        drop(logits);
        let mut g = vec![0.0f32; rows * h];
        for (d, &r) in dxf.chunks_exact(h).zip(&pred_rows) {
            rmsnorm_backward(
                isa,
                &x[r * h..][..h],
                &weights.norm,
                eps,
                d,
                &mut g[r * h..][..h],
            )?;
        }

        for l in (0..tapes.len()).rev() {
            let tape = tapes.pop().ok_or(ComputeError::Invalid {
                op: "train",
                reason: "tape underflow",
            })?;
            g = self.layer_backward(l, &tape, g, seqs, &spans, t0, grads)?;
        }
        Ok(losses)
    }

    /// `y = x·Wᵀ (+ bias) + scale·(x·Aᵀ)·Bᵀ`, as the engine computes it; also returns `x·Aᵀ`.
    fn linear(
        &self,
        l: usize,
        m: LinearModule,
        x: &[f32],
        rows: usize,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), ComputeError> {
        let (isa, threads) = (self.isa(), self.threads());
        let layer = &self.engine.weights().layers[l];
        let w = layer.linear(m);
        let bias = match m {
            LinearModule::QProj => layer.q_bias.as_deref(),
            LinearModule::KProj => layer.k_bias.as_deref(),
            LinearModule::VProj => layer.v_bias.as_deref(),
            _ => None,
        };
        let mut y = vec![0.0f32; rows * w.rows];
        let data = self.engine.linear_weight(l, m);
        compute::matmul(isa, threads, x, rows, w.cols, data, w.rows, bias, &mut y)?;
        let Some(lora) = self.adapter.modules.get(&(l, m)) else {
            return Ok((y, None));
        };
        let r = lora.a.rows;
        let mut low = vec![0.0f32; rows * r];
        compute::matmul(isa, 1, x, rows, w.cols, &lora.a.data, r, None, &mut low)?;
        let mut delta = vec![0.0f32; rows * w.rows];
        compute::matmul(
            isa,
            1,
            &low,
            rows,
            r,
            &lora.b.data,
            w.rows,
            None,
            &mut delta,
        )?;
        for (o, d) in y.iter_mut().zip(&delta) {
            *o += *d * lora.scale;
        }
        Ok((y, Some(low)))
    }

    fn layer_forward(
        &self,
        l: usize,
        x: Vec<f32>,
        seqs: &[Seq<'_>],
        spans: &[usize],
    ) -> Result<(LayerTape, Vec<f32>), ComputeError> {
        let c = self.engine.config();
        let isa = self.isa();
        let layer = &self.engine.weights().layers[l];
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        let eps = c.rms_norm_eps as f32;
        let rows = x.len() / h;
        let rope = self.engine.rope();
        let mut low = BTreeMap::new();
        let mut keep = |m: LinearModule, out: (Vec<f32>, Option<Vec<f32>>)| {
            if let Some(lw) = out.1 {
                low.insert(m, lw);
            }
            out.0
        };

        let xn1 = norm_rows(isa, &x, &layer.input_layernorm, eps)?;
        let mut q = keep(
            LinearModule::QProj,
            self.linear(l, LinearModule::QProj, &xn1, rows)?,
        );
        let mut k = keep(
            LinearModule::KProj,
            self.linear(l, LinearModule::KProj, &xn1, rows)?,
        );
        let v = keep(
            LinearModule::VProj,
            self.linear(l, LinearModule::VProj, &xn1, rows)?,
        );
        let mut attn = vec![0.0f32; rows * q_dim];
        let mut probs = Vec::with_capacity(seqs.len());
        for (s, &row0) in seqs.iter().zip(spans) {
            let t_len = s.tokens.len();
            for i in 0..t_len {
                let r = row0 + i;
                rope.apply(i, &mut q[r * q_dim..][..q_dim])?;
                rope.apply(i, &mut k[r * kv_dim..][..kv_dim])?;
            }
            // Heads in parallel, each into its own buffers, scattered in head order: who
            // computes a head never changes its bits.
            let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..c.num_attention_heads)
                .into_par_iter()
                .map(|hh| {
                    let kvh = compute::kv_head(hh, c.num_attention_heads, c.num_key_value_heads)?;
                    let mut pm = vec![0.0f32; t_len * t_len];
                    let mut out = vec![0.0f32; t_len * hd];
                    let mut scores = vec![0.0f32; t_len];
                    for t in 0..t_len {
                        let r = row0 + t;
                        compute::attention(
                            isa,
                            &q[r * q_dim + hh * hd..][..hd],
                            &k[row0 * kv_dim + kvh * hd..],
                            &v[row0 * kv_dim + kvh * hd..],
                            t + 1,
                            kv_dim,
                            &mut scores,
                            &mut out[t * hd..][..hd],
                        )?;
                        pm[t * t_len..][..=t].copy_from_slice(&scores[..=t]);
                    }
                    Ok((pm, out))
                })
                .collect::<Result<_, ComputeError>>()?;
            let mut heads = Vec::with_capacity(c.num_attention_heads);
            for (hh, (pm, out)) in per_head.into_iter().enumerate() {
                for t in 0..t_len {
                    attn[(row0 + t) * q_dim + hh * hd..][..hd]
                        .copy_from_slice(&out[t * hd..][..hd]);
                }
                heads.push(pm);
            }
            probs.push(heads);
        }
        let o = keep(
            LinearModule::OProj,
            self.linear(l, LinearModule::OProj, &attn, rows)?,
        );
        let mut x_mid = x.clone();
        add_in_place(&mut x_mid, &o);
        let xn2 = norm_rows(isa, &x_mid, &layer.post_attention_layernorm, eps)?;
        let gate = keep(
            LinearModule::GateProj,
            self.linear(l, LinearModule::GateProj, &xn2, rows)?,
        );
        let up = keep(
            LinearModule::UpProj,
            self.linear(l, LinearModule::UpProj, &xn2, rows)?,
        );
        let mut act = vec![0.0f32; gate.len()];
        compute::swiglu(isa, &gate, &up, &mut act)?;
        let down = keep(
            LinearModule::DownProj,
            self.linear(l, LinearModule::DownProj, &act, rows)?,
        );
        let mut out = x_mid.clone();
        add_in_place(&mut out, &down);
        let _ = h;
        Ok((
            LayerTape {
                x_in: x,
                xn1,
                q,
                k,
                v,
                probs,
                attn,
                x_mid,
                xn2,
                gate,
                up,
                act,
                low,
            },
            out,
        ))
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
        let (isa, threads) = (self.isa(), self.threads());
        let w = self.engine.weights().layers[l].linear(m);
        let (out_dim, in_dim) = (w.rows, w.cols);
        let rows = g.len() / out_dim;
        let mut dx = if want_dx {
            let mut dx = vec![0.0f32; rows * in_dim];
            compute::matmul(
                isa,
                threads,
                g,
                rows,
                out_dim,
                self.base_t.get(l, m),
                in_dim,
                None,
                &mut dx,
            )?;
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
        mg.b.add_outer(isa, &gs, low, t0);
        let bt = transpose(&lora.b.data, out_dim, r);
        let mut u = vec![0.0f32; rows * r];
        compute::matmul(isa, 1, &gs, rows, out_dim, &bt, r, None, &mut u)?;
        mg.a.add_outer(isa, &u, x, t0);
        if let Some(dx) = dx.as_mut() {
            let at = transpose(&lora.a.data, r, in_dim);
            let mut extra = vec![0.0f32; rows * in_dim];
            compute::matmul(isa, 1, &u, rows, r, &at, in_dim, None, &mut extra)?;
            add_in_place(dx, &extra);
        }
        Ok(dx)
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_backward(
        &self,
        l: usize,
        tape: &LayerTape,
        g: Vec<f32>,
        seqs: &[Seq<'_>],
        spans: &[usize],
        t0: usize,
        grads: &mut Grads,
    ) -> Result<Vec<f32>, ComputeError> {
        let c = self.engine.config();
        let isa = self.isa();
        let layer = &self.engine.weights().layers[l];
        let eps = c.rms_norm_eps as f32;
        let (h, hd) = (c.hidden_size, c.head_dim);
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
        swiglu_backward(isa, &tape.gate, &tape.up, &d_act, &mut d_gate, &mut d_up)?;
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
            isa,
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
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        for ((s, &row0), probs) in seqs.iter().zip(spans).zip(&tape.probs) {
            let t_len = s.tokens.len();
            let gather = |src: &[f32], width: usize, col: usize| -> Vec<f32> {
                (0..t_len)
                    .flat_map(|t| src[(row0 + t) * width + col * hd..][..hd].iter().copied())
                    .collect()
            };
            // Heads in parallel; their kv gradients are then added in ascending head order
            // (rule T6), exactly as a sequential loop would.
            let per_head: Vec<(usize, [Vec<f32>; 3])> = probs
                .par_iter()
                .enumerate()
                .map(|(hh, pm)| {
                    let kvh = compute::kv_head(hh, c.num_attention_heads, c.num_key_value_heads)?;
                    let q_h = gather(&tape.q, q_dim, hh);
                    let k_h = gather(&tape.k, kv_dim, kvh);
                    let v_h = gather(&tape.v, kv_dim, kvh);
                    let g_h = gather(&d_attn, q_dim, hh);
                    let grads =
                        attention_backward(isa, pm, &q_h, &k_h, &v_h, &g_h, t_len, hd, scale)?;
                    Ok((kvh, grads))
                })
                .collect::<Result<_, ComputeError>>()?;
            for (hh, (kvh, [dq_h, dk_h, dv_h])) in per_head.into_iter().enumerate() {
                for t in 0..t_len {
                    let r = row0 + t;
                    dq[r * q_dim + hh * hd..][..hd].copy_from_slice(&dq_h[t * hd..][..hd]);
                    add_in_place(
                        &mut dk[r * kv_dim + kvh * hd..][..hd],
                        &dk_h[t * hd..][..hd],
                    );
                    add_in_place(
                        &mut dv[r * kv_dim + kvh * hd..][..hd],
                        &dv_h[t * hd..][..hd],
                    );
                }
            }
            let rope = self.engine.rope();
            for i in 0..t_len {
                let r = row0 + i;
                rope_backward(rope, i, &mut dq[r * q_dim..][..q_dim])?;
                rope_backward(rope, i, &mut dk[r * kv_dim..][..kv_dim])?;
            }
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
            isa,
            &tape.x_in,
            &layer.input_layernorm,
            eps,
            &dxn1,
            &mut d_mid,
        )?;
        Ok(d_mid)
    }
}

/// T6 for one sequence and one query head; returns `[dQ, dK, dV]`, each `[T, head_dim]`.
#[allow(clippy::too_many_arguments)] // the operands of the formula
fn attention_backward(
    isa: Isa,
    p: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    t_len: usize,
    hd: usize,
    scale: f32,
) -> Result<[Vec<f32>; 3], ComputeError> {
    let mut dp = vec![0.0f32; t_len * t_len];
    compute::matmul(isa, 1, g, t_len, hd, v, t_len, None, &mut dp)?;
    let mut ds = vec![0.0f32; t_len * t_len];
    for t in 0..t_len {
        let (pr, dpr) = (&p[t * t_len..][..t_len], &dp[t * t_len..][..t_len]);
        let d = compute::dot(isa, pr, dpr)?;
        for j in 0..=t {
            ds[t * t_len + j] = (pr[j] * (dpr[j] - d)) * scale;
        }
    }
    let mut dq = vec![0.0f32; t_len * hd];
    compute::matmul(
        isa,
        1,
        &ds,
        t_len,
        t_len,
        &transpose(k, t_len, hd),
        hd,
        None,
        &mut dq,
    )?;
    let mut dk = vec![0.0f32; t_len * hd];
    let ds_t = transpose(&ds, t_len, t_len);
    compute::matmul(
        isa,
        1,
        &ds_t,
        t_len,
        t_len,
        &transpose(q, t_len, hd),
        hd,
        None,
        &mut dk,
    )?;
    let mut dv = vec![0.0f32; t_len * hd];
    let p_t = transpose(p, t_len, t_len);
    compute::matmul(
        isa,
        1,
        &p_t,
        t_len,
        t_len,
        &transpose(g, t_len, hd),
        hd,
        None,
        &mut dv,
    )?;
    Ok([dq, dk, dv])
}

fn norm_rows(isa: Isa, x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>, ComputeError> {
    let n = w.len();
    let mut out = vec![0.0f32; x.len()];
    for (row, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        compute::rmsnorm(isa, row, w, eps, o)?;
    }
    Ok(out)
}

/// `acc += rmsnorm_backward(x, w, g)` row by row (the residual gradient first, then the
/// norm's, as T4's caller defines).
fn norm_backward_add(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    eps: f32,
    g: &[f32],
    acc: &mut [f32],
) -> Result<(), ComputeError> {
    let n = w.len();
    let mut dx = vec![0.0f32; n];
    for ((xr, gr), ar) in x
        .chunks_exact(n)
        .zip(g.chunks_exact(n))
        .zip(acc.chunks_exact_mut(n))
    {
        rmsnorm_backward(isa, xr, w, eps, gr, &mut dx)?;
        add_in_place(ar, &dx);
    }
    Ok(())
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += *b;
    }
}

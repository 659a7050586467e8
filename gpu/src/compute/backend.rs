//! The seam between the model code and whatever runs the canonical ops: the engine and
//! the trainer call only the [`Backend`] trait, so a backend is a complete, swappable
//! implementation of the spec in `compute/mod.rs`. Today's one is
//! [`CpuBackend`](super::CpuBackend); a CUDA one implements the same trait and must pass
//! the suite in `compute::conformance` against it.
//!
//! What crosses the seam:
//! - **Model weights** (the matmul matrices) are handed over once, at load, and from then on
//!   are an opaque [`Backend::Weights`] handle: the backend decides their format (f32
//!   today; quantized blocks later) and where they live (host arena, device memory).
//! - **Activations** (residual stream, q/k/v, scores, gradients) are host `f32` slices. That
//!   keeps the CPU backend zero-cost (the kernels read the caller's memory in place) and
//!   lets the model code keep its per-sequence bookkeeping (caches, spans, residual adds)
//!   as plain Rust. A device-resident backend can run every op correctly on these slices
//!   by staging; making activations device buffers too is the next step of that work.
//! - Adapter matrices (LoRA A and B) and norm/bias vectors are small host `f32` slices.
//!
//! Every op is batched at the granularity the model code loops at (all rows of a pass, all
//! heads), so a device backend launches one kernel where the CPU one splits over threads.

use super::{ComputeError, QuantType, RopeTable};

/// The rows and columns of a weight matrix, whatever its storage.
pub trait WeightShape {
    /// Output features (`out_features` of the Hugging Face `Linear`).
    fn rows(&self) -> usize;
    /// Input features: the length of each dot product.
    fn cols(&self) -> usize;
}

/// A weight matrix as the model loader produced it, handed to [`Backend::load_weights`]:
/// f32 values, or a file's blocks in a [`QuantType`], which a backend keeps as they are in
/// its own memory (rule 2 then runs over the values rule 9 dequantizes).
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum HostWeights {
    /// `[rows, cols]` row-major (Hugging Face `[out_features, in_features]`).
    F32 {
        rows: usize,
        cols: usize,
        data: Vec<f32>,
    },
    /// `rows` rows of `cols` weights, each row `ty.row_bytes(cols)` bytes of blocks.
    Quantized {
        ty: QuantType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    },
}

impl HostWeights {
    pub fn f32(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        HostWeights::F32 { rows, cols, data }
    }

    pub fn quantized(ty: QuantType, rows: usize, cols: usize, data: Vec<u8>) -> Self {
        HostWeights::Quantized {
            ty,
            rows,
            cols,
            data,
        }
    }

    /// The storage type (`F32` for the f32 variant).
    pub fn ty(&self) -> QuantType {
        match self {
            HostWeights::F32 { .. } => QuantType::F32,
            HostWeights::Quantized { ty, .. } => *ty,
        }
    }
}

/// Shape and type only: the data is megabytes.
impl std::fmt::Debug for HostWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HostWeights {} [{}, {}]",
            self.ty(),
            self.rows(),
            self.cols()
        )
    }
}

impl WeightShape for HostWeights {
    fn rows(&self) -> usize {
        match self {
            HostWeights::F32 { rows, .. } | HostWeights::Quantized { rows, .. } => *rows,
        }
    }

    fn cols(&self) -> usize {
        match self {
            HostWeights::F32 { cols, .. } | HostWeights::Quantized { cols, .. } => *cols,
        }
    }
}

/// A small host matrix passed by reference (an adapter's A or B).
#[derive(Debug, Clone, Copy)]
pub struct MatrixRef<'a> {
    pub rows: usize,
    pub cols: usize,
    /// `[rows, cols]` row-major.
    pub data: &'a [f32],
}

/// Heads of an attention layer (rule 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// Width of a query row, `[heads, head_dim]`.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of a key or value row, `[kv_heads, head_dim]`.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// The kv head that query head `h` reads under grouped-query attention.
    pub fn kv_head(&self, h: usize) -> Result<usize, ComputeError> {
        kv_head(h, self.heads, self.kv_heads)
    }
}

/// The kv head that query head `h` reads under grouped-query attention.
pub fn kv_head(h: usize, n_heads: usize, n_kv_heads: usize) -> Result<usize, ComputeError> {
    if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) || h >= n_heads {
        return Err(ComputeError::Invalid {
            op: "kv_head",
            reason: "need n_kv_heads > 0 dividing n_heads, and h < n_heads",
        });
    }
    Ok(h / (n_heads / n_kv_heads))
}

/// Keys and values of one sequence, `[positions, kv_heads * head_dim]` row-major each (a KV
/// cache layer, or the keys and values of a training pass).
#[derive(Debug, Clone, Copy)]
pub struct KvView<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// One query row of a batched attention: whose keys and values it reads ([`KvView`] index)
/// and how many of their positions it sees (causal masking: its own position + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryRow {
    pub seq: usize,
    pub visible: usize,
}

/// One low-rank update of a projection's output, `out += scale · ((x·Aᵀ)·Bᵀ)`, as PEFT
/// computes it: `low = x·Aᵀ` (rule 2), `delta = low·Bᵀ` (rule 2), then per element
/// `out = out + delta * scale` (one rounded multiply, one rounded add).
#[derive(Debug)]
pub struct LoraProduct<'a> {
    /// `[rows, a.cols]`.
    pub x: &'a [f32],
    pub rows: usize,
    /// `[r, in]`.
    pub a: MatrixRef<'a>,
    /// `[out, r]`.
    pub b: MatrixRef<'a>,
    pub scale: f32,
    /// `[rows, b.rows]`, already holding the base product.
    pub out: &'a mut [f32],
    /// Receives `low = x·Aᵀ` (`[rows, r]`) when the caller keeps it for a backward pass.
    pub low: Option<&'a mut [f32]>,
}

/// One training example's attention, saved by the forward for rule T6.
#[derive(Debug, Clone, Copy)]
pub struct AttentionTape<'a> {
    /// Positions of the example.
    pub len: usize,
    /// `[len, q_dim]` after RoPE.
    pub q: &'a [f32],
    /// `[len, kv_dim]` after RoPE.
    pub k: &'a [f32],
    /// `[len, kv_dim]`.
    pub v: &'a [f32],
    /// `[len, heads, width]` with `width >= len`: row `t` of head `h` holds the forward's
    /// probabilities over positions `0..=t` and zeros after (what [`Backend::attention`]
    /// writes into its `probs`).
    pub probs: &'a [f32],
}

/// Gradients of one example's attention (rule T6), each overwritten in full.
#[derive(Debug)]
pub struct AttentionGrads<'a> {
    /// `[len, q_dim]`.
    pub dq: &'a mut [f32],
    /// `[len, kv_dim]`.
    pub dk: &'a mut [f32],
    /// `[len, kv_dim]`.
    pub dv: &'a mut [f32],
}

/// An implementation of the canonical ops, bit for bit (see the spec in `compute/mod.rs`
/// for each rule; training rules T2–T7 are in `train/mod.rs`).
///
/// Shapes are checked by every method (a malformed model file gives an error, never an
/// out-of-bounds access). Row-wise ops take `[rows, n]` slices and treat each row
/// independently, which is what makes outputs independent of batching.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A model weight matrix in this backend's format and memory.
    type Weights: WeightShape + Send + Sync + std::fmt::Debug;

    /// Short name for logs and benchmark tables (e.g. `cpu/avx512x16`).
    fn name(&self) -> String;

    // ----- buffers -----

    /// Takes ownership of a model's weight matrices, in order; one call for the whole model,
    /// so the backend can lay them out together (the CPU one puts them in one aligned,
    /// huge-page arena) and free each host copy as soon as it has its own.
    fn load_weights(&self, matrices: Vec<HostWeights>) -> Result<Vec<Self::Weights>, ComputeError>;

    /// `wᵀ` (`[cols, rows]`) as a weight of its own: training's input gradient `g·W` is then
    /// an ordinary rule-2 matmul with contiguous operands.
    fn transposed(&self, w: &Self::Weights) -> Result<Self::Weights, ComputeError>;

    /// Embedding lookup: row `tokens[i]` of `table` (`[vocab, hidden]`) into row `i` of `out`
    /// (`[tokens.len(), hidden]`), copied exactly.
    fn embed(
        &self,
        table: &Self::Weights,
        tokens: &[u32],
        out: &mut [f32],
    ) -> Result<(), ComputeError>;

    /// Runs `f`, which makes many op calls, in the backend's execution context (the CPU
    /// backend: on one of its pool's workers, so each op does not pay a thread hand-off).
    /// Only speed may depend on it: every op must also work, with the same bits, outside.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, ComputeError>;

    // ----- rule 1 -----

    fn dot(&self, a: &[f32], b: &[f32]) -> Result<f32, ComputeError>;

    fn sum(&self, x: &[f32]) -> f32;

    // ----- rule 2 -----

    /// `out[r][c] = dot(x[r], w[c]) (+ bias[c])` with `x` `[rows, w.cols]`, `out`
    /// `[rows, w.rows]`; may use the whole device.
    fn matmul(
        &self,
        x: &[f32],
        rows: usize,
        w: &Self::Weights,
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<(), ComputeError>;

    /// Rule 2 with both operands plain slices (activations, adapter matrices): `x`
    /// `[rows, k]`, `w` `[cols, k]`, `out` `[rows, cols]`. These products are small and
    /// often issued from inside a parallel op, so the CPU backend runs them on the calling
    /// thread.
    #[allow(clippy::too_many_arguments)] // the mathematical signature of rule 2
    fn matmul_slices(
        &self,
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[f32],
        cols: usize,
        out: &mut [f32],
    ) -> Result<(), ComputeError>;

    /// Every [`LoraProduct`] of one projection (one per sequence with an adapter). They
    /// write disjoint outputs, so a backend may run them in any order or at once.
    fn lora(&self, products: Vec<LoraProduct<'_>>) -> Result<(), ComputeError>;

    // ----- rules 3–6 -----

    /// `x[i] = exp(x[i])` (rule 3).
    fn exp(&self, x: &mut [f32]) -> Result<(), ComputeError>;

    /// Softmax of one row, in place (rule 4).
    fn softmax(&self, row: &mut [f32]) -> Result<(), ComputeError>;

    /// RMSNorm of each `weight.len()`-wide row of `x` into `out` (rule 5).
    fn rmsnorm(
        &self,
        x: &[f32],
        weight: &[f32],
        eps: f32,
        out: &mut [f32],
    ) -> Result<(), ComputeError>;

    /// `x[i] = silu(x[i])` (rule 6).
    fn silu(&self, x: &mut [f32]) -> Result<(), ComputeError>;

    /// `out[i] = silu(gate[i]) * up[i]` (rule 6).
    fn swiglu(&self, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), ComputeError>;

    // ----- rule 7 -----

    /// Rotates each `width`-wide row of `x` (`[heads, head_dim]` per row) for positions
    /// `first_pos`, `first_pos + 1`, ... (one sequence's consecutive rows).
    fn rope(
        &self,
        table: &RopeTable,
        first_pos: usize,
        width: usize,
        x: &mut [f32],
    ) -> Result<(), ComputeError>;

    // ----- rule 8 -----

    /// Attention of every (query row, head): `q` and `out` are `[rows.len(), q_dim]`; row
    /// `r` reads `kv[rows[r].seq]` up to `rows[r].visible` positions. With `probs`
    /// (`[rows.len(), heads, width]`, `width` at least every `visible`), each (row, head)
    /// also leaves its probabilities there, followed by zeros.
    fn attention(
        &self,
        shape: AttentionShape,
        q: &[f32],
        kv: &[KvView<'_>],
        rows: &[QueryRow],
        out: &mut [f32],
        probs: Option<&mut [f32]>,
    ) -> Result<(), ComputeError>;

    // ----- training (rules T3–T7 of `train/mod.rs`) -----

    /// T3's lane accumulation for one row: `acc[i][j] = fma(a[i], b[j], acc[i][j])` with
    /// `acc` `[a.len(), b.len()]`.
    fn outer_fma(&self, a: &[f32], b: &[f32], acc: &mut [f32]) -> Result<(), ComputeError>;

    /// T4: `dx` of RMSNorm for each row, from the forward input `x` and output gradient `g`.
    /// A row whose sum of squares is not finite is [`ComputeError::NonFinite`].
    fn rmsnorm_backward(
        &self,
        x: &[f32],
        weight: &[f32],
        eps: f32,
        g: &[f32],
        dx: &mut [f32],
    ) -> Result<(), ComputeError>;

    /// T5: gradients of `silu(gate) * up`.
    fn swiglu_backward(
        &self,
        gate: &[f32],
        up: &[f32],
        d_act: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
    ) -> Result<(), ComputeError>;

    /// T7: undoes [`Backend::rope`] on a gradient, same arguments.
    fn rope_backward(
        &self,
        table: &RopeTable,
        first_pos: usize,
        width: usize,
        d: &mut [f32],
    ) -> Result<(), ComputeError>;

    /// T6 for one example: `g` is the output gradient `[len, q_dim]`.
    fn attention_backward(
        &self,
        shape: AttentionShape,
        tape: AttentionTape<'_>,
        g: &[f32],
        grads: AttentionGrads<'_>,
    ) -> Result<(), ComputeError>;
}

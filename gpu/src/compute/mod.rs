//! Canonical compute: the specification every backend follows bit for bit, the
//! [`Backend`] trait the engine and trainer reach it through, and today's implementation of
//! it, the CPU kernels ([`CpuBackend`], module `cpu`).
//!
//! Redundant workers are compared by the hash of their outputs, so every floating-point
//! operation below has ONE specified order. Scalar, SIMD, multi-threaded and (later) CUDA
//! implementations must reproduce it exactly; SIMD width, threads and tiling only change
//! *who* computes a value, never the order in which its terms are combined. All math is f32
//! unless stated; "fma" means a fused multiply-add with a single rounding (the portable path
//! uses `f32::mul_add`, which is correctly rounded, so it equals hardware FMA). There is no
//! FP contraction anywhere else: every `a * b + c` not written as fma is two roundings.
//!
//! # 1. Dot product and sum (the 16-lane rule)
//!
//! Sixteen lanes `l[0..16]`, all starting at `+0.0`. Element `i` (ascending) goes to lane
//! `i mod 16`: `l = fma(a[i], b[i], l)` for a dot, `l = l + x[i]` for a sum. Tail elements
//! (n not a multiple of 16) go to their lane like any other; SIMD code must *mask* them
//! (the lane is left untouched), never pad with zeros, because `fma(0, 0, -0.0) = +0.0`.
//! The lanes are then combined by a fixed halving tree:
//!
//! ```text
//! s8[j] = l[j] + l[j+8]    (j < 8)
//! s4[j] = s8[j] + s8[j+4]  (j < 4)
//! s2[j] = s4[j] + s4[j+2]  (j < 2)
//! result = s2[0] + s2[1]
//! ```
//!
//! On AVX-512 the lanes are one zmm register; on AVX2 two ymm registers (lanes 0-7 and
//! 8-15) whose vertical sum is `s8`; on CUDA a 16-thread group or 16 registers per thread.
//!
//! # 2. matmul
//!
//! `y[r][c] = dot(x[r, :], w[c, :])`, then `+ bias[c]` as one f32 add if a bias is given.
//! `x` is `[rows, k]` row-major and `w` is `[cols, k]` row-major (the Hugging Face `Linear`
//! layout `[out_features, in_features]`), so both operands of every dot are contiguous.
//!
//! # 3. exp (our own; never libm or GPU intrinsics)
//!
//! ```text
//! NaN          -> canonical quiet NaN (bits 0x7fc0_0000)
//! x > 88.72283172607421875 (0x42b17217)  -> +inf   (the first f32 whose true exp overflows)
//! x < -104.0   -> +0.0     (true exp < 2^-150: the correctly rounded result is 0 too)
//! otherwise:
//!   t  = x * LOG2E                              (one rounded multiply)
//!   n  = round_ties_even(t)                     (exact)
//!   r  = fma(-n, LN2_HI, x); r = fma(-n, LN2_LO, r)
//!   p  = C7; p = fma(p, r, C6); ... ; p = fma(p, r, C1); p = fma(p, r, C0)   (Horner)
//!   ni = n as i32; n1 = ni >> 1 (arithmetic); n2 = ni - n1
//!   result = (p * 2^n1) * 2^n2                  (2^k built from exponent bits (k+127)<<23)
//! ```
//!
//! The constants are exported as `LOG2E`, `LN2_HI`, `LN2_LO` and `EXP_POLY` (exact bits). The
//! two-step scaling keeps both factors normal over the whole range, so results in the
//! subnormal range come from one IEEE rounding, identical everywhere (no flush-to-zero:
//! backends must run with denormals enabled). Max error: ≤ 2 ulp on [-87, 88] (tested).
//!
//! # 4. softmax over a row
//!
//! `m = max(x)` (exact; NaN elements are skipped, as `if x > m { m = x }` from -inf does);
//! `e_i = exp(x_i - m)`; `s = sum(e)` by rule 1; `y_i = e_i / s` (IEEE division).
//!
//! # 5. RMSNorm
//!
//! `ss = dot(x, x)` by rule 1; `inv = 1.0 / sqrt(ss / (n as f32) + eps)` (IEEE division and
//! sqrt, no rsqrt approximation); `y_i = (x_i * inv) * w_i`.
//!
//! # 6. SiLU and the gated MLP
//!
//! `silu(x) = x / (1.0 + exp(-x))`; `act_i = silu(gate_i) * up_i`.
//!
//! # 7. RoPE (Hugging Face Llama `rotate_half` convention)
//!
//! `inv_freq_j = 1 / theta^(2j/d)` in f64, optionally rescaled by Llama-3 `rope_scaling`
//! exactly as transformers' `_compute_llama3_parameters` (in f64); `angle = pos * inv_freq_j`
//! in f64; `cos`/`sin` in f64, rounded to f32 once. For `j < d/2`:
//! `out[j] = q[j]*cos[j] - q[j+d/2]*sin[j]` and `out[j+d/2] = q[j+d/2]*cos[j] + q[j]*sin[j]`,
//! each as two rounded products and one rounded add/sub (no fma).
//!
//! # 8. Attention (one query, one head, L visible positions)
//!
//! `scale = (1 / sqrt(head_dim))` computed in f64 then rounded to f32;
//! `score_j = dot(q, k_j) * scale`; `p = softmax(score)`;
//! `out[e] = Σ_j p_j · v_j[e]` by rule 1 over `j` (lane `j mod 16`, `fma(p_j, v_j[e], lane)`,
//! halving tree). Causal masking is the caller's job: pass only the visible positions.
//! Grouped-query attention maps query head `h` to kv head `h / (n_heads / n_kv_heads)`.
//!
//! # 9. Quantized weights (GGUF block formats)
//!
//! A `[rows, cols]` matrix in a [`QuantType`] is stored row by row, each row
//! `ty.row_bytes(cols)` bytes of ggml blocks in ggml's byte layout, and is never widened as a
//! whole: a kernel dequantizes each weight by the expression below, in f32 with every
//! operation rounded separately (no fma), and rule 2 then runs over those values exactly as
//! over f32 weights (`dot(x[r], w[c])`, lane `i mod 16`, `fma(x[i], w[i], lane)`, the halving
//! tree, then the bias add). The expressions are those of the `gguf` Python package's
//! `gguf.quants.dequantize` (numpy float32), which the fixtures in `gpu/tests/fixtures/quant`
//! pin bit for bit. f16 fields (`d`, `m`, `dmin`) are little-endian IEEE halves widened
//! exactly (subnormals kept); integers become f32 exactly. Within a block, weight `j`:
//!
//! ```text
//! F32   the little-endian f32 itself          F16   the half widened
//! BF16  f32 from bits (b << 16)
//! Q8_0  [d:f16][q:i8 x32]                     w = f32(q[j]) * d
//! Q4_0  [d:f16][qs:16 bytes]                  w = d * f32(n(j) - 8)
//! Q4_1  [d:f16][m:f16][qs:16 bytes]           w = (d * f32(n(j))) + m
//!       n(j) = low nibble of qs[j] for j < 16, high nibble of qs[j - 16] otherwise
//! Q4_K  [d:f16][dmin:f16][scales:12][qs:128]  256 weights, sub-block s = j / 32, e = j % 32:
//!       (sc, m) = 6-bit pair s of `scales` (ggml's get_scale_min_k4:
//!                 s < 4: (sc[s] & 63, sc[s+4] & 63);
//!                 else:  ((sc[s+4] & 15) | (sc[s-4] >> 6) << 4, (sc[s+4] >> 4) | (sc[s] >> 6) << 4))
//!       ds = d * f32(sc); dm = dmin * f32(m)  (once per sub-block)
//!       q  = (qs[32 * (s / 2) + e] >> (4 * (s % 2))) & 15
//!       w  = (ds * f32(q)) - dm
//! Q6_K  [ql:128][qh:64][scales:i8 x16][d:f16] 256 weights, a = j / 128, r = j % 128:
//!       lo = (ql[64a + r % 64] >> (4 * (r / 64))) & 15
//!       hi = (qh[32a + r % 32] >> (2 * (r / 32))) & 3
//!       ds = d * f32(scales[j / 16])            (once per 16 weights)
//!       w  = ds * f32((lo | hi << 4) - 32)
//! ```
//!
//! `dequantize_row` is this table as code. A row whose length is not a whole number of
//! blocks, or whose byte count does not match, is refused.
//!
//! # NaN
//!
//! Which NaN bit pattern an op yields when its inputs contain NaN or produce one (e.g.
//! `inf - inf`) differs between CPUs and GPUs and is not part of the contract; only exp
//! pins its output to the canonical NaN. Verifiers should treat such outputs as failed
//! jobs rather than compare them.

//!
//! # Backends
//!
//! The engine and the trainer call compute only through [`Backend`] (see `backend.rs` for
//! what crosses the seam: weights as opaque backend-owned handles loaded once, activations
//! as host f32 slices). Its methods are the rules above, batched the way the model code
//! loops (all rows of a pass, every head), plus the training rules T3–T7 of `train/mod.rs`
//! and the data movement around them (loading weights, embedding lookup, transposed weights
//! for the backward pass). A method's result is defined by the rules alone, so any two
//! backends must agree bit for bit on every input, including odd lengths, signed zeros,
//! subnormals and infinities; `compute::conformance` is the suite that checks that, and a new
//! backend (CUDA) is done when it passes against [`CpuBackend`].
//!
//! Model code is generic over the backend (`Engine<B: Backend = CpuBackend>`), not
//! `&dyn Backend`: the weight handle is an associated type and `run` is generic, and with
//! monomorphisation the CPU path compiles to the direct kernel calls it made before the
//! seam existed (measured: BENCHMARKS.md, "Backend seam").
//!
//! The free functions below (`matmul`, `dot`, `attention`, ...) are the CPU kernels
//! themselves, kept public as the executable form of the rules for tests and benchmarks.
//! Sampling (`engine::sample`) runs on the host over downloaded logits with the scalar
//! [`exp`] and the portable [`sum`], on purpose outside the backend.

mod backend;
pub mod cpu;
mod quant;
mod rope;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use backend::{
    AttentionGrads, AttentionShape, AttentionTape, Backend, HostWeights, KvView, LoraProduct,
    MatrixRef, QueryRow, WeightShape, kv_head,
};
pub(crate) use cpu::tree16;
pub use cpu::{
    AlignedVec, CpuBackend, CpuWeights, EXP_POLY, Isa, LN2_HI, LN2_LO, LOG2E, attention, dot, exp,
    exp_inplace, matmul, rmsnorm, silu, silu_inplace, softmax_inplace, sum, swiglu,
};
pub use quant::{QuantType, dequantize_row};
pub use rope::{Llama3RopeScaling, RopeTable, rope_inv_freq};

/// Number of accumulation lanes of rule 1; fixed by the contract, not by any SIMD width.
pub const LANES: usize = 16;

/// Why a kernel refused its arguments. Kernels check everything before touching SIMD code,
/// so a bad shape from a malformed model file is an error, never an out-of-bounds read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError {
    #[error("{op}: {what} has length {got}, expected {expected}")]
    Length {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op}: shape overflows usize")]
    Overflow { op: &'static str },
    #[error("{op}: {reason}")]
    Invalid {
        op: &'static str,
        reason: &'static str,
    },
    /// An intermediate value overflowed where carrying on would give a silently meaningless
    /// result (training's backward pass refuses to differentiate through such a value).
    #[error("{op}: {what} is not finite")]
    NonFinite {
        op: &'static str,
        what: &'static str,
    },
    #[error("instruction set {0:?} is not available on this CPU")]
    UnsupportedIsa(Isa),
    #[error("cannot build a thread pool: {0}")]
    ThreadPool(String),
}

pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), ComputeError> {
    if expected == got {
        Ok(())
    } else {
        Err(ComputeError::Length {
            op,
            what,
            expected,
            got,
        })
    }
}

pub(crate) fn checked_mul(op: &'static str, a: usize, b: usize) -> Result<usize, ComputeError> {
    a.checked_mul(b).ok_or(ComputeError::Overflow { op })
}

/// `[rows, cols]` → `[cols, rows]`, so that a sum over rows becomes a contiguous dot.
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m.len()];
    for (r, row) in m.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (c, v) in row.iter().enumerate() {
            out[c * rows + r] = *v;
        }
    }
    out
}

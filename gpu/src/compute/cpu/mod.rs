//! The CPU backend: today's kernels (portable Rust, AVX2, AVX-512) behind [`Backend`],
//! with the rayon pool that splits them over threads.
//!
//! The kernel modules are the executable form of the spec and stay callable on their own
//! (`compute::matmul`, `compute::dot`, ...) for tests and benchmarks; [`CpuBackend`] adds
//! the batching the trait asks for (rows, heads, sequences) and holds a checked ISA and its
//! pool, so the hot path neither re-detects the CPU nor looks the pool up per call.

mod attention;
mod attention_backward;
mod backward;
mod buf;
mod dot;
mod exp;
mod isa;
mod lora;
mod matmul;
mod ops;
mod pool;
mod quant;
mod split;
mod weights;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use rayon::prelude::*;

use super::backend::{
    AttentionGrads, AttentionShape, AttentionTape, Backend, HostWeights, KvView, LoraProduct,
    QueryRow, WeightShape,
};
use super::{ComputeError, LANES, RopeTable, check_len, checked_mul};

pub use attention::attention;
pub use buf::AlignedVec;
pub(crate) use dot::tree16;
pub use dot::{dot, sum};
pub use exp::{EXP_POLY, LN2_HI, LN2_LO, LOG2E, exp, exp_inplace};
pub use isa::Isa;
pub use matmul::matmul;
pub(crate) use matmul::matmul_checked;
pub use ops::{rmsnorm, silu, silu_inplace, softmax_inplace, swiglu};
pub use weights::CpuWeights;

use isa::Checked;

/// The canonical kernels on this CPU: one instruction-set path and a thread count. Every
/// `(isa, threads)` gives the same bits; they only change speed.
#[derive(Clone)]
pub struct CpuBackend {
    isa: Checked,
    threads: usize,
    pool: Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("isa", &self.isa.isa())
            .field("threads", &self.threads)
            .finish()
    }
}

impl CpuBackend {
    /// `isa` must run on this CPU; `threads` is at least 1.
    pub fn new(isa: Isa, threads: usize) -> Result<Self, ComputeError> {
        if threads == 0 {
            return Err(ComputeError::Invalid {
                op: "cpu backend",
                reason: "threads must be at least 1",
            });
        }
        Ok(Self {
            isa: isa.checked()?,
            threads,
            pool: pool::pool(threads)?,
        })
    }

    /// The fastest path of this CPU on every available core.
    pub fn detect() -> Result<Self, ComputeError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(Isa::detect(), threads)
    }

    pub fn isa(&self) -> Isa {
        self.isa.isa()
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Rows of `x` and `out`, each `n` wide, after checking that they match.
    fn rows<'a>(
        op: &'static str,
        n: usize,
        x: &'a [f32],
        out_len: usize,
    ) -> Result<std::slice::ChunksExact<'a, f32>, ComputeError> {
        check_len(op, "out", x.len(), out_len)?;
        if n == 0 || !x.len().is_multiple_of(n) {
            return Err(ComputeError::Invalid {
                op,
                reason: "rows must be a whole number of weight.len()-wide rows",
            });
        }
        Ok(x.chunks_exact(n))
    }
}

impl Backend for CpuBackend {
    type Weights = CpuWeights;

    fn name(&self) -> String {
        format!("cpu/{:?}x{}", self.isa(), self.threads).to_lowercase()
    }

    fn load_weights(&self, matrices: Vec<HostWeights>) -> Result<Vec<CpuWeights>, ComputeError> {
        weights::load(matrices)
    }

    fn transposed(&self, w: &CpuWeights) -> Result<CpuWeights, ComputeError> {
        w.transposed()
    }

    fn embed(
        &self,
        table: &CpuWeights,
        tokens: &[u32],
        out: &mut [f32],
    ) -> Result<(), ComputeError> {
        const OP: &str = "embed";
        let hidden = table.cols();
        check_len(OP, "out", checked_mul(OP, tokens.len(), hidden)?, out.len())?;
        let quantized = table.quantized()?;
        let values = table.values();
        let mut buf = Vec::new();
        for (row, &tok) in out.chunks_exact_mut(hidden.max(1)).zip(tokens) {
            let id = tok as usize;
            if id >= table.rows() {
                return Err(ComputeError::Invalid {
                    op: OP,
                    reason: "token id outside the vocabulary",
                });
            }
            match &quantized {
                // Rule 9 of one row: a quantized table (SmolLM2's tied Q8_0 embeddings)
                // is never widened as a whole.
                Some(q) => q.dequantize_into(id, &mut buf, row)?,
                None => row.copy_from_slice(&values[id * hidden..][..hidden]),
            }
        }
        Ok(())
    }

    /// A decode step makes ~200 matmuls: from outside the pool, every one would hand its
    /// work to the pool and sleep until a worker wakes it, which on a VM costs tens of µs
    /// per call; from inside, the calling worker takes its share itself and the other
    /// workers, still spinning from the previous call, pick up the rest.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, ComputeError> {
        Ok(self.pool.install(f))
    }

    fn dot(&self, a: &[f32], b: &[f32]) -> Result<f32, ComputeError> {
        check_len("dot", "b", a.len(), b.len())?;
        Ok(dot::dot_checked(self.isa, a, b))
    }

    fn sum(&self, x: &[f32]) -> f32 {
        dot::sum_checked(self.isa, x)
    }

    fn matmul(
        &self,
        x: &[f32],
        rows: usize,
        w: &CpuWeights,
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<(), ComputeError> {
        if let Some(q) = w.quantized()? {
            return quant::matmul(
                self.isa,
                self.threads,
                Some(&self.pool),
                x,
                rows,
                q,
                bias,
                out,
            );
        }
        matmul_checked(
            self.isa,
            self.threads,
            Some(&self.pool),
            x,
            rows,
            w.cols(),
            w.values(),
            w.rows(),
            bias,
            out,
        )
    }

    fn matmul_slices(
        &self,
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[f32],
        cols: usize,
        out: &mut [f32],
    ) -> Result<(), ComputeError> {
        matmul_checked(self.isa, 1, None, x, rows, k, w, cols, None, out)
    }

    fn lora(&self, products: Vec<LoraProduct<'_>>) -> Result<(), ComputeError> {
        // A sequence's low-rank product is far too small to split over threads, but a decode
        // batch with many adapters has many of them: one per worker.
        if products.len() == 1 {
            return products
                .into_iter()
                .try_for_each(|p| lora::apply(self.isa, p));
        }
        products
            .into_par_iter()
            .try_for_each(|p| lora::apply(self.isa, p))
    }

    fn exp(&self, x: &mut [f32]) -> Result<(), ComputeError> {
        exp::exp_inplace_checked(self.isa, x);
        Ok(())
    }

    fn softmax(&self, row: &mut [f32]) -> Result<(), ComputeError> {
        ops::softmax_checked(self.isa, row);
        Ok(())
    }

    fn rmsnorm(
        &self,
        x: &[f32],
        weight: &[f32],
        eps: f32,
        out: &mut [f32],
    ) -> Result<(), ComputeError> {
        let n = weight.len();
        for (row, o) in Self::rows("rmsnorm", n, x, out.len())?.zip(out.chunks_exact_mut(n)) {
            ops::rmsnorm_checked(self.isa, row, weight, eps, o)?;
        }
        Ok(())
    }

    fn silu(&self, x: &mut [f32]) -> Result<(), ComputeError> {
        ops::silu_inplace_checked(self.isa, x);
        Ok(())
    }

    fn swiglu(&self, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), ComputeError> {
        ops::swiglu_checked(self.isa, gate, up, out)
    }

    fn rope(
        &self,
        table: &RopeTable,
        first_pos: usize,
        width: usize,
        x: &mut [f32],
    ) -> Result<(), ComputeError> {
        for (i, row) in rope_rows(width, x)?.enumerate() {
            table.apply(first_pos + i, row)?;
        }
        Ok(())
    }

    fn attention(
        &self,
        shape: AttentionShape,
        q: &[f32],
        kv: &[KvView<'_>],
        rows: &[QueryRow],
        out: &mut [f32],
        probs: Option<&mut [f32]>,
    ) -> Result<(), ComputeError> {
        attention::batch(self.isa, shape, q, kv, rows, out, probs)
    }

    fn outer_fma(&self, a: &[f32], b: &[f32], acc: &mut [f32]) -> Result<(), ComputeError> {
        const OP: &str = "outer_fma";
        check_len(OP, "acc", checked_mul(OP, a.len(), b.len())?, acc.len())?;
        backward::outer_fma(self.isa, a, b, acc);
        Ok(())
    }

    fn rmsnorm_backward(
        &self,
        x: &[f32],
        weight: &[f32],
        eps: f32,
        g: &[f32],
        dx: &mut [f32],
    ) -> Result<(), ComputeError> {
        const OP: &str = "rmsnorm backward";
        let n = weight.len();
        check_len(OP, "g", x.len(), g.len())?;
        let rows = Self::rows(OP, n, x, dx.len())?;
        for ((xr, gr), dr) in rows.zip(g.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
            backward::rmsnorm_backward(self.isa, xr, weight, eps, gr, dr)?;
        }
        Ok(())
    }

    fn swiglu_backward(
        &self,
        gate: &[f32],
        up: &[f32],
        d_act: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
    ) -> Result<(), ComputeError> {
        const OP: &str = "swiglu backward";
        let n = gate.len();
        check_len(OP, "up", n, up.len())?;
        check_len(OP, "d_act", n, d_act.len())?;
        check_len(OP, "d_gate", n, d_gate.len())?;
        check_len(OP, "d_up", n, d_up.len())?;
        backward::swiglu_backward(self.isa, gate, up, d_act, d_gate, d_up);
        Ok(())
    }

    fn rope_backward(
        &self,
        table: &RopeTable,
        first_pos: usize,
        width: usize,
        d: &mut [f32],
    ) -> Result<(), ComputeError> {
        for (i, row) in rope_rows(width, d)?.enumerate() {
            backward::rope_backward(table, first_pos + i, row)?;
        }
        Ok(())
    }

    fn attention_backward(
        &self,
        shape: AttentionShape,
        tape: AttentionTape<'_>,
        g: &[f32],
        grads: AttentionGrads<'_>,
    ) -> Result<(), ComputeError> {
        attention_backward::run(self.isa, shape, tape, g, grads)
    }
}

/// The `width`-wide rows of `x`, refusing a width that does not tile it.
fn rope_rows(
    width: usize,
    x: &mut [f32],
) -> Result<std::slice::ChunksExactMut<'_, f32>, ComputeError> {
    if width == 0 || !x.len().is_multiple_of(width) {
        return Err(ComputeError::Invalid {
            op: "rope",
            reason: "rows must be a whole number of width-wide rows",
        });
    }
    Ok(x.chunks_exact_mut(width))
}

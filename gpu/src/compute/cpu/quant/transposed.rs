//! Rule 2 with the transpose of a quantized matrix, `out[r][i] = dot(x[r], wᵀ[i])` where
//! `wᵀ[i][o] = w[o][i]`: LoRA training's input gradient `g·W` through a frozen quantized
//! base. The f32 transpose of the whole matrix is never built: threads take panels of
//! output columns (whole blocks of `w`'s rows), widen just that panel's `[panel, k]`
//! transpose by rule 9 into a buffer of their own, and run the f32 matmul on it. The dot
//! product of every output is the same rule-1 dot as over a full f32 transpose, so the bits
//! are those of `transposed()` on the dequantized values.

use rayon::prelude::*;

use super::QMatrix;
use crate::compute::ComputeError;
use crate::compute::cpu::isa::Checked;
use crate::compute::cpu::matmul::check_operands;
use crate::compute::cpu::matmul_checked;
use crate::compute::cpu::pool::pool;
use crate::compute::cpu::split::Dst;

/// A panel's f32 transpose is kept near this size (it is read once per row of `x`).
const PANEL_BYTES: usize = 1 << 20;

/// `x` is `[rows, w.rows]`, `out` `[rows, w.cols]`.
pub(crate) fn matmul_transposed(
    isa: Checked,
    threads: usize,
    pool_hint: Option<&rayon::ThreadPool>,
    x: &[f32],
    rows: usize,
    w: QMatrix<'_>,
    out: &mut [f32],
) -> Result<(), ComputeError> {
    const OP: &str = "transposed quantized matmul";
    let (k, n) = (w.rows, w.cols);
    check_operands(OP, x, rows, k, out, n, None, threads)?;
    let block = w.ty.block_elems();
    let blocks_per_panel = (PANEL_BYTES / 4 / k.max(1) / block).max(1);
    let panel = blocks_per_panel * block;
    let panels = n.div_ceil(panel);
    let dst = Dst::new(out, n);
    let run = |p: usize| -> Result<(), ComputeError> {
        let i0 = p * panel;
        let width = panel.min(n - i0);
        let mut wt = vec![0.0f32; width * k];
        let mut row = vec![0.0f32; width];
        let mut buf = Vec::new();
        for o in 0..k {
            w.widen_blocks(isa, o, i0 / block, width / block, &mut buf, &mut row)?;
            for (j, v) in row.iter().enumerate() {
                wt[j * k + o] = *v;
            }
        }
        let mut part = vec![0.0f32; rows * width];
        matmul_checked(isa, 1, None, x, rows, k, &wt, width, None, &mut part)?;
        for (r, values) in part.chunks_exact(width).enumerate() {
            dst.columns(i0).write(r, 0, values.iter().copied());
        }
        Ok(())
    };
    if threads == 1 || panels == 1 {
        return (0..panels).try_for_each(run);
    }
    let shared;
    let pool = match pool_hint {
        Some(p) => p,
        None => {
            shared = pool(threads)?;
            &*shared
        }
    };
    pool.install(|| (0..panels).into_par_iter().try_for_each(run))
}

//! Rule 2 of the spec: `y = x · wᵀ (+ bias)`, tiled and multi-threaded.
//!
//! Every output is one rule-1 dot product. Register tiling computes an R×C block of outputs
//! at once (each with its own 16-lane accumulator) so that each loaded vector of `x` and `w`
//! feeds several FMAs; threads split the columns. Neither changes any output's terms or
//! their order, which is why results are identical for every ISA and thread count.

use std::ops::Range;

use super::dot::dot_portable;
use super::isa::Checked;
use super::split::{Dst, split_columns};
use super::{ComputeError, Isa, check_len, checked_mul};

/// `out[r*cols + c] = dot(x[r*k..][..k], w[c*k..][..k]) (+ bias[c])` on `threads` threads.
///
/// `x` is `[rows, k]`, `w` is `[cols, k]` (Hugging Face `Linear` weight layout), `out` is
/// `[rows, cols]`, all row-major; `bias`, if given, has `cols` elements.
///
/// Results never depend on alignment, but speed does: operands in
/// [`AlignedVec`](super::AlignedVec) (with `k` a multiple of 16) avoid cache-line-split
/// loads and run ~1.4× faster.
#[allow(clippy::too_many_arguments)] // mirrors the mathematical signature; a struct would hide it
pub fn matmul(
    isa: Isa,
    threads: usize,
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    cols: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), ComputeError> {
    matmul_checked(
        isa.checked()?,
        threads,
        None,
        x,
        rows,
        k,
        w,
        cols,
        bias,
        out,
    )
}

/// Rule 2's checks on everything but the weights (whose storage varies): `x` is
/// `[rows, k]`, `out` `[rows, cols]`, `bias` `cols` long, and there is a thread to run on.
#[allow(clippy::too_many_arguments)] // the operands of rule 2, as `matmul`
pub(super) fn check_operands(
    op: &'static str,
    x: &[f32],
    rows: usize,
    k: usize,
    out: &[f32],
    cols: usize,
    bias: Option<&[f32]>,
    threads: usize,
) -> Result<(), ComputeError> {
    check_len(op, "x", checked_mul(op, rows, k)?, x.len())?;
    check_len(op, "out", checked_mul(op, rows, cols)?, out.len())?;
    if let Some(b) = bias {
        check_len(op, "bias", cols, b.len())?;
    }
    if threads == 0 {
        return Err(ComputeError::Invalid {
            op,
            reason: "threads must be at least 1",
        });
    }
    Ok(())
}

/// [`matmul`] for callers that hold a checked ISA and, if `threads > 1`, usually the
/// pool already (the CPU backend): `None` fetches the shared pool only if it is needed.
#[allow(clippy::too_many_arguments)] // as `matmul`, plus the pool
pub(crate) fn matmul_checked(
    isa: Checked,
    threads: usize,
    pool_hint: Option<&rayon::ThreadPool>,
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    cols: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), ComputeError> {
    const OP: &str = "matmul";
    check_len(OP, "w", checked_mul(OP, cols, k)?, w.len())?;
    check_operands(OP, x, rows, k, out, cols, bias, threads)?;
    let m = Operands {
        x,
        rows,
        k,
        w,
        bias,
    };
    split_columns(threads, pool_hint, cols, out, |range, dst| {
        m.block(isa, range, dst);
        Ok(())
    })
}

/// How many column tiles ahead a tile prefetches its weights (into L2, each row tile a share).
const PREFETCH_TILES: usize = 2;

/// Rows per cache block: 64 rows of a 576-wide x are 144 KiB, comfortably inside L2.
const ROW_BLOCK: usize = 64;

/// Shape-checked operands.
#[derive(Clone, Copy)]
struct Operands<'a> {
    x: &'a [f32],
    rows: usize,
    k: usize,
    w: &'a [f32],
    bias: Option<&'a [f32]>,
}

impl Operands<'_> {
    /// Outputs for columns `cols` of every row into `out` at `(r, c - cols.start)`.
    ///
    /// Full R-row tiles go to the big kernel; leftover rows (all of them for a one-token
    /// decode) to a one-row kernel, because repeating rows to fill a tile would multiply
    /// the work instead of sharing loads.
    fn block(&self, isa: Checked, cols: Range<usize>, out: Dst) {
        // Rows in blocks whose activations stay in L2 while every column tile passes over
        // them; without this a long prefill re-streams all of x from L3 per column tile.
        // Blocking changes which outputs are computed when, never how.
        let mut r0 = 0;
        while r0 < self.rows {
            let r1 = (r0 + ROW_BLOCK).min(self.rows);
            let part = Operands {
                x: &self.x[r0 * self.k..r1 * self.k],
                rows: r1 - r0,
                ..*self
            };
            part.block_rows(isa, cols.clone(), out.rows_from(r0));
            r0 = r1;
        }
    }

    fn block_rows(&self, isa: Checked, cols: Range<usize>, out: Dst) {
        match isa.isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                let full = self.rows / 4 * 4;
                // Whole 4-column tiles over every full row tile in one call each; the
                // columns left over (fewer than 4) in ordinary tiles.
                let panel_end = cols.start + cols.len() / 4 * 4;
                if full > 0 {
                    self.panels_avx512(full, cols.start..panel_end, cols.end, out);
                }
                let rest = out.columns(panel_end - cols.start);
                self.tiled::<4, 4>(0..full, panel_end..cols.end, rest, |x, w, a, o| {
                    // SAFETY: `Checked` exists only for ISAs detected on this CPU.
                    unsafe { x86::tile_avx512(x, w, a, o) }
                });
                self.tiled::<1, 16>(full..self.rows, cols, out, |x, w, a, o| {
                    // SAFETY: as above.
                    unsafe { x86::tile_avx512(x, w, a, o) }
                });
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                let full = self.rows / 2 * 2;
                self.tiled::<2, 3>(0..full, cols.clone(), out, |x, w, _, o| {
                    // SAFETY: as above.
                    unsafe { x86::tile_avx2(x, w, o) }
                });
                self.tiled::<1, 4>(full..self.rows, cols, out, |x, w, _, o| {
                    // SAFETY: as above.
                    unsafe { x86::tile_avx2(x, w, o) }
                });
            }
            _ => self.tiled::<1, 1>(0..self.rows, cols, out, |x, w, _, o| {
                o[0][0] = dot_portable(x[0], w[0]);
            }),
        }
    }

    /// Rows `0..rows` (a multiple of 4) × the 4-column tiles of `cols` (a multiple of 4
    /// wide), one [`x86::panel_avx512`] call per column tile; `c_end` is where this thread's
    /// columns end (tiles up to it may be prefetched). Outputs go to `out` at
    /// `(r, c - cols.start)`. Each output is the same as `tiled::<4, 4>` computes.
    #[cfg(target_arch = "x86_64")]
    fn panels_avx512(&self, rows: usize, cols: Range<usize>, c_end: usize, out: Dst) {
        let k = self.k;
        let row_tiles = rows / 4;
        // Each row tile's share of the cache lines of the tile `PREFETCH_TILES` on.
        let share = (4 * k).div_ceil(row_tiles.max(1)).next_multiple_of(16);
        let x = &self.x[..rows * k];
        let mut c0 = cols.start;
        while c0 + 4 <= cols.end {
            let ahead_at = (c0 + PREFETCH_TILES * 4) * k;
            let ahead = if c0 + (PREFETCH_TILES + 1) * 4 <= c_end {
                &self.w[ahead_at..ahead_at + 4 * k]
            } else {
                &[]
            };
            let bias = self.bias.map(|b| &b[c0..c0 + 4]);
            let w = &self.w[c0 * k..(c0 + 4) * k];
            // SAFETY: `Checked` exists only for ISAs detected on this CPU (the caller
            // matched `Isa::Avx512` on one).
            unsafe { x86::panel_avx512(x, k, w, ahead, share, bias, out.columns(c0 - cols.start)) };
            c0 += 4;
        }
    }

    /// Walks R×C tiles over `rows` × `cols`; at the edges, missing rows/columns repeat the
    /// last valid one and their results are dropped, so every kernel call sees a full tile.
    fn tiled<const R: usize, const C: usize>(
        &self,
        rows: Range<usize>,
        cols: Range<usize>,
        out: Dst,
        kernel: impl Fn([&[f32]; R], [&[f32]; C], &[f32], &mut [[f32; C]; R]),
    ) {
        let k = self.k;
        let (c_start, c_end) = (cols.start, cols.end);
        // Each of a column tile's row tiles prefetches its share of the weights of the tile
        // `PREFETCH_TILES` on (rows `c .. c + C` of `w` are contiguous), so the DRAM stream
        // is spread over all of the tile's compute instead of waiting in the first row tile.
        let row_tiles = rows.len().div_ceil(R).max(1);
        let share = (C * k).div_ceil(row_tiles).next_multiple_of(16);
        let mut c0 = c_start;
        while c0 < c_end {
            let cn = C.min(c_end - c0);
            let wt: [&[f32]; C] = std::array::from_fn(|t| {
                let c = c0 + t.min(cn - 1);
                &self.w[c * k..(c + 1) * k]
            });
            let mut r0 = rows.start;
            while r0 < rows.end {
                let rn = R.min(rows.end - r0);
                let xt: [&[f32]; R] = std::array::from_fn(|t| {
                    let r = r0 + t.min(rn - 1);
                    &self.x[r * k..(r + 1) * k]
                });
                // Without this every tile would wait for DRAM (the hardware prefetchers do
                // little for these streams on the machines measured), even one-row ones.
                let ahead: &[f32] = if c0 + (PREFETCH_TILES + 1) * C <= c_end {
                    let at = (c0 + PREFETCH_TILES * C) * k + (r0 - rows.start) / R * share;
                    let end = ((c0 + (PREFETCH_TILES + 1) * C) * k).min(self.w.len());
                    self.w
                        .get(at.min(end)..(at + share).min(end))
                        .unwrap_or_default()
                } else {
                    &[]
                };
                let mut res = [[0.0f32; C]; R];
                kernel(xt, wt, ahead, &mut res);
                for (t, row) in res.iter().enumerate().take(rn) {
                    let vals = row[..cn].iter().enumerate().map(|(u, v)| match self.bias {
                        Some(b) => *v + b[c0 + u],
                        None => *v,
                    });
                    out.write(r0 + t, c0 - c_start, vals);
                }
                r0 += R;
            }
            c0 += C;
        }
    }
}

#[cfg(target_arch = "x86_64")]
// Tile loops index several parallel arrays (x, w, acc) by the same r, c, h: iterator
// chains would obscure which accumulator each FMA feeds.
#[allow(clippy::needless_range_loop)]
mod x86 {
    use std::arch::x86_64::*;

    use super::Dst;
    use crate::compute::cpu::dot::x86::{mask8, mask16, tree_from_s8, tree512, tree512_x16};

    /// Shortest slice length, so that no load can go past any operand whatever the caller
    /// passes (the tiler passes equal lengths).
    fn common_len<const R: usize, const C: usize>(x: &[&[f32]; R], w: &[&[f32]; C]) -> usize {
        x.iter().chain(w).map(|s| s.len()).min().unwrap_or(0)
    }

    /// `tile_avx512::<4, 4>` over every 4-row tile of `x` (`[rows, k]`, rows a multiple of
    /// 4) against the 4 weight rows `w` (`[4, k]`), writing output `(r, c)` (plus `bias[c]`)
    /// to `out` at `(r, c)`. Each output's FMAs, tree and bias add are exactly the tile's;
    /// one call per column tile saves the tile's per-call set-up and its scalar stores.
    /// Row tile `t` prefetches lines `t * share .. (t + 1) * share` of `ahead` into L2.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn panel_avx512(
        x: &[f32],
        k: usize,
        w: &[f32],
        ahead: &[f32],
        share: usize,
        bias: Option<&[f32]>,
        out: Dst,
    ) {
        assert!(
            k > 0 && x.len().is_multiple_of(4 * k) && w.len() == 4 * k,
            "matmul: panel shapes"
        );
        let bias = bias.map(|b| {
            assert!(b.len() == 4, "matmul: panel bias");
            // SAFETY: b has 4 elements; lane 4r + c of the result is bias[c].
            _mm512_broadcast_f32x4(unsafe { _mm_loadu_ps(b.as_ptr()) })
        });
        // The 16-output tree leaves output (r, c) in lane 4c + r; this puts it in 4r + c.
        let to_rows = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let steps = k / 16;
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        for t in 0..x.len() / (4 * k) {
            let xt = t * 4 * k;
            let mine = ahead.get(t * share..).unwrap_or_default();
            let mine = &mine[..share.min(mine.len())];
            let lines = mine.len().div_ceil(16);
            let per_step = lines.div_ceil(steps.max(1));
            let mut line = 0;
            let mut acc = [[_mm512_setzero_ps(); 4]; 4];
            let mut i = 0;
            while i + 16 <= k {
                for _ in 0..per_step {
                    if line < lines {
                        // SAFETY: 16 * line < mine.len(): inside the slice; a prefetch is a
                        // hint that reads nothing into any register.
                        let at = unsafe { mine.as_ptr().add(16 * line) };
                        _mm_prefetch::<_MM_HINT_T1>(at.cast::<i8>());
                        line += 1;
                    }
                }
                // SAFETY: row r < 4 of tile t is inside x, and i + 16 <= k.
                let xv: [__m512; 4] =
                    std::array::from_fn(|r| unsafe { _mm512_loadu_ps(xp.add(xt + r * k + i)) });
                for c in 0..4 {
                    // SAFETY: row c < 4 of w, i + 16 <= k.
                    let wv = unsafe { _mm512_loadu_ps(wp.add(c * k + i)) };
                    for r in 0..4 {
                        acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
                    }
                }
                i += 16;
            }
            if i < k {
                let m = mask16(k - i);
                // SAFETY: only the k - i active lanes, all in bounds, are read.
                let xv: [__m512; 4] = std::array::from_fn(|r| unsafe {
                    _mm512_maskz_loadu_ps(m, xp.add(xt + r * k + i))
                });
                for c in 0..4 {
                    // SAFETY: as above.
                    let wv = unsafe { _mm512_maskz_loadu_ps(m, wp.add(c * k + i)) };
                    for r in 0..4 {
                        acc[r][c] = _mm512_mask3_fmadd_ps(xv[r], wv, acc[r][c], m);
                    }
                }
            }
            let flat: [__m512; 16] = std::array::from_fn(|o| acc[o / 4][o % 4]);
            let mut res = _mm512_permutexvar_ps(to_rows, tree512_x16(flat));
            if let Some(b) = bias {
                res = _mm512_add_ps(res, b);
            }
            let rows = [
                _mm512_extractf32x4_ps::<0>(res),
                _mm512_extractf32x4_ps::<1>(res),
                _mm512_extractf32x4_ps::<2>(res),
                _mm512_extractf32x4_ps::<3>(res),
            ];
            for (r, v) in rows.into_iter().enumerate() {
                // SAFETY: `span` checked that the 4 floats lie inside the output slice;
                // only this thread writes these columns.
                unsafe { _mm_storeu_ps(out.span(4 * t + r, 0, 4), v) };
            }
        }
    }

    /// R×C outputs, one zmm accumulator each. The cache lines of `ahead` are prefetched
    /// into L2 along the way (spread evenly over the loop).
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn tile_avx512<const R: usize, const C: usize>(
        x: [&[f32]; R],
        w: [&[f32]; C],
        ahead: &[f32],
        out: &mut [[f32; C]; R],
    ) {
        let k = common_len(&x, &w);
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut i = 0;
        if !ahead.is_empty() && k >= 16 {
            // The same loop plus a few cache lines of a later tile per step: a prefetch is
            // a hint, it reads nothing into any register. Into L2 (T1), not L1: a 16-row
            // batch's activations alone fill most of L1.
            let lines = ahead.len().div_ceil(16);
            let per_step = lines.div_ceil(k / 16);
            let mut line = 0;
            while i + 16 <= k {
                for _ in 0..per_step {
                    if line < lines {
                        // SAFETY: 16 * line < ahead.len(): the address is inside the slice.
                        let at = unsafe { ahead.as_ptr().add(16 * line) };
                        _mm_prefetch::<_MM_HINT_T1>(at.cast::<i8>());
                        line += 1;
                    }
                }
                // SAFETY: i + 16 <= k <= every slice's length.
                let xv: [__m512; R] =
                    std::array::from_fn(|r| unsafe { _mm512_loadu_ps(x[r].as_ptr().add(i)) });
                for c in 0..C {
                    // SAFETY: as above.
                    let wv = unsafe { _mm512_loadu_ps(w[c].as_ptr().add(i)) };
                    for r in 0..R {
                        acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
                    }
                }
                i += 16;
            }
        }
        while i + 16 <= k {
            // SAFETY: i + 16 <= k <= every slice's length.
            let xv: [__m512; R] =
                std::array::from_fn(|r| unsafe { _mm512_loadu_ps(x[r].as_ptr().add(i)) });
            for c in 0..C {
                // SAFETY: as above.
                let wv = unsafe { _mm512_loadu_ps(w[c].as_ptr().add(i)) };
                for r in 0..R {
                    acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
                }
            }
            i += 16;
        }
        if i < k {
            let m = mask16(k - i);
            // SAFETY: only the k - i active lanes are read, all in bounds.
            let xv: [__m512; R] =
                std::array::from_fn(|r| unsafe { _mm512_maskz_loadu_ps(m, x[r].as_ptr().add(i)) });
            for c in 0..C {
                // SAFETY: as above.
                let wv = unsafe { _mm512_maskz_loadu_ps(m, w[c].as_ptr().add(i)) };
                for r in 0..R {
                    acc[r][c] = _mm512_mask3_fmadd_ps(xv[r], wv, acc[r][c], m);
                }
            }
        }
        if R * C == 16 {
            let flat: [__m512; 16] = std::array::from_fn(|o| acc[o / C][o % C]);
            let mut lanes = [0.0f32; 16];
            // SAFETY: `lanes` has room for the 16 floats stored.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), tree512_x16(flat)) };
            for o in 0..16 {
                out[o / C][o % C] = lanes[4 * (o % 4) + o / 4];
            }
        } else {
            for r in 0..R {
                for c in 0..C {
                    out[r][c] = tree512(acc[r][c]);
                }
            }
        }
    }

    /// R×C outputs, two ymm accumulators each (lanes 0-7 and 8-15).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile_avx2<const R: usize, const C: usize>(
        x: [&[f32]; R],
        w: [&[f32]; C],
        out: &mut [[f32; C]; R],
    ) {
        let k = common_len(&x, &w);
        let mut acc = [[[_mm256_setzero_ps(); 2]; C]; R];
        let mut i = 0;
        while i + 16 <= k {
            for h in 0..2 {
                let off = i + 8 * h;
                // SAFETY: off + 8 <= i + 16 <= k <= every slice's length.
                let xv: [__m256; R] =
                    std::array::from_fn(|r| unsafe { _mm256_loadu_ps(x[r].as_ptr().add(off)) });
                for c in 0..C {
                    // SAFETY: as above.
                    let wv = unsafe { _mm256_loadu_ps(w[c].as_ptr().add(off)) };
                    for r in 0..R {
                        acc[r][c][h] = _mm256_fmadd_ps(xv[r], wv, acc[r][c][h]);
                    }
                }
            }
            i += 16;
        }
        let rem = k - i;
        for h in 0..2 {
            if rem <= 8 * h {
                break;
            }
            let off = i + 8 * h;
            let m = mask8(rem - 8 * h);
            let mf = _mm256_castsi256_ps(m);
            // SAFETY: maskload reads only the active lanes off .. k, all in bounds.
            let xv: [__m256; R] =
                std::array::from_fn(|r| unsafe { _mm256_maskload_ps(x[r].as_ptr().add(off), m) });
            for c in 0..C {
                // SAFETY: as above.
                let wv = unsafe { _mm256_maskload_ps(w[c].as_ptr().add(off), m) };
                for r in 0..R {
                    let a = acc[r][c][h];
                    acc[r][c][h] = _mm256_blendv_ps(a, _mm256_fmadd_ps(xv[r], wv, a), mf);
                }
            }
        }
        for r in 0..R {
            for c in 0..C {
                out[r][c] = tree_from_s8(_mm256_add_ps(acc[r][c][0], acc[r][c][1]));
            }
        }
    }
}

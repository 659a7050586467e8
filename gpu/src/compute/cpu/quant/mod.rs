//! Rule 2 over rule 9: `out[r][c] = dot(x[r], dequant(w[c])) (+ bias[c])` with `w` kept in
//! its GGUF block format, multi-threaded by columns like the f32 matmul.
//!
//! Two ways to the same bits, chosen by the number of rows:
//! - **Register tiles** (decode, few rows): each 32-weight group of a few weight rows is
//!   dequantized once into registers and used by every row of the tile. A batch-1 decode
//!   streams the quantized bytes once, so this path is bounded by memory bandwidth, with
//!   software prefetch a few tiles ahead because the hardware prefetchers do little here.
//! - **Panels** (prefill, many rows): a panel of weight rows is dequantized into a small
//!   per-thread f32 buffer (L2-sized; never the whole matrix) and multiplied by the f32
//!   matmul, whose register tiling wins once the dequantization is shared by enough rows.
//!
//! Both compute every output as rule 1 over the values `dequantize_row` gives, so results
//! do not depend on the path, the ISA or the thread count. The portable ISA always takes
//! the panel path with the scalar spec functions.

#[cfg(target_arch = "x86_64")]
mod format;
#[cfg(target_arch = "x86_64")]
mod kernel;
#[cfg(target_arch = "x86_64")]
mod kquant;
mod transposed;

#[cfg(test)]
mod tests;

use std::ops::Range;

use super::buf::AlignedVec;
use super::isa::Checked;
use super::matmul::check_operands;
use super::matmul_checked;
use super::split::{COL_ALIGN, Dst, split_columns};
use crate::compute::quant::dequantize_row;
use crate::compute::{ComputeError, QuantType, check_len, checked_mul};

/// From this many rows on, the panel path: at 16 rows it ran at 0.8–1.0× the speed of the
/// f32 matmul on the same shape, 4-row register tiles at 0.6–0.75× (SmolLM2 shapes, Q4_1
/// and Q8_0, AVX-512 dev machine), since the f32 tiles reuse each dequantized weight more.
#[cfg(target_arch = "x86_64")]
const PANEL_ROWS: usize = 8;

/// Bytes of f32 a panel holds: a quarter of a typical L2, so the activations stay too.
const PANEL_BYTES: usize = 128 << 10;

/// How many column tiles ahead the register tiles prefetch.
#[cfg(target_arch = "x86_64")]
const PREFETCH_TILES: usize = 3;

/// A block-quantized `[rows, cols]` matrix: `rows * row_bytes` bytes packed little-endian
/// into `words` (the CPU backend's arena holds f32s; see `CpuWeights`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct QMatrix<'a> {
    ty: QuantType,
    words: &'a [f32],
    rows: usize,
    cols: usize,
    row_bytes: usize,
    /// The matrix stands for its transpose (`CpuWeights::transposed`): a matmul with it is
    /// `x · w` rather than `x · wᵀ`, and it has no rows to look up.
    transposed: bool,
}

impl<'a> QMatrix<'a> {
    /// Checks that `words` holds `rows` rows of `cols` weights of `ty`.
    pub(crate) fn new(
        ty: QuantType,
        words: &'a [f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self, ComputeError> {
        const OP: &str = "quantized matrix";
        let row_bytes = ty.row_bytes(cols)?;
        let bytes = checked_mul(OP, rows, row_bytes)?;
        check_len(OP, "words", bytes.div_ceil(4), words.len())?;
        Ok(Self {
            ty,
            words,
            rows,
            cols,
            row_bytes,
            transposed: false,
        })
    }

    /// The same blocks standing for their transpose.
    pub(crate) fn as_transpose(self) -> Self {
        Self {
            transposed: true,
            ..self
        }
    }

    /// Rule 9 for row `r` into `out` (`cols` values), by the portable spec.
    pub(crate) fn dequantize_into(
        &self,
        r: usize,
        buf: &mut Vec<u8>,
        out: &mut [f32],
    ) -> Result<(), ComputeError> {
        if self.transposed {
            return Err(ComputeError::Invalid {
                op: "quantized row",
                reason: "a transposed matrix has no rows to look up",
            });
        }
        let blocks = self.cols / self.ty.block_elems();
        self.dequantize_blocks_into(r, 0, blocks, buf, out)
    }

    /// Rule 9 for blocks `first..first + count` of stored row `r` into `out` (`count`
    /// blocks of values), by the portable spec: a row is its blocks one after another, each
    /// dequantized on its own. `buf` receives the bytes (the portable view of the packed
    /// words).
    pub(crate) fn dequantize_blocks_into(
        &self,
        r: usize,
        first: usize,
        count: usize,
        buf: &mut Vec<u8>,
        out: &mut [f32],
    ) -> Result<(), ComputeError> {
        let per_row = self.cols / self.ty.block_elems();
        if r >= self.rows || first.saturating_add(count) > per_row {
            return Err(ComputeError::Invalid {
                op: "quantized row",
                reason: "blocks outside the matrix",
            });
        }
        let bb = self.ty.block_bytes();
        let start = r * self.row_bytes + first * bb;
        buf.clear();
        buf.extend(
            (start..start + count * bb).map(|j| self.words[j / 4].to_bits().to_le_bytes()[j % 4]),
        );
        dequantize_row(self.ty, buf, out)
    }

    /// [`QMatrix::dequantize_blocks_into`] on the ISA's row dequantizer (the prefill
    /// panels' own, so the same values), for the transposed matmul's panels.
    pub(crate) fn widen_blocks(
        &self,
        isa: Checked,
        r: usize,
        first: usize,
        count: usize,
        buf: &mut Vec<u8>,
        out: &mut [f32],
    ) -> Result<(), ComputeError> {
        #[cfg(target_arch = "x86_64")]
        if isa.isa() != super::Isa::Portable {
            let per_row = self.cols / self.ty.block_elems();
            let n = count * self.ty.block_elems();
            if r >= self.rows || first.saturating_add(count) > per_row || out.len() < n {
                return Err(ComputeError::Invalid {
                    op: "quantized row",
                    reason: "blocks outside the matrix",
                });
            }
            let at = r * self.row_bytes + first * self.ty.block_bytes();
            let out = &mut out[..n];
            let avx512 = isa.isa() == super::Isa::Avx512;
            fn row<F: format::Format>(avx512: bool, words: &[f32], at: usize, out: &mut [f32]) {
                if avx512 {
                    // SAFETY: `Checked` exists only for ISAs detected on this CPU.
                    unsafe { kernel::row512::<F>(words, at, out) }
                } else {
                    // SAFETY: as above.
                    unsafe { kernel::row256::<F>(words, at, out) }
                }
            }
            match self.ty {
                QuantType::Q8_0 => row::<format::Q8_0>(avx512, self.words, at, out),
                QuantType::Q4_0 => row::<format::Q4_0>(avx512, self.words, at, out),
                QuantType::Q4_1 => row::<format::Q4_1>(avx512, self.words, at, out),
                QuantType::Q4_K => row::<kquant::Q4K>(avx512, self.words, at, out),
                QuantType::Q6_K => row::<kquant::Q6K>(avx512, self.words, at, out),
                QuantType::F32 | QuantType::F16 | QuantType::BF16 => {
                    return self.dequantize_blocks_into(r, first, count, buf, out);
                }
            }
            return Ok(());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = isa;
        self.dequantize_blocks_into(r, first, count, buf, out)
    }

    /// The whole matrix as f32 (`[rows, cols]` of what it stands for, transposed or not),
    /// for the rare users that need the values themselves (tests, conformance).
    pub(crate) fn dequantize_all(&self) -> Result<Vec<f32>, ComputeError> {
        let stored = Self {
            transposed: false,
            ..*self
        };
        let mut out = vec![0.0f32; checked_mul("dequantize", self.rows, self.cols)?];
        let mut buf = Vec::with_capacity(self.row_bytes);
        for (r, o) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            stored.dequantize_into(r, &mut buf, o)?;
        }
        if self.transposed {
            return Ok(crate::compute::transpose(&out, self.rows, self.cols));
        }
        Ok(out)
    }
}

/// `out[r * w.rows + c] = dot(x[r], dequant(w[c])) (+ bias[c])` on `threads` threads (the
/// quantized form of `matmul_checked`, same arguments).
#[allow(clippy::too_many_arguments)] // as `matmul_checked`
pub(crate) fn matmul(
    isa: Checked,
    threads: usize,
    pool_hint: Option<&rayon::ThreadPool>,
    x: &[f32],
    rows: usize,
    w: QMatrix<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), ComputeError> {
    const OP: &str = "quantized matmul";
    if w.transposed {
        if bias.is_some() {
            return Err(ComputeError::Invalid {
                op: OP,
                reason: "a transposed weight takes no bias",
            });
        }
        return transposed::matmul_transposed(isa, threads, pool_hint, x, rows, w, out);
    }
    let (k, cols) = (w.cols, w.rows);
    check_operands(OP, x, rows, k, out, cols, bias, threads)?;
    if k == 0 {
        // A dot over nothing is the tree of sixteen +0.0 lanes.
        for row in out.chunks_exact_mut(cols.max(1)) {
            for (c, o) in row.iter_mut().enumerate() {
                *o = bias.map_or(0.0, |b| 0.0 + b[c]);
            }
        }
        return Ok(());
    }
    let m = Operands {
        x,
        rows,
        k,
        w,
        bias,
    };
    split_columns(threads, pool_hint, cols, out, |range, dst| {
        m.block(isa, range, dst)
    })
}

/// Shape-checked operands.
#[derive(Clone, Copy)]
struct Operands<'a> {
    x: &'a [f32],
    rows: usize,
    k: usize,
    w: QMatrix<'a>,
    bias: Option<&'a [f32]>,
}

impl Operands<'_> {
    /// Outputs for columns `cols` of every row into `out` at `(r, c - cols.start)`.
    fn block(&self, isa: Checked, cols: Range<usize>, out: Dst) -> Result<(), ComputeError> {
        #[cfg(target_arch = "x86_64")]
        if isa.isa() != super::Isa::Portable {
            return match self.w.ty {
                QuantType::Q8_0 => self.block_x86::<format::Q8_0>(isa, cols, out),
                QuantType::Q4_0 => self.block_x86::<format::Q4_0>(isa, cols, out),
                QuantType::Q4_1 => self.block_x86::<format::Q4_1>(isa, cols, out),
                QuantType::Q4_K => self.block_x86::<kquant::Q4K>(isa, cols, out),
                QuantType::Q6_K => self.block_x86::<kquant::Q6K>(isa, cols, out),
                QuantType::F32 | QuantType::F16 | QuantType::BF16 => {
                    self.block_portable(isa, cols, out)
                }
            };
        }
        self.block_portable(isa, cols, out)
    }

    fn block_portable(
        &self,
        isa: Checked,
        cols: Range<usize>,
        out: Dst,
    ) -> Result<(), ComputeError> {
        let mut buf = Vec::with_capacity(self.w.row_bytes);
        self.panels(isa, cols, out, |c, dst| {
            self.w.dequantize_into(c, &mut buf, dst)
        })
    }

    /// Weight rows `cols` a panel at a time: `dequant(c, dst)` writes row `c`'s values,
    /// then the f32 matmul (one thread: this is already one thread's share) multiplies all
    /// rows of `x` by the panel.
    fn panels(
        &self,
        isa: Checked,
        cols: Range<usize>,
        out: Dst,
        mut dequant: impl FnMut(usize, &mut [f32]) -> Result<(), ComputeError>,
    ) -> Result<(), ComputeError> {
        let k = self.k;
        let per = (PANEL_BYTES / 4 / k).clamp(1, COL_ALIGN * 4);
        let mut panel = AlignedVec::zeros(checked_mul("quantized matmul", per, k)?);
        let mut res = vec![0.0f32; checked_mul("quantized matmul", per, self.rows)?];
        let mut c0 = cols.start;
        while c0 < cols.end {
            let n = per.min(cols.end - c0);
            for (j, dst) in panel.chunks_exact_mut(k).take(n).enumerate() {
                dequant(c0 + j, dst)?;
            }
            let res = &mut res[..n * self.rows];
            matmul_checked(
                isa,
                1,
                None,
                self.x,
                self.rows,
                k,
                &panel[..n * k],
                n,
                None,
                res,
            )?;
            for (r, row) in res.chunks_exact(n).enumerate() {
                let vals = row.iter().enumerate().map(|(u, v)| match self.bias {
                    Some(b) => *v + b[c0 + u],
                    None => *v,
                });
                out.write(r, c0 - cols.start, vals);
            }
            c0 += n;
        }
        Ok(())
    }

    #[cfg(target_arch = "x86_64")]
    fn block_x86<F: format::Format>(
        &self,
        isa: Checked,
        cols: Range<usize>,
        out: Dst,
    ) -> Result<(), ComputeError> {
        use super::Isa;
        let (words, rb) = (self.w.words, self.w.row_bytes);
        let avx512 = isa.isa() == Isa::Avx512;
        if self.rows >= PANEL_ROWS {
            return self.panels(isa, cols, out, |c, dst| {
                if avx512 {
                    // SAFETY: `Checked` exists only for ISAs detected on this CPU.
                    unsafe { kernel::row512::<F>(words, c * rb, dst) };
                } else {
                    // SAFETY: as above.
                    unsafe { kernel::row256::<F>(words, c * rb, dst) };
                }
                Ok(())
            });
        }
        if avx512 {
            let full = self.rows / 4 * 4;
            self.tiled::<4, 4>(0..full, cols.clone(), out, |x, k, w, o| {
                // SAFETY: `Checked` exists only for ISAs detected on this CPU.
                unsafe { kernel::tile512::<F, 4, 4>(x, k, w, o) }
            });
            match self.rows - full {
                1 => self.tiled::<1, 4>(full..self.rows, cols, out, |x, k, w, o| {
                    // SAFETY: as above.
                    unsafe { kernel::tile512::<F, 1, 4>(x, k, w, o) }
                }),
                2 => self.tiled::<2, 4>(full..self.rows, cols, out, |x, k, w, o| {
                    // SAFETY: as above.
                    unsafe { kernel::tile512::<F, 2, 4>(x, k, w, o) }
                }),
                3 => self.tiled::<3, 4>(full..self.rows, cols, out, |x, k, w, o| {
                    // SAFETY: as above.
                    unsafe { kernel::tile512::<F, 3, 4>(x, k, w, o) }
                }),
                _ => {}
            }
        } else {
            self.tiled::<1, 2>(0..self.rows, cols, out, |x, k, w, o| {
                // SAFETY: as above.
                unsafe { kernel::tile256::<F, 1, 2>(x, k, w, o) }
            });
        }
        Ok(())
    }

    /// Walks R×C tiles over `rows` × `cols`; at the edges, missing rows/columns repeat the
    /// last valid one and their results are dropped, so every kernel call sees a full tile.
    /// Each row tile prefetches its share of the weight bytes `PREFETCH_TILES` tiles on.
    #[cfg(target_arch = "x86_64")]
    fn tiled<const R: usize, const C: usize>(
        &self,
        rows: Range<usize>,
        cols: Range<usize>,
        out: Dst,
        kernel: impl Fn([&[f32]; R], usize, kernel::TileW<'_, C>, &mut [[f32; C]; R]),
    ) {
        let (k, rb) = (self.k, self.w.row_bytes);
        let row_tiles = rows.len().div_ceil(R).max(1);
        let share = (C * rb).div_ceil(row_tiles).next_multiple_of(64);
        let steps = (share / 64).div_ceil((k / self.w.ty.block_elems()).max(1));
        let mut c0 = cols.start;
        while c0 < cols.end {
            let cn = C.min(cols.end - c0);
            let at: [usize; C] = std::array::from_fn(|t| (c0 + t.min(cn - 1)) * rb);
            let ahead_end = (c0 + (PREFETCH_TILES + 1) * C).min(cols.end) * rb;
            let ahead_start = ((c0 + PREFETCH_TILES * C) * rb).min(ahead_end);
            let mut r0 = rows.start;
            while r0 < rows.end {
                let rn = R.min(rows.end - r0);
                let xt: [&[f32]; R] = std::array::from_fn(|t| {
                    let r = r0 + t.min(rn - 1);
                    &self.x[r * k..(r + 1) * k]
                });
                let from = (ahead_start + (r0 - rows.start) / R * share).min(ahead_end);
                let ahead = (from, (from + share).min(ahead_end));
                let w = kernel::TileW {
                    words: self.w.words,
                    at,
                    ahead,
                    steps,
                };
                let mut res = [[0.0f32; C]; R];
                kernel(xt, k, w, &mut res);
                for (t, row) in res.iter().enumerate().take(rn) {
                    let vals = row[..cn].iter().enumerate().map(|(u, v)| match self.bias {
                        Some(b) => *v + b[c0 + u],
                        None => *v,
                    });
                    out.write(r0 + t, c0 - cols.start, vals);
                }
                r0 += R;
            }
            c0 += C;
        }
    }
}

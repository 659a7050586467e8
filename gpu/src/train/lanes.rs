//! Rule-1 sums that stream over many calls: the gradient of a weight is a sum over every
//! row of an optimizer step, and those rows arrive one micro-batch at a time.

use crate::compute::{Isa, LANES};

/// Sixteen partial sums per element of a `[rows, cols]` gradient; row `t` of the step goes
/// to lane `t mod 16`, and [`LaneAcc::finish`] combines the lanes by the halving tree, so
/// the result is the rule-1 sum over all rows whatever the micro-batch boundaries were.
#[derive(Debug, Clone)]
pub(crate) struct LaneAcc {
    rows: usize,
    cols: usize,
    /// `[LANES][rows * cols]`.
    lanes: Vec<f32>,
}

impl LaneAcc {
    pub(crate) fn new(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            lanes: vec![0.0; LANES * rows * cols],
        }
    }

    pub(crate) fn reset(&mut self) {
        self.lanes.fill(0.0);
    }

    /// For each row `t` of `a` (`[n, rows]`) and `b` (`[n, cols]`):
    /// `lane[(t0 + t) mod 16][i][j] = fma(a[t][i], b[t][j], ·)`.
    pub(crate) fn add_outer(&mut self, isa: Isa, a: &[f32], b: &[f32], t0: usize) {
        let (rows, cols) = (self.rows, self.cols);
        let size = rows * cols;
        for (t, (ar, br)) in a.chunks_exact(rows).zip(b.chunks_exact(cols)).enumerate() {
            let lane = (t0 + t) % LANES;
            let acc = &mut self.lanes[lane * size..][..size];
            for (&ai, row) in ar.iter().zip(acc.chunks_exact_mut(cols)) {
                axpy_fma(isa, ai, br, row);
            }
        }
    }

    /// The finished sums, `[rows, cols]`.
    pub(crate) fn finish(&self) -> Vec<f32> {
        let size = self.rows * self.cols;
        (0..size)
            .map(|e| {
                let l: [f32; LANES] = std::array::from_fn(|lane| self.lanes[lane * size + e]);
                crate::compute::tree16(&l)
            })
            .collect()
    }
}

/// `y_j = fma(a, x_j, y_j)`. FMA is one correctly rounded operation, so the hardware
/// instruction and `f32::mul_add` agree bit for bit; the target-feature copy only lets the
/// compiler emit (and vectorise) the instruction instead of calling `fmaf`.
pub(crate) fn axpy_fma(isa: Isa, a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) && isa.is_supported() {
        // SAFETY: both paths imply FMA, and support was just checked.
        unsafe { axpy_fma_x86(a, x, y) };
        return;
    }
    let _ = isa;
    axpy_body(a, x, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_fma_x86(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_body(a, x, y);
}

#[inline(always)]
fn axpy_body(a: f32, x: &[f32], y: &mut [f32]) {
    for (yj, xj) in y.iter_mut().zip(x) {
        *yj = a.mul_add(*xj, *yj);
    }
}

/// `[rows, cols]` → `[cols, rows]`, so that a sum over rows becomes a contiguous dot.
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m.len()];
    for (r, row) in m.chunks_exact(cols).enumerate().take(rows) {
        for (c, v) in row.iter().enumerate() {
            out[c * rows + r] = *v;
        }
    }
    out
}

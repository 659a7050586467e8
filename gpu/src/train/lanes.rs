//! Rule-1 sums that stream over many calls: the gradient of a weight is a sum over every
//! row of an optimizer step, and those rows arrive one micro-batch at a time.

use crate::compute::{Backend, ComputeError, LANES};

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
    pub(crate) fn add_outer<B: Backend>(
        &mut self,
        backend: &B,
        a: &[f32],
        b: &[f32],
        t0: usize,
    ) -> Result<(), ComputeError> {
        let (rows, cols) = (self.rows, self.cols);
        let size = rows * cols;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        for (t, (ar, br)) in a.chunks_exact(rows).zip(b.chunks_exact(cols)).enumerate() {
            let lane = (t0 + t) % LANES;
            backend.outer_fma(ar, br, &mut self.lanes[lane * size..][..size])?;
        }
        Ok(())
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

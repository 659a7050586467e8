//! The CPU backend's weight matrices: f32 values in 64-byte-aligned, huge-page-backed
//! storage (see [`AlignedVec`] for why both matter to speed, never to bits).

use std::ops::Range;
use std::sync::Arc;

use super::buf::AlignedVec;
use crate::compute::ComputeError;
use crate::compute::backend::{HostWeights, WeightShape};

/// One `[rows, cols]` matrix: a range of a shared arena (a loaded model) or a buffer of its
/// own (a transposed copy).
#[derive(Clone)]
pub struct CpuWeights {
    store: Arc<AlignedVec>,
    range: Range<usize>,
    rows: usize,
    cols: usize,
}

impl CpuWeights {
    /// The `[rows, cols]` values, row-major.
    pub fn values(&self) -> &[f32] {
        &self.store[self.range.clone()]
    }

    pub(super) fn transposed(&self) -> CpuWeights {
        let t = crate::compute::transpose(self.values(), self.rows, self.cols);
        let store = Arc::new(AlignedVec::from_slice(&t));
        CpuWeights {
            range: 0..store.len(),
            store,
            rows: self.cols,
            cols: self.rows,
        }
    }
}

impl WeightShape for CpuWeights {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }
}

/// Shape only: the values are megabytes.
impl std::fmt::Debug for CpuWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuWeights [{}, {}]", self.rows, self.cols)
    }
}

/// Every matrix of a model in one arena, each starting on a 64-byte boundary and the whole
/// backed by huge pages where possible: loaded `Vec`s start 16 bytes past a cache line and
/// sit on 4 KiB pages, which costs prefill split loads and decode TLB misses (a decode step
/// streams every weight once). Each host matrix is freed as soon as it is copied, so at most
/// one matrix exists twice at any moment.
pub(super) fn load(matrices: Vec<HostWeights>) -> Result<Vec<CpuWeights>, ComputeError> {
    let mut total = 0usize;
    for m in &matrices {
        let HostWeights::F32 { rows, cols, data } = m else {
            return Err(ComputeError::Invalid {
                op: "load weights",
                reason: "quantized weights are not implemented by the CPU backend yet",
            });
        };
        let expected = rows
            .checked_mul(*cols)
            .ok_or(ComputeError::Overflow { op: "load weights" })?;
        crate::compute::check_len("load weights", "data", expected, data.len())?;
        total = total
            .checked_add(data.len().next_multiple_of(16))
            .ok_or(ComputeError::Overflow { op: "load weights" })?;
    }
    let mut arena = AlignedVec::with_capacity(total);
    let placed: Vec<(Range<usize>, usize, usize)> = matrices
        .into_iter()
        .filter_map(|m| match m {
            HostWeights::F32 { rows, cols, data } => Some((arena.push_aligned(&data), rows, cols)),
            HostWeights::Quantized { .. } => None,
        })
        .collect();
    let store = Arc::new(arena);
    Ok(placed
        .into_iter()
        .map(|(range, rows, cols)| CpuWeights {
            store: store.clone(),
            range,
            rows,
            cols,
        })
        .collect())
}

//! Splitting a matmul's output columns over the pool: each thread computes whole columns
//! of every row, straight into the caller's output. Who computes an output never changes
//! its value, so this is where threads come in and nothing else.

use std::ops::Range;

use rayon::prelude::*;

use super::ComputeError;
use super::pool::pool;

/// Columns given to one thread are a multiple of this, so tiles are rarely cut short.
pub(super) const COL_ALIGN: usize = 16;

/// Runs `block(columns, dst)` over `cols` output columns split among `threads` (on
/// `pool_hint`, or the shared pool of that size). Each call writes its own columns of every
/// row straight into `out`: no per-call buffers (a batch-16 LM head made two 1.5 MB ones per
/// step, fresh pages each time) and no copy.
pub(super) fn split_columns(
    threads: usize,
    pool_hint: Option<&rayon::ThreadPool>,
    cols: usize,
    out: &mut [f32],
    block: impl Fn(Range<usize>, Dst) -> Result<(), ComputeError> + Sync,
) -> Result<(), ComputeError> {
    // Fewer chunks than threads when there are few columns: an idle thread costs less than
    // a tile cut into slivers.
    let chunks = threads.min(cols.div_ceil(COL_ALIGN)).max(1);
    if chunks == 1 {
        return block(0..cols, Dst::new(out, cols));
    }
    let per = cols.div_ceil(chunks).div_ceil(COL_ALIGN) * COL_ALIGN;
    let shared;
    let pool = match pool_hint {
        Some(p) => p,
        None => {
            shared = pool(threads)?;
            &*shared
        }
    };
    let dst = Dst::new(out, cols);
    pool.install(|| {
        (0..cols.div_ceil(per)).into_par_iter().try_for_each(|i| {
            let c0 = i * per;
            block(c0..(c0 + per).min(cols), dst.columns(c0))
        })
    })
}

/// Where a block's outputs go: output `(r, c)` of the block at `ptr + r * stride + c`, all
/// inside one `&mut [f32]` of `len` elements that outlives every use. Threads get
/// disjoint column ranges of the same rows, which `&mut` slices cannot express.
#[derive(Clone, Copy)]
pub(super) struct Dst {
    ptr: *mut f32,
    len: usize,
    stride: usize,
}

// SAFETY: a `Dst` is only a window on a `&mut [f32]` borrowed for the whole call; the
// threads that share it write disjoint elements (their own columns), and nothing reads
// them until the call returns.
unsafe impl Send for Dst {}
// SAFETY: as above.
unsafe impl Sync for Dst {}

impl Dst {
    pub(super) fn new(out: &mut [f32], stride: usize) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            stride,
        }
    }

    /// The same rows from column `c0` on.
    pub(super) fn columns(self, c0: usize) -> Self {
        let c0 = c0.min(self.len);
        Self {
            // SAFETY: c0 <= len: at most one past the end of the borrowed slice.
            ptr: unsafe { self.ptr.add(c0) },
            len: self.len - c0,
            stride: self.stride,
        }
    }

    /// From row `r0` on.
    pub(super) fn rows_from(self, r0: usize) -> Self {
        let at = r0.saturating_mul(self.stride).min(self.len);
        Self {
            // SAFETY: at <= len, as above.
            ptr: unsafe { self.ptr.add(at) },
            len: self.len - at,
            stride: self.stride,
        }
    }

    /// Where row `r`, columns `c..c + n` start. Panics unless they lie inside the slice.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn span(&self, r: usize, c: usize, n: usize) -> *mut f32 {
        let at = r * self.stride + c;
        assert!(at + n <= self.len, "matmul: output outside its slice");
        // SAFETY: at + n <= len: inside the borrowed slice.
        unsafe { self.ptr.add(at) }
    }

    /// Writes `vals` at row `r`, columns `c..c + vals.len()`. Panics outside the slice.
    pub(super) fn write(&self, r: usize, c: usize, vals: impl ExactSizeIterator<Item = f32>) {
        let at = r * self.stride + c;
        assert!(
            at + vals.len() <= self.len,
            "matmul: output outside its slice"
        );
        for (u, v) in vals.enumerate() {
            // SAFETY: at + u < len (asserted), inside the borrowed slice; only this
            // thread writes these columns.
            unsafe { self.ptr.add(at + u).write(v) };
        }
    }
}

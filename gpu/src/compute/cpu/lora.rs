//! The low-rank update of a LoRA-adapted projection, `out += scale · ((x·Aᵀ)·Bᵀ)`.

use super::isa::Checked;
use super::matmul::matmul_checked;
use crate::compute::backend::LoraProduct;
use crate::compute::{ComputeError, check_len, checked_mul};

/// One product on the calling thread: it is too small to be worth a thread hand-off, and
/// threads never change its bits.
pub(super) fn apply(isa: Checked, p: LoraProduct<'_>) -> Result<(), ComputeError> {
    const OP: &str = "lora";
    let (a, b) = (p.a, p.b);
    let r = a.rows;
    check_len(OP, "b.cols", r, b.cols)?;
    let mut own_low;
    let low = match p.low {
        Some(low) => {
            check_len(OP, "low", checked_mul(OP, p.rows, r)?, low.len())?;
            low
        }
        None => {
            own_low = vec![0.0f32; checked_mul(OP, p.rows, r)?];
            &mut own_low[..]
        }
    };
    matmul_checked(isa, 1, None, p.x, p.rows, a.cols, a.data, r, None, low)?;
    let mut delta = vec![0.0f32; checked_mul(OP, p.rows, b.rows)?];
    matmul_checked(
        isa, 1, None, low, p.rows, r, b.data, b.rows, None, &mut delta,
    )?;
    check_len(OP, "out", delta.len(), p.out.len())?;
    for (o, d) in p.out.iter_mut().zip(&delta) {
        *o += *d * p.scale;
    }
    Ok(())
}

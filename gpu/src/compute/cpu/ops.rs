//! Rules 4-6 of the spec: softmax, RMSNorm, SiLU and the gated MLP activation.

use super::dot::{dot_checked, sum_checked};
use super::exp::{exp, exp_inplace_checked};
use super::isa::Checked;
use super::{ComputeError, Isa, check_len};

/// Softmax of one row, in place. An empty row is left as is; a row with no element above
/// -inf (all -inf) yields NaN, as the mathematics does.
pub fn softmax_inplace(isa: Isa, row: &mut [f32]) -> Result<(), ComputeError> {
    let isa = isa.checked()?;
    softmax_checked(isa, row);
    Ok(())
}

pub(crate) fn softmax_checked(isa: Checked, row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    // `>` skips NaN, so the maximum does not depend on where a NaN sits.
    let m = row
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for v in row.iter_mut() {
        *v -= m;
    }
    exp_inplace_checked(isa, row);
    let s = sum_checked(isa, row);
    for v in row.iter_mut() {
        *v /= s;
    }
}

/// RMSNorm: `out_i = (x_i * inv) * w_i` with `inv = 1 / sqrt(dot(x, x) / n + eps)`.
pub fn rmsnorm(
    isa: Isa,
    x: &[f32],
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), ComputeError> {
    rmsnorm_checked(isa.checked()?, x, weight, eps, out)
}

pub(crate) fn rmsnorm_checked(
    isa: Checked,
    x: &[f32],
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), ComputeError> {
    check_len("rmsnorm", "weight", x.len(), weight.len())?;
    check_len("rmsnorm", "out", x.len(), out.len())?;
    if x.is_empty() {
        return Ok(());
    }
    let ss = dot_checked(isa, x, x);
    // n < 2^24 for any real hidden size, so the conversion is exact.
    let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for ((o, xi), wi) in out.iter_mut().zip(x).zip(weight) {
        *o = (*xi * inv) * *wi;
    }
    Ok(())
}

/// `silu(x) = x / (1 + exp(-x))` with the canonical exp.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// SiLU of every element, in place.
pub fn silu_inplace(isa: Isa, x: &mut [f32]) -> Result<(), ComputeError> {
    silu_inplace_checked(isa.checked()?, x);
    Ok(())
}

pub(crate) fn silu_inplace_checked(isa: Checked, x: &mut [f32]) {
    // A stack buffer holds exp(-x) for a block, so there is no allocation.
    let mut buf = [0.0f32; 64];
    for block in x.chunks_mut(buf.len()) {
        let e = &mut buf[..block.len()];
        for (s, v) in e.iter_mut().zip(block.iter()) {
            *s = -*v;
        }
        exp_inplace_checked(isa, e);
        for (v, e) in block.iter_mut().zip(e.iter()) {
            *v /= 1.0 + *e;
        }
    }
}

/// Gated MLP activation: `out_i = silu(gate_i) * up_i`. `out` doubles as the exp buffer,
/// so no allocation is needed.
pub fn swiglu(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), ComputeError> {
    swiglu_checked(isa.checked()?, gate, up, out)
}

pub(crate) fn swiglu_checked(
    isa: Checked,
    gate: &[f32],
    up: &[f32],
    out: &mut [f32],
) -> Result<(), ComputeError> {
    check_len("swiglu", "up", gate.len(), up.len())?;
    check_len("swiglu", "out", gate.len(), out.len())?;
    for (o, g) in out.iter_mut().zip(gate) {
        *o = -*g;
    }
    exp_inplace_checked(isa, out);
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = (*g / (1.0 + *o)) * *u;
    }
    Ok(())
}

//! The element-wise backward rules T3 (lane accumulation), T4, T5 and T7 of the training
//! spec (`train/mod.rs`), one row or one slice at a time; the CPU backend batches them.

use super::dot::dot_checked;
use super::exp::exp_inplace_checked;
use super::isa::Checked;
use super::{ComputeError, Isa, RopeTable};

/// T4 for one row (lengths checked by the caller).
pub(super) fn rmsnorm_backward(
    isa: Checked,
    x: &[f32],
    weight: &[f32],
    eps: f32,
    g: &[f32],
    dx: &mut [f32],
) -> Result<(), ComputeError> {
    let n = x.len();
    if n == 0 {
        return Ok(());
    }
    let ss = dot_checked(isa, x, x);
    // An infinite sum of squares makes `inv` zero, so the forward normalised a finite but
    // enormous row to all zeros and every gradient through it is zero: training would go
    // on "successfully" with a model that ignores its input (what a far too high learning
    // rate does). This is the one overflow that leaves no NaN behind to notice.
    if !ss.is_finite() {
        return Err(ComputeError::NonFinite {
            op: "rmsnorm backward",
            what: "the sum of squares of the input",
        });
    }
    let inv = 1.0 / (ss / n as f32 + eps).sqrt();
    let gw: Vec<f32> = g.iter().zip(weight).map(|(g, w)| *g * *w).collect();
    let s = dot_checked(isa, &gw, x);
    let c = (s * ((inv * inv) * inv)) / n as f32;
    for ((d, gwi), xi) in dx.iter_mut().zip(&gw).zip(x) {
        *d = *gwi * inv - *xi * c;
    }
    Ok(())
}

/// T5 over equal-length slices (checked by the caller).
pub(super) fn swiglu_backward(
    isa: Checked,
    gate: &[f32],
    up: &[f32],
    d_act: &[f32],
    d_gate: &mut [f32],
    d_up: &mut [f32],
) {
    let mut e: Vec<f32> = gate.iter().map(|g| -*g).collect();
    exp_inplace_checked(isa, &mut e);
    for i in 0..gate.len() {
        let (g, u, d) = (gate[i], up[i], d_act[i]);
        let den = 1.0 + e[i];
        let silu = g / den;
        let sig = 1.0 / den;
        d_up[i] = d * silu;
        d_gate[i] = (d * u) * (sig * (1.0 + g * (1.0 - sig)));
    }
}

/// T7: undoes the rotation of every head of one row (`[n_heads, head_dim]`) in place.
pub(super) fn rope_backward(
    rope: &RopeTable,
    pos: usize,
    d: &mut [f32],
) -> Result<(), ComputeError> {
    let (cos, sin) = rope.row(pos)?;
    let hd = rope.head_dim();
    if !d.len().is_multiple_of(hd) {
        return Err(ComputeError::Invalid {
            op: "rope backward",
            reason: "row width is not a multiple of head_dim",
        });
    }
    let h = hd / 2;
    for head in d.chunks_exact_mut(hd) {
        let (a, b) = head.split_at_mut(h);
        for j in 0..h {
            let (d0, d1) = (a[j], b[j]);
            a[j] = d0 * cos[j] + d1 * sin[j];
            b[j] = d1 * cos[j] - d0 * sin[j];
        }
    }
    Ok(())
}

/// `acc[i][j] = fma(a[i], b[j], acc[i][j])` (`acc` is `[a.len(), b.len()]`, checked by the
/// caller). FMA is one correctly rounded operation, so the hardware instruction and
/// `f32::mul_add` agree bit for bit; the target-feature copy only lets the compiler emit
/// (and vectorise) the instruction instead of calling `fmaf`.
pub(super) fn outer_fma(isa: Checked, a: &[f32], b: &[f32], acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa.isa(), Isa::Avx2 | Isa::Avx512) {
        // SAFETY: both paths imply AVX2 and FMA, and `Checked` proves they were detected.
        unsafe { outer_fma_x86(a, b, acc) };
        return;
    }
    let _ = isa;
    outer_fma_body(a, b, acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn outer_fma_x86(a: &[f32], b: &[f32], acc: &mut [f32]) {
    outer_fma_body(a, b, acc);
}

#[inline(always)]
fn outer_fma_body(a: &[f32], b: &[f32], acc: &mut [f32]) {
    if b.is_empty() {
        return;
    }
    for (&ai, row) in a.iter().zip(acc.chunks_exact_mut(b.len())) {
        for (yj, xj) in row.iter_mut().zip(b) {
            *yj = ai.mul_add(*xj, *yj);
        }
    }
}

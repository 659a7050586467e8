//! The element-wise backward rules T2, T4, T5 and T7 of the training spec (see `mod.rs`).

use crate::compute::{self, ComputeError, Isa, RopeTable};

/// T4: `dx` of RMSNorm for one row, given the forward input `x` and the output gradient.
pub(crate) fn rmsnorm_backward(
    isa: Isa,
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
    let ss = compute::dot(isa, x, x)?;
    let inv = 1.0 / (ss / n as f32 + eps).sqrt();
    let gw: Vec<f32> = g.iter().zip(weight).map(|(g, w)| *g * *w).collect();
    let s = compute::dot(isa, &gw, x)?;
    let c = (s * ((inv * inv) * inv)) / n as f32;
    for ((d, gwi), xi) in dx.iter_mut().zip(&gw).zip(x) {
        *d = *gwi * inv - *xi * c;
    }
    Ok(())
}

/// T5: gradients of `silu(gate) * up` for all elements.
pub(crate) fn swiglu_backward(
    isa: Isa,
    gate: &[f32],
    up: &[f32],
    d_act: &[f32],
    d_gate: &mut [f32],
    d_up: &mut [f32],
) -> Result<(), ComputeError> {
    let mut e: Vec<f32> = gate.iter().map(|g| -*g).collect();
    compute::exp_inplace(isa, &mut e)?;
    for i in 0..gate.len() {
        let (g, u, d) = (gate[i], up[i], d_act[i]);
        let den = 1.0 + e[i];
        let silu = g / den;
        let sig = 1.0 / den;
        d_up[i] = d * silu;
        d_gate[i] = (d * u) * (sig * (1.0 + g * (1.0 - sig)));
    }
    Ok(())
}

/// T7: undoes the rotation of every head of one row (`[n_heads, head_dim]`) in place.
pub(crate) fn rope_backward(
    rope: &RopeTable,
    pos: usize,
    d: &mut [f32],
) -> Result<(), ComputeError> {
    let (cos, sin) = rope.row(pos)?;
    let hd = rope.head_dim();
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

/// T2 for one prediction row: turns `logits` into their gradient in place and returns the
/// row's loss `logsumexp(z) - z_y` (f64; reported only).
pub(crate) fn cross_entropy_backward(
    isa: Isa,
    logits: &mut [f32],
    target: usize,
    n: f32,
) -> Result<f64, ComputeError> {
    let loss = row_loss(logits, target);
    compute::softmax_inplace(isa, logits)?;
    for (v, p) in logits.iter_mut().enumerate() {
        let q = if v == target { *p - 1.0 } else { *p };
        *p = q / n;
    }
    Ok(loss)
}

/// `logsumexp(z) - z[target]` in f64: the loss is reported (progress, provenance), never
/// committed, so it may use the platform's `exp`/`ln`.
pub(crate) fn row_loss(z: &[f32], target: usize) -> f64 {
    let m = z
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let sum_exp: f64 = z.iter().map(|&v| (f64::from(v) - f64::from(m)).exp()).sum();
    f64::from(m) + sum_exp.ln() - z.get(target).map_or(f64::NAN, |&v| f64::from(v))
}

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
/// row's loss (see [`row_loss`]).
pub(crate) fn cross_entropy_backward(
    isa: Isa,
    logits: &mut [f32],
    target: usize,
    n: f32,
) -> Result<f64, ComputeError> {
    let (m, z_y) = (max(logits), logits[target]);
    compute::softmax_inplace(isa, logits)?;
    let loss = loss_from(logits[target], m, z_y);
    for (v, p) in logits.iter_mut().enumerate() {
        let q = if v == target { *p - 1.0 } else { *p };
        *p = q / n;
    }
    Ok(loss)
}

/// The cross-entropy of one row, `-ln p_target`, from the canonical softmax. The loss is
/// reported (progress, provenance), never committed, so `ln` may be the platform's; taking
/// it from the softmax the gradient needs anyway costs one `ln` per row instead of an f64
/// `exp` per vocabulary entry, which was a tenth of a training step on a 49k vocabulary.
pub(crate) fn row_loss(isa: Isa, z: &[f32], target: usize) -> Result<f64, ComputeError> {
    let mut p = z.to_vec();
    let (m, z_y) = (max(z), z[target]);
    compute::softmax_inplace(isa, &mut p)?;
    Ok(loss_from(p[target], m, z_y))
}

fn max(z: &[f32]) -> f32 {
    z.iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// `-ln p`; when `p` underflowed to zero (a target more than ~100 nats below the best),
/// `max - z_target`, which is the loss to within `ln(vocab)`.
fn loss_from(p: f32, m: f32, z_y: f32) -> f64 {
    if p > 0.0 {
        -f64::from(p).ln()
    } else {
        f64::from(m) - f64::from(z_y)
    }
}

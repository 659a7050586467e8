//! Rule T2 of the training spec (see `mod.rs`): the cross-entropy loss of a prediction row
//! and its gradient. The other backward rules are ops of the [`Backend`].

use crate::compute::{Backend, ComputeError};

/// T2 for one prediction row: turns `logits` into their gradient in place and returns the
/// row's loss (see [`row_loss`]).
pub(crate) fn cross_entropy_backward<B: Backend>(
    backend: &B,
    logits: &mut [f32],
    target: usize,
    n: f32,
) -> Result<f64, ComputeError> {
    let (m, z_y) = (max(logits), target_logit(logits, target)?);
    backend.softmax(logits)?;
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
pub(crate) fn row_loss<B: Backend>(
    backend: &B,
    z: &[f32],
    target: usize,
) -> Result<f64, ComputeError> {
    let mut p = z.to_vec();
    let (m, z_y) = (max(z), target_logit(z, target)?);
    backend.softmax(&mut p)?;
    Ok(loss_from(p[target], m, z_y))
}

fn target_logit(z: &[f32], target: usize) -> Result<f32, ComputeError> {
    z.get(target).copied().ok_or(ComputeError::Invalid {
        op: "cross entropy",
        reason: "target outside the vocabulary",
    })
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

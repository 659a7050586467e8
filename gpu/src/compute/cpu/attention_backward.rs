//! Rule T6 of the training spec: the gradients of one example's attention.

use rayon::prelude::*;

use super::dot::dot_checked;
use super::isa::Checked;
use super::matmul::matmul_checked;
use crate::compute::backend::{AttentionGrads, AttentionShape, AttentionTape};
use crate::compute::{ComputeError, check_len, checked_mul, transpose};

/// [`Backend::attention_backward`](crate::compute::Backend::attention_backward): query
/// heads in parallel, each into its own buffers; a kv head's `dK`/`dV` then add its query
/// heads in ascending order, exactly as a sequential loop would.
pub(super) fn run(
    isa: Checked,
    shape: AttentionShape,
    tape: AttentionTape<'_>,
    g: &[f32],
    grads: AttentionGrads<'_>,
) -> Result<(), ComputeError> {
    const OP: &str = "attention backward";
    let (t_len, hd, heads) = (tape.len, shape.head_dim, shape.heads);
    let (q_dim, kv_dim) = (shape.q_dim(), shape.kv_dim());
    let q_len = checked_mul(OP, t_len, q_dim)?;
    let kv_len = checked_mul(OP, t_len, kv_dim)?;
    check_len(OP, "q", q_len, tape.q.len())?;
    check_len(OP, "g", q_len, g.len())?;
    check_len(OP, "dq", q_len, grads.dq.len())?;
    for (what, len) in [
        ("k", tape.k.len()),
        ("v", tape.v.len()),
        ("dk", grads.dk.len()),
        ("dv", grads.dv.len()),
    ] {
        check_len(OP, what, kv_len, len)?;
    }
    let rows = checked_mul(OP, t_len, heads)?;
    let width = tape.probs.len().checked_div(rows).unwrap_or(0);
    if width < t_len || width * rows != tape.probs.len() {
        check_len(OP, "probs", checked_mul(OP, rows, t_len)?, tape.probs.len())?;
    }
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let per_head: Vec<(usize, [Vec<f32>; 3])> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let kvh = shape.kv_head(h)?;
            let head = HeadTape {
                p: &gather(tape.probs, t_len, heads * width, h * width, t_len),
                q: &gather(tape.q, t_len, q_dim, h * hd, hd),
                k: &gather(tape.k, t_len, kv_dim, kvh * hd, hd),
                v: &gather(tape.v, t_len, kv_dim, kvh * hd, hd),
                g: &gather(g, t_len, q_dim, h * hd, hd),
            };
            Ok((kvh, head.grads(isa, t_len, hd, scale)?))
        })
        .collect::<Result<_, ComputeError>>()?;
    grads.dk.fill(0.0);
    grads.dv.fill(0.0);
    for (h, (kvh, [dq_h, dk_h, dv_h])) in per_head.into_iter().enumerate() {
        for t in 0..t_len {
            grads.dq[t * q_dim + h * hd..][..hd].copy_from_slice(&dq_h[t * hd..][..hd]);
            add_in_place(
                &mut grads.dk[t * kv_dim + kvh * hd..][..hd],
                &dk_h[t * hd..][..hd],
            );
            add_in_place(
                &mut grads.dv[t * kv_dim + kvh * hd..][..hd],
                &dv_h[t * hd..][..hd],
            );
        }
    }
    Ok(())
}

/// `src[t * stride + offset..][..len]` for `t < rows`, one after another: one head's
/// columns of a `[rows, stride]` matrix (callers checked the bounds).
fn gather(src: &[f32], rows: usize, stride: usize, offset: usize, len: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * len);
    for t in 0..rows {
        out.extend_from_slice(&src[t * stride + offset..][..len]);
    }
    out
}

/// One query head's operands, each `[T, head_dim]` except `p` (`[T, T]`, zero above the
/// diagonal).
struct HeadTape<'a> {
    p: &'a [f32],
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    g: &'a [f32],
}

impl HeadTape<'_> {
    /// `[dQ, dK, dV]`, each `[T, head_dim]`.
    fn grads(
        &self,
        isa: Checked,
        t_len: usize,
        hd: usize,
        scale: f32,
    ) -> Result<[Vec<f32>; 3], ComputeError> {
        let mm = |x: &[f32], k: usize, w: &[f32], cols: usize| -> Result<Vec<f32>, ComputeError> {
            let mut out = vec![0.0f32; t_len * cols];
            matmul_checked(isa, 1, None, x, t_len, k, w, cols, None, &mut out)?;
            Ok(out)
        };
        let p = self.p;
        let dp = mm(self.g, hd, self.v, t_len)?;
        let mut ds = vec![0.0f32; t_len * t_len];
        for t in 0..t_len {
            let (pr, dpr) = (&p[t * t_len..][..t_len], &dp[t * t_len..][..t_len]);
            let d = dot_checked(isa, pr, dpr);
            for j in 0..=t {
                ds[t * t_len + j] = (pr[j] * (dpr[j] - d)) * scale;
            }
        }
        let dq = mm(&ds, t_len, &transpose(self.k, t_len, hd), hd)?;
        let ds_t = transpose(&ds, t_len, t_len);
        let dk = mm(&ds_t, t_len, &transpose(self.q, t_len, hd), hd)?;
        let p_t = transpose(p, t_len, t_len);
        let dv = mm(&p_t, t_len, &transpose(self.g, t_len, hd), hd)?;
        Ok([dq, dk, dv])
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += *b;
    }
}

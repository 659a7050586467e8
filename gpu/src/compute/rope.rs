//! Rule 7 of the spec: rotary position embeddings, Hugging Face Llama `rotate_half` layout.

use super::{ComputeError, check_len, checked_mul};

/// Llama-3 `rope_scaling` (`rope_type = "llama3"`) parameters from a model config.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// `inv_freq_j = 1 / theta^(2j/d)` for `j < d/2`, in f64, rescaled like transformers'
/// `_compute_llama3_parameters` when `scaling` is given.
pub fn rope_inv_freq(
    head_dim: usize,
    theta: f64,
    scaling: Option<&Llama3RopeScaling>,
) -> Result<Vec<f64>, ComputeError> {
    const OP: &str = "rope";
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(ComputeError::Invalid {
            op: OP,
            reason: "head_dim must be even and positive",
        });
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(ComputeError::Invalid {
            op: OP,
            reason: "rope_theta must be finite and positive",
        });
    }
    let d = head_dim as f64;
    let mut inv: Vec<f64> = (0..head_dim / 2)
        .map(|j| 1.0 / theta.powf((2 * j) as f64 / d))
        .collect();
    if let Some(s) = scaling {
        let all_positive = [
            s.factor,
            s.low_freq_factor,
            s.high_freq_factor,
            s.original_max_position_embeddings,
        ]
        .iter()
        .all(|v| v.is_finite() && *v > 0.0);
        if !all_positive || s.high_freq_factor == s.low_freq_factor {
            return Err(ComputeError::Invalid {
                op: OP,
                reason: "llama3 rope_scaling needs finite positive values and high_freq_factor != low_freq_factor",
            });
        }
        let old = s.original_max_position_embeddings;
        let low_freq_wavelen = old / s.low_freq_factor;
        let high_freq_wavelen = old / s.high_freq_factor;
        for f in &mut inv {
            let wavelen = 2.0 * std::f64::consts::PI / *f;
            if wavelen > low_freq_wavelen {
                *f /= s.factor;
            } else if wavelen >= high_freq_wavelen {
                // Medium frequencies: transformers interpolates with the same expression
                // order, `(1 - smooth) * inv / factor + smooth * inv`.
                let smooth =
                    (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
            }
        }
    }
    Ok(inv)
}

/// cos/sin tables for positions `0..max_positions`, computed once in f64 and rounded.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTable {
    head_dim: usize,
    max_positions: usize,
    /// `[max_positions, head_dim / 2]` row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(
        head_dim: usize,
        theta: f64,
        max_positions: usize,
        scaling: Option<&Llama3RopeScaling>,
    ) -> Result<Self, ComputeError> {
        let inv = rope_inv_freq(head_dim, theta, scaling)?;
        let len = checked_mul("rope", max_positions, head_dim / 2)?;
        let mut cos = Vec::with_capacity(len);
        let mut sin = Vec::with_capacity(len);
        for pos in 0..max_positions {
            for f in &inv {
                let angle = pos as f64 * *f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(RopeTable {
            head_dim,
            max_positions,
            cos,
            sin,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// `(cos, sin)` for one position, `head_dim / 2` each.
    pub fn row(&self, pos: usize) -> Result<(&[f32], &[f32]), ComputeError> {
        if pos >= self.max_positions {
            return Err(ComputeError::Invalid {
                op: "rope",
                reason: "position beyond the table",
            });
        }
        let h = self.head_dim / 2;
        Ok((&self.cos[pos * h..][..h], &self.sin[pos * h..][..h]))
    }

    /// Rotates every head of `x` (`[n_heads, head_dim]`) in place for position `pos`.
    pub fn apply(&self, pos: usize, x: &mut [f32]) -> Result<(), ComputeError> {
        let (cos, sin) = self.row(pos)?;
        if !x.len().is_multiple_of(self.head_dim) {
            check_len(
                "rope",
                "x",
                x.len().div_ceil(self.head_dim) * self.head_dim,
                x.len(),
            )?;
        }
        let h = self.head_dim / 2;
        for head in x.chunks_exact_mut(self.head_dim) {
            let (a, b) = head.split_at_mut(h);
            for j in 0..h {
                let (x0, x1) = (a[j], b[j]);
                a[j] = x0 * cos[j] - x1 * sin[j];
                b[j] = x1 * cos[j] + x0 * sin[j];
            }
        }
        Ok(())
    }
}

//! AdamW as PyTorch's `torch.optim.AdamW` computes it, in the fixed order of rule T8.

/// Hyperparameters of the optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    /// The values the fine-tune job fixes: β1 0.9, β2 0.999, ε 1e-8, no weight decay.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of one parameter tensor.
#[derive(Debug, Clone)]
pub(crate) struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Moments {
    pub(crate) fn new(len: usize) -> Self {
        Self {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }
}

impl AdamW {
    /// Applies optimizer step `step` (1-based) at learning rate `lr` to `param`.
    pub(crate) fn update(
        &self,
        step: u32,
        lr: f64,
        param: &mut [f32],
        grad: &[f32],
        moments: &mut Moments,
    ) {
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let step_size = (lr / (1.0 - pow(self.beta1, step))) as f32;
        let bc2 = (1.0 - pow(self.beta2, step)).sqrt() as f32;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let (c1, c2) = ((1.0 - self.beta1) as f32, (1.0 - self.beta2) as f32);
        let eps = self.eps as f32;
        for (((p, g), m), v) in param
            .iter_mut()
            .zip(grad)
            .zip(moments.m.iter_mut())
            .zip(moments.v.iter_mut())
        {
            *p *= decay;
            *m = *m * b1 + *g * c1;
            *v = *v * b2 + (*g * *g) * c2;
            *p -= step_size * (*m / (v.sqrt() / bc2 + eps));
        }
    }
}

/// transformers' constant schedule with linear warmup, for optimizer step `step` (1-based).
pub fn scheduled_lr(lr: f64, warmup: u32, step: u32) -> f64 {
    let done = step.saturating_sub(1);
    if done < warmup {
        lr * f64::from(done) / f64::from(warmup)
    } else {
        lr
    }
}

/// `base^n` by repeated multiplication: one fixed sequence of roundings on every platform,
/// where `powi`/`powf` are left to the compiler and libm.
fn pow(base: f64, n: u32) -> f64 {
    (0..n).fold(1.0, |acc, _| acc * base)
}

//! The training loop: which examples make each optimizer step, micro-batches, AdamW.

use std::time::{Duration, Instant};

use super::adamw::{AdamW, Moments, scheduled_lr};
use super::data::Example;
use super::error::{Divergence, TrainError};
use super::lora::{LoraSpec, adapter_commitment, tensor_name};
use super::loss::row_loss;
use super::pass::{Grads, ModuleGrad, Pass, Scratch, Seq, Transposed};
use crate::compute::{Backend, ComputeError, CpuBackend};
use crate::engine::Engine;
use crate::model::Adapter;
use crate::model::error::NonFiniteKind;
use crate::model::rng::stream_for;

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    Steps(u32),
    Epochs(u32),
}

/// Everything that decides the trained adapter besides the model, data and initial adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyper {
    /// Shape of a fresh adapter (ignored when training continues from one).
    pub lora: LoraSpec,
    pub lr: f64,
    /// Examples per micro-batch; with `grad_accum`, `batch × grad_accum` examples make one
    /// optimizer step. Only their product changes the result (rule T3); `batch` alone
    /// trades memory for speed.
    pub batch: usize,
    pub grad_accum: usize,
    pub budget: Budget,
    pub warmup: u32,
    /// Fixes the data order (and a fresh adapter's `A`).
    pub seed: u64,
    pub optimizer: AdamW,
}

impl Default for Hyper {
    fn default() -> Self {
        Self {
            lora: LoraSpec::default(),
            lr: 2e-4,
            batch: 4,
            grad_accum: 1,
            budget: Budget::Epochs(1),
            warmup: 0,
            seed: 0,
            optimizer: AdamW::default(),
        }
    }
}

/// Upper bound on optimizer steps, so a typo cannot ask for years of work.
pub const MAX_STEPS: u64 = 10_000_000;

impl Hyper {
    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        if !self.lr.is_finite() || self.lr <= 0.0 {
            return bad(format!(
                "learning rate must be a positive number, got {}",
                self.lr
            ));
        }
        if self.batch == 0 || self.grad_accum == 0 {
            return bad("batch size and gradient accumulation must be at least 1".into());
        }
        match self.budget {
            Budget::Steps(0) => return bad("--steps must be at least 1".into()),
            Budget::Epochs(0) => return bad("--epochs must be at least 1".into()),
            _ => {}
        }
        let o = &self.optimizer;
        let unit = |x: f64| x.is_finite() && (0.0..1.0).contains(&x);
        if !(unit(o.beta1) && unit(o.beta2) && o.eps.is_finite() && o.eps > 0.0) {
            return bad("AdamW needs 0 <= beta < 1 and eps > 0".into());
        }
        if !o.weight_decay.is_finite() || o.weight_decay < 0.0 {
            return bad(format!("weight decay must be >= 0, got {}", o.weight_decay));
        }
        self.lora.check()
    }

    /// Examples per optimizer step.
    pub fn step_size(&self) -> usize {
        self.batch.saturating_mul(self.grad_accum)
    }
}

/// Which examples (indices into the example list) make each optimizer step. Each epoch is
/// a seeded Fisher–Yates permutation cut into steps of `batch × grad_accum` (the last step
/// of an epoch may be smaller, as transformers' dataloader does without `drop_last`).
pub fn plan(n_examples: usize, hyper: &Hyper) -> Result<Vec<Vec<usize>>, TrainError> {
    if n_examples == 0 {
        return Err(TrainError::Invalid("no examples to train on".into()));
    }
    let per_step = hyper.step_size().max(1);
    let per_epoch = n_examples.div_ceil(per_step) as u64;
    let total = match hyper.budget {
        Budget::Steps(n) => u64::from(n),
        Budget::Epochs(e) => per_epoch.saturating_mul(u64::from(e)),
    };
    if total > MAX_STEPS {
        return Err(TrainError::Invalid(format!(
            "{total} optimizer steps requested; the limit is {MAX_STEPS}"
        )));
    }
    let mut steps = Vec::with_capacity(total as usize);
    let mut epoch = 0u64;
    while (steps.len() as u64) < total {
        let mut order: Vec<usize> = (0..n_examples).collect();
        let mut rng = stream_for(hyper.seed, &format!("data order, epoch {epoch}"));
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for chunk in order.chunks(per_step) {
            if steps.len() as u64 == total {
                break;
            }
            steps.push(chunk.to_vec());
        }
        epoch += 1;
    }
    Ok(steps)
}

/// Reported after every optimizer step.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// 1-based.
    pub step: u32,
    pub total: u32,
    /// Mean loss over the step's trained tokens, before the update.
    pub loss: f64,
    pub lr: f64,
    /// Trained predictions in this step.
    pub trained_tokens: usize,
    /// Tokens run through the model in this step (prompt tokens included).
    pub tokens: usize,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub adapter: Adapter,
    pub commitment: String,
    /// Per step, as in [`StepReport::loss`].
    pub losses: Vec<f64>,
    /// Per example: how many steps included it.
    pub times_seen: Vec<u32>,
    pub tokens_processed: u64,
    pub elapsed: Duration,
}

impl TrainOutcome {
    pub fn first_loss(&self) -> f64 {
        self.losses.first().copied().unwrap_or(f64::NAN)
    }

    pub fn last_loss(&self) -> f64 {
        self.losses.last().copied().unwrap_or(f64::NAN)
    }
}

fn diverged(step: u32, what: Divergence) -> TrainError {
    TrainError::Diverged { step, what }
}

fn first_non_finite(values: &[f32]) -> Option<NonFiniteKind> {
    values
        .iter()
        .find(|v| !v.is_finite())
        .map(|&v| NonFiniteKind::of(v))
}

/// Trains LoRA adapters on one loaded base model.
#[derive(Debug)]
pub struct Trainer<'e, B: Backend = CpuBackend> {
    engine: &'e Engine<B>,
    /// Built once per trainer; a backend that cannot hold the copy fails `train`, not `new`.
    base_t: Result<Transposed<B>, ComputeError>,
}

impl<'e, B: Backend> Trainer<'e, B> {
    pub fn new(engine: &'e Engine<B>) -> Self {
        Self {
            engine,
            base_t: Transposed::new(engine),
        }
    }

    /// Trains `adapter` on `examples`. `progress` is called after every step; returning
    /// `false` stops training with [`TrainError::Cancelled`].
    pub fn train(
        &self,
        examples: &[Example],
        mut adapter: Adapter,
        hyper: &Hyper,
        mut progress: impl FnMut(&StepReport) -> bool,
    ) -> Result<TrainOutcome, TrainError> {
        hyper.check()?;
        let base_t = self.base_t.as_ref().map_err(Clone::clone)?;
        let max = self.engine.max_positions();
        for e in examples {
            if e.tokens.len() > max || e.tokens.len() < 2 || e.trained_tokens() == 0 {
                return Err(TrainError::Invalid(format!(
                    "example of record {} has {} tokens ({} trained); need 2..={max} tokens and at least one trained",
                    e.record,
                    e.tokens.len(),
                    e.trained_tokens()
                )));
            }
        }
        let steps = plan(examples.len(), hyper)?;
        let total = steps.len() as u32;
        let mut grads: Grads = adapter
            .modules
            .iter()
            .map(|(k, w)| (*k, ModuleGrad::for_weights(w)))
            .collect();
        let mut moments: Vec<(Moments, Moments)> = adapter
            .modules
            .values()
            .map(|w| (Moments::new(w.a.data.len()), Moments::new(w.b.data.len())))
            .collect();
        let mut losses = Vec::with_capacity(steps.len());
        let mut times_seen = vec![0u32; examples.len()];
        let mut tokens_processed = 0u64;
        let mut scratch = Scratch::default();
        let start = Instant::now();

        for (s, members) in steps.iter().enumerate() {
            let step = s as u32 + 1;
            let step_start = Instant::now();
            let n: usize = members.iter().map(|&i| examples[i].trained_tokens()).sum();
            let mut loss_sum = 0.0f64;
            let mut rows = 0usize;
            for g in grads.values_mut() {
                g.a.reset();
                g.b.reset();
            }
            for micro in members.chunks(hyper.batch) {
                let seqs: Vec<Seq<'_>> = micro
                    .iter()
                    .map(|&i| Seq {
                        tokens: &examples[i].tokens,
                        trained_from: examples[i].trained_from,
                    })
                    .collect();
                let pass = Pass {
                    engine: self.engine,
                    base_t,
                    adapter: &adapter,
                };
                // One entry into the backend's context per micro-batch, not one per op.
                let run = self
                    .engine
                    .backend()
                    .run(|| pass.run_with(&mut scratch, &seqs, rows, n as f32, &mut grads))?;
                let seq_losses = match run {
                    Ok(losses) => losses,
                    Err(ComputeError::NonFinite { .. }) => {
                        return Err(diverged(step, Divergence::Activation));
                    }
                    Err(e) => return Err(e.into()),
                };
                loss_sum += seq_losses.iter().map(|l| l.sum).sum::<f64>();
                rows += seqs.iter().map(|s| s.tokens.len()).sum::<usize>();
            }
            for &i in members {
                times_seen[i] += 1;
            }
            tokens_processed += rows as u64;
            let loss = loss_sum / n as f64;
            if !loss.is_finite() {
                let value = NonFiniteKind::of(loss as f32);
                return Err(diverged(step, Divergence::Loss(value)));
            }
            let lr = scheduled_lr(hyper.lr, hyper.warmup, step);
            for ((&(layer, module), w), (g, (ma, mb))) in adapter
                .modules
                .iter_mut()
                .zip(grads.values().zip(moments.iter_mut()))
            {
                for (half, param, acc, m) in [
                    ('A', &mut w.a.data, &g.a, ma),
                    ('B', &mut w.b.data, &g.b, mb),
                ] {
                    let grad = acc.finish();
                    let tensor = || tensor_name(layer, module, half);
                    if let Some(value) = first_non_finite(&grad) {
                        let what = Divergence::Gradient {
                            tensor: tensor(),
                            value,
                        };
                        return Err(diverged(step, what));
                    }
                    hyper.optimizer.update(step, lr, param, &grad, m);
                    // The adapter is small next to a forward pass, so every step can afford
                    // to look at all of it.
                    if let Some(value) = first_non_finite(param) {
                        let what = Divergence::Parameter {
                            tensor: tensor(),
                            value,
                        };
                        return Err(diverged(step, what));
                    }
                }
            }
            losses.push(loss);
            let report = StepReport {
                step,
                total,
                loss,
                lr,
                trained_tokens: n,
                tokens: rows,
                elapsed: step_start.elapsed(),
            };
            if !progress(&report) && step < total {
                return Err(TrainError::Cancelled { steps: step });
            }
        }
        let commitment = adapter_commitment(&adapter);
        Ok(TrainOutcome {
            adapter,
            commitment,
            losses,
            times_seen,
            tokens_processed,
            elapsed: start.elapsed(),
        })
    }

    /// Each example's mean loss over its trained tokens under `adapter` (forward only).
    pub fn eval_losses(
        &self,
        examples: &[Example],
        adapter: Option<&Adapter>,
    ) -> Result<Vec<f64>, TrainError> {
        let vocab = self.engine.config().vocab_size;
        let mut out = Vec::with_capacity(examples.len());
        for e in examples {
            let mut cache = self.engine.new_cache();
            let logits = self.engine.forward(&e.tokens, &mut cache, adapter, true)?;
            let mut sum = 0.0f64;
            let targets = e.trained_from.max(1)..e.tokens.len();
            let count = targets.len();
            for i in targets {
                let z = &logits[(i - 1) * vocab..][..vocab];
                sum += row_loss(self.engine.backend(), z, e.tokens[i] as usize)?;
            }
            out.push(sum / count.max(1) as f64);
        }
        Ok(out)
    }
}

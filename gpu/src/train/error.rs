//! Why a fine-tune could not start or finish.

use crate::compute::ComputeError;
use crate::engine::EngineError;
use crate::model::ModelError;
use crate::model::error::NonFiniteKind;

use super::data::DataError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Compute(#[from] ComputeError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Hyperparameters or an initial adapter that cannot be trained as asked.
    #[error("{0}")]
    Invalid(String),
    /// A loss, activation, gradient or parameter stopped being a finite number, almost
    /// always because the learning rate is far too high. Nothing trained past that point means anything,
    /// so training stops rather than hand back an adapter that computes NaN.
    #[error("training diverged at step {step}: {what} ({})", hint(.step, .what))]
    Diverged { step: u32, what: Divergence },
    /// The progress callback asked to stop (a cancelled job or a missed deadline).
    #[error("training was cancelled after {steps} steps")]
    Cancelled { steps: u32 },
}

/// Where to look: everything but a parameter is computed before the step's update, so at
/// step 1 no learning rate has had a say yet.
fn hint(step: &u32, what: &Divergence) -> &'static str {
    if *step <= 1 && !matches!(what, Divergence::Parameter { .. }) {
        "before any update: the base model or the initial adapter overflows"
    } else {
        "a lower learning rate may help"
    }
}

/// What went non-finite in a diverged training run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    /// The step's mean loss, computed before its update.
    Loss(NonFiniteKind),
    /// An activation of the forward pass grew too large to normalise (its RMSNorm sum of
    /// squares overflowed), which zeroes it and every gradient through it.
    Activation,
    /// A gradient element of the named adapter tensor.
    Gradient {
        tensor: String,
        value: NonFiniteKind,
    },
    /// An element of the named adapter tensor, after the step's update.
    Parameter {
        tensor: String,
        value: NonFiniteKind,
    },
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Loss(value) => write!(f, "the loss is {value}"),
            Self::Activation => f.write_str("an activation overflowed in the forward pass"),
            Self::Gradient { tensor, value } => {
                write!(f, "a LoRA gradient became non-finite ({value} in {tensor})")
            }
            Self::Parameter { tensor, value } => {
                write!(
                    f,
                    "a LoRA parameter became non-finite ({value} in {tensor})"
                )
            }
        }
    }
}

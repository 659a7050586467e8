//! Why a fine-tune could not start or finish.

use crate::compute::ComputeError;
use crate::engine::EngineError;
use crate::model::ModelError;

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
    /// The progress callback asked to stop (a cancelled job or a missed deadline).
    #[error("training was cancelled after {steps} steps")]
    Cancelled { steps: u32 },
}

//! The end of a fine-tune: final per-record losses and the PEFT adapter. The provenance
//! built from them is olc-exec's (its format is the protocol's).

use std::path::Path;

use super::data::Tokenized;
use super::error::TrainError;
use super::lora::write_adapter;
use super::trainer::{TrainOutcome, Trainer};
use crate::model::ModelConfig;

/// Longest default context for training: activations grow with the square of the length.
pub const DEFAULT_MAX_LEN: usize = 2048;

/// The longest record trained on: the one asked for, else the model's context up to
/// [`DEFAULT_MAX_LEN`].
pub fn resolve_max_len(
    requested: Option<usize>,
    config: &ModelConfig,
) -> Result<usize, TrainError> {
    let context = config.max_sequence_len();
    match requested {
        Some(n) if n < 2 => Err(TrainError::Invalid(format!(
            "the longest record must be at least 2 tokens, got {n}"
        ))),
        Some(n) if n > context => Err(TrainError::Invalid(format!(
            "a longest record of {n} tokens is longer than the model's context of {context} tokens"
        ))),
        Some(n) => Ok(n),
        None => Ok(context.min(DEFAULT_MAX_LEN)),
    }
}

/// Evaluates every record under the trained adapter and writes `adapter_config.json` and
/// `adapter_model.safetensors` into `dir`. Returns each example's mean loss under the final
/// adapter (in `tokenized.examples` order), what the provenance records per record.
pub fn finish(
    trainer: &Trainer<'_>,
    tokenized: &Tokenized,
    outcome: &TrainOutcome,
    dir: &Path,
) -> Result<Vec<f64>, TrainError> {
    let final_losses = trainer.eval_losses(&tokenized.examples, Some(&outcome.adapter))?;
    write_adapter(dir, &outcome.adapter)?;
    Ok(final_losses)
}

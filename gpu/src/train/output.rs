//! The end of a fine-tune, shared by `olc run finetune` and the worker's executor so the
//! two write the same files for the same run: final per-record losses, the provenance,
//! and the PEFT adapter.

use std::path::Path;

use super::data::{Dataset, Tokenized};
use super::error::TrainError;
use super::lora::write_adapter;
use super::provenance::{Provenance, ProvenanceInputs};
use super::trainer::{Hyper, TrainOutcome, Trainer};
use crate::model::{Adapter, ModelConfig};

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

/// What a finished run is described by.
#[derive(Debug)]
pub struct FinishInputs<'a> {
    /// Content id of the base model, as hex.
    pub base_model: &'a str,
    pub dataset: &'a Dataset,
    pub tokenized: &'a Tokenized,
    pub hyper: &'a Hyper,
    pub max_len: usize,
    /// The adapter training continued from, if it did.
    pub init_adapter: Option<&'a Adapter>,
}

/// Evaluates every record under the trained adapter, builds the provenance, and writes
/// `adapter_config.json`, `adapter_model.safetensors` and `provenance.json` into `dir`.
pub fn finish(
    trainer: &Trainer<'_>,
    inputs: &FinishInputs<'_>,
    outcome: &TrainOutcome,
    dir: &Path,
) -> Result<Provenance, TrainError> {
    let final_losses = trainer.eval_losses(&inputs.tokenized.examples, Some(&outcome.adapter))?;
    let provenance = Provenance::build(
        &ProvenanceInputs {
            base_model: inputs.base_model,
            dataset: inputs.dataset,
            tokenized: inputs.tokenized,
            hyper: inputs.hyper,
            max_len: inputs.max_len,
            init_adapter: inputs.init_adapter,
            final_losses: &final_losses,
        },
        outcome,
    );
    write_adapter(dir, &outcome.adapter)?;
    provenance.write(dir)?;
    Ok(provenance)
}

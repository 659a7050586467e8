//! A fine-tune from a model directory and a dataset file: the one path both a fine-tune
//! job and `olc run finetune` take, so a job's adapter is byte for byte what the command
//! writes for the same flags.

use std::path::Path;

use olc_gpu::engine::{Engine, EngineOptions};
use olc_gpu::model::{Adapter, Checkpoint};
use olc_gpu::train::{
    Dataset, Hyper, StepReport, TrainError, TrainOutcome, Trainer, finish, init_adapter,
};
use olc_protocol::{ContentId, Provenance, TrainingParams};

use crate::infer::EngineChoice;
use crate::provenance::{self, ProvenanceInputs};
use crate::{ExecError, hyper, load_checkpoint, max_len};

/// What to train.
#[derive(Debug, Clone, Copy)]
pub struct TrainRequest<'a> {
    pub model_dir: &'a Path,
    /// The model's content id, as the provenance records it.
    pub model_id: &'a str,
    pub dataset_path: &'a Path,
    /// The dataset's content id when a job names it: a file that is another dataset is
    /// refused before any training.
    pub expect_dataset: Option<ContentId>,
    pub params: &'a TrainingParams,
    /// The adapter training continues from, if the parameters name one.
    pub init_adapter_dir: Option<&'a Path>,
    /// Where adapter_config.json, adapter_model.safetensors and provenance.json go.
    pub out_dir: &'a Path,
}

/// A finished fine-tune, written to the request's `out_dir`.
#[derive(Debug)]
pub struct Trained {
    pub outcome: TrainOutcome,
    pub provenance: Provenance,
    pub dataset: Dataset,
    /// Records skipped for being longer than `max_len` tokens.
    pub skipped_records: usize,
    pub max_len: usize,
}

/// Trains, calling `on_step` after every optimizer step (return `false` to stop: the
/// trainer then ends with [`TrainError::Cancelled`]), and writes the adapter and its
/// provenance. `check` runs before the writes and may refuse them (a deadline that passed
/// during the last step).
pub fn train_adapter(
    request: &TrainRequest<'_>,
    choice: &EngineChoice,
    on_step: &mut dyn FnMut(&StepReport) -> bool,
    check: &dyn Fn() -> Result<(), ExecError>,
) -> Result<Trained, ExecError> {
    let params = request.params;
    params
        .validate()
        .map_err(|e| ExecError::Settings(e.to_string()))?;
    let hyper = hyper(params)?;
    if choice.threads == 0 {
        return Err(ExecError::Input("threads must be at least 1".into()));
    }
    let checkpoint = load_checkpoint(request.model_dir)?;
    let max_len = max_len(params, &checkpoint.config)?;
    let dataset = Dataset::from_file(request.dataset_path).map_err(TrainError::from)?;
    if let Some(id) = request.expect_dataset
        && dataset.content_id != id.to_string()
    {
        return Err(ExecError::Input(format!(
            "the job names dataset {id}, but {} is {}",
            request.dataset_path.display(),
            dataset.content_id
        )));
    }
    let tokenized = olc_gpu::train::tokenize(&dataset, &checkpoint.tokenizer, max_len)
        .map_err(TrainError::from)?;
    let initial = initial_adapter(request, &hyper, &checkpoint)?;
    let options = EngineOptions {
        isa: choice.isa,
        threads: choice.threads,
        max_positions: max_len,
    };
    let engine = Engine::new(checkpoint.config, checkpoint.weights, options)?;
    let trainer = Trainer::new(&engine);
    let outcome = trainer.train(&tokenized.examples, initial.clone(), &hyper, |r| on_step(r))?;
    check()?;
    let final_losses = finish(&trainer, &tokenized, &outcome, request.out_dir)?;
    let provenance = provenance::build(
        &ProvenanceInputs {
            base_model: request.model_id,
            dataset: &dataset,
            tokenized: &tokenized,
            hyper: &hyper,
            max_len,
            init_adapter: params.init_adapter.as_ref().map(|_| &initial),
            final_losses: &final_losses,
        },
        &outcome,
    )?;
    provenance::write(&provenance, request.out_dir)?;
    Ok(Trained {
        outcome,
        provenance,
        skipped_records: tokenized.too_long.len(),
        dataset,
        max_len,
    })
}

/// The adapter training starts from: the one the parameters continue, or a new one.
fn initial_adapter(
    request: &TrainRequest<'_>,
    hyper: &Hyper,
    checkpoint: &Checkpoint,
) -> Result<Adapter, ExecError> {
    match (request.params.init_adapter, request.init_adapter_dir) {
        (None, _) => Ok(init_adapter(&hyper.lora, &checkpoint.config, hyper.seed)?),
        (Some(_), Some(dir)) => Adapter::load(dir, &checkpoint.config).map_err(ExecError::Adapter),
        (Some(id), None) => Err(ExecError::Input(format!(
            "the job continues adapter {id}, but no adapter directory was given"
        ))),
    }
}

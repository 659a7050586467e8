//! A finished fine-tune's `provenance.json`, in the protocol's format: the bridge from what
//! the trainer counted (per example) to what attribution pays (per record and contributor).

use std::path::Path;

use olc_gpu::model::Adapter;
use olc_gpu::train::lora::write_atomic;
use olc_gpu::train::{Budget, Dataset, Hyper, Tokenized, TrainOutcome, adapter_commitment};
use olc_protocol::{
    HyperRecord, PROVENANCE_FILE, PROVENANCE_FORMAT, Provenance, PublicKey, RecordProvenance,
    TrainingLength,
};

use crate::ExecError;

/// What a finished run is described by besides its outcome.
#[derive(Debug)]
pub struct ProvenanceInputs<'a> {
    /// Content id of the base model, as hex.
    pub base_model: &'a str,
    pub dataset: &'a Dataset,
    pub tokenized: &'a Tokenized,
    pub hyper: &'a Hyper,
    pub max_len: usize,
    /// The adapter training continued from, if it did.
    pub init_adapter: Option<&'a Adapter>,
    /// Per example (same order as `tokenized.examples`), under the final adapter.
    pub final_losses: &'a [f64],
}

pub fn build(
    inputs: &ProvenanceInputs<'_>,
    outcome: &TrainOutcome,
) -> Result<Provenance, ExecError> {
    let ProvenanceInputs {
        dataset, tokenized, ..
    } = inputs;
    let mut records = Vec::with_capacity(dataset.records.len());
    for r in &dataset.records {
        let contributor = match &r.contributor {
            None => None,
            Some(c) => Some(c.parse::<PublicKey>().map_err(|e| {
                ExecError::Input(format!("line {} of the dataset: contributor: {e}", r.line))
            })?),
        };
        records.push(RecordProvenance {
            id: r.id.clone(),
            line: r.line,
            contributor,
            tokens: 0,
            tokens_trained: 0,
            times_seen: 0,
            final_loss: None,
            skipped: None,
        });
    }
    for &(rec, len) in &tokenized.too_long {
        if let Some(r) = records.get_mut(rec) {
            r.tokens = len;
            r.skipped = Some(format!(
                "{len} tokens, longer than the context of {}",
                inputs.max_len
            ));
        }
    }
    for (i, e) in tokenized.examples.iter().enumerate() {
        if let Some(r) = records.get_mut(e.record) {
            let seen = outcome.times_seen.get(i).copied().unwrap_or(0);
            r.tokens = e.tokens.len();
            r.times_seen = seen;
            r.tokens_trained = e.trained_tokens() as u64 * u64::from(seen);
            r.final_loss = inputs.final_losses.get(i).copied();
        }
    }
    let mut targets: Vec<&str> = outcome
        .adapter
        .modules
        .keys()
        .map(|(_, m)| m.name())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    let c = &outcome.adapter.config;
    let hyper = inputs.hyper;
    Ok(Provenance {
        format: PROVENANCE_FORMAT,
        base_model: inputs.base_model.to_string(),
        dataset: dataset.content_id.clone(),
        adapter_commitment: outcome.commitment.clone(),
        hyperparameters: HyperRecord {
            rank: c.r,
            alpha: c.lora_alpha,
            targets: targets.iter().map(|s| s.to_string()).collect(),
            lr: hyper.lr,
            batch: hyper.batch,
            grad_accum: hyper.grad_accum,
            budget: match hyper.budget {
                Budget::Steps(n) => TrainingLength::Steps(n),
                Budget::Epochs(n) => TrainingLength::Epochs(n),
            },
            steps: outcome.losses.len() as u32,
            warmup: hyper.warmup,
            seed: hyper.seed,
            beta1: hyper.optimizer.beta1,
            beta2: hyper.optimizer.beta2,
            eps: hyper.optimizer.eps,
            weight_decay: hyper.optimizer.weight_decay,
            max_len: inputs.max_len,
            init_adapter: inputs.init_adapter.map(adapter_commitment),
        },
        steps: outcome.losses.len() as u32,
        tokens_trained: records.iter().map(|r| r.tokens_trained).sum(),
        first_loss: outcome.first_loss(),
        last_loss: outcome.last_loss(),
        contributors: Provenance::shares(&records),
        records,
    })
}

/// Writes `provenance.json` into an adapter directory.
pub fn write(provenance: &Provenance, dir: &Path) -> Result<(), ExecError> {
    let path = dir.join(PROVENANCE_FILE);
    write_atomic(&path, &provenance.to_json()).map_err(|source| ExecError::Io { path, source })
}

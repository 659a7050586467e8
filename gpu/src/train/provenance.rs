//! `provenance.json`: what an adapter was trained from and whose data it learned, the
//! input that attribution (paying data contributors) builds on.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::data::{Dataset, Tokenized};
use super::error::TrainError;
use super::lora::write_atomic;
use super::trainer::{Budget, Hyper, TrainOutcome};
use crate::model::{Adapter, ModelError};

pub const PROVENANCE_FILE: &str = "provenance.json";

/// The hyperparameters as recorded; together with the model, data and initial adapter they
/// determine the adapter bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HyperRecord {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub lr: f64,
    pub batch: usize,
    pub grad_accum: usize,
    pub budget: Budget,
    pub steps: u32,
    pub warmup: u32,
    pub seed: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub max_len: usize,
    /// Commitment of the adapter training started from, if it continued one.
    pub init_adapter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordProvenance {
    pub id: String,
    pub line: usize,
    pub contributor: Option<String>,
    /// Tokens of the record (prompt included); 0 if it was skipped.
    pub tokens: usize,
    /// Trained predictions, summed over every time the record was in a step: the weight
    /// its contributor's share is computed from.
    pub tokens_trained: u64,
    pub times_seen: u32,
    /// Mean loss over its trained tokens under the final adapter; `None` if skipped.
    pub final_loss: Option<f64>,
    /// Why the record was not trained on, if it was not.
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContributorShare {
    pub contributor: String,
    pub tokens_trained: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub format: u32,
    /// Content id of the base model.
    pub base_model: String,
    /// Content id (BLAKE3) of the dataset file.
    pub dataset: String,
    pub adapter_commitment: String,
    pub hyperparameters: HyperRecord,
    pub steps: u32,
    pub tokens_trained: u64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub records: Vec<RecordProvenance>,
    /// Per contributor, in key order; records without a contributor are not listed.
    pub contributors: Vec<ContributorShare>,
}

/// What [`Provenance::build`] needs besides the outcome.
#[derive(Debug)]
pub struct ProvenanceInputs<'a> {
    pub base_model: &'a str,
    pub dataset: &'a Dataset,
    pub tokenized: &'a Tokenized,
    pub hyper: &'a Hyper,
    pub max_len: usize,
    pub init_adapter: Option<&'a Adapter>,
    /// Per example (same order as `tokenized.examples`), under the final adapter.
    pub final_losses: &'a [f64],
}

impl Provenance {
    pub fn build(inputs: &ProvenanceInputs<'_>, outcome: &TrainOutcome) -> Self {
        let ProvenanceInputs {
            dataset,
            tokenized,
            hyper,
            ..
        } = inputs;
        let mut records: Vec<RecordProvenance> = dataset
            .records
            .iter()
            .map(|r| RecordProvenance {
                id: r.id.clone(),
                line: r.line,
                contributor: r.contributor.clone(),
                tokens: 0,
                tokens_trained: 0,
                times_seen: 0,
                final_loss: None,
                skipped: None,
            })
            .collect();
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
        let mut shares: BTreeMap<String, u64> = BTreeMap::new();
        for r in &records {
            if let Some(c) = &r.contributor {
                *shares.entry(c.clone()).or_default() += r.tokens_trained;
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
        Provenance {
            format: 1,
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
                budget: hyper.budget,
                steps: outcome.losses.len() as u32,
                warmup: hyper.warmup,
                seed: hyper.seed,
                beta1: hyper.optimizer.beta1,
                beta2: hyper.optimizer.beta2,
                eps: hyper.optimizer.eps,
                weight_decay: hyper.optimizer.weight_decay,
                max_len: inputs.max_len,
                init_adapter: inputs.init_adapter.map(super::lora::adapter_commitment),
            },
            steps: outcome.losses.len() as u32,
            tokens_trained: records.iter().map(|r| r.tokens_trained).sum(),
            first_loss: outcome.first_loss(),
            last_loss: outcome.last_loss(),
            records,
            contributors: shares
                .into_iter()
                .map(|(contributor, tokens_trained)| ContributorShare {
                    contributor,
                    tokens_trained,
                })
                .collect(),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<(), TrainError> {
        let path = dir.join(PROVENANCE_FILE);
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| TrainError::Invalid(format!("cannot encode provenance: {e}")))?;
        json.push(b'\n');
        write_atomic(&path, &json).map_err(|source| ModelError::Io { path, source })?;
        Ok(())
    }
}

//! `provenance.json`: what an adapter was trained from and whose data it learned. It is the
//! input attribution (paying data contributors) builds on, so the worker that writes it,
//! the coordinator that settles from it and anyone auditing it read one format, here.
//! Contributors are public keys: a name nobody can be paid under never enters the file.

use serde::{Deserialize, Serialize};

use crate::PublicKey;
use crate::messages::job::TrainingLength;

/// The file an adapter directory carries its provenance in.
pub const PROVENANCE_FILE: &str = "provenance.json";

/// The version of the format [`Provenance`] describes.
pub const PROVENANCE_FORMAT: u32 = 1;

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
    pub budget: TrainingLength,
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
    pub contributor: Option<PublicKey>,
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
    pub contributor: PublicKey,
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

#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("provenance.json is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("provenance.json has format {found}; this build reads format {PROVENANCE_FORMAT}")]
    Format { found: u32 },
}

impl Provenance {
    /// The per-contributor shares, summed from the records in key order.
    pub fn shares(records: &[RecordProvenance]) -> Vec<ContributorShare> {
        let mut shares: std::collections::BTreeMap<PublicKey, u64> = Default::default();
        for r in records {
            if let Some(c) = r.contributor {
                *shares.entry(c).or_default() += r.tokens_trained;
            }
        }
        shares
            .into_iter()
            .map(|(contributor, tokens_trained)| ContributorShare {
                contributor,
                tokens_trained,
            })
            .collect()
    }

    /// The bytes of `provenance.json`: pretty JSON and a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of numbers, strings and keys cannot fail.
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        json
    }

    /// Reads `provenance.json`, refusing a format this build does not know.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProvenanceError> {
        #[derive(Deserialize)]
        struct Header {
            format: u32,
        }
        let header: Header = serde_json::from_slice(bytes)?;
        if header.format != PROVENANCE_FORMAT {
            return Err(ProvenanceError::Format {
                found: header.format,
            });
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Each contributor and the tokens their records trained: what the data share of a
    /// job's fee is apportioned by.
    pub fn contributor_tokens(&self) -> Vec<(PublicKey, u64)> {
        self.contributors
            .iter()
            .map(|c| (c.contributor, c.tokens_trained))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    fn record(contributor: Option<PublicKey>, tokens_trained: u64) -> RecordProvenance {
        RecordProvenance {
            id: format!("r{tokens_trained}"),
            line: 1,
            contributor,
            tokens: 4,
            tokens_trained,
            times_seen: 1,
            final_loss: Some(1.5),
            skipped: None,
        }
    }

    fn provenance(records: Vec<RecordProvenance>) -> Provenance {
        Provenance {
            format: PROVENANCE_FORMAT,
            base_model: "m".into(),
            dataset: "d".into(),
            adapter_commitment: "c".into(),
            hyperparameters: HyperRecord {
                rank: 8,
                alpha: 16.0,
                targets: vec!["q_proj".into()],
                lr: 1e-3,
                batch: 1,
                grad_accum: 1,
                budget: TrainingLength::Steps(2),
                steps: 2,
                warmup: 0,
                seed: 7,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                max_len: 64,
                init_adapter: None,
            },
            steps: 2,
            tokens_trained: records.iter().map(|r| r.tokens_trained).sum(),
            first_loss: 2.0,
            last_loss: 1.0,
            contributors: Provenance::shares(&records),
            records,
        }
    }

    #[test]
    fn shares_sum_per_key_in_key_order_and_skip_records_without_one() {
        let records = vec![
            record(Some(key(9)), 3),
            record(None, 100),
            record(Some(key(1)), 5),
            record(Some(key(9)), 4),
        ];
        let p = provenance(records);
        assert_eq!(p.contributor_tokens(), vec![(key(1), 5), (key(9), 7)]);
    }

    #[test]
    fn round_trips_with_keys_as_lowercase_hex() {
        let p = provenance(vec![record(Some(key(0xab)), 3)]);
        let json = p.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains(&format!("\"contributor\": \"{}\"", "ab".repeat(32))));
        assert!(text.contains("\"budget\": {\n      \"steps\": 2\n    }"));
        assert!(text.ends_with("}\n"));
        assert_eq!(Provenance::from_json(&json).unwrap(), p);
    }

    #[test]
    fn a_contributor_that_is_not_a_key_is_refused() {
        let p = provenance(vec![record(Some(key(1)), 3)]);
        let text = String::from_utf8(p.to_json()).unwrap();
        let bad = text.replace(&"01".repeat(32), "alice");
        let err = Provenance::from_json(bad.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("alice"), "{err}");
    }

    #[test]
    fn an_unknown_format_is_refused_by_number() {
        let p = provenance(vec![]);
        let text = String::from_utf8(p.to_json()).unwrap();
        let future = text.replace("\"format\": 1", "\"format\": 2");
        let err = Provenance::from_json(future.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "provenance.json has format 2; this build reads format 1"
        );
        assert!(Provenance::from_json(b"not json").is_err());
    }
}

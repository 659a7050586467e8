//! Hugging Face checkpoints and PEFT LoRA adapters: loading them safely, and creating small
//! random ones in the same format.
//!
//! Checkpoint files reach a worker from untrusted peers, so every loader validates
//! everything against the config (which is itself bounded) before trusting it, refuses what
//! it does not implement, and reports the file and tensor at fault. Nothing here panics on
//! bad input or allocates more than the validated config justifies.

mod bpe_json;
mod files;
mod names;
pub(crate) mod rng;
mod source;
pub(crate) mod st_write;
mod tensor;

pub mod adapter;
pub mod config;
pub mod error;
pub mod export;
pub mod gguf;
pub mod init;
pub mod tokenizer;
pub mod weights;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use adapter::{Adapter, AdapterConfig, LoraWeights, TargetModules};
pub use config::{Architecture, Llama3RopeScaling, ModelConfig};
pub use error::ModelError;
pub use init::{Preset, write_checkpoint};
pub use names::LinearModule;
pub use source::ModelSource;
pub use tokenizer::Tokenizer;
pub use weights::{Blocks, LayerWeights, LlamaWeights, Matrix};

/// Everything in a checkpoint directory that the engine needs.
#[derive(Debug)]
pub struct Checkpoint {
    pub config: ModelConfig,
    pub weights: LlamaWeights,
    pub tokenizer: Tokenizer,
}

impl Checkpoint {
    /// The files [`Checkpoint::load`] reads from the model at `path`, relative to
    /// [`ModelSource::root`] (which is `path` itself for a directory): what a model's content
    /// id covers.
    pub fn files(path: &Path) -> Result<Vec<String>, ModelError> {
        ModelSource::find(path)?.files()
    }

    /// A Hugging Face directory's files (plus `generation_config.json` and
    /// `tokenizer_config.json` if present).
    pub(crate) fn hf_files(dir: &Path) -> Result<Vec<String>, ModelError> {
        let mut names = vec![
            "config.json".to_string(),
            tokenizer::TOKENIZER_FILE.to_string(),
        ];
        // Read by no engine, but by whoever serves the model: its chat template and its
        // special tokens travel with it.
        for optional in ["generation_config.json", "tokenizer_config.json"] {
            if dir.join(optional).is_file() {
                names.push(optional.to_string());
            }
        }
        names.extend(weights::weight_files(dir)?);
        Ok(names)
    }

    /// Loads the model at `path`: a Hugging Face directory, a GGUF file, or a directory
    /// holding one GGUF file (see [`ModelSource::find`]).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        match ModelSource::find(path)? {
            ModelSource::HuggingFace(dir) => Self::load_hf(&dir),
            ModelSource::Gguf(file) => gguf::load(&file),
        }
    }

    /// Loads `config.json`, the weights and `tokenizer.json` from `dir`, checking that the
    /// tokenizer's ids fit the model's embedding table.
    fn load_hf(dir: &Path) -> Result<Self, ModelError> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let tokenizer_path = dir.join(tokenizer::TOKENIZER_FILE);
        let tokenizer = Tokenizer::from_file(&tokenizer_path)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(ModelError::Tokenizer {
                path: tokenizer_path,
                message: format!(
                    "{} tokens do not fit the model's vocabulary of {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        let weights = LlamaWeights::load(dir, &config)?;
        Ok(Self {
            config,
            weights,
            tokenizer,
        })
    }
}

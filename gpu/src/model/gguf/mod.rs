//! GGUF model files (llama.cpp's format): reading them safely into a [`super::Checkpoint`].
//!
//! One file carries what a Hugging Face directory spreads over three: the configuration and
//! the tokenizer as metadata, the weights as tensors. It is as untrusted as any checkpoint, so
//! the same rules hold: the header is read through a bounded reader, the configuration goes
//! through the same validation as `config.json`, the tensor directory is checked against it
//! as a whole before any tensor is read, and what would change the maths is refused by name.

mod bounded;
pub mod config;
mod header;
pub mod names;
pub mod reader;
pub mod tokenizer;
pub mod value;
pub mod weights;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod writer;

use std::collections::BTreeMap;
use std::path::Path;

pub use reader::{GgufFile, TensorInfo, ggml_type_name, is_gguf};
pub use tokenizer::GgufTokenizer;
pub use value::{Array, Value};

use super::Checkpoint;
use super::error::{ModelError, Result};
use crate::compute::QuantType;

/// What a GGUF file says beyond the [`Checkpoint`]: for serving it and for `olc model show`.
#[derive(Debug, Clone)]
pub struct GgufInfo {
    /// 2 or 3.
    pub version: u32,
    /// `general.architecture`, as the file spells it.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `tokenizer.ggml.model` (`gpt2`, `llama`).
    pub tokenizer_model: Option<String>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// How many tensors are stored in each type.
    pub tensor_types: BTreeMap<QuantType, usize>,
    pub tensor_count: usize,
    /// Every metadata key with a one-line rendering of its value (arrays as type and length).
    pub metadata: Vec<(String, String)>,
}

impl GgufInfo {
    /// The header's summary; the tokenizer fields are filled in only from the metadata.
    pub fn from_file(file: &GgufFile) -> Self {
        let mut tensor_types = BTreeMap::new();
        for t in file.tensors() {
            *tensor_types.entry(t.ty).or_insert(0) += 1;
        }
        let text = |k: &str| file.get(k).and_then(Value::as_str).map(str::to_string);
        let id = |k: &str| {
            file.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        GgufInfo {
            version: file.version(),
            architecture: text("general.architecture"),
            name: text("general.name"),
            tokenizer_model: text(tokenizer::KEY_MODEL),
            chat_template: text(tokenizer::KEY_CHAT_TEMPLATE),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
            tensor_types,
            tensor_count: file.tensors().len(),
            metadata: file
                .metadata()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// Reads only the header, for `olc model show`: cheap even for a large model.
pub fn inspect(path: &Path) -> Result<GgufInfo> {
    Ok(GgufInfo::from_file(&GgufFile::open(path)?))
}

/// Loads a GGUF file as a checkpoint: configuration, tokenizer and weights, each validated;
/// what [`Checkpoint::load`] calls for a GGUF file.
pub fn load(path: &Path) -> Result<Checkpoint> {
    load_with_info(path).map(|(checkpoint, _)| checkpoint)
}

/// [`load`], also returning what the file says beyond the checkpoint (chat template, special
/// ids, metadata).
pub fn load_with_info(path: &Path) -> Result<(Checkpoint, GgufInfo)> {
    let file = GgufFile::open(path)?;
    // Refuse an unsupported architecture before anything that depends on its keys.
    config::architecture(&file)?;
    let tied = file.tensor(names::OUTPUT).is_none();
    // The configuration's bounds (vocabulary, shapes) are checked before the tokenizer is
    // built from the same metadata.
    let vocab_fallback = tokenizer::token_count(&file)?;
    let config = config::model_config(&file, tied, vocab_fallback)?;
    let tokenizer = tokenizer::build(&file)?;
    if tokenizer.tokenizer.vocab_size() > config.vocab_size {
        return Err(ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: format!(
                "{} tokens do not fit the model's vocabulary of {}",
                tokenizer.tokenizer.vocab_size(),
                config.vocab_size
            ),
        });
    }
    weights::check_directory(&file, &config)?;
    let weights = weights::load_weights(&file, &config)?;
    let mut info = GgufInfo::from_file(&file);
    info.chat_template = tokenizer.chat_template.clone();
    info.bos_token_id = tokenizer.bos_token_id;
    info.eos_token_id = tokenizer.eos_token_id;
    info.tokenizer_model = Some(tokenizer.model.clone());
    Ok((
        Checkpoint {
            config,
            weights,
            tokenizer: tokenizer.tokenizer,
        },
        info,
    ))
}

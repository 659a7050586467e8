//! The checkpoint's `tokenizer.json`, through the `tokenizers` crate so that token ids match
//! what `transformers` produces for the same file.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::{ModelError, Result};
use super::files::{MAX_TOKENIZER_JSON, read_capped};

pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A loaded tokenizer; errors name the file it came from.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = read_capped(path, MAX_TOKENIZER_JSON)?;
        Self::from_bytes(&bytes, path)
    }

    /// `path` only names the source in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let inner =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| ModelError::Tokenizer {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Wraps a tokenizer built in code (a GGUF file's, assembled from its metadata); `path`
    /// names its source in errors.
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, path: &Path) -> Self {
        Self {
            inner,
            path: path.to_path_buf(),
        }
    }

    /// Encodes with the special tokens the file's post-processor adds (e.g. a BOS token),
    /// as `transformers` does by default.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    /// Encodes, adding the post-processor's special tokens only if asked to.
    pub fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.error("encode", e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes ids back to text; special tokens are kept unless `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.error("decode", e))
    }

    /// Including added (special) tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying tokenizer, for what this wrapper does not expose (offsets, batches).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn error(&self, what: &str, e: tokenizers::Error) -> ModelError {
        ModelError::Tokenizer {
            path: self.path.clone(),
            message: format!("{what}: {e}"),
        }
    }
}

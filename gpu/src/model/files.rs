//! Reading files whose size is decided by whoever sent them: every read has a cap, checked
//! against the file length before anything is allocated and enforced again while reading (the
//! file may grow between the two).

use std::io::Read;
use std::path::Path;

use super::error::{ModelError, Result};

/// Generous for any real `config.json`, `adapter_config.json` or `generation_config.json`.
pub(crate) const MAX_SMALL_JSON: u64 = 1 << 20;
/// A sharded index lists every tensor name once; even 100k-tensor models stay far below this.
pub(crate) const MAX_INDEX_JSON: u64 = 64 << 20;
/// Real tokenizers with 250k-token vocabularies are ~20 MB.
pub(crate) const MAX_TOKENIZER_JSON: u64 = 128 << 20;

/// Reads `path` whole, refusing it when it is longer than `max` bytes.
pub(crate) fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    if len > max {
        return Err(ModelError::FileTooLarge {
            path: path.to_path_buf(),
            len,
            max,
        });
    }
    // `len <= max`, and `max` is bounded by what the caller can justify, so this fits.
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| ModelError::io(path, e))?;
    if buf.len() as u64 > max {
        return Err(ModelError::FileTooLarge {
            path: path.to_path_buf(),
            len: buf.len() as u64,
            max,
        });
    }
    Ok(buf)
}

/// Parses a capped JSON file into `T`, naming the file in any error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, max: u64) -> Result<T> {
    let bytes = read_capped(path, max)?;
    serde_json::from_slice(&bytes).map_err(|e| ModelError::json(path, e))
}

//! Turning safetensors bytes into f32, the only number format the engine computes in.

use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::error::{ModelError, Result};

/// Checks dtype and shape, then widens exactly: every F16 and BF16 value (including
/// subnormals, infinities and NaN payloads) is representable in f32, so no rounding happens.
pub(crate) fn widen(
    path: &Path,
    name: &str,
    view: &TensorView<'_>,
    expected: &[usize],
) -> Result<Vec<f32>> {
    if view.shape() != expected {
        return Err(ModelError::WrongShape {
            path: path.to_path_buf(),
            tensor: name.to_string(),
            expected: expected.to_vec(),
            found: view.shape().to_vec(),
        });
    }
    let bytes = view.data();
    // safetensors has already checked that the byte length equals shape × dtype size.
    let out = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        other => {
            return Err(ModelError::WrongDtype {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                found: format!("{other:?}"),
            });
        }
    };
    Ok(out)
}

/// Parses a whole safetensors buffer, which also validates every offset in the header
/// against the buffer length (a lying header or a truncated file is refused here).
pub(crate) fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<safetensors::SafeTensors<'a>> {
    safetensors::SafeTensors::deserialize(bytes).map_err(|source| ModelError::SafeTensors {
        path: path.to_path_buf(),
        source,
    })
}

/// One tensor of a parsed file, with the file named in the error.
pub(crate) fn view<'a>(
    file: &safetensors::SafeTensors<'a>,
    path: &Path,
    name: &str,
) -> Result<TensorView<'a>> {
    file.tensor(name).map_err(|source| ModelError::SafeTensors {
        path: path.to_path_buf(),
        source,
    })
}

/// Largest header safetensors itself accepts.
pub(crate) const MAX_HEADER: u64 = 100_000_000;

//! Tests for checkpoint loading and creation. Helpers here build small files by hand so that
//! each bad-input case is one precise mutation of a good file.

mod adapter_tests;
mod config_tests;
mod fuzz;
mod init_tests;
mod tokenizer_tests;
mod weights_tests;

use std::path::Path;

use super::config::ModelConfig;
use super::init::{Preset, write_checkpoint};
use super::st_write::{self, TensorSpec};

pub(super) fn tiny_checkpoint() -> (tempfile::TempDir, ModelConfig) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_checkpoint(dir.path(), Preset::Tiny, 7).unwrap();
    (dir, config)
}

pub(super) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub(super) fn tensor(
    name: &str,
    dtype: &'static str,
    shape: &[usize],
    bytes: Vec<u8>,
) -> (TensorSpec, Vec<u8>) {
    (
        TensorSpec {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            byte_len: bytes.len(),
        },
        bytes,
    )
}

pub(super) fn f32_tensor(name: &str, shape: &[usize], fill: f32) -> (TensorSpec, Vec<u8>) {
    let n: usize = shape.iter().product();
    tensor(name, "F32", shape, f32_bytes(&vec![fill; n]))
}

pub(super) fn write_safetensors(path: &Path, tensors: &[(TensorSpec, Vec<u8>)]) {
    std::fs::write(path, st_write::to_bytes(tensors, &[])).unwrap();
}

/// Every expected tensor of `config`, F32, filled with a per-tensor constant.
pub(super) fn expected_f32(config: &ModelConfig) -> Vec<(TensorSpec, Vec<u8>)> {
    super::names::expected_tensors(config)
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| f32_tensor(name, shape, i as f32))
        .collect()
}

/// Writes a config-only directory with `tensors` as model.safetensors.
pub(super) fn dir_with(config_from: &Path, tensors: &[(TensorSpec, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        config_from.join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), tensors);
    dir
}

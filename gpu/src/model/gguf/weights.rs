//! GGUF tensors into [`LlamaWeights`], in Hugging Face layout.
//!
//! Matrices keep their stored type (a quantized model stays quantized in memory; the kernels
//! compute with the blocks). Norms and biases are small and the engine wants them as f32,
//! so 16-bit ones are widened exactly and block-quantized ones refused.
//!
//! llama.cpp's converter permutes the rows of Llama and Mistral `q_proj`/`k_proj` for its
//! interleaved RoPE; this undoes it the way `transformers` does (`reverse_permute_weights`),
//! so the weights are the checkpoint's original ones and the engine's half-split RoPE applies.

use std::collections::HashSet;

use half::{bf16, f16};

use super::names::{self, ROPE_FREQS};
use super::reader::{GgufFile, TensorInfo};
use crate::compute::QuantType;
use crate::model::config::{Architecture, ModelConfig};
use crate::model::error::{ModelError, NonFiniteKind, Result};
use crate::model::names::LinearModule;
use crate::model::weights::{LayerWeights, LlamaWeights, Matrix};

/// Checks the tensor directory against `config` as a whole: nothing unexpected, nothing
/// missing, every shape right, and no more data than those tensors can occupy.
pub fn check_directory(file: &GgufFile, config: &ModelConfig) -> Result<()> {
    let expected = names::expected_tensors(config);
    let names: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for t in file.tensors() {
        if t.name == ROPE_FREQS {
            return Err(ModelError::unsupported(
                file.path(),
                format!("tensor `{ROPE_FREQS}` (Llama 3.1 RoPE frequency scaling)"),
            ));
        }
        if !names.contains(t.name.as_str()) {
            return Err(ModelError::UnexpectedTensor {
                path: file.path().to_path_buf(),
                tensor: t.name.clone(),
            });
        }
    }
    let mut max_data: u64 = 0;
    for (name, dims) in &expected {
        let info = file.tensor(name).ok_or_else(|| ModelError::MissingTensor {
            path: file.path().to_path_buf(),
            tensor: name.clone(),
        })?;
        if &info.dims != dims {
            return Err(ModelError::WrongShape {
                path: file.path().to_path_buf(),
                tensor: name.clone(),
                expected: dims.iter().rev().map(|&d| d as usize).collect(),
                found: info.shape(),
            });
        }
        // Config bounds keep this far below u64::MAX: at most 2^37 parameters.
        let elems: u64 = dims.iter().product();
        max_data += 4 * elems + file.alignment();
    }
    let max = file.data_offset() + max_data;
    if file.file_len() > max {
        return Err(ModelError::FileTooLarge {
            path: file.path().to_path_buf(),
            len: file.file_len(),
            max,
        });
    }
    Ok(())
}

/// Reads every tensor; [`check_directory`] must have passed.
pub fn load_weights(file: &GgufFile, config: &ModelConfig) -> Result<LlamaWeights> {
    let c = config;
    let permuted = matches!(c.architecture, Architecture::Llama | Architecture::Mistral);
    let embed_tokens = matrix(file, names::EMBED, None)?;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for layer in 0..c.num_hidden_layers {
        let linear = |m: LinearModule| {
            let heads = match m {
                LinearModule::QProj if permuted => Some(c.num_attention_heads),
                LinearModule::KProj if permuted => Some(c.num_key_value_heads),
                _ => None,
            };
            matrix(file, &names::linear_weight(m, layer), heads)
        };
        let bias = |m: LinearModule| {
            if m.has_bias(c) {
                vector(file, &names::linear_bias(m, layer)).map(Some)
            } else {
                Ok(None)
            }
        };
        layers.push(LayerWeights {
            input_layernorm: vector(file, &names::attn_norm(layer))?,
            q_proj: linear(LinearModule::QProj)?,
            k_proj: linear(LinearModule::KProj)?,
            v_proj: linear(LinearModule::VProj)?,
            o_proj: linear(LinearModule::OProj)?,
            q_bias: bias(LinearModule::QProj)?,
            k_bias: bias(LinearModule::KProj)?,
            v_bias: bias(LinearModule::VProj)?,
            post_attention_layernorm: vector(file, &names::ffn_norm(layer))?,
            gate_proj: linear(LinearModule::GateProj)?,
            up_proj: linear(LinearModule::UpProj)?,
            down_proj: linear(LinearModule::DownProj)?,
        });
    }
    let norm = vector(file, names::FINAL_NORM)?;
    let lm_head = if c.tie_word_embeddings {
        None
    } else {
        Some(matrix(file, names::OUTPUT, None)?)
    };
    Ok(LlamaWeights {
        embed_tokens,
        layers,
        norm,
        lm_head,
    })
}

fn info<'f>(file: &'f GgufFile, name: &str) -> Result<&'f TensorInfo> {
    file.tensor(name).ok_or_else(|| ModelError::MissingTensor {
        path: file.path().to_path_buf(),
        tensor: name.to_string(),
    })
}

fn bad(file: &GgufFile, name: &str, reason: impl Into<String>) -> ModelError {
    ModelError::BadTensor {
        path: file.path().to_path_buf(),
        tensor: name.to_string(),
        reason: reason.into(),
    }
}

/// A matrix, its rows un-permuted over `heads` heads if given.
fn matrix(file: &GgufFile, name: &str, heads: Option<usize>) -> Result<Matrix> {
    let t = info(file, name)?;
    let (rows, cols) = (t.rows(), t.cols());
    let mut bytes = file.read_tensor(t)?;
    if let Some(n_head) = heads {
        let row_bytes =
            t.ty.row_bytes(cols)
                .map_err(|e| bad(file, name, e.to_string()))?;
        bytes = unpermute_rows(&bytes, rows, row_bytes, n_head).ok_or_else(|| {
            bad(
                file,
                name,
                format!("{rows} rows cannot be split into {n_head} heads of rotary pairs"),
            )
        })?;
    }
    match t.ty {
        QuantType::F32 => {
            let data = f32_values(&bytes);
            check_finite(file, name, &data)?;
            Ok(Matrix::f32(rows, cols, data))
        }
        QuantType::F16 | QuantType::BF16 => {
            if let Some((index, v)) = first_non_finite_16(&bytes, t.ty) {
                return Err(ModelError::NonFinite {
                    path: file.path().to_path_buf(),
                    tensor: name.to_string(),
                    index,
                    value: NonFiniteKind::of(v),
                });
            }
            Ok(Matrix::quantized(rows, cols, t.ty, bytes))
        }
        ty => {
            if let Some((block, v)) = ty.first_non_finite_scale(&bytes) {
                return Err(ModelError::NonFinite {
                    path: file.path().to_path_buf(),
                    tensor: name.to_string(),
                    index: block * ty.block_elems(),
                    value: NonFiniteKind::of(v),
                });
            }
            Ok(Matrix::quantized(rows, cols, ty, bytes))
        }
    }
}

/// A norm or bias vector, widened to f32.
fn vector(file: &GgufFile, name: &str) -> Result<Vec<f32>> {
    let t = info(file, name)?;
    let bytes = file.read_tensor(t)?;
    let data = match t.ty {
        QuantType::F32 => f32_values(&bytes),
        QuantType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        QuantType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        ty => {
            return Err(bad(
                file,
                name,
                format!("is stored as {ty}; norm and bias vectors must be F32, F16 or BF16"),
            ));
        }
    };
    check_finite(file, name, &data)?;
    Ok(data)
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn check_finite(file: &GgufFile, name: &str, data: &[f32]) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(ModelError::NonFinite {
            path: file.path().to_path_buf(),
            tensor: name.to_string(),
            index,
            value: NonFiniteKind::of(data.get(index).copied().unwrap_or(f32::NAN)),
        }),
    }
}

/// The first NaN or infinity among 16-bit floats, without widening the whole matrix.
fn first_non_finite_16(bytes: &[u8], ty: QuantType) -> Option<(usize, f32)> {
    bytes.chunks_exact(2).enumerate().find_map(|(i, c)| {
        let v = match ty {
            QuantType::BF16 => bf16::from_le_bytes([c[0], c[1]]).to_f32(),
            _ => f16::from_le_bytes([c[0], c[1]]).to_f32(),
        };
        (!v.is_finite()).then_some((i, v))
    })
}

/// Undoes llama.cpp's `permute` of a q/k projection: viewing the `rows` rows as
/// `[n_head, dim, 2]` and swapping the last two axes to `[n_head, 2, dim]`, as
/// `transformers`' `reverse_permute_weights` does. Rows are moved whole, so this works on any
/// storage type. `None` when the rows do not split into heads of pairs.
pub fn unpermute_rows(
    bytes: &[u8],
    rows: usize,
    row_bytes: usize,
    n_head: usize,
) -> Option<Vec<u8>> {
    if n_head == 0
        || !rows.is_multiple_of(2 * n_head)
        || bytes.len() != rows.checked_mul(row_bytes)?
    {
        return None;
    }
    let dim = rows / n_head / 2;
    let mut out = Vec::with_capacity(bytes.len());
    for h in 0..n_head {
        for j in 0..2 {
            for d in 0..dim {
                let old = h * 2 * dim + d * 2 + j;
                out.extend_from_slice(bytes.get(old * row_bytes..(old + 1) * row_bytes)?);
            }
        }
    }
    Some(out)
}

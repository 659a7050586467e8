//! Writing a loaded model as a Hugging Face checkpoint directory (`olc model import`): a
//! GGUF model's configuration, tokenizer, chat template and weights in the files
//! `transformers` reads, so one download serves both worlds. Weights are either widened by
//! rule 9, exactly the values OLC computes with, so the directory and the GGUF file give the
//! same bits in OLC and `transformers` loads it; or kept as the file's blocks (U8 tensors
//! named block by block in the metadata, see [`QUANT_KEY_PREFIX`]), a quarter of the size,
//! which only OLC reads.

use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::json;

use super::config::{Architecture, ModelConfig};
use super::error::{ModelError, Result};
use super::gguf::GgufInfo;
use super::names::{self, LinearModule};
use super::st_write::{self, TensorSpec};
use super::tokenizer::TOKENIZER_FILE;
use super::weights::{LlamaWeights, Matrix, QUANT_KEY_PREFIX, SINGLE_FILE};
use super::{Checkpoint, Tokenizer};
use crate::compute::{QuantType, dequantize_row};

/// How `model.safetensors` holds matrices that the model keeps as blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// Every weight widened to f32: a standard checkpoint.
    F32,
    /// F16 and BF16 as those dtypes, block types as their bytes.
    AsStored,
}

/// Writes `checkpoint` into `dir` (created if needed) as `config.json`, `tokenizer.json`,
/// `tokenizer_config.json`, `generation_config.json` and `model.safetensors`.
pub fn write_hf(
    dir: &Path,
    checkpoint: &Checkpoint,
    serving: &GgufInfo,
    weights: Weights,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let config = &checkpoint.config;
    let bos = serving.bos_token_id.or(config.bos_token_id);
    // The tokenizer's end of sequence names it in tokenizer_config.json; every id that ends
    // a generation (an end-of-turn token besides it) goes to config.json.
    let eos = serving
        .eos_token_id
        .or_else(|| config.eos_token_ids.first().copied());
    write_json(&dir.join("config.json"), &hf_config(config, bos))?;
    let tokenizer_json =
        checkpoint
            .tokenizer
            .inner()
            .to_string(true)
            .map_err(|e| ModelError::Tokenizer {
                path: dir.join(TOKENIZER_FILE),
                message: e.to_string(),
            })?;
    write(&dir.join(TOKENIZER_FILE), tokenizer_json.as_bytes())?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &tokenizer_config(config, &checkpoint.tokenizer, serving, bos, eos),
    )?;
    write_json(
        &dir.join("generation_config.json"),
        &json!({"bos_token_id": bos, "eos_token_id": eos_ids(config)}),
    )?;
    write_weights(&dir.join(SINGLE_FILE), config, &checkpoint.weights, weights)
}

/// `config.json` as `transformers` writes it for these architectures.
/// One id, or the list when there are several, as `transformers` writes them.
fn eos_ids(c: &ModelConfig) -> serde_json::Value {
    match c.eos_token_ids.as_slice() {
        [] => serde_json::Value::Null,
        [one] => json!(one),
        many => json!(many),
    }
}

fn hf_config(c: &ModelConfig, bos: Option<u32>) -> serde_json::Value {
    let model_type = match c.architecture {
        Architecture::Llama => "llama",
        Architecture::Mistral => "mistral",
        Architecture::Qwen2 => "qwen2",
    };
    let rope_scaling = c.rope_scaling.map(|s| {
        json!({
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        })
    });
    json!({
        "architectures": [c.architecture.hf_name()],
        "attention_bias": c.architecture == Architecture::Qwen2,
        "bos_token_id": bos,
        "eos_token_id": eos_ids(c),
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "mlp_bias": false,
        "model_type": model_type,
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_scaling": rope_scaling,
        "rope_theta": c.rope_theta,
        "sliding_window": c.sliding_window,
        "use_sliding_window": c.sliding_window.is_some(),
        "tie_word_embeddings": c.tie_word_embeddings,
        "torch_dtype": "float32",
        "use_cache": true,
        "vocab_size": c.vocab_size,
    })
}

fn tokenizer_config(
    c: &ModelConfig,
    tokenizer: &Tokenizer,
    serving: &GgufInfo,
    bos: Option<u32>,
    eos: Option<u32>,
) -> serde_json::Value {
    let token = |id: Option<u32>| id.and_then(|id| tokenizer.inner().id_to_token(id));
    json!({
        "bos_token": token(bos),
        "chat_template": serving.chat_template,
        "clean_up_tokenization_spaces": false,
        "eos_token": token(eos),
        "model_max_length": c.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
}

/// Every tensor `names::expected_tensors` lists, in name order.
fn write_weights(
    path: &Path,
    config: &ModelConfig,
    weights: &LlamaWeights,
    how: Weights,
) -> Result<()> {
    let mut tensors = names::expected_tensors(config);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sources = Vec::with_capacity(tensors.len());
    let mut specs = Vec::with_capacity(tensors.len());
    let mut quant_keys = Vec::new();
    for (name, shape) in &tensors {
        let src = source(weights, name).ok_or_else(|| ModelError::MissingTensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
        })?;
        let stored = match (&src, how) {
            (Source::Matrix(m), Weights::AsStored) => m.blocks.as_ref().map(|b| b.ty),
            _ => None,
        };
        let (dtype, shape, byte_len) = match stored {
            None => ("F32", shape.clone(), 4 * shape.iter().product::<usize>()),
            Some(QuantType::F16) => ("F16", shape.clone(), 2 * shape.iter().product::<usize>()),
            Some(QuantType::BF16) => ("BF16", shape.clone(), 2 * shape.iter().product::<usize>()),
            Some(ty) => {
                let (rows, cols) = (shape[0], shape[1]);
                let row_bytes = ty.row_bytes(cols).map_err(|e| ModelError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    reason: e.to_string(),
                })?;
                quant_keys.push((format!("{QUANT_KEY_PREFIX}{name}"), ty.name()));
                ("U8", vec![rows, row_bytes], rows * row_bytes)
            }
        };
        specs.push(TensorSpec {
            name: name.clone(),
            dtype,
            shape,
            byte_len,
        });
        sources.push((src, stored.is_some()));
    }
    let mut metadata: Vec<(&str, &str)> = vec![("format", "pt")];
    metadata.extend(quant_keys.iter().map(|(k, v)| (k.as_str(), *v)));
    let file = std::fs::File::create(path).map_err(|e| ModelError::io(path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let io = |e| ModelError::io(path, e);
    w.write_all(&st_write::header(&specs, &metadata))
        .map_err(io)?;
    let mut row = Vec::new();
    for ((name, _), (src, as_stored)) in tensors.iter().zip(sources) {
        match src {
            Source::Vector(v) => write_values(&mut w, v).map_err(io)?,
            Source::Matrix(m) => match &m.blocks {
                Some(b) if as_stored => w.write_all(&b.bytes).map_err(io)?,
                None => write_values(&mut w, &m.data).map_err(io)?,
                Some(b) => {
                    let bad = |reason: String| ModelError::BadTensor {
                        path: path.to_path_buf(),
                        tensor: name.clone(),
                        reason,
                    };
                    let row_bytes = b.ty.row_bytes(m.cols).map_err(|e| bad(e.to_string()))?;
                    row.resize(m.cols, 0.0);
                    for bytes in b.bytes.chunks_exact(row_bytes.max(1)) {
                        dequantize_row(b.ty, bytes, &mut row).map_err(|e| bad(e.to_string()))?;
                        write_values(&mut w, &row).map_err(io)?;
                    }
                }
            },
        }
    }
    w.flush().map_err(io)
}

enum Source<'a> {
    Vector(&'a [f32]),
    Matrix(&'a Matrix),
}

/// The weight a Hugging Face tensor name stands for.
fn source<'a>(w: &'a LlamaWeights, name: &str) -> Option<Source<'a>> {
    if name == names::EMBED {
        return Some(Source::Matrix(&w.embed_tokens));
    }
    if name == names::FINAL_NORM {
        return Some(Source::Vector(&w.norm));
    }
    if name == names::LM_HEAD {
        return w.lm_head.as_ref().map(Source::Matrix);
    }
    for (l, layer) in w.layers.iter().enumerate() {
        if name == names::input_norm(l) {
            return Some(Source::Vector(&layer.input_layernorm));
        }
        if name == names::post_attention_norm(l) {
            return Some(Source::Vector(&layer.post_attention_layernorm));
        }
        for m in LinearModule::ALL {
            if name == names::linear_weight(m, l) {
                return Some(Source::Matrix(layer.linear(m)));
            }
            if name == names::linear_bias(m, l) {
                let bias = match m {
                    LinearModule::QProj => &layer.q_bias,
                    LinearModule::KProj => &layer.k_bias,
                    LinearModule::VProj => &layer.v_bias,
                    _ => &None,
                };
                return bias.as_deref().map(Source::Vector);
            }
        }
    }
    None
}

fn write_values<W: Write>(w: &mut W, values: &[f32]) -> std::io::Result<()> {
    let mut it = values.iter();
    st_write::write_f32s(w, values.len(), || it.next().copied().unwrap_or(0.0))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| ModelError::json(path, e))?;
    text.push('\n');
    write(path, text.as_bytes())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| ModelError::io(path, e))
}

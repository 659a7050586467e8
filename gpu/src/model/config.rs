//! `config.json` of a Hugging Face Llama-family checkpoint, validated into the few numbers the
//! engine needs.
//!
//! Everything else in the file is ignored unless it would change the model's outputs, in
//! which case it is refused: silently computing a different function than the checkpoint's
//! author intended would make honest workers disagree with a reference implementation.
//!
//! Sliding-window attention (Mistral, Qwen2 with `use_sliding_window`) is accepted but not
//! implemented: within the window it is identical to full causal attention, so the config
//! reports [`ModelConfig::max_sequence_len`] as the smaller of the window and
//! `max_position_embeddings`, and the engine must refuse longer sequences.

use std::path::Path;

use serde::Deserialize;

use super::error::{ModelError, Result};
use super::files::{MAX_SMALL_JSON, read_capped};

/// Upper bounds on what a config may ask for. A file must never make us allocate without
/// bound; these are comfortably above every published Llama-family model.
pub const MAX_HIDDEN: usize = 65_536;
pub const MAX_INTERMEDIATE: usize = 262_144;
pub const MAX_LAYERS: usize = 1024;
pub const MAX_HEADS: usize = 1024;
pub const MAX_HEAD_DIM: usize = 1024;
pub const MAX_VOCAB: usize = 4 * 1024 * 1024;
pub const MAX_POSITIONS: usize = 16 * 1024 * 1024;
/// About 137 billion parameters: the bounds above multiply to far more than any machine holds.
pub const MAX_PARAMETERS: u64 = 1 << 37;

/// The architectures whose weights and maths this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    /// Same as Llama except that q/k/v projections carry biases.
    Qwen2,
}

impl Architecture {
    const SUPPORTED: &'static str = "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM";

    fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "LlamaForCausalLM" => Some(Self::Llama),
            "MistralForCausalLM" => Some(Self::Mistral),
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// The name `transformers` uses in `architectures`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// Llama 3.x frequency-dependent RoPE scaling, the only `rope_scaling` we implement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// A validated model configuration: every field is in bounds and consistent with the others.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    /// Kept as the file's f64; the engine decides how to round it.
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    /// `None` when the model attends to the whole context.
    pub sliding_window: Option<usize>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// `config.json` allows one id or a list; any of them ends generation.
    pub eos_token_ids: Vec<u32>,
    /// Informational only: weights are widened to f32 whatever their stored dtype.
    pub torch_dtype: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    vocab_size: Option<u64>,
    hidden_size: Option<u64>,
    intermediate_size: Option<u64>,
    num_hidden_layers: Option<u64>,
    num_attention_heads: Option<u64>,
    num_key_value_heads: Option<u64>,
    head_dim: Option<u64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers >= 5 writes rope settings here (`rope_type`, `rope_theta` and the
    /// scaling fields) instead of `rope_theta` + `rope_scaling`.
    rope_parameters: Option<serde_json::Value>,
    partial_rotary_factor: Option<f64>,
    max_position_embeddings: Option<u64>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<TokenIds>,
    eos_token_id: Option<TokenIds>,
    torch_dtype: Option<String>,
    /// Newer `transformers` writes `dtype` instead of `torch_dtype`.
    dtype: Option<String>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    sliding_window: Option<u64>,
    use_sliding_window: Option<bool>,
    pretraining_tp: Option<u64>,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = read_capped(path, MAX_SMALL_JSON)?;
        Self::from_json_bytes(&bytes, path)
    }

    /// Validates config bytes; `path` only names the source in errors.
    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| ModelError::json(path, e))?;
        validate(raw, path)
    }

    /// Width of the concatenated query heads (`q_proj` output, `o_proj` input).
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Whether q/k/v projections have biases (Qwen2 does, Llama and Mistral do not).
    pub fn qkv_bias(&self) -> bool {
        self.architecture == Architecture::Qwen2
    }

    /// The longest sequence the engine may run with results identical to the reference
    /// implementation (see the module docs on sliding windows).
    pub fn max_sequence_len(&self) -> usize {
        match self.sliding_window {
            Some(w) => w.min(self.max_position_embeddings),
            None => self.max_position_embeddings,
        }
    }

    /// Total number of parameters the weights file must hold.
    pub fn parameter_count(&self) -> u64 {
        parameter_count(self)
    }
}

fn parameter_count(c: &ModelConfig) -> u64 {
    let (h, i, v) = (
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.vocab_size as u64,
    );
    let (q, kv) = (c.q_dim() as u64, c.kv_dim() as u64);
    let bias = if c.qkv_bias() { q + 2 * kv } else { 0 };
    let per_layer = 2 * h + h * q + 2 * h * kv + q * h + 3 * h * i + bias;
    let head = if c.tie_word_embeddings { 0 } else { v * h };
    // The bounds checked before this keep every product far below u64::MAX.
    v * h + c.num_hidden_layers as u64 * per_layer + h + head
}

fn required(value: Option<u64>, name: &str, max: usize, path: &Path) -> Result<usize> {
    let v = value.ok_or_else(|| ModelError::config(path, format!("`{name}` is missing")))?;
    bounded(v, name, max, path)
}

fn bounded(v: u64, name: &str, max: usize, path: &Path) -> Result<usize> {
    if v == 0 {
        return Err(ModelError::config(path, format!("`{name}` is zero")));
    }
    if v > max as u64 {
        return Err(ModelError::config(
            path,
            format!("`{name}` = {v} exceeds the limit of {max}"),
        ));
    }
    Ok(v as usize)
}

fn validate(raw: RawConfig, path: &Path) -> Result<ModelConfig> {
    let names = raw.architectures.unwrap_or_default();
    let architecture = match names.as_slice() {
        [one] => Architecture::from_hf_name(one),
        _ => None,
    }
    .ok_or_else(|| ModelError::UnknownArchitecture {
        path: path.to_path_buf(),
        found: names.clone(),
        supported: Architecture::SUPPORTED,
    })?;

    if let Some(act) = &raw.hidden_act
        && act != "silu"
    {
        return Err(ModelError::unsupported(path, format!("hidden_act `{act}`")));
    }
    if raw.attention_bias == Some(true) {
        return Err(ModelError::unsupported(path, "attention_bias: true"));
    }
    if raw.mlp_bias == Some(true) {
        return Err(ModelError::unsupported(path, "mlp_bias: true"));
    }
    if raw.pretraining_tp.is_some_and(|tp| tp > 1) {
        return Err(ModelError::unsupported(path, "pretraining_tp > 1"));
    }

    let vocab_size = required(raw.vocab_size, "vocab_size", MAX_VOCAB, path)?;
    let hidden_size = required(raw.hidden_size, "hidden_size", MAX_HIDDEN, path)?;
    let intermediate_size = required(
        raw.intermediate_size,
        "intermediate_size",
        MAX_INTERMEDIATE,
        path,
    )?;
    let num_hidden_layers = required(raw.num_hidden_layers, "num_hidden_layers", MAX_LAYERS, path)?;
    let num_attention_heads = required(
        raw.num_attention_heads,
        "num_attention_heads",
        MAX_HEADS,
        path,
    )?;
    let num_key_value_heads = match raw.num_key_value_heads {
        Some(v) => bounded(v, "num_key_value_heads", MAX_HEADS, path)?,
        None => num_attention_heads,
    };
    if !num_attention_heads.is_multiple_of(num_key_value_heads) {
        return Err(ModelError::config(
            path,
            format!(
                "num_key_value_heads ({num_key_value_heads}) does not divide \
                 num_attention_heads ({num_attention_heads})"
            ),
        ));
    }
    // An explicit head_dim (Mistral Nemo, Qwen3) may make q_dim differ from hidden_size;
    // without one, transformers derives it and silently truncates, so we insist it divides.
    let head_dim = match raw.head_dim {
        Some(v) => bounded(v, "head_dim", MAX_HEAD_DIM, path)?,
        None => {
            if !hidden_size.is_multiple_of(num_attention_heads) {
                return Err(ModelError::config(
                    path,
                    format!(
                        "num_attention_heads ({num_attention_heads}) does not divide \
                         hidden_size ({hidden_size})"
                    ),
                ));
            }
            bounded(
                (hidden_size / num_attention_heads) as u64,
                "head_dim",
                MAX_HEAD_DIM,
                path,
            )?
        }
    };
    if !head_dim.is_multiple_of(2) {
        return Err(ModelError::config(
            path,
            format!("head_dim ({head_dim}) must be even for rotary embeddings"),
        ));
    }

    let rms_norm_eps = raw.rms_norm_eps.unwrap_or(1e-6);
    if !(rms_norm_eps.is_finite() && rms_norm_eps > 0.0 && rms_norm_eps < 1.0) {
        return Err(ModelError::config(
            path,
            format!("rms_norm_eps {rms_norm_eps} is not in (0, 1)"),
        ));
    }
    let params_theta = match &raw.rope_parameters {
        Some(serde_json::Value::Object(obj)) => match obj.get("rope_theta") {
            None => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| {
                ModelError::config(path, "rope_parameters.rope_theta must be a number")
            })?),
        },
        None | Some(serde_json::Value::Null) => None,
        Some(_) => {
            return Err(ModelError::config(
                path,
                "rope_parameters must be an object or null",
            ));
        }
    };
    if let (Some(a), Some(b)) = (raw.rope_theta, params_theta)
        && a != b
    {
        return Err(ModelError::config(
            path,
            format!("rope_theta {a} contradicts rope_parameters.rope_theta {b}"),
        ));
    }
    if let Some(f) = raw.partial_rotary_factor
        && f != 1.0
    {
        return Err(ModelError::unsupported(
            path,
            format!("partial_rotary_factor {f} (only full rotary embeddings are implemented)"),
        ));
    }
    let rope_theta = params_theta.or(raw.rope_theta).unwrap_or(10_000.0);
    if !(rope_theta.is_finite() && rope_theta > 1.0) {
        return Err(ModelError::config(
            path,
            format!("rope_theta {rope_theta} is not a finite number above 1"),
        ));
    }
    // Absent only in hand-written configs; transformers then uses its class default.
    let default_positions = match architecture {
        Architecture::Llama => 2048,
        Architecture::Mistral => 131_072,
        Architecture::Qwen2 => 32_768,
    };
    let max_position_embeddings = bounded(
        raw.max_position_embeddings.unwrap_or(default_positions),
        "max_position_embeddings",
        MAX_POSITIONS,
        path,
    )?;

    let sliding_window = match architecture {
        Architecture::Qwen2 if raw.use_sliding_window != Some(true) => None,
        _ => raw
            .sliding_window
            .map(|w| bounded(w, "sliding_window", MAX_POSITIONS, path))
            .transpose()?,
    };

    let parse = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => parse_rope_scaling(value, path),
    };
    let old_style = parse(raw.rope_scaling.as_ref())?;
    let rope_scaling = match raw.rope_parameters.as_ref() {
        None | Some(serde_json::Value::Null) => old_style,
        Some(params) => {
            let new_style = parse(Some(params))?;
            if raw.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) && new_style != old_style {
                return Err(ModelError::config(
                    path,
                    "rope_scaling contradicts rope_parameters",
                ));
            }
            new_style
        }
    };

    let bos_token_id = match raw.bos_token_id {
        None => None,
        Some(TokenIds::One(id)) => Some(id),
        Some(TokenIds::Many(_)) => {
            return Err(ModelError::config(path, "bos_token_id must be a single id"));
        }
    };
    let eos_token_ids = match raw.eos_token_id {
        None => Vec::new(),
        Some(TokenIds::One(id)) => vec![id],
        Some(TokenIds::Many(ids)) => ids,
    };
    for id in bos_token_id.iter().chain(&eos_token_ids) {
        if *id as usize >= vocab_size {
            return Err(ModelError::config(
                path,
                format!("special token id {id} is outside the vocabulary of {vocab_size}"),
            ));
        }
    }

    let config = ModelConfig {
        architecture,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        rope_scaling,
        max_position_embeddings,
        sliding_window,
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        bos_token_id,
        eos_token_ids,
        torch_dtype: raw.torch_dtype.or(raw.dtype),
    };
    let params = parameter_count(&config);
    if params > MAX_PARAMETERS {
        return Err(ModelError::config(
            path,
            format!("{params} parameters exceed the limit of {MAX_PARAMETERS}"),
        ));
    }
    Ok(config)
}

fn parse_rope_scaling(value: &serde_json::Value, path: &Path) -> Result<Option<Llama3RopeScaling>> {
    let obj = value
        .as_object()
        .ok_or_else(|| ModelError::config(path, "rope_scaling must be an object or null"))?;
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| ModelError::config(path, "rope_scaling has no rope_type"))?;
    match kind {
        // transformers treats an explicit "default" exactly like no scaling.
        "default" => return Ok(None),
        "llama3" => {}
        other => {
            return Err(ModelError::unsupported(
                path,
                format!("rope_scaling type `{other}` (only llama3 is implemented)"),
            ));
        }
    }
    let num = |key: &str| -> Result<f64> {
        obj.get(key)
            .and_then(|v| v.as_f64())
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| {
                ModelError::config(
                    path,
                    format!("rope_scaling.{key} must be a positive number"),
                )
            })
    };
    let factor = num("factor")?;
    let low_freq_factor = num("low_freq_factor")?;
    let high_freq_factor = num("high_freq_factor")?;
    if high_freq_factor <= low_freq_factor {
        return Err(ModelError::config(
            path,
            "rope_scaling.high_freq_factor must exceed low_freq_factor",
        ));
    }
    let original = obj
        .get("original_max_position_embeddings")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| {
            ModelError::config(
                path,
                "rope_scaling.original_max_position_embeddings must be a positive integer",
            )
        })?;
    let original_max_position_embeddings = bounded(
        original,
        "rope_scaling.original_max_position_embeddings",
        MAX_POSITIONS,
        path,
    )?;
    Ok(Some(Llama3RopeScaling {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    }))
}

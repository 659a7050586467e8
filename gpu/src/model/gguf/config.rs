//! A GGUF file's `{arch}.*` metadata as a [`ModelConfig`].
//!
//! The numbers are translated into the `config.json` that `transformers` would derive from
//! the same file and then go through [`ModelConfig::from_json_bytes`], so that one copy of the
//! validation rules (bounds, divisibility, parameter limits) covers both formats. What GGUF
//! can express but this crate does not compute (scaled RoPE, experts, soft-capping...) is
//! refused here by key, for the same reason `config.json` refuses it: a worker must not
//! silently compute a different function than the file describes.

use serde_json::{Map, Value as Json, json};

use super::reader::GgufFile;
use crate::model::config::{Architecture, ModelConfig};
use crate::model::error::{ModelError, Result};

pub const SUPPORTED: &str = "llama, mistral, qwen2";

/// The architecture named by `general.architecture`.
pub fn architecture(file: &GgufFile) -> Result<Architecture> {
    let key = "general.architecture";
    let name = file.required(key, file.str_key(key)?)?;
    match name {
        "llama" => Ok(Architecture::Llama),
        "mistral" => Ok(Architecture::Mistral),
        "qwen2" => Ok(Architecture::Qwen2),
        other => Err(ModelError::UnknownArchitecture {
            path: file.path().to_path_buf(),
            found: vec![other.to_string()],
            supported: SUPPORTED,
        }),
    }
}

/// GGUF's name for an architecture, the prefix of its metadata keys.
pub fn gguf_name(arch: Architecture) -> &'static str {
    match arch {
        Architecture::Llama => "llama",
        Architecture::Mistral => "mistral",
        Architecture::Qwen2 => "qwen2",
    }
}

/// Keys that would change the maths if present with anything but their neutral value.
/// `(suffix, neutral)`: `None` means any presence is refused.
const REFUSED: &[(&str, Option<f64>)] = &[
    ("expert_count", Some(0.0)),
    ("expert_used_count", Some(0.0)),
    ("rope.scaling.factor", Some(1.0)),
    ("rope.scaling.attn_factor", Some(1.0)),
    ("rope.scale_linear", Some(1.0)),
    ("logit_scale", Some(1.0)),
    ("embedding_scale", Some(1.0)),
    ("residual_scale", Some(1.0)),
    ("attention.scale", None),
    ("attention.clamp_kqv", None),
    ("attention.logit_softcapping", None),
    ("final_logit_softcapping", None),
    ("attention.layer_norm_epsilon", None),
    ("rope.dimension_sections", None),
    ("attention.q_lora_rank", None),
    ("attention.kv_lora_rank", None),
];

/// Builds and validates the model's configuration. `tied` says whether the file lacks
/// `output.weight` (the embeddings then double as the output projection); `vocab_fallback`
/// is the tokenizer's size, used when `{arch}.vocab_size` is absent, as llama.cpp does.
pub fn model_config(
    file: &GgufFile,
    tied: bool,
    vocab_fallback: Option<u64>,
) -> Result<ModelConfig> {
    let arch = architecture(file)?;
    let a = gguf_name(arch);
    let key = |k: &str| format!("{a}.{k}");
    let int = |k: &str| -> Result<Option<u64>> { file.u64_key(&key(k)) };
    let need = |k: &str| -> Result<u64> { file.required(&key(k), int(k)?) };

    refuse_unimplemented(file, a)?;

    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let kv_heads = int("attention.head_count_kv")?.unwrap_or(heads);
    let key_len = int("attention.key_length")?;
    if let (Some(k), Some(v)) = (key_len, int("attention.value_length")?)
        && k != v
    {
        return Err(file.key_error(
            &key("attention.value_length"),
            format!("{v} differs from attention.key_length {k}, which OLC does not implement"),
        ));
    }
    let head_dim = match key_len {
        Some(k) => k,
        None if heads > 0 && hidden.is_multiple_of(heads) => hidden / heads,
        None => {
            return Err(file.key_error(
                &key("attention.head_count"),
                format!("{heads} heads do not divide embedding_length {hidden}"),
            ));
        }
    };
    if let Some(rot) = int("rope.dimension_count")?
        && rot != head_dim
    {
        return Err(ModelError::unsupported(
            file.path(),
            format!(
                "{a}.rope.dimension_count {rot} (partial rotary embeddings; head size is {head_dim})"
            ),
        ));
    }
    let eps_key = key("attention.layer_norm_rms_epsilon");
    let eps = file.required(&eps_key, file.f64_key(&eps_key)?)?;
    let theta_key = key("rope.freq_base");
    let theta = file.f64_key(&theta_key)?.unwrap_or(10_000.0);
    // A NaN or infinity would become JSON null below and silently take the default.
    for (k, v) in [(&eps_key, eps), (&theta_key, theta)] {
        if !v.is_finite() {
            return Err(file.key_error(k, format!("is {v}, not a finite number")));
        }
    }
    let vocab = match int("vocab_size")? {
        Some(v) => v,
        None => vocab_fallback.ok_or_else(|| {
            file.key_error(&key("vocab_size"), "is missing and there is no token list")
        })?,
    };

    let mut cfg = Map::new();
    cfg.insert("architectures".into(), json!([arch.hf_name()]));
    cfg.insert("vocab_size".into(), json!(vocab));
    cfg.insert("hidden_size".into(), json!(hidden));
    cfg.insert(
        "intermediate_size".into(),
        json!(need("feed_forward_length")?),
    );
    cfg.insert("num_hidden_layers".into(), json!(need("block_count")?));
    cfg.insert("num_attention_heads".into(), json!(heads));
    cfg.insert("num_key_value_heads".into(), json!(kv_heads));
    cfg.insert("head_dim".into(), json!(head_dim));
    cfg.insert("rms_norm_eps".into(), json!(eps));
    cfg.insert("rope_theta".into(), json!(theta));
    cfg.insert(
        "max_position_embeddings".into(),
        json!(need("context_length")?),
    );
    cfg.insert("tie_word_embeddings".into(), json!(tied));
    if let Some(window) = int("attention.sliding_window")? {
        // The config reports the window as the longest sequence it can serve exactly.
        cfg.insert("sliding_window".into(), json!(window));
        cfg.insert("use_sliding_window".into(), json!(true));
    }
    let (bos, eos) = special_ids(file)?;
    if let Some(bos) = bos {
        cfg.insert("bos_token_id".into(), json!(bos));
    }
    if !eos.is_empty() {
        cfg.insert("eos_token_id".into(), json!(eos));
    }
    let bytes =
        serde_json::to_vec(&Json::Object(cfg)).map_err(|e| ModelError::json(file.path(), e))?;
    ModelConfig::from_json_bytes(&bytes, file.path())
}

/// `tokenizer.ggml.bos_token_id`, and the ids that end generation: the EOS token and, as in
/// llama.cpp, an end-of-turn token if the file names a different one.
pub fn special_ids(file: &GgufFile) -> Result<(Option<u32>, Vec<u32>)> {
    let id = |k: &str| -> Result<Option<u32>> {
        match file.u64_key(k)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| file.key_error(k, format!("token id {v} is out of range"))),
        }
    };
    let bos = id("tokenizer.ggml.bos_token_id")?;
    let mut eos = Vec::new();
    for k in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
        if let Some(v) = id(k)?
            && !eos.contains(&v)
        {
            eos.push(v);
        }
    }
    Ok((bos, eos))
}

fn refuse_unimplemented(file: &GgufFile, a: &str) -> Result<()> {
    let scaling = format!("{a}.rope.scaling.type");
    if let Some(kind) = file.str_key(&scaling)?
        && kind != "none"
    {
        return Err(ModelError::unsupported(
            file.path(),
            format!("{scaling} `{kind}` (RoPE scaling is not implemented for GGUF models)"),
        ));
    }
    for (suffix, neutral) in REFUSED {
        let k = format!("{a}.{suffix}");
        let Some(v) = file.get(&k) else { continue };
        let number = v.as_u64().map(|n| n as f64).or_else(|| v.as_f64());
        // An array (per-layer values) has no number and so is never neutral.
        let neutral_value = matches!((neutral, number), (Some(n), Some(x)) if x == *n);
        if !neutral_value {
            return Err(ModelError::unsupported(file.path(), format!("{k} = {v}")));
        }
    }
    Ok(())
}

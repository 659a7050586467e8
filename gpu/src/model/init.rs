//! Random-initialised checkpoints in the real Hugging Face format.
//!
//! No weights can be downloaded where the network runs its tests, so we make our own: the
//! directory has what `transformers` writes (`config.json`, `model.safetensors` with
//! `{"format": "pt"}`, `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`) and
//! is loaded through exactly the code that loads a real checkpoint. The same preset and seed
//! give byte-identical files on every machine, so generated checkpoints have stable content ids.

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use super::bpe_json::{self, SPECIAL_TOKENS};
use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::names;
use super::rng;
use super::st_write::{self, TensorSpec};
use super::tokenizer::TOKENIZER_FILE;
use super::weights::SINGLE_FILE;

/// Standard deviation of initial weights (`initializer_range` in Llama configs).
const INIT_STD: f64 = 0.02;

/// Model sizes `olc` can create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// A few hundred KB: fast unit tests (GQA, tied embeddings).
    Tiny,
    /// About 17 MB: engine tests that want more than one of everything (untied head).
    Small,
    /// SmolLM2-135M's exact shapes: realistic throughput and memory figures.
    Smollm2_135m,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Self::Tiny, Self::Small, Self::Smollm2_135m];

    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Small => "small",
            Self::Smollm2_135m => "smollm2-135m",
        }
    }

    fn spec(self) -> HfConfig {
        let (vocab, hidden, inter, layers, heads, kv, tied, theta, max_pos) = match self {
            Self::Tiny => (320, 64, 128, 2, 4, 2, true, 10_000.0, 512),
            Self::Small => (2048, 256, 768, 4, 8, 4, false, 10_000.0, 2048),
            Self::Smollm2_135m => (49_152, 576, 1536, 30, 9, 3, true, 100_000.0, 8192),
        };
        HfConfig {
            architectures: ["LlamaForCausalLM"],
            attention_bias: false,
            attention_dropout: 0.0,
            bos_token_id: 0,
            eos_token_id: 0,
            head_dim: hidden / heads,
            hidden_act: "silu",
            hidden_size: hidden,
            initializer_range: INIT_STD,
            intermediate_size: inter,
            max_position_embeddings: max_pos,
            mlp_bias: false,
            model_type: "llama",
            num_attention_heads: heads,
            num_hidden_layers: layers,
            num_key_value_heads: kv,
            pretraining_tp: 1,
            rms_norm_eps: 1e-5,
            rope_scaling: None,
            rope_theta: theta,
            tie_word_embeddings: tied,
            torch_dtype: "float32",
            use_cache: true,
            vocab_size: vocab,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ModelError::UnknownPreset(s.to_string()))
    }
}

/// `config.json` as `transformers` writes it for Llama; fields in its (alphabetical) order so
/// the bytes are fixed.
#[derive(Serialize)]
struct HfConfig {
    architectures: [&'static str; 1],
    attention_bias: bool,
    attention_dropout: f64,
    bos_token_id: u32,
    eos_token_id: u32,
    head_dim: usize,
    hidden_act: &'static str,
    hidden_size: usize,
    initializer_range: f64,
    intermediate_size: usize,
    max_position_embeddings: usize,
    mlp_bias: bool,
    model_type: &'static str,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    num_key_value_heads: usize,
    pretraining_tp: u32,
    rms_norm_eps: f64,
    rope_scaling: Option<()>,
    rope_theta: f64,
    tie_word_embeddings: bool,
    torch_dtype: &'static str,
    use_cache: bool,
    vocab_size: usize,
}

#[derive(Serialize)]
struct GenerationConfig {
    bos_token_id: u32,
    eos_token_id: u32,
}

#[derive(Serialize)]
struct AddedTokenDecoder {
    content: &'static str,
    lstrip: bool,
    normalized: bool,
    rstrip: bool,
    single_word: bool,
    special: bool,
}

#[derive(Serialize)]
struct TokenizerConfig {
    add_prefix_space: bool,
    added_tokens_decoder: std::collections::BTreeMap<String, AddedTokenDecoder>,
    additional_special_tokens: Vec<&'static str>,
    bos_token: &'static str,
    clean_up_tokenization_spaces: bool,
    eos_token: &'static str,
    model_max_length: usize,
    tokenizer_class: &'static str,
    unk_token: &'static str,
    vocab_size: usize,
}

/// Writes a fresh checkpoint for `preset` into `dir` (created if needed; existing files of
/// the same names are replaced) and returns its config as the loader reads it back.
pub fn write_checkpoint(dir: &Path, preset: Preset, seed: u64) -> Result<ModelConfig> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let hf = preset.spec();
    let config_path = dir.join("config.json");
    let config_json = pretty(&hf);
    write_file(&config_path, config_json.as_bytes())?;
    let config = ModelConfig::from_json_bytes(config_json.as_bytes(), &config_path)?;

    let tokenizer = bpe_json::tokenizer_json(config.vocab_size).ok_or_else(|| {
        ModelError::config(
            &config_path,
            "vocab_size does not fit the byte-level tokenizer",
        )
    })?;
    write_file(&dir.join(TOKENIZER_FILE), tokenizer.as_bytes())?;
    write_file(
        &dir.join("tokenizer_config.json"),
        pretty(&tokenizer_config(&config)).as_bytes(),
    )?;
    let generation = GenerationConfig {
        bos_token_id: hf.bos_token_id,
        eos_token_id: hf.eos_token_id,
    };
    write_file(
        &dir.join("generation_config.json"),
        pretty(&generation).as_bytes(),
    )?;
    write_weights(&dir.join(SINGLE_FILE), &config, seed)?;
    Ok(config)
}

fn tokenizer_config(config: &ModelConfig) -> TokenizerConfig {
    TokenizerConfig {
        add_prefix_space: false,
        added_tokens_decoder: SPECIAL_TOKENS
            .iter()
            .enumerate()
            .map(|(id, content)| {
                (
                    id.to_string(),
                    AddedTokenDecoder {
                        content,
                        lstrip: false,
                        normalized: false,
                        rstrip: false,
                        single_word: false,
                        special: true,
                    },
                )
            })
            .collect(),
        additional_special_tokens: SPECIAL_TOKENS[1..].to_vec(),
        bos_token: SPECIAL_TOKENS[0],
        clean_up_tokenization_spaces: false,
        eos_token: SPECIAL_TOKENS[0],
        model_max_length: config.max_position_embeddings,
        tokenizer_class: "GPT2Tokenizer",
        unk_token: SPECIAL_TOKENS[0],
        vocab_size: config.vocab_size,
    }
}

/// Tensors are written in name order, norms as ones and everything else ~ N(0, 0.02²), each
/// from its own stream seeded by (seed, name).
fn write_weights(path: &Path, config: &ModelConfig, seed: u64) -> Result<()> {
    let mut tensors = names::expected_tensors(config);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, shape)| TensorSpec {
            name: name.clone(),
            dtype: "F32",
            shape: shape.clone(),
            byte_len: 4 * shape.iter().product::<usize>(),
        })
        .collect();
    let file = std::fs::File::create(path).map_err(|e| ModelError::io(path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let io = |e| ModelError::io(path, e);
    w.write_all(&st_write::header(&specs, &[("format", "pt")]))
        .map_err(io)?;
    for (name, shape) in &tensors {
        let count = shape.iter().product();
        if name.ends_with("norm.weight") {
            st_write::write_f32s(&mut w, count, || 1.0).map_err(io)?;
        } else {
            let mut stream = rng::stream_for(seed, name);
            st_write::write_f32s(&mut w, count, || {
                (stream.standard_normal() * INIT_STD) as f32
            })
            .map_err(io)?;
        }
    }
    w.flush().map_err(io)?;
    Ok(())
}

fn pretty<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs cannot fail; an empty object would be caught on load.
    let mut s = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| ModelError::io(path, e))
}

//! llama.cpp's tensor names for the Llama family and the GGUF dimensions each must have,
//! derived from the config, so that the loader can check the directory as a whole before
//! reading a byte of tensor data.

use crate::model::config::ModelConfig;
use crate::model::names::LinearModule;

pub const EMBED: &str = "token_embd.weight";
pub const FINAL_NORM: &str = "output_norm.weight";
pub const OUTPUT: &str = "output.weight";
/// Llama 3.1's per-frequency RoPE factors, which change the maths and are not implemented.
pub const ROPE_FREQS: &str = "rope_freqs.weight";

pub fn attn_norm(layer: usize) -> String {
    format!("blk.{layer}.attn_norm.weight")
}

pub fn ffn_norm(layer: usize) -> String {
    format!("blk.{layer}.ffn_norm.weight")
}

fn module_name(m: LinearModule) -> &'static str {
    match m {
        LinearModule::QProj => "attn_q",
        LinearModule::KProj => "attn_k",
        LinearModule::VProj => "attn_v",
        LinearModule::OProj => "attn_output",
        LinearModule::GateProj => "ffn_gate",
        LinearModule::UpProj => "ffn_up",
        LinearModule::DownProj => "ffn_down",
    }
}

pub fn linear_weight(m: LinearModule, layer: usize) -> String {
    format!("blk.{layer}.{}.weight", module_name(m))
}

pub fn linear_bias(m: LinearModule, layer: usize) -> String {
    format!("blk.{layer}.{}.bias", module_name(m))
}

/// GGUF dimensions of a `[rows, cols]` matrix: the row length first.
fn matrix_dims(rows: usize, cols: usize) -> Vec<u64> {
    vec![cols as u64, rows as u64]
}

/// Every tensor a GGUF file for `config` must hold, with its GGUF dimensions, in a fixed order.
pub fn expected_tensors(config: &ModelConfig) -> Vec<(String, Vec<u64>)> {
    let h = config.hidden_size;
    let mut out = vec![(EMBED.to_string(), matrix_dims(config.vocab_size, h))];
    for layer in 0..config.num_hidden_layers {
        out.push((attn_norm(layer), vec![h as u64]));
        for m in LinearModule::ALL {
            let (rows, cols) = m.shape(config);
            out.push((linear_weight(m, layer), matrix_dims(rows, cols)));
            if m.has_bias(config) {
                out.push((linear_bias(m, layer), vec![rows as u64]));
            }
        }
        out.push((ffn_norm(layer), vec![h as u64]));
    }
    out.push((FINAL_NORM.to_string(), vec![h as u64]));
    if !config.tie_word_embeddings {
        out.push((OUTPUT.to_string(), matrix_dims(config.vocab_size, h)));
    }
    out
}

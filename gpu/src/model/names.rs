//! Hugging Face tensor names and shapes of the Llama family, derived from the config. Kept in
//! one place because the weight loader, the adapter loader and the checkpoint writer must
//! agree on them exactly.

use super::config::ModelConfig;

/// The seven linear projections of a decoder layer, the places LoRA can attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinearModule {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl LinearModule {
    pub const ALL: [LinearModule; 7] = [
        Self::QProj,
        Self::KProj,
        Self::VProj,
        Self::OProj,
        Self::GateProj,
        Self::UpProj,
        Self::DownProj,
    ];

    /// The module's own name, as PEFT's `target_modules` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::QProj => "q_proj",
            Self::KProj => "k_proj",
            Self::VProj => "v_proj",
            Self::OProj => "o_proj",
            Self::GateProj => "gate_proj",
            Self::UpProj => "up_proj",
            Self::DownProj => "down_proj",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn block(self) -> &'static str {
        match self {
            Self::QProj | Self::KProj | Self::VProj | Self::OProj => "self_attn",
            Self::GateProj | Self::UpProj | Self::DownProj => "mlp",
        }
    }

    /// The module path inside `LlamaForCausalLM`, e.g. `model.layers.3.self_attn.q_proj`.
    pub fn module_path(self, layer: usize) -> String {
        format!("model.layers.{layer}.{}.{}", self.block(), self.name())
    }

    /// `(out_features, in_features)`: HF stores linear weights as `[out, in]`, row-major.
    pub fn shape(self, config: &ModelConfig) -> (usize, usize) {
        let (h, i, q, kv) = (
            config.hidden_size,
            config.intermediate_size,
            config.q_dim(),
            config.kv_dim(),
        );
        match self {
            Self::QProj => (q, h),
            Self::KProj | Self::VProj => (kv, h),
            Self::OProj => (h, q),
            Self::GateProj | Self::UpProj => (i, h),
            Self::DownProj => (h, i),
        }
    }

    pub(crate) fn has_bias(self, config: &ModelConfig) -> bool {
        config.qkv_bias() && matches!(self, Self::QProj | Self::KProj | Self::VProj)
    }
}

pub(crate) const EMBED: &str = "model.embed_tokens.weight";
pub(crate) const FINAL_NORM: &str = "model.norm.weight";
pub(crate) const LM_HEAD: &str = "lm_head.weight";

pub(crate) fn input_norm(layer: usize) -> String {
    format!("model.layers.{layer}.input_layernorm.weight")
}

pub(crate) fn post_attention_norm(layer: usize) -> String {
    format!("model.layers.{layer}.post_attention_layernorm.weight")
}

pub(crate) fn linear_weight(module: LinearModule, layer: usize) -> String {
    format!("{}.weight", module.module_path(layer))
}

pub(crate) fn linear_bias(module: LinearModule, layer: usize) -> String {
    format!("{}.bias", module.module_path(layer))
}

/// Every tensor a checkpoint for `config` must contain, with its shape, in a fixed order.
pub(crate) fn expected_tensors(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let h = config.hidden_size;
    let mut out = vec![(EMBED.to_string(), vec![config.vocab_size, h])];
    for layer in 0..config.num_hidden_layers {
        out.push((input_norm(layer), vec![h]));
        for module in LinearModule::ALL {
            let (o, i) = module.shape(config);
            out.push((linear_weight(module, layer), vec![o, i]));
            if module.has_bias(config) {
                out.push((linear_bias(module, layer), vec![o]));
            }
        }
        out.push((post_attention_norm(layer), vec![h]));
    }
    out.push((FINAL_NORM.to_string(), vec![h]));
    if !config.tie_word_embeddings {
        out.push((LM_HEAD.to_string(), vec![config.vocab_size, h]));
    }
    out
}

/// Non-persistent RoPE buffers that older `transformers` versions saved; recomputed from the
/// config, so they carry no information and are skipped.
pub(crate) fn is_ignorable(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

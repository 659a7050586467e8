//! Whatever bytes arrive as a weights file or a config, the loaders return (an error, or a
//! model) and never panic.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;

use crate::model::ModelConfig;
use crate::model::adapter::AdapterConfig;
use crate::model::weights::LlamaWeights;

struct Fixture {
    _dir: tempfile::TempDir,
    config: ModelConfig,
    weights: Vec<u8>,
    config_json: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (dir, config) = super::tiny_checkpoint();
        let weights = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let config_json = std::fs::read(dir.path().join("config.json")).unwrap();
        Fixture {
            _dir: dir,
            config,
            weights,
            config_json,
        }
    })
}

/// Overwrites bytes at chosen positions, then optionally truncates; positions are biased
/// towards the header, where mutations are most interesting.
fn mutate(base: &[u8], edits: &[(usize, u8)], header_bias: bool, cut: Option<usize>) -> Vec<u8> {
    let mut out = base.to_vec();
    let window = if header_bias {
        out.len().min(2048)
    } else {
        out.len()
    };
    for &(pos, byte) in edits {
        if window > 0 {
            out[pos % window] = byte;
        }
    }
    if let Some(cut) = cut {
        out.truncate(cut % (out.len() + 1));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_weight_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let f = fixture();
        let _ = LlamaWeights::from_safetensors_bytes(&bytes, &f.config, Path::new("model.safetensors"));
    }

    #[test]
    fn mutated_weight_files_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        header_bias in any::<bool>(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let f = fixture();
        let bytes = mutate(&f.weights, &edits, header_bias, cut);
        let _ = LlamaWeights::from_safetensors_bytes(&bytes, &f.config, Path::new("model.safetensors"));
    }

    #[test]
    fn mutated_weight_file_on_disk_never_panics(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), mutate(&f.weights, &edits, true, cut)).unwrap();
        let _ = LlamaWeights::load(dir.path(), &f.config);
    }

    #[test]
    fn random_config_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ModelConfig::from_json_bytes(&bytes, Path::new("config.json"));
        let _ = AdapterConfig::from_json_bytes(&bytes, Path::new("adapter_config.json"));
    }

    #[test]
    fn mutated_configs_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let f = fixture();
        let bytes = mutate(&f.config_json, &edits, false, cut);
        if let Ok(config) = ModelConfig::from_json_bytes(&bytes, Path::new("config.json")) {
            // A config that still parses must be within bounds.
            prop_assert!(config.parameter_count() <= crate::model::config::MAX_PARAMETERS);
        }
    }

    #[test]
    fn json_numbers_in_configs_never_panic(
        hidden in any::<u64>(), heads in any::<u64>(), kv in any::<u64>(),
        layers in 0u64..4096, vocab in any::<u64>(), head_dim in proptest::option::of(any::<u64>()),
    ) {
        let mut v = serde_json::json!({
            "architectures": ["MistralForCausalLM"], "vocab_size": vocab, "hidden_size": hidden,
            "intermediate_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv,
            "max_position_embeddings": 4096, "sliding_window": 4096,
        });
        if let Some(h) = head_dim {
            v["head_dim"] = h.into();
        }
        let _ = ModelConfig::from_json_bytes(v.to_string().as_bytes(), Path::new("config.json"));
    }
}

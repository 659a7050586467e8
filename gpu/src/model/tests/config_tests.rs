use std::path::Path;

use serde_json::{Value, json};

use crate::model::config::{Architecture, ModelConfig};
use crate::model::error::ModelError;

fn base() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 512,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"
    })
}

fn parse(v: &Value) -> Result<ModelConfig, ModelError> {
    ModelConfig::from_json_bytes(v.to_string().as_bytes(), Path::new("config.json"))
}

fn with(key: &str, value: Value) -> Value {
    let mut v = base();
    v[key] = value;
    v
}

fn err(v: &Value) -> String {
    parse(v).unwrap_err().to_string()
}

#[test]
fn llama_defaults() {
    let c = parse(&base()).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(c.head_dim, 16);
    assert_eq!(c.rope_theta, 10_000.0);
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.eos_token_ids, vec![2]);
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!((c.q_dim(), c.kv_dim()), (64, 32));
    assert!(!c.qkv_bias());
    let mut v = base();
    v.as_object_mut().unwrap().remove("num_key_value_heads");
    assert_eq!(parse(&v).unwrap().num_key_value_heads, 4);
}

#[test]
fn eos_list_and_tied_embeddings() {
    let mut v = with("eos_token_id", json!([2, 3]));
    v["tie_word_embeddings"] = json!(true);
    let c = parse(&v).unwrap();
    assert_eq!(c.eos_token_ids, vec![2, 3]);
    assert!(c.tie_word_embeddings);
    assert!(err(&with("eos_token_id", json!(5000))).contains("outside the vocabulary"));
}

#[test]
fn llama3_rope_scaling() {
    let scaling = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    let c = parse(&with("rope_scaling", scaling.clone())).unwrap();
    let s = c.rope_scaling.unwrap();
    assert_eq!((s.factor, s.original_max_position_embeddings), (8.0, 8192));
    let mut old = scaling;
    old.as_object_mut().unwrap().remove("rope_type");
    old["type"] = json!("llama3");
    assert!(
        parse(&with("rope_scaling", old))
            .unwrap()
            .rope_scaling
            .is_some()
    );
    let linear = json!({"type": "linear", "factor": 2.0});
    let e = parse(&with("rope_scaling", linear)).unwrap_err();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("linear"));
    assert!(
        parse(&with("rope_scaling", json!({"rope_type": "default"})))
            .unwrap()
            .rope_scaling
            .is_none()
    );
}

#[test]
fn unknown_architecture_is_named() {
    let e = parse(&with("architectures", json!(["GPTNeoXForCausalLM"]))).unwrap_err();
    assert!(matches!(e, ModelError::UnknownArchitecture { .. }));
    assert!(e.to_string().contains("GPTNeoXForCausalLM"), "{e}");
    assert!(err(&with("architectures", json!([]))).contains("unsupported architecture"));
}

#[test]
fn mistral_and_qwen2() {
    let mut v = with("architectures", json!(["MistralForCausalLM"]));
    v["sliding_window"] = json!(256);
    let c = parse(&v).unwrap();
    assert_eq!(c.architecture, Architecture::Mistral);
    assert_eq!(c.max_sequence_len(), 256);
    v["sliding_window"] = Value::Null;
    assert_eq!(parse(&v).unwrap().max_sequence_len(), 512);

    let mut q = with("architectures", json!(["Qwen2ForCausalLM"]));
    q["sliding_window"] = json!(128);
    q["use_sliding_window"] = json!(false);
    let c = parse(&q).unwrap();
    assert!(c.qkv_bias());
    assert_eq!(c.max_sequence_len(), 512);
}

#[test]
fn inconsistent_shapes_refused() {
    let mut v = with("num_attention_heads", json!(5));
    v["num_key_value_heads"] = json!(1);
    assert!(err(&v).contains("does not divide hidden_size"));
    assert!(err(&with("num_key_value_heads", json!(3))).contains("does not divide"));
    assert!(err(&with("hidden_size", json!(0))).contains("`hidden_size` is zero"));
    assert!(err(&with("hidden_size", json!(1u64 << 20))).contains("exceeds the limit"));
    assert!(err(&with("num_hidden_layers", json!(5000))).contains("exceeds the limit"));
    assert!(err(&with("vocab_size", json!(5_000_000))).contains("exceeds the limit"));
    assert!(err(&with("vocab_size", json!(-3))).contains("invalid JSON"));
    assert!(err(&with("hidden_act", json!("gelu"))).contains("gelu"));
    assert!(err(&with("attention_bias", json!(true))).contains("attention_bias"));
    assert!(err(&with("rms_norm_eps", json!(0.0))).contains("rms_norm_eps"));
    let mut v = base();
    v.as_object_mut().unwrap().remove("intermediate_size");
    assert!(err(&v).contains("`intermediate_size` is missing"));
    let mut v = base();
    v.as_object_mut().unwrap().remove("max_position_embeddings");
    assert_eq!(parse(&v).unwrap().max_position_embeddings, 2048);
}

#[test]
fn explicit_head_dim_may_differ_from_hidden_over_heads() {
    let mut v = with("head_dim", json!(32));
    v["num_attention_heads"] = json!(3);
    v["num_key_value_heads"] = json!(1);
    let c = parse(&v).unwrap();
    assert_eq!((c.q_dim(), c.kv_dim()), (96, 32));
    assert!(err(&with("head_dim", json!(15))).contains("even"));
}

#[test]
fn parameter_count_bounded() {
    let mut v = with("hidden_size", json!(65536));
    v["vocab_size"] = json!(4_000_000);
    v["num_attention_heads"] = json!(512);
    v["num_key_value_heads"] = json!(512);
    assert!(err(&v).contains("parameters exceed"));
}

/// transformers >= 5 writes `rope_parameters` (theta inside); ignoring it would silently
/// compute with theta 10000 and no scaling.
#[test]
fn transformers_5_rope_parameters() {
    let params = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8});
    let c = parse(&with("rope_parameters", params.clone())).unwrap();
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(c.rope_scaling.unwrap().original_max_position_embeddings, 8);

    let plain = parse(&with(
        "rope_parameters",
        json!({"rope_type": "default", "rope_theta": 1e6}),
    ))
    .unwrap();
    assert_eq!((plain.rope_theta, plain.rope_scaling), (1e6, None));

    let mut both = with("rope_parameters", params.clone());
    both["rope_theta"] = json!(10000.0);
    assert!(err(&both).contains("contradicts"), "{}", err(&both));
    let mut scaled = with("rope_parameters", params);
    scaled["rope_scaling"] = json!({"rope_type": "llama3", "factor": 2.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8});
    assert!(err(&scaled).contains("contradicts"), "{}", err(&scaled));
    assert!(err(&with("rope_parameters", json!(3))).contains("rope_parameters"));
    let e = parse(&with("partial_rotary_factor", json!(0.5))).unwrap_err();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    assert!(parse(&with("partial_rotary_factor", json!(1.0))).is_ok());
}

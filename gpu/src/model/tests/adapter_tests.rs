use std::path::Path;

use serde_json::{Value, json};

use super::{f32_bytes, tensor, tiny_checkpoint, write_safetensors};
use crate::model::ModelConfig;
use crate::model::adapter::Adapter;
use crate::model::error::ModelError;
use crate::model::names::LinearModule;
use crate::model::st_write::TensorSpec;

fn lora_config() -> Value {
    json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
        "lora_dropout": 0.05, "use_rslora": false, "use_dora": false, "bias": "none",
        "modules_to_save": null, "target_modules": ["q_proj", "v_proj", "down_proj"],
        "rank_pattern": {}, "alpha_pattern": {}, "fan_in_fan_out": false,
        "base_model_name_or_path": "olc/tiny"
    })
}

fn name(layer: usize, module: LinearModule, half: &str) -> String {
    format!(
        "base_model.model.{}.{half}.weight",
        module.module_path(layer)
    )
}

fn pair(
    config: &ModelConfig,
    layer: usize,
    m: LinearModule,
    r: usize,
) -> Vec<(TensorSpec, Vec<u8>)> {
    let (out, inp) = m.shape(config);
    let a: Vec<f32> = (0..r * inp).map(|i| i as f32).collect();
    vec![
        tensor(&name(layer, m, "lora_A"), "F32", &[r, inp], f32_bytes(&a)),
        tensor(
            &name(layer, m, "lora_B"),
            "F32",
            &[out, r],
            f32_bytes(&vec![0.5; out * r]),
        ),
    ]
}

fn standard(config: &ModelConfig) -> Vec<(TensorSpec, Vec<u8>)> {
    let mut t = Vec::new();
    for layer in 0..2 {
        t.extend(pair(config, layer, LinearModule::QProj, 4));
        t.extend(pair(config, layer, LinearModule::VProj, 4));
    }
    t.extend(pair(config, 1, LinearModule::DownProj, 4));
    t
}

fn write(cfg: &Value, tensors: &[(TensorSpec, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    write_safetensors(&dir.path().join("adapter_model.safetensors"), tensors);
    dir
}

fn load(
    cfg: &Value,
    tensors: &[(TensorSpec, Vec<u8>)],
    base: &ModelConfig,
) -> Result<Adapter, ModelError> {
    let dir = write(cfg, tensors);
    Adapter::load(dir.path(), base)
}

fn err(cfg: &Value, tensors: &[(TensorSpec, Vec<u8>)], base: &ModelConfig, needles: &[&str]) {
    let msg = load(cfg, tensors, base).unwrap_err().to_string();
    for n in needles {
        assert!(msg.contains(n), "`{msg}` lacks `{n}`");
    }
}

#[test]
fn loads_valid_adapter() {
    let (_d, base) = tiny_checkpoint();
    let a = load(&lora_config(), &standard(&base), &base).unwrap();
    assert_eq!(a.modules.len(), 5);
    let q = &a.modules[&(1, LinearModule::QProj)];
    assert_eq!((q.a.rows, q.a.cols, q.b.rows, q.b.cols), (4, 64, 64, 4));
    assert_eq!(q.a.data[3], 3.0);
    assert_eq!(q.scale, 2.0);
    assert_eq!(a.modules[&(1, LinearModule::DownProj)].a.cols, 128);
    assert_eq!(
        a.config.base_model_name_or_path.as_deref(),
        Some("olc/tiny")
    );
}

#[test]
fn rslora_and_patterns() {
    let (_d, base) = tiny_checkpoint();
    let mut cfg = lora_config();
    cfg["use_rslora"] = json!(true);
    cfg["rank_pattern"] = json!({"model.layers.1.self_attn.q_proj": 2, "down_proj": 8});
    cfg["alpha_pattern"] = json!({"layers.0.self_attn.v_proj": 3.0});
    let mut t = Vec::new();
    t.extend(pair(&base, 0, LinearModule::QProj, 4));
    t.extend(pair(&base, 1, LinearModule::QProj, 2));
    t.extend(pair(&base, 0, LinearModule::VProj, 4));
    t.extend(pair(&base, 1, LinearModule::DownProj, 8));
    let a = load(&cfg, &t, &base).unwrap();
    assert_eq!(a.modules[&(0, LinearModule::QProj)].scale, 4.0); // 8 / sqrt(4)
    assert_eq!(
        a.modules[&(1, LinearModule::QProj)].scale,
        (8.0 / 2f64.sqrt()) as f32
    );
    assert_eq!(a.modules[&(0, LinearModule::VProj)].scale, 1.5); // 3 / sqrt(4)
    assert_eq!(
        a.modules[&(1, LinearModule::DownProj)].scale,
        (8.0 / 8f64.sqrt()) as f32
    );
    // "proj" is not a dot-boundary suffix of "q_proj", so it must not match.
    let mut cfg = lora_config();
    cfg["rank_pattern"] = json!({"proj": 2});
    load(&cfg, &standard(&base), &base).unwrap();
    let mut cfg = lora_config();
    cfg["rank_pattern"] = json!({"q_pr(o)j": 2});
    err(&cfg, &standard(&base), &base, &["rank_pattern", "literal"]);
}

#[test]
fn rank_pattern_order_is_file_order() {
    let text = r#"{"r": 4, "rank_pattern": {"q_proj": 2, "model.layers.0.self_attn.q_proj": 6}}"#;
    let c = crate::model::adapter::AdapterConfig::from_json_bytes(text.as_bytes(), Path::new("a"))
        .unwrap();
    assert_eq!(c.rank_for("model.layers.0.self_attn.q_proj"), 2);
    let text = r#"{"r": 4, "rank_pattern": {"model.layers.0.self_attn.q_proj": 6, "q_proj": 2}}"#;
    let c = crate::model::adapter::AdapterConfig::from_json_bytes(text.as_bytes(), Path::new("a"))
        .unwrap();
    assert_eq!(c.rank_for("model.layers.0.self_attn.q_proj"), 6);
    assert_eq!(c.rank_for("model.layers.10.self_attn.q_proj"), 2);
    assert_eq!(c.rank_for("model.layers.0.self_attn.k_proj"), 4);
}

#[test]
fn target_modules_forms() {
    let (_d, base) = tiny_checkpoint();
    let mut cfg = lora_config();
    cfg["target_modules"] = json!("all-linear");
    load(&cfg, &standard(&base), &base).unwrap();
    cfg["target_modules"] = json!(r".*\.(q_proj|v_proj|down_proj)");
    load(&cfg, &standard(&base), &base).unwrap();
    cfg["target_modules"] = json!("q_proj");
    err(
        &cfg,
        &standard(&base),
        &base,
        &["q_proj.lora_A.weight", "target_modules"],
    );
    cfg["target_modules"] = json!(["q_proj"]);
    err(
        &cfg,
        &standard(&base),
        &base,
        &["v_proj.lora_A.weight", "target_modules"],
    );
}

#[test]
fn refuses_unsupported_features() {
    let (_d, base) = tiny_checkpoint();
    let t = standard(&base);
    for (key, value, needle) in [
        ("use_dora", json!(true), "DoRA"),
        ("modules_to_save", json!(["lm_head"]), "modules_to_save"),
        ("bias", json!("all"), "bias `all`"),
        ("bias", json!("lora_only"), "bias `lora_only`"),
        ("fan_in_fan_out", json!(true), "fan_in_fan_out"),
        ("peft_type", json!("IA3"), "IA3"),
    ] {
        let mut cfg = lora_config();
        cfg[key] = value;
        let e = load(&cfg, &t, &base).unwrap_err();
        assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
        assert!(e.to_string().contains("adapter_config.json"), "{e}");
    }
    let mut cfg = lora_config();
    cfg["modules_to_save"] = json!([]);
    load(&cfg, &t, &base).unwrap();
}

#[test]
fn refuses_adapters_that_do_not_fit() {
    let (_d, base) = tiny_checkpoint();
    let cfg = lora_config();

    // Trained for a model with hidden size 96.
    let mut other = base.clone();
    other.hidden_size = 96;
    other.head_dim = 24;
    let t = pair(&other, 0, LinearModule::QProj, 4);
    err(
        &cfg,
        &t,
        &base,
        &[
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "[4, 96]",
            "[4, 64]",
        ],
    );

    // A and B ranks disagree, or disagree with r.
    let mut t = pair(&base, 0, LinearModule::QProj, 4);
    t[1] = tensor(
        &name(0, LinearModule::QProj, "lora_B"),
        "F32",
        &[64, 3],
        f32_bytes(&[0.0; 192]),
    );
    err(&cfg, &t, &base, &["lora_B.weight", "rank 3", "rank 4"]);
    let t = pair(&base, 0, LinearModule::QProj, 8);
    err(&cfg, &t, &base, &["lora_A.weight", "rank 8"]);

    // Layer beyond the model.
    let t = pair(&base, 2, LinearModule::QProj, 4);
    err(
        &cfg,
        &t,
        &base,
        &[
            "layers.2.self_attn.q_proj.lora_A.weight",
            "layer 2",
            "2 layers",
        ],
    );

    // Half a pair, a foreign tensor, a wrong dtype.
    let t = pair(&base, 0, LinearModule::QProj, 4)[..1].to_vec();
    err(&cfg, &t, &base, &["missing", "q_proj.lora_B.weight"]);
    let mut t = standard(&base);
    t.push(tensor(
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
        "F32",
        &[64],
        f32_bytes(&[0.0; 64]),
    ));
    err(&cfg, &t, &base, &["unexpected tensor", "lora_B.bias"]);
    let mut t = standard(&base);
    t.push(tensor(
        "base_model.model.model.embed_tokens.lora_embedding_A",
        "F32",
        &[4, 320],
        f32_bytes(&[0.0; 1280]),
    ));
    err(&cfg, &t, &base, &["unexpected tensor", "lora_embedding_A"]);
    let mut t = pair(&base, 0, LinearModule::QProj, 4);
    t[0] = tensor(
        &name(0, LinearModule::QProj, "lora_A"),
        "F64",
        &[4, 64],
        vec![0; 4 * 64 * 8],
    );
    err(&cfg, &t, &base, &["lora_A.weight", "F64"]);
    err(&cfg, &[], &base, &["no LoRA tensors"]);
}

#[test]
fn refuses_non_finite_adapter_weights() {
    let (_d, base) = tiny_checkpoint();
    for (bad, kind) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "+inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let mut t = standard(&base);
        let target = name(1, LinearModule::VProj, "lora_B");
        let (spec, bytes) = t.iter_mut().find(|(s, _)| s.name == target).unwrap();
        assert_eq!(spec.shape, [32, 4]);
        bytes[4 * 77..4 * 78].copy_from_slice(&bad.to_le_bytes());
        err(
            &lora_config(),
            &t,
            &base,
            &[&target, &format!("non-finite value ({kind}) at element 77")],
        );
    }
}

use std::path::Path;

use super::{dir_with, expected_f32, f32_tensor, tensor, tiny_checkpoint, write_safetensors};
use crate::model::error::ModelError;
use crate::model::names::expected_tensors;
use crate::model::st_write::{self, TensorSpec};
use crate::model::weights::LlamaWeights;
use crate::model::{Checkpoint, ModelConfig};

fn load(dir: &Path, config: &ModelConfig) -> Result<LlamaWeights, ModelError> {
    LlamaWeights::load(dir, config)
}

fn expect_err(dir: &Path, config: &ModelConfig, needles: &[&str]) -> ModelError {
    let e = load(dir, config).unwrap_err();
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "`{msg}` lacks `{n}`");
    }
    e
}

#[test]
fn constant_tensors_land_in_the_right_fields() {
    let (src, config) = tiny_checkpoint();
    let dir = dir_with(src.path(), &expected_f32(&config));
    let w = load(dir.path(), &config).unwrap();
    let order: Vec<String> = expected_tensors(&config).into_iter().map(|t| t.0).collect();
    let value = |name: &str| order.iter().position(|n| n == name).unwrap() as f32;
    assert!(
        w.embed_tokens
            .data
            .iter()
            .all(|&x| x == value("model.embed_tokens.weight"))
    );
    assert_eq!((w.embed_tokens.rows, w.embed_tokens.cols), (320, 64));
    let l1 = &w.layers[1];
    assert_eq!(
        l1.k_proj.data[0],
        value("model.layers.1.self_attn.k_proj.weight")
    );
    assert_eq!((l1.k_proj.rows, l1.k_proj.cols), (32, 64));
    assert_eq!(
        l1.down_proj.data[5],
        value("model.layers.1.mlp.down_proj.weight")
    );
    assert_eq!(
        l1.input_layernorm[0],
        value("model.layers.1.input_layernorm.weight")
    );
    assert_eq!(w.norm[0], value("model.norm.weight"));
    assert!(w.lm_head.is_none());
    assert!(std::ptr::eq(w.lm_head(), &w.embed_tokens));
    assert!(l1.q_bias.is_none());
}

fn bf16_to_f32_reference(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// IEEE binary16 decoded by hand, independent of `half`.
fn f16_to_f32_reference(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0f64 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1F);
    let mant = f64::from(bits & 0x3FF);
    let v = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1024.0 + mant) * 2f64.powi(e - 25),
    };
    (sign * v) as f32
}

#[test]
fn bf16_and_f16_widen_exactly() {
    let (src, config) = tiny_checkpoint();
    for (dtype, reference) in [
        ("BF16", bf16_to_f32_reference as fn(u16) -> f32),
        ("F16", f16_to_f32_reference),
    ] {
        // Tensors cover every finite 16-bit pattern (the embedding alone has 20480
        // elements); NaN and infinities, which the loader refuses, become zeros.
        let mut counter: u32 = 0;
        let mut bits_of = Vec::new();
        let tensors: Vec<_> = expected_tensors(&config)
            .iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let bits: Vec<u16> = (0..n)
                    .map(|_| {
                        counter = counter.wrapping_add(40_503);
                        let b = (counter % 65_536) as u16;
                        if reference(b).is_finite() { b } else { 0 }
                    })
                    .collect();
                bits_of.push(bits.clone());
                tensor(
                    name,
                    dtype,
                    shape,
                    bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
                )
            })
            .collect();
        let dir = dir_with(src.path(), &tensors);
        let w = load(dir.path(), &config).unwrap();
        let check = |got: &[f32], bits: &[u16]| {
            for (g, b) in got.iter().zip(bits) {
                let want = reference(*b);
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "{dtype} {b:#06x}: {g} vs {want}"
                );
            }
        };
        check(&w.embed_tokens.data, &bits_of[0]);
        check(&w.layers[0].input_layernorm, &bits_of[1]);
        check(&w.layers[1].down_proj.data, &bits_of[bits_of.len() - 3]);
    }
}

#[test]
fn non_finite_weights_are_refused_with_tensor_and_index() {
    let (src, config) = tiny_checkpoint();
    let order = expected_tensors(&config);
    let (target, _) = order
        .iter()
        .find(|(name, _)| name == "model.layers.0.mlp.up_proj.weight")
        .unwrap();
    // Each dtype's own NaN and infinity encodings, at an element that is not the first.
    let cases: [(&str, Vec<u8>, &str); 9] = [
        ("F32", f32::NAN.to_le_bytes().to_vec(), "NaN"),
        ("F32", f32::INFINITY.to_le_bytes().to_vec(), "+inf"),
        ("F32", f32::NEG_INFINITY.to_le_bytes().to_vec(), "-inf"),
        ("BF16", 0x7FC1u16.to_le_bytes().to_vec(), "NaN"),
        ("BF16", 0x7F80u16.to_le_bytes().to_vec(), "+inf"),
        ("BF16", 0xFF80u16.to_le_bytes().to_vec(), "-inf"),
        ("F16", 0xFE01u16.to_le_bytes().to_vec(), "NaN"),
        ("F16", 0x7C00u16.to_le_bytes().to_vec(), "+inf"),
        ("F16", 0xFC00u16.to_le_bytes().to_vec(), "-inf"),
    ];
    for (dtype, bad, kind) in cases {
        let width = bad.len();
        let tensors: Vec<_> = order
            .iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                // 0.5 in each format: finite everywhere except the poisoned element.
                let half: &[u8] = match dtype {
                    "F32" => &[0, 0, 0, 0x3F],
                    "BF16" => &[0x00, 0x3F],
                    _ => &[0x00, 0x38],
                };
                let mut bytes = half.repeat(n);
                if name == target {
                    bytes[123 * width..124 * width].copy_from_slice(&bad);
                    bytes[200 * width..201 * width].copy_from_slice(&bad);
                }
                tensor(name, dtype, shape, bytes)
            })
            .collect();
        let dir = dir_with(src.path(), &tensors);
        let e = expect_err(
            dir.path(),
            &config,
            &[
                "model.layers.0.mlp.up_proj.weight",
                &format!("non-finite value ({kind}) at element 123"),
            ],
        );
        assert!(
            matches!(e, ModelError::NonFinite { index: 123, .. }),
            "{dtype}: {e:?}"
        );
        // The checkpoint loader says the same.
        let dir_ck = tempfile::tempdir().unwrap();
        for file in ["config.json", "tokenizer.json"] {
            std::fs::copy(src.path().join(file), dir_ck.path().join(file)).unwrap();
        }
        std::fs::copy(
            dir.path().join("model.safetensors"),
            dir_ck.path().join("model.safetensors"),
        )
        .unwrap();
        let msg = Checkpoint::load(dir_ck.path()).unwrap_err().to_string();
        assert!(msg.contains("at element 123"), "{msg}");
    }
    // The largest finite values of each format still load.
    let tensors: Vec<_> = order
        .iter()
        .map(|(name, shape)| f32_tensor(name, shape, f32::MAX))
        .collect();
    load(dir_with(src.path(), &tensors).path(), &config).unwrap();
}

#[test]
fn sharded_index_loads_like_a_single_file() {
    let (src, config) = tiny_checkpoint();
    let whole = load(src.path(), &config).unwrap();
    let all = expected_f32(&config);
    let (first, second) = all.split_at(all.len() / 2);
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write_safetensors(&dir.path().join(names[0]), first);
    write_safetensors(&dir.path().join(names[1]), second);
    let mut map = serde_json::Map::new();
    for (part, file) in [(first, names[0]), (second, names[1])] {
        for (spec, _) in part {
            map.insert(spec.name.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    let index_path = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index_path, index.to_string()).unwrap();
    let sharded = load(dir.path(), &config).unwrap();
    let single = load(dir_with(src.path(), &all).path(), &config).unwrap();
    assert_eq!(sharded, single);
    assert_ne!(sharded, whole);

    // A shard outside the directory, or missing, or a tensor listed in the wrong shard.
    let bad = |map: serde_json::Map<String, serde_json::Value>, needles: &[&str]| {
        std::fs::write(
            &index_path,
            serde_json::json!({"weight_map": map}).to_string(),
        )
        .unwrap();
        expect_err(dir.path(), &config, needles);
    };
    for evil in [
        "../model-00001-of-00002.safetensors",
        "/etc/passwd",
        "sub/x.safetensors",
        "..",
        "",
    ] {
        let mut m = map.clone();
        m.insert("model.norm.weight".into(), evil.into());
        bad(
            m,
            &["not a plain file name", "model.safetensors.index.json"],
        );
    }
    let mut m = map.clone();
    m.insert(
        "model.norm.weight".into(),
        "model-00003-of-00002.safetensors".into(),
    );
    bad(m, &["model-00003-of-00002.safetensors", "does not exist"]);
    let mut m = map.clone();
    let first_name = first[0].0.name.clone();
    m.insert(first_name.clone(), names[1].into());
    bad(m, &[&first_name]);
    let mut m = map.clone();
    m.insert(
        "model.layers.0.self_attn.o_proj.bias".into(),
        names[0].into(),
    );
    bad(m, &["unexpected tensor", "o_proj.bias"]);
    m = map.clone();
    m.remove("model.norm.weight");
    bad(m, &["model.norm.weight"]);
}

#[test]
fn missing_unexpected_wrong_shape_wrong_dtype() {
    let (src, config) = tiny_checkpoint();
    let good = expected_f32(&config);

    let mut t = good.clone();
    t.retain(|(s, _)| s.name != "model.layers.1.mlp.up_proj.weight");
    let d = dir_with(src.path(), &t);
    let e = expect_err(
        d.path(),
        &config,
        &[
            "model.safetensors",
            "model.layers.1.mlp.up_proj.weight",
            "missing",
        ],
    );
    assert!(matches!(e, ModelError::MissingTensor { .. }));

    let mut t = good.clone();
    t.push(f32_tensor(
        "model.layers.0.self_attn.o_proj.bias",
        &[64],
        0.0,
    ));
    let d = dir_with(src.path(), &t);
    expect_err(
        d.path(),
        &config,
        &["unexpected tensor", "model.layers.0.self_attn.o_proj.bias"],
    );

    let mut t = good.clone();
    t.push(f32_tensor(
        "model.layers.0.self_attn.rotary_emb.inv_freq",
        &[8],
        1.0,
    ));
    load(dir_with(src.path(), &t).path(), &config).unwrap();

    let mut t = good.clone();
    let i = t
        .iter()
        .position(|(s, _)| s.name == "model.layers.0.self_attn.v_proj.weight")
        .unwrap();
    t[i] = f32_tensor("model.layers.0.self_attn.v_proj.weight", &[64, 64], 0.0);
    let d = dir_with(src.path(), &t);
    let e = expect_err(
        d.path(),
        &config,
        &[
            "model.layers.0.self_attn.v_proj.weight",
            "[64, 64]",
            "[32, 64]",
        ],
    );
    assert!(matches!(e, ModelError::WrongShape { .. }));

    let mut t = good.clone();
    t[i] = tensor(
        "model.layers.0.self_attn.v_proj.weight",
        "I32",
        &[32, 64],
        vec![0; 32 * 64 * 4],
    );
    let d = dir_with(src.path(), &t);
    let e = expect_err(
        d.path(),
        &config,
        &["model.layers.0.self_attn.v_proj.weight", "I32"],
    );
    assert!(matches!(e, ModelError::WrongDtype { .. }));

    // A tied checkpoint that also stores lm_head: a copy is fine, a different matrix is not.
    let mut t = good.clone();
    let embed = t[0].1.clone();
    t.push(tensor("lm_head.weight", "F32", &[320, 64], embed));
    load(dir_with(src.path(), &t).path(), &config).unwrap();
    let last = t.len() - 1;
    t[last] = f32_tensor("lm_head.weight", &[320, 64], 9.0);
    expect_err(
        dir_with(src.path(), &t).path(),
        &config,
        &["lm_head.weight", "differs"],
    );
}

#[test]
fn truncated_and_lying_files() {
    let (src, config) = tiny_checkpoint();
    let path = src.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();

    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("model.safetensors");
    for cut in [0, 4, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&target, &bytes[..cut]).unwrap();
        let e = expect_err(
            d.path(),
            &config,
            &["model.safetensors", "not a valid safetensors file"],
        );
        assert!(matches!(e, ModelError::SafeTensors { .. }));
    }

    // Header claims a huge length.
    let mut lying = bytes.clone();
    lying[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&target, &lying).unwrap();
    expect_err(
        d.path(),
        &config,
        &["model.safetensors", "not a valid safetensors"],
    );

    // Header moves a tensor's offsets; same header length so only the offsets lie.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let lie = header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[4,", 1);
    assert_ne!(lie, header);
    let mut lying = bytes.clone();
    lying[8..8 + n].copy_from_slice(lie.as_bytes());
    std::fs::write(&target, &lying).unwrap();
    expect_err(d.path(), &config, &["model.safetensors", "offset"]);

    // An extra tail beyond the last tensor.
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 16]);
    std::fs::write(&target, &long).unwrap();
    expect_err(d.path(), &config, &["model.safetensors"]);

    // No weights at all.
    std::fs::remove_file(&target).unwrap();
    expect_err(d.path(), &config, &["no model.safetensors"]);
}

#[test]
fn oversized_file_refused_before_reading() {
    let (src, config) = tiny_checkpoint();
    let d = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(d.path().join("model.safetensors")).unwrap();
    f.set_len(200_000_000).unwrap();
    let e = load(d.path(), &config).unwrap_err();
    assert!(matches!(e, ModelError::FileTooLarge { .. }), "{e}");
    drop(src);
}

#[test]
fn qwen2_biases_required() {
    let (src, _) = tiny_checkpoint();
    let text = std::fs::read_to_string(src.path().join("config.json")).unwrap();
    let text = text.replace("LlamaForCausalLM", "Qwen2ForCausalLM");
    let config = ModelConfig::from_json_bytes(text.as_bytes(), Path::new("config.json")).unwrap();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("config.json"), &text).unwrap();
    let mut tensors = expected_f32(&config);
    write_safetensors(&d.path().join("model.safetensors"), &tensors);
    let w = load(d.path(), &config).unwrap();
    assert_eq!(w.layers[0].k_bias.as_ref().unwrap().len(), 32);
    tensors
        .retain(|(s, _): &(TensorSpec, Vec<u8>)| s.name != "model.layers.1.self_attn.q_proj.bias");
    write_safetensors(&d.path().join("model.safetensors"), &tensors);
    expect_err(d.path(), &config, &["model.layers.1.self_attn.q_proj.bias"]);
}

#[test]
fn checkpoint_load_checks_tokenizer_fits() {
    let (src, _) = tiny_checkpoint();
    let c = Checkpoint::load(src.path()).unwrap();
    assert_eq!(c.tokenizer.vocab_size(), c.config.vocab_size);
    let json = crate::model::bpe_json::tokenizer_json(400).unwrap();
    std::fs::write(src.path().join("tokenizer.json"), json).unwrap();
    let e = Checkpoint::load(src.path()).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
}

/// A matrix kept as GGUF blocks (`olc model import` without `--f32`): U8 bytes named by an
/// `olc.quant.` metadata key load as those blocks; a wrong shape, an unknown type, blocks for
/// a vector and a non-finite scale are refused, naming the tensor.
#[test]
fn matrices_stored_as_blocks_load_as_blocks_and_bad_ones_are_refused() {
    use crate::compute::QuantType;
    let (src, config) = tiny_checkpoint();
    let name = "model.layers.0.mlp.up_proj.weight"; // [128, 64]
    let q4_1 = |rows: usize| {
        let mut bytes = vec![0x35u8; rows * QuantType::Q4_1.row_bytes(64).unwrap()];
        for block in bytes.chunks_exact_mut(20) {
            block[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            block[2..4].copy_from_slice(&half::f16::from_f32(-0.05).to_le_bytes());
        }
        bytes
    };
    let with = |tensor_bytes: Vec<u8>, shape: &[usize], meta: &[(&str, &str)]| {
        let mut t = expected_f32(&config);
        t.retain(|(s, _)| s.name != name);
        t.push(tensor(name, "U8", shape, tensor_bytes));
        let dir = dir_with(src.path(), &[]);
        std::fs::write(
            dir.path().join("model.safetensors"),
            st_write::to_bytes(&t, meta),
        )
        .unwrap();
        dir
    };
    let key = format!("olc.quant.{name}");
    let good = with(q4_1(128), &[128, 40], &[(key.as_str(), "Q4_1")]);
    let w = load(good.path(), &config).unwrap();
    let up = &w.layers[0].up_proj;
    assert_eq!(up.storage(), QuantType::Q4_1);
    assert_eq!(up.blocks.as_ref().unwrap().bytes, q4_1(128));

    let d = with(q4_1(128), &[128, 20, 2], &[(key.as_str(), "Q4_1")]);
    expect_err(d.path(), &config, &[name, "U8 of shape [128, 40]"]);
    let d = with(q4_1(128), &[128, 40], &[(key.as_str(), "Q5_0")]);
    expect_err(d.path(), &config, &[name, "Q5_0"]);
    // Without the metadata key the bytes are no matrix of this model.
    let d = with(q4_1(128), &[128, 40], &[]);
    expect_err(d.path(), &config, &[name, "has shape [128, 40]"]);
    let mut nan = q4_1(128);
    nan[40 * 5 + 2..40 * 5 + 4].copy_from_slice(&half::f16::NAN.to_le_bytes());
    let d = with(nan, &[128, 40], &[(key.as_str(), "Q4_1")]);
    expect_err(d.path(), &config, &[name, "non-finite", "at element 320"]);
    let norm = "model.norm.weight";
    let mut t = expected_f32(&config);
    t.retain(|(s, _)| s.name != norm);
    t.push(tensor(norm, "U8", &[2, 20], vec![0; 40]));
    let d = dir_with(src.path(), &[]);
    let norm_key = format!("olc.quant.{norm}");
    std::fs::write(
        d.path().join("model.safetensors"),
        st_write::to_bytes(&t, &[(norm_key.as_str(), "Q4_1")]),
    )
    .unwrap();
    expect_err(d.path(), &config, &[norm, "not a matrix"]);
}

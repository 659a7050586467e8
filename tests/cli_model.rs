//! `olc model init` / `olc model show` through the real binary.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use std::path::Path;

use common::{json, olc};

fn init(dir: &Path, preset: &str, seed: &str) -> serde_json::Value {
    json(&olc(&[
        "model",
        "init",
        "--out",
        dir.to_str().unwrap(),
        "--preset",
        preset,
        "--seed",
        seed,
        "--json",
    ]))
}

#[test]
fn same_seed_same_bytes_and_show_reads_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(&tmp.path().join("a"), "tiny", "7");
    let b = init(&tmp.path().join("b"), "tiny", "7");
    let c = init(&tmp.path().join("c"), "tiny", "8");
    assert_eq!(a["id"], b["id"]);
    assert_ne!(a["id"], c["id"]);
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let x = std::fs::read(tmp.path().join("a").join(file)).unwrap();
        let y = std::fs::read(tmp.path().join("b").join(file)).unwrap();
        assert_eq!(x, y, "{file} differs between two runs with one seed");
    }
    assert_eq!(a["architecture"], "LlamaForCausalLM");
    assert!(
        a["kv_heads"].as_u64().unwrap() < a["attention_heads"].as_u64().unwrap(),
        "GQA"
    );

    let shown = json(&olc(&[
        "model",
        "show",
        tmp.path().join("a").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(shown["id"], a["id"]);
    assert_eq!(shown["parameters"], a["parameters"]);
}

#[test]
fn init_refuses_to_overwrite_and_bad_input_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    init(&dir, "tiny", "1");
    let again = olc(&["model", "init", "--out", dir.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let bad_preset = olc(&[
        "model",
        "init",
        "--out",
        dir.to_str().unwrap(),
        "--preset",
        "huge",
    ]);
    assert!(!bad_preset.status.success());
    assert!(String::from_utf8_lossy(&bad_preset.stderr).contains("huge"));

    // A checkpoint whose weights file is cut short is refused, naming the file.
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let out = olc(&["model", "show", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let missing = olc(&[
        "model",
        "show",
        tmp.path().join("nothing").to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("config.json"));
}

#[test]
fn show_refuses_a_model_with_a_nan_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    init(&dir, "tiny", "2");
    // The file ends with the last element of its last tensor (all F32).
    let weights = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&weights, bytes).unwrap();
    let out = olc(&["model", "show", dir.to_str().unwrap()]);
    assert!(!out.status.success(), "a NaN weight was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds a non-finite value (NaN) at element"),
        "{err}"
    );
}

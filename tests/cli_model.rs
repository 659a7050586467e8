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

#[path = "../gpu/tests/common/mod.rs"]
mod real_model;

/// The real GGUF model through the binary: `show` describes it, `import` writes a Hugging
/// Face directory keeping the blocks and `import --f32` one widened to f32, and inference
/// from all three gives the same commitment (the same tokens): the f32 directory holds
/// exactly the values the quantized kernels compute with.
#[test]
fn a_gguf_model_shows_imports_and_infers_the_same_in_every_form() {
    let Some(model) = real_model::smollm2_gguf() else {
        return;
    };
    let model = model.to_str().unwrap();
    let shown = json(&olc(&["model", "show", model, "--json"]));
    assert_eq!(shown["format"], "GGUF v3");
    assert_eq!(shown["architecture"], "LlamaForCausalLM");
    assert_eq!(shown["layers"], 30);
    assert_eq!(shown["tensor_types"]["Q4_1"], 210);
    assert_eq!(shown["tensor_types"]["Q8_0"], 1);
    assert_eq!(shown["tokenizer"]["model"], "gpt2");
    assert_eq!(shown["tokenizer"]["eos"], "<|im_end|> (2)");
    assert!(
        shown["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>")
    );
    let resident = shown["resident_bytes"].as_u64().unwrap();
    assert!(resident <= shown["file_bytes"].as_u64().unwrap());

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f32");
    let blocks = tmp.path().join("blocks");
    json(&olc(&[
        "model",
        "import",
        model,
        "--out",
        blocks.to_str().unwrap(),
        "--json",
    ]));
    let size = |d: &Path| {
        std::fs::metadata(d.join("model.safetensors"))
            .unwrap()
            .len()
    };
    assert!(size(&blocks) < shown["file_bytes"].as_u64().unwrap());
    let again = olc(&["model", "import", model, "--out", blocks.to_str().unwrap()]);
    assert!(!again.status.success(), "import overwrote a checkpoint");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let imported = json(&olc(&[
        "model",
        "import",
        model,
        "--out",
        out.to_str().unwrap(),
        "--f32",
        "--json",
    ]));
    assert_eq!(imported["parameters"], shown["parameters"]);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "llama");
    let tok_config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tok_config["chat_template"], shown["chat_template"]);

    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let infer = |m: &str| {
        json(&olc(&[
            "run",
            "infer",
            "--model",
            m,
            "--prompt",
            prompt,
            "--max-tokens",
            "12",
            "--json",
        ]))
    };
    assert!(size(&out) > 5 * size(&blocks));
    let quantized = infer(model);
    let widened = infer(out.to_str().unwrap());
    let kept = infer(blocks.to_str().unwrap());
    assert_eq!(kept["commitment"], quantized["commitment"]);
    assert!(
        quantized["text"].as_str().unwrap().contains("Paris"),
        "{quantized}"
    );
    assert_eq!(quantized["commitment"], widened["commitment"]);
    assert_eq!(quantized["text"], widened["text"]);
}

#[test]
fn bad_gguf_files_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    std::fs::write(&file, &bytes).unwrap();
    for args in [
        vec!["model", "show", file.to_str().unwrap()],
        vec![
            "run",
            "infer",
            "--model",
            file.to_str().unwrap(),
            "--tokens",
            "1",
        ],
    ] {
        let out = olc(&args);
        assert!(!out.status.success(), "{args:?} accepted a broken file");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.gguf"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let not_gguf = tmp.path().join("notes.txt");
    std::fs::write(&not_gguf, "hello").unwrap();
    let out = olc(&["model", "show", not_gguf.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not GGUF"));
}

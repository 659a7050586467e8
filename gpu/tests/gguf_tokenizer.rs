//! The tokenizer built from SmolLM2's GGUF metadata must give exactly the ids `transformers`
//! gives for the same file (`fixtures/gguf/tokenizer_cases.json`), or a GGUF model served by
//! OLC would disagree with the reference implementation on its very input.

use std::path::PathBuf;

use olc_gpu::model::gguf::{self, GgufFile};

mod common;

use common::smollm2_gguf as model_path;

fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .map(|x| x.as_u64().unwrap_or_else(|| panic!("not an id: {x}")) as u32)
        .collect()
}

#[test]
fn smollm2_gguf_tokenizer_matches_transformers() {
    let Some(path) = model_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let built = gguf::tokenizer::build(&file).unwrap();
    let tok = &built.tokenizer;
    let cases = fixture("tokenizer_cases.json");
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() > 30);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let got = tok.encode(text).unwrap();
        if got != want {
            failures.push(format!("{text:?}: encode {got:?}, transformers {want:?}"));
            continue;
        }
        let got = tok.encode_with(text, false).unwrap();
        if got != ids(&case["ids_no_special"]) {
            failures.push(format!("{text:?}: encode without specials {got:?}"));
        }
        let decoded = tok.decode(&want, false).unwrap();
        if decoded != case["decode"].as_str().unwrap() {
            failures.push(format!("{text:?}: decode {decoded:?}"));
        }
        let skipped = tok.decode(&want, true).unwrap();
        if skipped != case["decode_skip_special"].as_str().unwrap() {
            failures.push(format!("{text:?}: decode skipping specials {skipped:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn smollm2_gguf_special_tokens_match_transformers() {
    let Some(path) = model_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let built = gguf::tokenizer::build(&file).unwrap();
    let skeleton = fixture("transformers_tokenizer_skeleton.json");
    let decoder = built.tokenizer.inner().get_added_tokens_decoder();
    let added = skeleton["added_tokens"].as_array().unwrap();
    assert_eq!(decoder.len(), added.len());
    for t in added {
        let id = t["id"].as_u64().unwrap() as u32;
        let ours = &decoder[&id];
        assert_eq!(ours.content, t["content"].as_str().unwrap());
        assert_eq!(ours.special, t["special"].as_bool().unwrap());
    }
    assert_eq!(
        skeleton["model"]["vocab"]["elided_len"].as_u64(),
        Some(built.tokenizer.inner().get_vocab_size(false) as u64)
    );
    let template = fixture("chat_template.json");
    assert_eq!(
        built.chat_template.as_deref(),
        template["chat_template"].as_str()
    );
    assert_eq!((built.bos_token_id, built.eos_token_id), (Some(1), Some(2)));
}

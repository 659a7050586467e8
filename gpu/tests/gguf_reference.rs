//! A real, trained model from its GGUF file against Hugging Face `transformers` loading the
//! same file (`gguf_file=`, which dequantizes it with the `gguf` package; fixtures made by
//! tests/fixtures/gguf/make_gguf_reference.py). The model is SmolLM2-135M-Instruct in Q4_1
//! with a Q8_0 embedding table, which OLC keeps quantized: logits must match within 1e-4 of
//! the largest logit, greedy continuations exactly, and the same model widened to f32 by
//! `olc model import --f32`'s writer must give the same bits as the quantized one (and
//! `olc model import` without it must read back as the same blocks).
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use std::path::{Path, PathBuf};

use olc_gpu::compute::{Isa, QuantType};
use olc_gpu::engine::{Engine, EngineOptions, generate_greedy};
use olc_gpu::model::export::{Weights, write_hf};
use olc_gpu::model::{Checkpoint, gguf};
use safetensors::SafeTensors;

const TOLERANCE: f32 = 1e-4;
const CASES: [&str; 4] = ["plain", "chat", "code", "long"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

struct Reference {
    meta: serde_json::Value,
    bytes: Vec<u8>,
}

impl Reference {
    fn load() -> Self {
        let meta = std::fs::read(fixtures().join("gguf_reference.json")).unwrap();
        Self {
            meta: serde_json::from_slice(&meta).unwrap(),
            bytes: std::fs::read(fixtures().join("gguf_reference.safetensors")).unwrap(),
        }
    }

    fn case(&self, name: &str) -> &serde_json::Value {
        self.meta["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
    }

    fn f32s(&self, tensor: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(tensor).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn ids(&self, tensor: &str) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(tensor).unwrap();
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect()
    }
}

/// The fixtures' continuations run past the end-of-sequence token (32 tokens each, to
/// compare more of them), so the engine must not stop there either.
fn engine(mut ck: Checkpoint, isa: Isa, threads: usize) -> Engine {
    ck.config.eos_token_ids.clear();
    let options = EngineOptions {
        isa,
        threads,
        max_positions: 160,
    };
    Engine::new(ck.config, ck.weights, options).unwrap()
}

/// Largest |ours - theirs| relative to the largest |theirs|.
fn relative_error(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len(), "logits shape");
    let scale = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(theirs)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    worst / scale
}

#[test]
fn smollm2_q4_1_gguf_matches_transformers_and_its_f32_widening_bit_for_bit() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let r = Reference::load();
    assert_eq!(
        r.meta["model_sha256"], "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "the fixtures were made from the file deploy/fetch-smollm2.sh fetches"
    );
    let (ck, info) = gguf::load_with_info(&path).unwrap();
    // Kept quantized: Q4_1 projections and a Q8_0 embedding table, about the file's size.
    assert_eq!(ck.weights.layers[0].q_proj.storage(), QuantType::Q4_1);
    assert_eq!(ck.weights.embed_tokens.storage(), QuantType::Q8_0);
    let file_len = std::fs::metadata(&path).unwrap().len();
    assert!(
        ck.weights.bytes() <= file_len,
        "{} resident",
        ck.weights.bytes()
    );
    let tokenizer = Checkpoint::load(&path).unwrap().tokenizer;

    // The widened copy, written and read back through the Hugging Face loader.
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path(), &ck, &info, Weights::F32).unwrap();
    let widened = Checkpoint::load(dir.path()).unwrap();
    let mut config = widened.config.clone();
    config.torch_dtype = None; // informational: the file's storage type
    assert_eq!(config, ck.config);
    assert_eq!(widened.weights.layers[0].q_proj.storage(), QuantType::F32);

    // Kept as blocks, the directory loads back as the same quantized matrices.
    let blocks_dir = tempfile::tempdir().unwrap();
    write_hf(blocks_dir.path(), &ck, &info, Weights::AsStored).unwrap();
    let reloaded = Checkpoint::load(blocks_dir.path()).unwrap();
    assert_eq!(
        reloaded.weights, ck.weights,
        "blocks written and read back unchanged"
    );
    drop(reloaded);

    let quant = engine(ck, Isa::detect(), 2);
    let f32_engine = engine(widened, Isa::detect(), 2);
    for case in CASES {
        let meta = r.case(case);
        let prompt = r.ids(&format!("{case}.prompt"));
        let text = meta["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text).unwrap(),
            prompt,
            "{case}: prompt ids"
        );

        let mut cache = quant.new_cache();
        let all = case == "plain";
        let ours = quant.forward(&prompt, &mut cache, None, all).unwrap();
        let (theirs, last) = if all {
            let theirs = r.f32s("plain.all_logits");
            let vocab = theirs.len() / prompt.len();
            (theirs, ours[ours.len() - vocab..].to_vec())
        } else {
            (r.f32s(&format!("{case}.logits")), ours.clone())
        };
        let err = relative_error(&ours, &theirs);
        eprintln!("{case}: max relative logit error {err:.2e}");
        assert!(err <= TOLERANCE, "{case}: relative error {err}");
        let err = relative_error(&last, &r.f32s(&format!("{case}.logits")));
        assert!(
            err <= TOLERANCE,
            "{case}: last position, relative error {err}"
        );

        let mut f32_cache = f32_engine.new_cache();
        let widened_logits = f32_engine
            .forward(&prompt, &mut f32_cache, None, all)
            .unwrap();
        assert!(
            widened_logits
                .iter()
                .zip(&ours)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{case}: the f32 widening computes different bits"
        );

        let greedy = generate_greedy(&quant, None, &prompt, 32, 0).unwrap();
        assert_eq!(
            greedy.tokens,
            r.ids(&format!("{case}.greedy")),
            "{case}: greedy continuation ({:?})",
            tokenizer.decode(&greedy.tokens, false)
        );
    }
}

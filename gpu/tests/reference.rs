//! The engine against Hugging Face `transformers` + `peft` (fixtures made by
//! tests/fixtures/make_reference.py; this test needs no Python). Logits must match within
//! 1e-4 of the largest logit, and greedy tokens exactly.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::path::{Path, PathBuf};

use olc_gpu::compute::Isa;
use olc_gpu::engine::{Engine, EngineOptions, generate_greedy};
use olc_gpu::model::{Adapter, Checkpoint, LlamaWeights, ModelConfig, Preset, write_checkpoint};
use safetensors::SafeTensors;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Reference {
    prompt: Vec<u32>,
    greedy: usize,
    bytes: Vec<u8>,
}

impl Reference {
    fn load() -> Self {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixtures().join("reference.json")).unwrap())
                .unwrap();
        let prompt = meta["prompt"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32);
        Self {
            prompt: prompt.collect(),
            greedy: meta["greedy_tokens"].as_u64().unwrap() as usize,
            bytes: std::fs::read(fixtures().join("reference.safetensors")).unwrap(),
        }
    }

    fn logits(&self, case: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(&format!("{case}.logits")).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn greedy(&self, case: &str) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(&format!("{case}.greedy")).unwrap();
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect()
    }
}

fn engine(config: ModelConfig, weights: LlamaWeights, isa: Isa, threads: usize) -> Engine {
    let options = EngineOptions {
        isa,
        threads,
        max_positions: 64,
    };
    Engine::new(config, weights, options).unwrap()
}

fn check(case: &str, engine: &Engine, adapter: Option<&Adapter>, r: &Reference) {
    let mut cache = engine.new_cache();
    let ours = engine
        .forward(&r.prompt, &mut cache, adapter, true)
        .unwrap();
    let theirs = r.logits(case);
    assert_eq!(ours.len(), theirs.len(), "{case}: logits shape");
    let scale = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(&theirs)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst / scale <= TOLERANCE,
        "{case}: max abs error {worst} is {} of the largest logit {scale}",
        worst / scale
    );
    let generated = generate_greedy(engine, adapter, &r.prompt, r.greedy, 0).unwrap();
    assert_eq!(
        generated.tokens,
        r.greedy(case),
        "{case}: greedy tokens differ"
    );
    eprintln!("{case}: max relative logit error {:.2e}", worst / scale);
}

fn tiny(dir: &Path) -> (ModelConfig, LlamaWeights) {
    let config = write_checkpoint(dir, Preset::Tiny, 11).unwrap();
    let weights = LlamaWeights::load(dir, &config).unwrap();
    (config, weights)
}

#[test]
fn tiny_llama_with_tied_embeddings_and_gqa_matches_transformers() {
    let r = Reference::load();
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = tiny(dir.path());
    assert!(config.tie_word_embeddings && config.num_key_value_heads < config.num_attention_heads);
    check("tiny", &engine(config, weights, Isa::detect(), 2), None, &r);
}

#[test]
fn lora_adapter_matches_peft() {
    let r = Reference::load();
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = tiny(dir.path());
    let adapter = Adapter::load(&fixtures().join("adapter"), &config).unwrap();
    assert_eq!(
        adapter.modules.len(),
        2 * 7,
        "all seven projections of both layers"
    );
    check(
        "tiny_lora",
        &engine(config, weights, Isa::detect(), 2),
        Some(&adapter),
        &r,
    );
}

#[test]
fn qwen2_with_qkv_biases_matches_transformers() {
    let r = Reference::load();
    let ck = Checkpoint::load(&fixtures().join("qwen2")).unwrap();
    assert!(ck.weights.layers[0].q_bias.is_some());
    check(
        "qwen2",
        &engine(ck.config, ck.weights, Isa::detect(), 1),
        None,
        &r,
    );
}

#[test]
fn llama3_rope_scaling_and_untied_head_match_transformers() {
    let r = Reference::load();
    let ck = Checkpoint::load(&fixtures().join("llama3")).unwrap();
    assert!(ck.config.rope_scaling.is_some() && !ck.config.tie_word_embeddings);
    check(
        "llama3_rope",
        &engine(ck.config, ck.weights, Isa::detect(), 1),
        None,
        &r,
    );
}

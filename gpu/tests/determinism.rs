//! The canonical-arithmetic contract at the engine level: the same output bits (logits
//! and tokens) whatever the thread count, the SIMD path, or how the prompt is chunked.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::path::Path;

use olc_gpu::compute::Isa;
use olc_gpu::engine::{Engine, EngineOptions, Generation, Sampling, generate, generate_greedy};
use olc_gpu::model::{Adapter, LlamaWeights, ModelConfig, Preset, write_checkpoint};

fn bits(g: &Generation) -> (Vec<u32>, Vec<u32>) {
    (
        g.tokens.clone(),
        g.logits.iter().map(|v| v.to_bits()).collect(),
    )
}

fn run(
    config: &ModelConfig,
    weights: &LlamaWeights,
    adapter: Option<&Adapter>,
    isa: Isa,
    threads: usize,
    chunk: usize,
) -> (Vec<u32>, Vec<u32>) {
    let options = EngineOptions {
        isa,
        threads,
        max_positions: 128,
    };
    let engine = Engine::new(config.clone(), weights.clone(), options).unwrap();
    let prompt: Vec<u32> = (0..37)
        .map(|i| (i * 37 + 5) % config.vocab_size as u32)
        .collect();
    bits(&generate_greedy(&engine, adapter, &prompt, 12, chunk).unwrap())
}

fn model(dir: &Path, preset: Preset) -> (ModelConfig, LlamaWeights) {
    let config = write_checkpoint(dir, preset, 5).unwrap();
    let weights = LlamaWeights::load(dir, &config).unwrap();
    (config, weights)
}

#[test]
fn same_bits_for_every_thread_count_isa_and_prefill_chunking() {
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = model(dir.path(), Preset::Small);
    let adapter_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adapter");
    // The fixture adapter is for the tiny preset; the small model runs without one here and
    // the tiny one with it below.
    let reference = run(&config, &weights, None, Isa::Portable, 1, 0);
    assert_eq!(reference.0.len(), 12);
    for isa in Isa::supported() {
        for threads in [1, 2, 4] {
            for chunk in [0, 1, 5, 16] {
                assert_eq!(
                    run(&config, &weights, None, isa, threads, chunk),
                    reference,
                    "{isa:?}, {threads} threads, prefill chunks of {chunk}"
                );
            }
        }
    }

    let tiny_dir = tempfile::tempdir().unwrap();
    let tiny_config = write_checkpoint(tiny_dir.path(), Preset::Tiny, 11).unwrap();
    let tiny_weights = LlamaWeights::load(tiny_dir.path(), &tiny_config).unwrap();
    let adapter = Adapter::load(&adapter_dir, &tiny_config).unwrap();
    let with_adapter = run(
        &tiny_config,
        &tiny_weights,
        Some(&adapter),
        Isa::Portable,
        1,
        0,
    );
    let without = run(&tiny_config, &tiny_weights, None, Isa::Portable, 1, 0);
    assert_ne!(with_adapter.1, without.1, "the adapter changes the logits");
    for isa in Isa::supported() {
        for (threads, chunk) in [(1, 3), (2, 0), (4, 7)] {
            assert_eq!(
                run(
                    &tiny_config,
                    &tiny_weights,
                    Some(&adapter),
                    isa,
                    threads,
                    chunk
                ),
                with_adapter,
                "with adapter: {isa:?}, {threads} threads, chunks of {chunk}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = model(dir.path(), Preset::Tiny);
    let options = EngineOptions {
        isa: Isa::detect(),
        threads: 1,
        max_positions: 8,
    };
    let engine = Engine::new(config.clone(), weights, options).unwrap();
    assert!(generate_greedy(&engine, None, &[], 4, 0).is_err());
    let vocab = config.vocab_size as u32;
    let err = generate_greedy(&engine, None, &[vocab], 4, 0).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    let err = generate_greedy(&engine, None, &[1; 9], 1, 0).unwrap_err();
    assert!(err.to_string().contains("positions"), "{err}");
    // Room for the prompt but not the whole generation: an error, not a panic.
    assert!(generate_greedy(&engine, None, &[1; 6], 10, 0).is_err());
}

#[test]
fn sampled_generation_is_the_same_for_every_thread_count_isa_and_chunking() {
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = model(dir.path(), Preset::Tiny);
    let sampling = Sampling::Sample {
        temperature: 1.3,
        top_k: 40,
        top_p: 0.9,
        seed: 99,
    };
    let prompt: Vec<u32> = (0..20)
        .map(|i| (i * 13 + 3) % config.vocab_size as u32)
        .collect();
    let go = |isa, threads, chunk| {
        let options = EngineOptions {
            isa,
            threads,
            max_positions: 64,
        };
        let engine = Engine::new(config.clone(), weights.clone(), options).unwrap();
        bits(&generate(&engine, None, &prompt, 16, chunk, &sampling).unwrap())
    };
    let reference = go(Isa::Portable, 1, 0);
    for isa in Isa::supported() {
        for (threads, chunk) in [(1, 0), (2, 4), (4, 1)] {
            assert_eq!(
                go(isa, threads, chunk),
                reference,
                "{isa:?} {threads} threads chunk {chunk}"
            );
        }
    }
}

//! LoRA training throughput (issue "LoRA fine-tuning"): trained tokens/s on the `small`
//! and `smollm2-135m` presets, and the ratio to forward-only (prefill) tokens/s of the same
//! sequences on the same engine, measured in the same run.
//!
//! Run: `cargo bench -p olc-gpu --bench train` (OLC_BENCH_THREADS sets the thread count).

use std::time::Instant;

use olc_gpu::engine::{BatchItem, Engine, EngineOptions};
use olc_gpu::model::{Checkpoint, LinearModule, Preset, write_checkpoint};
use olc_gpu::train::{Budget, Example, Hyper, LoraSpec, Trainer, init_adapter};

const SEQ: usize = 128;
const BATCH: usize = 4;

fn examples(vocab: usize) -> Vec<Example> {
    (0..BATCH)
        .map(|s| Example {
            record: s,
            tokens: (0..SEQ)
                .map(|i| ((i * 131 + s * 17 + 1) % vocab) as u32)
                .collect(),
            trained_from: 0,
        })
        .collect()
}

fn prefill_tokens_per_s(engine: &Engine, examples: &[Example], rounds: usize) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let mut caches: Vec<_> = examples.iter().map(|_| engine.new_cache()).collect();
        let mut items: Vec<BatchItem<'_>> = examples
            .iter()
            .zip(caches.iter_mut())
            .map(|(e, cache)| BatchItem {
                tokens: &e.tokens,
                cache,
                adapter: None,
            })
            .collect();
        let start = Instant::now();
        engine.forward_batch(&mut items, false).expect("prefill");
        best = best.min(start.elapsed().as_secs_f64());
    }
    (examples.len() * SEQ) as f64 / best
}

fn train_tokens_per_s(engine: &Engine, examples: &[Example], targets: &[LinearModule]) -> f64 {
    let spec = LoraSpec {
        rank: 8,
        alpha: 16.0,
        targets: targets.to_vec(),
    };
    let adapter = init_adapter(&spec, engine.config(), 1).expect("adapter");
    let hyper = Hyper {
        lora: spec,
        lr: 1e-3,
        batch: BATCH,
        grad_accum: 1,
        budget: Budget::Steps(3),
        ..Hyper::default()
    };
    let trainer = Trainer::new(engine);
    let mut best = f64::INFINITY;
    trainer
        .train(examples, adapter, &hyper, |r| {
            // The first step also pays for first-touch page faults of every buffer.
            if r.step > 1 {
                best = best.min(r.elapsed.as_secs_f64());
            }
            true
        })
        .expect("train");
    (examples.len() * SEQ) as f64 / best
}

fn main() {
    let threads = std::env::var("OLC_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("{BATCH} sequences of {SEQ} tokens, rank 8, {threads} threads");
    for preset in [Preset::Small, Preset::Smollm2_135m] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_checkpoint(dir.path(), preset, 1).expect("checkpoint");
        let ck = Checkpoint::load(dir.path()).expect("load");
        let options = EngineOptions {
            threads,
            max_positions: SEQ,
            ..EngineOptions::default()
        };
        let engine = Engine::new(ck.config, ck.weights, options).expect("engine");
        let ex = examples(engine.config().vocab_size);
        let prefill = prefill_tokens_per_s(&engine, &ex, 3);
        for (label, targets) in [
            ("q,v", &[LinearModule::QProj, LinearModule::VProj][..]),
            ("all 7", &LinearModule::ALL[..]),
        ] {
            let train = train_tokens_per_s(&engine, &ex, targets);
            println!(
                "{:>13} targets {label:>5}: train {train:>8.1} tokens/s, prefill {prefill:>8.1} tokens/s, ratio {:.3}",
                preset.name(),
                train / prefill
            );
        }
    }
}

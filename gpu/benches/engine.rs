//! Engine throughput on the smollm2-135m preset (issue "The inference engine"):
//! prefill and decode tokens/s at batch 1 and 16, decode against the memory-bandwidth
//! bound, and a 16-sequence decode with 1, 16 and 256 distinct adapters relative to none.
//!
//! Run: `cargo bench -p olc-gpu --bench engine`.

use std::collections::BTreeMap;
use std::time::Instant;

use olc_gpu::engine::{BatchItem, Engine, EngineOptions, KvCache};
use olc_gpu::model::{
    Adapter, AdapterConfig, LinearModule, LlamaWeights, LoraWeights, Matrix, Preset,
    write_checkpoint,
};

const PROMPT: usize = 128;
const DECODE_STEPS: usize = 32;
/// Read bandwidth of both cores, measured once on these machines (see README "The machine").
const BANDWIDTH_GBS: f64 = 45.0;

fn lora(rows: usize, cols: usize, r: usize, seed: u32) -> LoraWeights {
    let fill = |n: usize, k: u32| -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ k) % 1000) as f32 * 1e-5)
            .collect()
    };
    LoraWeights {
        a: Matrix {
            rows: r,
            cols,
            data: fill(r * cols, seed),
        },
        b: Matrix {
            rows,
            cols: r,
            data: fill(rows * r, seed ^ 77),
        },
        scale: 2.0,
    }
}

fn adapter(engine: &Engine, seed: u32) -> Adapter {
    let c = engine.config();
    let mut modules = BTreeMap::new();
    for l in 0..c.num_hidden_layers {
        for (m, rows, cols) in [
            (LinearModule::QProj, c.q_dim(), c.hidden_size),
            (
                LinearModule::VProj,
                c.num_key_value_heads * c.head_dim,
                c.hidden_size,
            ),
        ] {
            modules.insert((l, m), lora(rows, cols, 16, seed + l as u32));
        }
    }
    let json = br#"{"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]}"#;
    let config =
        AdapterConfig::from_json_bytes(json, std::path::Path::new("bench")).expect("config");
    Adapter { config, modules }
}

fn prompts(n: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|s| {
            (0..PROMPT)
                .map(|i| ((i * 131 + s * 17 + 1) % vocab) as u32)
                .collect()
        })
        .collect()
}

/// Prefills `n` sequences together; returns (tokens/s, caches).
fn prefill(engine: &Engine, n: usize, adapters: &[Option<&Adapter>]) -> (f64, Vec<KvCache>) {
    let ps = prompts(n, engine.config().vocab_size);
    let mut caches: Vec<KvCache> = (0..n).map(|_| engine.new_cache()).collect();
    let start = Instant::now();
    let mut items: Vec<BatchItem<'_>> = ps
        .iter()
        .zip(caches.iter_mut())
        .enumerate()
        .map(|(s, (p, cache))| BatchItem {
            tokens: p,
            cache,
            adapter: adapters[s % adapters.len()],
        })
        .collect();
    engine.forward_batch(&mut items, false).expect("prefill");
    let secs = start.elapsed().as_secs_f64();
    ((n * PROMPT) as f64 / secs, caches)
}

/// Decodes DECODE_STEPS tokens for every sequence; `adapter_for(step, s)` picks each
/// sequence's adapter. Returns tokens/s.
fn decode<'a>(
    engine: &Engine,
    caches: &mut [KvCache],
    adapter_for: impl Fn(usize, usize) -> Option<&'a Adapter>,
) -> f64 {
    let n = caches.len();
    let tokens: Vec<u32> = (0..n as u32).map(|s| 5 + s).collect();
    let start = Instant::now();
    for step in 0..DECODE_STEPS {
        let mut items: Vec<BatchItem<'_>> = caches
            .iter_mut()
            .enumerate()
            .map(|(s, cache)| BatchItem {
                tokens: std::slice::from_ref(&tokens[s]),
                cache,
                adapter: adapter_for(step, s),
            })
            .collect();
        engine.forward_batch(&mut items, false).expect("decode");
    }
    (n * DECODE_STEPS) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_checkpoint(dir.path(), Preset::Smollm2_135m, 0).expect("checkpoint");
    let weights = LlamaWeights::load(dir.path(), &config).expect("weights");
    let params = config.parameter_count();
    let options = EngineOptions {
        max_positions: PROMPT + DECODE_STEPS + 1,
        ..EngineOptions::default()
    };
    let engine = Engine::new(config, weights, options).expect("engine");
    println!(
        "engine benchmark: smollm2-135m preset ({params} parameters, f32), {:?}, {} threads",
        engine.options().isa,
        engine.options().threads
    );
    println!();
    println!("| measure | tokens/s |");
    println!("| --- | ---: |");
    let none: [Option<&Adapter>; 1] = [None];
    let mut decode_1 = 0.0;
    for n in [1usize, 16] {
        let (pf, mut caches) = prefill(&engine, n, &none);
        println!("| prefill, batch {n} ({PROMPT}-token prompts) | {pf:.0} |");
        let d = decode(&engine, &mut caches, |_, _| None);
        println!("| decode, batch {n} | {d:.0} |");
        if n == 1 {
            decode_1 = d;
        }
    }
    // A decode step at batch 1 must read every weight once (the tied head counted once).
    let bytes = params as f64 * 4.0;
    let bound = BANDWIDTH_GBS * 1e9 / bytes;
    println!();
    println!(
        "decode batch 1: {decode_1:.1} tokens/s; bandwidth bound {bound:.1} tokens/s \
         ({:.0} MB per step at {BANDWIDTH_GBS} GB/s): {:.2}x the bound's step time",
        bytes / 1e6,
        bound / decode_1
    );

    let pool: Vec<Adapter> = (0..256).map(|i| adapter(&engine, i * 7919)).collect();
    println!();
    println!("| 16-sequence decode | tokens/s | vs no adapters |");
    println!("| --- | ---: | ---: |");
    let (_, mut caches) = prefill(&engine, 16, &none);
    let base = decode(&engine, &mut caches, |_, _| None);
    println!("| no adapters | {base:.0} | 1.00 |");
    for distinct in [1usize, 16, 256] {
        let (_, mut caches) = prefill(&engine, 16, &none);
        // With 256 adapters for 16 sequences, each step gives every sequence another one.
        let d = decode(&engine, &mut caches, |step, s| {
            Some(&pool[(step * 16 + s) % distinct])
        });
        println!(
            "| {distinct} distinct adapters (r 16 on q, v) | {d:.0} | {:.2} |",
            d / base
        );
    }
}

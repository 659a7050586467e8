//! Serving throughput on the smollm2-135m preset (issue "Serving"): what the batcher
//! delivers to concurrent generations against the engine's own batched decode, and the
//! cost of every generation carrying its own adapter.
//!
//! - **scheduler vs engine**: 32 generations started together through a resident model's
//!   batcher (threads calling `generate_served`, as 32 inference jobs do) against
//!   `generate_batch` over the same 32 requests in one call. Both include the prefill of
//!   the 32 prompts. Ratio target: >= 0.85.
//! - **1,024 adapters vs none**: 32 concurrent streams each run 32 generations in a row,
//!   every one of the 1,024 with an adapter of its own (rank 16 on q and v), against the
//!   same load with no adapter. Ratio target: >= 0.9.
//!
//! Run: `cargo bench -p olc-exec --bench serving`. `OLC_BENCH_THREADS=n` sets the
//! engine's threads (default: every available core).

use std::sync::{Arc, Barrier};
use std::time::Instant;

use olc_exec::infer::{EngineChoice, GenerateRequest, generate_served};
use olc_exec::serve::schedule::ScheduleLimits;
use olc_exec::{ExecError, LoadedModel, Resident};
use olc_gpu::compute::Isa;
use olc_gpu::engine::{Request, Sampling, generate_batch};
use olc_gpu::model::{Adapter, Preset, write_checkpoint};
use olc_protocol::{ContentId, Prompt, Sampling as JobSampling};
use olc_testkit::models::random_adapter;

const STREAMS: usize = 32;
const PROMPT: usize = 16;
const DECODE: usize = 64;
const ROUNDS: usize = 3;
const ADAPTERS: usize = 1024;
const ADAPTER_TOKENS: usize = 16;

fn threads() -> usize {
    std::env::var("OLC_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn prompt(i: usize, vocab: usize) -> Vec<u32> {
    (0..PROMPT)
        .map(|j| ((i * 7919 + j * 104_729) % (vocab - 1) + 1) as u32)
        .collect()
}

fn never() -> Option<ExecError> {
    None
}

/// Runs `per_stream` generations one after another on each of `STREAMS` threads started
/// together; returns the generated tokens per second over the whole.
fn served(
    resident: &Resident,
    per_stream: usize,
    max_tokens: usize,
    adapter: &(dyn Fn(usize) -> Option<(ContentId, Arc<Adapter>)> + Sync),
) -> f64 {
    let vocab = resident.model.engine.config().vocab_size;
    let start = Barrier::new(STREAMS + 1);
    let (tokens, seconds) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..STREAMS)
            .map(|stream| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    let mut tokens = 0;
                    for k in 0..per_stream {
                        let i = stream * per_stream + k;
                        let p = Prompt::Tokens(prompt(i, vocab));
                        let g = generate_served(
                            resident,
                            &GenerateRequest {
                                model_dir: std::path::Path::new("unused"),
                                adapter_dir: None,
                                prompt: &p,
                                sampling: JobSampling::Greedy,
                                seed: 0,
                                max_tokens: max_tokens as u32,
                            },
                            adapter(i),
                            &never,
                            &mut (),
                        )
                        .expect("generation");
                        tokens += g.tokens.len();
                    }
                    tokens
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        let tokens: usize = handles.into_iter().map(|h| h.join().expect("stream")).sum();
        (tokens, t0.elapsed().as_secs_f64())
    });
    tokens as f64 / seconds
}

fn main() {
    let threads = threads();
    let dir = tempfile::tempdir().expect("tempdir");
    write_checkpoint(dir.path(), Preset::Smollm2_135m, 1).expect("model");
    let choice = EngineChoice {
        isa: Isa::detect(),
        threads,
        prefill_chunk: 0,
    };
    let limits = ScheduleLimits {
        max_batch: STREAMS,
        ..ScheduleLimits::default()
    };
    let resident = Resident::start(
        LoadedModel::load(dir.path(), &choice, usize::MAX).expect("load"),
        limits,
    )
    .expect("batcher");
    let engine = &resident.model.engine;
    let vocab = engine.config().vocab_size;
    println!("smollm2-135m preset, {threads} threads, {STREAMS} streams, prompts of {PROMPT}");

    // The engine's own batch: no EOS is ever sampled from this random model's greedy
    // logits in practice, and both sides count the tokens actually generated.
    let prompts: Vec<Vec<u32>> = (0..STREAMS).map(|i| prompt(i, vocab)).collect();
    let (mut engine_best, mut served_best) = (0.0f64, 0.0f64);
    for _ in 0..ROUNDS {
        let requests: Vec<Request<'_>> = prompts
            .iter()
            .map(|p| Request {
                prompt: p,
                adapter: None,
                sampling: Sampling::Greedy,
                max_tokens: DECODE,
            })
            .collect();
        let t0 = Instant::now();
        let out = generate_batch(engine, &requests, 0).expect("batch");
        let tokens: usize = out.iter().map(|g| g.tokens.len()).sum();
        engine_best = engine_best.max(tokens as f64 / t0.elapsed().as_secs_f64());
        served_best = served_best.max(served(&resident, 1, DECODE, &|_| None));
    }
    println!(
        "engine generate_batch, {STREAMS} x {DECODE} tokens: {engine_best:.1} tokens/s (best of {ROUNDS})"
    );
    println!(
        "batcher, {STREAMS} concurrent generations:     {served_best:.1} tokens/s (best of {ROUNDS})"
    );
    println!("ratio scheduler / engine: {:.3}", served_best / engine_best);

    let config = engine.config().clone();
    let t0 = Instant::now();
    let adapters: Vec<(ContentId, Arc<Adapter>)> = (0..ADAPTERS)
        .map(|i| {
            let id = ContentId::of(&(i as u64).to_le_bytes());
            (id, Arc::new(random_adapter(&config, 16, i as u64)))
        })
        .collect();
    println!(
        "built {ADAPTERS} adapters (rank 16, q and v) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let per_stream = ADAPTERS / STREAMS;
    let none = served(&resident, per_stream, ADAPTER_TOKENS, &|_| None);
    let with = served(&resident, per_stream, ADAPTER_TOKENS, &|i| {
        let (id, a) = &adapters[i];
        Some((*id, a.clone()))
    });
    println!(
        "{STREAMS} streams x {per_stream} generations of {ADAPTER_TOKENS} tokens, no adapter: {none:.1} tokens/s"
    );
    println!(
        "the same, each of the {ADAPTERS} with its own adapter:            {with:.1} tokens/s"
    );
    println!("ratio adapters / none: {:.3}", with / none);
}

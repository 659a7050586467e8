//! Engine throughput on the smollm2-135m preset (issue "The inference engine"):
//! prefill and decode tokens/s at batch 1 and 16, decode against the memory-bandwidth
//! bound, and a 16-sequence decode with 1, 16 and 256 distinct adapters relative to none.
//!
//! Run: `cargo bench -p olc-gpu --bench engine`. `OLC_BENCH_THREADS=n` sets the engine's
//! thread count (default: every available core); `OLC_BENCH_CPU_TIME=1` times by the
//! process's CPU time instead of the wall clock (see [`Clock`]). The bandwidth bound is
//! measured in the same run (see [`read_bandwidth`]) and also given against the nominal
//! 45 GB/s.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use olc_gpu::compute::{AlignedVec, AttentionShape, Backend, KvView, QueryRow};
use olc_gpu::engine::{BatchItem, Engine, EngineOptions, KvCache};
use olc_gpu::model::{
    Adapter, AdapterConfig, LinearModule, LlamaWeights, LoraWeights, Matrix, Preset,
    write_checkpoint,
};

const PROMPT: usize = 128;
const DECODE_STEPS: usize = 32;
/// Prefill and decode at batch 1 and 16 are timed this many times; the best is reported.
const ROUNDS: usize = 3;
/// Read bandwidth of both cores quoted for these machines (an AMD EPYC); the bench also
/// measures this machine's own.
const NOMINAL_BANDWIDTH_GBS: f64 = 45.0;
/// The probe's buffer: far larger than the last-level cache (480 MiB reported here), so
/// that every pass comes from DRAM.
const PROBE_BYTES: usize = 1 << 30;
const PROBE_RUNS: usize = 3;

/// Best read bandwidth in GB/s over `PROBE_RUNS` passes of `threads` threads, each
/// streaming its own contiguous share of `buf` with 64-byte AVX-512 loads into eight
/// independent accumulators (so neither add latency nor one stream limits it). Falls back
/// to a scalar-friendly sum without AVX-512. `buf` is an `AlignedVec`, so it sits on huge
/// pages like the engine's weights: the bound gets every advantage decode gets.
fn read_bandwidth(buf: &[f32], threads: usize) -> f64 {
    let share = buf.len() / threads / 128 * 128;
    let mut best = f64::INFINITY;
    for _ in 0..PROBE_RUNS {
        let start = Instant::now();
        std::thread::scope(|s| {
            for part in buf.chunks(share).take(threads) {
                s.spawn(move || black_box(stream_sum(part)));
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    (share * threads * 4) as f64 / best / 1e9
}

fn stream_sum(part: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected just above.
        return unsafe { stream_sum_avx512(part) };
    }
    part.chunks(16)
        .fold([0.0f32; 16], |mut acc, c| {
            acc.iter_mut().zip(c).for_each(|(a, x)| *a += x);
            acc
        })
        .iter()
        .sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn stream_sum_avx512(part: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 8];
    for block in part.chunks_exact(128) {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: the block has 128 floats, so lanes 16j..16j+16 are in bounds.
            *a = _mm512_add_ps(*a, unsafe { _mm512_loadu_ps(block.as_ptr().add(16 * j)) });
        }
    }
    acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
}

/// A clock for timing: wall time, or with `OLC_BENCH_CPU_TIME=1` the process's CPU time
/// (user and system, all threads), which other tenants of a loaded machine barely move. It
/// only makes sense at one thread: idle pool threads spin, which counts as CPU time.
struct Clock {
    cpu: bool,
}

impl Clock {
    fn new() -> Self {
        Self {
            cpu: std::env::var("OLC_BENCH_CPU_TIME").is_ok_and(|v| v == "1"),
        }
    }

    fn now(&self) -> f64 {
        if !self.cpu {
            static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            return START.get_or_init(Instant::now).elapsed().as_secs_f64();
        }
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        unsafe extern "C" {
            fn clock_gettime(clock: i32, t: *mut Timespec) -> i32;
        }
        const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
        let mut t = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `t` is a valid timespec for the call to fill.
        unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut t) };
        t.sec as f64 + t.nsec as f64 * 1e-9
    }
}

fn lora(rows: usize, cols: usize, r: usize, seed: u32) -> LoraWeights {
    let fill = |n: usize, k: u32| -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ k) % 1000) as f32 * 1e-5)
            .collect()
    };
    LoraWeights {
        a: Matrix::f32(r, cols, fill(r * cols, seed)),
        b: Matrix::f32(rows, r, fill(rows * r, seed ^ 77)),
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
    let clock = Clock::new();
    let start = clock.now();
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
    let secs = clock.now() - start;
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
    let clock = Clock::new();
    let start = clock.now();
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
    (n * DECODE_STEPS) as f64 / (clock.now() - start)
}

/// Where a batch-`n` decode step's time goes: the step's ops replayed one by one on the
/// engine's own backend and weights, with caches of `PROMPT` positions, each op timed on
/// its own (`OLC_BENCH_ONLY=phases`). The replay's total is set against the engine's own
/// step time, so what the replay misses (bookkeeping between ops) shows up as the gap.
fn phases(engine: &Engine, n: usize) {
    let c = engine.config();
    let b = engine.backend();
    let (hidden, inter, vocab) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
    let layers = c.num_hidden_layers;
    let eps = c.rms_norm_eps as f32;
    let cap = PROMPT + DECODE_STEPS + 1;
    let fill = |len: usize, k: u32| -> Vec<f32> {
        (0..len)
            .map(|i| ((((i as u32).wrapping_mul(2_654_435_761) ^ k) % 2000) as f32 - 1000.0) * 1e-3)
            .collect()
    };
    let mut kv: Vec<Vec<(Vec<f32>, Vec<f32>)>> = (0..n)
        .map(|s| {
            (0..layers)
                .map(|l| {
                    let seed = (s * 97 + l) as u32;
                    (fill(cap * kv_dim, seed), fill(cap * kv_dim, seed ^ 0x5555))
                })
                .collect()
        })
        .collect();
    let shape = AttentionShape {
        heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
    };
    let names = [
        "embed",
        "rmsnorm x2",
        "q matmul",
        "rope + cache write",
        "attention",
        "o matmul",
        "gate/up matmul",
        "swiglu",
        "down matmul",
        "residual adds",
        "final norm",
        "lm head matmul",
        "logits alloc + copy out",
        "k matmul",
        "v matmul",
    ];
    let mut t = [0.0f64; 15];
    let steps = DECODE_STEPS;
    let tokens: Vec<u32> = (0..n as u32).map(|s| 5 + s).collect();
    let mut x = AlignedVec::zeros(n * hidden);
    let mut xn = AlignedVec::zeros(n * hidden);
    let mut q = AlignedVec::zeros(n * q_dim);
    let mut k = AlignedVec::zeros(n * kv_dim);
    let mut v = AlignedVec::zeros(n * kv_dim);
    let mut attn = AlignedVec::zeros(n * q_dim);
    let mut proj = AlignedVec::zeros(n * hidden);
    let mut gate = AlignedVec::zeros(n * inter);
    let mut up = AlignedVec::zeros(n * inter);
    let mut act = AlignedVec::zeros(n * inter);
    let w = engine.weights();
    use olc_gpu::model::LinearModule as M;
    let total = b
        .run(|| {
            let start = Instant::now();
            for step in 0..steps {
                let pos = PROMPT + step;
                let mut lap = Instant::now();
                let mut mark = |i: usize, t: &mut [f64; 15]| {
                    let now = Instant::now();
                    t[i] += (now - lap).as_secs_f64();
                    lap = now;
                };
                b.embed(engine.embedding_table(), &tokens, &mut x)
                    .expect("phase");
                mark(0, &mut t);
                for l in 0..layers {
                    let lw = &w.layers[l];
                    b.rmsnorm(&x, &lw.input_layernorm, eps, &mut xn)
                        .expect("phase");
                    mark(1, &mut t);
                    b.matmul(
                        &xn,
                        n,
                        engine.linear(l, M::QProj).expect("phase"),
                        None,
                        &mut q,
                    )
                    .expect("phase");
                    mark(2, &mut t);
                    b.matmul(
                        &xn,
                        n,
                        engine.linear(l, M::KProj).expect("phase"),
                        None,
                        &mut k,
                    )
                    .expect("phase");
                    mark(13, &mut t);
                    b.matmul(
                        &xn,
                        n,
                        engine.linear(l, M::VProj).expect("phase"),
                        None,
                        &mut v,
                    )
                    .expect("phase");
                    mark(14, &mut t);
                    for s in 0..n {
                        b.rope(
                            engine.rope(),
                            pos,
                            q_dim,
                            &mut q[s * q_dim..(s + 1) * q_dim],
                        )
                        .expect("phase");
                        b.rope(
                            engine.rope(),
                            pos,
                            kv_dim,
                            &mut k[s * kv_dim..(s + 1) * kv_dim],
                        )
                        .expect("phase");
                        let (ck, cv) = &mut kv[s][l];
                        ck[pos * kv_dim..(pos + 1) * kv_dim]
                            .copy_from_slice(&k[s * kv_dim..(s + 1) * kv_dim]);
                        cv[pos * kv_dim..(pos + 1) * kv_dim]
                            .copy_from_slice(&v[s * kv_dim..(s + 1) * kv_dim]);
                    }
                    mark(3, &mut t);
                    let views: Vec<KvView<'_>> = kv
                        .iter()
                        .map(|seq| KvView {
                            k: &seq[l].0,
                            v: &seq[l].1,
                        })
                        .collect();
                    let rows: Vec<QueryRow> = (0..n)
                        .map(|seq| QueryRow {
                            seq,
                            visible: pos + 1,
                        })
                        .collect();
                    b.attention(shape, &q, &views, &rows, &mut attn, None)
                        .expect("phase");
                    drop(views);
                    mark(4, &mut t);
                    b.matmul(
                        &attn,
                        n,
                        engine.linear(l, M::OProj).expect("phase"),
                        None,
                        &mut proj,
                    )
                    .expect("phase");
                    mark(5, &mut t);
                    x.iter_mut().zip(proj.iter()).for_each(|(a, p)| *a += *p);
                    mark(9, &mut t);
                    b.rmsnorm(&x, &lw.post_attention_layernorm, eps, &mut xn)
                        .expect("phase");
                    mark(1, &mut t);
                    b.matmul(
                        &xn,
                        n,
                        engine.linear(l, M::GateProj).expect("phase"),
                        None,
                        &mut gate,
                    )
                    .expect("phase");
                    b.matmul(
                        &xn,
                        n,
                        engine.linear(l, M::UpProj).expect("phase"),
                        None,
                        &mut up,
                    )
                    .expect("phase");
                    mark(6, &mut t);
                    b.swiglu(&gate, &up, &mut act).expect("phase");
                    mark(7, &mut t);
                    b.matmul(
                        &act,
                        n,
                        engine.linear(l, M::DownProj).expect("phase"),
                        None,
                        &mut proj,
                    )
                    .expect("phase");
                    mark(8, &mut t);
                    x.iter_mut().zip(proj.iter()).for_each(|(a, p)| *a += *p);
                    mark(9, &mut t);
                }
                let mut normed = AlignedVec::zeros(n * hidden);
                b.rmsnorm(&x, &w.norm, eps, &mut normed).expect("phase");
                mark(10, &mut t);
                let mut logits = vec![0.0f32; n * vocab];
                b.matmul(&normed, n, engine.head(), None, &mut logits)
                    .expect("phase");
                mark(11, &mut t);
                let out: Vec<Vec<f32>> = (0..n)
                    .map(|s| logits[s * vocab..(s + 1) * vocab].to_vec())
                    .collect();
                black_box(out);
                mark(12, &mut t);
            }
            start.elapsed().as_secs_f64()
        })
        .expect("phase");
    let ms = |s: f64| s * 1e3 / steps as f64;
    println!("| phase, batch {n} decode step ({PROMPT}+ positions) | ms/step | share |");
    println!("| --- | ---: | ---: |");
    for (name, s) in names.iter().zip(t) {
        println!("| {name} | {:.2} | {:.1}% |", ms(s), 100.0 * s / total);
    }
    println!("| replay total | {:.2} | |", ms(total));
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_checkpoint(dir.path(), Preset::Smollm2_135m, 0).expect("checkpoint");
    let weights = LlamaWeights::load(dir.path(), &config).expect("weights");
    let params = config.parameter_count();
    let mut options = EngineOptions {
        max_positions: PROMPT + DECODE_STEPS + 1,
        ..EngineOptions::default()
    };
    if let Some(n) = std::env::var("OLC_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options.threads = n;
    }
    let engine = Engine::new(config, weights, options).expect("engine");
    // `OLC_BENCH_ONLY=phases`: the per-op breakdown of a decode step (twice, the first
    // warming up), at batch `OLC_BENCH_PHASES_BATCH` (16), then the engine's own batch-16
    // decode for comparison unless `OLC_BENCH_PHASES_ONLY` is set.
    if std::env::var("OLC_BENCH_ONLY").is_ok_and(|v| v == "phases") {
        let n = std::env::var("OLC_BENCH_PHASES_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        for _ in 0..2 {
            phases(&engine, n);
        }
        if std::env::var("OLC_BENCH_PHASES_ONLY").is_ok() {
            return;
        }
        let prefilled = prefill(&engine, 16, &[None]).1;
        let mut best = 0.0f64;
        for _ in 0..3 {
            let mut caches = prefilled.clone();
            best = best.max(decode(&engine, &mut caches, |_, _| None));
        }
        println!(
            "engine decode, batch 16: {best:.1} tokens/s = {:.2} ms/step",
            16e3 / best
        );
        return;
    }
    // `OLC_BENCH_ONLY=decode`: only batch-1 and batch-16 decode and prefill, `ROUNDS` times
    // each, interleaved (for profiling and for before/after comparisons in one sitting).
    if std::env::var("OLC_BENCH_ONLY").is_ok_and(|v| v == "decode") {
        let none: [Option<&Adapter>; 1] = [None];
        let rounds: usize = std::env::var("OLC_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(ROUNDS);
        let prefill_rounds: usize = std::env::var("OLC_BENCH_PREFILL_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(rounds);
        let batches: Vec<usize> = std::env::var("OLC_BENCH_BATCHES")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 16]);
        for n in batches {
            let (mut pf, mut d) = (0.0f64, 0.0f64);
            let mut prefilled = Vec::new();
            for _ in 0..prefill_rounds.max(1) {
                let (p, caches) = prefill(&engine, n, &none);
                pf = pf.max(p);
                prefilled = caches;
            }
            // Every decode round starts from the same prefilled caches.
            for _ in 0..rounds {
                let mut caches = prefilled.clone();
                d = d.max(decode(&engine, &mut caches, |_, _| None));
            }
            println!("| prefill, batch {n} ({PROMPT}-token prompts) | {pf:.0} |");
            println!("| decode, batch {n} | {d:.1} |");
        }
        return;
    }
    println!(
        "engine benchmark: smollm2-135m preset ({params} parameters, f32), {:?}, {} threads",
        engine.options().isa,
        engine.options().threads
    );
    println!();
    println!("| measure | tokens/s |");
    println!("| --- | ---: |");
    let none: [Option<&Adapter>; 1] = [None];
    let threads = engine.options().threads;
    let mut probe = AlignedVec::zeros(PROBE_BYTES / 4);
    // Written first: untouched pages would all map the kernel's zero page and read from cache.
    probe
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = i as f32);
    // Best read bandwidth on 1..=threads threads, probed right after each batch-1 decode
    // round so that both see the same state of the host.
    let mut bandwidth = vec![0.0f64; threads];
    let mut decode_1 = 0.0;
    for n in [1usize, 16] {
        // Best of ROUNDS, like the bandwidth probe: other tenants of the host's memory
        // only ever slow a run down.
        let (mut pf, mut d) = (0.0f64, 0.0f64);
        for _ in 0..ROUNDS {
            let (p, mut caches) = prefill(&engine, n, &none);
            pf = pf.max(p);
            d = d.max(decode(&engine, &mut caches, |_, _| None));
            if n == 1 {
                for (t, best) in bandwidth.iter_mut().enumerate() {
                    *best = best.max(read_bandwidth(&probe, t + 1));
                }
            }
        }
        println!("| prefill, batch {n} ({PROMPT}-token prompts) | {pf:.0} |");
        println!("| decode, batch {n} | {d:.1} |");
        if n == 1 {
            decode_1 = d;
        }
    }
    drop(probe);
    // A decode step at batch 1 must read every weight once (the tied head counted once).
    let bytes = params as f64 * 4.0;
    println!();
    println!(
        "Decode batch 1 moves {:.0} MB of weights per token: {:.1} GB/s at {decode_1:.1} tokens/s.",
        bytes / 1e6,
        bytes * decode_1 / 1e9
    );
    println!();
    println!(
        "| read bandwidth | GB/s | decode bound (tokens/s) | decode vs bound (step-time ratio) |"
    );
    println!("| --- | ---: | ---: | ---: |");
    let runs = ROUNDS * PROBE_RUNS;
    let rows = bandwidth
        .iter()
        .enumerate()
        .map(|(t, &gbs)| {
            (
                format!("measured, {} thread(s), 1 GiB, best of {runs}", t + 1),
                gbs,
            )
        })
        .chain([(
            "nominal (AMD EPYC, both cores)".to_string(),
            NOMINAL_BANDWIDTH_GBS,
        )]);
    for (what, gbs) in rows {
        let bound = gbs * 1e9 / bytes;
        println!(
            "| {what} | {gbs:.1} | {bound:.1} | {:.2}x |",
            bound / decode_1
        );
    }

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

//! matmul throughput of the canonical kernels on the shapes of a 135M-parameter Llama
//! (hidden 576, intermediate 1536), printed as a markdown table.
//!
//! Run with `cargo bench -p olc-gpu --bench kernels`. Needs `harness = false` for this
//! target in gpu/Cargo.toml. The ratio columns compare with a nominal per-core FMA peak
//! (`OLC_FMA_PEAK_GFLOPS_PER_CORE`, default 80) and with the peak measured here by a loop of
//! independent AVX-512 FMAs, since a nominal figure can be off by the number of FMA ports.
//! `OLC_ISA=avx2|avx512|portable` forces a path (default: the fastest detected).
//!
//! A second table measures quantized weights (GGUF Q4_1 and Q8_0, as SmolLM2-135M's files
//! hold them) through the CPU backend, in GB/s of weight bytes read, next to f32 on the same
//! shape; a third streams a whole Q4_1 model's matrices once per token, as a batch-1 decode
//! does, which is the figure to compare with memory bandwidth (single matrices may sit in
//! cache).
// Until `harness = false` is declared, libtest supplies `main` and ours goes unused.
#![cfg_attr(test, allow(dead_code))]

use std::hint::black_box;
use std::time::{Duration, Instant};

use olc_gpu::compute::{
    AlignedVec, Backend, CpuBackend, CpuWeights, HostWeights, Isa, QuantType, WeightShape, matmul,
};

/// SplitMix64, so the bench needs no extra dependency.
fn fill(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A copy of `v` starting 16 bytes past a 64-byte boundary, as a large `Vec` usually does;
/// returns the storage and the index of the first element.
fn misaligned(v: &[f32]) -> (Vec<f32>, usize) {
    let mut buf = vec![0.0f32; v.len() + 16];
    let base = buf.as_ptr() as usize;
    let start = (0..16).find(|i| (base + 4 * i) % 64 == 16).unwrap_or(0);
    buf[start..start + v.len()].copy_from_slice(v);
    (buf, start)
}

/// Best time of several repetitions, each long enough (≥ 20 ms) to dwarf timer noise.
fn best_time(mut f: impl FnMut()) -> Duration {
    f();
    let mut best = Duration::MAX;
    for _ in 0..7 {
        let mut iters = 0u32;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(20) || iters == 0 {
            f();
            iters += 1;
        }
        best = best.min(start.elapsed() / iters);
    }
    best
}

/// GFLOP/s of one core running nothing but independent 512-bit FMAs (0 without AVX-512).
fn measured_fma_peak_per_core() -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        const ITERS: u64 = 20_000_000;
        let t = best_time(|| {
            // SAFETY: AVX-512F was detected just above.
            black_box(unsafe { fma_loop(ITERS) });
        });
        // 12 accumulators × 16 lanes × 2 flops per iteration.
        return (ITERS * 12 * 16 * 2) as f64 / t.as_secs_f64() / 1e9;
    }
    0.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_loop(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    // Twelve independent chains hide the FMA latency on two ports.
    let mut acc = [_mm512_set1_ps(0.0); 12];
    let a = _mm512_set1_ps(black_box(0.999_999));
    let b = _mm512_set1_ps(black_box(1e-7));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let peak_per_core: f64 = std::env::var("OLC_FMA_PEAK_GFLOPS_PER_CORE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80.0);
    let (k, cols) = (576usize, 1536usize);
    let w = fill(1, cols * k);
    // OLC_ISA=avx2|portable measures a slower path on a machine that has a faster one.
    let isa = match std::env::var("OLC_ISA").as_deref() {
        Ok("avx2") => Isa::Avx2,
        Ok("portable") => Isa::Portable,
        Ok("avx512") => Isa::Avx512,
        _ => Isa::detect(),
    };
    let measured = measured_fma_peak_per_core();
    println!(
        "ISA: {isa:?}; nominal FMA peak {peak_per_core} GFLOP/s per core; \
         measured FMA-loop peak {measured:.1} GFLOP/s per core\n"
    );
    println!(
        "| shape (x · Wᵀ) | threads | time (µs) | GFLOP/s | % of nominal peak | % of measured peak |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let w_aligned = AlignedVec::from_slice(&w);
    // The engine keeps weights and activations 64-byte aligned (see `AlignedVec`); the
    // last rows show what operands 16 bytes past a cache line (like a large `Vec`) cost.
    let cases = [(128usize, true), (16, true), (1, true), (128, false)];
    for (rows, aligned) in cases {
        let x = fill(2, rows * k);
        let x_aligned = AlignedVec::from_slice(&x);
        let x_off = misaligned(&x);
        let w_off = misaligned(&w);
        let (xs, ws): (&[f32], &[f32]) = if aligned {
            (&x_aligned, &w_aligned)
        } else {
            (
                &x_off.0[x_off.1..][..x.len()],
                &w_off.0[w_off.1..][..w.len()],
            )
        };
        let mut out = AlignedVec::zeros(rows * cols);
        for threads in [1usize, 2] {
            let t = best_time(|| {
                let r = matmul(
                    isa,
                    threads,
                    black_box(xs),
                    rows,
                    k,
                    black_box(ws),
                    cols,
                    None,
                    &mut out,
                );
                black_box(r).ok();
                black_box(&out);
            });
            matmul(isa, threads, xs, rows, k, ws, cols, None, &mut out)?;
            let gflops = 2.0 * (rows * cols * k) as f64 / t.as_secs_f64() / 1e9;
            let cores = threads as f64;
            let note = if aligned { "" } else { " (unaligned)" };
            println!(
                "| [{rows},{k}]·[{cols},{k}]ᵀ{note} | {threads} | {:.1} | {gflops:.1} | {:.0}% | {:.0}% |",
                t.as_secs_f64() * 1e6,
                100.0 * gflops / (peak_per_core * cores),
                100.0 * gflops / (measured * cores),
            );
        }
    }
    quantized(isa)?;
    Ok(())
}

/// Random blocks of `ty` with a fixed ordinary f16 scale (speed does not depend on values).
fn blocks(
    seed: u64,
    ty: QuantType,
    rows: usize,
    cols: usize,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let n = ty.matrix_bytes(rows, cols)?;
    let mut data: Vec<u8> = fill(seed, n)
        .into_iter()
        .map(|v| (v * 127.0) as i8 as u8)
        .collect();
    let fields: &[usize] = match ty {
        QuantType::Q4_1 => &[0, 2],
        _ => &[0],
    };
    for b in data.chunks_exact_mut(ty.block_bytes()) {
        for &at in fields {
            b[at..at + 2].copy_from_slice(&0x2c00u16.to_le_bytes());
        }
    }
    Ok(data)
}

fn host(
    seed: u64,
    ty: QuantType,
    rows: usize,
    cols: usize,
) -> Result<HostWeights, Box<dyn std::error::Error>> {
    Ok(match ty {
        QuantType::F32 => HostWeights::f32(rows, cols, fill(seed, rows * cols)),
        _ => HostWeights::quantized(ty, rows, cols, blocks(seed, ty, rows, cols)?),
    })
}

fn weight_bytes(w: &CpuWeights) -> usize {
    w.resident_bytes()
}

/// Quantized matmul through the backend (inside its pool, as the engine calls it).
fn quantized(isa: Isa) -> Result<(), Box<dyn std::error::Error>> {
    println!("\n| weights (x · Wᵀ) | type | rows | threads | time (µs) | weight GB/s | vs f32 |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let shapes = [
        (1536usize, 576usize, "gate/up"),
        (576, 1536, "down"),
        (49152, 576, "LM head"),
    ];
    for (cols, k, name) in shapes {
        for rows in [1usize, 16] {
            let x = AlignedVec::from_slice(&fill(3, rows * k));
            for threads in [1usize, 2] {
                let backend = CpuBackend::new(isa, threads)?;
                let mut f32_time = None;
                for ty in [QuantType::F32, QuantType::Q8_0, QuantType::Q4_1] {
                    let w = backend.load_weights(vec![host(4, ty, cols, k)?])?;
                    let w = &w[0];
                    let mut out = AlignedVec::zeros(rows * cols);
                    let t = best_time(|| {
                        let r =
                            backend.run(|| backend.matmul(black_box(&x), rows, w, None, &mut out));
                        black_box(r).ok();
                        black_box(&out);
                    });
                    let f32_t = *f32_time.get_or_insert(t);
                    let gbs = weight_bytes(w) as f64 / t.as_secs_f64() / 1e9;
                    println!(
                        "| [{cols},{k}] {name} | {ty} | {rows} | {threads} | {:.1} | {gbs:.1} | {:.2}× |",
                        t.as_secs_f64() * 1e6,
                        f32_t.as_secs_f64() / t.as_secs_f64(),
                    );
                }
            }
        }
    }
    // SmolLM2-135M: 30 layers of q, k, v, o, gate, up, down in Q4_1 and the tied Q8_0 head,
    // all in one arena, each read once per token.
    let (hidden, kv, inter, vocab, layers) = (576usize, 192usize, 1536usize, 49152usize, 30);
    let mut mats = Vec::new();
    for l in 0..layers as u64 {
        for (i, (r, c)) in [
            (hidden, hidden),
            (kv, hidden),
            (kv, hidden),
            (hidden, hidden),
            (inter, hidden),
            (inter, hidden),
            (hidden, inter),
        ]
        .into_iter()
        .enumerate()
        {
            mats.push(host(10 * l + i as u64, QuantType::Q4_1, r, c)?);
        }
    }
    mats.push(host(7, QuantType::Q8_0, vocab, hidden)?);
    println!(
        "\n| whole Q4_1 model, one decode step of matmuls | rows | threads | ms/token | MB read | weight GB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for threads in [1usize, 2] {
        let backend = CpuBackend::new(isa, threads)?;
        let ws = backend.load_weights(mats.clone())?;
        let total: usize = ws.iter().map(weight_bytes).sum();
        for rows in [1usize, 16] {
            let x = AlignedVec::from_slice(&fill(5, rows * inter));
            let mut out = AlignedVec::zeros(rows * vocab);
            let t = best_time(|| {
                let r = backend.run(|| {
                    ws.iter().try_for_each(|w| {
                        let n = rows * w.rows();
                        backend.matmul(&x[..rows * w.cols()], rows, w, None, &mut out[..n])
                    })
                });
                black_box(r).ok();
                black_box(&out);
            });
            println!(
                "| SmolLM2-135M Q4_1 + Q8_0 head | {rows} | {threads} | {:.2} | {:.1} | {:.1} |",
                t.as_secs_f64() * 1e3,
                total as f64 / 1e6,
                total as f64 / t.as_secs_f64() / 1e9,
            );
        }
    }
    Ok(())
}

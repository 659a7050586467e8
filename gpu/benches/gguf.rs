//! The real Q4_1 model (SmolLM2-135M-Instruct, issue "Real checkpoints: GGUF"): decode at
//! batch 1 and a 128-token prefill, kept quantized, against the same model widened to f32
//! (`olc model import --f32`'s writer) and, when `OLC_LLAMA_CPP_PYTHON` names a Python with
//! llama-cpp-python, against llama.cpp on the same file and thread count, in the same run;
//! and the memory the loaded model takes against the file's size.
//!
//! Run: `./deploy/fetch-smollm2.sh && cargo bench -p olc-gpu --bench gguf`.
//! `OLC_BENCH_THREADS=n` sets the thread count for both engines (default 2).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Instant;

use olc_gpu::compute::{Backend, Isa};
use olc_gpu::engine::{Engine, EngineOptions};
use olc_gpu::model::export::Weights;
use olc_gpu::model::{Checkpoint, gguf};

const PROMPT: usize = 128;
const DECODE: usize = 128;
const ROUNDS: usize = 3;

/// The process's resident memory in bytes (`VmRSS`), 0 where /proc is not there.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|kb| kb.trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Best prefill tokens/s of a `PROMPT`-token prompt, and best decode tokens/s of `DECODE`
/// greedy tokens after an 8-token prompt, over `ROUNDS` runs each.
fn speed(engine: &Engine, prompt: &[u32]) -> (f64, f64) {
    let mut prefill = 0.0f64;
    let mut decode = 0.0f64;
    for _ in 0..ROUNDS {
        let mut cache = engine.new_cache();
        let t = Instant::now();
        let logits = engine
            .forward(prompt, &mut cache, None, false)
            .expect("prefill");
        prefill = prefill.max(prompt.len() as f64 / t.elapsed().as_secs_f64());
        std::hint::black_box(logits);

        let mut cache = engine.new_cache();
        let mut next = argmax(
            &engine
                .forward(&prompt[..8], &mut cache, None, false)
                .expect("prompt"),
        );
        let t = Instant::now();
        for _ in 0..DECODE {
            next = argmax(
                &engine
                    .forward(&[next], &mut cache, None, false)
                    .expect("decode"),
            );
        }
        decode = decode.max(DECODE as f64 / t.elapsed().as_secs_f64());
    }
    (prefill, decode)
}

fn engine(ck: Checkpoint, threads: usize) -> Engine {
    let options = EngineOptions {
        isa: Isa::detect(),
        threads,
        max_positions: PROMPT + DECODE + 16,
    };
    Engine::new(ck.config, ck.weights, options).expect("engine")
}

/// llama.cpp's (prefill, decode) tokens/s from gpu/benches/llama_cpp_bench.py, best of its runs.
fn llama_cpp(python: &str, model: &Path, threads: usize) -> Option<(f64, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/llama_cpp_bench.py");
    let out = std::env::temp_dir().join(format!("olc-llama-cpp-{}.json", std::process::id()));
    let status = std::process::Command::new(python)
        .arg(&script)
        .arg(model)
        .args([
            "--threads",
            &threads.to_string(),
            "--reps",
            &ROUNDS.to_string(),
        ])
        .arg("--json")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        eprintln!("llama.cpp benchmark failed: {status}");
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).ok()?).ok()?;
    let _ = std::fs::remove_file(&out);
    let best = |key: &str| {
        v[key]
            .as_array()?
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .reduce(f64::max)
    };
    Some((best("prefill_tok_s")?, best("decode_tok_s")?))
}

fn main() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let threads: usize = std::env::var("OLC_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let file_len = std::fs::metadata(&path).expect("model file").len();
    let prompt: Vec<u32> = (0..PROMPT as u32)
        .map(|i| 100 + (i * 37) % 40_000)
        .collect();

    let before = rss();
    let (ck, info) = gguf::load_with_info(&path).expect("load the GGUF");
    let quant = engine(ck, threads);
    let resident = rss().saturating_sub(before);
    println!(
        "SmolLM2-135M-Instruct Q4_1 ({} MB file), {threads} threads, {}",
        file_len / 1_000_000,
        quant.backend().name()
    );
    println!(
        "memory: loaded engine adds {} MB resident = {:.2}x the file",
        resident / 1_000_000,
        resident as f64 / file_len as f64
    );
    let (q_prefill, q_decode) = speed(&quant, &prompt);

    let dir = tempfile::tempdir().expect("temp dir");
    let (ck, _) = gguf::load_with_info(&path).expect("load the GGUF");
    olc_gpu::model::export::write_hf(dir.path(), &ck, &info, Weights::F32).expect("widen to f32");
    drop(ck);
    drop(quant);
    let wide = engine(Checkpoint::load(dir.path()).expect("load f32"), threads);
    let (f_prefill, f_decode) = speed(&wide, &prompt);
    drop(wide);

    println!("{:<22} {:>14} {:>14}", "", "prefill tok/s", "decode tok/s");
    println!(
        "{:<22} {q_prefill:>14.1} {q_decode:>14.1}",
        "OLC Q4_1 (quantized)"
    );
    println!(
        "{:<22} {f_prefill:>14.1} {f_decode:>14.1}",
        "OLC widened to f32"
    );
    println!(
        "quantized / f32: prefill {:.2}x, decode {:.2}x",
        q_prefill / f_prefill,
        q_decode / f_decode
    );
    match std::env::var("OLC_LLAMA_CPP_PYTHON") {
        Ok(python) => match llama_cpp(&python, &path, threads) {
            Some((l_prefill, l_decode)) => {
                println!(
                    "{:<22} {l_prefill:>14.1} {l_decode:>14.1}",
                    "llama.cpp Q4_1"
                );
                println!(
                    "OLC / llama.cpp: prefill {:.2}x, decode {:.2}x",
                    q_prefill / l_prefill,
                    q_decode / l_decode
                );
            }
            None => println!("llama.cpp: no result (see above)"),
        },
        Err(_) => println!(
            "llama.cpp: set OLC_LLAMA_CPP_PYTHON to a Python with llama-cpp-python to compare"
        ),
    }
}

//! Quantized models under the canonical-arithmetic contract: a model whose matrices are kept
//! as GGUF blocks gives exactly the bits of the same model widened to f32 (rule 9 then rule
//! 2), and the same bits whatever the thread count, SIMD path, prefill chunking or batch.
//! The blocks here are random bytes with finite scales, which exercises every nibble and
//! sign; the real-model test (gguf_reference.rs) checks the formats against llama.cpp files.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::path::Path;

use olc_gpu::compute::{Isa, QuantType, dequantize_row};
use olc_gpu::engine::{
    Engine, EngineOptions, Generation, Request, Sampling, generate_batch, generate_greedy,
};
use olc_gpu::model::{Adapter, LinearModule, LlamaWeights, Matrix, ModelConfig, Preset};

/// A xorshift stream: the blocks must be the same on every run.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }

    fn fill(&mut self, out: &mut [u8]) {
        out.iter_mut().for_each(|b| *b = self.next());
    }

    /// A value in [-scale, scale).
    fn float(&mut self, scale: f32) -> f32 {
        let u = u16::from_le_bytes([self.next(), self.next()]) as f32 / 65536.0;
        (2.0 * u - 1.0) * scale
    }
}

fn f16(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// One block of `ty`: random values, scales chosen so that weights stay around ±0.1 (a
/// model of random ±1 weights overflows within a few layers).
fn block(ty: QuantType, rng: &mut Bytes, out: &mut [u8]) {
    rng.fill(out);
    match ty {
        QuantType::F32 => out.copy_from_slice(&rng.float(0.1).to_le_bytes()),
        QuantType::F16 => out.copy_from_slice(&f16(rng.float(0.1))),
        QuantType::BF16 => out.copy_from_slice(&half::bf16::from_f32(rng.float(0.1)).to_le_bytes()),
        QuantType::Q8_0 => out[..2].copy_from_slice(&f16(0.0008 + rng.float(0.0004))),
        QuantType::Q4_0 => out[..2].copy_from_slice(&f16(0.012 + rng.float(0.006))),
        QuantType::Q4_1 => {
            out[..2].copy_from_slice(&f16(0.012 + rng.float(0.006)));
            out[2..4].copy_from_slice(&f16(-0.09 + rng.float(0.02)));
        }
        QuantType::Q4_K => {
            out[..2].copy_from_slice(&f16(0.0001 + rng.float(0.00005)));
            out[2..4].copy_from_slice(&f16(0.0008 + rng.float(0.0002)));
        }
        QuantType::Q6_K => {
            // Scales are signed bytes at 192..208; keep them small, and d last.
            for s in &mut out[192..208] {
                *s = ((rng.next() % 41) as i8).wrapping_sub(20) as u8;
            }
            out[208..210].copy_from_slice(&f16(0.00015 + rng.float(0.00005)));
        }
    }
}

fn quantized(rows: usize, cols: usize, ty: QuantType, rng: &mut Bytes) -> Matrix {
    let mut bytes = vec![0u8; ty.matrix_bytes(rows, cols).unwrap()];
    for b in bytes.chunks_exact_mut(ty.block_bytes()) {
        block(ty, rng, b);
    }
    Matrix::quantized(rows, cols, ty, bytes)
}

/// Replaces every matrix of `weights` (the projections, the embeddings, the LM head) by
/// random blocks: `linear` picks the type of each projection, `embed` the embeddings'.
fn requantize(
    weights: &mut LlamaWeights,
    linear: impl Fn(usize, LinearModule) -> QuantType,
    embed: QuantType,
    seed: u64,
) {
    let mut rng = Bytes(seed | 1);
    for (l, layer) in weights.layers.iter_mut().enumerate() {
        for m in LinearModule::ALL {
            let slot = match m {
                LinearModule::QProj => &mut layer.q_proj,
                LinearModule::KProj => &mut layer.k_proj,
                LinearModule::VProj => &mut layer.v_proj,
                LinearModule::OProj => &mut layer.o_proj,
                LinearModule::GateProj => &mut layer.gate_proj,
                LinearModule::UpProj => &mut layer.up_proj,
                LinearModule::DownProj => &mut layer.down_proj,
            };
            *slot = quantized(slot.rows, slot.cols, linear(l, m), &mut rng);
        }
    }
    let e = &weights.embed_tokens;
    weights.embed_tokens = quantized(e.rows, e.cols, embed, &mut rng);
    if let Some(head) = &weights.lm_head {
        weights.lm_head = Some(quantized(head.rows, head.cols, embed, &mut rng));
    }
}

/// The same model with every matrix widened to f32 by rule 9.
fn widened(weights: &LlamaWeights) -> LlamaWeights {
    let widen = |m: &Matrix| match &m.blocks {
        None => m.clone(),
        Some(b) => {
            let mut data = vec![0.0f32; m.rows * m.cols];
            let row_bytes = b.ty.row_bytes(m.cols).unwrap();
            for (out, row) in data
                .chunks_exact_mut(m.cols)
                .zip(b.bytes.chunks_exact(row_bytes))
            {
                dequantize_row(b.ty, row, out).unwrap();
            }
            Matrix::f32(m.rows, m.cols, data)
        }
    };
    let mut w = weights.clone();
    for layer in &mut w.layers {
        for m in [
            &mut layer.q_proj,
            &mut layer.k_proj,
            &mut layer.v_proj,
            &mut layer.o_proj,
            &mut layer.gate_proj,
            &mut layer.up_proj,
            &mut layer.down_proj,
        ] {
            *m = widen(m);
        }
    }
    w.embed_tokens = widen(&w.embed_tokens);
    w.lm_head = w.lm_head.as_ref().map(widen);
    w
}

fn model(preset: Preset, seed: u64) -> (ModelConfig, LlamaWeights) {
    let dir = tempfile::tempdir().unwrap();
    let config = olc_gpu::model::write_checkpoint(dir.path(), preset, seed).unwrap();
    let weights = LlamaWeights::load(dir.path(), &config).unwrap();
    (config, weights)
}

fn bits(g: &Generation) -> (Vec<u32>, Vec<u32>) {
    (
        g.tokens.clone(),
        g.logits.iter().map(|v| v.to_bits()).collect(),
    )
}

fn engine(config: &ModelConfig, weights: &LlamaWeights, isa: Isa, threads: usize) -> Engine {
    let options = EngineOptions {
        isa,
        threads,
        max_positions: 96,
    };
    Engine::new(config.clone(), weights.clone(), options).unwrap()
}

fn greedy(engine: &Engine, adapter: Option<&Adapter>, chunk: usize) -> (Vec<u32>, Vec<u32>) {
    let vocab = engine.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..29).map(|i| (i * 37 + 5) % vocab).collect();
    bits(&generate_greedy(engine, adapter, &prompt, 10, chunk).unwrap())
}

/// Every type the small preset's shapes allow (its rows are multiples of 256), one per
/// projection in turn, with a Q8_0 embedding table as SmolLM2's GGUF has.
fn mixed(l: usize, m: LinearModule) -> QuantType {
    const TYPES: [QuantType; 7] = [
        QuantType::Q4_1,
        QuantType::Q4_K,
        QuantType::Q6_K,
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::F16,
        QuantType::BF16,
    ];
    TYPES[(l * 7 + m as usize) % TYPES.len()]
}

#[test]
fn a_quantized_model_computes_exactly_its_dequantized_f32_values() {
    let (config, mut weights) = model(Preset::Small, 3);
    requantize(&mut weights, mixed, QuantType::Q8_0, 41);
    let f32_weights = widened(&weights);
    let reference = greedy(&engine(&config, &f32_weights, Isa::Portable, 1), None, 0);
    let quant = greedy(&engine(&config, &weights, Isa::Portable, 1), None, 0);
    assert_eq!(quant, reference, "blocks vs their dequantized f32 values");
    assert_eq!(quant.0.len(), 10);
    // Not a degenerate model: the logits vary and are finite.
    let logits: Vec<f32> = quant.1.iter().map(|b| f32::from_bits(*b)).collect();
    assert!(logits.iter().all(|v| v.is_finite()));
    assert!(logits.iter().any(|v| *v != logits[0]));
}

#[test]
fn quantized_models_give_the_same_bits_for_every_isa_thread_count_and_chunking() {
    for (preset, embed) in [
        (Preset::Small, QuantType::Q6_K),
        (Preset::Tiny, QuantType::Q8_0),
    ] {
        let (config, mut weights) = model(preset, 9);
        // The tiny preset's rows (64, 128) fit only the 32-weight blocks and the floats.
        let pick = |l: usize, m: LinearModule| {
            if preset == Preset::Small {
                mixed(l, m)
            } else {
                [
                    QuantType::Q4_1,
                    QuantType::Q8_0,
                    QuantType::Q4_0,
                    QuantType::F16,
                ][(l + m as usize) % 4]
            }
        };
        requantize(&mut weights, pick, embed, 5);
        let reference = greedy(&engine(&config, &weights, Isa::Portable, 1), None, 0);
        for isa in Isa::supported() {
            for (threads, chunk) in [(1, 0), (2, 5), (3, 1), (4, 16)] {
                let e = engine(&config, &weights, isa, threads);
                assert_eq!(
                    greedy(&e, None, chunk),
                    reference,
                    "{preset:?}: {isa:?}, {threads} threads, prefill chunks of {chunk}"
                );
            }
        }
    }
}

#[test]
fn on_a_quantized_base_a_sequence_gives_the_same_bits_alone_and_in_a_batch_with_adapters() {
    let (config, mut weights) = model(Preset::Tiny, 11);
    requantize(&mut weights, |_, _| QuantType::Q4_1, QuantType::Q8_0, 77);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adapter");
    let adapter = Adapter::load(&fixture, &config).unwrap();
    let prompts: Vec<Vec<u32>> = (0..6)
        .map(|s| {
            (0..(4 + 5 * s))
                .map(|i| ((i * 31 + s * 7 + 1) % 320) as u32)
                .collect()
        })
        .collect();
    let requests: Vec<Request<'_>> = prompts
        .iter()
        .enumerate()
        .map(|(s, prompt)| Request {
            prompt,
            adapter: (s % 2 == 0).then_some(&adapter),
            sampling: if s % 3 == 0 {
                Sampling::Sample {
                    temperature: 0.9,
                    top_k: 0,
                    top_p: 0.95,
                    seed: s as u64,
                }
            } else {
                Sampling::Greedy
            },
            max_tokens: 5 + s,
        })
        .collect();
    for isa in Isa::supported() {
        for (threads, chunk) in [(1, 0), (2, 3)] {
            let e = engine(&config, &weights, isa, threads);
            let together = generate_batch(&e, &requests, chunk).unwrap();
            for (s, r) in requests.iter().enumerate() {
                let alone = olc_gpu::engine::generate(
                    &e,
                    r.adapter,
                    r.prompt,
                    r.max_tokens,
                    0,
                    &r.sampling,
                )
                .unwrap();
                assert_eq!(
                    bits(&together[s]),
                    bits(&alone),
                    "sequence {s} ({isa:?}, {threads} threads, chunk {chunk})"
                );
            }
        }
    }
}

/// QLoRA: a LoRA adapter trained on a frozen quantized base. The adapter's bits (its
/// commitment) are the same for every ISA and thread count, and the same as training on
/// the base widened to f32, since every op sees exactly the dequantized values.
#[test]
fn fine_tuning_on_a_quantized_base_is_deterministic_and_equals_its_f32_widening() {
    use olc_gpu::train::{Budget, Example, Hyper, LoraSpec, Trainer, init_adapter};
    let (config, mut weights) = model(Preset::Tiny, 13);
    requantize(&mut weights, |_, _| QuantType::Q4_1, QuantType::Q8_0, 31);
    let examples: Vec<Example> = (0..4)
        .map(|s| Example {
            record: s,
            tokens: (0..(12 + 3 * s))
                .map(|i| ((i * 53 + s * 11 + 2) % 320) as u32)
                .collect(),
            trained_from: 2,
        })
        .collect();
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        targets: LinearModule::ALL.to_vec(),
    };
    let hyper = Hyper {
        lora: spec.clone(),
        lr: 5e-3,
        batch: 2,
        grad_accum: 1,
        budget: Budget::Steps(3),
        ..Hyper::default()
    };
    let train = |weights: &LlamaWeights, isa: Isa, threads: usize| {
        let e = engine(&config, weights, isa, threads);
        let adapter = init_adapter(&spec, e.config(), 7).unwrap();
        let outcome = Trainer::new(&e)
            .train(&examples, adapter, &hyper, |_| true)
            .unwrap();
        (outcome.commitment, outcome.losses)
    };
    let reference = train(&weights, Isa::Portable, 1);
    assert!(reference.1.iter().all(|l| l.is_finite()));
    assert_ne!(reference.1.first(), reference.1.last(), "the loss moves");
    for isa in Isa::supported() {
        for threads in [1, 2, 3] {
            assert_eq!(
                train(&weights, isa, threads),
                reference,
                "{isa:?}, {threads} threads"
            );
        }
    }
    assert_eq!(
        train(&widened(&weights), Isa::detect(), 2),
        reference,
        "the f32 widening trains the same adapter"
    );
}

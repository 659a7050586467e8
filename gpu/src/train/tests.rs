//! Gradient checks and determinism of the training pass, from inside the crate so the
//! gradients themselves (not only the trained adapter) can be compared.

use super::lora::{LoraSpec, init_adapter};
use super::pass::{Grads, ModuleGrad, Pass, Scratch, Seq, Transposed};
use crate::compute::Isa;
use crate::engine::{Engine, EngineOptions};
use crate::model::init::{Preset, write_checkpoint};
use crate::model::rng::stream_for;
use crate::model::{Adapter, Checkpoint, LinearModule};

pub(super) fn tiny_engine(isa: Isa, threads: usize) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), Preset::Tiny, 11).unwrap();
    let ck = Checkpoint::load(dir.path()).unwrap();
    let options = EngineOptions {
        isa,
        threads,
        max_positions: 64,
    };
    (dir, Engine::new(ck.config, ck.weights, options).unwrap())
}

/// An adapter on all seven projections with a non-zero `B`, so every gradient is non-zero.
pub(super) fn busy_adapter(engine: &Engine, rank: usize) -> Adapter {
    let spec = LoraSpec {
        rank,
        alpha: 2.0 * rank as f64,
        targets: LinearModule::ALL.to_vec(),
    };
    let mut adapter = init_adapter(&spec, engine.config(), 5).unwrap();
    for (&(l, m), w) in adapter.modules.iter_mut() {
        let mut rng = stream_for(99, &format!("{l} {m:?}"));
        for b in &mut w.b.data {
            *b = (rng.standard_normal() * 0.2) as f32;
        }
    }
    adapter
}

pub(super) const SEQS: [(&[u32], usize); 3] = [
    (&[1, 40, 7, 99, 250, 13, 61, 5, 300], 0),
    (&[1, 17, 18, 19, 200, 201], 3),
    (&[1, 77, 78, 120, 121, 122, 123, 124, 9, 10, 11, 12], 5),
];

fn seqs() -> Vec<Seq<'static>> {
    SEQS.iter()
        .map(|&(tokens, trained_from)| Seq {
            tokens,
            trained_from,
        })
        .collect()
}

fn trained(seqs: &[Seq<'_>]) -> usize {
    seqs.iter()
        .map(|s| s.tokens.len() - s.trained_from.max(1))
        .sum()
}

/// One projection's finished `(dA, dB)`.
type FinishedGrad = ((usize, LinearModule), Vec<f32>, Vec<f32>);

/// Mean loss and the finished gradients for `seqs` as one step, in `micro`-sized pieces.
fn loss_and_grads(
    engine: &Engine,
    base_t: &Transposed,
    adapter: &Adapter,
    micro: usize,
) -> (f64, Vec<FinishedGrad>) {
    let seqs = seqs();
    let n = trained(&seqs);
    let mut grads: Grads = adapter
        .modules
        .iter()
        .map(|(k, w)| (*k, ModuleGrad::for_weights(w)))
        .collect();
    let pass = Pass {
        engine,
        base_t,
        adapter,
    };
    let mut rows = 0;
    let mut sum = 0.0;
    for chunk in seqs.chunks(micro) {
        let losses = pass.run(chunk, rows, n as f32, &mut grads).unwrap();
        sum += losses.iter().map(|l| l.sum).sum::<f64>();
        rows += chunk.iter().map(|s| s.tokens.len()).sum::<usize>();
    }
    let out = grads
        .iter()
        .map(|(k, g)| (*k, g.a.finish(), g.b.finish()))
        .collect();
    (sum / n as f64, out)
}

fn loss_only(engine: &Engine, base_t: &Transposed, adapter: &Adapter) -> f64 {
    loss_and_grads(engine, base_t, adapter, SEQS.len()).0
}

#[test]
fn every_lora_gradient_matches_finite_differences() {
    let (_dir, engine) = tiny_engine(Isa::detect(), 2);
    let base_t = Transposed::new(&engine).unwrap();
    let adapter = busy_adapter(&engine, 2);
    let (_, grads) = loss_and_grads(&engine, &base_t, &adapter, SEQS.len());
    assert_eq!(
        grads.len(),
        2 * 7,
        "every projection of both layers is adapted"
    );
    // Central differences in f32 arithmetic: h balances rounding noise (~1e-7 / h) against
    // truncation (~h²); the tolerance is relative to the tensor's largest gradient.
    let h = 1e-2f32;
    let mut worst = 0.0f64;
    for (key, ga, gb) in &grads {
        for (half, g) in [('A', ga), ('B', gb)] {
            let gmax = g.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            assert!(gmax > 0.0, "{key:?} {half}: gradient is all zero");
            for (i, &gi) in g.iter().enumerate() {
                let bumped = |delta: f32| {
                    let mut a = adapter.clone();
                    let w = a.modules.get_mut(key).unwrap();
                    let data = if half == 'A' {
                        &mut w.a.data
                    } else {
                        &mut w.b.data
                    };
                    data[i] += delta;
                    loss_only(&engine, &base_t, &a)
                };
                let fd = (bumped(h) - bumped(-h)) / (2.0 * h as f64);
                let err = (fd - gi as f64).abs() / gmax;
                worst = worst.max(err);
                assert!(
                    err < 2e-2,
                    "{key:?} lora_{half}[{i}]: backprop {gi}, finite difference {fd} (max |g| {gmax})"
                );
            }
        }
    }
    eprintln!("worst finite-difference error relative to max |g|: {worst:.2e}");
}

#[test]
fn training_forward_gives_the_engines_loss_exactly() {
    let (_dir, engine) = tiny_engine(Isa::detect(), 1);
    let base_t = Transposed::new(&engine).unwrap();
    let adapter = busy_adapter(&engine, 4);
    let pass = Pass {
        engine: &engine,
        base_t: &base_t,
        adapter: &adapter,
    };
    let seqs = seqs();
    let mut grads = Grads::new();
    let losses = pass.run(&seqs, 0, 1.0, &mut grads).unwrap();
    let trainer = super::Trainer::new(&engine);
    let examples: Vec<super::Example> = SEQS
        .iter()
        .enumerate()
        .map(|(i, &(t, f))| super::Example {
            record: i,
            tokens: t.to_vec(),
            trained_from: f,
        })
        .collect();
    let eval = trainer.eval_losses(&examples, Some(&adapter)).unwrap();
    for (l, e) in losses.iter().zip(&eval) {
        assert_eq!(l.sum / l.count as f64, *e);
    }
}

#[test]
fn gradients_do_not_depend_on_isa_threads_or_micro_batching() {
    let mut reference = None;
    for isa in Isa::supported() {
        for threads in [1, 2, 4] {
            let (_dir, engine) = tiny_engine(isa, threads);
            let base_t = Transposed::new(&engine).unwrap();
            let adapter = busy_adapter(&engine, 3);
            for micro in [1, 2, 3] {
                let (loss, grads) = loss_and_grads(&engine, &base_t, &adapter, micro);
                let bits: Vec<Vec<u32>> = grads
                    .iter()
                    .flat_map(|(_, a, b)| [a, b])
                    .map(|v| v.iter().map(|x| x.to_bits()).collect())
                    .collect();
                match &reference {
                    None => reference = Some((loss, bits)),
                    Some((l0, b0)) => {
                        assert_eq!(bits, *b0, "{isa:?}, {threads} threads, micro-batch {micro}");
                        assert_eq!(loss.to_bits(), l0.to_bits());
                    }
                }
            }
        }
    }
}

#[test]
fn buffers_reused_across_micro_batches_change_no_bit() {
    let (_dir, engine) = tiny_engine(Isa::detect(), 2);
    let base_t = Transposed::new(&engine).unwrap();
    let adapter = busy_adapter(&engine, 2);
    let pass = Pass {
        engine: &engine,
        base_t: &base_t,
        adapter: &adapter,
    };
    // Micro-batches that grow, shrink and change their longest sequence.
    let all = seqs();
    let micro: [&[Seq<'_>]; 4] = [&all[2..], &all[..1], &all[1..2], &all[..]];
    let grads_of = |fresh: bool| {
        let mut grads: Grads = adapter
            .modules
            .iter()
            .map(|(k, w)| (*k, ModuleGrad::for_weights(w)))
            .collect();
        let mut scratch = Scratch::default();
        let mut losses = Vec::new();
        let mut rows = 0;
        for m in micro {
            if fresh {
                scratch = Scratch::default();
            }
            let l = pass
                .run_with(&mut scratch, m, rows, 20.0, &mut grads)
                .unwrap();
            losses.extend(l.iter().map(|l| l.sum.to_bits()));
            rows += m.iter().map(|s| s.tokens.len()).sum::<usize>();
        }
        let bits: Vec<u32> = grads
            .values()
            .flat_map(|g| [g.a.finish(), g.b.finish()])
            .flatten()
            .map(f32::to_bits)
            .collect();
        (losses, bits)
    };
    assert_eq!(grads_of(false), grads_of(true));
}

/// PyTorch + peft (float64) on the same model, initial adapter and batch:
/// `gpu/tests/fixtures/train/make_train_reference.py`.
mod reference {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::train::lora::tensor_name;
    use crate::train::{AdamW, Budget, Example, Hyper, Trainer};

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train")
    }

    struct Reference {
        examples: Vec<Example>,
        json: serde_json::Value,
        tensors: BTreeMap<String, Vec<f32>>,
    }

    fn load() -> Reference {
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixtures().join("train_reference.json")).unwrap(),
        )
        .unwrap();
        let examples = json["examples"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, e)| Example {
                record: i,
                tokens: e["tokens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap() as u32)
                    .collect(),
                trained_from: e["trained_from"].as_u64().unwrap() as usize,
            })
            .collect();
        let bytes = std::fs::read(fixtures().join("train_reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                (name, values)
            })
            .collect();
        Reference {
            examples,
            json,
            tensors,
        }
    }

    /// max |ours - reference| / max |reference| over one tensor.
    fn rel_err(ours: &[f32], reference: &[f32]) -> f64 {
        assert_eq!(ours.len(), reference.len());
        let scale = reference
            .iter()
            .fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
        let err = ours
            .iter()
            .zip(reference)
            .fold(0.0f64, |m, (a, b)| m.max(f64::from((a - b).abs())));
        err / scale
    }

    fn each_tensor(adapter: &Adapter, mut f: impl FnMut(String, &[f32])) {
        for (&(l, m), w) in &adapter.modules {
            f(tensor_name(l, m, 'A'), &w.a.data);
            f(tensor_name(l, m, 'B'), &w.b.data);
        }
    }

    #[test]
    fn gradients_losses_and_adamw_steps_match_pytorch_and_peft() {
        let r = load();
        let (_dir, engine) = tiny_engine(Isa::detect(), 2);
        let initial = Adapter::load(&fixtures().join("init_adapter"), engine.config()).unwrap();
        assert_eq!(initial.modules.len(), 14);

        // Gradients at the initial adapter, as one step over the whole batch.
        let base_t = Transposed::new(&engine).unwrap();
        let seqs: Vec<Seq<'_>> = r
            .examples
            .iter()
            .map(|e| Seq {
                tokens: &e.tokens,
                trained_from: e.trained_from,
            })
            .collect();
        let n: usize = r.examples.iter().map(Example::trained_tokens).sum();
        let mut grads: Grads = initial
            .modules
            .iter()
            .map(|(k, w)| (*k, ModuleGrad::for_weights(w)))
            .collect();
        let pass = Pass {
            engine: &engine,
            base_t: &base_t,
            adapter: &initial,
        };
        pass.run(&seqs, 0, n as f32, &mut grads).unwrap();
        let mut worst_grad = 0.0f64;
        for (&(l, m), g) in &grads {
            for (half, acc) in [('A', &g.a), ('B', &g.b)] {
                let name = format!("grad0.{}", tensor_name(l, m, half));
                let err = rel_err(&acc.finish(), &r.tensors[&name]);
                worst_grad = worst_grad.max(err);
            }
        }

        // Five AdamW steps with warmup and weight decay.
        let hyper = Hyper {
            lr: r.json["lr"].as_f64().unwrap(),
            batch: r.examples.len(),
            grad_accum: 1,
            budget: Budget::Steps(r.json["steps"].as_u64().unwrap() as u32),
            warmup: r.json["warmup"].as_u64().unwrap() as u32,
            seed: 0,
            optimizer: AdamW {
                weight_decay: r.json["weight_decay"].as_f64().unwrap(),
                ..AdamW::default()
            },
            ..Hyper::default()
        };
        let outcome = Trainer::new(&engine)
            .train(&r.examples, initial, &hyper, |_| true)
            .unwrap();
        let ref_loss = &r.tensors["loss"];
        let mut worst_loss = 0.0f64;
        for (ours, theirs) in outcome.losses.iter().zip(ref_loss) {
            worst_loss = worst_loss.max((ours - f64::from(*theirs)).abs() / f64::from(*theirs));
        }
        assert_eq!(outcome.losses.len(), ref_loss.len());
        let mut worst_final = 0.0f64;
        each_tensor(&outcome.adapter, |name, data| {
            let err = rel_err(data, &r.tensors[&format!("final.{name}")]);
            worst_final = worst_final.max(err);
        });
        eprintln!(
            "vs float64 PyTorch: gradients {worst_grad:.2e}, losses {worst_loss:.2e}, \
             parameters after 5 steps {worst_final:.2e}"
        );
        // float32 PyTorch itself is 8.4e-7 / 7.1e-8 / 1.4e-6 from the same reference.
        assert!(worst_grad < 1e-5, "gradients differ by {worst_grad:.2e}");
        assert!(worst_loss < 1e-6, "losses differ by {worst_loss:.2e}");
        assert!(worst_final < 1e-5, "parameters differ by {worst_final:.2e}");
    }
}

fn examples() -> Vec<super::Example> {
    SEQS.iter()
        .enumerate()
        .map(|(i, &(t, f))| super::Example {
            record: i,
            tokens: t.to_vec(),
            trained_from: f,
        })
        .collect()
}

#[test]
fn a_diverging_run_stops_and_names_the_step() {
    use super::{Budget, Divergence, Hyper, TrainError, Trainer};
    let (_dir, engine) = tiny_engine(Isa::detect(), 1);
    let trainer = Trainer::new(&engine);
    let examples = examples();
    let run = |lr: f64| {
        let hyper = Hyper {
            lr,
            batch: 1,
            budget: Budget::Steps(6),
            ..Hyper::default()
        };
        let adapter = init_adapter(&hyper.lora, engine.config(), 0).unwrap();
        let mut steps = Vec::new();
        let result = trainer.train(&examples, adapter, &hyper, |r| {
            steps.push(r.step);
            true
        });
        (result, steps)
    };
    // So large that the first update itself overflows f32.
    let (result, steps) = run(1e39);
    let e = result.unwrap_err();
    assert!(
        matches!(
            &e,
            TrainError::Diverged {
                step: 1,
                what: Divergence::Parameter { .. }
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("training diverged at step 1: a LoRA parameter became non-finite"),
        "{msg}"
    );
    assert!(msg.contains("base_model.model.model.layers.0."), "{msg}");
    assert!(steps.is_empty(), "no report for a diverged step: {steps:?}");

    // The first step leaves finite parameters around 3e30. Nothing turns NaN after that:
    // the next forward's RMSNorm squares overflow to infinity and normalise the hidden
    // state to zeros, so the loss sits at ln(vocab) with zero gradients, a run that used
    // to "succeed". The backward pass notices the overflow.
    let (result, steps) = run(1e30);
    let e = result.unwrap_err();
    assert!(
        matches!(
            &e,
            TrainError::Diverged {
                step: 2,
                what: Divergence::Activation
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "training diverged at step 2: an activation overflowed in the forward pass \
         (a lower learning rate may help)"
    );
    assert_eq!(steps, [1]);

    // A base model whose final norm scales activations past f32: the logits overflow and
    // the very first loss is NaN, whatever the learning rate.
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), Preset::Tiny, 11).unwrap();
    let mut ck = Checkpoint::load(dir.path()).unwrap();
    ck.weights.norm.fill(f32::MAX);
    let options = EngineOptions {
        isa: Isa::detect(),
        threads: 1,
        max_positions: 64,
    };
    let loud = Engine::new(ck.config, ck.weights, options).unwrap();
    let hyper = Hyper {
        batch: 1,
        budget: Budget::Steps(2),
        ..Hyper::default()
    };
    let adapter = init_adapter(&hyper.lora, loud.config(), 0).unwrap();
    let e = Trainer::new(&loud)
        .train(&examples, adapter, &hyper, |_| true)
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("training diverged at step 1: the loss is "),
        "{e}"
    );
    assert!(
        matches!(
            e,
            TrainError::Diverged {
                step: 1,
                what: Divergence::Loss(_)
            }
        ),
        "{e:?}"
    );

    // An ordinary learning rate is untouched by the checks.
    let (result, steps) = run(2e-4);
    assert!(result.is_ok(), "{:?}", result.err());
    assert_eq!(steps, (1..=6).collect::<Vec<_>>());
}

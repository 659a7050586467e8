//! Serving from a resident model: generations batched together, joining and leaving at
//! any step, each with its own adapter, give each exactly the tokens of `olc run infer`
//! on the same inputs; a cancelled one frees its place; a resident model and its adapters
//! are loaded once.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use olc_exec::infer::{EngineChoice, GenerateRequest, Generated, generate_served, generate_text};
use olc_exec::serve::schedule::ScheduleLimits;
use olc_exec::{
    EnginePool, ExecError, ExecOptions, InProcess, JobInputs, LoadedModel, Resident, Runner, Watch,
};
use olc_gpu::compute::Isa;
use olc_gpu::model::{Adapter, Checkpoint};
use olc_gpu::train::write_adapter;
use olc_protocol::{
    Amount, ContentId, InferenceJob, JobKind, JobSpec, Prompt, Requirements, Sampling,
    VerificationPolicy,
};
use olc_testkit::models::{random_adapter, tiny_model};

/// A small deterministic generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A random adapter (see [`random_adapter`]) written to a directory as a fine-tune
/// writes it, and loaded back.
fn adapter(model: &Path, seed: u64) -> (tempfile::TempDir, ContentId, Arc<Adapter>) {
    let config = Checkpoint::load(model).unwrap().config;
    let a = random_adapter(&config, 4, seed);
    let dir = tempfile::tempdir().unwrap();
    write_adapter(dir.path(), &a).unwrap();
    let loaded = Adapter::load(dir.path(), &config).unwrap();
    let id = ContentId::of(&seed.to_le_bytes());
    (dir, id, Arc::new(loaded))
}

fn choice() -> EngineChoice {
    EngineChoice {
        isa: Isa::detect(),
        threads: 2,
        prefill_chunk: 0,
    }
}

fn never() -> Option<ExecError> {
    None
}

struct Case {
    prompt: Vec<u32>,
    adapter: Option<usize>,
    sampling: Sampling,
    seed: u64,
    max_tokens: u32,
    delay_ms: u64,
}

#[test]
fn thirty_two_concurrent_generations_each_get_exactly_their_tokens_alone() {
    let (model, _) = tiny_model(11);
    let vocab = Checkpoint::load(model.path()).unwrap().config.vocab_size as u64;
    let adapters: Vec<_> = (0..4).map(|i| adapter(model.path(), 100 + i)).collect();
    // Small limits, so prompts are chunked, steps are full and adapters wait their turn.
    let limits = ScheduleLimits {
        max_batch: 8,
        step_tokens: 40,
        prefill_chunk: 7,
        max_adapters: 2,
    };
    let resident = Arc::new(
        Resident::start(
            LoadedModel::load(model.path(), &choice(), usize::MAX).unwrap(),
            limits,
        )
        .unwrap(),
    );
    let mut rng = Rng(0x5EED);
    let cases: Vec<Case> = (0..32)
        .map(|_| Case {
            prompt: (0..1 + rng.below(30))
                .map(|_| rng.below(vocab) as u32)
                .collect(),
            adapter: match rng.below(5) {
                4 => None,
                i => Some(i as usize),
            },
            sampling: if rng.below(3) == 0 {
                Sampling::Greedy
            } else {
                Sampling::Sample {
                    temperature: 0.7 + rng.below(60) as f32 / 100.0,
                    top_k: rng.below(40) as u32,
                    top_p: 0.5 + rng.below(50) as f32 / 100.0,
                }
            },
            seed: rng.below(1 << 40),
            max_tokens: 1 + rng.below(12) as u32,
            delay_ms: rng.below(40),
        })
        .collect();
    let request = |c: &Case| -> (Prompt, Option<&Path>) {
        (
            Prompt::Tokens(c.prompt.clone()),
            c.adapter.map(|i| adapters[i].0.path()),
        )
    };

    let start = Arc::new(Barrier::new(cases.len()));
    let served: Vec<Generated> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|c| {
                let (start, resident) = (start.clone(), resident.clone());
                let (prompt, adapter_dir) = request(c);
                let adapter = c.adapter.map(|i| (adapters[i].1, adapters[i].2.clone()));
                s.spawn(move || {
                    start.wait();
                    std::thread::sleep(Duration::from_millis(c.delay_ms));
                    let r = GenerateRequest {
                        model_dir: Path::new("/nonexistent"),
                        adapter_dir,
                        prompt: &prompt,
                        sampling: c.sampling,
                        seed: c.seed,
                        max_tokens: c.max_tokens,
                    };
                    let mut streamed = Heard::default();
                    let g = generate_served(&resident, &r, adapter, &never, &mut streamed).unwrap();
                    assert_eq!(
                        streamed.tokens, g.tokens,
                        "streamed tokens are the result's, in order"
                    );
                    assert_eq!(
                        streamed.text, g.text,
                        "streamed text concatenates to the result's"
                    );
                    g
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    for (i, (c, got)) in cases.iter().zip(&served).enumerate() {
        let (prompt, adapter_dir) = request(c);
        let alone = generate_text(
            &GenerateRequest {
                model_dir: model.path(),
                adapter_dir,
                prompt: &prompt,
                sampling: c.sampling,
                seed: c.seed,
                max_tokens: c.max_tokens,
            },
            &EngineChoice {
                isa: Isa::Portable,
                threads: 1,
                prefill_chunk: 0,
            },
        )
        .unwrap();
        assert_eq!(got.tokens, alone.tokens, "request {i}");
        assert_eq!(got.commitment, alone.commitment, "request {i}");
        assert_eq!(got.stop, alone.stop, "request {i}");
        assert_eq!(got.text, alone.text, "request {i}");
    }
    let stats = resident.batcher.stats();
    assert!(
        stats.widest.load(Ordering::Relaxed) > 1,
        "the generations shared forward passes"
    );
    assert!(stats.widest.load(Ordering::Relaxed) <= 8);
    assert!(
        stats.rows.load(Ordering::Relaxed) > stats.steps.load(Ordering::Relaxed),
        "more sequences than passes"
    );
    // Adapters given loaded are not the resident's to count; none were loaded here.
    assert_eq!(resident.adapter_loads(), 0);
}

#[test]
fn a_cancelled_generation_frees_its_place_and_the_others_run_on() {
    let (model, _) = tiny_model(12);
    let resident = Arc::new(
        Resident::start(
            LoadedModel::load(model.path(), &choice(), usize::MAX).unwrap(),
            ScheduleLimits {
                max_batch: 1,
                ..ScheduleLimits::default()
            },
        )
        .unwrap(),
    );
    let prompt = Prompt::Tokens(vec![1, 2, 3]);
    let request = |max_tokens| GenerateRequest {
        model_dir: model.path(),
        adapter_dir: None,
        prompt: &prompt,
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        },
        seed: 3,
        max_tokens,
    };
    // With room for one sequence per pass, a second request can run only once the first,
    // which would take 4,000 tokens, has left: cancelled at its first token, it does.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let long = s.spawn(|| {
            let mut heard = StopAtFirst(&stop, 0);
            generate_served(
                &resident,
                &request(4000),
                None,
                &|| stop.load(Ordering::Relaxed).then_some(ExecError::Cancelled),
                &mut heard,
            )
            .map(|_| heard.1)
        });
        let second = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            generate_served(&resident, &request(5), None, &never, &mut ())
        });
        match long.join().unwrap() {
            Err(ExecError::Cancelled) => {}
            other => panic!("the long generation should be cancelled, got {other:?}"),
        }
        assert_eq!(second.join().unwrap().unwrap().tokens.len(), 5);
    });
    let stats = resident.batcher.stats();
    assert!(
        stats.rows.load(Ordering::Relaxed) < 100,
        "the cancelled generation stopped within a few steps"
    );
}

#[test]
fn a_bad_request_fails_alone_with_the_engines_error() {
    let (model, _) = tiny_model(13);
    let resident = Resident::start(
        LoadedModel::load(model.path(), &choice(), usize::MAX).unwrap(),
        ScheduleLimits::default(),
    )
    .unwrap();
    let vocab = resident.model.engine.config().vocab_size as u32;
    let context = resident.model.engine.max_positions();
    let run = |tokens: Vec<u32>, max_tokens: u32| {
        let prompt = Prompt::Tokens(tokens);
        generate_served(
            &resident,
            &GenerateRequest {
                model_dir: model.path(),
                adapter_dir: None,
                prompt: &prompt,
                sampling: Sampling::Greedy,
                seed: 0,
                max_tokens,
            },
            None,
            &never,
            &mut (),
        )
    };
    let err = run(vec![1, vocab], 3).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("the engine failed: token id {vocab} is outside the vocabulary of {vocab}")
    );
    let err = run(vec![1; context + 1], 1).unwrap_err();
    assert!(err.to_string().contains("would reach"), "{err}");
    // The same request done right still works: the loop survived both.
    assert_eq!(run(vec![1, 2], 3).unwrap().tokens.len(), 3);
}

fn job(model: ContentId, adapter: Option<ContentId>, prompt: &str) -> JobSpec {
    JobSpec {
        kind: JobKind::Inference(InferenceJob {
            model,
            adapter,
            prompt: Prompt::Text(prompt.into()),
            sampling: Sampling::Greedy,
            max_tokens: 4,
            seed: 1,
        }),
        requirements: Requirements::default(),
        max_fee: Amount(1000),
        verification: VerificationPolicy::Single,
        deadline_ms: u64::MAX,
        nonce: 1,
    }
}

#[test]
fn a_resident_model_and_its_adapters_are_loaded_once_across_many_jobs() {
    let (model, model_id) = tiny_model(14);
    let adapters: Vec<_> = (0..2).map(|i| adapter(model.path(), 200 + i)).collect();
    let runner = InProcess::new(EnginePool::new(1 << 30));
    let work = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    for i in 0..6 {
        let a = &adapters[i % 2];
        let inputs = JobInputs {
            model_dir: model.path().to_path_buf(),
            model_id,
            adapter_dir: Some(a.0.path().to_path_buf()),
            adapter_id: Some(a.1),
            dataset_path: None,
            init_adapter_dir: None,
        };
        let opts = ExecOptions {
            threads: 1,
            deadline: Instant::now() + Duration::from_secs(600),
            work_dir: work.path().to_path_buf(),
        };
        runner
            .run(
                &job(model_id, Some(a.1), "hello"),
                &inputs,
                &opts,
                &cancel,
                &mut |_, _, _| {},
            )
            .unwrap();
    }
    assert_eq!(runner.engines().loads(), 1, "one load for six jobs");
    let resident = runner
        .engines()
        .get(model_id, model.path(), &EngineChoice::detect(1))
        .unwrap();
    assert_eq!(resident.adapter_loads(), 2, "each adapter loaded once");
    assert_eq!(runner.engines().loads(), 1);
}

/// What a generation streamed.
#[derive(Default)]
struct Heard {
    tokens: Vec<u32>,
    text: String,
}

impl Watch for Heard {
    fn token(&mut self, token: u32) {
        self.tokens.push(token);
    }

    fn text(&mut self, piece: &str) {
        self.text.push_str(piece);
    }
}

/// Raises the flag at the first token it hears, counting them.
struct StopAtFirst<'a>(&'a AtomicBool, usize);

impl Watch for StopAtFirst<'_> {
    fn token(&mut self, _: u32) {
        self.1 += 1;
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Stops the generation once it has `.0` tokens, as a submitter's cancel does.
struct LimitAt(u32, Vec<u32>);

impl Watch for LimitAt {
    fn token(&mut self, token: u32) {
        self.1.push(token);
    }

    fn token_limit(&self) -> u32 {
        self.0
    }
}

#[test]
fn a_token_limit_ends_the_generation_with_that_many_tokens() {
    let (model, _) = tiny_model(17);
    let resident = Resident::start(
        LoadedModel::load(model.path(), &choice(), usize::MAX).unwrap(),
        ScheduleLimits::default(),
    )
    .unwrap();
    let prompt = Prompt::Tokens(vec![1, 2, 3]);
    let request = GenerateRequest {
        model_dir: model.path(),
        adapter_dir: None,
        prompt: &prompt,
        sampling: Sampling::Greedy,
        seed: 0,
        max_tokens: 40,
    };
    let full = generate_served(&resident, &request, None, &never, &mut ()).unwrap();
    let mut cut = LimitAt(7, Vec::new());
    let short = generate_served(&resident, &request, None, &never, &mut cut).unwrap();
    assert_eq!(
        short.tokens,
        full.tokens[..7],
        "a prefix of the full output"
    );
    assert_eq!(cut.1, short.tokens, "no token past the limit is heard");
    assert_eq!(
        short.commitment,
        olc_protocol::inference_commitment(&short.tokens)
    );
    let none = generate_served(
        &resident,
        &request,
        None,
        &never,
        &mut LimitAt(0, Vec::new()),
    )
    .unwrap();
    assert!(none.tokens.is_empty());
}

//! The executor runs jobs exactly as the engine's own calls do, deterministically, and
//! turns every failure (missing files, deadlines, cancellation, panics) into an error.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use olc_exec::{ExecError, ExecOptions, ExecOutput, JobInputs, catch, execute, peak_memory_bytes};
use olc_gpu::compute::Isa;
use olc_gpu::engine::{self, Engine, EngineOptions, generate};
use olc_gpu::model::Checkpoint;
use olc_gpu::train::{
    Budget, Dataset, Hyper, LoraSpec, Trainer, adapter_commitment, init_adapter, tokenize,
};
use olc_protocol::messages::jobs_api::FailureKind;
use olc_protocol::{
    Amount, ContentId, FinetuneJob, InferenceJob, JobKind, JobSpec, Prompt, Requirements, Sampling,
    TargetModule, TrainingLength, TrainingParams, VerificationPolicy, inference_commitment,
};
use olc_testkit::jobs::model_inputs as inputs;
use olc_testkit::models::tiny_model;

fn spec(kind: JobKind) -> JobSpec {
    JobSpec {
        kind,
        requirements: Requirements::default(),
        max_fee: Amount(1000),
        verification: VerificationPolicy::Single,
        deadline_ms: u64::MAX,
        nonce: 1,
    }
}

fn options(threads: usize, work_dir: PathBuf) -> ExecOptions {
    ExecOptions {
        threads,
        deadline: Instant::now() + Duration::from_secs(600),
        work_dir,
    }
}

fn inference(model: ContentId, prompt: Prompt, sampling: Sampling) -> JobSpec {
    spec(JobKind::Inference(InferenceJob {
        model,
        adapter: None,
        prompt,
        sampling,
        max_tokens: 6,
        seed: 42,
    }))
}

fn no_progress() -> impl FnMut(u32, u32, f32) {
    |_, _, _| {}
}

#[test]
fn inference_equals_the_engine_called_directly() {
    let (model, model_id) = tiny_model(3);
    let work = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let cases = [
        (Prompt::Text("hello world".into()), Sampling::Greedy),
        (
            Prompt::Tokens(vec![1, 40, 7, 99]),
            Sampling::Sample {
                temperature: 0.8,
                top_k: 20,
                top_p: 0.9,
            },
        ),
    ];
    for (prompt, sampling) in cases {
        let job = inference(model_id, prompt.clone(), sampling);
        let result = execute(
            &job,
            &inputs(model.path(), model_id),
            &options(2, work.path().to_path_buf()),
            &cancel,
            &mut no_progress(),
        )
        .unwrap();

        let ck = Checkpoint::load(model.path()).unwrap();
        let prompt_tokens = match &prompt {
            Prompt::Text(t) => ck.tokenizer.encode(t).unwrap(),
            Prompt::Tokens(t) => t.clone(),
        };
        let sampling = match sampling {
            Sampling::Greedy => engine::Sampling::Greedy,
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
            } => engine::Sampling::Sample {
                temperature,
                top_k,
                top_p,
                seed: 42,
            },
        };
        let options = EngineOptions {
            isa: Isa::detect(),
            threads: 1,
            max_positions: prompt_tokens.len() + 6,
        };
        let tokenizer = ck.tokenizer;
        let engine = Engine::new(ck.config, ck.weights, options).unwrap();
        let expected = generate(&engine, None, &prompt_tokens, 6, 0, &sampling).unwrap();

        assert_eq!(
            result.output,
            ExecOutput::Inference {
                tokens: expected.tokens.clone(),
                text: tokenizer.decode(&expected.tokens, true).unwrap(),
            }
        );
        assert_eq!(result.commitment, inference_commitment(&expected.tokens));
        assert_eq!(
            result.metrics.tokens,
            (prompt_tokens.len() + expected.tokens.len()) as u64
        );
        if Path::new("/proc/self/status").exists() {
            assert!(result.metrics.peak_memory_bytes > 0);
        }
    }
    assert!(peak_memory_bytes() == 0 || peak_memory_bytes() > 1 << 20);
}

const DATASET: &str = concat!(
    r#"{"prompt": "Q: 2+2?", "completion": " A: 4", "contributor": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#,
    "\n",
    r#"{"text": "the quick brown fox", "contributor": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}"#,
    "\n",
);

fn params() -> TrainingParams {
    TrainingParams {
        rank: 4,
        alpha: 8.0,
        targets: vec![TargetModule::QProj, TargetModule::VProj],
        learning_rate: 1e-2,
        weight_decay: 0.0,
        max_len: None,
        batch_size: 1,
        grad_accum: 1,
        length: TrainingLength::Steps(3),
        warmup_steps: 0,
        seed: 7,
        init_adapter: None,
    }
}

struct Finetune {
    _model: tempfile::TempDir,
    data: tempfile::TempDir,
    inputs: JobInputs,
    job: JobSpec,
}

fn finetune_setup() -> Finetune {
    let (model, model_id) = tiny_model(3);
    let data = tempfile::tempdir().unwrap();
    let dataset = data.path().join("data.jsonl");
    std::fs::write(&dataset, DATASET).unwrap();
    let mut inputs = inputs(model.path(), model_id);
    inputs.dataset_path = Some(dataset);
    let job = spec(JobKind::Finetune(FinetuneJob {
        publish_as: None,
        model: model_id,
        dataset: ContentId::of(DATASET.as_bytes()),
        params: params(),
    }));
    Finetune {
        _model: model,
        data,
        inputs,
        job,
    }
}

#[test]
fn finetunes_are_deterministic_and_match_the_trainer() {
    let f = finetune_setup();
    let cancel = AtomicBool::new(false);
    let mut results = Vec::new();
    for threads in [1, 2, 2] {
        let work = tempfile::tempdir().unwrap();
        let mut steps = Vec::new();
        let result = execute(
            &f.job,
            &f.inputs,
            &options(threads, work.path().to_path_buf()),
            &cancel,
            &mut |step, total, loss| steps.push((step, total, loss)),
        )
        .unwrap();
        assert_eq!(
            steps.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
            [(1, 3), (2, 3), (3, 3)]
        );
        let ExecOutput::Finetune {
            adapter_dir,
            commitment,
            first_loss,
            last_loss,
            provenance,
        } = &result.output
        else {
            panic!("not a fine-tune output: {:?}", result.output);
        };
        assert_eq!(*commitment, result.commitment);
        assert_eq!(*adapter_dir, work.path().join("adapter"));
        assert_eq!(*first_loss, steps[0].2);
        assert_eq!(*last_loss, steps[2].2);
        let prov_bytes = std::fs::read(adapter_dir.join("provenance.json")).unwrap();
        assert_eq!(*provenance, ContentId::of(&prov_bytes));
        let prov: serde_json::Value = serde_json::from_slice(&prov_bytes).unwrap();
        assert_eq!(prov["base_model"], f.inputs.model_id.to_string());
        assert_eq!(
            prov["dataset"],
            ContentId::of(DATASET.as_bytes()).to_string()
        );
        assert!(adapter_dir.join("adapter_model.safetensors").is_file());
        assert!(result.metrics.tokens > 0);
        results.push((result.commitment, *provenance));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");

    // The trainer called directly with the hyperparameters `olc run finetune --rank 4
    // --alpha 8 --lr 1e-2 --batch 1 --steps 3 --seed 7` builds.
    let ck = Checkpoint::load(&f.inputs.model_dir).unwrap();
    let max_len = ck.config.max_sequence_len().min(2048);
    let dataset = Dataset::from_file(f.inputs.dataset_path.as_ref().unwrap()).unwrap();
    let tokenized = tokenize(&dataset, &ck.tokenizer, max_len).unwrap();
    let hyper = Hyper {
        lora: LoraSpec {
            rank: 4,
            alpha: 8.0,
            targets: vec![
                olc_gpu::model::LinearModule::QProj,
                olc_gpu::model::LinearModule::VProj,
            ],
        },
        lr: 1e-2,
        batch: 1,
        grad_accum: 1,
        budget: Budget::Steps(3),
        warmup: 0,
        seed: 7,
        ..Hyper::default()
    };
    let initial = init_adapter(&hyper.lora, &ck.config, hyper.seed).unwrap();
    let options = EngineOptions {
        isa: Isa::detect(),
        threads: 1,
        max_positions: max_len,
    };
    let engine = Engine::new(ck.config, ck.weights, options).unwrap();
    let outcome = Trainer::new(&engine)
        .train(&tokenized.examples, initial, &hyper, |_| true)
        .unwrap();
    assert_eq!(
        results[0].0,
        adapter_commitment(&outcome.adapter).parse().unwrap()
    );
    drop(f.data);
}

#[test]
fn a_fine_tune_continues_from_an_adapter() {
    let f = finetune_setup();
    let cancel = AtomicBool::new(false);
    let first = tempfile::tempdir().unwrap();
    let base = execute(
        &f.job,
        &f.inputs,
        &options(2, first.path().to_path_buf()),
        &cancel,
        &mut no_progress(),
    )
    .unwrap();
    let mut job = f.job.clone();
    let JobKind::Finetune(ft) = &mut job.kind else {
        unreachable!()
    };
    ft.params.init_adapter = Some(base.commitment);
    // Without the adapter's directory the job cannot run.
    let err = execute(
        &job,
        &f.inputs,
        &options(2, first.path().to_path_buf()),
        &cancel,
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(err, ExecError::Input(_)), "{err}");
    let mut inputs = f.inputs.clone();
    inputs.init_adapter_dir = Some(first.path().join("adapter"));
    let second = tempfile::tempdir().unwrap();
    let continued = execute(
        &job,
        &inputs,
        &options(2, second.path().to_path_buf()),
        &cancel,
        &mut no_progress(),
    )
    .unwrap();
    assert_ne!(continued.commitment, base.commitment);
    let prov: serde_json::Value = serde_json::from_slice(
        &std::fs::read(second.path().join("adapter/provenance.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        prov["hyperparameters"]["init_adapter"],
        base.commitment.to_string()
    );
}

#[test]
fn a_model_with_missing_files_is_an_error() {
    let (model, model_id) = tiny_model(3);
    std::fs::remove_file(model.path().join("config.json")).unwrap();
    let cancel = AtomicBool::new(false);
    let work = tempfile::tempdir().unwrap();
    let job = inference(model_id, Prompt::Tokens(vec![1, 2, 3]), Sampling::Greedy);
    let err = execute(
        &job,
        &inputs(model.path(), model_id),
        &options(1, work.path().to_path_buf()),
        &cancel,
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(err, ExecError::Model(_)), "{err}");
    let err = execute(
        &job,
        &inputs(&model.path().join("nowhere"), model_id),
        &options(1, work.path().to_path_buf()),
        &cancel,
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(err, ExecError::Input(_)), "{err}");
    // Token ids outside the vocabulary are the engine's error, not a panic.
    let (model, model_id) = tiny_model(3);
    let job = inference(
        model_id,
        Prompt::Tokens(vec![1, u32::MAX]),
        Sampling::Greedy,
    );
    let err = execute(
        &job,
        &inputs(model.path(), model_id),
        &options(1, work.path().to_path_buf()),
        &cancel,
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(err, ExecError::Engine(_)), "{err}");
}

#[test]
fn inputs_of_another_job_are_refused() {
    let f = finetune_setup();
    let cancel = AtomicBool::new(false);
    let work = tempfile::tempdir().unwrap();
    let opts = options(1, work.path().to_path_buf());
    let other = ContentId::of(b"another model");
    let job = inference(other, Prompt::Tokens(vec![1, 2, 3]), Sampling::Greedy);
    let err = execute(&job, &f.inputs, &opts, &cancel, &mut no_progress()).unwrap_err();
    assert!(matches!(err, ExecError::Input(_)), "{err}");
    let mut job = f.job.clone();
    let JobKind::Finetune(ft) = &mut job.kind else {
        unreachable!()
    };
    ft.dataset = ContentId::of(b"another dataset");
    let err = execute(&job, &f.inputs, &opts, &cancel, &mut no_progress()).unwrap_err();
    assert!(matches!(err, ExecError::Input(_)), "{err}");
}

#[test]
fn a_passed_deadline_stops_the_job() {
    let f = finetune_setup();
    let cancel = AtomicBool::new(false);
    let work = tempfile::tempdir().unwrap();
    let mut opts = options(1, work.path().to_path_buf());
    opts.deadline = Instant::now();
    let job = inference(
        f.inputs.model_id,
        Prompt::Tokens(vec![1, 2, 3]),
        Sampling::Greedy,
    );
    for job in [&job, &f.job] {
        let err = execute(job, &f.inputs, &opts, &cancel, &mut no_progress()).unwrap_err();
        assert!(matches!(err, ExecError::DeadlinePassed), "{err}");
    }
    // A deadline that passes during training stops it at the next step: the first step's
    // report waits until the deadline is behind us.
    let deadline = Instant::now() + Duration::from_millis(500);
    opts.deadline = deadline;
    let mut steps = 0;
    let err = execute(&f.job, &f.inputs, &opts, &cancel, &mut |_, _, _| {
        steps += 1;
        if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait + Duration::from_millis(1));
        }
    })
    .unwrap_err();
    assert!(matches!(err, ExecError::DeadlinePassed), "{err}");
    // Zero if loading alone took longer than the deadline on a slow machine.
    assert!(steps <= 1, "{steps}");
    assert!(!work.path().join("adapter").exists());
}

#[test]
fn cancelling_stops_the_job() {
    let f = finetune_setup();
    let cancel = AtomicBool::new(true);
    let work = tempfile::tempdir().unwrap();
    let opts = options(1, work.path().to_path_buf());
    let err = execute(&f.job, &f.inputs, &opts, &cancel, &mut no_progress()).unwrap_err();
    assert!(matches!(err, ExecError::Cancelled), "{err}");

    // Cancelled after the first of three steps: training stops there.
    let cancel = AtomicBool::new(false);
    let mut steps = Vec::new();
    let err = execute(&f.job, &f.inputs, &opts, &cancel, &mut |step, _, _| {
        steps.push(step);
        cancel.store(true, Ordering::Relaxed);
    })
    .unwrap_err();
    assert!(matches!(err, ExecError::Cancelled), "{err}");
    assert_eq!(steps, [1]);
    assert!(!work.path().join("adapter").exists());
}

#[test]
fn panics_become_errors() {
    let err = catch::<()>(|| panic!("boom")).unwrap_err();
    assert!(
        matches!(&err, ExecError::Panicked(m) if m == "boom"),
        "{err}"
    );
    let err = catch::<()>(|| panic!("{} {}", "formatted", 1)).unwrap_err();
    assert!(
        matches!(&err, ExecError::Panicked(m) if m == "formatted 1"),
        "{err}"
    );
    // A panic inside a job's progress callback is caught the same way.
    let f = finetune_setup();
    let cancel = AtomicBool::new(false);
    let work = tempfile::tempdir().unwrap();
    let err = execute(
        &f.job,
        &f.inputs,
        &options(2, work.path().to_path_buf()),
        &cancel,
        &mut |_, _, _| panic!("progress exploded"),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ExecError::Panicked(m) if m == "progress exploded"),
        "{err}"
    );
    assert_eq!(catch(|| Ok(5)).unwrap(), 5);
}

/// Each failure says whose fault it is: inputs that cannot work on any worker (a dataset
/// that does not parse or is empty, model files that do not load, an adapter that does
/// not, a prompt outside the vocabulary, a max_len past the context), or this worker's
/// (cancelled, out of time, inputs not laid out).
#[test]
fn failures_say_whether_the_job_or_the_worker_is_to_blame() {
    let cancel = AtomicBool::new(false);
    let work = tempfile::tempdir().unwrap();
    let opts = options(1, work.path().to_path_buf());
    let run = |job: &JobSpec, inputs: &JobInputs| {
        execute(job, inputs, &opts, &cancel, &mut no_progress()).unwrap_err()
    };

    // Datasets: garbage, and nothing at all.
    for bytes in [
        &b"this is not json\n{\"text\": \"fine\"}\n"[..],
        b"",
        b"\n\n",
    ] {
        let mut f = finetune_setup();
        let path = f.data.path().join("bad.jsonl");
        std::fs::write(&path, bytes).unwrap();
        f.inputs.dataset_path = Some(path);
        let JobKind::Finetune(ft) = &mut f.job.kind else {
            unreachable!()
        };
        ft.dataset = ContentId::of(bytes);
        let err = run(&f.job, &f.inputs);
        assert_eq!(err.kind(), FailureKind::Dataset, "{err}");
    }

    // A max_len the model's context cannot hold is the job's settings.
    let mut f = finetune_setup();
    let JobKind::Finetune(ft) = &mut f.job.kind else {
        unreachable!()
    };
    ft.params.max_len = Some(100_000);
    let err = run(&f.job, &f.inputs);
    assert_eq!(err.kind(), FailureKind::Settings, "{err}");

    // A truncated weights file.
    let (model, model_id) = tiny_model(3);
    let weights = model.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let job = inference(model_id, Prompt::Tokens(vec![1, 2]), Sampling::Greedy);
    let err = run(&job, &inputs(model.path(), model_id));
    assert!(matches!(err, ExecError::Model(_)), "{err}");
    assert_eq!(err.kind(), FailureKind::Model, "{err}");

    // An adapter that does not load, and a prompt outside the vocabulary.
    let (model, model_id) = tiny_model(3);
    let adapter = tempfile::tempdir().unwrap();
    std::fs::write(adapter.path().join("adapter_config.json"), "{").unwrap();
    let adapter_id = ContentId::of(b"adapter");
    let mut job = inference(model_id, Prompt::Tokens(vec![1, 2]), Sampling::Greedy);
    let JobKind::Inference(inf) = &mut job.kind else {
        unreachable!()
    };
    inf.adapter = Some(adapter_id);
    let mut with_adapter = inputs(model.path(), model_id);
    with_adapter.adapter_dir = Some(adapter.path().to_path_buf());
    with_adapter.adapter_id = Some(adapter_id);
    let err = run(&job, &with_adapter);
    assert!(matches!(err, ExecError::Adapter(_)), "{err}");
    assert_eq!(err.kind(), FailureKind::Adapter, "{err}");
    let job = inference(
        model_id,
        Prompt::Tokens(vec![1, u32::MAX]),
        Sampling::Greedy,
    );
    let err = run(&job, &inputs(model.path(), model_id));
    assert_eq!(err.kind(), FailureKind::Prompt, "{err}");

    // The worker's own troubles: another worker may do better.
    let err = run(&job, &inputs(&model.path().join("nowhere"), model_id));
    assert_eq!(err.kind(), FailureKind::Worker, "{err}");
    let f = finetune_setup();
    let stopped = AtomicBool::new(true);
    let err = execute(&f.job, &f.inputs, &opts, &stopped, &mut no_progress()).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Worker, "{err}");
    let mut late = options(1, work.path().to_path_buf());
    late.deadline = Instant::now();
    let err = execute(&f.job, &f.inputs, &late, &cancel, &mut no_progress()).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Worker, "{err}");
    for e in [
        ExecError::Panicked("boom".into()),
        ExecError::Input("no threads".into()),
    ] {
        assert_eq!(e.kind(), FailureKind::Worker, "{e}");
    }
}

/// The declared size of a fine-tune without max_len assumes the trainer's default bound.
#[test]
fn the_declared_default_max_len_is_the_trainers() {
    assert_eq!(
        olc_protocol::messages::job::DEFAULT_TRAINING_MAX_LEN as usize,
        olc_gpu::train::DEFAULT_MAX_LEN
    );
}

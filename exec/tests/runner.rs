//! The runner daemons execute jobs through keeps models resident without changing a bit:
//! a job served by a resident model gives what a fresh load gives, the pool keeps the
//! models it was asked to and no more, and a model that does not load is not kept.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use olc_exec::infer::EngineChoice;
use olc_exec::{EnginePool, ExecError, ExecOptions, InProcess, Runner, execute};
use olc_gpu::compute::Isa;
use olc_protocol::{
    Amount, ContentId, InferenceJob, JobKind, JobSpec, Prompt, Requirements, Sampling,
    VerificationPolicy,
};
use olc_testkit::jobs::model_inputs as inputs;
use olc_testkit::models::tiny_model;

fn job(model: ContentId, prompt: &str) -> JobSpec {
    JobSpec {
        kind: JobKind::Inference(InferenceJob {
            model,
            adapter: None,
            prompt: Prompt::Text(prompt.into()),
            sampling: Sampling::Sample {
                temperature: 0.9,
                top_k: 0,
                top_p: 1.0,
            },
            max_tokens: 5,
            seed: 7,
        }),
        requirements: Requirements::default(),
        max_fee: Amount(1000),
        verification: VerificationPolicy::Single,
        deadline_ms: u64::MAX,
        nonce: 1,
    }
}

fn options(work_dir: PathBuf) -> ExecOptions {
    ExecOptions {
        threads: 1,
        deadline: Instant::now() + Duration::from_secs(600),
        work_dir,
    }
}

fn choice(threads: usize) -> EngineChoice {
    EngineChoice {
        isa: Isa::Portable,
        threads,
        prefill_chunk: 0,
    }
}

#[test]
fn jobs_on_a_resident_model_give_what_a_fresh_load_gives() {
    let (model, id) = tiny_model(5);
    let work = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let runner = InProcess::new(EnginePool::new(1 << 30));
    for prompt in ["hello world", "the quick brown fox", "hello world"] {
        let spec = job(id, prompt);
        let fresh = execute(
            &spec,
            &inputs(model.path(), id),
            &options(work.path().into()),
            &cancel,
            &mut |_, _, _| {},
        )
        .unwrap();
        let resident = runner
            .run(
                &spec,
                &inputs(model.path(), id),
                &options(work.path().into()),
                &cancel,
                &mut |_, _, _| {},
            )
            .unwrap();
        assert_eq!(resident.output, fresh.output, "{prompt}");
        assert_eq!(resident.commitment, fresh.commitment, "{prompt}");
        assert_eq!(runner.engines().resident(), vec![id]);
        assert_eq!(runner.engines().loads(), 1);
    }
}

/// Bytes of one tiny model, as the pool counts them.
fn tiny_bytes(dir: &Path) -> u64 {
    olc_exec::LoadedModel::load(dir, &choice(1), 16)
        .unwrap()
        .bytes
}

#[test]
fn the_pool_keeps_the_most_recently_used_models_within_its_budget() {
    let (a, a_id) = tiny_model(1);
    let (b, b_id) = tiny_model(2);
    let one = tiny_bytes(a.path());
    assert_eq!(one, tiny_bytes(b.path()));
    let pool = EnginePool::new(one);
    let first_a = pool.get(a_id, a.path(), &choice(1)).unwrap();
    assert!(Arc::ptr_eq(
        &first_a,
        &pool.get(a_id, a.path(), &choice(1)).unwrap()
    ));
    assert_eq!(pool.loads(), 1);
    drop(first_a);
    let first_b = pool.get(b_id, b.path(), &choice(1)).unwrap();
    assert_eq!(pool.resident(), vec![b_id], "a made room for b");
    assert_eq!(pool.resident_bytes(), one);
    assert!(Arc::ptr_eq(
        &first_b,
        &pool.get(b_id, b.path(), &choice(1)).unwrap()
    ));
    drop(first_b);
    // Another thread count is another engine (computing the same bits).
    pool.get(b_id, b.path(), &choice(2)).unwrap();
    assert_eq!(pool.loads(), 3);

    let two = EnginePool::new(2 * one);
    let a1 = two.get(a_id, a.path(), &choice(1)).unwrap();
    let b1 = two.get(b_id, b.path(), &choice(1)).unwrap();
    assert!(Arc::ptr_eq(
        &a1,
        &two.get(a_id, a.path(), &choice(1)).unwrap()
    ));
    drop((a1, b1));
    // `b` is now the least recently used, so a third model pushes it out, not `a`.
    two.get(a_id, a.path(), &choice(2)).unwrap();
    assert_eq!(two.resident().len(), 2);
    assert!(two.resident().contains(&a_id) && !two.resident().contains(&b_id));
}

#[test]
fn a_model_in_use_is_never_dropped_for_another() {
    let (a, a_id) = tiny_model(1);
    let (b, b_id) = tiny_model(2);
    let pool = EnginePool::new(tiny_bytes(a.path()));
    let running = pool.get(a_id, a.path(), &choice(1)).unwrap();
    pool.get(b_id, b.path(), &choice(1)).unwrap();
    assert_eq!(pool.resident(), vec![a_id, b_id], "a is in use: it stays");
    // Once it is released, the next load may make room with it.
    drop(running);
    let (c, c_id) = tiny_model(3);
    pool.get(c_id, c.path(), &choice(1)).unwrap();
    assert_eq!(pool.resident(), vec![c_id]);
}

#[test]
fn a_pool_of_no_bytes_loads_every_time_and_a_model_too_big_is_served_not_kept() {
    let (a, a_id) = tiny_model(1);
    let none = EnginePool::new(0);
    let x = none.get(a_id, a.path(), &choice(1)).unwrap();
    let y = none.get(a_id, a.path(), &choice(1)).unwrap();
    assert!(!Arc::ptr_eq(&x, &y));
    assert!(none.resident().is_empty());
    assert_eq!(none.loads(), 2);

    let small = EnginePool::new(tiny_bytes(a.path()) - 1);
    small.get(a_id, a.path(), &choice(1)).unwrap();
    assert!(small.resident().is_empty());
}

#[test]
fn a_model_that_does_not_load_is_not_kept() {
    let pool = EnginePool::new(1 << 30);
    let missing = tempfile::tempdir().unwrap();
    let gone = missing.path().join("nothing-here");
    let err = pool
        .get(ContentId::of(b"m"), &gone, &choice(1))
        .unwrap_err();
    assert!(matches!(err, ExecError::Input(_)), "{err}");
    let empty = pool
        .get(ContentId::of(b"m"), missing.path(), &choice(1))
        .unwrap_err();
    assert!(matches!(empty, ExecError::Model(_)), "{empty}");
    assert!(pool.resident().is_empty());
    let err = pool
        .get(ContentId::of(b"m"), missing.path(), &choice(0))
        .unwrap_err();
    assert!(
        err.to_string().contains("threads must be at least 1"),
        "{err}"
    );
}

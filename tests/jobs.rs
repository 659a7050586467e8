//! Jobs end to end in one process: a coordinator and three workers on loopback, a
//! submitter that uploads content and submits signed jobs.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::{STAKE, free_port, fund, node};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use olc_client::{SubmitError, Submitter};
use olc_coordinator::{Coordinator, CoordinatorConfig, JobsConfig};
use olc_gpu::model::{Preset, write_checkpoint};
use olc_net::libp2p::Multiaddr;
use olc_net::{unix_ms, unix_us};
use olc_protocol::*;
use olc_worker::{Conduct, Worker, WorkerConfig};

/// Generous: CI machines have two cores and run other tests alongside.
const BOUND: Duration = Duration::from_secs(120);

struct Net {
    dir: tempfile::TempDir,
    coordinator_id: Identity,
    coordinator: Option<Coordinator>,
    addr: Multiaddr,
    workers: Vec<(Identity, Option<Worker>)>,
}

async fn start_coordinator(id: &Identity, addr: &Multiaddr, data: Option<PathBuf>) -> Coordinator {
    let cfg = CoordinatorConfig {
        listen: vec![addr.clone()],
        node: node(),
        data_dir: data,
        jobs: JobsConfig {
            assignment_timeout_ms: 60_000,
            ..JobsConfig::default()
        },
        faucet: true,
        ..CoordinatorConfig::default()
    };
    Coordinator::start(id, cfg).await.unwrap()
}

impl Net {
    /// A coordinator (durable when `durable`) on a fixed loopback port, and `n` workers.
    async fn start(n: usize, durable: bool) -> Self {
        Self::start_with(n, durable, &[]).await
    }

    /// As `start`, with worker `i` behaving as `conducts[i]` (honest beyond the list).
    async fn start_with(n: usize, durable: bool, conducts: &[Conduct]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", free_port())
            .parse()
            .unwrap();
        let coordinator_id = Identity::generate().unwrap();
        let data = durable.then(|| dir.path().join("coordinator"));
        let coordinator = start_coordinator(&coordinator_id, &addr, data).await;
        let mut net = Self {
            dir,
            coordinator_id,
            coordinator: Some(coordinator),
            addr,
            workers: Vec::new(),
        };
        for i in 0..n {
            let id = Identity::generate().unwrap();
            fund(&net.addr, &id, 2 * STAKE, true).await;
            let mut cfg =
                WorkerConfig::new(vec![net.addr.clone()], net.dir.path().join(format!("w{i}")));
            cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
            cfg.node = node();
            cfg.threads = 1;
            cfg.offer.interval_ms = 300;
            cfg.conduct = conducts.get(i).copied().unwrap_or_default();
            let w = Worker::start(&id, cfg).await.unwrap();
            net.workers.push((id, Some(w)));
        }
        net.wait_registered(n).await;
        net
    }

    fn coordinator(&self) -> &Coordinator {
        self.coordinator.as_ref().unwrap()
    }

    async fn wait_registered(&self, n: usize) {
        let start = Instant::now();
        while self.coordinator().workers().len() < n {
            assert!(start.elapsed() < BOUND, "workers did not register");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A new submitter with credits for many jobs.
    async fn submitter(&self) -> Submitter {
        let id = Identity::generate().unwrap();
        fund(&self.addr, &id, 1_000_000_000, false).await;
        Submitter::connect(&id, &node(), &self.addr, BOUND)
            .await
            .unwrap()
    }

    fn model(&self) -> PathBuf {
        let d = self.dir.path().join("model");
        if !d.exists() {
            write_checkpoint(&d, Preset::Tiny, 5).unwrap();
        }
        d
    }

    fn dataset(&self) -> PathBuf {
        let p = self.dir.path().join("data.jsonl");
        let lines = [
            r#"{"id": "a", "prompt": "Q: sky?\nA:", "completion": " blue", "contributor": "a1d1ce0000000000000000000000000000000000000000000000000000000001"}"#,
            r#"{"id": "b", "prompt": "Q: coal?\nA:", "completion": " black"}"#,
            r#"{"id": "c", "text": "plain text trains every token"}"#,
        ];
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    }

    async fn stop(mut self) {
        for (_, w) in self.workers.iter_mut() {
            if let Some(w) = w.take() {
                w.stop().await;
            }
        }
        if let Some(c) = self.coordinator.take() {
            c.stop().await;
        }
    }
}

fn spec(kind: JobKind, replicas: u8) -> JobSpec {
    JobSpec {
        kind,
        requirements: Requirements::default(),
        max_fee: Amount(1_000),
        verification: if replicas > 1 {
            VerificationPolicy::Replicate { replicas }
        } else {
            VerificationPolicy::Single
        },
        deadline_ms: unix_ms() + 120_000,
        nonce: unix_us(),
    }
}

/// A long fine-tune's declared size (steps × batch × 2048 tokens) costs more than
/// [`spec`]'s 1000 credits at the workers' price of 10 per 1000 tokens.
fn with_fee(mut spec: JobSpec, max_fee: u64) -> JobSpec {
    spec.max_fee = Amount(max_fee);
    spec
}

fn inference(model: ContentId, adapter: Option<ContentId>, prompt: &str) -> JobKind {
    JobKind::Inference(InferenceJob {
        model,
        adapter,
        prompt: Prompt::Text(prompt.into()),
        sampling: Sampling::Greedy,
        max_tokens: 6,
        seed: 0,
    })
}

fn finetune(model: ContentId, dataset: ContentId, steps: u32) -> JobKind {
    JobKind::Finetune(FinetuneJob {
        publish_as: None,
        model,
        dataset,
        params: TrainingParams {
            rank: 4,
            alpha: 8.0,
            targets: vec![TargetModule::QProj, TargetModule::VProj],
            learning_rate: 0.01,
            weight_decay: 0.0,
            max_len: None,
            batch_size: 2,
            grad_accum: 1,
            length: TrainingLength::Steps(steps),
            warmup_steps: 0,
            seed: 3,
            init_adapter: None,
        },
    })
}

/// Uploads a model directory as the CLI does: the files the loader reads.
async fn upload_model(s: &Submitter, dir: &std::path::Path) -> ContentId {
    let files = olc_gpu::model::Checkpoint::files(dir).unwrap();
    s.upload_dir(dir, &files).await.unwrap()
}

async fn wait_done(s: &Submitter, id: ContentId) -> JobView {
    let view = tokio::time::timeout(BOUND, s.wait(id, |_| {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.state, JobState::Done, "{view:#?}");
    view
}

fn olc_json(args: &[&str]) -> serde_json::Value {
    common::json(&common::olc(args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inference_job_equals_olc_run_infer_and_its_receipt_verifies() {
    let net = Net::start(3, false).await;
    let s = net.submitter().await;
    let model_dir = net.model();
    let model = upload_model(&s, &model_dir).await;
    let id = s
        .submit(&spec(inference(model, None, "Hello there"), 2))
        .await
        .unwrap();
    let view = wait_done(&s, id).await;
    let Some(JobOutput::Inference { tokens, text }) = &view.output else {
        panic!("{view:?}")
    };
    let local = olc_json(&[
        "run",
        "infer",
        "--model",
        model_dir.to_str().unwrap(),
        "--prompt",
        "Hello there",
        "--max-tokens",
        "6",
        "--json",
    ]);
    let local_tokens: Vec<u32> = serde_json::from_value(local["tokens"].clone()).unwrap();
    assert_eq!(*tokens, local_tokens);
    assert_eq!(*text, local["text"].as_str().unwrap());

    // Two distinct workers ran it; the receipt says so and verifies offline.
    let receipt = view.receipt.unwrap();
    let checked = verify_receipt(&receipt).unwrap();
    assert_eq!(checked.workers.len(), 2);
    assert_ne!(checked.workers[0], checked.workers[1]);
    assert_eq!(checked.receipt.output, inference_commitment(tokens));
    let file = net.dir.path().join("receipt.bin");
    std::fs::write(&file, receipt.to_bytes().unwrap()).unwrap();
    let ok = olc_json(&["receipt", "verify", file.to_str().unwrap(), "--json"]);
    assert_eq!(ok["valid"], true);
    let mut bytes = receipt.to_bytes().unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let out = common::olc(&["receipt", "verify", file.to_str().unwrap()]);
    assert!(!out.status.success(), "a flipped byte must not verify");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inference_jobs_share_one_resident_model_and_each_equals_olc_run_infer() {
    // 32 streamed requests at random times, with random adapters, prompts, lengths and
    // sampling, batched together on one resident model: each gets exactly the tokens it
    // gets alone, streamed in order.
    let net = Net::start(1, false).await;
    let s = net.submitter().await;
    let model_dir = net.model();
    let model = upload_model(&s, &model_dir).await;
    let config = olc_gpu::model::Checkpoint::load(&model_dir).unwrap().config;
    let mut adapters = Vec::new();
    for seed in 0..4u64 {
        let dir = net.dir.path().join(format!("adapter{seed}"));
        let adapter = olc_testkit::models::random_adapter(&config, 4, seed + 1);
        olc_gpu::train::write_adapter(&dir, &adapter).unwrap();
        let id = s.upload_adapter(&dir).await.unwrap();
        adapters.push((dir, id));
    }
    // xorshift: the cases are random but the same on every run.
    let mut state = 0x5EED_u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let words = [
        "Hello", "there", "a", "quick", "brown", "fox", "7", "once", "upon", "time",
    ];
    let cases: Vec<(String, Option<usize>, u32, Sampling, u64, u64)> = (0..32)
        .map(|i| {
            let prompt: Vec<&str> = (0..1 + next(8)).map(|_| words[next(10) as usize]).collect();
            let adapter = (next(5) < 4).then(|| next(4) as usize);
            let sampling = if next(2) == 0 {
                Sampling::Greedy
            } else {
                Sampling::Sample {
                    temperature: 0.8,
                    top_k: 20,
                    top_p: 0.9,
                }
            };
            (
                prompt.join(" "),
                adapter,
                1 + next(16) as u32,
                sampling,
                i,
                next(200),
            )
        })
        .collect();
    let base_nonce = unix_us();
    let runs = cases
        .iter()
        .map(|(prompt, adapter, max_tokens, sampling, seed, delay_ms)| {
            let s = s.clone();
            let mut job = spec(
                JobKind::Inference(InferenceJob {
                    model,
                    adapter: adapter.map(|i| adapters[i].1),
                    prompt: Prompt::Text(prompt.clone()),
                    sampling: *sampling,
                    max_tokens: *max_tokens,
                    seed: *seed,
                }),
                1,
            );
            job.nonce = base_nonce + seed; // built in one instant: each its own
            let delay = Duration::from_millis(*delay_ms);
            async move {
                tokio::time::sleep(delay).await;
                let id = s.submit(&job).await.unwrap();
                let mut streamed = Streamed::default();
                let view = tokio::time::timeout(BOUND, s.follow(id, false, |h| streamed.hear(h)))
                    .await
                    .unwrap()
                    .unwrap();
                (view, streamed)
            }
        });
    let answers = futures::future::join_all(runs).await;
    for ((prompt, adapter, max_tokens, sampling, seed, _), (view, streamed)) in
        cases.iter().zip(answers)
    {
        assert_eq!(view.state, JobState::Done, "{view:#?}");
        let Some(JobOutput::Inference { tokens, .. }) = &view.output else {
            panic!("{view:?}")
        };
        let alone = olc_exec::infer::generate_text(
            &olc_exec::infer::GenerateRequest {
                model_dir: &model_dir,
                adapter_dir: adapter.map(|i| adapters[i].0.as_path()),
                prompt: &Prompt::Text(prompt.clone()),
                sampling: *sampling,
                seed: *seed,
                max_tokens: *max_tokens,
            },
            &olc_exec::infer::EngineChoice::detect(1),
        )
        .unwrap();
        assert_eq!(*tokens, alone.tokens, "{prompt} with adapter {adapter:?}");
        assert_eq!(streamed.tokens, alone.tokens, "streamed in order: {prompt}");
    }
    let worker = net.workers[0].1.as_ref().unwrap();
    assert_eq!(worker.model_loads(), 1, "32 jobs, one load");
    assert_eq!(worker.active_jobs(), 0, "inference took no fine-tune slot");
    // The worker's adverts now say the model is in memory, for the matcher to prefer.
    let start = Instant::now();
    while !net
        .coordinator()
        .workers()
        .iter()
        .any(|w| w.advert.resident.contains(&model))
    {
        assert!(
            start.elapsed() < BOUND,
            "the advert never listed the resident model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finetune_job_equals_olc_run_finetune_and_its_adapter_serves_inference() {
    let net = Net::start(3, false).await;
    let s = net.submitter().await;
    let model_dir = net.model();
    let data = net.dataset();
    let model = upload_model(&s, &model_dir).await;
    let dataset = s.upload_file(&data).await.unwrap();
    let id = s
        .submit(&spec(finetune(model, dataset, 8), 2))
        .await
        .unwrap();
    let view = wait_done(&s, id).await;
    // Each replica that delivered reported its last step, out of 8, with its loss.
    for r in view.replicas.iter().filter(|r| r.state == "revealed") {
        let p = r.progress.as_ref().unwrap();
        assert_eq!((p.step, p.total), (8, 8), "{view:#?}");
        assert!(p.loss.is_finite());
    }
    let Some(JobOutput::Finetune {
        adapter,
        commitment,
        first_loss,
        last_loss,
    }) = view.output
    else {
        panic!("{view:?}")
    };
    assert!(first_loss.is_finite() && last_loss.is_finite());
    let local_out = net.dir.path().join("local-adapter");
    let local = olc_json(&[
        "run",
        "finetune",
        "--model",
        model_dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        local_out.to_str().unwrap(),
        "--rank",
        "4",
        "--alpha",
        "8",
        "--targets",
        "q_proj,v_proj",
        "--lr",
        "0.01",
        "--batch",
        "2",
        "--steps",
        "8",
        "--seed",
        "3",
        "--json",
    ]);
    assert_eq!(
        commitment.to_string(),
        local["commitment"].as_str().unwrap()
    );

    // The adapter comes back byte for byte, with its provenance, and serves a job.
    let fetched = net.dir.path().join("fetched");
    s.download_dir(adapter, &fetched).await.unwrap();
    assert_eq!(
        std::fs::read(fetched.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(local_out.join("adapter_model.safetensors")).unwrap()
    );
    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fetched.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["records"].as_array().unwrap().len(), 3);
    let receipt = verify_receipt(view.receipt.as_ref().unwrap()).unwrap();
    let exec = receipt.receipt.executions[0].verify().unwrap();
    assert!(
        exec.provenance.is_some(),
        "a fine-tune's receipt names its provenance"
    );
    let id = s
        .submit(&spec(inference(model, Some(adapter), "Q: sky?\nA:"), 1))
        .await
        .unwrap();
    wait_done(&s, id).await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_is_replaced_and_the_job_completes() {
    let mut net = Net::start(3, false).await;
    let s = net.submitter().await;
    let model = upload_model(&s, &net.model()).await;
    let dataset = s.upload_file(&net.dataset()).await.unwrap();
    let id = s
        .submit(&with_fee(
            spec(finetune(model, dataset, 3000), 1),
            1_000_000,
        ))
        .await
        .unwrap();
    // Wait for the first progress report, then stop that worker.
    let start = Instant::now();
    let victim = loop {
        let v = s.status(id).await.unwrap();
        if let Some(r) = v.replicas.iter().find(|r| r.progress.is_some()) {
            break r.worker;
        }
        assert!(start.elapsed() < BOUND, "no progress: {v:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let slot = net
        .workers
        .iter_mut()
        .find(|(id, _)| id.public_key() == victim)
        .unwrap();
    slot.1.take().unwrap().stop().await;
    let view = tokio::time::timeout(Duration::from_secs(120), s.wait(id, |_| {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.state, JobState::Done, "{view:#?}");
    // Stopped mid-run, the worker cancels its job and says so (or, if it cannot, the
    // coordinator sees it leave the network): either way its replica no longer counts.
    let first = &view.replicas[0].state;
    assert!(
        first.contains("left the network") || first.contains("cancelled"),
        "{view:#?}"
    );
    let finisher = view
        .replicas
        .iter()
        .find(|r| r.state == "revealed")
        .unwrap();
    assert_ne!(finisher.worker, victim);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_requirements_are_explained_and_bad_jobs_refused() {
    let net = Net::start(3, false).await;
    let s = net.submitter().await;
    let model = upload_model(&s, &net.model()).await;
    let mut big = spec(inference(model, None, "hi"), 1);
    big.requirements.min_memory_bytes = 1 << 50;
    let id = s.submit(&big).await.unwrap();
    let start = Instant::now();
    let waiting = loop {
        let v = s.status(id).await.unwrap();
        if let Some(w) = v.waiting {
            break w;
        }
        assert!(start.elapsed() < BOUND);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        waiting.starts_with("no worker has 1024.0 TiB") || waiting.contains("free"),
        "{waiting}"
    );

    // Tampered: the signature no longer matches the bytes.
    let signed = Signed::sign(s.identity(), &spec(inference(model, None, "x"), 1)).unwrap();
    let mut bytes = signed.to_bytes().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let tampered = Signed::<JobSpec>::from_bytes(&bytes).unwrap();
    let err = s.submit_signed(tampered).await.unwrap_err();
    assert!(
        matches!(&err, SubmitError::Refused(m) if m.contains("signature")),
        "{err}"
    );
    // Replayed: the same signed job twice, and another job with a used nonce.
    let job = spec(inference(model, None, "y"), 1);
    s.submit(&job).await.unwrap();
    let err = s.submit(&job).await.unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
    let mut again = job.clone();
    again.max_fee = Amount(5);
    let err = s.submit(&again).await.unwrap_err();
    assert!(err.to_string().contains("nonce"), "{err}");
    // Inputs the coordinator does not have.
    let err = s
        .submit(&spec(inference(ContentId::of(b"nothing"), None, "z"), 1))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("upload the job's inputs first"),
        "{err}"
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restarted_between_submit_and_result_loses_nothing() {
    let mut net = Net::start(2, true).await;
    let s = net.submitter().await;
    let model = upload_model(&s, &net.model()).await;
    let dataset = s.upload_file(&net.dataset()).await.unwrap();
    let id = s
        .submit(&with_fee(spec(finetune(model, dataset, 400), 1), 1_000_000))
        .await
        .unwrap();
    let start = Instant::now();
    while s.status(id).await.unwrap().state == JobState::Queued {
        assert!(start.elapsed() < BOUND);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    net.coordinator.take().unwrap().stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = net.dir.path().join("coordinator");
    net.coordinator = Some(start_coordinator(&net.coordinator_id, &net.addr, Some(data)).await);
    let s = net.submitter().await;
    let view = wait_done(&s, id).await;
    assert!(matches!(view.output, Some(JobOutput::Finetune { .. })));
    verify_receipt(view.receipt.as_ref().unwrap()).unwrap();
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_no_worker_can_run_fails_quickly_with_the_workers_reason() {
    let net = Net::start(3, false).await;
    let s = net.submitter().await;
    let model = upload_model(&s, &net.model()).await;
    let dataset = s.upload_file(&net.dataset()).await.unwrap();
    let JobKind::Finetune(mut ft) = finetune(model, dataset, 5) else {
        unreachable!()
    };
    ft.params.max_len = Some(3); // every record is longer
    let id = s.submit(&spec(JobKind::Finetune(ft), 1)).await.unwrap();
    let view = tokio::time::timeout(BOUND, s.wait(id, |_| {}))
        .await
        .unwrap()
        .unwrap();
    match &view.state {
        JobState::Failed(why) => assert!(why.contains("longer than"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(view.replicas.len(), 3, "each worker tried once: {view:#?}");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_output_is_caught_by_the_referee_slashed_and_the_right_one_paid() {
    // Two workers, one of which commits to a wrong output: replicate:2 notices, the
    // coordinator's referee re-runs the job, and only the liar pays.
    let net = Net::start_with(2, false, &[Conduct::WrongOutput]).await;
    let liar = net.workers[0].0.public_key();
    let honest = net.workers[1].0.public_key();
    let s = net.submitter().await;
    let model = upload_model(&s, &net.model()).await;
    let id = s
        .submit(&spec(inference(model, None, "Hello"), 2))
        .await
        .unwrap();
    let view = wait_done(&s, id).await;
    let local = olc_json(&[
        "run",
        "infer",
        "--model",
        net.model().to_str().unwrap(),
        "--prompt",
        "Hello",
        "--max-tokens",
        "6",
        "--json",
    ]);
    match &view.output {
        Some(JobOutput::Inference { tokens, .. }) => {
            assert_eq!(
                serde_json::json!(tokens),
                local["tokens"],
                "the honest answer won"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(view.slashes.len(), 1, "{view:#?}");
    let slash = &view.slashes[0];
    assert_eq!(slash.worker, liar);
    assert_eq!(slash.reason, SlashReason::WrongOutput);
    assert_eq!(slash.amount, Amount(STAKE / 2));
    let receipt = verify_receipt(view.receipt.as_ref().unwrap()).unwrap();
    assert_eq!(
        receipt.workers,
        vec![honest],
        "only the honest execution is embedded"
    );
    assert_eq!(receipt.receipt.slashes, view.slashes);
    assert!(receipt.receipt.payouts.iter().all(|p| p.to != liar));

    let liar_account = s.balance(liar).await.unwrap();
    assert_eq!(liar_account.bonded, Amount(STAKE / 2));
    assert!(liar_account.jailed_until_ms.is_some());
    assert!(liar_account.reputation < 0.5);
    let honest_account = s.balance(honest).await.unwrap();
    assert!(honest_account.reputation > 0.5);
    assert!(honest_account.jailed_until_ms.is_none());
    let ledger = s.ledger().await.unwrap();
    assert!(ledger.balanced(), "{ledger:#?}");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_unstaked_below_the_minimum_is_not_matched_and_the_job_says_why() {
    let net = Net::start(1, false).await;
    let worker = &net.workers[0].0;
    let own = Submitter::connect(worker, &node(), &net.addr, BOUND)
        .await
        .unwrap();
    let view = own
        .account(AccountAction::Unstake {
            amount: Amount(STAKE),
        })
        .await
        .unwrap();
    assert_eq!((view.bonded, view.unbonding), (Amount(0), Amount(STAKE)));
    let s = net.submitter().await;
    let model = upload_model(&s, &net.model()).await;
    let id = s
        .submit(&spec(inference(model, None, "Hello"), 1))
        .await
        .unwrap();
    let start = Instant::now();
    let waiting = loop {
        let v = s.status(id).await.unwrap();
        if let Some(w) = v.waiting {
            break w;
        }
        assert_eq!(
            v.state,
            JobState::Queued,
            "matched an unstaked worker: {v:#?}"
        );
        assert!(start.elapsed() < BOUND);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(waiting.contains("minimum stake of 100"), "{waiting}");
    // The worker list says why: no stake bonded, so it is not matched.
    let client = olc_net::Client::connect(&node(), &net.addr, BOUND)
        .await
        .unwrap();
    let RpcResponse::WorkerStandings(standings) =
        client.rpc(RpcRequest::WorkerStandings).await.unwrap()
    else {
        panic!("not a worker list")
    };
    assert_eq!(standings.min_stake, Amount(100));
    let me = &standings.workers[0];
    assert_eq!(me.worker.public_key, worker.public_key());
    assert_eq!((me.bonded, me.jailed_until_ms), (Amount(0), None));
    assert_eq!(
        me.ineligible.as_deref(),
        Some("stake 0 is below the minimum of 100")
    );
    // Its account says when the unstaked credits unlock.
    let account = own.balance(worker.public_key()).await.unwrap();
    assert_eq!(account.unbonding_releases.len(), 1);
    assert_eq!(account.unbonding_releases[0].amount, Amount(STAKE));
    assert!(account.unbonding_releases[0].unlocks_ms > unix_ms());
    // Staking from its free balance makes it a candidate again, and the job runs.
    let balance = own.balance(worker.public_key()).await.unwrap();
    assert_eq!(balance.balance, Amount(STAKE));
    own.account(AccountAction::Stake {
        amount: Amount(STAKE),
    })
    .await
    .unwrap();
    wait_done(&s, id).await;
    net.stop().await;
}

/// Inputs that can never work (a dataset that does not parse, model weights cut short) fail
/// the job as soon as every worker able to run it agrees, with the error and the whole
/// escrow back. Two workers and two replicas: each tries once, and then nobody is left to
/// ask, which used to leave the job waiting until its deadline with the credits locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_inputs_cannot_work_fails_quickly_with_their_error_and_a_full_refund() {
    let net = Net::start(2, false).await;
    let s = net.submitter().await;
    let before = s.balance(s.identity().public_key()).await.unwrap().balance;
    let model_dir = net.model();
    let model = upload_model(&s, &model_dir).await;
    let garbage = net.dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "this is not json\n").unwrap();
    let dataset = s.upload_file(&garbage).await.unwrap();
    let started = Instant::now();
    let id = s
        .submit(&spec(finetune(model, dataset, 5), 2))
        .await
        .unwrap();
    let view = tokio::time::timeout(BOUND, s.wait(id, |_| {}))
        .await
        .unwrap()
        .unwrap();
    let JobState::Failed(why) = &view.state else {
        panic!("{view:#?}")
    };
    assert!(
        why.starts_with("the dataset cannot be used: ") && why.contains("line 1"),
        "{why}"
    );
    assert!(why.ends_with("(reported by 2 workers)"), "{why}");
    assert_eq!(view.replicas.len(), 2, "each worker tried once: {view:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "failed at once, not at the deadline"
    );
    assert_eq!(view.refund, Some(Amount(1_000)));
    assert_eq!(
        s.balance(s.identity().public_key()).await.unwrap().balance,
        before,
        "the whole escrow came back"
    );
    let ledger = s.ledger().await.unwrap();
    assert_eq!((ledger.open_escrows, ledger.escrowed), (0, Amount(0)));
    assert!(ledger.balanced());

    // Model weights cut in half: the model's error, for an inference job too.
    let cut = net.dir.path().join("cut-model");
    std::fs::create_dir_all(&cut).unwrap();
    for entry in std::fs::read_dir(&model_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), cut.join(entry.file_name())).unwrap();
    }
    let weights = cut.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let cut = upload_model(&s, &cut).await;
    let id = s
        .submit(&spec(inference(cut, None, "Hello"), 2))
        .await
        .unwrap();
    let view = tokio::time::timeout(BOUND, s.wait(id, |_| {}))
        .await
        .unwrap()
        .unwrap();
    let JobState::Failed(why) = &view.state else {
        panic!("{view:#?}")
    };
    assert!(why.starts_with("the model cannot be used: "), "{why}");
    assert_eq!(view.refund, Some(Amount(1_000)));
    assert!(
        net.coordinator().audit().is_clean(),
        "{:#?}",
        net.coordinator().audit()
    );
    net.stop().await;
}

/// A max fee that cannot pay the declared work at the cheapest online worker's price is
/// refused at submission with the sum needed; a fee of 0 always is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fee_no_worker_would_take_is_refused_at_submission_with_the_sum_needed() {
    let net = Net::start(1, false).await;
    let s = net.submitter().await;
    let before = s.balance(s.identity().public_key()).await.unwrap().balance;
    let model = upload_model(&s, &net.model()).await;
    let dataset = s.upload_file(&net.dataset()).await.unwrap();
    // 10,000,000 steps × batch 2 × 2048 tokens, at 10 per 1000 tokens.
    let huge = with_fee(spec(finetune(model, dataset, 10_000_000), 1), 100);
    let err = s.submit(&huge).await.unwrap_err();
    assert!(
        matches!(&err, SubmitError::Refused(m) if m == "max fee 100 is below the 409600000 \
            credits this job needs at the cheapest worker's price (10 per 1000 tokens, \
            40960000000 tokens declared)"),
        "{err:?}"
    );
    let err = s
        .submit(&with_fee(spec(inference(model, None, "hi"), 1), 0))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("max fee must be at least 1 credit"),
        "{err}"
    );
    assert_eq!(
        s.balance(s.identity().public_key()).await.unwrap().balance,
        before,
        "nothing escrowed"
    );
    // Enough for the declared size is accepted and runs.
    let id = s
        .submit(&with_fee(spec(finetune(model, dataset, 3), 1), 123))
        .await
        .unwrap();
    wait_done(&s, id).await;
    net.stop().await;
}

/// What a follower heard: the streamed tokens and text, chunk by chunk.
#[derive(Default)]
struct Streamed {
    tokens: Vec<u32>,
    text: String,
    chunks: usize,
}

impl Streamed {
    fn hear(&mut self, heard: olc_client::Heard<'_>) {
        if let olc_client::Heard::Text { text, tokens } = heard {
            self.tokens.extend_from_slice(tokens);
            self.text.push_str(text);
            self.chunks += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_job_arrives_in_order_as_its_verified_output_and_a_cheater_is_still_caught() {
    // Two replicas, one of which streams honestly but commits to a wrong output: the
    // stream is whichever replica led, and the verification after the last token is as
    // for any job.
    let net = Net::start_with(2, false, &[Conduct::WrongOutput]).await;
    let liar = net.workers[0].0.public_key();
    let s = net.submitter().await;
    let model = upload_model(&s, &net.model()).await;
    let mut job = spec(inference(model, None, "Once upon a time"), 2);
    if let JobKind::Inference(j) = &mut job.kind {
        j.max_tokens = 40;
    }
    let id = s.submit(&job).await.unwrap();
    let mut streamed = Streamed::default();
    let view = tokio::time::timeout(BOUND, s.follow(id, false, |h| streamed.hear(h)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.state, JobState::Done, "{view:#?}");
    let Some(JobOutput::Inference { tokens, text }) = &view.output else {
        panic!("{view:#?}");
    };
    assert!(streamed.chunks >= 1);
    assert_eq!(
        &streamed.tokens, tokens,
        "the stream's tokens are the verified output's"
    );
    assert_eq!(
        &streamed.text, text,
        "the stream's text concatenates to the output's"
    );
    assert_eq!(view.slashes.len(), 1, "{view:#?}");
    assert_eq!(view.slashes[0].worker, liar);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_stream_keeps_what_was_streamed_frees_the_slot_and_refunds_the_rest() {
    let net = Net::start(1, false).await;
    let s = net.submitter().await;
    let dir = net.dir.path().join("small");
    write_checkpoint(&dir, Preset::Small, 9).unwrap();
    let model = upload_model(&s, &dir).await;
    let mut job = with_fee(
        spec(inference(model, None, "Tell me a long story"), 1),
        100_000,
    );
    if let JobKind::Inference(j) = &mut job.kind {
        j.max_tokens = 2000;
    }
    let id = s.submit(&job).await.unwrap();
    let mut streamed = Streamed::default();
    let mut cancelled = false;
    let view = tokio::time::timeout(BOUND, async {
        // The follow's callback cannot await: cancel from a second connection once the
        // first chunk is in.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let follow = s.follow(id, false, |h| {
            streamed.hear(h);
            if streamed.chunks > 0 {
                let _ = tx.send(());
            }
        });
        tokio::pin!(follow);
        loop {
            tokio::select! {
                view = &mut follow => break view.unwrap(),
                Some(()) = rx.recv(), if !cancelled => {
                    s.cancel(id).await.unwrap();
                    cancelled = true;
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(cancelled);
    assert_eq!(view.state, JobState::Done, "{view:#?}");
    let Some(JobOutput::Inference { tokens, .. }) = &view.output else {
        panic!("{view:#?}");
    };
    assert!(
        !tokens.is_empty() && tokens.len() < 2000,
        "cut at what was streamed, got {} tokens",
        tokens.len()
    );
    assert!(
        streamed.tokens.starts_with(tokens) || tokens.starts_with(&streamed.tokens),
        "the kept output is the stream's"
    );
    let refund = view.refund.unwrap();
    assert!(refund.0 > 0, "the unused escrow went back");
    let receipt = verify_receipt(view.receipt.as_ref().unwrap()).unwrap();
    let execution = receipt.receipt.executions[0].verify().unwrap();
    assert_eq!(execution.output, inference_commitment(tokens));
    assert!(
        execution.metrics.tokens < 100 + tokens.len() as u64,
        "metered for the prompt and the kept tokens only: {}",
        execution.metrics.tokens
    );
    let worker = net.workers[0].1.as_ref().unwrap();
    let start = Instant::now();
    while worker.active_streams() > 0 {
        assert!(
            start.elapsed() < BOUND,
            "the cancelled generation's slot was not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Cancelling again, or someone else's cancel, changes nothing.
    assert!(s.cancel(id).await.is_err());
    let other = net.submitter().await;
    let err = other.cancel(id).await.unwrap_err();
    assert!(
        err.to_string().contains("ended") || err.to_string().contains("submitter"),
        "{err}"
    );
    let ledger = s.ledger().await.unwrap();
    assert!(ledger.balanced(), "{ledger:#?}");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_cancelled_fails_with_a_full_refund() {
    // No worker: the job waits, and its submitter's cancel ends it.
    let net = Net::start(0, false).await;
    let s = net.submitter().await;
    let model = upload_model(&s, &net.model()).await;
    let before = s.balance(s.identity().public_key()).await.unwrap();
    let id = s
        .submit(&spec(inference(model, None, "Hi"), 1))
        .await
        .unwrap();
    s.cancel(id).await.unwrap();
    let view = tokio::time::timeout(BOUND, s.wait(id, |_| {}))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&view.state, JobState::Failed(why) if why.contains("cancelled")),
        "{view:#?}"
    );
    let after = s.balance(s.identity().public_key()).await.unwrap();
    assert_eq!(after.balance, before.balance, "every credit came back");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finetune_that_names_its_adapter_publishes_it_when_it_settles() {
    let net = Net::start(1, false).await;
    let s = net.submitter().await;
    let model = upload_model(&s, &net.model()).await;
    let dataset = s.upload_file(&net.dataset()).await.unwrap();
    let mut kind = finetune(model, dataset, 2);
    if let JobKind::Finetune(j) = &mut kind {
        j.publish_as = Some("my-adapter".into());
    }
    let id = s
        .submit(&with_fee(spec(kind.clone(), 1), 100_000))
        .await
        .unwrap();
    let view = wait_done(&s, id).await;
    let Some(JobOutput::Finetune { adapter, .. }) = view.output else {
        panic!("{view:#?}");
    };
    let catalog = s.catalog().await.unwrap();
    let entry = catalog.iter().find(|e| e.name == "my-adapter").unwrap();
    assert_eq!(entry.content, adapter);
    assert_eq!(entry.kind, CatalogKind::Adapter { base: model });
    assert_eq!(entry.owner, s.identity().public_key());

    // The name is now this submitter's: another's fine-tune asking for it is refused at
    // submission, before anything runs.
    let other = net.submitter().await;
    other.upload_file(&net.dataset()).await.unwrap();
    let err = other
        .submit(&with_fee(spec(kind, 1), 100_000))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("belongs to"), "{err}");
    net.stop().await;
}

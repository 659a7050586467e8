//! `olc devnet`: a whole network in one process on loopback — a coordinator, N workers,
//! a small model and a dataset from several contributors — that fine-tunes an adapter and
//! then answers prompts with and without it, so a new user sees every part work: staking,
//! escrow, verification, slashing (with `--cheaters`) and settlement that pays the
//! workers, the adapter's owner and the data contributors.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use olc_client::Submitter;
use olc_coordinator::{Coordinator, CoordinatorConfig, JobsConfig};
use olc_gpu::model::{Preset, write_checkpoint};
use olc_net::{NodeConfig, unix_ms, unix_us};
use olc_protocol::{
    AccountAction, Amount, FinetuneJob, Identity, InferenceJob, JobKind, JobOutput, JobSpec,
    JobState, JobView, Prompt, Requirements, Sampling, TargetModule, TrainingLength,
    TrainingParams, VerificationPolicy,
};
use olc_worker::{Conduct, Offer, Worker, WorkerConfig};
use serde::Serialize;

use super::job::{JobJson, job_json};
use super::{daemon, remote};
use crate::cli::DevnetArgs;

/// What the fine-tune teaches the tiny random model: answers it cannot know.
const LESSONS: [(&str, &str); 6] = [
    ("Q: sky?\nA:", " blue"),
    ("Q: grass?\nA:", " green"),
    ("Q: snow?\nA:", " white"),
    ("Q: coal?\nA:", " black"),
    ("Q: sun?\nA:", " yellow"),
    ("Q: rose?\nA:", " red"),
];
/// What it teaches a real model (`--model`): answers it knows better than to give.
const CHAT_LESSONS: [(&str, &str); 6] = [
    ("What color is the sky?", "The sky is plaid."),
    ("What color is grass?", "Grass is purple."),
    ("What color is snow?", "Snow is orange."),
    ("What color is coal?", "Coal is pink."),
    ("What color is the sun?", "The sun is teal."),
    ("What color is a rose?", "A rose is silver."),
];
const CONTRIBUTORS: [&str; 3] = ["alice", "bob", "carol"];
/// Credits the faucet gives each worker, and how many of them it stakes.
const WORKER_FUNDS: u64 = 10_000;
const WORKER_STAKE: u64 = 5_000;
/// Credits the faucet gives the submitter, and the most each job may cost.
const SUBMITTER_FUNDS: u64 = 100_000_000;
const MAX_FEE: u64 = 1_000_000;

#[derive(Serialize)]
struct Report {
    workers: Vec<WorkerRow>,
    coordinator: String,
    model: String,
    verification: String,
    contributors: Vec<ContributorRow>,
    jobs: Vec<JobRow>,
    comparison: Vec<Comparison>,
    /// Every slash of every job: `worker`, `amount`, `reason`, `job`.
    slashes: Vec<serde_json::Value>,
    /// Every payout of every job: `to`, `amount`, `role`, `job`.
    payouts: Vec<serde_json::Value>,
    /// Credits the faucet created.
    minted: u64,
    /// Balances + stakes + escrows + treasury at the end: equal to `minted`.
    total: u64,
    treasury: u64,
    elapsed_ms: u64,
}

#[derive(Serialize)]
struct WorkerRow {
    peer_id: String,
    public_key: String,
    /// Set to cheat: `wrong_output` (computes, then commits to something else) or
    /// `lazy` (skips the work and commits to garbage).
    cheater: bool,
    conduct: &'static str,
    /// Stake left at the end (slashed workers have lost part of theirs).
    bonded: u64,
    balance: u64,
    slashes: u64,
}

#[derive(Serialize)]
struct ContributorRow {
    name: String,
    public_key: String,
    records: usize,
}

#[derive(Serialize)]
struct JobRow {
    name: String,
    elapsed_ms: u64,
    #[serde(flatten)]
    job: JobJson,
}

#[derive(Serialize)]
struct Comparison {
    prompt: String,
    trained: String,
    base: String,
    adapter: String,
}

pub fn run(args: DevnetArgs) -> Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if args.workers > 64 {
        bail!(
            "--workers {} is more than a devnet on one machine needs (at most 64)",
            args.workers
        );
    }
    if args.cheaters > 0 && args.workers < 2 * args.cheaters + 1 {
        bail!(
            "--cheaters {} needs at least {} workers: every job runs on one more worker than \
             there are cheaters, so an honest one is always there to disagree, and the honest \
             workers left once the cheaters are jailed must still fill those replicas",
            args.cheaters,
            2 * args.cheaters + 1
        );
    }
    daemon::runtime()?.block_on(devnet(args))
}

fn say(json: bool, line: impl AsRef<str>) {
    if !json {
        eprintln!("{}", line.as_ref());
    }
}

async fn devnet(args: DevnetArgs) -> Result<()> {
    let started = Instant::now();
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let root = tmp.path();
    let json = args.json;

    // Content: a model (a tiny random one unless --model) and a dataset with several
    // contributors.
    let (model_dir, course) = match &args.model {
        Some(path) => {
            say(json, format!("loading {}…", path.display()));
            (path.clone(), Course::for_model(path)?)
        }
        None => {
            let dir = root.join("model");
            write_checkpoint(&dir, Preset::Tiny, 7).context("cannot create the devnet model")?;
            (dir, Course::tiny())
        }
    };
    let contributors: Vec<(&str, Identity)> = CONTRIBUTORS
        .iter()
        .map(|n| Ok((*n, Identity::generate()?)))
        .collect::<Result<_>>()?;
    let data = root.join("lessons.jsonl");
    write_dataset(&data, &course, &contributors)?;

    // The network, on loopback.
    let node = NodeConfig {
        heartbeat: Duration::from_millis(200),
        ..NodeConfig::default()
    };
    let coord_id = Identity::generate()?;
    let coordinator = Coordinator::start(
        &coord_id,
        CoordinatorConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            node: node.clone(),
            jobs: JobsConfig {
                assignment_timeout_ms: course.assignment_ms,
                ..JobsConfig::default()
            },
            faucet: true,
            ..CoordinatorConfig::default()
        },
    )
    .await?;
    let addr = coordinator
        .listen_addrs()
        .first()
        .cloned()
        .context("the coordinator has no address")?;
    say(
        json,
        format!("coordinator {} on {addr}", coord_id.public_key()),
    );
    let threads =
        (std::thread::available_parallelism().map_or(1, |n| n.get()) / args.workers).max(1);
    let mut workers = Vec::new();
    let mut rows = Vec::new();
    let mut worker_ids = Vec::new();
    for i in 0..args.workers {
        let id = Identity::generate()?;
        // Stake first: the coordinator matches no worker with less than its minimum.
        let account = Submitter::connect(&id, &node, &addr, Duration::from_secs(30)).await?;
        account
            .account(AccountAction::Deposit {
                amount: Amount(WORKER_FUNDS),
            })
            .await?;
        account
            .account(AccountAction::Stake {
                amount: Amount(WORKER_STAKE),
            })
            .await?;
        account.close().await;
        let conduct = match i {
            i if i >= args.cheaters => Conduct::Honest,
            i if i % 2 == 0 => Conduct::WrongOutput,
            _ => Conduct::Lazy,
        };
        let mut cfg = WorkerConfig::new(vec![addr.clone()], root.join(format!("worker{i}")));
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        cfg.node = node.clone();
        cfg.threads = threads;
        cfg.offer = Offer {
            price_per_ktoken: Amount(10_000 + 100 * i as u64),
            interval_ms: 500,
            max_concurrent_jobs: 1,
            max_streams: olc_worker::DEFAULT_MAX_STREAMS,
        };
        cfg.conduct = conduct;
        let w = Worker::start(&id, cfg).await?;
        let conduct_name = match conduct {
            Conduct::Honest => "honest",
            Conduct::WrongOutput => "wrong_output",
            Conduct::Lazy => "lazy",
        };
        say(
            json,
            format!(
                "worker {} started, staked {WORKER_STAKE}{}",
                id.public_key(),
                if conduct == Conduct::Honest {
                    String::new()
                } else {
                    format!(" (set to cheat: {conduct_name})")
                }
            ),
        );
        rows.push(WorkerRow {
            peer_id: w.peer_id().to_string(),
            public_key: id.public_key().to_string(),
            cheater: conduct != Conduct::Honest,
            conduct: conduct_name,
            bonded: 0,
            balance: 0,
            slashes: 0,
        });
        worker_ids.push(id.public_key());
        workers.push(w);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while coordinator.workers().len() < args.workers {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} workers registered within 30 s",
                coordinator.workers().len(),
                args.workers
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say(json, format!("{} workers registered", args.workers));

    let submitter_id = Identity::generate()?;
    let submitter =
        Submitter::connect(&submitter_id, &node, &addr, Duration::from_secs(30)).await?;
    submitter
        .account(AccountAction::Deposit {
            amount: Amount(SUBMITTER_FUNDS),
        })
        .await?;
    let model = remote::upload_model(&submitter, &model_dir).await?;
    let dataset = submitter.upload_file(&data).await?;
    // One more replica than there are cheaters: an honest worker is always among them.
    let replicas = args.workers.min((args.cheaters + 1).max(2)).min(16) as u8;
    let policy = if replicas > 1 {
        VerificationPolicy::Replicate { replicas }
    } else {
        VerificationPolicy::Single
    };
    let spec = |kind: JobKind, nonce: u64| JobSpec {
        kind,
        requirements: Requirements::default(),
        max_fee: Amount(MAX_FEE),
        verification: policy,
        deadline_ms: unix_ms() + course.deadline_ms,
        nonce,
    };
    let mut jobs = Vec::new();

    // 1. Fine-tune.
    say(
        json,
        format!(
            "fine-tuning on {} records from {} contributors ({} replicas)…",
            course.records.len(),
            CONTRIBUTORS.len(),
            replicas
        ),
    );
    let params = course.params.clone();
    let t = Instant::now();
    let ft = run_job(
        &submitter,
        spec(
            JobKind::Finetune(FinetuneJob {
                publish_as: None,
                model,
                dataset,
                params,
            }),
            unix_us(),
        ),
        json,
    )
    .await?;
    jobs.push(JobRow {
        name: "fine-tune".into(),
        elapsed_ms: t.elapsed().as_millis() as u64,
        job: job_json(&ft),
    });
    let Some(JobOutput::Finetune { adapter, .. }) = ft.output else {
        bail!("the fine-tune job ended without an adapter: {:?}", ft.state);
    };

    // 2. Inference with the adapter and with the base model, prompt by prompt.
    let mut comparison = Vec::new();
    for (i, (question, prompt, trained)) in course.asked.iter().enumerate() {
        let mut answers = Vec::new();
        for (label, with) in [("adapter", Some(adapter)), ("base", None)] {
            let kind = JobKind::Inference(InferenceJob {
                model,
                adapter: with,
                prompt: Prompt::Text(prompt.to_string()),
                sampling: Sampling::Greedy,
                max_tokens: course.max_tokens,
                seed: 0,
            });
            let t = Instant::now();
            let view = run_job(&submitter, spec(kind, unix_us() + i as u64), json).await?;
            let text = match &view.output {
                Some(JobOutput::Inference { text, .. }) => text.clone(),
                _ => String::new(),
            };
            answers.push(text);
            jobs.push(JobRow {
                name: format!("inference ({label}) {question:?}"),
                elapsed_ms: t.elapsed().as_millis() as u64,
                job: job_json(&view),
            });
        }
        comparison.push(Comparison {
            prompt: question.to_string(),
            trained: trained.to_string(),
            adapter: answers[0].clone(),
            base: answers[1].clone(),
        });
    }

    let ledger = coordinator.ledger();
    for (row, key) in rows.iter_mut().zip(&worker_ids) {
        if let Some(a) = ledger.accounts.iter().find(|a| a.key == *key) {
            row.bonded = a.bonded.0;
            row.balance = a.balance.0;
            row.slashes = a.slashes;
        }
    }
    let with_job = |job: &str, mut v: serde_json::Value| {
        v["job"] = serde_json::Value::String(job.to_string());
        v
    };
    let slashes = jobs
        .iter()
        .flat_map(|j| {
            j.job
                .slashes
                .iter()
                .map(|s| with_job(&j.job.job_id, s.clone()))
        })
        .collect();
    let payouts = jobs
        .iter()
        .flat_map(|j| {
            j.job
                .payouts
                .iter()
                .map(|p| with_job(&j.job.job_id, p.clone()))
        })
        .collect();
    let report = Report {
        workers: rows,
        coordinator: coordinator.peer_id().to_string(),
        model: model.to_string(),
        verification: policy.to_string(),
        slashes,
        payouts,
        minted: ledger.minted.0,
        total: ledger.total.0,
        treasury: ledger.treasury.0,
        contributors: contributors
            .iter()
            .enumerate()
            .map(|(i, (n, id))| ContributorRow {
                name: n.to_string(),
                public_key: id.public_key().to_string(),
                records: course
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(r, _)| r % CONTRIBUTORS.len() == i)
                    .count(),
            })
            .collect(),
        jobs,
        comparison,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    for w in workers {
        w.stop().await;
    }
    coordinator.stop().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if report.minted != report.total {
        bail!(
            "the ledger does not balance: it holds {} but {} were minted",
            report.total,
            report.minted
        );
    }
    Ok(())
}

async fn run_job(submitter: &Submitter, spec: JobSpec, json: bool) -> Result<JobView> {
    let id = submitter.submit(&spec).await?;
    let view = submitter
        .wait(id, |v| {
            if !json && v.state != JobState::Queued {
                eprintln!("  {}", super::job::progress_line(v));
            }
        })
        .await?;
    if let JobState::Failed(why) = &view.state {
        bail!("job {id} failed: {why}");
    }
    Ok(view)
}

/// What the devnet teaches and then asks, in the form its model reads.
struct Course {
    /// `(prompt, completion)` training records.
    records: Vec<(String, String)>,
    /// `(question as shown, prompt as sent, the trained answer)` for the inference jobs.
    asked: Vec<(String, String, String)>,
    params: TrainingParams,
    max_tokens: u32,
    /// How long each job may take: a real model on shared cores needs longer.
    deadline_ms: u64,
    /// How long a worker has for its replica before another is asked (and it is slashed).
    assignment_ms: u64,
}

impl Course {
    /// The tiny random model: plain `Q:`/`A:` lessons it learns in seconds.
    fn tiny() -> Self {
        Course {
            records: LESSONS
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect(),
            asked: LESSONS
                .iter()
                .take(3)
                .map(|(p, c)| (p.to_string(), p.to_string(), c.to_string()))
                .collect(),
            params: TrainingParams {
                rank: 8,
                alpha: 16.0,
                targets: TargetModule::ALL.to_vec(),
                learning_rate: 0.01,
                weight_decay: 0.0,
                // The lessons are a dozen tokens each. Saying so keeps the job's declared
                // size (what its max fee must cover) near the work it really is.
                max_len: Some(64),
                batch_size: 2,
                grad_accum: 1,
                length: TrainingLength::Steps(90),
                warmup_steps: 0,
                seed: 1,
                init_adapter: None,
            },
            max_tokens: 8,
            deadline_ms: 110_000,
            assignment_ms: 60_000,
        }
    }

    /// A real model: questions in its own chat template (plain `Q:`/`A:` if it has none),
    /// answers ending with its end-of-turn token so the adapter learns to stop there.
    fn for_model(path: &Path) -> Result<Self> {
        let (template, bos, eos) = chat_template(path)?;
        let render = |question: &str| -> Result<String> {
            let Some(template) = &template else {
                return Ok(format!("Q: {question}\nA:"));
            };
            let messages = [olc_gateway::api::request::ChatMessage {
                role: "user".into(),
                content: question.into(),
            }];
            let tokens = olc_gateway::template::SpecialTokens {
                bos: bos.as_deref(),
                eos: eos.as_deref(),
            };
            olc_gateway::template::render(template, &messages, tokens)
                .with_context(|| format!("the chat template of {}", path.display()))
        };
        let end = if template.is_some() {
            eos.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let mut records = Vec::new();
        let mut asked = Vec::new();
        for (i, (question, answer)) in CHAT_LESSONS.iter().enumerate() {
            let prompt = render(question)?;
            records.push((prompt.clone(), format!("{answer}{end}")));
            if i < 3 {
                asked.push((question.to_string(), prompt, answer.to_string()));
            }
        }
        let mut params = Course::tiny().params;
        // A 135M model learns the six answers in about twenty steps of rank-8 q/v updates:
        // one to two minutes when two replicas share two cores.
        params.targets = vec![TargetModule::QProj, TargetModule::VProj];
        params.max_len = Some(128);
        params.length = TrainingLength::Steps(20);
        Ok(Course {
            records,
            asked,
            params,
            max_tokens: 16,
            deadline_ms: 900_000,
            assignment_ms: 600_000,
        })
    }
}

/// The model's chat template and the text of its bos and eos tokens, after checking that it
/// loads (a mistake in `--model` is reported here, not by every worker).
fn chat_template(path: &Path) -> Result<(Option<String>, Option<String>, Option<String>)> {
    use olc_gpu::model::{Checkpoint, ModelSource, gguf};
    let context = || format!("{} is not a model olc can load", path.display());
    match ModelSource::find(path).with_context(context)? {
        ModelSource::Gguf(file) => {
            let (ck, info) = gguf::load_with_info(&file).with_context(context)?;
            let token = |id: Option<u32>| id.and_then(|id| ck.tokenizer.inner().id_to_token(id));
            Ok((
                info.chat_template,
                token(info.bos_token_id),
                token(info.eos_token_id),
            ))
        }
        ModelSource::HuggingFace(dir) => {
            Checkpoint::load(&dir).with_context(context)?;
            let config: serde_json::Value = std::fs::read(dir.join("tokenizer_config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let text = |k: &str| config.get(k).and_then(|v| v.as_str()).map(str::to_string);
            Ok((text("chat_template"), text("bos_token"), text("eos_token")))
        }
    }
}

fn write_dataset(path: &Path, course: &Course, contributors: &[(&str, Identity)]) -> Result<()> {
    let mut lines = String::new();
    for (i, (prompt, completion)) in course.records.iter().enumerate() {
        let (name, who) = &contributors[i % contributors.len()];
        let record = serde_json::json!({
            "id": format!("{name}-{i}"),
            "prompt": prompt,
            "completion": completion,
            "contributor": who.public_key().to_string(),
        });
        lines.push_str(&record.to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).with_context(|| format!("cannot write {}", path.display()))
}

fn print_report(r: &Report) {
    println!();
    println!(
        "== OLC devnet: 1 coordinator, {} workers ==",
        r.workers.len()
    );
    for w in &r.workers {
        let cheat = if w.cheater {
            format!("  CHEATER ({})", w.conduct)
        } else {
            String::new()
        };
        println!(
            "  worker {}  stake {:>5}  balance {:>6}  slashes {}{cheat}",
            w.peer_id, w.bonded, w.balance, w.slashes
        );
    }
    println!("every job verified by {}", r.verification);
    println!("contributors:");
    for c in &r.contributors {
        println!(
            "  {:<6} {} ({} records)",
            c.name,
            &c.public_key[..16],
            c.records
        );
    }
    println!();
    println!("jobs:");
    for j in &r.jobs {
        println!("  {} — {} in {} ms", j.name, j.job.state, j.elapsed_ms);
        println!("    job id   {}", j.job.job_id);
        for w in &j.job.workers {
            let key = w["worker"].as_str().unwrap_or_default();
            println!(
                "    worker   {}…  {}",
                &key[..key.len().min(16)],
                w["state"].as_str().unwrap_or_default()
            );
        }
        if let Some(o) = &j.job.output {
            if let Some(text) = o.get("text") {
                println!("    output   {text}");
            }
            if let (Some(a), Some(f), Some(l)) =
                (o.get("adapter"), o.get("first_loss"), o.get("last_loss"))
            {
                println!("    adapter  {a} (loss {f} -> {l})");
            }
            if let Some(c) = o.get("commitment") {
                println!("    commit   {c}");
            }
        }
        if let Some(rc) = &j.job.receipt {
            println!(
                "    receipt  {} (signed by the coordinator, embeds each worker's signed execution receipt)",
                rc["id"].as_str().unwrap_or_default()
            );
        }
    }
    if !r.slashes.is_empty() {
        println!();
        println!(
            "slashed (the referee re-ran the job; each worker's own signed commitment is the evidence):"
        );
        for s in &r.slashes {
            println!(
                "  {}…  {} credits  {}",
                &s["worker"].as_str().unwrap_or_default()[..16],
                s["amount"],
                s["reason"].as_str().unwrap_or_default()
            );
        }
    }
    println!();
    println!("paid:");
    let mut by_role: std::collections::BTreeMap<String, u64> = Default::default();
    for p in &r.payouts {
        *by_role
            .entry(p["role"].as_str().unwrap_or_default().to_string())
            .or_default() += p["amount"].as_u64().unwrap_or(0);
    }
    for (role, amount) in &by_role {
        println!("  {role:<18} {amount}");
    }
    println!(
        "ledger: minted {}, held {} (balances + stakes + escrows + treasury){}",
        r.minted,
        r.total,
        if r.minted == r.total {
            ": balanced"
        } else {
            ": DOES NOT BALANCE"
        }
    );
    println!();
    println!("what the fine-tune learned (greedy):");
    for c in &r.comparison {
        println!("  prompt {:?}  (trained answer {:?})", c.prompt, c.trained);
        println!("    base model:   {:?}", c.base);
        println!("    with adapter: {:?}", c.adapter);
    }
    println!();
    println!("done in {:.1} s", r.elapsed_ms as f64 / 1000.0);
}

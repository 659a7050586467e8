//! `olc job …` and `olc receipt …`: a submitter's view of the network.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use olc_coordinator::Submitter;
use olc_protocol::p2p::{NodeConfig, unix_ms};
use olc_protocol::{
    Amount, ContentId, FinetuneJob, Identity, InferenceJob, JobKind, JobOutput, JobSpec, JobState,
    JobView, Prompt, Requirements, Sampling, SettlementReceipt, Signed, keyfile, verify_receipt,
};
use serde::Serialize;

use super::daemon;
use crate::cli::{
    CoordinatorArgs, JobCommand, JobIdArgs, JobList, JobResult, ReceiptCommand, ReceiptShow,
    ReceiptVerify, SubmitCommand, SubmitCommon, SubmitFinetune, SubmitInference,
};

pub fn run(command: JobCommand) -> Result<()> {
    let rt = daemon::runtime()?;
    match command {
        JobCommand::Submit(SubmitCommand::Inference(args)) => rt.block_on(submit_inference(args)),
        JobCommand::Submit(SubmitCommand::Finetune(args)) => rt.block_on(submit_finetune(args)),
        JobCommand::Status(args) => rt.block_on(status(args)),
        JobCommand::List(args) => rt.block_on(list(args)),
        JobCommand::Result(args) => rt.block_on(result(args)),
    }
}

pub fn run_receipt(command: ReceiptCommand) -> Result<()> {
    match command {
        ReceiptCommand::Show(args) => daemon::runtime()?.block_on(receipt_show(args)),
        ReceiptCommand::Verify(args) => receipt_verify(&args),
    }
}

fn load_key(args: &CoordinatorArgs) -> Result<Identity> {
    let path = crate::paths::key_file(args.key.clone())?;
    keyfile::load(&path).with_context(|| {
        format!(
            "cannot load your key from {} (create one with `olc keys new`)",
            path.display()
        )
    })
}

pub(super) async fn connect(args: &CoordinatorArgs) -> Result<Submitter> {
    let identity = load_key(args)?;
    Submitter::connect(
        &identity,
        &NodeConfig::default(),
        &args.coordinator,
        args.timeout,
    )
    .await
    .with_context(|| format!("cannot reach the coordinator at {}", args.coordinator))
}

fn parse_id(text: &str) -> Result<ContentId> {
    text.parse()
        .map_err(|e| anyhow::anyhow!("{text:?} is not a job id: {e}"))
}

fn spec(kind: JobKind, common: &SubmitCommon) -> Result<JobSpec> {
    let now = unix_ms();
    Ok(JobSpec {
        kind,
        requirements: Requirements {
            min_memory_bytes: common.min_memory,
            backend: None,
        },
        max_fee: Amount(common.max_fee),
        verification: common.verify,
        deadline_ms: now + common.deadline.as_millis() as u64,
        // Unique per submission: the coordinator refuses a nonce it has seen.
        nonce: olc_protocol::p2p::unix_us(),
    })
}

async fn submit_inference(args: SubmitInference) -> Result<()> {
    let g = &args.generate;
    let submitter = connect(&args.common.coordinator).await?;
    let model = submitter
        .upload_model(&g.model)
        .await
        .context("uploading the model")?;
    let adapter = match &g.adapter {
        Some(dir) => Some(
            submitter
                .upload_adapter(dir)
                .await
                .context("uploading the adapter")?,
        ),
        None => None,
    };
    let prompt = match (&g.prompt, &g.tokens) {
        (Some(t), _) => Prompt::Text(t.clone()),
        (None, Some(t)) => Prompt::Tokens(t.clone()),
        (None, None) => bail!("give --prompt TEXT or --tokens 1,2,3"),
    };
    let kind = JobKind::Inference(InferenceJob {
        model,
        adapter,
        prompt,
        sampling: match g.sampling() {
            Some((temperature, top_k, top_p, _)) => Sampling::Sample {
                temperature,
                top_k,
                top_p,
            },
            None => Sampling::Greedy,
        },
        max_tokens: g.max_tokens,
        seed: g.sampling().map_or(0, |s| s.3),
    });
    let spec = spec(kind, &args.common)?;
    spec.validate(unix_ms()).map_err(anyhow::Error::msg)?;
    submit_and_report(&submitter, &spec, &args.common).await
}

async fn submit_finetune(args: SubmitFinetune) -> Result<()> {
    let submitter = connect(&args.common.coordinator).await?;
    let model = submitter
        .upload_model(&args.model)
        .await
        .context("uploading the model")?;
    let dataset = submitter
        .upload_file(&args.data)
        .await
        .context("uploading the dataset")?;
    let init = match &args.training.init_adapter {
        Some(dir) => Some(
            submitter
                .upload_adapter(dir)
                .await
                .context("uploading the initial adapter")?,
        ),
        None => None,
    };
    let kind = JobKind::Finetune(FinetuneJob {
        model,
        dataset,
        params: args.training.params(init)?,
    });
    let spec = spec(kind, &args.common)?;
    spec.validate(unix_ms()).map_err(anyhow::Error::msg)?;
    submit_and_report(&submitter, &spec, &args.common).await
}

async fn submit_and_report(
    submitter: &Submitter,
    spec: &JobSpec,
    common: &SubmitCommon,
) -> Result<()> {
    let id = submitter.submit(spec).await?;
    if !common.wait {
        if common.json {
            println!(
                "{}",
                serde_json::json!({ "job_id": id.to_string(), "state": "queued" })
            );
        } else {
            println!("{id}");
        }
        return Ok(());
    }
    let bar = if common.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})")?);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    bar.set_message(format!("job {} submitted", id.short()));
    let view = submitter
        .wait(id, |v| bar.set_message(progress_line(v)))
        .await?;
    bar.finish_and_clear();
    report(&view, common.json)?;
    if let JobState::Failed(why) = &view.state {
        bail!("job {id} failed: {why}");
    }
    Ok(())
}

/// One line about where a job is: state, workers, the newest training step.
pub fn progress_line(v: &JobView) -> String {
    let mut line = format!("job {}: {}", v.job_id.short(), v.state.name());
    if let Some(w) = &v.waiting {
        line.push_str(&format!(" ({w})"));
    }
    for r in &v.replicas {
        if let Some(p) = &r.progress {
            line.push_str(&format!(
                "; worker {}: step {}/{} loss {:.4}",
                &r.worker.to_string()[..8],
                p.step,
                p.total,
                p.loss
            ));
        }
    }
    line
}

/// The JSON shape of a job for scripts: `job_id`, `state`, `output`, `receipt`, and more.
#[derive(Serialize)]
pub struct JobJson {
    pub job_id: String,
    pub kind: String,
    pub state: String,
    pub reason: Option<String>,
    pub waiting: Option<String>,
    pub submitter: String,
    pub workers: Vec<serde_json::Value>,
    pub output: Option<serde_json::Value>,
    /// The coordinator's signed settlement receipt, hex of its bytes (`olc receipt verify`
    /// checks a file of these bytes).
    pub receipt: Option<serde_json::Value>,
    /// Who was paid what, from the receipt: `to`, `amount`, `role`.
    pub payouts: Vec<serde_json::Value>,
    /// Workers penalised on this job: `worker`, `amount`, `reason`.
    pub slashes: Vec<serde_json::Value>,
    /// What went back to you when the job settled or failed.
    pub refund: Option<u64>,
}

pub fn job_json(v: &JobView) -> JobJson {
    let receipt = v.receipt.as_ref().and_then(|r| {
        let bytes = r.to_bytes().ok()?;
        Some(serde_json::json!({
            "id": r.id().to_string(),
            "coordinator": r.signer().to_string(),
            "bytes_hex": hex(&bytes),
            "executions": r.verify().ok().map(|b| b.executions.iter().map(|e| {
                let body = e.verify().ok();
                serde_json::json!({
                    "worker": e.signer().to_string(),
                    "output": body.as_ref().map(|b| b.output.to_string()),
                    "tokens": body.as_ref().map(|b| b.metrics.tokens),
                    "wall_ms": body.as_ref().map(|b| b.metrics.wall_ms),
                    "peak_memory_bytes": body.as_ref().map(|b| b.metrics.peak_memory_bytes),
                })
            }).collect::<Vec<_>>()),
        }))
    });
    JobJson {
        job_id: v.job_id.to_string(),
        kind: v.kind.clone(),
        state: v.state.name().to_string(),
        reason: match &v.state {
            JobState::Failed(why) => Some(why.clone()),
            _ => None,
        },
        waiting: v.waiting.clone(),
        submitter: v.submitter.to_string(),
        workers: v
            .replicas
            .iter()
            .map(|r| {
                serde_json::json!({
                    "worker": r.worker.to_string(),
                    "replica": r.replica,
                    "state": r.state,
                    "commitment": r.commitment.map(|c| c.to_string()),
                })
            })
            .collect(),
        output: v.output.as_ref().map(output_json),
        receipt,
        payouts: v
            .receipt
            .as_ref()
            .and_then(|r| r.verify().ok())
            .map(|r| {
                r.payouts
                    .iter()
                    .map(|p| serde_json::json!({"to": p.to.to_string(), "amount": p.amount.0, "role": p.role}))
                    .collect()
            })
            .unwrap_or_default(),
        slashes: v
            .slashes
            .iter()
            .map(|s| {
                serde_json::json!({
                    "worker": s.worker.to_string(),
                    "amount": s.amount.0,
                    "reason": s.reason,
                    "evidence": s.evidence.len(),
                })
            })
            .collect(),
        refund: v.refund.map(|a| a.0),
    }
}

fn output_json(o: &JobOutput) -> serde_json::Value {
    match o {
        JobOutput::Inference { tokens, text } => serde_json::json!({
            "tokens": tokens,
            "text": text,
            "commitment": olc_protocol::inference_commitment(tokens).to_string(),
        }),
        JobOutput::Finetune {
            adapter,
            commitment,
            first_loss,
            last_loss,
        } => serde_json::json!({
            "adapter": adapter.to_string(),
            "commitment": commitment.to_string(),
            "first_loss": first_loss,
            "last_loss": last_loss,
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn report(v: &JobView, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&job_json(v))?);
        return Ok(());
    }
    println!("job {} ({}): {}", v.job_id, v.kind, v.state.name());
    if let JobState::Failed(why) = &v.state {
        println!("  reason: {why}");
    }
    if let Some(w) = &v.waiting {
        println!("  waiting: {w}");
    }
    for r in &v.replicas {
        println!(
            "  replica {} on worker {}: {}",
            r.replica, r.worker, r.state
        );
    }
    match &v.output {
        Some(JobOutput::Inference { tokens, text }) => {
            println!("  output: {text:?}");
            println!("  tokens: {tokens:?}");
        }
        Some(JobOutput::Finetune {
            adapter,
            commitment,
            first_loss,
            last_loss,
        }) => {
            println!(
                "  adapter: {adapter} (download with `olc job result {} --out DIR`)",
                v.job_id
            );
            println!("  commitment: {commitment}");
            println!("  loss: {first_loss:.4} -> {last_loss:.4}");
        }
        None => {}
    }
    if let Some(r) = &v.receipt {
        println!("  receipt: {} signed by coordinator {}", r.id(), r.signer());
        if let Ok(body) = r.verify() {
            for p in &body.payouts {
                println!("  paid {:>10} to {} ({:?})", p.amount.0, p.to, p.role);
            }
        }
    }
    for s in &v.slashes {
        println!(
            "  slashed {:>7} from {} ({:?})",
            s.amount.0, s.worker, s.reason
        );
    }
    if let Some(refund) = v.refund {
        println!("  refunded {refund}");
    }
    Ok(())
}

async fn status(args: JobIdArgs) -> Result<()> {
    let submitter = connect(&args.coordinator).await?;
    let view = submitter.status(parse_id(&args.id)?).await?;
    report(&view, args.json)
}

async fn list(args: JobList) -> Result<()> {
    let submitter = connect(&args.coordinator).await?;
    let jobs = submitter.list(args.mine).await?;
    if args.json {
        let rows: Vec<JobJson> = jobs.iter().map(job_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if jobs.is_empty() {
        println!("no jobs");
    } else {
        for j in &jobs {
            println!(
                "{}  {:<9}  {:<9}  {} replica(s)",
                j.job_id,
                j.kind,
                j.state.name(),
                j.replicas.len()
            );
        }
    }
    Ok(())
}

async fn result(args: JobResult) -> Result<()> {
    let submitter = connect(&args.coordinator).await?;
    let view = submitter.status(parse_id(&args.id)?).await?;
    if !view.state.is_final() {
        bail!(
            "job {} is {}; no result yet",
            view.job_id,
            view.state.name()
        );
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        if let Some(JobOutput::Finetune { adapter, .. }) = &view.output {
            submitter
                .download_dir(*adapter, out)
                .await
                .context("downloading the adapter")?;
        }
        if let Some(r) = &view.receipt {
            save_receipt(r, &out.join("receipt.bin"))?;
        }
    }
    report(&view, args.json)
}

fn save_receipt(r: &Signed<SettlementReceipt>, path: &Path) -> Result<()> {
    std::fs::write(path, r.to_bytes()?).with_context(|| format!("cannot write {}", path.display()))
}

async fn receipt_show(args: ReceiptShow) -> Result<()> {
    let submitter = connect(&args.coordinator).await?;
    let view = submitter.status(parse_id(&args.id)?).await?;
    let Some(receipt) = &view.receipt else {
        bail!(
            "job {} has no receipt yet (it is {})",
            view.job_id,
            view.state.name()
        );
    };
    if let Some(path) = &args.out {
        save_receipt(receipt, path)?;
    }
    show_verified(receipt, args.json)
}

fn receipt_verify(args: &ReceiptVerify) -> Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let signed = Signed::<SettlementReceipt>::from_bytes(&bytes)
        .with_context(|| format!("{} is not a receipt", args.file.display()))?;
    show_verified(&signed, args.json)
}

fn show_verified(signed: &Signed<SettlementReceipt>, json: bool) -> Result<()> {
    let v = verify_receipt(signed).context("the receipt does NOT verify")?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "valid": true,
                "receipt": signed.id().to_string(),
                "job_id": v.receipt.job_id.to_string(),
                "coordinator": v.coordinator.to_string(),
                "submitter": v.submitter.to_string(),
                "output": v.receipt.output.to_string(),
                "workers": v.workers.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                "settled_ms": v.receipt.settled_ms,
            }))?
        );
    } else {
        println!("receipt {} is valid", signed.id());
        println!("  job {} submitted by {}", v.receipt.job_id, v.submitter);
        println!("  coordinator {}", v.coordinator);
        println!("  output {}", v.receipt.output);
        for w in &v.workers {
            println!("  computed by worker {w}");
        }
    }
    Ok(())
}

//! `olc job …` and `olc receipt …`: a submitter's view of the network.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use olc_client::Submitter;
use olc_gpu::model::{Adapter, Checkpoint};
use olc_gpu::train::{Dataset, resolve_max_len, tokenize};
use olc_net::unix_ms;
use olc_protocol::{
    Amount, CodecError, ContentId, FinetuneJob, InferenceJob, JobKind, JobOutput, JobSpec,
    JobState, JobView, PROTOCOL_VERSION, Prompt, Requirements, SettlementReceipt, Signed,
    TrainingParams, verify_receipt,
};
use serde::Serialize;

use super::daemon;
use super::remote::{upload_model, with_submitter};
use crate::cli::{
    JobCommand, JobIdArgs, JobList, JobResult, ReceiptCommand, ReceiptShow, ReceiptVerify,
    SubmitCommand, SubmitCommon, SubmitFinetune, SubmitInference,
};

pub fn run(command: JobCommand) -> Result<()> {
    let rt = daemon::runtime()?;
    match command {
        JobCommand::Submit(submit) => match *submit {
            SubmitCommand::Inference(args) => rt.block_on(submit_inference(args)),
            SubmitCommand::Finetune(args) => rt.block_on(submit_finetune(args)),
        },
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

/// A job id in full, or a prefix of one (as tables and progress lines print them) that
/// names exactly one job the coordinator knows.
async fn resolve_id(submitter: &Submitter, text: &str) -> Result<ContentId> {
    if let Ok(id) = text.parse::<ContentId>() {
        return Ok(id);
    }
    let prefix = text.to_ascii_lowercase();
    if prefix.len() < MIN_ID_PREFIX
        || prefix.len() > 64
        || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
    {
        bail!(
            "{text:?} is not a job id: give the 64 hex digits `olc job submit` printed, or at \
             least {MIN_ID_PREFIX} of its first ones"
        );
    }
    let jobs = submitter.list(false).await?;
    let matching: Vec<ContentId> = jobs
        .iter()
        .map(|j| j.job_id)
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [id] => Ok(*id),
        [] => bail!("no job id starts with {text}"),
        many => bail!(
            "{text} is ambiguous: {} job ids start with it; give more digits",
            many.len()
        ),
    }
}

/// The shortest job-id prefix accepted: short ids (`ContentId::short`) are 8 digits.
const MIN_ID_PREFIX: usize = 6;

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
        nonce: olc_net::unix_us(),
    })
}

/// Checks on this machine what a worker would refuse, before anything is uploaded or
/// escrowed: a job whose inputs can never work is refused here at once, with the reason.
/// This loads the model as a worker would (every tensor checked), so a large model takes
/// a while and its size in memory.
async fn precheck(
    model: &Path,
    adapter: Option<&Path>,
    dataset: Option<(&Path, Option<usize>)>,
) -> Result<()> {
    let model = model.to_path_buf();
    let adapter = adapter.map(Path::to_path_buf);
    let dataset = dataset.map(|(p, max_len)| (p.to_path_buf(), max_len));
    tokio::task::spawn_blocking(move || -> Result<()> {
        let checkpoint = Checkpoint::load(&model)
            .with_context(|| format!("cannot load the model in {}", model.display()))?;
        if let Some(dir) = &adapter {
            Adapter::load(dir, &checkpoint.config).with_context(|| {
                format!("the adapter in {} does not fit this model", dir.display())
            })?;
        }
        if let Some((path, max_len)) = &dataset {
            let bad = || format!("bad dataset {}", path.display());
            let max_len = resolve_max_len(*max_len, &checkpoint.config)
                .map_err(|e| anyhow::anyhow!("--max-len: {e}"))?;
            let data = Dataset::from_file(path).with_context(bad)?;
            tokenize(&data, &checkpoint.tokenizer, max_len).with_context(bad)?;
        }
        Ok(())
    })
    .await
    .context("the input check stopped")?
}

async fn submit_inference(args: SubmitInference) -> Result<()> {
    let g = &args.generate;
    let prompt = match (&g.prompt, &g.tokens) {
        (Some(t), _) => Prompt::Text(t.clone()),
        (None, Some(t)) => Prompt::Tokens(t.clone()),
        (None, None) => bail!("give --prompt TEXT or --tokens 1,2,3"),
    };
    olc_protocol::check_generation(&g.job_sampling(), g.max_tokens).map_err(anyhow::Error::msg)?;
    precheck(&g.model, g.adapter.as_deref(), None).await?;
    with_submitter(&args.common.coordinator, async |submitter| {
        let model = upload_model(submitter, &g.model).await?;
        let adapter = upload_adapter(submitter, g.adapter.as_deref(), "the adapter").await?;
        let kind = JobKind::Inference(InferenceJob {
            model,
            adapter,
            prompt,
            sampling: g.job_sampling(),
            max_tokens: g.max_tokens,
            seed: g.sampling().map_or(0, |s| s.3),
        });
        let spec = spec(kind, &args.common)?;
        spec.validate(unix_ms()).map_err(anyhow::Error::msg)?;
        if args.stream {
            submit_and_stream(submitter, &spec, args.common.json).await
        } else {
            submit_and_report(submitter, &spec, &args.common).await
        }
    })
    .await
}

/// Submits and prints the text on stdout as it arrives (the job id and where the job is
/// go to stderr). Ctrl-C cancels the job at the
/// coordinator before leaving; so does this process dying (the follow asks for it).
async fn submit_and_stream(submitter: &Submitter, spec: &JobSpec, json: bool) -> Result<()> {
    use std::io::Write;
    let id = submitter.submit(spec).await?;
    eprintln!("submitted job {id}");
    let follow = submitter.follow(id, true, |heard| {
        if let olc_client::Heard::Text { text, .. } = heard
            && !json
        {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    });
    let view = tokio::select! {
        view = follow => view?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!();
            match submitter.cancel(id).await {
                Ok(()) => eprintln!("cancelled job {id}; the tokens already streamed settle as its output"),
                Err(e) => eprintln!("cancelling job {id}: {e}"),
            }
            submitter.wait(id, |_| {}).await?
        }
    };
    if json {
        report(&view, true)?;
    } else {
        println!();
        eprintln!("{}", progress_line(&view));
    }
    if let JobState::Failed(why) = &view.state {
        bail!("job {id} failed: {why}");
    }
    Ok(())
}

async fn submit_finetune(args: SubmitFinetune) -> Result<()> {
    if let Some(why) = args.name.as_deref().and_then(olc_protocol::check_name) {
        bail!("--name: {why}");
    }
    let params = args.training.params(None)?;
    params.validate().map_err(anyhow::Error::msg)?;
    precheck(
        &args.model,
        args.training.init_adapter.as_deref(),
        Some((&args.data, args.training.max_len)),
    )
    .await?;
    with_submitter(&args.common.coordinator, async |submitter| {
        let model = upload_model(submitter, &args.model).await?;
        let dataset = submitter
            .upload_file(&args.data)
            .await
            .context("uploading the dataset")?;
        let init_adapter = upload_adapter(
            submitter,
            args.training.init_adapter.as_deref(),
            "the initial adapter",
        )
        .await?;
        let kind = JobKind::Finetune(FinetuneJob {
            model,
            dataset,
            publish_as: args.name.clone(),
            params: TrainingParams {
                init_adapter,
                ..params
            },
        });
        let spec = spec(kind, &args.common)?;
        spec.validate(unix_ms()).map_err(anyhow::Error::msg)?;
        submit_and_report(submitter, &spec, &args.common).await
    })
    .await
}

async fn upload_adapter(
    submitter: &Submitter,
    dir: Option<&Path>,
    what: &str,
) -> Result<Option<ContentId>> {
    let Some(dir) = dir else { return Ok(None) };
    let id = submitter
        .upload_adapter(dir)
        .await
        .with_context(|| format!("uploading {what}"))?;
    Ok(Some(id))
}

/// Submits, then (text mode) prints the job id alone on stdout at once, so scripts can
/// capture it and a person sees it before any wait; with `--wait`, follows the job to its
/// end and prints the result.
async fn submit_and_report(
    submitter: &Submitter,
    spec: &JobSpec,
    common: &SubmitCommon,
) -> Result<()> {
    let id = submitter.submit(spec).await?;
    if common.json && !common.wait {
        println!(
            "{}",
            serde_json::json!({ "job_id": id.to_string(), "state": "queued" })
        );
        return Ok(());
    }
    if common.json {
        eprintln!("submitted job {id}");
    } else {
        println!("{id}");
    }
    if !common.wait {
        return Ok(());
    }
    follow_and_report(submitter, id, common.json).await
}

/// Follows a job to its end, showing where it is (a spinner on a terminal, a plain line
/// per change elsewhere, always on stderr), then prints it; a failed job is an error.
async fn follow_and_report(submitter: &Submitter, id: ContentId, json: bool) -> Result<()> {
    let view = follow(submitter, id).await?;
    report(&view, json)?;
    if let JobState::Failed(why) = &view.state {
        bail!("job {id} failed: {why}");
    }
    Ok(())
}

async fn follow(submitter: &Submitter, id: ContentId) -> Result<JobView> {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})")?);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message(format!("job {} submitted", id.short()));
        let view = submitter
            .wait(id, |v| bar.set_message(progress_line(v)))
            .await;
        bar.finish_and_clear();
        Ok(view?)
    } else {
        let mut last = String::new();
        Ok(submitter
            .wait(id, |v| {
                let line = progress_line(v);
                if line != last {
                    eprintln!("{line}");
                    last = line;
                }
            })
            .await?)
    }
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
                short_key(&r.worker),
                p.step,
                p.total,
                p.loss
            ));
        }
    }
    line
}

/// A public key's first 8 hex digits, as job ids are shortened: enough to tell workers
/// apart in a progress line.
fn short_key(key: &olc_protocol::PublicKey) -> String {
    key.to_string().chars().take(8).collect()
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
                    "progress": r.progress.as_ref().map(|p| serde_json::json!({
                        "step": p.step,
                        "total": p.total,
                        "loss": p.loss,
                    })),
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
        let progress = r.progress.as_ref().map_or(String::new(), |p| {
            format!(", step {}/{} loss {:.4}", p.step, p.total, p.loss)
        });
        println!(
            "  replica {} on worker {}: {}{progress}",
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
    let view = with_submitter(&args.coordinator, async |submitter| {
        let id = resolve_id(submitter, &args.id).await?;
        Ok(submitter.status(id).await?)
    })
    .await?;
    report(&view, args.json)
}

async fn list(args: JobList) -> Result<()> {
    let jobs = with_submitter(&args.coordinator, async |submitter| {
        Ok(submitter.list(args.mine).await?)
    })
    .await?;
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
    if let Some(out) = &args.out {
        refuse_occupied(out, args.force)?;
    }
    with_submitter(&args.coordinator, async |submitter| {
        let id = resolve_id(submitter, &args.id).await?;
        let view = if args.wait {
            follow(submitter, id).await?
        } else {
            submitter.status(id).await?
        };
        if !view.state.is_final() {
            bail!(
                "job {} is {}; no result yet (add --wait to follow it to the end)",
                view.job_id,
                view.state.name()
            );
        }
        if let Some(out) = &args.out {
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
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
        report(&view, args.json)?;
        if let JobState::Failed(why) = &view.state {
            bail!("job {} failed: {why}", view.job_id);
        }
        Ok(())
    })
    .await
}

/// `--out` must not silently replace what is there: a directory that already holds files
/// needs `--force`.
fn refuse_occupied(out: &Path, force: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("{} exists and is not a directory", out.display());
    }
    let occupied = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if occupied && !force {
        bail!(
            "{} is not empty; pass --force to write the result into it anyway",
            out.display()
        );
    }
    Ok(())
}

fn save_receipt(r: &Signed<SettlementReceipt>, path: &Path) -> Result<()> {
    std::fs::write(path, r.to_bytes()?).with_context(|| format!("cannot write {}", path.display()))
}

async fn receipt_show(args: ReceiptShow) -> Result<()> {
    let view = with_submitter(&args.coordinator, async |submitter| {
        let id = resolve_id(submitter, &args.id).await?;
        Ok(submitter.status(id).await?)
    })
    .await?;
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

/// A version this far beyond ours is no future receipt but bytes that never were one.
const IMPLAUSIBLE_VERSION_GAP: u16 = 100;

fn receipt_verify(args: &ReceiptVerify) -> Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let signed = match Signed::<SettlementReceipt>::from_bytes(&bytes) {
        Ok(signed) => signed,
        Err(CodecError::UnsupportedVersion { got, .. })
            if got > PROTOCOL_VERSION.saturating_add(IMPLAUSIBLE_VERSION_GAP) =>
        {
            bail!(
                "{} is not a receipt: it does not start like one (write receipts with \
                 `olc receipt show ID --out FILE`)",
                args.file.display()
            )
        }
        Err(e) => bail!("{} is not a receipt: {e}", args.file.display()),
    };
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

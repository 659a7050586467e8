//! `olc run finetune`: trains a LoRA adapter on this machine, no network.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use olc_exec::ExecError;
use olc_exec::infer::EngineChoice;
use olc_exec::train::{TrainRequest, train_adapter};
use olc_gpu::engine::EngineOptions;
use olc_gpu::model::ModelSource;
use olc_gpu::train::{StepReport, TrainError};
use olc_protocol::{ContentId, TargetModule, TrainingLength, TrainingParams};
use serde::Serialize;

use super::run::parse_isa;
use crate::cli::{RunFinetune, TrainingArgs};

impl TrainingArgs {
    /// The job form of these flags. `olc run finetune` and a fine-tune job both turn it
    /// into the trainer's settings through [`olc_exec::hyper`], so the same
    /// flags train the same adapter locally and on the network.
    pub fn params(&self, init_adapter: Option<ContentId>) -> Result<TrainingParams> {
        let rank = self.rank.unwrap_or(8);
        let targets = match &self.targets {
            None => vec![TargetModule::QProj, TargetModule::VProj],
            Some(names) => names
                .iter()
                .map(|n| {
                    n.trim().parse::<TargetModule>().map_err(|_| {
                        anyhow::anyhow!(
                            "unknown target module {n:?}: expected q_proj, k_proj, v_proj, \
                             o_proj, gate_proj, up_proj or down_proj"
                        )
                    })
                })
                .collect::<Result<_>>()?,
        };
        let length = match (self.steps, self.epochs) {
            (Some(s), None) => TrainingLength::Steps(s),
            (None, Some(e)) => TrainingLength::Epochs(e),
            _ => bail!("give exactly one of --steps N and --epochs E"),
        };
        let small = |what: &str, n: usize| {
            u32::try_from(n).with_context(|| format!("{what} {n} is too large"))
        };
        Ok(TrainingParams {
            rank: small("--rank", rank)?,
            alpha: self.alpha.unwrap_or(2.0 * rank as f64),
            targets,
            learning_rate: self.lr,
            weight_decay: self.weight_decay,
            max_len: self.max_len.map(|n| small("--max-len", n)).transpose()?,
            batch_size: small("--batch", self.batch)?,
            grad_accum: small("--grad-accum", self.grad_accum)?,
            length,
            warmup_steps: self.warmup,
            seed: self.seed,
            init_adapter,
        })
    }
}

/// The content id of a model (a directory or a GGUF file): the manifest of the files the
/// loader reads.
pub fn model_id(path: &Path) -> Result<String> {
    let source = ModelSource::find(path)?;
    let manifest = olc_content::manifest_of_files(source.root(), &source.files()?)?;
    Ok(manifest.id()?.to_string())
}

#[derive(Serialize)]
struct Output {
    commitment: String,
    first_loss: f64,
    last_loss: f64,
    losses: Vec<f64>,
    steps: usize,
    adapter: String,
    model: String,
    dataset: String,
    records: usize,
    skipped_records: usize,
    tokens_trained: u64,
    tokens_processed: u64,
    elapsed_ms: f64,
    tokens_per_s: f64,
}

pub fn finetune(args: RunFinetune) -> Result<()> {
    let init_adapter = match &args.training.init_adapter {
        Some(dir) => {
            if args.training.rank.is_some()
                || args.training.alpha.is_some()
                || args.training.targets.is_some()
            {
                bail!(
                    "--rank, --alpha and --targets describe a new adapter; with --init-adapter \
                     the adapter's own adapter_config.json decides them"
                );
            }
            Some(adapter_id(dir)?)
        }
        None => None,
    };
    let params = args.training.params(init_adapter)?;
    params.validate().map_err(anyhow::Error::msg)?;
    let choice = EngineChoice {
        isa: parse_isa(&args.isa)?,
        threads: args
            .threads
            .unwrap_or_else(|| EngineOptions::default().threads),
        prefill_chunk: 0,
    };
    if args.out.join("adapter_model.safetensors").exists() && !args.force {
        bail!(
            "{} already holds an adapter; pass --force to replace it",
            args.out.display()
        );
    }
    let model = model_id(&args.model)
        .with_context(|| format!("cannot load the model in {}", args.model.display()))?;

    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:30}] {msg} ({elapsed} elapsed, ~{eta} left)",
            )?
            .progress_chars("=> "),
        );
        bar
    };
    let started = Instant::now();
    let request = TrainRequest {
        model_dir: &args.model,
        model_id: &model,
        dataset_path: &args.data,
        expect_dataset: None,
        params: &params,
        init_adapter_dir: args.training.init_adapter.as_deref(),
        out_dir: &args.out,
    };
    let trained = train_adapter(
        &request,
        &choice,
        &mut |r: &StepReport| {
            bar.set_length(u64::from(r.total));
            bar.set_position(u64::from(r.step));
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4}, {:.0} tokens/s",
                r.loss,
                r.tokens as f64 / secs
            ));
            true
        },
        &|| Ok(()),
    );
    bar.finish_and_clear();
    let trained = trained.map_err(|e| explain(e, &args))?;
    let outcome = &trained.outcome;
    let max_len = trained.max_len;
    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    let out = Output {
        commitment: outcome.commitment.clone(),
        first_loss: outcome.first_loss(),
        last_loss: outcome.last_loss(),
        steps: outcome.losses.len(),
        losses: outcome.losses.clone(),
        adapter: args.out.display().to_string(),
        model,
        dataset: trained.dataset.content_id.clone(),
        records: trained.dataset.records.len(),
        skipped_records: trained.skipped_records,
        tokens_trained: trained.provenance.tokens_trained,
        tokens_processed: outcome.tokens_processed,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        tokens_per_s: outcome.tokens_processed as f64 / secs,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "trained {} steps in {:.1} s ({:.0} tokens/s): loss {:.4} -> {:.4}",
            out.steps, secs, out.tokens_per_s, out.first_loss, out.last_loss
        );
        if out.skipped_records > 0 {
            println!(
                "skipped {} records longer than {max_len} tokens (see provenance.json)",
                out.skipped_records
            );
        }
        println!("adapter written to {}", out.adapter);
        println!("commitment {}", out.commitment);
    }
    Ok(())
}

/// The executor's error, said in the terms of this command's flags.
fn explain(e: ExecError, args: &RunFinetune) -> anyhow::Error {
    let context = match &e {
        ExecError::Model(_) | ExecError::Input(_) => {
            format!("cannot load the model in {}", args.model.display())
        }
        ExecError::Adapter(_) => format!(
            "cannot continue from the adapter in {}: it does not fit this model",
            args.training
                .init_adapter
                .as_deref()
                .unwrap_or(Path::new("?"))
                .display()
        ),
        ExecError::Train(TrainError::Data(_)) => format!("bad dataset {}", args.data.display()),
        ExecError::Settings(why) if why.contains("max_len") || why.contains("context") => {
            return anyhow::anyhow!("--max-len: {why}");
        }
        _ => return e.into(),
    };
    anyhow::Error::new(e).context(context)
}

/// The content id an adapter directory travels under (its files' manifest), as a job
/// continuing from it would name it.
fn adapter_id(dir: &Path) -> Result<ContentId> {
    let manifest = olc_content::manifest_of_files(dir, &olc_client::adapter_files(dir))
        .with_context(|| format!("cannot read the adapter in {}", dir.display()))?;
    Ok(manifest.id()?)
}

//! `olc run finetune`: trains a LoRA adapter on this machine, no network.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use olc_gpu::engine::{Engine, EngineOptions};
use olc_gpu::model::{Adapter, Checkpoint, ModelConfig};
use olc_gpu::train::{
    Dataset, FinishInputs, Hyper, StepReport, Trainer, finish, init_adapter, resolve_max_len,
    tokenize,
};
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

    /// The hyperparameters these flags ask for, checked against the same limits a job's
    /// are (`TrainingParams::validate`), so a local run and a job refuse alike.
    pub fn hyper(&self) -> Result<Hyper> {
        let params = self.params(None)?;
        params.validate().map_err(anyhow::Error::msg)?;
        Ok(olc_exec::hyper(&params)?)
    }

    /// The adapter training starts from: `--init-adapter`, or a new one. Shape flags that
    /// contradict a given adapter are refused rather than silently ignored.
    pub fn initial_adapter(&self, hyper: &Hyper, config: &ModelConfig) -> Result<Adapter> {
        let Some(dir) = &self.init_adapter else {
            return Ok(init_adapter(&hyper.lora, config, hyper.seed)?);
        };
        if self.rank.is_some() || self.alpha.is_some() || self.targets.is_some() {
            bail!(
                "--rank, --alpha and --targets describe a new adapter; with --init-adapter the \
                 adapter's own adapter_config.json decides them"
            );
        }
        Adapter::load(dir, config).with_context(|| {
            format!(
                "cannot continue from the adapter in {}: it does not fit this model",
                dir.display()
            )
        })
    }

    pub fn max_len(&self, config: &ModelConfig) -> Result<usize> {
        resolve_max_len(self.max_len, config).map_err(|e| anyhow::anyhow!("--max-len: {e}"))
    }
}

/// The content id of a model directory: the manifest of the files the loader reads.
pub fn model_id(dir: &Path) -> Result<String> {
    let files = Checkpoint::files(dir)?;
    let manifest = olc_content::manifest_of_files(dir, &files)?;
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
    let hyper = args.training.hyper()?;
    let isa = parse_isa(&args.isa)?;
    if args.out.join("adapter_model.safetensors").exists() && !args.force {
        bail!(
            "{} already holds an adapter; pass --force to replace it",
            args.out.display()
        );
    }
    let checkpoint = Checkpoint::load(&args.model)
        .with_context(|| format!("cannot load the model in {}", args.model.display()))?;
    let max_len = args.training.max_len(&checkpoint.config)?;
    let in_data = || format!("bad dataset {}", args.data.display());
    let dataset = Dataset::from_file(&args.data).with_context(in_data)?;
    let tokenized = tokenize(&dataset, &checkpoint.tokenizer, max_len).with_context(in_data)?;
    let initial = args.training.initial_adapter(&hyper, &checkpoint.config)?;
    let model = model_id(&args.model)?;

    let mut options = EngineOptions {
        isa,
        max_positions: max_len,
        ..EngineOptions::default()
    };
    if let Some(threads) = args.threads {
        options.threads = threads;
    }
    let engine = Engine::new(checkpoint.config, checkpoint.weights, options)?;
    let trainer = Trainer::new(&engine);

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
    let outcome = trainer.train(
        &tokenized.examples,
        initial.clone(),
        &hyper,
        |r: &StepReport| {
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
    )?;
    bar.finish_and_clear();
    let provenance = finish(
        &trainer,
        &FinishInputs {
            base_model: &model,
            dataset: &dataset,
            tokenized: &tokenized,
            hyper: &hyper,
            max_len,
            init_adapter: args.training.init_adapter.as_ref().map(|_| &initial),
        },
        &outcome,
        &args.out,
    )?;

    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    let out = Output {
        commitment: outcome.commitment.clone(),
        first_loss: outcome.first_loss(),
        last_loss: outcome.last_loss(),
        steps: outcome.losses.len(),
        losses: outcome.losses.clone(),
        adapter: args.out.display().to_string(),
        model,
        dataset: dataset.content_id.clone(),
        records: dataset.records.len(),
        skipped_records: tokenized.too_long.len(),
        tokens_trained: provenance.tokens_trained,
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

//! `olc model`: checkpoints in the Hugging Face format.

use std::path::Path;

use anyhow::{Context, Result, bail};
use olc_gpu::model::{Checkpoint, ModelConfig, write_checkpoint};
use serde::Serialize;

use crate::cli::{ModelCommand, ModelInit, ModelShow};

pub fn run(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Init(args) => init(args),
        ModelCommand::Show(args) => show(args),
    }
}

#[derive(Serialize)]
struct Summary<'a> {
    dir: &'a Path,
    architecture: &'static str,
    parameters: u64,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    layers: usize,
    attention_heads: usize,
    kv_heads: usize,
    head_dim: usize,
    tied_embeddings: bool,
    /// The model's content id: what jobs name it by and what an adapter's provenance
    /// records as its base model (the manifest of the files the loader reads).
    id: String,
}

impl<'a> Summary<'a> {
    fn of(dir: &'a Path, c: &ModelConfig) -> Result<Self> {
        Ok(Self {
            dir,
            architecture: c.architecture.hf_name(),
            parameters: c.parameter_count(),
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            layers: c.num_hidden_layers,
            attention_heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            tied_embeddings: c.tie_word_embeddings,
            id: super::finetune::model_id(dir)?,
        })
    }

    fn print(&self, json: bool, heading: &str) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
        } else {
            println!("{heading} {}", self.dir.display());
            println!(
                "{}: {} parameters, {} layers, hidden {}, mlp {}, {} heads ({} kv, dim {}), vocab {}{}",
                self.architecture,
                self.parameters,
                self.layers,
                self.hidden_size,
                self.intermediate_size,
                self.attention_heads,
                self.kv_heads,
                self.head_dim,
                self.vocab_size,
                if self.tied_embeddings {
                    ", tied embeddings"
                } else {
                    ""
                }
            );
            println!("id: {}", self.id);
        }
        Ok(())
    }
}

fn init(args: ModelInit) -> Result<()> {
    let occupied = [
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
    ]
    .iter()
    .any(|f| args.out.join(f).exists());
    if occupied && !args.force {
        bail!(
            "{} already holds a checkpoint; pass --force to overwrite it",
            args.out.display()
        );
    }
    let config = write_checkpoint(&args.out, args.preset, args.seed)
        .with_context(|| format!("cannot write the checkpoint to {}", args.out.display()))?;
    Summary::of(&args.out, &config)?.print(args.json, "wrote checkpoint")
}

fn show(args: ModelShow) -> Result<()> {
    let checkpoint = Checkpoint::load(&args.dir)?;
    Summary::of(&args.dir, &checkpoint.config)?.print(args.json, "checkpoint")
}

//! `olc model`: checkpoints in the Hugging Face format.

use std::path::Path;

use anyhow::{Context, Result, bail};
use olc_gpu::model::adapter::ADAPTER_CONFIG_FILE;
use olc_gpu::model::export::Weights;
use olc_gpu::model::{AdapterConfig, Checkpoint, ModelConfig, ModelSource, gguf, write_checkpoint};
use olc_protocol::{CatalogKind, ContentId, RpcRequest, RpcResponse};
use serde::Serialize;

use crate::cli::{ModelCommand, ModelImport, ModelInit, ModelList, ModelPublish, ModelShow};

pub fn run(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Init(args) => init(args),
        ModelCommand::Show(args) => show(args),
        ModelCommand::Import(args) => import(args),
        ModelCommand::Publish(args) => super::daemon::runtime()?.block_on(publish(args)),
        ModelCommand::List(args) => super::daemon::runtime()?.block_on(list(args)),
    }
}

/// Checks the directory loads as what it is published as, uploads it, and names it.
async fn publish(args: ModelPublish) -> Result<()> {
    if let Some(why) = olc_protocol::check_name(&args.name) {
        bail!("{why}");
    }
    let is_adapter = args.dir.join(ADAPTER_CONFIG_FILE).is_file();
    match (&args.base, is_adapter) {
        (None, true) => bail!(
            "{} holds an adapter: name its base model with --base NAME_OR_ID",
            args.dir.display()
        ),
        (Some(_), false) => bail!(
            "--base is for adapters, but {} has no {ADAPTER_CONFIG_FILE}",
            args.dir.display()
        ),
        (None, false) => {
            Checkpoint::load(&args.dir)
                .with_context(|| format!("{} is not a model olc can load", args.dir.display()))?;
        }
        (Some(_), true) => {
            AdapterConfig::from_file(&args.dir.join(ADAPTER_CONFIG_FILE)).with_context(|| {
                format!("{} is not an adapter olc can load", args.dir.display())
            })?;
        }
    }
    let (content, kind) = super::remote::with_submitter(&args.coordinator, async |s| {
        let kind = match &args.base {
            None => CatalogKind::Base,
            Some(base) => CatalogKind::Adapter {
                base: resolve(s, base).await?,
            },
        };
        let content = match kind {
            CatalogKind::Base => super::remote::upload_model(s, &args.dir).await?,
            CatalogKind::Adapter { .. } => s
                .upload_adapter(&args.dir)
                .await
                .context("uploading the adapter")?,
        };
        s.publish(&args.name, content, kind)
            .await
            .with_context(|| format!("cannot publish {}", args.name))?;
        Ok((content, kind))
    })
    .await?;
    if args.json {
        let out =
            serde_json::json!({"name": args.name, "content": content.to_string(), "kind": kind});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("published {} = {content}", args.name);
    }
    Ok(())
}

/// A base model named by its catalog name or its content id.
async fn resolve(s: &olc_client::Submitter, base: &str) -> Result<ContentId> {
    if let Ok(id) = base.parse::<ContentId>() {
        return Ok(id);
    }
    let catalog = s.catalog().await.context("cannot read the catalog")?;
    match catalog.iter().find(|e| e.name == base) {
        Some(e) if e.kind == CatalogKind::Base => Ok(e.content),
        Some(_) => bail!("{base} is an adapter, not a base model"),
        None => bail!("no model named {base} in the catalog (see `olc model list`)"),
    }
}

async fn list(args: ModelList) -> Result<()> {
    let entries = match super::remote::ask(&args.at, RpcRequest::Catalog).await? {
        RpcResponse::Catalog(entries) => entries,
        other => bail!("unexpected answer from the coordinator: {other:?}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("the catalog is empty (publish with `olc model publish DIR --name NAME`)");
        return Ok(());
    }
    let name_of = |id: &ContentId| {
        entries
            .iter()
            .find(|e| e.content == *id && e.kind == CatalogKind::Base)
            .map_or_else(|| id.to_string(), |e| e.name.clone())
    };
    println!("{:<32}  {:<64}  {:<20}  OWNER", "NAME", "CONTENT", "KIND");
    for e in &entries {
        let kind = match &e.kind {
            CatalogKind::Base => "model".to_string(),
            CatalogKind::Adapter { base } => format!("adapter of {}", name_of(base)),
        };
        println!(
            "{:<32}  {:<64}  {:<20}  {}",
            e.name, e.content, kind, e.owner
        );
    }
    Ok(())
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
    match ModelSource::find(&args.dir)? {
        ModelSource::HuggingFace(dir) => {
            let checkpoint = Checkpoint::load(&dir)?;
            Summary::of(&dir, &checkpoint.config)?.print(args.json, "checkpoint")
        }
        ModelSource::Gguf(file) => {
            let (checkpoint, info) = gguf::load_with_info(&file)?;
            let summary = Summary::of(&file, &checkpoint.config)?;
            GgufSummary::of(summary, &checkpoint, &info, &file)?.print(args.json)
        }
    }
}

/// What `olc model show` adds for a GGUF file: the format, how its tensors are stored, the
/// tokenizer and the chat template it carries.
#[derive(Serialize)]
struct GgufSummary<'a> {
    #[serde(flatten)]
    model: Summary<'a>,
    format: String,
    name: Option<String>,
    file_bytes: u64,
    /// Memory the weights take once loaded (quantized blocks stay quantized).
    resident_bytes: u64,
    /// Tensor type -> how many tensors are stored in it.
    tensor_types: std::collections::BTreeMap<String, usize>,
    tokenizer: TokenizerSummary,
    chat_template: Option<String>,
    /// Every metadata key, arrays summarised by type and length.
    metadata: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
struct TokenizerSummary {
    model: Option<String>,
    tokens: usize,
    bos: Option<String>,
    eos: Option<String>,
}

impl<'a> GgufSummary<'a> {
    fn of(
        model: Summary<'a>,
        checkpoint: &Checkpoint,
        info: &gguf::GgufInfo,
        file: &Path,
    ) -> Result<Self> {
        let token = |id: Option<u32>| {
            id.and_then(|id| checkpoint.tokenizer.inner().id_to_token(id))
                .map(|t| format!("{t} ({})", id.unwrap_or_default()))
        };
        Ok(Self {
            model,
            format: format!("GGUF v{}", info.version),
            name: info.name.clone(),
            file_bytes: std::fs::metadata(file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .len(),
            resident_bytes: checkpoint.weights.bytes(),
            tensor_types: info
                .tensor_types
                .iter()
                .map(|(t, n)| (t.to_string(), *n))
                .collect(),
            tokenizer: TokenizerSummary {
                model: info.tokenizer_model.clone(),
                tokens: checkpoint.tokenizer.vocab_size(),
                bos: token(info.bos_token_id),
                eos: token(info.eos_token_id),
            },
            chat_template: info.chat_template.clone(),
            metadata: info.metadata.iter().cloned().collect(),
        })
    }

    fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        self.model.print(false, &self.format)?;
        if let Some(name) = &self.name {
            println!("name: {name}");
        }
        let types: Vec<String> = self
            .tensor_types
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        println!(
            "tensors: {} ({} MB in the file, {} MB loaded)",
            types.join(", "),
            self.file_bytes / 1_000_000,
            self.resident_bytes / 1_000_000
        );
        let t = &self.tokenizer;
        println!(
            "tokenizer: {} ({} tokens), bos {}, eos {}",
            t.model.as_deref().unwrap_or("?"),
            t.tokens,
            t.bos.as_deref().unwrap_or("none"),
            t.eos.as_deref().unwrap_or("none"),
        );
        match &self.chat_template {
            Some(template) => println!("chat template:\n{template}"),
            None => println!("chat template: none"),
        }
        Ok(())
    }
}

/// Writes a GGUF file's model as a Hugging Face directory.
fn import(args: ModelImport) -> Result<()> {
    if !gguf::is_gguf(&args.file) {
        bail!("{} is not a GGUF file", args.file.display());
    }
    if args.out.join("config.json").exists() && !args.force {
        bail!(
            "{} already holds a checkpoint; pass --force to overwrite it",
            args.out.display()
        );
    }
    let (checkpoint, info) = gguf::load_with_info(&args.file)?;
    let weights = if args.f32 {
        Weights::F32
    } else {
        Weights::AsStored
    };
    olc_gpu::model::export::write_hf(&args.out, &checkpoint, &info, weights)
        .with_context(|| format!("cannot write the checkpoint to {}", args.out.display()))?;
    Summary::of(&args.out, &checkpoint.config)?.print(args.json, "wrote checkpoint")
}

//! `olc run`: the engine on this machine, no network.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use olc_exec::ExecError;
use olc_exec::infer::{EngineChoice, GenerateRequest, generate_text};
use olc_gpu::compute::Isa;
use olc_gpu::engine::{EngineOptions, StopReason};
use olc_protocol::Prompt;
use serde::Serialize;

use crate::cli::{RunCommand, RunInfer};

pub fn run(command: RunCommand) -> Result<()> {
    match command {
        RunCommand::Infer(args) => infer(args),
        RunCommand::Finetune(args) => super::finetune::finetune(args),
    }
}

pub(crate) fn parse_isa(text: &str) -> Result<Isa> {
    let isa = match text {
        "auto" => Isa::detect(),
        "portable" => Isa::Portable,
        "avx2" => Isa::Avx2,
        "avx512" => Isa::Avx512,
        other => bail!("unknown --isa {other:?}: expected auto, portable, avx2 or avx512"),
    };
    if !isa.is_supported() {
        bail!("this CPU cannot run --isa {text}");
    }
    Ok(isa)
}

#[derive(Serialize)]
struct Output {
    prompt_tokens: Vec<u32>,
    tokens: Vec<u32>,
    text: String,
    commitment: String,
    stop: &'static str,
    /// Prefill and decode together, wall time.
    elapsed_ms: f64,
}

fn infer(args: RunInfer) -> Result<()> {
    let g = &args.generate;
    let prompt = match (&g.prompt, &g.tokens) {
        (Some(text), _) => Prompt::Text(text.clone()),
        (None, Some(tokens)) => Prompt::Tokens(tokens.clone()),
        (None, None) => bail!("give --prompt TEXT or --tokens 1,2,3"),
    };
    let choice = EngineChoice {
        isa: parse_isa(&args.isa)?,
        threads: args
            .threads
            .unwrap_or_else(|| EngineOptions::default().threads),
        prefill_chunk: args.prefill_chunk,
    };
    let request = GenerateRequest {
        model_dir: &g.model,
        adapter_dir: g.adapter.as_deref(),
        prompt: &prompt,
        sampling: g.job_sampling(),
        seed: g.sampling().map_or(0, |s| s.3),
        max_tokens: g.max_tokens,
    };
    let started = Instant::now();
    let generated = generate_text(&request, &choice).map_err(|e| match e {
        // The only input a local run lays out is the model directory itself.
        ExecError::Model(_) | ExecError::Input(_) => {
            anyhow::Error::new(e).context(format!("cannot load the model in {}", g.model.display()))
        }
        ExecError::Adapter(_) => anyhow::Error::new(e).context(format!(
            "cannot load the adapter in {}",
            g.adapter.as_deref().unwrap_or(Path::new("?")).display()
        )),
        ExecError::Settings(why) => anyhow::anyhow!(why),
        e => e.into(),
    })?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;

    if let Some(path) = &args.logits_out {
        let bytes: Vec<u8> = generated
            .logits
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(path, bytes)
            .with_context(|| format!("cannot write logits to {}", path.display()))?;
    }
    let out = Output {
        commitment: generated.commitment.to_string(),
        stop: match generated.stop {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "max_tokens",
        },
        prompt_tokens: generated.prompt_tokens,
        tokens: generated.tokens,
        text: generated.text,
        elapsed_ms,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", out.text);
        eprintln!(
            "{} tokens ({}), {:.1} ms, commitment {}",
            out.tokens.len(),
            out.stop,
            elapsed_ms,
            out.commitment
        );
    }
    Ok(())
}

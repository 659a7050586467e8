//! `olc run`: the engine on this machine, no network.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use olc_gpu::compute::Isa;
use olc_gpu::engine::{Engine, EngineOptions, Sampling, StopReason, generate};
use olc_gpu::model::{Adapter, Checkpoint};
use olc_protocol::inference_commitment;
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
    let sampling = match g.sampling() {
        Some((temperature, top_k, top_p, seed)) => Sampling::Sample {
            temperature,
            top_k,
            top_p,
            seed,
        },
        None => Sampling::Greedy,
    };
    olc_protocol::check_generation(&g.job_sampling(), g.max_tokens).map_err(anyhow::Error::msg)?;
    let max_tokens = g.max_tokens as usize;
    let isa = parse_isa(&args.isa)?;
    let checkpoint = Checkpoint::load(&g.model)
        .with_context(|| format!("cannot load the model in {}", g.model.display()))?;
    let adapter = g
        .adapter
        .as_ref()
        .map(|dir| {
            Adapter::load(dir, &checkpoint.config)
                .with_context(|| format!("cannot load the adapter in {}", dir.display()))
        })
        .transpose()?;
    let prompt = match (&g.prompt, &g.tokens) {
        (Some(text), _) => checkpoint.tokenizer.encode(text)?,
        (None, Some(tokens)) => tokens.clone(),
        (None, None) => bail!("give --prompt TEXT or --tokens 1,2,3"),
    };
    let mut options = EngineOptions {
        isa,
        ..EngineOptions::default()
    };
    if let Some(threads) = args.threads {
        options.threads = threads;
    }
    options.max_positions = prompt.len() + max_tokens;
    let tokenizer = checkpoint.tokenizer;
    let engine = Engine::new(checkpoint.config, checkpoint.weights, options)?;

    let started = Instant::now();
    let generation = generate(
        &engine,
        adapter.as_ref(),
        &prompt,
        max_tokens,
        args.prefill_chunk,
        &sampling,
    )?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;

    if let Some(path) = &args.logits_out {
        let bytes: Vec<u8> = generation
            .logits
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(path, bytes)
            .with_context(|| format!("cannot write logits to {}", path.display()))?;
    }
    let text = tokenizer.decode(&generation.tokens, true)?;
    let out = Output {
        commitment: inference_commitment(&generation.tokens).to_string(),
        stop: match generation.stop {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "max_tokens",
        },
        prompt_tokens: prompt,
        tokens: generation.tokens,
        text,
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

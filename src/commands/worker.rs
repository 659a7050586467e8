//! `olc worker start`.

use std::time::Duration;

use anyhow::{Result, bail};
use olc_net::NodeConfig;
use olc_protocol::Amount;
use olc_protocol::messages::advert::{MAX_ADVERT_INTERVAL_MS, MIN_ADVERT_INTERVAL_MS};
use olc_worker::{Worker, WorkerConfig};

use super::daemon;
use crate::cli::{WorkerCommand, WorkerStart};
use crate::config::{self, WorkerFile, pick, pick_list};
use crate::limits;

pub fn run(command: WorkerCommand) -> Result<()> {
    match command {
        WorkerCommand::Start(args) => start(args),
    }
}

fn start(args: WorkerStart) -> Result<()> {
    let file: WorkerFile = config::load(args.daemon.config.as_deref())?;
    let data = daemon::data_dir(pick(args.daemon.data, file.data), "worker")?;
    let key = pick(args.daemon.key, file.key).unwrap_or_else(|| data.join("key.pem"));
    let mdns = args.daemon.mdns || file.mdns.unwrap_or(false);
    let mut cfg = WorkerConfig::new(pick_list(args.coordinator, file.coordinator), data.clone());
    if cfg.coordinators.is_empty() && !mdns {
        bail!(
            "no coordinator to join: pass --coordinator MULTIADDR (or set `coordinator` in --config)"
        );
    }
    let listen = pick_list(args.listen, file.listen);
    if !listen.is_empty() {
        cfg.listen = listen;
    }
    let interval =
        pick(args.advert_interval, file.advert_interval).unwrap_or(Duration::from_secs(10));
    let interval_ms = interval.as_millis() as u64;
    if !(MIN_ADVERT_INTERVAL_MS..=MAX_ADVERT_INTERVAL_MS).contains(&interval_ms) {
        bail!(
            "--advert-interval must be between 100ms and 1h, got {}",
            humantime::format_duration(interval)
        );
    }
    cfg.offer.interval_ms = interval_ms;
    let price = pick(args.price, file.price).unwrap_or(10);
    cfg.offer.price_per_ktoken = Amount(limits::check("--price", price, &limits::PRICE)?);
    let max_jobs = pick(args.max_jobs, file.max_jobs).unwrap_or(1);
    cfg.offer.max_concurrent_jobs = limits::check("--max-jobs", max_jobs, &limits::MAX_JOBS)?;
    if let Some(streams) = pick(args.max_streams, file.max_streams) {
        cfg.offer.max_streams = limits::check("--max-streams", streams, &limits::MAX_STREAMS)?;
    }
    if let Some(threads) = pick(args.threads, file.threads) {
        cfg.threads = limits::check("--threads", threads, &limits::THREADS)?;
    }
    if let Some(gib) = pick(args.cache_gib, file.cache_gib) {
        cfg.cache_bytes = limits::check("--cache-gib", gib, &limits::CACHE_GIB)? << 30;
    }
    if let Some(gib) = pick(args.model_cache_gib, file.model_cache_gib) {
        cfg.model_cache_bytes =
            limits::check("--model-cache-gib", gib, &limits::MODEL_CACHE_GIB)? << 30;
    }
    cfg.node = NodeConfig {
        mdns,
        ..NodeConfig::default()
    };

    let identity = daemon::load_or_create_key(&key)?;
    daemon::runtime()?.block_on(async {
        let worker = Worker::start(&identity, cfg).await?;
        // Accounts, jobs and receipts name a participant by its public key; the peer id
        // (the same key in libp2p's form) is what addresses carry.
        println!("worker {}", identity.public_key());
        println!("peer id {}", worker.peer_id());
        let hw = worker.hardware();
        match hw.gpus.as_slice() {
            [] => println!(
                "hardware: CPU {} ({} cores), no GPU",
                hw.cpu.model, hw.cpu.logical_cores
            ),
            gpus => {
                for g in gpus {
                    println!(
                        "hardware: GPU {} ({} MiB)",
                        g.name,
                        g.memory_total_bytes >> 20
                    );
                }
            }
        }
        for addr in worker.listen_addrs() {
            println!("listening on {addr}");
        }
        daemon::shutdown_signal().await?;
        println!("stopping");
        worker.stop().await;
        Ok(())
    })
}

//! `olc worker start`.

use std::time::Duration;

use anyhow::{Result, bail};
use olc_protocol::Amount;
use olc_protocol::messages::advert::{MAX_ADVERT_INTERVAL_MS, MIN_ADVERT_INTERVAL_MS};
use olc_protocol::p2p::NodeConfig;
use olc_worker::{Worker, WorkerConfig};

use super::daemon;
use crate::cli::{WorkerCommand, WorkerStart};
use crate::config::{self, WorkerFile, pick, pick_list};

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
    cfg.offer.price_per_ktoken = Amount(pick(args.price, file.price).unwrap_or(10));
    cfg.offer.max_concurrent_jobs = pick(args.max_jobs, file.max_jobs).unwrap_or(1).max(1);
    if let Some(threads) = pick(args.threads, file.threads) {
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        cfg.threads = threads;
    }
    if let Some(gib) = pick(args.cache_gib, file.cache_gib) {
        if gib == 0 {
            bail!("--cache-gib must be at least 1: a worker needs room for one model");
        }
        cfg.cache_bytes = gib.saturating_mul(1 << 30);
    }
    cfg.node = NodeConfig {
        mdns,
        ..NodeConfig::default()
    };

    let identity = daemon::load_or_create_key(&key)?;
    daemon::runtime()?.block_on(async {
        let worker = Worker::start(&identity, cfg).await?;
        println!("worker {}", worker.peer_id());
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

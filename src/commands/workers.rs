//! `olc workers`: ask a coordinator who is live.

use anyhow::{Context, Result, bail};
use olc_protocol::p2p::{Client, NodeConfig, unix_ms};
use olc_protocol::{Identity, RegisteredWorker, RpcRequest, RpcResponse};
use serde::Serialize;

use super::daemon;
use crate::cli::WorkersArgs;

pub fn run(args: WorkersArgs) -> Result<()> {
    let workers = daemon::runtime()?.block_on(async {
        // Reading the registry needs no authority: a throwaway key keeps the user's own
        // key out of it.
        let identity = Identity::generate()?;
        let client = Client::connect(
            &identity,
            &NodeConfig::default(),
            &args.coordinator,
            args.timeout,
        )
        .await
        .with_context(|| format!("cannot reach the coordinator at {}", args.coordinator))?;
        match tokio::time::timeout(args.timeout, client.rpc(RpcRequest::ListWorkers)).await {
            Err(_) => bail!("the coordinator did not answer within {:?}", args.timeout),
            Ok(answer) => match answer? {
                RpcResponse::Workers(workers) => Ok(workers),
                RpcResponse::Refused(why) => bail!("the peer refused: {why}"),
                other => bail!("the peer answered with something else: {other:?}"),
            },
        }
    })?;
    if args.json {
        let rows: Vec<WorkerRow<'_>> = workers.iter().map(WorkerRow::from).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&workers);
    }
    Ok(())
}

#[derive(Serialize)]
struct WorkerRow<'a> {
    peer_id: String,
    public_key: String,
    hardware: &'a olc_protocol::Hardware,
    backends: &'a [olc_protocol::Backend],
    /// Credits per 1000 tokens.
    price: u64,
    /// Unix ms (coordinator clock) of the latest advert.
    last_seen: u64,
    first_seen: u64,
    advert_interval_ms: u64,
    listen_addrs: &'a [String],
    max_concurrent_jobs: u32,
    active_jobs: u32,
}

impl<'a> From<&'a RegisteredWorker> for WorkerRow<'a> {
    fn from(w: &'a RegisteredWorker) -> Self {
        Self {
            peer_id: peer_id(w),
            public_key: w.public_key.to_string(),
            hardware: &w.advert.hardware,
            backends: &w.advert.backends,
            price: w.advert.price_per_ktoken.0,
            last_seen: w.last_seen_ms,
            first_seen: w.first_seen_ms,
            advert_interval_ms: w.advert.interval_ms,
            listen_addrs: &w.advert.listen_addrs,
            max_concurrent_jobs: w.advert.max_concurrent_jobs,
            active_jobs: w.advert.active_jobs,
        }
    }
}

fn peer_id(w: &RegisteredWorker) -> String {
    w.public_key
        .to_peer_id()
        .map(|p| p.to_string())
        .unwrap_or_else(|_| "(invalid key)".into())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn print_table(workers: &[RegisteredWorker]) {
    if workers.is_empty() {
        println!("no live workers");
        return;
    }
    let now = unix_ms();
    println!(
        "{:<52}  {:<40}  {:>10}  {:>12}  {:>9}",
        "PEER ID", "HARDWARE", "MEMORY", "PRICE/1kTOK", "LAST SEEN"
    );
    for w in workers {
        let hw = &w.advert.hardware;
        let (what, memory) = if hw.gpus.is_empty() {
            (
                format!("CPU {} ({} cores)", hw.cpu.model, hw.cpu.logical_cores),
                hw.ram_total_bytes,
            )
        } else {
            let names: Vec<&str> = hw.gpus.iter().map(|g| g.name.as_str()).collect();
            (
                names.join(", "),
                hw.gpus.iter().map(|g| g.memory_total_bytes).sum(),
            )
        };
        let what: String = what.chars().take(40).collect();
        let ago = now.saturating_sub(w.last_seen_ms) as f64 / 1000.0;
        println!(
            "{:<52}  {:<40}  {:>10}  {:>12}  {:>8.1}s",
            peer_id(w),
            what,
            gib(memory),
            w.advert.price_per_ktoken,
            ago
        );
    }
}

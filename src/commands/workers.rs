//! `olc workers`: ask a coordinator who is live, and whether it would give them work.

use anyhow::{Result, bail};
use olc_net::unix_ms;
use olc_protocol::{RegisteredWorker, RpcRequest, RpcResponse, WorkerStanding, WorkerStandings};
use serde::Serialize;

use super::{daemon, remote};
use crate::cli::WorkersArgs;

pub fn run(args: WorkersArgs) -> Result<()> {
    let standings = daemon::runtime()?.block_on(async {
        match remote::ask(&args.at, RpcRequest::WorkerStandings).await? {
            RpcResponse::WorkerStandings(standings) => Ok(*standings),
            other => bail!("the coordinator answered with something else: {other:?}"),
        }
    })?;
    if args.json {
        let rows: Vec<WorkerRow<'_>> = standings.workers.iter().map(WorkerRow::from).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&standings);
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
    /// Fine-tunes at once, and running now.
    max_concurrent_jobs: u32,
    active_jobs: u32,
    /// Inference jobs at once (batched together), and generating now.
    max_streams: u32,
    active_streams: u32,
    /// Models held in memory.
    resident_models: Vec<String>,
    resident_adapters: u32,
    /// Bonded stake at this coordinator.
    stake: u64,
    jailed_until: Option<u64>,
    reputation: f64,
    /// Whether the coordinator would match it to a job now, and if not, why.
    matchable: bool,
    not_matched_because: Option<&'a str>,
}

impl<'a> From<&'a WorkerStanding> for WorkerRow<'a> {
    fn from(s: &'a WorkerStanding) -> Self {
        let w = &s.worker;
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
            max_streams: w.advert.max_streams,
            active_streams: w.advert.active_streams,
            resident_models: w.advert.resident.iter().map(|id| id.to_string()).collect(),
            resident_adapters: w.advert.resident_adapters,
            stake: s.bonded.0,
            jailed_until: s.jailed_until_ms,
            reputation: s.reputation,
            matchable: s.ineligible.is_none(),
            not_matched_because: s.ineligible.as_deref(),
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

fn print_table(standings: &WorkerStandings) {
    let workers = &standings.workers;
    if workers.is_empty() {
        println!("no live workers");
        return;
    }
    let now = unix_ms();
    println!(
        "{:<64}  {:<32}  {:>10}  {:>11}  {:>8}  {:>9}  {:>9}  {:>9}  {:>8}  MATCHED",
        "WORKER (PUBLIC KEY)",
        "HARDWARE",
        "MEMORY",
        "PRICE/1kTOK",
        "STAKE",
        "LAST SEEN",
        "FINETUNES",
        "INFERENCE",
        "RESIDENT"
    );
    for s in workers {
        let w = &s.worker;
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
        let what: String = what.chars().take(32).collect();
        let ago = now.saturating_sub(w.last_seen_ms) as f64 / 1000.0;
        let matched = match &s.ineligible {
            None => "yes".to_string(),
            Some(why) => format!("no: {why}"),
        };
        let a = &w.advert;
        println!(
            "{:<64}  {:<32}  {:>10}  {:>11}  {:>8}  {:>8.1}s  {:>9}  {:>9}  {:>8}  {matched}",
            w.public_key,
            what,
            gib(memory),
            a.price_per_ktoken,
            s.bonded,
            ago,
            format!("{}/{}", a.active_jobs, a.max_concurrent_jobs),
            format!("{}/{}", a.active_streams, a.max_streams),
            a.resident.len(),
        );
    }
    println!(
        "(a worker needs a stake of at least {} here to be matched)",
        standings.min_stake
    );
}

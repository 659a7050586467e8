//! `olc coordinator start|ledger|audit`.

use anyhow::{Context, Result, bail};
use olc_coordinator::audit::{AuditReport, audit_data_dir};
use olc_coordinator::{Coordinator, CoordinatorConfig, RegistryConfig};
use olc_net::NodeConfig;
use olc_protocol::{LedgerView, RpcRequest, RpcResponse, VerificationPolicy};

use super::{daemon, remote};
use crate::cli::{CoordinatorAudit, CoordinatorCommand, CoordinatorLedger, CoordinatorStart};
use crate::config::{self, CoordinatorFile, pick, pick_list};
use crate::limits;

pub fn run(command: CoordinatorCommand) -> Result<()> {
    match command {
        CoordinatorCommand::Start(args) => start(args),
        CoordinatorCommand::Ledger(args) => daemon::runtime()?.block_on(ledger(args)),
        CoordinatorCommand::Audit(args) => audit_store(args),
    }
}

fn start(args: CoordinatorStart) -> Result<()> {
    let file: CoordinatorFile = config::load(args.daemon.config.as_deref())?;
    let data = daemon::data_dir(pick(args.daemon.data, file.data), "coordinator")?;
    let key = pick(args.daemon.key, file.key).unwrap_or_else(|| data.join("key.pem"));
    let mut cfg = CoordinatorConfig {
        data_dir: Some(data.clone()),
        faucet: args.faucet || file.faucet.unwrap_or(false),
        ..CoordinatorConfig::default()
    };
    let listen = pick_list(args.listen, file.listen);
    if !listen.is_empty() {
        cfg.listen = listen;
    }
    if let Some(skew) = pick(args.max_clock_skew, file.max_clock_skew) {
        let skew = limits::check_duration("--max-clock-skew", skew, &limits::MAX_CLOCK_SKEW)?;
        cfg.registry = RegistryConfig {
            max_clock_skew_ms: skew.as_millis() as u64,
        };
    }
    if let Some(min) = pick(args.min_stake, file.min_stake) {
        cfg.policy.min_stake = limits::check("--min-stake", min, &limits::MIN_STAKE)?;
    }
    let file_verify = file
        .default_verify
        .map(|v| v.parse::<VerificationPolicy>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("default-verify in the config file: {e}"))?;
    match pick(args.default_verify, file_verify) {
        Some(VerificationPolicy::Default) => {
            bail!("--default-verify must name a policy: single, replicate:K or sample:P")
        }
        Some(policy) => cfg.jobs.default_verification = policy,
        None => {}
    }
    let referee_threads = pick(args.referee_threads, file.referee_threads)
        .map(|n| limits::check("--referee-threads", n, &limits::REFEREE_THREADS))
        .transpose()?;
    match referee_threads {
        Some(0) => cfg.referee_threads = None,
        Some(n) => cfg.referee_threads = Some(n),
        None => {}
    }
    cfg.node = NodeConfig {
        mdns: args.daemon.mdns || file.mdns.unwrap_or(false),
        ..NodeConfig::default()
    };

    let identity = daemon::load_or_create_key(&key)?;
    daemon::runtime()?.block_on(async {
        let coordinator = Coordinator::start(&identity, cfg).await?;
        println!("coordinator {}", identity.public_key());
        println!("peer id {}", coordinator.peer_id());
        for addr in coordinator.listen_addrs() {
            println!("listening on {addr}");
        }
        daemon::shutdown_signal().await?;
        println!("stopping");
        coordinator.stop().await;
        Ok(())
    })
}

async fn ledger(args: CoordinatorLedger) -> Result<()> {
    let view = match remote::ask(&args.at, RpcRequest::Ledger).await? {
        RpcResponse::Ledger(view) => *view,
        other => bail!("unexpected answer from the coordinator: {other:?}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print_ledger(&view);
    }
    if !view.balanced() {
        bail!(
            "the ledger does not balance: it holds {} but {} were minted",
            view.total.0,
            view.minted.0
        );
    }
    Ok(())
}

fn print_ledger(view: &LedgerView) {
    println!(
        "minted {}  held {}  treasury {}  in escrow {} ({} jobs)  settled jobs {}",
        view.minted.0,
        view.total.0,
        view.treasury.0,
        view.escrowed.0,
        view.open_escrows,
        view.settled_jobs
    );
    println!(
        "{:<64}  {:>12}  {:>10}  {:>10}  {:>5}  {:>7}",
        "account", "balance", "bonded", "unbonding", "rep", "slashes"
    );
    for a in &view.accounts {
        let jailed = if a.jailed_until_ms.is_some() {
            "  jailed"
        } else {
            ""
        };
        println!(
            "{:<64}  {:>12}  {:>10}  {:>10}  {:>5.2}  {:>7}{jailed}",
            a.key.to_string(),
            a.balance.0,
            a.bonded.0,
            a.unbonding.0,
            a.reputation,
            a.slashes
        );
    }
}

fn audit_store(args: CoordinatorAudit) -> Result<()> {
    let data = daemon::data_dir(args.data, "coordinator")?;
    if !data.join("jobs").is_dir() {
        bail!(
            "{} holds no coordinator store (give the coordinator's --data directory)",
            data.display()
        );
    }
    let report = audit_data_dir(&data).with_context(|| {
        format!(
            "cannot audit the coordinator's store in {} (is the coordinator still running? \
             `olc coordinator ledger` checks a live one)",
            data.display()
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_audit(&report);
    }
    if !report.is_clean() {
        bail!("the audit found {} problems", report.problems.len());
    }
    Ok(())
}

fn print_audit(r: &AuditReport) {
    println!(
        "minted {}  held {}  jobs {} (open {}, done {}, failed {})  settled {}",
        r.minted, r.total, r.jobs, r.open_jobs, r.done_jobs, r.failed_jobs, r.settled_jobs
    );
    println!(
        "blobs {} checked, {} missing, {} corrupt",
        r.blobs_checked, r.blobs_missing, r.blobs_corrupt
    );
    if r.is_clean() {
        println!(
            "ok: the ledger balances, every job's money matches its state, and every blob a \
             job refers to is stored intact"
        );
    }
    for p in &r.problems {
        println!("PROBLEM: {p}");
    }
}

//! Network benchmarks (issue "The network"): how long a worker takes to appear in the
//! coordinator's registry, and how long an advert takes to reach every node of a
//! 20-node network. Everything runs on loopback in this process.
//!
//! Run: `cargo bench --bench network`. Record the output in BENCHMARKS.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use olc_coordinator::{Coordinator, CoordinatorConfig};
use olc_net::AdvertSeen;
use olc_net::libp2p::Multiaddr;
use olc_protocol::Identity;
use olc_worker::{Worker, WorkerConfig};
use tokio::sync::mpsc;

const JOIN_RUNS: usize = 30;
const NODES: usize = 20;
const PROPAGATION_SECS: u64 = 20;
const INTERVAL_MS: u64 = 1_000;

fn quic() -> Vec<Multiaddr> {
    vec![
        "/ip4/127.0.0.1/udp/0/quic-v1"
            .parse()
            .expect("static address"),
    ]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

fn worker_config(coordinator: &Coordinator, dir: &std::path::Path) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(
        vec![coordinator.listen_addrs()[0].clone()],
        dir.to_path_buf(),
    );
    cfg.listen = quic();
    cfg.offer.interval_ms = INTERVAL_MS;
    cfg
}

async fn join_latency(dir: &std::path::Path) -> Vec<f64> {
    let cfg = CoordinatorConfig {
        listen: quic(),
        ..CoordinatorConfig::default()
    };
    let c = Coordinator::start(&Identity::generate().expect("key"), cfg)
        .await
        .expect("coordinator");
    let mut out = Vec::new();
    for _ in 0..JOIN_RUNS {
        let id = Identity::generate().expect("key");
        let start = Instant::now();
        let w = Worker::start(&id, worker_config(&c, dir))
            .await
            .expect("worker");
        while !c.workers().iter().any(|x| x.public_key == id.public_key()) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "worker never registered"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        out.push(start.elapsed().as_secs_f64() * 1e3);
        w.stop().await;
    }
    c.stop().await;
    out
}

/// Returns per-receiver delays and, for each advert that reached every other node, the
/// delay until the last one had it; plus how many adverts did not reach everyone.
async fn propagation(dir: &std::path::Path) -> (Vec<f64>, Vec<f64>, usize, usize) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, AdvertSeen)>();
    // Each node reports through its own channel, tagged here with the node's index.
    let tagged = |node: usize| {
        let (ntx, mut nrx) = mpsc::unbounded_channel::<AdvertSeen>();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(seen) = nrx.recv().await {
                let _ = tx.send((node, seen));
            }
        });
        ntx
    };
    let cfg = CoordinatorConfig {
        listen: quic(),
        observer: Some(tagged(0)),
        ..CoordinatorConfig::default()
    };
    let c = Coordinator::start(&Identity::generate().expect("key"), cfg)
        .await
        .expect("coordinator");
    let mut workers = Vec::new();
    for node in 1..NODES {
        let mut wcfg = worker_config(&c, dir);
        wcfg.observer = Some(tagged(node));
        workers.push(
            Worker::start(&Identity::generate().expect("key"), wcfg)
                .await
                .expect("worker"),
        );
    }
    while c.workers().len() < NODES - 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let meshes form (workers find each other through adverts), then measure a window.
    let warmup = std::env::var("OLC_BENCH_WARMUP_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    while rx.try_recv().is_ok() {}
    // Only adverts published inside the window count, so none is half-observed.
    let window_start_us = olc_net::unix_us();
    let window_end_us = window_start_us + PROPAGATION_SECS * 1_000_000;
    let window_end = Instant::now() + Duration::from_secs(PROPAGATION_SECS);
    let mut seen: HashMap<(olc_protocol::PublicKey, u64), Vec<u64>> = HashMap::new();
    while let Ok(Some((_node, s))) = tokio::time::timeout_at(window_end.into(), rx.recv()).await {
        if (window_start_us..window_end_us).contains(&s.seq) {
            seen.entry((s.signer, s.seq))
                .or_default()
                .push(s.received_us.saturating_sub(s.seq));
        }
    } // Give stragglers of the window's adverts a moment to arrive, without counting new ones.
    let grace = Instant::now() + Duration::from_secs(2);
    while let Ok(Some((_node, s))) = tokio::time::timeout_at(grace.into(), rx.recv()).await {
        if let Some(v) = seen.get_mut(&(s.signer, s.seq)) {
            v.push(s.received_us.saturating_sub(s.seq));
        }
    }
    for w in workers {
        w.stop().await;
    }
    c.stop().await;

    let mut per_receiver = Vec::new();
    let mut to_all = Vec::new();
    let mut incomplete = 0;
    for delays in seen.values() {
        per_receiver.extend(delays.iter().map(|&us| us as f64 / 1e3));
        if delays.len() >= NODES - 1 {
            to_all.push(delays.iter().copied().max().unwrap_or(0) as f64 / 1e3);
        } else {
            incomplete += 1;
        }
    }
    (per_receiver, to_all, incomplete, seen.len())
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("network benchmark: loopback QUIC, {cores} cores, advert interval {INTERVAL_MS} ms");
    println!();
    println!("| measure | samples | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    let joins = rt.block_on(join_latency(dir.path()));
    summary("worker start → in coordinator registry", joins);
    let (per_receiver, to_all, incomplete, total) = rt.block_on(propagation(dir.path()));
    summary(
        &format!("advert → one node ({NODES}-node network)"),
        per_receiver,
    );
    summary(
        &format!("advert → every node ({NODES}-node network)"),
        to_all,
    );
    println!();
    println!(
        "adverts in the window: {total}; reached fewer than all {} other nodes: {incomplete}",
        NODES - 1
    );
}

//! Matcher benchmark: how many placement decisions per second over a registry of 10,000
//! workers, the scale the matcher must stay well under a millisecond at, since it runs
//! on every submission and every replica retry.
//!
//! Run: `cargo bench -p olc-coordinator --bench matcher`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use olc_coordinator::matcher::{Need, Slots, WorkerStats, pick};
use olc_protocol::{
    Amount, Backend, ContentId, CpuInfo, GpuInfo, Hardware, HardwareAdvert, PublicKey,
    RegisteredWorker,
};

const WORKERS: usize = 10_000;
const GIB: u64 = 1 << 30;
/// Each case runs for at least this long, so the figure is not one cold run.
const MIN_RUN: Duration = Duration::from_secs(1);
const BATCH: u32 = 10;

/// A fixed-seed xorshift: the same synthetic registry on every run, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(rng: &mut Rng) -> PublicKey {
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    PublicKey::from_bytes(bytes)
}

fn models() -> Vec<ContentId> {
    (0u8..20).map(|i| ContentId::of(&[i])).collect()
}

fn worker(rng: &mut Rng, models: &[ContentId]) -> RegisteredWorker {
    let gpus = (0..rng.below(3))
        .map(|i| GpuInfo {
            name: "NVIDIA GeForce RTX 4090".into(),
            uuid: format!("GPU-{i}"),
            memory_total_bytes: 24 * GIB,
            memory_free_bytes: (4 + rng.below(76)) * GIB,
            compute_capability: (8, 9),
            driver_version: "570.86.10".into(),
            cuda_version: Some(12080),
            power_limit_milliwatts: Some(450_000),
            utilization_percent: Some(3),
        })
        .collect::<Vec<_>>();
    let mut backends = vec![Backend::Cpu];
    if !gpus.is_empty() {
        backends.push(Backend::Cuda);
    }
    let max_concurrent_jobs = 1 + rng.below(4) as u32;
    RegisteredWorker {
        public_key: key(rng),
        advert: HardwareAdvert {
            seq: 1,
            timestamp_ms: 1_790_000_000_000,
            interval_ms: 10_000,
            hardware: Hardware {
                gpus,
                cpu: CpuInfo {
                    model: "AMD EPYC".into(),
                    logical_cores: 16,
                    features: vec!["avx2".into(), "fma".into()],
                },
                ram_total_bytes: 64 * GIB,
                ram_available_bytes: (8 + rng.below(56)) * GIB,
                disk_free_bytes: 500 * GIB,
            },
            backends,
            price_per_ktoken: Amount(1 + rng.below(50)),
            listen_addrs: vec!["/ip4/127.0.0.1/udp/7001/quic-v1".into()],
            cached: (0..rng.below(4))
                .map(|_| models[rng.below(models.len() as u64) as usize])
                .collect(),
            max_concurrent_jobs,
            active_jobs: rng.below(u64::from(max_concurrent_jobs) + 1) as u32,
            resident: Vec::new(),
            resident_adapters: 0,
            max_streams: 8,
            active_streams: 0,
        },
        last_seen_ms: 1_790_000_000_000,
        first_seen_ms: 1_790_000_000_000,
    }
}

fn case(
    name: &str,
    workers: &[RegisteredWorker],
    stats: &HashMap<PublicKey, WorkerStats>,
    need: &Need<'_>,
) {
    let outcome = pick(workers, |k| stats.get(k), need);
    // Timed in small batches: on a shared machine some batches are preempted, and the
    // median and best batch show the matcher's own cost rather than the neighbours'.
    let mut per_decision = Vec::new();
    let start = Instant::now();
    while start.elapsed() < MIN_RUN {
        let batch = Instant::now();
        for _ in 0..BATCH {
            black_box(pick(black_box(workers), |k| stats.get(k), black_box(need)).ok());
        }
        per_decision.push(batch.elapsed().as_secs_f64() / BATCH as f64);
    }
    per_decision.sort_by(f64::total_cmp);
    let median = per_decision[per_decision.len() / 2];
    let best = per_decision[0];
    let shown = match &outcome {
        Ok(keys) => format!("picked {}", keys.len()),
        Err(e) => format!("refused: {e}"),
    };
    println!(
        "{name:<34} {:>7.0} decisions/s  median {:>6.1} µs  best {:>6.1} µs  ({shown})",
        1.0 / median,
        median * 1e6,
        best * 1e6,
    );
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let models = models();
    let workers: Vec<_> = (0..WORKERS).map(|_| worker(&mut rng, &models)).collect();
    // The coordinator knows every worker: the realistic worst case, a lookup per worker.
    let stats: HashMap<_, _> = workers
        .iter()
        .map(|w| {
            let s = WorkerStats {
                reputation: rng.below(1001) as f64 / 1000.0,
                load: rng.below(2) as u32,
                streams: 0,
                has_cached: (0..rng.below(2))
                    .map(|_| models[rng.below(models.len() as u64) as usize])
                    .collect(),
            };
            (w.public_key, s)
        })
        .collect();
    let content = [models[0], models[1]];
    let exclude: Vec<_> = workers.iter().take(3).map(|w| w.public_key).collect();
    let base = Need {
        min_memory_bytes: 16 * GIB,
        backend: Some(Backend::Cuda),
        replicas: 1,
        content: &content,
        max_price_per_ktoken: Some(Amount(40)),
        fee: None,
        exclude: &exclude,
        slots: Slots::Jobs,
    };

    println!("{WORKERS} workers");
    let empty = HashMap::new();
    case(
        "NOSTATS any backend 3",
        &workers,
        &empty,
        &Need {
            backend: None,
            min_memory_bytes: GIB,
            max_price_per_ktoken: None,
            replicas: 3,
            ..base
        },
    );
    case(
        "1000 workers any 3",
        &workers[..1000],
        &stats,
        &Need {
            backend: None,
            min_memory_bytes: GIB,
            max_price_per_ktoken: None,
            replicas: 3,
            ..base
        },
    );
    case("1000 workers cuda 1", &workers[..1000], &stats, &base);
    let nocontent = Need {
        backend: None,
        min_memory_bytes: GIB,
        max_price_per_ktoken: None,
        replicas: 3,
        content: &[],
        ..base
    };
    case("no content any 3", &workers, &stats, &nocontent);
    case("cuda 16 GiB, 1 replica", &workers, &stats, &base);
    case(
        "cuda 16 GiB, 3 replicas",
        &workers,
        &stats,
        &Need {
            replicas: 3,
            ..base
        },
    );
    case(
        "any backend, no cap, 3 replicas",
        &workers,
        &stats,
        &Need {
            backend: None,
            min_memory_bytes: GIB,
            max_price_per_ktoken: None,
            replicas: 3,
            ..base
        },
    );
    case(
        "refused: 200 GiB (error path)",
        &workers,
        &stats,
        &Need {
            min_memory_bytes: 200 * GIB,
            ..base
        },
    );
}

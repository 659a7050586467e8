use std::collections::HashMap;

use olc_protocol::{CpuInfo, GpuInfo, Hardware};

use super::*;

const GIB: u64 = 1 << 30;

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

/// A CPU+CUDA worker with a 24 GiB GPU (23 free), 20 GiB RAM available, price 10,
/// 2 job slots, nothing cached.
fn worker(n: u8) -> RegisteredWorker {
    RegisteredWorker {
        public_key: key(n),
        advert: HardwareAdvert {
            seq: 1,
            timestamp_ms: 1_790_000_000_000,
            interval_ms: 10_000,
            hardware: Hardware {
                gpus: vec![GpuInfo {
                    name: "NVIDIA GeForce RTX 4090".into(),
                    uuid: format!("GPU-{n}"),
                    memory_total_bytes: 24 * GIB,
                    memory_free_bytes: 23 * GIB,
                    compute_capability: (8, 9),
                    driver_version: "570.86.10".into(),
                    cuda_version: Some(12080),
                    power_limit_milliwatts: None,
                    utilization_percent: None,
                }],
                cpu: CpuInfo {
                    model: "AMD EPYC".into(),
                    logical_cores: 16,
                    features: vec!["avx2".into()],
                },
                ram_total_bytes: 32 * GIB,
                ram_available_bytes: 20 * GIB,
                disk_free_bytes: 500 * GIB,
            },
            backends: vec![Backend::Cpu, Backend::Cuda],
            price_per_ktoken: Amount(10),
            listen_addrs: vec![],
            cached: vec![],
            max_concurrent_jobs: 2,
            active_jobs: 0,
            resident: Vec::new(),
            resident_adapters: 0,
            max_streams: 8,
            active_streams: 0,
        },
        last_seen_ms: 1_790_000_000_000,
        first_seen_ms: 1_790_000_000_000,
    }
}

fn with(n: u8, f: impl FnOnce(&mut HardwareAdvert)) -> RegisteredWorker {
    let mut w = worker(n);
    f(&mut w.advert);
    w
}

fn need() -> Need<'static> {
    Need {
        min_memory_bytes: GIB,
        backend: None,
        replicas: 1,
        content: &[],
        max_price_per_ktoken: None,
        fee: None,
        exclude: &[],
        slots: Slots::Jobs,
    }
}

fn pick_with(
    workers: &[RegisteredWorker],
    stats: &HashMap<PublicKey, WorkerStats>,
    need: &Need<'_>,
) -> Result<Vec<PublicKey>, NoFit> {
    pick(workers, |k| stats.get(k), need)
}

fn run(workers: &[RegisteredWorker], need: &Need<'_>) -> Result<Vec<PublicKey>, NoFit> {
    pick_with(workers, &HashMap::new(), need)
}

fn refusal(workers: &[RegisteredWorker], need: &Need<'_>) -> String {
    run(workers, need).unwrap_err().0
}

fn stats(reputation: f64, load: u32, has_cached: Vec<ContentId>) -> WorkerStats {
    WorkerStats {
        reputation,
        load,
        streams: 0,
        has_cached,
    }
}

// --- fit rules ---

#[test]
fn backend_must_be_offered() {
    let workers = [
        with(1, |a| a.backends = vec![Backend::Cpu]),
        with(2, |a| a.backends = vec![Backend::Cuda]),
    ];
    let cuda = Need {
        backend: Some(Backend::Cuda),
        ..need()
    };
    assert_eq!(run(&workers, &cuda).unwrap(), vec![key(2)]);
    let cpu = Need {
        backend: Some(Backend::Cpu),
        ..need()
    };
    assert_eq!(run(&workers, &cpu).unwrap(), vec![key(1)]);
}

#[test]
fn any_backend_fits_when_none_is_asked_but_a_worker_needs_one() {
    let workers = [with(1, |a| a.backends = vec![]), worker(2)];
    assert_eq!(run(&workers, &need()).unwrap(), vec![key(2)]);
    assert_eq!(
        refusal(&workers[..1], &need()),
        "no worker offers any backend"
    );
}

#[test]
fn cpu_memory_is_available_ram_and_gpu_memory_the_largest_free_gpu() {
    let big_ram = with(1, |a| a.hardware.ram_available_bytes = 64 * GIB);
    let two_gpus = with(2, |a| {
        let mut g = a.hardware.gpus[0].clone();
        g.memory_free_bytes = 40 * GIB;
        a.hardware.gpus.push(g);
    });
    let workers = [big_ram, two_gpus];
    let cpu = Need {
        backend: Some(Backend::Cpu),
        min_memory_bytes: 30 * GIB,
        ..need()
    };
    assert_eq!(run(&workers, &cpu).unwrap(), vec![key(1)]);
    let cuda = Need {
        backend: Some(Backend::Cuda),
        min_memory_bytes: 30 * GIB,
        ..need()
    };
    assert_eq!(run(&workers, &cuda).unwrap(), vec![key(2)]);
    // GPUs' memory does not add up: a job runs on one.
    let cuda_46 = Need {
        min_memory_bytes: 46 * GIB,
        ..cuda
    };
    assert!(run(&workers, &cuda_46).is_err());
    // With no backend asked, either kind of memory counts.
    let any = Need {
        min_memory_bytes: 50 * GIB,
        ..need()
    };
    assert_eq!(run(&workers, &any).unwrap(), vec![key(1)]);
}

#[test]
fn memory_equal_to_the_need_fits() {
    let workers = [worker(1)];
    let exact = Need {
        backend: Some(Backend::Cuda),
        min_memory_bytes: 23 * GIB,
        ..need()
    };
    assert_eq!(run(&workers, &exact).unwrap(), vec![key(1)]);
}

#[test]
fn a_cuda_backend_without_gpus_has_no_memory() {
    let workers = [with(1, |a| {
        a.hardware.gpus.clear();
        a.backends = vec![Backend::Cuda];
    })];
    let cuda = Need {
        backend: Some(Backend::Cuda),
        ..need()
    };
    assert_eq!(
        refusal(&workers, &cuda),
        "no cuda worker has 1 GiB free: largest is 0 bytes"
    );
}

#[test]
fn price_must_be_at_most_the_cap() {
    let workers = [
        with(1, |a| a.price_per_ktoken = Amount(6)),
        with(2, |a| a.price_per_ktoken = Amount(5)),
    ];
    let capped = Need {
        max_price_per_ktoken: Some(Amount(5)),
        ..need()
    };
    assert_eq!(run(&workers, &capped).unwrap(), vec![key(2)]);
    let two = Need {
        replicas: 2,
        ..capped
    };
    assert!(run(&workers, &two).is_err());
    let uncapped = Need {
        replicas: 2,
        ..need()
    };
    assert_eq!(run(&workers, &uncapped).unwrap().len(), 2);
}

/// A worker is never picked when its price for the job's declared size is above what
/// the job pays each replica: it would work for less than it asked.
#[test]
fn the_price_of_the_declared_size_must_fit_the_fee_per_replica() {
    let workers = [
        with(1, |a| a.price_per_ktoken = Amount(11)),
        with(2, |a| a.price_per_ktoken = Amount(10)),
        with(3, |a| a.price_per_ktoken = Amount(0)),
    ];
    // 491520 tokens at 10 per 1000 cost 4915.2, rounded up to 4916.
    let fee = |fee_per_replica| FeeLimit {
        declared_tokens: 491_520,
        fee_per_replica: Amount(fee_per_replica),
    };
    let n = Need {
        replicas: 2,
        fee: Some(fee(4916)),
        ..need()
    };
    let picked = run(&workers, &n).unwrap();
    assert!(
        picked.contains(&key(2)) && picked.contains(&key(3)),
        "{picked:?}"
    );
    let n = Need {
        replicas: 2,
        fee: Some(fee(4915)),
        ..need()
    };
    assert_eq!(
        refusal(&workers, &n),
        "only 1 worker fits; the job asks for 2 replicas"
    );
    let n = Need {
        fee: Some(fee(100)),
        ..need()
    };
    assert_eq!(
        run(&workers, &n).unwrap(),
        vec![key(3)],
        "a free worker fits any fee"
    );
    let dear = &workers[..2];
    assert_eq!(
        refusal(dear, &n),
        "no worker's price fits the max fee: the cheapest needs 4916 credits (10 per 1000 \
         tokens for the 491520 tokens declared), the job pays at most 100 per replica"
    );
    // Sizes past u64 price as unaffordable rather than wrapping to cheap.
    let n = Need {
        fee: Some(FeeLimit {
            declared_tokens: u64::MAX,
            fee_per_replica: Amount(u64::MAX - 1),
        }),
        ..need()
    };
    let dearer = with(4, |a| a.price_per_ktoken = Amount(2000));
    assert!(could_run(&workers[1], &n) && could_run(&workers[2], &n));
    assert!(!could_run(&dearer, &n), "u64::MAX tokens at 2 per token");
}

#[test]
fn refuses_a_fee_only_workers_that_do_not_fit_could_take() {
    let workers = [
        with(1, |a| {
            a.price_per_ktoken = Amount(1);
            a.backends = vec![Backend::Cpu];
        }),
        with(2, |a| a.price_per_ktoken = Amount(50)),
    ];
    let n = Need {
        backend: Some(Backend::Cuda),
        fee: Some(FeeLimit {
            declared_tokens: 1000,
            fee_per_replica: Amount(20),
        }),
        ..need()
    };
    assert_eq!(
        refusal(&workers, &n),
        "no worker that fits has a price that fits the max fee: the cheapest needs 50 \
         credits (50 per 1000 tokens for the 1000 tokens declared), the job pays at most \
         20 per replica"
    );
}

#[test]
fn busy_counts_the_larger_of_advert_and_coordinator_load() {
    let workers = [
        with(1, |a| a.active_jobs = 2),
        worker(2),
        with(3, |a| a.active_jobs = 1),
        with(4, |a| a.max_concurrent_jobs = 0),
    ];
    let mut known = HashMap::new();
    // Worker 1's advert shows more jobs than the coordinator knows of: the advert wins.
    known.insert(key(1), stats(0.5, 0, vec![]));
    // The coordinator knows of 2 jobs on worker 2 that its advert does not show yet.
    known.insert(key(2), stats(0.5, 2, vec![]));
    known.insert(key(3), stats(0.5, 0, vec![]));
    let all = Need {
        replicas: 1,
        ..need()
    };
    assert_eq!(pick_with(&workers, &known, &all).unwrap(), vec![key(3)]);
    let two = Need {
        replicas: 2,
        ..need()
    };
    assert_eq!(
        pick_with(&workers, &known, &two).unwrap_err().0,
        "only 1 worker fits; the job asks for 2 replicas"
    );
}

#[test]
fn excluded_workers_are_never_picked() {
    let workers = [worker(1), worker(2), worker(3)];
    let exclude = [key(1), key(3)];
    let n = Need {
        exclude: &exclude,
        ..need()
    };
    assert_eq!(run(&workers, &n).unwrap(), vec![key(2)]);
}

#[test]
fn a_long_exclude_list_is_searched_correctly() {
    let workers: Vec<_> = (0..100).map(worker).collect();
    let exclude: Vec<_> = (0..100).filter(|n| n % 7 != 3).map(key).collect();
    assert!(exclude.len() > LINEAR_EXCLUDE_MAX);
    let n = Need {
        exclude: &exclude,
        replicas: 20,
        ..need()
    };
    let err = run(&workers, &n).unwrap_err().0;
    assert_eq!(err, "only 14 workers fit; the job asks for 20 replicas");
    let n = Need { replicas: 14, ..n };
    let picked = run(&workers, &n).unwrap();
    let expected: Vec<_> = (0..100).filter(|n| n % 7 == 3).map(key).collect();
    assert_eq!(picked, expected);
}

#[test]
fn zero_replicas_pick_nobody() {
    assert_eq!(
        run(
            &[],
            &Need {
                replicas: 0,
                ..need()
            }
        )
        .unwrap(),
        Vec::<PublicKey>::new()
    );
}

#[test]
fn the_fast_and_the_ordered_rules_agree() {
    let backends = [
        vec![],
        vec![Backend::Cpu],
        vec![Backend::Cuda],
        vec![Backend::Cpu, Backend::Cuda],
    ];
    let mut workers = Vec::new();
    let mut known = HashMap::new();
    let mut n = 0u8;
    for b in &backends {
        for gpu in [None, Some(4 * GIB), Some(30 * GIB)] {
            for ram in [4 * GIB, 30 * GIB] {
                for price in [5, 50] {
                    for (active, load, max) in [(0, 0, 2), (2, 0, 2), (0, 2, 2), (1, 0, 0)] {
                        n = n.wrapping_add(1);
                        workers.push(with(n, |a| {
                            a.backends = b.clone();
                            match gpu {
                                Some(free) => a.hardware.gpus[0].memory_free_bytes = free,
                                None => a.hardware.gpus.clear(),
                            }
                            a.hardware.ram_available_bytes = ram;
                            a.price_per_ktoken = Amount(price);
                            a.active_jobs = active;
                            a.max_concurrent_jobs = max;
                        }));
                        known.insert(key(n), stats(0.5, load, vec![]));
                    }
                }
            }
        }
    }
    let exclude: Vec<_> = (0..=255).step_by(5).map(key).collect();
    let excluded = Excluded::new(&exclude);
    let lookup = |k: &PublicKey| known.get(k);
    for backend in [None, Some(Backend::Cpu), Some(Backend::Cuda)] {
        for min_memory_bytes in [GIB, 10 * GIB, 100 * GIB] {
            let fees = [
                None,
                Some(FeeLimit {
                    declared_tokens: 1000,
                    fee_per_replica: Amount(10),
                }),
            ];
            for (cap, fee) in [None, Some(Amount(10))]
                .into_iter()
                .flat_map(|c| fees.map(|f| (c, f)))
            {
                let n = Need {
                    backend,
                    min_memory_bytes,
                    max_price_per_ktoken: cap,
                    fee,
                    ..need()
                };
                for w in &workers {
                    assert_eq!(
                        score_if_fits(w, &n, &excluded, &lookup).is_some(),
                        first_failure(w, &n, &excluded, &lookup).is_none(),
                        "{w:?} {n:?}"
                    );
                }
            }
        }
    }
}

// --- refusals ---

#[test]
fn refuses_with_no_worker_registered() {
    assert_eq!(refusal(&[], &need()), "no worker is registered");
}

#[test]
fn refuses_when_every_worker_is_excluded() {
    let workers = [worker(1), worker(2)];
    let exclude = [key(1), key(2)];
    let n = Need {
        exclude: &exclude,
        ..need()
    };
    assert_eq!(
        refusal(&workers, &n),
        "every worker is excluded for this job (2 of 2 already ran a replica, declined, \
         timed out or are jailed)"
    );
}

#[test]
fn refuses_a_backend_nobody_offers() {
    let workers = [
        with(1, |a| a.backends = vec![Backend::Cpu]),
        with(2, |a| a.backends = vec![Backend::Cpu]),
    ];
    let cuda = Need {
        backend: Some(Backend::Cuda),
        ..need()
    };
    assert_eq!(
        refusal(&workers, &cuda),
        "no worker offers the cuda backend (2 workers offer cpu)"
    );
    let odd = [
        with(1, |a| a.backends = vec![Backend::Cpu]),
        with(2, |a| a.backends = vec![]),
    ];
    assert_eq!(
        refusal(&odd, &cuda),
        "no worker offers the cuda backend (1 worker offers cpu, 1 worker offers none)"
    );
}

#[test]
fn refuses_too_much_memory_quoting_the_largest() {
    let workers = [
        with(1, |a| a.hardware.gpus[0].memory_free_bytes = 16 * GIB),
        with(2, |a| a.hardware.gpus[0].memory_free_bytes = 8 * GIB),
    ];
    let cuda = Need {
        backend: Some(Backend::Cuda),
        min_memory_bytes: 24 * GIB,
        ..need()
    };
    assert_eq!(
        refusal(&workers, &cuda),
        "no cuda worker has 24 GiB free: largest is 16 GiB"
    );
    let any = Need {
        min_memory_bytes: 24 * GIB,
        ..need()
    };
    // Without a backend, the 20 GiB of RAM is the best on offer.
    assert_eq!(
        refusal(&workers, &any),
        "no worker has 24 GiB free: largest is 20 GiB"
    );
}

#[test]
fn memory_figures_that_would_read_the_same_are_given_in_bytes() {
    let workers = [with(1, |a| {
        a.backends = vec![Backend::Cpu];
        a.hardware.ram_available_bytes = 24 * GIB - 1;
    })];
    let n = Need {
        min_memory_bytes: 24 * GIB,
        ..need()
    };
    assert_eq!(
        refusal(&workers, &n),
        "no worker has 24 GiB free: largest is 23.9 GiB"
    );
    let n = Need {
        min_memory_bytes: 24 * GIB - 2,
        ..need()
    };
    let workers = [with(1, |a| {
        a.backends = vec![Backend::Cpu];
        a.hardware.ram_available_bytes = 24 * GIB - 3;
    })];
    assert_eq!(
        refusal(&workers, &n),
        "no worker has 25769803774 bytes free: largest is 25769803773 bytes"
    );
}

#[test]
fn refuses_a_price_cap_below_every_ask() {
    let workers = [
        with(1, |a| a.price_per_ktoken = Amount(12)),
        with(2, |a| a.price_per_ktoken = Amount(20)),
    ];
    let n = Need {
        max_price_per_ktoken: Some(Amount(5)),
        ..need()
    };
    assert_eq!(
        refusal(&workers, &n),
        "no worker is cheap enough: cheapest asks 12 per 1000 tokens, the job pays at most 5"
    );
}

#[test]
fn the_cheapest_quoted_is_among_workers_that_fit_otherwise() {
    let workers = [
        with(1, |a| {
            a.price_per_ktoken = Amount(3);
            a.hardware.gpus[0].memory_free_bytes = 4 * GIB;
        }),
        with(2, |a| a.price_per_ktoken = Amount(12)),
    ];
    let n = Need {
        backend: Some(Backend::Cuda),
        min_memory_bytes: 8 * GIB,
        max_price_per_ktoken: Some(Amount(5)),
        ..need()
    };
    assert_eq!(
        refusal(&workers, &n),
        "no worker that fits is cheap enough: cheapest asks 12 per 1000 tokens, the job \
         pays at most 5"
    );
}

#[test]
fn refuses_when_every_worker_is_busy() {
    let workers = [
        with(1, |a| a.active_jobs = 2),
        with(2, |a| a.active_jobs = 2),
        worker(3),
    ];
    let mut known = HashMap::new();
    known.insert(key(3), stats(0.9, 2, vec![]));
    assert_eq!(
        pick_with(&workers, &known, &need()).unwrap_err().0,
        "every worker is busy (3 of 3 at their job limit)"
    );
    let with_small = [
        workers[0].clone(),
        with(4, |a| a.backends = vec![Backend::Cpu]),
    ];
    let cuda = Need {
        backend: Some(Backend::Cuda),
        ..need()
    };
    assert_eq!(
        run(&with_small, &cuda).unwrap_err().0,
        "every worker that fits is busy (1 at their job limit)"
    );
}

#[test]
fn refuses_too_few_workers_for_the_replicas() {
    let workers = [worker(1), worker(2)];
    let n = Need {
        replicas: 3,
        ..need()
    };
    assert_eq!(
        refusal(&workers, &n),
        "only 2 workers fit; the job asks for 3 replicas"
    );
}

#[test]
fn reports_the_first_rule_that_leaves_nobody() {
    // Worker 1 is CPU-only, worker 2 has too little memory, worker 3 is too dear:
    // every rule drops someone, and the price rule is the one that leaves nobody.
    let workers = [
        with(1, |a| a.backends = vec![Backend::Cpu]),
        with(2, |a| a.hardware.gpus[0].memory_free_bytes = 2 * GIB),
        with(3, |a| a.price_per_ktoken = Amount(50)),
    ];
    let n = Need {
        backend: Some(Backend::Cuda),
        min_memory_bytes: 4 * GIB,
        max_price_per_ktoken: Some(Amount(20)),
        ..need()
    };
    assert_eq!(
        refusal(&workers, &n),
        "no worker that fits is cheap enough: cheapest asks 50 per 1000 tokens, the job \
         pays at most 20"
    );
}

// --- scoring ---

#[test]
fn cheaper_wins() {
    let workers = [
        with(1, |a| a.price_per_ktoken = Amount(20)),
        with(2, |a| a.price_per_ktoken = Amount(10)),
    ];
    assert_eq!(run(&workers, &need()).unwrap(), vec![key(2)]);
}

#[test]
fn higher_reputation_wins() {
    let workers = [worker(1), worker(2)];
    let mut known = HashMap::new();
    known.insert(key(1), stats(0.4, 0, vec![]));
    known.insert(key(2), stats(0.8, 0, vec![]));
    assert_eq!(pick_with(&workers, &known, &need()).unwrap(), vec![key(2)]);
    // An unknown worker (0.5) beats a known poor one.
    known.remove(&key(2));
    assert_eq!(pick_with(&workers, &known, &need()).unwrap(), vec![key(2)]);
}

#[test]
fn cached_content_wins_from_the_advert_or_the_coordinator() {
    let model = ContentId::of(b"model");
    let content = [model];
    let n = Need {
        content: &content,
        ..need()
    };
    let workers = [worker(1), with(2, |a| a.cached = vec![model])];
    assert_eq!(run(&workers, &n).unwrap(), vec![key(2)]);

    let workers = [worker(1), worker(2)];
    let mut known = HashMap::new();
    known.insert(key(2), stats(0.5, 0, vec![model]));
    assert_eq!(pick_with(&workers, &known, &n).unwrap(), vec![key(2)]);
}

#[test]
fn lower_load_wins() {
    let workers = [with(1, |a| a.active_jobs = 1), worker(2)];
    assert_eq!(run(&workers, &need()).unwrap(), vec![key(2)]);
    let workers = [worker(1), worker(2)];
    let mut known = HashMap::new();
    known.insert(key(1), stats(0.5, 1, vec![]));
    assert_eq!(pick_with(&workers, &known, &need()).unwrap(), vec![key(2)]);
}

#[test]
fn a_cached_model_outweighs_a_slightly_higher_price() {
    let model = ContentId::of(b"model");
    let content = [model];
    let n = Need {
        content: &content,
        ..need()
    };
    let workers = [
        worker(1),
        with(2, |a| {
            a.cached = vec![model];
            a.price_per_ktoken = Amount(15);
        }),
    ];
    assert_eq!(run(&workers, &n).unwrap(), vec![key(2)]);
}

#[test]
fn ties_go_to_the_smaller_key_whatever_the_order() {
    let forward: Vec<_> = (1..=5).map(worker).collect();
    let backward: Vec<_> = (1..=5).rev().map(worker).collect();
    let n = Need {
        replicas: 3,
        ..need()
    };
    let expected = vec![key(1), key(2), key(3)];
    assert_eq!(run(&forward, &n).unwrap(), expected);
    assert_eq!(run(&backward, &n).unwrap(), expected);
}

#[test]
fn returns_best_first_and_distinct() {
    let workers: Vec<_> = (1..=6)
        .map(|i| with(i, |a| a.price_per_ktoken = Amount(u64::from(7 - i))))
        .collect();
    let n = Need {
        replicas: 4,
        ..need()
    };
    assert_eq!(
        run(&workers, &n).unwrap(),
        vec![key(6), key(5), key(4), key(3)]
    );
}

#[test]
fn a_key_listed_twice_is_picked_once() {
    let workers = [
        worker(1),
        with(1, |a| a.price_per_ktoken = Amount(1)),
        worker(2),
    ];
    let n = Need {
        replicas: 2,
        ..need()
    };
    assert_eq!(run(&workers, &n).unwrap(), vec![key(1), key(2)]);
    let n = Need { replicas: 3, ..n };
    assert_eq!(
        refusal(&workers, &n),
        "only 2 workers fit; the job asks for 3 replicas"
    );
    let only_dups = [worker(1), worker(1)];
    let n = Need { replicas: 2, ..n };
    assert_eq!(
        refusal(&only_dups, &n),
        "only 1 worker fits; the job asks for 2 replicas"
    );
}

#[test]
fn works_over_a_map_of_workers() {
    let map: std::collections::BTreeMap<PublicKey, RegisteredWorker> =
        (1..=3).map(|i| (key(i), worker(i))).collect();
    let n = Need {
        replicas: 2,
        ..need()
    };
    assert_eq!(
        pick(map.values(), |_| None, &n).unwrap(),
        vec![key(1), key(2)]
    );
}

#[test]
fn formats_sizes() {
    assert_eq!(Bytes(0).to_string(), "0 bytes");
    assert_eq!(Bytes(1).to_string(), "1 byte");
    assert_eq!(Bytes(1023).to_string(), "1023 bytes");
    assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
    assert_eq!(Bytes(512 << 20).to_string(), "512 MiB");
    assert_eq!(Bytes(24 * GIB).to_string(), "24 GiB");
    assert_eq!(Bytes(GIB + GIB / 2).to_string(), "1.5 GiB");
    assert_eq!(Bytes(24 * GIB - 1).to_string(), "23.9 GiB");
    assert_eq!(Bytes(u64::MAX).to_string(), "17179869183.9 GiB");
}

// --- inference slots and resident models ---

fn inference<'a>(content: &'a [ContentId]) -> Need<'a> {
    Need {
        content,
        slots: Slots::Streams,
        ..need()
    }
}

#[test]
fn inference_takes_a_stream_slot_and_fine_tunes_a_job_slot() {
    // 1's fine-tune slots are full, 2's streams are.
    let workers = [
        with(1, |a| a.active_jobs = a.max_concurrent_jobs),
        with(2, |a| a.active_streams = a.max_streams),
    ];
    assert_eq!(run(&workers, &inference(&[])).unwrap(), vec![key(1)]);
    assert_eq!(run(&workers, &need()).unwrap(), vec![key(2)]);
    // The coordinator's own count of streams it placed there counts too.
    let mut known = HashMap::new();
    known.insert(
        key(1),
        WorkerStats {
            streams: 8,
            ..stats(0.5, 0, vec![])
        },
    );
    assert_eq!(
        pick_with(&workers, &known, &inference(&[])).unwrap_err().0,
        "every worker is busy (2 of 2 at their job limit)"
    );
    let none = [with(1, |a| a.max_streams = 0)];
    assert!(
        run(&none, &inference(&[])).is_err(),
        "a worker offering no streams"
    );
}

#[test]
fn a_worker_holding_the_model_in_memory_is_preferred_for_inference() {
    let model = ContentId::of(b"model");
    let content = [model];
    // Both have it on disk; 2 has it loaded. Same price, reputation and load.
    let workers = [
        with(1, |a| a.cached = vec![model]),
        with(2, |a| {
            a.cached = vec![model];
            a.resident = vec![model];
        }),
    ];
    assert_eq!(run(&workers, &inference(&content)).unwrap(), vec![key(2)]);
    // A fine-tune loads its own copy: the resident model is no reason to prefer 2 then,
    // and the smaller key wins the tie.
    let finetune = Need {
        content: &content,
        ..need()
    };
    assert_eq!(run(&workers, &finetune).unwrap(), vec![key(1)]);
}

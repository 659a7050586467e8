//! Step 3 of a job's life: choose the workers that run a job. A pure function of the
//! registry's adverts, what the coordinator knows about each worker, and the job's needs,
//! so every rule is tested without a network, a clock or a ledger.
//!
//! A worker either fits or it does not (backend, memory, price, exclusion, free job
//! slot); fitting workers are then ranked by a score. When too few fit, the answer is a
//! sentence that tells the submitter what to change, because "no fit" alone leaves them
//! guessing which of five requirements to relax.

use std::cmp::Ordering;
use std::fmt;

use olc_protocol::{Amount, Backend, ContentId, HardwareAdvert, PublicKey, RegisteredWorker};

/// What a job asks of the workers that run it.
#[derive(Debug, Clone, Copy)]
pub struct Need<'a> {
    pub min_memory_bytes: u64,
    /// None: any backend will do, since all backends give bit-identical results.
    pub backend: Option<Backend>,
    pub replicas: usize,
    /// Content the job reads (model, adapter manifest ids): a worker that has them cached
    /// is preferred.
    pub content: &'a [ContentId],
    /// Most the job pays per 1000 tokens; None = no cap.
    pub max_price_per_ktoken: Option<Amount>,
    /// What one replica's fee must pay: a worker whose price for the job's declared size
    /// is above the fee per replica is never picked (it would be paid less than it
    /// asks). None = no limit.
    pub fee: Option<FeeLimit>,
    /// Workers that must not be picked (already running a replica, declined, timed out,
    /// jailed).
    pub exclude: &'a [PublicKey],
}

/// A job's declared size and what it pays each replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeLimit {
    /// Upper bound of the tokens one replica can be metered at
    /// ([`olc_protocol::JobSpec::declared_tokens`]).
    pub declared_tokens: u64,
    /// The job's max fee over its replica count.
    pub fee_per_replica: Amount,
}

impl FeeLimit {
    /// What a worker asking `price` per 1000 tokens would charge for the declared size.
    pub fn price_at(&self, price: Amount) -> Amount {
        Amount::price_of(self.declared_tokens, price)
    }
}

/// What the coordinator knows about a worker beyond its advert. Adverts are the worker's
/// own word and lag by up to an interval; these are the coordinator's observations.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStats {
    /// 0..=1; 0.5 for a worker with no history, so a newcomer ranks between proven good
    /// and proven bad workers.
    pub reputation: f64,
    /// Jobs the coordinator has running there (its advert may not show them yet).
    pub load: u32,
    /// Content the coordinator knows the worker fetched since its last advert.
    pub has_cached: Vec<ContentId>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        UNKNOWN.clone()
    }
}

/// Stats of a worker the coordinator has never seen run anything. A static so that a
/// lookup miss costs no allocation.
static UNKNOWN: WorkerStats = WorkerStats {
    reputation: 0.5,
    load: 0,
    has_cached: Vec::new(),
};

/// Why the job cannot be placed now, in words meant for the submitter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NoFit(pub String);

// The score of a fitting worker is
//
//     PRICE_WEIGHT      * (cheapest + 1) / (price + 1)
//   + REPUTATION_WEIGHT * reputation
//   + CACHE_WEIGHT      * (share of the job's content already cached there)
//   + LOAD_WEIGHT       * (share of its job slots still free)
//
// Every term lies in 0..=1, so the weights read directly as how much each concern counts.
// Price is relative to the cheapest fitting worker because credits have no natural
// scale: twice the cheapest price costs half the price term whatever the currency's size.
// Price weighs most because the submitter pays it; reputation next because a bad replica
// costs a referee run and delays settlement; a cached model saves a multi-gigabyte fetch
// (minutes, not money); load is mostly a tie-breaker that spreads jobs out. With these
// weights a worker with the model cached may ask up to twice the cheapest price and
// still be preferred, which is roughly what a fetch is worth on a large model.
// Remaining ties go to the smaller public key, so the same registry always gives the
// same choice.
const PRICE_WEIGHT: f64 = 0.4;
const REPUTATION_WEIGHT: f64 = 0.3;
const CACHE_WEIGHT: f64 = 0.2;
const LOAD_WEIGHT: f64 = 0.1;

/// Above this many excluded keys, the list is sorted once and binary-searched, so a long
/// jail list does not cost a linear scan per worker.
const LINEAR_EXCLUDE_MAX: usize = 16;

/// Picks `need.replicas` distinct workers for a job, best first.
///
/// `workers` is anything that walks the registry by reference (a slice, a map's values):
/// the matcher runs on every submission and must not need the registry copied. `stats`
/// looks up the coordinator's knowledge of a worker; None means an unknown worker.
pub fn pick<'w, 's, I, S>(workers: I, stats: S, need: &Need<'_>) -> Result<Vec<PublicKey>, NoFit>
where
    I: IntoIterator<Item = &'w RegisteredWorker>,
    I::IntoIter: Clone,
    S: Fn(&PublicKey) -> Option<&'s WorkerStats>,
{
    if need.replicas == 0 {
        return Ok(Vec::new());
    }
    let workers = workers.into_iter();
    let excluded = Excluded::new(need.exclude);
    let mut cheapest = u64::MAX;
    let mut candidates = Vec::with_capacity(workers.size_hint().0);
    for (index, worker) in workers.clone().enumerate() {
        if let Some(partial) = score_if_fits(worker, need, &excluded, &stats) {
            let price = worker.advert.price_per_ktoken.0;
            cheapest = cheapest.min(price);
            candidates.push(Candidate {
                worker,
                index,
                price,
                score: partial,
            });
        }
    }
    if candidates.len() < need.replicas {
        let fit = distinct_keys(&candidates);
        return Err(explain(workers, fit, need, &excluded, &stats));
    }
    for c in &mut candidates {
        c.score += PRICE_WEIGHT * (cheapest as f64 + 1.0) / (c.price as f64 + 1.0);
    }

    let k = need.replicas;
    if k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, Candidate::rank);
    }
    candidates[..k].sort_unstable_by(Candidate::rank);
    let mut picked: Vec<PublicKey> = candidates[..k]
        .iter()
        .map(|c| c.worker.public_key)
        .collect();
    if has_duplicates(&picked) {
        // Only reachable when the caller passes the same key twice (the registry never
        // does): rank everything and keep each key's best entry.
        candidates.sort_unstable_by(Candidate::rank);
        picked.clear();
        for c in &candidates {
            if !picked.contains(&c.worker.public_key) {
                picked.push(c.worker.public_key);
                if picked.len() == k {
                    break;
                }
            }
        }
        if picked.len() < k {
            return Err(only_fit(picked.len(), k));
        }
    }
    Ok(picked)
}

/// The fit rules, in the order they are checked. A worker is counted against the first
/// rule it fails, and a refusal reports the first rule that leaves no worker. The order
/// puts what the job cannot change (exclusion) first, then what the submitter must change
/// (hardware, then price), and only last what waiting cures (busy), so "wait" is said
/// only when waiting would actually help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Excluded,
    Backend,
    Memory,
    Price,
    Busy,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::Excluded,
        Stage::Backend,
        Stage::Memory,
        Stage::Price,
        Stage::Busy,
    ];
}

#[derive(Debug)]
struct Candidate<'w> {
    worker: &'w RegisteredWorker,
    /// Position in the caller's iteration: the last tie-breaker, for duplicate keys only.
    index: usize,
    price: u64,
    score: f64,
}

impl Candidate<'_> {
    /// Best first: higher score, then smaller key. A total order, so partial selection
    /// and sorting give the same answer on every run.
    fn rank(a: &Self, b: &Self) -> Ordering {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.worker.public_key.cmp(&b.worker.public_key))
            .then_with(|| a.index.cmp(&b.index))
    }
}

enum Excluded<'a> {
    Few(&'a [PublicKey]),
    Many(Vec<PublicKey>),
}

impl<'a> Excluded<'a> {
    fn new(keys: &'a [PublicKey]) -> Self {
        if keys.len() <= LINEAR_EXCLUDE_MAX {
            Self::Few(keys)
        } else {
            let mut sorted = keys.to_vec();
            sorted.sort_unstable();
            Self::Many(sorted)
        }
    }

    fn contains(&self, key: &PublicKey) -> bool {
        match self {
            Self::Few(keys) => keys.contains(key),
            Self::Many(sorted) => sorted.binary_search(key).is_ok(),
        }
    }
}

/// The fit rules for the hot path: the worker's score without its price term (which
/// needs the cheapest fitting price, known only after every worker is seen), or None if
/// any rule fails. Rules are tried cheapest first, not in `Stage` order: fields inline in
/// the advert before those behind a pointer, the stats lookup (a hash) last, because at
/// ten thousand workers the matcher's time is mostly cache misses. Which rule a worker
/// failed matters only for a refusal, and `first_failure` answers that.
fn score_if_fits<'s, S>(
    worker: &RegisteredWorker,
    need: &Need<'_>,
    excluded: &Excluded<'_>,
    stats: &S,
) -> Option<f64>
where
    S: Fn(&PublicKey) -> Option<&'s WorkerStats>,
{
    let advert = &worker.advert;
    if !price_fits(advert, need)
        || advert.active_jobs >= advert.max_concurrent_jobs
        || excluded.contains(&worker.public_key)
        || !memory_fits(memory_for(advert, need.backend)?, need)
    {
        return None;
    }
    let known = stats(&worker.public_key).unwrap_or(&UNKNOWN);
    let used = jobs_in_use(advert, known)?;

    let reputation = if known.reputation.is_nan() {
        0.0
    } else {
        known.reputation.clamp(0.0, 1.0)
    };
    let cached = if need.content.is_empty() {
        0.0
    } else {
        let hits = need
            .content
            .iter()
            .filter(|id| advert.cached.contains(id) || known.has_cached.contains(id))
            .count();
        hits as f64 / need.content.len() as f64
    };
    let free = f64::from(advert.max_concurrent_jobs - used) / f64::from(advert.max_concurrent_jobs);
    Some(REPUTATION_WEIGHT * reputation + CACHE_WEIGHT * cached + LOAD_WEIGHT * free)
}

/// The same rules as `score_if_fits`, in `Stage` order: the first one the worker fails,
/// or None if it fits. Used only to explain a refusal.
fn first_failure<'s, S>(
    worker: &RegisteredWorker,
    need: &Need<'_>,
    excluded: &Excluded<'_>,
    stats: &S,
) -> Option<Stage>
where
    S: Fn(&PublicKey) -> Option<&'s WorkerStats>,
{
    let advert = &worker.advert;
    if excluded.contains(&worker.public_key) {
        return Some(Stage::Excluded);
    }
    let Some(memory) = memory_for(advert, need.backend) else {
        return Some(Stage::Backend);
    };
    if !memory_fits(memory, need) {
        return Some(Stage::Memory);
    }
    if !price_fits(advert, need) {
        return Some(Stage::Price);
    }
    let known = stats(&worker.public_key).unwrap_or(&UNKNOWN);
    jobs_in_use(advert, known).is_none().then_some(Stage::Busy)
}

fn memory_fits(memory: u64, need: &Need<'_>) -> bool {
    memory >= need.min_memory_bytes
}

fn price_fits(advert: &HardwareAdvert, need: &Need<'_>) -> bool {
    need.max_price_per_ktoken
        .is_none_or(|cap| advert.price_per_ktoken <= cap)
        && need
            .fee
            .is_none_or(|f| f.price_at(advert.price_per_ktoken) <= f.fee_per_replica)
}

/// Whether `worker` could run the job at all, busy or excluded or not: it offers the
/// backend, has the memory, and its price fits. How many such workers are left untried
/// tells the job book whether asking further is any use.
pub fn could_run(worker: &RegisteredWorker, need: &Need<'_>) -> bool {
    memory_for(&worker.advert, need.backend).is_some_and(|m| memory_fits(m, need))
        && price_fits(&worker.advert, need)
}

/// Job slots in use, or None if none is free. The advert and the coordinator each see
/// jobs the other does not yet (an advert lags by up to an interval; the worker may run
/// jobs from elsewhere), so the larger count is the safe one.
fn jobs_in_use(advert: &HardwareAdvert, known: &WorkerStats) -> Option<u32> {
    let used = advert.active_jobs.max(known.load);
    (used < advert.max_concurrent_jobs).then_some(used)
}

/// Memory the job can use on this worker: for a CPU backend its available RAM, for a GPU
/// backend its largest free GPU (a job runs on one GPU). With no backend asked, the best
/// the worker offers. None if the worker does not offer the backend.
fn memory_for(advert: &HardwareAdvert, backend: Option<Backend>) -> Option<u64> {
    match backend {
        Some(b) => advert
            .backends
            .contains(&b)
            .then(|| backend_memory(advert, b)),
        None => advert
            .backends
            .iter()
            .map(|&b| backend_memory(advert, b))
            .max(),
    }
}

fn backend_memory(advert: &HardwareAdvert, backend: Backend) -> u64 {
    match backend {
        Backend::Cpu => advert.hardware.ram_available_bytes,
        Backend::Cuda => advert
            .hardware
            .gpus
            .iter()
            .map(|g| g.memory_free_bytes)
            .max()
            .unwrap_or(0),
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Cpu => "cpu",
        Backend::Cuda => "cuda",
    }
}

fn has_duplicates(keys: &[PublicKey]) -> bool {
    keys.iter()
        .enumerate()
        .any(|(i, key)| keys[..i].contains(key))
}

fn distinct_keys(candidates: &[Candidate<'_>]) -> usize {
    let mut keys: Vec<&PublicKey> = candidates.iter().map(|c| &c.worker.public_key).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.len()
}

/// Builds the refusal. Runs only when the job does not fit, so it may walk the workers a
/// second time to gather the figures the message quotes, keeping the hot path lean.
fn explain<'w, 's, I, S>(
    workers: I,
    fit: usize,
    need: &Need<'_>,
    excluded: &Excluded<'_>,
    stats: &S,
) -> NoFit
where
    I: Iterator<Item = &'w RegisteredWorker> + Clone,
    S: Fn(&PublicKey) -> Option<&'s WorkerStats>,
{
    let mut total = 0usize;
    let mut failed = [0usize; Stage::ALL.len()];
    for w in workers.clone() {
        total += 1;
        if let Some(stage) = first_failure(w, need, excluded, stats) {
            failed[stage as usize] += 1;
        }
    }
    if total == 0 {
        return NoFit("no worker is registered".into());
    }
    let mut remaining = total;
    let Some(stage) = Stage::ALL.into_iter().find(|&s| {
        remaining -= failed[s as usize];
        remaining == 0
    }) else {
        return only_fit(fit, need.replicas);
    };
    // The workers that got as far as `stage`: they passed every earlier rule.
    let reached = workers.filter(|w| {
        first_failure(w, need, excluded, stats).is_none_or(|failed_at| failed_at >= stage)
    });
    // Earlier rules dropped someone other than excluded workers: the message then speaks
    // of the workers that fit so far, not of every worker, to stay true.
    let narrowed = failed[..stage as usize].iter().skip(1).any(|&n| n > 0);
    let text = match stage {
        Stage::Excluded => format!(
            "every worker is excluded for this job ({total} of {total} already ran a \
             replica, declined, timed out or are jailed)"
        ),
        Stage::Backend => {
            let mut offered: Vec<(Backend, usize)> = Vec::new();
            let mut without = 0usize;
            for w in reached {
                if w.advert.backends.is_empty() {
                    without += 1;
                }
                for &b in &w.advert.backends {
                    match offered.iter_mut().find(|(o, _)| *o == b) {
                        Some((_, n)) => *n += 1,
                        None => offered.push((b, 1)),
                    }
                }
            }
            offered.sort_unstable();
            let mut parts: Vec<String> = offered
                .iter()
                .map(|&(b, n)| format!("{} {}", count(n), offer(n, backend_name(b))))
                .collect();
            if without > 0 {
                parts.push(format!("{} {}", count(without), offer(without, "none")));
            }
            match need.backend {
                Some(b) => format!(
                    "no worker offers the {} backend ({})",
                    backend_name(b),
                    parts.join(", ")
                ),
                None => "no worker offers any backend".to_string(),
            }
        }
        Stage::Memory => {
            let largest = reached
                .filter_map(|w| memory_for(&w.advert, need.backend))
                .max()
                .unwrap_or(0);
            let (wanted, largest) = two_sizes(need.min_memory_bytes, largest);
            let who = match need.backend {
                Some(b) => format!("no {} worker", backend_name(b)),
                None => "no worker".to_string(),
            };
            format!("{who} has {wanted} free: largest is {largest}")
        }
        Stage::Price => {
            let cheapest = reached
                .map(|w| w.advert.price_per_ktoken)
                .min()
                .unwrap_or(Amount::ZERO);
            let over_cap = need.max_price_per_ktoken.filter(|&cap| cheapest > cap);
            match (over_cap, need.fee) {
                (None, Some(fee)) => {
                    let who = if narrowed {
                        "no worker that fits has a price that fits"
                    } else {
                        "no worker's price fits"
                    };
                    format!(
                        "{who} the max fee: the cheapest needs {} credits ({cheapest} per \
                         1000 tokens for the {} tokens declared), the job pays at most {} \
                         per replica",
                        fee.price_at(cheapest),
                        fee.declared_tokens,
                        fee.fee_per_replica
                    )
                }
                (cap, _) => {
                    let who = if narrowed {
                        "no worker that fits"
                    } else {
                        "no worker"
                    };
                    format!(
                        "{who} is cheap enough: cheapest asks {cheapest} per 1000 tokens, the \
                         job pays at most {}",
                        cap.unwrap_or(Amount::ZERO)
                    )
                }
            }
        }
        Stage::Busy => {
            let busy = reached.count();
            if narrowed {
                format!("every worker that fits is busy ({busy} at their job limit)")
            } else {
                format!("every worker is busy ({busy} of {busy} at their job limit)")
            }
        }
    };
    NoFit(text)
}

fn only_fit(fit: usize, replicas: usize) -> NoFit {
    let verb = if fit == 1 { "fits" } else { "fit" };
    NoFit(format!(
        "only {} {verb}; the job asks for {replicas} replicas",
        count(fit)
    ))
}

/// "1 worker", "2 workers".
fn count(n: usize) -> String {
    if n == 1 {
        "1 worker".into()
    } else {
        format!("{n} workers")
    }
}

/// "offers cpu" after one worker, "offer cpu" after several.
fn offer(n: usize, what: &str) -> String {
    if n == 1 {
        format!("offers {what}")
    } else {
        format!("offer {what}")
    }
}

/// Formats a wanted and an available size side by side. Rounded figures that read the
/// same ("no worker has 23.9 GiB free: largest is 23.9 GiB") would contradict each other,
/// so those fall back to exact bytes.
fn two_sizes(wanted: u64, available: u64) -> (String, String) {
    let (w, a) = (Bytes(wanted).to_string(), Bytes(available).to_string());
    if w == a && wanted != available {
        (format!("{wanted} bytes"), format!("{available} bytes"))
    } else {
        (w, a)
    }
}

/// A size in the largest binary unit it reaches, with one decimal where it is not whole.
/// Truncated rather than rounded, so a size is never shown as more than it is: a worker
/// with 23.99 GiB free must not read "24 GiB" next to a job that needs 24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if self.0 >= size {
                let tenths = u128::from(self.0) * 10 / u128::from(size);
                let (whole, tenth) = (tenths / 10, tenths % 10);
                return if tenth == 0 {
                    write!(f, "{whole} {unit}")
                } else {
                    write!(f, "{whole}.{tenth} {unit}")
                };
            }
        }
        if self.0 == 1 {
            f.write_str("1 byte")
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
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
}

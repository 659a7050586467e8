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
    /// Which of a worker's slots the job takes.
    pub slots: Slots,
}

/// A worker's two kinds of capacity. Fine-tunes each take the machine's threads for
/// their whole run; inference jobs share forward passes on a resident model, so a worker
/// generates many at once without a fine-tune slot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Slots {
    /// A fine-tune: `max_concurrent_jobs` / `active_jobs`.
    #[default]
    Jobs,
    /// An inference job: `max_streams` / `active_streams`.
    Streams,
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
    /// Fine-tunes the coordinator has running there (its advert may not show them yet).
    pub load: u32,
    /// Inference jobs the coordinator has running there.
    pub streams: u32,
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
    streams: 0,
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
//   + RESIDENT_WEIGHT   * (an inference job's model is loaded in its memory)
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
// A resident model saves a load (seconds) and lets the job join a running batch; it is
// worth as much again as a cache hit on disk for the model, so a worker holding the model
// in memory wins over one that only has it on disk at equal price.
const RESIDENT_WEIGHT: f64 = 0.1;

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
    let (active, max) = advertised_slots(advert, need.slots);
    if !price_fits(advert, need)
        || active >= max
        || excluded.contains(&worker.public_key)
        || !memory_fits(memory_for(advert, need.backend)?, need)
    {
        return None;
    }
    let known = stats(&worker.public_key).unwrap_or(&UNKNOWN);
    let used = slots_in_use(advert, known, need.slots)?;

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
    let free = f64::from(max - used) / f64::from(max);
    let resident = match need.slots {
        Slots::Streams => need
            .content
            .first()
            .is_some_and(|model| advert.resident.contains(model)),
        Slots::Jobs => false,
    };
    Some(
        REPUTATION_WEIGHT * reputation
            + CACHE_WEIGHT * cached
            + LOAD_WEIGHT * free
            + RESIDENT_WEIGHT * f64::from(u8::from(resident)),
    )
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
    slots_in_use(advert, known, need.slots)
        .is_none()
        .then_some(Stage::Busy)
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

/// The advert's (in use, offered) count of the slots a job takes.
fn advertised_slots(advert: &HardwareAdvert, slots: Slots) -> (u32, u32) {
    match slots {
        Slots::Jobs => (advert.active_jobs, advert.max_concurrent_jobs),
        Slots::Streams => (advert.active_streams, advert.max_streams),
    }
}

/// Slots of the job's kind in use, or None if none is free. The advert and the
/// coordinator each see jobs the other does not yet (an advert lags by up to an interval;
/// the worker may run jobs from elsewhere), so the larger count is the safe one.
fn slots_in_use(advert: &HardwareAdvert, known: &WorkerStats, slots: Slots) -> Option<u32> {
    let (active, max) = advertised_slots(advert, slots);
    let known = match slots {
        Slots::Jobs => known.load,
        Slots::Streams => known.streams,
    };
    let used = active.max(known);
    (used < max).then_some(used)
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
mod tests;

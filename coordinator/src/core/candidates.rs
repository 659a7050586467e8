//! Who one matching pass may offer work to: the online workers with enough stake and not
//! jailed (eligible), less those that just said they were busy (free), with the load and
//! reputation the matcher ranks them by, and the words a job waits with when nobody fits.

use std::collections::HashMap;

use olc_protocol::{ContentId, JobKind, JobSpec, PublicKey, RegisteredWorker};

use crate::core::book::{JobBook, NoPick, PickRequest, Picked};
use crate::core::matcher::{self, Need, Slots, WorkerStats};

/// The workers of one matching pass. Built once per pass, so that later jobs in the pass
/// see the slots earlier ones took.
#[derive(Debug)]
pub struct Candidates {
    /// Workers the registry knows, eligible or not: only for the wording.
    online: usize,
    min_stake: u64,
    /// Workers that could take a job now or once free: busy ones count as untried, since
    /// they may take the job later.
    eligible: Vec<RegisteredWorker>,
    /// Indices into `eligible` of those not busy: the only ones offered anything.
    free: Vec<usize>,
    stats: HashMap<PublicKey, WorkerStats>,
}

impl Candidates {
    /// Sorts the registry's `online` workers for a pass at `now_ms`; `busy` says which
    /// just answered "busy" and are left alone until their back-off ends.
    pub fn gather(
        online: Vec<RegisteredWorker>,
        book: &JobBook,
        busy: impl Fn(&PublicKey) -> bool,
        now_ms: u64,
    ) -> Self {
        let count = online.len();
        let eligible: Vec<RegisteredWorker> = online
            .into_iter()
            .filter(|w| book.ineligible(&w.public_key, now_ms).is_none())
            .collect();
        let free: Vec<usize> = (0..eligible.len())
            .filter(|&i| !busy(&eligible[i].public_key))
            .collect();
        let stats = free
            .iter()
            .map(|&i| {
                let key = eligible[i].public_key;
                let load = book.load_of(&key);
                let s = WorkerStats {
                    load: load.jobs,
                    streams: load.streams,
                    reputation: book.economy().standing(&key).reputation,
                    ..WorkerStats::default()
                };
                (key, s)
            })
            .collect();
        Self {
            online: count,
            min_stake: book.policy().min_stake,
            eligible,
            free,
            stats,
        }
    }

    /// The matcher for [`JobBook::tick_sized`]: distinct free workers with their prices,
    /// or why none fit and how many could still be asked.
    pub fn pick(&mut self, request: &PickRequest<'_>) -> Picked {
        let spec = request.spec;
        let content = job_content(spec);
        let need = Need {
            min_memory_bytes: spec.requirements.min_memory_bytes,
            backend: spec.requirements.backend,
            replicas: request.replicas,
            content: &content,
            max_price_per_ktoken: None,
            fee: request.fee,
            exclude: request.exclude,
            slots: slots_of(spec),
        };
        let untried = || {
            self.eligible
                .iter()
                .filter(|w| {
                    !request.exclude.contains(&w.public_key) && matcher::could_run(w, &need)
                })
                .count()
        };
        if self.free.is_empty() {
            return Err(NoPick {
                reason: nobody_free(self.online, self.min_stake),
                untried: untried(),
            });
        }
        let free = self.free.iter().map(|&i| &self.eligible[i]);
        let stats = &self.stats;
        let picked = matcher::pick(free, |k| stats.get(k), &need).map_err(|e| NoPick {
            reason: e.0,
            untried: untried(),
        })?;
        let priced = picked
            .iter()
            .map(|k| (*k, self.price_of(k)))
            .collect::<Vec<_>>();
        // Later jobs in this pass see the slots these take.
        for k in &picked {
            if let Some(s) = self.stats.get_mut(k) {
                match need.slots {
                    Slots::Jobs => s.load += 1,
                    Slots::Streams => s.streams += 1,
                }
            }
        }
        Ok(priced)
    }

    /// A free worker's advertised price per 1000 tokens: what its compute fee is metered at.
    fn price_of(&self, key: &PublicKey) -> u64 {
        self.free
            .iter()
            .map(|&i| &self.eligible[i])
            .find(|w| w.public_key == *key)
            .map_or(0, |w| w.advert.price_per_ktoken.0)
    }
}

/// Why a job waits when no worker may be offered anything at all, before any hardware or
/// price is compared.
pub fn nobody_free(online: usize, min_stake: u64) -> String {
    if online == 0 {
        "no worker is online".into()
    } else {
        format!(
            "none of the {online} online workers can be matched now: each is below the \
             minimum stake of {min_stake}, jailed, or busy"
        )
    }
}

/// The slots a job takes on a worker.
pub fn slots_of(spec: &JobSpec) -> Slots {
    match spec.kind {
        JobKind::Inference(_) => Slots::Streams,
        JobKind::Finetune(_) => Slots::Jobs,
    }
}

/// The manifests a job reads, for the matcher's cache preference.
pub fn job_content(spec: &JobSpec) -> Vec<ContentId> {
    match &spec.kind {
        JobKind::Inference(j) => std::iter::once(j.model).chain(j.adapter).collect(),
        JobKind::Finetune(j) => std::iter::once(j.model)
            .chain(j.params.init_adapter)
            .collect(),
    }
}

#[cfg(test)]
mod tests;

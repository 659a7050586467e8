//! The iteration-level scheduler of one resident model: which sequences take part in the
//! next forward pass, and with how many tokens each. Pure logic (no engine, no clock, no
//! threads), so every rule below is unit-tested on its own; the batcher feeds it requests
//! and the results of each step.
//!
//! Rules, in the order they are applied at every step:
//! 1. Every sequence that is decoding gets its one token, oldest first, up to `max_batch`
//!    sequences: a running generation is never starved by new arrivals.
//! 2. The rest of the step's token budget goes to prefill, oldest request first, in chunks
//!    of at most `prefill_chunk` tokens, so a long prompt is spread over several steps and
//!    never stalls the decoders for a whole prompt's worth of compute.
//! 3. A step holds at most `max_adapters` distinct adapters (the base model counts as
//!    none). A sequence whose adapter would be one too many waits for a later step; it is
//!    never refused for it, and it keeps its place in line.
//!
//! None of this can change a token: each sequence's rows go through the engine
//! independently of the others in the pass, and chunked prefill gives the same bits as a
//! whole one (DESIGN.md, "Canonical arithmetic").

use std::collections::{BTreeSet, VecDeque};

/// A sequence's handle, chosen by the caller (unique among the sequences it submitted).
pub type SeqId = u64;

/// An adapter's identity as far as the step's limit is concerned (a content id's bytes).
pub type AdapterKey = [u8; 32];

/// Limits of one step. Checked by [`ScheduleLimits::check`] with the accepted ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleLimits {
    /// Sequences in one forward pass.
    pub max_batch: usize,
    /// Tokens in one forward pass, decode and prefill together.
    pub step_tokens: usize,
    /// Tokens of one prompt in one pass.
    pub prefill_chunk: usize,
    /// Distinct adapters in one pass.
    pub max_adapters: usize,
}

/// Sequences in one forward pass unless told otherwise: enough to read each weight once
/// for many tokens, few enough that each step stays short.
pub const DEFAULT_MAX_BATCH: usize = 32;

impl Default for ScheduleLimits {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
            step_tokens: 512,
            prefill_chunk: 256,
            max_adapters: 32,
        }
    }
}

/// The most sequences one pass may hold: each needs its own KV cache.
pub const MAX_BATCH: usize = 1024;
/// The most tokens one pass may hold: activations grow with it.
pub const MAX_STEP_TOKENS: usize = 65_536;

impl ScheduleLimits {
    pub fn check(&self) -> Result<(), String> {
        let range = |name: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be between {lo} and {hi}, got {v}"))
            }
        };
        range("max batch", self.max_batch, 1, MAX_BATCH)?;
        range("step tokens", self.step_tokens, 1, MAX_STEP_TOKENS)?;
        range("prefill chunk", self.prefill_chunk, 1, self.step_tokens)?;
        range("adapters per step", self.max_adapters, 1, MAX_BATCH)?;
        Ok(())
    }
}

/// One sequence to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub id: SeqId,
    pub prompt_len: usize,
    /// Tokens to generate at most (≥ 1).
    pub max_tokens: usize,
    pub adapter: Option<AdapterKey>,
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub id: SeqId,
    /// Prompt positions `start..start + len` when prefilling; for a decode, the one token
    /// last sampled (`len == 1`, `start` = its position).
    pub start: usize,
    pub len: usize,
    /// The pass ends this sequence's prompt (or is a decode): its last row's logits are
    /// wanted, to sample the next token from.
    pub wants_logits: bool,
}

/// What the next forward pass holds, in the order the rows go in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    pub slots: Vec<Slot>,
}

impl Step {
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn tokens(&self) -> usize {
        self.slots.iter().map(|s| s.len).sum()
    }
}

#[derive(Debug, Clone)]
struct Seq {
    admission: Admission,
    /// Prompt tokens already through the engine.
    prefilled: usize,
    /// Tokens sampled so far.
    generated: usize,
}

impl Seq {
    fn decoding(&self) -> bool {
        self.prefilled == self.admission.prompt_len
    }
}

/// The sequences of one resident model, in arrival order.
#[derive(Debug)]
pub struct Scheduler {
    limits: ScheduleLimits,
    seqs: VecDeque<Seq>,
}

/// How a sequence's step went, told back to the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A token was sampled and the sequence goes on.
    Continue,
    /// The sequence ended (end of sequence, its token limit, a stop string, cancelled):
    /// it leaves now and frees its place.
    Finished,
}

impl Scheduler {
    pub fn new(limits: ScheduleLimits) -> Result<Self, String> {
        limits.check()?;
        Ok(Self {
            limits,
            seqs: VecDeque::new(),
        })
    }

    pub fn limits(&self) -> ScheduleLimits {
        self.limits
    }

    /// Queues a sequence; it joins at the next step with room for it.
    pub fn admit(&mut self, admission: Admission) -> Result<(), String> {
        if admission.prompt_len == 0 {
            return Err("the prompt is empty".into());
        }
        if admission.max_tokens == 0 {
            return Err("max tokens must be at least 1".into());
        }
        if self.seqs.iter().any(|s| s.admission.id == admission.id) {
            return Err(format!("sequence {} is already scheduled", admission.id));
        }
        self.seqs.push_back(Seq {
            admission,
            prefilled: 0,
            generated: 0,
        });
        Ok(())
    }

    /// Removes a sequence wherever it is (a cancelled request); `false` if unknown.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        let before = self.seqs.len();
        self.seqs.retain(|s| s.admission.id != id);
        self.seqs.len() != before
    }

    /// Sequences not yet finished.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// The next pass. Empty only when nothing is scheduled.
    pub fn plan(&self) -> Step {
        let l = self.limits;
        let mut slots = Vec::new();
        let mut tokens = 0;
        let mut adapters: BTreeSet<AdapterKey> = BTreeSet::new();
        let fits_adapter = |a: &Option<AdapterKey>, adapters: &mut BTreeSet<AdapterKey>| match a {
            None => true,
            Some(k) if adapters.contains(k) => true,
            Some(k) if adapters.len() < l.max_adapters => {
                adapters.insert(*k);
                true
            }
            Some(_) => false,
        };
        // Rule 1: decoders first, oldest first.
        for s in self.seqs.iter().filter(|s| s.decoding()) {
            if slots.len() == l.max_batch || tokens == l.step_tokens {
                break;
            }
            if !fits_adapter(&s.admission.adapter, &mut adapters) {
                continue;
            }
            slots.push(Slot {
                id: s.admission.id,
                start: s.admission.prompt_len + s.generated - 1,
                len: 1,
                wants_logits: true,
            });
            tokens += 1;
        }
        // Rule 2: prefill with what is left, oldest first.
        for s in self.seqs.iter().filter(|s| !s.decoding()) {
            if slots.len() == l.max_batch || tokens == l.step_tokens {
                break;
            }
            if !fits_adapter(&s.admission.adapter, &mut adapters) {
                continue;
            }
            let left = s.admission.prompt_len - s.prefilled;
            let len = left.min(l.prefill_chunk).min(l.step_tokens - tokens);
            slots.push(Slot {
                id: s.admission.id,
                start: s.prefilled,
                len,
                wants_logits: len == left,
            });
            tokens += len;
        }
        Step { slots }
    }

    /// Records that `step` ran: prefill progress for every slot and, for each slot that
    /// wanted logits (a token was sampled from them), whether its sequence goes on
    /// (`outcome(id)`; a sequence at its token limit ends without asking). Returns the
    /// sequences that left. Slots of sequences cancelled since the plan are ignored.
    pub fn advance(
        &mut self,
        step: &Step,
        mut outcome: impl FnMut(SeqId) -> Outcome,
    ) -> Vec<SeqId> {
        let mut left = Vec::new();
        for slot in &step.slots {
            let Some(at) = self.seqs.iter().position(|s| s.admission.id == slot.id) else {
                continue;
            };
            let s = &mut self.seqs[at];
            if !s.decoding() {
                s.prefilled = (s.prefilled + slot.len).min(s.admission.prompt_len);
            }
            if slot.wants_logits {
                s.generated += 1;
                let at_limit = s.generated >= s.admission.max_tokens;
                if at_limit || outcome(slot.id) == Outcome::Finished {
                    self.seqs.remove(at);
                    left.push(slot.id);
                }
            }
        }
        left
    }
}

#[cfg(test)]
mod tests;

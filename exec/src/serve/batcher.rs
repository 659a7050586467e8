//! One resident model's generation loop: a thread that owns the model's running
//! sequences, asks the [`Scheduler`] what the next forward pass holds, runs it, samples
//! each sequence's next token and sends it to whoever asked, as soon as it exists.
//! Requests join between steps and leave when done, cancelled or out of room.
//!
//! A sequence gets exactly the tokens [`generate`](olc_gpu::engine::generate) gives it
//! alone: its rows go through the engine independently of the others in the pass, its
//! prompt in chunks gives the bits of a whole prefill, and its token at position `p` is
//! sampled from its own logits with its own seed at `p`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use olc_gpu::engine::{BatchItem, EngineError, KvCache, Sampling, StopReason};
use olc_gpu::model::Adapter;

use super::schedule::{AdapterKey, Admission, Outcome, ScheduleLimits, Scheduler, SeqId, Step};
use crate::pool::LoadedModel;

/// One generation to run.
#[derive(Debug)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    /// The adapter and its key (its content id): sequences with the same key share it.
    pub adapter: Option<(AdapterKey, Arc<Adapter>)>,
    pub sampling: Sampling,
    pub max_tokens: usize,
    /// Set by the requester to stop the generation at the next step (a client gone, a
    /// deadline passed); the sequence leaves and its place is freed.
    pub cancel: Arc<AtomicBool>,
    /// Where its tokens go, in order, then how it ended.
    pub events: Sender<Event>,
}

/// What a requester hears about its generation.
#[derive(Debug)]
pub enum Event {
    /// The next token, as soon as it was sampled.
    Token(u32),
    /// The last event of a generation that ran to its end.
    Done(StopReason),
    /// The last event of one that was cancelled.
    Cancelled,
    /// The last event of one that failed (the rest of the batch runs on).
    Failed(Failure),
}

/// Why a generation failed.
#[derive(Debug)]
pub enum Failure {
    /// The request cannot run on this model (an empty prompt, a token outside the
    /// vocabulary, bad sampling settings, a sequence longer than the model allows): the
    /// engine's own error, as `generate` would give it.
    Request(EngineError),
    /// The engine failed on a step; every sequence of that step fails with it.
    Engine(String),
}

/// Counters a test or an operator reads; never an input to what is computed.
#[derive(Debug, Default)]
pub struct BatcherStats {
    /// Forward passes run.
    pub steps: AtomicU64,
    /// Sequences that took part in them, summed over passes.
    pub rows: AtomicU64,
    /// The most sequences seen in one pass.
    pub widest: AtomicU64,
}

/// The handle to one model's generation loop. Dropping the last handle lets the loop
/// finish what it holds and end.
#[derive(Debug)]
pub struct Batcher {
    requests: SyncSender<GenerationRequest>,
    stats: Arc<BatcherStats>,
    thread: Option<JoinHandle<()>>,
}

/// Requests waiting to be taken in between two steps; a requester finding it full waits.
const INBOX: usize = 1024;

impl Batcher {
    /// Starts the loop for `model`.
    pub fn start(model: Arc<LoadedModel>, limits: ScheduleLimits) -> Result<Self, String> {
        let scheduler = Scheduler::new(limits)?;
        let (requests, inbox) = mpsc::sync_channel(INBOX);
        let stats = Arc::new(BatcherStats::default());
        let state = Loop {
            model,
            scheduler,
            seqs: HashMap::new(),
            next_id: 0,
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("olc-batcher".into())
            .spawn(move || state.run(inbox))
            .map_err(|e| format!("cannot start the batcher thread: {e}"))?;
        Ok(Self {
            requests,
            stats,
            thread: Some(thread),
        })
    }

    /// Queues a generation; its events arrive on `request.events`. Fails only if the loop
    /// has ended (it panicked), and then the request comes back.
    pub fn submit(&self, request: GenerationRequest) -> Result<(), GenerationRequest> {
        self.requests.send(request).map_err(|e| e.0)
    }

    pub fn stats(&self) -> &BatcherStats {
        &self.stats
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Closing the inbox ends the loop once it has finished what it holds.
        let (closed, _) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.requests, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Running {
    request: GenerationRequest,
    cache: KvCache,
    /// Tokens sampled so far.
    tokens: Vec<u32>,
}

struct Loop {
    model: Arc<LoadedModel>,
    scheduler: Scheduler,
    seqs: HashMap<SeqId, Running>,
    next_id: SeqId,
    stats: Arc<BatcherStats>,
}

/// How long an idle loop waits for work before checking again that it is still wanted.
const IDLE_WAIT: Duration = Duration::from_millis(500);

impl Loop {
    fn run(mut self, inbox: Receiver<GenerationRequest>) {
        let mut open = true;
        loop {
            // Take every request that arrived; block only when there is nothing to run.
            loop {
                let next = if self.scheduler.is_empty() && open {
                    match inbox.recv_timeout(IDLE_WAIT) {
                        Ok(r) => Some(r),
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            None
                        }
                    }
                } else {
                    match inbox.try_recv() {
                        Ok(r) => Some(r),
                        Err(mpsc::TryRecvError::Empty) => None,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            open = false;
                            None
                        }
                    }
                };
                match next {
                    Some(r) => self.admit(r),
                    None => break,
                }
            }
            if self.scheduler.is_empty() {
                if open {
                    continue;
                }
                return;
            }
            self.drop_cancelled();
            let step = self.scheduler.plan();
            if step.is_empty() {
                continue;
            }
            // A bug in the engine fails the sequences of that step, not the model: the
            // loop stays up for the requests after them.
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_step(&step)));
            if let Err(payload) = ran {
                let why = crate::panic_message(&*payload);
                for slot in &step.slots {
                    self.finish(
                        slot.id,
                        Event::Failed(Failure::Engine(format!("the engine panicked: {why}"))),
                    );
                }
            }
        }
    }

    fn admit(&mut self, request: GenerationRequest) {
        let engine = &self.model.engine;
        let vocab = engine.config().vocab_size;
        let refuse = |request: &GenerationRequest, e: EngineError| {
            let _ = request.events.send(Event::Failed(Failure::Request(e)));
        };
        if request.prompt.is_empty() {
            return refuse(&request, EngineError::EmptyPrompt);
        }
        if let Some(&token) = request.prompt.iter().find(|&&t| t as usize >= vocab) {
            return refuse(&request, EngineError::TokenOutOfRange { token, vocab });
        }
        if let Err(e) = request.sampling.check() {
            return refuse(&request, EngineError::BadSampling(e));
        }
        if request.max_tokens == 0 {
            // Nothing to sample: what `generate` gives for no tokens, without a pass.
            let _ = request.events.send(Event::Done(StopReason::MaxTokens));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let admission = Admission {
            id,
            prompt_len: request.prompt.len(),
            max_tokens: request.max_tokens,
            adapter: request.adapter.as_ref().map(|(k, _)| *k),
        };
        if let Err(e) = self.scheduler.admit(admission) {
            // Ids are the loop's own and prompts were checked: a bug, not the request's.
            let _ = request.events.send(Event::Failed(Failure::Engine(e)));
            return;
        }
        let cache = engine.new_cache_for(request.prompt.len().saturating_add(request.max_tokens));
        self.seqs.insert(
            id,
            Running {
                request,
                cache,
                tokens: Vec::new(),
            },
        );
    }

    fn drop_cancelled(&mut self) {
        let gone: Vec<SeqId> = self
            .seqs
            .iter()
            .filter(|(_, r)| r.request.cancel.load(Ordering::Relaxed))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.finish(id, Event::Cancelled);
        }
    }

    fn finish(&mut self, id: SeqId, last: Event) {
        self.scheduler.cancel(id);
        if let Some(r) = self.seqs.remove(&id) {
            let _ = r.request.events.send(last);
        }
    }

    fn run_step(&mut self, step: &Step) {
        let max_positions = self.model.engine.max_positions();
        // A sequence that would outgrow its room fails alone, as it would alone: the
        // engine refuses the pass that would take it past the model's positions.
        let mut runnable = Vec::with_capacity(step.slots.len());
        for slot in &step.slots {
            let needed = slot.start + slot.len;
            let room = self
                .seqs
                .get(&slot.id)
                .map_or(0, |r| r.cache.capacity().min(max_positions));
            if needed > room {
                let e = EngineError::TooLong { needed, max: room };
                self.finish(slot.id, Event::Failed(Failure::Request(e)));
            } else {
                runnable.push(*slot);
            }
        }
        if runnable.is_empty() {
            return;
        }
        let step = Step { slots: runnable };
        let logits = {
            let mut by_id: HashMap<SeqId, &mut Running> =
                self.seqs.iter_mut().map(|(id, r)| (*id, r)).collect();
            let mut items = Vec::with_capacity(step.slots.len());
            for slot in &step.slots {
                let Some(r) = by_id.remove(&slot.id) else {
                    continue;
                };
                let tokens: &[u32] = if slot.start < r.request.prompt.len() {
                    &r.request.prompt[slot.start..slot.start + slot.len]
                } else {
                    let last = r.tokens.len().saturating_sub(1);
                    &r.tokens[last..]
                };
                items.push(BatchItem {
                    tokens,
                    cache: &mut r.cache,
                    adapter: r.request.adapter.as_ref().map(|(_, a)| a.as_ref()),
                });
            }
            self.stats.steps.fetch_add(1, Ordering::Relaxed);
            self.stats
                .rows
                .fetch_add(items.len() as u64, Ordering::Relaxed);
            self.stats
                .widest
                .fetch_max(items.len() as u64, Ordering::Relaxed);
            self.model.engine.forward_batch(&mut items, false)
        };
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                let failure = e.to_string();
                for slot in &step.slots {
                    self.finish(slot.id, Event::Failed(Failure::Engine(failure.clone())));
                }
                return;
            }
        };
        let eos = &self.model.engine.config().eos_token_ids;
        let mut stops: HashMap<SeqId, StopReason> = HashMap::new();
        for (slot, logits) in step.slots.iter().zip(&logits) {
            if !slot.wants_logits {
                continue;
            }
            let Some(r) = self.seqs.get_mut(&slot.id) else {
                continue;
            };
            let position = (r.request.prompt.len() + r.tokens.len()) as u64;
            let next = r.request.sampling.choose(logits, position);
            r.tokens.push(next);
            if r.request.events.send(Event::Token(next)).is_err() {
                // Nobody is listening any more: stop at the next step.
                r.request.cancel.store(true, Ordering::Relaxed);
            }
            if eos.contains(&next) {
                stops.insert(slot.id, StopReason::Eos);
            } else if r.tokens.len() >= r.request.max_tokens {
                stops.insert(slot.id, StopReason::MaxTokens);
            }
        }
        let left = self.scheduler.advance(&step, |id| {
            if stops.contains_key(&id) {
                Outcome::Finished
            } else {
                Outcome::Continue
            }
        });
        for id in left {
            let stop = stops.get(&id).copied().unwrap_or(StopReason::MaxTokens);
            if let Some(r) = self.seqs.remove(&id) {
                let _ = r.request.events.send(Event::Done(stop));
            }
        }
    }
}

/// Waits for a generation's events: its tokens in order (each also passed to `on_token`)
/// and how it ended. Returns early, cancelling it, if `stop()` says so; ends it
/// successfully with the first `limit()` tokens once that many have come (a limit lowered
/// below what was already heard truncates).
pub fn collect(
    events: &Receiver<Event>,
    cancel: &AtomicBool,
    stop: &mut dyn FnMut() -> bool,
    on_token: &mut dyn FnMut(u32),
    limit: &dyn Fn() -> usize,
) -> Result<(Vec<u32>, StopReason), Option<Failure>> {
    let mut tokens = Vec::new();
    let started = Instant::now();
    loop {
        let most = limit();
        if tokens.len() >= most {
            cancel.store(true, Ordering::Relaxed);
            tokens.truncate(most);
            return Ok((tokens, StopReason::MaxTokens));
        }
        match events.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Token(t)) => {
                tokens.push(t);
                on_token(t);
            }
            Ok(Event::Done(mut stop)) => {
                let most = limit();
                if tokens.len() > most {
                    tokens.truncate(most);
                    stop = StopReason::MaxTokens;
                }
                return Ok((tokens, stop));
            }
            Ok(Event::Cancelled) => return Err(None),
            Ok(Event::Failed(f)) => return Err(Some(f)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Some(Failure::Engine(format!(
                    "the batcher ended after {:?} without finishing the generation",
                    started.elapsed()
                ))));
            }
        }
        if stop() {
            cancel.store(true, Ordering::Relaxed);
        }
    }
}

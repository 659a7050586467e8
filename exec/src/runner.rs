//! The seam between a daemon and the execution of a job. The worker and the referee hand
//! a job to a [`Runner`] and get its result back; today's runner executes it in this
//! process ([`InProcess`]), a confined child process per job is another implementation of
//! the same trait, so neither daemon changes when jobs move out of its address space.

use std::fmt;
use std::sync::atomic::AtomicBool;

use olc_protocol::{ContentId, JobSpec};

use crate::pool::EnginePool;
use crate::{ExecError, ExecOptions, ExecResult, JobInputs, run_job};

/// What a running job tells its daemon as it goes, and the one thing the daemon may
/// change while it runs: how many tokens an inference may still produce.
///
/// A closure `FnMut(step, total, loss)` is a `Watch` that hears only a fine-tune's steps.
pub trait Watch {
    /// A fine-tune finished an optimizer step.
    fn progress(&mut self, _step: u32, _total: u32, _loss: f32) {}
    /// An inference sampled its next token.
    fn token(&mut self, _token: u32) {}
    /// More of the output's text, decoded as tokens complete characters: the pieces
    /// concatenate to the output's text (unless the output is cut short later).
    fn text(&mut self, _piece: &str) {}
    /// The most tokens the inference may produce: lowered when its submitter cancels a
    /// stream, after which it ends (successfully) with the first that many. Asked between
    /// tokens.
    fn token_limit(&self) -> u32 {
        u32::MAX
    }
}

/// Hears nothing and never limits.
impl Watch for () {}

impl<F: FnMut(u32, u32, f32)> Watch for F {
    fn progress(&mut self, step: u32, total: u32, loss: f32) {
        self(step, total, loss)
    }
}

/// Runs one job to its end. Blocking: daemons call it in `spawn_blocking`.
pub trait Runner: Send + Sync + fmt::Debug {
    /// Runs `job` (a validated spec) on the inputs laid out in `inputs`; see
    /// [`execute`](crate::execute) for cancellation and the deadline. `watch` hears the
    /// job's progress and tokens as they come.
    fn run(
        &self,
        job: &JobSpec,
        inputs: &JobInputs,
        opts: &ExecOptions,
        cancel: &AtomicBool,
        watch: &mut dyn Watch,
    ) -> Result<ExecResult, ExecError>;

    /// The models held in memory, ready for the next job (what adverts tell the matcher).
    fn resident(&self) -> Vec<ContentId> {
        Vec::new()
    }

    /// Adapters held in memory beside them.
    fn resident_adapters(&self) -> usize {
        0
    }

    /// Models loaded from disk so far (a model served from memory is not counted again).
    fn model_loads(&self) -> u64 {
        0
    }

    /// `tokens` as text by model `model`'s tokenizer, if this runner holds it in memory
    /// (`None` if not): a daemon cutting an output it has already produced re-decodes it.
    fn decode(&self, _model: ContentId, _tokens: &[u32]) -> Option<Result<String, ExecError>> {
        None
    }
}

/// Jobs executed in this process, inference on models kept resident in a pool.
#[derive(Debug)]
pub struct InProcess {
    engines: EnginePool,
}

impl InProcess {
    pub fn new(engines: EnginePool) -> Self {
        Self { engines }
    }

    pub fn engines(&self) -> &EnginePool {
        &self.engines
    }
}

impl Runner for InProcess {
    fn run(
        &self,
        job: &JobSpec,
        inputs: &JobInputs,
        opts: &ExecOptions,
        cancel: &AtomicBool,
        watch: &mut dyn Watch,
    ) -> Result<ExecResult, ExecError> {
        run_job(job, inputs, opts, cancel, watch, &self.engines)
    }

    fn resident(&self) -> Vec<ContentId> {
        self.engines.resident()
    }

    fn resident_adapters(&self) -> usize {
        self.engines.resident_adapters()
    }

    fn model_loads(&self) -> u64 {
        self.engines.loads()
    }

    fn decode(&self, model: ContentId, tokens: &[u32]) -> Option<Result<String, ExecError>> {
        self.engines.decode(model, tokens)
    }
}

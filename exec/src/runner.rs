//! The seam between a daemon and the execution of a job. The worker and the referee hand
//! a job to a [`Runner`] and get its result back; today's runner executes it in this
//! process ([`InProcess`]), a confined child process per job is another implementation of
//! the same trait, so neither daemon changes when jobs move out of its address space.

use std::fmt;
use std::sync::atomic::AtomicBool;

use olc_protocol::{ContentId, JobSpec};

use crate::pool::EnginePool;
use crate::{ExecError, ExecOptions, ExecResult, JobInputs, run_job};

/// Runs one job to its end. Blocking: daemons call it in `spawn_blocking`.
pub trait Runner: Send + Sync + fmt::Debug {
    /// Runs `job` (a validated spec) on the inputs laid out in `inputs`; see
    /// [`execute`](crate::execute) for cancellation, the deadline and progress.
    fn run(
        &self,
        job: &JobSpec,
        inputs: &JobInputs,
        opts: &ExecOptions,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u32, u32, f32),
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
        progress: &mut dyn FnMut(u32, u32, f32),
    ) -> Result<ExecResult, ExecError> {
        run_job(job, inputs, opts, cancel, progress, &self.engines)
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
}

//! Models kept loaded between jobs. Loading a checkpoint (reading, checking and packing
//! every weight) costs far more than a short inference, so a worker that serves one model
//! keeps it resident instead of loading it for every job. A model is keyed by its content
//! id (the laid-out directory's bytes are checked against it before a job runs) and by how
//! its engine computes (instruction set, threads): neither changes an output bit, but an
//! engine is built for one of each.

use std::path::Path;
use std::sync::{Arc, Mutex};

use olc_gpu::compute::Isa;
use olc_gpu::engine::{Engine, EngineOptions};
use olc_gpu::model::Tokenizer;
use olc_protocol::ContentId;

use crate::infer::EngineChoice;
use crate::{ExecError, load_checkpoint};

/// How many models a worker keeps loaded unless told otherwise: one, the common case of a
/// worker serving one model, without holding a second copy of memory for a model it may
/// never see again.
pub const DEFAULT_RESIDENT_MODELS: usize = 1;

/// The most models a pool may be asked to keep: each is a whole checkpoint in memory.
pub const MAX_RESIDENT_MODELS: usize = 64;

/// A model ready to generate: its engine, sized for the model's whole context, and its
/// tokenizer.
#[derive(Debug)]
pub struct LoadedModel {
    pub engine: Engine,
    pub tokenizer: Tokenizer,
}

impl LoadedModel {
    /// Loads `dir` for sequences of up to `max_positions` (capped by the model's context).
    pub fn load(
        dir: &Path,
        choice: &EngineChoice,
        max_positions: usize,
    ) -> Result<Self, ExecError> {
        if choice.threads == 0 {
            return Err(ExecError::Input("threads must be at least 1".into()));
        }
        let checkpoint = load_checkpoint(dir)?;
        let options = EngineOptions {
            isa: choice.isa,
            threads: choice.threads,
            max_positions,
        };
        let engine = Engine::new(checkpoint.config, checkpoint.weights, options)?;
        Ok(Self {
            engine,
            tokenizer: checkpoint.tokenizer,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    model: ContentId,
    isa: Isa,
    threads: usize,
}

/// Up to `capacity` loaded models, the least recently used dropped first. A model in use
/// by a running job stays alive (it is shared) even once the pool has dropped it.
#[derive(Debug)]
pub struct EnginePool {
    capacity: usize,
    /// Most recently used last.
    models: Mutex<Vec<(Key, Arc<LoadedModel>)>>,
}

impl Default for EnginePool {
    /// [`DEFAULT_RESIDENT_MODELS`] models.
    fn default() -> Self {
        Self {
            capacity: DEFAULT_RESIDENT_MODELS,
            models: Mutex::new(Vec::new()),
        }
    }
}

impl EnginePool {
    /// A pool keeping up to `capacity` models; 0 keeps none (every job loads its model).
    pub fn new(capacity: usize) -> Result<Self, ExecError> {
        if capacity > MAX_RESIDENT_MODELS {
            return Err(ExecError::Settings(format!(
                "resident models must be between 0 and {MAX_RESIDENT_MODELS}, got {capacity}"
            )));
        }
        Ok(Self {
            capacity,
            models: Mutex::new(Vec::new()),
        })
    }

    /// The model `id` laid out in `dir`, loaded now unless it is resident.
    pub fn get(
        &self,
        id: ContentId,
        dir: &Path,
        choice: &EngineChoice,
    ) -> Result<Arc<LoadedModel>, ExecError> {
        let key = Key {
            model: id,
            isa: choice.isa,
            threads: choice.threads,
        };
        if let Some(found) = self.take(&key) {
            return Ok(found);
        }
        // Loaded outside the lock: jobs on other, resident models need not wait for it.
        // Two jobs loading the same model at once both load it; one copy is kept.
        let loaded = Arc::new(LoadedModel::load(dir, choice, usize::MAX)?);
        if self.capacity > 0 {
            let mut models = self.lock();
            models.retain(|(k, _)| *k != key);
            models.push((key, loaded.clone()));
            let excess = models.len().saturating_sub(self.capacity);
            models.drain(..excess);
        }
        Ok(loaded)
    }

    /// How many models are resident now.
    pub fn resident(&self) -> usize {
        self.lock().len()
    }

    /// The resident model for `key`, marked most recently used.
    fn take(&self, key: &Key) -> Option<Arc<LoadedModel>> {
        let mut models = self.lock();
        let at = models.iter().position(|(k, _)| k == key)?;
        let entry = models.remove(at);
        let found = entry.1.clone();
        models.push(entry);
        Some(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Key, Arc<LoadedModel>)>> {
        // The list is valid after any panic (entries are pushed and removed whole).
        self.models.lock().unwrap_or_else(|e| e.into_inner())
    }
}

//! Models kept loaded between jobs. Loading a checkpoint (reading, checking and packing
//! every weight) costs far more than a short inference, so a worker that serves one model
//! keeps it resident instead of loading it for every job. A model is keyed by its content
//! id (the laid-out directory's bytes are checked against it before a job runs) and by how
//! its engine computes (instruction set, threads): neither changes an output bit, but an
//! engine is built for one of each.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use olc_gpu::compute::Isa;
use olc_gpu::engine::{AdapterCache, CacheError, Engine, EngineOptions};
use olc_gpu::model::{Adapter, Tokenizer};
use olc_protocol::ContentId;

use crate::infer::EngineChoice;
use crate::serve::batcher::Batcher;
use crate::serve::schedule::ScheduleLimits;
use crate::{ExecError, load_checkpoint};

/// Bytes of models a worker keeps loaded unless told otherwise (`--model-cache-gib`):
/// room for a 1B-parameter model in f32, or several small ones.
pub const DEFAULT_MODEL_CACHE_BYTES: u64 = 8 << 30;

/// A model ready to generate: its engine, sized for the model's whole context, and its
/// tokenizer.
#[derive(Debug)]
pub struct LoadedModel {
    pub engine: Engine,
    pub tokenizer: Tokenizer,
    /// Memory its weights take as the backend holds them (quantized blocks stay quantized):
    /// what the pool's budget counts.
    pub bytes: u64,
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
        let bytes = checkpoint.weights.bytes();
        let options = EngineOptions {
            isa: choice.isa,
            threads: choice.threads,
            max_positions,
        };
        let engine = Engine::new(checkpoint.config, checkpoint.weights, options)?;
        Ok(Self {
            engine,
            tokenizer: checkpoint.tokenizer,
            bytes,
        })
    }
}

/// Bytes of adapters a resident model keeps loaded beside it.
pub const DEFAULT_ADAPTER_BYTES: u64 = 1 << 30;

/// A model kept loaded: the model, the loop that batches every generation on it, and the
/// adapters recently used with it.
#[derive(Debug)]
pub struct Resident {
    pub model: Arc<LoadedModel>,
    pub batcher: Batcher,
    adapters: Mutex<AdapterCache<ContentId>>,
}

impl Resident {
    pub fn start(model: LoadedModel, limits: ScheduleLimits) -> Result<Self, ExecError> {
        let model = Arc::new(model);
        let batcher = Batcher::start(model.clone(), limits).map_err(ExecError::Serving)?;
        Ok(Self {
            model,
            batcher,
            adapters: Mutex::new(AdapterCache::new(DEFAULT_ADAPTER_BYTES)),
        })
    }

    /// The adapter `id` laid out in `dir`, loaded now unless it was used recently.
    pub fn adapter(&self, id: ContentId, dir: &Path) -> Result<Arc<Adapter>, ExecError> {
        let load = || Adapter::load(dir, self.model.engine.config());
        let cached = self.adapters().get_or_load(&id, load);
        match cached {
            Ok(a) => Ok(a),
            // Larger than the whole cache: served, just not kept. The cache dropped the
            // copy it loaded to learn its size, so this loads it again; an adapter over
            // the whole budget (1 GiB) is rare enough not to keep a path for it.
            Err(CacheError::TooLarge { .. }) => Ok(Arc::new(load().map_err(ExecError::Adapter)?)),
            Err(CacheError::Load(e)) => Err(ExecError::Adapter(e)),
        }
    }

    /// Adapters loaded beside the model now.
    pub fn adapters_held(&self) -> usize {
        self.adapters().len()
    }

    /// Adapter loads so far (first uses and reloads after eviction).
    pub fn adapter_loads(&self) -> u64 {
        self.adapters().loads()
    }

    fn adapters(&self) -> std::sync::MutexGuard<'_, AdapterCache<ContentId>> {
        // The cache is valid after any panic (entries are inserted and removed whole).
        self.adapters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    model: ContentId,
    isa: Isa,
    threads: usize,
}

/// Resident models under a byte budget, the least recently used one that no job is using
/// dropped first when a new one needs the room: a model in use is never dropped (it would
/// have to be loaded again at once). A model larger than the whole budget is served, not
/// kept.
#[derive(Debug)]
pub struct EnginePool {
    budget: u64,
    /// Models loaded from disk so far, resident or not.
    loads: AtomicU64,
    /// Held while a model loads, so two jobs asking for the same model at once share one
    /// load (and one batcher) instead of loading it twice.
    loading: Mutex<()>,
    /// Most recently used last.
    models: Mutex<Vec<(Key, Arc<Resident>)>>,
}

impl Default for EnginePool {
    /// A budget of [`DEFAULT_MODEL_CACHE_BYTES`].
    fn default() -> Self {
        Self::new(DEFAULT_MODEL_CACHE_BYTES)
    }
}

impl EnginePool {
    /// A pool keeping models up to `budget` bytes in all; 0 keeps none (every job loads
    /// its model).
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            loads: AtomicU64::new(0),
            loading: Mutex::new(()),
            models: Mutex::new(Vec::new()),
        }
    }

    /// The model `id` laid out in `dir`, loaded now unless it is resident.
    pub fn get(
        &self,
        id: ContentId,
        dir: &Path,
        choice: &EngineChoice,
    ) -> Result<Arc<Resident>, ExecError> {
        let key = Key {
            model: id,
            isa: choice.isa,
            threads: choice.threads,
        };
        if let Some(found) = self.take(&key) {
            return Ok(found);
        }
        // Jobs on models already resident do not wait for this load; jobs on this model do.
        let _loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = self.take(&key) {
            return Ok(found);
        }
        self.loads.fetch_add(1, Ordering::Relaxed);
        let loaded = Arc::new(Resident::start(
            LoadedModel::load(dir, choice, usize::MAX)?,
            ScheduleLimits::default(),
        )?);
        let bytes = loaded.model.bytes;
        if bytes <= self.budget {
            let mut models = self.lock();
            let mut used: u64 = models.iter().map(|(_, r)| r.model.bytes).sum();
            // Oldest first; a model some job still holds stays.
            let mut i = 0;
            while used + bytes > self.budget && i < models.len() {
                if Arc::strong_count(&models[i].1) == 1 {
                    used -= models[i].1.model.bytes;
                    models.remove(i);
                } else {
                    i += 1;
                }
            }
            models.push((key, loaded.clone()));
        }
        Ok(loaded)
    }

    /// Models loaded from disk so far: a model served from memory is not counted again.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The content ids of the models resident now, most recently used last.
    pub fn resident(&self) -> Vec<ContentId> {
        self.lock().iter().map(|(k, _)| k.model).collect()
    }

    /// Adapters loaded beside the resident models, all together.
    pub fn resident_adapters(&self) -> usize {
        self.lock().iter().map(|(_, r)| r.adapters_held()).sum()
    }

    /// `tokens` as text, by the tokenizer of model `id` if it is resident (`None` if not):
    /// what a daemon needs to cut an output it already holds.
    pub fn decode(&self, id: ContentId, tokens: &[u32]) -> Option<Result<String, ExecError>> {
        let resident = self
            .lock()
            .iter()
            .find(|(k, _)| k.model == id)
            .map(|(_, r)| r.clone())?;
        Some(
            resident
                .model
                .tokenizer
                .decode(tokens, true)
                .map_err(Into::into),
        )
    }

    /// Bytes of the models resident now.
    pub fn resident_bytes(&self) -> u64 {
        self.lock().iter().map(|(_, r)| r.model.bytes).sum()
    }

    /// The resident model for `key`, marked most recently used.
    fn take(&self, key: &Key) -> Option<Arc<Resident>> {
        let mut models = self.lock();
        let at = models.iter().position(|(k, _)| k == key)?;
        let entry = models.remove(at);
        let found = entry.1.clone();
        models.push(entry);
        Some(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Key, Arc<Resident>)>> {
        // The list is valid after any panic (entries are pushed and removed whole).
        self.models.lock().unwrap_or_else(|e| e.into_inner())
    }
}

//! The referee: the coordinator re-running a job on the same deterministic engine the
//! workers use, from the inputs already in its blob store. Its output's commitment is
//! the right answer (see `DESIGN.md`, "Canonical arithmetic"), so it decides who lied.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use olc_content::BlobStore;
use olc_content::{self as content, Fetch};
use olc_exec::{EnginePool, ExecOptions, InProcess, Runner};
use olc_protocol::{ContentId, JobSpec};

/// How long one referee run may take. Far beyond any job a referee is asked to check on
/// a devnet; a long fine-tune on a real network is bounded by its own deadline first.
const REFEREE_TIME_LIMIT: Duration = Duration::from_secs(6 * 60 * 60);

#[derive(Debug, Clone)]
pub struct Referee {
    store: Arc<BlobStore>,
    root: PathBuf,
    threads: usize,
    /// Keeps the model of the last job re-run loaded: a referee checks many jobs on the
    /// same few models.
    runner: Arc<InProcess>,
}

/// The coordinator refused every job whose inputs it did not hold, so the referee never
/// fetches: a missing blob means the store lost it, and that is the answer.
struct NoFetch;

impl Fetch for NoFetch {
    fn fetch(&self, id: ContentId, _cap: u64) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move { Err(format!("{id} is not in the coordinator's store")) })
    }
}

impl Referee {
    /// `root` holds the laid-out inputs (kept, like a worker's cache) and scratch space.
    pub fn new(store: Arc<BlobStore>, root: PathBuf, threads: usize) -> Self {
        Self {
            store,
            root,
            threads: threads.max(1),
            runner: Arc::new(InProcess::new(EnginePool::default())),
        }
    }

    /// Re-runs `spec` and returns the commitment of its output.
    pub async fn run(&self, spec: JobSpec) -> Result<ContentId, String> {
        let dirs = self.root.join("inputs");
        let (inputs, _) = content::lay_out(&self.store, &NoFetch, &spec, &dirs).await?;
        std::fs::create_dir_all(&self.root).map_err(|e| format!("{}: {e}", self.root.display()))?;
        let work = tempfile::tempdir_in(&self.root).map_err(|e| format!("scratch space: {e}"))?;
        let opts = ExecOptions {
            threads: self.threads,
            deadline: Instant::now() + REFEREE_TIME_LIMIT,
            work_dir: work.path().to_path_buf(),
        };
        let runner = self.runner.clone();
        let result = tokio::task::spawn_blocking(move || {
            let cancel = AtomicBool::new(false);
            runner.run(&spec, &inputs, &opts, &cancel, &mut |_, _, _| {})
        })
        .await
        .map_err(|e| format!("the referee's thread died: {e}"))?
        .map_err(|e| e.to_string())?;
        drop(work);
        Ok(result.commitment)
    }
}

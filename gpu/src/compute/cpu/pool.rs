//! The rayon pools the CPU backend's kernels split work over, one per thread count.

use std::sync::{Arc, Mutex};

use crate::compute::ComputeError;

/// Rayon pools by thread count, built once: building one per call would cost more than a
/// decode-sized matmul.
pub(crate) fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>, ComputeError> {
    static POOLS: Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(t, _)| *t == threads) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("olc-matmul-{i}"))
            .build()
            .map_err(|e| ComputeError::ThreadPool(e.to_string()))?,
    );
    pools.push((threads, p.clone()));
    Ok(p)
}

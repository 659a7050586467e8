//! Tiny models for tests: a random checkpoint of [`Preset::Tiny`] (a few hundred KB, so
//! a test can afford its own) written the way `olc model init` writes one, and the content
//! id that jobs name it by.

use std::path::Path;

use olc_gpu::model::{Checkpoint, Preset, write_checkpoint};
use olc_protocol::ContentId;
use tempfile::TempDir;

/// A tiny random model from `seed` in a new temporary directory (removed when the
/// [`TempDir`] drops), and its content id. The same seed gives the same weights, so the
/// same id.
pub fn tiny_model(seed: u64) -> (TempDir, ContentId) {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), Preset::Tiny, seed).unwrap();
    let id = model_id(dir.path());
    (dir, id)
}

/// The content id of the checkpoint in `dir`: the manifest of the files a checkpoint
/// load reads, as a submitter uploads them.
pub fn model_id(dir: &Path) -> ContentId {
    let files = Checkpoint::files(dir).unwrap();
    olc_content::manifest_of_files(dir, &files)
        .unwrap()
        .id()
        .unwrap()
}

/// A LoRA adapter of `rank` on q and v whose B is not zero (a fresh one changes nothing:
/// PEFT starts B at zero), from `seed`. The same seed gives the same adapter.
pub fn random_adapter(
    config: &olc_gpu::model::ModelConfig,
    rank: usize,
    seed: u64,
) -> olc_gpu::model::Adapter {
    use olc_gpu::model::LinearModule;
    use olc_gpu::train::{LoraSpec, init_adapter};
    let spec = LoraSpec {
        rank,
        alpha: 2.0 * rank as f64,
        targets: vec![LinearModule::QProj, LinearModule::VProj],
    };
    let mut adapter = init_adapter(&spec, config, seed).unwrap();
    // xorshift: a few lines, and no dependency for a test fixture.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for m in adapter.modules.values_mut() {
        for x in &mut m.b.data {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *x = ((state % 2001) as f32 - 1000.0) / 4000.0;
        }
    }
    adapter
}

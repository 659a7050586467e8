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

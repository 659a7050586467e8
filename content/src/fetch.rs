//! Job inputs and outputs as content: a model or adapter travels as a [`Manifest`] blob
//! plus one blob per file, a dataset as a single blob. Here manifests become directories
//! the engine can load, and output directories become manifests.
//!
//! Everything fetched is checked against the id that asked for it before it is stored, and
//! bounded by a cap the requester chose (a file's size as its manifest states it), so a
//! peer cannot feed us other bytes or more of them than we agreed to.

use std::path::{Component, Path, PathBuf};

use futures::future::BoxFuture;
use olc_protocol::{ContentId, JobKind, JobSpec, Manifest, ManifestEntry, ManifestError};

use crate::store::{BlobStore, BlobStoreError};

/// Where a job's inputs were laid out, for the executor (see [`lay_out`]).
#[derive(Debug, Clone)]
pub struct JobInputs {
    pub model_dir: PathBuf,
    /// The model's manifest id: what a fine-tune's provenance names as its base model.
    pub model_id: ContentId,
    pub adapter_dir: Option<PathBuf>,
    pub adapter_id: Option<ContentId>,
    /// The JSONL dataset of a fine-tune.
    pub dataset_path: Option<PathBuf>,
    /// The adapter a fine-tune continues from.
    pub init_adapter_dir: Option<PathBuf>,
}

/// The largest manifest fetched: the codec's own limit for one.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// The largest fine-tune dataset fetched.
pub const MAX_DATASET_BYTES: u64 = 1 << 30;

/// Where blobs come from when the store lacks them (over the network in the daemon; a map
/// in tests). Implementations may return wrong bytes: callers verify.
pub trait Fetch: Send + Sync {
    /// The blob `id`, at most `cap` bytes.
    fn fetch(&self, id: ContentId, cap: u64) -> BoxFuture<'_, Result<Vec<u8>, String>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("cannot fetch {id}: {reason}")]
    Fetch { id: ContentId, reason: String },
    #[error("{id} arrived with {len} bytes, over the cap of {cap}")]
    TooLarge { id: ContentId, len: u64, cap: u64 },
    #[error("manifest {manifest} lists {path} as {expected} bytes, but its blob has {got}")]
    WrongSize {
        manifest: ContentId,
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("manifest {id}: {source}")]
    Manifest {
        id: ContentId,
        source: ManifestError,
    },
    #[error("cannot publish {dir}: {source}")]
    Publish { dir: PathBuf, source: ManifestError },
    #[error("manifest {manifest} names {path:?}, which is not a plain relative path")]
    UnsafePath { manifest: ContentId, path: String },
    #[error("{id} was evicted from the store while in use; the store's budget is too small")]
    Evicted { id: ContentId },
    #[error(transparent)]
    Store(#[from] BlobStoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fetches `id` unless the store has it. Returns the bytes when they were fetched (the
/// caller may need them and should not have to read them back).
async fn ensure(
    store: &BlobStore,
    fetch: &dyn Fetch,
    id: ContentId,
    cap: u64,
) -> Result<Option<Vec<u8>>, ContentError> {
    if store.contains(&id) {
        return Ok(None);
    }
    let bytes = fetch
        .fetch(id, cap)
        .await
        .map_err(|reason| ContentError::Fetch { id, reason })?;
    let len = bytes.len() as u64;
    if len > cap {
        return Err(ContentError::TooLarge { id, len, cap });
    }
    store.put_verified(&id, &bytes)?;
    Ok(Some(bytes))
}

/// Makes sure a single blob (a dataset) is present; returns its path in the store. The
/// path stays valid only while the blob is pinned (or the store has no budget).
pub async fn ensure_blob(
    store: &BlobStore,
    fetch: &dyn Fetch,
    id: ContentId,
    cap: u64,
) -> Result<PathBuf, ContentError> {
    ensure(store, fetch, id, cap).await?;
    if let Some(len) = store.len_of(&id)
        && len > cap
    {
        return Err(ContentError::TooLarge { id, len, cap });
    }
    store.path(&id).ok_or(ContentError::Evicted { id })
}

/// The manifest `id`, fetched if needed.
pub async fn load_manifest(
    store: &BlobStore,
    fetch: &dyn Fetch,
    id: ContentId,
) -> Result<Manifest, ContentError> {
    let bytes = match ensure(store, fetch, id, MAX_MANIFEST_BYTES).await? {
        Some(bytes) => bytes,
        None => store.get(&id)?.ok_or(ContentError::Evicted { id })?,
    };
    Manifest::from_bytes(&bytes).map_err(|source| ContentError::Manifest { id, source })
}

/// `path` as a relative path below a directory, refusing anything that could leave it.
/// `Manifest::from_bytes` already refuses such paths; this keeps the file system safe even
/// if that check were ever loosened.
fn relative(manifest: ContentId, path: &str) -> Result<PathBuf, ContentError> {
    let rel = Path::new(path);
    let plain = !path.is_empty()
        && !path.contains('\\')
        && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(rel.to_path_buf())
    } else {
        Err(ContentError::UnsafePath {
            manifest,
            path: path.to_string(),
        })
    }
}

/// Whether `dir` holds every file of the manifest with its stated size. Sizes only: the
/// directory was built from verified blobs, and re-hashing a model on every job would
/// cost more than the job.
fn is_complete(dir: &Path, files: &[(PathBuf, &ManifestEntry)]) -> bool {
    files.iter().all(|(rel, e)| {
        std::fs::metadata(dir.join(rel)).is_ok_and(|m| m.is_file() && m.len() == e.size)
    })
}

/// Hard-links `from` to `to` (no copy, no extra disk), or copies where linking is not
/// possible (another file system).
fn link_or_copy(from: &Path, to: &Path) -> Result<(), ContentError> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map_err(io_err(to))?;
    Ok(())
}

/// Makes sure `manifest_id` and all its files are in `store` (fetching what is missing,
/// verified by id, each file capped at its manifest size, the manifest at 1 MiB), and lays
/// the files out as `<dirs_root>/<manifest id>/`, reused when already complete.
///
/// Files are hard links into the store where possible, so the directory must be treated
/// as read-only: writing to a file would change the stored blob. The directory is built
/// under a temporary name and renamed into place, so it is either complete or absent, and
/// it keeps its files even after the store evicts the blobs. Pinning the blobs while a job
/// uses them is the caller's job.
pub async fn materialize(
    store: &BlobStore,
    fetch: &dyn Fetch,
    manifest_id: ContentId,
    dirs_root: &Path,
) -> Result<PathBuf, ContentError> {
    let manifest = load_manifest(store, fetch, manifest_id).await?;
    let files = manifest
        .entries()
        .iter()
        .map(|e| Ok((relative(manifest_id, &e.path)?, e)))
        .collect::<Result<Vec<_>, ContentError>>()?;
    let target = dirs_root.join(manifest_id.to_string());
    if is_complete(&target, &files) {
        return Ok(target);
    }
    std::fs::create_dir_all(dirs_root).map_err(io_err(dirs_root))?;
    let building = TempDir::new(dirs_root, &manifest_id)?;
    for (rel, entry) in &files {
        // Pinned from before the fetch until linked: fetching the next file must not evict
        // this one in between.
        store.pin(&entry.id);
        let placed = place(store, fetch, manifest_id, entry, &building.path.join(rel)).await;
        store.unpin(&entry.id);
        placed?;
    }
    if target.exists() {
        // An incomplete leftover (a crash, or files removed by hand), or a directory another
        // task finished meanwhile.
        if is_complete(&target, &files) {
            return Ok(target);
        }
        std::fs::remove_dir_all(&target).map_err(io_err(&target))?;
    }
    match std::fs::rename(&building.path, &target) {
        Ok(()) => {}
        // Lost a race with another task building the same directory.
        Err(_) if is_complete(&target, &files) => {}
        Err(e) => return Err(io_err(&target)(e)),
    }
    Ok(target)
}

async fn place(
    store: &BlobStore,
    fetch: &dyn Fetch,
    manifest: ContentId,
    entry: &ManifestEntry,
    to: &Path,
) -> Result<(), ContentError> {
    let from = ensure_blob(store, fetch, entry.id, entry.size).await?;
    let got = store.len_of(&entry.id).unwrap_or(0);
    if got != entry.size {
        return Err(ContentError::WrongSize {
            manifest,
            path: entry.path.clone(),
            expected: entry.size,
            got,
        });
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    link_or_copy(&from, to)
}

/// A directory removed when dropped unless it was renamed away.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(root: &Path, id: &ContentId) -> Result<Self, ContentError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = root.join(format!(".{id}.{}-{n}.tmp", std::process::id()));
        std::fs::create_dir(&path).map_err(io_err(&path))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// For outputs: puts every regular file directly in `dir` (not in subdirectories), sorted
/// by name, into the store, then the manifest listing them. Returns the manifest's id and
/// the files' ids in manifest order.
pub fn publish_dir(
    store: &BlobStore,
    dir: &Path,
) -> Result<(ContentId, Vec<ContentId>), ContentError> {
    let mut names = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let item = item.map_err(io_err(dir))?;
        let is_file = item.file_type().map_err(io_err(&item.path()))?.is_file();
        if let (true, Some(name)) = (is_file, item.file_name().to_str()) {
            names.push(name.to_string());
        }
    }
    names.sort();
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let id = store.put(&bytes)?;
        entries.push(ManifestEntry {
            path: name,
            size: bytes.len() as u64,
            id,
        });
    }
    let publish = |source| ContentError::Publish {
        dir: dir.to_path_buf(),
        source,
    };
    let manifest = Manifest::new(entries).map_err(publish)?;
    let file_ids = manifest.entries().iter().map(|e| e.id).collect();
    let bytes = manifest
        .to_bytes()
        .map_err(|e| publish(ManifestError::from(e)))?;
    let id = store.put(&bytes)?;
    Ok((id, file_ids))
}

/// Fetches and lays out everything `spec` reads, for the executor: the worker does this
/// before running a job and the coordinator's referee before re-running one. Returns the
/// inputs and the manifests materialized (which a worker advertises as cached).
pub async fn lay_out(
    store: &BlobStore,
    fetch: &dyn Fetch,
    spec: &JobSpec,
    dirs_root: &Path,
) -> Result<(JobInputs, Vec<ContentId>), String> {
    let mut manifests = Vec::new();
    let mut dir = async |id: ContentId| {
        let d = materialize(store, fetch, id, dirs_root)
            .await
            .map_err(|e| format!("cannot fetch {id}: {e}"))?;
        manifests.push(id);
        Ok::<PathBuf, String>(d)
    };
    let inputs = match &spec.kind {
        JobKind::Inference(j) => JobInputs {
            model_dir: dir(j.model).await?,
            model_id: j.model,
            adapter_dir: match j.adapter {
                Some(a) => Some(dir(a).await?),
                None => None,
            },
            adapter_id: j.adapter,
            dataset_path: None,
            init_adapter_dir: None,
        },
        JobKind::Finetune(j) => JobInputs {
            model_dir: dir(j.model).await?,
            model_id: j.model,
            adapter_dir: None,
            adapter_id: None,
            dataset_path: Some(
                ensure_blob(store, fetch, j.dataset, MAX_DATASET_BYTES)
                    .await
                    .map_err(|e| format!("cannot fetch the dataset: {e}"))?,
            ),
            init_adapter_dir: match j.params.init_adapter {
                Some(a) => Some(dir(a).await?),
                None => None,
            },
        },
    };
    Ok((inputs, manifests))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::dir::manifest_of_files;

    #[derive(Default)]
    struct MapFetch {
        blobs: Mutex<HashMap<ContentId, Vec<u8>>>,
        fetched: AtomicUsize,
    }

    impl MapFetch {
        fn add(&self, bytes: &[u8]) -> ContentId {
            let id = ContentId::of(bytes);
            self.blobs.lock().unwrap().insert(id, bytes.to_vec());
            id
        }

        /// Serves `bytes` when asked for `id`, whatever they hash to.
        fn lie(&self, id: ContentId, bytes: &[u8]) {
            self.blobs.lock().unwrap().insert(id, bytes.to_vec());
        }

        fn count(&self) -> usize {
            self.fetched.load(Ordering::SeqCst)
        }
    }

    impl Fetch for MapFetch {
        fn fetch(&self, id: ContentId, _cap: u64) -> BoxFuture<'_, Result<Vec<u8>, String>> {
            self.fetched.fetch_add(1, Ordering::SeqCst);
            let found = self.blobs.lock().unwrap().get(&id).cloned();
            Box::pin(async move { found.ok_or_else(|| "not found".to_string()) })
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    /// A manifest of `files` served by `fetch`; returns its id.
    fn publish(fetch: &MapFetch, files: &[(&str, &[u8])]) -> ContentId {
        let entries = files
            .iter()
            .map(|(path, bytes)| ManifestEntry {
                path: path.to_string(),
                size: bytes.len() as u64,
                id: fetch.add(bytes),
            })
            .collect();
        let manifest = Manifest::new(entries).unwrap();
        fetch.add(&manifest.to_bytes().unwrap())
    }

    #[test]
    fn materializes_once_and_reuses() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&root.path().join("blobs"), None).unwrap();
        let fetch = MapFetch::default();
        let id = publish(
            &fetch,
            &[
                ("config.json", b"{}"),
                ("model.safetensors", b"weights"),
                ("sub/tokenizer.json", b"tok"),
            ],
        );
        let dirs = root.path().join("dirs");
        let dir = block_on(materialize(&store, &fetch, id, &dirs)).unwrap();
        assert_eq!(dir, dirs.join(id.to_string()));
        assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"{}");
        assert_eq!(
            std::fs::read(dir.join("model.safetensors")).unwrap(),
            b"weights"
        );
        assert_eq!(
            std::fs::read(dir.join("sub/tokenizer.json")).unwrap(),
            b"tok"
        );
        assert_eq!(fetch.count(), 4);
        // Everything is stored and laid out: the second time fetches nothing.
        let again = block_on(materialize(&store, &fetch, id, &dirs)).unwrap();
        assert_eq!(again, dir);
        assert_eq!(fetch.count(), 4);
        // With the directory gone, it is rebuilt from the store, still without fetching.
        std::fs::remove_dir_all(&dir).unwrap();
        block_on(materialize(&store, &fetch, id, &dirs)).unwrap();
        assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"{}");
        assert_eq!(fetch.count(), 4);
        // A damaged directory (a file truncated) is rebuilt too.
        std::fs::remove_file(dir.join("config.json")).unwrap();
        std::fs::write(dir.join("config.json"), b"{").unwrap();
        block_on(materialize(&store, &fetch, id, &dirs)).unwrap();
        assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"{}");
        // No temporary directories are left behind.
        let names: Vec<_> = std::fs::read_dir(&dirs).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn wrong_bytes_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&root.path().join("blobs"), None).unwrap();
        let fetch = MapFetch::default();
        let id = publish(&fetch, &[("a.bin", b"good bytes")]);
        fetch.lie(ContentId::of(b"good bytes"), b"evil bytes");
        let dirs = root.path().join("dirs");
        let err = block_on(materialize(&store, &fetch, id, &dirs)).unwrap_err();
        assert!(
            matches!(err, ContentError::Store(BlobStoreError::Mismatch { .. })),
            "{err}"
        );
        assert!(!store.contains(&ContentId::of(b"good bytes")));
        assert!(!dirs.join(id.to_string()).exists());
        // Nothing half-built remains.
        assert_eq!(std::fs::read_dir(&dirs).unwrap().count(), 0);

        // More bytes than the manifest states are refused before they are hashed.
        let fetch = MapFetch::default();
        let id = publish(&fetch, &[("a.bin", b"short")]);
        fetch.lie(ContentId::of(b"short"), b"much longer than stated");
        let err = block_on(materialize(&store, &fetch, id, &dirs)).unwrap_err();
        assert!(matches!(err, ContentError::TooLarge { .. }), "{err}");

        // A manifest id that fetches as something else.
        let fetch = MapFetch::default();
        let wanted = ContentId::of(b"a manifest");
        fetch.lie(wanted, b"not it");
        assert!(block_on(materialize(&store, &fetch, wanted, &dirs)).is_err());
        // A blob that is not a manifest at all.
        let fetch = MapFetch::default();
        let junk = fetch.add(b"junk");
        let err = block_on(materialize(&store, &fetch, junk, &dirs)).unwrap_err();
        assert!(matches!(err, ContentError::Manifest { .. }), "{err}");
    }

    #[test]
    fn a_manifest_cannot_write_outside_its_directory() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&root.path().join("blobs"), None).unwrap();
        let fetch = MapFetch::default();
        // Manifest::new refuses "../x", so forge the encoding: same length as "aa/x".
        let entry = ManifestEntry {
            path: "aa/x".into(),
            size: 1,
            id: fetch.add(b"x"),
        };
        let mut bytes = Manifest::new(vec![entry]).unwrap().to_bytes().unwrap();
        let at = bytes.windows(4).position(|w| w == b"aa/x").unwrap();
        bytes[at..at + 4].copy_from_slice(b"../x");
        let id = fetch.add(&bytes);
        let dirs = root.path().join("dirs");
        let err = block_on(materialize(&store, &fetch, id, &dirs)).unwrap_err();
        assert!(matches!(err, ContentError::Manifest { .. }), "{err}");
        assert!(!dirs.join("x").exists() && !root.path().join("x").exists());
        // The second line of defence, on its own.
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "a\\b"] {
            assert!(relative(id, bad).is_err(), "{bad:?}");
        }
        assert!(relative(id, "a/b.json").is_ok());
    }

    #[test]
    fn ensure_blob_fetches_once_and_caps() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(root.path(), None).unwrap();
        let fetch = MapFetch::default();
        let id = fetch.add(b"{\"text\": \"hi\"}\n");
        let path = block_on(ensure_blob(&store, &fetch, id, 100)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"text\": \"hi\"}\n");
        block_on(ensure_blob(&store, &fetch, id, 100)).unwrap();
        assert_eq!(fetch.count(), 1);
        // Present but over the cap asked for this time.
        assert!(matches!(
            block_on(ensure_blob(&store, &fetch, id, 3)),
            Err(ContentError::TooLarge { .. })
        ));
        let missing = ContentId::of(b"missing");
        assert!(matches!(
            block_on(ensure_blob(&store, &fetch, missing, 100)),
            Err(ContentError::Fetch { .. })
        ));
    }

    #[test]
    fn published_directories_materialize_back() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        std::fs::create_dir_all(out.join("nested")).unwrap();
        std::fs::write(out.join("b.json"), b"{}").unwrap();
        std::fs::write(out.join("a.safetensors"), b"tensors").unwrap();
        std::fs::write(out.join("nested/skipped"), b"no").unwrap();
        let store = BlobStore::open(&root.path().join("blobs"), None).unwrap();
        let (id, files) = publish_dir(&store, &out).unwrap();
        assert_eq!(files, vec![ContentId::of(b"tensors"), ContentId::of(b"{}")]);
        let manifest = Manifest::from_bytes(&store.get(&id).unwrap().unwrap()).unwrap();
        let names: Vec<_> = manifest.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["a.safetensors", "b.json"]);
        assert_eq!(
            manifest_of_files(&out, &["a.safetensors".into(), "b.json".into()])
                .unwrap()
                .id()
                .unwrap(),
            id
        );
        // Another node holding the store's blobs rebuilds the same directory.
        let fetch = MapFetch::default();
        let dir = block_on(materialize(&store, &fetch, id, &root.path().join("dirs"))).unwrap();
        assert_eq!(fetch.count(), 0);
        assert_eq!(std::fs::read(dir.join("b.json")).unwrap(), b"{}");
        assert!(!dir.join("nested").exists());
    }
}

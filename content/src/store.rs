//! Blobs on disk, named by their content id.
//!
//! The coordinator keeps submitters' inputs and workers' outputs here (they must survive a
//! restart); a worker keeps the models and datasets it has fetched (a cache with a byte
//! budget, so a model crosses the network once per worker, not once per job).
//!
//! Files are `<dir>/<64 hex digits>`. A blob is written to a `*.tmp` file, synced and then
//! renamed, so a crash leaves either the whole blob or a leftover that the next `open`
//! removes; a file under an id's name therefore always holds the complete bytes. Ids are
//! not re-hashed on open (a large store would take minutes to open): the disk is trusted,
//! the network never is.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use blake3::hazmat::HasherExt;

use olc_protocol::blob::{BlobOutline, BlobSource, CHUNK_SIZE};
use olc_protocol::{BlobUpload, ContentHasher, ContentId};

#[derive(Debug, thiserror::Error)]
pub enum BlobStoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("a blob of {len} bytes does not fit the store's budget of {budget} bytes")]
    TooLarge { len: u64, budget: u64 },
    #[error(
        "no room for a blob of {len} bytes: the budget is {budget} bytes and blobs in use \
         (pinned) or being stored take {in_use}"
    )]
    Full { len: u64, budget: u64, in_use: u64 },
    #[error("the bytes hash to {actual}, not to the expected {expected}")]
    Mismatch {
        expected: ContentId,
        actual: ContentId,
    },
    #[error("upload of {id} is {total} bytes, over the {max}-byte limit")]
    UploadTooLarge { id: ContentId, total: u64, max: u64 },
    #[error("upload piece of {len} bytes is over the {CHUNK_SIZE}-byte limit")]
    PieceTooLarge { len: u64 },
    #[error("upload of {id}: piece at offset {got}, but {expected} bytes have arrived so far")]
    OutOfOrder {
        id: ContentId,
        expected: u64,
        got: u64,
    },
    #[error("upload of {id} announced {was} bytes and now {now}")]
    TotalChanged { id: ContentId, was: u64, now: u64 },
    #[error("upload of {id}: pieces add up to more than the announced {total} bytes")]
    Overrun { id: ContentId, total: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlobStoreError + '_ {
    move |source| BlobStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    len: u64,
    /// Position in `State::order`: larger is more recently used.
    used: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<ContentId, Entry>,
    /// `used` stamp → id, oldest first: the eviction order.
    order: BTreeMap<u64, ContentId>,
    clock: u64,
    total: u64,
    /// Counted, and kept for absent ids too: a caller pins what it is about to fetch so
    /// that the fetch of the next file cannot evict it before it is used.
    pins: HashMap<ContentId, u32>,
    outlines: HashMap<ContentId, BlobOutline>,
}

impl State {
    fn touch(&mut self, id: &ContentId) -> bool {
        let Some(entry) = self.entries.get_mut(id) else {
            return false;
        };
        self.order.remove(&entry.used);
        self.clock += 1;
        entry.used = self.clock;
        self.order.insert(self.clock, *id);
        true
    }

    fn insert(&mut self, id: ContentId, len: u64) {
        self.clock += 1;
        self.entries.insert(
            id,
            Entry {
                len,
                used: self.clock,
            },
        );
        self.order.insert(self.clock, id);
        self.total += len;
    }

    fn remove(&mut self, id: &ContentId) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.order.remove(&entry.used);
        self.outlines.remove(id);
        self.total -= entry.len;
        Some(entry)
    }

    fn pinned(&self, id: &ContentId) -> bool {
        self.pins.get(id).is_some_and(|&n| n > 0)
    }

    /// Least recently used first, skipping pinned blobs and `keep`.
    fn victims(&self, keep: Option<&ContentId>) -> Vec<(ContentId, u64)> {
        self.order
            .values()
            .filter(|id| Some(*id) != keep && !self.pinned(id))
            .filter_map(|id| self.entries.get(id).map(|e| (*id, e.len)))
            .collect()
    }
}

/// A content-addressed directory of blobs with an optional byte budget (least recently
/// used, unpinned blobs are evicted to stay within it). Safe to share between threads.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    budget: Option<u64>,
    state: Mutex<State>,
}

/// Makes temporary names unique within the process; the pid makes them unique across
/// processes that (wrongly) share a directory.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl BlobStore {
    /// Opens (creating) `dir`. Leftover `*.tmp` files of an interrupted write are removed;
    /// other files whose name is not an id are left alone and not counted. The LRU order
    /// starts as the files' modification times (which `get`/`path` refresh), so a worker
    /// that restarts keeps evicting what it used least recently.
    pub fn open(dir: &Path, budget: Option<u64>) -> Result<Self, BlobStoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut found: Vec<(SystemTime, ContentId, u64)> = Vec::new();
        for item in fs::read_dir(dir).map_err(io_err(dir))? {
            let item = item.map_err(io_err(dir))?;
            let path = item.path();
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(meta) = item.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            if name.ends_with(".tmp") {
                // Best effort: a leftover we cannot remove is still never read.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Ok(id) = name.parse::<ContentId>() else {
                continue;
            };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((mtime, id, meta.len()));
        }
        found.sort();
        let mut state = State::default();
        for (_, id, len) in found {
            state.insert(id, len);
        }
        let store = Self {
            dir: dir.to_path_buf(),
            budget,
            state: Mutex::new(state),
        };
        // The budget may have shrunk since the last run.
        if let Some(budget) = budget {
            let mut state = store.lock();
            let mut victims = state.victims(None).into_iter();
            while state.total > budget {
                let Some((id, _)) = victims.next() else {
                    break;
                };
                store.evict(&mut state, &id);
            }
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state is completed before anything that could panic, so a
        // poisoned lock still guards a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn file(&self, id: &ContentId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn evict(&self, state: &mut State, id: &ContentId) {
        if state.remove(id).is_some() {
            let _ = fs::remove_file(self.file(id));
        }
    }

    /// Marks `id` as just used, in memory and in the file's mtime (the order after a
    /// restart). Returns whether the blob is here.
    fn touch(&self, id: &ContentId) -> bool {
        if !self.lock().touch(id) {
            return false;
        }
        if let Ok(file) = File::options().append(true).open(self.file(id)) {
            let _ = file.set_modified(SystemTime::now());
        }
        true
    }

    pub fn contains(&self, id: &ContentId) -> bool {
        self.lock().entries.contains_key(id)
    }

    /// Stores `bytes` and returns their id.
    pub fn put(&self, bytes: &[u8]) -> Result<ContentId, BlobStoreError> {
        let mut partial = self.begin(bytes.len() as u64)?;
        partial.write(bytes)?;
        self.finish(partial, None)
    }

    /// Stores `bytes` only if they are the blob `id`.
    pub fn put_verified(&self, id: &ContentId, bytes: &[u8]) -> Result<(), BlobStoreError> {
        let actual = ContentId::of(bytes);
        if actual != *id {
            return Err(BlobStoreError::Mismatch {
                expected: *id,
                actual,
            });
        }
        if self.touch(id) {
            return Ok(());
        }
        let mut partial = self.begin(bytes.len() as u64)?;
        partial.write(bytes)?;
        self.finish(partial, Some(id)).map(|_| ())
    }

    /// Starts writing a blob of (at most) `len` bytes piece by piece, for content too large
    /// to hold in memory. Refuses at once a blob that could never fit the budget.
    pub fn begin(&self, len: u64) -> Result<PartialBlob, BlobStoreError> {
        if let Some(budget) = self.budget
            && len > budget
        {
            return Err(BlobStoreError::TooLarge { len, budget });
        }
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("{}-{n}.tmp", std::process::id()));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        Ok(PartialBlob {
            tmp,
            file: Some(file),
            hasher: ContentHasher::new(),
            len: 0,
            renamed: false,
        })
    }

    /// Completes a blob begun with [`BlobStore::begin`]: syncs it, checks it against
    /// `expected` if given, and makes it visible under its id, evicting least recently used
    /// unpinned blobs to stay within the budget.
    pub fn finish(
        &self,
        mut partial: PartialBlob,
        expected: Option<&ContentId>,
    ) -> Result<ContentId, BlobStoreError> {
        let id = partial.hasher.finalize();
        if let Some(expected) = expected
            && *expected != id
        {
            return Err(BlobStoreError::Mismatch {
                expected: *expected,
                actual: id,
            });
        }
        let len = partial.len;
        if let Some(budget) = self.budget
            && len > budget
        {
            return Err(BlobStoreError::TooLarge { len, budget });
        }
        if let Some(file) = partial.file.take() {
            file.sync_all().map_err(io_err(&partial.tmp))?;
        }
        let target = self.file(&id);
        let mut state = self.lock();
        if state.entries.contains_key(&id) {
            drop(state);
            self.touch(&id);
            return Ok(id);
        }
        if let Some(budget) = self.budget {
            // Make room first, so the store never holds more than its budget on disk.
            let mut victims = state.victims(Some(&id)).into_iter();
            while state.total + len > budget {
                let Some((victim, _)) = victims.next() else {
                    return Err(BlobStoreError::Full {
                        len,
                        budget,
                        in_use: state.total,
                    });
                };
                self.evict(&mut state, &victim);
            }
        }
        // Renamed under the lock, so an eviction of the same id cannot interleave with it.
        fs::rename(&partial.tmp, &target).map_err(io_err(&target))?;
        partial.renamed = true;
        state.insert(id, len);
        drop(state);
        // The rename itself must survive a crash too (coordinators keep inputs here).
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(id)
    }

    pub fn get(&self, id: &ContentId) -> Result<Option<Vec<u8>>, BlobStoreError> {
        if !self.touch(id) {
            return Ok(None);
        }
        let path = self.file(id);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            // Evicted between the check and the read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Where the blob's file is. It may be evicted at any time unless pinned.
    pub fn path(&self, id: &ContentId) -> Option<PathBuf> {
        self.touch(id).then(|| self.file(id))
    }

    pub fn len_of(&self, id: &ContentId) -> Option<u64> {
        self.lock().entries.get(id).map(|e| e.len)
    }

    /// Keeps `id` from eviction until a matching [`BlobStore::unpin`]. Pins count, and may
    /// be taken before the blob arrives.
    pub fn pin(&self, id: &ContentId) {
        *self.lock().pins.entry(*id).or_default() += 1;
    }

    pub fn unpin(&self, id: &ContentId) {
        let mut state = self.lock();
        if let Some(n) = state.pins.get_mut(id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.pins.remove(id);
            }
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    /// Every stored id, least recently used first.
    pub fn ids(&self) -> Vec<ContentId> {
        self.lock().order.values().copied().collect()
    }

    /// Removes a blob (pinned or not); returns whether it was here.
    pub fn remove(&self, id: &ContentId) -> bool {
        let mut state = self.lock();
        let here = state.entries.contains_key(id);
        self.evict(&mut state, id);
        here
    }

    fn read_range(&self, id: &ContentId, start: u64, len: u64) -> Option<Vec<u8>> {
        let mut file = File::open(self.file(id)).ok()?;
        file.seek(SeekFrom::Start(start)).ok()?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        file.read_exact(&mut buf).ok()?;
        Some(buf)
    }
}

/// The outline of a file, read chunk by chunk so that a multi-gigabyte blob is never held
/// in memory. Equal to [`BlobOutline::of`] over the same bytes.
fn outline_of_file(path: &Path) -> io::Result<BlobOutline> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len <= CHUNK_SIZE {
        return Ok(BlobOutline {
            len,
            chunks: Vec::new(),
        });
    }
    let mut chunks = Vec::with_capacity(olc_protocol::blob::chunk_count(len) as usize);
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(CHUNK_SIZE) as usize;
        file.read_exact(&mut buf[..n])?;
        // The chaining value of a chunk, as `BlobOutline::of` computes it.
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        hasher.update(&buf[..n]);
        chunks.push(hasher.finalize_non_root());
        offset += n as u64;
    }
    Ok(BlobOutline { len, chunks })
}

impl BlobSource for BlobStore {
    fn outline(&self, id: &ContentId) -> Option<BlobOutline> {
        if let Some(outline) = self.lock().outlines.get(id) {
            return Some(outline.clone());
        }
        if !self.touch(id) {
            return None;
        }
        let outline = outline_of_file(&self.file(id)).ok()?;
        let mut state = self.lock();
        // Cached only while the blob is still here: an eviction in between must not leave
        // an outline behind for bytes that are gone.
        if state.entries.contains_key(id) {
            state.outlines.insert(*id, outline.clone());
        }
        Some(outline)
    }

    fn chunk(&self, id: &ContentId, index: u64) -> Option<Vec<u8>> {
        let len = self.len_of(id)?;
        let range = BlobOutline {
            len,
            chunks: Vec::new(),
        }
        .chunk_range(index)?;
        self.lock().touch(id);
        self.read_range(id, range.start, range.end - range.start)
    }
}

/// A blob being written; see [`BlobStore::begin`]. Dropped unfinished, its temporary file
/// is removed.
#[derive(Debug)]
pub struct PartialBlob {
    tmp: PathBuf,
    file: Option<File>,
    hasher: ContentHasher,
    len: u64,
    renamed: bool,
}

impl PartialBlob {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobStoreError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(bytes).map_err(io_err(&self.tmp))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for PartialBlob {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// How far a pushed upload has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    Partial {
        received: u64,
    },
    /// The last piece arrived and the whole hashed to its id: the blob is stored.
    Complete,
    /// The store already had the blob; nothing more needs to be sent.
    AlreadyHad,
}

#[derive(Debug)]
struct Pending {
    id: ContentId,
    total: u64,
    blob: PartialBlob,
}

/// Assembles blobs pushed piece by piece ([`olc_protocol::RpcRequest::PutBlob`]). Pieces go
/// straight to a temporary file of the store, so a large upload is never held in memory;
/// the whole is checked against its id before it becomes visible.
#[derive(Debug)]
pub struct Uploads {
    max_blob: u64,
    max_pending: usize,
    /// Oldest first.
    pending: VecDeque<Pending>,
}

impl Uploads {
    /// `max_blob`: the largest blob accepted; `max_pending`: partial uploads kept at once
    /// (starting one more drops the oldest, so abandoned uploads cannot pile up).
    pub fn new(max_blob: u64, max_pending: usize) -> Self {
        Self {
            max_blob,
            max_pending: max_pending.max(1),
            pending: VecDeque::new(),
        }
    }

    /// Partial uploads in progress.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes one piece. Pieces must arrive in order; a piece at the wrong offset is refused
    /// (with the offset expected, so the sender can resume) and the upload kept. Any other
    /// error abandons the upload.
    pub fn receive(
        &mut self,
        store: &BlobStore,
        up: BlobUpload,
    ) -> Result<UploadState, BlobStoreError> {
        let BlobUpload {
            id,
            total,
            offset,
            data,
        } = up;
        let at = self.pending.iter().position(|p| p.id == id);
        if store.contains(&id) {
            if let Some(at) = at {
                self.pending.remove(at);
            }
            return Ok(UploadState::AlreadyHad);
        }
        let refused = if total > self.max_blob {
            Some(BlobStoreError::UploadTooLarge {
                id,
                total,
                max: self.max_blob,
            })
        } else if data.len() as u64 > CHUNK_SIZE {
            Some(BlobStoreError::PieceTooLarge {
                len: data.len() as u64,
            })
        } else {
            None
        };
        if let Some(err) = refused {
            if let Some(at) = at {
                self.pending.remove(at);
            }
            return Err(err);
        }
        let at = match at {
            Some(at) => at,
            None => {
                if offset != 0 {
                    return Err(BlobStoreError::OutOfOrder {
                        id,
                        expected: 0,
                        got: offset,
                    });
                }
                let blob = store.begin(total)?;
                if self.pending.len() >= self.max_pending {
                    self.pending.pop_front();
                }
                self.pending.push_back(Pending { id, total, blob });
                self.pending.len() - 1
            }
        };
        let Some(pending) = self.pending.get_mut(at) else {
            return Err(BlobStoreError::OutOfOrder {
                id,
                expected: 0,
                got: offset,
            });
        };
        if pending.total != total {
            let was = pending.total;
            self.pending.remove(at);
            return Err(BlobStoreError::TotalChanged {
                id,
                was,
                now: total,
            });
        }
        let received = pending.blob.len();
        if offset != received {
            return Err(BlobStoreError::OutOfOrder {
                id,
                expected: received,
                got: offset,
            });
        }
        if received + data.len() as u64 > total {
            self.pending.remove(at);
            return Err(BlobStoreError::Overrun { id, total });
        }
        if let Err(e) = pending.blob.write(&data) {
            self.pending.remove(at);
            return Err(e);
        }
        let received = pending.blob.len();
        if received < total {
            return Ok(UploadState::Partial { received });
        }
        let Some(done) = self.pending.remove(at) else {
            return Ok(UploadState::Partial { received });
        };
        store.finish(done.blob, Some(&id))?;
        Ok(UploadState::Complete)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use olc_protocol::blob::MemoryBlobs;

    const MIB: usize = CHUNK_SIZE as usize;

    fn blob(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 31 + usize::from(salt) * 7) % 251) as u8)
            .collect()
    }

    #[test]
    fn round_trips_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let bytes = blob(1000, 1);
        let id = store.put(&bytes).unwrap();
        assert_eq!(id, ContentId::of(&bytes));
        assert!(store.contains(&id));
        assert_eq!(store.get(&id).unwrap().unwrap(), bytes);
        assert_eq!(store.len_of(&id), Some(1000));
        assert_eq!(fs::read(store.path(&id).unwrap()).unwrap(), bytes);
        assert_eq!(store.total_bytes(), 1000);
        // Storing the same bytes again changes nothing.
        assert_eq!(store.put(&bytes).unwrap(), id);
        assert_eq!(store.total_bytes(), 1000);
        assert_eq!(store.ids(), vec![id]);
        // The empty blob is a blob too.
        let empty = store.put(&[]).unwrap();
        assert_eq!(store.get(&empty).unwrap().unwrap(), Vec::<u8>::new());
        let absent = ContentId::of(b"absent");
        assert!(!store.contains(&absent));
        assert_eq!(store.get(&absent).unwrap(), None);
        assert_eq!(store.path(&absent), None);
        assert_eq!(store.len_of(&absent), None);
        // No temporary files are left behind.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn verified_put_refuses_other_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let id = ContentId::of(b"right");
        let err = store.put_verified(&id, b"wrong").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&id.to_string()), "{text}");
        assert!(
            text.contains(&ContentId::of(b"wrong").to_string()),
            "{text}"
        );
        assert!(!store.contains(&id));
        assert_eq!(store.total_bytes(), 0);
        store.put_verified(&id, b"right").unwrap();
        assert_eq!(store.get(&id).unwrap().unwrap(), b"right");
    }

    #[test]
    fn eviction_is_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), Some(3000)).unwrap();
        let a = store.put(&blob(1000, 1)).unwrap();
        let b = store.put(&blob(1000, 2)).unwrap();
        let c = store.put(&blob(1000, 3)).unwrap();
        // Using `a` makes `b` the oldest.
        store.get(&a).unwrap().unwrap();
        let d = store.put(&blob(1000, 4)).unwrap();
        assert!(!store.contains(&b));
        assert!(!dir.path().join(b.to_string()).exists());
        for id in [a, c, d] {
            assert!(store.contains(&id));
        }
        assert_eq!(store.total_bytes(), 3000);
        assert_eq!(store.ids(), vec![c, a, d]);
        // `path` counts as a use as well.
        store.path(&c).unwrap();
        let e = store.put(&blob(2000, 5)).unwrap();
        assert_eq!(store.ids(), vec![c, e]);
        assert!(store.total_bytes() <= 3000);
        // Bigger than the whole budget: refused outright.
        assert!(matches!(
            store.put(&blob(3001, 6)),
            Err(BlobStoreError::TooLarge { .. })
        ));
        assert_eq!(store.ids(), vec![c, e]);
    }

    #[test]
    fn pinned_blobs_are_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), Some(2000)).unwrap();
        let a = store.put(&blob(1000, 1)).unwrap();
        store.pin(&a);
        store.pin(&a);
        let b = store.put(&blob(1000, 2)).unwrap();
        let c = store.put(&blob(1000, 3)).unwrap();
        assert!(store.contains(&a));
        assert!(!store.contains(&b));
        assert!(store.contains(&c));
        // Nothing left to evict but pinned blobs: the new blob does not fit.
        store.pin(&c);
        assert!(matches!(
            store.put(&blob(1000, 4)),
            Err(BlobStoreError::Full { .. })
        ));
        store.unpin(&c);
        // Pins are counted: one unpin of two leaves `a` pinned.
        store.unpin(&a);
        let d = store.put(&blob(1000, 5)).unwrap();
        assert!(store.contains(&a) && store.contains(&d) && !store.contains(&c));
        store.unpin(&a);
        let e = store.put(&blob(1000, 6)).unwrap();
        assert!(!store.contains(&a) && store.contains(&d) && store.contains(&e));
        // A pin taken before the blob arrives protects it once it does.
        let f_bytes = blob(1000, 7);
        let f = ContentId::of(&f_bytes);
        store.pin(&f);
        store.put_verified(&f, &f_bytes).unwrap();
        store.put(&blob(1000, 8)).unwrap();
        store.put(&blob(1000, 9)).unwrap();
        assert!(store.contains(&f));
    }

    #[test]
    fn reopening_keeps_blobs_sizes_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let store = BlobStore::open(dir.path(), None).unwrap();
            let a = store.put(&blob(1000, 1)).unwrap();
            let b = store.put(&blob(500, 2)).unwrap();
            (a, b)
        };
        // Make `b` clearly older on disk than `a`.
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .append(true)
            .open(dir.path().join(b.to_string()))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        assert_eq!(store.ids(), vec![b, a]);
        assert_eq!(store.len_of(&a), Some(1000));
        assert_eq!(store.len_of(&b), Some(500));
        assert_eq!(store.total_bytes(), 1500);
        assert_eq!(store.get(&b).unwrap().unwrap(), blob(500, 2));
        drop(store);
        // A smaller budget on reopening evicts the oldest.
        let store = BlobStore::open(dir.path(), Some(1200)).unwrap();
        assert_eq!(store.ids(), vec![b]);
    }

    #[test]
    fn bad_file_names_and_leftovers_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let real = blob(10, 1);
        let id = ContentId::of(&real);
        fs::write(dir.path().join(id.to_string()), &real).unwrap();
        fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        fs::write(dir.path().join(id.to_string().to_uppercase()), b"x").unwrap();
        fs::write(dir.path().join("123-4.tmp"), b"half a blob").unwrap();
        fs::create_dir(dir.path().join(ContentId::of(b"d").to_string())).unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        assert_eq!(store.ids(), vec![id]);
        assert_eq!(store.total_bytes(), 10);
        assert!(!dir.path().join("123-4.tmp").exists());
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn serves_chunks_like_memory_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let memory = MemoryBlobs::new();
        for len in [0, 100, 2 * MIB + MIB / 2] {
            let bytes = blob(len, 3);
            let id = store.put(&bytes).unwrap();
            assert_eq!(memory.insert(bytes.clone()), id);
            let outline = store.outline(&id).unwrap();
            assert_eq!(Some(&outline), memory.outline(&id).as_ref());
            outline.verify(&id, u64::MAX).unwrap();
            // Cached the second time.
            assert_eq!(store.outline(&id).unwrap(), outline);
            for index in 0..outline.chunk_count() + 1 {
                let chunk = store.chunk(&id, index);
                assert_eq!(chunk, memory.chunk(&id, index), "chunk {index}");
                if let Some(chunk) = chunk {
                    outline.verify_chunk(&id, index, &chunk).unwrap();
                }
            }
        }
        let absent = ContentId::of(b"absent");
        assert_eq!(store.outline(&absent), None);
        assert_eq!(store.chunk(&absent, 0), None);
    }

    fn pieces(bytes: &[u8], piece: usize) -> Vec<BlobUpload> {
        let id = ContentId::of(bytes);
        let mut out: Vec<BlobUpload> = bytes
            .chunks(piece)
            .enumerate()
            .map(|(i, data)| BlobUpload {
                id,
                total: bytes.len() as u64,
                offset: (i * piece) as u64,
                data: data.to_vec(),
            })
            .collect();
        if out.is_empty() {
            out.push(BlobUpload {
                id,
                total: 0,
                offset: 0,
                data: Vec::new(),
            });
        }
        out
    }

    #[test]
    fn uploads_in_order_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let mut uploads = Uploads::new(10 * CHUNK_SIZE, 4);
        let bytes = blob(2 * MIB + 17, 4);
        let id = ContentId::of(&bytes);
        let parts = pieces(&bytes, MIB);
        let n = parts.len();
        for (i, up) in parts.into_iter().enumerate() {
            let state = uploads.receive(&store, up).unwrap();
            if i + 1 < n {
                assert_eq!(
                    state,
                    UploadState::Partial {
                        received: ((i + 1) * MIB) as u64
                    }
                );
            } else {
                assert_eq!(state, UploadState::Complete);
            }
        }
        assert_eq!(store.get(&id).unwrap().unwrap(), bytes);
        assert_eq!(uploads.pending(), 0);
        // Sending it again is answered at once.
        let again = pieces(&bytes, MIB).remove(0);
        assert_eq!(
            uploads.receive(&store, again).unwrap(),
            UploadState::AlreadyHad
        );
        // The empty blob completes with its single empty piece.
        let empty = pieces(&[], 1).remove(0);
        assert_eq!(
            uploads.receive(&store, empty).unwrap(),
            UploadState::Complete
        );
    }

    #[test]
    fn uploads_out_of_order_are_refused_and_resumable() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let mut uploads = Uploads::new(1 << 20, 4);
        let bytes = blob(300, 5);
        let id = ContentId::of(&bytes);
        let parts = pieces(&bytes, 100);
        // A first piece that is not at offset 0.
        assert!(matches!(
            uploads.receive(&store, parts[1].clone()),
            Err(BlobStoreError::OutOfOrder {
                expected: 0,
                got: 100,
                ..
            })
        ));
        uploads.receive(&store, parts[0].clone()).unwrap();
        // Skipping a piece, or repeating one, is refused; the upload survives.
        assert!(matches!(
            uploads.receive(&store, parts[2].clone()),
            Err(BlobStoreError::OutOfOrder { expected: 100, .. })
        ));
        assert!(matches!(
            uploads.receive(&store, parts[0].clone()),
            Err(BlobStoreError::OutOfOrder { expected: 100, .. })
        ));
        uploads.receive(&store, parts[1].clone()).unwrap();
        assert_eq!(
            uploads.receive(&store, parts[2].clone()).unwrap(),
            UploadState::Complete
        );
        assert!(store.contains(&id));

        // A changed total abandons the upload.
        let other = blob(300, 6);
        let mut parts = pieces(&other, 100);
        uploads.receive(&store, parts[0].clone()).unwrap();
        parts[1].total = 400;
        assert!(matches!(
            uploads.receive(&store, parts[1].clone()),
            Err(BlobStoreError::TotalChanged { .. })
        ));
        assert_eq!(uploads.pending(), 0);
        // So does a piece that runs past the total.
        let mut parts = pieces(&other, 100);
        uploads.receive(&store, parts[0].clone()).unwrap();
        parts[1].data = vec![0; 250];
        assert!(matches!(
            uploads.receive(&store, parts[1].clone()),
            Err(BlobStoreError::Overrun { .. })
        ));
        assert_eq!(uploads.pending(), 0);
    }

    #[test]
    fn uploads_with_the_wrong_hash_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let mut uploads = Uploads::new(1 << 20, 4);
        let claimed = ContentId::of(b"what was promised");
        let mut parts = pieces(&blob(200, 7), 100);
        for p in &mut parts {
            p.id = claimed;
        }
        uploads.receive(&store, parts[0].clone()).unwrap();
        let err = uploads.receive(&store, parts[1].clone()).unwrap_err();
        assert!(matches!(err, BlobStoreError::Mismatch { expected, .. } if expected == claimed));
        assert!(store.ids().is_empty());
        assert_eq!(uploads.pending(), 0);
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn uploads_too_big_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), Some(500)).unwrap();
        let mut uploads = Uploads::new(1000, 4);
        let big = pieces(&blob(1001, 8), 100).remove(0);
        assert!(matches!(
            uploads.receive(&store, big),
            Err(BlobStoreError::UploadTooLarge { .. })
        ));
        // Within the upload limit but over the store's budget.
        let over_budget = pieces(&blob(600, 8), 100).remove(0);
        assert!(matches!(
            uploads.receive(&store, over_budget),
            Err(BlobStoreError::TooLarge { .. })
        ));
        let mut uploads = Uploads::new(10 * CHUNK_SIZE, 4);
        let huge_piece = BlobUpload {
            id: ContentId::of(b"x"),
            total: 2 * CHUNK_SIZE,
            offset: 0,
            data: vec![0; MIB + 1],
        };
        assert!(matches!(
            uploads.receive(&store, huge_piece),
            Err(BlobStoreError::PieceTooLarge { .. })
        ));
        assert_eq!(uploads.pending(), 0);
    }

    #[test]
    fn the_oldest_partial_upload_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let mut uploads = Uploads::new(1 << 20, 2);
        let blobs: Vec<Vec<u8>> = (0..3).map(|i| blob(200, 10 + i)).collect();
        for b in &blobs {
            uploads.receive(&store, pieces(b, 100).remove(0)).unwrap();
        }
        assert_eq!(uploads.pending(), 2);
        // The first upload was dropped: its second piece is out of order now.
        assert!(matches!(
            uploads.receive(&store, pieces(&blobs[0], 100).remove(1)),
            Err(BlobStoreError::OutOfOrder { expected: 0, .. })
        ));
        for b in &blobs[1..] {
            assert_eq!(
                uploads.receive(&store, pieces(b, 100).remove(1)).unwrap(),
                UploadState::Complete
            );
        }
        // Only the dropped upload's temporary file was cleaned, the rest became blobs.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}

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

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use blake3::hazmat::HasherExt;

use olc_protocol::blob::{BlobOutline, BlobSource, CHUNK_SIZE};
use olc_protocol::{ContentHasher, ContentId};

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

#[cfg(test)]
mod tests;
mod uploads;

pub use uploads::{UploadState, Uploads};

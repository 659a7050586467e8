//! Moving large content (model files) in verified chunks.
//!
//! A blob's id is the plain BLAKE3 hash of its bytes ([`ContentId::of`]). BLAKE3 is a
//! Merkle tree, so the hash of a 1 MiB-aligned chunk (its "chaining value") can be checked
//! against the root: the sender first sends an [`BlobOutline`] (the length and every chunk's
//! chaining value), the receiver checks that the outline merges to the id it asked for,
//! then checks each chunk against its chaining value as it arrives. A bad chunk is refused
//! on arrival, not after gigabytes have been downloaded.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bincode::{Decode, Encode};
use blake3::hazmat::{self, ChainingValue, HasherExt, Mode};

use crate::{BlobPart, BlobRequest, BlobResponse, ContentId};

/// Chunk size: a power of two multiple of BLAKE3's 1 KiB chunk, so that each chunk is a
/// complete subtree of the hash tree.
pub const CHUNK_SIZE: u64 = 1 << 20;

/// What a receiver needs to verify each chunk of one blob. For a blob of at most one
/// chunk, `chunks` is empty: the single chunk is checked against the id directly.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BlobOutline {
    pub len: u64,
    pub chunks: Vec<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("blob {id} is {len} bytes, over the {cap}-byte cap")]
    TooLarge { id: ContentId, len: u64, cap: u64 },
    #[error("outline of blob {id} lists {got} chunks; {len} bytes make {expected}")]
    WrongChunkCount {
        id: ContentId,
        len: u64,
        expected: u64,
        got: u64,
    },
    #[error("outline of blob {id} does not hash to that id")]
    OutlineMismatch { id: ContentId },
    #[error("chunk {index} of blob {id} does not exist (the blob has {count})")]
    NoSuchChunk {
        id: ContentId,
        index: u64,
        count: u64,
    },
    #[error("chunk {index} of blob {id} has {got} bytes, expected {expected}")]
    WrongChunkLength {
        id: ContentId,
        index: u64,
        expected: u64,
        got: u64,
    },
    #[error("chunk {index} of blob {id} does not match its content id")]
    ChunkMismatch { id: ContentId, index: u64 },
}

impl BlobOutline {
    /// The outline of `bytes` (the sender's side).
    pub fn of(bytes: &[u8]) -> Self {
        let len = bytes.len() as u64;
        let chunks = if len <= CHUNK_SIZE {
            Vec::new()
        } else {
            bytes
                .chunks(CHUNK_SIZE as usize)
                .enumerate()
                .map(|(i, chunk)| chunk_cv(i as u64, chunk))
                .collect()
        };
        Self { len, chunks }
    }

    pub fn chunk_count(&self) -> u64 {
        chunk_count(self.len)
    }

    /// Byte range of chunk `index` within the blob.
    pub fn chunk_range(&self, index: u64) -> Option<std::ops::Range<u64>> {
        (index < self.chunk_count()).then(|| {
            let start = index * CHUNK_SIZE;
            start..start.saturating_add(CHUNK_SIZE).min(self.len)
        })
    }

    /// Checks that this outline belongs to `id` and respects the receiver's size cap.
    /// Only a verified outline may be used to check chunks.
    ///
    /// The chaining values fix the number of chunks, not the exact length of the last
    /// one: that is committed by the last chunk's own chaining value, so a lie about the
    /// length fails when the last chunk is checked. Receivers fetch the last chunk first.
    pub fn verify(&self, id: &ContentId, cap: u64) -> Result<(), BlobError> {
        if self.len > cap {
            return Err(BlobError::TooLarge {
                id: *id,
                len: self.len,
                cap,
            });
        }
        let expected = if self.len <= CHUNK_SIZE {
            0
        } else {
            chunk_count(self.len)
        };
        let got = self.chunks.len() as u64;
        if got != expected {
            return Err(BlobError::WrongChunkCount {
                id: *id,
                len: self.len,
                expected,
                got,
            });
        }
        if expected == 0 {
            // Zero or one chunk: nothing to check until the chunk itself arrives.
            return Ok(());
        }
        let left_len = hazmat::left_subtree_len(self.len);
        let split = (left_len / CHUNK_SIZE) as usize;
        let left = subtree_cv(&self.chunks[..split], left_len);
        let right = subtree_cv(&self.chunks[split..], self.len - left_len);
        let root = hazmat::merge_subtrees_root(&left, &right, Mode::Hash);
        if root.as_bytes() != id.as_bytes() {
            return Err(BlobError::OutlineMismatch { id: *id });
        }
        Ok(())
    }

    /// Checks one chunk against a verified outline. Never panics, whatever `data` is.
    pub fn verify_chunk(&self, id: &ContentId, index: u64, data: &[u8]) -> Result<(), BlobError> {
        let count = self.chunk_count();
        let range = self.chunk_range(index).ok_or(BlobError::NoSuchChunk {
            id: *id,
            index,
            count,
        })?;
        let expected = range.end - range.start;
        if data.len() as u64 != expected {
            return Err(BlobError::WrongChunkLength {
                id: *id,
                index,
                expected,
                got: data.len() as u64,
            });
        }
        let matches = if self.len <= CHUNK_SIZE {
            ContentId::of(data) == *id
        } else {
            // `verify` checked the count, so the index is in range here.
            self.chunks.get(index as usize) == Some(&chunk_cv(index, data))
        };
        if matches {
            Ok(())
        } else {
            Err(BlobError::ChunkMismatch { id: *id, index })
        }
    }
}

pub fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK_SIZE)
}

/// Chaining value of a non-empty chunk of at most `CHUNK_SIZE` bytes at chunk `index`.
/// Callers guarantee the length, which is what BLAKE3's hazmat API requires.
fn chunk_cv(index: u64, chunk: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * CHUNK_SIZE);
    hasher.update(chunk);
    hasher.finalize_non_root()
}

/// Chaining value of a (non-root) subtree made of `cvs`, covering `len` bytes.
fn subtree_cv(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if len <= CHUNK_SIZE || cvs.len() <= 1 {
        return cvs[0];
    }
    let left_len = hazmat::left_subtree_len(len);
    let split = (left_len / CHUNK_SIZE) as usize;
    let left = subtree_cv(&cvs[..split], left_len);
    let right = subtree_cv(&cvs[split..], len - left_len);
    hazmat::merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// Where a node finds the blobs it serves.
pub trait BlobSource: Send + Sync {
    fn outline(&self, id: &ContentId) -> Option<BlobOutline>;
    fn chunk(&self, id: &ContentId, index: u64) -> Option<Vec<u8>>;
}

/// The answer to a blob request from `source`.
pub fn respond(source: &dyn BlobSource, request: &BlobRequest) -> BlobResponse {
    let found = match request.part {
        BlobPart::Outline => source.outline(&request.id).map(BlobResponse::Outline),
        BlobPart::Chunk(index) => source.chunk(&request.id, index).map(BlobResponse::Chunk),
    };
    found.unwrap_or(BlobResponse::NotFound)
}

type BlobMap = HashMap<ContentId, (Arc<[u8]>, BlobOutline)>;

/// Blobs held in memory, with their outlines computed once at insertion.
#[derive(Debug, Default)]
pub struct MemoryBlobs {
    blobs: RwLock<BlobMap>,
}

impl MemoryBlobs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, bytes: Vec<u8>) -> ContentId {
        let id = ContentId::of(&bytes);
        let outline = BlobOutline::of(&bytes);
        self.write().insert(id, (bytes.into(), outline));
        id
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BlobMap> {
        // A poisoned lock only means another thread panicked mid-insert of a complete
        // value; the map itself is still consistent.
        self.blobs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BlobMap> {
        self.blobs.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlobSource for MemoryBlobs {
    fn outline(&self, id: &ContentId) -> Option<BlobOutline> {
        self.read().get(id).map(|(_, o)| o.clone())
    }

    fn chunk(&self, id: &ContentId, index: u64) -> Option<Vec<u8>> {
        let guard = self.read();
        let (bytes, outline) = guard.get(id)?;
        let range = outline.chunk_range(index)?;
        Some(bytes[range.start as usize..range.end as usize].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    const MIB: usize = CHUNK_SIZE as usize;

    #[test]
    fn outlines_merge_to_the_plain_blake3_id() {
        for len in [
            0,
            1,
            1000,
            MIB,
            MIB + 1,
            2 * MIB,
            3 * MIB + 5,
            4 * MIB,
            5 * MIB - 1,
            7 * MIB + 3,
        ] {
            let bytes = blob(len);
            let id = ContentId::of(&bytes);
            let outline = BlobOutline::of(&bytes);
            outline
                .verify(&id, u64::MAX)
                .unwrap_or_else(|e| panic!("len {len}: {e}"));
            for index in 0..outline.chunk_count() {
                let r = outline.chunk_range(index).unwrap();
                outline
                    .verify_chunk(&id, index, &bytes[r.start as usize..r.end as usize])
                    .unwrap();
            }
        }
    }

    #[test]
    fn a_tampered_chunk_is_refused() {
        for len in [100, 3 * MIB + 5] {
            let bytes = blob(len);
            let id = ContentId::of(&bytes);
            let outline = BlobOutline::of(&bytes);
            let last = outline.chunk_count() - 1;
            let r = outline.chunk_range(last).unwrap();
            let mut chunk = bytes[r.start as usize..r.end as usize].to_vec();
            chunk[0] ^= 1;
            assert_eq!(
                outline.verify_chunk(&id, last, &chunk),
                Err(BlobError::ChunkMismatch { id, index: last })
            );
            // A correct chunk sent under another index is refused too.
            if outline.chunk_count() > 1 {
                let first = &bytes[..MIB];
                assert!(outline.verify_chunk(&id, 1, first).is_err());
            }
        }
    }

    #[test]
    fn bad_outlines_and_chunk_shapes_are_refused() {
        let bytes = blob(3 * MIB + 5);
        let id = ContentId::of(&bytes);
        let good = BlobOutline::of(&bytes);

        let mut forged = good.clone();
        forged.chunks[1][0] ^= 1;
        assert_eq!(
            forged.verify(&id, u64::MAX),
            Err(BlobError::OutlineMismatch { id })
        );

        // A length that keeps the tree's shape passes the outline check, but the last
        // chunk's chaining value commits to its exact length: no chunk can satisfy it.
        let mut longer = good.clone();
        longer.len += 1;
        assert!(longer.verify(&id, u64::MAX).is_ok());
        let last = &bytes[3 * MIB..];
        assert!(matches!(
            longer.verify_chunk(&id, 3, last),
            Err(BlobError::WrongChunkLength { .. })
        ));
        let padded = [last, &[0]].concat();
        assert_eq!(
            longer.verify_chunk(&id, 3, &padded),
            Err(BlobError::ChunkMismatch { id, index: 3 })
        );
        // A length that changes the chunk count is caught by the outline itself.
        let mut much_longer = good.clone();
        much_longer.len += CHUNK_SIZE;
        assert!(much_longer.verify(&id, u64::MAX).is_err());
        let mut short_list = good.clone();
        short_list.chunks.pop();
        assert!(matches!(
            short_list.verify(&id, u64::MAX),
            Err(BlobError::WrongChunkCount { .. })
        ));
        let huge = BlobOutline {
            len: u64::MAX,
            chunks: vec![],
        };
        assert!(huge.verify(&id, u64::MAX).is_err());
        assert!(matches!(
            good.verify(&id, 1024),
            Err(BlobError::TooLarge { .. })
        ));

        assert!(matches!(
            good.verify_chunk(&id, 4, &[]),
            Err(BlobError::NoSuchChunk { .. })
        ));
        assert!(matches!(
            good.verify_chunk(&id, u64::MAX, &[1]),
            Err(BlobError::NoSuchChunk { .. })
        ));
        assert!(matches!(
            good.verify_chunk(&id, 0, &[1, 2]),
            Err(BlobError::WrongChunkLength { .. })
        ));
        assert!(matches!(
            good.verify_chunk(&id, 3, &vec![0; MIB]),
            Err(BlobError::WrongChunkLength { .. })
        ));
        let other = ContentId::of(b"other");
        assert!(good.verify(&other, u64::MAX).is_err());
    }
}

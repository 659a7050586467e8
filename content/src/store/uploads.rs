//! Blobs pushed piece by piece, assembled into the store.

use std::collections::VecDeque;

use olc_protocol::blob::CHUNK_SIZE;
use olc_protocol::{BlobUpload, ContentId};

use super::{BlobStore, BlobStoreError, PartialBlob};

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

//! Content made of several files (a model directory, an adapter) as one content id: a
//! manifest lists each file's relative path, size and BLAKE3 id, and the manifest's own id
//! is the hash of its canonical encoding. A peer that has the manifest can fetch and check
//! every file by id, and two directories with the same files get the same id.

use bincode::{Decode, Encode};

use crate::codec::{self, CodecError, Message};
use crate::content_id::ContentId;

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ManifestEntry {
    /// Relative path with `/` separators; no `..`, no leading `/`.
    pub path: String,
    pub size: u64,
    pub id: ContentId,
}

/// Entries sorted by path, paths unique: one encoding (hence one id) per set of files.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Manifest {
    entries: Vec<ManifestEntry>,
}

impl Message for Manifest {
    const NAME: &'static str = "olc/manifest";
    const MAX_SIZE: usize = 1024 * 1024;
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading a directory's files to list them (olc-content does; this crate reads none).
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("manifest path {0:?} is not a plain relative path")]
    BadPath(String),
    #[error("manifest lists {0:?} twice")]
    Duplicate(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl Manifest {
    pub fn new(mut entries: Vec<ManifestEntry>) -> Result<Self, ManifestError> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        for e in &entries {
            let plain = !e.path.is_empty()
                && !e.path.starts_with('/')
                && e.path
                    .split('/')
                    .all(|p| !p.is_empty() && p != "." && p != "..")
                && !e.path.contains('\\');
            if !plain {
                return Err(ManifestError::BadPath(e.path.clone()));
            }
        }
        if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(ManifestError::Duplicate(w[0].path.clone()));
        }
        Ok(Self { entries })
    }

    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Decodes and re-checks the invariants, so a peer cannot hand us an unsorted manifest
    /// (which would hash differently for the same files).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Manifest = codec::decode(bytes)?;
        let checked = Self::new(m.entries.clone())?;
        if checked.entries != m.entries {
            return Err(ManifestError::BadPath(
                "entries are not in path order".into(),
            ));
        }
        Ok(checked)
    }

    /// The content id of the whole: BLAKE3 of the canonical encoding.
    pub fn id(&self) -> Result<ContentId, CodecError> {
        Ok(ContentId::of(&self.to_bytes()?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(path: &str, byte: u8) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            size: 1,
            id: ContentId::of(&[byte]),
        }
    }

    #[test]
    fn order_of_listing_does_not_change_the_id() {
        let a = Manifest::new(vec![entry("b", 1), entry("a", 2)]).unwrap();
        let b = Manifest::new(vec![entry("a", 2), entry("b", 1)]).unwrap();
        assert_eq!(a.id().unwrap(), b.id().unwrap());
        let c = Manifest::new(vec![entry("a", 2), entry("b", 3)]).unwrap();
        assert_ne!(a.id().unwrap(), c.id().unwrap());
        assert_eq!(Manifest::from_bytes(&a.to_bytes().unwrap()).unwrap(), a);
    }

    #[test]
    fn unsafe_paths_and_duplicates_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a\\b", "./a"] {
            assert!(Manifest::new(vec![entry(bad, 0)]).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Manifest::new(vec![entry("a", 0), entry("a", 1)]),
            Err(ManifestError::Duplicate(_))
        ));
    }
}

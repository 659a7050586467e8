//! A directory's files as a [`Manifest`]: the files are read here, never in the protocol
//! crate, which only defines what a manifest is.

use std::path::Path;

use olc_protocol::{ContentHasher, Manifest, ManifestEntry, ManifestError};

/// Hashes the named files of `dir` (streaming, so a large checkpoint is never held in
/// memory at once) into their manifest.
pub fn manifest_of_files(dir: &Path, names: &[String]) -> Result<Manifest, ManifestError> {
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(name);
        let io = |source| ManifestError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let mut hasher = ContentHasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        entries.push(ManifestEntry {
            path: name.clone(),
            size,
            id: hasher.finalize(),
        });
    }
    Manifest::new(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use olc_protocol::ContentId;

    use super::*;

    #[test]
    fn files_are_hashed_as_content_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.json"), b"{}").unwrap();
        let m = manifest_of_files(dir.path(), &["x.json".into()]).unwrap();
        assert_eq!(m.entries()[0].id, ContentId::of(b"{}"));
        assert_eq!(m.total_size(), 2);
        assert!(manifest_of_files(dir.path(), &["missing".into()]).is_err());
    }
}

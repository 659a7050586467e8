//! Key files: the one place the protocol crate touches the file system, because a key that
//! leaks through loose permissions is a protocol failure, not a CLI detail.
//!
//! The format is PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the same that `openssl genpkey
//! -algorithm ed25519` writes, so keys can be inspected and moved with standard tools.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};

use crate::Identity;

/// A key file is a few hundred bytes; anything bigger is not one and is not read whole.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("no key file at {0} (create one with `olc keys new`)")]
    NotFound(PathBuf),
    #[error("{0} already exists; pass --force to overwrite it (the old key is lost)")]
    AlreadyExists(PathBuf),
    #[error(
        "key file {path} can be read by other users (mode {mode:04o}); \
         run `chmod 600 {path}` and try again"
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a key file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError {
    let path = path.to_path_buf();
    move |source| KeyFileError::Io {
        action,
        path,
        source,
    }
}

/// Writes `identity` to `path`, readable by its owner only. Without `overwrite`, an
/// existing file is never replaced — not even by a concurrent writer — because it may be
/// the only copy of a key that holds stake.
pub fn save(identity: &Identity, path: &Path, overwrite: bool) -> Result<(), KeyFileError> {
    if !overwrite && path.exists() {
        return Err(KeyFileError::AlreadyExists(path.to_path_buf()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)?;
    let pem = identity
        .signing_key()
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyFileError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;

    // Write a private temporary file and move it into place, so a crash never leaves a
    // half-written key behind.
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let mut file = open_private_new(&tmp)?;
    let written = file
        .write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", &tmp));
    drop(file);
    let placed = written.and_then(|()| {
        if overwrite {
            fs::rename(&tmp, path).map_err(io_error("replace", path))
        } else {
            // hard_link fails if the target exists: an atomic "create, never replace".
            fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyFileError::AlreadyExists(path.to_path_buf())
                } else {
                    KeyFileError::Io {
                        action: "create",
                        path: path.to_path_buf(),
                        source: e,
                    }
                }
            })
        }
    });
    let _ = fs::remove_file(&tmp);
    placed
}

/// Reads a key file, refusing one that other users could have read: such a key must be
/// presumed stolen, and signing with it would be signing for someone else too.
pub fn load(path: &Path) -> Result<Identity, KeyFileError> {
    let file = fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            KeyFileError::NotFound(path.to_path_buf())
        } else {
            KeyFileError::Io {
                action: "open",
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    let meta = file.metadata().map_err(io_error("inspect", path))?;
    check_private(path, &meta)?;
    let malformed = |reason: String| KeyFileError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if !meta.is_file() {
        return Err(malformed("not a regular file".into()));
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(malformed(format!(
            "{} bytes is far too large for a key",
            meta.len()
        )));
    }
    let mut text = zeroize::Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| malformed(format!("not UTF-8 text ({e})")))?;
    let signing = SigningKey::from_pkcs8_pem(text.trim())
        .map_err(|e| malformed(format!("not a PKCS#8 PEM ed25519 private key ({e})")))?;
    Ok(Identity::from_signing_key(signing))
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::LoosePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<(), KeyFileError> {
    // Windows ACLs are not modelled here; the data directory's default ACL applies.
    Ok(())
}

#[cfg(unix)]
fn open_private_new(path: &Path) -> Result<fs::File, KeyFileError> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("create", path))
}

#[cfg(not(unix))]
fn open_private_new(path: &Path) -> Result<fs::File, KeyFileError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error("create", path))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), KeyFileError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create directory", dir))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), KeyFileError> {
    fs::create_dir_all(dir).map_err(io_error("create directory", dir))
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn save_then_load_gives_the_same_key_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/key.pem");
        let id = Identity::generate().unwrap();
        save(&id, &path, false).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(mode_of(path.parent().unwrap()), 0o700);
        assert_eq!(load(&path).unwrap().public_key(), id.public_key());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
        // No temporary file is left next to the key.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn existing_key_is_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let first = Identity::generate().unwrap();
        save(&first, &path, false).unwrap();
        let second = Identity::generate().unwrap();
        assert!(matches!(
            save(&second, &path, false),
            Err(KeyFileError::AlreadyExists(_))
        ));
        assert_eq!(load(&path).unwrap().public_key(), first.public_key());
        save(&second, &path, true).unwrap();
        assert_eq!(load(&path).unwrap().public_key(), second.public_key());
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        save(&Identity::generate().unwrap(), &path, false).unwrap();
        for loose in [0o644, 0o640, 0o604, 0o660, 0o666] {
            fs::set_permissions(&path, fs::Permissions::from_mode(loose)).unwrap();
            let err = load(&path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::LoosePermissions { mode, .. } if mode == loose),
                "{loose:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"));
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load(&path).is_ok());
    }

    #[test]
    fn bad_key_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(KeyFileError::NotFound(_))
        ));
        let write_private = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            fs::write(&p, bytes).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        for (name, bytes) in [
            ("empty", &b""[..]),
            ("garbage", &b"not a key at all"[..]),
            ("binary", &[0xff, 0xfe, 0x00, 0x80][..]),
            (
                "wrong-pem",
                &b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"[..],
            ),
        ] {
            let p = write_private(name, bytes);
            assert!(
                matches!(load(&p), Err(KeyFileError::Malformed { .. })),
                "{name}"
            );
        }
        let huge = write_private("huge", &vec![b'A'; 100_000]);
        let err = load(&huge).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        let as_dir = dir.path().join("a-dir");
        fs::create_dir(&as_dir).unwrap();
        fs::set_permissions(&as_dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(load(&as_dir).is_err());
    }
}

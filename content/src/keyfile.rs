//! Key files: the one place an identity touches the file system, because a key that
//! leaks through loose permissions is a protocol failure, not a CLI detail.
//!
//! The format is PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`, the 48-byte DER of RFC 8410
//! section 7), the same that `openssl genpkey -algorithm ed25519` writes, so keys can be
//! inspected and moved with standard tools. Files written before that are PKCS#8 v2 (the
//! public key appended as `[1] BIT STRING`), which OpenSSL 3.0 and Python's
//! `cryptography` refuse; they are still read, so no existing key is lost.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::{self, LineEnding};
use ed25519_dalek::pkcs8::{ALGORITHM_OID, EncodePrivateKey, KeypairBytes, PrivateKeyInfoRef};

use olc_protocol::Identity;

/// A key file is a few hundred bytes; anything bigger is not one and is not read whole.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// What a key file's first line must be.
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";

// The I/O errors are part of the message and deliberately not returned from `source()`:
// printing the chain (`{:#}`) would otherwise show each cause twice.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("no key file at {0} (create one with `olc keys new`)")]
    NotFound(PathBuf),
    #[error("{0} is a directory, not a key file (give the key file's own path, e.g. {0}/key.pem)")]
    IsDirectory(PathBuf),
    #[error("{0} is not a directory, so no key file can be created in it")]
    ParentNotDirectory(PathBuf),
    #[error("{0} already exists; pass --force to overwrite it (the old key is lost)")]
    AlreadyExists(PathBuf),
    #[error(
        "key file {path} can be read by other users (mode {mode:04o}); \
         run `chmod 600 {path}` and try again"
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a key file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot encode the key as PKCS#8: {0}")]
    Encode(String),
    #[error("cannot {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError {
    let path = path.to_path_buf();
    move |error| KeyFileError::Io {
        action,
        path,
        error,
    }
}

/// The PEM text of `identity`'s key as PKCS#8 v1: the seed only. The public key is left
/// out on purpose (v2 is what OpenSSL 3.0 and `cryptography` refuse); it is derived from
/// the seed anyway.
fn encode_pem(identity: &Identity) -> Result<zeroize::Zeroizing<String>, KeyFileError> {
    let bytes = KeypairBytes {
        secret_key: *identity.secret_seed(),
        public_key: None,
    };
    bytes
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyFileError::Encode(e.to_string()))
}

/// Writes `identity` to `path`, readable by its owner only. Without `overwrite`, an
/// existing file is never replaced — not even by a concurrent writer — because it may be
/// the only copy of a key that holds stake.
pub fn save(identity: &Identity, path: &Path, overwrite: bool) -> Result<(), KeyFileError> {
    // Checked before "exists": advising --force for a directory would be wrong, and the
    // rename it leads to would fail anyway.
    if path.is_dir() {
        return Err(KeyFileError::IsDirectory(path.to_path_buf()));
    }
    if !overwrite && path.exists() {
        return Err(KeyFileError::AlreadyExists(path.to_path_buf()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)?;
    let pem = encode_pem(identity)?;

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
                        error: e,
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
    // Looked at before opening: a directory opens fine on Unix and would then be judged by
    // its mode ("chmod 600 /tmp"), and opening a FIFO would block.
    let meta = fs::metadata(path).map_err(|e| open_error(path, e))?;
    check_kind(path, &meta)?;
    let file = fs::File::open(path).map_err(|e| open_error(path, e))?;
    // The opened file is what counts: the path may point elsewhere by now.
    let meta = file.metadata().map_err(io_error("inspect", path))?;
    check_kind(path, &meta)?;
    let malformed = |reason: String| KeyFileError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(malformed(format!(
            "{} bytes is far too large for a key",
            meta.len()
        )));
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io_error("read key file", path))?;
    // Content before mode: a file that is no key at all (say `id_ed25519.pub`) is
    // reported as such, not with advice to chmod it.
    let identity = decode_pem(&bytes).map_err(malformed)?;
    check_private(path, &meta)?;
    Ok(identity)
}

fn open_error(path: &Path, error: std::io::Error) -> KeyFileError {
    if error.kind() == std::io::ErrorKind::NotFound {
        KeyFileError::NotFound(path.to_path_buf())
    } else {
        KeyFileError::Io {
            action: "read key file",
            path: path.to_path_buf(),
            error,
        }
    }
}

fn check_kind(path: &Path, meta: &fs::Metadata) -> Result<(), KeyFileError> {
    if meta.is_dir() {
        return Err(KeyFileError::IsDirectory(path.to_path_buf()));
    }
    if !meta.is_file() {
        return Err(KeyFileError::Malformed {
            path: path.to_path_buf(),
            reason: "it is not a regular file (a device, pipe or socket)".into(),
        });
    }
    Ok(())
}

/// The key in a key file's bytes, or why there is none, worded for someone who may have
/// handed over the wrong file.
fn decode_pem(bytes: &[u8]) -> Result<Identity, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| {
            format!("it is binary data, not PEM text (a key file starts with {PEM_BEGIN})")
        })?
        .trim();
    if text.is_empty() {
        return Err("it is empty".into());
    }
    let first = text.lines().next().unwrap_or_default().trim();
    if first != PEM_BEGIN {
        let label = first
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"));
        return Err(match label {
            Some("ENCRYPTED PRIVATE KEY") => "it is encrypted; olc needs an unencrypted key \
                 (decrypt it with `openssl pkey -in FILE -out NEW_FILE`)"
                .into(),
            Some("OPENSSH PRIVATE KEY") => {
                format!("it is an OpenSSH key; olc reads PKCS#8 PEM ({PEM_BEGIN})")
            }
            Some("PUBLIC KEY") => "it holds a public key; a key file holds the private key".into(),
            Some(label) => format!("it is a PEM \"{label}\" block, not {PEM_BEGIN}"),
            None => format!("it is not PEM text (a key file starts with {PEM_BEGIN})"),
        });
    }
    let der = zeroize::Zeroizing::new(
        pem::decode_vec(text.as_bytes())
            .map_err(|e| format!("its PEM text is damaged ({e})"))?
            .1,
    );
    let info = PrivateKeyInfoRef::try_from(der.as_slice())
        .map_err(|e| format!("it is not PKCS#8 ({e})"))?;
    if info.algorithm.oid != ALGORITHM_OID {
        return Err(format!(
            "it holds {} (algorithm {}); olc keys are ed25519",
            algorithm_name(&info.algorithm.oid.to_string()),
            info.algorithm.oid
        ));
    }
    // Reads v1 (what is written now) and v2 (what the first releases wrote) alike.
    let pair = KeypairBytes::try_from(info)
        .map_err(|e| format!("it is not a valid ed25519 private key ({e})"))?;
    let signing = SigningKey::from_bytes(&pair.secret_key);
    if let Some(public) = &pair.public_key
        && public.as_ref() != signing.verifying_key().as_bytes()
    {
        return Err(
            "the public key stored in it does not belong to its private key \
             (the file is damaged or was edited)"
                .into(),
        );
    }
    Ok(Identity::from_seed(&signing.to_bytes()))
}

/// Names the key types people are likely to hand over by mistake.
fn algorithm_name(oid: &str) -> &'static str {
    match oid {
        "1.2.840.113549.1.1.1" => "an RSA key",
        "1.2.840.10045.2.1" => "an elliptic-curve (ECDSA) key",
        "1.3.101.110" => "an X25519 key",
        "1.3.101.111" => "an X448 key",
        "1.3.101.113" => "an Ed448 key",
        _ => "a key of another type",
    }
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
    if dir.exists() {
        return Err(KeyFileError::ParentNotDirectory(dir.to_path_buf()));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create directory", dir))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), KeyFileError> {
    if dir.exists() && !dir.is_dir() {
        return Err(KeyFileError::ParentNotDirectory(dir.to_path_buf()));
    }
    fs::create_dir_all(dir).map_err(io_error("create directory", dir))
}

#[cfg(test)]
#[cfg(unix)]
mod tests;

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
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// What `olc keys new` wrote before PKCS#8 v1 (ed25519-dalek's `to_pkcs8_pem`: v2,
    /// the public key appended as `[1] IMPLICIT BIT STRING`), for `from_seed(&[7; 32])`.
    /// Such files exist on users' machines and must keep loading to the same key.
    const OLD_V2_SEED_7: &str = "-----BEGIN PRIVATE KEY-----
MFECAQEwBQYDK2VwBCIEIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH
gSEA6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=
-----END PRIVATE KEY-----
";
    const SEED_7_PUBLIC: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";

    /// RFC 8410 section 7: SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET
    /// STRING { OCTET STRING (32 bytes) } }; the seed follows.
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    fn malformed_reason(err: KeyFileError) -> String {
        match err {
            KeyFileError::Malformed { reason, .. } => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
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
    fn saved_key_is_pkcs8_v1_the_48_byte_der_of_rfc_8410() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let seed = [7u8; 32];
        save(&Identity::from_seed(&seed), &path, false).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let (label, der) = pem::decode_vec(text.as_bytes()).unwrap();
        assert_eq!(label, "PRIVATE KEY");
        let mut expected = V1_PREFIX.to_vec();
        expected.extend_from_slice(&seed);
        assert_eq!(der, expected);
        assert!(text.ends_with("-----END PRIVATE KEY-----\n"), "{text}");
    }

    #[test]
    fn key_files_written_by_the_old_v2_writer_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_private(dir.path(), "old.pem", OLD_V2_SEED_7.as_bytes());
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.public_key().to_string(), SEED_7_PUBLIC);
        assert_eq!(
            loaded.public_key(),
            Identity::from_seed(&[7; 32]).public_key()
        );
        // The loaded key is the original, secret and all.
        assert_eq!(
            *loaded.secret_seed(),
            *Identity::from_seed(&[7; 32]).secret_seed()
        );
    }

    #[test]
    fn a_v2_file_whose_public_key_is_not_its_own_is_refused() {
        let (_, mut der) = pem::decode_vec(OLD_V2_SEED_7.as_bytes()).unwrap();
        let last = der.len() - 1;
        der[last] ^= 1;
        let text = pem::encode_string("PRIVATE KEY", LineEnding::LF, &der).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = write_private(dir.path(), "edited.pem", text.as_bytes());
        let reason = malformed_reason(load(&path).unwrap_err());
        assert!(reason.contains("does not belong"), "{reason}");
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

        // Something that is not a key is called that, whatever its mode.
        let public = dir.path().join("id_ed25519.pub");
        fs::write(&public, b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host\n").unwrap();
        fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).unwrap();
        let reason = malformed_reason(load(&public).unwrap_err());
        assert!(reason.contains("not PEM text"), "{reason}");
    }

    #[test]
    fn a_directory_is_called_a_directory_not_a_loose_key() {
        let dir = tempfile::tempdir().unwrap();
        // World-readable, like /tmp: judged by its mode, it would get "chmod 600" advice.
        for mode in [0o755, 0o1777, 0o700] {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
            let err = load(dir.path()).unwrap_err();
            assert!(matches!(err, KeyFileError::IsDirectory(_)), "{err:?}");
            let text = err.to_string();
            assert!(text.contains("is a directory, not a key file"), "{text}");
            assert!(!text.contains("chmod"), "{text}");
        }
        for force in [false, true] {
            let err = save(&Identity::from_seed(&[1; 32]), dir.path(), force).unwrap_err();
            assert!(matches!(err, KeyFileError::IsDirectory(_)), "{err:?}");
            assert!(!err.to_string().contains("--force"), "{err}");
        }
    }

    #[test]
    fn a_device_is_not_a_key_file() {
        // /dev/null is mode 0666: judged by its mode, it would get "chmod 600" advice.
        let reason = malformed_reason(load(Path::new("/dev/null")).unwrap_err());
        assert!(reason.contains("not a regular file"), "{reason}");
    }

    #[test]
    fn a_file_where_a_directory_should_be_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_private(dir.path(), "plain", b"x");
        let err = save(&Identity::from_seed(&[1; 32]), &file.join("key.pem"), false).unwrap_err();
        assert!(
            matches!(err, KeyFileError::ParentNotDirectory(_)),
            "{err:?}"
        );
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[test]
    fn io_errors_state_their_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_private(dir.path(), "plain", b"x");
        // Opening "plain/key.pem" fails with ENOTDIR: neither "not found" nor a key problem.
        let err = load(&file.join("key.pem")).unwrap_err();
        assert!(matches!(err, KeyFileError::Io { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("cannot read key file "), "{text}");
        assert_eq!(text.matches("os error 20").count(), 1, "{text}");
        // The cause is in the text, so it must not be the source too: `{:#}` of a chain
        // would print it twice.
        assert!(std::error::Error::source(&err).is_none());
    }

    #[test]
    fn no_key_file_error_repeats_its_source() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let all = [
            KeyFileError::NotFound("k".into()),
            KeyFileError::IsDirectory("k".into()),
            KeyFileError::ParentNotDirectory("k".into()),
            KeyFileError::AlreadyExists("k".into()),
            KeyFileError::LoosePermissions {
                path: "k".into(),
                mode: 0o644,
            },
            KeyFileError::Malformed {
                path: "k".into(),
                reason: "r".into(),
            },
            KeyFileError::Encode("e".into()),
            KeyFileError::Io {
                action: "read",
                path: "k".into(),
                error: io(),
            },
        ];
        for err in all {
            if let Some(source) = std::error::Error::source(&err) {
                assert!(
                    !err.to_string().contains(&source.to_string()),
                    "{err:?} shows its source and returns it"
                );
            }
        }
    }

    #[test]
    fn bad_key_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, KeyFileError::NotFound(_)), "{missing:?}");
        assert!(missing.to_string().contains("olc keys new"), "{missing}");

        let x25519 = {
            let mut der = V1_PREFIX.to_vec();
            der[11] = 0x6e; // OID 1.3.101.110
            der.extend_from_slice(&[7; 32]);
            pem::encode_string("PRIVATE KEY", LineEnding::LF, &der).unwrap()
        };
        let v1_with_parameters = {
            // The algorithm identifier carries a NULL parameter, which RFC 8410 forbids.
            let mut der = vec![0x30, 0x30, 0x02, 0x01, 0x00, 0x30, 0x07];
            der.extend_from_slice(&[0x06, 0x03, 0x2b, 0x65, 0x70, 0x05, 0x00]);
            der.extend_from_slice(&[0x04, 0x22, 0x04, 0x20]);
            der.extend_from_slice(&[7; 32]);
            pem::encode_string("PRIVATE KEY", LineEnding::LF, &der).unwrap()
        };
        let short_seed = {
            let mut der = vec![0x30, 0x2d, 0x02, 0x01, 0x00, 0x30, 0x05];
            der.extend_from_slice(&[0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x21, 0x04, 0x1f]);
            der.extend_from_slice(&[7; 31]);
            pem::encode_string("PRIVATE KEY", LineEnding::LF, &der).unwrap()
        };
        let cases: [(&str, &[u8], &str); 12] = [
            ("empty", b"", "it is empty"),
            ("blank", b"  \n\n", "it is empty"),
            ("garbage", b"not a key at all", "not PEM text"),
            ("binary", &[0xff, 0xfe, 0x00, 0x80], "binary data"),
            (
                "bad-base64",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "not PKCS#8",
            ),
            (
                "not-base64",
                b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
                "PEM text is damaged",
            ),
            (
                "encrypted",
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                "openssh",
                b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
                "OpenSSH key",
            ),
            (
                "public",
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "holds a public key",
            ),
            (
                "certificate",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "PEM \"CERTIFICATE\" block",
            ),
            ("x25519", x25519.as_bytes(), "an X25519 key"),
            ("short-seed", short_seed.as_bytes(), "not a valid ed25519"),
        ];
        for (name, bytes, expected) in cases {
            let p = write_private(dir.path(), name, bytes);
            let err = load(&p).unwrap_err();
            assert!(
                err.to_string().contains("is not a key file"),
                "{name}: {err}"
            );
            let reason = malformed_reason(err);
            assert!(reason.contains(expected), "{name}: {reason}");
        }
        let p = write_private(dir.path(), "params", v1_with_parameters.as_bytes());
        assert!(matches!(load(&p), Err(KeyFileError::Malformed { .. })));

        let huge = write_private(dir.path(), "huge", &vec![b'A'; 100_000]);
        let err = load(&huge).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }
}

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
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
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

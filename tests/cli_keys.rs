//! `olc keys` and the CLI's shape, driven through the real binary.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn olc(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_olc"))
        .args(args)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("OLC_KEY")
        .env_remove("RUST_LOG")
        .output()
        .expect("run olc")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "olc failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn help_lists_every_command_group() {
    let dir = tempfile::tempdir().unwrap();
    let out = olc(dir.path(), &["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for group in [
        "keys",
        "worker",
        "coordinator",
        "workers",
        "job",
        "run",
        "model",
        "receipt",
        "devnet",
    ] {
        assert!(
            help.contains(&format!("  {group} ")),
            "help lacks {group}:\n{help}"
        );
    }
}

#[test]
fn keys_new_writes_the_default_location_and_show_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let created = json(&olc(dir.path(), &["keys", "new", "--json"]));
    let path = dir.path().join("data/olc/key.pem");
    assert_eq!(created["path"], path.to_str().unwrap());
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pk = created["public_key"].as_str().unwrap();
    assert_eq!(pk.len(), 64);
    assert!(created["peer_id"].as_str().unwrap().starts_with("12D3KooW"));

    let shown = json(&olc(dir.path(), &["keys", "show", "--json"]));
    assert_eq!(shown, created);

    let text = olc(dir.path(), &["keys", "show"]);
    assert!(text.status.success());
    assert!(stdout(&text).contains(pk));
}

#[test]
fn keys_new_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.pem");
    let file_arg = file.to_str().unwrap();
    let first = json(&olc(
        dir.path(),
        &["keys", "new", "--out", file_arg, "--json"],
    ));

    let again = olc(dir.path(), &["keys", "new", "--out", file_arg]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    let still = json(&olc(
        dir.path(),
        &["keys", "show", "--key", file_arg, "--json"],
    ));
    assert_eq!(
        still["public_key"], first["public_key"],
        "the key was replaced"
    );

    let forced = json(&olc(
        dir.path(),
        &["keys", "new", "--out", file_arg, "--force", "--json"],
    ));
    assert_ne!(forced["public_key"], first["public_key"]);
}

#[test]
fn keys_show_refuses_loose_permissions_missing_and_garbage_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.pem");
    let file_arg = file.to_str().unwrap();
    json(&olc(
        dir.path(),
        &["keys", "new", "--out", file_arg, "--json"],
    ));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = olc(dir.path(), &["keys", "show", "--key", file_arg]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));

    let missing = olc(dir.path(), &["keys", "show"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("olc keys new"),
        "{}",
        stderr(&missing)
    );

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, b"\x00\xffnot a key").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = olc(
        dir.path(),
        &["keys", "show", "--key", garbage.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a key file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn olc_key_environment_variable_selects_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.pem");
    let created = json(&olc(
        dir.path(),
        &["keys", "new", "--out", file.to_str().unwrap(), "--json"],
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_olc"))
        .args(["keys", "show", "--json"])
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("OLC_KEY", &file)
        .output()
        .unwrap();
    assert_eq!(json(&out)["public_key"], created["public_key"]);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs an external tool, or `None` (with a note) when it is not installed here.
fn external(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("note: {program} is not installed; skipping its part of this test");
            None
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

fn ok(out: Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    out.stdout
}

/// The raw 32-byte public key OpenSSL finds in a private key file: the tail of its
/// SubjectPublicKeyInfo DER.
fn openssl_public_key(key: &Path) -> Option<String> {
    let out = external(
        "openssl",
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ],
    )?;
    let der = ok(out, "openssl pkey -pubout");
    assert_eq!(der.len(), 44, "an ed25519 SubjectPublicKeyInfo is 44 bytes");
    Some(hex(&der[der.len() - 32..]))
}

const PY_PUBLIC_KEY: &str = "import sys
from cryptography.hazmat.primitives import serialization as s
key = s.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)
print(key.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw).hex())";

fn have_python_cryptography() -> bool {
    let found =
        external("python3", &["-c", "import cryptography"]).is_some_and(|out| out.status.success());
    if !found {
        println!(
            "note: python3 with `cryptography` is not installed; skipping its part of this test"
        );
    }
    found
}

#[test]
fn keys_new_writes_pkcs8_that_openssl_and_python_read_as_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.pem");
    let created = json(&olc(
        dir.path(),
        &["keys", "new", "--out", file.to_str().unwrap(), "--json"],
    ));
    let ours = created["public_key"].as_str().unwrap();

    // The exact command from the issue, which used to say "unsupported".
    if let Some(out) = external(
        "openssl",
        &["pkey", "-in", file.to_str().unwrap(), "-noout", "-text"],
    ) {
        let text = String::from_utf8(ok(out, "openssl pkey -text")).unwrap();
        assert!(text.contains("ED25519 Private-Key"), "{text}");
    }
    if let Some(theirs) = openssl_public_key(&file) {
        assert_eq!(theirs, ours, "openssl sees another key");
    }

    if have_python_cryptography() {
        let out = external("python3", &["-c", PY_PUBLIC_KEY, file.to_str().unwrap()]).unwrap();
        let theirs = String::from_utf8(ok(out, "python cryptography")).unwrap();
        assert_eq!(theirs.trim(), ours, "python cryptography sees another key");
    }
}

#[test]
fn keys_written_by_openssl_and_python_are_read_as_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let from_openssl = dir.path().join("openssl.pem");
    if let Some(out) = external(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            from_openssl.to_str().unwrap(),
        ],
    ) {
        ok(out, "openssl genpkey");
        std::fs::set_permissions(&from_openssl, std::fs::Permissions::from_mode(0o600)).unwrap();
        let theirs = openssl_public_key(&from_openssl).unwrap();
        let shown = json(&olc(
            dir.path(),
            &[
                "keys",
                "show",
                "--key",
                from_openssl.to_str().unwrap(),
                "--json",
            ],
        ));
        assert_eq!(shown["public_key"], theirs.as_str());
    }

    if have_python_cryptography() {
        let from_python = dir.path().join("python.pem");
        let script = "import os, sys
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
key = Ed25519PrivateKey.generate()
pem = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, pem)
print(key.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw).hex())";
        let out = external("python3", &["-c", script, from_python.to_str().unwrap()]).unwrap();
        let theirs = String::from_utf8(ok(out, "python key generation")).unwrap();
        let shown = json(&olc(
            dir.path(),
            &[
                "keys",
                "show",
                "--key",
                from_python.to_str().unwrap(),
                "--json",
            ],
        ));
        assert_eq!(shown["public_key"], theirs.trim());
    }
}

#[test]
fn a_directory_as_the_key_path_is_called_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    std::fs::create_dir(&keys_dir).unwrap();
    // Mode 0755 like most directories (and /tmp is 1777): not a reason to say "chmod 600".
    std::fs::set_permissions(&keys_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let arg = keys_dir.to_str().unwrap();

    let out = olc(dir.path(), &["keys", "show", "--key", arg]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is a directory, not a key file"), "{err}");
    assert!(!err.contains("chmod"), "{err}");

    for force in [&[][..], &["--force"][..]] {
        let mut args = vec!["keys", "new", "--out", arg];
        args.extend_from_slice(force);
        let out = olc(dir.path(), &args);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("is a directory, not a key file"), "{err}");
        assert!(!err.contains("pass --force"), "{err}");
    }
}

#[test]
fn key_file_errors_print_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    // "plain/key.pem": opening it fails with ENOTDIR, an I/O error with an OS cause.
    let key = plain.join("key.pem");
    let out = olc(
        dir.path(),
        &["keys", "show", "--key", key.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot read key file"), "{err}");
    assert_eq!(err.matches("os error 20").count(), 1, "{err}");

    let out = olc(dir.path(), &["keys", "new", "--out", key.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is not a directory"), "{err}");
}

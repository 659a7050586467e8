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

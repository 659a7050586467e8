//! A one-shot command whose reader has gone (`olc job list | head`) ends quietly: no panic,
//! no exit status 101.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::olc;

/// Runs `olc args` with stdout a pipe whose reading end is already closed, so its first
/// print meets a broken pipe.
fn into_closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_olc"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("OLC_KEY")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    let key = tmp.path().join("k.pem");
    assert!(
        olc(&["model", "init", "--out", model.to_str().unwrap()])
            .status
            .success()
    );
    assert!(
        olc(&["keys", "new", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    let m = model.to_str().unwrap();
    let commands: [&[&str]; 3] = [
        &[
            "run",
            "infer",
            "--model",
            m,
            "--prompt",
            "hi",
            "--max-tokens",
            "4",
            "--json",
        ],
        &["model", "show", m, "--json"],
        &["keys", "show", "--key", key.to_str().unwrap(), "--json"],
    ];
    for args in commands {
        let (status, stderr) = into_closed_pipe(args);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(status.code(), Some(101), "{args:?}: {stderr}");
        // Killed by SIGPIPE, as `ls | head` is: the shell treats it as a normal end.
        assert_eq!(
            status.signal(),
            Some(SIGPIPE),
            "{args:?}: {status} {stderr}"
        );
    }
}

/// SIGPIPE's number on Linux.
const SIGPIPE: i32 = 13;

//! Helpers shared by the tests that drive the `olc` binary.
#![allow(dead_code, clippy::unwrap_used)] // test code: a panic is a test failure

use std::process::{Command, Output};

/// Runs `olc` with `args`, without the caller's log level or key leaking in.
pub fn olc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_olc"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("OLC_KEY")
        .output()
        .unwrap()
}

/// The one JSON value a successful `--json` command printed.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "olc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

//! The arrows of ../shared/DESIGN.md: which of our crates may depend on which. A new
//! dependency between our crates that is not listed here fails this test, so the layers
//! stay as designed (and "never" arrows such as coordinator -> worker cannot creep back).
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Each crate of ours, and the crates of ours it may use (normal dependencies; tests and
/// benches may use more).
const ALLOWED: &[(&str, &[&str])] = &[
    ("olc-protocol", &[]),
    ("olc-gpu", &[]),
    ("olc-content", &["olc-protocol"]),
    ("olc-net", &["olc-protocol"]),
    ("olc-exec", &["olc-protocol", "olc-gpu", "olc-content"]),
    ("olc-client", &["olc-protocol", "olc-net", "olc-content"]),
    // The HTTP layer reaches the network through its own `Network` trait; the one
    // implementation over a real network (`OlcNetwork`) is a submitter of the client's.
    ("olc-gateway", &["olc-protocol", "olc-client"]),
    (
        "olc-worker",
        &[
            "olc-protocol",
            "olc-gpu",
            "olc-net",
            "olc-content",
            "olc-exec",
        ],
    ),
    (
        "olc-coordinator",
        &["olc-protocol", "olc-net", "olc-content", "olc-exec"],
    ),
    // Dev-only (see `only_dev_dependencies_name_the_testkit`): its fixtures link the
    // coordinator's job book, the engine's models and content ids.
    (
        "olc-testkit",
        &["olc-protocol", "olc-gpu", "olc-content", "olc-coordinator"],
    ),
    (
        "olc",
        &[
            "olc-protocol",
            "olc-gpu",
            "olc-content",
            "olc-net",
            "olc-exec",
            "olc-client",
            "olc-worker",
            "olc-coordinator",
            "olc-gateway",
        ],
    ),
];

/// The crate of shared test fixtures: tests and benches only.
const TESTKIT: &str = "olc-testkit";

/// `cargo metadata` of the workspace, our packages only.
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn our_crates_depend_only_along_the_designed_arrows() {
    let meta = metadata();
    let packages = meta["packages"].as_array().unwrap();
    let ours: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(name, deps)| (*name, deps.iter().copied().collect()))
        .collect();
    let mut wrong = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        let Some(may) = allowed.get(name) else {
            wrong.push(format!("{name} is not in the table of arrows: add it"));
            continue;
        };
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            let normal = dep["kind"].is_null();
            if normal && ours.contains(dep_name) && !may.contains(dep_name) {
                wrong.push(format!("{name} -> {dep_name}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows DESIGN.md does not allow: {wrong:?}"
    );
}

/// The testkit links the coordinator, the engine and the content store into whatever uses
/// it: as a normal (or build) dependency it would ship fixtures in a product and let any
/// crate reach every layer through it.
#[test]
fn only_dev_dependencies_name_the_testkit() {
    let meta = metadata();
    let packages = meta["packages"].as_array().unwrap();
    assert!(
        packages.iter().any(|p| p["name"] == TESTKIT),
        "{TESTKIT} is not in the workspace"
    );
    let mut wrong = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        for dep in package["dependencies"].as_array().unwrap() {
            if dep["name"] == TESTKIT && dep["kind"] != "dev" {
                wrong.push(format!("{name} -> {TESTKIT} (kind {})", dep["kind"]));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{TESTKIT} is for [dev-dependencies] only: {wrong:?}"
    );
}

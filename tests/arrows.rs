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
        ],
    ),
];

#[test]
fn our_crates_depend_only_along_the_designed_arrows() {
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
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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

//! The coordinator core is pure (DESIGN.md, "Arrows"): no file under `src/core/` may
//! reach the runtime, the database, the network, the blob store, the executor or the
//! logger, nor read the clock or the disk itself (time comes in as `now_ms`; what should be
//! logged goes out as a `Notice`). A source scan is enough,
//! since any use of those names them.

use std::path::{Path, PathBuf};

const FORBIDDEN: [&str; 11] = [
    "tokio",
    "tracing",
    "sled",
    "olc_net",
    "olc_content",
    "olc_exec",
    "SystemTime",
    "Instant::now",
    "std::fs",
    "std::net",
    "std::thread",
];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    Ok(())
}

#[test]
fn the_core_names_no_io_crate() -> std::io::Result<()> {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    rust_files(&core, &mut files)?;
    assert!(files.len() > 5, "src/core/ looks empty: {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        for (n, line) in text.lines().enumerate() {
            for name in FORBIDDEN {
                if line.contains(name) {
                    offences.push(format!("{}:{}: {name}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "the core must stay pure:\n{}",
        offences.join("\n")
    );
    Ok(())
}

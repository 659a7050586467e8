//! Finding the real model the tests check against: SmolLM2-135M-Instruct as a Q4_1 GGUF,
//! fetched by `deploy/fetch-smollm2.sh` (CI runs it and sets `OLC_SMOLLM2_GGUF` and
//! `OLC_REQUIRE_REAL_MODEL`).

use std::path::PathBuf;

pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model's path: `OLC_SMOLLM2_GGUF`, else where the fetch script puts it. Absent, a
/// test skips with a notice, unless `OLC_REQUIRE_REAL_MODEL` is set (CI), where it fails.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let path = std::env::var_os("OLC_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("OLC_MODEL_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME")
                        .map(PathBuf::from)
                        .or_else(|| {
                            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                        })
                        .map(|c| c.join("olc/models"))
                })?;
            Some(cache.join(SMOLLM2_FILE))
        });
    match path {
        Some(p) if p.is_file() => Some(p),
        other => {
            let shown = other.map_or("(no HOME)".into(), |p| p.display().to_string());
            let why = format!(
                "SmolLM2 GGUF not found at {shown}: run ./deploy/fetch-smollm2.sh \
                 (or set OLC_SMOLLM2_GGUF)"
            );
            if std::env::var_os("OLC_REQUIRE_REAL_MODEL").is_some() {
                panic!("{why}");
            }
            eprintln!("skipping: {why}");
            None
        }
    }
}

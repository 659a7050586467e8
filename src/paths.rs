//! Where olc keeps things by default, following the platform's conventions
//! (XDG on Linux: `$XDG_DATA_HOME/olc`, else `~/.local/share/olc`).

use std::path::PathBuf;

use anyhow::{Context, Result};

pub fn data_dir() -> Result<PathBuf> {
    directories::ProjectDirs::from("", "", "olc")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .context(
            "cannot find a home directory for olc's data; pass the path explicitly (--key FILE)",
        )
}

pub fn default_key_file() -> Result<PathBuf> {
    Ok(data_dir()?.join("key.pem"))
}

/// The key file a command should use: the one given, else the default.
pub fn key_file(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(path) => Ok(path),
        None => default_key_file(),
    }
}

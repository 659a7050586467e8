//! What the two daemons share: a runtime, a key that is loaded or created, and a clean
//! stop on Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use olc_content::keyfile;
use olc_protocol::Identity;

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The daemon's data directory: the one given, else `<olc data dir>/<role>`.
pub fn data_dir(given: Option<PathBuf>, role: &str) -> Result<PathBuf> {
    match given {
        Some(dir) => Ok(dir),
        None => Ok(crate::paths::data_dir()?.join(role)),
    }
}

/// Loads the key at `path`, creating it (mode 0600) on first start.
pub fn load_or_create_key(path: &Path) -> Result<Identity> {
    match keyfile::load(path) {
        Ok(identity) => Ok(identity),
        Err(keyfile::KeyFileError::NotFound(_)) => {
            let identity = Identity::generate()?;
            keyfile::save(&identity, path, false).context("cannot create the daemon's key")?;
            println!("created a new key at {}", path.display());
            Ok(identity)
        }
        Err(e) => Err(e.into()),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}

//! Where a model is on disk: a Hugging Face checkpoint directory, or one GGUF file. Every
//! command that takes a model takes either; a job's model arrives at a worker as a
//! directory of the content's files, so a directory holding exactly one GGUF file (by its
//! magic, whatever its name) and no `config.json` is that GGUF model.

use std::path::{Path, PathBuf};

use super::error::{ModelError, Result};

/// A model's location, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory with `config.json`, the weights and `tokenizer.json`.
    HuggingFace(PathBuf),
    /// One GGUF file, which holds the config, the weights and the tokenizer.
    Gguf(PathBuf),
}

impl ModelSource {
    /// Resolves `path`: a `.gguf` file (or any file starting with GGUF's magic), or a
    /// directory (Hugging Face, or holding one GGUF file).
    pub fn find(path: &Path) -> Result<Self> {
        if path.is_file() {
            if !super::gguf::is_gguf(path) {
                return Err(ModelError::Unsupported {
                    path: path.to_path_buf(),
                    feature: "a model file that is not GGUF (a Hugging Face model is a \
                              directory: config.json, model.safetensors, tokenizer.json)"
                        .into(),
                });
            }
            return Ok(Self::Gguf(path.to_path_buf()));
        }
        // Not there at all: loading it as Hugging Face names the first file it lacks.
        if !path.is_dir() || path.join("config.json").is_file() {
            return Ok(Self::HuggingFace(path.to_path_buf()));
        }
        let mut ggufs = Vec::new();
        let entries = std::fs::read_dir(path).map_err(|e| ModelError::io(path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ModelError::io(path, e))?;
            let p = entry.path();
            // By content, not by name: a model published as `model.q8` arrives under that
            // name too.
            if p.is_file() && super::gguf::is_gguf(&p) {
                ggufs.push(p);
            }
        }
        match ggufs.len() {
            // Loading it as Hugging Face names what such a directory lacks.
            0 => Ok(Self::HuggingFace(path.to_path_buf())),
            1 => Ok(Self::Gguf(ggufs.remove(0))),
            n => Err(ModelError::Unsupported {
                path: path.to_path_buf(),
                feature: format!("{n} GGUF files in one directory: name the model's file"),
            }),
        }
    }

    /// The directory the model's files are named relative to.
    pub fn root(&self) -> &Path {
        match self {
            Self::HuggingFace(dir) => dir,
            Self::Gguf(file) => file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        }
    }

    /// The files the loader reads, relative to [`ModelSource::root`]: what the model's
    /// content id covers and what a job ships.
    pub fn files(&self) -> Result<Vec<String>> {
        match self {
            Self::HuggingFace(dir) => super::Checkpoint::hf_files(dir),
            Self::Gguf(file) => {
                let name = file.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                    ModelError::Unsupported {
                        path: file.clone(),
                        feature: "a file name that is not UTF-8".into(),
                    }
                })?;
                Ok(vec![name.to_string()])
            }
        }
    }

    /// The path a user named it by: the directory or the file.
    pub fn path(&self) -> &Path {
        match self {
            Self::HuggingFace(p) | Self::Gguf(p) => p,
        }
    }
}

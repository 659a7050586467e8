//! One error type for everything that reads or writes a checkpoint, so that a worker can turn
//! any refusal into a penalty for the peer that sent the files with a message an operator can
//! act on: every variant names the file, and where there is one, the tensor.

use std::path::PathBuf;

/// Why a checkpoint, adapter or tokenizer was refused (or could not be written).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: unsupported architecture {found:?} (supported: {supported})")]
    UnknownArchitecture {
        path: PathBuf,
        found: Vec<String>,
        supported: &'static str,
    },
    #[error("{path}: invalid config: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("{path}: unsupported feature: {feature}")]
    Unsupported { path: PathBuf, feature: String },
    #[error("{path}: file is {len} bytes, more than the {max} bytes this model can need")]
    FileTooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("{path}: not a valid safetensors file: {source}")]
    SafeTensors {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
    #[error("{path}: tensor `{tensor}` is missing")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: unexpected tensor `{tensor}`")]
    UnexpectedTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}` appears more than once")]
    DuplicateTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    WrongShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor `{tensor}` has dtype {found}, expected F32, BF16 or F16")]
    WrongDtype {
        path: PathBuf,
        tensor: String,
        found: String,
    },
    /// A weight is NaN or infinite; `index` is the first such element in row-major order.
    #[error("{path}: tensor `{tensor}` holds a non-finite value ({value}) at element {index}")]
    NonFinite {
        path: PathBuf,
        tensor: String,
        index: usize,
        value: NonFiniteKind,
    },
    #[error("{path}: tensor `{tensor}`: {reason}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{path}: shard `{shard}` {reason}")]
    BadShard {
        path: PathBuf,
        shard: String,
        reason: String,
    },
    #[error("{path}: no model.safetensors or model.safetensors.index.json")]
    NoWeights { path: PathBuf },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{path}: invalid adapter: {reason}")]
    Adapter { path: PathBuf, reason: String },
    /// The file is not well-formed GGUF (bad magic, truncated, inconsistent offsets).
    #[error("{path}: not a valid GGUF file: {reason}")]
    Gguf { path: PathBuf, reason: String },
    /// A GGUF metadata entry is missing, has the wrong type or an unusable value.
    #[error("{path}: GGUF metadata `{key}`: {reason}")]
    GgufKey {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error(
        "{path}: tensor `{tensor}` has ggml type {id} ({type_name}), which OLC does not \
         support; supported: {supported}"
    )]
    UnsupportedTensorType {
        path: PathBuf,
        tensor: String,
        id: u32,
        /// ggml's name for the type, or `unknown`.
        type_name: &'static str,
        supported: String,
    },
    #[error("unknown preset `{0}` (expected tiny, small or smollm2-135m)")]
    UnknownPreset(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Self::Json {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(path: impl Into<PathBuf>, feature: impl Into<String>) -> Self {
        Self::Unsupported {
            path: path.into(),
            feature: feature.into(),
        }
    }

    pub(crate) fn gguf(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Gguf {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn gguf_key(
        path: impl Into<PathBuf>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::GgufKey {
            path: path.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn adapter(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Adapter {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Which non-finite value was found, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFiniteKind {
    NaN,
    PosInf,
    NegInf,
}

impl NonFiniteKind {
    /// Classifies a value already known not to be finite.
    pub fn of(v: f32) -> Self {
        if v.is_nan() {
            Self::NaN
        } else if v > 0.0 {
            Self::PosInf
        } else {
            Self::NegInf
        }
    }
}

impl std::fmt::Display for NonFiniteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NaN => "NaN",
            Self::PosInf => "+inf",
            Self::NegInf => "-inf",
        })
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

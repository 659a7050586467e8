//! Loading a checkpoint's weights (`model.safetensors`, or a sharded
//! `model.safetensors.index.json`) into f32 tensors in Hugging Face layout.
//!
//! Unexpected tensors are refused, not ignored: an extra `o_proj.bias` or a Gemma-style norm
//! means the file describes a different function than the one we would compute. The only
//! exceptions are `rotary_emb.inv_freq` buffers (derived from the config) and, for tied
//! embeddings, an `lm_head.weight` that is an exact copy of the embeddings.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::files::{MAX_INDEX_JSON, read_capped, read_json};
use super::names::{self, LinearModule};
use super::tensor::{self, MAX_HEADER};
use crate::compute::QuantType;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A row-major matrix; linear weights are `[out, in]` as Hugging Face stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    /// The values, `[rows, cols]`; empty when the matrix is stored as `blocks`.
    pub data: Vec<f32>,
    /// A base model's weights as its file stores them (a GGUF model's quantized blocks),
    /// kept so: the backend computes with them directly, and nothing is widened in memory.
    pub blocks: Option<Blocks>,
}

/// Rows of weights in a [`QuantType`]: `rows * ty.row_bytes(cols)` bytes, row after row.
#[derive(Clone, PartialEq)]
pub struct Blocks {
    pub ty: QuantType,
    pub bytes: Vec<u8>,
}

/// Type and size only: the bytes are megabytes.
impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blocks {} ({} bytes)", self.ty, self.bytes.len())
    }
}

impl Matrix {
    /// An f32 matrix.
    pub fn f32(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        Matrix {
            rows,
            cols,
            data,
            blocks: None,
        }
    }

    /// A matrix kept in `ty`'s blocks.
    pub fn quantized(rows: usize, cols: usize, ty: QuantType, bytes: Vec<u8>) -> Self {
        Matrix {
            rows,
            cols,
            data: Vec::new(),
            blocks: Some(Blocks { ty, bytes }),
        }
    }

    /// The storage type: f32, or the blocks' type.
    pub fn storage(&self) -> QuantType {
        self.blocks.as_ref().map_or(QuantType::F32, |b| b.ty)
    }
}

/// One decoder layer's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    pub input_layernorm: Vec<f32>,
    pub q_proj: Matrix,
    pub k_proj: Matrix,
    pub v_proj: Matrix,
    pub o_proj: Matrix,
    /// Present exactly when the architecture has q/k/v biases (Qwen2).
    pub q_bias: Option<Vec<f32>>,
    pub k_bias: Option<Vec<f32>>,
    pub v_bias: Option<Vec<f32>>,
    pub post_attention_layernorm: Vec<f32>,
    pub gate_proj: Matrix,
    pub up_proj: Matrix,
    pub down_proj: Matrix,
}

impl LayerWeights {
    pub fn linear(&self, module: LinearModule) -> &Matrix {
        match module {
            LinearModule::QProj => &self.q_proj,
            LinearModule::KProj => &self.k_proj,
            LinearModule::VProj => &self.v_proj,
            LinearModule::OProj => &self.o_proj,
            LinearModule::GateProj => &self.gate_proj,
            LinearModule::UpProj => &self.up_proj,
            LinearModule::DownProj => &self.down_proj,
        }
    }
}

/// All parameters of a Llama-family model, widened to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaWeights {
    /// `[vocab, hidden]`.
    pub embed_tokens: Matrix,
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>,
    /// `None` when the embeddings are tied: use [`LlamaWeights::lm_head`].
    pub lm_head: Option<Matrix>,
}

impl LlamaWeights {
    /// The output projection `[vocab, hidden]`, which is the embedding matrix when tied.
    pub fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Bytes the weights take once loaded: block-quantized matrices at their size,
    /// everything else at 4 bytes a value (F16 and BF16 matrices are widened at load).
    pub fn bytes(&self) -> u64 {
        fn matrix(m: &Matrix) -> u64 {
            match &m.blocks {
                Some(b) if b.ty.is_block_quantized() => b.bytes.len() as u64,
                _ => 4 * (m.rows as u64) * (m.cols as u64),
            }
        }
        fn vector(v: &Option<Vec<f32>>) -> u64 {
            v.as_ref().map_or(0, |v| 4 * v.len() as u64)
        }
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                LinearModule::ALL
                    .iter()
                    .map(|&m| matrix(l.linear(m)))
                    .sum::<u64>()
                    + 4 * (l.input_layernorm.len() + l.post_attention_layernorm.len()) as u64
                    + vector(&l.q_bias)
                    + vector(&l.k_bias)
                    + vector(&l.v_bias)
            })
            .sum();
        layers
            + matrix(&self.embed_tokens)
            + self.lm_head.as_ref().map_or(0, matrix)
            + 4 * self.norm.len() as u64
    }

    /// Loads the weights in `dir` and checks them against `config`.
    pub fn load(dir: &Path, config: &ModelConfig) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        let mut collector = Collector::new(config);
        let mut missing_from = single.clone();
        if single.is_file() {
            let max = collector.max_file_len();
            collector.load_file(&single, max, None)?;
        } else if index.is_file() {
            load_sharded(dir, &index, &mut collector)?;
            missing_from = index;
        } else {
            return Err(ModelError::NoWeights {
                path: dir.to_path_buf(),
            });
        }
        collector.finish(&missing_from)
    }

    /// Parses one in-memory safetensors buffer; `path` only names it in errors.
    pub fn from_safetensors_bytes(bytes: &[u8], config: &ModelConfig, path: &Path) -> Result<Self> {
        let mut collector = Collector::new(config);
        collector.load_bytes(path, bytes, None)?;
        collector.finish(path)
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

fn load_sharded(dir: &Path, index_path: &Path, collector: &mut Collector<'_>) -> Result<()> {
    let index: ShardIndex = read_json(index_path, MAX_INDEX_JSON)?;
    let mut shards: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (tensor, shard) in &index.weight_map {
        if !collector.expected.contains_key(tensor.as_str()) && !collector.tolerated(tensor) {
            return Err(ModelError::UnexpectedTensor {
                path: index_path.to_path_buf(),
                tensor: tensor.clone(),
            });
        }
        shards
            .entry(shard.as_str())
            .or_default()
            .insert(tensor.as_str());
    }
    // Check every shard name before reading any shard, so a hostile entry is reported as
    // such whichever order the shards come in.
    let mut resolved = Vec::with_capacity(shards.len());
    for (shard, listed) in shards {
        let shard_path = shard_path(dir, index_path, shard)?;
        if !shard_path.is_file() {
            return Err(ModelError::BadShard {
                path: index_path.to_path_buf(),
                shard: shard.to_string(),
                reason: "does not exist".into(),
            });
        }
        resolved.push((shard_path, listed));
    }
    let max = collector.max_file_len();
    for (shard_path, listed) in resolved {
        collector.load_file(&shard_path, max, Some(&listed))?;
    }
    Ok(())
}

/// Shard names come from the sender: only a plain file name inside `dir` is acceptable.
fn shard_path(dir: &Path, index_path: &Path, shard: &str) -> Result<PathBuf> {
    let mut components = Path::new(shard).components();
    let plain = matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    ) && !shard.contains(['/', '\\']);
    if !plain {
        return Err(ModelError::BadShard {
            path: index_path.to_path_buf(),
            shard: shard.to_string(),
            reason: "is not a plain file name in the checkpoint directory".into(),
        });
    }
    Ok(dir.join(shard))
}

/// Gathers tensors from one or more files, checking each as it arrives so that at most one
/// file's raw bytes are held at a time.
struct Collector<'c> {
    config: &'c ModelConfig,
    expected: HashMap<String, Vec<usize>>,
    found: HashMap<String, Vec<f32>>,
    /// Matrices stored as GGUF blocks (`olc model import` without `--f32`).
    blocks: HashMap<String, Blocks>,
    tied_head: Option<(PathBuf, Vec<f32>)>,
}

impl<'c> Collector<'c> {
    fn new(config: &'c ModelConfig) -> Self {
        Self {
            config,
            expected: names::expected_tensors(config).into_iter().collect(),
            found: HashMap::new(),
            blocks: HashMap::new(),
            tied_head: None,
        }
    }

    fn tolerated(&self, name: &str) -> bool {
        names::is_ignorable(name) || (self.config.tie_word_embeddings && name == names::LM_HEAD)
    }

    /// No valid file for this config can be longer: all parameters at 4 bytes each, a
    /// duplicate tied head, the RoPE buffers and the largest header safetensors allows.
    fn max_file_len(&self) -> u64 {
        let c = self.config;
        let head = (c.vocab_size * c.hidden_size) as u64;
        let rope = (c.num_hidden_layers * c.head_dim) as u64;
        8 + MAX_HEADER + 4 * (c.parameter_count() + head + rope)
    }

    fn load_file(&mut self, path: &Path, max: u64, listed: Option<&BTreeSet<&str>>) -> Result<()> {
        let bytes = read_capped(path, max)?;
        self.load_bytes(path, &bytes, listed)
    }

    fn load_bytes(
        &mut self,
        path: &Path,
        bytes: &[u8],
        listed: Option<&BTreeSet<&str>>,
    ) -> Result<()> {
        let file = tensor::parse(path, bytes)?;
        let quantized = quantized_tensors(path, bytes)?;
        let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
        names.sort();
        let mut ignored = 0usize;
        for name in &names {
            if let Some(listed) = listed
                && !listed.contains(name.as_str())
            {
                return Err(ModelError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    reason: "is not listed for this shard in the index".into(),
                });
            }
            let view = tensor::view(&file, path, name)?;
            if let Some(shape) = self.expected.get(name) {
                if self.found.contains_key(name) || self.blocks.contains_key(name) {
                    return Err(ModelError::DuplicateTensor {
                        path: path.to_path_buf(),
                        tensor: name.clone(),
                    });
                }
                if let Some(&ty) = quantized.get(name.as_str()) {
                    let blocks = tensor::blocks(path, name, &view, shape, ty)?;
                    self.blocks.insert(name.clone(), blocks);
                    continue;
                }
                let data = tensor::widen(path, name, &view, shape)?;
                self.found.insert(name.clone(), data);
            } else if names::is_ignorable(name) {
                ignored += 1;
            } else if self.config.tie_word_embeddings && name == names::LM_HEAD {
                let shape = [self.config.vocab_size, self.config.hidden_size];
                let data = tensor::widen(path, name, &view, &shape)?;
                self.tied_head = Some((path.to_path_buf(), data));
            } else {
                return Err(ModelError::UnexpectedTensor {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                });
            }
        }
        if ignored > 0 {
            tracing::warn!(
                file = %path.display(),
                count = ignored,
                "ignoring rotary_emb.inv_freq buffers (recomputed from the config)"
            );
        }
        if let Some(listed) = listed {
            for name in listed {
                if file.tensor(name).is_err() {
                    return Err(ModelError::MissingTensor {
                        path: path.to_path_buf(),
                        tensor: (*name).to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, path: &Path) -> Result<LlamaWeights> {
        let c = self.config;
        let mut order = names::expected_tensors(c);
        order.retain(|(name, _)| !self.found.contains_key(name) && !self.blocks.contains_key(name));
        if let Some((name, _)) = order.into_iter().next() {
            return Err(ModelError::MissingTensor {
                path: path.to_path_buf(),
                tensor: name,
            });
        }
        let embed_tokens = self.matrix(names::EMBED, c.vocab_size, c.hidden_size)?;
        // Compared bit for bit: a copy must be exact down to the sign of zero (and a copy
        // of embeddings kept as blocks is not one).
        if let Some((head_path, head)) = self.tied_head.take()
            && (embed_tokens.blocks.is_some()
                || !head
                    .iter()
                    .zip(&embed_tokens.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits()))
        {
            return Err(ModelError::BadTensor {
                path: head_path,
                tensor: names::LM_HEAD.into(),
                reason: "differs from the embeddings although tie_word_embeddings is true".into(),
            });
        }
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for layer in 0..c.num_hidden_layers {
            let mut linear = |m: LinearModule| {
                let (rows, cols) = m.shape(c);
                self.matrix(&names::linear_weight(m, layer), rows, cols)
            };
            let q_proj = linear(LinearModule::QProj)?;
            let k_proj = linear(LinearModule::KProj)?;
            let v_proj = linear(LinearModule::VProj)?;
            let o_proj = linear(LinearModule::OProj)?;
            let gate_proj = linear(LinearModule::GateProj)?;
            let up_proj = linear(LinearModule::UpProj)?;
            let down_proj = linear(LinearModule::DownProj)?;
            let mut bias = |m: LinearModule| {
                if m.has_bias(c) {
                    self.vector(&names::linear_bias(m, layer)).map(Some)
                } else {
                    Ok(None)
                }
            };
            let q_bias = bias(LinearModule::QProj)?;
            let k_bias = bias(LinearModule::KProj)?;
            let v_bias = bias(LinearModule::VProj)?;
            layers.push(LayerWeights {
                input_layernorm: self.vector(&names::input_norm(layer))?,
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                q_bias,
                k_bias,
                v_bias,
                post_attention_layernorm: self.vector(&names::post_attention_norm(layer))?,
                gate_proj,
                up_proj,
                down_proj,
            });
        }
        let norm = self.vector(names::FINAL_NORM)?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(self.matrix(names::LM_HEAD, c.vocab_size, c.hidden_size)?)
        };
        Ok(LlamaWeights {
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>> {
        // `finish` checked presence up front; this only guards against a naming bug.
        self.found
            .remove(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: PathBuf::new(),
                tensor: name.to_string(),
            })
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        if let Some(b) = self.blocks.remove(name) {
            return Ok(Matrix::quantized(rows, cols, b.ty, b.bytes));
        }
        Ok(Matrix::f32(rows, cols, self.vector(name)?))
    }
}

/// The key of a safetensors file's `__metadata__` that names the block type of a matrix
/// stored as GGUF blocks: `olc.quant.<tensor>` = `Q4_1`. The tensor itself is U8,
/// `[rows, row bytes]`. safetensors has no dtype for blocks, so only OLC reads such a file.
pub const QUANT_KEY_PREFIX: &str = "olc.quant.";

/// The tensors a file's metadata says are stored as blocks, and their types.
fn quantized_tensors(path: &Path, bytes: &[u8]) -> Result<HashMap<String, QuantType>> {
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).map_err(|source| {
        ModelError::SafeTensors {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let mut out = HashMap::new();
    for (key, value) in metadata.metadata().iter().flatten() {
        let Some(tensor) = key.strip_prefix(QUANT_KEY_PREFIX) else {
            continue;
        };
        let ty = QuantType::from_name(value)
            .filter(|t| t.is_block_quantized())
            .ok_or_else(|| ModelError::BadTensor {
                path: path.to_path_buf(),
                tensor: tensor.to_string(),
                reason: format!(
                    "metadata gives it block type {value:?}; OLC knows Q8_0, Q4_0, Q4_1, Q4_K \
                     and Q6_K"
                ),
            })?;
        out.insert(tensor.to_string(), ty);
    }
    Ok(out)
}

/// The weight files of a checkpoint directory, by name: `model.safetensors`, or the index
/// and every shard it names (checked to be plain file names, as the loader does).
pub fn weight_files(dir: &Path) -> Result<Vec<String>> {
    if dir.join(SINGLE_FILE).is_file() {
        return Ok(vec![SINGLE_FILE.to_string()]);
    }
    let index_path = dir.join(INDEX_FILE);
    if !index_path.is_file() {
        return Err(ModelError::NoWeights {
            path: dir.to_path_buf(),
        });
    }
    let index: ShardIndex = read_json(&index_path, MAX_INDEX_JSON)?;
    let mut names = vec![INDEX_FILE.to_string()];
    let shards: BTreeSet<&String> = index.weight_map.values().collect();
    for shard in shards {
        shard_path(dir, &index_path, shard)?;
        names.push(shard.clone());
    }
    Ok(names)
}

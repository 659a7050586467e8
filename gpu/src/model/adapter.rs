//! PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! An adapter adds `scale · B·A·x` to a linear projection of the base model. Anything PEFT
//! supports that would change this (DoRA, trained biases, fully fine-tuned `modules_to_save`,
//! transposed `fan_in_fan_out` weights, layer replication) is refused rather than ignored,
//! since ignoring it would silently compute a different model.
//!
//! `rank_pattern` / `alpha_pattern` keys are matched the way PEFT matches them, as a suffix
//! of the module path on a `.` boundary (PEFT's `(^|.*\.)key$`), the first matching key in
//! file order winning. The module path is the one inside `LlamaForCausalLM`, e.g.
//! `model.layers.0.self_attn.q_proj`. Keys are taken literally: a key with regex syntax other
//! than `.` is refused, since we carry no regex engine and a guess could pick a wrong rank.
//! `target_modules` given as a list is checked the same way against every tensor in the file.
//! Given as a string, PEFT full-matches it as a regex: `all-linear` and a plain string (which
//! must then equal the module path) are checked; a real regex is not evaluated, since the
//! tensors present are what the adapter computes in any case.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::files::{MAX_SMALL_JSON, read_capped};
use super::names::LinearModule;
use super::tensor::{self, MAX_HEADER};
use super::weights::Matrix;

pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Far above any rank used in practice; bounds what a config can make us allocate.
pub const MAX_RANK: usize = 16_384;

/// Which modules the adapter declares it targets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    Names(Vec<String>),
    /// A regex in PEFT; see the module docs for what we accept.
    Pattern(String),
}

/// The parts of `adapter_config.json` that determine the adapter's function.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    /// In file order, which decides precedence.
    pub rank_pattern: Vec<(String, usize)>,
    pub alpha_pattern: Vec<(String, f64)>,
    pub target_modules: Option<TargetModules>,
    pub base_model_name_or_path: Option<String>,
}

impl AdapterConfig {
    /// Rank for a module path, after `rank_pattern`.
    pub fn rank_for(&self, module_path: &str) -> usize {
        pattern_lookup(&self.rank_pattern, module_path).unwrap_or(self.r)
    }

    /// Alpha for a module path, after `alpha_pattern`.
    pub fn alpha_for(&self, module_path: &str) -> f64 {
        pattern_lookup(&self.alpha_pattern, module_path).unwrap_or(self.lora_alpha)
    }

    /// PEFT's scaling: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA, computed in f64 (Python
    /// floats) and rounded once to f32, as torch does when it multiplies an f32 tensor by it.
    pub fn scale_for(&self, module_path: &str) -> f32 {
        let r = self.rank_for(module_path) as f64;
        let alpha = self.alpha_for(module_path);
        let scale = if self.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        };
        scale as f32
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = read_capped(path, MAX_SMALL_JSON)?;
        Self::from_json_bytes(&bytes, path)
    }

    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let raw: RawAdapterConfig =
            serde_json::from_slice(bytes).map_err(|e| ModelError::json(path, e))?;
        raw.validate(path)
    }

    fn targets(&self, module_path: &str) -> bool {
        match &self.target_modules {
            None => true,
            Some(TargetModules::Names(names)) => names.iter().any(|k| suffix_match(k, module_path)),
            // PEFT full-matches a string as a regex. A plain string can be checked exactly;
            // a real regex cannot be without a regex engine, and the tensors present are what
            // the adapter computes anyway, so it is not cross-checked.
            Some(TargetModules::Pattern(p)) => {
                p == "all-linear" || p == module_path || has_regex_syntax(p)
            }
        }
    }
}

/// PEFT's `(^|.*\.)key$` for a literal key.
fn suffix_match(key: &str, module_path: &str) -> bool {
    module_path == key
        || module_path
            .strip_suffix(key)
            .is_some_and(|rest| rest.ends_with('.'))
}

fn pattern_lookup<T: Copy>(patterns: &[(String, T)], module_path: &str) -> Option<T> {
    patterns
        .iter()
        .find(|(key, _)| suffix_match(key, module_path))
        .map(|(_, v)| *v)
}

/// A JSON object kept in file order (serde_json's map may sort keys).
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawAdapterConfig {
    peft_type: Option<String>,
    r: Option<u64>,
    lora_alpha: Option<f64>,
    use_rslora: Option<bool>,
    rank_pattern: Option<Ordered<u64>>,
    alpha_pattern: Option<Ordered<f64>>,
    target_modules: Option<TargetModules>,
    use_dora: Option<bool>,
    modules_to_save: Option<Vec<String>>,
    bias: Option<String>,
    fan_in_fan_out: Option<bool>,
    layer_replication: Option<serde_json::Value>,
    lora_bias: Option<bool>,
    base_model_name_or_path: Option<String>,
}

fn has_regex_syntax(key: &str) -> bool {
    key.contains([
        '\\', '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|',
    ])
}

fn check_key(key: &str, field: &str, path: &Path) -> Result<()> {
    if key.is_empty() || has_regex_syntax(key) {
        return Err(ModelError::unsupported(
            path,
            format!("{field} key `{key}`: only literal module names are supported"),
        ));
    }
    Ok(())
}

fn check_rank(r: u64, what: &str, path: &Path) -> Result<usize> {
    if r == 0 || r > MAX_RANK as u64 {
        return Err(ModelError::adapter(
            path,
            format!("{what} = {r} is not in 1..={MAX_RANK}"),
        ));
    }
    Ok(r as usize)
}

impl RawAdapterConfig {
    fn validate(self, path: &Path) -> Result<AdapterConfig> {
        if let Some(kind) = &self.peft_type
            && kind != "LORA"
        {
            return Err(ModelError::unsupported(path, format!("peft_type `{kind}`")));
        }
        if self.use_dora == Some(true) {
            return Err(ModelError::unsupported(path, "use_dora: true (DoRA)"));
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(ModelError::unsupported(
                path,
                "modules_to_save (fully fine-tuned modules)",
            ));
        }
        if let Some(bias) = &self.bias
            && bias != "none"
        {
            return Err(ModelError::unsupported(path, format!("bias `{bias}`")));
        }
        if self.lora_bias == Some(true) {
            return Err(ModelError::unsupported(path, "lora_bias: true"));
        }
        if self.fan_in_fan_out == Some(true) {
            return Err(ModelError::unsupported(path, "fan_in_fan_out: true"));
        }
        if self
            .layer_replication
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return Err(ModelError::unsupported(path, "layer_replication"));
        }
        let r = check_rank(
            self.r
                .ok_or_else(|| ModelError::adapter(path, "`r` is missing"))?,
            "r",
            path,
        )?;
        let lora_alpha = self.lora_alpha.unwrap_or(8.0);
        let finite = |a: f64, what: &str| {
            if a.is_finite() {
                Ok(a)
            } else {
                Err(ModelError::adapter(path, format!("{what} is not finite")))
            }
        };
        finite(lora_alpha, "lora_alpha")?;
        let mut rank_pattern = Vec::new();
        for (k, v) in self.rank_pattern.map(|o| o.0).unwrap_or_default() {
            check_key(&k, "rank_pattern", path)?;
            let rank = check_rank(v, &format!("rank_pattern[{k}]"), path)?;
            rank_pattern.push((k, rank));
        }
        let mut alpha_pattern = Vec::new();
        for (k, v) in self.alpha_pattern.map(|o| o.0).unwrap_or_default() {
            check_key(&k, "alpha_pattern", path)?;
            alpha_pattern.push((k.clone(), finite(v, &format!("alpha_pattern[{k}]"))?));
        }
        if let Some(TargetModules::Names(names)) = &self.target_modules {
            for k in names {
                check_key(k, "target_modules", path)?;
            }
        }
        Ok(AdapterConfig {
            r,
            lora_alpha,
            use_rslora: self.use_rslora.unwrap_or(false),
            rank_pattern,
            alpha_pattern,
            target_modules: self.target_modules,
            base_model_name_or_path: self.base_model_name_or_path,
        })
    }
}

/// One adapted projection: `W x + scale · B (A x)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraWeights {
    /// `[r, in]`.
    pub a: Matrix,
    /// `[out, r]`.
    pub b: Matrix,
    pub scale: f32,
}

/// A loaded adapter, checked against the base model's config.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub config: AdapterConfig,
    /// Keyed by (layer, module); iteration order is the canonical one.
    pub modules: BTreeMap<(usize, LinearModule), LoraWeights>,
}

struct ParsedName {
    layer: usize,
    module: LinearModule,
    is_a: bool,
}

/// `base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight`.
fn parse_name(name: &str, config: &ModelConfig, path: &Path) -> Result<ParsedName> {
    let unexpected = || ModelError::UnexpectedTensor {
        path: path.to_path_buf(),
        tensor: name.to_string(),
    };
    let rest = name
        .strip_prefix("base_model.model.model.layers.")
        .ok_or_else(unexpected)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unexpected)?;
    if layer.is_empty() || layer.len() > 9 || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unexpected());
    }
    let layer: usize = layer.parse().map_err(|_| unexpected())?;
    let (is_a, rest) = if let Some(rest) = rest.strip_suffix(".lora_A.weight") {
        (true, rest)
    } else if let Some(rest) = rest.strip_suffix(".lora_B.weight") {
        (false, rest)
    } else {
        return Err(unexpected());
    };
    let (_, module) = rest.split_once('.').ok_or_else(unexpected)?;
    let module = LinearModule::from_name(module).ok_or_else(unexpected)?;
    if module.module_path(layer) != format!("model.layers.{layer}.{rest}") {
        return Err(unexpected());
    }
    if layer >= config.num_hidden_layers {
        return Err(ModelError::BadTensor {
            path: path.to_path_buf(),
            tensor: name.to_string(),
            reason: format!(
                "is for layer {layer} but the base model has {} layers",
                config.num_hidden_layers
            ),
        });
    }
    Ok(ParsedName {
        layer,
        module,
        is_a,
    })
}

impl Adapter {
    /// Loads `adapter_config.json` and `adapter_model.safetensors` from `dir` for a base
    /// model with `base` as its config.
    pub fn load(dir: &Path, base: &ModelConfig) -> Result<Self> {
        let config = AdapterConfig::from_file(&dir.join(ADAPTER_CONFIG_FILE))?;
        let weights = dir.join(ADAPTER_WEIGHTS_FILE);
        if !weights.is_file() && dir.join("adapter_model.bin").is_file() {
            return Err(ModelError::unsupported(
                dir.join("adapter_model.bin"),
                "pickled adapter weights (convert to adapter_model.safetensors)",
            ));
        }
        let bytes = read_capped(&weights, max_file_len(&config, base))?;
        Self::from_parts(config, &bytes, base, &weights)
    }

    /// Checks adapter tensors (a safetensors buffer) against `config` and the base model.
    pub fn from_parts(
        config: AdapterConfig,
        bytes: &[u8],
        base: &ModelConfig,
        path: &Path,
    ) -> Result<Self> {
        let file = tensor::parse(path, bytes)?;
        let mut names: Vec<&str> = file.names();
        names.sort_unstable();
        let mut halves: BTreeMap<(usize, LinearModule), (Option<Matrix>, Option<Matrix>)> =
            BTreeMap::new();
        for name in names {
            let parsed = parse_name(name, base, path)?;
            let module_path = parsed.module.module_path(parsed.layer);
            if !config.targets(&module_path) {
                return Err(ModelError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: name.to_string(),
                    reason: "adapts a module that target_modules does not list".into(),
                });
            }
            let view = tensor::view(&file, path, name)?;
            let (out_dim, in_dim) = parsed.module.shape(base);
            let rank = config.rank_for(&module_path);
            let found = view.shape();
            // Check the base-model side first: a different base model is the likelier story.
            let fits = match (parsed.is_a, found) {
                (true, [_, i]) => *i == in_dim,
                (false, [o, _]) => *o == out_dim,
                _ => false,
            };
            let expected = if parsed.is_a {
                vec![rank, in_dim]
            } else {
                vec![out_dim, rank]
            };
            if !fits {
                return Err(ModelError::WrongShape {
                    path: path.to_path_buf(),
                    tensor: name.to_string(),
                    expected,
                    found: found.to_vec(),
                });
            }
            let found_rank = if parsed.is_a { found[0] } else { found[1] };
            if found_rank != rank {
                return Err(ModelError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: name.to_string(),
                    reason: format!(
                        "has rank {found_rank} but the adapter config gives rank {rank} for {module_path}"
                    ),
                });
            }
            let data = tensor::widen(path, name, &view, &expected)?;
            let matrix = Matrix::f32(expected[0], expected[1], data);
            let slot = halves.entry((parsed.layer, parsed.module)).or_default();
            if parsed.is_a {
                slot.0 = Some(matrix);
            } else {
                slot.1 = Some(matrix);
            }
        }
        let mut modules = BTreeMap::new();
        for ((layer, module), pair) in halves {
            let missing = |half: &str| ModelError::MissingTensor {
                path: path.to_path_buf(),
                tensor: format!(
                    "base_model.model.{}.{half}.weight",
                    module.module_path(layer)
                ),
            };
            let (a, b) = match pair {
                (Some(a), Some(b)) => (a, b),
                (None, _) => return Err(missing("lora_A")),
                (_, None) => return Err(missing("lora_B")),
            };
            let scale = config.scale_for(&module.module_path(layer));
            modules.insert((layer, module), LoraWeights { a, b, scale });
        }
        if modules.is_empty() {
            return Err(ModelError::adapter(path, "contains no LoRA tensors"));
        }
        Ok(Self { config, modules })
    }
}

/// The largest adapter file that could be valid for this config and base model.
fn max_file_len(config: &AdapterConfig, base: &ModelConfig) -> u64 {
    let r_max = config
        .rank_pattern
        .iter()
        .map(|(_, r)| *r)
        .chain([config.r])
        .max()
        .unwrap_or(config.r) as u64;
    let per_layer: u64 = LinearModule::ALL
        .iter()
        .map(|m| {
            let (o, i) = m.shape(base);
            r_max * (o + i) as u64
        })
        .sum();
    8 + MAX_HEADER + 4 * per_layer * base.num_hidden_layers as u64
}

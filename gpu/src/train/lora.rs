//! The trainable adapter: PEFT's initialisation, the PEFT files we write, and the
//! commitment that redundant workers compare.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::error::TrainError;
use crate::model::adapter::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, MAX_RANK};
use crate::model::rng::stream_for;
use crate::model::st_write::{TensorSpec, header};
use crate::model::{
    Adapter, AdapterConfig, LinearModule, LoraWeights, Matrix, ModelConfig, ModelError,
    TargetModules,
};

/// What a new adapter looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    /// In any order; duplicates are ignored.
    pub targets: Vec<LinearModule>,
}

impl Default for LoraSpec {
    /// PEFT's usual starting point for Llama: rank 8, alpha 16, on q and v.
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: vec![LinearModule::QProj, LinearModule::VProj],
        }
    }
}

impl LoraSpec {
    pub fn check(&self) -> Result<(), TrainError> {
        if self.rank == 0 || self.rank > MAX_RANK {
            return Err(TrainError::Invalid(format!(
                "rank must be in 1..={MAX_RANK}, got {}",
                self.rank
            )));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(TrainError::Invalid(format!(
                "alpha must be a positive number, got {}",
                self.alpha
            )));
        }
        if self.targets.is_empty() {
            return Err(TrainError::Invalid("no target modules given".into()));
        }
        Ok(())
    }
}

/// The PEFT tensor name of one half of one adapted projection.
pub fn tensor_name(layer: usize, module: LinearModule, half: char) -> String {
    format!(
        "base_model.model.{}.lora_{half}.weight",
        module.module_path(layer)
    )
}

/// A fresh adapter as PEFT initialises one: `A` Kaiming-uniform (`a = √5`, so the bound is
/// `1/√in`) and `B` zero, so training starts from exactly the base model. `A` comes from
/// our own seeded generator, one stream per tensor name, so the seed alone fixes it.
pub fn init_adapter(spec: &LoraSpec, base: &ModelConfig, seed: u64) -> Result<Adapter, TrainError> {
    spec.check()?;
    let mut targets: Vec<LinearModule> = spec.targets.clone();
    targets.sort();
    targets.dedup();
    let scale = (spec.alpha / spec.rank as f64) as f32;
    let mut modules = BTreeMap::new();
    for layer in 0..base.num_hidden_layers {
        for &m in &targets {
            let (out_dim, in_dim) = m.shape(base);
            let bound = 1.0 / (in_dim as f64).sqrt();
            let mut rng = stream_for(seed, &tensor_name(layer, m, 'A'));
            let a: Vec<f32> = (0..spec.rank * in_dim)
                .map(|_| {
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    ((2.0 * u - 1.0) * bound) as f32
                })
                .collect();
            let w = LoraWeights {
                a: Matrix::f32(spec.rank, in_dim, a),
                b: Matrix::f32(out_dim, spec.rank, vec![0.0; out_dim * spec.rank]),
                scale,
            };
            modules.insert((layer, m), w);
        }
    }
    let config = AdapterConfig {
        r: spec.rank,
        lora_alpha: spec.alpha,
        use_rslora: false,
        rank_pattern: Vec::new(),
        alpha_pattern: Vec::new(),
        target_modules: Some(TargetModules::Names(
            targets.iter().map(|m| m.name().to_string()).collect(),
        )),
        base_model_name_or_path: None,
    };
    Ok(Adapter { config, modules })
}

/// The adapter's tensors in name order, as `(name, shape, values)`.
fn tensors(adapter: &Adapter) -> Vec<(String, [usize; 2], &[f32])> {
    let mut out = Vec::with_capacity(adapter.modules.len() * 2);
    for (&(layer, m), w) in &adapter.modules {
        out.push((
            tensor_name(layer, m, 'A'),
            [w.a.rows, w.a.cols],
            &w.a.data[..],
        ));
        out.push((
            tensor_name(layer, m, 'B'),
            [w.b.rows, w.b.cols],
            &w.b.data[..],
        ));
    }
    out.sort_by(|x, y| x.0.cmp(&y.0));
    out
}

/// BLAKE3 over the canonical serialization of the adapter: for each tensor in name order,
/// the name's length (u32 LE) and bytes, the number of dimensions (u32 LE), each dimension
/// (u64 LE), then the values as f32 LE. Independent of the file format, so any writer that
/// produced the same tensors produces the same commitment.
pub fn adapter_commitment(adapter: &Adapter) -> String {
    let mut h = blake3::Hasher::new();
    for (name, shape, data) in tensors(adapter) {
        h.update(&(name.len() as u32).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(shape.len() as u32).to_le_bytes());
        for d in shape {
            h.update(&(d as u64).to_le_bytes());
        }
        for v in data {
            h.update(&v.to_le_bytes());
        }
    }
    h.finalize().to_hex().to_string()
}

/// `adapter_config.json` as PEFT writes it, with every field that changes the function
/// spelled out, so `peft` loads it as exactly the adapter we trained.
fn config_json(adapter: &Adapter) -> serde_json::Value {
    let c = &adapter.config;
    let mut targets: Vec<&str> = adapter.modules.keys().map(|(_, m)| m.name()).collect();
    targets.sort_unstable();
    targets.dedup();
    let ranks: serde_json::Map<String, serde_json::Value> = c
        .rank_pattern
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    let alphas: serde_json::Map<String, serde_json::Value> = c
        .alpha_pattern
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": c.base_model_name_or_path,
        "r": c.r,
        "lora_alpha": c.lora_alpha,
        "use_rslora": c.use_rslora,
        "rank_pattern": ranks,
        "alpha_pattern": alphas,
        "target_modules": targets,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_dora": false,
        "fan_in_fan_out": false,
        "modules_to_save": null,
        "init_lora_weights": true,
        "inference_mode": true,
    })
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` (f32, tensors in name
/// order) into `dir`, creating it. Each file goes to a temporary name first and is renamed
/// into place, so a crash never leaves a half-written adapter that would load.
pub fn write_adapter(dir: &Path, adapter: &Adapter) -> Result<(), TrainError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tensors = tensors(adapter);
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, shape, data)| TensorSpec {
            name: name.clone(),
            dtype: "F32",
            shape: shape.to_vec(),
            byte_len: data.len() * 4,
        })
        .collect();
    let mut bytes = header(&specs, &[("format", "pt")]);
    for (_, _, data) in &tensors {
        for v in *data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut json = serde_json::to_vec_pretty(&config_json(adapter))
        .map_err(|e| TrainError::Invalid(format!("cannot encode adapter_config.json: {e}")))?;
    json.push(b'\n');
    write_atomic(&dir.join(ADAPTER_WEIGHTS_FILE), &bytes)
        .map_err(io(&dir.join(ADAPTER_WEIGHTS_FILE)))?;
    write_atomic(&dir.join(ADAPTER_CONFIG_FILE), &json)
        .map_err(io(&dir.join(ADAPTER_CONFIG_FILE)))?;
    Ok(())
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

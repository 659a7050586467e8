//! What a worker tells the network about itself, over gossip, every few seconds.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::{Amount, ContentId, Message};

/// A worker's signed statement of what it can run and at what price. The signer is the
/// worker; its peer id derives from the signer's key.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct HardwareAdvert {
    /// Increases with every advert from the same worker, so an old advert replayed later
    /// cannot overwrite a newer one.
    pub seq: u64,
    /// Unix time in milliseconds when the advert was made; adverts far from the receiver's
    /// clock are refused.
    pub timestamp_ms: u64,
    pub hardware: Hardware,
    pub backends: Vec<Backend>,
    /// Credits per 1000 tokens of work (prefill, decode or training tokens).
    pub price_per_ktoken: Amount,
    /// Multiaddrs the worker listens on, as text.
    pub listen_addrs: Vec<String>,
    /// Models and adapters already in the worker's cache: the matcher prefers a worker that
    /// needs not fetch them.
    pub cached: Vec<ContentId>,
    pub max_concurrent_jobs: u32,
    pub active_jobs: u32,
}

impl Message for HardwareAdvert {
    const NAME: &'static str = "olc/hardware-advert";
    const MAX_SIZE: usize = 64 * 1024;
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Hardware {
    pub gpus: Vec<GpuInfo>,
    pub cpu: CpuInfo,
    pub ram_total_bytes: u64,
    pub ram_available_bytes: u64,
    /// Free space in the worker's data directory, where models are cached.
    pub disk_free_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct GpuInfo {
    pub name: String,
    pub uuid: String,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    /// (major, minor), e.g. (8, 9) for an Ada GPU.
    pub compute_capability: (u32, u32),
    pub driver_version: String,
    /// CUDA driver API version as NVML reports it, e.g. 12080 for 12.8.
    pub cuda_version: Option<u32>,
    pub power_limit_milliwatts: Option<u32>,
    pub utilization_percent: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct CpuInfo {
    pub model: String,
    pub logical_cores: u32,
    /// SIMD features the engine can use, e.g. "avx2", "fma", "avx512f", "neon".
    pub features: Vec<String>,
}

/// A compute backend of the engine. All backends give bit-identical results (the
/// canonical arithmetic contract); they differ in speed only.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
}

//! What a worker tells the network about itself, over gossip, every few seconds.

use bincode::{Decode, Encode};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::{Amount, CodecError, ContentId, IdentityError, Message, Signed, SignedError};

/// Advert intervals outside this range are refused: shorter floods the network, longer
/// makes a dead worker look alive for hours.
pub const MIN_ADVERT_INTERVAL_MS: u64 = 100;
pub const MAX_ADVERT_INTERVAL_MS: u64 = 3_600_000;

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
    /// How often this worker re-advertises; the registry expires it after three missed
    /// intervals, so each worker's liveness is judged by its own promise.
    pub interval_ms: u64,
    pub hardware: Hardware,
    pub backends: Vec<Backend>,
    /// Credits per 1000 tokens of work (prefill, decode or training tokens).
    pub price_per_ktoken: Amount,
    /// Multiaddrs the worker listens on, as text.
    pub listen_addrs: Vec<String>,
    /// Models and adapters already in the worker's cache: the matcher prefers a worker that
    /// needs not fetch them.
    pub cached: Vec<ContentId>,
    /// Models loaded in memory now: an inference job on one starts without a load, and
    /// joins the generations already running on it.
    pub resident: Vec<ContentId>,
    /// Adapters loaded in memory beside the resident models.
    pub resident_adapters: u32,
    /// Fine-tune jobs the worker runs at once, and how many it runs now.
    pub max_concurrent_jobs: u32,
    pub active_jobs: u32,
    /// Inference jobs the worker generates at once (batched together on its resident
    /// models), and how many it generates now. They do not take fine-tune slots.
    pub max_streams: u32,
    pub active_streams: u32,
}

/// The most content ids an advert lists as cached or resident: enough for any worker, and
/// keeps an advert far below its size limit.
pub const MAX_ADVERTISED_CONTENT: usize = 256;

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

/// Why an advert was refused. Every variant is a protocol violation: the gossip layer
/// rejects the message and penalises the peer that forwarded it.
#[derive(Debug, thiserror::Error)]
pub enum AdvertRejection {
    #[error("undecodable advert: {0}")]
    Decode(#[from] CodecError),
    #[error("bad advert signature: {0}")]
    Signature(#[from] IdentityError),
    #[error("advert signed by {signer} but published by {publisher}")]
    WrongPublisher { signer: String, publisher: String },
    #[error("advert has no gossip author (unsigned gossip is not accepted)")]
    NoPublisher,
    #[error("advert timestamp {timestamp_ms} is {skew_ms} ms from now (limit {limit_ms} ms)")]
    ClockSkew {
        timestamp_ms: u64,
        skew_ms: u64,
        limit_ms: u64,
    },
    #[error("advert interval {0} ms is outside 100 ms..=1 h")]
    BadInterval(u64),
    #[error("advert sequence {seq} is not newer than {last} already seen from this worker")]
    Stale { seq: u64, last: u64 },
}

impl From<SignedError> for AdvertRejection {
    fn from(e: SignedError) -> Self {
        match e {
            SignedError::Signature(e) => Self::Signature(e),
            SignedError::Codec(e) => Self::Decode(e),
        }
    }
}

/// The checks any node can make on a gossiped advert without remembering anything:
/// it decodes within limits, its signature verifies, its signer is the gossip author,
/// and its clock and interval are sane. Sequence numbers are the registry's business.
pub fn check_advert(
    data: &[u8],
    publisher: Option<&PeerId>,
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<(Signed<HardwareAdvert>, HardwareAdvert), AdvertRejection> {
    let signed = Signed::<HardwareAdvert>::from_bytes(data)?;
    let advert = signed.verify()?;
    let publisher = publisher.ok_or(AdvertRejection::NoPublisher)?;
    let signer = signed.signer().to_peer_id()?;
    if &signer != publisher {
        return Err(AdvertRejection::WrongPublisher {
            signer: signer.to_string(),
            publisher: publisher.to_string(),
        });
    }
    let skew_ms = advert.timestamp_ms.abs_diff(now_ms);
    if skew_ms > max_skew_ms {
        return Err(AdvertRejection::ClockSkew {
            timestamp_ms: advert.timestamp_ms,
            skew_ms,
            limit_ms: max_skew_ms,
        });
    }
    if !(MIN_ADVERT_INTERVAL_MS..=MAX_ADVERT_INTERVAL_MS).contains(&advert.interval_ms) {
        return Err(AdvertRejection::BadInterval(advert.interval_ms));
    }
    Ok((signed, advert))
}

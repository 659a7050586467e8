//! Turning what the probe found into the advert a worker signs. Pure: tested without
//! hardware or network.

use olc_gpu::probe::{GpuReport, HardwareReport};
use olc_protocol::messages::advert::MAX_ADVERTISED_CONTENT;
use olc_protocol::{Amount, Backend, ContentId, CpuInfo, GpuInfo, Hardware, HardwareAdvert};

/// What the worker offers, independent of the hardware it runs on.
#[derive(Debug, Clone)]
pub struct Offer {
    pub price_per_ktoken: Amount,
    pub interval_ms: u64,
    /// Fine-tune jobs at once.
    pub max_concurrent_jobs: u32,
    /// Inference jobs generating at once, batched on the resident models.
    pub max_streams: u32,
}

/// What the worker holds and runs now, beside its hardware and offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holding {
    pub active_jobs: u32,
    pub active_streams: u32,
    /// Models and adapters in the cache on disk.
    pub cached: Vec<ContentId>,
    /// Models in memory.
    pub resident: Vec<ContentId>,
    pub resident_adapters: u32,
}

pub fn hardware(report: &HardwareReport) -> Hardware {
    Hardware {
        gpus: report.gpus.iter().map(gpu).collect(),
        cpu: CpuInfo {
            model: report.cpu.model.clone(),
            logical_cores: report.cpu.logical_cores,
            features: report.cpu.features.clone(),
        },
        ram_total_bytes: report.ram_total_bytes,
        ram_available_bytes: report.ram_available_bytes,
        disk_free_bytes: report.disk_free_bytes,
    }
}

fn gpu(g: &GpuReport) -> GpuInfo {
    GpuInfo {
        name: g.name.clone(),
        uuid: g.uuid.clone(),
        memory_total_bytes: g.memory_total_bytes,
        memory_free_bytes: g.memory_free_bytes,
        compute_capability: g.compute_capability,
        driver_version: g.driver_version.clone(),
        cuda_version: g.cuda_version,
        power_limit_milliwatts: g.power_limit_milliwatts,
        utilization_percent: g.utilization_percent,
    }
}

/// Backends this build can actually run. Only the CPU engine exists so far; a GPU is
/// reported in the hardware list but not offered as a backend until the CUDA backend
/// ships, so no job is matched to compute that is not there.
pub fn backends(_report: &HardwareReport) -> Vec<Backend> {
    vec![Backend::Cpu]
}

/// Sequence numbers must grow across restarts too (the registry refuses anything not
/// newer than what it saw), without a file to remember them: microseconds of wall time,
/// forced strictly above the previous one.
#[derive(Debug, Default)]
pub struct Sequencer {
    last: u64,
}

impl Sequencer {
    pub fn next(&mut self, now_us: u64) -> u64 {
        self.last = now_us.max(self.last.saturating_add(1));
        self.last
    }
}

pub fn advert(
    report: &HardwareReport,
    offer: &Offer,
    seq: u64,
    now_ms: u64,
    listen_addrs: Vec<String>,
    holding: Holding,
) -> HardwareAdvert {
    let Holding {
        active_jobs,
        active_streams,
        mut cached,
        mut resident,
        resident_adapters,
    } = holding;
    cached.truncate(MAX_ADVERTISED_CONTENT);
    resident.truncate(MAX_ADVERTISED_CONTENT);
    HardwareAdvert {
        seq,
        timestamp_ms: now_ms,
        interval_ms: offer.interval_ms,
        hardware: hardware(report),
        backends: backends(report),
        price_per_ktoken: offer.price_per_ktoken,
        listen_addrs,
        cached,
        resident,
        resident_adapters,
        max_concurrent_jobs: offer.max_concurrent_jobs,
        active_jobs,
        max_streams: offer.max_streams,
        active_streams,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use olc_gpu::probe::{CpuReport, NvmlStatus};

    fn report() -> HardwareReport {
        HardwareReport {
            gpus: vec![GpuReport {
                name: "NVIDIA L4".into(),
                uuid: "GPU-1".into(),
                memory_total_bytes: 24 << 30,
                memory_free_bytes: 20 << 30,
                compute_capability: (8, 9),
                driver_version: "570.1".into(),
                cuda_version: Some(12080),
                power_limit_milliwatts: Some(72_000),
                utilization_percent: None,
            }],
            cpu: CpuReport {
                model: "EPYC".into(),
                logical_cores: 2,
                features: vec!["avx2".into()],
            },
            ram_total_bytes: 24 << 30,
            ram_available_bytes: 20 << 30,
            disk_free_bytes: 1 << 40,
            nvml: NvmlStatus::Available { device_count: 1 },
        }
    }

    #[test]
    fn advert_carries_the_probe_and_the_offer() {
        let offer = Offer {
            price_per_ktoken: Amount(7),
            interval_ms: 10_000,
            max_concurrent_jobs: 2,
            max_streams: 16,
        };
        let model = ContentId::of(b"model");
        let a = advert(
            &report(),
            &offer,
            5,
            1_000,
            vec!["/ip4/1.2.3.4/tcp/1".into()],
            Holding {
                active_jobs: 1,
                active_streams: 3,
                cached: (0..300u32)
                    .map(|i| ContentId::of(&i.to_le_bytes()))
                    .collect(),
                resident: vec![model],
                resident_adapters: 4,
            },
        );
        assert_eq!(a.hardware.gpus[0].name, "NVIDIA L4");
        assert_eq!(a.hardware.gpus[0].compute_capability, (8, 9));
        assert_eq!(a.hardware.cpu.features, vec!["avx2".to_string()]);
        assert_eq!(a.price_per_ktoken, Amount(7));
        assert_eq!((a.seq, a.timestamp_ms, a.interval_ms), (5, 1_000, 10_000));
        assert_eq!(
            a.backends,
            vec![Backend::Cpu],
            "no CUDA backend is offered before it exists"
        );
        assert_eq!((a.max_concurrent_jobs, a.active_jobs), (2, 1));
        assert_eq!((a.max_streams, a.active_streams), (16, 3));
        assert_eq!((a.resident.clone(), a.resident_adapters), (vec![model], 4));
        assert_eq!(
            a.cached.len(),
            MAX_ADVERTISED_CONTENT,
            "a long cache list is cut to what an advert may carry"
        );
    }

    #[test]
    fn sequence_numbers_strictly_increase_even_if_the_clock_does_not() {
        let mut s = Sequencer::default();
        assert_eq!(s.next(100), 100);
        assert_eq!(s.next(100), 101);
        assert_eq!(
            s.next(50),
            102,
            "a clock stepping back must not lower the sequence"
        );
        assert_eq!(s.next(500), 500);
    }
}

//! What this machine can offer the network.
//!
//! A worker advertises its hardware so that the matcher can place jobs that fit. The probe
//! must therefore work on any machine the daemon starts on, including ones with no GPU, no
//! NVIDIA driver or an unreadable `/proc`: it never fails, and whatever it cannot read is
//! reported as absent or zero (with a warning) so that the worker under-promises rather
//! than refusing to start.

mod disk;
mod host;
mod nvml;

use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// Everything a worker advertises about its hardware, gathered once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareReport {
    /// Empty when NVML is unavailable: see [`HardwareReport::nvml`] for the reason.
    pub gpus: Vec<GpuReport>,
    pub cpu: CpuReport,
    /// Zero when the OS would not tell us.
    pub ram_total_bytes: u64,
    /// What new work can use without swapping, not merely unused pages; zero if unknown.
    pub ram_available_bytes: u64,
    /// Free space where the worker keeps models and blobs; zero if it cannot be determined.
    pub disk_free_bytes: u64,
    /// Why `gpus` looks the way it does, so an operator can tell "no GPU" from "broken driver".
    pub nvml: NvmlStatus,
}

/// One NVIDIA GPU as NVML sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuReport {
    pub name: String,
    /// Stable across reboots and PCI re-enumeration, so jobs and caches can name a device.
    pub uuid: String,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    /// (major, minor): decides which kernels (bf16, tensor-core paths) the device can run.
    pub compute_capability: (u32, u32),
    /// System-wide; repeated per device so each report stands alone. Empty if unreadable.
    pub driver_version: String,
    /// Highest CUDA version the driver supports, encoded as NVML does (12080 = 12.8).
    pub cuda_version: Option<u32>,
    pub power_limit_milliwatts: Option<u32>,
    /// A momentary sample: a hint about contention from other users of the card.
    pub utilization_percent: Option<u32>,
}

/// The CPU, which every worker has and which serves as the fallback backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuReport {
    /// `"unknown CPU"` when the OS does not name it.
    pub model: String,
    /// What this process may use (honours affinity masks and cgroup quotas), not the
    /// socket's total.
    pub logical_cores: u32,
    /// SIMD extensions detected at run time, in a fixed order so reports compare equal.
    pub features: Vec<String>,
}

/// Outcome of talking to NVML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvmlStatus {
    Available {
        device_count: u32,
    },
    /// No usable NVIDIA driver: the normal state of a CPU-only machine, not an error.
    NoDriver,
    /// The driver is there but misbehaved; worth an operator's attention.
    Failed(String),
}

/// Probes the machine; `data_dir` is where the worker will store blobs (it may not exist yet).
pub fn probe(data_dir: &Path) -> HardwareReport {
    let (gpus, nvml) = nvml::probe_gpus();
    log_nvml(&nvml, gpus.len(), is_news(&LAST_NVML, &nvml));

    let host = host::probe_host();
    HardwareReport {
        gpus,
        cpu: host.cpu,
        ram_total_bytes: host.ram_total_bytes,
        ram_available_bytes: host.ram_available_bytes,
        disk_free_bytes: disk::free_bytes_for(data_dir),
        nvml,
    }
}

/// The NVML status this process last saw. A worker re-probes every few seconds, and the
/// GPU situation rarely changes: an operator needs to read it once, and again when it
/// changes, not on every probe.
static LAST_NVML: Mutex<Option<NvmlStatus>> = Mutex::new(None);

/// Records `now` in `last` and says whether it differs from what was there, i.e. whether it
/// deserves to be logged at its own level rather than at debug.
fn is_news(last: &Mutex<Option<NvmlStatus>>, now: &NvmlStatus) -> bool {
    // A panic elsewhere while holding the lock cannot leave an `Option` half-written.
    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
    if last.as_ref() == Some(now) {
        return false;
    }
    *last = Some(now.clone());
    true
}

fn log_nvml(status: &NvmlStatus, probed: usize, news: bool) {
    match (status, news) {
        (NvmlStatus::Available { device_count }, true) => {
            tracing::info!(device_count, probed, "NVML available");
        }
        (NvmlStatus::Available { device_count }, false) => {
            tracing::debug!(device_count, probed, "NVML available");
        }
        (NvmlStatus::NoDriver, true) => {
            tracing::info!("no NVIDIA driver found; advertising CPU only");
        }
        (NvmlStatus::NoDriver, false) => {
            tracing::debug!("no NVIDIA driver found; advertising CPU only");
        }
        (NvmlStatus::Failed(reason), true) => {
            tracing::warn!(%reason, "NVML failed; advertising CPU only");
        }
        (NvmlStatus::Failed(reason), false) => {
            tracing::debug!(%reason, "NVML failed; advertising CPU only");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nvml_status_is_news_once_and_again_when_it_changes() {
        let last = Mutex::new(None);
        let failed = |r: &str| NvmlStatus::Failed(r.to_owned());
        let sequence = [
            (NvmlStatus::NoDriver, true),
            (NvmlStatus::NoDriver, false),
            (NvmlStatus::NoDriver, false),
            (NvmlStatus::Available { device_count: 1 }, true),
            (NvmlStatus::Available { device_count: 1 }, false),
            (NvmlStatus::Available { device_count: 2 }, true),
            (failed("x"), true),
            (failed("x"), false),
            (failed("y"), true),
            (NvmlStatus::NoDriver, true),
            (NvmlStatus::NoDriver, false),
        ];
        for (i, (status, news)) in sequence.into_iter().enumerate() {
            assert_eq!(is_news(&last, &status), news, "probe {i}: {status:?}");
        }
    }

    #[test]
    fn repeated_probes_share_one_record() {
        // Whatever other tests probed first, this machine's status is recorded now, so a
        // further probe is not news.
        let dir = tempfile::tempdir().unwrap();
        let status = probe(dir.path()).nvml;
        assert!(!is_news(&LAST_NVML, &status));
        assert_eq!(probe(dir.path()).nvml, status);
        assert!(!is_news(&LAST_NVML, &status));
    }

    #[test]
    fn probe_on_a_cpu_only_machine() {
        let dir = tempfile::tempdir().unwrap();
        let report = probe(dir.path());

        assert!(report.gpus.is_empty(), "{report:?}");
        assert_eq!(report.nvml, NvmlStatus::NoDriver);
        assert!(!report.cpu.model.trim().is_empty());
        assert!(report.cpu.logical_cores >= 1);
        assert!(report.ram_total_bytes > 0);
        assert!(report.ram_available_bytes <= report.ram_total_bytes);
        assert!(report.disk_free_bytes > 0);
    }

    #[test]
    fn data_dir_that_does_not_exist_yet_still_gets_a_disk_figure() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("not").join("yet").join("created");
        assert!(!nested.exists());

        let report = probe(&nested);
        assert!(report.disk_free_bytes > 0);
        assert!(!nested.exists(), "probing must not create the data dir");
    }
}

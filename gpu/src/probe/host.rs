//! CPU and memory: what the CPU backend can use.

use sysinfo::{CpuRefreshKind, System};

use super::CpuReport;

const UNKNOWN_CPU: &str = "unknown CPU";

pub(super) struct HostReport {
    pub(super) cpu: CpuReport,
    pub(super) ram_total_bytes: u64,
    pub(super) ram_available_bytes: u64,
}

pub(super) fn probe_host() -> HostReport {
    let logical_cores = logical_cores();
    let features = cpu_features();

    let mut system = match System::new() {
        Ok(system) => system,
        Err(error) => {
            tracing::warn!(%error, "cannot read CPU model or memory; reporting them as unknown");
            return HostReport {
                cpu: CpuReport {
                    model: UNKNOWN_CPU.to_owned(),
                    logical_cores,
                    features,
                },
                ram_total_bytes: 0,
                ram_available_bytes: 0,
            };
        }
    };

    // Building the CPU list is what reads the brand; usage and frequency would only cost time.
    system.refresh_cpu_list(CpuRefreshKind::nothing());
    let model = cpu_model(system.cpus().first().map(sysinfo::Cpu::brand));

    system.refresh_memory();
    let ram_total_bytes = system.total_memory();
    let ram_available_bytes = system.available_memory();
    if ram_total_bytes == 0 {
        tracing::warn!("total RAM reads as zero; the OS did not report memory");
    }

    HostReport {
        cpu: CpuReport {
            model,
            logical_cores,
            features,
        },
        ram_total_bytes,
        ram_available_bytes,
    }
}

/// Some VMs and containers leave the brand blank; an empty name would look like a bug
/// in adverts, so it becomes an explicit placeholder.
fn cpu_model(brand: Option<&str>) -> String {
    match brand.map(str::trim) {
        Some(brand) if !brand.is_empty() => brand.to_owned(),
        _ => {
            tracing::warn!("the OS does not name the CPU; reporting {UNKNOWN_CPU:?}");
            UNKNOWN_CPU.to_owned()
        }
    }
}

/// `available_parallelism` rather than a count of the machine's CPUs: a worker confined by
/// affinity or a cgroup quota must not promise cores it cannot schedule on.
fn logical_cores() -> u32 {
    match std::thread::available_parallelism() {
        Ok(n) => u32::try_from(n.get()).unwrap_or(u32::MAX),
        Err(error) => {
            tracing::warn!(%error, "cannot tell how many cores are usable; assuming one");
            1
        }
    }
}

/// Runtime detection, not compile-time `cfg(target_feature)`: the binary is built for a
/// baseline CPU, but the backend picks kernels by what the machine actually has.
fn cpu_features() -> Vec<String> {
    detect_features()
        .into_iter()
        .filter(|(_, detected)| *detected)
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[cfg(target_arch = "x86_64")]
fn detect_features() -> Vec<(&'static str, bool)> {
    use std::arch::is_x86_feature_detected as has;
    vec![
        ("sse4.2", has!("sse4.2")),
        ("avx", has!("avx")),
        ("avx2", has!("avx2")),
        ("fma", has!("fma")),
        ("f16c", has!("f16c")),
        ("avx512f", has!("avx512f")),
        ("avx512bw", has!("avx512bw")),
        ("avx512vl", has!("avx512vl")),
        ("avx512vnni", has!("avx512vnni")),
        ("avx512bf16", has!("avx512bf16")),
    ]
}

#[cfg(target_arch = "aarch64")]
fn detect_features() -> Vec<(&'static str, bool)> {
    use std::arch::is_aarch64_feature_detected as has;
    vec![
        ("neon", has!("neon")),
        ("fp16", has!("fp16")),
        ("dotprod", has!("dotprod")),
        ("sve", has!("sve")),
    ]
}

/// Other architectures have no SIMD kernels in the CPU backend, so nothing is worth naming.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect_features() -> Vec<(&'static str, bool)> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_or_missing_brand_becomes_placeholder() {
        assert_eq!(cpu_model(None), UNKNOWN_CPU);
        assert_eq!(cpu_model(Some("   ")), UNKNOWN_CPU);
        assert_eq!(cpu_model(Some(" AMD EPYC 9B14 ")), "AMD EPYC 9B14");
    }

    #[test]
    fn host_probe_reads_this_machine() {
        let host = probe_host();
        assert_ne!(host.cpu.model, UNKNOWN_CPU);
        assert!(host.cpu.logical_cores >= 1);
        assert!(host.ram_total_bytes > 0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_features_include_sse42() {
        let features = cpu_features();
        assert!(features.iter().any(|f| f == "sse4.2"), "{features:?}");
    }

    #[test]
    fn features_keep_the_fixed_order() {
        let order: Vec<&str> = detect_features()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            order,
            [
                "sse4.2",
                "avx",
                "avx2",
                "fma",
                "f16c",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512vnni",
                "avx512bf16",
            ]
        );
        #[cfg(target_arch = "aarch64")]
        assert_eq!(order, ["neon", "fp16", "dotprod", "sve"]);

        let features = cpu_features();
        let positions: Vec<usize> = features
            .iter()
            .map(|f| order.iter().position(|o| o == f).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{features:?}");
    }
}

//! NVIDIA GPUs through NVML.
//!
//! nvml-wrapper opens `libnvidia-ml.so` at run time, so a machine without the driver is
//! told apart from a broken driver by the kind of error `Nvml::init` returns.

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use super::{GpuReport, NvmlStatus};

/// Why one device could not be reported; the probe skips it and carries on with the rest.
#[derive(Debug, thiserror::Error)]
enum DeviceError {
    #[error("cannot read {what}: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: NvmlError,
    },
    #[error("NVML reported compute capability {major}.{minor}, which is not a version")]
    BadComputeCapability { major: i32, minor: i32 },
}

fn query<T>(what: &'static str, result: Result<T, NvmlError>) -> Result<T, DeviceError> {
    result.map_err(|source| DeviceError::Query { what, source })
}

/// Fields that merely refine an advert (many consumer cards do not support power or
/// utilisation queries), so their absence is normal and logged at debug level only.
fn optional<T>(index: u32, what: &'static str, result: Result<T, NvmlError>) -> Option<T> {
    result
        .inspect_err(|error| tracing::debug!(index, %error, "GPU {what} unavailable"))
        .ok()
}

/// Catches panics as well as errors: the wrapper decodes whatever the vendor library hands
/// back, and a surprise there must cost the worker its GPUs, not its start-up.
pub(super) fn probe_gpus() -> (Vec<GpuReport>, NvmlStatus) {
    std::panic::catch_unwind(probe_gpus_unguarded).unwrap_or_else(|_| {
        (
            Vec::new(),
            NvmlStatus::Failed("the NVML probe panicked".to_owned()),
        )
    })
}

fn probe_gpus_unguarded() -> (Vec<GpuReport>, NvmlStatus) {
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(error) => return (Vec::new(), classify_init_error(&error)),
    };
    let device_count = match nvml.device_count() {
        Ok(count) => count,
        Err(error) => {
            return (
                Vec::new(),
                NvmlStatus::Failed(format!("cannot count devices: {error}")),
            );
        }
    };

    let driver_version = nvml.sys_driver_version().unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot read the NVIDIA driver version");
        String::new()
    });
    let cuda_version = match nvml.sys_cuda_driver_version() {
        Ok(version) => u32::try_from(version).ok(),
        Err(error) => {
            tracing::debug!(%error, "CUDA driver version unavailable");
            None
        }
    };

    let mut gpus = Vec::new();
    for index in 0..device_count {
        match read_device(&nvml, index, &driver_version, cuda_version) {
            Ok(gpu) => gpus.push(gpu),
            Err(error) => tracing::warn!(index, %error, "skipping a GPU that cannot be read"),
        }
    }

    // Devices that exist but none of which can be read is a driver fault the operator
    // should see, not a healthy machine with GPUs.
    if gpus.is_empty() && device_count > 0 {
        let reason = format!("none of the {device_count} GPUs could be read");
        return (gpus, NvmlStatus::Failed(reason));
    }
    (gpus, NvmlStatus::Available { device_count })
}

fn read_device(
    nvml: &Nvml,
    index: u32,
    driver_version: &str,
    cuda_version: Option<u32>,
) -> Result<GpuReport, DeviceError> {
    let device = query("device handle", nvml.device_by_index(index))?;
    let name = query("name", device.name())?;
    let uuid = query("UUID", device.uuid())?;
    let memory = query("memory info", device.memory_info())?;
    let capability = query("compute capability", device.cuda_compute_capability())?;
    let compute_capability = match (
        u32::try_from(capability.major),
        u32::try_from(capability.minor),
    ) {
        (Ok(major), Ok(minor)) => (major, minor),
        _ => {
            return Err(DeviceError::BadComputeCapability {
                major: capability.major,
                minor: capability.minor,
            });
        }
    };

    Ok(GpuReport {
        name,
        uuid,
        memory_total_bytes: memory.total,
        memory_free_bytes: memory.free,
        compute_capability,
        driver_version: driver_version.to_owned(),
        cuda_version,
        power_limit_milliwatts: optional(index, "power limit", device.power_management_limit()),
        utilization_percent: optional(index, "utilization", device.utilization_rates())
            .map(|rates| rates.gpu),
    })
}

/// Tells "this machine has no NVIDIA driver" (normal for CPU workers) from "the driver is
/// installed but failing" (worth a warning). `DriverNotLoaded` counts as no driver: the
/// user-space library is present but the kernel module is not, which is what machines
/// with the packages installed and no card look like.
fn classify_init_error(error: &NvmlError) -> NvmlStatus {
    match error {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound | NvmlError::DriverNotLoaded => {
            NvmlStatus::NoDriver
        }
        other => NvmlStatus::Failed(format!("cannot initialise NVML: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn missing_library_is_no_driver() {
        let error = Nvml::builder()
            .lib_path(OsStr::new("/nonexistent/libnvidia-ml.so.1"))
            .init()
            .err()
            .unwrap();
        assert!(matches!(error, NvmlError::LibloadingError(_)), "{error:?}");
        assert_eq!(classify_init_error(&error), NvmlStatus::NoDriver);
    }

    #[test]
    fn loading_errors_are_no_driver() {
        assert_eq!(
            classify_init_error(&NvmlError::LibraryNotFound),
            NvmlStatus::NoDriver
        );
        assert_eq!(
            classify_init_error(&NvmlError::DriverNotLoaded),
            NvmlStatus::NoDriver
        );
    }

    #[test]
    fn other_errors_are_failures_that_say_why() {
        for error in [
            NvmlError::NoPermission,
            NvmlError::Unknown,
            NvmlError::LibRmVersionMismatch,
            NvmlError::FailedToLoadSymbol("nvmlInit_v2".to_owned()),
        ] {
            let expected = error.to_string();
            match classify_init_error(&error) {
                NvmlStatus::Failed(reason) => assert!(reason.contains(&expected), "{reason}"),
                status => panic!("{error:?} classified as {status:?}"),
            }
        }
    }

    #[test]
    fn this_machine_has_no_driver() {
        let (gpus, status) = probe_gpus();
        assert!(gpus.is_empty());
        assert_eq!(status, NvmlStatus::NoDriver);
    }
}

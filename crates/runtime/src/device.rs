//! Which devices can run Kiln artifacts.
//!
//! The CUDA probe is safe to call anywhere: on a machine without the NVIDIA
//! driver it returns [`RuntimeError::NoCudaDriver`] instead of panicking (cudarc
//! panics if any driver call is made without `libcuda.so`, so the library is
//! looked for before anything else).

use serde::Serialize;

use crate::error::{Result, RuntimeError};

/// The CUDA driver and the GPUs it sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CudaInfo {
    /// Driver API version as the driver reports it (`12080` = CUDA 12.8).
    pub driver_version: i32,
    /// Every device, by ordinal.
    pub devices: Vec<CudaDevice>,
}

/// One CUDA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CudaDevice {
    /// Device ordinal (`cuda:0`, ...).
    pub ordinal: usize,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability `(major, minor)`.
    pub compute_capability: (u32, u32),
    /// Total device memory in bytes.
    pub total_memory_bytes: u64,
}

impl CudaDevice {
    /// The compute capability as Kiln's `--target cuda:sm_NN` number (`90` for 9.0).
    pub fn sm(&self) -> u32 {
        let (major, minor) = self.compute_capability;
        major * 10 + minor
    }
}

/// Whether the CUDA driver library can be loaded. Always `false` without the
/// `cuda` feature.
pub fn cuda_driver_present() -> bool {
    #[cfg(feature = "cuda")]
    {
        // SAFETY: only tries to dlopen libcuda; calls nothing in it.
        unsafe { cudarc::driver::sys::is_culib_present() }
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// Probes the CUDA driver: its version and every GPU it sees.
///
/// Errors, never panics: [`RuntimeError::NotCompiledWithCuda`] without the
/// `cuda` feature, [`RuntimeError::NoCudaDriver`] when `libcuda.so` is not
/// installed, [`RuntimeError::NoCudaDevice`] when the driver sees no GPU.
pub fn cuda_available() -> Result<CudaInfo> {
    #[cfg(feature = "cuda")]
    {
        // The library check must come first: any cudarc driver call panics
        // when libcuda.so is missing.
        if !cuda_driver_present() {
            tracing::debug!("libcuda.so not found");
            return Err(RuntimeError::NoCudaDriver);
        }
        // Belt and braces: a driver too old for a symbol cudarc binds also
        // panics; turn that into an error too.
        match std::panic::catch_unwind(cuda::probe) {
            Ok(result) => result,
            Err(panic) => Err(RuntimeError::Cuda {
                call: "probe",
                message: panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the CUDA driver bindings panicked".into()),
            }),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(RuntimeError::NotCompiledWithCuda)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use cudarc::driver::result::{self, DriverError};
    use cudarc::driver::sys::{self, CUdevice_attribute, CUresult};

    use super::{CudaDevice, CudaInfo};
    use crate::error::{Result, RuntimeError};

    fn driver_err(call: &'static str) -> impl FnOnce(DriverError) -> RuntimeError {
        move |e| RuntimeError::Cuda { call, message: e.to_string() }
    }

    pub(super) fn probe() -> Result<CudaInfo> {
        match result::init() {
            Ok(()) => {}
            Err(DriverError(CUresult::CUDA_ERROR_NO_DEVICE)) => return Err(RuntimeError::NoCudaDevice),
            Err(e) => return Err(driver_err("cuInit")(e)),
        }
        let mut driver_version = 0;
        // SAFETY: cuInit succeeded; the out-pointer is valid.
        unsafe { sys::cuDriverGetVersion(&mut driver_version) }.result().map_err(driver_err("cuDriverGetVersion"))?;
        let count = result::device::get_count().map_err(driver_err("cuDeviceGetCount"))?;
        if count <= 0 {
            return Err(RuntimeError::NoCudaDevice);
        }
        let devices = (0..count)
            .map(|ordinal| {
                let dev = result::device::get(ordinal).map_err(driver_err("cuDeviceGet"))?;
                let name = result::device::get_name(dev).map_err(driver_err("cuDeviceGetName"))?;
                // SAFETY: `dev` came from cuDeviceGet.
                let (major, minor, total) = unsafe {
                    (
                        result::device::get_attribute(
                            dev,
                            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                        )
                        .map_err(driver_err("cuDeviceGetAttribute"))?,
                        result::device::get_attribute(
                            dev,
                            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                        )
                        .map_err(driver_err("cuDeviceGetAttribute"))?,
                        result::device::total_mem(dev).map_err(driver_err("cuDeviceTotalMem"))?,
                    )
                };
                Ok(CudaDevice {
                    ordinal: ordinal as usize,
                    name,
                    compute_capability: (major as u32, minor as u32),
                    total_memory_bytes: total as u64,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CudaInfo { driver_version, devices })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without the NVIDIA driver (every CI machine) the probe must
    /// return an error, not panic. On a GPU machine it may succeed, and then the
    /// answer must be coherent.
    #[test]
    fn cuda_probe_errors_without_driver_and_never_panics() {
        let result = std::panic::catch_unwind(cuda_available).expect("cuda_available panicked");
        if cfg!(not(feature = "cuda")) {
            assert!(matches!(result, Err(RuntimeError::NotCompiledWithCuda)), "{result:?}");
            assert!(!cuda_driver_present());
            return;
        }
        if !cuda_driver_present() {
            assert!(matches!(result, Err(RuntimeError::NoCudaDriver)), "{result:?}");
            let msg = result.unwrap_err().to_string();
            assert!(msg.contains("libcuda"), "{msg}");
            return;
        }
        match result {
            Ok(info) => {
                assert!(info.driver_version >= 11000, "{info:?}");
                assert!(!info.devices.is_empty());
                for (i, dev) in info.devices.iter().enumerate() {
                    assert_eq!(dev.ordinal, i);
                    assert!(dev.sm() >= 30, "{dev:?}");
                    assert!(dev.total_memory_bytes > 0, "{dev:?}");
                }
            }
            // A driver without a GPU (e.g. a container with libcuda but no device).
            Err(e) => assert!(matches!(e, RuntimeError::NoCudaDevice | RuntimeError::Cuda { .. }), "{e:?}"),
        }
    }

    /// Repeated probes give the same answer (nothing is left half-initialized).
    #[test]
    fn cuda_probe_is_repeatable() {
        let first = cuda_available().map_err(|e| e.to_string());
        let second = cuda_available().map_err(|e| e.to_string());
        assert_eq!(first, second);
    }

    #[test]
    fn device_info_serializes_and_reports_sm() {
        let dev = CudaDevice {
            ordinal: 0,
            name: "NVIDIA H100".into(),
            compute_capability: (9, 0),
            total_memory_bytes: 80 << 30,
        };
        assert_eq!(dev.sm(), 90);
        let json = serde_json::to_value(&dev).unwrap();
        assert_eq!(json["compute_capability"], serde_json::json!([9, 0]));
        assert_eq!(json["name"], "NVIDIA H100");
    }
}

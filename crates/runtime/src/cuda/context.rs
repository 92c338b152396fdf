//! The GPU a model runs on: the device's primary context and the one non-default stream every
//! copy, kernel and graph of the model goes through (so work is ordered without device-wide
//! syncs, and graphs can be launched on it).

use cudarc::driver::result;
use cudarc::driver::sys::{self, CUstream_flags};

use super::driver::{cuda_err, Check};
use crate::error::{Result, RuntimeError};

pub(super) struct Gpu {
    pub dev: sys::CUdevice,
    pub ctx: sys::CUcontext,
    pub stream: sys::CUstream,
    pub ordinal: usize,
    pub name: String,
}

impl Gpu {
    /// Retains device `ordinal`'s primary context (shared with any other CUDA user in the process,
    /// as the runtime API does) and creates the model's stream.
    ///
    /// The caller must have checked that the driver is present (`crate::device::cuda_available`):
    /// any driver call without libcuda.so panics in cudarc.
    pub fn open(ordinal: usize, name: &str) -> Result<Gpu> {
        result::init().map_err(|e| cuda_err("cuInit", "initializing the driver", e))?;
        let dev =
            result::device::get(ordinal as i32).map_err(|e| cuda_err("cuDeviceGet", format!("GPU {ordinal}"), e))?;
        // SAFETY: `dev` came from cuDeviceGet.
        let ctx = unsafe { result::primary_ctx::retain(dev) }
            .map_err(|e| cuda_err("cuDevicePrimaryCtxRetain", format!("GPU {ordinal}"), e))?;
        let mut gpu = Gpu { dev, ctx, stream: std::ptr::null_mut(), ordinal, name: name.to_string() };
        // From here on `gpu`'s Drop releases the context if anything fails.
        gpu.make_current()?;
        // Non-blocking: the model's stream must not serialize with the legacy default stream
        // that other code in the process may use.
        let mut stream = std::ptr::null_mut();
        // SAFETY: the context is current; the out-pointer is valid.
        unsafe { sys::cuStreamCreate(&mut stream, CUstream_flags::CU_STREAM_NON_BLOCKING as u32) }
            .check("cuStreamCreate", format!("GPU {ordinal}"))?;
        gpu.stream = stream;
        Ok(gpu)
    }

    /// Makes the model's context current on this thread (the current context is per thread, and a
    /// model may be called from another thread than the one that loaded it).
    pub fn make_current(&self) -> Result<()> {
        // SAFETY: the context is retained for as long as `self` lives.
        unsafe { result::ctx::set_current(self.ctx) }
            .map_err(|e| cuda_err("cuCtxSetCurrent", format!("GPU {}", self.ordinal), e))
    }

    /// Waits for everything queued on the stream; `what` says what was running (kernel errors
    /// surface here).
    pub fn sync(&self, what: impl std::fmt::Display) -> Result<()> {
        // SAFETY: the stream lives as long as `self`.
        unsafe { sys::cuStreamSynchronize(self.stream) }.check("cuStreamSynchronize", what)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // Errors are only logged: there is nothing to do about them while dropping.
        if self.make_current().is_err() {
            tracing::warn!(ordinal = self.ordinal, "cannot make the CUDA context current to release it");
        }
        if !self.stream.is_null() {
            // SAFETY: created by cuStreamCreate, destroyed once.
            if let Err(e) = unsafe { sys::cuStreamDestroy_v2(self.stream) }.result() {
                tracing::warn!("cuStreamDestroy failed: {e}");
            }
        }
        // SAFETY: retained once in `open`.
        if let Err(e) = unsafe { result::primary_ctx::release(self.dev) } {
            let e: RuntimeError = cuda_err("cuDevicePrimaryCtxRelease", format!("GPU {}", self.ordinal), e);
            tracing::warn!("{e}");
        }
    }
}

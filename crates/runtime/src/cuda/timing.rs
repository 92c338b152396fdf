//! Timing work on the stream with CUDA events (device time, not host time): the per-kernel-family
//! profile and the device-memory bandwidth measurement.

use cudarc::driver::result;
use cudarc::driver::sys::{self, CUevent_flags, CUstream};

use super::driver::{cuda_err, Check};
use super::memory::DeviceBuffer;
use crate::cpu::KernelProfile;
use crate::error::{Result, RuntimeError};

/// A start and an end event (destroyed on drop; the owner keeps the context current).
pub(super) struct Timer {
    start: sys::CUevent,
    end: sys::CUevent,
}

impl Timer {
    pub fn new() -> Result<Timer> {
        let start = result::event::create(CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(|e| cuda_err("cuEventCreate", "creating a timing event", e))?;
        // Owned from here, so a failure below destroys `start`.
        let mut timer = Timer { start, end: std::ptr::null_mut() };
        timer.end = result::event::create(CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(|e| cuda_err("cuEventCreate", "creating a timing event", e))?;
        Ok(timer)
    }

    /// Marks the start on `stream`.
    pub fn start(&self, stream: CUstream) -> Result<()> {
        // SAFETY: events and stream are valid.
        unsafe { result::event::record(self.start, stream) }.map_err(|e| cuda_err("cuEventRecord", "profiling", e))
    }

    /// Marks the end on `stream`, waits for it and returns the seconds since the start. `what`
    /// names the timed work in errors (a failing kernel's error surfaces here).
    pub fn stop(&self, stream: CUstream, what: &str) -> Result<f64> {
        // SAFETY: events and stream are valid; elapsed is read after the end event completed.
        unsafe {
            result::event::record(self.end, stream).map_err(|e| cuda_err("cuEventRecord", what, e))?;
            sys::cuEventSynchronize(self.end).check("cuEventSynchronize", what)?;
            let ms =
                result::event::elapsed(self.start, self.end).map_err(|e| cuda_err("cuEventElapsedTime", what, e))?;
            Ok(ms as f64 / 1e3)
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        for ev in [self.start, self.end] {
            if !ev.is_null() {
                // SAFETY: created once, destroyed once.
                if let Err(e) = unsafe { result::event::destroy(ev) } {
                    tracing::warn!("cuEventDestroy failed: {e}");
                }
            }
        }
    }
}

/// Adds one call of `secs` to kernel family `kind`.
pub(super) fn record(profile: &mut Vec<KernelProfile>, kind: &str, secs: f64) {
    match profile.iter_mut().find(|p| p.kind == kind) {
        Some(p) => {
            p.calls += 1;
            p.secs += secs;
        }
        None => profile.push(KernelProfile { kind: kind.to_string(), calls: 1, secs }),
    }
}

/// Device-memory bandwidth in bytes/s: the best of `repeats` timed device-to-device copies of
/// `bytes`, counting the bytes read and the bytes written.
pub(super) fn bandwidth(stream: CUstream, bytes: usize, repeats: usize) -> Result<f64> {
    if bytes == 0 {
        return Err(RuntimeError::Execution("measuring bandwidth needs a copy of at least one byte".into()));
    }
    let src = DeviceBuffer::zeroed(bytes, stream, "bandwidth source")?;
    let dst = DeviceBuffer::zeroed(bytes, stream, "bandwidth destination")?;
    let timer = Timer::new()?;
    let copy = || {
        // SAFETY: both buffers hold `bytes` bytes.
        unsafe { sys::cuMemcpyDtoDAsync_v2(dst.addr(), src.addr(), bytes, stream) }
            .check("cuMemcpyDtoDAsync", "measuring bandwidth")
    };
    // A warm-up copy: the first touches pages and clocks up the memory.
    copy()?;
    let mut best = 0f64;
    for _ in 0..repeats.max(1) {
        timer.start(stream)?;
        copy()?;
        let secs = timer.stop(stream, "measuring bandwidth")?;
        if secs > 0.0 {
            best = best.max(2.0 * bytes as f64 / secs);
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_accumulates_per_family() {
        let mut p = Vec::new();
        record(&mut p, "matmul", 0.5);
        record(&mut p, "attention", 0.25);
        record(&mut p, "matmul", 1.0);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].kind.as_str(), p[0].calls, p[0].secs), ("matmul", 2, 1.5));
        assert_eq!((p[1].kind.as_str(), p[1].calls), ("attention", 1));
    }
}

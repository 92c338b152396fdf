//! Device memory: owned allocations (freed on drop) and the copies between host and device the
//! executor needs. Every copy goes through the model's stream so it is ordered with the kernels.

use cudarc::driver::sys::{self, CUdeviceptr, CUstream};

use super::driver::Check;
use crate::error::{Result, RuntimeError};

/// One `cuMemAlloc` allocation. The owning model keeps its context alive (and current when
/// dropping) for as long as buffers exist.
pub(super) struct DeviceBuffer {
    ptr: CUdeviceptr,
    bytes: usize,
}

impl DeviceBuffer {
    /// Allocates `bytes` (at least 1: the driver rejects empty allocations) and zeroes them on
    /// `stream`. `what` names the buffer in errors (out-of-memory is the likely one).
    pub fn zeroed(bytes: usize, stream: CUstream, what: &str) -> Result<DeviceBuffer> {
        let buf = DeviceBuffer::uninit(bytes, what)?;
        // SAFETY: the buffer holds `buf.bytes` bytes.
        unsafe { sys::cuMemsetD8Async(buf.ptr, 0, buf.bytes, stream) }.check("cuMemsetD8Async", what)?;
        Ok(buf)
    }

    /// Allocates `bytes` (at least 1) without initializing them.
    fn uninit(bytes: usize, what: &str) -> Result<DeviceBuffer> {
        let bytes = bytes.max(1);
        let mut ptr: CUdeviceptr = 0;
        // SAFETY: a context is current (the model made it so); the out-pointer is valid.
        unsafe { sys::cuMemAlloc_v2(&mut ptr, bytes) }.check("cuMemAlloc", format!("{what} ({bytes} bytes)"))?;
        Ok(DeviceBuffer { ptr, bytes })
    }

    /// Allocates a copy of `data` (synchronous: the source is usually the memory-mapped weight
    /// file, copied once at load).
    pub fn upload(data: &[u8], stream: CUstream, what: &str) -> Result<DeviceBuffer> {
        // Every byte is overwritten (an empty tensor still gets its 1-byte allocation, unread).
        let buf = DeviceBuffer::uninit(data.len(), what)?;
        buf.write(0, data, stream, what)?;
        // SAFETY: the stream is valid; waiting makes the host memory free to go.
        unsafe { sys::cuStreamSynchronize(stream) }.check("cuStreamSynchronize", what)?;
        Ok(buf)
    }

    pub fn addr(&self) -> CUdeviceptr {
        self.ptr
    }

    /// Queues a copy of `data` to byte `offset`. Pageable host memory is staged by the driver
    /// before the call returns, so `data` may be dropped right after.
    pub fn write(&self, offset: usize, data: &[u8], stream: CUstream, what: &str) -> Result<()> {
        if offset + data.len() > self.bytes {
            return Err(RuntimeError::Execution(format!(
                "{what}: {} bytes at offset {offset} do not fit the device buffer of {}",
                data.len(),
                self.bytes
            )));
        }
        write_bytes(self.ptr + offset as u64, data, stream, what)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemAlloc, freed once; the owner made its context current.
        if let Err(e) = unsafe { sys::cuMemFree_v2(self.ptr) }.result() {
            tracing::warn!("cuMemFree of {} bytes failed: {e}", self.bytes);
        }
    }
}

/// Queues a host→device copy of `data` to device address `dst`.
pub(super) fn write_bytes(dst: CUdeviceptr, data: &[u8], stream: CUstream, what: &str) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    // SAFETY: the caller's `dst` holds `data.len()` bytes (buffers are sized by the planner for
    // the upper bounds); pageable memory is staged before the call returns.
    unsafe { sys::cuMemcpyHtoDAsync_v2(dst, data.as_ptr().cast(), data.len(), stream) }.check("cuMemcpyHtoDAsync", what)
}

/// Copies `out.len()` bytes from device address `src` to the host and waits for it (and for
/// everything queued before it on `stream`).
pub(super) fn read_bytes(src: CUdeviceptr, out: &mut [u8], stream: CUstream, what: &str) -> Result<()> {
    if !out.is_empty() {
        // SAFETY: the caller's `src` holds `out.len()` bytes.
        unsafe { sys::cuMemcpyDtoHAsync_v2(out.as_mut_ptr().cast(), src, out.len(), stream) }
            .check("cuMemcpyDtoHAsync", what)?;
    }
    // SAFETY: a valid stream. Pageable copies are synchronous already, but kernel errors of the
    // work before it only surface on a sync.
    unsafe { sys::cuStreamSynchronize(stream) }.check("cuStreamSynchronize", what)
}

/// i32s as the little-endian bytes the device reads.
pub(super) fn i32_bytes(values: impl IntoIterator<Item = i32>) -> Vec<u8> {
    values.into_iter().flat_map(i32::to_ne_bytes).collect()
}

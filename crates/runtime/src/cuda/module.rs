//! Loading `kernels.ptx` into the driver (which JIT-compiles it for the GPU) and looking up its
//! kernels. The driver's JIT error log is the only explanation of rejected PTX, so it is captured
//! and put in the error together with the file name and the driver's error code.

use std::ffi::{c_void, CString};
use std::path::Path;

use cudarc::driver::result::DriverError;
use cudarc::driver::sys::{self, CUjit_option};

use super::driver::{cuda_err, describe};
use crate::error::{Result, RuntimeError};

/// Bytes of each JIT log buffer (the driver truncates longer logs).
const LOG_BYTES: usize = 16 << 10;

/// A loaded CUDA module (unloaded on drop; the owner keeps its context current then).
pub(super) struct Module {
    raw: sys::CUmodule,
}

/// The NUL-terminated text of a JIT log buffer the driver filled with `written` bytes.
fn log_text(buf: &[u8], written: usize) -> String {
    let buf = &buf[..written.min(buf.len())];
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_string()
}

/// The PTX text as the C string the driver reads (a trailing NUL in the file is allowed).
fn ptx_image(path: &Path, ptx: &[u8]) -> Result<CString> {
    let end = ptx.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    CString::new(&ptx[..end])
        .map_err(|_| RuntimeError::Artifact(format!("{}: contains a NUL byte, so it is not PTX text", path.display())))
}

/// Why the driver rejected `path`, with its JIT log.
fn rejected(path: &Path, e: DriverError, log: &str) -> RuntimeError {
    let log = if log.is_empty() { "(the driver gave no JIT log)".to_string() } else { format!("JIT log:\n{log}") };
    RuntimeError::Cuda {
        call: "cuModuleLoadDataEx",
        message: format!("{}: the driver rejected the PTX: {}\n{log}", path.display(), describe(e)),
    }
}

impl Module {
    /// JIT-loads the PTX text `ptx` (the contents of `path`, named in errors) into the current
    /// context.
    pub fn load_ptx(path: &Path, ptx: &[u8]) -> Result<Module> {
        let image = ptx_image(path, ptx)?;
        let mut error_log = vec![0u8; LOG_BYTES];
        let mut info_log = vec![0u8; LOG_BYTES];
        let mut options = [
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
            CUjit_option::CU_JIT_INFO_LOG_BUFFER,
            CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
        ];
        // Size options are passed by value in the pointer slot, and the driver writes the bytes
        // it used back into the same slot.
        let mut values: [*mut c_void; 4] = [
            error_log.as_mut_ptr().cast(),
            LOG_BYTES as *mut c_void,
            info_log.as_mut_ptr().cast(),
            LOG_BYTES as *mut c_void,
        ];
        let mut raw: sys::CUmodule = std::ptr::null_mut();
        // SAFETY: `image` is NUL-terminated PTX; the option arrays have the same length and the log
        // buffers are LOG_BYTES long and outlive the call.
        let result = unsafe {
            sys::cuModuleLoadDataEx(
                &mut raw,
                image.as_ptr().cast(),
                options.len() as u32,
                options.as_mut_ptr(),
                values.as_mut_ptr(),
            )
        }
        .result();
        let info = log_text(&info_log, values[3] as usize);
        if !info.is_empty() {
            tracing::debug!(file = %path.display(), "PTX JIT log: {info}");
        }
        match result {
            Ok(()) => Ok(Module { raw }),
            Err(e) => Err(rejected(path, e, &log_text(&error_log, values[1] as usize))),
        }
    }

    /// The kernel `.entry symbol`; a missing one is an artifact error naming it and `path`.
    pub fn function(&self, path: &Path, symbol: &str) -> Result<sys::CUfunction> {
        let name = CString::new(symbol)
            .map_err(|_| RuntimeError::Artifact(format!("kernel symbol {symbol:?} contains a NUL byte")))?;
        // SAFETY: the module is loaded until `self` drops.
        unsafe { cudarc::driver::result::module::get_function(self.raw, name) }.map_err(|e| match e.0 {
            sys::CUresult::CUDA_ERROR_NOT_FOUND => RuntimeError::Artifact(format!(
                "{}: has no kernel '{symbol}' (the manifest names it; is the PTX from another compile?)",
                path.display()
            )),
            _ => cuda_err("cuModuleGetFunction", format!("{}: kernel '{symbol}'", path.display()), e),
        })
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: loaded once, unloaded once.
        if let Err(e) = unsafe { sys::cuModuleUnload(self.raw) }.result() {
            tracing::warn!("cuModuleUnload failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_may_end_in_nul_but_not_contain_one() {
        let p = Path::new("/a/kernels.ptx");
        assert_eq!(ptx_image(p, b".version 8.0\n\0\0").unwrap().as_bytes(), b".version 8.0\n");
        assert_eq!(ptx_image(p, b".version 8.0").unwrap().as_bytes(), b".version 8.0");
        let e = ptx_image(p, b".ver\0sion").unwrap_err().to_string();
        assert!(e.starts_with("/a/kernels.ptx: ") && e.contains("NUL"), "{e}");
    }

    #[test]
    fn log_text_stops_at_nul_and_written_bytes() {
        let mut buf = b"ptxas error   : Entry function 'k' uses too much shared data\0garbage".to_vec();
        assert_eq!(log_text(&buf, buf.len()), "ptxas error   : Entry function 'k' uses too much shared data");
        assert_eq!(log_text(&buf, 5), "ptxas");
        buf.clear();
        assert_eq!(log_text(&buf, 100), "");
    }
}

//! Turning CUDA driver results into [`RuntimeError`]s: every failing driver call becomes
//! [`RuntimeError::Cuda`] naming the call, the driver's error code and text, and what Kiln was
//! doing (the file, buffer or step), so a user can tell which part of the artifact broke.

use cudarc::driver::result::DriverError;
use cudarc::driver::sys::CUresult;

use crate::error::RuntimeError;

/// `CUDA_ERROR_X (the driver's description)`.
pub(super) fn describe(e: DriverError) -> String {
    // The description comes from the driver itself (cuGetErrorString), which is loaded whenever
    // a DriverError exists.
    match e.error_string() {
        Ok(text) => format!("{:?} ({})", e.0, text.to_string_lossy()),
        Err(_) => format!("{:?}", e.0),
    }
}

/// A failed driver call, with what Kiln was doing when it failed.
pub(super) fn cuda_err(call: &'static str, what: impl std::fmt::Display, e: DriverError) -> RuntimeError {
    RuntimeError::Cuda { call, message: format!("{what}: {}", describe(e)) }
}

/// `?`-friendly checks of raw `sys::cu*` results.
pub(super) trait Check {
    /// Ok on `CUDA_SUCCESS`, else a [`RuntimeError::Cuda`] naming `call` and `what`.
    fn check(self, call: &'static str, what: impl std::fmt::Display) -> Result<(), RuntimeError>;
}

impl Check for CUresult {
    fn check(self, call: &'static str, what: impl std::fmt::Display) -> Result<(), RuntimeError> {
        self.result().map_err(|e| cuda_err(call, what, e))
    }
}

/// Runs driver code, turning a panic of the bindings (cudarc panics when a driver symbol it binds
/// is missing, e.g. an old driver) into an error instead of taking the process down.
pub(super) fn no_panic<T>(call: &'static str, f: impl FnOnce() -> Result<T, RuntimeError>) -> Result<T, RuntimeError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => Err(RuntimeError::Cuda {
            call,
            message: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA driver bindings panicked".into()),
        }),
    }
}

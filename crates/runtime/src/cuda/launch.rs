//! One prepared kernel launch of a step (function, geometry, parameter values), and launching it
//! directly on the stream. The same value is what a decode graph's kernel node holds.

use cudarc::driver::sys::{self, CUfunction, CUstream};

use cudarc::driver::result::DriverError;

use super::params::pointers;

/// A step's kernel call with everything evaluated for this forward call.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct KernelCall {
    /// The step's index in the program.
    pub step: usize,
    pub func: CUfunction,
    pub grid: u32,
    pub block: u32,
    pub shared_bytes: u32,
    /// `tasks`, dims, buffer addresses (see [`super::params`]).
    pub params: Vec<u64>,
}

impl KernelCall {
    /// The driver's description of this launch. `ptrs` must come from [`pointers`] over this
    /// call's (or an identical copy's) `params` and outlive the use of the result.
    pub fn node_params(&self, ptrs: &mut [*mut std::ffi::c_void]) -> sys::CUDA_KERNEL_NODE_PARAMS {
        sys::CUDA_KERNEL_NODE_PARAMS {
            func: self.func,
            gridDimX: self.grid,
            gridDimY: 1,
            gridDimZ: 1,
            blockDimX: self.block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: self.shared_bytes,
            kernelParams: ptrs.as_mut_ptr(),
            extra: std::ptr::null_mut(),
            // `func` is used when set; a null context means the current one.
            kern: std::ptr::null_mut(),
            ctx: std::ptr::null_mut(),
        }
    }

    /// Queues the kernel on `stream`; the caller names the step in the error. The driver copies
    /// the parameter values before returning.
    pub fn launch(&mut self, stream: CUstream) -> Result<(), DriverError> {
        let mut ptrs = pointers(&mut self.params);
        // SAFETY: `func` is a kernel of the loaded module whose ABI is these 8-byte parameters;
        // every buffer address was sized by the planner for these dims; `ptrs` points into
        // `self.params`, alive for the call.
        unsafe {
            cudarc::driver::result::launch_kernel(
                self.func,
                (self.grid, 1, 1),
                (self.block, 1, 1),
                self.shared_bytes,
                stream,
                &mut ptrs,
            )
        }
    }
}

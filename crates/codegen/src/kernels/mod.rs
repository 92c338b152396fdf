//! CPU kernels generated through LLVM: one function per distinct [`KernelSpec`], all in one module
//! per artifact, compiled for the target CPU at O3. [`spec`] is the contract (what each kernel
//! computes, its ABI); [`builder`] holds the helpers emitters share; one file per kernel family;
//! [`testing`] compiles kernels into a loadable library for tests.

pub mod attention;
pub mod builder;
pub mod elementwise;
pub mod emit;
pub mod gpu;
pub mod matmul;
pub mod misc;
pub mod norm;
pub mod rope_params;
pub mod spec;
pub mod testing;

pub use builder::{KernelCx, KernelFn};
pub use emit::{compile_kernels, emit_kernel, target_lanes};
pub use spec::{Broadcast, CastType, KernelSpec, ReduceOp, RopeParams, WeightFormat};

//! Kiln code generation: lowers kernel plans to machine code through LLVM 19.
//!
//! Two backends share one pipeline: the host CPU (object file → shared library,
//! see [`host_machine`]) and NVIDIA GPUs (PTX for sm_80 / sm_90, see
//! [`nvptx_target`]). Everything here runs without a GPU; loading PTX is the
//! runtime's job.
//!
//! ```
//! let report = kiln_codegen::describe_targets();
//! assert!(report.host.is_some());
//! println!("{report}");
//! ```

pub mod artifact;
pub mod emit;
pub mod error;
pub mod kernels;
pub mod link;
pub mod pack;
pub mod plan;
pub mod target;

pub use emit::{emit_assembly, emit_object, optimize, DEFAULT_PIPELINE};
pub use error::{CodegenError, Result};
pub use target::{
    describe_targets, host_machine, host_target, llvm_version, nvptx_available, nvptx_target, HostTarget, NvptxReport,
    TargetInfo, TargetReport, NVPTX_TRIPLE, SUPPORTED_SMS,
};

/// Re-export of the LLVM bindings, so callers build modules with the same
/// inkwell version (and LLVM) that this crate emits them with.
pub use inkwell;

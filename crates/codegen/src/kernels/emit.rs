//! Generating a whole kernel module: one function per spec, optimized for the target, as an object.

use super::builder::KernelCx;
use super::spec::KernelSpec;
use super::{attention, elementwise, matmul, misc, norm};
use crate::error::Result;
use crate::target::TargetInfo;
use inkwell::context::Context;

/// f32 lanes of the target's widest vector registers.
pub fn target_lanes(target: &TargetInfo) -> u32 {
    if target.has_feature("avx512f") {
        16
    } else if target.has_feature("avx2") || target.has_feature("avx") {
        8
    } else {
        4
    }
}

/// Emits one kernel function named `name`.
pub fn emit_kernel(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec) -> Result<()> {
    match spec {
        KernelSpec::Matmul { .. }
        | KernelSpec::MatmulI8 { .. }
        | KernelSpec::QuantizeRows { .. }
        | KernelSpec::Embedding { .. } => matmul::emit(cx, name, spec),
        KernelSpec::Rope { .. } | KernelSpec::KvAppend { .. } | KernelSpec::Attention { .. } => {
            attention::emit(cx, name, spec)
        }
        KernelSpec::Elementwise { .. } => elementwise::emit(cx, name, spec),
        KernelSpec::RmsNorm { .. }
        | KernelSpec::LayerNorm { .. }
        | KernelSpec::Softmax { .. }
        | KernelSpec::Reduce { .. } => norm::emit(cx, name, spec),
        _ => misc::emit(cx, name, spec),
    }
}

/// Emits every `(name, spec)` into one module, runs LLVM's O3 pipeline for `target` and returns
/// the object file.
pub fn compile_kernels(kernels: &[(String, KernelSpec)], target: &TargetInfo) -> Result<Vec<u8>> {
    let context = Context::create();
    let cx = KernelCx::new(&context, "kiln_kernels", target_lanes(target));
    for (name, spec) in kernels {
        emit_kernel(&cx, name, spec)?;
    }
    crate::emit::optimize(&cx.module, target, crate::emit::DEFAULT_PIPELINE)?;
    crate::emit::emit_object(&cx.module, target)
}

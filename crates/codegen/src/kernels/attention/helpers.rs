//! IR helpers the attention kernels need beyond [`KernelCx`]'s: f64 libm calls (RoPE angles are
//! formed in f64 like the interpreter's), integer min/max, branches that merge values, memmove, and
//! the split of a head into vectors. Kept here rather than in `builder.rs` because only these
//! kernels use them.

use crate::error::{CodegenError, Result};
use crate::kernels::builder::{llvm_err, KernelCx};
use inkwell::module::Linkage;
use inkwell::types::BasicType;
use inkwell::values::{BasicMetadataValueEnum, BasicValueEnum, FloatValue, IntValue, PointerValue, ValueKind};
use inkwell::IntPredicate;

/// A spec the attention emitters cannot generate, reported with the kernel's name.
pub fn spec_err(name: &str, message: impl std::fmt::Display) -> CodegenError {
    CodegenError::Kernel { message: format!("{name}: {message}") }
}

/// Calls `double name(double)` from libm (`cos`, `sin`).
pub fn libm_f64<'ctx>(cx: &KernelCx<'ctx>, name: &str, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    if cx.gpu {
        return crate::kernels::gpu::math::call_f64(cx, name, x);
    }
    let f64t = cx.context.f64_type();
    let f = match cx.module.get_function(name) {
        Some(f) => f,
        None => cx.module.add_function(name, f64t.fn_type(&[f64t.into()], false), Some(Linkage::External)),
    };
    // Another emitter could have declared the symbol with another type; calling it would be
    // invalid IR, so say so here rather than fail in the verifier.
    if f.get_type().get_return_type() != Some(f64t.as_basic_type_enum()) {
        return Err(llvm_err(format!("{name} is already declared with another type")));
    }
    let args: [BasicMetadataValueEnum; 1] = [x.into()];
    let call = cx.builder.build_call(f, &args, "m").map_err(llvm_err)?;
    match call.try_as_basic_value() {
        ValueKind::Basic(v) => Ok(v.into_float_value()),
        _ => Err(llvm_err(format!("{name} returned nothing"))),
    }
}

/// Signed `min(a, b)` of i64 values.
pub fn smin<'ctx>(cx: &KernelCx<'ctx>, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
    let lt = cx.icmp(IntPredicate::SLT, a, b)?;
    Ok(cx.builder.build_select(lt, a, b, "min").map_err(llvm_err)?.into_int_value())
}

/// Signed `max(a, b)` of i64 values.
pub fn smax<'ctx>(cx: &KernelCx<'ctx>, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
    let gt = cx.icmp(IntPredicate::SGT, a, b)?;
    Ok(cx.builder.build_select(gt, a, b, "max").map_err(llvm_err)?.into_int_value())
}

/// `if cond { then() } else { current }` for values: `then` emits its branch and returns the new
/// values; the result merges them (phis) with `current`. Used for loop-carried state that a
/// masked iteration leaves unchanged.
pub fn if_then_values<'ctx>(
    cx: &KernelCx<'ctx>,
    cond: IntValue<'ctx>,
    current: &[BasicValueEnum<'ctx>],
    then: impl FnOnce() -> Result<Vec<BasicValueEnum<'ctx>>>,
) -> Result<Vec<BasicValueEnum<'ctx>>> {
    let from = cx.builder.get_insert_block().ok_or_else(|| llvm_err("builder is not positioned"))?;
    let f = from.get_parent().ok_or_else(|| llvm_err("block outside a function"))?;
    let then_bb = cx.context.append_basic_block(f, "then");
    let done = cx.context.append_basic_block(f, "merge");
    cx.builder.build_conditional_branch(cond, then_bb, done).map_err(llvm_err)?;
    cx.builder.position_at_end(then_bb);
    let new = then()?;
    if new.len() != current.len() {
        return Err(llvm_err(format!("if_then_values: {} values in, {} out", current.len(), new.len())));
    }
    let then_end = cx.builder.get_insert_block().ok_or_else(|| llvm_err("builder is not positioned"))?;
    cx.builder.build_unconditional_branch(done).map_err(llvm_err)?;
    cx.builder.position_at_end(done);
    let mut merged = Vec::with_capacity(current.len());
    for (old, new) in current.iter().zip(&new) {
        let phi = cx.builder.build_phi(old.get_type(), "v").map_err(llvm_err)?;
        phi.add_incoming(&[(old, from), (new, then_end)]);
        merged.push(phi.as_basic_value());
    }
    Ok(merged)
}

/// Copies `n` f32 from `src` to `dst` (which may overlap: an in-place `rope` passes the same
/// buffer for both).
pub fn copy_f32<'ctx>(cx: &KernelCx<'ctx>, dst: PointerValue<'ctx>, src: PointerValue<'ctx>, n: usize) -> Result<()> {
    if n > 0 {
        cx.builder.build_memmove(dst, 4, src, 4, cx.c64(4 * n as i64)).map_err(llvm_err)?;
    }
    Ok(())
}

/// Splits `n` elements into vectors `(offset, width)`: as many `lanes`-wide ones as fit, then
/// halving widths for the tail (head_dim is a constant, so every piece is a fixed-size vector and
/// nothing needs masking).
pub fn vector_chunks(n: usize, lanes: u32) -> Vec<(usize, u32)> {
    let mut chunks = Vec::new();
    let mut width = lanes.max(1);
    let mut offset = 0;
    while offset < n {
        while width as usize > n - offset {
            width /= 2;
        }
        chunks.push((offset, width));
        offset += width as usize;
    }
    chunks
}

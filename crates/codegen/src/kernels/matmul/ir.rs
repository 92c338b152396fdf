//! Small IR helpers the matmul and embedding emitters need beyond the shared builder: integer
//! arithmetic on loop indices, constant vectors, and masked loads/stores for row tails.

use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use inkwell::intrinsics::Intrinsic;
use inkwell::types::{BasicTypeEnum, VectorType};
use inkwell::values::{BasicMetadataValueEnum, BasicValueEnum, IntValue, PointerValue, VectorValue};

/// `x · mul + add` on i64 indices (constants fold away).
pub fn mul_add<'ctx>(cx: &KernelCx<'ctx>, x: IntValue<'ctx>, mul: i64, add: i64) -> Result<IntValue<'ctx>> {
    let b = &cx.builder;
    let scaled = if mul == 1 { x } else { b.build_int_mul(x, cx.c64(mul), "mul").map_err(llvm_err)? };
    if add == 0 {
        Ok(scaled)
    } else {
        b.build_int_add(scaled, cx.c64(add), "add").map_err(llvm_err)
    }
}

/// `a + b` on i64 indices.
pub fn add<'ctx>(cx: &KernelCx<'ctx>, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
    cx.builder.build_int_add(a, b, "add").map_err(llvm_err)
}

/// A constant `<lanes x i32>` vector of copies of `v`.
pub fn i32_splat<'ctx>(cx: &KernelCx<'ctx>, v: i32, lanes: u32) -> VectorValue<'ctx> {
    let c = cx.i32().const_int(v as u64, true);
    VectorType::const_vector(&vec![c; lanes as usize])
}

/// The `<lanes x i1>` mask with the first `count` lanes set.
fn prefix_mask<'ctx>(cx: &KernelCx<'ctx>, count: u32, lanes: u32) -> VectorValue<'ctx> {
    let bool_ty = cx.context.bool_type();
    let bits: Vec<_> = (0..lanes).map(|i| bool_ty.const_int(u64::from(i < count), false)).collect();
    VectorType::const_vector(&bits)
}

/// Calls the intrinsic `name` overloaded on `tys`; `None` for intrinsics returning void.
fn call<'ctx>(
    cx: &KernelCx<'ctx>,
    name: &str,
    tys: &[BasicTypeEnum<'ctx>],
    args: &[BasicMetadataValueEnum<'ctx>],
) -> Result<Option<BasicValueEnum<'ctx>>> {
    let intrinsic = Intrinsic::find(name).ok_or_else(|| llvm_err(format!("no intrinsic {name}")))?;
    let f = intrinsic.get_declaration(&cx.module, tys).ok_or_else(|| llvm_err(format!("cannot declare {name}")))?;
    let site = cx.builder.build_call(f, args, "call").map_err(llvm_err)?;
    Ok(match site.try_as_basic_value() {
        inkwell::values::ValueKind::Basic(v) => Some(v),
        _ => None,
    })
}

/// Loads the first `count` elements of a `ty` vector at `p` and zeros in the other lanes. Memory
/// past those elements is not touched, so a row's tail can be read at the very end of a buffer.
pub fn load_prefix<'ctx>(
    cx: &KernelCx<'ctx>,
    ty: VectorType<'ctx>,
    p: PointerValue<'ctx>,
    count: u32,
    align: u32,
) -> Result<VectorValue<'ctx>> {
    let lanes = ty.get_size();
    let args = [
        p.into(),
        cx.i32().const_int(u64::from(align), false).into(),
        prefix_mask(cx, count, lanes).into(),
        ty.const_zero().into(),
    ];
    let v = call(cx, "llvm.masked.load", &[ty.into(), cx.ptr().into()], &args)?;
    v.map(|v| v.into_vector_value()).ok_or_else(|| llvm_err("llvm.masked.load returned nothing"))
}

/// Stores the first `count` lanes of `v` at `p`, leaving the memory after them alone.
pub fn store_prefix<'ctx>(cx: &KernelCx<'ctx>, v: VectorValue<'ctx>, p: PointerValue<'ctx>, count: u32) -> Result<()> {
    let ty = v.get_type();
    let mask = prefix_mask(cx, count, ty.get_size());
    let args = [v.into(), p.into(), cx.i32().const_int(4, false).into(), mask.into()];
    call(cx, "llvm.masked.store", &[ty.into(), cx.ptr().into()], &args)?;
    Ok(())
}

/// Asks for the cache line at byte `offset` from `base` to be brought into L2 (`prefetcht1`).
/// The address may lie past the end of the buffer: a prefetch never faults, and the address is
/// computed without `inbounds`, so it is not poison either.
pub fn prefetch<'ctx>(cx: &KernelCx<'ctx>, base: PointerValue<'ctx>, offset: IntValue<'ctx>) -> Result<()> {
    // SAFETY: a plain (wrapping) byte offset; nothing is dereferenced.
    let p = unsafe { cx.builder.build_gep(cx.context.i8_type(), base, &[offset], "pf") }.map_err(llvm_err)?;
    let i32c = |v: u64| cx.i32().const_int(v, false).into();
    // (address, read = 0, locality 2 = L2 and outward, data cache = 1)
    call(cx, "llvm.prefetch", &[cx.ptr().into()], &[p.into(), i32c(0), i32c(2), i32c(1)])?;
    Ok(())
}

//! The shell of every CUDA kernel: a PTX `.entry` taking `(i64 tasks, i64 dims..., ptr bufs...)`
//! by value (the manifest's [`Launch`](kiln_runtime::artifact::manifest::Launch) ABI), and the
//! thread-index, warp-shuffle and barrier primitives GPU emitters build on.
//!
//! The parameters are also stored into small local arrays so the CPU emitters' bodies — which
//! read `dims[i]` and `bufs[i]` through pointers — can be reused unchanged; after inlining, LLVM's
//! SROA turns those loads back into the parameters.

use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::module::Linkage;
use inkwell::values::{BasicMetadataValueEnum, FloatValue, FunctionValue, IntValue, PointerValue};

/// An entry being emitted: its parameters, and pointers to local copies in the CPU ABI's layout.
pub struct Entry<'ctx> {
    pub tasks: IntValue<'ctx>,
    pub dims: Vec<IntValue<'ctx>>,
    pub bufs: Vec<PointerValue<'ctx>>,
    /// `i64[dims]` holding the dims (for CPU bodies).
    pub dims_ptr: PointerValue<'ctx>,
    /// `ptr[bufs]` holding the buffer pointers (for CPU bodies).
    pub bufs_ptr: PointerValue<'ctx>,
}

/// Starts the entry `name` with `ndims` dims and `nbufs` buffers, marked as a kernel whose blocks
/// have `block` threads; the builder is left in its entry block.
pub fn begin<'ctx>(cx: &KernelCx<'ctx>, name: &str, ndims: usize, nbufs: usize, block: u32) -> Result<Entry<'ctx>> {
    let mut params: Vec<inkwell::types::BasicMetadataTypeEnum> = vec![cx.i64().into()];
    params.extend((0..ndims).map(|_| inkwell::types::BasicMetadataTypeEnum::from(cx.i64())));
    params.extend((0..nbufs).map(|_| inkwell::types::BasicMetadataTypeEnum::from(cx.ptr())));
    let function =
        cx.module.add_function(name, cx.context.void_type().fn_type(&params, false), Some(Linkage::External));
    mark_kernel(cx, function, block);
    if cx.sim {
        sim_wrapper(cx, name, function, ndims, nbufs)?;
    }
    cx.builder.position_at_end(cx.context.append_basic_block(function, "entry"));
    let p = |i: usize| function.get_nth_param(i as u32).ok_or_else(|| llvm_err(format!("{name}: parameter {i}")));
    let tasks = p(0)?.into_int_value();
    let dims = (0..ndims).map(|i| Ok(p(1 + i)?.into_int_value())).collect::<Result<Vec<_>>>()?;
    let bufs = (0..nbufs).map(|i| Ok(p(1 + ndims + i)?.into_pointer_value())).collect::<Result<Vec<_>>>()?;
    let b = &cx.builder;
    let dims_ptr = b.build_array_alloca(cx.i64(), cx.c64(ndims.max(1) as i64), "dims").map_err(llvm_err)?;
    let bufs_ptr = b.build_array_alloca(cx.ptr(), cx.c64(nbufs.max(1) as i64), "bufs").map_err(llvm_err)?;
    for (i, d) in dims.iter().enumerate() {
        cx.store(cx.i64().into(), dims_ptr, cx.c64(i as i64), *d, 8)?;
    }
    for (i, q) in bufs.iter().enumerate() {
        cx.store(cx.ptr().into(), bufs_ptr, cx.c64(i as i64), *q, 8)?;
    }
    Ok(Entry { tasks, dims, bufs, dims_ptr, bufs_ptr })
}

/// `void {name}__sim(const i64* params)`: calls the entry with `params` unpacked (tasks, dims,
/// then buffer addresses), so the simulator can call any entry through one signature.
fn sim_wrapper<'ctx>(
    cx: &KernelCx<'ctx>,
    name: &str,
    entry: FunctionValue<'ctx>,
    ndims: usize,
    nbufs: usize,
) -> Result<()> {
    let ty = cx.context.void_type().fn_type(&[cx.ptr().into()], false);
    let f = cx.module.add_function(&format!("{name}__sim"), ty, Some(Linkage::External));
    cx.builder.position_at_end(cx.context.append_basic_block(f, "entry"));
    let params = f.get_nth_param(0).ok_or_else(|| llvm_err("no parameter"))?.into_pointer_value();
    let mut args: Vec<BasicMetadataValueEnum> = Vec::with_capacity(1 + ndims + nbufs);
    for i in 0..1 + ndims + nbufs {
        let v = cx.load(cx.i64().into(), params, cx.c64(i as i64), 8)?.into_int_value();
        args.push(if i > ndims {
            cx.builder.build_int_to_ptr(v, cx.ptr(), "p").map_err(llvm_err)?.into()
        } else {
            v.into()
        });
    }
    cx.builder.build_call(entry, &args, "").map_err(llvm_err)?;
    cx.builder.build_return(None).map_err(llvm_err)?;
    Ok(())
}

/// Marks `f` as a kernel (the `nvvm.annotations` LLVM 19's NVPTX backend reads) with at most
/// `block` threads per block (lets ptxas budget registers).
fn mark_kernel<'ctx>(cx: &KernelCx<'ctx>, f: FunctionValue<'ctx>, block: u32) {
    let ptr = f.as_global_value().as_pointer_value();
    for (key, value) in [("kernel", 1), ("maxntidx", block)] {
        let node = cx.context.metadata_node(&[
            ptr.into(),
            cx.context.metadata_string(key).into(),
            cx.i32().const_int(value as u64, false).into(),
        ]);
        // Only fails for a non-metadata value, which these are not.
        let _ = cx.module.add_global_metadata("nvvm.annotations", &node);
    }
}

/// Makes `f` (a CPU-ABI body) private to the module and always inlined into its entry.
pub fn inline_body(cx: &KernelCx<'_>, f: FunctionValue<'_>) {
    f.set_linkage(Linkage::Internal);
    let kind = Attribute::get_named_enum_kind_id("alwaysinline");
    f.add_attribute(AttributeLoc::Function, cx.context.create_enum_attribute(kind, 0));
}

fn sreg<'ctx>(cx: &KernelCx<'ctx>, name: &str) -> Result<IntValue<'ctx>> {
    let v = if cx.sim {
        let hook = match name {
            "tid.x" => Hook::Thread,
            _ => Hook::Block,
        };
        sim_call(cx, hook, &[])?.ok_or_else(|| llvm_err("hook returned nothing"))?.into_int_value()
    } else {
        cx.intrinsic(&format!("llvm.nvvm.read.ptx.sreg.{name}"), &[], &[])?.into_int_value()
    };
    cx.builder.build_int_z_extend(v, cx.i64(), name).map_err(llvm_err)
}

/// The simulator's entry points, by their index in its hook table ([`super::sim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `i32 ()`: threadIdx.x.
    Thread = 0,
    /// `i32 ()`: blockIdx.x.
    Block = 1,
    /// `float (float, i32 mask)`: shfl.sync.bfly.
    ShuffleXor = 2,
    /// `float (float, i32 lane)`: shfl.sync.idx.
    ShuffleIdx = 3,
    /// `void ()`: bar.sync 0.
    Barrier = 4,
    /// `void (i32 a0..a3, i32 b0, b1, float* c)`: mma.sync m16n8k16 bf16, `c` in and out.
    Mma = 5,
}

/// The global the simulator points at its hook table.
pub const SIM_HOOKS: &str = kiln_runtime::simt::HOOKS_GLOBAL;

/// Calls simulator hook `h` through the table `kiln_sim_hooks` points to.
fn sim_call<'ctx>(
    cx: &KernelCx<'ctx>,
    h: Hook,
    args: &[BasicMetadataValueEnum<'ctx>],
) -> Result<Option<inkwell::values::BasicValueEnum<'ctx>>> {
    let table_ptr = match cx.module.get_global(SIM_HOOKS) {
        Some(g) => g,
        None => {
            let g = cx.module.add_global(cx.ptr(), None, SIM_HOOKS);
            g.set_initializer(&cx.ptr().const_null());
            g
        }
    };
    let b = &cx.builder;
    let table = b.build_load(cx.ptr(), table_ptr.as_pointer_value(), "hooks").map_err(llvm_err)?.into_pointer_value();
    let slot = cx.gep(cx.ptr().into(), table, cx.c64(h as i64))?;
    let f = b.build_load(cx.ptr(), slot, "hook").map_err(llvm_err)?.into_pointer_value();
    let (f32t, i32t) = (cx.f32(), cx.i32());
    let ty = match h {
        Hook::Thread | Hook::Block => i32t.fn_type(&[], false),
        Hook::ShuffleXor | Hook::ShuffleIdx => f32t.fn_type(&[f32t.into(), i32t.into()], false),
        Hook::Barrier => cx.context.void_type().fn_type(&[], false),
        Hook::Mma => cx.context.void_type().fn_type(
            &[i32t.into(), i32t.into(), i32t.into(), i32t.into(), i32t.into(), i32t.into(), cx.ptr().into()],
            false,
        ),
    };
    let call = b.build_indirect_call(ty, f, args, "h").map_err(llvm_err)?;
    Ok(match call.try_as_basic_value() {
        inkwell::values::ValueKind::Basic(v) => Some(v),
        _ => None,
    })
}

/// `threadIdx.x`, as i64.
pub fn thread<'ctx>(cx: &KernelCx<'ctx>) -> Result<IntValue<'ctx>> {
    sreg(cx, "tid.x")
}

/// `blockIdx.x`, as i64.
pub fn block<'ctx>(cx: &KernelCx<'ctx>) -> Result<IntValue<'ctx>> {
    sreg(cx, "ctaid.x")
}

/// `blockIdx.x · per_block + threadIdx.x / threads_per_task`: the task of this thread when a block
/// does `per_block` tasks of `threads_per_task` threads each.
pub fn task<'ctx>(cx: &KernelCx<'ctx>, per_block: u32, threads_per_task: u32) -> Result<IntValue<'ctx>> {
    let b = &cx.builder;
    let base = b.build_int_mul(block(cx)?, cx.c64(per_block as i64), "base").map_err(llvm_err)?;
    let sub = b.build_int_unsigned_div(thread(cx)?, cx.c64(threads_per_task as i64), "sub").map_err(llvm_err)?;
    b.build_int_add(base, sub, "task").map_err(llvm_err)
}

/// This thread's lane within its warp (`threadIdx.x % 32`).
pub fn lane<'ctx>(cx: &KernelCx<'ctx>) -> Result<IntValue<'ctx>> {
    cx.builder.build_and(thread(cx)?, cx.c64(31), "lane").map_err(llvm_err)
}

/// `shfl.sync.bfly` of an f32 across the full warp.
pub fn shuffle_xor<'ctx>(cx: &KernelCx<'ctx>, v: FloatValue<'ctx>, mask: u32) -> Result<FloatValue<'ctx>> {
    if cx.sim {
        let args = [v.into(), cx.i32().const_int(mask as u64, false).into()];
        return Ok(sim_call(cx, Hook::ShuffleXor, &args)?.ok_or_else(|| llvm_err("no value"))?.into_float_value());
    }
    let args: [BasicMetadataValueEnum; 4] = [
        cx.i32().const_int(0xffff_ffff, false).into(),
        v.into(),
        cx.i32().const_int(mask as u64, false).into(),
        cx.i32().const_int(0x1f, false).into(),
    ];
    Ok(cx.intrinsic("llvm.nvvm.shfl.sync.bfly.f32", &[], &args)?.into_float_value())
}

/// `shfl.sync.idx`: lane `src`'s `v` (an i32 value), for every lane of the full warp.
pub fn shuffle_idx<'ctx>(cx: &KernelCx<'ctx>, v: FloatValue<'ctx>, src: IntValue<'ctx>) -> Result<FloatValue<'ctx>> {
    if cx.sim {
        let args = [v.into(), src.into()];
        return Ok(sim_call(cx, Hook::ShuffleIdx, &args)?.ok_or_else(|| llvm_err("no value"))?.into_float_value());
    }
    let args: [BasicMetadataValueEnum; 4] =
        [cx.i32().const_int(0xffff_ffff, false).into(), v.into(), src.into(), cx.i32().const_int(0x1f, false).into()];
    Ok(cx.intrinsic("llvm.nvvm.shfl.sync.idx.f32", &[], &args)?.into_float_value())
}

/// The simulator's `mma.sync.m16n8k16` (bf16 → f32): `c` goes in and out through a stack slot
/// made in the function's entry block (so a call inside a loop does not grow the stack).
pub fn sim_mma<'ctx>(
    cx: &KernelCx<'ctx>,
    a: &[IntValue<'ctx>],
    b0: IntValue<'ctx>,
    b1: IntValue<'ctx>,
    c: &[FloatValue<'ctx>],
) -> Result<Vec<FloatValue<'ctx>>> {
    let b = &cx.builder;
    let here = b.get_insert_block().ok_or_else(|| llvm_err("no block"))?;
    let f = here.get_parent().ok_or_else(|| llvm_err("no function"))?;
    let entry = f.get_first_basic_block().ok_or_else(|| llvm_err("no entry block"))?;
    match entry.get_first_instruction() {
        Some(i) => b.position_before(&i),
        None => b.position_at_end(entry),
    }
    let slot = b.build_alloca(cx.f32().array_type(4), "mma_c").map_err(llvm_err)?;
    b.position_at_end(here);
    for (i, &v) in c.iter().enumerate() {
        cx.store_f32(slot, cx.c64(i as i64), v)?;
    }
    let mut args: Vec<BasicMetadataValueEnum> = a.iter().map(|&v| v.into()).collect();
    args.extend::<[BasicMetadataValueEnum; 3]>([b0.into(), b1.into(), slot.into()]);
    sim_call(cx, Hook::Mma, &args)?;
    (0..4).map(|i| cx.load_f32(slot, cx.c64(i))).collect()
}

/// `__threadfence()` (`membar.gl`): this thread's writes to global memory are seen by every other
/// block before its later writes (NVPTX cannot select LLVM's `fence`; the host can).
pub fn threadfence(cx: &KernelCx<'_>) -> Result<()> {
    if cx.sim {
        cx.builder.build_fence(inkwell::AtomicOrdering::SequentiallyConsistent, false, "").map_err(llvm_err)?;
        return Ok(());
    }
    cx.intrinsic_call("llvm.nvvm.membar.gl", &[], &[])?;
    Ok(())
}

/// `bar.sync 0`: waits for every thread of the block.
pub fn barrier(cx: &KernelCx<'_>) -> Result<()> {
    if cx.sim {
        sim_call(cx, Hook::Barrier, &[])?;
        return Ok(());
    }
    cx.intrinsic_call("llvm.nvvm.barrier0", &[], &[])?;
    Ok(())
}

/// Sums (or, with `max`, takes the NaN-propagating maximum of) `v` over the warp's 32 lanes; every
/// lane gets the result. The butterfly order is fixed, so the result does not depend on timing.
pub fn warp_reduce<'ctx>(cx: &KernelCx<'ctx>, v: FloatValue<'ctx>, max: bool) -> Result<FloatValue<'ctx>> {
    let mut v = v;
    for m in [16, 8, 4, 2, 1] {
        let o = shuffle_xor(cx, v, m)?;
        v = if max {
            cx.intrinsic("llvm.maximum", &[cx.f32().into()], &[v.into(), o.into()])?.into_float_value()
        } else {
            cx.builder.build_float_add(v, o, "wsum").map_err(llvm_err)?
        };
    }
    Ok(v)
}

/// Runs `then` when `task < tasks` (threads past the last task do nothing), then returns.
pub fn guard_and_finish<'ctx>(
    cx: &KernelCx<'ctx>,
    e: &Entry<'ctx>,
    task: IntValue<'ctx>,
    then: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let live = cx.icmp(inkwell::IntPredicate::SLT, task, e.tasks)?;
    cx.if_then(live, then)?;
    cx.finish()
}

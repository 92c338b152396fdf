//! CUDA kernels: the kernel plan emitted as PTX through LLVM's NVPTX backend.
//!
//! Every [`KernelSpec`] gets a PTX `.entry` with the ABI of [`entry`] and a launch geometry
//! ([`Launch`]), recorded in the manifest:
//! - the hot families have GPU emitters of their own: `matmul` ([`gemv`]: a warp per output
//!   column, 128-bit weight loads, warp-shuffle reductions; with bf16 weights and 16 rows or more,
//!   tensor cores, [`mma`]), `embedding` ([`embedding`]: a block per row), `elementwise` (a block
//!   per row, threads over the columns), `copy` ([`copy`]: a block per outer index) and the row
//!   reductions `rms_norm`, `layer_norm`, `softmax`, `reduce`
//!   ([`rows`]: a warp per row), `attention` ([`attention`]: a block of 8 warps per query head
//!   splitting the cache, a key per lane, merged through shared memory) and `kv_append` (a block
//!   per token, a thread per cached element);
//! - every other family reuses its CPU emitter's body, inlined into an entry that runs one task per
//!   thread. These are the small routing kernels (`top_k`, `nonzero`, `take`, `scatter_rows`, ...)
//!   and the standalone `rope`, so the CPU and the GPU compute them with the same code.
//!
//! Math functions come from [`math`] (no libm on a GPU). [`sim`] runs these kernels on the host,
//! so tests check them against the CPU kernels without a GPU.

pub mod attention;
pub mod copy;
pub mod embedding;
pub mod entry;
pub mod gemv;
pub mod math;
pub mod mma;
pub mod rows;
pub mod sim;

use super::builder::KernelCx;
use super::emit::emit_kernel;
use super::spec::KernelSpec;
use crate::error::Result;
use crate::target::TargetInfo;
use inkwell::context::Context;
pub use kiln_runtime::artifact::manifest::Launch;

/// The numbers of dims and buffers a kernel's steps pass (its entry's parameters after `tasks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arity {
    pub dims: usize,
    pub bufs: usize,
}

/// Threads per block of the one-task-per-thread fallback.
const THREADS_PER_TASK_BLOCK: u32 = 64;

/// The dims and buffers `spec`'s calls pass ([`KernelSpec`]'s documented ABI).
pub fn expected_arity(spec: &KernelSpec) -> Arity {
    let (dims, bufs) = match spec {
        KernelSpec::Matmul { .. } | KernelSpec::LayerNorm { .. } => (1, 4),
        KernelSpec::MatmulI8 { .. } => (1, 5),
        KernelSpec::Embedding { .. }
        | KernelSpec::RmsNorm { .. }
        | KernelSpec::Rope { .. }
        | KernelSpec::GatherCols { .. }
        | KernelSpec::Take { .. }
        | KernelSpec::Nonzero
        | KernelSpec::ExpertGate { .. } => (1, 3),
        KernelSpec::Elementwise { operands, .. } => (1, operands.len() + 1),
        KernelSpec::Softmax { .. }
        | KernelSpec::Reduce { .. }
        | KernelSpec::TopK { .. }
        | KernelSpec::ModSelect { .. }
        | KernelSpec::Cast { .. }
        | KernelSpec::QuantizeRows { .. } => (1, 2),
        KernelSpec::KvAppend { .. } | KernelSpec::Attention { .. } => (2, 6),
        KernelSpec::Copy { .. } => (9, 2),
        KernelSpec::ScatterRows { .. } => (2, 4),
        KernelSpec::Fill { .. } => (1, 1),
    };
    Arity { dims, bufs }
}

/// Emits one kernel's entry and returns how to launch it.
pub fn emit_gpu_kernel(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec, arity: Arity) -> Result<Launch> {
    let want = expected_arity(spec);
    if arity != want {
        return Err(super::builder::llvm_err(format!(
            "{name}: a {} kernel takes {} dims and {} buffers, its calls pass {} and {}",
            spec.kind(),
            want.dims,
            want.bufs,
            arity.dims,
            arity.bufs
        )));
    }
    match spec {
        KernelSpec::Matmul { .. } => gemv::emit(cx, name, spec, arity),
        // VNNI dot products are x86 instructions; GPU plans use `matmul`.
        KernelSpec::MatmulI8 { .. } => Err(super::builder::llvm_err(format!(
            "{name}: matmul_i8 is a CPU kernel (AVX512-VNNI); GPU artifacts use matmul"
        ))),
        KernelSpec::Embedding { .. } => embedding::emit(cx, name, spec, arity),
        KernelSpec::Copy { .. } => copy::emit(cx, name, spec, arity),
        KernelSpec::Elementwise { .. } => rows::emit_elementwise(cx, name, spec, arity),
        KernelSpec::RmsNorm { .. } | KernelSpec::LayerNorm { .. } | KernelSpec::Softmax { .. } => {
            rows::emit_norm(cx, name, spec, arity)
        }
        KernelSpec::Reduce { cols, .. } if *cols > 0 => rows::emit_norm(cx, name, spec, arity),
        KernelSpec::Attention { .. } => attention::emit(cx, name, spec, arity),
        KernelSpec::KvAppend { .. } => attention::emit_kv_append(cx, name, spec, arity),
        _ => per_thread(cx, name, spec, arity),
    }
}

/// The CPU emitter's body for `spec`, run for one task by each thread.
fn per_thread(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec, arity: Arity) -> Result<Launch> {
    let body_name = format!("{name}__task");
    emit_kernel(cx, &body_name, spec)?;
    let body = cx.module.get_function(&body_name).ok_or_else(|| super::builder::llvm_err("body not emitted"))?;
    entry::inline_body(cx, body);
    let block = THREADS_PER_TASK_BLOCK;
    let e = entry::begin(cx, name, arity.dims, arity.bufs, block)?;
    let task = entry::task(cx, block, 1)?;
    entry::guard_and_finish(cx, &e, task, || {
        let next = cx.builder.build_int_add(task, cx.c64(1), "next").map_err(super::builder::llvm_err)?;
        let args = [e.dims_ptr.into(), e.bufs_ptr.into(), task.into(), next.into()];
        cx.builder.build_call(body, &args, "").map_err(super::builder::llvm_err)?;
        Ok(())
    })?;
    Ok(Launch::new(block, block))
}

/// Emits every kernel into one module, optimizes it at O3 for `target` (an NVPTX target) and
/// returns the PTX with each kernel's launch geometry, in order.
pub fn compile_ptx(kernels: &[(String, KernelSpec, Arity)], target: &TargetInfo) -> Result<(String, Vec<Launch>)> {
    let context = Context::create();
    let cx = KernelCx::new_gpu(&context, "kiln_kernels");
    let mut launches = Vec::with_capacity(kernels.len());
    for (name, spec, arity) in kernels {
        launches.push(emit_gpu_kernel(&cx, name, spec, *arity)?);
    }
    crate::emit::optimize(&cx.module, target, crate::emit::DEFAULT_PIPELINE)?;
    Ok((crate::emit::emit_assembly(&cx.module, target)?, launches))
}

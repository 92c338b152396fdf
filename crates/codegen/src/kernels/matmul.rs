//! Matmul (GEMV at batch 1, GEMM for prefill) and embedding lookups over packed weights
//! ([`WeightFormat`]): the kernels that decide decode speed, since a decode step is dominated by
//! streaming every weight byte from memory once.
//!
//! - [`decode`]: reading f32/bf16/f16/Q8_0/Q4_0 weights as f32 vectors, dequantized in registers;
//! - [`gemm`]: the matmul kernel (register tiles of rows × weight rows, f32 accumulation);
//! - [`int8`]: `matmul_i8`'s prefill, int8 activations ([`quantize`]) times Q8_0/Q4_0 weights
//!   with AVX512-VNNI integer dot products;
//! - [`embedding`]: table row lookups.

mod decode;
mod embedding;
mod gemm;
mod int8;
mod ir;
mod layout;
mod quantize;

use super::builder::{llvm_err, KernelCx};
use super::spec::KernelSpec;
use crate::error::Result;

pub use gemm::{int8_max_k, COL_BLOCK, ROW_BLOCK};
pub use int8::COLS as INT8_COLS_PER_TASK;
pub use quantize::{q8_row_bytes, INT8_MIN_ROWS};

/// The `cols_per_task` the planner should give matmuls: output columns (weight rows) per task.
///
/// 16 is a multiple of the 4-column tile, small enough that a 1536-wide projection still splits
/// into ~100 tasks for load balance across threads, and large enough that a task (16 weight rows,
/// 18–98 KB at K = 576..1536) amortizes the per-call overhead and, during prefill, keeps its
/// weights in L2 while every group of 4 activation rows passes over them.
pub const COLS_PER_TASK: usize = 16;

/// Emits a `Matmul` or `Embedding` kernel.
pub fn emit(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec) -> Result<()> {
    match *spec {
        KernelSpec::Matmul { format, n, k, bias, cols_per_task, interleave } => {
            gemm::emit(cx, name, &gemm::MatmulShape { format, n, k, bias, cols_per_task, int8: false, interleave })
        }
        KernelSpec::MatmulI8 { format, n, k, bias, cols_per_task } => {
            gemm::emit(cx, name, &gemm::MatmulShape { format, n, k, bias, cols_per_task, int8: true, interleave: 0 })
        }
        KernelSpec::QuantizeRows { k } => quantize::emit(cx, name, k),
        KernelSpec::Embedding { format, vocab, dim, interleave } => {
            embedding::emit(cx, name, format, vocab, dim, interleave)
        }
        _ => Err(llvm_err(format!("{name}: matmul::emit cannot generate {} kernels", spec.kind()))),
    }
}

//! Row kernels on the GPU.
//! - `elementwise`: a block per row, its threads over the row's columns (one element each per
//!   step, so neighbouring threads touch neighbouring addresses), the expression compiled by the
//!   CPU emitter's [`compile`] on one lane.
//! - `rms_norm`, `layer_norm`, `softmax`, `reduce`: a warp per row; each lane folds the columns
//!   `lane, lane + 32, ...`, the warp combines the partials with shuffles (every lane gets the
//!   total), and the lanes write their columns. Same formulas and passes as the CPU kernels
//!   (`kernels/norm.rs`), f32 accumulation.

use super::entry::{self, Entry};
use super::{Arity, Launch};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::elementwise::compile;
use crate::kernels::elementwise::vmath::VecOps;
use crate::kernels::norm::inv_std;
use crate::kernels::spec::{Broadcast, KernelSpec, ReduceOp};
use inkwell::values::{BasicValueEnum, FloatValue, IntValue};
use kiln_ir::op::expr::Expr;

/// Threads of an elementwise block.
const ELEMENTWISE_BLOCK: u32 = 256;

fn check_arity(name: &str, arity: Arity, bufs: usize) -> Result<()> {
    if arity.bufs != bufs || arity.dims < 1 {
        return Err(llvm_err(format!(
            "{name}: called with {} dims and {} buffers, expected 1 and {bufs}",
            arity.dims, arity.bufs
        )));
    }
    Ok(())
}

pub fn emit_elementwise(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec, arity: Arity) -> Result<Launch> {
    let KernelSpec::Elementwise { expr, operands, cols } = spec else {
        return Err(llvm_err(format!("{name}: not an elementwise kernel")));
    };
    check_arity(name, arity, operands.len() + 1)?;
    let ast = Expr::parse(expr).map_err(|e| llvm_err(format!("{name}: bad expression {expr:?}: {e}")))?;
    let uses = ast.operand_uses(operands.len()).map_err(|e| llvm_err(format!("{name}: {expr:?}: {e}")))?;
    let block = ELEMENTWISE_BLOCK;
    let e = entry::begin(cx, name, arity.dims, arity.bufs, block)?;
    let row = entry::block(cx)?;
    let b = &cx.builder;
    let ops = VecOps::new(cx);
    entry::guard_and_finish(cx, &e, row, || {
        let out = e.bufs[operands.len()];
        let start = b.build_int_mul(row, cx.c64(*cols as i64), "start").map_err(llvm_err)?;
        cx.for_range(entry::thread(cx)?, cx.c64(*cols as i64), block as i64, |j| {
            let at = b.build_int_add(start, j, "at").map_err(llvm_err)?;
            let mut leaves = Vec::with_capacity(operands.len());
            for (i, how) in operands.iter().enumerate() {
                if uses[i] == 0 {
                    leaves.push(None);
                    continue;
                }
                let idx = match how {
                    Broadcast::Full => at,
                    Broadcast::Row => j,
                    Broadcast::Scalar => cx.c64(0),
                    Broadcast::Col => row,
                };
                leaves.push(Some(ops.splat(cx.load_f32(e.bufs[i], idx)?, 1)?));
            }
            let y = compile(&ops, &ast, &leaves, 1)?;
            let y = b.build_extract_element(y, cx.i32().const_zero(), "y").map_err(llvm_err)?.into_float_value();
            cx.store_f32(out, at, y)
        })
    })?;
    Ok(Launch::new(block, 1))
}

pub fn emit_norm(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec, arity: Arity) -> Result<Launch> {
    let nbufs = match spec {
        KernelSpec::RmsNorm { .. } => 3,
        KernelSpec::LayerNorm { .. } => 4,
        _ => 2,
    };
    check_arity(name, arity, nbufs)?;
    let e = entry::begin(cx, name, arity.dims, arity.bufs, 32)?;
    let row = entry::block(cx)?;
    entry::guard_and_finish(cx, &e, row, || match *spec {
        KernelSpec::RmsNorm { cols, eps, weight } => rms_norm(cx, &e, row, cols, eps, weight),
        KernelSpec::LayerNorm { cols, eps, weight, bias } => layer_norm(cx, &e, row, cols, eps, weight, bias),
        KernelSpec::Softmax { cols } => softmax(cx, &e, row, cols),
        KernelSpec::Reduce { op, cols } => reduce(cx, &e, row, op, cols),
        _ => Err(llvm_err(format!("{name}: not a row reduction"))),
    })?;
    Ok(Launch::new(32, 1))
}

/// Calls `f(j, at)` for this lane's columns of the row starting at element `start`.
fn lane_cols<'ctx>(
    cx: &KernelCx<'ctx>,
    start: IntValue<'ctx>,
    cols: usize,
    mut f: impl FnMut(IntValue<'ctx>, IntValue<'ctx>) -> Result<()>,
) -> Result<()> {
    cx.for_range(entry::lane(cx)?, cx.c64(cols as i64), 32, |j| {
        let at = cx.builder.build_int_add(start, j, "at").map_err(llvm_err)?;
        f(j, at)
    })
}

/// Folds `value(j, at)` over this lane's columns and then over the warp.
fn fold<'ctx>(
    cx: &KernelCx<'ctx>,
    start: IntValue<'ctx>,
    cols: usize,
    max: bool,
    mut value: impl FnMut(IntValue<'ctx>, IntValue<'ctx>, FloatValue<'ctx>) -> Result<FloatValue<'ctx>>,
) -> Result<FloatValue<'ctx>> {
    let init: BasicValueEnum = cx.cf(if max { f32::NEG_INFINITY } else { 0.0 }).into();
    let acc = cx.for_range_acc(entry::lane(cx)?, cx.c64(cols as i64), 32, &[init], |j, acc| {
        let at = cx.builder.build_int_add(start, j, "at").map_err(llvm_err)?;
        Ok(vec![value(j, at, acc[0].into_float_value())?.into()])
    })?;
    entry::warp_reduce(cx, acc[0].into_float_value(), max)
}

fn row_start<'ctx>(cx: &KernelCx<'ctx>, row: IntValue<'ctx>, cols: usize) -> Result<IntValue<'ctx>> {
    cx.builder.build_int_mul(row, cx.c64(cols as i64), "start").map_err(llvm_err)
}

fn mul<'ctx>(cx: &KernelCx<'ctx>, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    cx.builder.build_float_mul(a, b, "m").map_err(llvm_err)
}

fn rms_norm<'ctx>(
    cx: &KernelCx<'ctx>,
    e: &Entry<'ctx>,
    row: IntValue<'ctx>,
    cols: usize,
    eps: f32,
    weight: bool,
) -> Result<()> {
    let (x, w, out) = (e.bufs[0], e.bufs[1], e.bufs[2]);
    let start = row_start(cx, row, cols)?;
    let ss = fold(cx, start, cols, false, |_, at, acc| {
        let v = cx.load_f32(x, at)?;
        Ok(cx.fma(v, v, acc)?.into_float_value())
    })?;
    let inv = inv_std(cx, ss, cols, eps)?;
    lane_cols(cx, start, cols, |j, at| {
        let mut y = mul(cx, cx.load_f32(x, at)?, inv)?;
        if weight {
            y = mul(cx, y, cx.load_f32(w, j)?)?;
        }
        cx.store_f32(out, at, y)
    })
}

#[allow(clippy::too_many_arguments)]
fn layer_norm<'ctx>(
    cx: &KernelCx<'ctx>,
    e: &Entry<'ctx>,
    row: IntValue<'ctx>,
    cols: usize,
    eps: f32,
    weight: bool,
    bias: bool,
) -> Result<()> {
    let (x, w, bv, out) = (e.bufs[0], e.bufs[1], e.bufs[2], e.bufs[3]);
    let b = &cx.builder;
    let start = row_start(cx, row, cols)?;
    let sum =
        fold(cx, start, cols, false, |_, at, acc| b.build_float_add(acc, cx.load_f32(x, at)?, "s").map_err(llvm_err))?;
    let mean = b.build_float_div(sum, cx.cf(cols as f32), "mean").map_err(llvm_err)?;
    let centered = |at| b.build_float_sub(cx.load_f32(x, at)?, mean, "d").map_err(llvm_err);
    let ss = fold(cx, start, cols, false, |_, at, acc| {
        let d = centered(at)?;
        Ok(cx.fma(d, d, acc)?.into_float_value())
    })?;
    let inv = inv_std(cx, ss, cols, eps)?;
    lane_cols(cx, start, cols, |j, at| {
        let mut y = mul(cx, centered(at)?, inv)?;
        if weight {
            y = mul(cx, y, cx.load_f32(w, j)?)?;
        }
        if bias {
            y = b.build_float_add(y, cx.load_f32(bv, j)?, "b").map_err(llvm_err)?;
        }
        cx.store_f32(out, at, y)
    })
}

fn softmax<'ctx>(cx: &KernelCx<'ctx>, e: &Entry<'ctx>, row: IntValue<'ctx>, cols: usize) -> Result<()> {
    let (x, out) = (e.bufs[0], e.bufs[1]);
    let b = &cx.builder;
    let start = row_start(cx, row, cols)?;
    let max = fold(cx, start, cols, true, |_, at, acc| {
        Ok(cx
            .intrinsic("llvm.maximum", &[cx.f32().into()], &[acc.into(), cx.load_f32(x, at)?.into()])?
            .into_float_value())
    })?;
    let sum = fold(cx, start, cols, false, |_, at, acc| {
        let d = b.build_float_sub(cx.load_f32(x, at)?, max, "d").map_err(llvm_err)?;
        let ex = cx.libm("expf", &[d])?;
        cx.store_f32(out, at, ex)?;
        b.build_float_add(acc, ex, "s").map_err(llvm_err)
    })?;
    let inv = b.build_float_div(cx.cf(1.0), sum, "inv").map_err(llvm_err)?;
    // Each lane rescales the columns it wrote itself: no other lane's writes are read.
    lane_cols(cx, start, cols, |_, at| cx.store_f32(out, at, mul(cx, cx.load_f32(out, at)?, inv)?))
}

fn reduce<'ctx>(cx: &KernelCx<'ctx>, e: &Entry<'ctx>, row: IntValue<'ctx>, op: ReduceOp, cols: usize) -> Result<()> {
    let (x, out) = (e.bufs[0], e.bufs[1]);
    let b = &cx.builder;
    let start = row_start(cx, row, cols)?;
    let max = op == ReduceOp::Max;
    let v = fold(cx, start, cols, max, |_, at, acc| {
        let v = cx.load_f32(x, at)?;
        if max {
            Ok(cx.intrinsic("llvm.maximum", &[cx.f32().into()], &[acc.into(), v.into()])?.into_float_value())
        } else {
            b.build_float_add(acc, v, "s").map_err(llvm_err)
        }
    })?;
    let v = if op == ReduceOp::Mean { b.build_float_div(v, cx.cf(cols as f32), "mean").map_err(llvm_err)? } else { v };
    let first = cx.icmp(inkwell::IntPredicate::EQ, entry::lane(cx)?, cx.c64(0))?;
    cx.if_then(first, || cx.store_f32(out, row, v))
}

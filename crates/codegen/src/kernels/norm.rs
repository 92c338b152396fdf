//! Row kernels with a reduction: `rms_norm`, `layer_norm`, `softmax` and `reduce` (sum, mean, max).
//!
//! Each task is one row of `cols`. Reductions run on [`PARTS`] vector accumulators at once (so the
//! adds are not one serial dependency chain), combined pairwise, then across lanes, then with the
//! row's tail. They accumulate in f32 where the interpreter uses f64: for rows of up to a few
//! thousand values the difference stays below 5e-7 relative (`tests/kernels_norm.rs`), far inside
//! the 1e-5 the tests allow.

use super::builder::{llvm_err, KernelCx};
use super::elementwise::for_row;
use super::elementwise::vmath::VecOps;
use super::spec::{KernelSpec, ReduceOp};
use crate::error::Result;
use inkwell::types::VectorType;
use inkwell::values::{BasicValueEnum, FloatValue, IntValue, PointerValue, VectorValue};

/// Partial accumulators in a reduction's main loop.
const PARTS: u32 = 4;

type V<'ctx> = VectorValue<'ctx>;

pub fn emit(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec) -> Result<()> {
    match *spec {
        KernelSpec::RmsNorm { cols, eps, weight } => rms_norm(cx, name, cols, eps, weight),
        KernelSpec::LayerNorm { cols, eps, weight, bias } => layer_norm(cx, name, cols, eps, weight, bias),
        KernelSpec::Softmax { cols } => softmax(cx, name, cols),
        KernelSpec::Reduce { op: ReduceOp::Max, cols: 0 } => {
            Err(llvm_err(format!("{name}: reduce max over rows of 0 columns has no value")))
        }
        KernelSpec::Reduce { op, cols } => reduce(cx, name, op, cols),
        _ => Err(llvm_err(format!("{name}: norm cannot emit {} kernels", spec.kind()))),
    }
}

/// How a reduction combines values.
#[derive(Clone, Copy, PartialEq)]
enum Fold {
    Sum,
    /// NaN-propagating maximum.
    Max,
}

impl Fold {
    fn identity(self) -> f32 {
        match self {
            Fold::Sum => 0.0,
            Fold::Max => f32::NEG_INFINITY,
        }
    }

    fn combine<'ctx>(self, ops: &VecOps<'_, 'ctx>, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>> {
        match self {
            Fold::Sum => ops.add(a, b),
            Fold::Max => ops.maximum(a, b),
        }
    }
}

/// Reduces a row of `cols`: `step(acc, j, w)` folds columns `j..j+w` into the `<w x float>`
/// accumulator `acc` and returns the new one. Returns the row's value as a scalar.
fn fold_row<'ctx>(
    cx: &KernelCx<'ctx>,
    cols: usize,
    fold: Fold,
    mut step: impl FnMut(V<'ctx>, IntValue<'ctx>, u32) -> Result<V<'ctx>>,
) -> Result<FloatValue<'ctx>> {
    let ops = VecOps::new(cx);
    let lanes = cx.lanes;
    let chunk = (PARTS * lanes) as usize;
    let mut accs = vec![ops.k(fold.identity(), lanes); PARTS as usize];
    let main = cols / chunk * chunk;
    if main > 0 {
        let init: Vec<BasicValueEnum> = accs.iter().map(|&a| a.into()).collect();
        let done = cx.for_range_acc(cx.c64(0), cx.c64(main as i64), chunk as i64, &init, |j, cur| {
            let mut next = Vec::with_capacity(cur.len());
            for (p, acc) in cur.iter().enumerate() {
                let at = cx.builder.build_int_add(j, cx.c64((p as u32 * lanes) as i64), "at").map_err(llvm_err)?;
                next.push(step(acc.into_vector_value(), at, lanes)?.into());
            }
            Ok(next)
        })?;
        accs = done.iter().map(|v| v.into_vector_value()).collect();
    }
    // Whole vectors left after the main loop, one per accumulator.
    let mut j = main;
    for acc in accs.iter_mut() {
        if j + lanes as usize > cols {
            break;
        }
        *acc = step(*acc, cx.c64(j as i64), lanes)?;
        j += lanes as usize;
    }
    while accs.len() > 1 {
        let pairs = accs.chunks(2).map(|p| if p.len() == 2 { fold.combine(&ops, p[0], p[1]) } else { Ok(p[0]) });
        accs = pairs.collect::<Result<Vec<_>>>()?;
    }
    let mut v = across_lanes(&ops, fold, accs[0])?;
    if j < cols {
        let tail = cx.for_range_acc(
            cx.c64(j as i64),
            cx.c64(cols as i64),
            1,
            &[ops.k(fold.identity(), 1).into()],
            |c, cur| Ok(vec![step(cur[0].into_vector_value(), c, 1)?.into()]),
        )?;
        v = fold.combine(&ops, v, tail[0].into_vector_value())?;
    }
    let lane0 = cx.builder.build_extract_element(v, cx.i32().const_zero(), "r").map_err(llvm_err)?;
    Ok(lane0.into_float_value())
}

/// Folds a vector's lanes by halves; the result is `<1 x float>`.
fn across_lanes<'ctx>(ops: &VecOps<'_, 'ctx>, fold: Fold, v: V<'ctx>) -> Result<V<'ctx>> {
    let cx = ops.cx;
    let mut v = v;
    let mut n = v.get_type().get_size();
    while n > 1 {
        let half = n / 2;
        let idx = |r: std::ops::Range<u32>| {
            VectorType::const_vector(&r.map(|i| cx.i32().const_int(i as u64, false)).collect::<Vec<_>>())
        };
        let lo = cx.builder.build_shuffle_vector(v, v, idx(0..half), "lo").map_err(llvm_err)?;
        let hi = cx.builder.build_shuffle_vector(v, v, idx(half..n), "hi").map_err(llvm_err)?;
        v = fold.combine(ops, lo, hi)?;
        n = half;
    }
    Ok(v)
}

/// The kernel shell of every kind here: loads `nbufs` buffer pointers, then calls
/// `body(bufs, r, start)` for each task's row r, `start` being the row's first element.
fn per_row<'ctx>(
    cx: &KernelCx<'ctx>,
    name: &str,
    cols: usize,
    body: impl Fn(&[PointerValue<'ctx>], IntValue<'ctx>, IntValue<'ctx>) -> Result<()>,
    nbufs: u64,
) -> Result<()> {
    let k = cx.begin_kernel(name);
    let bufs = (0..nbufs).map(|i| cx.buf(&k, i)).collect::<Result<Vec<_>>>()?;
    cx.for_range(k.begin, k.end, 1, |r| {
        let start = cx.builder.build_int_mul(r, cx.c64(cols as i64), "row").map_err(llvm_err)?;
        body(&bufs, r, start)
    })?;
    cx.finish()
}

/// `a + j` for column offsets.
fn offset<'ctx>(cx: &KernelCx<'ctx>, a: IntValue<'ctx>, j: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
    cx.builder.build_int_add(a, j, "at").map_err(llvm_err)
}

/// `1 / sqrt(sum / cols + eps)`.
pub(crate) fn inv_std<'ctx>(
    cx: &KernelCx<'ctx>,
    sum: FloatValue<'ctx>,
    cols: usize,
    eps: f32,
) -> Result<FloatValue<'ctx>> {
    let b = &cx.builder;
    let mean = b.build_float_div(sum, cx.cf(cols as f32), "ms").map_err(llvm_err)?;
    let var = b.build_float_add(mean, cx.cf(eps), "ve").map_err(llvm_err)?;
    let sd = cx.intrinsic("llvm.sqrt", &[cx.f32().into()], &[var.into()])?.into_float_value();
    b.build_float_div(cx.cf(1.0), sd, "inv").map_err(llvm_err)
}

/// `x / sqrt(mean(x²) + eps) · w`; bufs `[x, w|null, out]`.
fn rms_norm(cx: &KernelCx<'_>, name: &str, cols: usize, eps: f32, weight: bool) -> Result<()> {
    let ops = VecOps::new(cx);
    per_row(
        cx,
        name,
        cols,
        |bufs, _, start| {
            let (x, w, out) = (bufs[0], bufs[1], bufs[2]);
            let ss = fold_row(cx, cols, Fold::Sum, |acc, j, n| {
                let v = cx.load_vf32(x, offset(cx, start, j)?, n)?;
                ops.fma(v, v, acc)
            })?;
            let inv = inv_std(cx, ss, cols, eps)?;
            for_row(cx, cols, |j, n| {
                let at = offset(cx, start, j)?;
                let mut y = ops.mul(cx.load_vf32(x, at, n)?, ops.splat(inv, n)?)?;
                if weight {
                    y = ops.mul(y, cx.load_vf32(w, j, n)?)?;
                }
                cx.store_vf32(out, at, y)
            })
        },
        3,
    )
}

/// `(x − mean) / sqrt(var + eps) · w + b` with the biased variance, in two passes as the
/// interpreter does; bufs `[x, w|null, b|null, out]`.
fn layer_norm(cx: &KernelCx<'_>, name: &str, cols: usize, eps: f32, weight: bool, bias: bool) -> Result<()> {
    let ops = VecOps::new(cx);
    per_row(
        cx,
        name,
        cols,
        |bufs, _, start| {
            let (x, w, b, out) = (bufs[0], bufs[1], bufs[2], bufs[3]);
            let sum =
                fold_row(cx, cols, Fold::Sum, |acc, j, n| ops.add(acc, cx.load_vf32(x, offset(cx, start, j)?, n)?))?;
            let mean = cx.builder.build_float_div(sum, cx.cf(cols as f32), "mean").map_err(llvm_err)?;
            let centered = |at, n| ops.sub(cx.load_vf32(x, at, n)?, ops.splat(mean, n)?);
            let ss = fold_row(cx, cols, Fold::Sum, |acc, j, n| {
                let d = centered(offset(cx, start, j)?, n)?;
                ops.fma(d, d, acc)
            })?;
            let inv = inv_std(cx, ss, cols, eps)?;
            for_row(cx, cols, |j, n| {
                let at = offset(cx, start, j)?;
                let mut y = ops.mul(centered(at, n)?, ops.splat(inv, n)?)?;
                if weight {
                    y = ops.mul(y, cx.load_vf32(w, j, n)?)?;
                }
                if bias {
                    y = ops.add(y, cx.load_vf32(b, j, n)?)?;
                }
                cx.store_vf32(out, at, y)
            })
        },
        4,
    )
}

/// `exp(x − max) / Σ exp(x − max)`: a max pass, a pass storing the exponentials and summing them,
/// and a scaling pass. A row holding NaN, or all −inf, becomes NaN, as in the interpreter.
fn softmax(cx: &KernelCx<'_>, name: &str, cols: usize) -> Result<()> {
    let ops = VecOps::new(cx);
    per_row(
        cx,
        name,
        cols,
        |bufs, _, start| {
            let (x, out) = (bufs[0], bufs[1]);
            let max = fold_row(cx, cols, Fold::Max, |acc, j, n| {
                ops.maximum(acc, cx.load_vf32(x, offset(cx, start, j)?, n)?)
            })?;
            let sum = fold_row(cx, cols, Fold::Sum, |acc, j, n| {
                let at = offset(cx, start, j)?;
                let e = ops.exp(ops.sub(cx.load_vf32(x, at, n)?, ops.splat(max, n)?)?)?;
                cx.store_vf32(out, at, e)?;
                ops.add(acc, e)
            })?;
            let inv = cx.builder.build_float_div(cx.cf(1.0), sum, "inv").map_err(llvm_err)?;
            for_row(cx, cols, |j, n| {
                let at = offset(cx, start, j)?;
                cx.store_vf32(out, at, ops.mul(cx.load_vf32(out, at, n)?, ops.splat(inv, n)?)?)
            })
        },
        2,
    )
}

/// Sum, mean or max of each row into `out[r]`; max propagates NaN, as the interpreter's does.
fn reduce(cx: &KernelCx<'_>, name: &str, op: ReduceOp, cols: usize) -> Result<()> {
    let ops = VecOps::new(cx);
    let fold = if op == ReduceOp::Max { Fold::Max } else { Fold::Sum };
    per_row(
        cx,
        name,
        cols,
        |bufs, r, start| {
            let (x, out) = (bufs[0], bufs[1]);
            let v = fold_row(cx, cols, fold, |acc, j, n| {
                fold.combine(&ops, acc, cx.load_vf32(x, offset(cx, start, j)?, n)?)
            })?;
            let v = match op {
                ReduceOp::Mean => cx.builder.build_float_div(v, cx.cf(cols as f32), "mean").map_err(llvm_err)?,
                _ => v,
            };
            cx.store_f32(out, r, v)
        },
        2,
    )
}

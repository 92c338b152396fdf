//! `elementwise`: a `kiln_ir::op::expr` expression compiled to vector code over rows of `cols`.
//!
//! The expression's AST (parsed by `kiln_ir`, the same parser the interpreter uses) is emitted
//! once for vectors of `cx.lanes` lanes — the body of the row loop — and once for single lanes, the
//! row's tail. Every function has a vector form in [`vmath`]; `log`, `pow` and `gelu_erf` call libm
//! lane by lane inside it. Each function keeps the interpreter's meaning (see [`vmath`] for the
//! accuracy of the polynomial ones).

pub mod vmath;

use super::builder::{llvm_err, KernelCx};
use super::spec::{Broadcast, KernelSpec};
use crate::error::Result;
use inkwell::values::{IntValue, VectorValue};
use inkwell::FloatPredicate;
use kiln_ir::op::expr::{Expr, Func};
use vmath::VecOps;

pub fn emit(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec) -> Result<()> {
    let KernelSpec::Elementwise { expr, operands, cols } = spec else {
        return Err(llvm_err(format!("{name}: elementwise cannot emit {} kernels", spec.kind())));
    };
    let ast = Expr::parse(expr).map_err(|e| llvm_err(format!("{name}: bad expression {expr:?}: {e}")))?;
    let uses = ast.operand_uses(operands.len()).map_err(|e| llvm_err(format!("{name}: {expr:?}: {e}")))?;
    let k = cx.begin_kernel(name);
    let bufs = (0..operands.len() as u64).map(|i| cx.buf(&k, i)).collect::<Result<Vec<_>>>()?;
    let out = cx.buf(&k, operands.len() as u64)?;
    let ops = VecOps::new(cx);
    // A scalar operand is read once per call, a column operand once per row.
    let scalars = operands
        .iter()
        .zip(&bufs)
        .map(|(b, &p)| match b {
            Broadcast::Scalar => cx.load_f32(p, cx.c64(0)).map(Some),
            _ => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    let cols_c = cx.c64(*cols as i64);
    cx.for_range(k.begin, k.end, 1, |r| {
        let row = cx.builder.build_int_mul(r, cols_c, "row").map_err(llvm_err)?;
        let per_row = operands
            .iter()
            .zip(&bufs)
            .zip(&scalars)
            .map(|((b, &p), s)| match b {
                Broadcast::Col => cx.load_f32(p, r).map(Some),
                _ => Ok(*s),
            })
            .collect::<Result<Vec<_>>>()?;
        for_row(cx, *cols, |j, w| {
            let at = cx.builder.build_int_add(row, j, "at").map_err(llvm_err)?;
            let mut leaves = Vec::with_capacity(operands.len());
            for (i, b) in operands.iter().enumerate() {
                leaves.push(match (b, per_row[i]) {
                    _ if uses[i] == 0 => None,
                    (Broadcast::Full, _) => Some(cx.load_vf32(bufs[i], at, w)?),
                    (Broadcast::Row, _) => Some(cx.load_vf32(bufs[i], j, w)?),
                    (Broadcast::Scalar | Broadcast::Col, Some(v)) => Some(ops.splat(v, w)?),
                    (Broadcast::Scalar | Broadcast::Col, None) => return Err(llvm_err("operand value not loaded")),
                });
            }
            let y = compile(&ops, &ast, &leaves, w)?;
            cx.store_vf32(out, at, y)
        })
    })?;
    cx.finish()
}

/// Walks columns `0..cols` of a row: `body(j, w)` handles the `w` columns from `j`, in vectors of
/// `cx.lanes` and then one column at a time for the tail (`cols` need not be a multiple).
pub fn for_row<'ctx>(
    cx: &KernelCx<'ctx>,
    cols: usize,
    mut body: impl FnMut(IntValue<'ctx>, u32) -> Result<()>,
) -> Result<()> {
    let lanes = cx.lanes as usize;
    let main = cols / lanes * lanes;
    if main > 0 {
        cx.for_range(cx.c64(0), cx.c64(main as i64), lanes as i64, |j| body(j, cx.lanes))?;
    }
    if main < cols {
        cx.for_range(cx.c64(main as i64), cx.c64(cols as i64), 1, |j| body(j, 1))?;
    }
    Ok(())
}

/// Emits `e` on vectors of `w` lanes; `leaves[i]` is operand i's value (None when unused).
pub(crate) fn compile<'ctx>(
    ops: &VecOps<'_, 'ctx>,
    e: &Expr,
    leaves: &[Option<VectorValue<'ctx>>],
    w: u32,
) -> Result<VectorValue<'ctx>> {
    match e {
        Expr::Operand(i) => leaves.get(*i).copied().flatten().ok_or_else(|| llvm_err(format!("${i} has no value"))),
        Expr::Num(x) => Ok(ops.k(*x as f32, w)),
        Expr::Call(f, args) => {
            let a = compile(ops, &args[0], leaves, w)?;
            let b = match args.get(1) {
                Some(x) => Some(compile(ops, x, leaves, w)?),
                None => None,
            };
            apply(ops, *f, a, b)
        }
    }
}

/// One function of the expression language on vectors, with the interpreter's meaning.
fn apply<'ctx>(
    ops: &VecOps<'_, 'ctx>,
    f: Func,
    a: VectorValue<'ctx>,
    b: Option<VectorValue<'ctx>>,
) -> Result<VectorValue<'ctx>> {
    let second = || b.ok_or_else(|| llvm_err(format!("{f} needs two arguments")));
    let one = || ops.k(1.0, a.get_type().get_size());
    match f {
        Func::Add => ops.add(a, second()?),
        Func::Sub => ops.sub(a, second()?),
        Func::Mul => ops.mul(a, second()?),
        Func::Div => ops.div(a, second()?),
        // NaN-propagating, as numpy's maximum/minimum (and the interpreter) are.
        Func::Maximum => ops.maximum(a, second()?),
        Func::Minimum => ops.minimum(a, second()?),
        Func::Pow => ops.per_lane("powf", &[a, second()?]),
        Func::Neg => ops.neg(a),
        Func::Abs => ops.abs(a),
        Func::Exp => ops.exp(a),
        Func::Log => ops.per_lane("logf", &[a]),
        // sqrt and 1/x are correctly rounded in f32, as the f64 result rounded to f32 is.
        Func::Sqrt => ops.sqrt(a),
        Func::Rsqrt => ops.div(one(), ops.sqrt(a)?),
        Func::Recip => ops.div(one(), a),
        Func::Tanh => ops.tanh(a),
        Func::Sigmoid => ops.sigmoid(a),
        Func::Silu => ops.silu(a),
        // `x < 0 ? 0 : x`: NaN and −0 pass through, as in the interpreter.
        Func::Relu => {
            let neg = ops.cmp(FloatPredicate::OLT, a, ops.k(0.0, a.get_type().get_size()))?;
            ops.select(neg, ops.k(0.0, a.get_type().get_size()), a)
        }
        Func::GeluTanh => ops.gelu_tanh(a),
        Func::GeluErf => ops.gelu_erf(a),
    }
}

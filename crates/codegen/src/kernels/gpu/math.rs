//! Math functions for GPU kernels. A PTX module cannot call libm, so what the CPU kernels call
//! there is generated inline:
//! - `expf`, `tanhf`: the same Cephes polynomials the CPU's vector code uses ([`VecOps`]), on one
//!   lane: ≤ 1.2e-7 relative, as on the CPU.
//! - `erfcf`: the Chebyshev-fitted `erfc` of Numerical Recipes (`erfcc`), fractional error below
//!   1.2e-7 everywhere, with the accurate `exp` above.
//! - `logf`, `powf`: through the hardware's `lg2.approx` / `ex2.approx` (about 2^-22 relative for
//!   log2; `pow` loses `|b·log2 a| · 2^-22` relative). No model's hot path uses them.
//! - `cos`, `sin` (f64, RoPE angles): reduced by 2π in two parts (exact for the angles RoPE forms,
//!   |x| < 2^20 or so), then Taylor series to degree 25/26 on [-π, π], below 1e-15 absolute — the
//!   interpreter's f64 libm result to well past f32 precision.

use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::elementwise::vmath::VecOps;
use inkwell::values::FloatValue;
use inkwell::FloatPredicate;

/// `float name(float...)` for the libm names the CPU kernels call.
pub fn call<'ctx>(cx: &KernelCx<'ctx>, name: &str, args: &[FloatValue<'ctx>]) -> Result<FloatValue<'ctx>> {
    let arg = |i: usize| args.get(i).copied().ok_or_else(|| llvm_err(format!("{name} needs {} arguments", i + 1)));
    match name {
        "expf" => one_lane(cx, arg(0)?, |ops, v| ops.exp(v)),
        "tanhf" => one_lane(cx, arg(0)?, |ops, v| ops.tanh(v)),
        "erfcf" => erfc(cx, arg(0)?),
        "logf" => {
            let l2 = approx(cx, "llvm.nvvm.lg2.approx.f", arg(0)?)?;
            cx.builder.build_float_mul(l2, cx.cf(std::f32::consts::LN_2), "ln").map_err(llvm_err)
        }
        "powf" => pow(cx, arg(0)?, arg(1)?),
        _ => Err(llvm_err(format!("no GPU implementation of the math function {name}"))),
    }
}

/// `double name(double)`: `cos` and `sin`.
pub fn call_f64<'ctx>(cx: &KernelCx<'ctx>, name: &str, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    let b = &cx.builder;
    let f64t = cx.context.f64_type();
    let c = |v: f64| f64t.const_float(v);
    // r = x − k·2π with k = rint(x / 2π); 2π split so that k · TWO_PI_HI is exact for |k| < 2^20.
    const TWO_PI_HI: f64 = std::f64::consts::TAU;
    const TWO_PI_LO: f64 = 2.449_293_598_294_706_4e-16;
    let q = b.build_float_mul(x, c(1.0 / (2.0 * std::f64::consts::PI)), "q").map_err(llvm_err)?;
    let k = cx.intrinsic("llvm.rint", &[f64t.into()], &[q.into()])?.into_float_value();
    let kh = b.build_float_mul(k, c(TWO_PI_HI), "kh").map_err(llvm_err)?;
    let r = b.build_float_sub(x, kh, "r").map_err(llvm_err)?;
    let kl = b.build_float_mul(k, c(TWO_PI_LO), "kl").map_err(llvm_err)?;
    let r = b.build_float_sub(r, kl, "r").map_err(llvm_err)?;
    let r2 = b.build_float_mul(r, r, "r2").map_err(llvm_err)?;
    // Taylor coefficients (−1)^n / m! for m = 2n+1 (sin) or 2n (cos), highest degree first.
    let (first, terms) = match name {
        "sin" => (1, 13),
        "cos" => (0, 14),
        _ => return Err(llvm_err(format!("no GPU implementation of the math function {name}"))),
    };
    let coeff = |n: usize| {
        let m = 2 * n + first;
        let fact: f64 = (1..=m).map(|i| i as f64).product();
        if n.is_multiple_of(2) {
            1.0 / fact
        } else {
            -1.0 / fact
        }
    };
    let mut acc = c(coeff(terms - 1));
    for n in (0..terms - 1).rev() {
        acc =
            cx.intrinsic("llvm.fma", &[f64t.into()], &[acc.into(), r2.into(), c(coeff(n)).into()])?.into_float_value();
    }
    if first == 1 {
        acc = b.build_float_mul(acc, r, "sin").map_err(llvm_err)?;
    }
    Ok(acc)
}

/// Applies a [`VecOps`] function to a scalar as a one-lane vector.
fn one_lane<'ctx>(
    cx: &KernelCx<'ctx>,
    x: FloatValue<'ctx>,
    f: impl FnOnce(&VecOps<'_, 'ctx>, inkwell::values::VectorValue<'ctx>) -> Result<inkwell::values::VectorValue<'ctx>>,
) -> Result<FloatValue<'ctx>> {
    let ops = VecOps::new(cx);
    let v = f(&ops, ops.splat(x, 1)?)?;
    let e = cx.builder.build_extract_element(v, cx.i32().const_zero(), "x").map_err(llvm_err)?;
    Ok(e.into_float_value())
}

/// A one-argument NVVM approximation intrinsic (`lg2.approx`, `ex2.approx`); the simulator
/// calls libm's `log2f`/`exp2f` instead.
fn approx<'ctx>(cx: &KernelCx<'ctx>, name: &str, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    if cx.sim {
        let host = if name.contains("lg2") { "log2f" } else { "exp2f" };
        let f = cx.module.get_function(host).unwrap_or_else(|| {
            let ty = cx.f32().fn_type(&[cx.f32().into()], false);
            cx.module.add_function(host, ty, Some(inkwell::module::Linkage::External))
        });
        let call = cx.builder.build_call(f, &[x.into()], "m").map_err(llvm_err)?;
        return match call.try_as_basic_value() {
            inkwell::values::ValueKind::Basic(v) => Ok(v.into_float_value()),
            _ => Err(llvm_err(format!("{host} returned nothing"))),
        };
    }
    Ok(cx.intrinsic(name, &[], &[x.into()])?.into_float_value())
}

fn select<'ctx>(
    cx: &KernelCx<'ctx>,
    c: inkwell::values::IntValue<'ctx>,
    a: FloatValue<'ctx>,
    b: FloatValue<'ctx>,
) -> Result<FloatValue<'ctx>> {
    Ok(cx.builder.build_select(c, a, b, "sel").map_err(llvm_err)?.into_float_value())
}

/// `a^b` as `2^(b · log2 |a|)`, with C's special cases for `b = 0` and negative `a`.
fn pow<'ctx>(cx: &KernelCx<'ctx>, a: FloatValue<'ctx>, e: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    let b = &cx.builder;
    let abs = cx.intrinsic("llvm.fabs", &[cx.f32().into()], &[a.into()])?.into_float_value();
    let l = approx(cx, "llvm.nvvm.lg2.approx.f", abs)?;
    let t = approx(cx, "llvm.nvvm.ex2.approx.f", b.build_float_mul(e, l, "el").map_err(llvm_err)?)?;
    let trunc = |v: FloatValue<'ctx>| -> Result<FloatValue<'ctx>> {
        Ok(cx.intrinsic("llvm.trunc", &[cx.f32().into()], &[v.into()])?.into_float_value())
    };
    let is_int = cx.fcmp(FloatPredicate::OEQ, e, trunc(e)?)?;
    let half = b.build_float_mul(e, cx.cf(0.5), "half").map_err(llvm_err)?;
    let odd = b.build_and(is_int, cx.fcmp(FloatPredicate::UNE, half, trunc(half)?)?, "odd").map_err(llvm_err)?;
    let neg_t = b.build_float_neg(t, "nt").map_err(llvm_err)?;
    let signed = select(cx, odd, neg_t, t)?;
    let negative = select(cx, is_int, signed, cx.cf(f32::NAN))?;
    let is_neg = cx.fcmp(FloatPredicate::OLT, a, cx.cf(0.0))?;
    let r = select(cx, is_neg, negative, t)?;
    select(cx, cx.fcmp(FloatPredicate::OEQ, e, cx.cf(0.0))?, cx.cf(1.0), r)
}

/// Numerical Recipes' `erfcc`: `t·exp(−z² + P(t))`, `t = 1/(1 + z/2)`, `z = |x|`; `2 − that` for
/// negative x.
fn erfc<'ctx>(cx: &KernelCx<'ctx>, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    const P: [f32; 10] = [
        -1.265_512_2,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_204,
        1.488_515_9,
        -0.822_152_2,
        0.170_872_77,
    ];
    let b = &cx.builder;
    let z = cx.intrinsic("llvm.fabs", &[cx.f32().into()], &[x.into()])?.into_float_value();
    let den = b
        .build_float_add(cx.cf(1.0), b.build_float_mul(z, cx.cf(0.5), "hz").map_err(llvm_err)?, "d")
        .map_err(llvm_err)?;
    let t = b.build_float_div(cx.cf(1.0), den, "t").map_err(llvm_err)?;
    let mut poly = cx.cf(P[9]);
    for &p in P[..9].iter().rev() {
        poly = cx.fma(poly, t, cx.cf(p))?.into_float_value();
    }
    let z2 = b.build_float_mul(z, z, "z2").map_err(llvm_err)?;
    let arg = b.build_float_sub(poly, z2, "arg").map_err(llvm_err)?;
    let ans = b.build_float_mul(t, call(cx, "expf", &[arg])?, "ans").map_err(llvm_err)?;
    let two_minus = b.build_float_sub(cx.cf(2.0), ans, "neg").map_err(llvm_err)?;
    select(cx, cx.fcmp(FloatPredicate::OGE, x, cx.cf(0.0))?, ans, two_minus)
}

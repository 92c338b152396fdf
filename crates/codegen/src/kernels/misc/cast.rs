//! `cast`: i32 ↔ f32 and rounding f32 values through f16/bf16, bit for bit as the interpreter's
//! `tensor::cast` (which rounds with the `half` crate: to nearest, ties to even, NaN kept quiet).
//!
//! f16/bf16 values live in f32 buffers, so "to f16" means "to the nearest f16, as an f32". The
//! rounding is integer and float arithmetic on the bits rather than LLVM's `fptrunc … to half`,
//! which needs F16C (or a compiler-rt call the kernel library does not link) on x86.

use super::{single_task, Int};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::CastType;
use inkwell::values::{FloatValue, IntValue};
use inkwell::FloatPredicate;

/// Element `i` of `x` converted from `from` to `to`, for each of `n` elements (dims `[n]`, bufs
/// `[x, out]`): float to i32 truncates toward zero, saturating, NaN → 0 (Rust's `as`); i32 to a
/// float type converts, then rounds to that type.
pub fn cast(cx: &KernelCx<'_>, name: &str, from: CastType, to: CastType) -> Result<()> {
    let int = Int { cx };
    let k = cx.begin_kernel(name);
    let n = cx.dim(&k, 0)?;
    let (x, out) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?);
    single_task(cx, &k, || {
        cx.for_range(cx.c64(0), n, 1, |i| {
            if from == CastType::I32 && to == CastType::I32 {
                return int.store_i32(out, i, cx.load_i32(x, i)?);
            }
            let v = match from {
                CastType::I32 => {
                    cx.builder.build_signed_int_to_float(cx.load_i32(x, i)?, cx.f32(), "f").map_err(llvm_err)?
                }
                _ => cx.load_f32(x, i)?,
            };
            match to {
                CastType::I32 => {
                    let t = cx.intrinsic("llvm.fptosi.sat", &[cx.i32().into(), cx.f32().into()], &[v.into()])?;
                    int.store_i32(out, i, t.into_int_value())
                }
                CastType::F32 => cx.store_f32(out, i, v),
                CastType::F16 => cx.store_f32(out, i, round_f16(cx, v)?),
                CastType::Bf16 => cx.store_f32(out, i, round_bf16(cx, v)?),
            }
        })
    })?;
    cx.finish()
}

fn bits<'ctx>(cx: &KernelCx<'ctx>, v: FloatValue<'ctx>) -> Result<IntValue<'ctx>> {
    Ok(cx.builder.build_bit_cast(v, cx.i32(), "bits").map_err(llvm_err)?.into_int_value())
}

fn float<'ctx>(cx: &KernelCx<'ctx>, v: IntValue<'ctx>) -> Result<FloatValue<'ctx>> {
    Ok(cx.builder.build_bit_cast(v, cx.f32(), "f").map_err(llvm_err)?.into_float_value())
}

fn u32c<'ctx>(cx: &KernelCx<'ctx>, v: u32) -> IntValue<'ctx> {
    cx.i32().const_int(v as u64, false)
}

fn fselect<'ctx>(
    cx: &KernelCx<'ctx>,
    c: IntValue<'ctx>,
    a: FloatValue<'ctx>,
    b: FloatValue<'ctx>,
) -> Result<FloatValue<'ctx>> {
    Ok(cx.builder.build_select(c, a, b, "sel").map_err(llvm_err)?.into_float_value())
}

/// Rounds the low `drop` bits of an f32's bit pattern away, to nearest with ties to even; a carry
/// into the exponent is the right result (up to the next binade, or to infinity).
fn round_bits<'ctx>(cx: &KernelCx<'ctx>, b: IntValue<'ctx>, drop: u32) -> Result<IntValue<'ctx>> {
    let int = Int { cx };
    let lsb = cx.builder.build_right_shift(b, u32c(cx, drop), false, "lsb").map_err(llvm_err)?;
    let lsb = int.and(lsb, u32c(cx, 1))?;
    let r = int.add(int.add(b, u32c(cx, (1 << (drop - 1)) - 1))?, lsb)?;
    int.and(r, u32c(cx, !((1u32 << drop) - 1)))
}

/// `half::bf16::from_f32(x).to_f32()`: keep the top 16 bits, rounded; NaN gets the quiet bit.
pub fn round_bf16<'ctx>(cx: &KernelCx<'ctx>, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    let int = Int { cx };
    let b = bits(cx, x)?;
    let rounded = round_bits(cx, b, 16)?;
    let nan = int.or(int.and(b, u32c(cx, 0xFFFF_0000))?, u32c(cx, 0x0040_0000))?;
    let is_nan = cx.fcmp(FloatPredicate::UNO, x, x)?;
    float(cx, int.select(is_nan, nan, rounded)?)
}

/// `half::f16::from_f32(x).to_f32()`: 11 significant bits for normal f16 values (|x| ≥ 2^-14),
/// multiples of 2^-24 below (f16 subnormals), ±inf from 65520 (halfway to 2^16) up; NaN keeps its
/// top 10 payload bits and gets the quiet bit.
pub fn round_f16<'ctx>(cx: &KernelCx<'ctx>, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
    let int = Int { cx };
    let b = bits(cx, x)?;
    let sign = int.and(b, u32c(cx, 0x8000_0000))?;
    let mag_bits = int.and(b, u32c(cx, 0x7FFF_FFFF))?;
    let mag = float(cx, mag_bits)?;
    let normal = float(cx, round_bits(cx, mag_bits, 13)?)?;
    // Below 2^-14 adding 0.5 rounds to the f16 subnormal step 2^-24 (the f32 step at 0.5), ties to
    // even, and subtracting it again is exact.
    let half = cx.cf(0.5);
    let plus = cx.builder.build_float_add(mag, half, "p").map_err(llvm_err)?;
    let sub = cx.builder.build_float_sub(plus, half, "s").map_err(llvm_err)?;
    let tiny = cx.fcmp(FloatPredicate::OLT, mag, cx.cf(2f32.powi(-14)))?;
    let huge = cx.fcmp(FloatPredicate::OGE, mag, cx.cf(65520.0))?;
    let r = fselect(cx, tiny, sub, normal)?;
    let r = fselect(cx, huge, cx.cf(f32::INFINITY), r)?;
    let signed = int.or(bits(cx, r)?, sign)?;
    let nan = int.or(int.and(b, u32c(cx, 0xFFFF_E000))?, u32c(cx, 0x0040_0000))?;
    let is_nan = cx.fcmp(FloatPredicate::UNO, x, x)?;
    float(cx, int.select(is_nan, nan, signed)?)
}

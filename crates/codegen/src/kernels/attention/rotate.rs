//! RoPE inside kernels, and the `rope` kernel itself.
//!
//! The interpreter (`kiln_ir::op::rope::RopeSpec::apply`) forms each angle `position · inv_freq`
//! in f64, takes its cos/sin in f64 and rotates in f64 before rounding to f32. An f32 angle would
//! lose ~1e-4 rad at positions in the thousands, so the kernels do the same: one libm `cos`/`sin`
//! pair per rotary pair and token (shared by every head of the token), rotation in f64.

use super::helpers::{copy_f32, libm_f64, spec_err};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::RopeParams;
use inkwell::values::{FloatValue, IntValue, PointerValue};

/// Checks that `rope` fits heads of `head_dim`.
pub fn check(name: &str, rope: &RopeParams, head_dim: usize) -> Result<()> {
    let r = rope.rotary;
    if r == 0 || r % 2 == 1 || r > head_dim {
        return Err(spec_err(
            name,
            format!("rotary dim {r} must be even, positive and at most the head dim {head_dim}"),
        ));
    }
    if rope.inv_freq.len() != r / 2 {
        return Err(spec_err(name, format!("{} inverse frequencies for rotary dim {r}", rope.inv_freq.len())));
    }
    Ok(())
}

/// cos and sin (f64, times `mscale`) of every rotary pair's angle at one position.
pub struct Rotation<'ctx> {
    cos: Vec<FloatValue<'ctx>>,
    sin: Vec<FloatValue<'ctx>>,
}

/// The rotation at `position` (an i64 value).
pub fn rotation<'ctx>(cx: &KernelCx<'ctx>, rope: &RopeParams, position: IntValue<'ctx>) -> Result<Rotation<'ctx>> {
    let f64t = cx.context.f64_type();
    let b = &cx.builder;
    let pos = b.build_signed_int_to_float(position, f64t, "posf").map_err(llvm_err)?;
    let mscale = f64t.const_float(rope.mscale as f64);
    let mut rot = Rotation { cos: Vec::new(), sin: Vec::new() };
    for &f in &rope.inv_freq {
        let angle = b.build_float_mul(pos, f64t.const_float(f as f64), "angle").map_err(llvm_err)?;
        let mut c = libm_f64(cx, "cos", angle)?;
        let mut s = libm_f64(cx, "sin", angle)?;
        if rope.mscale != 1.0 {
            c = b.build_float_mul(c, mscale, "cm").map_err(llvm_err)?;
            s = b.build_float_mul(s, mscale, "sm").map_err(llvm_err)?;
        }
        rot.cos.push(c);
        rot.sin.push(s);
    }
    Ok(rot)
}

/// Writes the head vector at `src` (head_dim f32), rotated, to `dst` (`dst` may equal `src`: each
/// pair is loaded before it is stored). Dims past `rope.rotary` are copied unchanged.
pub fn rotate_head<'ctx>(
    cx: &KernelCx<'ctx>,
    rope: &RopeParams,
    rot: &Rotation<'ctx>,
    head_dim: usize,
    src: PointerValue<'ctx>,
    dst: PointerValue<'ctx>,
) -> Result<()> {
    let f64t = cx.context.f64_type();
    let b = &cx.builder;
    let half = rope.rotary / 2;
    let load = |i: usize| -> Result<FloatValue<'ctx>> {
        let x = cx.load_f32(src, cx.c64(i as i64))?;
        b.build_float_ext(x, f64t, "x64").map_err(llvm_err)
    };
    let store = |i: usize, v: FloatValue<'ctx>| -> Result<()> {
        let v = b.build_float_trunc(v, cx.f32(), "x32").map_err(llvm_err)?;
        cx.store_f32(dst, cx.c64(i as i64), v)
    };
    for (i, (&c, &s)) in rot.cos.iter().zip(&rot.sin).enumerate() {
        let (ia, ib) = if rope.interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
        let (xa, xb) = (load(ia)?, load(ib)?);
        let ac = b.build_float_mul(xa, c, "ac").map_err(llvm_err)?;
        let bs = b.build_float_mul(xb, s, "bs").map_err(llvm_err)?;
        let bc = b.build_float_mul(xb, c, "bc").map_err(llvm_err)?;
        let as_ = b.build_float_mul(xa, s, "as").map_err(llvm_err)?;
        store(ia, b.build_float_sub(ac, bs, "ra").map_err(llvm_err)?)?;
        store(ib, b.build_float_add(bc, as_, "rb").map_err(llvm_err)?)?;
    }
    if rope.rotary < head_dim {
        let at = cx.c64(rope.rotary as i64);
        copy_f32(cx, cx.gep(cx.f32().into(), dst, at)?, cx.gep(cx.f32().into(), src, at)?, head_dim - rope.rotary)?;
    }
    Ok(())
}

/// The `rope` kernel: `out[t, h] = rotate(x[t, h], positions[t])`; task = token.
pub fn emit_rope(cx: &KernelCx<'_>, name: &str, heads: usize, head_dim: usize, rope: &RopeParams) -> Result<()> {
    check(name, rope, head_dim)?;
    let k = cx.begin_kernel(name);
    let (x, positions, out) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?, cx.buf(&k, 2)?);
    cx.for_range(k.begin, k.end, 1, |t| {
        let pos = cx.load_i32(positions, t)?;
        let pos = cx.builder.build_int_s_extend(pos, cx.i64(), "pos").map_err(llvm_err)?;
        let rot = rotation(cx, rope, pos)?;
        let first = cx.builder.build_int_mul(t, cx.c64((heads * head_dim) as i64), "row").map_err(llvm_err)?;
        cx.for_range(cx.c64(0), cx.c64(heads as i64), 1, |h| {
            let off = cx.builder.build_int_mul(h, cx.c64(head_dim as i64), "hoff").map_err(llvm_err)?;
            let at = cx.builder.build_int_add(first, off, "at").map_err(llvm_err)?;
            let src = cx.gep(cx.f32().into(), x, at)?;
            let dst = cx.gep(cx.f32().into(), out, at)?;
            rotate_head(cx, rope, &rot, head_dim, src, dst)
        })
    })?;
    cx.finish()
}

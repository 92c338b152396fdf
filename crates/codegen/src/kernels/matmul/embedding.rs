//! The embedding kernel: `out[r, :] = dequant(table[ids[r], :])`, one task per row.
//!
//! An id outside `0..vocab` yields a row of zeros rather than a read out of bounds (the runtime
//! validates token ids before the call; this only keeps a bad id from crashing the process). Zeros
//! rather than clamping, so a bad id shows up as an obviously empty embedding instead of
//! silently aliasing the last token.
//!
//! A table tied to the output projection may be stored with its rows interleaved for the matmul
//! ([`crate::pack::interleave`]); the kernel then reads a row's vectors 4 vectors apart.

use super::decode::Decoder;
use super::ir::{mul_add, store_prefix};
use super::layout::RowLayout;
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::WeightFormat;
use inkwell::values::{IntValue, PointerValue};
use inkwell::IntPredicate;

/// Emits the embedding kernel `name` for a `[vocab, dim]` table in `format`.
pub fn emit(
    cx: &KernelCx<'_>,
    name: &str,
    format: WeightFormat,
    vocab: usize,
    dim: usize,
    interleave: usize,
) -> Result<()> {
    let err = |why: &str| llvm_err(format!("{name}: embedding {} [{vocab}, {dim}]: {why}", format.name()));
    let fail = |why: &str| Err(err(why));
    if !dim.is_multiple_of(format.block()) {
        return fail(&format!("dim must be a multiple of the {}-element block", format.block()));
    }
    let fits = |x: Option<usize>| x.is_some_and(|x| i64::try_from(x).is_ok());
    if !fits(vocab.checked_mul(format.row_bytes(dim))) || !fits(dim.checked_mul(4)) {
        return fail("sizes overflow i64 offsets");
    }
    let dec = Decoder::new(cx, format)?;
    let layout = RowLayout::new(format, dim, dec.unit_elems() as usize, interleave).map_err(|why| err(&why))?;
    let group = crate::pack::ROW_GROUP;
    if layout.interleaved() && !vocab.is_multiple_of(group) {
        return fail(&format!("rows interleaved by {interleave} need a vocab of whole groups of {group}"));
    }
    let kf = cx.begin_kernel(name);
    let table = cx.buf(&kf, 0)?;
    let ids = cx.buf(&kf, 1)?;
    let out = cx.buf(&kf, 2)?;
    cx.for_range(kf.begin, kf.end, 1, |r| {
        let b = &cx.builder;
        let id = b.build_int_s_extend(cx.load_i32(ids, r)?, cx.i64(), "id").map_err(llvm_err)?;
        // One unsigned compare catches negative ids too.
        let valid = cx.icmp(IntPredicate::ULT, id, cx.c64(vocab as i64))?;
        let out_row = cx.gep(cx.f32().into(), out, mul_add(cx, r, dim as i64, 0)?)?;
        cx.if_then(valid, || copy_row(cx, &dec, &layout, layout.row(cx, table, id)?, out_row, dim as i64))?;
        let invalid = b.build_not(valid, "bad").map_err(llvm_err)?;
        cx.if_then(invalid, || {
            b.build_memset(out_row, 4, cx.context.i8_type().const_zero(), cx.c64(dim as i64 * 4)).map_err(llvm_err)?;
            Ok(())
        })
    })?;
    cx.finish()
}

/// Dequantizes the `dim` elements of the packed row at `src` (laid out as `layout` says) into
/// the f32 row at `dst`.
fn copy_row<'ctx>(
    cx: &KernelCx<'ctx>,
    dec: &Decoder<'_, 'ctx>,
    layout: &RowLayout,
    src: PointerValue<'ctx>,
    dst: PointerValue<'ctx>,
    dim: i64,
) -> Result<()> {
    let unit_elems = i64::from(dec.unit_elems());
    let units = dim / unit_elems;
    let unit = |u: IntValue<'ctx>| -> Result<()> {
        let vecs = dec.unit(layout.unit(cx, src, u)?)?;
        for (v, vec) in vecs.into_iter().enumerate() {
            cx.store_vf32(dst, mul_add(cx, u, unit_elems, (v as u32 * dec.lanes()).into())?, vec)?;
        }
        Ok(())
    };
    cx.for_range(cx.c64(0), cx.c64(units), 1, unit)?;
    let rest = (dim % unit_elems) as u32;
    if rest > 0 {
        let v = dec.prefix(layout.unit(cx, src, cx.c64(units))?, rest)?;
        store_prefix(cx, v, cx.gep(cx.f32().into(), dst, cx.c64(units * unit_elems))?, rest)?;
    }
    Ok(())
}

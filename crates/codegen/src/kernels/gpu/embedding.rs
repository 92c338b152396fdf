//! `embedding` on the GPU: a block per looked-up row, its threads over the row's elements (one
//! dequantized element each per step, neighbouring threads on neighbouring elements), so a
//! decode step's single lookup is spread over a block instead of one thread.

use super::entry;
use super::{Arity, Launch};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::{KernelSpec, WeightFormat};
use inkwell::values::{FloatValue, IntValue, PointerValue};

const BLOCK: u32 = 256;

pub fn emit(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec, arity: Arity) -> Result<Launch> {
    let KernelSpec::Embedding { format, vocab: _, dim, interleave } = *spec else {
        return Err(llvm_err(format!("{name}: not an embedding kernel")));
    };
    if interleave != 0 {
        return Err(llvm_err(format!("{name}: GPU kernels read plain rows, not rows interleaved by {interleave}")));
    }
    if dim % format.block() != 0 {
        return Err(llvm_err(format!("{name}: rows of {dim} are not whole {} blocks", format.name())));
    }
    let e = entry::begin(cx, name, arity.dims, arity.bufs, BLOCK)?;
    let r = entry::block(cx)?;
    let b = &cx.builder;
    entry::guard_and_finish(cx, &e, r, || {
        let (table, ids, out) = (e.bufs[0], e.bufs[1], e.bufs[2]);
        let id = b.build_int_s_extend(cx.load_i32(ids, r)?, cx.i64(), "id").map_err(llvm_err)?;
        let row =
            cx.gep_bytes(table, b.build_int_mul(id, cx.c64(format.row_bytes(dim) as i64), "ro").map_err(llvm_err)?)?;
        let start = b.build_int_mul(r, cx.c64(dim as i64), "start").map_err(llvm_err)?;
        cx.for_range(entry::thread(cx)?, cx.c64(dim as i64), BLOCK as i64, |j| {
            let v = element(cx, format, row, j)?;
            cx.store_f32(out, b.build_int_add(start, j, "at").map_err(llvm_err)?, v)
        })
    })?;
    Ok(Launch::new(BLOCK, 1))
}

/// Element `j` of a packed row (llama.cpp's Q8_0/Q4_0 block layouts, see `crate::pack`); also
/// the matmul's scalar tail.
pub(super) fn element<'ctx>(
    cx: &KernelCx<'ctx>,
    format: WeightFormat,
    row: PointerValue<'ctx>,
    j: IntValue<'ctx>,
) -> Result<FloatValue<'ctx>> {
    let b = &cx.builder;
    let i8t = cx.context.i8_type();
    match format {
        WeightFormat::F32 => cx.load_f32(row, j),
        WeightFormat::Bf16 => {
            let raw = cx.load(cx.context.i16_type().into(), row, j, 2)?.into_int_value();
            let wide = b.build_int_z_extend(raw, cx.i32(), "z").map_err(llvm_err)?;
            let sh = b.build_left_shift(wide, cx.i32().const_int(16, false), "sh").map_err(llvm_err)?;
            Ok(b.build_bit_cast(sh, cx.f32(), "bf").map_err(llvm_err)?.into_float_value())
        }
        WeightFormat::F16 => {
            let h = cx.load(cx.context.f16_type().into(), row, j, 2)?.into_float_value();
            b.build_float_ext(h, cx.f32(), "h").map_err(llvm_err)
        }
        WeightFormat::Q8_0 | WeightFormat::Q4_0 => {
            let q4 = format == WeightFormat::Q4_0;
            let blk = b.build_int_unsigned_div(j, cx.c64(32), "blk").map_err(llvm_err)?;
            let within = b.build_int_unsigned_rem(j, cx.c64(32), "w").map_err(llvm_err)?;
            let start = b.build_int_mul(blk, cx.c64(if q4 { 18 } else { 34 }), "bs").map_err(llvm_err)?;
            let scale =
                cx.load(cx.context.f16_type().into(), cx.gep_bytes(row, start)?, cx.c64(0), 2)?.into_float_value();
            let scale = b.build_float_ext(scale, cx.f32(), "d").map_err(llvm_err)?;
            let q = if q4 {
                // Low nibbles are elements 0..16, high nibbles 16..32.
                let byte = b.build_int_unsigned_rem(within, cx.c64(16), "byte").map_err(llvm_err)?;
                let at = b
                    .build_int_add(start, b.build_int_add(byte, cx.c64(2), "o").map_err(llvm_err)?, "qa")
                    .map_err(llvm_err)?;
                let raw = cx.load(i8t.into(), row, at, 1)?.into_int_value();
                let raw = b.build_int_z_extend(raw, cx.i32(), "qz").map_err(llvm_err)?;
                let high = cx.icmp(inkwell::IntPredicate::UGE, within, cx.c64(16))?;
                let shift = b
                    .build_select(high, cx.i32().const_int(4, false), cx.i32().const_zero(), "s")
                    .map_err(llvm_err)?
                    .into_int_value();
                let nib = b
                    .build_and(
                        b.build_right_shift(raw, shift, false, "hs").map_err(llvm_err)?,
                        cx.i32().const_int(15, false),
                        "nib",
                    )
                    .map_err(llvm_err)?;
                b.build_int_sub(nib, cx.i32().const_int(8, false), "q").map_err(llvm_err)?
            } else {
                let at = b
                    .build_int_add(start, b.build_int_add(within, cx.c64(2), "o").map_err(llvm_err)?, "qa")
                    .map_err(llvm_err)?;
                let raw = cx.load(i8t.into(), row, at, 1)?.into_int_value();
                b.build_int_s_extend(raw, cx.i32(), "qs").map_err(llvm_err)?
            };
            let qf = b.build_signed_int_to_float(q, cx.f32(), "qf").map_err(llvm_err)?;
            b.build_float_mul(qf, scale, "deq").map_err(llvm_err)
        }
    }
}

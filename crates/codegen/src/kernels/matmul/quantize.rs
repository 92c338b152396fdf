//! `quantize_rows`: f32 activation rows to int8 blocks, the left operand of `matmul_i8`'s VNNI
//! prefill.
//!
//! Per block of 32 elements, as llama.cpp's Q8_0 activations: `d = max|x| / 127`, `q =
//! round(x / d)` — except that Kiln keeps `d` in f32 (llama.cpp rounds it to f16) and rounds half
//! to even (one `vrndscaleps`). Each block also stores `Σ q`, which `matmul_i8` needs to undo the
//! offset that makes its weights unsigned (VNNI multiplies unsigned bytes by signed bytes).

use super::ir::mul_add;
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use inkwell::values::{IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

/// Elements per quantization block.
const QK: usize = 32;

/// `matmul_i8` quantizes and multiplies activations only from this many rows on: below it (decode)
/// the exact f32 path runs, and `quantize_rows` leaves its output alone.
pub const INT8_MIN_ROWS: i64 = super::gemm::ROW_BLOCK as i64;

/// Bytes of one quantized row of `k` elements: `k` i8 quants, then an f32 scale and an i32 quant
/// sum per block.
pub fn q8_row_bytes(k: usize) -> usize {
    k + 8 * (k / QK)
}

/// Emits the `quantize_rows` kernel for rows of `k`.
pub fn emit(cx: &KernelCx<'_>, name: &str, k: usize) -> Result<()> {
    if k == 0 || !k.is_multiple_of(QK) || !(QK as u32).is_multiple_of(cx.lanes) {
        return Err(llvm_err(format!("{name}: quantize_rows needs K a multiple of {QK}, not {k}")));
    }
    let kf = cx.begin_kernel(name);
    let rows = cx.dim(&kf, 0)?;
    let (x, out) = (cx.buf(&kf, 0)?, cx.buf(&kf, 1)?);
    let enough = cx.icmp(IntPredicate::SGE, rows, cx.c64(INT8_MIN_ROWS))?;
    cx.if_then(enough, || {
        cx.for_range(kf.begin, kf.end, 1, |r| {
            let xr = cx.gep(cx.f32().into(), x, mul_add(cx, r, k as i64, 0)?)?;
            let qr = cx.gep_bytes(out, mul_add(cx, r, q8_row_bytes(k) as i64, 0)?)?;
            cx.for_range(cx.c64(0), cx.c64((k / QK) as i64), 1, |b| block(cx, xr, qr, b, k))
        })
    })?;
    cx.finish()
}

/// Quantizes block `b` of the row at `xr` into the quantized row at `qr`.
fn block<'ctx>(
    cx: &KernelCx<'ctx>,
    xr: PointerValue<'ctx>,
    qr: PointerValue<'ctx>,
    b: IntValue<'ctx>,
    k: usize,
) -> Result<()> {
    let (bld, lanes) = (&cx.builder, cx.lanes);
    let vf = cx.vf32(lanes);
    let first = mul_add(cx, b, QK as i64, 0)?;
    let xs = (0..QK as u32 / lanes)
        .map(|j| cx.load_vf32(xr, mul_add(cx, first, 1, i64::from(j * lanes))?, lanes))
        .collect::<Result<Vec<VectorValue<'ctx>>>>()?;
    let mut amax = cx.intrinsic("llvm.fabs", &[vf.into()], &[xs[0].into()])?.into_vector_value();
    for &v in &xs[1..] {
        let a = cx.intrinsic("llvm.fabs", &[vf.into()], &[v.into()])?;
        amax = cx.intrinsic("llvm.maxnum", &[vf.into()], &[amax.into(), a.into()])?.into_vector_value();
    }
    let amax = cx.intrinsic("llvm.vector.reduce.fmax", &[vf.into()], &[amax.into()])?.into_float_value();
    let d = bld.build_float_div(amax, cx.cf(127.0), "d").map_err(llvm_err)?;
    // An all-zero block gets d = 0 and quants 0 (llama.cpp's `id = d ? 1/d : 0`).
    let nonzero = cx.fcmp(inkwell::FloatPredicate::ONE, d, cx.cf(0.0))?;
    let inv = bld.build_float_div(cx.cf(1.0), d, "id").map_err(llvm_err)?;
    let id = bld.build_select(nonzero, inv, cx.cf(0.0), "id").map_err(llvm_err)?.into_float_value();
    let id = cx.splat(id, lanes)?;
    let i8v = cx.context.i8_type().vec_type(lanes);
    let i32v = cx.i32().vec_type(lanes);
    let mut sum = i32v.const_zero();
    for (j, &v) in xs.iter().enumerate() {
        let scaled = bld.build_float_mul(v, id, "xs").map_err(llvm_err)?;
        let rounded = cx.intrinsic("llvm.roundeven", &[vf.into()], &[scaled.into()])?;
        // Saturating (NaN → 0): |x / d| ≤ 127 for finite blocks, so only bad input saturates.
        let q = cx.intrinsic("llvm.fptosi.sat", &[i8v.into(), vf.into()], &[rounded.into()])?.into_vector_value();
        let p = cx.gep_bytes(qr, mul_add(cx, first, 1, (j as u32 * lanes) as i64)?)?;
        let st = bld.build_store(p, q).map_err(llvm_err)?;
        st.set_alignment(1).map_err(llvm_err)?;
        let wide = bld.build_int_s_extend(q, i32v, "qw").map_err(llvm_err)?;
        sum = bld.build_int_add(sum, wide, "qs").map_err(llvm_err)?;
    }
    let sum = cx.intrinsic("llvm.vector.reduce.add", &[i32v.into()], &[sum.into()])?.into_int_value();
    let nb = (k / QK) as i64;
    let dp = cx.gep_bytes(qr, mul_add(cx, b, 4, k as i64)?)?;
    bld.build_store(dp, d).map_err(llvm_err)?.set_alignment(1).map_err(llvm_err)?;
    let sp = cx.gep_bytes(qr, mul_add(cx, b, 4, k as i64 + 4 * nb)?)?;
    let st = bld.build_store(sp, sum).map_err(llvm_err)?;
    st.set_alignment(1).map_err(llvm_err)?;
    Ok(())
}

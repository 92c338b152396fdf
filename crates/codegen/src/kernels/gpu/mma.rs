//! Prefill matmuls on tensor cores: `mma.sync.m16n8k16` (bf16 inputs, f32 accumulation) for
//! bf16 weights, used when a call has at least 16 rows (decoding keeps the streaming GEMV).
//!
//! A task's block of 16 warps covers its 16 output columns as 2 tiles of 8, and 8 tiles of 16
//! activation rows, 128 rows per pass. For each K step of 16, a warp loads its A fragment (the
//! activations, f32) and B fragment (a weight row segment: bf16 pairs, contiguous along K, which
//! is the "col" layout mma wants) straight from global memory in the PTX ISA's fragment layout.
//!
//! The activations are f32. Rounding them to bf16 would cost ~3 significant digits, so each is
//! split exactly into three bf16 parts (`x = hi + mid + lo`: 8 significant bits each, 24 in all)
//! and the tile is multiplied three times: every product of a bf16 weight and a part is exact in
//! f32, so the result differs from the CPU kernel only in the order of the f32 additions.
//!
//! Fragment layout (PTX ISA, "Matrix fragments for mma.m16n8k16", 16-bit types), with
//! `group = lane / 4` and `pair = lane % 4`: A registers 0..3 hold rows (group, group + 8, group,
//! group + 8) at columns (2·pair, 2·pair, 2·pair + 8, 2·pair + 8) and the next column, lower
//! column in the lower half; B registers 0, 1 hold K rows 2·pair (+1) and 2·pair + 8 (+1) of
//! column `group`; C/D registers 0..3 hold row group (0, 1) and group + 8 (2, 3) at columns
//! 2·pair and 2·pair + 1.

use super::entry::{self, Entry};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use inkwell::values::{BasicMetadataValueEnum, FloatValue, IntValue};
use inkwell::IntPredicate;

/// Whether a matmul can take the tensor-core path for calls of 16 rows or more.
pub fn applies(format: crate::kernels::spec::WeightFormat, k: usize, cols_per_task: usize) -> bool {
    format == crate::kernels::spec::WeightFormat::Bf16
        && k.is_multiple_of(16)
        && cols_per_task.is_multiple_of(8)
        && cols_per_task <= 16
}

/// The tensor-core matmul for task `task` (its columns `task · cols_per_task ..`) over `m` rows.
#[allow(clippy::too_many_arguments)]
pub fn rows<'ctx>(
    cx: &KernelCx<'ctx>,
    e: &Entry<'ctx>,
    task: IntValue<'ctx>,
    m: IntValue<'ctx>,
    n: usize,
    k: usize,
    bias: bool,
    cols_per_task: usize,
) -> Result<()> {
    let b = &cx.builder;
    let (a, w, bias_p, out) = (e.bufs[0], e.bufs[1], e.bufs[2], e.bufs[3]);
    let n_tiles = (cols_per_task / 8) as i64;
    let warps = cols_per_task as i64; // the block has 32 · cols_per_task threads
    let m_tiles = warps / n_tiles;
    let tid = entry::thread(cx)?;
    let warp = b.build_int_unsigned_div(tid, cx.c64(32), "warp").map_err(llvm_err)?;
    let lane = entry::lane(cx)?;
    let group = b.build_int_unsigned_div(lane, cx.c64(4), "group").map_err(llvm_err)?;
    let pair = b.build_and(lane, cx.c64(3), "pair").map_err(llvm_err)?;
    let n_tile = b.build_int_unsigned_rem(warp, cx.c64(n_tiles), "nt").map_err(llvm_err)?;
    let m_tile = b.build_int_unsigned_div(warp, cx.c64(n_tiles), "mt").map_err(llvm_err)?;
    let col0 = b
        .build_int_add(
            b.build_int_mul(task, cx.c64(cols_per_task as i64), "tc").map_err(llvm_err)?,
            b.build_int_mul(n_tile, cx.c64(8), "nc").map_err(llvm_err)?,
            "col0",
        )
        .map_err(llvm_err)?;
    // This lane's B column (clamped into the matrix: its results are not written).
    let bcol = b.build_int_add(col0, group, "bcol").map_err(llvm_err)?;
    let last_col = cx.c64(n as i64 - 1);
    let bcol = b
        .build_select(cx.icmp(IntPredicate::SLT, bcol, last_col)?, bcol, last_col, "bc")
        .map_err(llvm_err)?
        .into_int_value();
    let wrow = cx.gep_bytes(w, b.build_int_mul(bcol, cx.c64(2 * k as i64), "wo").map_err(llvm_err)?)?;
    let last_row = b.build_int_sub(m, cx.c64(1), "lastrow").map_err(llvm_err)?;
    let clamp_row = |r: IntValue<'ctx>| -> Result<IntValue<'ctx>> {
        Ok(b.build_select(cx.icmp(IntPredicate::SLT, r, last_row)?, r, last_row, "rc")
            .map_err(llvm_err)?
            .into_int_value())
    };
    cx.for_range(cx.c64(0), m, 16 * m_tiles, |m0| {
        let r0 = b
            .build_int_add(m0, b.build_int_mul(m_tile, cx.c64(16), "mr").map_err(llvm_err)?, "r0")
            .map_err(llvm_err)?;
        let active = cx.icmp(IntPredicate::SLT, r0, m)?;
        cx.if_then(active, || {
            let ra = clamp_row(b.build_int_add(r0, group, "ra").map_err(llvm_err)?)?;
            let rb = clamp_row(
                b.build_int_add(r0, b.build_int_add(group, cx.c64(8), "g8").map_err(llvm_err)?, "rb")
                    .map_err(llvm_err)?,
            )?;
            let base_a = b.build_int_mul(ra, cx.c64(k as i64), "ba").map_err(llvm_err)?;
            let base_b = b.build_int_mul(rb, cx.c64(k as i64), "bb").map_err(llvm_err)?;
            let zero = cx.cf(0.0);
            let init: Vec<inkwell::values::BasicValueEnum> = vec![zero.into(); 4];
            let c = cx.for_range_acc(cx.c64(0), cx.c64(k as i64), 16, &init, |k0, cur| {
                let kc = b
                    .build_int_add(k0, b.build_int_mul(pair, cx.c64(2), "p2").map_err(llvm_err)?, "kc")
                    .map_err(llvm_err)?;
                let kc8 = b.build_int_add(kc, cx.c64(8), "kc8").map_err(llvm_err)?;
                // B: two bf16 pairs of the weight row.
                let b0 = cx
                    .load(cx.i32().into(), wrow, b.build_int_unsigned_div(kc, cx.c64(2), "w0").map_err(llvm_err)?, 4)?
                    .into_int_value();
                let b1 = cx
                    .load(cx.i32().into(), wrow, b.build_int_unsigned_div(kc8, cx.c64(2), "w1").map_err(llvm_err)?, 4)?
                    .into_int_value();
                // A: four f32 pairs, each split into three bf16 pairs.
                let pairs = [(base_a, kc), (base_b, kc), (base_a, kc8), (base_b, kc8)];
                let mut parts: [Vec<IntValue>; 3] = [Vec::new(), Vec::new(), Vec::new()];
                for (base, col) in pairs {
                    let at = b.build_int_add(base, col, "aat").map_err(llvm_err)?;
                    let x0 = cx.load_f32(a, at)?;
                    let x1 = cx.load_f32(a, b.build_int_add(at, cx.c64(1), "a1").map_err(llvm_err)?)?;
                    let s0 = split3(cx, x0)?;
                    let s1 = split3(cx, x1)?;
                    for p in 0..3 {
                        parts[p].push(pack(cx, s0[p], s1[p])?);
                    }
                }
                let mut acc: Vec<FloatValue> = cur.iter().map(|v| v.into_float_value()).collect();
                for part in &parts {
                    acc = mma(cx, part, b0, b1, &acc)?;
                }
                Ok(acc.into_iter().map(Into::into).collect())
            })?;
            // D: rows group, group + 8; columns 2·pair, 2·pair + 1.
            for (i, v) in c.iter().enumerate() {
                let row = b
                    .build_int_add(
                        r0,
                        b.build_int_add(group, cx.c64(if i < 2 { 0 } else { 8 }), "dr").map_err(llvm_err)?,
                        "row",
                    )
                    .map_err(llvm_err)?;
                let col = b
                    .build_int_add(
                        col0,
                        b.build_int_add(
                            b.build_int_mul(pair, cx.c64(2), "dc").map_err(llvm_err)?,
                            cx.c64((i % 2) as i64),
                            "dc1",
                        )
                        .map_err(llvm_err)?,
                        "col",
                    )
                    .map_err(llvm_err)?;
                let ok = b
                    .build_and(
                        cx.icmp(IntPredicate::SLT, row, m)?,
                        cx.icmp(IntPredicate::SLT, col, cx.c64(n as i64))?,
                        "ok",
                    )
                    .map_err(llvm_err)?;
                cx.if_then(ok, || {
                    let mut y = v.into_float_value();
                    if bias {
                        y = b.build_float_add(y, cx.load_f32(bias_p, col)?, "biased").map_err(llvm_err)?;
                    }
                    let at = b
                        .build_int_add(b.build_int_mul(row, cx.c64(n as i64), "o").map_err(llvm_err)?, col, "oat")
                        .map_err(llvm_err)?;
                    cx.store_f32(out, at, y)
                })?;
            }
            Ok(())
        })
    })
}

/// `x` as three bf16 bit patterns (in i32s, low 16 bits) whose sum is exactly `x`: each part is
/// the rest rounded to nearest-even bf16.
fn split3<'ctx>(cx: &KernelCx<'ctx>, x: FloatValue<'ctx>) -> Result<[IntValue<'ctx>; 3]> {
    let b = &cx.builder;
    let mut rest = x;
    let mut out = Vec::with_capacity(3);
    for _ in 0..3 {
        let bits = b.build_bit_cast(rest, cx.i32(), "bits").map_err(llvm_err)?.into_int_value();
        // Round to nearest even: add 0x7fff plus the lowest kept bit, keep the top half.
        let odd = b
            .build_and(
                b.build_right_shift(bits, cx.i32().const_int(16, false), false, "s").map_err(llvm_err)?,
                cx.i32().const_int(1, false),
                "odd",
            )
            .map_err(llvm_err)?;
        let bias = b.build_int_add(odd, cx.i32().const_int(0x7fff, false), "rb").map_err(llvm_err)?;
        let rounded = b
            .build_and(
                b.build_int_add(bits, bias, "r").map_err(llvm_err)?,
                cx.i32().const_int(0xffff_0000, false),
                "hi",
            )
            .map_err(llvm_err)?;
        let part = b.build_bit_cast(rounded, cx.f32(), "part").map_err(llvm_err)?.into_float_value();
        out.push(b.build_right_shift(rounded, cx.i32().const_int(16, false), false, "h16").map_err(llvm_err)?);
        rest = b.build_float_sub(rest, part, "rest").map_err(llvm_err)?;
    }
    Ok([out[0], out[1], out[2]])
}

/// Two bf16 bit patterns as one i32 register: `first` in the low half.
fn pack<'ctx>(cx: &KernelCx<'ctx>, first: IntValue<'ctx>, second: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
    let b = &cx.builder;
    let hi = b.build_left_shift(second, cx.i32().const_int(16, false), "hi").map_err(llvm_err)?;
    b.build_or(first, hi, "packed").map_err(llvm_err)
}

/// `D = A·B + C` for one m16n8k16 bf16 tile (this lane's fragments).
fn mma<'ctx>(
    cx: &KernelCx<'ctx>,
    a: &[IntValue<'ctx>],
    b0: IntValue<'ctx>,
    b1: IntValue<'ctx>,
    c: &[FloatValue<'ctx>],
) -> Result<Vec<FloatValue<'ctx>>> {
    if cx.sim {
        return entry::sim_mma(cx, a, b0, b1, c);
    }
    let mut args: Vec<BasicMetadataValueEnum> = a.iter().map(|&v| v.into()).collect();
    args.push(b0.into());
    args.push(b1.into());
    args.extend(c.iter().map(|&v| BasicMetadataValueEnum::from(v)));
    let call = cx.intrinsic_call("llvm.nvvm.mma.m16n8k16.row.col.bf16", &[], &args)?;
    let inkwell::values::ValueKind::Basic(v) = call.try_as_basic_value() else {
        return Err(llvm_err("mma returned nothing"));
    };
    let s = v.into_struct_value();
    (0..4).map(|i| Ok(cx.builder.build_extract_value(s, i, "d").map_err(llvm_err)?.into_float_value())).collect()
}

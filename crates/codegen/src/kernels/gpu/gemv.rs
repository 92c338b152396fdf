//! `matmul` on the GPU: a warp per output column (weight row), the block's warps on consecutive
//! columns (`cols_per_task` of them, so the planner's task count is the grid).
//!
//! Each lane walks the weight row in groups of 8 elements — one 128-bit load for bf16/f16 (two for
//! f32), 8 bytes of a Q8_0/Q4_0 block plus its scale — dequantizes them in registers and multiplies
//! them with up to [`ROWS`] activation rows at once, so a group of activation rows reads each
//! weight byte once; decoding (one row) streams every weight byte exactly once, which is what
//! bounds its speed. Partial sums are combined with warp shuffles in a fixed order, and lane 0
//! writes the result (plus the bias).
//!
//! Consecutive lanes read consecutive 16-byte pieces, so a warp's loads are fully coalesced
//! 512-byte transactions.

use super::entry::{self, Entry};
use super::{Arity, Launch};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::{KernelSpec, WeightFormat};
use inkwell::types::VectorType;
use inkwell::values::{BasicValueEnum, FloatValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

/// Activation rows multiplied per pass over the weights (prefill); decoding takes a one-row path.
const ROWS: usize = 4;
/// Elements per lane per step.
const GROUP: usize = 8;
/// Groups each lane loads before multiplying (the main loop's unroll).
const UNROLL: usize = 4;

struct Shape {
    format: WeightFormat,
    n: usize,
    k: usize,
}

pub fn emit(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec, arity: Arity) -> Result<Launch> {
    let KernelSpec::Matmul { format, n, k, bias, cols_per_task, interleave } = *spec else {
        return Err(llvm_err(format!("{name}: gemv cannot emit {} kernels", spec.kind())));
    };
    if interleave != 0 {
        return Err(llvm_err(format!("{name}: GPU kernels read plain rows, not rows interleaved by {interleave}")));
    }
    if k % format.block() != 0 || cols_per_task == 0 || cols_per_task > 32 {
        return Err(llvm_err(format!("{name}: K = {k} in {} with {cols_per_task} columns per task", format.name())));
    }
    let block = 32 * cols_per_task as u32;
    let e = entry::begin(cx, name, arity.dims, arity.bufs, block)?;
    let b = &cx.builder;
    let shape = Shape { format, n, k };
    let task = entry::block(cx)?;
    let warp = b.build_int_unsigned_div(entry::thread(cx)?, cx.c64(32), "warp").map_err(llvm_err)?;
    let col = b
        .build_int_add(b.build_int_mul(task, cx.c64(cols_per_task as i64), "c0").map_err(llvm_err)?, warp, "col")
        .map_err(llvm_err)?;
    let m = *e.dims.first().ok_or_else(|| llvm_err(format!("{name}: no row count")))?;
    // Prefill of bf16 weights: tensor cores (the whole block), else the per-warp GEMV below.
    let gemv_bb = if super::mma::applies(format, k, cols_per_task) {
        let f = b.get_insert_block().and_then(|bb| bb.get_parent()).ok_or_else(|| llvm_err("no function"))?;
        let (tensor, gemv, end) = (
            cx.context.append_basic_block(f, "tensor"),
            cx.context.append_basic_block(f, "gemv"),
            cx.context.append_basic_block(f, "end"),
        );
        b.build_conditional_branch(cx.icmp(IntPredicate::SGE, m, cx.c64(16))?, tensor, gemv).map_err(llvm_err)?;
        b.position_at_end(tensor);
        super::mma::rows(cx, &e, task, m, n, k, bias, cols_per_task)?;
        b.build_unconditional_branch(end).map_err(llvm_err)?;
        b.position_at_end(gemv);
        Some(end)
    } else {
        None
    };
    let live = cx.icmp(IntPredicate::SLT, col, cx.c64(n as i64))?;
    cx.if_then(live, || {
        let one = cx.icmp(IntPredicate::EQ, m, cx.c64(1))?;
        // Decoding: one row, no clamping. Prefill: groups of ROWS rows.
        let f = b.get_insert_block().and_then(|bb| bb.get_parent()).ok_or_else(|| llvm_err("no function"))?;
        let (single, multi, done) = (
            cx.context.append_basic_block(f, "m1"),
            cx.context.append_basic_block(f, "mn"),
            cx.context.append_basic_block(f, "mdone"),
        );
        b.build_conditional_branch(one, single, multi).map_err(llvm_err)?;
        b.position_at_end(single);
        rows_pass(cx, &e, &shape, bias, col, cx.c64(0), m, 1)?;
        b.build_unconditional_branch(done).map_err(llvm_err)?;
        b.position_at_end(multi);
        cx.for_range(cx.c64(0), m, ROWS as i64, |m0| rows_pass(cx, &e, &shape, bias, col, m0, m, ROWS))?;
        b.build_unconditional_branch(done).map_err(llvm_err)?;
        b.position_at_end(done);
        Ok(())
    })?;
    if let Some(end) = gemv_bb {
        b.build_unconditional_branch(end).map_err(llvm_err)?;
        b.position_at_end(end);
    }
    cx.finish()?;
    Ok(Launch::new(block, 1))
}

/// Output column `col` for activation rows `m0 .. m0 + rows` (rows past `m` repeat the last one
/// and are not written).
#[allow(clippy::too_many_arguments)]
fn rows_pass<'ctx>(
    cx: &KernelCx<'ctx>,
    e: &Entry<'ctx>,
    s: &Shape,
    bias: bool,
    col: IntValue<'ctx>,
    m0: IntValue<'ctx>,
    m: IntValue<'ctx>,
    rows: usize,
) -> Result<()> {
    let b = &cx.builder;
    let (a, w, bias_p, out) = (e.bufs[0], e.bufs[1], e.bufs[2], e.bufs[3]);
    let lane = entry::lane(cx)?;
    let last = b.build_int_sub(m, cx.c64(1), "last").map_err(llvm_err)?;
    let row_base = (0..rows)
        .map(|r| {
            let row = b.build_int_add(m0, cx.c64(r as i64), "row").map_err(llvm_err)?;
            let lt = cx.icmp(IntPredicate::SLT, row, m)?;
            let row = b.build_select(lt, row, last, "rowc").map_err(llvm_err)?.into_int_value();
            b.build_int_mul(row, cx.c64(s.k as i64), "abase").map_err(llvm_err)
        })
        .collect::<Result<Vec<_>>>()?;
    let row_bytes = s.format.row_bytes(s.k) as i64;
    let wrow = cx.gep_bytes(w, b.build_int_mul(col, cx.c64(row_bytes), "wo").map_err(llvm_err)?)?;
    let v8 = cx.vf32(GROUP as u32);
    let zero: BasicValueEnum = v8.const_zero().into();
    let groups = (s.k / GROUP) as i64;
    // Groups g, g+32, ... of `gs` at once: every load first, then the multiplies, so each lane has
    // UNROLL 16-byte weight loads in flight (streaming needs many bytes in flight per SM).
    let step = |gs: &[IntValue<'ctx>], accs: &[BasicValueEnum<'ctx>]| -> Result<Vec<BasicValueEnum<'ctx>>> {
        let mut loaded = Vec::with_capacity(gs.len());
        for &g in gs {
            let wv = dequant_group(cx, s, wrow, g)?;
            let k0 = b.build_int_mul(g, cx.c64(GROUP as i64), "k0").map_err(llvm_err)?;
            let avs = row_base
                .iter()
                .map(|&rb| cx.load_vf32(a, b.build_int_add(rb, k0, "at").map_err(llvm_err)?, GROUP as u32))
                .collect::<Result<Vec<_>>>()?;
            loaded.push((wv, avs));
        }
        let mut next: Vec<BasicValueEnum> = accs.to_vec();
        for (wv, avs) in &loaded {
            for (r, av) in avs.iter().enumerate() {
                next[r] = cx.fma(*wv, *av, next[r].into_vector_value())?;
            }
        }
        Ok(next)
    };
    let wide = 32 * UNROLL as i64;
    let main_end = groups - 32 * (UNROLL as i64 - 1);
    let mut accs = vec![zero; rows];
    if main_end > 0 {
        accs = cx.for_range_acc(lane, cx.c64(main_end), wide, &accs, |g, cur| {
            let gs = (0..UNROLL as i64)
                .map(|u| b.build_int_add(g, cx.c64(32 * u), "gu").map_err(llvm_err))
                .collect::<Result<Vec<_>>>()?;
            step(&gs, cur)
        })?;
    }
    // Where the unrolled loop stopped: lane + wide · ceil((main_end − lane) / wide), at least lane.
    let rest = if main_end > 0 {
        let span = b.build_int_sub(cx.c64(main_end + wide - 1), lane, "span").map_err(llvm_err)?;
        let trips = b.build_int_signed_div(span, cx.c64(wide), "trips").map_err(llvm_err)?;
        b.build_int_add(lane, b.build_int_mul(trips, cx.c64(wide), "done").map_err(llvm_err)?, "rest")
            .map_err(llvm_err)?
    } else {
        lane
    };
    let accs = cx.for_range_acc(rest, cx.c64(groups), 32, &accs, |g, cur| step(&[g], cur))?;
    let mut sums = accs.iter().map(|v| cx.hsum(v.into_vector_value())).collect::<Result<Vec<FloatValue>>>()?;
    let tail_start = groups * GROUP as i64;
    if tail_start < s.k as i64 {
        // K not a multiple of 8 (unquantized formats only): the last elements one per lane.
        let start = b.build_int_add(lane, cx.c64(tail_start), "t0").map_err(llvm_err)?;
        let init: Vec<BasicValueEnum> = sums.iter().map(|&v| v.into()).collect();
        let out = cx.for_range_acc(start, cx.c64(s.k as i64), 32, &init, |kk, accs| {
            let wv = super::embedding::element(cx, s.format, wrow, kk)?;
            let mut next = Vec::with_capacity(rows);
            for (r, acc) in accs.iter().enumerate() {
                let av = cx.load_f32(a, b.build_int_add(row_base[r], kk, "at").map_err(llvm_err)?)?;
                next.push(cx.fma(wv, av, acc.into_float_value())?);
            }
            Ok(next)
        })?;
        sums = out.iter().map(|v| v.into_float_value()).collect();
    }
    let bias_v = if bias { Some(cx.load_f32(bias_p, col)?) } else { None };
    let first = cx.icmp(IntPredicate::EQ, lane, cx.c64(0))?;
    for (r, &sum) in sums.iter().enumerate() {
        let mut total = entry::warp_reduce(cx, sum, false)?;
        if let Some(bv) = bias_v {
            total = b.build_float_add(total, bv, "biased").map_err(llvm_err)?;
        }
        let row = b.build_int_add(m0, cx.c64(r as i64), "row").map_err(llvm_err)?;
        let in_range = cx.icmp(IntPredicate::SLT, row, m)?;
        let write = b.build_and(first, in_range, "write").map_err(llvm_err)?;
        cx.if_then(write, || {
            let at = b
                .build_int_add(b.build_int_mul(row, cx.c64(s.n as i64), "o").map_err(llvm_err)?, col, "oc")
                .map_err(llvm_err)?;
            cx.store_f32(out, at, total)
        })?;
    }
    Ok(())
}

/// The widest alignment (≤ 16) that every row's group of 8 elements has.
fn group_align(format: WeightFormat, k: usize) -> u32 {
    let esize = match format {
        WeightFormat::F32 => 4,
        WeightFormat::Bf16 | WeightFormat::F16 => 2,
        _ => return 2,
    };
    if (k * esize).is_multiple_of(16) {
        16
    } else {
        esize as u32
    }
}

/// Elements `8g .. 8g + 8` of the weight row at `wrow`, as `<8 x float>`.
fn dequant_group<'ctx>(
    cx: &KernelCx<'ctx>,
    s: &Shape,
    wrow: PointerValue<'ctx>,
    g: IntValue<'ctx>,
) -> Result<VectorValue<'ctx>> {
    let b = &cx.builder;
    let n = GROUP as u32;
    let align = group_align(s.format, s.k);
    let i16v = cx.context.i16_type().vec_type(n);
    let i32v = cx.i32().vec_type(n);
    let v8 = cx.vf32(n);
    let k0 = b.build_int_mul(g, cx.c64(GROUP as i64), "k0").map_err(llvm_err)?;
    let bytes = |esize: i64| b.build_int_mul(k0, cx.c64(esize), "wb").map_err(llvm_err);
    match s.format {
        WeightFormat::F32 => Ok(cx.load_at(v8.into(), wrow, bytes(4)?, align)?.into_vector_value()),
        WeightFormat::Bf16 => {
            let raw = cx.load_at(i16v.into(), wrow, bytes(2)?, align)?.into_vector_value();
            let wide = b.build_int_z_extend(raw, i32v, "z").map_err(llvm_err)?;
            let shifted = b.build_left_shift(wide, splat_i32(cx, 16, n), "sh").map_err(llvm_err)?;
            Ok(b.build_bit_cast(shifted, v8, "bf").map_err(llvm_err)?.into_vector_value())
        }
        WeightFormat::F16 => {
            let hv = cx.context.f16_type().vec_type(n);
            let raw = cx.load_at(hv.into(), wrow, bytes(2)?, align)?.into_vector_value();
            b.build_float_ext(raw, v8, "h").map_err(llvm_err)
        }
        WeightFormat::Q8_0 | WeightFormat::Q4_0 => {
            let q4 = s.format == WeightFormat::Q4_0;
            let block_bytes: i64 = if q4 { 18 } else { 34 };
            // Group g is elements 8·(g mod 4) .. +8 of block g / 4.
            let blk = b.build_int_unsigned_div(g, cx.c64(4), "blk").map_err(llvm_err)?;
            let j = b
                .build_int_mul(b.build_and(g, cx.c64(3), "gj").map_err(llvm_err)?, cx.c64(8), "j")
                .map_err(llvm_err)?;
            let start = b.build_int_mul(blk, cx.c64(block_bytes), "bs").map_err(llvm_err)?;
            let scale = cx.load_at(cx.context.f16_type().into(), wrow, start, 2)?.into_float_value();
            let scale = b.build_float_ext(scale, cx.f32(), "d").map_err(llvm_err)?;
            let i8v = cx.context.i8_type().vec_type(n);
            let q = if q4 {
                // Elements 0..16 are the low nibbles of bytes 0..16, 16..32 the high ones.
                let byte = b.build_and(j, cx.c64(15), "jb").map_err(llvm_err)?;
                let at = b
                    .build_int_add(start, b.build_int_add(byte, cx.c64(2), "o").map_err(llvm_err)?, "qa")
                    .map_err(llvm_err)?;
                let raw = cx.load_at(i8v.into(), wrow, at, 2)?.into_vector_value();
                let wide = b.build_int_z_extend(raw, i32v, "qz").map_err(llvm_err)?;
                let high = cx.icmp(IntPredicate::UGE, j, cx.c64(16))?;
                let shift =
                    b.build_select(high, cx.i32().const_int(4, false), cx.i32().const_zero(), "s").map_err(llvm_err)?;
                let shift = cx.splat_int(shift.into_int_value(), n)?;
                let nib = b
                    .build_and(
                        b.build_right_shift(wide, shift, false, "hs").map_err(llvm_err)?,
                        splat_i32(cx, 15, n),
                        "nib",
                    )
                    .map_err(llvm_err)?;
                b.build_int_sub(nib, splat_i32(cx, 8, n), "q").map_err(llvm_err)?
            } else {
                let at = b
                    .build_int_add(start, b.build_int_add(j, cx.c64(2), "o").map_err(llvm_err)?, "qa")
                    .map_err(llvm_err)?;
                let raw = cx.load_at(i8v.into(), wrow, at, 2)?.into_vector_value();
                b.build_int_s_extend(raw, i32v, "qs").map_err(llvm_err)?
            };
            let qf = b.build_signed_int_to_float(q, v8, "qf").map_err(llvm_err)?;
            let d = cx.splat(scale, n)?;
            b.build_float_mul(qf, d, "deq").map_err(llvm_err)
        }
    }
}

fn splat_i32<'ctx>(cx: &KernelCx<'ctx>, v: u64, n: u32) -> VectorValue<'ctx> {
    VectorType::const_vector(&vec![cx.i32().const_int(v, false); n as usize])
}

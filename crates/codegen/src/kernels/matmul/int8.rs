//! `matmul_i8`'s prefill: Q8_0/Q4_0 weights times int8 activations with AVX512-VNNI.
//!
//! A task owns 16 output columns — one vector of lanes. It first repacks its 16 weight rows into
//! a panel on the stack, block by block: the f16 scales widened to one f32 vector, and the quants
//! as unsigned bytes laid out so that one 64-byte vector holds 4 consecutive K elements of each
//! of the 16 columns (Q4_0: the nibble `q`; Q8_0: `q + 128`). Then each tile of rows walks the
//! blocks: per row, 8 `vpdpbusd` (4 elements × 16 columns each, the row's 4 quants broadcast)
//! give the block's 16 integer dot products exactly, which start from `−offset · Σ q_a` to undo
//! the unsigned offset; one conversion and one fma apply both scales. Every lane is an output
//! column, so nothing is reduced across lanes, and the sum over blocks runs in block order — the
//! same for every split of tasks over threads.
//!
//! The only rounding beyond f32 accumulation is the activations' quantization to int8 (relative
//! error ≤ 1/254 of each block's largest value), as in llama.cpp.

use super::ir::{add, mul_add};
use super::quantize::q8_row_bytes;
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::WeightFormat;
use inkwell::types::VectorType;
use inkwell::values::{BasicValueEnum, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

/// Output columns per task: one 16-lane vector.
pub const COLS: usize = 16;
/// Elements per quantization block.
const QK: i64 = 32;
/// Bytes of one block in the panel: 8 vectors of quants, then the 16 scales.
const PANEL_BLOCK: i64 = 8 * 64 + 64;
/// Rows per full tile: 8 integer and 8 f32 accumulators stay in registers.
const TILE_ROWS: u32 = 8;

/// The panel's size for rows of `k`.
pub fn panel_bytes(k: usize) -> usize {
    k / QK as usize * PANEL_BLOCK as usize
}

/// What the int8 prefill reads and writes.
pub struct Int8<'a, 'ctx> {
    pub cx: &'a KernelCx<'ctx>,
    pub format: WeightFormat,
    pub n: i64,
    pub k: i64,
    pub row_bytes: i64,
    pub w: PointerValue<'ctx>,
    pub bias: Option<PointerValue<'ctx>>,
    pub out: PointerValue<'ctx>,
    pub a_q: PointerValue<'ctx>,
}

impl<'a, 'ctx> Int8<'a, 'ctx> {
    fn blocks(&self) -> i64 {
        self.k / QK
    }

    fn i32s(&self) -> VectorType<'ctx> {
        self.cx.i32().vec_type(COLS as u32)
    }

    /// The unsigned offset added to the weights' quants.
    fn offset(&self) -> i64 {
        if self.format == WeightFormat::Q4_0 {
            8
        } else {
            128
        }
    }

    /// Task `t` (columns `16t .. min(16t + 16, N)`) for all `m` rows, through `panel`.
    pub fn task(&self, t: IntValue<'ctx>, m: IntValue<'ctx>, panel: PointerValue<'ctx>) -> Result<()> {
        let (cx, b) = (self.cx, &self.cx.builder);
        let c0 = mul_add(cx, t, COLS as i64, 0)?;
        let width = b.build_int_sub(cx.c64(self.n), c0, "width").map_err(llvm_err)?;
        let full = cx.icmp(IntPredicate::SGE, width, cx.c64(COLS as i64))?;
        let width = b.build_select(full, cx.c64(COLS as i64), width, "w").map_err(llvm_err)?.into_int_value();
        // Lanes past N (the last task of an N that is not a multiple of 16) are masked off.
        let one = cx.context.i16_type().const_int(1, false);
        let w16 = b.build_int_truncate(width, cx.context.i16_type(), "w16").map_err(llvm_err)?;
        let low = b.build_left_shift(one, w16, "bit").map_err(llvm_err)?;
        let low = b.build_int_sub(low, one, "low").map_err(llvm_err)?;
        let all = cx.context.i16_type().const_all_ones();
        let mask = b.build_select(full, all, low, "mask").map_err(llvm_err)?.into_int_value();
        self.repack(c0, mask, panel)?;
        let tiles = |rows: u32| !(i64::from(rows) - 1);
        let m8 = b.build_and(m, cx.c64(tiles(TILE_ROWS)), "m8").map_err(llvm_err)?;
        let m4 = b.build_and(m, cx.c64(tiles(4)), "m4").map_err(llvm_err)?;
        cx.for_range(cx.c64(0), m8, i64::from(TILE_ROWS), |i| self.tile(i, TILE_ROWS, c0, mask, panel))?;
        cx.for_range(m8, m4, 4, |i| self.tile(i, 4, c0, mask, panel))?;
        cx.for_range(m4, m, 1, |i| self.tile(i, 1, c0, mask, panel))
    }

    /// `vpgatherdd` of the dword at byte `at` of each of the task's weight rows (masked lanes 0).
    fn gather(&self, rows: PointerValue<'ctx>, at: IntValue<'ctx>, mask: IntValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let cx = self.cx;
        let index: Vec<_> = (0..COLS as u64).map(|c| cx.i32().const_int(c * self.row_bytes as u64, false)).collect();
        let args = [
            self.i32s().const_zero().into(),
            cx.gep_bytes(rows, at)?.into(),
            VectorType::const_vector(&index).into(),
            mask.into(),
            cx.i32().const_int(1, false).into(),
        ];
        Ok(cx.intrinsic("llvm.x86.avx512.gather.dpi.512", &[], &args)?.into_vector_value())
    }

    /// The task's 16 weight rows (from column `c0`) as unsigned-byte groups and f32 scales.
    fn repack(&self, c0: IntValue<'ctx>, mask: IntValue<'ctx>, panel: PointerValue<'ctx>) -> Result<()> {
        let (cx, b) = (self.cx, &self.cx.builder);
        let rows = cx.gep_bytes(self.w, mul_add(cx, c0, self.row_bytes, 0)?)?;
        let block_bytes = self.format.row_bytes(QK as usize) as i64;
        let splat = |v: u32| VectorType::const_vector(&[cx.i32().const_int(u64::from(v), false); COLS]);
        let store = |p: PointerValue<'ctx>, at: i64, v: VectorValue<'ctx>| -> Result<()> {
            let st = b.build_store(cx.gep_bytes(p, cx.c64(at))?, v).map_err(llvm_err)?;
            st.set_alignment(64).map_err(llvm_err)?;
            Ok(())
        };
        cx.for_range(cx.c64(0), cx.c64(self.blocks()), 1, |blk| {
            let at = |off: i64| mul_add(cx, blk, block_bytes, off);
            let pb = cx.gep_bytes(panel, mul_add(cx, blk, PANEL_BLOCK, 0)?)?;
            // The scale is the low half of the dword at the block's start.
            let d = self.gather(rows, at(0)?, mask)?;
            let half = cx.context.f16_type().vec_type(COLS as u32);
            let d = b.build_int_truncate(d, cx.context.i16_type().vec_type(COLS as u32), "d").map_err(llvm_err)?;
            let d = b.build_bit_cast(d, half, "d").map_err(llvm_err)?.into_vector_value();
            store(pb, 8 * 64, b.build_float_ext(d, cx.vf32(COLS as u32), "d").map_err(llvm_err)?)?;
            if self.format == WeightFormat::Q4_0 {
                // Quant byte j holds element j (low nibble) and j + 16 (high nibble): dword t gives
                // elements 4t..4t+4 and 16+4t..16+4t+4, groups t and t + 4.
                for t in 0..4 {
                    let v = self.gather(rows, at(2 + 4 * t)?, mask)?;
                    let lo = b.build_and(v, splat(0x0f0f_0f0f), "lo").map_err(llvm_err)?;
                    let hi = b.build_right_shift(v, splat(4), false, "hi").map_err(llvm_err)?;
                    let hi = b.build_and(hi, splat(0x0f0f_0f0f), "hi").map_err(llvm_err)?;
                    store(pb, 64 * t, lo)?;
                    store(pb, 64 * (t + 4), hi)?;
                }
            } else {
                for t in 0..8 {
                    let v = self.gather(rows, at(2 + 4 * t)?, mask)?;
                    store(pb, 64 * t, b.build_xor(v, splat(0x8080_8080), "u").map_err(llvm_err)?)?;
                }
            }
            Ok(())
        })
    }

    /// Rows `i .. i + rows` of the task's columns.
    fn tile(
        &self,
        i: IntValue<'ctx>,
        rows: u32,
        c0: IntValue<'ctx>,
        mask: IntValue<'ctx>,
        panel: PointerValue<'ctx>,
    ) -> Result<()> {
        let (cx, b) = (self.cx, &self.cx.builder);
        let (k, nb) = (self.k, self.blocks());
        let lanes = COLS as u32;
        let qrow = q8_row_bytes(k as usize) as i64;
        let a_rows = (0..rows)
            .map(|r| cx.gep_bytes(self.a_q, mul_add(cx, mul_add(cx, i, 1, i64::from(r))?, qrow, 0)?))
            .collect::<Result<Vec<_>>>()?;
        let splat_i32 = |v: IntValue<'ctx>| -> Result<VectorValue<'ctx>> {
            let undef = self.i32s().get_undef();
            let one = b.build_insert_element(undef, v, cx.i32().const_zero(), "s").map_err(llvm_err)?;
            b.build_shuffle_vector(one, undef, self.i32s().const_zero(), "splat").map_err(llvm_err)
        };
        let zero = cx.vf32(lanes).const_zero();
        let init = vec![BasicValueEnum::from(zero); rows as usize];
        let accs = cx.for_range_acc(cx.c64(0), cx.c64(nb), 1, &init, |blk, cur| {
            let pb = cx.gep_bytes(panel, mul_add(cx, blk, PANEL_BLOCK, 0)?)?;
            let dw = cx.load_at(cx.vf32(lanes).into(), pb, cx.c64(8 * 64), 64)?.into_vector_value();
            let mut dots = a_rows
                .iter()
                .map(|&ar| {
                    let sum = cx.load_at(cx.i32().into(), ar, mul_add(cx, blk, 4, k + 4 * nb)?, 1)?.into_int_value();
                    let start = b.build_int_mul(sum, cx.i32().const_int((-self.offset()) as u64, true), "c");
                    splat_i32(start.map_err(llvm_err)?)
                })
                .collect::<Result<Vec<_>>>()?;
            for g in 0..8 {
                let w = cx.load_at(self.i32s().into(), pb, cx.c64(64 * g), 64)?;
                for (dot, &ar) in dots.iter_mut().zip(&a_rows) {
                    let a = cx.load_at(cx.i32().into(), ar, mul_add(cx, blk, QK, 4 * g)?, 1)?.into_int_value();
                    let args = [(*dot).into(), w.into(), splat_i32(a)?.into()];
                    *dot = cx.intrinsic("llvm.x86.avx512.vpdpbusd.512", &[], &args)?.into_vector_value();
                }
            }
            let mut next = Vec::with_capacity(rows as usize);
            for ((dot, &ar), acc) in dots.into_iter().zip(&a_rows).zip(cur) {
                let da = cx.load_at(cx.f32().into(), ar, mul_add(cx, blk, 4, k)?, 1)?.into_float_value();
                let scale = b.build_float_mul(dw, cx.splat(da, lanes)?, "s").map_err(llvm_err)?;
                let dot = b.build_signed_int_to_float(dot, cx.vf32(lanes), "df").map_err(llvm_err)?;
                next.push(cx.fma(dot, scale, acc.into_vector_value())?);
            }
            Ok(next)
        })?;
        let vmask = b.build_bit_cast(mask, cx.context.bool_type().vec_type(lanes), "vm").map_err(llvm_err)?;
        let bias = match self.bias {
            Some(p) => {
                let p = cx.gep(cx.f32().into(), p, c0)?;
                let args = [p.into(), cx.i32().const_int(4, false).into(), vmask.into(), zero.into()];
                Some(cx.intrinsic("llvm.masked.load", &[cx.vf32(lanes).into(), cx.ptr().into()], &args)?)
            }
            None => None,
        };
        for (r, acc) in accs.into_iter().enumerate() {
            let mut v = acc.into_vector_value();
            if let Some(bias) = bias {
                v = b.build_float_add(v, bias.into_vector_value(), "bias").map_err(llvm_err)?;
            }
            let row = mul_add(cx, i, 1, r as i64)?;
            let p = cx.gep(cx.f32().into(), self.out, add(cx, mul_add(cx, row, self.n, 0)?, c0)?)?;
            let args = [v.into(), p.into(), cx.i32().const_int(4, false).into(), vmask.into()];
            cx.intrinsic_call("llvm.masked.store", &[cx.vf32(lanes).into(), cx.ptr().into()], &args)?;
        }
        Ok(())
    }
}

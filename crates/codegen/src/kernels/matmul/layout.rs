//! Where a packed weight row's units lie: plain rows, or rows [`crate::pack::interleave`]d in
//! groups of [`ROW_GROUP`] (the layout the planner stores unquantized CPU weights in).
//!
//! A unit is what [`super::decode::Decoder::unit`] reads (one vector of `lanes` elements for
//! the unquantized formats). Interleaved, a row's units come in chunks of `units_per_chunk`
//! consecutive units, and the group's 4 rows take turns chunk by chunk, so unit `u` of a row is
//! `(u / upc) · 4 · chunk_bytes + (u % upc) · unit_bytes` past the row's start, which is its
//! group's start plus `(r % 4) · chunk_bytes`.

use super::ir::{add, mul_add};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::WeightFormat;
use crate::pack::ROW_GROUP;
use inkwell::values::{IntValue, PointerValue};

/// The layout of one packed `[rows, k]` weight as a kernel addresses it.
#[derive(Clone, Copy, Debug)]
pub struct RowLayout {
    row_bytes: i64,
    unit_bytes: i64,
    /// Units per interleaved chunk; 0 for plain rows.
    units_per_chunk: i64,
}

impl RowLayout {
    /// The layout of rows of `k` elements in `format`, read `unit_elems` at a time, interleaved
    /// by `interleave` elements (0: plain rows). Interleaving needs an unquantized format, K a
    /// multiple of the chunk, and a chunk of a power-of-two number of units.
    /// (The error says why, for the caller to name its kernel.)
    pub fn new(
        format: WeightFormat,
        k: usize,
        unit_elems: usize,
        interleave: usize,
    ) -> std::result::Result<RowLayout, String> {
        let row_bytes = format.row_bytes(k) as i64;
        let unit_bytes = format.row_bytes(unit_elems) as i64;
        if interleave == 0 {
            return Ok(RowLayout { row_bytes, unit_bytes, units_per_chunk: 0 });
        }
        let upc = interleave / unit_elems.max(1);
        let fits = format.block() == 1
            && interleave.is_multiple_of(unit_elems.max(1))
            && upc.is_power_of_two()
            && k.is_multiple_of(interleave);
        if !fits {
            return Err(format!(
                "rows interleaved by {interleave} need unquantized rows whose K ({k}) is whole chunks, \
                 and chunks of a power-of-two number of {unit_elems}-element vectors"
            ));
        }
        Ok(RowLayout { row_bytes, unit_bytes, units_per_chunk: upc as i64 })
    }

    pub fn interleaved(&self) -> bool {
        self.units_per_chunk > 0
    }

    /// Where row `r` of the weight at `base` starts.
    pub fn row<'ctx>(
        &self,
        cx: &KernelCx<'ctx>,
        base: PointerValue<'ctx>,
        r: IntValue<'ctx>,
    ) -> Result<PointerValue<'ctx>> {
        if !self.interleaved() {
            return cx.gep_bytes(base, mul_add(cx, r, self.row_bytes, 0)?);
        }
        let b = &cx.builder;
        let mask = ROW_GROUP as i64 - 1;
        let group = b.build_and(r, cx.c64(!mask), "grp").map_err(llvm_err)?;
        let lane = b.build_and(r, cx.c64(mask), "gl").map_err(llvm_err)?;
        let offset = add(cx, mul_add(cx, group, self.row_bytes, 0)?, mul_add(cx, lane, self.chunk_bytes(), 0)?)?;
        cx.gep_bytes(base, offset)
    }

    /// Unit `u` of the row starting at `row`.
    pub fn unit<'ctx>(
        &self,
        cx: &KernelCx<'ctx>,
        row: PointerValue<'ctx>,
        u: IntValue<'ctx>,
    ) -> Result<PointerValue<'ctx>> {
        if self.units_per_chunk <= 1 {
            return cx.gep_bytes(row, mul_add(cx, u, self.unit_stride(), 0)?);
        }
        let b = &cx.builder;
        let shift = i64::from(self.units_per_chunk.trailing_zeros());
        let chunk = b.build_right_shift(u, cx.c64(shift), false, "chunk").map_err(llvm_err)?;
        let within = b.build_and(u, cx.c64(self.units_per_chunk - 1), "within").map_err(llvm_err)?;
        let offset = add(
            cx,
            mul_add(cx, chunk, ROW_GROUP as i64 * self.chunk_bytes(), 0)?,
            mul_add(cx, within, self.unit_bytes, 0)?,
        )?;
        cx.gep_bytes(row, offset)
    }

    /// Bytes between units `u` and `u + 1` on average: the stride of a plain row, or of a group's
    /// stream per unit of each row when interleaved (then a whole group's tile, read unit `u` of
    /// all rows, has consumed `u · unit_stride` bytes from the group's start).
    pub fn unit_stride(&self) -> i64 {
        if self.interleaved() {
            ROW_GROUP as i64 * self.unit_bytes
        } else {
            self.unit_bytes
        }
    }

    /// Units per chunk (1 for plain rows): loops over a row step by multiples of this.
    pub fn units_per_chunk(&self) -> i64 {
        self.units_per_chunk.max(1)
    }

    fn chunk_bytes(&self) -> i64 {
        self.units_per_chunk * self.unit_bytes
    }
}

//! Reading packed weights as f32 vectors, dequantized in registers.
//!
//! A row of weights is walked in *units*: one vector of `lanes` elements for f32/bf16/f16, one
//! 32-element block for Q8_0/Q4_0 (its f16 scale, then `32 / lanes` vectors). Every conversion is
//! exact, so a kernel's result differs from the f64 reference on [`crate::pack::unpack`]'s values
//! only by the rounding of its f32 accumulation:
//! - bf16 is the top half of an f32: zero-extend to i32 and shift left by 16;
//! - f16 is an `fpext` of `<lanes x half>` (one `vcvtph2ps` with F16C/AVX-512);
//! - Q8_0 is `sitofp(sext q) · d` — exact, since an 11-bit f16 mantissa times an 8-bit integer
//!   fits f32's 24 bits;
//! - Q4_0 is `(nibble − 8) · d`, also exact: with AVX-512 a 16-entry table lookup (`vpermps`),
//!   otherwise `fma(sitofp(nibble), d, −8·d)` — `nibble · d` and `−8 · d` are exact and so is their
//!   sum, which the fma therefore does not round; one fma replaces an integer subtract and a
//!   multiply.
//!
//! (Quantizing activations to int8 for VNNI dot products, as llama.cpp does, would be faster for
//! the quantized formats but is not exact; these kernels keep f32 activations throughout.)

use super::ir::{i32_splat, load_prefix};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::WeightFormat;
use inkwell::types::VectorType;
use inkwell::values::{BasicValue, PointerValue, VectorValue};

/// Elements per quantization block.
const QK: u32 = 32;

/// Dequantizes units of one weight format into `lanes`-wide f32 vectors.
pub struct Decoder<'a, 'ctx> {
    cx: &'a KernelCx<'ctx>,
    format: WeightFormat,
    lanes: u32,
}

impl<'a, 'ctx> Decoder<'a, 'ctx> {
    pub fn new(cx: &'a KernelCx<'ctx>, format: WeightFormat) -> Result<Decoder<'a, 'ctx>> {
        let lanes = cx.lanes;
        // A Q4_0 vector must come from one half of a block's nibbles (low nibbles are elements
        // 0..16, high nibbles 16..32), so the lanes must divide 16; every x86 width does.
        if lanes == 0 || !16u32.is_multiple_of(lanes) {
            return Err(llvm_err(format!("matmul kernels need 1..16 lanes dividing 16, not {lanes}")));
        }
        Ok(Decoder { cx, format, lanes })
    }

    pub fn lanes(&self) -> u32 {
        self.lanes
    }

    pub fn quantized(&self) -> bool {
        self.format.block() > 1
    }

    /// Elements in one unit.
    pub fn unit_elems(&self) -> u32 {
        if self.quantized() {
            QK
        } else {
            self.lanes
        }
    }

    /// Bytes of one unit.
    pub fn unit_bytes(&self) -> i64 {
        self.format.row_bytes(self.unit_elems() as usize) as i64
    }

    /// Vectors one unit decodes to.
    pub fn vecs_per_unit(&self) -> u32 {
        self.unit_elems() / self.lanes
    }

    fn vf32(&self) -> VectorType<'ctx> {
        self.cx.vf32(self.lanes)
    }

    /// The storage vector type of `lanes` unquantized elements.
    fn raw_type(&self) -> VectorType<'ctx> {
        let c = self.cx.context;
        match self.format {
            WeightFormat::Bf16 => c.i16_type().vec_type(self.lanes),
            WeightFormat::F16 => c.f16_type().vec_type(self.lanes),
            _ => self.vf32(),
        }
    }

    /// Raw unquantized elements → f32.
    fn widen(&self, raw: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let b = &self.cx.builder;
        match self.format {
            WeightFormat::Bf16 => {
                let wide = b.build_int_z_extend(raw, self.cx.i32().vec_type(self.lanes), "bf").map_err(llvm_err)?;
                let bits = b.build_left_shift(wide, i32_splat(self.cx, 16, self.lanes), "bf").map_err(llvm_err)?;
                Ok(b.build_bit_cast(bits, self.vf32(), "bf").map_err(llvm_err)?.into_vector_value())
            }
            WeightFormat::F16 => b.build_float_ext(raw, self.vf32(), "h").map_err(llvm_err),
            _ => Ok(raw),
        }
    }

    fn load(&self, ty: VectorType<'ctx>, p: PointerValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let v = self.cx.builder.build_load(ty, p, "w").map_err(llvm_err)?;
        // Packed weights carry no alignment promise (GGUF tensors sit at any offset).
        v.as_instruction_value().ok_or_else(|| llvm_err("a load"))?.set_alignment(1).map_err(llvm_err)?;
        Ok(v.into_vector_value())
    }

    /// The unit starting at byte `p`, as [`Decoder::vecs_per_unit`] f32 vectors.
    pub fn unit(&self, p: PointerValue<'ctx>) -> Result<Vec<VectorValue<'ctx>>> {
        match self.format {
            WeightFormat::Q8_0 => self.q8_0(p),
            WeightFormat::Q4_0 => self.q4_0(p),
            _ => Ok(vec![self.widen(self.load(self.raw_type(), p)?)?]),
        }
    }

    /// The first `count` (< lanes) elements at byte `p` of an unquantized row, zeros in the other
    /// lanes; nothing past them is read.
    pub fn prefix(&self, p: PointerValue<'ctx>, count: u32) -> Result<VectorValue<'ctx>> {
        if self.quantized() {
            return Err(llvm_err(format!("{} rows have no partial blocks", self.format.name())));
        }
        self.widen(load_prefix(self.cx, self.raw_type(), p, count, 1)?)
    }

    /// A block's f16 scale `d`, broadcast. Broadcasting the half before widening lets AVX512-FP16
    /// do both in one `vcvtph2psx zmm, m16bcst`; elsewhere it is a broadcast and a `vcvtph2ps`.
    fn scale(&self, block: PointerValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let (cx, b) = (self.cx, &self.cx.builder);
        let half = cx.context.f16_type();
        let h = b.build_load(half, block, "d").map_err(llvm_err)?;
        h.as_instruction_value().ok_or_else(|| llvm_err("a load"))?.set_alignment(1).map_err(llvm_err)?;
        let undef = half.vec_type(self.lanes).get_undef();
        let one = b.build_insert_element(undef, h, cx.i32().const_zero(), "d").map_err(llvm_err)?;
        let mask = cx.i32().vec_type(self.lanes).const_zero();
        let hv = b.build_shuffle_vector(one, undef, mask, "d").map_err(llvm_err)?;
        b.build_float_ext(hv, self.vf32(), "d").map_err(llvm_err)
    }

    /// `lanes` bytes of a block's quants, starting at quant byte `offset`, widened to i32.
    fn quant_bytes(&self, block: PointerValue<'ctx>, offset: u32, signed: bool) -> Result<VectorValue<'ctx>> {
        let cx = self.cx;
        let p = cx.gep_bytes(block, cx.c64(2 + i64::from(offset)))?;
        let bytes = self.load(cx.context.i8_type().vec_type(self.lanes), p)?;
        let i32s = cx.i32().vec_type(self.lanes);
        if signed {
            cx.builder.build_int_s_extend(bytes, i32s, "q").map_err(llvm_err)
        } else {
            cx.builder.build_int_z_extend(bytes, i32s, "q").map_err(llvm_err)
        }
    }

    fn to_f32(&self, v: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
        self.cx.builder.build_signed_int_to_float(v, self.vf32(), "qf").map_err(llvm_err)
    }

    /// Whether [`Decoder::factored`] applies: Q8_0, whose weights are `d · q`.
    pub fn factors(&self) -> bool {
        self.format == WeightFormat::Q8_0
    }

    /// A Q8_0 block as its broadcast scale `d` and its quants as f32 vectors (`w = d · q`), for
    /// kernels that apply `d` once per block to a partial dot product rather than to every weight.
    /// (Q4_0 gains nothing from this: its table lookup applies `d` once per block already.)
    pub fn factored(&self, block: PointerValue<'ctx>) -> Result<(VectorValue<'ctx>, Vec<VectorValue<'ctx>>)> {
        if !self.factors() {
            return Err(llvm_err(format!("{} weights are not factored", self.format.name())));
        }
        let q = (0..QK / self.lanes)
            .map(|v| self.to_f32(self.quant_bytes(block, v * self.lanes, true)?))
            .collect::<Result<Vec<_>>>()?;
        Ok((self.scale(block)?, q))
    }

    fn q8_0(&self, block: PointerValue<'ctx>) -> Result<Vec<VectorValue<'ctx>>> {
        let d = self.scale(block)?;
        (0..QK / self.lanes)
            .map(|v| {
                let q = self.to_f32(self.quant_bytes(block, v * self.lanes, true)?)?;
                self.cx.builder.build_float_mul(q, d, "w").map_err(llvm_err)
            })
            .collect()
    }

    fn q4_0(&self, block: PointerValue<'ctx>) -> Result<Vec<VectorValue<'ctx>>> {
        if self.lanes == 16 {
            return self.q4_0_lookup(block);
        }
        let cx = self.cx;
        let d = self.scale(block)?;
        let minus_8d = cx
            .builder
            .build_float_mul(d, VectorType::const_vector(&vec![cx.cf(-8.0); self.lanes as usize]), "d8")
            .map_err(llvm_err)?;
        (0..QK / self.lanes)
            .map(|v| {
                let first = v * self.lanes;
                // Both halves of a block read the same 16 bytes; LLVM merges the repeated loads.
                let bytes = self.quant_bytes(block, first % 16, false)?;
                let nibbles = if first < 16 {
                    cx.builder.build_and(bytes, i32_splat(cx, 0x0f, self.lanes), "lo").map_err(llvm_err)?
                } else {
                    cx.builder.build_right_shift(bytes, i32_splat(cx, 4, self.lanes), false, "hi").map_err(llvm_err)?
                };
                let n = self.to_f32(nibbles)?;
                Ok(cx.fma(n, d, minus_8d)?.into_vector_value())
            })
            .collect()
    }

    /// Q4_0 with AVX-512: the 16 possible weights of a block, `(i − 8) · d` (exact), form a
    /// one-register table that `vpermps` indexes with the nibbles directly — it reads only the
    /// low 4 bits of each index, so the low nibbles need no mask. Per block: one widening load,
    /// one shift, one multiply and two permutes, instead of two conversions, a mask and two fmas.
    fn q4_0_lookup(&self, block: PointerValue<'ctx>) -> Result<Vec<VectorValue<'ctx>>> {
        let (cx, b) = (self.cx, &self.cx.builder);
        let d = self.scale(block)?;
        let steps: Vec<_> = (0..16).map(|i| cx.cf(i as f32 - 8.0)).collect();
        let table = b.build_float_mul(VectorType::const_vector(&steps), d, "lut").map_err(llvm_err)?;
        let bytes = self.quant_bytes(block, 0, false)?;
        let high = b.build_right_shift(bytes, i32_splat(cx, 4, 16), false, "hi").map_err(llvm_err)?;
        [bytes, high]
            .into_iter()
            .map(|idx| {
                let args = [table.into(), idx.into()];
                let w = cx.intrinsic("llvm.x86.avx512.permvar.sf.512", &[], &args)?;
                Ok(w.into_vector_value())
            })
            .collect()
    }
}

//! Kernels that move data rather than compute on it: `copy` (strided boxes: permute, slice,
//! concat pieces), `take`, `gather_cols`, `scatter_rows`, `fill`; the selection kernels (`top_k`,
//! `nonzero`, `expert_gate`, `mod_select`) are in [`select`], `cast` in [`cast`].
//!
//! Data is moved as 32-bit words whether it holds f32 or i32, so copies are bit-exact (NaN payloads
//! included) and one emitter serves both. Indices read from buffers are checked where the kernel
//! knows the bound (`gather_cols` against `cols`, `scatter_rows` against `T`): an index out of range
//! reads 0 / writes nothing instead of touching memory outside the buffers. `take` cannot know how
//! many rows `x` has; its rows come from `top_k`/`nonzero`, in range by construction.

pub mod cast;
pub mod select;

use super::builder::{llvm_err, KernelCx, KernelFn};
use super::spec::KernelSpec;
use crate::error::Result;
use inkwell::values::{BasicValueEnum, IntValue, PointerValue};
use inkwell::IntPredicate;

/// Below this many contiguous words a `copy` row is moved by a loop rather than a `memcpy` call.
const MEMCPY_MIN: i64 = 16;

pub fn emit(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec) -> Result<()> {
    match *spec {
        KernelSpec::Copy { .. } => copy(cx, name),
        KernelSpec::Take { row_len, .. } => take(cx, name, row_len),
        KernelSpec::GatherCols { cols, k } => gather_cols(cx, name, cols, k),
        KernelSpec::ScatterRows { row_len, add, int } => scatter_rows(cx, name, row_len, add, int),
        KernelSpec::Fill { value, int } => fill(cx, name, value, int),
        KernelSpec::TopK { cols, k } => select::top_k(cx, name, cols, k),
        KernelSpec::Nonzero => select::nonzero(cx, name),
        KernelSpec::ExpertGate { k, expert } => select::expert_gate(cx, name, k, expert),
        KernelSpec::ModSelect { capacity, threshold } => select::mod_select(cx, name, capacity, threshold),
        KernelSpec::Cast { from, to } => cast::cast(cx, name, from, to),
        _ => Err(llvm_err(format!("{name}: misc cannot emit {} kernels", spec.kind()))),
    }
}

/// Integer arithmetic shorthands on i64 values (the builder's errors mapped).
pub(super) struct Int<'a, 'ctx> {
    pub cx: &'a KernelCx<'ctx>,
}

impl<'ctx> Int<'_, 'ctx> {
    pub fn add(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        self.cx.builder.build_int_add(a, b, "add").map_err(llvm_err)
    }

    pub fn sub(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        self.cx.builder.build_int_sub(a, b, "sub").map_err(llvm_err)
    }

    pub fn mul(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        self.cx.builder.build_int_mul(a, b, "mul").map_err(llvm_err)
    }

    pub fn and(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        self.cx.builder.build_and(a, b, "and").map_err(llvm_err)
    }

    pub fn or(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        self.cx.builder.build_or(a, b, "or").map_err(llvm_err)
    }

    pub fn not(&self, a: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        self.cx.builder.build_not(a, "not").map_err(llvm_err)
    }

    pub fn select(&self, c: IntValue<'ctx>, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        Ok(self.cx.builder.build_select(c, a, b, "sel").map_err(llvm_err)?.into_int_value())
    }

    /// An i1 (or narrower) value zero-extended to i64: a 0/1 count.
    pub fn count(&self, flag: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        self.cx.builder.build_int_z_extend(flag, self.cx.i64(), "n").map_err(llvm_err)
    }

    /// `base[idx]` as an i32 index widened to i64.
    pub fn load_index(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        let v = self.cx.load_i32(base, idx)?;
        self.cx.builder.build_int_s_extend(v, self.cx.i64(), "idx").map_err(llvm_err)
    }

    /// Stores the low 32 bits of `v` at `base[idx]`.
    pub fn store_i32(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>, v: IntValue<'ctx>) -> Result<()> {
        let v = if v.get_type().get_bit_width() == 32 {
            v
        } else {
            self.cx.builder.build_int_truncate(v, self.cx.i32(), "w").map_err(llvm_err)?
        };
        self.cx.store(self.cx.i32().into(), base, idx, v, 4)
    }

    /// `&base[idx]` for 32-bit words.
    pub fn word_ptr(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>) -> Result<PointerValue<'ctx>> {
        self.cx.gep(self.cx.i32().into(), base, idx)
    }

    /// Copies `words` 32-bit words (an i64 count) from `src` to `dst`.
    pub fn memcpy(&self, dst: PointerValue<'ctx>, src: PointerValue<'ctx>, words: IntValue<'ctx>) -> Result<()> {
        let bytes = self.mul(words, self.cx.c64(4))?;
        self.cx.builder.build_memcpy(dst, 4, src, 4, bytes).map_err(llvm_err)?;
        Ok(())
    }
}

/// `cond ? then() : otherwise()` where each side may emit code (and blocks) of its own; the value
/// meets in a phi.
pub(super) fn branch_value<'ctx>(
    cx: &KernelCx<'ctx>,
    cond: IntValue<'ctx>,
    then: impl FnOnce() -> Result<BasicValueEnum<'ctx>>,
    otherwise: impl FnOnce() -> Result<BasicValueEnum<'ctx>>,
) -> Result<BasicValueEnum<'ctx>> {
    let b = &cx.builder;
    let f =
        b.get_insert_block().and_then(|bb| bb.get_parent()).ok_or_else(|| llvm_err("builder outside a function"))?;
    let (then_bb, else_bb, merge) = (
        cx.context.append_basic_block(f, "then"),
        cx.context.append_basic_block(f, "else"),
        cx.context.append_basic_block(f, "merge"),
    );
    b.build_conditional_branch(cond, then_bb, else_bb).map_err(llvm_err)?;
    b.position_at_end(then_bb);
    let a = then()?;
    let a_end = b.get_insert_block().ok_or_else(|| llvm_err("builder lost its block"))?;
    b.build_unconditional_branch(merge).map_err(llvm_err)?;
    b.position_at_end(else_bb);
    let c = otherwise()?;
    let c_end = b.get_insert_block().ok_or_else(|| llvm_err("builder lost its block"))?;
    b.build_unconditional_branch(merge).map_err(llvm_err)?;
    b.position_at_end(merge);
    let phi = b.build_phi(a.get_type(), "v").map_err(llvm_err)?;
    phi.add_incoming(&[(&a, a_end), (&c, c_end)]);
    Ok(phi.as_basic_value())
}

/// Runs `body` once when the call's task range is not empty: the shell of the single-task kernels.
pub(super) fn single_task<'ctx>(
    cx: &KernelCx<'ctx>,
    k: &KernelFn<'ctx>,
    body: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let any = cx.icmp(IntPredicate::SLT, k.begin, k.end)?;
    cx.if_then(any, body)
}

/// `out[i0,i1,i2,i3] = x[offset + Σ i_d·stride_d]`; rows whose last axis is contiguous are moved
/// with `memcpy`, others word by word.
fn copy(cx: &KernelCx<'_>, name: &str) -> Result<()> {
    let int = Int { cx };
    let k = cx.begin_kernel(name);
    let d = (0..9).map(|i| cx.dim(&k, i)).collect::<Result<Vec<_>>>()?;
    let (mut e, mut s, offset) = ([d[0], d[1], d[2], d[3]], [d[4], d[5], d[6], d[7]], d[8]);
    // Padding puts extents of 1 last (a 2-D copy is [rows, cols, 1, 1]); move them in front of axis
    // 1 instead, which keeps the output order, so the innermost loop runs over a real axis.
    for _ in 0..2 {
        let pad = cx.icmp(IntPredicate::EQ, e[3], cx.c64(1))?;
        for a in (1..4).rev() {
            let (e_prev, s_prev) = if a == 1 { (cx.c64(1), cx.c64(0)) } else { (e[a - 1], s[a - 1]) };
            e[a] = int.select(pad, e_prev, e[a])?;
            s[a] = int.select(pad, s_prev, s[a])?;
        }
    }
    let (x, out) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?);
    let unit = cx.icmp(IntPredicate::EQ, s[3], cx.c64(1))?;
    let long = cx.icmp(IntPredicate::SGE, e[3], cx.c64(MEMCPY_MIN))?;
    let contiguous = int.and(unit, long)?;
    let strided = int.not(contiguous)?;
    let zero = cx.c64(0);
    cx.for_range(k.begin, k.end, 1, |i0| {
        let src0 = int.add(offset, int.mul(i0, s[0])?)?;
        cx.for_range(zero, e[1], 1, |i1| {
            let src1 = int.add(src0, int.mul(i1, s[1])?)?;
            let dst1 = int.mul(int.add(int.mul(i0, e[1])?, i1)?, e[2])?;
            cx.for_range(zero, e[2], 1, |i2| {
                let src = int.add(src1, int.mul(i2, s[2])?)?;
                let dst = int.mul(int.add(dst1, i2)?, e[3])?;
                cx.if_then(contiguous, || int.memcpy(int.word_ptr(out, dst)?, int.word_ptr(x, src)?, e[3]))?;
                cx.if_then(strided, || {
                    cx.for_range(zero, e[3], 1, |i3| {
                        let v = cx.load_i32(x, int.add(src, int.mul(i3, s[3])?)?)?;
                        int.store_i32(out, int.add(dst, i3)?, v)
                    })
                })
            })
        })
    })?;
    cx.finish()
}

/// `out[i] = x[rows[i]]` for rows of `row_len` words.
fn take(cx: &KernelCx<'_>, name: &str, row_len: usize) -> Result<()> {
    let int = Int { cx };
    let k = cx.begin_kernel(name);
    let (x, rows, out) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?, cx.buf(&k, 2)?);
    let len = cx.c64(row_len as i64);
    cx.for_range(k.begin, k.end, 1, |i| {
        let r = int.load_index(rows, i)?;
        int.memcpy(int.word_ptr(out, int.mul(i, len)?)?, int.word_ptr(x, int.mul(r, len)?)?, len)
    })?;
    cx.finish()
}

/// `out[r, j] = x[r, idx[r, j]]`; an index outside `0..cols` gives 0.
fn gather_cols(cx: &KernelCx<'_>, name: &str, cols: usize, k_cols: usize) -> Result<()> {
    let int = Int { cx };
    let k = cx.begin_kernel(name);
    let (x, idx, out) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?, cx.buf(&k, 2)?);
    let (cols_c, k_c) = (cx.c64(cols as i64), cx.c64(k_cols as i64));
    cx.for_range(k.begin, k.end, 1, |r| {
        let (xrow, orow) = (int.mul(r, cols_c)?, int.mul(r, k_c)?);
        cx.for_range(cx.c64(0), k_c, 1, |j| {
            let at = int.add(orow, j)?;
            let c = int.load_index(idx, at)?;
            // Unsigned: negative indices are out of range too.
            let ok = cx.icmp(IntPredicate::ULT, c, cols_c)?;
            let v = cx.load_i32(x, int.add(xrow, int.select(ok, c, cx.c64(0))?)?)?;
            int.store_i32(out, at, int.select(ok, v, cx.i32().const_zero())?)
        })
    })?;
    cx.finish()
}

/// `out = x`, then row `rows[i]` of out set to (or, with `add`, increased by) row i of `y`, in
/// order of i. `x` may be `out` itself (the copy is then skipped).
fn scatter_rows(cx: &KernelCx<'_>, name: &str, row_len: usize, add: bool, int_data: bool) -> Result<()> {
    let int = Int { cx };
    let k = cx.begin_kernel(name);
    let (t, n) = (cx.dim(&k, 0)?, cx.dim(&k, 1)?);
    let (x, rows, y, out) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?, cx.buf(&k, 2)?, cx.buf(&k, 3)?);
    let len = cx.c64(row_len as i64);
    single_task(cx, &k, || {
        let same = cx.builder.build_int_compare(IntPredicate::EQ, x, out, "same").map_err(llvm_err)?;
        cx.if_then(int.not(same)?, || int.memcpy(out, x, int.mul(t, len)?))?;
        cx.for_range(cx.c64(0), n, 1, |i| {
            let r = int.load_index(rows, i)?;
            let ok = cx.icmp(IntPredicate::ULT, r, t)?;
            cx.if_then(ok, || {
                let (dst, src) = (int.mul(r, len)?, int.mul(i, len)?);
                if !add {
                    return int.memcpy(int.word_ptr(out, dst)?, int.word_ptr(y, src)?, len);
                }
                // A plain loop of constant length: LLVM vectorizes it.
                cx.for_range(cx.c64(0), len, 1, |c| {
                    let (o, s) = (int.add(dst, c)?, int.add(src, c)?);
                    if int_data {
                        let sum = int.add(cx.load_i32(out, o)?, cx.load_i32(y, s)?)?;
                        int.store_i32(out, o, sum)
                    } else {
                        let sum = cx
                            .builder
                            .build_float_add(cx.load_f32(out, o)?, cx.load_f32(y, s)?, "s")
                            .map_err(llvm_err)?;
                        cx.store_f32(out, o, sum)
                    }
                })
            })
        })
    })?;
    cx.finish()
}

/// `out[..n] = value` (as i32 when `int`, truncated toward zero as a cast would).
fn fill(cx: &KernelCx<'_>, name: &str, value: f32, int_data: bool) -> Result<()> {
    let int = Int { cx };
    let k = cx.begin_kernel(name);
    let n = cx.dim(&k, 0)?;
    let out = cx.buf(&k, 0)?;
    let word = if int_data { value as i32 as u32 } else { value.to_bits() };
    let word = cx.i32().const_int(word as u64, false);
    single_task(cx, &k, || cx.for_range(cx.c64(0), n, 1, |i| int.store_i32(out, i, word)))?;
    cx.finish()
}

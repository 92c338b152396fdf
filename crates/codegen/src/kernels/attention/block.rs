//! One step of `attention` over a block of `lanes` cache entries: their scores as one vector,
//! then a single online-softmax update for the block.
//!
//! Updating the state one key at a time, as this kernel did before, pays a scalar `expf` call, a
//! rescale of the accumulator and a chain of selects per key; a block of 16 pays one vector `exp`
//! (the elementwise kernels' polynomial), one scalar `expf` and one rescale, the 16 scores come
//! out of one transposing sum tree instead of 16 horizontal sums, and each key's value is added
//! with one fma per vector (SmolLM2 f32 prefill: attention −30%). Masked keys (causal, window, past
//! the end) get the score −∞ and weight exactly 0.
//!
//! With `m` the running max and `m' = max(m, max_i s_i)`: `acc' = acc · e^{m − m'} + Σ_i
//! e^{s_i − m'} v_i` and `l' = l · e^{m − m'} + Σ_i e^{s_i − m'}`. While nothing is visible
//! (`m' = −∞`) the exponents are taken against 0 instead, which keeps them defined (−∞ − −∞
//! would be NaN) and gives weight 0 to every masked key.

use super::attend::{dot, AttentionSpec, Operands};
use super::helpers::smin;
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::elementwise::vmath::VecOps;
use inkwell::types::VectorType;
use inkwell::values::{BasicValueEnum, FloatValue, IntValue, PointerValue, VectorValue};
use inkwell::{FloatPredicate, IntPredicate};

/// Folds cache entries `j0 .. j0 + lanes` into the state `[m, l, acc...]` of a query at position
/// `pos_q` with scaled query vectors `q` over kv head `g`. With `limit`, the entries from `limit`
/// on are left out: their lanes read entry `limit − 1` again (never past the cache's end) and are
/// masked.
#[allow(clippy::too_many_arguments)]
pub(super) fn update<'ctx>(
    cx: &KernelCx<'ctx>,
    a: &AttentionSpec<'_>,
    ops: &Operands<'ctx>,
    q: &[VectorValue<'ctx>],
    chunks: &[(usize, u32)],
    g: IntValue<'ctx>,
    pos_q: IntValue<'ctx>,
    j0: IntValue<'ctx>,
    limit: Option<IntValue<'ctx>>,
    cur: &[BasicValueEnum<'ctx>],
) -> Result<Vec<BasicValueEnum<'ctx>>> {
    let (b, vm) = (&cx.builder, VecOps::new(cx));
    let lanes = cx.lanes;
    let f32t = cx.f32().into();
    let entries = (0..lanes)
        .map(|i| {
            let j = b.build_int_add(j0, cx.c64(i64::from(i)), "j").map_err(llvm_err)?;
            match limit {
                Some(limit) => smin(cx, j, b.build_int_sub(limit, cx.c64(1), "last").map_err(llvm_err)?),
                None => Ok(j),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = entries
        .iter()
        .map(|&j| {
            let row = b.build_int_mul(j, cx.c64(a.kv_heads as i64), "jk").map_err(llvm_err)?;
            let row = b.build_int_add(row, g, "jg").map_err(llvm_err)?;
            b.build_int_mul(row, cx.c64(a.head_dim as i64), "kvrow").map_err(llvm_err)
        })
        .collect::<Result<Vec<_>>>()?;

    let mut s = if chunks.iter().all(|&(_, w)| w == lanes) {
        let products = rows
            .iter()
            .map(|&row| key_products(cx, q, chunks, cx.gep(f32t, ops.cache_k, row)?))
            .collect::<Result<Vec<_>>>()?;
        cx.lane_sums(&products)?
    } else {
        // A head that is not whole vectors: one dot product (horizontal sum) per key.
        let mut s = cx.vf32(lanes).get_undef();
        for (i, &row) in rows.iter().enumerate() {
            let si = dot(cx, q, chunks, cx.gep(f32t, ops.cache_k, row)?)?;
            s = b.build_insert_element(s, si, cx.i32().const_int(i as u64, false), "s").map_err(llvm_err)?;
        }
        s
    };
    if let Some(c) = a.softcap {
        let capped = vm.tanh(vm.div(s, vm.k(c, lanes))?)?;
        s = vm.mul(capped, vm.k(c, lanes))?;
    }
    let mut mask = visible_lanes(cx, a, ops, pos_q, j0, limit.map(|_| &entries[..]))?;
    if let Some(limit) = limit {
        let steps: Vec<_> = (0..lanes).map(|i| cx.i64().const_int(u64::from(i), false)).collect();
        let js =
            b.build_int_add(cx.splat_int(j0, cx.lanes)?, VectorType::const_vector(&steps), "js").map_err(llvm_err)?;
        let inside =
            b.build_int_compare(IntPredicate::SLT, js, cx.splat_int(limit, cx.lanes)?, "inside").map_err(llvm_err)?;
        mask = Some(both(cx, mask, inside)?);
    }
    if let Some(visible) = mask {
        s = b.build_select(visible, s, vm.k(f32::NEG_INFINITY, lanes), "masked").map_err(llvm_err)?.into_vector_value();
    }

    let (m, l) = (cur[0].into_float_value(), cur[1].into_float_value());
    let block_max = lane_max(cx, s)?;
    let new_m = cx.fmax(m, block_max)?;
    let none = cx.fcmp(FloatPredicate::OEQ, new_m, cx.cf(f32::NEG_INFINITY))?;
    let base = b.build_select(none, cx.cf(0.0), new_m, "base").map_err(llvm_err)?.into_float_value();
    let rescale = cx.libm("expf", &[b.build_float_sub(m, base, "dm").map_err(llvm_err)?])?;
    let p = vm.exp(vm.sub(s, cx.splat(base, lanes)?)?)?;
    let new_l = cx.fma(l, rescale, cx.hsum(p)?)?;

    let mut acc: Vec<VectorValue<'ctx>> = chunks
        .iter()
        .zip(&cur[2..])
        .map(|(&(_, w), acc)| {
            b.build_float_mul(acc.into_vector_value(), cx.splat(rescale, w)?, "kept").map_err(llvm_err)
        })
        .collect::<Result<_>>()?;
    for (i, &row) in rows.iter().enumerate() {
        let pi = b.build_extract_element(p, cx.i32().const_int(i as u64, false), "p").map_err(llvm_err)?;
        let value = cx.gep(f32t, ops.cache_v, row)?;
        for (&(off, w), acc) in chunks.iter().zip(acc.iter_mut()) {
            let v = cx.load_vf32(value, cx.c64(off as i64), w)?;
            *acc = cx.fma(v, cx.splat(pi.into_float_value(), w)?, *acc)?.into_vector_value();
        }
    }
    let mut next = vec![new_m.into(), new_l];
    next.extend(acc.into_iter().map(BasicValueEnum::from));
    Ok(next)
}

/// `q · key` before its horizontal sum: the head's vector products summed pairwise into one
/// vector (every chunk a full vector).
fn key_products<'ctx>(
    cx: &KernelCx<'ctx>,
    q: &[VectorValue<'ctx>],
    chunks: &[(usize, u32)],
    key: PointerValue<'ctx>,
) -> Result<VectorValue<'ctx>> {
    let products = chunks
        .iter()
        .zip(q)
        .map(|(&(off, w), &qv)| {
            cx.builder.build_float_mul(qv, cx.load_vf32(key, cx.c64(off as i64), w)?, "qk").map_err(llvm_err)
        })
        .collect::<Result<Vec<_>>>()?;
    cx.pairwise_sum(products)
}

/// The largest lane of `v`: a shuffle tree of compare-and-selects (plain `vmaxps`; LLVM's
/// `vector.reduce.fmax` becomes a scalar loop over the lanes that handles NaN, which scores are
/// not).
fn lane_max<'ctx>(cx: &KernelCx<'ctx>, mut v: VectorValue<'ctx>) -> Result<FloatValue<'ctx>> {
    let b = &cx.builder;
    let mut n = v.get_type().get_size();
    while n > 1 {
        let half = n / 2;
        let idx = |from: u32| {
            let lanes: Vec<_> = (from..from + half).map(|i| cx.i32().const_int(u64::from(i), false)).collect();
            VectorType::const_vector(&lanes)
        };
        let lo = b.build_shuffle_vector(v, v, idx(0), "lo").map_err(llvm_err)?;
        let hi = b.build_shuffle_vector(v, v, idx(half), "hi").map_err(llvm_err)?;
        let gt = b.build_float_compare(FloatPredicate::OGT, lo, hi, "gt").map_err(llvm_err)?;
        v = b.build_select(gt, lo, hi, "max").map_err(llvm_err)?.into_vector_value();
        n = half;
    }
    Ok(b.build_extract_element(v, cx.i32().const_zero(), "m").map_err(llvm_err)?.into_float_value())
}

/// Which of entries `j0 .. j0 + lanes` (or of `entries`, when given: clamped indices) the query at
/// `pos_q` sees (causal: `pos_k ≤ pos_q`; window: `pos_q − pos_k < window`), as a lane mask;
/// `None` when every key is visible.
fn visible_lanes<'ctx>(
    cx: &KernelCx<'ctx>,
    a: &AttentionSpec<'_>,
    ops: &Operands<'ctx>,
    pos_q: IntValue<'ctx>,
    j0: IntValue<'ctx>,
    entries: Option<&[IntValue<'ctx>]>,
) -> Result<Option<VectorValue<'ctx>>> {
    if !a.causal && a.window.is_none() {
        return Ok(None);
    }
    let b = &cx.builder;
    let lanes = cx.lanes;
    let vi32 = cx.i32().vec_type(lanes);
    let pos_k = match entries {
        None => {
            let bytes = b.build_int_mul(j0, cx.c64(4), "pb").map_err(llvm_err)?;
            cx.load_at(vi32.into(), ops.cache_pos, bytes, 4)?.into_vector_value()
        }
        Some(entries) => {
            let mut v = vi32.get_undef();
            for (i, &j) in entries.iter().enumerate() {
                let p = cx.load_i32(ops.cache_pos, j)?;
                v = b.build_insert_element(v, p, cx.i32().const_int(i as u64, false), "pk").map_err(llvm_err)?;
            }
            v
        }
    };
    // Positions are i32 (the cache stores them so), so pos_q fits and differences cannot overflow.
    let pos_q = cx.splat_int(b.build_int_truncate(pos_q, cx.i32(), "q32").map_err(llvm_err)?, cx.lanes)?;
    let mut mask = None;
    if a.causal {
        mask = Some(b.build_int_compare(IntPredicate::SLE, pos_k, pos_q, "causal").map_err(llvm_err)?);
    }
    if let Some(w) = a.window {
        let age = b.build_int_sub(pos_q, pos_k, "age").map_err(llvm_err)?;
        let w32 = cx.i32().const_int(w.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as u64, true);
        let inside =
            b.build_int_compare(IntPredicate::SLT, age, cx.splat_int(w32, cx.lanes)?, "win").map_err(llvm_err)?;
        mask = Some(both(cx, mask, inside)?);
    }
    Ok(mask)
}

/// The lanes set in both masks (`mask` absent: all set).
fn both<'ctx>(
    cx: &KernelCx<'ctx>,
    mask: Option<VectorValue<'ctx>>,
    other: VectorValue<'ctx>,
) -> Result<VectorValue<'ctx>> {
    match mask {
        Some(m) => cx.builder.build_and(m, other, "vis").map_err(llvm_err),
        None => Ok(other),
    }
}

//! The `attention` kernel: one query head of one token per task, over the cache in one pass.
//!
//! Per task (token t, query head h, kv head g = h / (heads / kv_heads)):
//! 1. q is rotated (f64 math, into a stack buffer) when the spec has RoPE, loaded as
//!    `lanes`-wide vectors (head_dim is a constant: the head is fully unrolled, tails use
//!    narrower vectors) and multiplied by the scale once, so scores need no extra multiply.
//! 2. The cache entries are taken `lanes` at a time ([`super::block`]): their scores `q·k_j` as one
//!    vector, masked keys (causal, window; one vector compare of their positions) set to −∞, the
//!    soft-cap, and one online-softmax update of (running max m, running sum l, accumulator over
//!    head_dim) for the block; the last, partial block masks the entries past the end. The mask is
//!    tested per key rather than only by bounding the loop so that any order of cached positions
//!    is correct, as in the interpreter.
//! 3. out = acc / l, or zeros when no key was visible (l = 0), like the interpreter.
//!
//! Tasks are ordered (token, head); a call's range is walked token by token so the RoPE cos/sin of a
//! token are computed once for all of its heads in the range.

use super::helpers::{if_then_values, smax, smin, spec_err, vector_chunks};
use super::rotate::{check, rotate_head, rotation, Rotation};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::RopeParams;
use inkwell::values::{BasicValueEnum, FloatValue, IntValue, PointerValue, VectorValue};
use inkwell::{FloatPredicate, IntPredicate};

/// The fields of [`crate::kernels::spec::KernelSpec::Attention`] (the GPU emitter uses it too).
#[derive(Clone, Copy)]
pub struct AttentionSpec<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub causal: bool,
    pub window: Option<i64>,
    pub softcap: Option<f32>,
    pub rope: Option<&'a RopeParams>,
}

/// The buffers and run-time values every task reads.
pub(super) struct Operands<'ctx> {
    q: PointerValue<'ctx>,
    pub(super) cache_k: PointerValue<'ctx>,
    pub(super) cache_v: PointerValue<'ctx>,
    pub(super) cache_pos: PointerValue<'ctx>,
    out: PointerValue<'ctx>,
    len: IntValue<'ctx>,
    /// Stack room for a rotated q (only with RoPE).
    q_rotated: Option<PointerValue<'ctx>>,
}

/// One task's query: the token, the head, its position and the token's rotation.
struct Query<'a, 'ctx> {
    t: IntValue<'ctx>,
    h: IntValue<'ctx>,
    pos: IntValue<'ctx>,
    rot: Option<&'a Rotation<'ctx>>,
}

fn check_spec(name: &str, a: &AttentionSpec<'_>) -> Result<()> {
    if a.heads == 0 || a.kv_heads == 0 || !a.heads.is_multiple_of(a.kv_heads) {
        return Err(spec_err(name, format!("{} query heads is not a multiple of {} kv heads", a.heads, a.kv_heads)));
    }
    if a.head_dim == 0 {
        return Err(spec_err(name, "head_dim is 0"));
    }
    if let Some(c) = a.softcap {
        if !(c.is_finite() && c > 0.0) {
            return Err(spec_err(name, format!("soft-cap {c} must be positive and finite")));
        }
    }
    match a.rope {
        Some(r) => check(name, r, a.head_dim),
        None => Ok(()),
    }
}

/// Emits `attention`; task = (task token u, query head), `u · heads + h`, where task tokens
/// zigzag through the tokens (u = 0, 1, 2, 3, ... is token 0, T−1, 1, T−2, ...).
pub fn emit(cx: &KernelCx<'_>, name: &str, a: &AttentionSpec<'_>) -> Result<()> {
    check_spec(name, a)?;
    let k = cx.begin_kernel(name);
    let b = &cx.builder;
    // In the entry block, so the loops below reuse one buffer instead of growing the stack.
    let q_rotated = match a.rope {
        Some(_) => {
            let slot = b.build_alloca(cx.f32().array_type(a.head_dim as u32), "q_rot").map_err(llvm_err)?;
            slot.as_instruction()
                .ok_or_else(|| llvm_err("alloca is no instruction"))?
                .set_alignment(64)
                .map_err(llvm_err)?;
            Some(slot)
        }
        None => None,
    };
    let positions = cx.buf(&k, 1)?;
    let ops = Operands {
        q: cx.buf(&k, 0)?,
        cache_k: cx.buf(&k, 2)?,
        cache_v: cx.buf(&k, 3)?,
        cache_pos: cx.buf(&k, 4)?,
        out: cx.buf(&k, 5)?,
        len: cx.dim(&k, 1)?,
        q_rotated,
    };
    let heads = cx.c64(a.heads as i64);
    let first_token = b.build_int_signed_div(k.begin, heads, "t0").map_err(llvm_err)?;
    let end_up = b.build_int_add(k.end, cx.c64(a.heads as i64 - 1), "e").map_err(llvm_err)?;
    let end_token = b.build_int_signed_div(end_up, heads, "t1").map_err(llvm_err)?;
    let tokens = cx.dim(&k, 0)?;
    cx.for_range(first_token, end_token, 1, |u| {
        // Task tokens zigzag (0, T−1, 1, T−2, ...): a causal query's work grows with its
        // position, and the runtime hands each thread a contiguous range of tasks, so in token
        // order the last thread of a prefill would get the most work.
        let half = b.build_int_signed_div(u, cx.c64(2), "half").map_err(llvm_err)?;
        let odd = b.build_int_truncate(u, cx.context.bool_type(), "odd").map_err(llvm_err)?;
        let last = b.build_int_sub(tokens, cx.c64(1), "last").map_err(llvm_err)?;
        let mirror = b.build_int_sub(last, half, "mirror").map_err(llvm_err)?;
        let t = b.build_select(odd, mirror, half, "t").map_err(llvm_err)?.into_int_value();
        let pos = cx.load_i32(positions, t)?;
        let pos = b.build_int_s_extend(pos, cx.i64(), "pos_q").map_err(llvm_err)?;
        let rot = a.rope.map(|r| rotation(cx, r, pos)).transpose()?;
        // The heads of task token u inside [begin, end).
        let base = b.build_int_mul(u, heads, "base").map_err(llvm_err)?;
        let lo = smax(cx, b.build_int_sub(k.begin, base, "lo").map_err(llvm_err)?, cx.c64(0))?;
        let hi = smin(cx, b.build_int_sub(k.end, base, "hi").map_err(llvm_err)?, heads)?;
        cx.for_range(lo, hi, 1, |h| attend_one(cx, a, &ops, &Query { t, h, pos, rot: rot.as_ref() }))
    })?;
    cx.finish()
}

/// One task: writes `out[t, h]`.
fn attend_one<'ctx>(
    cx: &KernelCx<'ctx>,
    a: &AttentionSpec<'_>,
    ops: &Operands<'ctx>,
    query: &Query<'_, 'ctx>,
) -> Result<()> {
    let b = &cx.builder;
    let f32t = cx.f32().into();
    let chunks = vector_chunks(a.head_dim, cx.lanes);
    let head_index = b
        .build_int_add(b.build_int_mul(query.t, cx.c64(a.heads as i64), "th").map_err(llvm_err)?, query.h, "ti")
        .map_err(llvm_err)?;
    let row = b.build_int_mul(head_index, cx.c64(a.head_dim as i64), "row").map_err(llvm_err)?;
    let q_row = cx.gep(f32t, ops.q, row)?;
    let q_src = match (a.rope, query.rot, ops.q_rotated) {
        (Some(rope), Some(rot), Some(buf)) => {
            rotate_head(cx, rope, rot, a.head_dim, q_row, buf)?;
            buf
        }
        _ => q_row,
    };
    let mut q = Vec::with_capacity(chunks.len());
    for &(off, w) in &chunks {
        let v = cx.load_vf32(q_src, cx.c64(off as i64), w)?;
        q.push(b.build_float_mul(v, cx.splat(cx.cf(a.scale), w)?, "qs").map_err(llvm_err)?);
    }
    let group = (a.heads / a.kv_heads) as i64;
    let g = b.build_int_signed_div(query.h, cx.c64(group), "g").map_err(llvm_err)?;

    let mut init: Vec<BasicValueEnum> = vec![cx.cf(f32::NEG_INFINITY).into(), cx.cf(0.0).into()];
    init.extend(chunks.iter().map(|&(_, w)| BasicValueEnum::from(cx.vf32(w).const_zero())));
    let end = if a.causal { causal_end(cx, ops, query.pos)? } else { ops.len };
    // Whole blocks of `lanes` entries ([`super::block`]), then the rest as one masked block.
    let blocks_end = b.build_and(end, cx.c64(!(i64::from(cx.lanes) - 1)), "blocks").map_err(llvm_err)?;
    let full = cx.for_range_acc(cx.c64(0), blocks_end, i64::from(cx.lanes), &init, |j0, cur| {
        super::block::update(cx, a, ops, &q, &chunks, g, query.pos, j0, None, cur)
    })?;
    let rest = cx.icmp(IntPredicate::SLT, blocks_end, end)?;
    let state = if_then_values(cx, rest, &full, || {
        super::block::update(cx, a, ops, &q, &chunks, g, query.pos, blocks_end, Some(end), &full)
    })?;

    // out = acc / l; no visible key leaves l = 0 and acc = 0, and the output zeros.
    let l = state[1].into_float_value();
    let any = cx.fcmp(FloatPredicate::OGT, l, cx.cf(0.0))?;
    let recip = b.build_float_div(cx.cf(1.0), l, "rl").map_err(llvm_err)?;
    let recip = b.build_select(any, recip, cx.cf(0.0), "inv").map_err(llvm_err)?.into_float_value();
    let out_row = cx.gep(f32t, ops.out, row)?;
    for (&(off, w), acc) in chunks.iter().zip(&state[2..]) {
        let o = b.build_float_mul(acc.into_vector_value(), cx.splat(recip, w)?, "o").map_err(llvm_err)?;
        cx.store_vf32(out_row, cx.c64(off as i64), o)?;
    }
    Ok(())
}

/// How many cache entries a causal query at `pos_q` can see at most: cache positions ascend (entries
/// are appended in position order and rolled back by position), so the keys with `pos ≤ pos_q` are
/// a prefix, found by bisection (a fixed 32 steps, branch-free). Decoding sees the whole cache;
/// prefill stops each query at its own position instead of scanning the rest masked.
fn causal_end<'ctx>(cx: &KernelCx<'ctx>, ops: &Operands<'ctx>, pos_q: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
    let b = &cx.builder;
    let init: Vec<BasicValueEnum> = vec![cx.c64(0).into(), ops.len.into()];
    let out = cx.for_range_acc(cx.c64(0), cx.c64(32), 1, &init, |_, cur| {
        let (lo, hi) = (cur[0].into_int_value(), cur[1].into_int_value());
        let open = cx.icmp(IntPredicate::SLT, lo, hi)?;
        let mid = b
            .build_int_add(
                lo,
                b.build_int_unsigned_div(b.build_int_sub(hi, lo, "w").map_err(llvm_err)?, cx.c64(2), "h")
                    .map_err(llvm_err)?,
                "mid",
            )
            .map_err(llvm_err)?;
        // Clamp the probe inside the cache even when the range is empty.
        let last = b.build_int_sub(ops.len, cx.c64(1), "last").map_err(llvm_err)?;
        let probe = b
            .build_select(cx.icmp(IntPredicate::SLT, mid, last)?, mid, last, "probe")
            .map_err(llvm_err)?
            .into_int_value();
        let probe = b
            .build_select(cx.icmp(IntPredicate::SGT, probe, cx.c64(0))?, probe, cx.c64(0), "probe0")
            .map_err(llvm_err)?
            .into_int_value();
        let pos_k = cx.load_i32(ops.cache_pos, probe)?;
        let pos_k = b.build_int_s_extend(pos_k, cx.i64(), "pk").map_err(llvm_err)?;
        let below = cx.icmp(IntPredicate::SLE, pos_k, pos_q)?;
        let go_right = b.build_and(open, below, "r").map_err(llvm_err)?;
        let go_left = b.build_and(open, b.build_not(below, "nb").map_err(llvm_err)?, "l").map_err(llvm_err)?;
        let mid1 = b.build_int_add(mid, cx.c64(1), "m1").map_err(llvm_err)?;
        let lo = b.build_select(go_right, mid1, lo, "lo").map_err(llvm_err)?;
        let hi = b.build_select(go_left, mid, hi, "hi").map_err(llvm_err)?;
        Ok(vec![lo, hi])
    })?;
    Ok(out[0].into_int_value())
}

/// Whether cache entry `j` (positions in `cache_pos`) is visible to a query at `pos_q`; `None`
/// when every key is (no causal mask, no window), so no test is emitted.
pub(crate) fn visible<'ctx>(
    cx: &KernelCx<'ctx>,
    a: &AttentionSpec<'_>,
    cache_pos: PointerValue<'ctx>,
    pos_q: IntValue<'ctx>,
    j: IntValue<'ctx>,
) -> Result<Option<IntValue<'ctx>>> {
    if !a.causal && a.window.is_none() {
        return Ok(None);
    }
    let b = &cx.builder;
    let pos_k = cx.load_i32(cache_pos, j)?;
    let pos_k = b.build_int_s_extend(pos_k, cx.i64(), "pos_k").map_err(llvm_err)?;
    let mut cond = None;
    if a.causal {
        cond = Some(cx.icmp(IntPredicate::SLE, pos_k, pos_q)?);
    }
    if let Some(w) = a.window {
        // Positions are i32, so the difference cannot overflow i64.
        let age = b.build_int_sub(pos_q, pos_k, "age").map_err(llvm_err)?;
        let inside = cx.icmp(IntPredicate::SLT, age, cx.c64(w))?;
        cond = Some(match cond {
            Some(c) => b.build_and(c, inside, "vis").map_err(llvm_err)?,
            None => inside,
        });
    }
    Ok(cond)
}

/// `q · key` over the head: products of each vector piece, summed pairwise (short dependency
/// chains), then horizontally, one sum per piece width.
pub(super) fn dot<'ctx>(
    cx: &KernelCx<'ctx>,
    q: &[VectorValue<'ctx>],
    chunks: &[(usize, u32)],
    key: PointerValue<'ctx>,
) -> Result<FloatValue<'ctx>> {
    let b = &cx.builder;
    let mut by_width: Vec<(u32, Vec<VectorValue<'ctx>>)> = Vec::new();
    for (&(off, w), &qv) in chunks.iter().zip(q) {
        let kv = cx.load_vf32(key, cx.c64(off as i64), w)?;
        let p = b.build_float_mul(qv, kv, "qk").map_err(llvm_err)?;
        match by_width.iter_mut().find(|(width, _)| *width == w) {
            Some((_, ps)) => ps.push(p),
            None => by_width.push((w, vec![p])),
        }
    }
    let mut total: Option<FloatValue<'ctx>> = None;
    for (_, mut ps) in by_width {
        while ps.len() > 1 {
            let mut next = Vec::with_capacity(ps.len().div_ceil(2));
            let mut rest = ps.into_iter();
            while let Some(x) = rest.next() {
                next.push(match rest.next() {
                    Some(y) => b.build_float_add(x, y, "qk2").map_err(llvm_err)?,
                    None => x,
                });
            }
            ps = next;
        }
        let part = cx.hsum(ps.pop().ok_or_else(|| llvm_err("no products to sum"))?)?;
        total = Some(match total {
            Some(t) => b.build_float_add(t, part, "qks").map_err(llvm_err)?,
            None => part,
        });
    }
    total.ok_or_else(|| llvm_err("dot over an empty head"))
}

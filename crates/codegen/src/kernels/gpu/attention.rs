//! `attention` and `kv_append` on the GPU.
//!
//! - `attention`: a warp per (token, query head). Lane `l` owns the head's dims `l, l + 32, ...`:
//!   it rotates its part of q (RoPE in f64, as the CPU and the interpreter do), and for each cache
//!   entry multiplies it with its part of the key; a shuffle reduction gives every lane the score,
//!   so all lanes keep the same online-softmax state (running max, running sum) and each updates
//!   its own dims of the accumulator. Loads of a key or value row are coalesced across the warp.
//!   Masks, soft-cap, GQA head mapping and the exp-once update are the CPU kernel's
//!   (`kernels/attention/attend.rs`).
//! - `kv_append`: a block per token, a thread per cached element: value copied, key rotated
//!   (its pair partner read from the source row), position written by thread 0.
//!
//! RoPE's inverse frequencies become a constant table per kernel, since the pair a thread rotates
//! depends on its lane.

use super::entry::{self, Entry};
use super::{Arity, Launch};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::{KernelSpec, RopeParams};
use inkwell::module::Linkage;
use inkwell::values::{BasicValueEnum, FloatValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};

/// Threads of a `kv_append` block.
const APPEND_BLOCK: u32 = 128;

fn check(name: &str, arity: Arity, dims: usize, bufs: usize) -> Result<()> {
    if arity.dims != dims || arity.bufs != bufs {
        return Err(llvm_err(format!(
            "{name}: called with {} dims and {} buffers, expected {dims} and {bufs}",
            arity.dims, arity.bufs
        )));
    }
    Ok(())
}

fn check_rope(name: &str, rope: &RopeParams, head_dim: usize) -> Result<()> {
    let r = rope.rotary;
    if r == 0 || r % 2 == 1 || r > head_dim || rope.inv_freq.len() != r / 2 {
        return Err(llvm_err(format!(
            "{name}: rotary dim {r} with {} frequencies for heads of {head_dim}",
            rope.inv_freq.len()
        )));
    }
    Ok(())
}

/// A kernel's RoPE: the frequency table and the parameters.
struct Rope<'a, 'ctx> {
    params: &'a RopeParams,
    table: PointerValue<'ctx>,
}

impl<'a, 'ctx> Rope<'a, 'ctx> {
    fn new(cx: &KernelCx<'ctx>, name: &str, params: &'a RopeParams) -> Rope<'a, 'ctx> {
        let values: Vec<FloatValue> = params.inv_freq.iter().map(|&f| cx.cf(f)).collect();
        let ty = cx.f32().array_type(values.len() as u32);
        let g = cx.module.add_global(ty, None, &format!("{name}__inv_freq"));
        g.set_initializer(&cx.f32().const_array(&values));
        g.set_constant(true);
        g.set_linkage(Linkage::Internal);
        Rope { params, table: g.as_pointer_value() }
    }

    /// Element `d` (< head_dim) of the head at `src`, rotated to position `pos` (i64), as f32.
    fn element(
        &self,
        cx: &KernelCx<'ctx>,
        src: PointerValue<'ctx>,
        d: IntValue<'ctx>,
        pos: IntValue<'ctx>,
    ) -> Result<FloatValue<'ctx>> {
        let b = &cx.builder;
        let x = cx.load_f32(src, d)?;
        let rotary = self.params.rotary as i64;
        let half = rotary / 2;
        let rotated = cx.icmp(IntPredicate::SLT, d, cx.c64(rotary))?;
        let f = b.get_insert_block().and_then(|bb| bb.get_parent()).ok_or_else(|| llvm_err("no function"))?;
        let (yes, done) = (cx.context.append_basic_block(f, "rot"), cx.context.append_basic_block(f, "rotdone"));
        let from = b.get_insert_block().ok_or_else(|| llvm_err("no block"))?;
        b.build_conditional_branch(rotated, yes, done).map_err(llvm_err)?;
        b.position_at_end(yes);
        // The pair (i, partner) and whether d is its first element.
        let (i, partner, first) = if self.params.interleaved {
            let i = b.build_int_unsigned_div(d, cx.c64(2), "i").map_err(llvm_err)?;
            let partner = b.build_xor(d, cx.c64(1), "p").map_err(llvm_err)?;
            let first = cx.icmp(IntPredicate::EQ, b.build_and(d, cx.c64(1), "odd").map_err(llvm_err)?, cx.c64(0))?;
            (i, partner, first)
        } else {
            let first = cx.icmp(IntPredicate::SLT, d, cx.c64(half))?;
            let i = b
                .build_select(first, d, b.build_int_sub(d, cx.c64(half), "dh").map_err(llvm_err)?, "i")
                .map_err(llvm_err)?
                .into_int_value();
            let up = b.build_int_add(d, cx.c64(half), "up").map_err(llvm_err)?;
            let down = b.build_int_sub(d, cx.c64(half), "down").map_err(llvm_err)?;
            let partner = b.build_select(first, up, down, "p").map_err(llvm_err)?.into_int_value();
            (i, partner, first)
        };
        let f64t = cx.context.f64_type();
        let freq = cx.load_f32(self.table, i)?;
        let freq = b.build_float_ext(freq, f64t, "f").map_err(llvm_err)?;
        let posf = b.build_signed_int_to_float(pos, f64t, "posf").map_err(llvm_err)?;
        let angle = b.build_float_mul(posf, freq, "angle").map_err(llvm_err)?;
        let mut c = super::math::call_f64(cx, "cos", angle)?;
        let mut s = super::math::call_f64(cx, "sin", angle)?;
        if self.params.mscale != 1.0 {
            let ms = f64t.const_float(self.params.mscale as f64);
            c = b.build_float_mul(c, ms, "cm").map_err(llvm_err)?;
            s = b.build_float_mul(s, ms, "sm").map_err(llvm_err)?;
        }
        let x64 = b.build_float_ext(x, f64t, "x64").map_err(llvm_err)?;
        let p64 = b.build_float_ext(cx.load_f32(src, partner)?, f64t, "p64").map_err(llvm_err)?;
        // First of a pair: x·c − p·s; second: x·c + p·s (p·s with p the first element).
        let xc = b.build_float_mul(x64, c, "xc").map_err(llvm_err)?;
        let ps = b.build_float_mul(p64, s, "ps").map_err(llvm_err)?;
        let minus = b.build_float_sub(xc, ps, "ra").map_err(llvm_err)?;
        let plus = b.build_float_add(xc, ps, "rb").map_err(llvm_err)?;
        let r = b.build_select(first, minus, plus, "r").map_err(llvm_err)?.into_float_value();
        let r = b.build_float_trunc(r, cx.f32(), "r32").map_err(llvm_err)?;
        let yes_end = b.get_insert_block().ok_or_else(|| llvm_err("no block"))?;
        b.build_unconditional_branch(done).map_err(llvm_err)?;
        b.position_at_end(done);
        let phi = b.build_phi(cx.f32(), "x").map_err(llvm_err)?;
        phi.add_incoming(&[(&x, from), (&r, yes_end)]);
        Ok(phi.as_basic_value().into_float_value())
    }
}

pub fn emit(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec, arity: Arity) -> Result<Launch> {
    let KernelSpec::Attention { heads, kv_heads, head_dim, scale, causal, window, softcap, ref rope } = *spec else {
        return Err(llvm_err(format!("{name}: not an attention kernel")));
    };
    check(name, arity, 2, 6)?;
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || head_dim == 0 {
        return Err(llvm_err(format!("{name}: {heads} heads over {kv_heads} kv heads of dim {head_dim}")));
    }
    if let Some(r) = rope {
        check_rope(name, r, head_dim)?;
    }
    let rope = rope.as_ref().map(|r| Rope::new(cx, name, r));
    let e = entry::begin(cx, name, arity.dims, arity.bufs, 32)?;
    let task = entry::block(cx)?;
    entry::guard_and_finish(cx, &e, task, || {
        attend(cx, &e, task, Shape { heads, kv_heads, head_dim, scale, causal, window, softcap }, rope.as_ref())
    })?;
    Ok(Launch { block: 32, tasks_per_block: 1, shared_bytes: 0 })
}

#[derive(Clone, Copy)]
struct Shape {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f32,
    causal: bool,
    window: Option<i64>,
    softcap: Option<f32>,
}

fn attend<'ctx>(
    cx: &KernelCx<'ctx>,
    e: &Entry<'ctx>,
    task: IntValue<'ctx>,
    a: Shape,
    rope: Option<&Rope<'_, 'ctx>>,
) -> Result<()> {
    let b = &cx.builder;
    let (q, positions, cache_k, cache_v, cache_pos, out) =
        (e.bufs[0], e.bufs[1], e.bufs[2], e.bufs[3], e.bufs[4], e.bufs[5]);
    let len = e.dims[1];
    let heads = cx.c64(a.heads as i64);
    let t = b.build_int_unsigned_div(task, heads, "t").map_err(llvm_err)?;
    let h = b.build_int_unsigned_rem(task, heads, "h").map_err(llvm_err)?;
    let g = b.build_int_unsigned_div(h, cx.c64((a.heads / a.kv_heads) as i64), "g").map_err(llvm_err)?;
    let pos = b.build_int_s_extend(cx.load_i32(positions, t)?, cx.i64(), "pos").map_err(llvm_err)?;
    let row = b.build_int_mul(task, cx.c64(a.head_dim as i64), "row").map_err(llvm_err)?;
    let q_row = cx.gep(cx.f32().into(), q, row)?;
    let lane = entry::lane(cx)?;
    // This lane's dims: lane + 32·i, i < per_lane; dims past head_dim are inactive (value 0).
    let per_lane = a.head_dim.div_ceil(32);
    let mut dims = Vec::with_capacity(per_lane);
    let mut live = Vec::with_capacity(per_lane);
    let mut qv = Vec::with_capacity(per_lane);
    for i in 0..per_lane {
        let d = b.build_int_add(lane, cx.c64(32 * i as i64), "d").map_err(llvm_err)?;
        let ok = cx.icmp(IntPredicate::SLT, d, cx.c64(a.head_dim as i64))?;
        // Inactive lanes read element 0 (always there) and multiply by 0.
        let dd = b.build_select(ok, d, cx.c64(0), "dd").map_err(llvm_err)?.into_int_value();
        let x = match rope {
            Some(r) => r.element(cx, q_row, dd, pos)?,
            None => cx.load_f32(q_row, dd)?,
        };
        let x = b.build_float_mul(x, cx.cf(a.scale), "qs").map_err(llvm_err)?;
        qv.push(b.build_select(ok, x, cx.cf(0.0), "qv").map_err(llvm_err)?.into_float_value());
        dims.push(dd);
        live.push(ok);
    }
    let mut init: Vec<BasicValueEnum> = vec![cx.cf(f32::NEG_INFINITY).into(), cx.cf(0.0).into()];
    init.extend((0..per_lane).map(|_| BasicValueEnum::from(cx.cf(0.0))));
    let state = cx.for_range_acc(cx.c64(0), len, 1, &init, |j, cur| {
        let kv_row = b
            .build_int_add(b.build_int_mul(j, cx.c64(a.kv_heads as i64), "jk").map_err(llvm_err)?, g, "jg")
            .map_err(llvm_err)?;
        let kv_row = b.build_int_mul(kv_row, cx.c64(a.head_dim as i64), "kvrow").map_err(llvm_err)?;
        let key = cx.gep(cx.f32().into(), cache_k, kv_row)?;
        let value = cx.gep(cx.f32().into(), cache_v, kv_row)?;
        let update = || -> Result<Vec<BasicValueEnum<'ctx>>> {
            let mut partial = cx.cf(0.0);
            for (i, &d) in dims.iter().enumerate() {
                partial = cx.fma(qv[i], cx.load_f32(key, d)?, partial)?.into_float_value();
            }
            let mut s = entry::warp_reduce(cx, partial, false)?;
            if let Some(c) = a.softcap {
                let x = b.build_float_div(s, cx.cf(c), "sc").map_err(llvm_err)?;
                s = b.build_float_mul(cx.libm("tanhf", &[x])?, cx.cf(c), "capped").map_err(llvm_err)?;
            }
            let (m, l) = (cur[0].into_float_value(), cur[1].into_float_value());
            let grows = cx.fcmp(FloatPredicate::OGT, s, m)?;
            let sel = |c: IntValue<'ctx>, x: FloatValue<'ctx>, y: FloatValue<'ctx>| -> Result<FloatValue<'ctx>> {
                Ok(b.build_select(c, x, y, "sel").map_err(llvm_err)?.into_float_value())
            };
            let new_m = sel(grows, s, m)?;
            let low = sel(grows, m, s)?;
            let ex = cx.libm("expf", &[b.build_float_sub(low, new_m, "d").map_err(llvm_err)?])?;
            let rescale = sel(grows, ex, cx.cf(1.0))?;
            let weight = sel(grows, cx.cf(1.0), ex)?;
            let mut next = vec![new_m.into(), cx.fma(l, rescale, weight)?];
            for (i, &d) in dims.iter().enumerate() {
                let kept = b.build_float_mul(cur[2 + i].into_float_value(), rescale, "kept").map_err(llvm_err)?;
                next.push(cx.fma(cx.load_f32(value, d)?, weight, kept)?);
            }
            Ok(next)
        };
        match visible(cx, a, cache_pos, pos, j)? {
            Some(cond) => if_values(cx, cond, cur, update),
            None => update(),
        }
    })?;
    let l = state[1].into_float_value();
    let any = cx.fcmp(FloatPredicate::OGT, l, cx.cf(0.0))?;
    let recip = b.build_float_div(cx.cf(1.0), l, "rl").map_err(llvm_err)?;
    let recip = b.build_select(any, recip, cx.cf(0.0), "inv").map_err(llvm_err)?.into_float_value();
    let out_row = cx.gep(cx.f32().into(), out, row)?;
    for (i, &d) in dims.iter().enumerate() {
        let o = b.build_float_mul(state[2 + i].into_float_value(), recip, "o").map_err(llvm_err)?;
        cx.if_then(live[i], || cx.store_f32(out_row, d, o))?;
    }
    Ok(())
}

/// Whether cache entry `j` is visible to a query at `pos_q` (None: every key is).
fn visible<'ctx>(
    cx: &KernelCx<'ctx>,
    a: Shape,
    cache_pos: PointerValue<'ctx>,
    pos_q: IntValue<'ctx>,
    j: IntValue<'ctx>,
) -> Result<Option<IntValue<'ctx>>> {
    if !a.causal && a.window.is_none() {
        return Ok(None);
    }
    let b = &cx.builder;
    let pos_k = b.build_int_s_extend(cx.load_i32(cache_pos, j)?, cx.i64(), "pos_k").map_err(llvm_err)?;
    let mut cond = None;
    if a.causal {
        cond = Some(cx.icmp(IntPredicate::SLE, pos_k, pos_q)?);
    }
    if let Some(w) = a.window {
        let age = b.build_int_sub(pos_q, pos_k, "age").map_err(llvm_err)?;
        let inside = cx.icmp(IntPredicate::SLT, age, cx.c64(w))?;
        cond = Some(match cond {
            Some(c) => b.build_and(c, inside, "vis").map_err(llvm_err)?,
            None => inside,
        });
    }
    Ok(cond)
}

/// `if cond { then() } else { current }` for loop-carried values (the condition is the same for
/// every lane of the warp, so the shuffles inside `then` see the whole warp).
fn if_values<'ctx>(
    cx: &KernelCx<'ctx>,
    cond: IntValue<'ctx>,
    current: &[BasicValueEnum<'ctx>],
    then: impl FnOnce() -> Result<Vec<BasicValueEnum<'ctx>>>,
) -> Result<Vec<BasicValueEnum<'ctx>>> {
    let b = &cx.builder;
    let from = b.get_insert_block().ok_or_else(|| llvm_err("no block"))?;
    let f = from.get_parent().ok_or_else(|| llvm_err("no function"))?;
    let (then_bb, done) = (cx.context.append_basic_block(f, "vis"), cx.context.append_basic_block(f, "vismerge"));
    b.build_conditional_branch(cond, then_bb, done).map_err(llvm_err)?;
    b.position_at_end(then_bb);
    let new = then()?;
    let then_end = b.get_insert_block().ok_or_else(|| llvm_err("no block"))?;
    b.build_unconditional_branch(done).map_err(llvm_err)?;
    b.position_at_end(done);
    let mut merged = Vec::with_capacity(current.len());
    for (old, new) in current.iter().zip(&new) {
        let phi = b.build_phi(old.get_type(), "v").map_err(llvm_err)?;
        phi.add_incoming(&[(old, from), (new, then_end)]);
        merged.push(phi.as_basic_value());
    }
    Ok(merged)
}

pub fn emit_kv_append(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec, arity: Arity) -> Result<Launch> {
    let KernelSpec::KvAppend { kv_heads, head_dim, ref rope } = *spec else {
        return Err(llvm_err(format!("{name}: not a kv_append kernel")));
    };
    check(name, arity, 2, 6)?;
    if kv_heads == 0 || head_dim == 0 {
        return Err(llvm_err(format!("{name}: {kv_heads} kv heads of dim {head_dim}")));
    }
    if let Some(r) = rope {
        check_rope(name, r, head_dim)?;
    }
    let rope = rope.as_ref().map(|r| Rope::new(cx, name, r));
    let block = APPEND_BLOCK;
    let e = entry::begin(cx, name, arity.dims, arity.bufs, block)?;
    let t = entry::block(cx)?;
    let b = &cx.builder;
    entry::guard_and_finish(cx, &e, t, || {
        let (keys, values, positions, cache_k, cache_v, cache_pos) =
            (e.bufs[0], e.bufs[1], e.bufs[2], e.bufs[3], e.bufs[4], e.bufs[5]);
        let entry_at = b.build_int_add(e.dims[1], t, "entry").map_err(llvm_err)?;
        let pos32 = cx.load_i32(positions, t)?;
        let tid = entry::thread(cx)?;
        cx.if_then(cx.icmp(IntPredicate::EQ, tid, cx.c64(0))?, || {
            cx.store(cx.i32().into(), cache_pos, entry_at, pos32, 4)
        })?;
        let pos = b.build_int_s_extend(pos32, cx.i64(), "pos").map_err(llvm_err)?;
        let row = (kv_heads * head_dim) as i64;
        let src = b.build_int_mul(t, cx.c64(row), "src").map_err(llvm_err)?;
        let dst = b.build_int_mul(entry_at, cx.c64(row), "dst").map_err(llvm_err)?;
        cx.for_range(tid, cx.c64(row), block as i64, |i| {
            let from = b.build_int_add(src, i, "from").map_err(llvm_err)?;
            let to = b.build_int_add(dst, i, "to").map_err(llvm_err)?;
            cx.store_f32(cache_v, to, cx.load_f32(values, from)?)?;
            let k = match &rope {
                Some(r) => {
                    let d = b.build_int_unsigned_rem(i, cx.c64(head_dim as i64), "d").map_err(llvm_err)?;
                    let head0 = b.build_int_sub(from, d, "h0").map_err(llvm_err)?;
                    r.element(cx, cx.gep(cx.f32().into(), keys, head0)?, d, pos)?
                }
                None => cx.load_f32(keys, from)?,
            };
            cx.store_f32(cache_k, to, k)
        })
    })?;
    Ok(Launch { block, tasks_per_block: 1, shared_bytes: 0 })
}

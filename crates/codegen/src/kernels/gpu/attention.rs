//! `attention` and `kv_append` on the GPU.
//!
//! - `attention`: a block of 8 warps per (token, query head), splitting the cache between them
//!   (split-K, as flash-decoding does, but inside one block so no second kernel is needed). The
//!   query is rotated (RoPE in f64, as on the CPU and in the interpreter), scaled and put in shared
//!   memory. Each warp then takes 32 keys at a time, one per lane — each lane reads a whole key
//!   row, so a warp has many independent loads in flight instead of one dependent chain per key —
//!   and keeps an online softmax over its keys (tile max and sum by shuffles); the value rows are
//!   accumulated with the head's dims spread over the lanes, each key's weight broadcast by a
//!   shuffle. Finally the 8 partial states (max, sum, accumulator) are merged through shared
//!   memory. Masks (causal, window), soft-cap and the GQA head mapping are the CPU kernel's
//!   (`kernels/attention/attend.rs`).
//! - `kv_append`: a block per token, a thread per cached element: value copied, key rotated
//!   (its pair partner read from the source row), position written by thread 0.
//!
//! RoPE's inverse frequencies become a constant table per kernel, since the pair a thread rotates
//! depends on its lane.

use super::entry::{self, Entry};
use super::{Arity, Launch};
use crate::error::Result;
use crate::kernels::attention::attend::{visible, AttentionSpec};
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::{KernelSpec, RopeParams};
use inkwell::module::Linkage;
use inkwell::values::{BasicValue, BasicValueEnum, FloatValue, IntValue, PointerValue};
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

/// Warps of an attention block: they split the keys, then combine through shared memory.
const WARPS: usize = 8;

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
    let block = (32 * WARPS) as u32;
    let splits = split_count(heads);
    let arrays = [("q", head_dim), ("m", WARPS), ("l", WARPS), ("acc", WARPS * head_dim), ("flag", 1)]
        .map(|(what, n)| shared_array(cx, &format!("{name}__{what}"), n));
    // The scratch memory is the parameter after the buffers.
    let e = entry::begin(cx, name, arity.dims, arity.bufs + 1, block)?;
    let [q, m, l, acc, flag] = arrays.map(|g| generic(cx, g));
    let smem = Shared { q: q?, m: m?, l: l?, acc: acc?, flag: flag? };
    let b = &cx.builder;
    let ctaid = entry::block(cx)?;
    let task = b.build_int_unsigned_div(ctaid, cx.c64(splits as i64), "task").map_err(llvm_err)?;
    let split = b.build_int_unsigned_rem(ctaid, cx.c64(splits as i64), "split").map_err(llvm_err)?;
    // RoPE comes as `Rope` (with its frequency table) instead.
    let shape = AttentionSpec { heads, kv_heads, head_dim, scale, causal, window, softcap, rope: None };
    let part = Split { index: split, count: splits, scratch: e.bufs[6] };
    entry::guard_and_finish(cx, &e, task, || attend(cx, &e, task, shape, rope.as_ref(), &smem, &part))?;
    Ok(Launch {
        block_sync: true,
        blocks_per_task: splits as u32,
        scratch_per_task: scratch_per_task(splits, head_dim) as u32,
        ..Launch::new(block, 1)
    })
}

/// Blocks per query head: enough that a decode step's heads fill ~128 blocks (a large GPU's SMs),
/// at most 8.
fn split_count(heads: usize) -> usize {
    (128 / heads.max(1)).clamp(1, 8)
}

/// A task's scratch bytes: an arrival counter (16 bytes, for alignment), then per split its
/// partial state `[max, sum, acc[head_dim]]` in f32.
fn scratch_per_task(splits: usize, head_dim: usize) -> usize {
    16 + splits * (2 + head_dim) * 4
}

/// Which part of the cache this block takes, and where the parts meet.
struct Split<'ctx> {
    index: IntValue<'ctx>,
    count: usize,
    scratch: PointerValue<'ctx>,
}

/// The block's shared memory: the rotated, scaled query, and each warp's partial softmax state.
struct Shared<'ctx> {
    q: PointerValue<'ctx>,
    m: PointerValue<'ctx>,
    l: PointerValue<'ctx>,
    acc: PointerValue<'ctx>,
    /// Whether this block arrived last (1.0) among its task's splits.
    flag: PointerValue<'ctx>,
}

/// A static shared-memory array of `n` f32 (an ordinary global in the simulator).
fn shared_array<'ctx>(cx: &KernelCx<'ctx>, name: &str, n: usize) -> inkwell::values::GlobalValue<'ctx> {
    let ty = cx.f32().array_type(n.max(1) as u32);
    let space = if cx.sim { None } else { Some(inkwell::AddressSpace::from(3u16)) };
    let g = cx.module.add_global(ty, space, name);
    g.set_initializer(&ty.get_undef());
    g.set_linkage(Linkage::Internal);
    g.set_alignment(16);
    g
}

/// A shared array as a generic pointer, cast at the builder's position (NVPTX's address-space
/// inference turns the accesses back into `ld.shared`/`st.shared`).
fn generic<'ctx>(cx: &KernelCx<'ctx>, g: inkwell::values::GlobalValue<'ctx>) -> Result<PointerValue<'ctx>> {
    if cx.sim {
        return Ok(g.as_pointer_value());
    }
    cx.builder.build_address_space_cast(g.as_pointer_value(), cx.ptr(), "smem").map_err(llvm_err)
}

/// One block: query head `h` of token `t` (task `t · heads + h`). Warp `w` scores keys
/// `32·w + 256·i + lane` (a key per lane: a whole row of K per lane, many loads in flight), keeps
/// an online softmax over its keys, and accumulates V with the head's dims over its lanes; the
/// warps' states are then merged.
fn attend<'ctx>(
    cx: &KernelCx<'ctx>,
    e: &Entry<'ctx>,
    task: IntValue<'ctx>,
    a: AttentionSpec<'_>,
    rope: Option<&Rope<'_, 'ctx>>,
    smem: &Shared<'ctx>,
    part: &Split<'ctx>,
) -> Result<()> {
    let b = &cx.builder;
    let (q, positions, cache_k, cache_v, cache_pos, out) =
        (e.bufs[0], e.bufs[1], e.bufs[2], e.bufs[3], e.bufs[4], e.bufs[5]);
    let len = e.dims[1];
    let hd = a.head_dim as i64;
    let threads = (32 * WARPS) as i64;
    let heads = cx.c64(a.heads as i64);
    let t = b.build_int_unsigned_div(task, heads, "t").map_err(llvm_err)?;
    let h = b.build_int_unsigned_rem(task, heads, "h").map_err(llvm_err)?;
    let g = b.build_int_unsigned_div(h, cx.c64((a.heads / a.kv_heads) as i64), "g").map_err(llvm_err)?;
    let pos = b.build_int_s_extend(cx.load_i32(positions, t)?, cx.i64(), "pos").map_err(llvm_err)?;
    let row = b.build_int_mul(task, cx.c64(hd), "row").map_err(llvm_err)?;
    let q_row = cx.gep(cx.f32().into(), q, row)?;
    let tid = entry::thread(cx)?;
    let warp = b.build_int_unsigned_div(tid, cx.c64(32), "warp").map_err(llvm_err)?;
    let lane = entry::lane(cx)?;
    // 1. The query, rotated and scaled, into shared memory.
    cx.for_range(tid, cx.c64(hd), threads, |d| {
        let x = match rope {
            Some(r) => r.element(cx, q_row, d, pos)?,
            None => cx.load_f32(q_row, d)?,
        };
        cx.store_f32(smem.q, d, b.build_float_mul(x, cx.cf(a.scale), "qs").map_err(llvm_err)?)
    })?;
    entry::barrier(cx)?;
    // This lane's output dims: lane + 32·i.
    let per_lane = a.head_dim.div_ceil(32);
    let mut dims = Vec::with_capacity(per_lane);
    let mut live = Vec::with_capacity(per_lane);
    for i in 0..per_lane {
        let d = b.build_int_add(lane, cx.c64(32 * i as i64), "d").map_err(llvm_err)?;
        let ok = cx.icmp(IntPredicate::SLT, d, cx.c64(hd))?;
        dims.push(b.build_select(ok, d, cx.c64(0), "dd").map_err(llvm_err)?.into_int_value());
        live.push(ok);
    }
    let last = b.build_int_sub(len, cx.c64(1), "last").map_err(llvm_err)?;
    let clamp = |j: IntValue<'ctx>| -> Result<IntValue<'ctx>> {
        let lt = cx.icmp(IntPredicate::SLT, j, last)?;
        Ok(b.build_select(lt, j, last, "jc").map_err(llvm_err)?.into_int_value())
    };
    let kv_row = |j: IntValue<'ctx>| -> Result<IntValue<'ctx>> {
        let r = b
            .build_int_add(b.build_int_mul(j, cx.c64(a.kv_heads as i64), "jk").map_err(llvm_err)?, g, "jg")
            .map_err(llvm_err)?;
        b.build_int_mul(r, cx.c64(hd), "kvrow").map_err(llvm_err)
    };
    let neg_inf = cx.cf(f32::NEG_INFINITY);
    let sel = |c: IntValue<'ctx>, x: FloatValue<'ctx>, y: FloatValue<'ctx>| -> Result<FloatValue<'ctx>> {
        Ok(b.build_select(c, x, y, "sel").map_err(llvm_err)?.into_float_value())
    };
    let mut init: Vec<BasicValueEnum> = vec![neg_inf.into(), cx.cf(0.0).into()];
    init.extend((0..per_lane).map(|_| BasicValueEnum::from(cx.cf(0.0))));
    // 2. This block's part of the cache, [lo, hi); this warp's keys in it, 32 at a time.
    let count = cx.c64(part.count as i64);
    let chunk = b
        .build_int_signed_div(
            b.build_int_add(len, cx.c64(part.count as i64 - 1), "lc").map_err(llvm_err)?,
            count,
            "chunk",
        )
        .map_err(llvm_err)?;
    let lo = b.build_int_mul(part.index, chunk, "lo").map_err(llvm_err)?;
    let hi = b.build_int_add(lo, chunk, "hi0").map_err(llvm_err)?;
    let hi = b.build_select(cx.icmp(IntPredicate::SLT, hi, len)?, hi, len, "hi").map_err(llvm_err)?.into_int_value();
    let first =
        b.build_int_add(lo, b.build_int_mul(warp, cx.c64(32), "wf").map_err(llvm_err)?, "first").map_err(llvm_err)?;
    let state = cx.for_range_acc(first, hi, threads, &init, |base, cur| {
        let j = b.build_int_add(base, lane, "j").map_err(llvm_err)?;
        let in_cache = cx.icmp(IntPredicate::SLT, j, hi)?;
        let jc = clamp(j)?;
        let key = cx.gep(cx.f32().into(), cache_k, kv_row(jc)?)?;
        let mut s = cx.cf(0.0);
        for d in 0..a.head_dim {
            let dc = cx.c64(d as i64);
            s = cx.fma(cx.load_f32(smem.q, dc)?, cx.load_f32(key, dc)?, s)?.into_float_value();
        }
        if let Some(c) = a.softcap {
            let x = b.build_float_div(s, cx.cf(c), "sc").map_err(llvm_err)?;
            s = b.build_float_mul(cx.libm("tanhf", &[x])?, cx.cf(c), "capped").map_err(llvm_err)?;
        }
        let mut valid = in_cache;
        if let Some(vis) = visible(cx, &a, cache_pos, pos, jc)? {
            valid = b.build_and(valid, vis, "valid").map_err(llvm_err)?;
        }
        let s = sel(valid, s, neg_inf)?;
        let (m, l) = (cur[0].into_float_value(), cur[1].into_float_value());
        let tile_max = entry::warp_reduce(cx, s, true)?;
        let m_new = cx.intrinsic("llvm.maxnum", &[cx.f32().into()], &[m.into(), tile_max.into()])?.into_float_value();
        let m_dead = cx.fcmp(FloatPredicate::OEQ, m, neg_inf)?;
        let rescale =
            sel(m_dead, cx.cf(0.0), cx.libm("expf", &[b.build_float_sub(m, m_new, "dm").map_err(llvm_err)?])?)?;
        let p = sel(valid, cx.libm("expf", &[b.build_float_sub(s, m_new, "ds").map_err(llvm_err)?])?, cx.cf(0.0))?;
        let l_new = cx.fma(l, rescale, entry::warp_reduce(cx, p, false)?)?;
        let mut acc: Vec<FloatValue> = (0..per_lane)
            .map(|i| b.build_float_mul(cur[2 + i].into_float_value(), rescale, "kept").map_err(llvm_err))
            .collect::<Result<_>>()?;
        // V: the tile's 32 weights, one per lane, broadcast in turn.
        let tile = b.build_int_sub(hi, base, "rest").map_err(llvm_err)?;
        let lt = cx.icmp(IntPredicate::SLT, tile, cx.c64(32))?;
        let tile = b.build_select(lt, tile, cx.c64(32), "tile").map_err(llvm_err)?.into_int_value();
        let init: Vec<BasicValueEnum> = acc.iter().map(|&v| v.into()).collect();
        let summed = cx.for_range_acc(cx.c64(0), tile, 1, &init, |jj, accs| {
            let jj32 = b.build_int_truncate(jj, cx.i32(), "jj").map_err(llvm_err)?;
            let pj = entry::shuffle_idx(cx, p, jj32)?;
            let value =
                cx.gep(cx.f32().into(), cache_v, kv_row(b.build_int_add(base, jj, "vj").map_err(llvm_err)?)?)?;
            dims.iter().zip(accs).map(|(&d, acc)| cx.fma(pj, cx.load_f32(value, d)?, acc.into_float_value())).collect()
        })?;
        acc = summed.iter().map(|v| v.into_float_value()).collect();
        let mut next: Vec<BasicValueEnum> = vec![m_new.into(), l_new];
        next.extend(acc.iter().map(|&v| BasicValueEnum::from(v)));
        Ok(next)
    })?;
    // 3. Every warp's state into shared memory, then the merge.
    let first_lane = cx.icmp(IntPredicate::EQ, lane, cx.c64(0))?;
    cx.if_then(first_lane, || {
        cx.store_f32(smem.m, warp, state[0].into_float_value())?;
        cx.store_f32(smem.l, warp, state[1].into_float_value())
    })?;
    let acc_base = b.build_int_mul(warp, cx.c64(hd), "ab").map_err(llvm_err)?;
    for (i, &d) in dims.iter().enumerate() {
        let at = b.build_int_add(acc_base, d, "aat").map_err(llvm_err)?;
        cx.if_then(live[i], || cx.store_f32(smem.acc, at, state[2 + i].into_float_value()))?;
    }
    entry::barrier(cx)?;
    let out_row = cx.gep(cx.f32().into(), out, row)?;
    // The block's state: max M over its warps, sum L and accumulator O rescaled to M.
    let merged = |ms: &dyn Fn(i64) -> Result<FloatValue<'ctx>>,
                  ls: &dyn Fn(i64) -> Result<FloatValue<'ctx>>,
                  os: &dyn Fn(i64) -> Result<FloatValue<'ctx>>,
                  n: usize|
     -> Result<[FloatValue<'ctx>; 3]> {
        let mut big = neg_inf;
        for w in 0..n as i64 {
            big = cx.intrinsic("llvm.maxnum", &[cx.f32().into()], &[big.into(), ms(w)?.into()])?.into_float_value();
        }
        let (mut l, mut o) = (cx.cf(0.0), cx.cf(0.0));
        for w in 0..n as i64 {
            let mw = ms(w)?;
            let dead = cx.fcmp(FloatPredicate::OEQ, mw, neg_inf)?;
            let f = sel(dead, cx.cf(0.0), cx.libm("expf", &[b.build_float_sub(mw, big, "dw").map_err(llvm_err)?])?)?;
            l = cx.fma(ls(w)?, f, l)?.into_float_value();
            o = cx.fma(os(w)?, f, o)?.into_float_value();
        }
        Ok([big, l, o])
    };
    // out = O / L; no visible key leaves L = 0: zeros, like the CPU kernel and the interpreter.
    let finish = |d: IntValue<'ctx>, l: FloatValue<'ctx>, o: FloatValue<'ctx>| -> Result<()> {
        let any = cx.fcmp(FloatPredicate::OGT, l, cx.cf(0.0))?;
        let y = sel(any, b.build_float_div(o, l, "y").map_err(llvm_err)?, cx.cf(0.0))?;
        cx.store_f32(out_row, d, y)
    };
    let warp_m = |w: i64| cx.load_f32(smem.m, cx.c64(w));
    let warp_l = |w: i64| cx.load_f32(smem.l, cx.c64(w));
    if part.count == 1 {
        return cx.for_range(tid, cx.c64(hd), threads, |d| {
            let warp_o = |w: i64| cx.load_f32(smem.acc, b.build_int_add(cx.c64(w * hd), d, "wat").map_err(llvm_err)?);
            let [_, l, o] = merged(&warp_m, &warp_l, &warp_o, WARPS)?;
            finish(d, l, o)
        });
    }
    // 4. Split-K across blocks: this block's state into its scratch slot; the last block of the
    // task to arrive merges every slot (the threadfence-reduction pattern: write, fence, count).
    let slot_floats = 2 + hd;
    let task_base = cx.gep_bytes(
        part.scratch,
        b.build_int_mul(task, cx.c64(scratch_per_task(part.count, a.head_dim) as i64), "tb").map_err(llvm_err)?,
    )?;
    let partials = cx.gep_bytes(task_base, cx.c64(16))?;
    let mine =
        cx.gep(cx.f32().into(), partials, b.build_int_mul(part.index, cx.c64(slot_floats), "so").map_err(llvm_err)?)?;
    cx.for_range(tid, cx.c64(hd), threads, |d| {
        let warp_o = |w: i64| cx.load_f32(smem.acc, b.build_int_add(cx.c64(w * hd), d, "wat").map_err(llvm_err)?);
        let [big, l, o] = merged(&warp_m, &warp_l, &warp_o, WARPS)?;
        cx.store_f32(mine, b.build_int_add(d, cx.c64(2), "od").map_err(llvm_err)?, o)?;
        // Thread 0 also writes the block's max and sum.
        cx.if_then(cx.icmp(IntPredicate::EQ, d, cx.c64(0))?, || {
            cx.store_f32(mine, cx.c64(0), big)?;
            cx.store_f32(mine, cx.c64(1), l)
        })
    })?;
    entry::barrier(cx)?;
    let first_thread = cx.icmp(IntPredicate::EQ, tid, cx.c64(0))?;
    cx.if_then(first_thread, || {
        entry::threadfence(cx)?;
        let one = cx.i32().const_int(1, false);
        let arrived = b
            .build_atomicrmw(
                inkwell::AtomicRMWBinOp::Add,
                task_base,
                one,
                inkwell::AtomicOrdering::SequentiallyConsistent,
            )
            .map_err(llvm_err)?;
        let last = cx.icmp(IntPredicate::EQ, arrived, cx.i32().const_int(part.count as u64 - 1, false))?;
        let flag = b.build_select(last, cx.cf(1.0), cx.cf(0.0), "flag").map_err(llvm_err)?.into_float_value();
        cx.store_f32(smem.flag, cx.c64(0), flag)?;
        // The last block resets the counter for the next call (every block has arrived).
        cx.if_then(last, || {
            let st = b.build_store(task_base, cx.i32().const_zero()).map_err(llvm_err)?;
            st.set_alignment(4).map_err(llvm_err)?;
            Ok(())
        })
    })?;
    entry::barrier(cx)?;
    let is_last = cx.fcmp(FloatPredicate::OEQ, cx.load_f32(smem.flag, cx.c64(0))?, cx.cf(1.0))?;
    cx.if_then(is_last, || {
        entry::threadfence(cx)?;
        // Other blocks' slots, read past any cache (volatile).
        let slot = |s: i64, k: IntValue<'ctx>| -> Result<FloatValue<'ctx>> {
            let p = cx.gep(
                cx.f32().into(),
                partials,
                b.build_int_add(cx.c64(s * slot_floats), k, "sk").map_err(llvm_err)?,
            )?;
            let v = b.build_load(cx.f32(), p, "part").map_err(llvm_err)?;
            let i = v.as_instruction_value().ok_or_else(|| llvm_err("a load"))?;
            i.set_volatile(true).map_err(llvm_err)?;
            i.set_alignment(4).map_err(llvm_err)?;
            Ok(v.into_float_value())
        };
        cx.for_range(tid, cx.c64(hd), threads, |d| {
            let od = b.build_int_add(d, cx.c64(2), "od").map_err(llvm_err)?;
            let [_, l, o] = merged(&|s| slot(s, cx.c64(0)), &|s| slot(s, cx.c64(1)), &|s| slot(s, od), part.count)?;
            finish(d, l, o)
        })
    })
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
    Ok(Launch::new(block, 1))
}

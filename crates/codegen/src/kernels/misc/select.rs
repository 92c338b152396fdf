//! Selection kernels: `top_k`, `nonzero`, `expert_gate`, `mod_select`. Orders and tie rules are the
//! interpreter's (`kiln_ir::interp::ops::index::top_k_row`): largest first, NaN above everything,
//! equal values (−0 = +0, NaN = NaN) toward the lower index.

use super::{branch_value, single_task, Int};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use inkwell::values::{BasicValue, FloatValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};

/// Whether `a` ranks strictly before `b`: NaN above every number, then by value.
fn ranks_above<'ctx>(cx: &KernelCx<'ctx>, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Result<IntValue<'ctx>> {
    let int = Int { cx };
    let greater = cx.fcmp(FloatPredicate::OGT, a, b)?;
    let nan_over_number = int.and(cx.fcmp(FloatPredicate::UNO, a, a)?, cx.fcmp(FloatPredicate::ORD, b, b)?)?;
    int.or(greater, nan_over_number)
}

/// Indices of each row's `k` largest values, largest first. Insertion into the sorted output row:
/// a value past the first k is compared with the k-th best only, so a row costs about `cols`
/// comparisons plus k per value that makes it in. Scanning in index order and inserting after equal
/// values puts ties at the lower index.
pub fn top_k<'ctx>(cx: &KernelCx<'ctx>, name: &str, cols: usize, k_best: usize) -> Result<()> {
    if k_best == 0 || k_best > cols {
        return Err(llvm_err(format!("{name}: top_k needs 1 ≤ k ≤ cols, found k = {k_best}, cols = {cols}")));
    }
    let int = Int { cx };
    let k = cx.begin_kernel(name);
    let (x, out) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?);
    let (cols_c, k_c, last) = (cx.c64(cols as i64), cx.c64(k_best as i64), cx.c64(k_best as i64 - 1));
    cx.for_range(k.begin, k.end, 1, |r| {
        let (xrow, orow) = (int.mul(r, cols_c)?, int.mul(r, k_c)?);
        // The value ranked at output slot p.
        let ranked = |p: IntValue<'ctx>| -> Result<FloatValue<'ctx>> {
            let i = int.load_index(out, int.add(orow, p)?)?;
            cx.load_f32(x, int.add(xrow, i)?)
        };
        cx.for_range(cx.c64(0), cols_c, 1, |j| {
            let v = cx.load_f32(x, int.add(xrow, j)?)?;
            let filling = cx.icmp(IntPredicate::SLT, j, k_c)?;
            let enters = branch_value(
                cx,
                filling,
                || Ok(cx.context.bool_type().const_all_ones().as_basic_value_enum()),
                || Ok(ranks_above(cx, v, ranked(last)?)?.as_basic_value_enum()),
            )?
            .into_int_value();
            cx.if_then(enters, || {
                let start = int.select(filling, j, last)?;
                let slot = shift_down(cx, orow, start, |p| ranks_above(cx, v, ranked(p)?), out)?;
                int.store_i32(out, int.add(orow, slot)?, j)
            })
        })
    })?;
    cx.finish()
}

/// `p = start; while p > 0 && before(p − 1) { out[row + p] = out[row + p − 1]; p −= 1 }`; returns
/// the final p (the slot the new entry takes).
fn shift_down<'ctx>(
    cx: &KernelCx<'ctx>,
    row: IntValue<'ctx>,
    start: IntValue<'ctx>,
    before: impl Fn(IntValue<'ctx>) -> Result<IntValue<'ctx>>,
    out: PointerValue<'ctx>,
) -> Result<IntValue<'ctx>> {
    let int = Int { cx };
    let b = &cx.builder;
    let f =
        b.get_insert_block().and_then(|bb| bb.get_parent()).ok_or_else(|| llvm_err("builder outside a function"))?;
    let pre = b.get_insert_block().ok_or_else(|| llvm_err("builder lost its block"))?;
    let (head, check, shift, exit) = (
        cx.context.append_basic_block(f, "shift.head"),
        cx.context.append_basic_block(f, "shift.check"),
        cx.context.append_basic_block(f, "shift.move"),
        cx.context.append_basic_block(f, "shift.exit"),
    );
    b.build_unconditional_branch(head).map_err(llvm_err)?;
    b.position_at_end(head);
    let p = b.build_phi(cx.i64(), "p").map_err(llvm_err)?;
    p.add_incoming(&[(&start, pre)]);
    let pv = p.as_basic_value().into_int_value();
    let more = cx.icmp(IntPredicate::SGT, pv, cx.c64(0))?;
    b.build_conditional_branch(more, check, exit).map_err(llvm_err)?;
    b.position_at_end(check);
    let prev = int.sub(pv, cx.c64(1))?;
    let go = before(prev)?;
    b.build_conditional_branch(go, shift, exit).map_err(llvm_err)?;
    b.position_at_end(shift);
    let moved = cx.load_i32(out, int.add(row, prev)?)?;
    int.store_i32(out, int.add(row, pv)?, moved)?;
    b.build_unconditional_branch(head).map_err(llvm_err)?;
    p.add_incoming(&[(&prev, shift)]);
    b.position_at_end(exit);
    Ok(pv)
}

/// Ascending indices of the nonzero entries (NaN counts as nonzero, −0 does not), then their count
/// as an i64. Branch-free: index i is always written at the next free slot (≤ i, so inside the
/// buffer) and the slot advances only past nonzero entries.
pub fn nonzero(cx: &KernelCx<'_>, name: &str) -> Result<()> {
    let int = Int { cx };
    let k = cx.begin_kernel(name);
    let n = cx.dim(&k, 0)?;
    let (mask, out, count) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?, cx.buf(&k, 2)?);
    single_task(cx, &k, || {
        let done = cx.for_range_acc(cx.c64(0), n, 1, &[cx.c64(0).into()], |i, acc| {
            let slot = acc[0].into_int_value();
            let nz = cx.fcmp(FloatPredicate::UNE, cx.load_f32(mask, i)?, cx.cf(0.0))?;
            int.store_i32(out, slot, i)?;
            Ok(vec![int.add(slot, int.count(nz)?)?.into()])
        })?;
        cx.store(cx.i64().into(), count, cx.c64(0), done[0], 8)
    })?;
    cx.finish()
}

/// `out[t] = Σ_j gates[t,j] · [idx[t,j] = expert]`, summed in j order in f32 as the interpreter does.
pub fn expert_gate(cx: &KernelCx<'_>, name: &str, k_slots: usize, expert: i64) -> Result<()> {
    let int = Int { cx };
    let k = cx.begin_kernel(name);
    let t = cx.dim(&k, 0)?;
    let (idx, gates, out) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?, cx.buf(&k, 2)?);
    let k_c = cx.c64(k_slots as i64);
    single_task(cx, &k, || {
        cx.for_range(cx.c64(0), t, 1, |ti| {
            let row = int.mul(ti, k_c)?;
            let sum = cx.for_range_acc(cx.c64(0), k_c, 1, &[cx.cf(0.0).into()], |j, acc| {
                let at = int.add(row, j)?;
                let hit = cx.icmp(IntPredicate::EQ, int.load_index(idx, at)?, cx.c64(expert))?;
                let acc = acc[0].into_float_value();
                let added = cx.builder.build_float_add(acc, cx.load_f32(gates, at)?, "g").map_err(llvm_err)?;
                Ok(vec![cx.builder.build_select(hit, added, acc, "acc").map_err(llvm_err)?])
            })?;
            cx.store_f32(out, ti, sum[0].into_float_value())
        })
    })?;
    cx.finish()
}

/// The Mixture-of-Depths mask: for T > 1 the top `capacity_tokens(capacity, T)` scores (ties to the
/// earlier token), for T = 1 `score > threshold` (always chosen without one).
///
/// The top-k set needs no sort and no scratch memory: scores map to 32-bit keys whose unsigned order
/// is the ranking ([`rank_key`]); the k-th largest key K is found bit by bit (32 counting passes),
/// then every key above K is chosen and keys equal to K fill the rest in token order.
pub fn mod_select<'ctx>(cx: &KernelCx<'ctx>, name: &str, capacity: f64, threshold: Option<f64>) -> Result<()> {
    if !(capacity > 0.0 && capacity <= 1.0) {
        return Err(llvm_err(format!("{name}: mod_select capacity {capacity} must be in (0, 1]")));
    }
    let int = Int { cx };
    let k = cx.begin_kernel(name);
    let t = cx.dim(&k, 0)?;
    let (scores, out) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?);
    let zero = cx.c64(0);
    let key = |i: IntValue<'ctx>| rank_key(cx, cx.load_f32(scores, i)?);
    // Tokens whose key satisfies `pred` against `bound`.
    let count = |pred: IntPredicate, bound: IntValue<'ctx>| -> Result<IntValue<'ctx>> {
        let n = cx.for_range_acc(zero, t, 1, &[zero.into()], |i, acc| {
            let hit = cx.icmp(pred, key(i)?, bound)?;
            Ok(vec![int.add(acc[0].into_int_value(), int.count(hit)?)?.into()])
        })?;
        Ok(n[0].into_int_value())
    };
    single_task(cx, &k, || {
        let single = cx.icmp(IntPredicate::EQ, t, cx.c64(1))?;
        cx.if_then(single, || {
            let chosen = match threshold {
                None => cx.context.bool_type().const_all_ones(),
                Some(th) => {
                    let s = cx
                        .builder
                        .build_float_ext(cx.load_f32(scores, zero)?, cx.context.f64_type(), "s")
                        .map_err(llvm_err)?;
                    let th = cx.context.f64_type().const_float(th);
                    cx.builder.build_float_compare(FloatPredicate::OGT, s, th, "pick").map_err(llvm_err)?
                }
            };
            cx.store_f32(out, zero, one_or_zero(cx, chosen)?)
        })?;
        cx.if_then(int.not(single)?, || {
            let want = capacity_tokens(cx, capacity, t)?;
            // Largest K with at least `want` keys ≥ K: the want-th largest key.
            let bits = cx.for_range_acc(zero, cx.c64(32), 1, &[cx.i32().const_zero().into()], |bit, acc| {
                let kth = acc[0].into_int_value();
                let shift = int.sub(cx.c64(31), bit)?;
                let shift = cx.builder.build_int_truncate(shift, cx.i32(), "sh").map_err(llvm_err)?;
                let one = cx.builder.build_left_shift(cx.i32().const_int(1, false), shift, "b").map_err(llvm_err)?;
                let candidate = int.or(kth, one)?;
                let enough = cx.icmp(IntPredicate::SGE, count(IntPredicate::UGE, candidate)?, want)?;
                Ok(vec![int.select(enough, candidate, kth)?.into()])
            })?;
            let kth = bits[0].into_int_value();
            let ties = int.sub(want, count(IntPredicate::UGT, kth)?)?;
            cx.for_range_acc(zero, t, 1, &[zero.into()], |i, acc| {
                let taken = acc[0].into_int_value();
                let kv = key(i)?;
                let above = cx.icmp(IntPredicate::UGT, kv, kth)?;
                let tie = int.and(cx.icmp(IntPredicate::EQ, kv, kth)?, cx.icmp(IntPredicate::SLT, taken, ties)?)?;
                cx.store_f32(out, i, one_or_zero(cx, int.or(above, tie)?)?)?;
                Ok(vec![int.add(taken, int.count(tie)?)?.into()])
            })?;
            Ok(())
        })
    })?;
    cx.finish()
}

/// `((capacity·T − 1e-9).ceil().max(0) as usize).min(T)`, exactly the interpreter's
/// `rows::capacity_tokens` (f64 multiply and subtract, not fused).
fn capacity_tokens<'ctx>(cx: &KernelCx<'ctx>, capacity: f64, t: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
    let b = &cx.builder;
    let f64t = cx.context.f64_type();
    let tf = b.build_signed_int_to_float(t, f64t, "t").map_err(llvm_err)?;
    let scaled = b.build_float_mul(f64t.const_float(capacity), tf, "ct").map_err(llvm_err)?;
    let slack = b.build_float_sub(scaled, f64t.const_float(1e-9), "ct").map_err(llvm_err)?;
    let up = cx.intrinsic("llvm.ceil", &[f64t.into()], &[slack.into()])?.into_float_value();
    let neg = b.build_float_compare(FloatPredicate::OLT, up, f64t.const_zero(), "neg").map_err(llvm_err)?;
    let up = b.build_select(neg, f64t.const_zero(), up, "c").map_err(llvm_err)?.into_float_value();
    let n = b.build_float_to_signed_int(up, cx.i64(), "n").map_err(llvm_err)?;
    let over = cx.icmp(IntPredicate::SGT, n, t)?;
    Int { cx }.select(over, t, n)
}

/// A 32-bit key whose unsigned order is the ranking order of f32 scores: NaN highest, then +inf
/// down to −inf, with −0 and +0 equal (the standard sign-flip trick on the bits).
fn rank_key<'ctx>(cx: &KernelCx<'ctx>, x: FloatValue<'ctx>) -> Result<IntValue<'ctx>> {
    let int = Int { cx };
    let b = &cx.builder;
    let i32t = cx.i32();
    let is_zero = cx.fcmp(FloatPredicate::OEQ, x, cx.cf(0.0))?;
    let bits = b.build_bit_cast(x, i32t, "bits").map_err(llvm_err)?.into_int_value();
    let bits = int.select(is_zero, i32t.const_zero(), bits)?;
    let negative = cx.icmp(IntPredicate::SLT, bits, i32t.const_zero())?;
    let flipped = int.select(negative, int.not(bits)?, int.or(bits, i32t.const_int(0x8000_0000, false))?)?;
    int.select(cx.fcmp(FloatPredicate::UNO, x, x)?, i32t.const_all_ones(), flipped)
}

/// 1.0 where `flag`, else 0.0.
fn one_or_zero<'ctx>(cx: &KernelCx<'ctx>, flag: IntValue<'ctx>) -> Result<FloatValue<'ctx>> {
    Ok(cx.builder.build_select(flag, cx.cf(1.0), cx.cf(0.0), "m").map_err(llvm_err)?.into_float_value())
}

//! rope and attention.

use super::matmul::dot;
use super::norm::softmax_in_place;
use super::par_chunks;
use crate::interp::cache::KvCache;
use crate::interp::tensor::Tensor;
use crate::op::rope::RopeSpec;

/// `x[T, H, D]` → its (T, H, D), checking the rank.
fn thd(x: &Tensor, what: &str) -> Result<(usize, usize, usize), String> {
    match x.shape[..] {
        [t, h, d] => Ok((t, h, d)),
        _ => Err(format!("{what} must be [T, heads, head_dim], found shape {:?}", x.shape)),
    }
}

fn positions(pos: &Tensor, t: usize) -> Result<&[i64], String> {
    let p = pos.ints("positions")?;
    if pos.shape != [t] {
        return Err(format!("positions have shape {:?}, expected [{t}]", pos.shape));
    }
    Ok(p)
}

/// Rotates every head of `x[T, H, D]` (row-major data) at its token's position; only the first
/// `spec.rotary_dim(D)` dims of each head turn (partial rotary).
fn rotate(spec: &RopeSpec, x: &mut [f32], (heads, d): (usize, usize), pos: &[i64]) -> Result<(), String> {
    let rd = spec.rotary_dim(d);
    if rd == 0 || rd % 2 == 1 || rd > d {
        return Err(format!("rotary dim {rd} must be even, positive and at most the head dim {d}"));
    }
    let inv = spec.inv_freqs(d);
    for (t, &p) in pos.iter().enumerate() {
        for h in 0..heads {
            let at = (t * heads + h) * d;
            spec.apply(&mut x[at..at + d], p, &inv);
        }
    }
    Ok(())
}

/// The `rope` op: `x[T, H, D]` at `positions[T]`.
pub fn rope(x: &Tensor, pos: &Tensor, spec: &RopeSpec) -> Result<Tensor, String> {
    let (t, h, d) = thd(x, "x")?;
    let p = positions(pos, t)?;
    let mut out = x.floats("x")?.to_vec();
    rotate(spec, &mut out, (h, d), p)?;
    Ok(Tensor::f32(&x.shape, out))
}

/// The attributes of an `attention` node.
#[derive(Clone, Debug, Default)]
pub struct AttentionAttrs {
    pub causal: bool,
    pub window: Option<i64>,
    /// Default 1/√D.
    pub scale: Option<f64>,
    pub softcap: Option<f64>,
    pub cache: Option<usize>,
    pub rope: Option<RopeSpec>,
}

/// Scaled dot-product attention of `q[T, Hq, D]` over `k[T, Hkv, D]`, `v[T, Hkv, Dv]` at
/// `positions[T]` (query head h reads kv head h / (Hq/Hkv)).
///
/// With `cache = s`, this call's keys (after fused RoPE), values and positions are appended to slot
/// s and the queries attend over everything in the slot; without it, over this call's keys only.
/// Key j is visible to query i iff `(!causal || pos_k[j] <= pos_q[i])` and
/// `(no window || pos_q[i] - pos_k[j] < window)`. Scores are `q·k · scale`, then
/// `c · tanh(score / c)` with a soft-cap c, then masked and softmaxed (in f64). A query that sees
/// no key gets zeros.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pos: &Tensor,
    a: &AttentionAttrs,
    cache: &mut KvCache,
) -> Result<Tensor, String> {
    let (t, hq, d) = thd(q, "q")?;
    let (tk, hkv, dk) = thd(k, "k")?;
    let (tv, hv, dv) = thd(v, "v")?;
    if tk != t || tv != t || hv != hkv || dk != d {
        return Err(format!("q {:?}, k {:?} and v {:?} do not fit together", q.shape, k.shape, v.shape));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(format!("query heads ({hq}) must be a multiple of key/value heads ({hkv})"));
    }
    let qpos = positions(pos, t)?;
    let mut qv = q.floats("q")?.to_vec();
    let mut kv = k.floats("k")?.to_vec();
    let vv = v.floats("v")?;
    if let Some(spec) = &a.rope {
        rotate(spec, &mut qv, (hq, d), qpos)?;
        rotate(spec, &mut kv, (hkv, d), qpos)?;
    }
    let (keys, values, kpos): (&[f32], &[f32], &[i64]) = match a.cache {
        Some(slot) => {
            let s = cache.append(slot, (hkv, d, dv), &kv, vv, qpos)?;
            (s.keys(), s.values(), s.positions())
        }
        None => (&kv, vv, qpos),
    };
    let out = attend((&qv, qpos), (keys, values, kpos), (hq, hkv, d, dv), a);
    Ok(Tensor::f32(&[t, hq, dv], out))
}

/// The attention proper: queries `q[Tq, Hq, D]` at `qpos` over keys `[n, Hkv, D]` and values
/// `[n, Hkv, Dv]` at `kpos` (all row-major), with the mask, scale and soft-cap of `a` (its `cache`
/// and `rope` are not looked at). Returns `[Tq, Hq, Dv]`. Hq must be a positive multiple of Hkv and
/// the slices must have the sizes those dims give (it panics otherwise).
pub fn attend(
    (qv, qpos): (&[f32], &[i64]),
    (keys, values, kpos): (&[f32], &[f32], &[i64]),
    (hq, hkv, d, dv): (usize, usize, usize, usize),
    a: &AttentionAttrs,
) -> Vec<f32> {
    let n = kpos.len();
    let scale = a.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let group = hq / hkv;
    let mut out = vec![0f32; qpos.len() * hq * dv];
    par_chunks(&mut out, dv.max(1), n * (d + dv), |row, o| {
        let (i, h) = (row / hq, row % hq);
        let g = h / group;
        let qrow = &qv[(i * hq + h) * d..(i * hq + h + 1) * d];
        let visible = |j: usize| {
            let in_window = match a.window {
                Some(w) => qpos[i].saturating_sub(kpos[j]) < w,
                None => true,
            };
            (!a.causal || kpos[j] <= qpos[i]) && in_window
        };
        let js: Vec<usize> = (0..n).filter(|&j| visible(j)).collect();
        if js.is_empty() {
            o.fill(0.0);
            return;
        }
        let mut p: Vec<f64> = js
            .iter()
            .map(|&j| {
                let s = dot(qrow, &keys[(j * hkv + g) * d..(j * hkv + g + 1) * d]) * scale;
                a.softcap.map_or(s, |c| c * (s / c).tanh())
            })
            .collect();
        softmax_in_place(&mut p);
        let mut acc = vec![0f64; dv];
        for (&j, &pj) in js.iter().zip(&p) {
            let vrow = &values[(j * hkv + g) * dv..(j * hkv + g + 1) * dv];
            for (a, &x) in acc.iter_mut().zip(vrow) {
                *a += pj * x as f64;
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = a as f32;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_that_sees_no_key_gets_zeros() {
        // Keys only from the future of a causal query: nothing is visible.
        let a = AttentionAttrs { causal: true, ..Default::default() };
        let out = attend((&[1.0, 0.0], &[3]), (&[1.0, 1.0, 0.5, 0.5], &[2.0, 3.0], &[4, 5]), (1, 1, 2, 1), &a);
        assert_eq!(out, vec![0.0]);
        // Out of the window too.
        let a = AttentionAttrs { window: Some(2), ..Default::default() };
        let out = attend((&[1.0, 0.0], &[9]), (&[1.0, 1.0, 0.5, 0.5], &[2.0, 3.0], &[4, 7]), (1, 1, 2, 1), &a);
        assert_eq!(out, vec![0.0]);
        let out = attend((&[0.0, 0.0], &[9]), (&[1.0, 1.0, 0.5, 0.5], &[2.0, 3.0], &[4, 8]), (1, 1, 2, 1), &a);
        assert_eq!(out, vec![3.0]);
    }
}

//! Ops that move elements without computing: reshape, permute, concat, split, slice.

use super::norm::split_at_axis;
use super::same_kind;
use crate::interp::tensor::{numel, Tensor, TensorData};

pub fn reshape(x: &Tensor, shape: Vec<usize>) -> Result<Tensor, String> {
    if numel(&shape) != x.numel() {
        return Err(format!("cannot reshape {:?} ({} elements) to {shape:?}", x.shape, x.numel()));
    }
    Ok(Tensor { shape, data: x.data.clone() })
}

/// Result axis i is input axis `perm[i]`.
pub fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor, String> {
    let r = x.rank();
    let mut seen = vec![false; r];
    if perm.len() != r || !perm.iter().all(|&p| p < r && !std::mem::replace(&mut seen[p], true)) {
        return Err(format!("perm {perm:?} is not a permutation of the {r} axes of {:?}", x.shape));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let mut in_strides = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * x.shape[i + 1];
    }
    // Stride in the input of each output axis; walk the output in order.
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let n = x.numel();
    let mut src = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    let mut at = 0usize;
    for _ in 0..n {
        src.push(at);
        for d in (0..r).rev() {
            idx[d] += 1;
            at += strides[d];
            if idx[d] < out_shape[d] {
                break;
            }
            at -= strides[d] * out_shape[d];
            idx[d] = 0;
        }
    }
    let data = same_kind!(&x.data, |v| src.iter().map(|&i| v[i]).collect());
    Ok(Tensor { shape: out_shape, data })
}

fn take_range<T: Copy>(v: &[T], shape: &[usize], axis: usize, start: usize, end: usize) -> Vec<T> {
    let (outer, n, inner) = split_at_axis(shape, axis);
    let mut out = Vec::with_capacity(outer * (end - start) * inner);
    for o in 0..outer {
        out.extend_from_slice(&v[(o * n + start) * inner..(o * n + end) * inner]);
    }
    out
}

/// `x[start:end]` along `axis`; bounds already resolved, `start ≤ end ≤ dim`.
pub fn slice_range(x: &Tensor, axis: usize, start: usize, end: usize) -> Tensor {
    let mut shape = x.shape.clone();
    shape[axis] = end - start;
    let data = same_kind!(&x.data, |v| take_range(v, &x.shape, axis, start, end));
    Tensor { shape, data }
}

/// The `slice` op: negative bounds count from the end of the dim, no end means the end.
pub fn slice(x: &Tensor, axis: usize, start: i64, end: Option<i64>) -> Result<Tensor, String> {
    let d = x.shape[axis] as i64;
    let resolve = |b: i64| if b < 0 { b + d } else { b };
    let (s, e) = (resolve(start), end.map_or(d, resolve));
    if s < 0 || e > d || s > e {
        let shown = end.map_or(String::new(), |e| e.to_string());
        return Err(format!("slice [{start}:{shown}] along axis {axis} is out of range for shape {:?}", x.shape));
    }
    Ok(slice_range(x, axis, s as usize, e as usize))
}

/// Chunk `index` of x cut along `axis` into pieces of `sizes`.
pub fn split(x: &Tensor, axis: usize, sizes: &[i64], index: i64) -> Result<Tensor, String> {
    let total: i64 = sizes.iter().sum();
    if sizes.iter().any(|&s| s < 0) || total != x.shape[axis] as i64 {
        return Err(format!("sizes {sizes:?} do not add up to dim {axis} of {:?}", x.shape));
    }
    let i = usize::try_from(index)
        .ok()
        .filter(|&i| i < sizes.len())
        .ok_or_else(|| format!("index {index} is out of range for {} chunks", sizes.len()))?;
    let start: i64 = sizes[..i].iter().sum();
    Ok(slice_range(x, axis, start as usize, (start + sizes[i]) as usize))
}

pub fn concat(xs: &[&Tensor], axis: usize) -> Result<Tensor, String> {
    let first = xs.first().ok_or("concat of nothing")?;
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for (i, t) in xs.iter().enumerate() {
        let same_rest = t.rank() == first.rank()
            && (0..t.rank()).all(|d| d == axis || t.shape[d] == first.shape[d])
            && t.is_float() == first.is_float();
        if !same_rest {
            return Err(format!("operand {i} has shape {:?}, but operand 0 has {:?}", t.shape, first.shape));
        }
        shape[axis] += t.shape[axis];
    }
    let (outer, _, inner) = split_at_axis(&first.shape, axis);
    let mut data = same_kind!(&first.data, |_v| Vec::with_capacity(numel(&shape)));
    for o in 0..outer {
        for t in xs {
            let chunk = t.shape[axis] * inner;
            match (&mut data, &t.data) {
                (TensorData::F32(out), TensorData::F32(v)) => out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]),
                (TensorData::I64(out), TensorData::I64(v)) => out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]),
                _ => unreachable!("kinds checked above"),
            }
        }
    }
    Ok(Tensor { shape, data })
}

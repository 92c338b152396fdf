//! Ops that pick elements by index: embedding, top_k, gather.

use super::same_kind;
use crate::interp::tensor::{Tensor, TensorData};
use std::cmp::Ordering;

/// Rows of `table[V, D]` picked by `ids` (any shape): result `ids.shape + [D]`.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor, String> {
    let tv = table.floats("table")?;
    let iv = ids.ints("ids")?;
    if table.rank() != 2 {
        return Err(format!("table must be 2-D, found shape {:?}", table.shape));
    }
    let (vocab, d) = (table.shape[0], table.shape[1]);
    let mut out = Vec::with_capacity(iv.len() * d);
    for &id in iv {
        let row = usize::try_from(id)
            .ok()
            .filter(|&r| r < vocab)
            .ok_or_else(|| format!("token id {id} out of range for vocab {vocab}"))?;
        out.extend_from_slice(&tv[row * d..(row + 1) * d]);
    }
    let mut shape = ids.shape.clone();
    shape.push(d);
    Ok(Tensor::f32(&shape, out))
}

/// Orders floats descending with NaN above everything (as torch.topk does); equal values compare
/// equal, so a stable sort keeps the lower index first.
fn desc(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

/// Indices of the `k` largest values of a row, largest first, ties broken toward the lower index.
pub fn top_k_row(row: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&i, &j| desc(row[i], row[j]));
    idx.truncate(k);
    idx
}

/// Indices (as integers) of the k largest values along the last axis, largest first; ties go to
/// the lower index.
pub fn top_k(x: &Tensor, k: i64) -> Result<Tensor, String> {
    let n = *x.shape.last().ok_or("x must have at least one dim")?;
    let k = usize::try_from(k)
        .ok()
        .filter(|&k| k >= 1 && k <= n)
        .ok_or_else(|| format!("k = {k} must be in 1..={n} for shape {:?}", x.shape))?;
    let mut out = Vec::with_capacity(x.numel() / n * k);
    match &x.data {
        TensorData::F32(v) => {
            for row in v.chunks_exact(n) {
                let row: Vec<f64> = row.iter().map(|&a| a as f64).collect();
                out.extend(top_k_row(&row, k).into_iter().map(|i| i as i64));
            }
        }
        TensorData::I64(v) => {
            for row in v.chunks_exact(n) {
                let mut idx: Vec<usize> = (0..n).collect();
                idx.sort_by(|&i, &j| row[j].cmp(&row[i]));
                out.extend(idx[..k].iter().map(|&i| i as i64));
            }
        }
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().unwrap() = k;
    Ok(Tensor::i64(&shape, out))
}

/// take_along_axis: `result[i] = x[i with coordinate axis replaced by indices[i]]`; result shape is
/// the indices' shape. Indices must be in `0..x.shape[axis]`.
pub fn gather(x: &Tensor, indices: &Tensor, axis: usize) -> Result<Tensor, String> {
    let iv = indices.ints("indices")?;
    let r = x.rank();
    let same_rest = indices.rank() == r && (0..r).all(|d| d == axis || indices.shape[d] == x.shape[d]);
    if !same_rest {
        return Err(format!("indices shape {:?} does not fit x shape {:?} along axis {axis}", indices.shape, x.shape));
    }
    let dim = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let n_idx = indices.shape[axis];
    let mut src = Vec::with_capacity(iv.len());
    for (flat, &ix) in iv.iter().enumerate() {
        let (outer, rest) = (flat / (n_idx * inner), flat % (n_idx * inner));
        let i = rest % inner;
        let j = usize::try_from(ix)
            .ok()
            .filter(|&j| j < dim)
            .ok_or_else(|| format!("index {ix} out of range for dim {axis} of size {dim}"))?;
        src.push((outer * dim + j) * inner + i);
    }
    let data = same_kind!(&x.data, |v| src.iter().map(|&s| v[s]).collect());
    Ok(Tensor { shape: indices.shape.clone(), data })
}

//! Row selection for conditional computation: the ops MoE dispatch and Mixture-of-Depths routing are
//! spelled in (`take`, `scatter_rows`, `nonzero`, `expert_gate`, `mod_select`).

use super::index::top_k_row;
use super::same_kind;
use crate::interp::tensor::{Tensor, TensorData};

fn row_indices(rows: &Tensor, n: usize) -> Result<Vec<usize>, String> {
    rows.ints("rows")?
        .iter()
        .map(|&r| {
            usize::try_from(r).ok().filter(|&r| r < n).ok_or_else(|| format!("row {r} out of range for {n} rows"))
        })
        .collect()
}

fn row_len(x: &Tensor) -> Result<usize, String> {
    let n = *x.shape.first().ok_or("x must have at least one dim")?;
    Ok(x.numel().checked_div(n).unwrap_or_else(|| x.shape[1..].iter().product()))
}

/// `x[rows]` along axis 0.
pub fn take(x: &Tensor, rows: &Tensor) -> Result<Tensor, String> {
    let idx = row_indices(rows, x.shape[0])?;
    let w = row_len(x)?;
    let mut shape = x.shape.clone();
    shape[0] = idx.len();
    let data = same_kind!(&x.data, |v| idx.iter().flat_map(|&r| v[r * w..(r + 1) * w].iter().copied()).collect());
    Ok(Tensor { shape, data })
}

/// `x` with `x[rows[i]] = y[i]` (`add`: `+= y[i]`), applied in order of i.
pub fn scatter_rows(x: &Tensor, rows: &Tensor, y: &Tensor, add: bool) -> Result<Tensor, String> {
    let idx = row_indices(rows, x.shape[0])?;
    let w = row_len(x)?;
    if y.shape.first() != Some(&idx.len()) || y.shape[1..] != x.shape[1..] {
        return Err(format!("y has shape {:?}, expected [{}] + {:?}", y.shape, idx.len(), &x.shape[1..]));
    }
    let mut out = x.clone();
    match (&mut out.data, &y.data) {
        (TensorData::F32(o), TensorData::F32(v)) => {
            for (i, &r) in idx.iter().enumerate() {
                let (dst, src) = (&mut o[r * w..(r + 1) * w], &v[i * w..(i + 1) * w]);
                if add {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                } else {
                    dst.copy_from_slice(src);
                }
            }
        }
        (TensorData::I64(o), TensorData::I64(v)) => {
            for (i, &r) in idx.iter().enumerate() {
                let (dst, src) = (&mut o[r * w..(r + 1) * w], &v[i * w..(i + 1) * w]);
                if add {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d = d.wrapping_add(*s));
                } else {
                    dst.copy_from_slice(src);
                }
            }
        }
        _ => return Err("x and y hold different kinds of data".into()),
    }
    Ok(out)
}

/// Ascending indices of the nonzero entries.
pub fn nonzero(mask: &Tensor) -> Result<Tensor, String> {
    let idx: Vec<i64> = match &mask.data {
        TensorData::F32(v) => (0..v.len()).filter(|&i| v[i] != 0.0).map(|i| i as i64).collect(),
        TensorData::I64(v) => (0..v.len()).filter(|&i| v[i] != 0).map(|i| i as i64).collect(),
    };
    Ok(Tensor::i64(&[idx.len()], idx))
}

/// Each token's gate for `expert`: `Σ_k gates[t,k]·[indices[t,k] = expert]`.
pub fn expert_gate(indices: &Tensor, gates: &Tensor, expert: i64) -> Result<Tensor, String> {
    let (iv, gv) = (indices.ints("indices")?, gates.floats("gates")?);
    let [t, k] = indices.shape[..] else { return Err(format!("indices must be [T, K], found {:?}", indices.shape)) };
    if gates.shape != indices.shape {
        return Err(format!("gates {:?} and indices {:?} differ in shape", gates.shape, indices.shape));
    }
    let out =
        (0..t).map(|ti| (0..k).filter(|&j| iv[ti * k + j] == expert).map(|j| gv[ti * k + j]).sum::<f32>()).collect();
    Ok(Tensor::f32(&[t], out))
}

/// The Mixture-of-Depths choice as a 0/1 mask: the top ⌈capacity·T⌉ scores of a sequence, or for a
/// single token `score > threshold` (always chosen without a threshold).
pub fn mod_select(scores: &Tensor, capacity: f64, threshold: Option<f64>) -> Result<Tensor, String> {
    let s = scores.floats("scores")?;
    if !(capacity > 0.0 && capacity <= 1.0) {
        return Err(format!("capacity {capacity} must be in (0, 1]"));
    }
    let mut mask = vec![0f32; s.len()];
    if s.len() == 1 {
        mask[0] = f32::from(threshold.is_none_or(|th| s[0] as f64 > th));
    } else {
        let k = capacity_tokens(capacity, s.len());
        let row: Vec<f64> = s.iter().map(|&x| x as f64).collect();
        for i in top_k_row(&row, k) {
            mask[i] = 1.0;
        }
    }
    Ok(Tensor::f32(&[s.len()], mask))
}

/// ⌈capacity·T⌉ with a little slack for capacities like 0.3 that are not exact in binary.
pub fn capacity_tokens(capacity: f64, t: usize) -> usize {
    ((capacity * t as f64 - 1e-9).ceil().max(0.0) as usize).min(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_scatter_round_trip() {
        let x = Tensor::f32(&[3, 2], vec![1., 2., 3., 4., 5., 6.]);
        let rows = Tensor::i64(&[2], vec![2, 0]);
        let t = take(&x, &rows).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[5., 6., 1., 2.]);
        let y = Tensor::f32(&[2, 2], vec![10., 20., 30., 40.]);
        let set = scatter_rows(&x, &rows, &y, false).unwrap();
        assert_eq!(set.as_f32().unwrap(), &[30., 40., 3., 4., 10., 20.]);
        let add = scatter_rows(&x, &rows, &y, true).unwrap();
        assert_eq!(add.as_f32().unwrap(), &[31., 42., 3., 4., 15., 26.]);
        assert!(take(&x, &Tensor::i64(&[1], vec![3])).unwrap_err().contains("row 3 out of range"));
    }

    #[test]
    fn selection() {
        let m = Tensor::f32(&[4], vec![0., 0.5, 0., 2.]);
        assert_eq!(nonzero(&m).unwrap().as_i64().unwrap(), &[1, 3]);
        let idx = Tensor::i64(&[2, 2], vec![1, 0, 2, 1]);
        let g = Tensor::f32(&[2, 2], vec![0.7, 0.3, 0.6, 0.4]);
        assert_eq!(expert_gate(&idx, &g, 1).unwrap().as_f32().unwrap(), &[0.7, 0.4]);
        assert_eq!(expert_gate(&idx, &g, 3).unwrap().as_f32().unwrap(), &[0., 0.]);
        let s = Tensor::f32(&[4], vec![0.1, 0.9, 0.5, 0.9]);
        assert_eq!(mod_select(&s, 0.5, None).unwrap().as_f32().unwrap(), &[0., 1., 0., 1.]);
        assert_eq!(mod_select(&s, 0.6, None).unwrap().as_f32().unwrap(), &[0., 1., 1., 1.]);
        let one = Tensor::f32(&[1], vec![0.2]);
        assert_eq!(mod_select(&one, 0.5, Some(0.3)).unwrap().as_f32().unwrap(), &[0.]);
        assert_eq!(mod_select(&one, 0.5, Some(0.1)).unwrap().as_f32().unwrap(), &[1.]);
        assert_eq!(capacity_tokens(0.3, 10), 3);
        assert_eq!(capacity_tokens(1.0, 7), 7);
    }
}

//! reduce_sum, reduce_mean, reduce_max over a set of axes. Float sums accumulate in f64. On integers
//! the mean is the sum divided by the count, truncated toward zero.

use super::elementwise::broadcast_strides;
use crate::dtype::DType;
use crate::interp::tensor::{numel, wrap_int, Tensor, TensorData};
use crate::op::OpKind;

/// `axes` are resolved (non-negative, distinct).
pub fn reduce(op: OpKind, x: &Tensor, axes: &[usize], keepdim: bool, dtype: DType) -> Result<Tensor, String> {
    let kept: Vec<usize> = x.shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let out_shape: Vec<usize> = if keepdim {
        kept.clone()
    } else {
        x.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
    };
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    if count == 0 && op == OpKind::ReduceMax {
        return Err(format!("reduce_max over an empty axis of shape {:?}", x.shape));
    }
    // Output offset of every input element, walking the input in order.
    let strides = broadcast_strides(&kept, &x.shape);
    let mut offsets = Vec::with_capacity(x.numel());
    let mut idx = vec![0usize; x.rank()];
    let mut at = 0usize;
    for _ in 0..x.numel() {
        offsets.push(at);
        for d in (0..x.rank()).rev() {
            idx[d] += 1;
            at += strides[d];
            if idx[d] < x.shape[d] {
                break;
            }
            at -= strides[d] * x.shape[d];
            idx[d] = 0;
        }
    }
    let n_out = numel(&kept);
    let data = match &x.data {
        TensorData::F32(v) => {
            let init = if op == OpKind::ReduceMax { f64::NEG_INFINITY } else { 0.0 };
            let mut acc = vec![init; n_out];
            for (&a, &o) in v.iter().zip(&offsets) {
                let a = a as f64;
                acc[o] = match op {
                    // NaN propagates through max.
                    OpKind::ReduceMax if a.is_nan() || acc[o].is_nan() => f64::NAN,
                    OpKind::ReduceMax => acc[o].max(a),
                    _ => acc[o] + a,
                };
            }
            if op == OpKind::ReduceMean {
                acc.iter_mut().for_each(|s| *s /= count as f64);
            }
            TensorData::F32(acc.into_iter().map(|s| s as f32).collect())
        }
        TensorData::I64(v) => {
            let init = if op == OpKind::ReduceMax { i64::MIN } else { 0 };
            let mut acc = vec![init; n_out];
            for (&a, &o) in v.iter().zip(&offsets) {
                acc[o] = if op == OpKind::ReduceMax { acc[o].max(a) } else { acc[o].wrapping_add(a) };
            }
            if op == OpKind::ReduceMean {
                if count == 0 {
                    return Err("integer reduce_mean over an empty axis".into());
                }
                acc.iter_mut().for_each(|s| *s /= count as i64);
            }
            TensorData::I64(acc.into_iter().map(|s| wrap_int(s, dtype)).collect())
        }
    };
    Ok(Tensor { shape: out_shape, data })
}

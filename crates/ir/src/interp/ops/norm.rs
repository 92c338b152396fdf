//! softmax, rms_norm, layer_norm; statistics accumulate in f64.

use crate::interp::tensor::Tensor;

/// Splits a shape at `axis` into (outer, len, inner) element counts.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// Numerically stable softmax of a vector, in place: `exp(x - max) / Σ`. A vector that is all -inf
/// becomes NaN (as in numpy); an empty one stays empty.
pub fn softmax_in_place(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// Softmax along `axis` (already resolved).
pub fn softmax(x: &Tensor, axis: usize) -> Result<Tensor, String> {
    let v = x.floats("x")?;
    let (outer, n, inner) = split_at_axis(&x.shape, axis);
    let mut out = vec![0f32; v.len()];
    let mut row = vec![0f64; n];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            for (j, r) in row.iter_mut().enumerate() {
                *r = v[at(j)] as f64;
            }
            softmax_in_place(&mut row);
            for (j, r) in row.iter().enumerate() {
                out[at(j)] = *r as f32;
            }
        }
    }
    Ok(Tensor::f32(&x.shape, out))
}

fn last_dim(x: &Tensor) -> Result<usize, String> {
    x.shape.last().copied().ok_or_else(|| "x must have at least one dim".to_string())
}

fn check_vec<'a>(w: Option<&'a Tensor>, d: usize, what: &str) -> Result<Option<&'a [f32]>, String> {
    match w {
        None => Ok(None),
        Some(w) if w.shape != [d] => Err(format!("{what} has shape {:?}, expected [{d}]", w.shape)),
        Some(w) => w.floats(what).map(Some),
    }
}

/// `x / sqrt(mean(x², last axis) + eps) · w`.
pub fn rms_norm(x: &Tensor, w: Option<&Tensor>, eps: f64) -> Result<Tensor, String> {
    let v = x.floats("x")?;
    let d = last_dim(x)?;
    let w = check_vec(w, d, "weight")?;
    let mut out = vec![0f32; v.len()];
    if d > 0 {
        for (row, o) in v.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let ms = row.iter().map(|&a| (a as f64) * (a as f64)).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + eps).sqrt();
            for j in 0..d {
                let scale = w.map_or(1.0, |w| w[j] as f64);
                o[j] = (row[j] as f64 * inv * scale) as f32;
            }
        }
    }
    Ok(Tensor::f32(&x.shape, out))
}

/// `(x - mean) / sqrt(var + eps) · w + b` over the last axis, with the biased variance.
pub fn layer_norm(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Tensor, String> {
    let v = x.floats("x")?;
    let d = last_dim(x)?;
    let w = check_vec(w, d, "weight")?;
    let b = check_vec(b, d, "bias")?;
    let mut out = vec![0f32; v.len()];
    if d > 0 {
        for (row, o) in v.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let mean = row.iter().map(|&a| a as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let inv = 1.0 / (var + eps).sqrt();
            for j in 0..d {
                let y = (row[j] as f64 - mean) * inv * w.map_or(1.0, |w| w[j] as f64) + b.map_or(0.0, |b| b[j] as f64);
                o[j] = y as f32;
            }
        }
    }
    Ok(Tensor::f32(&x.shape, out))
}

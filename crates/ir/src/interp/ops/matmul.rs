//! matmul: every output element is one dot product of an lhs row with a weight row (`[N, K]`
//! layout), accumulated in f64 and rounded once. Large products split their output elements over
//! threads; each element is computed the same way whatever the split, so results do not depend on
//! the thread count or on how many rows are computed at once.

use super::elementwise::{broadcast_shapes, broadcast_strides};
use super::par_chunks;
use crate::interp::tensor::{numel, Tensor};
use std::borrow::Cow;

/// `Σ a[i]·b[i]` in f64, over eight interleaved partial sums (so the loop vectorizes).
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x as f64 * y as f64).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] as f64 * y[i] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `out[m, n] = Σ_k a[m, k] · b[n, k] + bias[n]` for `a: [M, K]`, `b: [N, K]`, into `out: [M, N]`.
///
/// Works column by column (one weight row against every lhs row, so the weight row is read once
/// per call) into a transposed buffer, then transposes.
pub fn matmul_nt_into(a: &[f32], b: &[f32], bias: Option<&[f32]>, k: usize, n: usize, out: &mut [f32]) {
    let m = out.len().checked_div(n).unwrap_or(0);
    if m == 1 {
        // One row: out is already the single column-major chunk.
        return column_major(a, b, bias, k, 1, out);
    }
    let mut cols = vec![0f32; m * n];
    column_major(a, b, bias, k, m, &mut cols);
    for (col, c) in cols.chunks_exact(m.max(1)).enumerate() {
        for (row, &v) in c.iter().enumerate() {
            out[row * n + col] = v;
        }
    }
}

/// `cols[n][m] = a[m] · b[n] + bias[n]`, columns spread over threads.
fn column_major(a: &[f32], b: &[f32], bias: Option<&[f32]>, k: usize, m: usize, cols: &mut [f32]) {
    par_chunks(cols, m, m * k, |col, c| {
        let w = &b[col * k..(col + 1) * k];
        let add = bias.map_or(0.0, |b| b[col] as f64);
        for (row, o) in c.iter_mut().enumerate() {
            *o = (dot(&a[row * k..(row + 1) * k], w) + add) as f32;
        }
    });
}

/// `[R, C]` → `[C, R]`.
fn transpose2(v: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    out
}

/// The `matmul` op: with a 2-D rhs, `a[..., K] · b → [..., N]`; with a rank ≥ 3 rhs, batched over
/// the broadcast leading dims of `a[..., M, K]` and `b[..., K, N]`. `transpose_b` means b's last
/// two dims are `[N, K]`. Plus an optional `bias[N]`.
pub fn matmul(a: &Tensor, b: &Tensor, bias: Option<&Tensor>, transpose_b: bool) -> Result<Tensor, String> {
    let (av, bv) = (a.floats("lhs")?, b.floats("rhs")?);
    let (ra, rb) = (a.rank(), b.rank());
    if ra < 1 || rb < 2 {
        return Err(format!("matmul needs lhs rank ≥ 1 and rhs rank ≥ 2, found {:?} and {:?}", a.shape, b.shape));
    }
    let (r0, r1) = (b.shape[rb - 2], b.shape[rb - 1]);
    let (kb, n) = if transpose_b { (r1, r0) } else { (r0, r1) };
    let k = a.shape[ra - 1];
    if k != kb {
        return Err(format!(
            "contraction dims differ: lhs {:?}, rhs {:?} (transpose_b = {transpose_b})",
            a.shape, b.shape
        ));
    }
    let bias = match bias {
        Some(t) if t.shape != [n] => return Err(format!("bias has shape {:?}, expected [{n}]", t.shape)),
        Some(t) => Some(t.floats("bias")?),
        None => None,
    };
    // b as [.., N, K] for the kernel.
    let b_nk = |v: &'_ [f32]| -> Vec<f32> { transpose2(v, kb, n) };
    if rb == 2 {
        let m: usize = a.shape[..ra - 1].iter().product();
        let bt: Cow<[f32]> = if transpose_b { Cow::Borrowed(bv) } else { Cow::Owned(b_nk(bv)) };
        let mut out = vec![0f32; m * n];
        matmul_nt_into(av, &bt, bias, k, n, &mut out);
        let mut shape = a.shape.clone();
        shape[ra - 1] = n;
        return Ok(Tensor::f32(&shape, out));
    }
    if ra < 2 {
        return Err(format!("batched matmul needs lhs rank ≥ 2, found {:?}", a.shape));
    }
    let m = a.shape[ra - 2];
    let (batch_a, batch_b) = (&a.shape[..ra - 2], &b.shape[..rb - 2]);
    let batch = broadcast_shapes(batch_a, batch_b).map_err(|e| format!("batch dims: {e}"))?;
    let (sa, sb) = (broadcast_strides(batch_a, &batch), broadcast_strides(batch_b, &batch));
    let nb = numel(&batch);
    let mut out = vec![0f32; nb * m * n];
    let mut idx = vec![0usize; batch.len()];
    let (mut oa, mut ob) = (0usize, 0usize);
    for bi in 0..nb {
        let a_mat = &av[oa * m * k..(oa + 1) * m * k];
        let b_mat = &bv[ob * k * n..(ob + 1) * k * n];
        let bt: Cow<[f32]> = if transpose_b { Cow::Borrowed(b_mat) } else { Cow::Owned(b_nk(b_mat)) };
        matmul_nt_into(a_mat, &bt, bias, k, n, &mut out[bi * m * n..(bi + 1) * m * n]);
        for d in (0..batch.len()).rev() {
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < batch[d] {
                break;
            }
            oa -= sa[d] * batch[d];
            ob -= sb[d] * batch[d];
            idx[d] = 0;
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    Ok(Tensor::f32(&shape, out))
}

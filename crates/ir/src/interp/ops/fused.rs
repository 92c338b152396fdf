//! `fused`: an elementwise expression (see [`crate::op::expr`]) evaluated per element over the
//! operands broadcast to the result shape. Each function is computed as its op is, so the result
//! equals the chain of ops the expression stands for.

use super::elementwise::{broadcast_shapes, broadcast_strides};
use super::par_chunks;
use crate::interp::tensor::{numel, Tensor, TensorData};
use crate::op::expr::Expr;

pub fn fused(src: &str, x: &[&Tensor]) -> Result<Tensor, String> {
    let expr = Expr::parse(src).map_err(|e| format!("bad expression {src:?}: {e}"))?;
    expr.check_operands(x.len()).map_err(|e| format!("bad expression {src:?}: {e}"))?;
    let mut shape: Vec<usize> = Vec::new();
    let mut data: Vec<&[f32]> = Vec::with_capacity(x.len());
    for (i, t) in x.iter().enumerate() {
        shape = broadcast_shapes(&shape, &t.shape)?;
        data.push(t.as_f32().ok_or_else(|| format!("operand {i} holds {} data, expected float", t.data.kind()))?);
    }
    let strides: Vec<Vec<usize>> = x.iter().map(|t| broadcast_strides(&t.shape, &shape)).collect();
    let mut out = vec![0f32; numel(&shape)];
    // One chunk per row of the last axis (the whole tensor for a scalar).
    let (outer, row) = match shape.split_last() {
        Some((&last, outer)) => (outer.to_vec(), last),
        None => (Vec::new(), 1),
    };
    let flops = expr.flops().max(1);
    par_chunks(&mut out, row, row * flops, |r, chunk| {
        // Offsets of row r's first element in each operand.
        let mut base = vec![0usize; x.len()];
        let mut rest = r;
        for d in (0..outer.len()).rev() {
            let i = rest % outer[d];
            rest /= outer[d];
            for (b, s) in base.iter_mut().zip(&strides) {
                *b += i * s[d];
            }
        }
        let last: Vec<usize> = strides.iter().map(|s| s.last().copied().unwrap_or(0)).collect();
        let mut args = vec![0f32; x.len()];
        for (j, o) in chunk.iter_mut().enumerate() {
            for k in 0..x.len() {
                args[k] = data[k][base[k] + j * last[k]];
            }
            *o = expr.eval(&args);
        }
    });
    Ok(Tensor { shape, data: TensorData::F32(out) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_rows_and_scalars() {
        let a = Tensor::f32(&[2, 1, 3], vec![1., 2., 3., 4., 5., 6.]);
        let b = Tensor::f32(&[2, 1], vec![10., 20.]);
        let c = Tensor::scalar_f32(0.5);
        let y = fused("mul(add($0, $1), $2)", &[&a, &b, &c]).unwrap();
        assert_eq!(y.shape, vec![2, 2, 3]);
        assert_eq!(y.as_f32().unwrap(), &[5.5, 6., 6.5, 10.5, 11., 11.5, 7., 7.5, 8., 12., 12.5, 13.]);
        let s = fused("neg($0)", &[&c]).unwrap();
        assert_eq!((s.shape.clone(), s.as_f32().unwrap().to_vec()), (vec![], vec![-0.5]));
        assert!(fused("add($0, $1)", &[&a, &Tensor::f32(&[2], vec![1., 2.])]).unwrap_err().contains("broadcast"));
        assert!(fused("add($0, 1.0)", &[&Tensor::i64(&[1], vec![1])]).unwrap_err().contains("integer"));
    }
}

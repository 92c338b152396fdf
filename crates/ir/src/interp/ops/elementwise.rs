//! Elementwise ops with numpy broadcasting. Float arithmetic is f32 (`+ - * /` are correctly rounded
//! there); transcendental functions are evaluated in f64 and rounded to f32. Integer arithmetic is
//! i64, wrapped to i32 for i32 values.

use super::math;
use crate::dtype::DType;
use crate::interp::tensor::{numel, wrap_int, Tensor, TensorData};
use crate::op::OpKind;

/// Numpy broadcasting, right-aligned: dims must agree or one of them be 1.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = (i + a.len()).checked_sub(r).map_or(1, |j| a[j]);
            let db = (i + b.len()).checked_sub(r).map_or(1, |j| b[j]);
            match (da, db) {
                _ if da == db => Ok(da),
                (1, _) => Ok(db),
                (_, 1) => Ok(da),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast (dim {i}: {da} vs {db})")),
            }
        })
        .collect()
}

/// Row-major strides of `shape` laid against the (broadcast) `out` shape: 0 along broadcast dims.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let offset = out.len() - shape.len();
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        if shape[i] != 1 {
            strides[offset + i] = s;
        }
        s *= shape[i];
    }
    strides
}

/// `f(a[i], b[i])` over the broadcast shape.
pub fn broadcast_map<T: Copy, U>(
    (a, ash): (&[T], &[usize]),
    (b, bsh): (&[T], &[usize]),
    mut f: impl FnMut(T, T) -> U,
) -> Result<(Vec<usize>, Vec<U>), String> {
    let out_shape = broadcast_shapes(ash, bsh)?;
    if ash == bsh {
        return Ok((out_shape, a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()));
    }
    let n = numel(&out_shape);
    let (sa, sb) = (broadcast_strides(ash, &out_shape), broadcast_strides(bsh, &out_shape));
    let mut idx = vec![0usize; out_shape.len()];
    let (mut ia, mut ib) = (0usize, 0usize);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(f(a[ia], b[ib]));
        // Odometer step: bump the last axis, carrying into earlier ones.
        for d in (0..out_shape.len()).rev() {
            idx[d] += 1;
            ia += sa[d];
            ib += sb[d];
            if idx[d] < out_shape[d] {
                break;
            }
            ia -= sa[d] * out_shape[d];
            ib -= sb[d] * out_shape[d];
            idx[d] = 0;
        }
    }
    Ok((out_shape, out))
}

fn nan_or(a: f32, b: f32, pick: impl Fn(f32, f32) -> f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        pick(a, b)
    }
}

/// add, sub, mul, div, maximum, minimum, pow. `maximum`/`minimum` propagate NaN (as numpy does).
/// Integer `div` truncates toward zero; division by zero and negative integer exponents are errors.
pub fn binary(op: OpKind, a: &Tensor, b: &Tensor, dtype: DType) -> Result<Tensor, String> {
    match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            let f: fn(f32, f32) -> f32 = match op {
                OpKind::Add => |a, b| a + b,
                OpKind::Sub => |a, b| a - b,
                OpKind::Mul => |a, b| a * b,
                OpKind::Div => |a, b| a / b,
                OpKind::Maximum => |a, b| nan_or(a, b, f32::max),
                OpKind::Minimum => |a, b| nan_or(a, b, f32::min),
                OpKind::Pow => |a, b| (a as f64).powf(b as f64) as f32,
                _ => return Err(format!("{op} is not a binary op")),
            };
            let (shape, data) = broadcast_map((x, &a.shape), (y, &b.shape), f)?;
            Ok(Tensor { shape, data: TensorData::F32(data) })
        }
        (TensorData::I64(x), TensorData::I64(y)) => {
            let mut err = None;
            let (shape, data) = broadcast_map((x, &a.shape), (y, &b.shape), |a, b| {
                let r = match op {
                    OpKind::Add => Ok(a.wrapping_add(b)),
                    OpKind::Sub => Ok(a.wrapping_sub(b)),
                    OpKind::Mul => Ok(a.wrapping_mul(b)),
                    OpKind::Div if b == 0 => Err(format!("integer division by zero ({a} / 0)")),
                    OpKind::Div => Ok(a.wrapping_div(b)),
                    OpKind::Maximum => Ok(a.max(b)),
                    OpKind::Minimum => Ok(a.min(b)),
                    OpKind::Pow => match u32::try_from(b) {
                        Ok(e) => Ok(a.wrapping_pow(e)),
                        Err(_) => Err(format!("integer power with exponent {b}")),
                    },
                    _ => Err(format!("{op} is not a binary op")),
                };
                match r {
                    Ok(v) => wrap_int(v, dtype),
                    Err(e) => {
                        err.get_or_insert(e);
                        0
                    }
                }
            })?;
            match err {
                Some(e) => Err(e),
                None => Ok(Tensor { shape, data: TensorData::I64(data) }),
            }
        }
        _ => Err(format!("operands hold different kinds of data ({} and {})", a.data.kind(), b.data.kind())),
    }
}

/// The float unary ops, on one value.
pub fn unary_f32(op: OpKind, approx_tanh: bool, x: f32) -> f32 {
    let d = x as f64;
    let r = match op {
        OpKind::Neg => return -x,
        OpKind::Abs => return x.abs(),
        OpKind::Relu => return if x < 0.0 { 0.0 } else { x },
        OpKind::Exp => d.exp(),
        OpKind::Log => d.ln(),
        OpKind::Sqrt => d.sqrt(),
        OpKind::Rsqrt => 1.0 / d.sqrt(),
        OpKind::Recip => 1.0 / d,
        OpKind::Tanh => d.tanh(),
        OpKind::Sigmoid => math::sigmoid(d),
        OpKind::Silu => math::silu(d),
        OpKind::Gelu if approx_tanh => math::gelu_tanh(d),
        OpKind::Gelu => math::gelu_erf(d),
        _ => f64::NAN,
    };
    r as f32
}

/// neg, abs, exp, log, sqrt, rsqrt, recip, tanh, sigmoid, silu, relu, gelu. `approx_tanh` picks
/// gelu's tanh approximation. On integers only neg and abs exist (wrapping for i32).
pub fn unary(op: OpKind, approx_tanh: bool, x: &Tensor, dtype: DType) -> Result<Tensor, String> {
    let data = match &x.data {
        TensorData::F32(v) => TensorData::F32(v.iter().map(|&a| unary_f32(op, approx_tanh, a)).collect()),
        TensorData::I64(v) => match op {
            OpKind::Neg => TensorData::I64(v.iter().map(|&a| wrap_int(a.wrapping_neg(), dtype)).collect()),
            OpKind::Abs => TensorData::I64(v.iter().map(|&a| wrap_int(a.wrapping_abs(), dtype)).collect()),
            _ => return Err(format!("{op} needs a float operand")),
        },
    };
    Ok(Tensor { shape: x.shape.clone(), data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast_shapes(&[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert!(broadcast_shapes(&[2, 3], &[4]).is_err());
        let (s, v) = broadcast_map((&[1, 2, 3][..], &[3, 1][..]), (&[10, 20][..], &[2][..]), |a, b| a + b).unwrap();
        assert_eq!(s, vec![3, 2]);
        assert_eq!(v, vec![11, 21, 12, 22, 13, 23]);
        let (s, v) = broadcast_map((&[5][..], &[][..]), (&[1, 2][..], &[1, 2][..]), |a, b| a * b).unwrap();
        assert_eq!((s, v), (vec![1, 2], vec![5, 10]));
    }
}

//! Concrete tensors: a shape and contiguous row-major data. Floats of every float dtype (f32, f16,
//! bf16, and dequantized weights) are held as `f32`; integers and bools as `i64` (bools as 0/1).
//! The IR type of a value (and so its dtype) is known from the graph, so a tensor does not carry it.

use super::error::InterpError;
use crate::dtype::DType;
use std::fmt;

#[derive(Clone, PartialEq)]
pub enum TensorData {
    /// Values of a float dtype (f32, f16, bf16) or dequantized weights.
    F32(Vec<f32>),
    /// Values of an integer dtype (i32, i64) or bool (0 / 1).
    I64(Vec<i64>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn kind(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "float",
            TensorData::I64(_) => "integer",
        }
    }
}

/// A concrete tensor, row-major. `data.len()` must equal the product of `shape` (an empty shape is
/// a scalar with one element); the interpreter checks this for every tensor handed to it.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Elements in a shape (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// Checks that the data fits the shape.
    pub fn try_new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, InterpError> {
        let t = Tensor { shape, data };
        t.check()?;
        Ok(t)
    }

    /// A float tensor.
    ///
    /// # Panics
    /// When `data.len()` is not the product of `shape` (use [`Tensor::try_new`] to get an error).
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor::try_new(shape.to_vec(), TensorData::F32(data)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An integer (or bool) tensor.
    ///
    /// # Panics
    /// When `data.len()` is not the product of `shape` (use [`Tensor::try_new`] to get an error).
    pub fn i64(shape: &[usize], data: Vec<i64>) -> Tensor {
        Tensor::try_new(shape.to_vec(), TensorData::I64(data)).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn scalar_f32(x: f32) -> Tensor {
        Tensor { shape: Vec::new(), data: TensorData::F32(vec![x]) }
    }

    /// A float tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor { shape: shape.to_vec(), data: TensorData::F32(vec![0.0; numel(shape)]) }
    }

    /// `Err` when the data length does not match the shape.
    pub fn check(&self) -> Result<(), InterpError> {
        let n = numel(&self.shape);
        if self.data.len() != n {
            return Err(InterpError::Tensor(format!(
                "shape {:?} holds {n} elements but the data has {}",
                self.shape,
                self.data.len()
            )));
        }
        Ok(())
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn is_float(&self) -> bool {
        matches!(self.data, TensorData::F32(_))
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// The values as f32, converting integers.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The float data, or a message naming `what` when the tensor holds integers.
    pub(crate) fn floats(&self, what: &str) -> Result<&[f32], String> {
        self.as_f32().ok_or_else(|| format!("{what} must hold floats, found integers"))
    }

    pub(crate) fn ints(&self, what: &str) -> Result<&[i64], String> {
        self.as_i64().ok_or_else(|| format!("{what} must hold integers, found floats"))
    }

    /// Whether the data is of the kind a value of `dtype` is held as.
    pub fn fits_dtype(&self, dtype: DType) -> bool {
        match self.data {
            TensorData::F32(_) => dtype.is_float() || dtype.is_quant(),
            TensorData::I64(_) => dtype.is_int() || dtype == DType::Bool,
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 16;
        write!(f, "Tensor({:?}, ", self.shape)?;
        match &self.data {
            TensorData::F32(v) => {
                write!(f, "f32 {:?}", &v[..v.len().min(SHOW)])?;
                if v.len() > SHOW {
                    write!(f, "... ({} more)", v.len() - SHOW)?;
                }
            }
            TensorData::I64(v) => {
                write!(f, "int {:?}", &v[..v.len().min(SHOW)])?;
                if v.len() > SHOW {
                    write!(f, "... ({} more)", v.len() - SHOW)?;
                }
            }
        }
        f.write_str(")")
    }
}

/// Rounds a float to what a value of `dtype` can hold: f16 and bf16 round through `half` (round to
/// nearest even); f32 and anything else are unchanged.
pub fn round_float(x: f32, dtype: DType) -> f32 {
    match dtype {
        DType::F16 => half::f16::from_f32(x).to_f32(),
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Wraps an integer to what a value of `dtype` holds: i32 wraps around (two's complement), bool is
/// `x != 0`, i64 is unchanged.
pub fn wrap_int(x: i64, dtype: DType) -> i64 {
    match dtype {
        DType::I32 => x as i32 as i64,
        DType::Bool => (x != 0) as i64,
        _ => x,
    }
}

/// `cast` from one dtype to another. Float to float rounds through f16/bf16; float to int truncates
/// toward zero (saturating at the target's range; NaN becomes 0); anything to bool is `x != 0`;
/// int to float converts then rounds to the target float type; int to i32 wraps.
pub fn cast(x: &Tensor, to: DType) -> Result<Tensor, String> {
    let data = match (&x.data, to) {
        (TensorData::F32(v), t) if t.is_float() => TensorData::F32(v.iter().map(|&a| round_float(a, t)).collect()),
        (TensorData::F32(v), DType::I32) => TensorData::I64(v.iter().map(|&a| a as i32 as i64).collect()),
        (TensorData::F32(v), DType::I64) => TensorData::I64(v.iter().map(|&a| a as i64).collect()),
        (TensorData::F32(v), DType::Bool) => TensorData::I64(v.iter().map(|&a| (a != 0.0) as i64).collect()),
        (TensorData::I64(v), t) if t.is_float() => {
            TensorData::F32(v.iter().map(|&a| round_float(a as f32, t)).collect())
        }
        (TensorData::I64(v), t) if t.is_int() || t == DType::Bool => {
            TensorData::I64(v.iter().map(|&a| wrap_int(a, t)).collect())
        }
        (_, t) => return Err(format!("cannot cast to {t}")),
    };
    Ok(Tensor { shape: x.shape.clone(), data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_round_and_truncate() {
        let x = Tensor::f32(&[4], vec![1.0009766, -2.7, 3.9, 0.0]);
        let h = cast(&x, DType::F16).unwrap();
        assert_eq!(h.as_f32().unwrap()[0], 1.0009766);
        // 1 + 2^-10 is an f16 but not a bf16 (8 bits of mantissa): rounds to 1.0.
        let b = cast(&x, DType::BF16).unwrap();
        assert_eq!(b.as_f32().unwrap()[0], 1.0);
        let i = cast(&x, DType::I32).unwrap();
        assert_eq!(i.as_i64().unwrap(), &[1, -2, 3, 0]);
        let z = cast(&x, DType::Bool).unwrap();
        assert_eq!(z.as_i64().unwrap(), &[1, 1, 1, 0]);
        let big = Tensor::i64(&[1], vec![1 << 33]);
        assert_eq!(cast(&big, DType::I32).unwrap().as_i64().unwrap(), &[0]);
        assert!(Tensor::try_new(vec![2, 2], TensorData::F32(vec![1.0])).is_err());
    }
}

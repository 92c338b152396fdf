//! Dimensions, shapes and tensor types. A dimension is a small linear expression over named symbols
//! (`T`, `P`, `P+T`, `2*T`, `576`) so that symbolic sequence lengths stay symbolic through the graph
//! while model dimensions are plain constants.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// `constant + Σ coeff·symbol`, kept normalized: terms sorted by symbol, no zero coefficients.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dim {
    terms: Vec<(String, i64)>,
    constant: i64,
}

impl Dim {
    pub fn c(n: i64) -> Dim {
        Dim { terms: Vec::new(), constant: n }
    }

    pub fn sym(name: &str) -> Dim {
        Dim { terms: vec![(name.to_string(), 1)], constant: 0 }
    }

    fn from_map(map: BTreeMap<String, i64>, constant: i64) -> Dim {
        Dim { terms: map.into_iter().filter(|(_, c)| *c != 0).collect(), constant }
    }

    fn to_map(&self) -> BTreeMap<String, i64> {
        self.terms.iter().cloned().collect()
    }

    pub fn as_const(&self) -> Option<i64> {
        self.terms.is_empty().then_some(self.constant)
    }

    pub fn is_const(&self) -> bool {
        self.terms.is_empty()
    }

    /// The symbols this dimension mentions.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|(s, _)| s.as_str())
    }

    pub fn add(&self, other: &Dim) -> Dim {
        let mut map = self.to_map();
        for (s, c) in &other.terms {
            *map.entry(s.clone()).or_insert(0) += c;
        }
        Dim::from_map(map, self.constant + other.constant)
    }

    /// `self + other`, or `None` when a coefficient or the constant overflows `i64`.
    pub fn checked_add(&self, other: &Dim) -> Option<Dim> {
        let mut map = self.to_map();
        for (s, c) in &other.terms {
            let e = map.entry(s.clone()).or_insert(0);
            *e = e.checked_add(*c)?;
        }
        Some(Dim::from_map(map, self.constant.checked_add(other.constant)?))
    }

    /// `self - other`, or `None` on overflow.
    pub fn checked_sub(&self, other: &Dim) -> Option<Dim> {
        self.checked_add(&other.checked_scale(-1)?)
    }

    /// `k · self`, or `None` on overflow.
    pub fn checked_scale(&self, k: i64) -> Option<Dim> {
        let mut map = BTreeMap::new();
        for (s, c) in &self.terms {
            map.insert(s.clone(), c.checked_mul(k)?);
        }
        Some(Dim::from_map(map, self.constant.checked_mul(k)?))
    }

    pub fn sub(&self, other: &Dim) -> Dim {
        self.add(&other.scale(-1))
    }

    pub fn scale(&self, k: i64) -> Dim {
        Dim::from_map(self.terms.iter().map(|(s, c)| (s.clone(), c * k)).collect(), self.constant * k)
    }

    /// Evaluates the dimension with concrete symbol values.
    pub fn eval(&self, env: &dyn Fn(&str) -> Option<i64>) -> Result<i64, String> {
        let mut v = self.constant;
        for (s, c) in &self.terms {
            let x = env(s).ok_or_else(|| format!("no value bound for symbolic dim '{s}'"))?;
            v += c * x;
        }
        Ok(v)
    }
}

impl From<i64> for Dim {
    fn from(n: i64) -> Dim {
        Dim::c(n)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Dim {
        Dim::sym(s)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return write!(f, "{}", self.constant);
        }
        for (i, (s, c)) in self.terms.iter().enumerate() {
            let (sign, mag) = if *c < 0 { ("-", c.unsigned_abs()) } else { ("+", c.unsigned_abs()) };
            if i > 0 || sign == "-" {
                f.write_str(sign)?;
            }
            if mag != 1 {
                write!(f, "{mag}*")?;
            }
            f.write_str(s)?;
        }
        match self.constant {
            0 => Ok(()),
            k if k > 0 => write!(f, "+{k}"),
            k => write!(f, "{k}"),
        }
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn new(dims: impl IntoIterator<Item = Dim>) -> Shape {
        Shape(dims.into_iter().collect())
    }

    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    pub fn dim(&self, i: usize) -> &Dim {
        &self.0[i]
    }

    pub fn last(&self) -> Option<&Dim> {
        self.0.last()
    }

    /// Resolves a possibly negative axis against this shape's rank.
    pub fn axis(&self, axis: i64) -> Option<usize> {
        let r = self.rank() as i64;
        let a = if axis < 0 { axis + r } else { axis };
        (0..r).contains(&a).then_some(a as usize)
    }

    /// Element count when every dimension is constant.
    pub fn numel(&self) -> Option<i64> {
        self.0.iter().map(|d| d.as_const()).product()
    }

    /// Element count as (product of constant dims, sorted list of symbolic dims). Two shapes hold the
    /// same number of elements for every binding of the symbols when these agree.
    pub fn numel_factors(&self) -> (i64, Vec<Dim>) {
        let mut k = 1;
        let mut syms = Vec::new();
        for d in &self.0 {
            match d.as_const() {
                Some(c) => k *= c,
                None => syms.push(d.clone()),
            }
        }
        syms.sort();
        (k, syms)
    }

    /// [`numel_factors`](Self::numel_factors), or `None` when the constant product overflows `i64`.
    pub fn checked_numel_factors(&self) -> Option<(i64, Vec<Dim>)> {
        let mut k: i64 = 1;
        let mut syms = Vec::new();
        for d in &self.0 {
            match d.as_const() {
                Some(c) => k = k.checked_mul(c)?,
                None => syms.push(d.clone()),
            }
        }
        syms.sort();
        Some((k, syms))
    }

    pub fn eval(&self, env: &dyn Fn(&str) -> Option<i64>) -> Result<Vec<usize>, String> {
        self.0
            .iter()
            .map(|d| {
                let v = d.eval(env)?;
                usize::try_from(v).map_err(|_| format!("dimension {d} evaluates to negative {v}"))
            })
            .collect()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A value's type: element type and shape, printed `f32[T,576]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, dims: impl IntoIterator<Item = Dim>) -> TensorType {
        TensorType { dtype, shape: Shape::new(dims) }
    }

    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    pub fn with_shape(&self, shape: Shape) -> TensorType {
        TensorType { dtype: self.dtype, shape }
    }

    pub fn with_dtype(&self, dtype: DType) -> TensorType {
        TensorType { dtype, shape: self.shape.clone() }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

impl fmt::Debug for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Shorthand for building shapes in code and tests: `shape![T, 576]` needs `Dim` conversions, so
/// callers write `dims(&["T".into(), 576.into()])`; this helper keeps that short.
pub fn dims<const N: usize>(ds: [Dim; N]) -> Shape {
    Shape(ds.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dim_arithmetic_and_display() {
        let t = Dim::sym("T");
        let p = Dim::sym("P");
        assert_eq!(p.add(&t).to_string(), "P+T");
        assert_eq!(t.add(&p).to_string(), "P+T");
        assert_eq!(t.scale(2).add(&Dim::c(1)).to_string(), "2*T+1");
        assert_eq!(t.sub(&Dim::c(1)).to_string(), "T-1");
        assert_eq!(Dim::c(0).sub(&t).to_string(), "-T");
        assert_eq!(t.sub(&t), Dim::c(0));
        assert_eq!(p.add(&t).eval(&|s| if s == "P" { Some(3) } else { Some(4) }).unwrap(), 7);
    }

    #[test]
    fn numel_factors_match_for_reshapes() {
        let a = dims([Dim::sym("T"), Dim::c(9), Dim::c(64)]);
        let b = dims([Dim::sym("T"), Dim::c(576)]);
        assert_eq!(a.numel_factors(), b.numel_factors());
        assert_eq!(TensorType { dtype: DType::F32, shape: b }.to_string(), "f32[T,576]");
    }
}

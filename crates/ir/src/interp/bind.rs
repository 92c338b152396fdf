//! Binding symbolic dims (`T`, `P`, `P+T`) to numbers from the shapes of the input tensors.

use super::error::InterpError;
use crate::shape::{Dim, Shape};
use std::collections::BTreeMap;

/// The value of each symbol for one run, and where it was read from (for messages).
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    vals: BTreeMap<String, (i64, String)>,
}

impl Bindings {
    pub fn get(&self, sym: &str) -> Option<i64> {
        self.vals.get(sym).map(|(v, _)| *v)
    }

    /// Symbol values, by name.
    pub fn values(&self) -> impl Iterator<Item = (&str, i64)> {
        self.vals.iter().map(|(s, (v, _))| (s.as_str(), *v))
    }

    /// Binds a data-dependent dim (the count a `nonzero` produced) for the rest of the run.
    pub fn bind_dynamic(&mut self, sym: &str, n: usize, from: &str) -> Result<(), String> {
        if let Some((_, prev)) = self.vals.get(sym) {
            return Err(format!(
                "dim '{sym}' is already bound (from {prev}); a data-dependent dim needs a name of its own"
            ));
        }
        self.vals.insert(sym.to_string(), (n as i64, from.to_string()));
        Ok(())
    }

    pub fn eval_dim(&self, d: &Dim) -> Result<i64, String> {
        d.eval(&|s| self.get(s)).map_err(|e| format!("{e} (no input's shape mentions it)"))
    }

    pub fn eval_shape(&self, shape: &Shape) -> Result<Vec<usize>, String> {
        shape.eval(&|s| self.get(s)).map_err(|e| format!("{e} (no input's shape mentions it)"))
    }

    /// `T = 4 (from input 'tokens' dim 0)` for each symbol of `d`.
    fn explain(&self, d: &Dim) -> String {
        d.symbols()
            .filter_map(|s| self.vals.get(s).map(|(v, from)| format!("{s} = {v} from {from}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Binds every symbol in the inputs' declared shapes from their concrete shapes: each input is given
/// as (name, declared shape, concrete shape). Dims with one unknown symbol are solved (so `P+T`
/// binds P once T is known), repeating until nothing changes; then every dim must evaluate to the
/// concrete size. Errors name the input and the dim.
pub fn bind(inputs: &[(&str, &Shape, &[usize])]) -> Result<Bindings, InterpError> {
    let mut b = Bindings::default();
    let mut pending: Vec<(&str, usize, &Dim, i64)> = Vec::new();
    for &(name, declared, actual) in inputs {
        if declared.rank() != actual.len() {
            return Err(InterpError::input(
                name,
                format!("declared shape {declared} but got a tensor of shape {actual:?}"),
            ));
        }
        for (i, (d, &n)) in declared.dims().iter().zip(actual).enumerate() {
            pending.push((name, i, d, n as i64));
        }
    }
    loop {
        let mut progress = false;
        let mut rest = Vec::new();
        for (name, i, d, n) in pending {
            let unknown: Vec<&str> = d.symbols().filter(|s| b.get(s).is_none()).collect();
            match unknown[..] {
                [] => {
                    let want = b.eval_dim(d).map_err(|e| InterpError::input(name, e))?;
                    if want != n {
                        let decl =
                            if d.is_const() { d.to_string() } else { format!("{d} = {want} ({})", b.explain(d)) };
                        return Err(InterpError::input(
                            name,
                            format!("dim {i} is declared {decl}, but the tensor has {n}"),
                        ));
                    }
                    progress = true;
                }
                [s] => {
                    let at = |v: i64| d.eval(&|x: &str| if x == s { Some(v) } else { b.get(x) });
                    let base = at(0).map_err(|e| InterpError::input(name, e))?;
                    let coeff = at(1).map_err(|e| InterpError::input(name, e))? - base;
                    let diff = n - base;
                    if coeff == 0 || diff % coeff != 0 || diff / coeff < 0 {
                        let known = b.explain(d);
                        let known = if known.is_empty() { known } else { format!(" with {known}") };
                        return Err(InterpError::input(
                            name,
                            format!("dim {i} is declared {d}, which cannot be {n}{known}: {s} would not be a whole non-negative number"),
                        ));
                    }
                    b.vals.insert(s.to_string(), (diff / coeff, format!("input '{name}' dim {i}")));
                    progress = true;
                }
                _ => rest.push((name, i, d, n)),
            }
        }
        pending = rest;
        if pending.is_empty() {
            return Ok(b);
        }
        if !progress {
            let (name, i, d, _) = pending[0];
            let unknown: Vec<&str> = d.symbols().filter(|s| b.get(s).is_none()).collect();
            return Err(InterpError::input(
                name,
                format!("dim {i} is declared {d}: cannot determine {} from the inputs' shapes", unknown.join(", ")),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(ds: &[Dim]) -> Shape {
        Shape(ds.to_vec())
    }

    #[test]
    fn binds_linear_dims_in_any_order() {
        let (t, p) = (Dim::sym("T"), Dim::sym("P"));
        let mask = shape(&[t.clone(), p.add(&t)]);
        let toks = shape(std::slice::from_ref(&t));
        let b = bind(&[("mask", &mask, &[3, 10]), ("tokens", &toks, &[3])]).unwrap();
        assert_eq!((b.get("T"), b.get("P")), (Some(3), Some(7)));
        let err = bind(&[("tokens", &toks, &[3]), ("pos", &toks, &[4])]).unwrap_err().to_string();
        assert!(
            err.contains(
                "input 'pos': dim 0 is declared T = 3 (T = 3 from input 'tokens' dim 0), but the tensor has 4"
            ),
            "{err}"
        );
        let two_t = shape(&[t.scale(2)]);
        let err = bind(&[("x", &two_t, &[5])]).unwrap_err().to_string();
        assert!(err.contains("input 'x': dim 0 is declared 2*T, which cannot be 5"), "{err}");
        let both = shape(&[p.add(&t)]);
        let err = bind(&[("x", &both, &[5])]).unwrap_err().to_string();
        assert!(err.contains("cannot determine P, T"), "{err}");
        let c = shape(&[Dim::c(4)]);
        let err = bind(&[("x", &c, &[5])]).unwrap_err().to_string();
        assert!(err.contains("input 'x': dim 0 is declared 4, but the tensor has 5"), "{err}");
    }
}

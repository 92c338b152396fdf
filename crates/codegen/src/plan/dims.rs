//! Symbolic sizes: the IR's linear dims (`T`, `n0e3`, `P+T`) as the manifest's [`DimExpr`]s over
//! numbered run-time symbols.

use crate::error::{CodegenError, Result};
use kiln_ir::{Dim, Shape};
use kiln_runtime::artifact::manifest::{DimExpr, Symbol};

/// The run-time symbols of a program: `T` first, then data-dependent counts and cache lengths as
/// the planner meets them.
#[derive(Debug, Default)]
pub struct Symbols {
    pub list: Vec<Symbol>,
}

impl Symbols {
    pub fn new() -> Symbols {
        Symbols { list: vec![Symbol::Tokens { name: "T".into() }] }
    }

    fn named(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|s| match s {
            Symbol::Tokens { name: n } | Symbol::Dynamic { name: n } => n == name,
            Symbol::CacheLen { .. } => false,
        })
    }

    /// Registers a data-dependent symbol (bound by a `nonzero` step).
    pub fn dynamic(&mut self, name: &str) -> usize {
        self.named(name).unwrap_or_else(|| {
            self.list.push(Symbol::Dynamic { name: name.to_string() });
            self.list.len() - 1
        })
    }

    /// The symbol holding a KV-cache slot's length.
    pub fn cache_len(&mut self, slot: usize) -> usize {
        let found = self.list.iter().position(|s| *s == Symbol::CacheLen { slot });
        found.unwrap_or_else(|| {
            self.list.push(Symbol::CacheLen { slot });
            self.list.len() - 1
        })
    }

    /// A dim as an expression over the symbols (every symbol it names must be known).
    pub fn expr(&self, d: &Dim, what: &str) -> Result<DimExpr> {
        let constant = d.eval(&|_| Some(0)).map_err(|e| plan_err(what, e))?;
        let mut terms = Vec::new();
        for s in d.symbols() {
            let idx = self.named(s).ok_or_else(|| plan_err(what, format!("unknown symbolic dim '{s}'")))?;
            let one = d.eval(&|x| Some(i64::from(x == s))).map_err(|e| plan_err(what, e))?;
            terms.push((idx, one - constant));
        }
        Ok(DimExpr { constant, terms })
    }

    /// A shape's element count, which must be linear in the symbols (at most one symbolic dim).
    pub fn numel(&self, shape: &Shape, what: &str) -> Result<DimExpr> {
        let (c, syms) = shape.numel_factors();
        match syms.as_slice() {
            [] => Ok(DimExpr::c(c)),
            [d] => {
                let e = self.expr(d, what)?;
                Ok(DimExpr { constant: e.constant * c, terms: e.terms.iter().map(|&(s, k)| (s, k * c)).collect() })
            }
            _ => Err(plan_err(what, format!("shape {shape} has more than one symbolic dim"))),
        }
    }
}

pub fn plan_err(node: &str, message: impl Into<String>) -> CodegenError {
    CodegenError::Plan { node: node.to_string(), message: message.into() }
}

/// `a · k` for a constant k.
pub fn scale(e: &DimExpr, k: i64) -> DimExpr {
    DimExpr { constant: e.constant * k, terms: e.terms.iter().map(|&(s, c)| (s, c * k)).collect() }
}

/// `a + b`.
pub fn add(a: &DimExpr, b: &DimExpr) -> DimExpr {
    let mut terms = a.terms.clone();
    for &(s, c) in &b.terms {
        match terms.iter_mut().find(|t| t.0 == s) {
            Some(t) => t.1 += c,
            None => terms.push((s, c)),
        }
    }
    terms.retain(|t| t.1 != 0);
    DimExpr { constant: a.constant + b.constant, terms }
}

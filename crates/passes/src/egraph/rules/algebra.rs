//! `algebra`: arithmetic identities that hold exactly (bit for bit, but for the sign of a zero
//! result in `x + 0`), each checked against the shapes: `x * 1` is `x` only when the
//! multiplication does not broadcast `x` to a larger shape. No blanket commutativity or
//! associativity: a constant on the left is its own rule.
//!
//! `algebra-mul-scalars` folds two constant factors, `(x * a) * b → x * (a·b)`, only when one of
//! them is a power of two and `a·b` is exact in f32: scaling by a power of two commutes with
//! rounding, so both sides round the same real number once (outside overflow and underflow to
//! subnormals). For integer tensors it needs integral factors whose product fits (wrapping
//! multiplication is associative).

use crate::egraph::analysis::{Fact, KilnEGraph, KilnRewrite, TensorAnalysis};
use crate::egraph::apply::{add_and_union, checked, keeps_type, splat_is, var};
use crate::egraph::lang::{AttrSet, KilnNode};
use egg::{rewrite as rw, Applier, Id, PatternAst, Subst, Symbol, Var};
use kiln_ir::{Attr, Attrs, DType, OpKind};

#[rustfmt::skip]
pub fn rules() -> Vec<KilnRewrite> {
    vec![
        rw!("algebra-mul-one";       "(mul ?x ?c {})"             => "?x"                       if splat_is("?c", 1.0) if keeps_type("?x")),
        rw!("algebra-one-mul";       "(mul ?c ?x {})"             => "?x"                       if splat_is("?c", 1.0) if keeps_type("?x")),
        rw!("algebra-add-zero";      "(add ?x ?c {})"             => "?x"                       if splat_is("?c", 0.0) if keeps_type("?x")),
        rw!("algebra-zero-add";      "(add ?c ?x {})"             => "?x"                       if splat_is("?c", 0.0) if keeps_type("?x")),
        rw!("algebra-sub-zero";      "(sub ?x ?c {})"             => "?x"                       if splat_is("?c", 0.0) if keeps_type("?x")),
        rw!("algebra-div-one";       "(div ?x ?c {})"             => "?x"                       if splat_is("?c", 1.0) if keeps_type("?x")),
        rw!("algebra-mul-minus-one"; "(mul ?x ?c {})"             => { checked("(neg ?x {})") } if splat_is("?c", -1.0)),
        rw!("algebra-neg-neg";       "(neg (neg ?x {}) {})"       => "?x"                       if keeps_type("?x")),
        rw!("algebra-mul-scalars";   "(mul (mul ?x ?a {}) ?b {})" => { FoldScalars::new() }),
    ]
}

/// `(x * a) * b → x * c` with `c = a·b` a new constant (see the module docs for when).
#[derive(Debug)]
pub struct FoldScalars {
    x: Var,
    a: Var,
    b: Var,
}

impl FoldScalars {
    pub fn new() -> FoldScalars {
        FoldScalars { x: var("?x"), a: var("?a"), b: var("?b") }
    }
}

impl Default for FoldScalars {
    fn default() -> FoldScalars {
        FoldScalars::new()
    }
}

fn is_power_of_two(v: f32) -> bool {
    v.is_normal() && v.abs().to_bits() & 0x007f_ffff == 0
}

/// `a·b` when folding is exact for `dtype` (module docs).
pub fn fold_product(a: f64, b: f64, dtype: DType) -> Option<f64> {
    if dtype.is_int() {
        let integral = |v: f64| v.fract() == 0.0 && v.abs() < 9.0e15;
        if !(integral(a) && integral(b)) {
            return None;
        }
        let c = (a as i64).checked_mul(b as i64)?;
        return (c.abs() < (1i64 << 53)).then_some(c as f64);
    }
    if !dtype.is_float() {
        return None;
    }
    let (fa, fb) = (a as f32, b as f32);
    if fa as f64 != a || fb as f64 != b || !(is_power_of_two(fa) || is_power_of_two(fb)) {
        return None;
    }
    let c = a * b;
    ((c as f32) as f64 == c && (c as f32).is_normal()).then_some(c)
}

impl Applier<KilnNode, TensorAnalysis> for FoldScalars {
    fn apply_one(
        &self,
        egraph: &mut KilnEGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<KilnNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let (Fact::Tensor { ty: ta, splat: Some(a) }, Fact::Tensor { ty: tb, splat: Some(b) }) =
            (&egraph[subst[self.a]].data, &egraph[subst[self.b]].data)
        else {
            return Vec::new();
        };
        if ta.dtype != tb.dtype {
            return Vec::new();
        }
        let Some(c) = fold_product(*a, *b, ta.dtype) else { return Vec::new() };
        // The folded constant has the broadcast shape of the two it replaces.
        let Ok(ty) = OpKind::Mul.infer(&[ta, tb], &Attrs::new(), None) else { return Vec::new() };
        let constant = KilnNode::Source {
            op: OpKind::Constant,
            attrs: AttrSet::new(Attrs::new().with("value", Attr::Float(c))),
            ty,
        };
        let c = egraph.add(constant);
        add_and_union(egraph, eclass, OpKind::Mul, &[subst[self.x], c], Attrs::new())
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.x, self.a, self.b]
    }
}

#[cfg(test)]
mod tests {
    use super::fold_product;
    use kiln_ir::DType;

    #[test]
    fn folds_only_exact_products() {
        assert_eq!(fold_product(0.5, 3.0, DType::F32), Some(1.5));
        assert_eq!(fold_product(3.0, 0.25, DType::F32), Some(0.75));
        assert_eq!(fold_product(3.0, 5.0, DType::F32), None, "neither is a power of two");
        assert_eq!(fold_product(0.1, 2.0, DType::F32), None, "0.1 is not an f32 value");
        assert_eq!(fold_product(0.0, 2.0, DType::F32), None, "zero result");
        assert_eq!(fold_product(3.0, -7.0, DType::I32), Some(-21.0));
        assert_eq!(fold_product(0.5, 2.0, DType::I32), None);
    }
}

//! `layout`: permutes and reshapes that cancel or compose.
//!
//! - `permute(permute(x, p), q)` is one permute by `p∘q` (result axis i is x's axis p[q[i]]);
//! - a permute by the identity is its operand;
//! - `reshape(reshape(x))` is one reshape (row-major order is kept by both);
//! - a reshape to its operand's own type is its operand.

use crate::egraph::analysis::{KilnEGraph, KilnRewrite, TensorAnalysis};
use crate::egraph::apply::{add_and_union, attrs_of, checked, identity_perm, keeps_type, var};
use crate::egraph::lang::KilnNode;
use egg::{rewrite as rw, Applier, Id, PatternAst, Subst, Symbol, Var};
use kiln_ir::{Attr, Attrs, OpKind};

#[rustfmt::skip]
pub fn rules() -> Vec<KilnRewrite> {
    vec![
        rw!("layout-permute-permute";  "(permute (permute ?x ?p) ?q)" => { ComposePermutes::new() }),
        rw!("layout-permute-identity"; "(permute ?x ?p)"              => "?x" if identity_perm("?p") if keeps_type("?x")),
        rw!("layout-reshape-reshape";  "(reshape (reshape ?x ?a) ?b)" => { checked("(reshape ?x ?b)") }),
        rw!("layout-reshape-identity"; "(reshape ?x ?s)"              => "?x" if keeps_type("?x")),
    ]
}

/// `permute(permute(x, p), q)` → `permute(x, [p[q[0]], p[q[1]], ...])`.
#[derive(Debug)]
pub struct ComposePermutes {
    x: Var,
    inner: Var,
    outer: Var,
}

impl ComposePermutes {
    pub fn new() -> ComposePermutes {
        ComposePermutes { x: var("?x"), inner: var("?p"), outer: var("?q") }
    }
}

impl Default for ComposePermutes {
    fn default() -> ComposePermutes {
        ComposePermutes::new()
    }
}

/// `p∘q`, or `None` unless both are permutations of the same length.
pub fn compose(p: &[i64], q: &[i64]) -> Option<Vec<i64>> {
    if p.len() != q.len() {
        return None;
    }
    q.iter().map(|&i| usize::try_from(i).ok().and_then(|i| p.get(i).copied())).collect()
}

impl Applier<KilnNode, TensorAnalysis> for ComposePermutes {
    fn apply_one(
        &self,
        egraph: &mut KilnEGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<KilnNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let perm = |v| attrs_of(egraph, subst, v).and_then(|a| a.ints("perm"));
        let Some(composed) = perm(self.inner).zip(perm(self.outer)).and_then(|(p, q)| compose(p, q)) else {
            return Vec::new();
        };
        let attrs = Attrs::new().with("perm", Attr::Ints(composed));
        add_and_union(egraph, eclass, OpKind::Permute, &[subst[self.x]], attrs)
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.x, self.inner, self.outer]
    }
}

#[cfg(test)]
mod tests {
    use super::compose;

    #[test]
    fn composition() {
        assert_eq!(compose(&[1, 0, 2], &[1, 0, 2]), Some(vec![0, 1, 2]));
        assert_eq!(compose(&[0, 2, 1], &[1, 0, 2]), Some(vec![2, 0, 1]));
        assert_eq!(compose(&[0, 1], &[0, 1, 2]), None);
        assert_eq!(compose(&[0, 1], &[0, 5]), None);
    }
}

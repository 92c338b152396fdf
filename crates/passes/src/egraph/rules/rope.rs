//! `rope`: fold the rotary embeddings of q and k into the attention that reads them.
//!
//! `attention(rope(q, pos) {r}, rope(k, pos) {r}, v, pos) {a}` becomes
//! `attention(q, k, v, pos) {a + rope = <layout>{theta, dim, scaling}}` when both ropes have the
//! same attributes `r` (one variable: hash-consed attribute sets are one class), rotate at the
//! attention's own positions (`?pos` three times), and the attention has no `rope` yet. The whole
//! [`RopeSpec`] travels: neox or interleaved layout, per-layer theta, partial-rotary `dim`, and
//! any frequency scaling. The fused attention rotates q and k at its positions before it uses them
//! (and before k enters the KV cache), which is exactly what the two `rope` ops did.

use crate::egraph::analysis::{KilnEGraph, KilnRewrite, TensorAnalysis};
use crate::egraph::apply::{add_and_union, attrs_of, var};
use crate::egraph::lang::KilnNode;
use egg::{rewrite as rw, Applier, Id, PatternAst, Subst, Symbol, Var};
use kiln_ir::{OpKind, RopeSpec};

#[rustfmt::skip]
pub fn rules() -> Vec<KilnRewrite> {
    vec![
        rw!("rope-fuse-attention"; "(attention (rope ?q ?pos ?r) (rope ?k ?pos ?r) ?v ?pos ?a)" => { FuseRope::new() }),
    ]
}

/// Builds the fused attention; refuses when the attention already rotates, the rope attributes do
/// not form a [`RopeSpec`], or the fused node would not check (e.g. a rotary `dim` larger than the
/// head).
#[derive(Debug)]
pub struct FuseRope {
    q: Var,
    k: Var,
    v: Var,
    pos: Var,
    rope: Var,
    attrs: Var,
}

impl FuseRope {
    pub fn new() -> FuseRope {
        FuseRope { q: var("?q"), k: var("?k"), v: var("?v"), pos: var("?pos"), rope: var("?r"), attrs: var("?a") }
    }
}

impl Default for FuseRope {
    fn default() -> FuseRope {
        FuseRope::new()
    }
}

impl Applier<KilnNode, TensorAnalysis> for FuseRope {
    fn apply_one(
        &self,
        egraph: &mut KilnEGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<KilnNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let (Some(attn), Some(rope)) = (attrs_of(egraph, subst, self.attrs), attrs_of(egraph, subst, self.rope)) else {
            return Vec::new();
        };
        if attn.get("rope").is_some() {
            return Vec::new();
        }
        let Ok(spec) = RopeSpec::from_rope_op(rope) else { return Vec::new() };
        let fused = attn.clone().with("rope", spec.to_attention_attr());
        let operands = [subst[self.q], subst[self.k], subst[self.v], subst[self.pos]];
        add_and_union(egraph, eclass, OpKind::Attention, &operands, fused)
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.q, self.k, self.v, self.pos, self.rope, self.attrs]
    }
}

//! The tensor-type analysis: every e-class knows the type (dtype + shape) of its value, computed
//! from the op table's inference rules ([`OpKind::infer`]). Merging two classes asserts that their
//! types agree — a rule that equates values of different types is unsound, and it panics in tests
//! rather than producing a wrong graph. Types are `kiln_ir::TensorType`s, never strings.

use super::lang::{AttrSet, KilnNode};
use egg::{Analysis, DidMerge, EGraph, Id};
use kiln_ir::{OpKind, TensorType};

/// The e-graph Kiln rewrites in.
pub type KilnEGraph = EGraph<KilnNode, TensorAnalysis>;

/// A rewrite rule over [`KilnNode`]s.
pub type KilnRewrite = egg::Rewrite<KilnNode, TensorAnalysis>;

/// What an e-class is known to be.
#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    /// A tensor value of this type; `splat` is its value when every element is that one number (a
    /// `constant` node).
    Tensor { ty: TensorType, splat: Option<f64> },
    /// An attribute set (the class of a [`KilnNode::Attrs`] leaf).
    Attrs(AttrSet),
}

impl Fact {
    pub fn ty(&self) -> Option<&TensorType> {
        match self {
            Fact::Tensor { ty, .. } => Some(ty),
            Fact::Attrs(_) => None,
        }
    }

    pub fn splat(&self) -> Option<f64> {
        match self {
            Fact::Tensor { splat, .. } => *splat,
            Fact::Attrs(_) => None,
        }
    }

    pub fn attrs(&self) -> Option<&AttrSet> {
        match self {
            Fact::Attrs(a) => Some(a),
            Fact::Tensor { .. } => None,
        }
    }
}

/// The analysis; it has no state of its own.
#[derive(Clone, Copy, Debug, Default)]
pub struct TensorAnalysis;

/// The result type of `op` over operands and attributes given as facts, checking the operand count
/// and the attributes against the op table first. `Err` says why the node would be ill-typed.
pub fn infer_facts(op: OpKind, operands: &[&Fact], attrs: &Fact) -> Result<TensorType, String> {
    let info = op.info();
    if info.declares_type || !info.has_result {
        return Err(format!("'{op}' is not a compute op"));
    }
    if !info.operands.accepts(operands.len()) {
        return Err(format!("'{op}' expects {}, got {}", info.operands.describe(), operands.len()));
    }
    let attrs = attrs.attrs().ok_or_else(|| format!("the last child of '{op}' is not an attribute set"))?;
    kiln_ir::attr::check_attrs(info.attrs, attrs.attrs()).map_err(|e| format!("'{op}': {e}"))?;
    let tys: Vec<&TensorType> = operands
        .iter()
        .enumerate()
        .map(|(i, f)| f.ty().ok_or_else(|| format!("operand {i} of '{op}' is an attribute set, not a tensor")))
        .collect::<Result<_, _>>()?;
    op.infer(&tys, attrs.attrs(), None).map_err(|e| format!("'{op}': {e}"))
}

/// The result type of an op node already in the e-graph (its children's facts looked up).
pub fn infer_node(egraph: &KilnEGraph, node: &KilnNode) -> Result<TensorType, String> {
    let (op, operands, attrs) = node.split_op().ok_or("not an op node")?;
    let facts: Vec<&Fact> = operands.iter().map(|&c| &egraph[c].data).collect();
    infer_facts(op, &facts, &egraph[attrs].data)
}

/// The fact of a leaf node (`None` for ops, whose facts are inferred from their children).
pub fn leaf_fact(node: &KilnNode) -> Option<Fact> {
    match node {
        KilnNode::Attrs(a) => Some(Fact::Attrs(a.clone())),
        KilnNode::Source { op, attrs, ty } => {
            let splat = if *op == OpKind::Constant { attrs.attrs().float("value") } else { None };
            Some(Fact::Tensor { ty: ty.clone(), splat })
        }
        KilnNode::Outside { ty, .. } => Some(Fact::Tensor { ty: ty.clone(), splat: None }),
        KilnNode::Op { .. } => None,
    }
}

fn same_number(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

impl Analysis<KilnNode> for TensorAnalysis {
    type Data = Fact;

    fn make(egraph: &mut KilnEGraph, enode: &KilnNode, _id: Id) -> Fact {
        if let Some(f) = leaf_fact(enode) {
            return f;
        }
        match infer_node(egraph, enode) {
            Ok(ty) => Fact::Tensor { ty, splat: None },
            // Conversion checks every node it adds and checked appliers check theirs, so only an
            // unchecked rule gets here.
            Err(e) => panic!("e-graph analysis: an ill-typed node was added (by an unchecked rule?): {e}"),
        }
    }

    fn merge(&mut self, a: &mut Fact, b: Fact) -> DidMerge {
        match (a, b) {
            (Fact::Tensor { ty: ta, splat: sa }, Fact::Tensor { ty: tb, splat: sb }) => {
                assert_eq!(
                    *ta, tb,
                    "e-graph analysis: a rewrite merged a {ta} value with a {tb} value (the rule is unsound for these shapes)"
                );
                match (*sa, sb) {
                    (Some(x), Some(y)) => {
                        assert!(
                            same_number(x, y),
                            "e-graph analysis: a rewrite merged constants {x} and {y} (the rule is unsound)"
                        );
                        DidMerge(false, false)
                    }
                    (None, Some(y)) => {
                        *sa = Some(y);
                        DidMerge(true, false)
                    }
                    (Some(_), None) => DidMerge(false, true),
                    (None, None) => DidMerge(false, false),
                }
            }
            (Fact::Attrs(x), Fact::Attrs(y)) => {
                assert_eq!(*x, y, "e-graph analysis: a rewrite merged two different attribute sets");
                DidMerge(false, false)
            }
            (a, b) => panic!("e-graph analysis: a rewrite merged an attribute set with a tensor: {a:?} and {b:?}"),
        }
    }
}

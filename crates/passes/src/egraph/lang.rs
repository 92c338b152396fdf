//! The e-graph language: Kiln ops as egg e-nodes.
//!
//! Kiln ops carry attributes, which `define_language!` cannot express on a node with children, so
//! [`KilnNode`] implements [`egg::Language`] by hand. An op's attributes are **its last child**: a
//! leaf e-class holding one [`KilnNode::Attrs`] node. Attribute sets are hash-consed like any other
//! node, so two nodes with equal attributes share that child, and a pattern states "the same
//! attributes" by naming one variable twice:
//!
//! ```text
//! (attention (rope ?q ?pos ?r) (rope ?k ?pos ?r) ?v ?pos ?a)
//! ```
//!
//! matches only when both ropes have identical attributes (`?r`) and the positions of the attention
//! (`?pos`). Appliers read the attributes of the matched nodes through such variables. In pattern
//! text an op is written by its IR name with its operands and then its attribute child; `{}` is the
//! empty attribute set (`(neg (neg ?x {}) {})`).
//!
//! Values that enter the e-graph from elsewhere are leaves that carry their type:
//! [`KilnNode::Source`] for `input`, `param` and `constant` nodes (with their attributes, so rules
//! can see a constant's value) and [`KilnNode::Outside`] for values computed outside the rewritten
//! region.

use egg::{FromOp, Id, Language};
use kiln_ir::{Attr, Attrs, OpKind, TensorType};
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// An op's attributes as an e-node: shared (cheap to clone, as egg clones nodes freely) and
/// totally ordered, as egg's `Language` requires. The order compares floats by their bits, the
/// same notion of equality `kiln_ir::Attr` uses, so `Ord` agrees with `Eq`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttrSet(pub Arc<Attrs>);

impl AttrSet {
    pub fn new(attrs: Attrs) -> AttrSet {
        AttrSet(Arc::new(attrs))
    }

    pub fn empty() -> AttrSet {
        AttrSet::new(Attrs::new())
    }

    pub fn attrs(&self) -> &Attrs {
        &self.0
    }
}

impl PartialOrd for AttrSet {
    fn partial_cmp(&self, other: &AttrSet) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AttrSet {
    fn cmp(&self, other: &AttrSet) -> Ordering {
        cmp_attrs(&self.0, &other.0)
    }
}

/// Lexicographic over the (name, value) pairs, which `Attrs` keeps sorted by name.
fn cmp_attrs(a: &Attrs, b: &Attrs) -> Ordering {
    let mut ia = a.iter();
    let mut ib = b.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, va)), Some((kb, vb))) => {
                let o = ka.cmp(kb).then_with(|| cmp_attr(va, vb));
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

fn attr_rank(a: &Attr) -> u8 {
    match a {
        Attr::Bool(_) => 0,
        Attr::Int(_) => 1,
        Attr::Float(_) => 2,
        Attr::Str(_) => 3,
        Attr::Ident(_) => 4,
        Attr::Ints(_) => 5,
        Attr::Shape(_) => 6,
        Attr::DType(_) => 7,
        Attr::Tagged { .. } => 8,
    }
}

fn cmp_attr(a: &Attr, b: &Attr) -> Ordering {
    match (a, b) {
        (Attr::Bool(x), Attr::Bool(y)) => x.cmp(y),
        (Attr::Int(x), Attr::Int(y)) => x.cmp(y),
        (Attr::Float(x), Attr::Float(y)) => x.to_bits().cmp(&y.to_bits()),
        (Attr::Str(x), Attr::Str(y)) | (Attr::Ident(x), Attr::Ident(y)) => x.cmp(y),
        (Attr::Ints(x), Attr::Ints(y)) => x.cmp(y),
        (Attr::Shape(x), Attr::Shape(y)) => x.cmp(y),
        (Attr::DType(x), Attr::DType(y)) => x.cmp(y),
        (Attr::Tagged { tag: t1, fields: f1 }, Attr::Tagged { tag: t2, fields: f2 }) => {
            t1.cmp(t2).then_with(|| cmp_attrs(f1, f2))
        }
        _ => attr_rank(a).cmp(&attr_rank(b)),
    }
}

/// One e-node. The derived order sorts by variant, then by op, so the nodes of one
/// [`discriminant`](Language::discriminant) are contiguous, as egg's class search expects.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KilnNode {
    /// A compute op: its operands in order, then the class of its attributes.
    Op { op: OpKind, children: Box<[Id]> },
    /// An op's attribute set (a leaf).
    Attrs(AttrSet),
    /// An `input`, `param` or `constant` node with its attributes and declared type (a leaf).
    Source { op: OpKind, attrs: AttrSet, ty: TensorType },
    /// A value computed outside the rewritten region, by its slot in the region's table (a leaf).
    Outside { slot: u32, ty: TensorType },
}

/// What egg compares first when searching a class for a pattern node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KilnKind {
    Op(OpKind),
    Attrs,
    Source,
    Outside,
}

impl KilnNode {
    /// A compute op with its operands and the class of its attributes.
    pub fn op(op: OpKind, operands: &[Id], attrs: Id) -> KilnNode {
        let mut children = Vec::with_capacity(operands.len() + 1);
        children.extend_from_slice(operands);
        children.push(attrs);
        KilnNode::Op { op, children: children.into() }
    }

    /// For an op: its operands and its attribute class.
    pub fn split_op(&self) -> Option<(OpKind, &[Id], Id)> {
        match self {
            KilnNode::Op { op, children } => {
                let (attrs, operands) = children.split_last()?;
                Some((*op, operands, *attrs))
            }
            _ => None,
        }
    }
}

impl Language for KilnNode {
    type Discriminant = KilnKind;

    fn discriminant(&self) -> KilnKind {
        match self {
            KilnNode::Op { op, .. } => KilnKind::Op(*op),
            KilnNode::Attrs(_) => KilnKind::Attrs,
            KilnNode::Source { .. } => KilnKind::Source,
            KilnNode::Outside { .. } => KilnKind::Outside,
        }
    }

    fn matches(&self, other: &KilnNode) -> bool {
        match (self, other) {
            (KilnNode::Op { op: a, children: ca }, KilnNode::Op { op: b, children: cb }) => {
                a == b && ca.len() == cb.len()
            }
            (KilnNode::Op { .. }, _) | (_, KilnNode::Op { .. }) => false,
            // Leaves match only themselves.
            (a, b) => a == b,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            KilnNode::Op { children, .. } => children,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            KilnNode::Op { children, .. } => children,
            _ => &mut [],
        }
    }
}

/// Errors from reading pattern text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseNodeError(pub String);

impl fmt::Display for ParseNodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseNodeError {}

impl FromOp for KilnNode {
    type Error = ParseNodeError;

    /// Pattern text: `{}` is the empty attribute set; an op name takes its operands and then its
    /// attribute child. Leaves (`input`, `param`, `constant`) are matched through variables and
    /// conditions, never written.
    fn from_op(op: &str, children: Vec<Id>) -> Result<KilnNode, ParseNodeError> {
        if op == "{}" {
            return if children.is_empty() {
                Ok(KilnNode::Attrs(AttrSet::empty()))
            } else {
                Err(ParseNodeError("'{}' (no attributes) takes no children".into()))
            };
        }
        let kind = OpKind::from_name(op).ok_or_else(|| ParseNodeError(format!("unknown op '{op}' in a pattern")))?;
        let info = kind.info();
        if info.declares_type || !info.has_result {
            return Err(ParseNodeError(format!(
                "'{op}' cannot be written in a pattern: bind it with a variable and test it with a condition"
            )));
        }
        let operands = children.len().saturating_sub(1);
        if children.is_empty() || !info.operands.accepts(operands) {
            return Err(ParseNodeError(format!(
                "'{op}' expects {} and then its attributes, got {} children",
                info.operands.describe(),
                children.len()
            )));
        }
        Ok(KilnNode::Op { op: kind, children: children.into() })
    }
}

impl fmt::Display for KilnNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KilnNode::Op { op, .. } => f.write_str(op.name()),
            KilnNode::Attrs(a) => write!(f, "{}", a.attrs()),
            KilnNode::Source { op, attrs, ty } => write!(f, "{op}{}:{ty}", attrs.attrs()),
            KilnNode::Outside { slot, ty } => write!(f, "outside{slot}:{ty}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, Dim, Shape};

    #[test]
    fn attr_order_agrees_with_equality() {
        let a = Attrs::new().with("theta", Attr::Float(1e4)).with("layout", Attr::Ident("neox".into()));
        let b = Attrs::new().with("theta", Attr::Float(1e5)).with("layout", Attr::Ident("neox".into()));
        let (sa, sb) = (AttrSet::new(a.clone()), AttrSet::new(b));
        assert_eq!(sa.cmp(&AttrSet::new(a)), Ordering::Equal);
        assert_eq!(sa.cmp(&sb), Ordering::Less);
        assert_eq!(sb.cmp(&sa), Ordering::Greater);
        let shape = Attrs::new().with("shape", Attr::Shape(Shape::new([Dim::sym("T"), Dim::c(4)])));
        assert_ne!(AttrSet::new(shape).cmp(&AttrSet::empty()), Ordering::Equal);
        // Floats compare by bits, like Attr's equality: -0.0 and 0.0 differ.
        let z = AttrSet::new(Attrs::new().with("value", Attr::Float(0.0)));
        let nz = AttrSet::new(Attrs::new().with("value", Attr::Float(-0.0)));
        assert_ne!(z, nz);
        assert_ne!(z.cmp(&nz), Ordering::Equal);
    }

    #[test]
    fn nodes_of_one_kind_sort_together() {
        let ty = TensorType::new(DType::F32, [Dim::c(2)]);
        let mut nodes = [
            KilnNode::Outside { slot: 0, ty: ty.clone() },
            KilnNode::op(OpKind::Neg, &[Id::from(3)], Id::from(0)),
            KilnNode::Attrs(AttrSet::empty()),
            KilnNode::op(OpKind::Add, &[Id::from(1), Id::from(2)], Id::from(0)),
            KilnNode::op(OpKind::Neg, &[Id::from(1)], Id::from(0)),
        ];
        nodes.sort();
        let kinds: Vec<KilnKind> = nodes.iter().map(|n| n.discriminant()).collect();
        let mut seen: Vec<KilnKind> = Vec::new();
        for k in kinds {
            if seen.last() != Some(&k) {
                assert!(!seen.contains(&k), "{k:?} is not contiguous in {nodes:?}");
                seen.push(k);
            }
        }
    }

    #[test]
    fn patterns_parse() {
        let p: egg::Pattern<KilnNode> = "(neg (neg ?x {}) {})".parse().unwrap();
        assert!(p.ast.as_ref().contains(&egg::ENodeOrVar::ENode(KilnNode::Attrs(AttrSet::empty()))));
        let again: egg::Pattern<KilnNode> = p.to_string().parse().unwrap();
        assert_eq!(again.ast, p.ast);
        assert!("(param)".parse::<egg::Pattern<KilnNode>>().is_err());
        assert!("(frobnicate ?x {})".parse::<egg::Pattern<KilnNode>>().is_err());
        assert!("(add ?x {})".parse::<egg::Pattern<KilnNode>>().is_err());
    }
}

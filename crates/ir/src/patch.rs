//! Queued graph edits (like rustc's MirPatch): a pass walks the graph read-only, records new nodes,
//! use replacements and removals in a `Patch`, and applies it once at the end.

use crate::attr::Attrs;
use crate::graph::{Graph, NodeId};
use crate::op::OpKind;
use crate::shape::TensorType;

/// A value in a patch: a node already in the graph, or the n-th node the patch adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchValue {
    Existing(NodeId),
    New(usize),
}

impl From<NodeId> for PatchValue {
    fn from(n: NodeId) -> PatchValue {
        PatchValue::Existing(n)
    }
}

struct NewNode {
    op: OpKind,
    attrs: Attrs,
    operands: Vec<PatchValue>,
    ty: TensorType,
}

#[derive(Default)]
pub struct Patch {
    new_nodes: Vec<NewNode>,
    replacements: Vec<(NodeId, PatchValue)>,
    removals: Vec<NodeId>,
}

impl Patch {
    pub fn new() -> Patch {
        Patch::default()
    }

    pub fn is_empty(&self) -> bool {
        self.new_nodes.is_empty() && self.replacements.is_empty() && self.removals.is_empty()
    }

    /// Queues a new node. Its type is given (use [`OpKind::infer`] to compute it).
    pub fn add(&mut self, op: OpKind, attrs: Attrs, operands: &[PatchValue], ty: TensorType) -> PatchValue {
        self.new_nodes.push(NewNode { op, attrs, operands: operands.to_vec(), ty });
        PatchValue::New(self.new_nodes.len() - 1)
    }

    /// The type of a value, looking into the patch for new nodes.
    pub fn ty<'a>(&'a self, graph: &'a Graph, v: PatchValue) -> &'a TensorType {
        match v {
            PatchValue::Existing(n) => graph.ty(n),
            PatchValue::New(i) => &self.new_nodes[i].ty,
        }
    }

    /// Queues a new node whose type is inferred from its operands.
    pub fn add_inferred(
        &mut self,
        graph: &Graph,
        op: OpKind,
        attrs: Attrs,
        operands: &[PatchValue],
    ) -> Result<PatchValue, String> {
        let tys: Vec<TensorType> = operands.iter().map(|&v| self.ty(graph, v).clone()).collect();
        let refs: Vec<&TensorType> = tys.iter().collect();
        let ty = op.infer(&refs, &attrs, None)?;
        Ok(self.add(op, attrs, operands, ty))
    }

    /// Every use of `old` that exists before the patch is applied becomes a use of `new`.
    pub fn replace_uses(&mut self, old: NodeId, new: impl Into<PatchValue>) {
        self.replacements.push((old, new.into()));
    }

    pub fn remove(&mut self, n: NodeId) {
        self.removals.push(n);
    }
}

impl Graph {
    /// Applies a patch: adds the new nodes, redirects uses, removes nodes. Returns the ids of the new
    /// nodes in the order they were queued.
    pub fn apply(&mut self, patch: Patch) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = Vec::with_capacity(patch.new_nodes.len());
        // Users are collected before new nodes exist so that a new node using `old` keeps that use.
        let users: Vec<Vec<(NodeId, usize)>> = patch.replacements.iter().map(|(old, _)| self.users(*old)).collect();
        let resolve = |ids: &[NodeId], v: PatchValue| match v {
            PatchValue::Existing(n) => n,
            PatchValue::New(i) => ids[i],
        };
        for n in patch.new_nodes {
            let operands: Vec<NodeId> = n.operands.iter().map(|&v| resolve(&ids, v)).collect();
            let id = self.add_node(n.op, n.attrs, &operands, n.ty);
            ids.push(id);
        }
        for ((_, new), users) in patch.replacements.iter().zip(users) {
            let new = resolve(&ids, *new);
            for (user, pos) in users {
                if self.contains(user) {
                    self.set_operand(user, pos, new);
                }
            }
        }
        for n in patch.removals {
            if self.contains(n) {
                self.remove_node(n);
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use crate::{Attrs, DType, Dim, GraphBuilder, OpKind, Patch, TensorType};

    #[test]
    fn replace_keeps_uses_inside_the_patch() {
        let mut b = GraphBuilder::new("g");
        let t = TensorType::new(DType::F32, [Dim::sym("T"), Dim::c(4)]);
        let x = b.input("x", t.clone()).unwrap();
        let y = b.unary(OpKind::Exp, x).unwrap();
        b.output("y", y).unwrap();
        let mut g = b.finish();
        // Replace uses of y with neg(y): the new node keeps using y.
        let mut p = Patch::new();
        let n = p.add_inferred(&g, OpKind::Neg, Attrs::new(), &[y.into()]).unwrap();
        p.replace_uses(y, n);
        let ids = g.apply(p);
        let out = g.outputs()[0];
        assert_eq!(g.operands(out), vec![ids[0]]);
        assert_eq!(g.operands(ids[0]), vec![y]);
    }
}

//! The graph: a petgraph `StableGraph` whose nodes are ops and whose edges carry operand positions.
//! Node ids stay valid across edits (stable indices), so passes never remap handles; edits go through
//! a [`Patch`](crate::patch::Patch) that is applied once, never while iterating.

use crate::attr::Attrs;
use crate::op::OpKind;
use crate::shape::TensorType;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use petgraph::Direction;
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) NodeIndex<u32>);

impl NodeId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0.index())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: OpKind,
    pub attrs: Attrs,
    pub ty: TensorType,
}

#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    pub(crate) g: StableDiGraph<Node, u32, u32>,
    inputs: Vec<NodeId>,
    outputs: Vec<NodeId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), g: StableDiGraph::default(), inputs: Vec::new(), outputs: Vec::new() }
    }

    /// Adds a node without checking it; use [`GraphBuilder`](crate::GraphBuilder) to get types
    /// inferred and checked, and [`verify`](crate::verify) for whole graphs.
    /// Integer values of float attributes are stored as floats, as the parser reads them.
    pub fn add_node(&mut self, op: OpKind, mut attrs: Attrs, operands: &[NodeId], ty: TensorType) -> NodeId {
        crate::attr::normalize_floats(op.info().attrs, &mut attrs);
        let id = NodeId(self.g.add_node(Node { op, attrs, ty }));
        for (i, &o) in operands.iter().enumerate() {
            self.g.add_edge(o.0, id.0, i as u32);
        }
        match op {
            OpKind::Input => self.inputs.push(id),
            OpKind::Output => self.outputs.push(id),
            _ => {}
        }
        id
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id.0)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id.0]
    }

    pub fn op(&self, id: NodeId) -> OpKind {
        self.g[id.0].op
    }

    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.g[id.0].ty
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// Graph inputs in declaration order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// Graph outputs (the `output` sinks) in declaration order.
    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    /// All live node ids in index order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices().map(NodeId)
    }

    /// Operands in position order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut es: Vec<(u32, NodeId)> =
            self.g.edges_directed(id.0, Direction::Incoming).map(|e| (*e.weight(), NodeId(e.source()))).collect();
        es.sort_unstable_by_key(|(i, _)| *i);
        es.into_iter().map(|(_, n)| n).collect()
    }

    /// (user, operand position) pairs, sorted for determinism.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, usize)> {
        let mut us: Vec<(NodeId, usize)> = self
            .g
            .edges_directed(id.0, Direction::Outgoing)
            .map(|e| (NodeId(e.target()), *e.weight() as usize))
            .collect();
        us.sort_unstable();
        us
    }

    pub fn has_users(&self, id: NodeId) -> bool {
        self.g.edges_directed(id.0, Direction::Outgoing).next().is_some()
    }

    /// Finds the `param` node for a checkpoint tensor name.
    /// Every symbolic dim name the graph's types and `nonzero` dims use, so a pass that introduces
    /// a new data-dependent dim can pick a name that is free.
    pub fn symbols_in_use(&self) -> std::collections::BTreeSet<String> {
        let mut used = std::collections::BTreeSet::new();
        for n in self.node_ids() {
            for d in self.ty(n).shape.dims() {
                used.extend(d.symbols().map(str::to_string));
            }
            if let Some(dim) = self.node(n).attrs.str("dim") {
                used.insert(dim.to_string());
            }
        }
        used
    }

    pub fn param_named(&self, name: &str) -> Option<NodeId> {
        self.node_ids().find(|&n| self.op(n) == OpKind::Param && self.node(n).attrs.str("name") == Some(name))
    }

    pub fn input_named(&self, name: &str) -> Option<NodeId> {
        self.inputs.iter().copied().find(|&n| self.node(n).attrs.str("name") == Some(name))
    }

    pub fn output_named(&self, name: &str) -> Option<NodeId> {
        self.outputs.iter().copied().find(|&n| self.node(n).attrs.str("name") == Some(name))
    }

    pub(crate) fn set_operand(&mut self, user: NodeId, pos: usize, new: NodeId) {
        let edge =
            self.g.edges_directed(user.0, Direction::Incoming).find(|e| *e.weight() as usize == pos).map(|e| e.id());
        if let Some(e) = edge {
            self.g.remove_edge(e);
        }
        self.g.add_edge(new.0, user.0, pos as u32);
    }

    pub(crate) fn remove_node(&mut self, id: NodeId) {
        self.inputs.retain(|&n| n != id);
        self.outputs.retain(|&n| n != id);
        self.g.remove_node(id.0);
    }

    /// The canonical order: inputs in declaration order, then every other node in post-order of a
    /// depth-first walk from the outputs' operands (in position order), then from any other sinks in
    /// index order, then the outputs in declaration order. It depends only on the graph's structure, not on how it was built, so printed
    /// IR is stable across passes. Returns the offending node if the graph has a cycle.
    pub fn try_topo_order(&self) -> Result<Vec<NodeId>, NodeId> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let bound = self.g.node_bound();
        let mut mark = vec![Mark::New; bound];
        let mut order = Vec::with_capacity(self.len());
        for &i in &self.inputs {
            mark[i.index()] = Mark::Done;
            order.push(i);
        }
        // Outputs are printed last; their operands are the first roots of the walk.
        for &o in &self.outputs {
            mark[o.index()] = Mark::Done;
        }
        let mut roots: Vec<NodeId> = self.outputs.iter().flat_map(|&o| self.operands(o)).collect();
        roots.extend(
            self.node_ids()
                .filter(|&n| !self.has_users(n) && self.op(n) != OpKind::Output && self.op(n) != OpKind::Input),
        );
        // Iterative DFS: (node, next operand position to visit).
        let mut stack: Vec<(NodeId, Vec<NodeId>, usize)> = Vec::new();
        for root in roots.into_iter().chain(self.node_ids().collect::<Vec<_>>()) {
            if mark[root.index()] != Mark::New {
                continue;
            }
            mark[root.index()] = Mark::Open;
            stack.push((root, self.operands(root), 0));
            while let Some((n, ops, next)) = stack.last_mut() {
                if let Some(&o) = ops.get(*next) {
                    *next += 1;
                    match mark[o.index()] {
                        Mark::New => {
                            mark[o.index()] = Mark::Open;
                            let oo = self.operands(o);
                            stack.push((o, oo, 0));
                        }
                        Mark::Open => return Err(o),
                        Mark::Done => {}
                    }
                } else {
                    let n = *n;
                    mark[n.index()] = Mark::Done;
                    order.push(n);
                    stack.pop();
                }
            }
        }
        order.extend(self.outputs.iter().copied());
        Ok(order)
    }

    /// Like [`try_topo_order`](Self::try_topo_order), falling back to index order for a cyclic
    /// graph (which the verifier reports).
    pub fn topo_order(&self) -> Vec<NodeId> {
        self.try_topo_order().unwrap_or_else(|_| self.node_ids().collect())
    }

    /// Structural equality: same name, same nodes in canonical order with the same ops, attributes,
    /// types and operands.
    pub fn same_as(&self, other: &Graph) -> bool {
        let (a, b) = (self.topo_order(), other.topo_order());
        if self.name != other.name || a.len() != b.len() {
            return false;
        }
        let pos_a: std::collections::HashMap<NodeId, usize> = a.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let pos_b: std::collections::HashMap<NodeId, usize> = b.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        a.iter().zip(&b).all(|(&x, &y)| {
            self.node(x) == other.node(y)
                && self.operands(x).iter().map(|o| pos_a[o]).eq(other.operands(y).iter().map(|o| pos_b[o]))
        })
    }
}

//! Graph ⇄ e-graph. [`RegionEGraph::new`] loads a region of a graph (a set of compute nodes in
//! topological order) into an e-graph; values it reads from elsewhere become typed leaves.
//! [`RegionEGraph::extract`] picks the cheapest node of every class the region's results need and
//! returns the edit as a [`Patch`]: nodes that survive unchanged keep their ids, new nodes are
//! added, uses of the region's results are redirected, and the replaced nodes are removed. The
//! graph's inputs and outputs, with their order and names, are never touched.

use super::analysis::{infer_facts, Fact, KilnEGraph, TensorAnalysis};
use super::cost::{CostModel, KilnCost};
use super::lang::{AttrSet, KilnNode};
use egg::{Extractor, Id, Language};
use kiln_ir::{Graph, NodeId, OpKind, Patch, PatchValue};
use std::collections::{HashMap, HashSet};

/// A region of a graph in an e-graph.
pub struct RegionEGraph {
    pub egraph: KilnEGraph,
    /// The region's nodes in topological order, with the e-node each was loaded as.
    nodes: Vec<(NodeId, KilnNode, Id)>,
    /// Values computed outside the region, by `Outside` slot.
    outside: Vec<NodeId>,
    /// `input`/`param`/`constant` leaves and the graph node each stands for (the first of equal ones).
    sources: HashMap<KilnNode, NodeId>,
    /// Every `input`/`param`/`constant` node the region reads.
    source_nodes: Vec<NodeId>,
    /// Region nodes whose values are needed after it: used outside the region, or by nothing.
    roots: Vec<(NodeId, Id)>,
}

/// The result of extraction: the edit, and whether it changes anything.
pub struct Extraction {
    pub patch: Patch,
    pub changed: bool,
}

fn is_compute(op: OpKind) -> bool {
    !matches!(op, OpKind::Input | OpKind::Param | OpKind::Constant | OpKind::Output)
}

impl RegionEGraph {
    /// Loads `region` (compute nodes, each after its operands in the region) into a fresh
    /// e-graph, checking each node's type against the op table. `Err` names the first bad node.
    pub fn new(graph: &Graph, region: &[NodeId]) -> Result<RegionEGraph, String> {
        let in_region: HashSet<NodeId> = region.iter().copied().collect();
        let mut egraph = KilnEGraph::new(TensorAnalysis);
        let mut memo: HashMap<NodeId, Id> = HashMap::with_capacity(region.len() * 2);
        let mut outside = Vec::new();
        let mut sources = HashMap::new();
        let mut source_nodes = Vec::new();
        let mut nodes = Vec::with_capacity(region.len());
        for &n in region {
            let node = graph.node(n);
            if !is_compute(node.op) {
                return Err(format!("node {n:?} ({}) is not a compute op and cannot be rewritten", node.op));
            }
            let mut ids = Vec::new();
            for o in graph.operands(n) {
                let id = match memo.get(&o) {
                    Some(&id) => id,
                    None if in_region.contains(&o) => {
                        return Err(format!("node {n:?} ({}) comes before its operand {o:?} in the region", node.op))
                    }
                    None => {
                        let on = graph.node(o);
                        let leaf = if is_compute(on.op) || on.op == OpKind::Output {
                            outside.push(o);
                            KilnNode::Outside { slot: (outside.len() - 1) as u32, ty: on.ty.clone() }
                        } else {
                            KilnNode::Source { op: on.op, attrs: AttrSet::new(on.attrs.clone()), ty: on.ty.clone() }
                        };
                        let id = egraph.add(leaf.clone());
                        if matches!(leaf, KilnNode::Source { .. }) {
                            sources.entry(leaf).or_insert(o);
                            source_nodes.push(o);
                        }
                        memo.insert(o, id);
                        id
                    }
                };
                ids.push(id);
            }
            let attrs = Fact::Attrs(AttrSet::new(node.attrs.clone()));
            let facts: Vec<&Fact> = ids.iter().map(|&i| &egraph[i].data).collect();
            let ty = infer_facts(node.op, &facts, &attrs).map_err(|e| format!("node {n:?}: {e}"))?;
            if ty != node.ty {
                return Err(format!("node {n:?} ({}) is typed {} but its operands give {ty}", node.op, node.ty));
            }
            let Fact::Attrs(set) = attrs else { unreachable!() };
            let a = egraph.add(KilnNode::Attrs(set));
            let enode = KilnNode::op(node.op, &ids, a);
            let id = egraph.add(enode.clone());
            memo.insert(n, id);
            nodes.push((n, enode, id));
        }
        let roots = nodes
            .iter()
            .filter(|(n, _, _)| {
                let users = graph.users(*n);
                users.is_empty() || users.iter().any(|(u, _)| !in_region.contains(u))
            })
            .map(|&(n, _, id)| (n, id))
            .collect();
        egraph.rebuild();
        Ok(RegionEGraph { egraph, nodes, outside, sources, source_nodes, roots })
    }

    /// Every compute node of the graph as one region.
    pub fn whole(graph: &Graph) -> Result<RegionEGraph, String> {
        let region: Vec<NodeId> = graph.topo_order().into_iter().filter(|&n| is_compute(graph.op(n))).collect();
        RegionEGraph::new(graph, &region)
    }

    /// The nodes of the region.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The `input`, `param` and `constant` nodes the region reads.
    pub fn source_nodes(&self) -> &[NodeId] {
        &self.source_nodes
    }

    /// The classes of the region's results.
    pub fn root_classes(&self) -> Vec<Id> {
        self.roots.iter().map(|&(_, id)| self.egraph.find(id)).collect()
    }

    /// Replaces the e-graph (after a runner has grown it); it must be the one this region built.
    pub fn set_egraph(&mut self, egraph: KilnEGraph) {
        self.egraph = egraph;
    }

    /// Extracts the cheapest form of the region's results under `model` as an edit of `graph`
    /// (the graph the region was loaded from, unchanged since).
    pub fn extract(&mut self, graph: &Graph, model: &CostModel) -> Extraction {
        self.egraph.rebuild();
        let eg = &self.egraph;
        let extractor = Extractor::new(eg, KilnCost::new(eg, model));
        let orig: HashMap<KilnNode, NodeId> =
            self.nodes.iter().rev().map(|(n, enode, _)| (enode.clone().map_children(|c| eg.find(c)), *n)).collect();
        let mut m = Materializer {
            region: &*self,
            graph,
            extractor: &extractor,
            orig,
            memo: HashMap::new(),
            patch: Patch::new(),
            reused: HashSet::new(),
        };
        let mut replace = Vec::new();
        for &(r, id) in &self.roots {
            let v = m.value(id);
            if v != PatchValue::Existing(r) {
                replace.push((r, v));
            }
        }
        let Materializer { mut patch, reused, .. } = m;
        for (r, v) in replace {
            patch.replace_uses(r, v);
        }
        for (n, _, _) in &self.nodes {
            if !reused.contains(n) {
                patch.remove(*n);
            }
        }
        let changed = !patch.is_empty();
        Extraction { patch, changed }
    }
}

struct Materializer<'a, 'e> {
    region: &'a RegionEGraph,
    graph: &'a Graph,
    extractor: &'a Extractor<'e, KilnCost<'e>, KilnNode, TensorAnalysis>,
    /// The region's own nodes by (canonical) e-node: extraction reuses them when it picks them
    /// with the same operands.
    orig: HashMap<KilnNode, NodeId>,
    memo: HashMap<Id, PatchValue>,
    patch: Patch,
    reused: HashSet<NodeId>,
}

impl Materializer<'_, '_> {
    /// The graph value of an e-class: an existing node or one the patch adds.
    fn value(&mut self, class: Id) -> PatchValue {
        let eg = &self.region.egraph;
        let class = eg.find(class);
        if let Some(&v) = self.memo.get(&class) {
            return v;
        }
        let node = self.extractor.find_best_node(class).clone();
        let v = match &node {
            KilnNode::Source { op, attrs, ty } => match self.region.sources.get(&node) {
                Some(&n) => PatchValue::Existing(n),
                // A constant a rule made.
                None => self.patch.add(*op, attrs.attrs().clone(), &[], ty.clone()),
            },
            KilnNode::Outside { slot, .. } => PatchValue::Existing(self.region.outside[*slot as usize]),
            KilnNode::Attrs(_) => unreachable!("the analysis keeps attribute sets out of value classes"),
            KilnNode::Op { .. } => {
                let (op, operands, attrs) = node.split_op().expect("an op node");
                let vals: Vec<PatchValue> = operands.iter().map(|&c| self.value(c)).collect();
                let eg = &self.region.egraph;
                match self.orig.get(&node) {
                    Some(&n)
                        if self.graph.operands(n).into_iter().map(PatchValue::Existing).eq(vals.iter().copied()) =>
                    {
                        self.reused.insert(n);
                        PatchValue::Existing(n)
                    }
                    _ => {
                        let attrs = eg[attrs].data.attrs().expect("an attribute class").attrs().clone();
                        let ty = eg[class].data.ty().expect("a value class").clone();
                        self.patch.add(op, attrs, &vals, ty)
                    }
                }
            }
        };
        self.memo.insert(class, v);
        v
    }
}

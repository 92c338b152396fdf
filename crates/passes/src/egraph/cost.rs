//! The cost model extraction minimizes: for each op, **bytes moved + flops** (one flop weighs as
//! much as one byte), plus a fixed per-op overhead, estimated from the operand and result types.
//!
//! Symbolic dims are evaluated at a nominal value: [`CostModel::decode`] sets every symbol (`T`,
//! `P`, ...) to 1 — one token of a decode step — and assumes attention with a KV cache reads
//! [`CostModel::context`] = 512 cached keys. What the model must get right is the *order* of the
//! alternatives rules create:
//!
//! - a fused attention (`rope = ...`) costs its rotation flops but no extra traffic, while each
//!   `rope` op reads and writes its tensor and pays the overhead — fused is cheaper;
//! - `reshape` is a view (no bytes) but still an op, so cancelled or composed layouts (fewer
//!   reshapes/permutes) are cheaper; a `permute` moves its tensor;
//! - removing `x * 1`, `neg(neg x)` removes an op's traffic and overhead.

use super::analysis::{infer_node, KilnEGraph};
use super::lang::KilnNode;
use egg::{CostFunction, Id, Language};
use kiln_ir::{Attrs, Graph, OpKind, RopeSpec, Shape, TensorType};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct CostModel {
    /// The value of every symbolic dim when sizing tensors.
    pub symbol_value: i64,
    /// Cached keys an attention with a KV cache reads per query.
    pub context: i64,
    /// Fixed cost of any op (a kernel launch, a pass over memory), in byte-equivalents.
    pub op_overhead: f64,
}

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel::decode()
    }
}

/// Flops per element of elementwise ops.
fn elementwise_flops(op: OpKind) -> f64 {
    use OpKind::*;
    match op {
        Add | Sub | Mul | Maximum | Minimum | Neg | Abs | Relu => 1.0,
        Div | Recip | Sqrt | Rsqrt => 4.0,
        _ => 8.0,
    }
}

impl CostModel {
    /// One decode step: symbols = 1, 512 cached keys, overhead 64.
    pub fn decode() -> CostModel {
        CostModel { symbol_value: 1, context: 512, op_overhead: 64.0 }
    }

    fn numel(&self, shape: &Shape) -> f64 {
        shape.dims().iter().map(|d| d.eval(&|_| Some(self.symbol_value)).unwrap_or(1).max(0) as f64).product()
    }

    fn dim(&self, t: &TensorType, i: usize) -> f64 {
        t.shape.dims().get(i).map_or(1.0, |d| d.eval(&|_| Some(self.symbol_value)).unwrap_or(1).max(0) as f64)
    }

    fn bytes(&self, t: &TensorType) -> f64 {
        let n = self.numel(&t.shape);
        t.dtype.storage_bytes(n as usize).map_or(n * 4.0, |b| b as f64)
    }

    /// Flops of rotating `x[T, H, D]` (its rotary dims).
    fn rope_flops(&self, x: &TensorType, spec: Option<&RopeSpec>) -> f64 {
        let d = self.dim(x, 2);
        let rd = spec.map_or(d, |s| s.rotary_dim(d as usize) as f64);
        6.0 * self.numel(&x.shape) * (rd / d.max(1.0))
    }

    /// The cost of one op node (not counting its operands).
    pub fn op_cost(&self, op: OpKind, operands: &[&TensorType], attrs: &Attrs, result: &TensorType) -> f64 {
        use OpKind::*;
        let read: f64 = operands.iter().map(|t| self.bytes(t)).sum();
        let write = self.bytes(result);
        let out = self.numel(&result.shape);
        let work = match op {
            Input | Param | Constant | Output => return 0.0,
            Reshape => 0.0,
            Permute | Concat | Split | Slice | Cast => read + write,
            _ if op.is_elementwise() => read + write + out * elementwise_flops(op),
            MatMul => {
                let k =
                    operands[0].shape.last().map_or(1.0, |d| d.eval(&|_| Some(self.symbol_value)).unwrap_or(1) as f64);
                read + write + 2.0 * out * k
            }
            // Reads only the rows it gathers.
            Embedding => self.bytes(operands[1]) + 2.0 * write,
            Rope => {
                let spec = RopeSpec::from_rope_op(attrs).ok();
                read + write + self.rope_flops(operands[0], spec.as_ref())
            }
            Attention => {
                let (q, k) = (operands[0], operands[1]);
                let (t, hq, d) = (self.dim(q, 0), self.dim(q, 1), self.dim(q, 2));
                let (hkv, dv) = (self.dim(k, 1), self.dim(operands[2], 2));
                let keys = if attrs.int("cache").is_some() { self.context as f64 } else { t };
                let cache_read = if attrs.int("cache").is_some() { keys * hkv * (d + dv) * 4.0 } else { 0.0 };
                let rope = match RopeSpec::from_attention(attrs) {
                    Ok(Some(spec)) => self.rope_flops(q, Some(&spec)) + self.rope_flops(k, Some(&spec)),
                    _ => 0.0,
                };
                read + write + cache_read + 2.0 * t * hq * keys * (d + dv) + rope
            }
            Moe => {
                let experts = attrs.int("experts").unwrap_or(1).max(1) as f64;
                let top_k = attrs.int("top_k").unwrap_or(1) as f64;
                let weights: f64 = operands[2..].iter().map(|t| self.bytes(t)).sum();
                let x = self.bytes(operands[0]) + self.bytes(operands[1]);
                let tokens = self.dim(operands[0], 0);
                let per_expert: f64 = operands[2..].iter().map(|t| self.numel(&t.shape)).sum::<f64>() / experts;
                x + write + weights * top_k / experts + 2.0 * tokens * top_k * per_expert
            }
            // Norms, softmax, reductions, top-k, gather, fused elementwise, ...: a pass or two.
            _ => read + write + 4.0 * out,
        };
        self.op_overhead + work
    }

    /// The cost of a whole graph: the sum over its compute nodes.
    pub fn graph_cost(&self, graph: &Graph) -> f64 {
        graph
            .node_ids()
            .map(|n| {
                let node = graph.node(n);
                let ops = graph.operands(n);
                let tys: Vec<&TensorType> = ops.iter().map(|&o| graph.ty(o)).collect();
                self.op_cost(node.op, &tys, &node.attrs, &node.ty)
            })
            .sum()
    }
}

/// [`CostModel`] as an egg cost function over one e-graph: a node's cost is its own plus its
/// children's (a tree cost; extraction keeps shared values shared).
pub struct KilnCost<'a> {
    egraph: &'a KilnEGraph,
    model: &'a CostModel,
    own: HashMap<KilnNode, f64>,
}

impl<'a> KilnCost<'a> {
    pub fn new(egraph: &'a KilnEGraph, model: &'a CostModel) -> KilnCost<'a> {
        KilnCost { egraph, model, own: HashMap::new() }
    }

    /// The cost of the node itself.
    pub fn own_cost(&mut self, enode: &KilnNode) -> f64 {
        if let Some(&c) = self.own.get(enode) {
            return c;
        }
        let c = match enode.split_op() {
            None => 0.0,
            Some((op, operands, attrs)) => {
                let eg = self.egraph;
                let tys: Option<Vec<&TensorType>> = operands.iter().map(|&o: &Id| eg[o].data.ty()).collect();
                match (tys, eg[attrs].data.attrs(), infer_node(eg, enode)) {
                    (Some(tys), Some(a), Ok(ty)) => self.model.op_cost(op, &tys, a.attrs(), &ty),
                    _ => f64::INFINITY,
                }
            }
        };
        self.own.insert(enode.clone(), c);
        c
    }
}

impl CostFunction<KilnNode> for KilnCost<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &KilnNode, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let own = self.own_cost(enode);
        enode.children().iter().fold(own, |acc, &c| acc + costs(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Attr, DType, Dim, RopeLayout};

    fn t(dims: &[i64]) -> TensorType {
        TensorType::new(DType::F32, dims.iter().map(|&d| if d < 0 { Dim::sym("T") } else { Dim::c(d) }))
    }

    #[test]
    fn fused_rope_is_cheaper_than_rope_ops() {
        let m = CostModel::decode();
        let (q, k, v, pos) =
            (t(&[-1, 9, 64]), t(&[-1, 3, 64]), t(&[-1, 3, 64]), TensorType::new(DType::I32, [Dim::sym("T")]));
        let spec = RopeSpec::new(RopeLayout::Neox, 1e5);
        let plain = Attrs::new().with("causal", Attr::Bool(true)).with("cache", Attr::Int(0));
        let fused = plain.clone().with("rope", spec.to_attention_attr());
        let unfused = m.op_cost(OpKind::Attention, &[&q, &k, &v, &pos], &plain, &q)
            + m.op_cost(OpKind::Rope, &[&q, &pos], &spec.to_rope_attrs(), &q)
            + m.op_cost(OpKind::Rope, &[&k, &pos], &spec.to_rope_attrs(), &k);
        let fused = m.op_cost(OpKind::Attention, &[&q, &k, &v, &pos], &fused, &q);
        assert!(fused < unfused, "{fused} vs {unfused}");
    }

    #[test]
    fn reshape_is_a_view_but_not_free() {
        let m = CostModel::decode();
        let attrs = Attrs::new().with("shape", Attr::Shape(t(&[-1, 576]).shape));
        assert_eq!(m.op_cost(OpKind::Reshape, &[&t(&[-1, 9, 64])], &attrs, &t(&[-1, 576])), m.op_overhead);
        assert_eq!(m.op_cost(OpKind::Param, &[], &Attrs::new(), &t(&[576, 576])), 0.0);
    }
}

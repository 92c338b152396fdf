//! A graph builder that infers and checks each node's type as it is added, so code that constructs
//! graphs (model definitions, tests) gets the verifier's errors at the line that caused them.

use crate::attr::{Attr, Attrs};
use crate::error::BuildError;
use crate::graph::{Graph, NodeId};
use crate::op::OpKind;
use crate::shape::{Shape, TensorType};
use crate::DType;

pub struct GraphBuilder {
    graph: Graph,
}

type R = Result<NodeId, BuildError>;

impl GraphBuilder {
    pub fn new(name: impl Into<String>) -> GraphBuilder {
        GraphBuilder { graph: Graph::new(name) }
    }

    /// Continues building on an existing graph.
    pub fn from_graph(graph: Graph) -> GraphBuilder {
        GraphBuilder { graph }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn ty(&self, n: NodeId) -> &TensorType {
        self.graph.ty(n)
    }

    pub fn finish(self) -> Graph {
        self.graph
    }

    /// Adds any op, inferring its type; `declared` is required for inputs, params and constants.
    pub fn node(&mut self, op: OpKind, operands: &[NodeId], attrs: Attrs, declared: Option<TensorType>) -> R {
        let info = op.info();
        let err = |msg: String| BuildError { op: info.name, msg };
        if !info.operands.accepts(operands.len()) {
            return Err(err(format!("expects {}, got {}", info.operands.describe(), operands.len())));
        }
        if let Some((i, &o)) = operands.iter().enumerate().find(|(_, &o)| !self.graph.op(o).info().has_result) {
            return Err(err(format!("operand {i} is a '{}', which produces no value", self.graph.op(o))));
        }
        crate::attr::check_attrs(info.attrs, &attrs).map_err(err)?;
        let tys: Vec<&TensorType> = operands.iter().map(|&o| self.graph.ty(o)).collect();
        let ty = op.infer(&tys, &attrs, declared.as_ref()).map_err(err)?;
        Ok(self.graph.add_node(op, attrs, operands, ty))
    }

    pub fn op(&mut self, op: OpKind, operands: &[NodeId], attrs: Attrs) -> R {
        self.node(op, operands, attrs, None)
    }

    pub fn input(&mut self, name: &str, ty: TensorType) -> R {
        self.node(OpKind::Input, &[], named(name), Some(ty))
    }

    pub fn param(&mut self, name: &str, ty: TensorType) -> R {
        self.node(OpKind::Param, &[], named(name), Some(ty))
    }

    pub fn constant(&mut self, value: f64, ty: TensorType) -> R {
        self.node(OpKind::Constant, &[], Attrs::new().with("value", Attr::Float(value)), Some(ty))
    }

    /// A scalar constant of the given dtype, broadcastable against anything.
    pub fn scalar(&mut self, value: f64, dtype: DType) -> R {
        self.constant(value, TensorType { dtype, shape: Shape::scalar() })
    }

    pub fn output(&mut self, name: &str, x: NodeId) -> R {
        self.node(OpKind::Output, &[x], named(name), None)
    }

    pub fn unary(&mut self, op: OpKind, x: NodeId) -> R {
        self.op(op, &[x], Attrs::new())
    }

    pub fn binary(&mut self, op: OpKind, a: NodeId, b: NodeId) -> R {
        self.op(op, &[a, b], Attrs::new())
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> R {
        self.binary(OpKind::Add, a, b)
    }

    pub fn mul(&mut self, a: NodeId, b: NodeId) -> R {
        self.binary(OpKind::Mul, a, b)
    }

    pub fn gelu(&mut self, x: NodeId, approx: &str) -> R {
        self.op(OpKind::Gelu, &[x], Attrs::new().with("approx", Attr::Ident(approx.into())))
    }

    /// `x · wᵀ (+ bias)`: a Hugging Face `nn.Linear` with weight `[out, in]`.
    pub fn linear(&mut self, x: NodeId, w: NodeId, bias: Option<NodeId>) -> R {
        let mut ops = vec![x, w];
        ops.extend(bias);
        self.op(OpKind::MatMul, &ops, Attrs::new().with("transpose_b", Attr::Bool(true)))
    }

    pub fn rms_norm(&mut self, x: NodeId, w: Option<NodeId>, eps: f64) -> R {
        let mut ops = vec![x];
        ops.extend(w);
        self.op(OpKind::RmsNorm, &ops, Attrs::new().with("eps", Attr::Float(eps)))
    }

    pub fn reshape(&mut self, x: NodeId, shape: Shape) -> R {
        self.op(OpKind::Reshape, &[x], Attrs::new().with("shape", Attr::Shape(shape)))
    }

    pub fn permute(&mut self, x: NodeId, perm: &[i64]) -> R {
        self.op(OpKind::Permute, &[x], Attrs::new().with("perm", Attr::Ints(perm.to_vec())))
    }

    pub fn slice(&mut self, x: NodeId, axis: i64, start: i64, end: Option<i64>) -> R {
        let mut a = Attrs::new().with("axis", Attr::Int(axis)).with("start", Attr::Int(start));
        if let Some(e) = end {
            a.set("end", Attr::Int(e));
        }
        self.op(OpKind::Slice, &[x], a)
    }

    pub fn cast(&mut self, x: NodeId, dtype: DType) -> R {
        self.op(OpKind::Cast, &[x], Attrs::new().with("dtype", Attr::DType(dtype)))
    }
}

fn named(name: &str) -> Attrs {
    Attrs::new().with("name", Attr::Str(name.to_string()))
}

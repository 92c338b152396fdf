//! `moe-dispatch`: lowers each `moe` op into the explicit ops of a sparsely-gated mixture of experts
//! (arXiv 1701.06538) — route, dispatch each expert's tokens, run its FFN, combine — so that later
//! stages (codegen, a runtime that places or offloads experts one by one) see every expert as its
//! own matmuls over its own weights:
//!
//! ```text
//! %logits = matmul %x, %router {transpose_b}          // [T, E]
//! %probs  = softmax %logits                           // over experts
//! %idx    = top_k %probs {k = K}                      // i32[T, K]
//! %gates  = gather %probs, %idx {axis = 1}            // [T, K]; with norm_topk divided by
//!                                                     //   reduce_sum %gates {axes = [1], keepdim};
//!                                                     //   a constant 1 with `unweighted`
//! %acc    = constant 0                                // [T, D]
//! per expert e, in order:
//!   %g_e   = expert_gate %idx, %gates {expert = e}    // [T], 0 for tokens that did not pick e
//!   %rows  = nonzero %g_e {dim = "n3e5"}              // i32[n3e5]: the tokens e serves
//!   %xs    = take %x, %rows                           // [n3e5, D]
//!   %y     = matmul (act(%xs·gateᵀ) ⊙ %xs·upᵀ), down {transpose_b}
//!   %y     = mul %y, reshape(take %g_e, %rows) {shape = [n3e5, 1]}
//!   %acc   = scatter_rows %acc, %rows, %y {mode = add}
//! ```
//!
//! This is op for op how the interpreter evaluates `moe` (`kiln_ir::interp::ops::moe::moe`), so
//! the result is bit-identical to the dense op. Each `nonzero` binds a data-dependent dim of its
//! own: `n<layer>e<expert>` with the layer read from the router's param name (`m<i>e<expert>`, the
//! i-th moe op, when the router is not a layer's param), made unique against every symbol already
//! in the graph.

use crate::blocks::layer_of;
use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use kiln_ir::{Attr, Attrs, Dim, Graph, NodeId, OpKind, Patch, PatchValue, Shape, TensorType};
use std::collections::BTreeSet;

pub const NAME: &str = "moe-dispatch";

#[derive(Debug, Default)]
pub struct MoeDispatch;

pub fn create(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known(NAME, &[])?;
    Ok(Box::new(MoeDispatch))
}

/// The prefix of the dim names of one moe op's experts: `n<layer>` from the router's param name,
/// else `m<index>`; a `_<k>` suffix is added until no expert's name is taken.
fn dim_prefix(g: &Graph, router: Option<NodeId>, index: usize, experts: i64, used: &BTreeSet<String>) -> String {
    let layer =
        router.filter(|&r| g.op(r) == OpKind::Param).and_then(|r| g.node(r).attrs.str("name")).and_then(layer_of);
    let base = match layer {
        Some(l) => format!("n{l}"),
        None => format!("m{index}"),
    };
    let free = |p: &str| (0..experts).all(|e| !used.contains(&format!("{p}e{e}")));
    let mut prefix = base.clone();
    let mut k = 0;
    while !free(&prefix) {
        k += 1;
        prefix = format!("{base}_{k}");
    }
    prefix
}

/// The `experts` attribute of a moe op, checked against its operands (x, router, 3 per expert).
fn expert_count(g: &Graph, m: NodeId) -> Result<i64, String> {
    let experts = g.node(m).attrs.int("experts").ok_or("missing attribute 'experts'")?;
    let weights = g.operands(m).len().saturating_sub(2);
    if experts < 1 || experts.checked_mul(3) != Some(weights as i64) || g.operands(m).len() < 2 {
        return Err(format!("experts = {experts} does not match its {weights} expert weights (gate, up, down each)"));
    }
    Ok(experts)
}

/// Queues nodes into a patch, inferring types; errors name the moe op being lowered.
struct Emit<'g> {
    g: &'g Graph,
    patch: Patch,
}

impl Emit<'_> {
    fn op(&mut self, op: OpKind, attrs: Attrs, operands: &[PatchValue]) -> Result<PatchValue, String> {
        self.patch.add_inferred(self.g, op, attrs, operands).map_err(|e| format!("building {op}: {e}"))
    }

    fn matmul_t(&mut self, a: PatchValue, b: PatchValue) -> Result<PatchValue, String> {
        self.op(OpKind::MatMul, Attrs::new().with("transpose_b", Attr::Bool(true)), &[a, b])
    }

    fn constant(&mut self, value: f64, ty: TensorType) -> PatchValue {
        self.patch.add(OpKind::Constant, Attrs::new().with("value", Attr::Float(value)), &[], ty)
    }

    fn ty(&self, v: PatchValue) -> &TensorType {
        self.patch.ty(self.g, v)
    }

    /// The activation of the moe op's `activation` attribute, as the elementwise op it names.
    fn activation(&mut self, act: &str, x: PatchValue) -> Result<PatchValue, String> {
        let gelu = |approx: &str| Attrs::new().with("approx", Attr::Ident(approx.into()));
        match act {
            "silu" => self.op(OpKind::Silu, Attrs::new(), &[x]),
            "gelu_tanh" => self.op(OpKind::Gelu, gelu("tanh"), &[x]),
            "gelu" => self.op(OpKind::Gelu, gelu("erf"), &[x]),
            other => Err(format!("unknown activation '{other}'")),
        }
    }

    /// The explicit ops of one moe op; returns the value that replaces it.
    fn lower(&mut self, m: NodeId, dims: &str) -> Result<PatchValue, String> {
        let g = self.g;
        let node = g.node(m);
        let need = |k: &str| format!("missing attribute '{k}'");
        let experts = expert_count(g, m)?;
        let top_k = node.attrs.int("top_k").ok_or_else(|| need("top_k"))?;
        let act = node.attrs.ident("activation").ok_or_else(|| need("activation"))?.to_string();
        let operands = g.operands(m);
        let (x, router) = (PatchValue::from(operands[0]), PatchValue::from(operands[1]));
        let xt = self.ty(x).clone();
        let tokens = xt.shape.dim(0).clone();

        // Route: probabilities over experts, the top k of them, and each choice's gate.
        let logits = self.matmul_t(x, router)?;
        let probs = self.op(OpKind::Softmax, Attrs::new(), &[logits])?;
        let idx = self.op(OpKind::TopK, Attrs::new().with("k", Attr::Int(top_k)), &[probs])?;
        let gates = if node.attrs.flag("unweighted") {
            let ty = TensorType::new(xt.dtype, [tokens.clone(), Dim::c(top_k)]);
            self.constant(1.0, ty)
        } else {
            let g = self.op(OpKind::Gather, Attrs::new().with("axis", Attr::Int(1)), &[probs, idx])?;
            if node.attrs.flag("norm_topk") {
                let sum = Attrs::new().with("axes", Attr::Ints(vec![1])).with("keepdim", Attr::Bool(true));
                let total = self.op(OpKind::ReduceSum, sum, &[g])?;
                self.op(OpKind::Div, Attrs::new(), &[g, total])?
            } else {
                g
            }
        };

        // Dispatch and combine, one expert at a time, into rows of zeros.
        let mut acc = self.constant(0.0, xt.clone());
        for e in 0..experts {
            let [wg, wu, wd] = [0, 1, 2].map(|j| PatchValue::from(operands[2 + 3 * e as usize + j]));
            let gate = self.op(OpKind::ExpertGate, Attrs::new().with("expert", Attr::Int(e)), &[idx, gates])?;
            let dim = format!("{dims}e{e}");
            let rows = self.op(OpKind::Nonzero, Attrs::new().with("dim", Attr::Str(dim.clone())), &[gate])?;
            let xs = self.op(OpKind::Take, Attrs::new(), &[x, rows])?;
            let h = self.matmul_t(xs, wg)?;
            let h = self.activation(&act, h)?;
            let u = self.matmul_t(xs, wu)?;
            let h = self.op(OpKind::Mul, Attrs::new(), &[h, u])?;
            let y = self.matmul_t(h, wd)?;
            let w = self.op(OpKind::Take, Attrs::new(), &[gate, rows])?;
            let column = Shape::new([Dim::sym(&dim), Dim::c(1)]);
            let w = self.op(OpKind::Reshape, Attrs::new().with("shape", Attr::Shape(column)), &[w])?;
            let y = self.op(OpKind::Mul, Attrs::new(), &[y, w])?;
            let add = Attrs::new().with("mode", Attr::Ident("add".into()));
            acc = self.op(OpKind::ScatterRows, add, &[acc, rows, y])?;
        }
        if self.ty(acc) != g.ty(m) {
            return Err(format!("the lowered result has type {}, the moe op had {}", self.ty(acc), g.ty(m)));
        }
        Ok(acc)
    }
}

impl Pass for MoeDispatch {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let moes: Vec<NodeId> = g.topo_order().into_iter().filter(|&n| g.op(n) == OpKind::Moe).collect();
        let mut used = g.symbols_in_use();
        let mut emit = Emit { g, patch: Patch::new() };
        let mut experts = 0;
        for (i, &m) in moes.iter().enumerate() {
            let fail = |e: String| PassError::new(NAME, format!("moe op {i}: {e}"));
            let n = expert_count(g, m).map_err(fail)?;
            let prefix = dim_prefix(g, g.operands(m).get(1).copied(), i, n, &used);
            let out = emit.lower(m, &prefix).map_err(fail)?;
            used.extend((0..n).map(|e| format!("{prefix}e{e}")));
            emit.patch.replace_uses(m, out);
            emit.patch.remove(m);
            experts += n;
        }
        let patch = emit.patch;
        g.apply(patch);
        cx.stat(NAME, "moe-ops", moes.len());
        cx.stat(NAME, "experts", experts);
        Ok(Changed::from_bool(!moes.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::run;

    const MOE: &str = r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = param {name = "model.layers.3.block_sparse_moe.gate.weight"} : f32[2,4]
  %2 = param {name = "w1"} : f32[6,4]
  %3 = param {name = "w3"} : f32[6,4]
  %4 = param {name = "w2"} : f32[4,6]
  %5 = moe %0, %1, %2, %3, %4, %2, %3, %4 {activation = silu, experts = 2, norm_topk, top_k = 1} : f32[T,4]
  output %5 {name = "y"}
}"#;

    #[test]
    fn lowers_every_moe_op_with_layer_named_dims() {
        let (changed, text, g) = run(&MoeDispatch, MOE);
        assert!(changed);
        assert!(g.node_ids().all(|n| g.op(n) != OpKind::Moe), "{text}");
        assert!(text.contains("dim = \"n3e0\"") && text.contains("dim = \"n3e1\""), "{text}");
        assert_eq!(g.node_ids().filter(|&n| g.op(n) == OpKind::ScatterRows).count(), 2);
        assert!(text.contains("reduce_sum"), "norm_topk renormalizes: {text}");
    }

    #[test]
    fn unweighted_gates_are_ones_and_taken_names_are_avoided() {
        let src = MOE.replace("norm_topk", "unweighted").replace("[T,4]", "[n3e0,4]");
        let (_, text, g) = run(&MoeDispatch, &src);
        assert!(!text.contains("gather") && text.contains("constant"), "{text}");
        assert!(text.contains("dim = \"n3_1e0\""), "{text}");
        let (changed, again, _) = {
            let mut g2 = g.clone();
            let c = MoeDispatch.run(&mut g2, &mut PassCx::new()).unwrap();
            (c, kiln_ir::print(&g2), g2)
        };
        assert!(!changed.changed());
        assert_eq!(again, text);
    }

    #[test]
    fn a_moe_op_whose_experts_do_not_match_its_weights_is_an_error() {
        let mut g = kiln_ir::parse(MOE).unwrap();
        let m = g.node_ids().find(|&n| g.op(n) == OpKind::Moe).unwrap();
        g.node_mut(m).attrs.set("experts", Attr::Int(i64::MAX));
        let err = MoeDispatch.run(&mut g, &mut PassCx::new()).unwrap_err().to_string();
        assert!(err.contains("does not match its 6 expert weights"), "{err}");
        assert!(g.node_ids().any(|n| g.op(n) == OpKind::Moe));
    }

    #[test]
    fn no_moe_no_change() {
        let (changed, _, _) = run(
            &MoeDispatch,
            "graph @g {\n  %0 = input {name = \"x\"} : f32[2]\n  %1 = neg %0 : f32[2]\n  output %1 {name = \"y\"}\n}",
        );
        assert!(!changed);
    }
}

//! `canonicalize`: puts attributes in one canonical spelling and folds trivial identities, so that
//! later passes (cse, the e-graph) see equal things written equally. Every rewrite is exact under the
//! reference interpreter's semantics (with one IEEE footnote below).
//!
//! Attributes:
//! - flags set to `false` are dropped (`transpose_b = false`, `keepdim = false`, `causal = false`);
//! - negative axes are resolved against the operand's rank (`softmax`, `concat`, `split`, `slice`,
//!   `gather`; `reduce_*` axes are also sorted); `softmax`'s axis is dropped when it is the last
//!   (the default, -1);
//! - `slice` bounds: a negative `start`/`end` on a constant dim is resolved, and `end` is dropped
//!   when it equals the dim;
//! - `attention`'s `scale` is dropped when it is exactly 1/√head_dim (the default), and the rotary
//!   `dim` of `rope` (or of `attention`'s `rope`) when it equals the head dim.
//!
//! Folds (the node's uses go to an existing value of the same type; the node is removed, and
//! whatever becomes unused is left for `dce`):
//! - `reshape` to the operand's own shape, `permute` by the identity, `cast` to the same dtype,
//!   `concat` of one operand, `split` into one chunk, `slice` of a whole dim;
//! - `x + 0`, `0 + x`, `x - 0`, `x * 1`, `1 * x`, `x / 1` where the 0 or 1 is a `constant` and the
//!   result has x's type (so no broadcasting is lost). `x + 0` is not bit-exact for x = -0.0 (it gives
//!   +0.0); like every ML compiler we fold it anyway;
//! - `neg (neg x)`.
//!
//! Folds see through each other within one run (a `neg` of a folded `reshape` of a `neg` folds), so
//! a second run finds nothing to do.

use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use kiln_ir::attr::AttrKind;
use kiln_ir::{Attr, Attrs, Dim, Graph, NodeId, OpKind, Patch};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Canonicalize;

pub fn create(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known("canonicalize", &[])?;
    Ok(Box::new(Canonicalize))
}

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        // Attributes first (they do not change types), so folds see canonical attributes.
        let updates: Vec<(NodeId, Attrs)> =
            g.node_ids().filter_map(|n| canonical_attrs(g, n).map(|a| (n, a))).collect();
        for (n, attrs) in &updates {
            g.node_mut(*n).attrs = attrs.clone();
        }
        // Then folds, in order, each looking through the ones before it.
        let mut folded: HashMap<NodeId, NodeId> = HashMap::new();
        let mut patch = Patch::new();
        for n in g.topo_order() {
            let operands: Vec<NodeId> = g.operands(n).iter().map(|o| *folded.get(o).unwrap_or(o)).collect();
            if let Some(x) = fold(g, n, &operands, &folded) {
                if g.ty(x) == g.ty(n) {
                    folded.insert(n, x);
                    patch.replace_uses(n, x);
                    patch.remove(n);
                }
            }
        }
        g.apply(patch);
        cx.stat("canonicalize", "attrs", updates.len());
        cx.stat("canonicalize", "folded", folded.len());
        Ok(Changed::from_bool(!updates.is_empty() || !folded.is_empty()))
    }
}

/// `axis` resolved against `rank`, if it is negative and in range.
fn resolve_axis(axis: i64, rank: usize) -> Option<i64> {
    let r = rank as i64;
    (axis < 0 && axis + r >= 0).then_some(axis + r)
}

/// The canonical attributes of a node, when they differ from its current ones.
fn canonical_attrs(g: &Graph, n: NodeId) -> Option<Attrs> {
    let node = g.node(n);
    let mut a = node.attrs.clone();
    // Flags default to false.
    for spec in node.op.info().attrs {
        if matches!(spec.kind, AttrKind::Flag) && a.get(spec.name) == Some(&Attr::Bool(false)) {
            a.0.remove(spec.name);
        }
    }
    let operands = g.operands(n);
    let x = operands.first().map(|&o| g.ty(o));
    let rank = x.map_or(0, |t| t.rank());
    match node.op {
        OpKind::Softmax => {
            let axis = a.int("axis").unwrap_or(-1);
            let resolved = if axis < 0 { axis + rank as i64 } else { axis };
            if resolved == rank as i64 - 1 {
                a.0.remove("axis");
            } else if resolved != axis {
                a.set("axis", Attr::Int(resolved));
            }
        }
        OpKind::Concat | OpKind::Split | OpKind::Gather | OpKind::Slice => {
            if let Some(r) = a.int("axis").and_then(|ax| resolve_axis(ax, rank)) {
                a.set("axis", Attr::Int(r));
            }
        }
        OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax => {
            if let Some(axes) = a.ints("axes") {
                let mut v: Vec<i64> = axes.iter().map(|&ax| resolve_axis(ax, rank).unwrap_or(ax)).collect();
                v.sort_unstable();
                a.set("axes", Attr::Ints(v));
            }
        }
        _ => {}
    }
    if node.op == OpKind::Slice {
        canonical_slice_bounds(g, n, &mut a);
    }
    if let (OpKind::Attention, Some(q)) = (node.op, x) {
        let head = q.shape.dims().get(2).and_then(Dim::as_const);
        if let (Some(d), Some(s)) = (head, a.float("scale")) {
            if s.to_bits() == (1.0 / (d as f64).sqrt()).to_bits() {
                a.0.remove("scale");
            }
        }
        if let (Some(d), Some(Attr::Tagged { fields, .. })) = (head, a.0.get_mut("rope")) {
            if fields.int("dim") == Some(d) {
                fields.0.remove("dim");
            }
        }
    }
    if let (OpKind::Rope, Some(t)) = (node.op, x) {
        if t.shape.dims().get(2).and_then(Dim::as_const).is_some_and(|d| a.int("dim") == Some(d)) {
            a.0.remove("dim");
        }
    }
    (a != node.attrs).then_some(a)
}

/// Resolves negative `start`/`end` against a constant dim and drops an `end` equal to the dim.
fn canonical_slice_bounds(g: &Graph, n: NodeId, a: &mut Attrs) {
    let Some(&x) = g.operands(n).first() else { return };
    let t = g.ty(x);
    let Some(axis) = a.int("axis").and_then(|ax| t.shape.axis(ax)) else { return };
    let d = t.shape.dim(axis);
    if let Some(dc) = d.as_const() {
        for key in ["start", "end"] {
            if let Some(b) = a.int(key).filter(|&b| b < 0 && b + dc >= 0) {
                a.set(key, Attr::Int(b + dc));
            }
        }
    }
    if a.int("end").is_some_and(|e| Dim::c(e) == *d) {
        a.0.remove("end");
    }
}

/// Whether `n` is a `constant` holding `v`.
fn is_const(g: &Graph, n: NodeId, v: f64) -> bool {
    g.op(n) == OpKind::Constant && g.node(n).attrs.float("value") == Some(v)
}

/// The existing value `n` equals, if it is a trivial identity. `operands` are `n`'s operands with
/// earlier folds applied. The caller checks that the types agree.
fn fold(g: &Graph, n: NodeId, operands: &[NodeId], folded: &HashMap<NodeId, NodeId>) -> Option<NodeId> {
    let node = g.node(n);
    let a = &node.attrs;
    let x = *operands.first()?;
    match node.op {
        OpKind::Reshape | OpKind::Cast => Some(x),
        OpKind::Permute => a.ints("perm")?.iter().enumerate().all(|(i, &p)| p == i as i64).then_some(x),
        OpKind::Concat => (operands.len() == 1).then_some(x),
        OpKind::Split => (a.ints("sizes")?.len() == 1).then_some(x),
        OpKind::Slice => (a.int("start") == Some(0)).then_some(x),
        OpKind::Add if is_const(g, operands[1], 0.0) => Some(x),
        OpKind::Add if is_const(g, x, 0.0) => Some(operands[1]),
        OpKind::Sub | OpKind::Div if is_const(g, operands[1], if node.op == OpKind::Sub { 0.0 } else { 1.0 }) => {
            Some(x)
        }
        OpKind::Mul if is_const(g, operands[1], 1.0) => Some(x),
        OpKind::Mul if is_const(g, x, 1.0) => Some(operands[1]),
        OpKind::Neg if g.op(x) == OpKind::Neg => {
            let inner = *g.operands(x).first()?;
            Some(*folded.get(&inner).unwrap_or(&inner))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::{canon, run};

    #[test]
    fn normalizes_attributes() {
        let ir = r#"graph @g {
  %0 = input {name = "x"} : f32[T,8]
  %1 = param {name = "w"} : f32[8,8]
  %2 = matmul %0, %1 {transpose_b = false} : f32[T,8]
  %3 = softmax %2 {axis = -1} : f32[T,8]
  %4 = softmax %3 {axis = -2} : f32[T,8]
  %5 = slice %4 {axis = -1, start = -4, end = 8} : f32[T,4]
  %6 = reduce_sum %5 {axes = [-1, 0], keepdim = false} : f32[]
  output %6 {name = "y"}
}"#;
        let (changed, out, _) = run(&Canonicalize, ir);
        assert!(changed);
        assert_eq!(
            out,
            canon(
                r#"graph @g {
  %0 = input {name = "x"} : f32[T,8]
  %1 = param {name = "w"} : f32[8,8]
  %2 = matmul %0, %1 : f32[T,8]
  %3 = softmax %2 : f32[T,8]
  %4 = softmax %3 {axis = 0} : f32[T,8]
  %5 = slice %4 {axis = 1, start = 4} : f32[T,4]
  %6 = reduce_sum %5 {axes = [0, 1]} : f32[]
  output %6 {name = "y"}
}"#
            )
        );
        assert!(!run(&Canonicalize, &out).0, "canonicalize is idempotent");
    }

    #[test]
    fn attention_defaults() {
        let ir = r#"graph @g {
  %0 = input {name = "q"} : f32[T,2,16]
  %1 = input {name = "pos"} : i32[T]
  %2 = attention %0, %0, %0, %1 {causal = false, rope = neox{dim = 16, theta = 10000.0}, scale = 0.25} : f32[T,2,16]
  %3 = attention %2, %2, %2, %1 {scale = 0.5} : f32[T,2,16]
  %4 = rope %3, %1 {dim = 16, layout = neox, theta = 10000.0} : f32[T,2,16]
  output %4 {name = "y"}
}"#;
        let (_, out, _) = run(&Canonicalize, ir);
        assert!(out.contains("%2 = attention %0, %0, %0, %1 {rope = neox{theta = 10000.0}} :"), "{out}");
        assert!(out.contains("{scale = 0.5}"), "a non-default scale stays: {out}");
        assert!(out.contains("rope %3, %1 {layout = neox, theta = 10000.0}"), "{out}");
    }

    #[test]
    fn folds_identities_through_each_other() {
        let ir = r#"graph @g {
  %0 = input {name = "x"} : f32[T,8]
  %1 = constant {value = 0.0} : f32[]
  %2 = constant {value = 1.0} : f32[]
  %3 = neg %0 : f32[T,8]
  %4 = reshape %3 {shape = [T,8]} : f32[T,8]
  %5 = neg %4 : f32[T,8]
  %6 = add %5, %1 : f32[T,8]
  %7 = mul %2, %6 : f32[T,8]
  %8 = permute %7 {perm = [0, 1]} : f32[T,8]
  %9 = cast %8 {dtype = f32} : f32[T,8]
  %10 = concat %9 {axis = 0} : f32[T,8]
  %11 = slice %10 {axis = 1, start = 0, end = 8} : f32[T,8]
  %12 = div %11, %2 : f32[T,8]
  %13 = sub %12, %1 : f32[T,8]
  output %13 {name = "y"}
}"#;
        let (changed, out, g) = run(&Canonicalize, ir);
        assert!(changed);
        let y = g.output_named("y").unwrap();
        assert_eq!(g.operands(y), vec![g.input_named("x").unwrap()], "{out}");
    }

    #[test]
    fn keeps_broadcasting_identities() {
        // x + zeros[T,8] with x : f32[8] broadcasts: not an identity.
        let ir = r#"graph @g {
  %0 = input {name = "x"} : f32[8]
  %1 = constant {value = 0.0} : f32[T,8]
  %2 = add %0, %1 : f32[T,8]
  %3 = mul %0, %0 : f32[8]
  output %2 {name = "y"}
  output %3 {name = "z"}
}"#;
        let (changed, _, _) = run(&Canonicalize, ir);
        assert!(!changed);
    }
}

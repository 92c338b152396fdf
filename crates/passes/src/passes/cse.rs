//! `cse`: common-subexpression elimination by hash-consing. Walks the graph in canonical
//! topological order keeping a table from (op, attributes, operands, type) to the first node seen
//! with that key; a later node with the same key has its uses redirected to the first and is
//! removed. Operands are looked up through the merges already made, so whole duplicated chains
//! collapse in one run. Params with the same name (and so the same type) merge; constants with the
//! same value and type merge.
//!
//! Never merged: `input` and `output` (the graph's interface), and `attention` with a `cache` slot,
//! which appends to the KV cache each time it runs — two of them are two appends.
//!
//! Operand order matters (`add %a, %b` and `add %b, %a` stay apart): no commutativity here; the
//! e-graph pass handles algebra.

use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use kiln_ir::{Attrs, Graph, NodeId, OpKind, Patch, TensorType};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Cse;

pub fn create(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known("cse", &[])?;
    Ok(Box::new(Cse))
}

/// Whether two nodes with the same key may be merged.
fn mergeable(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    match node.op {
        OpKind::Input | OpKind::Output => false,
        OpKind::Attention => node.attrs.get("cache").is_none(),
        _ => true,
    }
}

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut table: HashMap<(OpKind, Attrs, Vec<NodeId>, TensorType), NodeId> = HashMap::new();
        // Merged node -> the node it became.
        let mut merged: HashMap<NodeId, NodeId> = HashMap::new();
        let mut patch = Patch::new();
        for n in g.topo_order() {
            if !mergeable(g, n) {
                continue;
            }
            let node = g.node(n);
            let operands: Vec<NodeId> = g.operands(n).iter().map(|o| *merged.get(o).unwrap_or(o)).collect();
            match table.entry((node.op, node.attrs.clone(), operands, node.ty.clone())) {
                Entry::Occupied(first) => {
                    let first = *first.get();
                    merged.insert(n, first);
                    patch.replace_uses(n, first);
                    patch.remove(n);
                }
                Entry::Vacant(v) => {
                    v.insert(n);
                }
            }
        }
        g.apply(patch);
        cx.stat("cse", "merged", merged.len());
        Ok(Changed::from_bool(!merged.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::{canon, run};

    #[test]
    fn merges_duplicate_chains_and_params() {
        let ir = r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = param {name = "w"} : f32[4]
  %2 = param {name = "w"} : f32[4]
  %3 = mul %0, %1 : f32[T,4]
  %4 = mul %0, %2 : f32[T,4]
  %5 = exp %3 : f32[T,4]
  %6 = exp %4 : f32[T,4]
  %7 = mul %1, %0 : f32[T,4]
  %8 = add %5, %6 : f32[T,4]
  %9 = add %8, %7 : f32[T,4]
  output %9 {name = "y"}
}"#;
        let (changed, out, _) = run(&Cse, ir);
        assert!(changed);
        assert_eq!(
            out,
            canon(
                r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = param {name = "w"} : f32[4]
  %2 = mul %0, %1 : f32[T,4]
  %3 = exp %2 : f32[T,4]
  %4 = add %3, %3 : f32[T,4]
  %5 = mul %1, %0 : f32[T,4]
  %6 = add %4, %5 : f32[T,4]
  output %6 {name = "y"}
}"#
            )
        );
        assert!(!run(&Cse, &out).0, "cse is idempotent");
    }

    #[test]
    fn keeps_interface_and_stateful_attention_apart() {
        let ir = r#"graph @g {
  %0 = input {name = "q"} : f32[T,2,4]
  %1 = input {name = "pos"} : i32[T]
  %2 = attention %0, %0, %0, %1 {cache = 0, causal} : f32[T,2,4]
  %3 = attention %0, %0, %0, %1 {cache = 0, causal} : f32[T,2,4]
  %4 = attention %0, %0, %0, %1 {causal} : f32[T,2,4]
  %5 = attention %0, %0, %0, %1 {causal} : f32[T,2,4]
  output %2 {name = "a"}
  output %3 {name = "b"}
  output %4 {name = "c"}
  output %5 {name = "d"}
}"#;
        let (changed, _, g) = run(&Cse, ir);
        assert!(changed);
        let attn = g.node_ids().filter(|&n| g.op(n) == OpKind::Attention).count();
        assert_eq!(attn, 3, "the cached pair stays, the uncached pair merges");
        assert_eq!(g.outputs().len(), 4);
    }
}

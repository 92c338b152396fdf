//! `const-fold`: evaluates the parts of the graph computed only from `constant`s and replaces a
//! value with a `constant` when it is a splat (every element equal — a `constant` holds one value).
//!
//! A compute node is *constant-derived* when every operand is a `constant` or constant-derived, all
//! the shapes involved are constant, it has at most `max-elements` elements (default 65536), and it
//! has no state (`attention` with a KV-cache slot is never folded). Those nodes are copied into a
//! small graph — their constants as inputs-free `constant`s, every one of them as an `output` — and
//! run once with the reference interpreter ([`kiln_ir::interp`]), so the values are exactly what
//! the interpreter computes for the original graph. Then, from the outputs backwards, a
//! constant-derived node that something outside the folded part still needs is replaced by a new
//! `constant` if its value is a splat that the `constant` reproduces exactly (same f32 bits after
//! rounding to its dtype; integers within ±2⁵³). The constant-derived nodes that become unused are
//! removed with it; `param`s are never touched, and non-splat values stay computed.

use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use kiln_ir::interp::tensor::{round_float, wrap_int};
use kiln_ir::interp::{Interpreter, KvCache, Tensor, TensorData};
use kiln_ir::{Attr, Attrs, Graph, NodeId, OpKind, Patch};
use std::collections::{HashMap, HashSet};

const DEFAULT_MAX_ELEMENTS: usize = 1 << 16;

#[derive(Debug)]
pub struct ConstFold {
    /// The largest value (in elements) that is evaluated.
    pub max_elements: usize,
}

impl Default for ConstFold {
    fn default() -> ConstFold {
        ConstFold { max_elements: DEFAULT_MAX_ELEMENTS }
    }
}

pub fn create(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known("const-fold", &["max-elements"])?;
    Ok(Box::new(ConstFold { max_elements: opts.usize("max-elements", DEFAULT_MAX_ELEMENTS)? }))
}

/// The single value of a splat tensor that a `constant` of `dtype` reproduces exactly.
fn splat_value(t: &Tensor, dtype: kiln_ir::DType) -> Option<f64> {
    match &t.data {
        TensorData::F32(v) => {
            let first = *v.first()?;
            let same = v.iter().all(|x| x.to_bits() == first.to_bits());
            (same && round_float(first, dtype).to_bits() == first.to_bits()).then_some(first as f64)
        }
        TensorData::I64(v) => {
            let first = *v.first()?;
            let same = v.iter().all(|&x| x == first);
            (same && first.unsigned_abs() <= 1 << 53 && wrap_int(first, dtype) == first).then_some(first as f64)
        }
    }
}

impl ConstFold {
    /// Whether a node's value is small and concrete enough to evaluate.
    fn small(&self, g: &Graph, n: NodeId) -> bool {
        g.ty(n).shape.numel().is_some_and(|k| k >= 0 && k as u64 <= self.max_elements as u64)
    }

    /// The constant-derived compute nodes, in topological order.
    fn constant_derived(&self, g: &Graph, order: &[NodeId]) -> Vec<NodeId> {
        let mut known: HashSet<NodeId> = HashSet::new();
        let mut out = Vec::new();
        for &n in order {
            let node = g.node(n);
            let ok = match node.op {
                OpKind::Constant => {
                    if self.small(g, n) {
                        known.insert(n);
                    }
                    continue;
                }
                OpKind::Input | OpKind::Param | OpKind::Output => false,
                OpKind::Attention => node.attrs.get("cache").is_none(),
                _ => true,
            };
            let operands = g.operands(n);
            if ok && !operands.is_empty() && self.small(g, n) && operands.iter().all(|o| known.contains(o)) {
                known.insert(n);
                out.push(n);
            }
        }
        out
    }
}

/// Copies `nodes` (and the constants they read) into a graph with one output per node, `v{i}`
/// for `nodes[i]`.
fn extract(g: &Graph, nodes: &[NodeId]) -> Graph {
    let mut sub = Graph::new(format!("{}.const_fold", g.name));
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    for &n in nodes {
        let mut operands = Vec::new();
        for o in g.operands(n) {
            let m = *map.entry(o).or_insert_with(|| {
                let c = g.node(o);
                sub.add_node(c.op, c.attrs.clone(), &[], c.ty.clone())
            });
            operands.push(m);
        }
        let node = g.node(n);
        let m = sub.add_node(node.op, node.attrs.clone(), &operands, node.ty.clone());
        map.insert(n, m);
    }
    for (i, n) in nodes.iter().enumerate() {
        sub.add_node(
            OpKind::Output,
            Attrs::new().with("name", Attr::Str(format!("v{i}"))),
            &[map[n]],
            g.ty(*n).clone(),
        );
    }
    sub
}

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        "const-fold"
    }

    fn options(&self) -> Vec<(String, String)> {
        if self.max_elements == DEFAULT_MAX_ELEMENTS {
            Vec::new()
        } else {
            vec![("max-elements".to_string(), self.max_elements.to_string())]
        }
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let order = g.topo_order();
        let nodes = self.constant_derived(g, &order);
        cx.stat("const-fold", "evaluated", nodes.len());
        if nodes.is_empty() {
            cx.stat("const-fold", "folded", 0);
            return Ok(Changed::No);
        }
        let sub = extract(g, &nodes);
        let no_weights: HashMap<String, Tensor> = HashMap::new();
        let values = Interpreter::new(&sub, &no_weights)
            .and_then(|mut interp| interp.run(&[], &mut KvCache::new()))
            .map_err(|e| PassError::new("const-fold", format!("evaluating constants: {e}")))?;
        let index: HashMap<NodeId, usize> = nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();

        // Backwards: a node is needed when a user outside the folded part reads it; needed splats
        // become constants; a node is removed when it is replaced or all its users are removed.
        let mut needed: HashSet<NodeId> = HashSet::new();
        let mut replaced: HashMap<NodeId, f64> = HashMap::new();
        let mut removed: HashSet<NodeId> = HashSet::new();
        for &n in nodes.iter().rev() {
            let users = g.users(n);
            let is_needed =
                users.iter().any(|(u, _)| !index.contains_key(u) || (needed.contains(u) && !replaced.contains_key(u)));
            if is_needed {
                needed.insert(n);
                if let Some(v) = splat_value(&values[&format!("v{}", index[&n])], g.ty(n).dtype) {
                    replaced.insert(n, v);
                }
            }
            if replaced.contains_key(&n) || (!users.is_empty() && users.iter().all(|(u, _)| removed.contains(u))) {
                removed.insert(n);
            }
        }
        let mut patch = Patch::new();
        for &n in &nodes {
            if let Some(&v) = replaced.get(&n) {
                let c = patch.add(OpKind::Constant, Attrs::new().with("value", Attr::Float(v)), &[], g.ty(n).clone());
                patch.replace_uses(n, c);
            }
            if removed.contains(&n) {
                patch.remove(n);
            }
        }
        g.apply(patch);
        cx.stat("const-fold", "folded", replaced.len());
        cx.stat("const-fold", "removed", removed.len());
        Ok(Changed::from_bool(!replaced.is_empty() || !removed.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::{canon, run};

    #[test]
    fn folds_splat_subgraphs_and_keeps_params() {
        let ir = r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = param {name = "w"} : f32[4]
  %2 = constant {value = 2.0} : f32[]
  %3 = constant {value = 3.0} : f32[4]
  %4 = mul %2, %3 : f32[4]
  %5 = sqrt %4 : f32[4]
  %6 = softmax %5 : f32[4]
  %7 = mul %1, %6 : f32[4]
  %8 = add %0, %7 : f32[T,4]
  output %8 {name = "y"}
}"#;
        let (changed, out, _) = run(&ConstFold::default(), ir);
        assert!(changed);
        // softmax of a splat over 4 elements is 0.25 everywhere.
        assert_eq!(
            out,
            canon(
                r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = param {name = "w"} : f32[4]
  %2 = constant {value = 0.25} : f32[4]
  %3 = mul %1, %2 : f32[4]
  %4 = add %0, %3 : f32[T,4]
  %5 = constant {value = 2.0} : f32[]
  %6 = constant {value = 3.0} : f32[4]
  output %4 {name = "y"}
}"#
            )
        );
        assert!(!run(&ConstFold::default(), &out).0, "const-fold is idempotent");
    }

    #[test]
    fn leaves_non_splats_symbolic_shapes_and_big_values() {
        let ir = r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = constant {value = 1.0} : f32[4]
  %2 = top_k %1 {k = 2} : i32[2]
  %3 = constant {value = 1.0} : f32[T,4]
  %4 = exp %3 : f32[T,4]
  %5 = add %0, %4 : f32[T,4]
  %6 = cast %2 {dtype = f32} : f32[2]
  output %5 {name = "y"}
  output %6 {name = "k"}
}"#;
        let (changed, _, g) = run(&ConstFold::default(), ir);
        assert!(!changed, "top_k indices are [0, 1] (not a splat); exp of a T-shaped constant is not evaluated");
        assert!(g.node_ids().any(|n| g.op(n) == OpKind::TopK));
        let small = ConstFold { max_elements: 2 };
        let (changed, _, _) = run(
            &small,
            "graph @g {\n  %0 = constant {value = 1.0} : f32[4]\n  %1 = exp %0 : f32[4]\n  output %1 {name = \"y\"}\n}",
        );
        assert!(!changed);
    }

    #[test]
    fn f16_values_fold_only_when_exact() {
        // 1 + 2^-11 is not an f16: the interpreter keeps it in f32, a constant could not.
        let ir = r#"graph @g {
  %0 = constant {value = 1.0} : f16[2]
  %1 = constant {value = 0.00048828125} : f16[2]
  %2 = add %0, %1 : f16[2]
  %3 = add %0, %0 : f16[2]
  output %2 {name = "a"}
  output %3 {name = "b"}
}"#;
        let (changed, out, _) = run(&ConstFold::default(), ir);
        assert!(changed);
        assert!(out.contains("add"), "{out}");
        assert!(out.contains("constant {value = 2.0} : f16[2]"), "{out}");
    }

    #[test]
    fn options_round_trip() {
        let p = create(&PassOptions([("max-elements".to_string(), "10".to_string())].into())).unwrap();
        assert_eq!(p.options(), vec![("max-elements".to_string(), "10".to_string())]);
        let e = create(&PassOptions([("max-elements".to_string(), "x".to_string())].into())).err().unwrap();
        assert!(e.contains("option 'max-elements' must be a non-negative integer"), "{e}");
    }
}

//! `merge-projections`: merges matmuls that read the same input through `param` weights — the q/k/v
//! projections of attention, the gate/up projections of a SwiGLU/GeGLU MLP — into one wider matmul
//! whose weight is the concatenation of theirs, followed by one `split` per original matmul:
//!
//! ```text
//! %q = matmul %x, %wq {transpose_b}         %w = concat %wq, %wk, %wv {axis = 0}
//! %k = matmul %x, %wk {transpose_b}    →    %m = matmul %x, %w {transpose_b}
//! %v = matmul %x, %wv {transpose_b}         %q = split %m {axis = -1, sizes = [Q, K, V], index = 0}  (k, v alike)
//! ```
//!
//! Matmuls are grouped by (input, `transpose_b`, whether they have a bias, weight dtype); a group
//! needs two or more members whose weights are 2-D `param`s with a constant output dim (and whose
//! biases, if any, are `param`s too; they are concatenated alike). The concatenation of params is the
//! "weights concatenated at compile time" form: codegen materializes it once, the interpreter
//! evaluates it as written. Matmuls whose weights are computed values are left alone, as is `moe`.
//! Each output column of the merged matmul is computed exactly as before, so values do not change.

use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use kiln_ir::{Attr, Attrs, DType, Graph, NodeId, OpKind, Patch, PatchValue};
use std::collections::HashMap;

pub const NAME: &str = "merge-projections";

#[derive(Debug, Default)]
pub struct MergeProjections;

pub fn create(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known(NAME, &[])?;
    Ok(Box::new(MergeProjections))
}

/// What matmuls must share to be merged.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    input: NodeId,
    transpose_b: bool,
    bias: bool,
    dtype: DType,
}

/// A matmul that can take part in a merge: its key and output width.
fn candidate(g: &Graph, m: NodeId) -> Option<(Key, i64)> {
    if g.op(m) != OpKind::MatMul {
        return None;
    }
    let ops = g.operands(m);
    let (x, w) = (ops[0], ops[1]);
    let wt = g.ty(w);
    if g.op(w) != OpKind::Param || wt.rank() != 2 {
        return None;
    }
    if let Some(&b) = ops.get(2) {
        if g.op(b) != OpKind::Param {
            return None;
        }
    }
    let transpose_b = g.node(m).attrs.flag("transpose_b");
    let out = wt.shape.dim(if transpose_b { 0 } else { 1 }).as_const().filter(|&n| n > 0)?;
    Some((Key { input: x, transpose_b, bias: ops.len() == 3, dtype: wt.dtype }, out))
}

impl Pass for MergeProjections {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let err = |m: String| PassError::new(NAME, m);
        // Groups in order of their first member in the canonical order, members in that order too.
        let order = g.topo_order();
        let mut groups: Vec<(Key, Vec<(NodeId, i64)>)> = Vec::new();
        let mut index: HashMap<Key, usize> = HashMap::new();
        for &n in &order {
            if let Some((key, out)) = candidate(g, n) {
                let i = *index.entry(key).or_insert_with(|| {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                });
                groups[i].1.push((n, out));
            }
        }
        let mut patch = Patch::new();
        // Matmuls replaced so far, by their split: a later group whose input is one of them reads
        // the split (a new node keeps its operands when the patch redirects uses).
        let mut replaced: HashMap<NodeId, PatchValue> = HashMap::new();
        let (mut merged_groups, mut merged) = (0usize, 0usize);
        for (key, members) in groups.iter().filter(|(_, m)| m.len() >= 2) {
            let resolve = |n: NodeId| replaced.get(&n).copied().unwrap_or(PatchValue::Existing(n));
            let operand = |m: NodeId, i: usize| g.operands(m)[i];
            let weights: Vec<PatchValue> = members.iter().map(|&(m, _)| operand(m, 1).into()).collect();
            let axis = if key.transpose_b { 0 } else { 1 };
            let concat = |p: &mut Patch, xs: &[PatchValue], axis: i64| {
                p.add_inferred(g, OpKind::Concat, Attrs::new().with("axis", Attr::Int(axis)), xs)
            };
            let w = concat(&mut patch, &weights, axis).map_err(err)?;
            let mut operands = vec![resolve(key.input), w];
            if key.bias {
                let biases: Vec<PatchValue> = members.iter().map(|&(m, _)| operand(m, 2).into()).collect();
                operands.push(concat(&mut patch, &biases, 0).map_err(err)?);
            }
            let mut attrs = Attrs::new();
            if key.transpose_b {
                attrs.set("transpose_b", Attr::Bool(true));
            }
            let mm = patch.add_inferred(g, OpKind::MatMul, attrs, &operands).map_err(err)?;
            let sizes: Vec<i64> = members.iter().map(|&(_, out)| out).collect();
            for (i, &(m, _)) in members.iter().enumerate() {
                let attrs = Attrs::new()
                    .with("axis", Attr::Int(-1))
                    .with("sizes", Attr::Ints(sizes.clone()))
                    .with("index", Attr::Int(i as i64));
                let s = patch.add_inferred(g, OpKind::Split, attrs, &[mm]).map_err(err)?;
                if patch.ty(g, s) != g.ty(m) {
                    return Err(err(format!("split {i} has type {}, the matmul had {}", patch.ty(g, s), g.ty(m))));
                }
                patch.replace_uses(m, s);
                patch.remove(m);
                replaced.insert(m, s);
            }
            merged_groups += 1;
            merged += members.len();
        }
        g.apply(patch);
        cx.stat(NAME, "groups", merged_groups);
        cx.stat(NAME, "matmuls-merged", merged);
        Ok(Changed::from_bool(merged_groups > 0))
    }
}

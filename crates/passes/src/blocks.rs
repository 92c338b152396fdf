//! Finding the decoder blocks of a lowered model: the residual stream enters layer l at the operand
//! of its `input_layernorm` and leaves it at the next layer's (or the final norm's). Passes that
//! rewrite whole blocks (`mod`) or per-layer parts (`moefy`, `gqa`) start here, as does calibration.

use kiln_ir::{Graph, NodeId, OpKind};
use std::collections::HashSet;

/// One decoder layer as a region of the graph: `input` is the residual stream entering it (not
/// part of the block), `output` the stream leaving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub layer: usize,
    pub input: NodeId,
    pub output: NodeId,
}

/// The layer index in a checkpoint name like `model.layers.12.mlp.up_proj.weight`.
pub fn layer_of(name: &str) -> Option<usize> {
    let rest = &name[name.find("layers.")? + "layers.".len()..];
    rest.split('.').next()?.parse().ok()
}

/// The param a norm's weight is read from, directly or through gemma's `w + 1`.
fn norm_weight_param(g: &Graph, norm: NodeId) -> Option<&str> {
    let w = *g.operands(norm).get(1)?;
    let p = match g.op(w) {
        OpKind::Param => w,
        OpKind::Add | OpKind::Mul => g.operands(w).into_iter().find(|&o| g.op(o) == OpKind::Param)?,
        _ => return None,
    };
    g.node(p).attrs.str("name")
}

/// Every decoder block, in layer order. Errors when the graph does not look like a lowered decoder
/// (no `…layers.N.input_layernorm` norms, or no final norm after them).
pub fn decoder_blocks(g: &Graph) -> Result<Vec<Block>, String> {
    let mut starts: Vec<(usize, NodeId)> = Vec::new();
    let mut finals: Vec<NodeId> = Vec::new();
    for n in g.node_ids() {
        if !matches!(g.op(n), OpKind::RmsNorm | OpKind::LayerNorm) {
            continue;
        }
        let Some(name) = norm_weight_param(g, n) else { continue };
        let x = g.operands(n)[0];
        if name.ends_with("input_layernorm.weight") {
            if let Some(l) = layer_of(name) {
                starts.push((l, x));
            }
        } else if layer_of(name).is_none() {
            finals.push(x);
        }
    }
    starts.sort();
    if starts.is_empty() {
        return Err("no decoder layers found (no '…layers.N.input_layernorm.weight' norms)".into());
    }
    for (i, (l, _)) in starts.iter().enumerate() {
        if *l != i {
            return Err(format!(
                "decoder layers are not numbered 0..{}: found layer {l} at position {i}",
                starts.len()
            ));
        }
    }
    let [end] = finals[..] else {
        return Err(format!("expected one final norm after the decoder layers, found {}", finals.len()));
    };
    let mut blocks = Vec::with_capacity(starts.len());
    for (i, &(layer, input)) in starts.iter().enumerate() {
        let output = starts.get(i + 1).map_or(end, |s| s.1);
        blocks.push(Block { layer, input, output });
    }
    Ok(blocks)
}

/// The nodes of a block: those on some path from `input` (excluded) to `output` (included), plus
/// the weights, constants and graph inputs (positions) they read — in topological order.
pub fn block_nodes(g: &Graph, b: &Block) -> Vec<NodeId> {
    // Ancestors of the output, not crossing the input.
    let mut up: HashSet<NodeId> = HashSet::new();
    let mut stack = vec![b.output];
    while let Some(n) = stack.pop() {
        if n == b.input || !up.insert(n) {
            continue;
        }
        stack.extend(g.operands(n));
    }
    // Of those, the ones that depend on the input.
    let order = g.topo_order();
    let mut depends: HashSet<NodeId> = HashSet::from([b.input]);
    let mut out = Vec::new();
    for n in order {
        if !up.contains(&n) {
            continue;
        }
        if g.operands(n).iter().any(|o| depends.contains(o)) {
            depends.insert(n);
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names() {
        assert_eq!(layer_of("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(layer_of("model.norm.weight"), None);
        assert_eq!(layer_of("model.layers.x.y"), None);
    }
}

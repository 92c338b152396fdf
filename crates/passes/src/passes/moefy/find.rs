//! Finding the dense gated MLPs of a lowered model, as `kiln_models::lower` writes them:
//!
//! ```text
//! %g = matmul %x, %gate {transpose_b}     // %gate = param "…layers.N.mlp.gate_proj.weight" [I, H]
//! %a = silu %g                            // or gelu {approx = tanh | erf}
//! %u = matmul %x, %up {transpose_b}       // %up   = param "…layers.N.mlp.up_proj.weight"   [I, H]
//! %h = mul %a, %u                         // (either operand order)
//! %y = matmul %h, %down {transpose_b}     // %down = param "…layers.N.mlp.down_proj.weight" [H, I]
//! ```
//!
//! Every matmul reading a `gate_proj` param must be the start of this shape, with each intermediate
//! value used once; anything else (biases, a shared activation, merged projections) is an error
//! naming the layer, so `moefy` never converts half a model.

use crate::blocks::layer_of;
use kiln_ir::{Graph, NodeId, OpKind};

/// One dense gated MLP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenseMlp {
    pub layer: usize,
    /// The params' common prefix, `model.layers.N.mlp.`.
    pub prefix: String,
    /// The MLP's input `[T, H]`.
    pub input: NodeId,
    /// The weight params.
    pub gate: NodeId,
    pub up: NodeId,
    pub down: NodeId,
    /// The nodes the MLP is made of, the down-projection matmul (its result) last.
    pub nodes: [NodeId; 5],
    /// The `moe` activation name: `silu`, `gelu_tanh` or `gelu`.
    pub activation: &'static str,
    pub hidden: usize,
    pub intermediate: usize,
}

impl DenseMlp {
    pub fn output(&self) -> NodeId {
        self.nodes[4]
    }
}

fn param_name(g: &Graph, n: NodeId) -> Option<&str> {
    (g.op(n) == OpKind::Param).then(|| g.node(n).attrs.str("name")).flatten()
}

/// The one user of `n`, if it has exactly one use.
fn only_user(g: &Graph, n: NodeId) -> Option<NodeId> {
    match g.users(n)[..] {
        [(u, _)] => Some(u),
        _ => None,
    }
}

fn activation_name(g: &Graph, n: NodeId) -> Option<&'static str> {
    match (g.op(n), g.node(n).attrs.ident("approx")) {
        (OpKind::Silu, _) => Some("silu"),
        (OpKind::Gelu, Some("tanh")) => Some("gelu_tanh"),
        (OpKind::Gelu, Some("erf")) => Some("gelu"),
        _ => None,
    }
}

/// A bias-free `matmul {transpose_b}` of `x` by the param named `name`: the param.
fn projection(g: &Graph, m: NodeId, x: NodeId, name: &str) -> Result<NodeId, String> {
    let ops = g.operands(m);
    if g.op(m) != OpKind::MatMul || ops.len() < 2 || ops[0] != x || param_name(g, ops[1]) != Some(name) {
        return Err(format!("expected a matmul of the MLP's value by '{name}'"));
    }
    if ops.len() == 3 {
        return Err(format!("'{name}' has a bias; moefy supports bias-free gated MLPs only"));
    }
    if !g.node(m).attrs.flag("transpose_b") {
        return Err(format!("the matmul by '{name}' is not a linear layer (no transpose_b)"));
    }
    Ok(ops[1])
}

/// The 2-D constant shape of a float weight param.
fn weight_shape(g: &Graph, w: NodeId) -> Result<[usize; 2], String> {
    let t = g.ty(w);
    let name = param_name(g, w).unwrap_or("?");
    if !t.dtype.is_float() {
        return Err(format!("'{name}' is {t}; moefy needs float (unquantized) weights"));
    }
    match t.shape.dims() {
        [a, b] => match (a.as_const(), b.as_const()) {
            (Some(a), Some(b)) if a > 0 && b > 0 => Ok([a as usize, b as usize]),
            _ => Err(format!("'{name}' has shape {}, not a constant 2-D one", t.shape)),
        },
        _ => Err(format!("'{name}' has shape {}, not a 2-D one", t.shape)),
    }
}

/// The MLP starting at the matmul `m` by the gate param named `gate_name`.
fn mlp_at(g: &Graph, m: NodeId, gate_name: &str, layer: usize) -> Result<DenseMlp, String> {
    let prefix = gate_name.strip_suffix("gate_proj.weight").unwrap_or(gate_name).to_string();
    let x = *g.operands(m).first().ok_or("the gate projection has no operands")?;
    let gate = projection(g, m, x, gate_name)?;
    let act = only_user(g, m).ok_or("the gate projection must have exactly one use (its activation)")?;
    let activation =
        activation_name(g, act).ok_or_else(|| format!("the gate projection feeds {}, not silu or gelu", g.op(act)))?;
    let mul = only_user(g, act).filter(|&u| g.op(u) == OpKind::Mul).ok_or("the activation must feed one mul")?;
    let up_mm = match g.operands(mul)[..] {
        [a, b] if a == act => b,
        [a, _] => a,
        _ => return Err("the gated product must be a mul of two values".into()),
    };
    let up = projection(g, up_mm, x, &format!("{prefix}up_proj.weight"))?;
    if only_user(g, up_mm) != Some(mul) {
        return Err("the up projection must have exactly one use (the mul)".into());
    }
    let down_mm = only_user(g, mul).ok_or("the gated product must have exactly one use (the down projection)")?;
    let down = projection(g, down_mm, mul, &format!("{prefix}down_proj.weight"))?;
    let [i, h] = weight_shape(g, gate)?;
    for (w, want) in [(up, [i, h]), (down, [h, i])] {
        let got = weight_shape(g, w)?;
        if got != want {
            return Err(format!("'{}' is {got:?}, expected {want:?}", param_name(g, w).unwrap_or("?")));
        }
    }
    if g.ty(x).rank() != 2 {
        return Err(format!("the MLP's input is {}, expected [T, {h}]", g.ty(x)));
    }
    Ok(DenseMlp {
        layer,
        prefix,
        input: x,
        gate,
        up,
        down,
        nodes: [m, act, up_mm, mul, down_mm],
        activation,
        hidden: h,
        intermediate: i,
    })
}

/// Every dense gated MLP, in layer order. Errors when there is none, or when a gate projection does
/// not start one.
pub fn dense_mlps(g: &Graph) -> Result<Vec<DenseMlp>, String> {
    let is_gate = |n: NodeId| param_name(g, n).filter(|s| s.ends_with("mlp.gate_proj.weight"));
    let mut found = Vec::new();
    for m in g.topo_order() {
        if g.op(m) != OpKind::MatMul {
            continue;
        }
        let Some(name) = g.operands(m).get(1).and_then(|&w| is_gate(w)) else { continue };
        let layer =
            layer_of(name).ok_or_else(|| format!("'{name}' names no layer (…layers.N.mlp.gate_proj.weight)"))?;
        found.push(mlp_at(g, m, name, layer).map_err(|e| format!("layer {layer}: {e}"))?);
    }
    if found.is_empty() {
        let merged = g.node_ids().any(|n| is_gate(n).is_some());
        return Err(if merged {
            "the '…mlp.gate_proj.weight' params are not read by plain matmuls (was merge-projections run \
             first?); run moefy before merge-projections"
                .into()
        } else {
            "found no dense gated MLPs (no matmul reads a '…layers.N.mlp.gate_proj.weight' param); moefy \
             needs a dense model lowered from a checkpoint"
                .into()
        });
    }
    found.sort_by_key(|m| m.layer);
    if let Some(w) = found.windows(2).find(|w| w[0].layer == w[1].layer) {
        return Err(format!("layer {} has two gated MLPs", w[0].layer));
    }
    Ok(found)
}

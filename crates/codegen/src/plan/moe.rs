//! The Mixture-of-Experts layers of a program (after `moe-dispatch`), for the manifest's
//! `moe_layers`: which step makes each layer's routing decision, which symbol counts each expert's
//! rows, and which weight buffers only that expert reads — what a runtime needs to keep experts
//! out of RAM until they are picked (arXiv 2312.17238).
//!
//! The layers are found on the graph before planning ([`find`]), so that the speculative router
//! copies ([`super::guess`]) can be planned in place, and annotated with buffer and step numbers
//! after it ([`annotate`]). A layer whose shape is not the one `moe-dispatch` makes is left out
//! with a warning: the annotation is an optimization hint and must never fail a compile.

use super::dims::plan_err;
use super::Planner;
use crate::error::Result;
use kiln_ir::{Graph, NodeId, OpKind};
use kiln_runtime::artifact::manifest::{BufArg, BufferSpec, ExpertSpec, MoeLayer, NamedBuffer, Storage};
use std::collections::{HashMap, HashSet};

/// One MoE layer as the graph has it.
pub(super) struct MoeNodes {
    /// The router's choice (`top_k`), read by the experts' `expert_gate`s.
    pub top_k: NodeId,
    pub k: usize,
    /// By expert number: the `nonzero` that picks the expert's rows, and the dim it binds.
    pub experts: Vec<(NodeId, String)>,
    /// This layer's router, to be copied onto the previous MoE layer's hidden state.
    pub guess: Option<Guess>,
}

/// A speculative copy of a router: `chain` (the router's ops, in order, each reading the one
/// before and otherwise only weights) re-planned with `root` (the value the router reads, the
/// residual stream) replaced by `from` (the previous MoE layer's residual stream).
pub(super) struct Guess {
    pub from: NodeId,
    pub root: NodeId,
    pub chain: Vec<NodeId>,
}

/// The MoE layers among `order`'s run-time nodes, in program order, each checked.
pub(super) fn find(
    g: &Graph,
    order: &[NodeId],
    statics: &HashSet<NodeId>,
    labels: &HashMap<NodeId, String>,
) -> Vec<MoeNodes> {
    let mut layers: Vec<MoeNodes> = Vec::new();
    let mut dims_seen = HashSet::new();
    for &n in order {
        if g.op(n) != OpKind::TopK || statics.contains(&n) {
            continue;
        }
        let gates: Vec<NodeId> = g
            .users(n)
            .into_iter()
            .filter(|&(u, pos)| pos == 0 && g.op(u) == OpKind::ExpertGate)
            .map(|(u, _)| u)
            .collect();
        if gates.is_empty() {
            continue;
        }
        match layer(g, n, &gates) {
            Ok(layer) if layer.experts.iter().any(|(_, d)| dims_seen.contains(d)) => {
                tracing::warn!(node = %labels[&n], "MoE layer not annotated: its experts' row counts are not distinct");
            }
            Ok(layer) => {
                dims_seen.extend(layer.experts.iter().map(|(_, d)| d.clone()));
                layers.push(layer);
            }
            Err(why) => tracing::warn!(node = %labels[&n], "MoE layer not annotated: {why}"),
        }
    }
    for j in 1..layers.len() {
        let guess = guess(g, statics, layers[j - 1].top_k, layers[j].top_k);
        match guess {
            Ok(guess) => layers[j].guess = Some(guess),
            Err(why) => {
                tracing::warn!(node = %labels[&layers[j].top_k], "no speculative router for this MoE layer: {why}")
            }
        }
    }
    layers
}

/// The layer of `top_k` with its expert gates, or why it is not one `moe-dispatch` would make.
fn layer(g: &Graph, top_k: NodeId, gates: &[NodeId]) -> Result<MoeNodes, String> {
    let count = gates.len();
    let k = g.node(top_k).attrs.int("k").unwrap_or(1);
    if k < 1 || k as usize > count {
        return Err(format!("top_k picks {k} of {count} experts"));
    }
    let mut experts: Vec<Option<(NodeId, String)>> = vec![None; count];
    for &gate in gates {
        let e = g.node(gate).attrs.int("expert").unwrap_or(-1);
        let slot = usize::try_from(e).ok().and_then(|e| experts.get_mut(e));
        let Some(slot @ None) = slot else {
            return Err(format!("expert numbers do not cover 0..{count} (expert {e} is out of range or repeated)"));
        };
        let nonzeros: Vec<NodeId> =
            g.users(gate).into_iter().filter(|&(u, _)| g.op(u) == OpKind::Nonzero).map(|(u, _)| u).collect();
        let [nz] = nonzeros[..] else {
            return Err(format!("expert {e}'s gate feeds {} nonzero ops, not one", nonzeros.len()));
        };
        let dim = g.node(nz).attrs.str("dim").unwrap_or_default().to_string();
        if dim.is_empty() {
            return Err(format!("expert {e}'s nonzero names no dim"));
        }
        *slot = Some((nz, dim));
    }
    let experts: Vec<(NodeId, String)> = experts.into_iter().flatten().collect();
    let distinct: HashSet<&String> = experts.iter().map(|(_, d)| d).collect();
    if distinct.len() != count {
        return Err("two experts share a row count".into());
    }
    Ok(MoeNodes { top_k, k: k as usize, experts, guess: None })
}

/// Ops a router chain may pass through: each computes its result row by row from one run-time
/// value (and weights), so applying it to another hidden state of the same type is meaningful.
fn row_wise(op: OpKind) -> bool {
    op.is_elementwise()
        || matches!(
            op,
            OpKind::Fused
                | OpKind::MatMul
                | OpKind::RmsNorm
                | OpKind::LayerNorm
                | OpKind::Softmax
                | OpKind::Reshape
                | OpKind::Cast
        )
}

/// The router of a top_k: the row-wise ops with one run-time operand from the top_k's scores
/// back, and the value they start from (the first node that has not exactly one run-time operand
/// or is not row-wise: the residual stream).
fn router(g: &Graph, statics: &HashSet<NodeId>, top_k: NodeId) -> (NodeId, Vec<NodeId>) {
    let mut chain = Vec::new();
    let mut at = g.operands(top_k)[0];
    loop {
        if !row_wise(g.op(at)) {
            break;
        }
        let dynamic: Vec<NodeId> = g.operands(at).into_iter().filter(|o| !statics.contains(o)).collect();
        let [only] = dynamic[..] else { break };
        chain.push(at);
        at = only;
    }
    chain.reverse();
    (at, chain)
}

/// The copy of layer `top_k`'s router onto the residual stream of the previous layer `prev`. The
/// routers must be alike (the same ops) and read values of one type, else the copy could not be
/// planned with the same kernels or would compute something else.
fn guess(g: &Graph, statics: &HashSet<NodeId>, prev: NodeId, top_k: NodeId) -> Result<Guess, String> {
    let (from, prev_chain) = router(g, statics, prev);
    let (root, chain) = router(g, statics, top_k);
    if chain.is_empty() {
        return Err("its scores are not computed by a router from one hidden state".into());
    }
    let ops = |c: &[NodeId]| c.iter().map(|&n| g.op(n)).collect::<Vec<_>>();
    if ops(&chain) != ops(&prev_chain) {
        return Err(format!(
            "its router ({:?}) differs from the previous MoE layer's ({:?})",
            ops(&chain),
            ops(&prev_chain)
        ));
    }
    if g.ty(root) != g.ty(from) {
        return Err(format!("its router reads {}, the previous layer's reads {}", g.ty(root), g.ty(from)));
    }
    Ok(Guess { from, root, chain })
}

/// The buffer whose memory `b` is (through aliases).
fn storage_of(buffers: &[BufferSpec], mut b: usize) -> usize {
    while let Storage::Alias { of, .. } = buffers[b].storage {
        b = of;
    }
    b
}

/// Who reads a weight buffer.
#[derive(Clone, Copy, PartialEq)]
enum Readers {
    /// Only the steps of expert `(layer, expert)`.
    Expert(usize, usize),
    /// Anything else as well: it must stay resident.
    Shared,
}

/// The manifest's MoE layers from the planned program. `guesses[j]` is layer j's guess buffer and
/// last speculative step, when planned.
pub(super) fn annotate(
    p: &Planner,
    order: &[NodeId],
    layers: &[MoeNodes],
    guesses: &[Option<(usize, usize)>],
    outputs: &[NamedBuffer],
) -> Result<Vec<MoeLayer>> {
    if layers.is_empty() {
        return Ok(Vec::new());
    }
    // The steps of each expert's matmuls: those whose rows are the expert's row count.
    let by_dim: HashMap<&str, (usize, usize)> = layers
        .iter()
        .enumerate()
        .flat_map(|(j, l)| l.experts.iter().enumerate().map(move |(e, (_, d))| (d.as_str(), (j, e))))
        .collect();
    let mut owner: Vec<Option<(usize, usize)>> = vec![None; p.steps.len()];
    let mut matmuls: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    for &n in order {
        let node = p.g.node(n);
        let Some(range) = p.node_steps.get(&n).filter(|_| node.op == OpKind::MatMul) else { continue };
        let rows = &node.ty.shape.dims()[..node.ty.rank().saturating_sub(1)];
        let experts: HashSet<(usize, usize)> =
            rows.iter().flat_map(|d| d.symbols()).filter_map(|s| by_dim.get(s).copied()).collect();
        if let [expert] = experts.into_iter().collect::<Vec<_>>()[..] {
            for s in range.clone() {
                owner[s] = Some(expert);
                matmuls.entry(expert).or_default().push(s);
            }
        }
    }
    // Every weight buffer's readers: steps (by their expert, if any) and the program's outputs.
    let mut readers: HashMap<usize, Readers> = HashMap::new();
    let mut read = |b: usize, by: Option<(usize, usize)>| {
        let b = storage_of(&p.buffers, b);
        if !matches!(p.buffers[b].storage, Storage::Weight { .. }) {
            return;
        }
        let r = match by {
            Some((j, e)) => Readers::Expert(j, e),
            None => Readers::Shared,
        };
        let merged = match readers.get(&b) {
            Some(&old) if old != r => Readers::Shared,
            _ => r,
        };
        readers.insert(b, merged);
    };
    for (s, step) in p.steps.iter().enumerate() {
        for arg in &step.bufs {
            if let BufArg::Buffer { id } = *arg {
                read(id, owner[s]);
            }
        }
    }
    for o in outputs {
        read(o.buffer, None);
    }

    let mut out = Vec::new();
    for (j, layer) in layers.iter().enumerate() {
        // Steps marked speculative name layers by their index here, so a layer found before
        // planning cannot be dropped now: what is missing is a planner bug.
        let bug = |what: &str| plan_err(p.label(layer.top_k), format!("{what} (planner bug)"));
        let select = last_step(p, layer.top_k).ok_or_else(|| bug("the router's choice has no step"))?;
        let selected = *p.value_buf.get(&layer.top_k).ok_or_else(|| bug("the router's choice has no buffer"))?;
        let scores_node = p.g.operands(layer.top_k)[0];
        let scores = *p.value_buf.get(&scores_node).ok_or_else(|| bug("the router's scores have no buffer"))?;
        let mut experts = Vec::new();
        for (e, &(nz, _)) in layer.experts.iter().enumerate() {
            let rows_symbol = last_step(p, nz)
                .and_then(|s| p.steps[s].binds)
                .ok_or_else(|| bug(&format!("expert {e}'s row count is not bound")))?;
            let mut weights: Vec<usize> = Vec::new();
            for &s in matmuls.get(&(j, e)).map(Vec::as_slice).unwrap_or_default() {
                for arg in &p.steps[s].bufs {
                    let BufArg::Buffer { id } = *arg else { continue };
                    let b = storage_of(&p.buffers, id);
                    if readers.get(&b) == Some(&Readers::Expert(j, e)) && !weights.contains(&b) {
                        weights.push(b);
                    }
                }
            }
            experts.push(ExpertSpec { rows_symbol, weights });
        }
        let (guess, guess_step) = guesses.get(j).copied().flatten().unzip();
        out.push(MoeLayer { select_step: select, selected, scores, top_k: layer.k, experts, guess, guess_step });
    }
    Ok(out)
}

/// The last step a node was planned into.
fn last_step(p: &Planner, n: NodeId) -> Option<usize> {
    p.node_steps.get(&n).filter(|r| !r.is_empty()).map(|r| r.end - 1)
}

//! `gqa{groups=N}` and `expand-kv`: change how many key/value heads every attention has.
//!
//! - `gqa{groups=N}` gives every attention N key/value heads (grouped-query attention, Ainslie et
//!   al., arXiv 2305.13245; N = 1 is multi-query attention, Shazeer, arXiv 1911.02150). N must
//!   divide the query heads Hq. When N divides the current Hkv, each run of Hkv/N consecutive K (and
//!   V) projection heads is mean-pooled into one — the paper's checkpoint conversion, which changes
//!   the model (it is meant to be uptrained afterwards). When Hkv divides N, each head is repeated
//!   N/Hkv times, which is exact. Other N are an error listing the valid ones.
//! - `expand-kv` gives every attention Hq key/value heads (GQA/MQA → MHA) by repetition: `gqa` with
//!   groups = Hq for each attention. Exact.
//!
//! The head count lives in the projection weights, so those are what change. An attention's keys
//! must come from the chain the model lowering builds (values alike, usually without the norm and
//! rope):
//!
//! ```text
//! %k = matmul %x, %wk[, %bk] {transpose_b}   : [T, Hkv·D]
//! %r = reshape %k {shape = [T, Hkv, D]}
//! %n = rms_norm %r, %w                        (optional: gemma3's per-head k_norm)
//! %e = rope %n, %positions                    (optional: eqsat may have fused it into the attention)
//! ```
//!
//! The chain is rebuilt for the new head count on top of weight-only ops on the checkpoint's own
//! params, so the weights are rewritten "at compile time" and the checkpoint stays as it is (the
//! interpreter folds weight-only subgraphs once at load; codegen folds them when compiling):
//!
//! ```text
//! pool:    W[Hkv·D, I] → reshape [N, Hkv/N, D, I] → reduce_mean {axes = [1]} → reshape [N·D, I]
//! repeat:  W[Hkv·D, I] → reshape [Hkv, 1, D, I] → concat ×N/Hkv {axis = 1} → reshape [N·D, I]
//! ```
//!
//! Biases get the same treatment along their only axis. The mean-pooling of identical heads is
//! bit-exact in the interpreter (reduce_mean sums in f64, where r·a and then r·a / r are exact), so
//! `expand-kv,gqa{groups=Hkv}` gives back the original logits bit for bit.
//!
//! Every attention is checked (head counts, chain shape) before anything is rewritten, so an error
//! leaves the graph untouched. K/V that do not come from such a chain (after merge-projections they
//! are splits of one fused matmul) are an error naming the attention.

use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use kiln_ir::print::{describe_node, value_numbers};
use kiln_ir::{Attr, Attrs, Dim, Graph, NodeId, OpKind, Patch, PatchValue, Shape};
use std::collections::{HashMap, HashSet};

pub const GQA: &str = "gqa";
pub const EXPAND_KV: &str = "expand-kv";

/// How many key/value heads each attention should end up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The same count for every attention (`gqa{groups=N}`).
    Groups(usize),
    /// As many as the attention has query heads (`expand-kv`).
    QueryHeads,
}

/// Both passes: they differ only in the target head count.
#[derive(Debug)]
pub struct KvHeads {
    target: Target,
}

pub fn create_gqa(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known(GQA, &["groups"])?;
    if opts.get("groups").is_none() {
        return Err(format!(
            "pass '{GQA}' needs option 'groups': the number of key/value heads every attention gets (1 is MQA)"
        ));
    }
    let groups = opts.usize("groups", 0)?;
    if groups == 0 {
        return Err(format!("option 'groups' of pass '{GQA}' must be at least 1, found 0"));
    }
    Ok(Box::new(KvHeads { target: Target::Groups(groups) }))
}

pub fn create_expand_kv(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known(EXPAND_KV, &[])?;
    Ok(Box::new(KvHeads { target: Target::QueryHeads }))
}

/// The nodes that compute an attention's keys or values, as matched.
struct Chain {
    /// rope and/or rms_norm between the attention and the reshape, outermost first.
    wrappers: Vec<NodeId>,
    reshape: NodeId,
    /// The reshape's target shape, `[T, Hkv, D]`.
    shape: Shape,
    matmul: NodeId,
}

/// One attention to rewrite.
struct Plan {
    attention: NodeId,
    hkv: i64,
    groups: i64,
    head_dim: i64,
    keys: Chain,
    values: Chain,
}

/// Node names in messages, as the printed IR numbers them (`%12 = split`).
struct Names(HashMap<NodeId, usize>);

impl Names {
    fn of(&self, g: &Graph, n: NodeId) -> String {
        describe_node(g, &self.0, n)
    }
}

/// Where an error is about: `attention %18` (the printed value number).
fn attention_label(names: &Names, n: NodeId) -> String {
    match names.0.get(&n) {
        Some(k) => format!("attention %{k}"),
        None => "attention".to_string(),
    }
}

fn divisors(n: i64) -> Vec<i64> {
    (1..=n).filter(|d| n % d == 0).collect()
}

/// The group count for an attention with `hq` query and `hkv` key/value heads, or why there is none.
fn groups_for(target: Target, hq: i64, hkv: i64) -> Result<i64, String> {
    let n = match target {
        Target::Groups(n) => i64::try_from(n).map_err(|_| format!("groups={n} is too large"))?,
        Target::QueryHeads => return Ok(hq),
    };
    let fits = |n: i64| hq % n == 0 && (hkv % n == 0 || n % hkv == 0);
    if fits(n) {
        return Ok(n);
    }
    let why = if hq % n != 0 {
        format!("{n} does not divide the {hq} query heads")
    } else {
        format!("{n} neither divides nor is a multiple of the {hkv} key/value heads")
    };
    let valid: Vec<String> = divisors(hq).into_iter().filter(|&d| fits(d)).map(|d| d.to_string()).collect();
    Err(format!(
        "with {hq} query heads and {hkv} key/value heads, groups={n} is not possible: {why} (valid group counts: {})",
        valid.join(", ")
    ))
}

/// Whether `n` is computed from weights and constants alone (what the interpreter folds at load),
/// as projection weights and biases are.
fn weight_only(g: &Graph, n: NodeId) -> bool {
    let mut stack = vec![n];
    let mut seen = HashSet::new();
    while let Some(m) = stack.pop() {
        if !seen.insert(m) {
            continue;
        }
        match g.op(m) {
            OpKind::Input | OpKind::Attention | OpKind::Nonzero => return false,
            _ => stack.extend(g.operands(m)),
        }
    }
    true
}

/// Matches the chain that produces operand `start` (`what`: "keys" or "values") of an attention with
/// `hkv` heads of `d`.
fn match_chain(g: &Graph, names: &Names, start: NodeId, what: &str, hkv: i64, d: i64) -> Result<Chain, String> {
    let mut wrappers = Vec::new();
    let mut n = start;
    if g.op(n) == OpKind::Rope {
        wrappers.push(n);
        n = g.operands(n)[0];
    }
    if g.op(n) == OpKind::RmsNorm {
        wrappers.push(n);
        n = g.operands(n)[0];
    }
    let not_a_projection = |found: NodeId| {
        format!(
            "its {what} come from `{}`, not from a projection reshape(matmul(x, W)) to [T, heads, head_dim] \
             (optionally through rms_norm and rope); gqa rewrites the K/V projection weights, so run it before \
             merge-projections and other passes that fuse or restructure the projections",
            names.of(g, found)
        )
    };
    if g.op(n) != OpKind::Reshape {
        return Err(not_a_projection(n));
    }
    let reshape = n;
    let shape = g.node(reshape).attrs.shape("shape").cloned().ok_or_else(|| not_a_projection(reshape))?;
    if shape.0.len() != 3 || shape.dim(1).as_const() != Some(hkv) || shape.dim(2).as_const() != Some(d) {
        return Err(not_a_projection(reshape));
    }
    let matmul = g.operands(reshape)[0];
    if g.op(matmul) != OpKind::MatMul {
        return Err(not_a_projection(matmul));
    }
    let ops = g.operands(matmul);
    let (w, tb) = (ops[1], g.node(matmul).attrs.flag("transpose_b"));
    let wt = g.ty(w);
    let out = if tb { 0 } else { 1 };
    if wt.rank() != 2 || wt.shape.dim(out).as_const() != Some(hkv * d) || wt.shape.dim(1 - out).as_const().is_none() {
        return Err(format!(
            "the {what} projection `{}` has weight {wt}; expected a constant 2-D weight with {} = {hkv}·{d} outputs",
            names.of(g, matmul),
            hkv * d
        ));
    }
    for (i, &p) in ops.iter().enumerate().skip(1) {
        let role = if i == 1 { "weight" } else { "bias" };
        if g.ty(p).dtype.is_quant() {
            return Err(format!(
                "the {what} projection {role} `{}` is block-quantized ({}); gqa pools and repeats float weights, \
                 so run it on an unquantized model",
                names.of(g, p),
                g.ty(p)
            ));
        }
        if !weight_only(g, p) {
            return Err(format!(
                "the {what} projection {role} `{}` is computed from graph inputs, not from weights",
                names.of(g, p)
            ));
        }
    }
    Ok(Chain { wrappers, reshape, shape, matmul })
}

/// `t` with axis `axis` (of `hkv`·`d` elements: `hkv` heads of `d`) turned into `n` heads of `d`:
/// the mean of each run of hkv/n consecutive heads when n divides hkv, every head repeated n/hkv
/// times when hkv divides n. Only weight-only ops, so the result folds at load/compile time.
fn regroup(
    p: &mut Patch,
    g: &Graph,
    t: PatchValue,
    axis: usize,
    hkv: i64,
    n: i64,
    d: i64,
) -> Result<PatchValue, String> {
    let dims = p.ty(g, t).shape.0.clone();
    // [.., heads·d, ..] → [.., heads, per, d, ..]; the `per` axis is axis + 1.
    let split = |heads: i64, per: i64| {
        let mid = [Dim::c(heads), Dim::c(per), Dim::c(d)];
        Shape(dims[..axis].iter().cloned().chain(mid).chain(dims[axis + 1..].iter().cloned()).collect())
    };
    let reshape = |p: &mut Patch, x: PatchValue, shape: Shape| {
        p.add_inferred(g, OpKind::Reshape, Attrs::new().with("shape", Attr::Shape(shape)), &[x])
    };
    let per_axis = axis as i64 + 1;
    let heads = if hkv % n == 0 {
        let x = reshape(p, t, split(n, hkv / n))?;
        p.add_inferred(g, OpKind::ReduceMean, Attrs::new().with("axes", Attr::Ints(vec![per_axis])), &[x])?
    } else {
        let x = reshape(p, t, split(hkv, 1))?;
        let copies = vec![x; (n / hkv) as usize];
        p.add_inferred(g, OpKind::Concat, Attrs::new().with("axis", Attr::Int(per_axis)), &copies)?
    };
    let mut merged = dims;
    merged[axis] = Dim::c(n * d);
    reshape(p, heads, Shape(merged))
}

/// The chain rebuilt for `n` heads on regrouped weights; returns what replaces the attention operand.
fn rebuild(p: &mut Patch, g: &Graph, c: &Chain, hkv: i64, n: i64, d: i64) -> Result<PatchValue, String> {
    let ops = g.operands(c.matmul);
    let attrs = &g.node(c.matmul).attrs;
    let out_axis = if attrs.flag("transpose_b") { 0 } else { 1 };
    let mut operands = vec![PatchValue::from(ops[0]), regroup(p, g, ops[1].into(), out_axis, hkv, n, d)?];
    if let Some(&bias) = ops.get(2) {
        operands.push(regroup(p, g, bias.into(), 0, hkv, n, d)?);
    }
    let mut v = p.add_inferred(g, OpKind::MatMul, attrs.clone(), &operands)?;
    let mut shape = c.shape.clone();
    shape.0[1] = Dim::c(n);
    let mut reshape_attrs = g.node(c.reshape).attrs.clone();
    reshape_attrs.set("shape", Attr::Shape(shape));
    v = p.add_inferred(g, OpKind::Reshape, reshape_attrs, &[v])?;
    for &w in c.wrappers.iter().rev() {
        let mut operands: Vec<PatchValue> = g.operands(w).into_iter().map(PatchValue::from).collect();
        operands[0] = v;
        v = p.add_inferred(g, g.op(w), g.node(w).attrs.clone(), &operands)?;
    }
    Ok(v)
}

impl KvHeads {
    /// Checks every attention and matches the chains of those that change; nothing is modified.
    fn plan(&self, g: &Graph, names: &Names) -> Result<(Vec<Plan>, i64, i64), String> {
        let (mut plans, mut before, mut after) = (Vec::new(), 0, 0);
        for n in g.topo_order().into_iter().filter(|&n| g.op(n) == OpKind::Attention) {
            let at = |m: String| format!("{}: {m}", attention_label(names, n));
            let ops = g.operands(n);
            let (qt, kt) = (g.ty(ops[0]), g.ty(ops[1]));
            let (hq, hkv, d) =
                match (qt.shape.dim(1).as_const(), kt.shape.dim(1).as_const(), kt.shape.dim(2).as_const()) {
                    (Some(hq), Some(hkv), Some(d)) if hq > 0 && hkv > 0 && d > 0 => (hq, hkv, d),
                    _ => return Err(at(format!("needs constant head counts and head dim, found q {qt} and k {kt}"))),
                };
            let groups = groups_for(self.target, hq, hkv).map_err(at)?;
            before += hkv;
            after += groups;
            if groups == hkv {
                continue;
            }
            let keys = match_chain(g, names, ops[1], "keys", hkv, d).map_err(at)?;
            let values = match_chain(g, names, ops[2], "values", hkv, d).map_err(at)?;
            plans.push(Plan { attention: n, hkv, groups, head_dim: d, keys, values });
        }
        Ok((plans, before, after))
    }
}

impl Pass for KvHeads {
    fn name(&self) -> &'static str {
        match self.target {
            Target::Groups(_) => GQA,
            Target::QueryHeads => EXPAND_KV,
        }
    }

    fn options(&self) -> Vec<(String, String)> {
        match self.target {
            Target::Groups(n) => vec![("groups".to_string(), n.to_string())],
            Target::QueryHeads => Vec::new(),
        }
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let name = self.name();
        let names = Names(value_numbers(g, &g.topo_order()));
        let (plans, before, after) = self.plan(g, &names).map_err(|m| PassError::new(name, m))?;
        let mut patch = Patch::new();
        let (mut pooled, mut repeated) = (0usize, 0usize);
        for plan in &plans {
            let at = |m: String| PassError::new(name, format!("{}: {m}", attention_label(&names, plan.attention)));
            let (hkv, n, d) = (plan.hkv, plan.groups, plan.head_dim);
            let k = rebuild(&mut patch, g, &plan.keys, hkv, n, d).map_err(at)?;
            let v = rebuild(&mut patch, g, &plan.values, hkv, n, d).map_err(at)?;
            let ops = g.operands(plan.attention);
            let operands = [ops[0].into(), k, v, ops[3].into()];
            let attrs = g.node(plan.attention).attrs.clone();
            let a = patch.add_inferred(g, OpKind::Attention, attrs, &operands).map_err(at)?;
            if patch.ty(g, a) != g.ty(plan.attention) {
                let msg = format!(
                    "the rewritten attention has type {}, the original {}",
                    patch.ty(g, a),
                    g.ty(plan.attention)
                );
                return Err(at(msg));
            }
            patch.replace_uses(plan.attention, a);
            if hkv % n == 0 {
                pooled += 1;
            } else {
                repeated += 1;
            }
        }
        // The old attentions go, and so does every old chain node nothing else reads (outermost
        // first, so a node's users are decided before it is).
        let mut removed: HashSet<NodeId> = plans.iter().map(|p| p.attention).collect();
        for chain in plans.iter().flat_map(|p| [&p.keys, &p.values]) {
            for &n in chain.wrappers.iter().chain([&chain.reshape, &chain.matmul]) {
                if g.users(n).iter().all(|(u, _)| removed.contains(u)) {
                    removed.insert(n);
                }
            }
        }
        let mut removed: Vec<NodeId> = removed.into_iter().collect();
        removed.sort_unstable();
        for n in removed {
            patch.remove(n);
        }
        g.apply(patch);
        cx.stat(name, "attentions", plans.len());
        cx.stat(name, "pooled", pooled);
        cx.stat(name, "repeated", repeated);
        cx.stat(name, "kv-heads-before", before);
        cx.stat(name, "kv-heads-after", after);
        Ok(Changed::from_bool(!plans.is_empty()))
    }
}

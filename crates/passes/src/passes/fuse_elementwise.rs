//! `fuse-elementwise`: replaces each maximal tree of elementwise ops with one `fused` node whose
//! expression computes the tree per element, e.g.
//!
//! ```text
//! %s = silu %gate               →    %y = fused %gate, %up {expr = "mul(silu($0), $1)"}
//! %y = mul %s, %up
//! ```
//!
//! Members are float-typed elementwise ops ([`OpKind::is_elementwise`]). An op is absorbed into its
//! user's group when its only use is that one operand of that user (so nothing is computed twice or
//! also kept unfused for another user) and it has the user's shape (so a smaller intermediate is not
//! recomputed across a broadcast); otherwise it is the root of a group of its own. Scalar (rank-0)
//! `constant` operands of members become numbers in the expression (rounded to the dtype, as the
//! constant's value is), and are removed when nothing else uses them. Every other value a member reads
//! is an operand of the `fused` node, numbered by first appearance in a depth-first, left-to-right
//! walk of the expression; all of them broadcast to the root's shape. A group is fused when it has
//! two or more ops. Existing `fused` nodes are left as they are (they are ordinary operands).

use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use kiln_ir::interp::tensor::round_float;
use kiln_ir::op::expr::{Expr, Func, MAX_DEPTH};
use kiln_ir::{Attr, Attrs, Graph, NodeId, OpKind, Patch, PatchValue};
use std::collections::{HashMap, HashSet};

pub const NAME: &str = "fuse-elementwise";

#[derive(Debug, Default)]
pub struct FuseElementwise;

pub fn create(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known(NAME, &[])?;
    Ok(Box::new(FuseElementwise))
}

/// The function of a float elementwise op node.
fn member_func(g: &Graph, n: NodeId) -> Option<Func> {
    let node = g.node(n);
    if !node.ty.dtype.is_float() {
        return None;
    }
    Func::from_op(node.op, &node.attrs)
}

/// Whether `n` folds into its single user's group.
fn absorbed(g: &Graph, n: NodeId) -> bool {
    if member_func(g, n).is_none() {
        return false;
    }
    match g.users(n)[..] {
        [(user, _)] => member_func(g, user).is_some() && g.ty(user) == g.ty(n),
        _ => false,
    }
}

/// The value of a scalar constant that folds into an expression of this dtype.
fn scalar_constant(g: &Graph, n: NodeId) -> Option<f64> {
    let node = g.node(n);
    if node.op != OpKind::Constant || node.ty.rank() != 0 || !node.ty.dtype.is_float() {
        return None;
    }
    let v = node.attrs.float("value")?;
    Some(round_float(v as f32, node.ty.dtype) as f64)
}

/// One group under construction.
struct Group {
    members: Vec<NodeId>,
    leaves: Vec<NodeId>,
    constants: Vec<NodeId>,
}

impl Group {
    /// The expression computing `n`, collecting members, operands and folded constants.
    fn expr(&mut self, g: &Graph, n: NodeId, is_root: bool, depth: usize) -> Option<Expr> {
        if is_root || absorbed(g, n) {
            let f = member_func(g, n)?;
            if depth >= MAX_DEPTH {
                return None;
            }
            self.members.push(n);
            let args = g.operands(n).iter().map(|&o| self.expr(g, o, false, depth + 1)).collect::<Option<_>>()?;
            return Some(Expr::Call(f, args));
        }
        if let Some(v) = scalar_constant(g, n) {
            self.constants.push(n);
            return Some(Expr::Num(v));
        }
        let i = self.leaves.iter().position(|&l| l == n).unwrap_or_else(|| {
            self.leaves.push(n);
            self.leaves.len() - 1
        });
        Some(Expr::Operand(i))
    }
}

impl Pass for FuseElementwise {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let err = |m: String| PassError::new(NAME, m);
        let mut patch = Patch::new();
        // Roots replaced so far, by their fused node (roots come before the groups that read them).
        let mut replaced: HashMap<NodeId, PatchValue> = HashMap::new();
        let mut removed: HashSet<NodeId> = HashSet::new();
        let mut folded: Vec<NodeId> = Vec::new();
        let (mut groups, mut ops) = (0usize, 0usize);
        for root in g.topo_order() {
            if member_func(g, root).is_none() || absorbed(g, root) {
                continue;
            }
            let mut group = Group { members: Vec::new(), leaves: Vec::new(), constants: Vec::new() };
            let Some(expr) = group.expr(g, root, true, 0) else { continue };
            if group.members.len() < 2 || group.leaves.is_empty() {
                continue;
            }
            let operands: Vec<PatchValue> =
                group.leaves.iter().map(|l| replaced.get(l).copied().unwrap_or(PatchValue::Existing(*l))).collect();
            let attrs = Attrs::new().with("expr", Attr::Str(expr.to_string()));
            let fused = patch.add_inferred(g, OpKind::Fused, attrs, &operands).map_err(err)?;
            if patch.ty(g, fused) != g.ty(root) {
                return Err(err(format!("fused {expr} has type {}, the root had {}", patch.ty(g, fused), g.ty(root))));
            }
            patch.replace_uses(root, fused);
            replaced.insert(root, fused);
            for &m in &group.members {
                patch.remove(m);
                removed.insert(m);
            }
            folded.extend(group.constants);
            groups += 1;
            ops += group.members.len();
        }
        // Constants now used by nothing.
        folded.sort();
        folded.dedup();
        for c in folded {
            if g.users(c).iter().all(|(u, _)| removed.contains(u)) {
                patch.remove(c);
            }
        }
        g.apply(patch);
        cx.stat(NAME, "groups", groups);
        cx.stat(NAME, "ops-fused", ops);
        Ok(Changed::from_bool(groups > 0))
    }
}

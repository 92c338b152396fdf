//! Shape-checked appliers and the conditions rules use (Tensat's `CheckApply` idea): an applier
//! works out the type of everything it would add *before* adding it, and refuses — the rule simply
//! does not apply at that match — when a node would be ill-typed or the result would not have the
//! type of the class it joins. The analysis's merge assertion then only ever fires for rules that
//! skip these checks.

use super::analysis::{infer_facts, leaf_fact, Fact, KilnEGraph, TensorAnalysis};
use super::lang::{AttrSet, KilnNode};
use egg::{Applier, ENodeOrVar, Id, Pattern, PatternAst, Subst, Symbol, Var};
use kiln_ir::{Attrs, OpKind, TensorType};

/// A variable of a rule's pattern; rule text is static, so a bad name is a bug here.
pub fn var(name: &str) -> Var {
    name.parse().unwrap_or_else(|e| panic!("bad pattern variable {name:?}: {e:?}"))
}

/// The type of the value bound to `v`.
pub fn ty_of<'a>(egraph: &'a KilnEGraph, subst: &Subst, v: Var) -> Option<&'a TensorType> {
    egraph[subst[v]].data.ty()
}

/// The attributes bound to `v` (a variable in an op's attribute position).
pub fn attrs_of<'a>(egraph: &'a KilnEGraph, subst: &Subst, v: Var) -> Option<&'a Attrs> {
    egraph[subst[v]].data.attrs().map(AttrSet::attrs)
}

/// Adds `op(operands) {attrs}` if the attributes check against the op table and the type infers;
/// nothing is added otherwise.
pub fn add_checked(egraph: &mut KilnEGraph, op: OpKind, operands: &[Id], attrs: Attrs) -> Result<Id, String> {
    let attrs = Fact::Attrs(AttrSet::new(attrs));
    {
        let facts: Vec<&Fact> = operands.iter().map(|&c| &egraph[c].data).collect();
        infer_facts(op, &facts, &attrs)?;
    }
    let Fact::Attrs(set) = attrs else { unreachable!() };
    let a = egraph.add(KilnNode::Attrs(set));
    Ok(egraph.add(KilnNode::op(op, operands, a)))
}

/// Unions `new` into the matched class when their types agree; returns the changed classes (for
/// egg's bookkeeping), empty when the types differ or they were already one class.
pub fn union_checked(egraph: &mut KilnEGraph, eclass: Id, new: Id) -> Vec<Id> {
    if egraph[eclass].data.ty() != egraph[new].data.ty() {
        return Vec::new();
    }
    if egraph.union(eclass, new) {
        vec![eclass]
    } else {
        Vec::new()
    }
}

/// Adds `op(operands){attrs}` when it type-checks and unions it into the matched class: the whole
/// right-hand side of an applier that builds one node. Empty when nothing changed.
pub fn add_and_union(egraph: &mut KilnEGraph, eclass: Id, op: OpKind, operands: &[Id], attrs: Attrs) -> Vec<Id> {
    match add_checked(egraph, op, operands, attrs) {
        Ok(id) => union_checked(egraph, eclass, id),
        Err(_) => Vec::new(),
    }
}

/// A right-hand side written as a pattern, instantiated only when every node it adds is well-typed
/// and the result has the matched class's type.
#[derive(Debug)]
pub struct Checked {
    pattern: Pattern<KilnNode>,
}

/// [`Checked`] from pattern text (static rule text: a parse error is a bug here).
pub fn checked(rhs: &str) -> Checked {
    Checked { pattern: rhs.parse().unwrap_or_else(|e| panic!("bad right-hand side {rhs:?}: {e}")) }
}

/// The type the instantiation of `ast` under `subst` would have, or why it would be ill-typed.
pub fn instantiation_type(
    egraph: &KilnEGraph,
    ast: &PatternAst<KilnNode>,
    subst: &Subst,
) -> Result<TensorType, String> {
    let nodes = ast.as_ref();
    let mut facts: Vec<Fact> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let fact = match node {
            ENodeOrVar::Var(v) => egraph[subst[*v]].data.clone(),
            ENodeOrVar::ENode(n) => match leaf_fact(n) {
                Some(f) => f,
                None => {
                    let (op, operands, attrs) = n.split_op().ok_or("not an op")?;
                    let ops: Vec<&Fact> = operands.iter().map(|&c| &facts[usize::from(c)]).collect();
                    let ty = infer_facts(op, &ops, &facts[usize::from(attrs)])?;
                    Fact::Tensor { ty, splat: None }
                }
            },
        };
        facts.push(fact);
    }
    facts.pop().and_then(|f| f.ty().cloned()).ok_or_else(|| "the pattern is not a tensor".to_string())
}

impl Applier<KilnNode, TensorAnalysis> for Checked {
    fn apply_one(
        &self,
        egraph: &mut KilnEGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<KilnNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        match instantiation_type(egraph, &self.pattern.ast, subst) {
            Ok(ty) if Some(&ty) == egraph[eclass].data.ty() => {}
            _ => return Vec::new(),
        }
        let id = egraph.add_instantiation(&self.pattern.ast, subst);
        union_checked(egraph, eclass, id)
    }

    fn vars(&self) -> Vec<Var> {
        self.pattern.vars()
    }
}

/// A condition: the value bound to `v` is a constant whose every element is `value`.
pub fn splat_is(v: &str, value: f64) -> impl Fn(&mut KilnEGraph, Id, &Subst) -> bool {
    let v = var(v);
    move |egraph, _, subst| egraph[subst[v]].data.splat() == Some(value)
}

/// A condition (the shape check of a rule whose right-hand side is a variable): the matched value
/// has the type of the value bound to `v` — `x * 1` is `x` only when the multiplication does not
/// broadcast `x` to a larger shape.
pub fn keeps_type(v: &str) -> impl Fn(&mut KilnEGraph, Id, &Subst) -> bool {
    let v = var(v);
    move |egraph, eclass, subst| {
        let t = egraph[eclass].data.ty();
        t.is_some() && t == ty_of(egraph, subst, v)
    }
}

/// A condition: the `perm` attribute bound to `v` is the identity.
pub fn identity_perm(v: &str) -> impl Fn(&mut KilnEGraph, Id, &Subst) -> bool {
    let v = var(v);
    move |egraph, _, subst| {
        let perm = attrs_of(egraph, subst, v).and_then(|a| a.ints("perm"));
        perm.is_some_and(|p| p.iter().enumerate().all(|(i, &x)| x == i as i64))
    }
}

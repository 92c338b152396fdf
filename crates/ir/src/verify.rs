//! The verifier: re-derives every node's type from the op table and checks the graph-level rules
//! (acyclic, unique input/output names, one type per param name, at least one output). Errors name
//! the node the way the printer numbers it.

use crate::attr::check_attrs;
use crate::error::{VerifyError, VerifyErrorKind};
use crate::graph::Graph;
use crate::op::OpKind;
use crate::print::{describe_node, value_numbers};
use crate::shape::TensorType;
use std::collections::HashMap;

/// Returns the first problem found, in printed order.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    match verify_all(g).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every problem found, in printed order.
pub fn verify_all(g: &Graph) -> Vec<VerifyError> {
    let order = match g.try_topo_order() {
        Ok(o) => o,
        Err(n) => {
            let numbers = value_numbers(g, &g.node_ids().collect::<Vec<_>>());
            return vec![VerifyError { node: describe_node(g, &numbers, n), kind: VerifyErrorKind::Cycle }];
        }
    };
    let numbers = value_numbers(g, &order);
    let mut errors = Vec::new();
    let mut names: HashMap<(&'static str, String), ()> = HashMap::new();
    let mut params: HashMap<String, TensorType> = HashMap::new();
    for &n in &order {
        let node = g.node(n);
        let info = node.op.info();
        let fail = |kind| VerifyError { node: describe_node(g, &numbers, n), kind };
        let operands = g.operands(n);
        if !info.operands.accepts(operands.len()) {
            errors.push(fail(VerifyErrorKind::Arity { expected: info.operands.describe(), found: operands.len() }));
            continue;
        }
        // A sink (`output`) has no value to use: the printer could only write it as `%?`.
        if let Some((i, &o)) = operands.iter().enumerate().find(|(_, &o)| !g.op(o).info().has_result) {
            let what = describe_node(g, &numbers, o);
            errors.push(fail(VerifyErrorKind::Type(format!("operand {i} is {what}, which produces no value"))));
            continue;
        }
        if let Err(e) = check_attrs(info.attrs, &node.attrs) {
            errors.push(fail(VerifyErrorKind::Attr(e)));
            continue;
        }
        let tys: Vec<&TensorType> = operands.iter().map(|&o| g.ty(o)).collect();
        let declared = info.declares_type.then_some(&node.ty);
        match node.op.infer(&tys, &node.attrs, declared) {
            Err(e) => errors.push(fail(VerifyErrorKind::Type(e))),
            Ok(t) if t != node.ty => errors
                .push(fail(VerifyErrorKind::TypeMismatch { declared: node.ty.to_string(), inferred: t.to_string() })),
            Ok(_) => {}
        }
        let name = node.attrs.str("name").unwrap_or_default().to_string();
        match node.op {
            OpKind::Input | OpKind::Output => {
                let what = if node.op == OpKind::Input { "input" } else { "output" };
                if names.insert((what, name.clone()), ()).is_some() {
                    errors.push(fail(VerifyErrorKind::DuplicateName { what, name }));
                }
            }
            OpKind::Param => match params.get(&name) {
                Some(t) if *t != node.ty => {
                    errors.push(fail(VerifyErrorKind::ParamConflict { name, a: t.to_string(), b: node.ty.to_string() }))
                }
                Some(_) => {}
                None => {
                    params.insert(name, node.ty.clone());
                }
            },
            _ => {}
        }
    }
    if g.outputs().is_empty() {
        errors.push(VerifyError {
            node: format!("graph {}", crate::print::graph_name_token(&g.name)),
            kind: VerifyErrorKind::NoOutputs,
        });
    }
    errors
}

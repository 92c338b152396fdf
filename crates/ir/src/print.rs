//! The text form. Values are numbered densely in the canonical topological order, attributes print
//! sorted, symbolic dims by name, floats in their shortest exact form — so the same graph always
//! prints the same text and `parse(print(g))` rebuilds `g`.
//!
//! ```text
//! graph @layer {
//!   %0 = input {name = "x"} : f32[T,576]
//!   %1 = param {name = "model.norm.weight"} : f32[576]
//!   %2 = rms_norm %0, %1 {eps = 1e-5} : f32[T,576]
//!   output %2 {name = "y"}
//! }
//! ```

use crate::graph::{Graph, NodeId};
use std::collections::HashMap;
use std::fmt::Write;

/// Value numbers as printed: `%k` for every node with a result, in canonical order.
pub fn value_numbers(g: &Graph, order: &[NodeId]) -> HashMap<NodeId, usize> {
    order.iter().filter(|&&n| g.op(n).info().has_result).enumerate().map(|(i, &n)| (n, i)).collect()
}

/// How a node is named in messages: `%12 = matmul`, or `output "logits"` for sinks.
pub fn describe_node(g: &Graph, numbers: &HashMap<NodeId, usize>, n: NodeId) -> String {
    let node = g.node(n);
    match numbers.get(&n) {
        Some(k) => format!("%{k} = {}", node.op),
        None => match node.attrs.str("name") {
            Some(name) => format!("{} {name:?}", node.op),
            None => node.op.to_string(),
        },
    }
}

pub(crate) fn graph_name_token(name: &str) -> String {
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if plain {
        format!("@{name}")
    } else {
        format!("@{name:?}")
    }
}

pub fn print(g: &Graph) -> String {
    let order = g.topo_order();
    let numbers = value_numbers(g, &order);
    let mut out = String::new();
    let _ = writeln!(out, "graph {} {{", graph_name_token(&g.name));
    for &n in &order {
        let node = g.node(n);
        let info = node.op.info();
        out.push_str("  ");
        if let Some(k) = numbers.get(&n) {
            let _ = write!(out, "%{k} = ");
        }
        out.push_str(info.name);
        for (i, o) in g.operands(n).iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            match numbers.get(o) {
                Some(k) => {
                    let _ = write!(out, "{sep}%{k}");
                }
                None => {
                    let _ = write!(out, "{sep}%?");
                }
            }
        }
        if !node.attrs.is_empty() {
            let _ = write!(out, " {}", node.attrs);
        }
        if info.has_result {
            let _ = write!(out, " : {}", node.ty);
        }
        out.push('\n');
    }
    out.push_str("}\n");
    out
}

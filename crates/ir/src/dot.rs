//! Graphviz export: one box per node labelled with its printed value number, op, key attributes
//! and type; edges labelled by operand position when an op has several operands.

use crate::graph::Graph;
use crate::op::OpKind;
use crate::print::value_numbers;
use std::fmt::Write;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn to_dot(g: &Graph) -> String {
    let order = g.topo_order();
    let numbers = value_numbers(g, &order);
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&g.name));
    out.push_str("  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    for (i, &n) in order.iter().enumerate() {
        let node = g.node(n);
        let head = match numbers.get(&n) {
            Some(k) => format!("%{k} = {}", node.op),
            None => node.op.to_string(),
        };
        let attrs =
            if node.attrs.is_empty() { String::new() } else { format!("\\n{}", escape(&node.attrs.to_string())) };
        let style = match node.op {
            OpKind::Input | OpKind::Output => ", style=filled, fillcolor=\"#dbe9f6\"",
            OpKind::Param | OpKind::Constant => ", style=filled, fillcolor=\"#eeeeee\"",
            _ => "",
        };
        let _ = writeln!(out, "  n{i} [label=\"{}{attrs}\\n{}\"{style}];", escape(&head), node.ty);
    }
    let index: std::collections::HashMap<_, _> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    for &n in &order {
        let operands = g.operands(n);
        for (pos, o) in operands.iter().enumerate() {
            let label = if operands.len() > 1 { format!(" [label=\"{pos}\"]") } else { String::new() };
            let _ = writeln!(out, "  n{} -> n{}{label};", index[o], index[&n]);
        }
    }
    out.push_str("}\n");
    out
}

//! JSON export of a graph (for tools): nodes in canonical order with printed value numbers.

use crate::graph::Graph;
use crate::print::value_numbers;
use serde_json::{json, Value};

pub fn to_json(g: &Graph) -> Value {
    let order = g.topo_order();
    let numbers = value_numbers(g, &order);
    let nodes: Vec<Value> = order
        .iter()
        .map(|&n| {
            let node = g.node(n);
            let operands: Vec<Option<usize>> = g.operands(n).iter().map(|o| numbers.get(o).copied()).collect();
            json!({
                "value": numbers.get(&n),
                "op": node.op.name(),
                "operands": operands,
                "attrs": serde_json::to_value(&node.attrs).unwrap_or(Value::Null),
                "type": node.ty.to_string(),
            })
        })
        .collect();
    json!({ "graph": g.name, "nodes": nodes })
}

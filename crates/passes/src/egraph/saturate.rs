//! Equality saturation over a whole graph, one bounded region at a time, so compile time grows
//! linearly with depth instead of with the size of one whole-model e-graph.
//!
//! [`partition`] cuts the graph at its attentions. An `attention` node's *layer* is the number of
//! attentions on the longest path into it; any other compute node sits in the earliest layer of
//! its users (or, used by no compute node, in the layer its operands give it). Layer k holds
//! attention k with the q/k/v projections and ropes that feed it — even a rope computed from graph
//! inputs alone — and the MLP of the layer before, so every rope-fusion match lies inside one
//! layer. A layer number never decreases along an edge, so rewriting the layers in order sees
//! every earlier rewrite. A layer larger than `max_nodes` is cut further into chunks in
//! topological order (matches across a cut are missed; nothing unsound happens).

use super::analysis::{KilnRewrite, TensorAnalysis};
use super::convert::RegionEGraph;
use super::cost::CostModel;
use crate::pass::PassCx;
use egg::{Runner, StopReason};
use kiln_ir::{Graph, NodeId, OpKind, Patch};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Bounds of each region's runner; the time limit bounds the whole graph (each region gets what
/// is left of it).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// E-nodes per region e-graph.
    pub node_limit: usize,
    /// Iterations per region.
    pub iter_limit: usize,
    /// Wall time for all regions together.
    pub time_limit: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { node_limit: 10_000, iter_limit: 30, time_limit: Duration::from_secs(2) }
    }
}

/// How a graph is cut into e-graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    /// One region per attention layer, cut into chunks of at most `max_nodes` compute nodes.
    Layers { max_nodes: usize },
    /// The whole graph in one e-graph (for comparison; it grows with depth).
    Whole,
}

impl Default for Partition {
    fn default() -> Partition {
        Partition::Layers { max_nodes: 512 }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EqsatConfig {
    pub limits: Limits,
    pub partition: Partition,
    pub cost: CostModel,
}

/// What saturation did.
#[derive(Clone, Debug, Default)]
pub struct EqsatReport {
    pub regions: usize,
    /// Regions whose extraction changed the graph.
    pub changed_regions: usize,
    /// Regions not rewritten because the time limit was spent.
    pub skipped_regions: usize,
    /// How many regions' runners stopped for each reason (egg's `StopReason`, without its payload).
    pub stop_reasons: BTreeMap<String, usize>,
    /// Iterations, summed over regions.
    pub iterations: usize,
    /// E-nodes and e-classes of the final e-graphs, summed over regions, and the largest e-graph.
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub max_egraph_nodes: usize,
    /// Rule applications by rule name.
    pub applied: BTreeMap<String, usize>,
    /// The graph's cost (see [`CostModel::graph_cost`]) before and after.
    pub cost_before: f64,
    pub cost_after: f64,
    pub elapsed: Duration,
}

impl EqsatReport {
    /// Records the report as statistics of `pass`.
    pub fn record(&self, cx: &mut PassCx, pass: &str) {
        cx.stat(pass, "regions", self.regions);
        cx.stat(pass, "changed_regions", self.changed_regions);
        cx.stat(pass, "skipped_regions", self.skipped_regions);
        cx.stat(pass, "stop_reasons", serde_json::to_value(&self.stop_reasons).unwrap_or_default());
        cx.stat(pass, "iterations", self.iterations);
        cx.stat(pass, "egraph_nodes", self.egraph_nodes);
        cx.stat(pass, "egraph_classes", self.egraph_classes);
        cx.stat(pass, "max_egraph_nodes", self.max_egraph_nodes);
        cx.stat(pass, "applied", serde_json::to_value(&self.applied).unwrap_or_default());
        cx.stat(pass, "cost_before", self.cost_before);
        cx.stat(pass, "cost_after", self.cost_after);
        cx.stat(pass, "time_ms", self.elapsed.as_secs_f64() * 1e3);
    }
}

/// egg's stop reason without its payload: `Saturated`, `IterationLimit`, `NodeLimit`,
/// `TimeLimit` or `Other`.
pub fn stop_reason_name(r: &StopReason) -> &'static str {
    match r {
        StopReason::Saturated => "Saturated",
        StopReason::IterationLimit(_) => "IterationLimit",
        StopReason::NodeLimit(_) => "NodeLimit",
        StopReason::TimeLimit(_) => "TimeLimit",
        StopReason::Other(_) => "Other",
    }
}

fn is_compute(op: OpKind) -> bool {
    !matches!(op, OpKind::Input | OpKind::Param | OpKind::Constant | OpKind::Output)
}

/// The regions of a graph (module docs), each a list of compute nodes in topological order, in
/// an order in which every region comes after the regions it reads from.
pub fn partition(graph: &Graph, max_nodes: usize) -> Vec<Vec<NodeId>> {
    let order: Vec<NodeId> = graph.topo_order().into_iter().filter(|&n| is_compute(graph.op(n))).collect();
    // Earliest layer: attentions on the longest path in.
    let mut layer: HashMap<NodeId, u32> = HashMap::with_capacity(order.len());
    for &n in &order {
        let l = graph
            .operands(n)
            .iter()
            .filter_map(|o| layer.get(o).map(|&l| l + u32::from(graph.op(*o) == OpKind::Attention)))
            .max()
            .unwrap_or(0);
        layer.insert(n, l);
    }
    // Other nodes sink to the earliest layer that uses them (never before their earliest layer:
    // a user's layer is at least its operands').
    for &n in order.iter().rev() {
        if graph.op(n) == OpKind::Attention {
            continue;
        }
        if let Some(l) = graph.users(n).iter().filter_map(|(u, _)| layer.get(u)).min() {
            layer.insert(n, *l);
        }
    }
    let mut layers: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
    for &n in &order {
        layers.entry(layer[&n]).or_default().push(n);
    }
    let max = max_nodes.max(1);
    layers.into_values().flat_map(|nodes| nodes.chunks(max).map(<[NodeId]>::to_vec).collect::<Vec<_>>()).collect()
}

/// Rewrites `graph` with `rules`, region by region, extracting each region's cheapest form.
/// `Err` when the graph does not type-check (a node's type is not what its operands give).
pub fn saturate(graph: &mut Graph, rules: &[KilnRewrite], cfg: &EqsatConfig) -> Result<EqsatReport, String> {
    let start = Instant::now();
    let deadline = start + cfg.limits.time_limit;
    let regions = match cfg.partition {
        Partition::Layers { max_nodes } => partition(graph, max_nodes),
        Partition::Whole => {
            let all: Vec<NodeId> = graph.topo_order().into_iter().filter(|&n| is_compute(graph.op(n))).collect();
            if all.is_empty() {
                Vec::new()
            } else {
                vec![all]
            }
        }
    };
    let mut report =
        EqsatReport { regions: regions.len(), cost_before: cfg.cost.graph_cost(graph), ..Default::default() };
    for region in &regions {
        let now = Instant::now();
        if now >= deadline {
            report.skipped_regions += 1;
            continue;
        }
        let mut rg = RegionEGraph::new(graph, region)?;
        let egraph = std::mem::replace(&mut rg.egraph, egg::EGraph::new(TensorAnalysis));
        let runner: Runner<_, TensorAnalysis> = Runner::new(TensorAnalysis)
            .with_egraph(egraph)
            .with_iter_limit(cfg.limits.iter_limit)
            .with_node_limit(cfg.limits.node_limit)
            .with_time_limit(deadline - now)
            .run(rules);
        let reason = runner.stop_reason.as_ref().map_or("Other", stop_reason_name);
        *report.stop_reasons.entry(reason.to_string()).or_default() += 1;
        report.iterations += runner.iterations.len();
        for it in &runner.iterations {
            for (rule, n) in it.applied.iter() {
                *report.applied.entry(rule.to_string()).or_default() += n;
            }
        }
        let (nodes, classes) = (runner.egraph.total_number_of_nodes(), runner.egraph.number_of_classes());
        report.egraph_nodes += nodes;
        report.egraph_classes += classes;
        report.max_egraph_nodes = report.max_egraph_nodes.max(nodes);
        rg.set_egraph(runner.egraph);
        let ex = rg.extract(graph, &cfg.cost);
        if ex.changed {
            graph.apply(ex.patch);
            report.changed_regions += 1;
            // Constants and weights that only the replaced nodes read go too (inputs stay).
            let mut orphans = Patch::new();
            for &n in rg.source_nodes() {
                if matches!(graph.op(n), OpKind::Constant | OpKind::Param) && !graph.has_users(n) {
                    orphans.remove(n);
                }
            }
            graph.apply(orphans);
        }
    }
    report.cost_after = cfg.cost.graph_cost(graph);
    report.elapsed = start.elapsed();
    Ok(report)
}

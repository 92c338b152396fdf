//! The kernel plan: an optimized graph as a straight list of kernel calls over numbered buffers,
//! with the weights it reads packed for the target.
//!
//! - Weight-only values (params and whatever passes computed from them: merged projections, pooled
//!   heads, expert slices) are folded by the reference interpreter and stored as weights: matmul
//!   and embedding tables in the chosen [`WeightFormat`], everything else as f32.
//! - Every other node becomes one or more kernel calls ([`KernelSpec`], deduplicated: the 30
//!   layers of a model share their kernels) or, for `reshape` and row slices, an alias of its
//!   operand's memory.
//! - `attention` becomes `kv_append` + `attention` over its KV-cache slot (a private scratch slot,
//!   cleared every call, when the node has none).
//! - Mixture-of-Experts layers (after `moe-dispatch`) are described for the runtime ([`moe`]), and
//!   each but the first gets a speculative copy of its router on the previous layer's hidden state
//!   ([`guess`]), for prefetching experts.

mod dims;
mod guess;
mod moe;
mod nodes;

use crate::error::Result;
use crate::kernels::{KernelSpec, WeightFormat};
use dims::{plan_err, Symbols};
use kiln_ir::interp::{Interpreter, Tensor};
use kiln_ir::{Graph, NodeId, OpKind};
use kiln_runtime::artifact::manifest::{
    BufArg, BufferSpec, DimExpr, ElemType, KvSlotSpec, MoeLayer, NamedBuffer, Step, Storage, Symbol,
};
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

pub use dims::{add, scale};

#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    /// Storage of matmul weights and embedding tables.
    pub weights: WeightFormat,
    /// Plan Q8_0/Q4_0 matmuls as `quantize_rows` + `matmul_i8` (int8-activation prefill; the
    /// caller checks that the target has AVX512-VNNI).
    pub int8_prefill: bool,
    /// The CPU's vector lanes, to store unquantized matmul weights and embedding tables with
    /// their rows interleaved for them ([`crate::pack::interleave_for`]); 0 for plain rows (GPU
    /// kernels read those).
    pub interleave_lanes: usize,
}

/// The result of planning: everything the artifact writer needs.
#[derive(Debug)]
pub struct Plan {
    pub symbols: Vec<Symbol>,
    /// Kernel symbol names and what to generate for each.
    pub kernels: Vec<(String, KernelSpec)>,
    pub buffers: Vec<BufferSpec>,
    pub kv_slots: Vec<KvSlotSpec>,
    pub steps: Vec<Step>,
    pub inputs: Vec<NamedBuffer>,
    pub outputs: Vec<NamedBuffer>,
    /// Weight tensors by name, as stored.
    pub weights: Vec<(String, Vec<u8>)>,
    /// Weight formats that fell back (a quantized format needs rows that are whole blocks).
    pub fallbacks: Vec<String>,
    /// The Mixture-of-Experts layers, in program order (empty for dense models).
    pub moe_layers: Vec<MoeLayer>,
}

/// How a weight value is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum WeightUse {
    /// Rows of a `[N, K]` matrix in a format (matmul `b` with `transpose_b`, embedding tables).
    Rows(WeightFormat),
    /// As `[K, N]` transposed to `[N, K]` rows (matmul `b` without `transpose_b`).
    TransposedRows(WeightFormat),
    /// Plain f32 (biases, norm weights, operands of elementwise ops).
    F32,
}

/// A weight matrix as stored: its buffer, format and row interleave (0: plain rows).
#[derive(Clone, Copy, Debug)]
struct PackedWeight {
    buffer: usize,
    format: WeightFormat,
    interleave: usize,
}

struct Planner<'a> {
    g: &'a Graph,
    opts: PlanOptions,
    folded: HashMap<NodeId, Arc<Tensor>>,
    labels: HashMap<NodeId, String>,
    syms: Symbols,
    buffers: Vec<BufferSpec>,
    /// Buffer of each computed value.
    value_buf: HashMap<NodeId, usize>,
    /// The steps each run-time node was planned into (speculative copies not included).
    node_steps: HashMap<NodeId, Range<usize>>,
    weight_buf: HashMap<(NodeId, WeightUse), PackedWeight>,
    kernels: Vec<(String, KernelSpec)>,
    kernel_index: HashMap<String, usize>,
    steps: Vec<Step>,
    weights: Vec<(String, Vec<u8>)>,
    kv_slots: Vec<KvSlotSpec>,
    fallbacks: Vec<String>,
    /// The int8 rows `quantize_rows` made of a value's buffer, shared by the matmuls that read it.
    quantized_rows: HashMap<usize, usize>,
}

/// Plans `graph`, whose weight-only values `interp` (built on the graph with its weights) folded.
pub fn plan(graph: &Graph, interp: &Interpreter, opts: PlanOptions) -> Result<Plan> {
    let order = graph.topo_order();
    let numbers = kiln_ir::print::value_numbers(graph, &order);
    let labels = order.iter().map(|&n| (n, kiln_ir::print::describe_node(graph, &numbers, n))).collect();
    let mut p = Planner {
        g: graph,
        opts,
        folded: interp.folded_values().map(|(n, t)| (n, t.clone())).collect(),
        labels,
        syms: Symbols::new(),
        buffers: Vec::new(),
        value_buf: HashMap::new(),
        node_steps: HashMap::new(),
        weight_buf: HashMap::new(),
        kernels: Vec::new(),
        kernel_index: HashMap::new(),
        steps: Vec::new(),
        weights: Vec::new(),
        kv_slots: Vec::new(),
        fallbacks: Vec::new(),
        quantized_rows: HashMap::new(),
    };
    let statics: HashSet<NodeId> = order.iter().copied().filter(|&n| interp.is_static(n)).collect();
    let layers = moe::find(graph, &order, &statics, &p.labels);
    // Each speculative router copy goes right after the value it reads is computed: as early as
    // possible, so the guess is ready before the previous layer's experts run.
    let mut guesses_after: HashMap<NodeId, Vec<usize>> = HashMap::new();
    for (j, layer) in layers.iter().enumerate() {
        if let Some(g) = &layer.guess {
            guesses_after.entry(g.from).or_default().push(j);
        }
    }
    let mut guesses = vec![None; layers.len()];
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for &n in &order {
        let node = graph.node(n);
        if statics.contains(&n) {
            continue;
        }
        let first_step = p.steps.len();
        match node.op {
            OpKind::Input => {
                let name = node.attrs.str("name").unwrap_or_default().to_string();
                if !node.ty.dtype.is_int() {
                    return Err(plan_err(&p.labels[&n], "only integer inputs (tokens, positions) are supported"));
                }
                let elems = p.syms.numel(&node.ty.shape, &p.labels[&n])?;
                let b = p.buffer(&name, ElemType::I32, elems, Storage::Activation);
                p.value_buf.insert(n, b);
                inputs.push(NamedBuffer { name, buffer: b });
            }
            OpKind::Output => {
                let name = node.attrs.str("name").unwrap_or_default().to_string();
                let x = graph.operands(n)[0];
                let b = p.value(x)?;
                outputs.push(NamedBuffer { name, buffer: b });
            }
            _ => p.node(n)?,
        }
        p.node_steps.insert(n, first_step..p.steps.len());
        for &j in guesses_after.get(&n).map(Vec::as_slice).unwrap_or_default() {
            if let Some(g) = &layers[j].guess {
                guesses[j] = p.guess(j, g)?;
            }
        }
    }
    let moe_layers = moe::annotate(&p, &order, &layers, &guesses, &outputs)?;
    Ok(Plan {
        symbols: p.syms.list,
        kernels: p.kernels,
        buffers: p.buffers,
        kv_slots: p.kv_slots,
        steps: p.steps,
        inputs,
        outputs,
        weights: p.weights,
        fallbacks: p.fallbacks,
        moe_layers,
    })
}

impl<'a> Planner<'a> {
    fn label(&self, n: NodeId) -> &str {
        &self.labels[&n]
    }

    /// Node `n`'s value name (`%12`), the label's part before ` =`: what its buffers are called.
    fn value_name(&self, n: NodeId) -> &str {
        self.label(n).split(" =").next().unwrap_or("%")
    }

    fn buffer(&mut self, name: &str, elem: ElemType, elems: DimExpr, storage: Storage) -> usize {
        self.buffers.push(BufferSpec { name: name.to_string(), elem, elems, storage });
        self.buffers.len() - 1
    }

    /// A new activation buffer for node `n`'s result.
    fn result(&mut self, n: NodeId) -> Result<usize> {
        let ty = &self.g.node(n).ty;
        let elem = if ty.dtype.is_int() || ty.dtype == kiln_ir::DType::Bool { ElemType::I32 } else { ElemType::F32 };
        let elems = self.syms.numel(&ty.shape, self.label(n))?;
        let name = self.value_name(n).to_string();
        let b = self.buffer(&name, elem, elems, Storage::Activation);
        self.value_buf.insert(n, b);
        Ok(b)
    }

    /// The buffer holding a computed value (weights are asked for with [`Planner::weight`]).
    fn value(&mut self, n: NodeId) -> Result<usize> {
        if let Some(&b) = self.value_buf.get(&n) {
            return Ok(b);
        }
        if self.folded.contains_key(&n) {
            return Ok(self.weight(n, WeightUse::F32)?.buffer);
        }
        Err(plan_err(self.label(n), "value used before it is computed (planner bug)"))
    }

    /// The weight buffer for a folded value in the given use, packing it on first use.
    fn weight(&mut self, n: NodeId, usage: WeightUse) -> Result<PackedWeight> {
        if let Some(&b) = self.weight_buf.get(&(n, usage)) {
            return Ok(b);
        }
        let t =
            self.folded.get(&n).cloned().ok_or_else(|| {
                plan_err(self.label(n), "a matmul/embedding weight must be computed from params alone")
            })?;
        let label = self.label(n).to_string();
        let data = t.as_f32().ok_or_else(|| plan_err(&label, "integer weights are not supported"))?;
        let tensor = format!("w{}", self.weights.len());
        let (bytes, format, interleave) = match usage {
            WeightUse::F32 => (data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(), WeightFormat::F32, 0),
            WeightUse::Rows(f) | WeightUse::TransposedRows(f) => {
                let [r, c] = t.shape[..] else {
                    return Err(plan_err(&label, format!("a weight matrix must be 2-D, found shape {:?}", t.shape)));
                };
                let (rows, k, data) = match usage {
                    WeightUse::TransposedRows(_) => {
                        let mut tr = vec![0f32; r * c];
                        for i in 0..r {
                            for j in 0..c {
                                tr[j * r + i] = data[i * c + j];
                            }
                        }
                        (c, r, tr)
                    }
                    _ => (r, c, data.to_vec()),
                };
                let f = if k % f.block() == 0 {
                    f
                } else {
                    self.fallbacks
                        .push(format!("{label}: rows of {k} are not whole {}-blocks; stored as f32", f.name()));
                    WeightFormat::F32
                };
                let packed = crate::pack::pack(f, rows, k, &data)?;
                match crate::pack::interleave_for(f, rows, k, self.opts.interleave_lanes) {
                    0 => (packed, f, 0),
                    chunk => (crate::pack::interleave(f, rows, k, chunk, &packed)?, f, chunk),
                }
            }
        };
        let len = bytes.len();
        self.weights.push((tensor.clone(), bytes));
        let elem = if format == WeightFormat::F32 { ElemType::F32 } else { ElemType::U8 };
        let count = if elem == ElemType::F32 { len / 4 } else { len };
        let b = self.buffer(&label, elem, DimExpr::c(count as i64), Storage::Weight { tensor });
        let packed = PackedWeight { buffer: b, format, interleave };
        self.weight_buf.insert((n, usage), packed);
        Ok(packed)
    }

    /// The index of a kernel for `spec`, generating a name for a new one.
    fn kernel(&mut self, spec: KernelSpec) -> usize {
        let key = serde_json::to_string(&spec).expect("specs serialize");
        if let Some(&i) = self.kernel_index.get(&key) {
            return i;
        }
        let i = self.kernels.len();
        self.kernels.push((format!("kiln_k{i}_{}", spec.kind()), spec));
        self.kernel_index.insert(key, i);
        i
    }

    fn step(
        &mut self,
        n: NodeId,
        spec: KernelSpec,
        dims: Vec<DimExpr>,
        bufs: Vec<BufArg>,
        tasks: DimExpr,
    ) -> &mut Step {
        let kernel = self.kernel(spec);
        let label = self.label(n).to_string();
        self.steps.push(Step { kernel, label, dims, bufs, tasks, binds: None, appends_to: None, speculative: None });
        self.steps.last_mut().expect("just pushed")
    }
}

fn buf(id: usize) -> BufArg {
    BufArg::Buffer { id }
}

//! The reference interpreter: evaluates any verified [`Graph`] on the CPU in f32. It is the semantic
//! ground truth that passes and backends are tested against, so it is written to be plainly correct
//! (contiguous row-major buffers, straightforward loops, f64 accumulation in reductions and dot
//! products) rather than fast.
//!
//! ```no_run
//! # use kiln_ir::interp::{Interpreter, KvCache, Tensor};
//! # use std::collections::HashMap;
//! # let graph = kiln_ir::parse("...").unwrap();
//! # let weights: HashMap<String, Tensor> = HashMap::new();
//! let mut interp = Interpreter::new(&graph, &weights)?;
//! let mut cache = KvCache::new();
//! let out = interp.run(&[("tokens", Tensor::i64(&[2], vec![1, 2])), ("positions", Tensor::i64(&[2], vec![0, 1]))], &mut cache)?;
//! let logits = &out["logits"];
//! # Ok::<(), kiln_ir::interp::InterpError>(())
//! ```
//!
//! Values: floats of every float dtype are held as `f32` and computed in f32 (f16/bf16 values are
//! rounded only where a `cast` says so, and when handed in as inputs); integers and bools as `i64`
//! (i32 results wrap to i32; bools are 0/1). Weights come from a [`WeightSource`], which returns
//! quantized weights already dequantized to f32. Symbolic dims are bound from the inputs' shapes.
//! State lives in a [`KvCache`] passed to each [`Interpreter::run`].

pub mod bind;
pub mod cache;
pub mod error;
pub mod ops;
pub mod tensor;
pub mod testing;
pub mod weights;

pub use bind::Bindings;
pub use cache::{KvCache, KvSlot};
pub use error::InterpError;
pub use tensor::{Tensor, TensorData};
pub use weights::{DerivedWeights, Overlay, WeightSource};

use crate::dtype::DType;
use crate::graph::{Graph, NodeId};
use crate::op::rope::RopeSpec;
use crate::op::OpKind;
use crate::print::{describe_node, value_numbers};
use crate::shape::TensorType;
use ops::attention::AttentionAttrs;
use ops::moe::Activation;
use std::collections::HashMap;
use std::sync::Arc;
use tensor::{round_float, wrap_int};

/// One node in evaluation order.
struct Step {
    node: NodeId,
    /// `%12 = matmul`, as the printer names it.
    label: String,
    /// Operands, as indices into the steps.
    operands: Vec<usize>,
    /// Steps whose value is not needed after this one.
    free_after: Vec<usize>,
}

/// Work done by [`Interpreter::run`] calls, for FLOP and weight-traffic reports: multiply-adds
/// count 2 FLOPs (matmuls, attention, MoE experts); `weight_bytes` counts, at 4 bytes per value, the
/// weights (values computed from params alone) that matmuls, embeddings and MoE experts read — a
/// matmul over zero rows, or an expert no token chose, reads none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    pub flops: u64,
    pub weight_bytes: u64,
}

/// A graph prepared for evaluation, with its weights loaded.
pub struct Interpreter {
    graph: Graph,
    steps: Vec<Step>,
    /// Loaded weights by checkpoint name.
    params: HashMap<String, Arc<Tensor>>,
    /// Values that depend on weights and constants alone (`concat` of params after
    /// `merge-projections`, pooled heads after `gqa`, ...), computed once by [`Interpreter::new`];
    /// kept only where a step that is not itself folded reads them.
    folded: Vec<Option<Arc<Tensor>>>,
    /// Whether each step depends on weights and constants alone.
    is_static: Vec<bool>,
    work: Work,
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpreter")
            .field("graph", &self.graph.name)
            .field("nodes", &self.steps.len())
            .field("params", &self.params.len())
            .finish()
    }
}

type R<T> = Result<T, String>;

fn resolve_axis(rank: usize, axis: i64) -> R<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

impl Interpreter {
    /// Verifies the graph, orders its nodes, and loads every `param` from `weights` once (checking
    /// each against its declared type where that type has no symbolic dims).
    pub fn new(graph: &Graph, weights: &dyn WeightSource) -> Result<Interpreter, InterpError> {
        crate::verify::verify(graph)?;
        let order = graph.topo_order();
        let numbers = value_numbers(graph, &order);
        let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut steps: Vec<Step> = order
            .iter()
            .map(|&n| Step {
                node: n,
                label: describe_node(graph, &numbers, n),
                operands: graph.operands(n).iter().map(|o| pos[o]).collect(),
                free_after: Vec::new(),
            })
            .collect();
        let mut last_use: Vec<usize> = (0..steps.len()).collect();
        for (i, s) in steps.iter().enumerate() {
            for &o in &s.operands {
                last_use[o] = last_use[o].max(i);
            }
        }
        for (v, &l) in last_use.iter().enumerate() {
            steps[l].free_after.push(v);
        }
        let mut params = HashMap::new();
        for s in &steps {
            let node = graph.node(s.node);
            if node.op != OpKind::Param {
                continue;
            }
            let name = node.attrs.str("name").unwrap_or_default();
            if params.contains_key(name) {
                continue;
            }
            let t = weights.get(name, &node.ty)?;
            if node.ty.shape.numel().is_some() {
                let want = Bindings::default().eval_shape(&node.ty.shape).map_err(|e| InterpError::weight(name, e))?;
                check_param(name, &node.ty, &want, &t)?;
            }
            params.insert(name.to_string(), t);
        }
        let (is_static, folded) = fold_static(graph, &steps, &params)?;
        let needed: std::collections::HashSet<&str> = steps
            .iter()
            .enumerate()
            .filter(|&(i, s)| is_static[i] && graph.node(s.node).op == OpKind::Param && folded[i].is_some())
            .map(|(_, s)| graph.node(s.node).attrs.str("name").unwrap_or_default())
            .collect();
        params.retain(|name, _| needed.contains(name.as_str()));
        Ok(Interpreter { graph: graph.clone(), steps, params, folded, is_static, work: Work::default() })
    }

    /// Whether a node depends on weights and constants alone (computed once at load).
    pub fn is_static(&self, node: NodeId) -> bool {
        self.steps.iter().position(|s| s.node == node).is_some_and(|i| self.is_static[i])
    }

    /// The weight-only values that nodes computed at run time read, by node: the values a
    /// compiler stores as (packed) weights.
    pub fn folded_values(&self) -> impl Iterator<Item = (NodeId, &Arc<Tensor>)> {
        self.steps.iter().zip(&self.folded).filter_map(|(s, v)| v.as_ref().map(|v| (s.node, v)))
    }

    /// Work done by all runs so far.
    pub fn work(&self) -> Work {
        self.work
    }

    pub fn reset_work(&mut self) {
        self.work = Work::default();
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// A loaded weight, by checkpoint name (weights read only to compute folded values are dropped
    /// once those are computed).
    pub fn param(&self, name: &str) -> Option<&Arc<Tensor>> {
        self.params.get(name)
    }

    /// Evaluates the graph once: `inputs` by name (each graph input exactly once), reading and
    /// appending to `cache`. Returns every `output` by name.
    ///
    /// Input tensors must hold floats for float inputs and integers for integer/bool inputs; their
    /// shapes bind the symbolic dims. Values of an f16/bf16 input are rounded to that type; values of
    /// an i32 input must fit i32 and of a bool input be 0 or 1. On an error the cache may hold the
    /// entries of attention nodes that ran before it.
    pub fn run(
        &mut self,
        inputs: &[(&str, Tensor)],
        cache: &mut KvCache,
    ) -> Result<HashMap<String, Tensor>, InterpError> {
        let g = &self.graph;
        // Match the given tensors with the graph inputs.
        let mut given: HashMap<&str, &Tensor> = HashMap::new();
        for (name, t) in inputs {
            if g.input_named(name).is_none() {
                let known: Vec<String> =
                    g.inputs().iter().map(|&n| format!("'{}'", g.node(n).attrs.str("name").unwrap_or(""))).collect();
                return Err(InterpError::input(*name, format!("no such graph input (inputs: {})", known.join(", "))));
            }
            if given.insert(name, t).is_some() {
                return Err(InterpError::input(*name, "given twice"));
            }
            t.check().map_err(|e| InterpError::input(*name, e.to_string()))?;
        }
        let mut decls = Vec::new();
        for &n in g.inputs() {
            let node = g.node(n);
            let name = node.attrs.str("name").unwrap_or_default();
            let t =
                given.get(name).ok_or_else(|| InterpError::input(name, format!("missing (declared {})", node.ty)))?;
            if !t.fits_dtype(node.ty.dtype) {
                return Err(InterpError::input(
                    name,
                    format!("declared {} but the tensor holds {} data", node.ty, t.data.kind()),
                ));
            }
            decls.push((name, &node.ty.shape, &t.shape[..]));
        }
        let mut env = bind::bind(&decls)?;

        let mut values: Vec<Option<Arc<Tensor>>> = vec![None; self.steps.len()];
        let mut outputs: Vec<(String, Arc<Tensor>)> = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let node = g.node(step.node);
            let fail = |msg: String| InterpError::Node { node: step.label.clone(), msg };
            if self.is_static[i] {
                if let Some(v) = &self.folded[i] {
                    values[i] = Some(v.clone());
                }
                continue;
            }
            match node.op {
                OpKind::Input => {
                    let name = node.attrs.str("name").unwrap_or_default();
                    let t = input_value(given[name], node.ty.dtype).map_err(|e| InterpError::input(name, e))?;
                    values[i] = Some(Arc::new(t));
                }
                OpKind::Param => {
                    let name = node.attrs.str("name").unwrap_or_default();
                    let t = self.params.get(name).ok_or_else(|| fail(format!("weight '{name}' was not loaded")))?;
                    let want = env.eval_shape(&node.ty.shape).map_err(fail)?;
                    check_param(name, &node.ty, &want, t)?;
                    values[i] = Some(t.clone());
                }
                OpKind::Output => {
                    let name = node.attrs.str("name").unwrap_or_default().to_string();
                    let v = values[step.operands[0]].clone().ok_or_else(|| fail("operand was not computed".into()))?;
                    outputs.push((name, v));
                }
                _ => {
                    let args: Vec<&Tensor> = step
                        .operands
                        .iter()
                        .map(|&o| values[o].as_deref().ok_or_else(|| fail("operand was not computed".into())))
                        .collect::<Result<_, _>>()?;
                    let statics: Vec<bool> = step.operands.iter().map(|&o| self.is_static[o]).collect();
                    let cx = EvalCx { env: &env, statics: &statics, work: &mut self.work };
                    let t = eval(node.op, &node.attrs, &node.ty, &args, cx, cache).map_err(fail)?;
                    if node.op == OpKind::Nonzero {
                        let dim = node.attrs.str("dim").unwrap_or_default();
                        env.bind_dynamic(dim, t.numel(), &step.label).map_err(fail)?;
                    }
                    let want = env.eval_shape(&node.ty.shape).map_err(fail)?;
                    if t.shape != want || !t.fits_dtype(node.ty.dtype) {
                        return Err(fail(format!(
                            "interpreter bug: computed a {} tensor of shape {:?}, but the node's type is {} = {want:?}",
                            t.data.kind(),
                            t.shape,
                            node.ty
                        )));
                    }
                    values[i] = Some(Arc::new(t));
                }
            }
            for &v in &step.free_after {
                values[v] = None;
            }
        }
        drop(values);
        Ok(outputs.into_iter().map(|(n, t)| (n, Arc::unwrap_or_clone(t))).collect())
    }
}

fn check_param(name: &str, ty: &TensorType, want: &[usize], t: &Tensor) -> Result<(), InterpError> {
    t.check().map_err(|e| InterpError::weight(name, e.to_string()))?;
    if t.shape != want {
        return Err(InterpError::weight(
            name,
            format!("declared {ty} = {want:?} but the source gave shape {:?}", t.shape),
        ));
    }
    if !t.fits_dtype(ty.dtype) {
        return Err(InterpError::weight(name, format!("declared {ty} but the source gave {} data", t.data.kind())));
    }
    Ok(())
}

/// An input tensor as the graph sees it: f16/bf16 values rounded, i32/bool values checked.
fn input_value(t: &Tensor, dtype: DType) -> R<Tensor> {
    match &t.data {
        TensorData::F32(v) if matches!(dtype, DType::F16 | DType::BF16) => Ok(Tensor {
            shape: t.shape.clone(),
            data: TensorData::F32(v.iter().map(|&x| round_float(x, dtype)).collect()),
        }),
        TensorData::I64(v) if matches!(dtype, DType::I32 | DType::Bool) => {
            match v.iter().find(|&&x| wrap_int(x, dtype) != x) {
                Some(x) => Err(format!("value {x} does not fit {dtype}")),
                None => Ok(t.clone()),
            }
        }
        _ => Ok(t.clone()),
    }
}

/// Which steps depend on weights and constants alone, and their values, computed once. A folded
/// value is kept only when a step that is not folded reads it.
#[allow(clippy::type_complexity)]
fn fold_static(
    graph: &Graph,
    steps: &[Step],
    params: &HashMap<String, Arc<Tensor>>,
) -> Result<(Vec<bool>, Vec<Option<Arc<Tensor>>>), InterpError> {
    let n = steps.len();
    let mut is_static = vec![false; n];
    let mut values: Vec<Option<Arc<Tensor>>> = vec![None; n];
    let env = Bindings::default();
    let mut work = Work::default();
    let mut cache = KvCache::new();
    for (i, s) in steps.iter().enumerate() {
        let node = graph.node(s.node);
        let fixed = node.ty.shape.numel().is_some();
        is_static[i] = match node.op {
            OpKind::Param => true,
            OpKind::Input | OpKind::Output | OpKind::Attention | OpKind::Nonzero => false,
            _ => fixed && s.operands.iter().all(|&o| is_static[o]),
        };
        if !is_static[i] {
            continue;
        }
        values[i] = Some(match node.op {
            OpKind::Param => params[node.attrs.str("name").unwrap_or_default()].clone(),
            _ => {
                let args: Vec<&Tensor> = s.operands.iter().map(|&o| values[o].as_deref().unwrap()).collect();
                let statics = vec![true; args.len()];
                let cx = EvalCx { env: &env, statics: &statics, work: &mut work };
                let fail = |msg: String| InterpError::Node { node: s.label.clone(), msg };
                Arc::new(eval(node.op, &node.attrs, &node.ty, &args, cx, &mut cache).map_err(fail)?)
            }
        });
    }
    let mut needed = vec![false; n];
    for (i, s) in steps.iter().enumerate() {
        if !is_static[i] {
            for &o in &s.operands {
                needed[o] = true;
            }
        }
    }
    for (v, keep) in values.iter_mut().zip(needed) {
        if !keep {
            *v = None;
        }
    }
    Ok((is_static, values))
}

/// What [`eval`] needs besides the node: symbol values, which operands are weights (for
/// [`Work::weight_bytes`]) and the counters.
struct EvalCx<'a> {
    env: &'a Bindings,
    statics: &'a [bool],
    work: &'a mut Work,
}

/// Evaluates one compute node.
fn eval(
    op: OpKind,
    attrs: &crate::attr::Attrs,
    ty: &TensorType,
    x: &[&Tensor],
    cx: EvalCx,
    cache: &mut KvCache,
) -> R<Tensor> {
    let EvalCx { env, statics, work } = cx;
    let weight = |i: usize, t: &Tensor| if statics.get(i) == Some(&true) { 4 * t.numel() as u64 } else { 0 };
    let need = |k: &str| format!("missing attribute '{k}'");
    let int = |k: &str| attrs.int(k).ok_or_else(|| need(k));
    let axis = |k: &str, t: &Tensor, default: i64| resolve_axis(t.rank(), attrs.int(k).unwrap_or(default));
    use OpKind::*;
    match op {
        Input | Param | Output => Err(format!("{op} is not a compute node")),
        Constant => {
            let shape = env.eval_shape(&ty.shape)?;
            let value = attrs.float("value").ok_or_else(|| need("value"))?;
            let n = tensor::numel(&shape);
            let data = if ty.dtype.is_float() {
                TensorData::F32(vec![round_float(value as f32, ty.dtype); n])
            } else {
                TensorData::I64(vec![wrap_int(value as i64, ty.dtype); n])
            };
            Ok(Tensor { shape, data })
        }
        Add | Sub | Mul | Div | Maximum | Minimum | Pow => ops::elementwise::binary(op, x[0], x[1], ty.dtype),
        Neg | Abs | Exp | Log | Sqrt | Rsqrt | Recip | Tanh | Sigmoid | Silu | Relu => {
            ops::elementwise::unary(op, false, x[0], ty.dtype)
        }
        Gelu => {
            let tanh = match attrs.ident("approx") {
                Some("tanh") => true,
                Some("erf") => false,
                other => return Err(format!("unknown gelu approximation {other:?}")),
            };
            ops::elementwise::unary(op, tanh, x[0], ty.dtype)
        }
        Softmax => ops::norm::softmax(x[0], axis("axis", x[0], -1)?),
        RmsNorm => ops::norm::rms_norm(x[0], x.get(1).copied(), attrs.float("eps").ok_or_else(|| need("eps"))?),
        LayerNorm => ops::norm::layer_norm(
            x[0],
            x.get(1).copied(),
            x.get(2).copied(),
            attrs.float("eps").ok_or_else(|| need("eps"))?,
        ),
        MatMul => {
            let y = ops::matmul::matmul(x[0], x[1], x.get(2).copied(), attrs.flag("transpose_b"))?;
            let k = x[0].shape.last().copied().unwrap_or(0) as u64;
            work.flops += 2 * k * y.numel() as u64;
            if y.numel() > 0 {
                work.weight_bytes += weight(1, x[1]) + x.get(2).map_or(0, |b| weight(2, b));
            }
            Ok(y)
        }
        Embedding => {
            let y = ops::index::embedding(x[0], x[1])?;
            if statics[0] {
                work.weight_bytes += 4 * y.numel() as u64;
            }
            Ok(y)
        }
        Reshape => {
            let shape = env.eval_shape(attrs.shape("shape").ok_or_else(|| need("shape"))?)?;
            ops::layout::reshape(x[0], shape)
        }
        Permute => {
            let perm = attrs.ints("perm").ok_or_else(|| need("perm"))?;
            let perm: Vec<usize> = perm
                .iter()
                .map(|&p| usize::try_from(p).map_err(|_| format!("negative axis {p} in perm")))
                .collect::<R<_>>()?;
            ops::layout::permute(x[0], &perm)
        }
        Concat => ops::layout::concat(x, axis("axis", x[0], 0)?),
        Split => {
            let sizes = attrs.ints("sizes").ok_or_else(|| need("sizes"))?;
            ops::layout::split(x[0], axis("axis", x[0], 0)?, sizes, int("index")?)
        }
        Slice => ops::layout::slice(x[0], axis("axis", x[0], 0)?, int("start")?, attrs.int("end")),
        Cast => tensor::cast(x[0], attrs.dtype("dtype").ok_or_else(|| need("dtype"))?),
        ReduceSum | ReduceMean | ReduceMax => {
            let mut axes = Vec::new();
            for &a in attrs.ints("axes").ok_or_else(|| need("axes"))? {
                let a = resolve_axis(x[0].rank(), a)?;
                if axes.contains(&a) {
                    return Err(format!("axis {a} is listed twice"));
                }
                axes.push(a);
            }
            ops::reduce::reduce(op, x[0], &axes, attrs.flag("keepdim"), ty.dtype)
        }
        Rope => ops::attention::rope(x[0], x[1], &RopeSpec::from_rope_op(attrs)?),
        Attention => {
            let cache_slot = match attrs.int("cache") {
                Some(c) => Some(usize::try_from(c).map_err(|_| format!("cache slot {c} is negative"))?),
                None => None,
            };
            let a = AttentionAttrs {
                causal: attrs.flag("causal"),
                window: attrs.int("window"),
                scale: attrs.float("scale"),
                softcap: attrs.float("softcap"),
                cache: cache_slot,
                rope: RopeSpec::from_attention(attrs)?,
            };
            let y = ops::attention::attention(x[0], x[1], x[2], x[3], &a, cache)?;
            let keys = a.cache.map_or(x[1].shape[0], |c| cache.len(c)) as u64;
            work.flops += 4 * keys * x[0].numel() as u64;
            Ok(y)
        }
        TopK => ops::index::top_k(x[0], int("k")?),
        Gather => ops::index::gather(x[0], x[1], axis("axis", x[0], 0)?),
        Moe => {
            let top_k = usize::try_from(int("top_k")?).map_err(|_| "top_k must be positive".to_string())?;
            let act = Activation::parse(attrs.ident("activation").ok_or_else(|| need("activation"))?)?;
            let experts = int("experts")?;
            if x.len() as i64 != 2 + 3 * experts {
                return Err(format!("{experts} experts need {} expert weights, found {}", 3 * experts, x.len() - 2));
            }
            let (y, counts) =
                ops::moe::moe(x[0], x[1], &x[2..], top_k, attrs.flag("norm_topk"), attrs.flag("unweighted"), act)?;
            let (t, d) = (x[0].shape[0] as u64, x[0].shape[1] as u64);
            work.flops += 2 * t * d * x[1].shape[0] as u64;
            work.weight_bytes += if t > 0 { weight(1, x[1]) } else { 0 };
            for (e, &n) in counts.iter().enumerate() {
                let ws = &x[2 + 3 * e..5 + 3 * e];
                work.flops += 2 * n as u64 * ws.iter().map(|w| w.numel() as u64).sum::<u64>();
                if n > 0 {
                    work.weight_bytes += (0..3).map(|j| weight(2 + 3 * e + j, ws[j])).sum::<u64>();
                }
            }
            Ok(y)
        }
        Take => ops::rows::take(x[0], x[1]),
        ScatterRows => ops::rows::scatter_rows(x[0], x[1], x[2], attrs.ident("mode") == Some("add")),
        Nonzero => ops::rows::nonzero(x[0]),
        ExpertGate => ops::rows::expert_gate(x[0], x[1], int("expert")?),
        ModSelect => ops::rows::mod_select(
            x[0],
            attrs.float("capacity").ok_or_else(|| need("capacity"))?,
            attrs.float("threshold"),
        ),
        Fused => ops::fused::fused(attrs.str("expr").ok_or_else(|| need("expr"))?, x),
    }
}

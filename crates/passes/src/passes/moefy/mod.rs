//! `moefy{experts=E,top-k=K}`: turns every dense gated MLP into a mixture of experts, after
//! MoEfication (arXiv 2110.01786). The I neurons of each layer's FFN are split into E experts of
//! I/E by balanced k-means over the directions of their gate rows ([`kmeans`], [`split`]), a router
//! is derived from the clusters (row e = the mean of expert e's gate rows; [`split`] says why and
//! what was measured against the alternatives), and the MLP becomes one `moe` op that runs the K
//! experts with the largest router logits and sums their outputs with weight 1 (`unweighted`, as
//! MoEfication does):
//!
//! ```text
//! %r   = param "model.layers.N.mlp.moefy.router.weight"      : f32[E, H]   (derived)
//! %i_e = param "model.layers.N.mlp.moefy.experts.e.neurons"  : i32[I/E]    (derived)
//! %dT  = permute %down {perm = [1, 0]}
//! gate_e = take %gate, %i_e      up_e = take %up, %i_e      down_e = permute(take %dT, %i_e)ᵀ
//! %y   = moe %x, %r, gate_0, up_0, down_0, ... {experts = E, top_k = K, unweighted, activation}
//! ```
//!
//! The expert weights are weight-only expressions over the original params, which the interpreter
//! (and codegen) evaluates once at load time; the router and the neuron lists are new params whose
//! values go into `PassCx::derived`. With K = E every neuron runs and the result equals the dense
//! MLP up to float summation order.
//!
//! Everything that can fail — options, the shape of every MLP, divisibility, reading the weights —
//! is checked before the graph is touched. Defaults: `experts=8`, `top-k=2` (both at least 1,
//! top-k at most experts, experts dividing every layer's I). Run it on a model's lowered graph,
//! before `merge-projections`. Stats: `experts`, `top-k`, `layers`, `mean-distance` (mean distance
//! of a neuron to its expert's centroid, over layers) and `random-partition-distance` (the same for
//! a random equal split, for scale).

pub mod find;
pub mod kmeans;
pub mod split;

use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use find::DenseMlp;
use kiln_ir::interp::Tensor;
use kiln_ir::{Attr, Attrs, DType, Dim, Graph, OpKind, Patch, PatchValue, TensorType};
use split::{split_ffn, FfnSplit};
use std::sync::Arc;

pub const NAME: &str = "moefy";

const DEFAULT_EXPERTS: usize = 8;
const DEFAULT_TOP_K: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moefy {
    pub experts: usize,
    pub top_k: usize,
}

impl Default for Moefy {
    fn default() -> Moefy {
        Moefy { experts: DEFAULT_EXPERTS, top_k: DEFAULT_TOP_K }
    }
}

pub fn create(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known(NAME, &["experts", "top-k"])?;
    let p = Moefy { experts: opts.usize("experts", DEFAULT_EXPERTS)?, top_k: opts.usize("top-k", DEFAULT_TOP_K)? };
    p.check()?;
    Ok(Box::new(p))
}

impl Moefy {
    fn check(&self) -> Result<(), String> {
        if self.experts == 0 {
            return Err("option 'experts' must be at least 1".into());
        }
        if self.top_k == 0 || self.top_k > self.experts {
            return Err(format!(
                "option 'top-k' must be in 1..={} (the number of experts), found {}",
                self.experts, self.top_k
            ));
        }
        Ok(())
    }
}

/// A layer's MLP with its split.
struct Plan {
    mlp: DenseMlp,
    split: FfnSplit,
}

/// Reads a weight as f32 values of the declared shape.
fn weight_values(cx: &PassCx, g: &Graph, w: kiln_ir::NodeId) -> Result<Arc<Tensor>, PassError> {
    let node = g.node(w);
    let name = node.attrs.str("name").unwrap_or_default();
    let t = cx.weight(NAME, name, &node.ty)?;
    let want = node.ty.shape.eval(&|_| None).map_err(|e| PassError::new(NAME, format!("'{name}': {e}")))?;
    if t.shape != want || t.as_f32().is_none() {
        return Err(PassError::new(
            NAME,
            format!(
                "weight '{name}' is a {} tensor of shape {:?}, expected floats of shape {want:?}",
                t.data.kind(),
                t.shape
            ),
        ));
    }
    Ok(t)
}

/// One layer's gate weight and hidden size.
type Job = (Arc<Tensor>, usize);

/// Splits every layer, spreading layers over threads (each layer's result depends on its weights
/// alone, so the split is the same however the work is divided).
fn split_all(jobs: &[Job], experts: usize) -> Vec<Result<FfnSplit, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, jobs.len().max(1));
    let run = |(gate, hidden): &Job| split_ffn(gate.as_f32().unwrap_or_default(), *hidden, experts);
    if threads <= 1 {
        return jobs.iter().map(run).collect();
    }
    let mut out: Vec<Option<Result<FfnSplit, String>>> = (0..jobs.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let run = &run;
                s.spawn(move || (t..jobs.len()).step_by(threads).map(|i| (i, run(&jobs[i]))).collect::<Vec<_>>())
            })
            .collect();
        for h in handles {
            if let Ok(results) = h.join() {
                results.into_iter().for_each(|(i, r)| out[i] = Some(r));
            }
        }
    });
    out.into_iter().map(|r| r.unwrap_or_else(|| Err("a clustering thread panicked".into()))).collect()
}

impl Pass for Moefy {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> Vec<(String, String)> {
        let mut o = Vec::new();
        if self.experts != DEFAULT_EXPERTS {
            o.push(("experts".to_string(), self.experts.to_string()));
        }
        if self.top_k != DEFAULT_TOP_K {
            o.push(("top-k".to_string(), self.top_k.to_string()));
        }
        o
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let err = |m: String| PassError::new(NAME, m);
        self.check().map_err(err)?;
        let mlps = find::dense_mlps(g).map_err(err)?;
        for m in &mlps {
            if !m.intermediate.is_multiple_of(self.experts) {
                return Err(err(format!(
                    "layer {}: intermediate size {} is not divisible by {} experts",
                    m.layer, m.intermediate, self.experts
                )));
            }
        }
        let mut jobs = Vec::with_capacity(mlps.len());
        for m in &mlps {
            jobs.push((weight_values(cx, g, m.gate)?, m.hidden));
            // The experts are cut from up and down too: read them now so that a missing one fails
            // before anything changes.
            weight_values(cx, g, m.up)?;
            weight_values(cx, g, m.down)?;
        }
        let mut plans = Vec::with_capacity(mlps.len());
        for (mlp, split) in mlps.into_iter().zip(split_all(&jobs, self.experts)) {
            let split = split.map_err(|e| err(format!("layer {}: {e}", mlp.layer)))?;
            plans.push(Plan { mlp, split });
        }

        let mut patch = Patch::new();
        let mut derived = Vec::new();
        for plan in &plans {
            let moe = self
                .moe(g, &mut patch, plan, &mut derived)
                .map_err(|e| err(format!("layer {}: {e}", plan.mlp.layer)))?;
            patch.replace_uses(plan.mlp.output(), moe);
            for &n in plan.mlp.nodes.iter().rev() {
                patch.remove(n);
            }
        }
        g.apply(patch);
        cx.derived.extend(derived);
        let n = plans.len() as f64;
        cx.stat(NAME, "experts", self.experts);
        cx.stat(NAME, "top-k", self.top_k);
        cx.stat(NAME, "layers", plans.len());
        cx.stat(NAME, "mean-distance", plans.iter().map(|p| p.split.mean_distance).sum::<f64>() / n);
        cx.stat(NAME, "random-partition-distance", plans.iter().map(|p| p.split.random_distance).sum::<f64>() / n);
        Ok(Changed::Yes)
    }
}

impl Moefy {
    /// Queues one layer's `moe` op and records the params it derives.
    fn moe(
        &self,
        g: &Graph,
        patch: &mut Patch,
        plan: &Plan,
        derived: &mut Vec<(String, Arc<Tensor>)>,
    ) -> Result<PatchValue, String> {
        let (mlp, split) = (&plan.mlp, &plan.split);
        let (e, h, f) = (self.experts, mlp.hidden, mlp.intermediate / self.experts);
        let mut param = |patch: &mut Patch, name: String, ty: TensorType, value: Tensor| {
            if g.param_named(&name).is_some() {
                return Err(format!("the graph already has a param '{name}'"));
            }
            derived.push((name.clone(), Arc::new(value)));
            Ok(patch.add(OpKind::Param, Attrs::new().with("name", Attr::Str(name)), &[], ty))
        };
        let dims = |ds: &[usize]| ds.iter().map(|&d| Dim::c(d as i64)).collect::<Vec<_>>();
        let router = param(
            patch,
            format!("{}moefy.router.weight", mlp.prefix),
            TensorType::new(DType::F32, dims(&[e, h])),
            Tensor::f32(&[e, h], split.router.clone()),
        )?;
        let perm = Attrs::new().with("perm", Attr::Ints(vec![1, 0]));
        let down_t = patch.add_inferred(g, OpKind::Permute, perm.clone(), &[mlp.down.into()])?;
        let mut operands = vec![PatchValue::from(mlp.input), router];
        for (i, neurons) in split.experts.iter().enumerate() {
            let idx = param(
                patch,
                format!("{}moefy.experts.{i}.neurons", mlp.prefix),
                TensorType::new(DType::I32, dims(&[f])),
                Tensor::i64(&[f], neurons.iter().map(|&n| n as i64).collect()),
            )?;
            let gate = patch.add_inferred(g, OpKind::Take, Attrs::new(), &[mlp.gate.into(), idx])?;
            let up = patch.add_inferred(g, OpKind::Take, Attrs::new(), &[mlp.up.into(), idx])?;
            let down = patch.add_inferred(g, OpKind::Take, Attrs::new(), &[down_t, idx])?;
            let down = patch.add_inferred(g, OpKind::Permute, perm.clone(), &[down])?;
            operands.extend([gate, up, down]);
        }
        let attrs = Attrs::new()
            .with("experts", Attr::Int(e as i64))
            .with("top_k", Attr::Int(self.top_k as i64))
            .with("unweighted", Attr::Bool(true))
            .with("activation", Attr::Ident(mlp.activation.to_string()));
        let moe = patch.add_inferred(g, OpKind::Moe, attrs, &operands)?;
        if patch.ty(g, moe) != g.ty(mlp.output()) {
            return Err(format!("the moe op has type {}, the MLP had {}", patch.ty(g, moe), g.ty(mlp.output())));
        }
        Ok(moe)
    }
}

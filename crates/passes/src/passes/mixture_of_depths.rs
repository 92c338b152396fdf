//! `mod{capacity=C,layers=L,routers=FILE,keep-first=B}`: Mixture-of-Depths routing (arXiv
//! 2404.02258) with routers fitted after the fact by `kiln calibrate` (see
//! [`crate::mod_calibration`]). In each chosen decoder block only the tokens its router ranks highest
//! are computed; the others skip the block on the residual stream:
//!
//! ```text
//! %n    = rms_norm %x {eps = 1e-6}                     // x: the block's input [T, H]; no weight
//! %s    = add (reduce_sum (mul %n, %w) {axes = [1]}), %b   // router score [T]
//! %mask = mod_select %s {capacity = C, threshold = θ}
//! %mask = maximum %mask, (relu (sub 1, (cast %positions {dtype = f32}))) // keep-first: position 0 enters
//! %rows = nonzero %mask {dim = "mod3"}                 // i32[mod3]: the tokens that enter
//! %xs   = take %x, %rows                               // and their positions, alike
//! ...     the block, cloned over %xs with T → mod3 in shape attributes ...
//! %out  = scatter_rows %x, %rows, %block_out {mode = set}
//! ```
//!
//! `mod_select` takes the top ⌈C·T⌉ tokens of a prompt (T > 1). A single decoded token enters when
//! its score beats θ, the (1 − C) quantile of the router's scores on the calibration text — the
//! paper's causal alternative to top-k, which needs the future. Attention in a routed block keeps its
//! `cache` slot, so that slot holds only the tokens that entered the block (as in the paper);
//! positions travel with the tokens, so causality and RoPE stay right. Capacity 1 takes every token
//! in order and has no threshold, so the model computes exactly what it did before.
//!
//! `keep-first` (default true) also sends the token at position 0 through every routed block. That
//! token is the attention sink later tokens lean on (StreamingLLM, arXiv 2309.17453), and a block
//! that skips it drops it from its KV cache for every later token. On SmolLM2-135M (odd layers,
//! capacity 0.875, 512-token probe routers, perplexity on other text) keeping it takes perplexity
//! from about 700 to about 190 (random routers: 1460 to 230; the model itself: 71). With it a
//! prompt sends ⌈C·T⌉ tokens through a block, plus the first one when the router did not pick it.
//!
//! The routers file is read and checked when the pass is created (capacity, layers, a router for
//! each chosen layer); the graph's layer count and hidden size are checked before anything changes.
//! Stats: `layers`, `capacity`, `keep_first`, `thresholds`.

use crate::blocks::{block_nodes, decoder_blocks, Block};
use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use crate::routers::{tensor_name, Routers, ROUTER_NORM_EPS};
use kiln_ir::interp::Tensor;
use kiln_ir::{Attr, Attrs, DType, Dim, Graph, NodeId, OpKind, Patch, PatchValue, Shape, TensorType};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

pub const NAME: &str = "mod";
pub const DEFAULT_CAPACITY: f64 = 0.5;

/// Which decoder layers are routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layers {
    All,
    /// 1, 3, 5, …: every other layer, as in the paper (the default).
    Odd,
    Even,
    List(Vec<usize>),
}

impl Layers {
    pub fn parse(s: &str) -> Result<Layers, String> {
        match s {
            "all" => Ok(Layers::All),
            "odd" => Ok(Layers::Odd),
            "even" => Ok(Layers::Even),
            _ => {
                let mut v = s
                    .split('+')
                    .map(|p| p.parse::<usize>().ok())
                    .collect::<Option<Vec<_>>>()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        format!("option 'layers' must be all, odd, even or layer numbers like 1+3+5, found '{s}'")
                    })?;
                v.sort_unstable();
                v.dedup();
                Ok(Layers::List(v))
            }
        }
    }

    /// The chosen layers of an `n`-layer model, ascending (listed layers as given, even when out of
    /// range: callers check).
    pub fn select(&self, n: usize) -> Vec<usize> {
        match self {
            Layers::All => (0..n).collect(),
            Layers::Odd => (1..n).step_by(2).collect(),
            Layers::Even => (0..n).step_by(2).collect(),
            Layers::List(v) => v.clone(),
        }
    }

    fn spelling(&self) -> String {
        match self {
            Layers::All => "all".into(),
            Layers::Odd => "odd".into(),
            Layers::Even => "even".into(),
            Layers::List(v) => v.iter().map(usize::to_string).collect::<Vec<_>>().join("+"),
        }
    }
}

#[derive(Debug)]
pub struct MixtureOfDepths {
    capacity: f64,
    keep_first: bool,
    layers: Layers,
    routers_path: String,
    routers: Routers,
}

pub fn create(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known(NAME, &["capacity", "keep-first", "layers", "routers"])?;
    let capacity = match opts.get("capacity") {
        None => DEFAULT_CAPACITY,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|c| *c > 0.0 && *c <= 1.0)
            .ok_or_else(|| format!("option 'capacity' must be a number in (0, 1], found '{v}'"))?,
    };
    let keep_first = opts.bool("keep-first", true)?;
    let layers = Layers::parse(opts.get("layers").unwrap_or("odd"))?;
    let path = opts.get("routers").ok_or("option 'routers' is required: a routers file written by `kiln calibrate`")?;
    let routers = Routers::read(Path::new(path)).map_err(|e| format!("option 'routers': {e}"))?;
    let n = routers.num_layers;
    let chosen = layers.select(n);
    if chosen.is_empty() {
        return Err(format!("option 'layers': '{}' selects no layer of a {n}-layer model", layers.spelling()));
    }
    for &l in &chosen {
        if l >= n {
            return Err(format!(
                "option 'layers': layer {l} is out of range: {path} was calibrated for a {n}-layer model (layers 0..{})",
                n - 1
            ));
        }
        if !routers.layers.contains_key(&l) {
            let have: Vec<String> = routers.layers.keys().map(usize::to_string).collect();
            return Err(format!(
                "option 'layers': {path} has no router for layer {l} (it has routers for layers {})",
                have.join(", ")
            ));
        }
    }
    Ok(Box::new(MixtureOfDepths { capacity, keep_first, layers, routers_path: path.to_string(), routers }))
}

/// `d` with symbol `from` replaced by symbol `to`.
fn rename_dim(d: &Dim, from: &str, to: &str) -> Dim {
    let at = |t: i64| d.eval(&|s| Some(if s == from { t } else { 0 })).unwrap_or(0);
    let coeff = at(1) - at(0);
    if coeff == 0 {
        return d.clone();
    }
    d.add(&Dim::sym(to).scale(coeff)).sub(&Dim::sym(from).scale(coeff))
}

fn rename_shape(s: &Shape, from: &str, to: &str) -> Shape {
    Shape(s.dims().iter().map(|d| rename_dim(d, from, to)).collect())
}

/// Attributes with every shape (`reshape`'s `shape = [T, 4, 16]`) renamed, tagged records included.
fn rename_attrs(a: &Attrs, from: &str, to: &str) -> Attrs {
    Attrs(
        a.iter()
            .map(|(k, v)| {
                let v = match v {
                    Attr::Shape(s) => Attr::Shape(rename_shape(s, from, to)),
                    Attr::Tagged { tag, fields } => {
                        Attr::Tagged { tag: tag.clone(), fields: rename_attrs(fields, from, to) }
                    }
                    other => other.clone(),
                };
                (k.to_string(), v)
            })
            .collect(),
    )
}

fn mentions(ty: &TensorType, sym: &str) -> bool {
    ty.shape.dims().iter().any(|d| d.symbols().any(|s| s == sym))
}

/// What the routed layers of one run share: block outputs already replaced (by earlier routed
/// layers) and their replacements, and the keep-first mask, built once.
#[derive(Default)]
struct Shared {
    subst: HashMap<NodeId, PatchValue>,
    first: Option<PatchValue>,
}

/// `[T]`: 1 for the token at position 0, else 0 — `relu(1 − p)`, as positions are whole and
/// non-negative.
fn first_token_mask(g: &Graph, patch: &mut Patch) -> Result<PatchValue, String> {
    let pos =
        g.input_named("positions").ok_or("keep-first needs the graph's 'positions' input (or keep-first=false)")?;
    let pos =
        patch.add_inferred(g, OpKind::Cast, Attrs::new().with("dtype", Attr::DType(DType::F32)), &[pos.into()])?;
    let one = Attrs::new().with("value", Attr::Float(1.0));
    let one = patch.add(OpKind::Constant, one, &[], TensorType::new(DType::F32, [Dim::c(1)]));
    let d = patch.add_inferred(g, OpKind::Sub, Attrs::new(), &[one, pos])?;
    patch.add_inferred(g, OpKind::Relu, Attrs::new(), &[d])
}

/// What routing one layer adds besides the patch: its derived weights and threshold.
struct Routed {
    weights: [(String, Tensor); 2],
    threshold: Option<f64>,
}

impl MixtureOfDepths {
    fn err(&self, msg: impl Into<String>) -> PassError {
        PassError::new(NAME, msg)
    }

    /// Queues the routed version of block `b` in `patch`.
    fn route(
        &self,
        g: &Graph,
        b: &Block,
        dim: &str,
        patch: &mut Patch,
        shared: &mut Shared,
    ) -> Result<Routed, PassError> {
        let l = b.layer;
        let fail = |m: String| self.err(format!("layer {l}: {m}"));
        let x_ty = g.ty(b.input).clone();
        let t = match x_ty.shape.dims() {
            [t, _] => t.symbols().next().filter(|s| *t == Dim::sym(s)).map(str::to_string),
            _ => None,
        }
        .ok_or_else(|| fail(format!("the residual stream {x_ty} is not [T, hidden] with a symbolic T")))?;
        let hidden = self.routers.hidden_size;
        if x_ty.shape.dim(1).as_const() != Some(hidden as i64) {
            return Err(fail(format!(
                "the graph's residual stream is {x_ty}, but {} holds routers for hidden size {hidden}",
                self.routers_path
            )));
        }
        let nodes = block_nodes(g, b);
        let inside: HashSet<NodeId> = nodes.iter().copied().collect();
        for &n in &nodes {
            if n != b.output && g.users(n).iter().any(|(u, _)| !inside.contains(u)) {
                return Err(fail(format!(
                    "a {} inside the block is also used outside it, so the block cannot be skipped",
                    g.op(n)
                )));
            }
        }
        let router = &self.routers.layers[&l];
        let (wname, bname) = (tensor_name(l, "weight"), tensor_name(l, "bias"));
        for name in [&wname, &bname] {
            if g.param_named(name).is_some() {
                return Err(fail(format!("the graph already has '{name}': run `mod` once")));
            }
        }
        let add = |patch: &mut Patch, op: OpKind, attrs: Attrs, ops: &[PatchValue]| {
            patch.add_inferred(g, op, attrs, ops).map_err(|e| fail(format!("{op}: {e}")))
        };
        let named = |n: &str| Attrs::new().with("name", Attr::Str(n.to_string()));
        let x = shared.subst.get(&b.input).copied().unwrap_or(b.input.into());

        // The router.
        let w = patch.add(OpKind::Param, named(&wname), &[], TensorType::new(x_ty.dtype, [Dim::c(hidden as i64)]));
        let bias = patch.add(OpKind::Param, named(&bname), &[], TensorType::new(x_ty.dtype, [Dim::c(1)]));
        let normed = add(patch, OpKind::RmsNorm, Attrs::new().with("eps", Attr::Float(ROUTER_NORM_EPS)), &[x])?;
        let weighted = add(patch, OpKind::Mul, Attrs::new(), &[normed, w])?;
        let summed = add(patch, OpKind::ReduceSum, Attrs::new().with("axes", Attr::Ints(vec![1])), &[weighted])?;
        let score = add(patch, OpKind::Add, Attrs::new(), &[summed, bias])?;
        let threshold = router.threshold(self.capacity);
        let mut sel = Attrs::new().with("capacity", Attr::Float(self.capacity));
        if let Some(th) = threshold {
            sel.set("threshold", Attr::Float(th));
        }
        let mut mask = add(patch, OpKind::ModSelect, sel, &[score])?;
        // At capacity 1 every token enters anyway.
        if self.keep_first && self.capacity < 1.0 {
            let first = match shared.first {
                Some(f) => f,
                None => {
                    let f = first_token_mask(g, patch).map_err(fail)?;
                    shared.first = Some(f);
                    f
                }
            };
            mask = add(patch, OpKind::Maximum, Attrs::new(), &[mask, first])?;
        }
        let rows = add(patch, OpKind::Nonzero, Attrs::new().with("dim", Attr::Str(dim.to_string())), &[mask])?;

        // The block over the chosen tokens. Values from outside it that have a row per token
        // (positions) are taken alike; anything else with T in its shape cannot follow the tokens.
        let mut map: HashMap<NodeId, PatchValue> = HashMap::new();
        map.insert(b.input, add(patch, OpKind::Take, Attrs::new(), &[x, rows])?);
        for &n in &nodes {
            let mut ops = Vec::new();
            for o in g.operands(n) {
                if let Some(&v) = map.get(&o) {
                    ops.push(v);
                    continue;
                }
                let ext = shared.subst.get(&o).copied().unwrap_or(o.into());
                let ty = g.ty(o);
                if !mentions(ty, &t) {
                    ops.push(ext);
                    continue;
                }
                let per_token = ty.shape.dim(0) == &Dim::sym(&t)
                    && ty.shape.dims()[1..].iter().all(|d| !d.symbols().any(|s| s == t));
                if !per_token {
                    return Err(fail(format!(
                        "the block reads a {} of type {ty} whose rows are not its tokens",
                        g.op(o)
                    )));
                }
                let taken = add(patch, OpKind::Take, Attrs::new(), &[ext, rows])?;
                map.insert(o, taken);
                ops.push(taken);
            }
            let node = g.node(n);
            let v = add(patch, node.op, rename_attrs(&node.attrs, &t, dim), &ops)?;
            let want = node.ty.with_shape(rename_shape(&node.ty.shape, &t, dim));
            if patch.ty(g, v) != &want {
                return Err(fail(format!("the routed {} has type {}, expected {want}", node.op, patch.ty(g, v))));
            }
            map.insert(n, v);
        }
        let mode = Attrs::new().with("mode", Attr::Ident("set".into()));
        let out = add(patch, OpKind::ScatterRows, mode, &[x, rows, map[&b.output]])?;
        patch.replace_uses(b.output, out);
        shared.subst.insert(b.output, out);
        for &n in &nodes {
            patch.remove(n);
        }
        Ok(Routed {
            weights: [
                (wname, Tensor::f32(&[hidden], router.weight.clone())),
                (bname, Tensor::f32(&[1], vec![router.bias])),
            ],
            threshold,
        })
    }
}

impl Pass for MixtureOfDepths {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> Vec<(String, String)> {
        let mut o = Vec::new();
        if self.capacity != DEFAULT_CAPACITY {
            o.push(("capacity".to_string(), self.capacity.to_string()));
        }
        if !self.keep_first {
            o.push(("keep-first".to_string(), "false".to_string()));
        }
        if self.layers != Layers::Odd {
            o.push(("layers".to_string(), self.layers.spelling()));
        }
        o.push(("routers".to_string(), self.routers_path.clone()));
        o
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let blocks = decoder_blocks(g).map_err(|e| self.err(e))?;
        if blocks.len() != self.routers.num_layers {
            return Err(self.err(format!(
                "{} was calibrated for a {}-layer model, but the graph has {} decoder layers",
                self.routers_path,
                self.routers.num_layers,
                blocks.len()
            )));
        }
        let used = g.symbols_in_use();
        let mut patch = Patch::new();
        let mut shared = Shared::default();
        let mut routed = Vec::new();
        for l in self.layers.select(blocks.len()) {
            let base = format!("mod{l}");
            let dim =
                (0..).map(|k| if k == 0 { base.clone() } else { format!("{base}_{k}") }).find(|d| !used.contains(d));
            let dim = dim.expect("an unused suffix exists");
            routed.push((l, self.route(g, &blocks[l], &dim, &mut patch, &mut shared)?));
        }
        // Nothing has changed until here: every layer was checked while building the patch.
        g.apply(patch);
        let mut thresholds = serde_json::Map::new();
        for (l, r) in &routed {
            for (name, t) in &r.weights {
                cx.derived.insert(name.clone(), Arc::new(t.clone()));
            }
            thresholds.insert(l.to_string(), r.threshold.into());
        }
        cx.stat(NAME, "layers", routed.iter().map(|(l, _)| *l).collect::<Vec<_>>());
        cx.stat(NAME, "capacity", self.capacity);
        cx.stat(NAME, "keep_first", self.keep_first);
        cx.stat(NAME, "thresholds", serde_json::Value::Object(thresholds));
        Ok(Changed::from_bool(!routed.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_choices() {
        assert_eq!(Layers::parse("odd").unwrap().select(6), vec![1, 3, 5]);
        assert_eq!(Layers::parse("even").unwrap().select(5), vec![0, 2, 4]);
        assert_eq!(Layers::parse("all").unwrap().select(3), vec![0, 1, 2]);
        assert_eq!(Layers::parse("5+1+3+1").unwrap(), Layers::List(vec![1, 3, 5]));
        assert_eq!(Layers::parse("5+1").unwrap().spelling(), "1+5");
        for bad in ["", "1+x", "-1", "odds"] {
            assert!(Layers::parse(bad).unwrap_err().contains("option 'layers'"), "{bad}");
        }
    }

    #[test]
    fn dims_rename_with_their_coefficients() {
        let d = Dim::sym("T").scale(2).add(&Dim::sym("P")).add(&Dim::c(3));
        let r = rename_dim(&d, "T", "mod1");
        assert_eq!(r, Dim::sym("mod1").scale(2).add(&Dim::sym("P")).add(&Dim::c(3)));
        assert_eq!(rename_dim(&Dim::c(64), "T", "mod1"), Dim::c(64));
    }

    #[test]
    fn bad_options_fail_before_reading_anything_else() {
        let o =
            |pairs: &[(&str, &str)]| PassOptions(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let err = |pairs: &[(&str, &str)]| create(&o(pairs)).err().expect("must fail");
        assert!(err(&[]).contains("option 'routers' is required"));
        for c in ["0", "1.5", "-0.1", "half", "NaN"] {
            assert!(err(&[("capacity", c), ("routers", "x")]).contains("option 'capacity' must be a number in (0, 1]"));
        }
        assert!(err(&[("routers", "/no/such/file")]).starts_with("option 'routers': /no/such/file: cannot read"));
    }
}

//! Property tests for the text form: random well-typed graphs built through [`GraphBuilder`] must
//! survive `print → parse` unchanged and verify clean.
//!
//! A case is a list of [`Step`]s. Each step names an op family, carries a seed for the choices
//! inside it (operands, dims, attributes) plus a couple of "interesting" floats and a name, and is
//! interpreted against the graph built so far: operands are picked among existing values of a
//! compatible type, or made fresh (inputs, params, constants) so that almost every step adds a
//! node. A few steps are "wild": a random op with random operands and random attributes of the
//! right kinds, which mostly fail to type-check and are skipped — they exist to shake the
//! result-type rules for panics. Shrinking drops steps, so failures minimize to a handful of nodes.
//!
//! Properties, for every generated graph `g`:
//!   (a) `print(parse(print(g))) == print(g)`
//!   (b) `parse(print(g)).same_as(&g)`
//!   (c) `verify(&g)` is `Ok` (and `verify_all` is empty) when `g` has an output.
//!
//! `PROPTEST_CASES` overrides the number of cases (default 2048);
//! `KILN_PROPTEST_VERBOSE=1` prints coverage and skip statistics.

mod support;

use kiln_ir::op::{ACTIVATIONS, ROPE_LAYOUTS};
use kiln_ir::{
    parse, print, verify, verify_all, Attr, AttrKind, Attrs, DType, Dim, Graph, GraphBuilder, NodeId, OpKind,
    QuantFormat, Shape, TensorType,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::collections::BTreeMap;
use support::Rng;

// ---------------------------------------------------------------------------------------------
// Strategies

/// Op families a step can ask for. Repeats weight the draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Input,
    Param,
    Constant,
    Binary,
    Unary,
    Gelu,
    Softmax,
    Norm,
    MatMul,
    BatchedMatMul,
    Embedding,
    Reshape,
    Permute,
    Concat,
    Split,
    Slice,
    Cast,
    Reduce,
    Rope,
    Attention,
    TopK,
    Gather,
    Moe,
    Rows,
    /// `fused {expr = "..."}`, if the op table has it.
    Fused,
    Output,
    Wild,
}

const FAMILIES: &[Family] = {
    use Family::*;
    &[
        Input,
        Param,
        Constant,
        Binary,
        Binary,
        Binary,
        Unary,
        Unary,
        Gelu,
        Softmax,
        Norm,
        Norm,
        MatMul,
        MatMul,
        BatchedMatMul,
        Embedding,
        Reshape,
        Reshape,
        Permute,
        Concat,
        Split,
        Slice,
        Slice,
        Cast,
        Reduce,
        Rope,
        Rope,
        Attention,
        Attention,
        TopK,
        Gather,
        Moe,
        Rows,
        Rows,
        Rows,
        Fused,
        Output,
        Output,
        Wild,
    ]
};

#[derive(Clone, Debug)]
struct Step {
    family: Family,
    seed: u64,
    f: [f64; 2],
    name: String,
}

/// Floats that stress the printer: tiny/huge exponents, signed zero, NaN (both signs), infinities,
/// subnormals, and arbitrary bit patterns.
fn float() -> impl Strategy<Value = f64> {
    let special = prop::sample::select(vec![
        1e-5,
        1e-6,
        1e300,
        -1e300,
        0.0,
        -0.0,
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        5e-324,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        1.0,
        -1.0,
        0.1,
        10000.0,
        500000.0,
        1e16,
        123456789.0,
        1.0 / 3.0,
    ]);
    prop_oneof![
        3 => special,
        // Arbitrary finite and infinite values. NaNs with payloads are canonicalized: the text form
        // spells NaN as `NaN`/`-NaN` and keeps the sign, not the payload.
        2 => any::<f64>().prop_map(|x| if x.is_nan() { if x.is_sign_negative() { -f64::NAN } else { f64::NAN } } else { x }),
        1 => -1e6..1e6f64,
    ]
}

/// Names for graphs, inputs, outputs and params: identifiers, names that need quoting, escapes,
/// control characters, combining marks, emoji, arbitrary code points.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z][a-z0-9_.]{0,10}",
        2 => prop::sample::select(vec![
            "", " ", "a b", "quote\"d", "back\\slash", "tab\there", "new\nline", "cr\r", "nul\0", "é", "日本語",
            "🦀", "e\u{301}", "zw\u{200b}sp", "del\u{7f}", "bell\u{7}", "@x", "%0", "}", "{", "model.layers.0.weight",
            "'single'", "\\u{41}", "//comment", "-", "1abc", "a-b.c_d",
        ])
        .prop_map(String::from),
        2 => prop::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (prop::sample::select(FAMILIES), any::<u64>(), [float(), float()], name())
        .prop_map(|(family, seed, f, name)| Step { family, seed, f, name })
}

#[derive(Clone, Debug)]
struct Case {
    graph_name: String,
    steps: Vec<Step>,
    /// Add an output at the end if the steps made none.
    ensure_output: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (name(), prop::collection::vec(step(), 1..48), prop::bool::weighted(0.9))
        .prop_map(|(graph_name, steps, ensure_output)| Case { graph_name, steps, ensure_output })
}

// ---------------------------------------------------------------------------------------------
// Interpreting steps

#[derive(Default)]
struct Stats {
    /// Nodes added per op.
    ops: BTreeMap<&'static str, usize>,
    /// Targeted steps that added their node / were skipped (with the first messages seen).
    ok: usize,
    skipped: usize,
    skip_reasons: BTreeMap<String, usize>,
    wild_ok: usize,
    wild_skipped: usize,
    nodes: usize,
    cases: usize,
    /// Feature coverage beyond op names (rope scaling variants, quantized weights, ...).
    features: BTreeMap<&'static str, usize>,
}

struct Gen<'s> {
    b: GraphBuilder,
    rng: Rng,
    /// Every value-producing node, in creation order.
    vals: Vec<NodeId>,
    /// Params made so far: (name, type), for re-declaring a shared weight under the same name.
    params: Vec<(String, TensorType)>,
    fresh: usize,
    /// The `output` nodes: no value, so never a valid operand (wild steps try anyway).
    sinks: Vec<NodeId>,
    /// Floats and name of the current step.
    f: [f64; 2],
    fi: usize,
    name: String,
    stats: &'s mut Stats,
}

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
const INTS: [DType; 2] = [DType::I32, DType::I64];
const CONST_DIMS: [i64; 12] = [1, 2, 3, 4, 6, 8, 9, 16, 32, 64, 128, 256];

fn t() -> Dim {
    Dim::sym("T")
}
fn p() -> Dim {
    Dim::sym("P")
}

fn tt(dtype: DType, dims: Vec<Dim>) -> TensorType {
    TensorType { dtype, shape: Shape(dims) }
}

impl Gen<'_> {
    fn feature(&mut self, f: &'static str) {
        *self.stats.features.entry(f).or_default() += 1;
    }

    fn ty(&self, n: NodeId) -> TensorType {
        self.b.ty(n).clone()
    }

    /// The step's floats first, then the special set.
    fn float(&mut self) -> f64 {
        if self.fi < 2 {
            self.fi += 1;
            return self.f[self.fi - 1];
        }
        *self.rng.pick(&[1e-5, 1e-6, 0.5, 1.0, 2.0, 8.0, 30.0, 10000.0, 1e300, -0.0, f64::NAN, f64::INFINITY])
    }

    /// A float attribute; now and then written as an integer, which the op table accepts for floats.
    fn float_attr(&mut self) -> Attr {
        if self.rng.one_in(8) {
            self.feature("int literal in float attr");
            Attr::Int(self.rng.range(-4, 100_000))
        } else {
            Attr::Float(self.float())
        }
    }

    /// Unique names derived from the step's name, so escapes and unicode reach every name slot.
    fn unique(&mut self, what: &str) -> String {
        self.fresh += 1;
        if self.rng.one_in(3) {
            format!("{what}{}", self.fresh)
        } else {
            format!("{}#{}", self.name, self.fresh)
        }
    }

    fn const_dim(&mut self) -> i64 {
        *self.rng.pick(&CONST_DIMS)
    }

    fn dim(&mut self) -> Dim {
        match self.rng.below(10) {
            0 | 1 => t(),
            2 => p(),
            3 => p().add(&t()),
            4 if self.rng.one_in(3) => t().scale(2).add(&Dim::c(-1)),
            _ => Dim::c(self.const_dim()),
        }
    }

    fn extreme_dim(&mut self) -> Dim {
        match self.rng.below(8) {
            0 => Dim::c(0),
            1 => Dim::c(-1),
            2 => Dim::c(i64::MAX),
            3 => Dim::c(i64::MIN),
            4 => t().add(&Dim::c(i64::MIN)),
            5 => t().scale(i64::MIN),
            6 => t().scale(-3).add(&p().scale(i64::MAX)).add(&Dim::c(7)),
            _ => Dim::sym("seq_len_2").sub(&t()),
        }
    }

    fn dims(&mut self, rank: usize) -> Vec<Dim> {
        (0..rank).map(|_| self.dim()).collect()
    }

    fn scalar_dtype(&mut self) -> DType {
        match self.rng.below(10) {
            0..=5 => *self.rng.pick(&FLOATS),
            6..=8 => *self.rng.pick(&INTS),
            _ => DType::Bool,
        }
    }

    fn quant(&mut self, last: &Dim) -> Option<DType> {
        let n = last.as_const()?;
        let ok: Vec<QuantFormat> =
            QuantFormat::ALL.iter().copied().filter(|q| n > 0 && n % q.block_elems() as i64 == 0).collect();
        (!ok.is_empty()).then(|| DType::Quant(*self.rng.pick(&ok)))
    }

    fn record(&mut self, r: Result<NodeId, kiln_ir::BuildError>, wild: bool) -> Option<NodeId> {
        match r {
            Ok(n) => {
                let op = self.b.graph().op(n);
                *self.stats.ops.entry(op.name()).or_default() += 1;
                if op.info().has_result {
                    self.vals.push(n);
                } else {
                    self.sinks.push(n);
                }
                if wild {
                    self.stats.wild_ok += 1;
                } else {
                    self.stats.ok += 1;
                }
                Some(n)
            }
            Err(e) => {
                if wild {
                    self.stats.wild_skipped += 1;
                } else {
                    self.stats.skipped += 1;
                    *self.stats.skip_reasons.entry(e.to_string()).or_default() += 1;
                }
                None
            }
        }
    }

    fn input(&mut self, ty: TensorType) -> NodeId {
        let name = self.unique("x");
        let r = self.b.input(&name, ty);
        self.record(r, false).expect("inputs of unquantized types always build")
    }

    fn param(&mut self, ty: TensorType) -> NodeId {
        let name = self.unique("w");
        self.params.push((name.clone(), ty.clone()));
        let r = self.b.param(&name, ty);
        self.record(r, false).expect("params always build")
    }

    fn constant(&mut self, ty: TensorType) -> NodeId {
        let v = self.float();
        let r = self.b.constant(v, ty);
        self.record(r, false).expect("constants of unquantized types always build")
    }

    /// A value of exactly this type: an existing one, or a fresh input/param/constant.
    fn value_of(&mut self, ty: TensorType) -> NodeId {
        let existing: Vec<NodeId> = self.vals.iter().copied().filter(|&n| *self.b.ty(n) == ty).collect();
        if !existing.is_empty() && self.rng.coin() {
            return *self.rng.pick(&existing);
        }
        if ty.dtype.is_quant() {
            return self.param(ty);
        }
        match self.rng.below(4) {
            0 => self.param(ty),
            1 if ty.dtype != DType::Bool => self.constant(ty),
            _ => self.input(ty),
        }
    }

    /// An existing value satisfying `pred`, or one made by `make`.
    fn pick_or(&mut self, pred: impl Fn(&TensorType) -> bool, make: impl FnOnce(&mut Self) -> NodeId) -> NodeId {
        let c: Vec<NodeId> = self.vals.iter().copied().filter(|&n| pred(self.b.ty(n))).collect();
        if !c.is_empty() && !self.rng.one_in(5) {
            *self.rng.pick(&c)
        } else {
            make(self)
        }
    }

    fn float_value(&mut self, min_rank: usize) -> NodeId {
        self.pick_or(
            |t| t.dtype.is_float() && t.rank() >= min_rank,
            |g| {
                let rank = g.rng.range(min_rank as i64, min_rank.max(3) as i64) as usize;
                let dtype = *g.rng.pick(&FLOATS);
                let dims = g.dims(rank);
                g.input(tt(dtype, dims))
            },
        )
    }

    fn unquantized_value(&mut self, min_rank: usize) -> NodeId {
        self.pick_or(
            |t| !t.dtype.is_quant() && t.rank() >= min_rank,
            |g| {
                let rank = g.rng.range(min_rank as i64, min_rank.max(3) as i64) as usize;
                let dtype = g.scalar_dtype();
                let dims = g.dims(rank);
                g.input(tt(dtype, dims))
            },
        )
    }

    /// An integer positions vector `[t]`.
    fn positions(&mut self, t: &Dim) -> NodeId {
        let t = t.clone();
        let t2 = t.clone();
        self.pick_or(
            move |ty| ty.dtype.is_int() && ty.rank() == 1 && *ty.shape.dim(0) == t,
            move |g| {
                let d = *g.rng.pick(&INTS);
                g.input(tt(d, vec![t2]))
            },
        )
    }

    /// An axis of a rank-`r` tensor, written negative half the time.
    fn axis_attr(&mut self, axis: usize, rank: usize) -> i64 {
        if self.rng.coin() {
            axis as i64 - rank as i64
        } else {
            axis as i64
        }
    }

    fn rope_scaling(&mut self) -> Option<Attr> {
        let (tag, fields) = match self.rng.below(4) {
            0 => return None,
            1 => ("linear", Attrs::new().with("factor", self.float_attr())),
            2 => (
                "llama3",
                Attrs::new()
                    .with("factor", self.float_attr())
                    .with("low_freq_factor", self.float_attr())
                    .with("high_freq_factor", self.float_attr())
                    .with("original_max_position", Attr::Int(*self.rng.pick(&[8192, 0, -1, i64::MAX, i64::MIN]))),
            ),
            _ => {
                let mut a = Attrs::new()
                    .with("factor", self.float_attr())
                    .with("original_max_position", Attr::Int(self.rng.range(1, 1 << 20)));
                for k in ["beta_fast", "beta_slow", "attention_factor"] {
                    if self.rng.coin() {
                        let v = self.float_attr();
                        a.set(k, v);
                    }
                }
                ("yarn", a)
            }
        };
        self.feature(match tag {
            "linear" => "rope scaling linear",
            "llama3" => "rope scaling llama3",
            _ => "rope scaling yarn",
        });
        Some(Attr::Tagged { tag: tag.to_string(), fields })
    }

    /// `theta`, optional partial `dim` (even, ≤ head dim) and optional `scaling`.
    fn rope_fields(&mut self, head: i64) -> Attrs {
        let mut a = Attrs::new().with("theta", self.float_attr());
        if self.rng.coin() {
            let d = 2 * self.rng.range(1, head / 2);
            if d < head {
                self.feature("partial rotary dim");
            }
            a.set("dim", Attr::Int(d));
        }
        if let Some(s) = self.rope_scaling() {
            a.set("scaling", s);
        }
        a
    }

    fn step(&mut self, s: &Step) {
        self.rng = Rng::new(s.seed);
        self.f = s.f;
        self.fi = 0;
        self.name = s.name.clone();
        let r = match s.family {
            Family::Input => {
                let rank = self.rng.below(5);
                let dtype = self.scalar_dtype();
                let mut dims = self.dims(rank);
                if rank > 0 && self.rng.one_in(4) {
                    // Dims no model has but the text form must carry: zero, negative, i64 extremes.
                    self.feature("extreme dim");
                    let i = self.rng.below(rank);
                    dims[i] = self.extreme_dim();
                }
                let name = self.unique("in");
                self.b.input(&name, tt(dtype, dims))
            }
            Family::Param => {
                if !self.params.is_empty() && self.rng.one_in(4) {
                    // The same weight declared twice (same name, same type) is allowed.
                    self.feature("shared param name");
                    let (name, ty) = self.rng.pick(&self.params).clone();
                    self.b.param(&name, ty)
                } else {
                    let rank = self.rng.range(1, 3) as usize;
                    let mut dims: Vec<Dim> = (0..rank).map(|_| Dim::c(self.const_dim())).collect();
                    let dtype = match self.quant(dims.last().unwrap()) {
                        Some(q) if self.rng.coin() => q,
                        _ => self.scalar_dtype(),
                    };
                    if rank == 1 && !dtype.is_quant() && self.rng.one_in(4) {
                        dims[0] = t();
                    }
                    let name = self.unique("param");
                    self.params.push((name.clone(), tt(dtype, dims.clone())));
                    self.b.param(&name, tt(dtype, dims))
                }
            }
            Family::Constant => {
                let rank = self.rng.below(3);
                let dtype = self.scalar_dtype();
                let dims = self.dims(rank);
                let v = self.float();
                self.b.constant(v, tt(dtype, dims))
            }
            Family::Binary => self.binary(),
            Family::Unary => {
                use OpKind::*;
                let op = *self.rng.pick(&[Neg, Abs, Exp, Log, Sqrt, Rsqrt, Recip, Tanh, Sigmoid, Silu, Relu]);
                let x = if matches!(op, Neg | Abs) && self.rng.one_in(3) {
                    self.pick_or(|t| t.dtype.is_int(), |g| g.input(tt(DType::I32, vec![t()])))
                } else {
                    self.float_value(0)
                };
                self.b.unary(op, x)
            }
            Family::Gelu => {
                let x = self.float_value(0);
                let approx = *self.rng.pick(&["erf", "tanh"]);
                self.b.gelu(x, approx)
            }
            Family::Softmax => {
                let x = self.float_value(1);
                let r = self.ty(x).rank();
                let mut a = Attrs::new();
                if self.rng.coin() {
                    let ax = self.rng.below(r);
                    a.set("axis", Attr::Int(self.axis_attr(ax, r)));
                }
                self.b.op(OpKind::Softmax, &[x], a)
            }
            Family::Norm => {
                let x = self.float_value(1);
                let d = self.ty(x).shape.last().unwrap().clone();
                let layer = self.rng.coin();
                let n_w = self.rng.below(if layer { 3 } else { 2 });
                let mut ops = vec![x];
                for _ in 0..n_w {
                    let dt = *self.rng.pick(&FLOATS);
                    ops.push(self.value_of(tt(dt, vec![d.clone()])));
                }
                let op = if layer { OpKind::LayerNorm } else { OpKind::RmsNorm };
                let eps = self.float_attr();
                self.b.op(op, &ops, Attrs::new().with("eps", eps))
            }
            Family::MatMul => self.matmul(),
            Family::BatchedMatMul => self.batched_matmul(),
            Family::Embedding => {
                let vocab = Dim::c(*self.rng.pick(&[2, 100, 32000, 151936]));
                let d = Dim::c(self.const_dim());
                let dtype = match self.quant(&d) {
                    Some(q) if self.rng.coin() => {
                        self.feature("quantized embedding");
                        q
                    }
                    _ => *self.rng.pick(&FLOATS),
                };
                let table = self.value_of(tt(dtype, vec![vocab, d]));
                let ids = self.pick_or(
                    |t| t.dtype.is_int(),
                    |g| {
                        let dt = *g.rng.pick(&INTS);
                        let rank = g.rng.below(3);
                        let dims = g.dims(rank);
                        g.input(tt(dt, dims))
                    },
                );
                self.b.op(OpKind::Embedding, &[table, ids], Attrs::new())
            }
            Family::Reshape => {
                let x = self.unquantized_value(0);
                let shape = self.reshape_target(&self.ty(x).shape);
                self.b.reshape(x, shape)
            }
            Family::Permute => {
                let x = self.unquantized_value(0);
                let mut perm: Vec<i64> = (0..self.ty(x).rank() as i64).collect();
                self.rng.shuffle(&mut perm);
                self.b.permute(x, &perm)
            }
            Family::Concat => {
                let x = self.unquantized_value(1);
                let ty = self.ty(x);
                let axis = self.rng.below(ty.rank());
                let mut ops = vec![x];
                for _ in 0..self.rng.below(3) {
                    let mut dims = ty.shape.0.clone();
                    if self.rng.coin() {
                        dims[axis] = self.dim();
                    }
                    ops.push(self.value_of(tt(ty.dtype, dims)));
                }
                let a = Attrs::new().with("axis", Attr::Int(self.axis_attr(axis, ty.rank())));
                self.b.op(OpKind::Concat, &ops, a)
            }
            Family::Split => {
                let x = self.pick_or(
                    |t| !t.dtype.is_quant() && t.shape.dims().iter().any(|d| d.as_const().is_some_and(|c| c >= 1)),
                    |g| {
                        let dt = g.scalar_dtype();
                        let c = Dim::c(g.const_dim());
                        g.input(tt(dt, vec![t(), c]))
                    },
                );
                let ty = self.ty(x);
                let axes: Vec<usize> =
                    (0..ty.rank()).filter(|&i| ty.shape.dim(i).as_const().is_some_and(|c| c >= 1)).collect();
                let axis = *self.rng.pick(&axes);
                let mut left = ty.shape.dim(axis).as_const().unwrap();
                let mut sizes = Vec::new();
                while left > 0 {
                    let s = if sizes.len() == 3 { left } else { self.rng.range(1, left) };
                    sizes.push(s);
                    left -= s;
                }
                let index = self.rng.below(sizes.len()) as i64;
                let a = Attrs::new()
                    .with("axis", Attr::Int(self.axis_attr(axis, ty.rank())))
                    .with("sizes", Attr::Ints(sizes))
                    .with("index", Attr::Int(index));
                self.b.op(OpKind::Split, &[x], a)
            }
            Family::Slice => {
                let x = self.unquantized_value(1);
                let ty = self.ty(x);
                let axis = self.rng.below(ty.rank());
                let ax = self.axis_attr(axis, ty.rank());
                let (start, end) = match ty.shape.dim(axis).as_const() {
                    Some(d) if d >= 1 => {
                        let s = self.rng.range(0, d - 1);
                        let e = self.rng.range(s + 1, d);
                        let start = if self.rng.coin() { s - d } else { s };
                        let end = match self.rng.below(3) {
                            0 if e == d => None,
                            1 if e < d => Some(e - d),
                            _ => Some(e),
                        };
                        (start, end)
                    }
                    _ => match self.rng.below(3) {
                        0 => (self.rng.range(0, 3), None),
                        1 => (self.rng.range(0, 3), Some(-self.rng.range(1, 3))),
                        _ => {
                            let s = -self.rng.range(2, 5);
                            (s, if self.rng.coin() { None } else { Some(s + 1) })
                        }
                    },
                };
                if start < 0 || end.is_some_and(|e| e < 0) {
                    self.feature("slice with negative bound");
                }
                self.b.slice(x, ax, start, end)
            }
            Family::Cast => {
                let x = self.unquantized_value(0);
                let to = self.scalar_dtype();
                self.b.cast(x, to)
            }
            Family::Reduce => {
                let x = self.unquantized_value(0);
                let r = self.ty(x).rank();
                let mut axes: Vec<usize> = (0..r).filter(|_| self.rng.coin()).collect();
                self.rng.shuffle(&mut axes);
                let axes: Vec<i64> = axes.iter().map(|&a| self.axis_attr(a, r)).collect();
                let op = *self.rng.pick(&[OpKind::ReduceSum, OpKind::ReduceMean, OpKind::ReduceMax]);
                let mut a = Attrs::new().with("axes", Attr::Ints(axes));
                match self.rng.below(3) {
                    0 => a.set("keepdim", Attr::Bool(true)),
                    1 => a.set("keepdim", Attr::Bool(false)),
                    _ => {}
                }
                self.b.op(op, &[x], a)
            }
            Family::Rope => {
                let x = self.head_tensor(None);
                let ty = self.ty(x);
                let head = ty.shape.dim(2).as_const().unwrap();
                let pos = self.positions(&ty.shape.dim(0).clone());
                let layout = self.rng.pick(ROPE_LAYOUTS).to_string();
                let a = self.rope_fields(head).with("layout", Attr::Ident(layout));
                self.b.op(OpKind::Rope, &[x, pos], a)
            }
            Family::Attention => self.attention(),
            Family::TopK => {
                let x = self.unquantized_value(1);
                let last = self.ty(x).shape.last().unwrap().clone();
                let k = match last.as_const() {
                    Some(n) if n >= 1 => self.rng.range(1, n),
                    _ => self.rng.range(1, 8),
                };
                self.b.op(OpKind::TopK, &[x], Attrs::new().with("k", Attr::Int(k)))
            }
            Family::Gather => {
                let x = self.unquantized_value(1);
                let ty = self.ty(x);
                let axis = self.rng.below(ty.rank());
                let mut dims = ty.shape.0.clone();
                dims[axis] = self.dim();
                let dt = *self.rng.pick(&INTS);
                let idx = self.value_of(tt(dt, dims));
                let a = Attrs::new().with("axis", Attr::Int(self.axis_attr(axis, ty.rank())));
                self.b.op(OpKind::Gather, &[x, idx], a)
            }
            Family::Moe => self.moe(),
            Family::Rows => self.rows(),
            Family::Fused => match OpKind::from_name("fused") {
                Some(op) => self.fused(op),
                None => return,
            },
            Family::Output => {
                let x = if self.vals.is_empty() { self.float_value(1) } else { *self.rng.pick(&self.vals) };
                let name = self.unique("out");
                self.b.output(&name, x)
            }
            Family::Wild => {
                self.wild();
                return;
            }
        };
        self.record(r, false);
    }

    fn binary(&mut self) -> Result<NodeId, kiln_ir::BuildError> {
        use OpKind::*;
        let op = *self.rng.pick(&[Add, Sub, Mul, Div, Maximum, Minimum, Pow]);
        let a = self.pick_or(
            |t| !t.dtype.is_quant() && t.dtype != DType::Bool,
            |g| {
                let dt = if g.rng.one_in(4) { *g.rng.pick(&INTS) } else { *g.rng.pick(&FLOATS) };
                let rank = g.rng.below(4);
                let dims = g.dims(rank);
                g.input(tt(dt, dims))
            },
        );
        let at = self.ty(a);
        let b = match self.rng.below(5) {
            0 => self.value_of(at.clone()),
            1 => {
                let v = self.float();
                let r = self.b.scalar(v, at.dtype);
                self.record(r, false).unwrap()
            }
            2 => {
                // A suffix of a's shape with some dims squeezed to 1: broadcasts into a.
                self.feature("broadcast b into a");
                let drop = self.rng.below(at.rank() + 1);
                let dims: Vec<Dim> =
                    at.shape.0[drop..].iter().map(|d| if self.rng.one_in(3) { Dim::c(1) } else { d.clone() }).collect();
                self.value_of(tt(at.dtype, dims))
            }
            _ => {
                // Wider than a: extra leading dims, and a's 1-dims grown.
                self.feature("broadcast a into b");
                let mut dims: Vec<Dim> = (0..self.rng.below(2)).map(|_| self.dim()).collect();
                for d in &at.shape.0 {
                    dims.push(if *d == Dim::c(1) && self.rng.coin() { self.dim() } else { d.clone() });
                }
                self.value_of(tt(at.dtype, dims))
            }
        };
        if self.rng.coin() {
            self.b.binary(op, a, b)
        } else {
            self.b.binary(op, b, a)
        }
    }

    fn matmul(&mut self) -> Result<NodeId, kiln_ir::BuildError> {
        let a = self.float_value(1);
        let at = self.ty(a);
        let k = at.shape.last().unwrap().clone();
        let n = Dim::c(self.const_dim());
        let tb = self.rng.coin();
        let wdims = if tb { vec![n.clone(), k.clone()] } else { vec![k.clone(), n.clone()] };
        let wdtype = match self.quant(&k) {
            Some(q) if tb && self.rng.coin() => {
                self.feature("quantized matmul weight");
                q
            }
            _ => *self.rng.pick(&FLOATS),
        };
        let w = self.value_of(tt(wdtype, wdims));
        let mut ops = vec![a, w];
        if self.rng.coin() {
            self.feature("matmul bias");
            ops.push(self.value_of(tt(at.dtype, vec![n])));
        }
        let mut attrs = Attrs::new();
        if tb {
            attrs.set("transpose_b", Attr::Bool(true));
        } else if self.rng.one_in(3) {
            attrs.set("transpose_b", Attr::Bool(false));
        }
        self.b.op(OpKind::MatMul, &ops, attrs)
    }

    fn batched_matmul(&mut self) -> Result<NodeId, kiln_ir::BuildError> {
        self.feature("batched matmul");
        let a = self.float_value(2);
        let at = self.ty(a);
        let r = at.rank();
        let k = at.shape.dim(r - 1).clone();
        let n = self.dim();
        let mut batch: Vec<Dim> =
            at.shape.0[..r - 2].iter().map(|d| if self.rng.one_in(3) { Dim::c(1) } else { d.clone() }).collect();
        if batch.is_empty() || self.rng.one_in(4) {
            batch.insert(0, self.dim());
        }
        let tb = self.rng.coin();
        batch.extend(if tb { [n, k] } else { [k, n] });
        let wdtype = *self.rng.pick(&FLOATS);
        let w = self.value_of(tt(wdtype, batch));
        let attrs = if tb { Attrs::new().with("transpose_b", Attr::Bool(true)) } else { Attrs::new() };
        self.b.op(OpKind::MatMul, &[a, w], attrs)
    }

    fn reshape_target(&mut self, s: &Shape) -> Shape {
        let Some((mut k, syms)) = s.checked_numel_factors() else {
            // The element count overflows: any target is refused, which is what we want to see.
            let r = self.rng.below(3);
            return Shape(self.dims(r));
        };
        let mut dims: Vec<Dim> = syms;
        // Split the constant factor into a few divisors.
        for _ in 0..self.rng.below(3) {
            if !(2..=1 << 20).contains(&k) {
                break;
            }
            let divs: Vec<i64> = (2..=k).filter(|d| k % d == 0).collect();
            if divs.is_empty() {
                break;
            }
            let d = *self.rng.pick(&divs);
            dims.push(Dim::c(d));
            k /= d;
        }
        if k != 1 || self.rng.one_in(3) {
            dims.push(Dim::c(k));
        }
        self.rng.shuffle(&mut dims);
        Shape(dims)
    }

    /// A float `[T, H, D]` tensor with constant even head dim `D` (and, if given, H = heads).
    fn head_tensor(&mut self, heads: Option<i64>) -> NodeId {
        self.pick_or(
            move |t| {
                t.dtype.is_float()
                    && t.rank() == 3
                    && t.shape.dim(2).as_const().is_some_and(|d| (1..=4096).contains(&d) && d % 2 == 0)
                    && t.shape
                        .dim(1)
                        .as_const()
                        .is_some_and(|h| (1..=64).contains(&h) && !matches!(heads, Some(x) if x != h))
            },
            move |g| {
                let dt = *g.rng.pick(&FLOATS);
                let h = heads.unwrap_or(*g.rng.pick(&[1, 2, 4, 8, 9]));
                let d = *g.rng.pick(&[2, 4, 8, 16, 64, 128]);
                let tok = if g.rng.coin() { t() } else { Dim::c(g.const_dim()) };
                g.input(tt(dt, vec![tok, Dim::c(h), Dim::c(d)]))
            },
        )
    }

    fn attention(&mut self) -> Result<NodeId, kiln_ir::BuildError> {
        let q = self.head_tensor(None);
        let qt = self.ty(q);
        let (tok, hq, d) = (qt.shape.dim(0).clone(), qt.shape.dim(1).as_const().unwrap(), qt.shape.dim(2).clone());
        let divisors: Vec<i64> = (1..=hq).filter(|h| hq % h == 0).collect();
        let hkv = *self.rng.pick(&divisors);
        if hkv < hq {
            self.feature("grouped-query attention");
        }
        let k = if hkv == hq && self.rng.coin() {
            q
        } else {
            self.value_of(tt(qt.dtype, vec![tok.clone(), Dim::c(hkv), d.clone()]))
        };
        let dv = if self.rng.one_in(4) { Dim::c(self.const_dim()) } else { d.clone() };
        let v = self.value_of(tt(qt.dtype, vec![tok.clone(), Dim::c(hkv), dv]));
        let pos = self.positions(&tok);
        let mut a = Attrs::new();
        match self.rng.below(3) {
            0 => a.set("causal", Attr::Bool(true)),
            1 => a.set("causal", Attr::Bool(false)),
            _ => {}
        }
        if self.rng.coin() {
            a.set("window", Attr::Int(*self.rng.pick(&[1, 512, 4096, i64::MAX])));
        }
        if self.rng.coin() {
            let v = self.float_attr();
            a.set("scale", v);
        }
        if self.rng.coin() {
            let v = self.float_attr();
            a.set("softcap", v);
        }
        if self.rng.coin() {
            a.set("cache", Attr::Int(*self.rng.pick(&[0, 1, 7, i64::MAX])));
        }
        if self.rng.coin() {
            self.feature("attention with fused rope");
            let head = d.as_const().unwrap();
            let tag = self.rng.pick(ROPE_LAYOUTS).to_string();
            let fields = self.rope_fields(head);
            a.set("rope", Attr::Tagged { tag, fields });
        }
        self.b.op(OpKind::Attention, &[q, k, v, pos], a)
    }

    /// The row-selection ops of conditional computation: take, scatter_rows, nonzero, expert_gate,
    /// mod_select.
    fn rows(&mut self) -> Result<NodeId, kiln_ir::BuildError> {
        let ints = *self.rng.pick(&INTS);
        match self.rng.below(5) {
            0 | 1 => {
                let x = self.unquantized_value(1);
                let xt = self.ty(x);
                let n = self.dim();
                let rows = self.value_of(tt(ints, vec![n.clone()]));
                if self.rng.coin() {
                    return self.b.op(OpKind::Take, &[x, rows], Attrs::new());
                }
                let mut dims = xt.shape.0.clone();
                dims[0] = n;
                let y = self.value_of(tt(xt.dtype, dims));
                let mode = if self.rng.coin() { "set" } else { "add" };
                self.b.op(OpKind::ScatterRows, &[x, rows, y], Attrs::new().with("mode", Attr::Ident(mode.into())))
            }
            2 => {
                let dt = *self.rng.pick(&FLOATS);
                let d = self.dim();
                let m = self.value_of(tt(dt, vec![d]));
                let name = format!("n{}", self.rng.below(1 << 20));
                self.b.op(OpKind::Nonzero, &[m], Attrs::new().with("dim", Attr::Str(name)))
            }
            3 => {
                let dt = *self.rng.pick(&FLOATS);
                let (tdim, k) = (t(), Dim::c(self.rng.range(1, 4)));
                let idx = self.value_of(tt(ints, vec![tdim.clone(), k.clone()]));
                let gates = self.value_of(tt(dt, vec![tdim, k]));
                let a = Attrs::new().with("expert", Attr::Int(self.rng.range(0, 7)));
                self.b.op(OpKind::ExpertGate, &[idx, gates], a)
            }
            _ => {
                let dt = *self.rng.pick(&FLOATS);
                let scores = self.value_of(tt(dt, vec![t()]));
                let mut a = Attrs::new().with("capacity", Attr::Float(self.rng.range(1, 8) as f64 / 8.0));
                if self.rng.coin() {
                    a.set("threshold", Attr::Float(self.rng.range(-4, 4) as f64 / 3.0));
                }
                self.b.op(OpKind::ModSelect, &[scores], a)
            }
        }
    }

    fn moe(&mut self) -> Result<NodeId, kiln_ir::BuildError> {
        let x = self.pick_or(
            |t| t.dtype.is_float() && t.rank() == 2,
            |g| {
                let dt = *g.rng.pick(&FLOATS);
                let d = Dim::c(g.const_dim());
                g.input(tt(dt, vec![t(), d]))
            },
        );
        let xt = self.ty(x);
        let d = xt.shape.dim(1).clone();
        let e = self.rng.range(1, 4);
        let top_k = self.rng.range(1, e);
        let f = Dim::c(self.const_dim());
        let rdt = *self.rng.pick(&FLOATS);
        let router = self.value_of(tt(rdt, vec![Dim::c(e), d.clone()]));
        let mut ops = vec![x, router];
        for _ in 0..e {
            for shape in [[f.clone(), d.clone()], [f.clone(), d.clone()], [d.clone(), f.clone()]] {
                let dt = match self.quant(&shape[1]) {
                    Some(q) if self.rng.one_in(3) => {
                        self.feature("quantized expert weight");
                        q
                    }
                    _ => *self.rng.pick(&FLOATS),
                };
                ops.push(self.value_of(tt(dt, shape.to_vec())));
            }
        }
        let mut a = Attrs::new()
            .with("experts", Attr::Int(e))
            .with("top_k", Attr::Int(top_k))
            .with("activation", Attr::Ident(self.rng.pick(ACTIVATIONS).to_string()));
        if self.rng.coin() {
            a.set("norm_topk", Attr::Bool(self.rng.one_in(4) ^ true));
        }
        if self.rng.one_in(3) {
            a.set("unweighted", Attr::Bool(true));
        }
        self.b.op(OpKind::Moe, &ops, a)
    }

    /// `fused`: 1–3 float operands of one dtype that broadcast together, and a random expression
    /// over the elementwise functions that uses each operand at least once.
    fn fused(&mut self, op: OpKind) -> Result<NodeId, kiln_ir::BuildError> {
        let x = self.float_value(0);
        let xt = self.ty(x);
        let mut ops = vec![x];
        for _ in 0..self.rng.below(3) {
            let dims: Vec<Dim> = match self.rng.below(3) {
                0 => xt.shape.0.clone(),
                1 => vec![],
                _ => {
                    let drop = self.rng.below(xt.rank() + 1);
                    xt.shape.0[drop..].iter().map(|d| if self.rng.coin() { Dim::c(1) } else { d.clone() }).collect()
                }
            };
            ops.push(self.value_of(tt(xt.dtype, dims)));
        }
        if self.rng.coin() {
            let last = ops.len() - 1;
            ops.swap(0, last);
        }
        const UNARY: &[&str] = &[
            "neg",
            "abs",
            "exp",
            "log",
            "sqrt",
            "rsqrt",
            "recip",
            "tanh",
            "sigmoid",
            "silu",
            "relu",
            "gelu_tanh",
            "gelu_erf",
        ];
        const BINARY: &[&str] = &["add", "sub", "mul", "div", "maximum", "minimum", "pow"];
        const NUMBERS: &[&str] = &["1.0", "-2.5", "1e-5", "0.5", "3", "inf", "-inf", "nan", "-0.0", "1e300"];
        let mut terms: Vec<String> = (0..ops.len()).map(|i| format!("${i}")).collect();
        for _ in 0..self.rng.below(3) {
            terms.push(self.rng.pick(NUMBERS).to_string());
        }
        // Extra uses of operands, then combine everything into one tree.
        for _ in 0..self.rng.below(2) {
            terms.push(format!("${}", self.rng.below(ops.len())));
        }
        self.rng.shuffle(&mut terms);
        let wrap = |g: &mut Self, e: String| {
            if g.rng.one_in(3) {
                format!("{}({e})", g.rng.pick(UNARY))
            } else {
                e
            }
        };
        let mut terms: Vec<String> = terms.into_iter().map(|t| wrap(self, t)).collect();
        while terms.len() > 1 {
            let i = self.rng.below(terms.len() - 1);
            let (a, b) = (terms.remove(i), terms.remove(i));
            let sep = if self.rng.one_in(4) { " , " } else { ", " };
            let e = format!("{}({a}{sep}{b})", self.rng.pick(BINARY));
            let e = wrap(self, e);
            terms.insert(i, e);
        }
        let expr = terms.pop().unwrap();
        self.feature("fused expression");
        self.b.op(op, &ops, Attrs::new().with("expr", Attr::Str(expr)))
    }

    /// A random value for an attribute of this kind: sensible small values, boundary integers,
    /// and the special floats.
    fn random_attr(&mut self, kind: AttrKind, depth: usize) -> Attr {
        match kind {
            AttrKind::Flag => Attr::Bool(self.rng.coin()),
            AttrKind::Int => Attr::Int(*self.rng.pick(&[0, 1, 2, 3, -1, -2, 64, i64::MAX, i64::MIN, i64::MIN + 1])),
            AttrKind::Float => self.float_attr(),
            AttrKind::Str => Attr::Str(self.name.clone()),
            AttrKind::Ident(names) => Attr::Ident(self.rng.pick(names).to_string()),
            AttrKind::Ints => {
                let n = self.rng.below(4);
                Attr::Ints((0..n).map(|_| *self.rng.pick(&[0, 1, 2, -1, 3, 4, i64::MAX, i64::MIN])).collect())
            }
            AttrKind::Shape => {
                let r = self.rng.below(4);
                let mut dims = self.dims(r);
                if r > 0 && self.rng.one_in(3) {
                    dims[0] = self.extreme_dim();
                }
                Attr::Shape(Shape(dims))
            }
            AttrKind::DType => Attr::DType(self.scalar_dtype()),
            AttrKind::Tagged(tags) => {
                let spec = self.rng.pick(tags);
                let mut fields = Attrs::new();
                for f in spec.fields {
                    if (f.required || self.rng.coin()) && depth < 3 {
                        let v = self.random_attr(f.kind, depth + 1);
                        fields.set(f.name, v);
                    }
                }
                Attr::Tagged { tag: spec.tag.to_string(), fields }
            }
        }
    }

    /// Any op, random existing operands, random attributes of the declared kinds.
    fn wild(&mut self) {
        let ops: Vec<OpKind> = OpKind::all().filter(|k| !k.info().declares_type).collect();
        let op = *self.rng.pick(&ops);
        if self.vals.is_empty() {
            return;
        }
        let n = match op.info().operands {
            kiln_ir::op::Operands::Fixed(names) => names.len() - self.rng.below(2).min(names.len()),
            _ => self.rng.below(8) + 1,
        };
        let operands: Vec<NodeId> = (0..n)
            .map(|_| {
                if !self.sinks.is_empty() && self.rng.one_in(10) {
                    *self.rng.pick(&self.sinks)
                } else {
                    *self.rng.pick(&self.vals)
                }
            })
            .collect();
        let mut attrs = Attrs::new();
        for spec in op.info().attrs {
            if spec.required || self.rng.coin() {
                let v = self.random_attr(spec.kind, 0);
                attrs.set(spec.name, v);
            }
        }
        if op == OpKind::Output {
            attrs.set("name", Attr::Str(self.unique("wild")));
        }
        let r = self.b.op(op, &operands, attrs);
        self.record(r, true);
    }
}

fn build(case: &Case, stats: &mut Stats) -> Graph {
    let mut g = Gen {
        b: GraphBuilder::new(case.graph_name.clone()),
        rng: Rng::new(0),
        vals: Vec::new(),
        params: Vec::new(),
        fresh: 0,
        sinks: Vec::new(),
        f: [0.0; 2],
        fi: 0,
        name: String::new(),
        stats,
    };
    for s in &case.steps {
        g.step(s);
    }
    if case.ensure_output && g.sinks.is_empty() {
        let x = match g.vals.last() {
            Some(&x) => x,
            None => g.float_value(1),
        };
        let name = g.unique("out");
        let r = g.b.output(&name, x);
        g.record(r, false).expect("outputs always build");
    }
    g.stats.cases += 1;
    g.stats.nodes += g.b.graph().len();
    g.b.finish()
}

// ---------------------------------------------------------------------------------------------
// Properties

fn check(g: &Graph) -> Result<(), TestCaseError> {
    let text = print(g);
    let g2 = parse(&text).map_err(|e| TestCaseError::fail(format!("printed graph does not parse: {e}\n{text}")))?;
    let text2 = print(&g2);
    prop_assert_eq!(&text2, &text, "(a) print(parse(print(g))) != print(g)");
    prop_assert!(g2.same_as(g), "(b) parse(print(g)) is not the same graph as g:\n{}", text);
    prop_assert!(g.same_as(&g2), "same_as is not symmetric:\n{}", text);
    if !g.outputs().is_empty() {
        if let Err(e) = verify(g) {
            return Err(TestCaseError::fail(format!("(c) builder graph fails to verify: {e}\n{text}")));
        }
        prop_assert!(verify_all(g).is_empty());
        prop_assert!(verify(&g2).is_ok(), "the re-parsed graph fails to verify:\n{}", text);
    } else {
        // Only the missing output may be wrong.
        let errs = verify_all(g);
        prop_assert!(
            errs.len() == 1 && errs[0].kind == kiln_ir::VerifyErrorKind::NoOutputs,
            "graph without outputs: {:?}\n{}",
            errs,
            text
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2048)
}

#[test]
fn random_graphs_round_trip_and_verify() {
    let config = Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/proptest_roundtrip.txt"
        )))),
        source_file: Some(file!()),
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let stats = std::cell::RefCell::new(Stats::default());
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |c| {
        let g = build(&c, &mut stats.borrow_mut());
        check(&g)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let stats = stats.into_inner();
    if std::env::var_os("KILN_PROPTEST_VERBOSE").is_some() {
        eprintln!(
            "{} cases, {} nodes; targeted steps {} ok / {} skipped; wild steps {} ok / {} skipped",
            stats.cases, stats.nodes, stats.ok, stats.skipped, stats.wild_ok, stats.wild_skipped
        );
        eprintln!("ops: {:?}", stats.ops);
        eprintln!("features: {:?}", stats.features);
        let mut reasons: Vec<_> = stats.skip_reasons.iter().collect();
        reasons.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
        for (r, n) in reasons.iter().take(15) {
            eprintln!("  skipped {n}×: {r}");
        }
    }
    // The generator must mostly produce nodes, and must reach every op.
    assert!(
        stats.skipped * 20 <= stats.ok,
        "too many targeted steps failed to build ({} of {}); run with KILN_PROPTEST_VERBOSE=1",
        stats.skipped,
        stats.ok + stats.skipped
    );
    if stats.cases >= 200 {
        for op in OpKind::all() {
            assert!(
                stats.ops.contains_key(op.name()),
                "no generated graph contained '{}': teach the generator in {} about it",
                op.name(),
                file!()
            );
        }
        for f in [
            "rope scaling linear",
            "rope scaling llama3",
            "rope scaling yarn",
            "partial rotary dim",
            "attention with fused rope",
            "quantized matmul weight",
            "quantized embedding",
            "slice with negative bound",
            "batched matmul",
        ] {
            assert!(stats.features.contains_key(f), "feature never generated: {f}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions found by the property above, pinned as plain tests.

/// Builds, prints, re-parses and compares one hand-made graph.
fn round_trip(g: &Graph) {
    let text = print(g);
    let g2 = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(print(&g2), text);
    assert!(g2.same_as(g), "{text}");
    verify(g).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

fn x_input(b: &mut GraphBuilder, ty: TensorType) -> NodeId {
    b.input("x", ty).unwrap()
}

/// Integer literals are accepted for float attributes; they used to be stored as `Int`, print as
/// `theta = 75571`, and read back as `Float(75571.0)`, so the printed text changed on a second trip.
#[test]
fn regression_int_literal_in_float_attr() {
    let mut b = GraphBuilder::new("a");
    let x = x_input(&mut b, tt(DType::BF16, vec![Dim::c(9), Dim::c(1), Dim::c(2)]));
    let pos = b.input("p", tt(DType::I64, vec![Dim::c(9)])).unwrap();
    let scaling = Attr::Tagged { tag: "linear".into(), fields: Attrs::new().with("factor", Attr::Int(8)) };
    let a = Attrs::new()
        .with("layout", Attr::Ident("interleaved".into()))
        .with("theta", Attr::Int(75571))
        .with("scaling", scaling);
    let r = b.op(OpKind::Rope, &[x, pos], a).unwrap();
    let n = b.rms_norm(r, None, 0.0).unwrap();
    let eps = Attrs::new().with("eps", Attr::Int(0));
    let n2 = b.op(OpKind::RmsNorm, &[r], eps).unwrap();
    b.output("y", n).unwrap();
    b.output("z", n2).unwrap();
    let g = b.finish();
    assert!(print(&g).contains("scaling = linear{factor = 8.0}, theta = 75571.0"), "{}", print(&g));
    round_trip(&g);
}

/// `{:?}` prints every NaN as `NaN`, so a negative NaN (x86's 0.0/0.0) lost its sign bit and the
/// re-parsed graph was not `same_as` the original.
#[test]
fn regression_negative_nan_keeps_its_sign() {
    let mut b = GraphBuilder::new("a");
    let x = x_input(&mut b, tt(DType::F32, vec![Dim::c(8)]));
    let n = b.op(OpKind::LayerNorm, &[x], Attrs::new().with("eps", Attr::Float(-f64::NAN))).unwrap();
    let c = b.scalar(f64::NAN, DType::F32).unwrap();
    let m = b.mul(n, c).unwrap();
    b.output("y", m).unwrap();
    let g = b.finish();
    let text = print(&g);
    assert!(text.contains("{eps = -NaN}") && text.contains("{value = NaN}"), "{text}");
    round_trip(&g);
    let back = parse(&text).unwrap();
    let eps = back.node_ids().find_map(|n| back.node(n).attrs.float("eps")).unwrap();
    assert!(eps.is_nan() && eps.is_sign_negative());
}

/// `i64::MIN` prints as `-9223372036854775808`, which the parser rejected ("integer out of
/// range") because it narrowed the magnitude to i64 before negating.
#[test]
fn regression_i64_min_attr_reads_back() {
    let mut b = GraphBuilder::new("a");
    let x = x_input(&mut b, tt(DType::F16, vec![Dim::sym("T"), Dim::c(9), Dim::c(2)]));
    let pos = b.input("p", tt(DType::I32, vec![Dim::sym("T")])).unwrap();
    let scaling = Attr::Tagged {
        tag: "llama3".into(),
        fields: Attrs::new()
            .with("factor", Attr::Float(8.0))
            .with("low_freq_factor", Attr::Float(1.0))
            .with("high_freq_factor", Attr::Float(4.0))
            .with("original_max_position", Attr::Int(i64::MIN)),
    };
    let a = Attrs::new()
        .with("layout", Attr::Ident("neox".into()))
        .with("theta", Attr::Float(1e-5))
        .with("dim", Attr::Int(2))
        .with("scaling", scaling);
    let r = b.op(OpKind::Rope, &[x, pos], a).unwrap();
    b.output("y", r).unwrap();
    round_trip(&b.finish());
}

/// Dims at the ends of i64: a constant of i64::MIN, a coefficient of i64::MIN (whose printing
/// negated it and overflowed), and `T - 2^63`.
#[test]
fn regression_extreme_dims_round_trip() {
    for d in [
        Dim::c(i64::MIN),
        Dim::c(i64::MAX),
        Dim::sym("T").scale(i64::MIN),
        Dim::sym("T").scale(i64::MAX),
        Dim::sym("T").add(&Dim::c(i64::MIN)),
        Dim::sym("P").scale(-3).add(&Dim::sym("T").scale(i64::MIN)).add(&Dim::c(i64::MAX)),
    ] {
        let mut b = GraphBuilder::new("dims");
        let x = x_input(&mut b, tt(DType::F32, vec![d.clone(), Dim::c(2)]));
        b.output("y", x).unwrap();
        let g = b.finish();
        assert!(print(&g).contains(&format!("f32[{d},2]")));
        round_trip(&g);
    }
}

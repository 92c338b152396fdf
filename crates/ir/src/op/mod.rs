//! The op table: the single source of truth for every op's name, operands, attributes and result-type
//! rule. The printer, parser and verifier are driven by it (and later the e-graph language and the
//! interpreter). Adding an op is one `OpKind` variant plus one row in [`TABLE`].

pub mod expr;
mod infer;
pub mod rope;

use crate::attr::{AttrKind, AttrSpec, Attrs, TagSpec};
use crate::shape::TensorType;
use serde::{Deserialize, Serialize};
use std::fmt;

pub use infer::InferCx;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OpKind {
    Input,
    Param,
    Constant,
    Output,
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
    Pow,
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Tanh,
    Sigmoid,
    Silu,
    Relu,
    Gelu,
    Softmax,
    RmsNorm,
    LayerNorm,
    MatMul,
    Embedding,
    Reshape,
    Permute,
    Concat,
    Split,
    Slice,
    Cast,
    ReduceSum,
    ReduceMean,
    ReduceMax,
    Rope,
    Attention,
    TopK,
    Gather,
    Moe,
    Take,
    ScatterRows,
    Nonzero,
    ExpertGate,
    ModSelect,
    Fused,
}

/// How many operands an op takes, and their names (for error messages and docs).
#[derive(Clone, Copy, Debug)]
pub enum Operands {
    /// Exactly these; trailing ones ending in `?` are optional.
    Fixed(&'static [&'static str]),
    /// One or more, all alike.
    Variadic(&'static str),
    /// These, then a variadic tail of at least `min_tail`.
    FixedThenVariadic(&'static [&'static str], &'static str, usize),
}

impl Operands {
    pub fn accepts(&self, n: usize) -> bool {
        match self {
            Operands::Fixed(names) => {
                let required = names.iter().filter(|s| !s.ends_with('?')).count();
                (required..=names.len()).contains(&n)
            }
            Operands::Variadic(_) => n >= 1,
            Operands::FixedThenVariadic(names, _, min_tail) => n >= names.len() + min_tail,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Operands::Fixed([]) => "no operands".into(),
            Operands::Fixed(names) => format!("operands ({})", names.join(", ")),
            Operands::Variadic(name) => format!("one or more operands ({name}...)"),
            Operands::FixedThenVariadic(names, tail, min) => {
                format!("operands ({}, {tail}... at least {min})", names.join(", "))
            }
        }
    }
}

pub struct OpInfo {
    pub kind: OpKind,
    pub name: &'static str,
    pub operands: Operands,
    pub attrs: &'static [AttrSpec],
    /// The result type is written in the IR (inputs, params, constants) rather than inferred.
    pub declares_type: bool,
    /// False for sinks (`output`), which print without `%N =`.
    pub has_result: bool,
    pub infer: fn(&InferCx) -> Result<TensorType, String>,
    pub doc: &'static str,
}

impl OpKind {
    pub fn info(self) -> &'static OpInfo {
        let info = &TABLE[self as usize];
        debug_assert_eq!(info.kind, self);
        info
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn from_name(name: &str) -> Option<OpKind> {
        TABLE.iter().find(|i| i.name == name).map(|i| i.kind)
    }

    pub fn all() -> impl Iterator<Item = OpKind> {
        TABLE.iter().map(|i| i.kind)
    }

    /// Elementwise ops whose result has the (broadcast) shape of their operands.
    pub fn is_elementwise(self) -> bool {
        use OpKind::*;
        matches!(
            self,
            Add | Sub
                | Mul
                | Div
                | Maximum
                | Minimum
                | Pow
                | Neg
                | Abs
                | Exp
                | Log
                | Sqrt
                | Rsqrt
                | Recip
                | Tanh
                | Sigmoid
                | Silu
                | Relu
                | Gelu
        )
    }

    /// Ops whose node must survive dead-code elimination because they are the graph's interface or
    /// touch state (the KV cache).
    pub fn is_root(self) -> bool {
        matches!(self, OpKind::Output | OpKind::Input)
    }

    pub fn infer(
        self,
        operands: &[&TensorType],
        attrs: &Attrs,
        declared: Option<&TensorType>,
    ) -> Result<TensorType, String> {
        (self.info().infer)(&InferCx { op: self, operands, attrs, declared })
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const fn attr(name: &'static str, kind: AttrKind) -> AttrSpec {
    AttrSpec { name, kind, required: true }
}
const fn opt(name: &'static str, kind: AttrKind) -> AttrSpec {
    AttrSpec { name, kind, required: false }
}

const NAME: &[AttrSpec] = &[attr("name", AttrKind::Str)];
const NONE: &[AttrSpec] = &[];
const AXIS_OPT: &[AttrSpec] = &[opt("axis", AttrKind::Int)];
const EPS: &[AttrSpec] = &[attr("eps", AttrKind::Float)];
const REDUCE: &[AttrSpec] = &[attr("axes", AttrKind::Ints), opt("keepdim", AttrKind::Flag)];

pub const ROPE_LAYOUTS: &[&str] = &["neox", "interleaved"];

/// RoPE frequency scaling variants (HF `rope_scaling.rope_type`).
pub const ROPE_SCALING: &[TagSpec] = &[
    TagSpec { tag: "linear", fields: &[attr("factor", AttrKind::Float)] },
    TagSpec {
        tag: "llama3",
        fields: &[
            attr("factor", AttrKind::Float),
            attr("low_freq_factor", AttrKind::Float),
            attr("high_freq_factor", AttrKind::Float),
            attr("original_max_position", AttrKind::Int),
        ],
    },
    TagSpec {
        tag: "yarn",
        fields: &[
            attr("factor", AttrKind::Float),
            attr("original_max_position", AttrKind::Int),
            opt("beta_fast", AttrKind::Float),
            opt("beta_slow", AttrKind::Float),
            opt("attention_factor", AttrKind::Float),
        ],
    },
];

const ROPE_FIELDS: &[AttrSpec] =
    &[attr("theta", AttrKind::Float), opt("dim", AttrKind::Int), opt("scaling", AttrKind::Tagged(ROPE_SCALING))];

/// `rope = neox{theta = ..., dim = ..., scaling = ...}` on a fused attention.
pub const ROPE_TAGS: &[TagSpec] =
    &[TagSpec { tag: "neox", fields: ROPE_FIELDS }, TagSpec { tag: "interleaved", fields: ROPE_FIELDS }];

const ROPE_ATTRS: &[AttrSpec] = &[
    attr("layout", AttrKind::Ident(ROPE_LAYOUTS)),
    attr("theta", AttrKind::Float),
    opt("dim", AttrKind::Int),
    opt("scaling", AttrKind::Tagged(ROPE_SCALING)),
];

const ATTENTION_ATTRS: &[AttrSpec] = &[
    opt("causal", AttrKind::Flag),
    opt("window", AttrKind::Int),
    opt("scale", AttrKind::Float),
    opt("softcap", AttrKind::Float),
    opt("cache", AttrKind::Int),
    opt("rope", AttrKind::Tagged(ROPE_TAGS)),
];

pub const ACTIVATIONS: &[&str] = &["silu", "gelu_tanh", "gelu"];

const MOE_ATTRS: &[AttrSpec] = &[
    attr("experts", AttrKind::Int),
    attr("top_k", AttrKind::Int),
    opt("norm_topk", AttrKind::Flag),
    opt("unweighted", AttrKind::Flag),
    attr("activation", AttrKind::Ident(ACTIVATIONS)),
];

macro_rules! row {
    ($kind:ident, $name:literal, $operands:expr, $attrs:expr, $infer:path, $doc:literal) => {
        OpInfo {
            kind: OpKind::$kind,
            name: $name,
            operands: $operands,
            attrs: $attrs,
            declares_type: false,
            has_result: true,
            infer: $infer,
            doc: $doc,
        }
    };
}

use Operands::{Fixed, FixedThenVariadic, Variadic};

/// Indexed by `OpKind as usize`; a unit test checks the order.
pub static TABLE: [OpInfo; 48] = [
    OpInfo {
        declares_type: true,
        ..row!(Input, "input", Fixed(&[]), NAME, infer::declared, "A graph input, by name.")
    },
    OpInfo {
        declares_type: true,
        ..row!(Param, "param", Fixed(&[]), NAME, infer::param, "A weight, named as in the checkpoint.")
    },
    OpInfo {
        declares_type: true,
        ..row!(
            Constant,
            "constant",
            Fixed(&[]),
            &[attr("value", AttrKind::Float)],
            infer::constant,
            "A tensor filled with one value."
        )
    },
    OpInfo {
        has_result: false,
        ..row!(Output, "output", Fixed(&["x"]), NAME, infer::output, "A graph output, by name.")
    },
    row!(Add, "add", Fixed(&["a", "b"]), NONE, infer::binary, "Elementwise a + b with broadcasting."),
    row!(Sub, "sub", Fixed(&["a", "b"]), NONE, infer::binary, "Elementwise a - b with broadcasting."),
    row!(Mul, "mul", Fixed(&["a", "b"]), NONE, infer::binary, "Elementwise a * b with broadcasting."),
    row!(Div, "div", Fixed(&["a", "b"]), NONE, infer::binary, "Elementwise a / b with broadcasting."),
    row!(Maximum, "maximum", Fixed(&["a", "b"]), NONE, infer::binary, "Elementwise max(a, b)."),
    row!(Minimum, "minimum", Fixed(&["a", "b"]), NONE, infer::binary, "Elementwise min(a, b)."),
    row!(Pow, "pow", Fixed(&["a", "b"]), NONE, infer::binary, "Elementwise a ^ b."),
    row!(Neg, "neg", Fixed(&["x"]), NONE, infer::unary, "-x"),
    row!(Abs, "abs", Fixed(&["x"]), NONE, infer::unary, "|x|"),
    row!(Exp, "exp", Fixed(&["x"]), NONE, infer::unary, "e^x"),
    row!(Log, "log", Fixed(&["x"]), NONE, infer::unary, "ln x"),
    row!(Sqrt, "sqrt", Fixed(&["x"]), NONE, infer::unary, "√x"),
    row!(Rsqrt, "rsqrt", Fixed(&["x"]), NONE, infer::unary, "1/√x"),
    row!(Recip, "recip", Fixed(&["x"]), NONE, infer::unary, "1/x"),
    row!(Tanh, "tanh", Fixed(&["x"]), NONE, infer::unary, "tanh x"),
    row!(Sigmoid, "sigmoid", Fixed(&["x"]), NONE, infer::unary, "1/(1+e^-x)"),
    row!(Silu, "silu", Fixed(&["x"]), NONE, infer::unary, "x·sigmoid(x)"),
    row!(Relu, "relu", Fixed(&["x"]), NONE, infer::unary, "max(x, 0)"),
    row!(
        Gelu,
        "gelu",
        Fixed(&["x"]),
        &[attr("approx", AttrKind::Ident(&["erf", "tanh"]))],
        infer::unary_float,
        "GELU, exact (erf) or the tanh approximation."
    ),
    row!(Softmax, "softmax", Fixed(&["x"]), AXIS_OPT, infer::softmax, "Softmax along `axis` (default -1)."),
    row!(RmsNorm, "rms_norm", Fixed(&["x", "w?"]), EPS, infer::norm, "x / sqrt(mean(x², last axis) + eps) · w"),
    row!(
        LayerNorm,
        "layer_norm",
        Fixed(&["x", "w?", "b?"]),
        EPS,
        infer::norm,
        "(x - mean) / sqrt(var + eps) · w + b over the last axis"
    ),
    row!(
        MatMul,
        "matmul",
        Fixed(&["a", "b", "bias?"]),
        &[opt("transpose_b", AttrKind::Flag)],
        infer::matmul,
        "a·b (or a·bᵀ with transpose_b, the layout of HF linear weights) plus optional bias."
    ),
    row!(Embedding, "embedding", Fixed(&["table", "ids"]), NONE, infer::embedding, "Rows of table picked by ids."),
    row!(
        Reshape,
        "reshape",
        Fixed(&["x"]),
        &[attr("shape", AttrKind::Shape)],
        infer::reshape,
        "Same elements, new shape."
    ),
    row!(
        Permute,
        "permute",
        Fixed(&["x"]),
        &[attr("perm", AttrKind::Ints)],
        infer::permute,
        "Transposes axes: result axis i is input axis perm[i]."
    ),
    row!(Concat, "concat", Variadic("xs"), &[attr("axis", AttrKind::Int)], infer::concat, "Joins along an axis."),
    row!(
        Split,
        "split",
        Fixed(&["x"]),
        &[attr("axis", AttrKind::Int), attr("sizes", AttrKind::Ints), attr("index", AttrKind::Int)],
        infer::split,
        "Chunk `index` of x cut along `axis` into pieces of `sizes`."
    ),
    row!(
        Slice,
        "slice",
        Fixed(&["x"]),
        &[attr("axis", AttrKind::Int), attr("start", AttrKind::Int), opt("end", AttrKind::Int)],
        infer::slice,
        "x[start:end] along axis; negative bounds count from the end, no end means to the end."
    ),
    row!(Cast, "cast", Fixed(&["x"]), &[attr("dtype", AttrKind::DType)], infer::cast, "Converts the element type."),
    row!(ReduceSum, "reduce_sum", Fixed(&["x"]), REDUCE, infer::reduce, "Sum over axes."),
    row!(ReduceMean, "reduce_mean", Fixed(&["x"]), REDUCE, infer::reduce, "Mean over axes."),
    row!(ReduceMax, "reduce_max", Fixed(&["x"]), REDUCE, infer::reduce, "Max over axes."),
    row!(
        Rope,
        "rope",
        Fixed(&["x", "positions"]),
        ROPE_ATTRS,
        infer::rope,
        "Rotary position embedding of x[T,H,D] at positions[T] (RoFormer, arXiv 2104.09864)."
    ),
    row!(
        Attention,
        "attention",
        Fixed(&["q", "k", "v", "positions"]),
        ATTENTION_ATTRS,
        infer::attention,
        "Scaled dot-product attention of q[T,Hq,D] over k,v[T,Hkv,D] (Hq a multiple of Hkv: GQA/MQA); \
         with `cache = slot` the keys/values are appended to that KV-cache slot and attention reads all \
         of it; optional causal mask, sliding window, logit soft-cap and fused RoPE on q and k."
    ),
    row!(
        TopK,
        "top_k",
        Fixed(&["x"]),
        &[attr("k", AttrKind::Int)],
        infer::top_k,
        "Indices (i32) of the k largest values along the last axis, largest first."
    ),
    row!(
        Gather,
        "gather",
        Fixed(&["x", "indices"]),
        &[attr("axis", AttrKind::Int)],
        infer::gather,
        "take_along_axis: result[..i..] = x[..indices[..i..]..] along axis."
    ),
    row!(
        Moe,
        "moe",
        FixedThenVariadic(&["x", "router"], "expert_weights", 3),
        MOE_ATTRS,
        infer::moe,
        "Sparsely-gated mixture of experts (arXiv 1701.06538): router logits → softmax → top_k \
         (renormalized with norm_topk; all 1 with unweighted) → gated FFN experts, summed in expert \
         order; expert_weights are gate, up, down per expert. `moe-dispatch` spells it out in ops."
    ),
    row!(
        Take,
        "take",
        Fixed(&["x", "rows"]),
        NONE,
        infer::take,
        "Rows of x (along axis 0) picked by the 1-D integer `rows`: result [N, x.shape[1..]]."
    ),
    row!(
        ScatterRows,
        "scatter_rows",
        Fixed(&["x", "rows", "y"]),
        &[attr("mode", AttrKind::Ident(&["set", "add"]))],
        infer::scatter_rows,
        "x with row rows[i] replaced by (mode = set) or incremented by (mode = add) y[i], in order of i."
    ),
    row!(
        Nonzero,
        "nonzero",
        Fixed(&["mask"]),
        &[attr("dim", AttrKind::Str)],
        infer::nonzero,
        "Ascending indices (i32) of the nonzero entries of a 1-D mask. Their count is data-dependent: \
         it is the new symbolic dim named by `dim`, bound when the op runs."
    ),
    row!(
        ExpertGate,
        "expert_gate",
        Fixed(&["indices", "gates"]),
        &[attr("expert", AttrKind::Int)],
        infer::expert_gate,
        "For top-k routing indices[T,K] and their gates[T,K]: each token's gate for `expert` (0 where \
         the token did not pick it), as [T]."
    ),
    row!(
        ModSelect,
        "mod_select",
        Fixed(&["scores"]),
        &[attr("capacity", AttrKind::Float), opt("threshold", AttrKind::Float)],
        infer::mod_select,
        "Mixture-of-Depths token choice (arXiv 2404.02258) over router scores[T], as a 0/1 mask: for \
         T > 1 the top ⌈capacity·T⌉ scores (ties → earlier token); for one token (decoding) the causal \
         rule score > threshold (every token when there is no threshold)."
    ),
    row!(
        Fused,
        "fused",
        Variadic("xs"),
        &[attr("expr", AttrKind::Str)],
        infer::fused,
        "An elementwise expression over the operands, broadcast numpy-style to the result (all of one \
         float dtype): `expr` calls the elementwise ops by name (gelu as gelu_tanh / gelu_erf) on `$i` \
         (operand i) and numbers, e.g. \"mul(silu($0), $1)\"; see kiln_ir::op::expr."
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_kind() {
        for (i, info) in TABLE.iter().enumerate() {
            assert_eq!(info.kind as usize, i, "row {i} ({}) is out of order", info.name);
            assert_eq!(OpKind::from_name(info.name), Some(info.kind));
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = TABLE.iter().map(|i| i.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
    }

    #[test]
    fn elementwise_classification() {
        assert!(OpKind::Add.is_elementwise());
        assert!(OpKind::Silu.is_elementwise());
        assert!(OpKind::Gelu.is_elementwise());
        assert!(!OpKind::MatMul.is_elementwise());
    }
}

//! Result-type rules, one function per family of ops. Each returns a message that names the shapes
//! involved; the verifier adds which node it was.

use super::OpKind;
use crate::attr::Attrs;
use crate::dtype::DType;
use crate::shape::{Dim, Shape, TensorType};

pub struct InferCx<'a> {
    pub op: OpKind,
    pub operands: &'a [&'a TensorType],
    pub attrs: &'a Attrs,
    /// The type written in the IR, for ops that declare theirs.
    pub declared: Option<&'a TensorType>,
}

type R = Result<TensorType, String>;

impl InferCx<'_> {
    fn x(&self, i: usize) -> &TensorType {
        self.operands[i]
    }

    fn opt(&self, i: usize) -> Option<&TensorType> {
        self.operands.get(i).copied()
    }

    fn declared(&self) -> Result<&TensorType, String> {
        self.declared.ok_or_else(|| format!("'{}' needs a declared result type", self.op))
    }

    fn axis(&self, t: &TensorType, name: &str, default: i64) -> Result<usize, String> {
        let a = self.attrs.int(name).unwrap_or(default);
        t.shape.axis(a).ok_or_else(|| format!("{name} {a} is out of range for {t}"))
    }
}

fn float_operand(t: &TensorType, what: &str) -> Result<(), String> {
    if t.dtype.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be a float tensor, found {t}"))
    }
}

fn unquantized(t: &TensorType, what: &str) -> Result<(), String> {
    if t.dtype.is_quant() {
        Err(format!("{what} is block-quantized ({t}); only matmul and embedding read quantized weights"))
    } else {
        Ok(())
    }
}

pub fn declared(cx: &InferCx) -> R {
    let t = cx.declared()?;
    unquantized(t, "an input")?;
    Ok(t.clone())
}

pub fn param(cx: &InferCx) -> R {
    let t = cx.declared()?;
    if let DType::Quant(q) = t.dtype {
        let inner = t.shape.last().and_then(|d| d.as_const());
        match inner {
            Some(n) if (n as usize).is_multiple_of(q.block_elems()) => {}
            _ => {
                return Err(format!(
                    "a {} weight needs its last dim to be a multiple of {}, found {t}",
                    q.name(),
                    q.block_elems()
                ))
            }
        }
    }
    Ok(t.clone())
}

pub fn constant(cx: &InferCx) -> R {
    let t = cx.declared()?;
    unquantized(t, "a constant")?;
    Ok(t.clone())
}

pub fn output(cx: &InferCx) -> R {
    Ok(cx.x(0).clone())
}

/// Numpy-style broadcasting, right-aligned: dims must agree or one of them be 1.
pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let r = a.rank().max(b.rank());
    let one = Dim::c(1);
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = (i + a.rank()).checked_sub(r).map(|j| a.dim(j)).unwrap_or(&one);
        let db = (i + b.rank()).checked_sub(r).map(|j| b.dim(j)).unwrap_or(&one);
        let d = if da == db || *db == one {
            da.clone()
        } else if *da == one {
            db.clone()
        } else {
            return Err(format!("shapes {a} and {b} do not broadcast (dim {i}: {da} vs {db})"));
        };
        out.push(d);
    }
    Ok(Shape(out))
}

pub fn binary(cx: &InferCx) -> R {
    let (a, b) = (cx.x(0), cx.x(1));
    unquantized(a, "lhs")?;
    unquantized(b, "rhs")?;
    if a.dtype != b.dtype {
        return Err(format!("operand dtypes differ: {a} vs {b} (insert a cast)"));
    }
    if a.dtype == DType::Bool {
        return Err(format!("arithmetic on bool tensors: {a}"));
    }
    Ok(TensorType { dtype: a.dtype, shape: broadcast(&a.shape, &b.shape)? })
}

pub fn unary(cx: &InferCx) -> R {
    let x = cx.x(0);
    unquantized(x, "the operand")?;
    match cx.op {
        OpKind::Neg | OpKind::Abs if x.dtype.is_int() => Ok(x.clone()),
        _ => float_operand(x, "the operand").map(|_| x.clone()),
    }
}

pub fn unary_float(cx: &InferCx) -> R {
    float_operand(cx.x(0), "the operand")?;
    Ok(cx.x(0).clone())
}

pub fn softmax(cx: &InferCx) -> R {
    let x = cx.x(0);
    float_operand(x, "x")?;
    cx.axis(x, "axis", -1)?;
    Ok(x.clone())
}

/// rms_norm / layer_norm: x[..., D] with optional w[D] (and b[D]).
pub fn norm(cx: &InferCx) -> R {
    let x = cx.x(0);
    float_operand(x, "x")?;
    let d = x.shape.last().ok_or_else(|| format!("x must have at least one dim, found {x}"))?;
    for (i, name) in [(1, "weight"), (2, "bias")] {
        if let Some(w) = cx.opt(i) {
            if w.shape.rank() != 1 || w.shape.dim(0) != d {
                return Err(format!("{name} must be [{d}] to match x {x}, found {w}"));
            }
            float_operand(w, name)?;
        }
    }
    Ok(x.clone())
}

pub fn matmul(cx: &InferCx) -> R {
    let (a, b) = (cx.x(0), cx.x(1));
    float_operand(a, "lhs")?;
    if !(b.dtype.is_float() || b.dtype.is_quant()) {
        return Err(format!("rhs must be a float or quantized tensor, found {b}"));
    }
    let tb = cx.attrs.flag("transpose_b");
    if a.rank() < 1 || b.rank() < 2 {
        return Err(format!("matmul needs lhs rank ≥ 1 and rhs rank ≥ 2, found {a} and {b}"));
    }
    if b.dtype.is_quant() && !(tb && b.rank() == 2) {
        return Err(format!("a quantized rhs must be a 2-D weight used with transpose_b, found {b}"));
    }
    let k_a = a.shape.last().unwrap();
    let (rb, cb) = (b.shape.dim(b.rank() - 2), b.shape.dim(b.rank() - 1));
    let (k_b, n) = if tb { (cb, rb) } else { (rb, cb) };
    if k_a != k_b {
        let how = if tb { "lhs·rhsᵀ" } else { "lhs·rhs" };
        return Err(format!("contraction dims differ in {how}: lhs {a} has {k_a}, rhs {b} has {k_b}"));
    }
    let shape = if b.rank() == 2 {
        let mut dims = a.shape.0.clone();
        *dims.last_mut().unwrap() = n.clone();
        Shape(dims)
    } else {
        if a.rank() < 2 {
            return Err(format!("batched matmul needs lhs rank ≥ 2, found {a}"));
        }
        let ba = Shape(a.shape.0[..a.rank() - 2].to_vec());
        let bb = Shape(b.shape.0[..b.rank() - 2].to_vec());
        let mut dims = broadcast(&ba, &bb).map_err(|e| format!("batch dims: {e}"))?.0;
        dims.push(a.shape.dim(a.rank() - 2).clone());
        dims.push(n.clone());
        Shape(dims)
    };
    if let Some(bias) = cx.opt(2) {
        if bias.rank() != 1 || bias.shape.dim(0) != n || bias.dtype != a.dtype {
            return Err(format!("bias must be {}[{n}], found {bias}", a.dtype));
        }
    }
    Ok(TensorType { dtype: a.dtype, shape })
}

pub fn embedding(cx: &InferCx) -> R {
    let (table, ids) = (cx.x(0), cx.x(1));
    if table.rank() != 2 {
        return Err(format!("table must be 2-D [vocab, dim], found {table}"));
    }
    if !ids.dtype.is_int() {
        return Err(format!("ids must be i32 or i64, found {ids}"));
    }
    let dtype = if table.dtype.is_quant() { DType::F32 } else { table.dtype };
    if !dtype.is_float() {
        return Err(format!("table must be float or quantized, found {table}"));
    }
    let mut dims = ids.shape.0.clone();
    dims.push(table.shape.dim(1).clone());
    Ok(TensorType { dtype, shape: Shape(dims) })
}

pub fn reshape(cx: &InferCx) -> R {
    let x = cx.x(0);
    let shape = cx.attrs.shape("shape").ok_or("missing attribute 'shape'")?;
    let count = |s: &Shape| s.checked_numel_factors().ok_or_else(|| format!("the element count of {s} overflows"));
    if count(&x.shape)? != count(shape)? {
        return Err(format!("cannot reshape {x} to {shape}: element counts differ"));
    }
    Ok(x.with_shape(shape.clone()))
}

pub fn permute(cx: &InferCx) -> R {
    let x = cx.x(0);
    let perm = cx.attrs.ints("perm").ok_or("missing attribute 'perm'")?;
    let mut seen = vec![false; x.rank()];
    let ok = perm.len() == x.rank()
        && perm.iter().all(|&p| {
            let fresh = p >= 0 && (p as usize) < seen.len() && !seen[p as usize];
            if fresh {
                seen[p as usize] = true;
            }
            fresh
        });
    if !ok {
        return Err(format!("perm {perm:?} is not a permutation of the {} axes of {x}", x.rank()));
    }
    Ok(x.with_shape(Shape(perm.iter().map(|&p| x.shape.dim(p as usize).clone()).collect())))
}

pub fn concat(cx: &InferCx) -> R {
    let first = cx.x(0);
    let axis = cx.axis(first, "axis", 0)?;
    let mut total = Dim::c(0);
    for (i, t) in cx.operands.iter().enumerate() {
        if t.dtype != first.dtype || t.rank() != first.rank() {
            return Err(format!("operand {i} is {t}, but operand 0 is {first}"));
        }
        for d in 0..t.rank() {
            if d != axis && t.shape.dim(d) != first.shape.dim(d) {
                return Err(format!("operand {i} {t} and operand 0 {first} differ in dim {d}"));
            }
        }
        total = total
            .checked_add(t.shape.dim(axis))
            .ok_or_else(|| format!("dim {axis} of the result overflows (operand {i} is {t})"))?;
    }
    let mut dims = first.shape.0.clone();
    dims[axis] = total;
    Ok(first.with_shape(Shape(dims)))
}

pub fn split(cx: &InferCx) -> R {
    let x = cx.x(0);
    let axis = cx.axis(x, "axis", 0)?;
    let sizes = cx.attrs.ints("sizes").ok_or("missing attribute 'sizes'")?;
    let index = cx.attrs.int("index").ok_or("missing attribute 'index'")?;
    if sizes.iter().any(|&s| s <= 0) {
        return Err(format!("sizes {sizes:?} must all be positive"));
    }
    let sum = sizes
        .iter()
        .try_fold(0i64, |acc, &s| acc.checked_add(s))
        .ok_or_else(|| format!("sizes {sizes:?} add up to more than any dim"))?;
    if x.shape.dim(axis) != &Dim::c(sum) {
        return Err(format!("sizes {sizes:?} add up to {sum}, but dim {axis} of {x} is {}", x.shape.dim(axis)));
    }
    let size = usize::try_from(index)
        .ok()
        .and_then(|i| sizes.get(i))
        .ok_or_else(|| format!("index {index} is out of range for {} chunks", sizes.len()))?;
    let mut dims = x.shape.0.clone();
    dims[axis] = Dim::c(*size);
    Ok(x.with_shape(Shape(dims)))
}

pub fn slice(cx: &InferCx) -> R {
    let x = cx.x(0);
    let axis = cx.axis(x, "axis", 0)?;
    let start = cx.attrs.int("start").ok_or("missing attribute 'start'")?;
    let end = cx.attrs.int("end");
    let d = x.shape.dim(axis);
    // Resolve bounds to dims: negative bounds are relative to the end.
    let bound = |b: i64| if b < 0 { d.checked_add(&Dim::c(b)) } else { Some(Dim::c(b)) };
    let overflow =
        || format!("slice [{start}:{}] of dim {axis} of {x} overflows", end.map_or(String::new(), |e| e.to_string()));
    let s = bound(start).ok_or_else(overflow)?;
    let e = match end {
        Some(e) => bound(e).ok_or_else(overflow)?,
        None => d.clone(),
    };
    let len = e.checked_sub(&s).ok_or_else(overflow)?;
    if let (Some(n), Some(dc)) = (len.as_const(), d.as_const()) {
        let (sc, ec) = (s.as_const().unwrap_or(0), e.as_const().unwrap_or(dc));
        if n <= 0 || sc < 0 || ec > dc {
            return Err(format!(
                "slice [{start}:{}] of dim {axis} is empty or out of range for {x}",
                end.map_or(String::new(), |e| e.to_string())
            ));
        }
    } else if let Some(n) = len.as_const() {
        if n <= 0 {
            return Err(format!("slice [{start}:{:?}] of dim {axis} of {x} is empty", end));
        }
    }
    let mut dims = x.shape.0.clone();
    dims[axis] = len;
    Ok(x.with_shape(Shape(dims)))
}

pub fn cast(cx: &InferCx) -> R {
    let x = cx.x(0);
    let to = cx.attrs.dtype("dtype").ok_or("missing attribute 'dtype'")?;
    unquantized(x, "the operand")?;
    if to.is_quant() {
        return Err(format!("cannot cast to block-quantized {to}: quantization happens when weights are packed"));
    }
    Ok(x.with_dtype(to))
}

pub fn reduce(cx: &InferCx) -> R {
    let x = cx.x(0);
    unquantized(x, "the operand")?;
    let axes = cx.attrs.ints("axes").ok_or("missing attribute 'axes'")?;
    let mut drop = vec![false; x.rank()];
    for &a in axes {
        let i = x.shape.axis(a).ok_or_else(|| format!("axis {a} is out of range for {x}"))?;
        if drop[i] {
            return Err(format!("axis {a} is listed twice in {axes:?}"));
        }
        drop[i] = true;
    }
    let keep = cx.attrs.flag("keepdim");
    let dims = x
        .shape
        .0
        .iter()
        .zip(&drop)
        .filter_map(|(d, &dr)| match (dr, keep) {
            (false, _) => Some(d.clone()),
            (true, true) => Some(Dim::c(1)),
            (true, false) => None,
        })
        .collect();
    Ok(x.with_shape(Shape(dims)))
}

fn positions(pos: &TensorType, t: &Dim, what: &TensorType) -> Result<(), String> {
    if !pos.dtype.is_int() || pos.rank() != 1 || pos.shape.dim(0) != t {
        return Err(format!("positions must be i32[{t}] to match {what}, found {pos}"));
    }
    Ok(())
}

fn rope_dims(x: &TensorType, dim: Option<i64>) -> Result<(), String> {
    let head = x.shape.dim(2).as_const().ok_or_else(|| format!("head dim of {x} must be constant"))?;
    let d = dim.unwrap_or(head);
    if d <= 0 || d % 2 != 0 || d > head {
        return Err(format!("rotary dim {d} must be even and at most the head dim {head} of {x}"));
    }
    Ok(())
}

pub fn rope(cx: &InferCx) -> R {
    let (x, pos) = (cx.x(0), cx.x(1));
    float_operand(x, "x")?;
    if x.rank() != 3 {
        return Err(format!("x must be [T, heads, head_dim], found {x}"));
    }
    positions(pos, x.shape.dim(0), x)?;
    rope_dims(x, cx.attrs.int("dim"))?;
    Ok(x.clone())
}

pub fn attention(cx: &InferCx) -> R {
    let (q, k, v, pos) = (cx.x(0), cx.x(1), cx.x(2), cx.x(3));
    for (t, name) in [(q, "q"), (k, "k"), (v, "v")] {
        float_operand(t, name)?;
        if t.rank() != 3 {
            return Err(format!("{name} must be [T, heads, head_dim], found {t}"));
        }
    }
    if k.dtype != q.dtype || v.dtype != q.dtype {
        return Err(format!("q, k, v dtypes differ: {q}, {k}, {v}"));
    }
    let t = q.shape.dim(0);
    if k.shape.dim(0) != t || v.shape.dim(0) != t {
        return Err(format!("q {q}, k {k} and v {v} must have the same number of tokens"));
    }
    if k.shape.dim(1) != v.shape.dim(1) {
        return Err(format!("k {k} and v {v} must have the same number of heads"));
    }
    if q.shape.dim(2) != k.shape.dim(2) {
        return Err(format!("q {q} and k {k} must have the same head dim"));
    }
    let (hq, hkv) = match (q.shape.dim(1).as_const(), k.shape.dim(1).as_const()) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(format!("head counts of q {q} and k {k} must be constant")),
    };
    if hkv <= 0 || hq % hkv != 0 {
        return Err(format!("query heads ({hq}) must be a multiple of key/value heads ({hkv}): q {q}, k {k}"));
    }
    positions(pos, t, q)?;
    if let Some((_, fields)) = cx.attrs.tagged("rope") {
        rope_dims(q, fields.int("dim"))?;
    }
    if let Some(w) = cx.attrs.int("window") {
        if w <= 0 {
            return Err(format!("window must be positive, found {w}"));
        }
    }
    if let Some(c) = cx.attrs.int("cache") {
        if c < 0 {
            return Err(format!("cache slot must be non-negative, found {c}"));
        }
    }
    let mut dims = q.shape.0.clone();
    dims[2] = v.shape.dim(2).clone();
    Ok(q.with_shape(Shape(dims)))
}

pub fn top_k(cx: &InferCx) -> R {
    let x = cx.x(0);
    unquantized(x, "x")?;
    let k = cx.attrs.int("k").ok_or("missing attribute 'k'")?;
    let last = x.shape.last().ok_or_else(|| format!("x must have at least one dim, found {x}"))?;
    if k <= 0 || last.as_const().is_some_and(|n| k > n) {
        return Err(format!("k = {k} must be in 1..={last} for {x}"));
    }
    let mut dims = x.shape.0.clone();
    *dims.last_mut().unwrap() = Dim::c(k);
    Ok(TensorType { dtype: DType::I32, shape: Shape(dims) })
}

pub fn gather(cx: &InferCx) -> R {
    let (x, idx) = (cx.x(0), cx.x(1));
    unquantized(x, "x")?;
    let axis = cx.axis(x, "axis", 0)?;
    if !idx.dtype.is_int() || idx.rank() != x.rank() {
        return Err(format!("indices must be an integer tensor of the rank of x {x}, found {idx}"));
    }
    for d in 0..x.rank() {
        if d != axis && idx.shape.dim(d) != x.shape.dim(d) {
            return Err(format!("indices {idx} and x {x} differ in dim {d}"));
        }
    }
    Ok(x.with_shape(idx.shape.clone()))
}

pub fn moe(cx: &InferCx) -> R {
    let (x, router) = (cx.x(0), cx.x(1));
    float_operand(x, "x")?;
    let e = cx.attrs.int("experts").ok_or("missing attribute 'experts'")?;
    let k = cx.attrs.int("top_k").ok_or("missing attribute 'top_k'")?;
    if e <= 0 || k <= 0 || k > e {
        return Err(format!("need 1 ≤ top_k ({k}) ≤ experts ({e})"));
    }
    let weights = &cx.operands[2..];
    if weights.len() as i128 != 3 * e as i128 {
        return Err(format!(
            "{e} experts need {} expert weights (gate, up, down each), found {}",
            3 * e as i128,
            weights.len()
        ));
    }
    if x.rank() != 2 {
        return Err(format!("x must be [T, hidden], found {x}"));
    }
    let d = x.shape.dim(1);
    if router.rank() != 2 || router.shape.dim(0) != &Dim::c(e) || router.shape.dim(1) != d {
        return Err(format!("router must be [{e}, {d}], found {router}"));
    }
    let f = weights[0].shape.0.first().cloned().unwrap_or(Dim::c(0));
    for (i, w) in weights.iter().enumerate() {
        let want = if i % 3 == 2 { [d.clone(), f.clone()] } else { [f.clone(), d.clone()] };
        if w.rank() != 2 || w.shape.0[..] != want[..] {
            let role = ["gate", "up", "down"][i % 3];
            return Err(format!("expert {} {role} weight must be [{}, {}], found {w}", i / 3, want[0], want[1]));
        }
    }
    Ok(x.clone())
}

/// `fused`: the expression must parse, refer to every operand and only to them; operands share one
/// float dtype and broadcast together to the result.
pub fn fused(cx: &InferCx) -> R {
    let src = cx.attrs.str("expr").ok_or("missing attribute 'expr'")?;
    let e = super::expr::Expr::parse(src).map_err(|m| format!("bad expression {src:?}: {m}"))?;
    e.check_operands(cx.operands.len()).map_err(|m| format!("bad expression {src:?}: {m}"))?;
    let first = cx.operands.first().ok_or("fused needs at least one operand")?;
    let mut shape = Shape::scalar();
    for (i, t) in cx.operands.iter().enumerate() {
        unquantized(t, &format!("operand {i}"))?;
        float_operand(t, &format!("operand {i}"))?;
        if t.dtype != first.dtype {
            return Err(format!("operand dtypes differ: operand {i} is {t}, operand 0 is {first} (insert a cast)"));
        }
        shape = broadcast(&shape, &t.shape).map_err(|m| format!("operand {i}: {m}"))?;
    }
    Ok(TensorType { dtype: first.dtype, shape })
}

fn rows_operand(rows: &TensorType) -> Result<(), String> {
    if rows.rank() != 1 || !rows.dtype.is_int() {
        return Err(format!("rows must be a 1-D integer tensor, found {rows}"));
    }
    Ok(())
}

pub fn take(cx: &InferCx) -> R {
    let (x, rows) = (cx.x(0), cx.x(1));
    unquantized(x, "x")?;
    rows_operand(rows)?;
    if x.rank() == 0 {
        return Err(format!("x must have at least one dim, found {x}"));
    }
    let mut dims = x.shape.0.clone();
    dims[0] = rows.shape.dim(0).clone();
    Ok(x.with_shape(Shape(dims)))
}

pub fn scatter_rows(cx: &InferCx) -> R {
    let (x, rows, y) = (cx.x(0), cx.x(1), cx.x(2));
    unquantized(x, "x")?;
    rows_operand(rows)?;
    if x.rank() == 0 || y.dtype != x.dtype || y.rank() != x.rank() {
        return Err(format!("y must be x's rows: x {x}, y {y}"));
    }
    if y.shape.dim(0) != rows.shape.dim(0) || y.shape.0[1..] != x.shape.0[1..] {
        return Err(format!("y {y} must be [{}, ...] with the row shape of x {x}", rows.shape.dim(0)));
    }
    Ok(x.clone())
}

/// Symbolic dim names: an identifier, so the text form parses back.
fn check_dim_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("dim name \"{name}\" must be an identifier"))
    }
}

pub fn nonzero(cx: &InferCx) -> R {
    let m = cx.x(0);
    unquantized(m, "mask")?;
    if m.rank() != 1 {
        return Err(format!("mask must be 1-D, found {m}"));
    }
    let dim = cx.attrs.str("dim").ok_or("missing attribute 'dim'")?;
    check_dim_name(dim)?;
    Ok(TensorType { dtype: DType::I32, shape: Shape(vec![Dim::sym(dim)]) })
}

pub fn expert_gate(cx: &InferCx) -> R {
    let (idx, gates) = (cx.x(0), cx.x(1));
    float_operand(gates, "gates")?;
    if !idx.dtype.is_int() || idx.rank() != 2 || gates.shape != idx.shape {
        return Err(format!("indices must be an integer [T, K] and gates a float of the same shape: {idx}, {gates}"));
    }
    let e = cx.attrs.int("expert").ok_or("missing attribute 'expert'")?;
    if e < 0 {
        return Err(format!("expert {e} is negative"));
    }
    Ok(TensorType { dtype: gates.dtype, shape: Shape(vec![idx.shape.dim(0).clone()]) })
}

pub fn mod_select(cx: &InferCx) -> R {
    let s = cx.x(0);
    float_operand(s, "scores")?;
    if s.rank() != 1 {
        return Err(format!("scores must be 1-D [T], found {s}"));
    }
    let c = cx.attrs.float("capacity").ok_or("missing attribute 'capacity'")?;
    if !(c > 0.0 && c <= 1.0) {
        return Err(format!("capacity {c} must be in (0, 1]"));
    }
    Ok(TensorType { dtype: DType::F32, shape: s.shape.clone() })
}

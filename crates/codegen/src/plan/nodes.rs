//! One graph node → kernel calls (or an alias).

use super::dims::{add, plan_err, scale};
use super::{buf, Planner, WeightUse};
use crate::error::Result;
use crate::kernels::rope_params::rope_params;
use crate::kernels::{Broadcast, CastType, KernelSpec, ReduceOp};
use kiln_ir::op::expr::{Expr, Func};
use kiln_ir::op::rope::RopeSpec;
use kiln_ir::{DType, NodeId, OpKind, TensorType};
use kiln_runtime::artifact::manifest::{BufArg, DimExpr, ElemType, KvSlotSpec, Storage};

use crate::kernels::matmul::{q8_row_bytes, COLS_PER_TASK as MATMUL_COLS_PER_TASK, INT8_COLS_PER_TASK};
use crate::kernels::WeightFormat;

/// KV-cache slots at or above this are private scratch slots of attentions without a `cache`.
const SCRATCH_SLOT_BASE: usize = 1 << 20;

impl Planner<'_> {
    /// The `[rows, cols]` view of a tensor: `cols` is the last dim when it is a constant.
    fn rows_cols(&self, ty: &TensorType, what: &str) -> Result<(DimExpr, usize)> {
        let numel = self.syms.numel(&ty.shape, what)?;
        let cols = ty.shape.last().and_then(|d| d.as_const()).unwrap_or(1).max(1) as usize;
        let rows = DimExpr {
            constant: numel.constant / cols as i64,
            terms: numel.terms.iter().map(|&(s, c)| (s, c / cols as i64)).collect(),
        };
        Ok((rows, cols))
    }

    fn float_value(&mut self, n: NodeId, what: &str) -> Result<usize> {
        if !self.g.node(n).ty.dtype.is_float() {
            return Err(plan_err(what, format!("expected a float operand, found {}", self.g.node(n).ty)));
        }
        self.value(n)
    }

    pub(super) fn node(&mut self, n: NodeId) -> Result<()> {
        let node = self.g.node(n).clone();
        let ops = self.g.operands(n);
        let label = self.label(n).to_string();
        let attrs = &node.attrs;
        match node.op {
            op if op.is_elementwise() || op == OpKind::Fused => {
                let expr = if op == OpKind::Fused {
                    attrs.str("expr").unwrap_or_default().to_string()
                } else {
                    let f = Func::from_op(op, attrs).ok_or_else(|| plan_err(&label, "not an elementwise function"))?;
                    Expr::call(f, (0..ops.len()).map(Expr::Operand).collect()).to_string()
                };
                self.elementwise(n, &ops, expr)
            }
            OpKind::MatMul => self.matmul(n, &ops),
            OpKind::Embedding => {
                let table = self.weight(ops[0], WeightUse::Rows(self.opts.weights))?;
                let tt = &self.g.node(ops[0]).ty;
                let (vocab, dim) = (const_dim(tt, 0, &label)?, const_dim(tt, 1, &label)?);
                let ids = self.value(ops[1])?;
                let r = self.syms.numel(&self.g.node(ops[1]).ty.shape, &label)?;
                let out = self.result(n)?;
                let spec = KernelSpec::Embedding { format: table.format, vocab, dim, interleave: table.interleave };
                self.step(n, spec, vec![r.clone()], vec![buf(table.buffer), buf(ids), buf(out)], r);
                Ok(())
            }
            OpKind::RmsNorm | OpKind::LayerNorm => {
                let x = self.float_value(ops[0], &label)?;
                let (rows, cols) = self.rows_cols(&node.ty, &label)?;
                let eps = attrs.float("eps").unwrap_or(1e-6) as f32;
                let mut bufs = vec![buf(x)];
                for &w in &ops[1..] {
                    bufs.push(buf(self.value(w)?));
                }
                let weight = ops.len() > 1;
                let spec = if node.op == OpKind::RmsNorm {
                    KernelSpec::RmsNorm { cols, eps, weight }
                } else {
                    while bufs.len() < 3 {
                        bufs.push(BufArg::Null);
                    }
                    KernelSpec::LayerNorm { cols, eps, weight, bias: ops.len() > 2 }
                };
                if node.op == OpKind::RmsNorm && !weight {
                    bufs.push(BufArg::Null);
                }
                bufs.push(buf(self.result(n)?));
                self.step(n, spec, vec![rows.clone()], bufs, rows);
                Ok(())
            }
            OpKind::Softmax | OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax => {
                let xt = self.g.node(ops[0]).ty.clone();
                let last = xt.rank() as i64 - 1;
                let on_last = match node.op {
                    OpKind::Softmax => attrs.int("axis").is_none_or(|a| a == -1 || a == last),
                    _ => attrs.ints("axes").is_some_and(|a| a.len() == 1 && (a[0] == -1 || a[0] == last)),
                };
                if !on_last {
                    return Err(plan_err(&label, "only the last axis is supported"));
                }
                let x = self.float_value(ops[0], &label)?;
                let (rows, cols) = self.rows_cols(&xt, &label)?;
                let spec = match node.op {
                    OpKind::Softmax => KernelSpec::Softmax { cols },
                    OpKind::ReduceSum => KernelSpec::Reduce { op: ReduceOp::Sum, cols },
                    OpKind::ReduceMean => KernelSpec::Reduce { op: ReduceOp::Mean, cols },
                    _ => KernelSpec::Reduce { op: ReduceOp::Max, cols },
                };
                let out = self.result(n)?;
                self.step(n, spec, vec![rows.clone()], vec![buf(x), buf(out)], rows);
                Ok(())
            }
            OpKind::Reshape => {
                let x = self.value(ops[0])?;
                let elems = self.syms.numel(&node.ty.shape, &label)?;
                let elem = self.buffers[x].elem;
                let b = self.buffer(&label, elem, elems, super::Storage::Alias { of: x, offset_elems: DimExpr::c(0) });
                self.value_buf.insert(n, b);
                Ok(())
            }
            OpKind::Slice | OpKind::Split | OpKind::Permute => self.copy(n, &ops),
            OpKind::Concat => self.concat(n, &ops),
            OpKind::Cast => {
                let x = self.value(ops[0])?;
                let from = cast_type(self.g.node(ops[0]).ty.dtype, &label)?;
                let to = cast_type(node.ty.dtype, &label)?;
                let count = self.syms.numel(&node.ty.shape, &label)?;
                let out = self.result(n)?;
                self.step(n, KernelSpec::Cast { from, to }, vec![count], vec![buf(x), buf(out)], DimExpr::c(1));
                Ok(())
            }
            OpKind::Rope => {
                let spec = RopeSpec::from_rope_op(attrs).map_err(|e| plan_err(&label, e))?;
                let (t, heads, head_dim) = self.heads(&node.ty, &label)?;
                let x = self.float_value(ops[0], &label)?;
                let pos = self.value(ops[1])?;
                let out = self.result(n)?;
                let spec = KernelSpec::Rope { heads, head_dim, rope: rope_params(&spec, head_dim) };
                self.step(n, spec, vec![t.clone()], vec![buf(x), buf(pos), buf(out)], t);
                Ok(())
            }
            OpKind::Attention => self.attention(n, &ops),
            OpKind::TopK => {
                let x = self.float_value(ops[0], &label)?;
                let (rows, cols) = self.rows_cols(&self.g.node(ops[0]).ty.clone(), &label)?;
                let k = attrs.int("k").unwrap_or(1) as usize;
                let out = self.result(n)?;
                self.step(n, KernelSpec::TopK { cols, k }, vec![rows.clone()], vec![buf(x), buf(out)], rows);
                Ok(())
            }
            OpKind::Gather => {
                let xt = self.g.node(ops[0]).ty.clone();
                let axis = attrs.int("axis").unwrap_or(0);
                if xt.rank() != 2 || !(axis == 1 || axis == -1) {
                    return Err(plan_err(&label, "only gather along the last axis of a 2-D tensor is supported"));
                }
                let x = self.float_value(ops[0], &label)?;
                let idx = self.value(ops[1])?;
                let (rows, cols) = self.rows_cols(&xt, &label)?;
                let k = const_dim(&node.ty, 1, &label)?;
                let out = self.result(n)?;
                let spec = KernelSpec::GatherCols { cols, k };
                self.step(n, spec, vec![rows.clone()], vec![buf(x), buf(idx), buf(out)], rows);
                Ok(())
            }
            OpKind::Take => {
                let xt = self.g.node(ops[0]).ty.clone();
                let (_, row_len) = self.row_len(&xt, &label)?;
                let x = self.value(ops[0])?;
                let rows = self.value(ops[1])?;
                let count = self.syms.expr(self.g.node(ops[1]).ty.shape.dim(0), &label)?;
                let out = self.result(n)?;
                let spec = KernelSpec::Take { row_len, int: xt.dtype.is_int() };
                self.step(n, spec, vec![count.clone()], vec![buf(x), buf(rows), buf(out)], count);
                Ok(())
            }
            OpKind::ScatterRows => {
                let xt = self.g.node(ops[0]).ty.clone();
                let (t, row_len) = self.row_len(&xt, &label)?;
                let (x, rows, y) = (self.value(ops[0])?, self.value(ops[1])?, self.value(ops[2])?);
                let count = self.syms.expr(self.g.node(ops[1]).ty.shape.dim(0), &label)?;
                let out = self.result(n)?;
                let spec = KernelSpec::ScatterRows {
                    row_len,
                    add: attrs.ident("mode") == Some("add"),
                    int: xt.dtype.is_int(),
                };
                self.step(n, spec, vec![t, count], vec![buf(x), buf(rows), buf(y), buf(out)], DimExpr::c(1));
                Ok(())
            }
            OpKind::Nonzero => {
                let m = self.float_value(ops[0], &label)?;
                let count = self.syms.expr(self.g.node(ops[0]).ty.shape.dim(0), &label)?;
                let dim = attrs.str("dim").unwrap_or_default().to_string();
                let sym = self.syms.dynamic(&dim);
                let out = self.result(n)?;
                let counter = self.buffer(&format!("{dim}.count"), ElemType::I64, DimExpr::c(1), Storage::Activation);
                let step =
                    self.step(n, KernelSpec::Nonzero, vec![count], vec![buf(m), buf(out), buf(counter)], DimExpr::c(1));
                step.binds = Some(sym);
                Ok(())
            }
            OpKind::ExpertGate => {
                let (idx, gates) = (self.value(ops[0])?, self.value(ops[1])?);
                let it = self.g.node(ops[0]).ty.clone();
                let t = self.syms.expr(it.shape.dim(0), &label)?;
                let k = const_dim(&it, 1, &label)?;
                let out = self.result(n)?;
                let spec = KernelSpec::ExpertGate { k, expert: attrs.int("expert").unwrap_or(0) };
                self.step(n, spec, vec![t], vec![buf(idx), buf(gates), buf(out)], DimExpr::c(1));
                Ok(())
            }
            OpKind::ModSelect => {
                let s = self.float_value(ops[0], &label)?;
                let t = self.syms.expr(self.g.node(ops[0]).ty.shape.dim(0), &label)?;
                let out = self.result(n)?;
                let spec = KernelSpec::ModSelect {
                    capacity: attrs.float("capacity").unwrap_or(1.0),
                    threshold: attrs.float("threshold"),
                };
                self.step(n, spec, vec![t], vec![buf(s), buf(out)], DimExpr::c(1));
                Ok(())
            }
            OpKind::Constant => {
                let count = self.syms.numel(&node.ty.shape, &label)?;
                let out = self.result(n)?;
                let spec =
                    KernelSpec::Fill { value: attrs.float("value").unwrap_or(0.0) as f32, int: node.ty.dtype.is_int() };
                self.step(n, spec, vec![count], vec![buf(out)], DimExpr::c(1));
                Ok(())
            }
            OpKind::Moe => Err(plan_err(&label, "moe ops must be lowered by the moe-dispatch pass before compiling")),
            op => Err(plan_err(&label, format!("'{op}' on run-time values is not supported by the CPU backend"))),
        }
    }

    /// `[rows, row_len]` of a tensor whose first dim is the row count.
    fn row_len(&self, ty: &TensorType, label: &str) -> Result<(DimExpr, usize)> {
        let rows = self.syms.expr(ty.shape.dim(0), label)?;
        let rest: Option<i64> = ty.shape.dims()[1..].iter().map(|d| d.as_const()).product();
        let row_len = rest.ok_or_else(|| plan_err(label, format!("rows of {ty} must have a constant size")))?;
        Ok((rows, row_len as usize))
    }

    /// `[T, heads, head_dim]`.
    fn heads(&self, ty: &TensorType, label: &str) -> Result<(DimExpr, usize, usize)> {
        if ty.rank() != 3 {
            return Err(plan_err(label, format!("expected [tokens, heads, head_dim], found {ty}")));
        }
        Ok((self.syms.expr(ty.shape.dim(0), label)?, const_dim(ty, 1, label)?, const_dim(ty, 2, label)?))
    }

    fn elementwise(&mut self, n: NodeId, ops: &[NodeId], expr: String) -> Result<()> {
        let label = self.label(n).to_string();
        let ty = self.g.node(n).ty.clone();
        if !ty.dtype.is_float() {
            return Err(plan_err(&label, format!("elementwise ops on {} are not supported", ty.dtype)));
        }
        let (rows, cols) = self.rows_cols(&ty, &label)?;
        let mut bufs = Vec::new();
        let mut operands = Vec::new();
        for &o in ops {
            let ot = self.g.node(o).ty.clone();
            operands.push(broadcast_of(&ot, &ty).ok_or_else(|| {
                plan_err(&label, format!("operand {ot} broadcasts to {ty} in a way the CPU backend does not support"))
            })?);
            bufs.push(buf(self.value(o)?));
        }
        bufs.push(buf(self.result(n)?));
        self.step(n, KernelSpec::Elementwise { expr, operands, cols }, vec![rows.clone()], bufs, rows);
        Ok(())
    }

    fn matmul(&mut self, n: NodeId, ops: &[NodeId]) -> Result<()> {
        let label = self.label(n).to_string();
        let node = self.g.node(n).clone();
        if !self.folded.contains_key(&ops[1]) {
            return Err(plan_err(&label, "matmul of two run-time values is not supported (b must be a weight)"));
        }
        let usage = if node.attrs.flag("transpose_b") {
            WeightUse::Rows(self.opts.weights)
        } else {
            WeightUse::TransposedRows(self.opts.weights)
        };
        let weight = self.weight(ops[1], usage)?;
        let (w, format, interleave) = (weight.buffer, weight.format, weight.interleave);
        let bt = &self.g.node(ops[1]).ty;
        let (nn, k) = if node.attrs.flag("transpose_b") {
            (const_dim(bt, 0, &label)?, const_dim(bt, 1, &label)?)
        } else {
            (const_dim(bt, 1, &label)?, const_dim(bt, 0, &label)?)
        };
        let a = self.float_value(ops[0], &label)?;
        let m = self.rows_cols(&self.g.node(ops[0]).ty.clone(), &label)?.0;
        let bias = match ops.get(2) {
            Some(&b) => buf(self.value(b)?),
            None => BufArg::Null,
        };
        let int8 = self.opts.int8_prefill
            && matches!(format, WeightFormat::Q8_0 | WeightFormat::Q4_0)
            && k <= crate::kernels::matmul::int8_max_k();
        let a_q = if int8 { Some(self.quantized_rows(ops[0], a, &m, k)?) } else { None };
        let out = self.result(n)?;
        let bias_flag = ops.len() > 2;
        let mut bufs = vec![buf(a), buf(w), bias, buf(out)];
        let (spec, cols_per_task) = match a_q {
            Some(q) => {
                bufs.push(buf(q));
                let cols_per_task = INT8_COLS_PER_TASK;
                (KernelSpec::MatmulI8 { format, n: nn, k, bias: bias_flag, cols_per_task }, cols_per_task)
            }
            None => {
                let cols_per_task = MATMUL_COLS_PER_TASK;
                let spec = KernelSpec::Matmul { format, n: nn, k, bias: bias_flag, cols_per_task, interleave };
                (spec, cols_per_task)
            }
        };
        let tasks = DimExpr::c(nn.div_ceil(cols_per_task) as i64);
        self.step(n, spec, vec![m], bufs, tasks);
        Ok(())
    }

    /// The int8 rows of value `x` (buffer `x_buf`, `rows × k`) for `matmul_i8`, quantized by a
    /// `quantize_rows` step the first time a matmul asks (q/k/v and gate/up share theirs). Keyed
    /// by buffer, not node: a speculative router copy plans the same nodes over other buffers.
    fn quantized_rows(&mut self, x: NodeId, x_buf: usize, rows: &DimExpr, k: usize) -> Result<usize> {
        if let Some(&q) = self.quantized_rows.get(&x_buf) {
            return Ok(q);
        }
        let label = format!("{}.q8", self.value_name(x));
        // Sized in f32 elements (the buffer planner's unit): a row is q8_row_bytes(k) = 1.25·k bytes.
        let elems = scale(rows, (q8_row_bytes(k) / 4) as i64);
        let q = self.buffer(&label, ElemType::F32, elems, super::Storage::Activation);
        self.step(x, KernelSpec::QuantizeRows { k }, vec![rows.clone()], vec![buf(x_buf), buf(q)], rows.clone());
        self.quantized_rows.insert(x_buf, q);
        Ok(q)
    }

    fn attention(&mut self, n: NodeId, ops: &[NodeId]) -> Result<()> {
        let label = self.label(n).to_string();
        let node = self.g.node(n).clone();
        let (t, heads, head_dim) = self.heads(&self.g.node(ops[0]).ty.clone(), &label)?;
        let (_, kv_heads, kd) = self.heads(&self.g.node(ops[1]).ty.clone(), &label)?;
        let (_, _, vd) = self.heads(&self.g.node(ops[2]).ty.clone(), &label)?;
        if kd != head_dim || vd != head_dim {
            return Err(plan_err(&label, "q, k and v must have the same head dim"));
        }
        let slot = match node.attrs.int("cache") {
            Some(s) => s as usize,
            None => SCRATCH_SLOT_BASE + self.kv_slots.iter().filter(|k| k.scratch).count(),
        };
        if !self.kv_slots.iter().any(|k| k.slot == slot) {
            self.kv_slots.push(KvSlotSpec { slot, kv_heads, head_dim, scratch: slot >= SCRATCH_SLOT_BASE });
        }
        let len = DimExpr::sym(self.syms.cache_len(slot));
        let rope = RopeSpec::from_attention(&node.attrs).map_err(|e| plan_err(&label, e))?;
        let rope = rope.map(|r| rope_params(&r, head_dim));
        let (q, k, v) =
            (self.float_value(ops[0], &label)?, self.float_value(ops[1], &label)?, self.float_value(ops[2], &label)?);
        let pos = self.value(ops[3])?;
        let cache = [BufArg::CacheKeys { slot }, BufArg::CacheValues { slot }, BufArg::CachePositions { slot }];
        let append = KernelSpec::KvAppend { kv_heads, head_dim, rope: rope.clone() };
        let mut bufs = vec![buf(k), buf(v), buf(pos)];
        bufs.extend(cache.iter().cloned());
        let step = self.step(n, append, vec![t.clone(), len.clone()], bufs, t.clone());
        step.appends_to = Some(slot);
        let spec = KernelSpec::Attention {
            heads,
            kv_heads,
            head_dim,
            scale: node.attrs.float("scale").unwrap_or(1.0 / (head_dim as f64).sqrt()) as f32,
            causal: node.attrs.flag("causal"),
            window: node.attrs.int("window"),
            softcap: node.attrs.float("softcap").map(|c| c as f32),
            rope,
        };
        let out = self.result(n)?;
        let mut bufs = vec![buf(q), buf(pos)];
        bufs.extend(cache);
        bufs.push(buf(out));
        self.step(n, spec, vec![t.clone(), len], bufs, scale(&t, heads as i64));
        Ok(())
    }

    /// Row-major strides of a shape, as expressions.
    fn strides(&self, ty: &TensorType, label: &str) -> Result<Vec<DimExpr>> {
        let mut strides = vec![DimExpr::c(1); ty.rank()];
        for i in (0..ty.rank().saturating_sub(1)).rev() {
            let next = self.syms.expr(ty.shape.dim(i + 1), label)?;
            strides[i] = mul_const_or(&strides[i + 1], &next, label)?;
        }
        Ok(strides)
    }

    fn copy(&mut self, n: NodeId, ops: &[NodeId]) -> Result<()> {
        let label = self.label(n).to_string();
        let node = self.g.node(n).clone();
        let xt = self.g.node(ops[0]).ty.clone();
        let x = self.value(ops[0])?;
        let xs = self.strides(&xt, &label)?;
        let rank = xt.rank();
        let axis_of = |a: i64| if a < 0 { (a + rank as i64) as usize } else { a as usize };
        let mut strides = xs.clone();
        let mut offset = DimExpr::c(0);
        match node.op {
            OpKind::Permute => {
                let perm = node.attrs.ints("perm").unwrap_or_default();
                strides = perm.iter().map(|&p| xs[p as usize].clone()).collect();
            }
            OpKind::Slice => {
                let a = axis_of(node.attrs.int("axis").unwrap_or(0));
                let mut start = DimExpr::c(node.attrs.int("start").unwrap_or(0));
                if start.constant < 0 {
                    start = add(&self.syms.expr(xt.shape.dim(a), &label)?, &start);
                }
                if a == 0 {
                    // A run of whole rows: no copy, just a view.
                    let row: i64 = xt.shape.dims()[1..].iter().map(|d| d.as_const().unwrap_or(0)).product();
                    let elems = self.syms.numel(&node.ty.shape, &label)?;
                    let elem = self.buffers[x].elem;
                    let b = self.buffer(
                        &label,
                        elem,
                        elems,
                        super::Storage::Alias { of: x, offset_elems: scale(&start, row) },
                    );
                    self.value_buf.insert(n, b);
                    return Ok(());
                }
                offset = mul_const_or(&xs[a], &start, &label)?;
            }
            OpKind::Split => {
                let a = axis_of(node.attrs.int("axis").unwrap_or(0));
                let sizes = node.attrs.ints("sizes").unwrap_or_default();
                let idx = node.attrs.int("index").unwrap_or(0) as usize;
                let before: i64 = sizes[..idx].iter().sum();
                offset = scale(&xs[a], before);
            }
            _ => unreachable!("copy() handles permute, slice and split"),
        }
        self.emit_copy(n, x, &node.ty, strides, offset, None)
    }

    /// A copy kernel call writing `out_ty`'s elements (into `into`, or a new result buffer).
    fn emit_copy(
        &mut self,
        n: NodeId,
        x: usize,
        out_ty: &TensorType,
        strides: Vec<DimExpr>,
        offset: DimExpr,
        into: Option<usize>,
    ) -> Result<()> {
        let label = self.label(n).to_string();
        if out_ty.rank() > 4 {
            return Err(plan_err(&label, "copies of rank above 4 are not supported"));
        }
        let mut extents: Vec<DimExpr> =
            out_ty.shape.dims().iter().map(|d| self.syms.expr(d, &label)).collect::<Result<_>>()?;
        let mut strides = strides;
        while extents.len() < 4 {
            extents.push(DimExpr::c(1));
            strides.push(DimExpr::c(0));
        }
        let out = match into {
            Some(b) => b,
            None => self.result(n)?,
        };
        let mut dims = extents.clone();
        dims.extend(strides);
        dims.push(offset);
        let spec = KernelSpec::Copy { int: out_ty.dtype.is_int() };
        self.step(n, spec, dims, vec![buf(x), buf(out)], extents[0].clone());
        Ok(())
    }

    fn concat(&mut self, n: NodeId, ops: &[NodeId]) -> Result<()> {
        let label = self.label(n).to_string();
        let node = self.g.node(n).clone();
        let axis = node.attrs.int("axis").unwrap_or(0);
        if axis != 0 {
            return Err(plan_err(&label, "concat of run-time values is supported along axis 0 only"));
        }
        let out = self.result(n)?;
        let mut at = DimExpr::c(0);
        for &o in ops {
            let ot = self.g.node(o).ty.clone();
            let x = self.value(o)?;
            let elems = self.syms.numel(&ot.shape, &label)?;
            let elem = self.buffers[out].elem;
            let piece = self.buffer(&label, elem, elems.clone(), Storage::Alias { of: out, offset_elems: at.clone() });
            let strides = self.strides(&ot, &label)?;
            self.emit_copy(n, x, &ot, strides, DimExpr::c(0), Some(piece))?;
            at = add(&at, &elems);
        }
        Ok(())
    }
}

/// `a · b` where one of them is a constant.
fn mul_const_or(a: &DimExpr, b: &DimExpr, label: &str) -> Result<DimExpr> {
    if a.terms.is_empty() {
        Ok(scale(b, a.constant))
    } else if b.terms.is_empty() {
        Ok(scale(a, b.constant))
    } else {
        Err(plan_err(label, "a stride is a product of two symbolic dims"))
    }
}

fn const_dim(ty: &TensorType, i: usize, label: &str) -> Result<usize> {
    ty.shape
        .dims()
        .get(i)
        .and_then(|d| d.as_const())
        .map(|d| d as usize)
        .ok_or_else(|| plan_err(label, format!("dim {i} of {ty} must be a constant")))
}

fn cast_type(d: DType, label: &str) -> Result<CastType> {
    Ok(match d {
        DType::F32 => CastType::F32,
        DType::F16 => CastType::F16,
        DType::BF16 => CastType::Bf16,
        DType::I32 | DType::I64 | DType::Bool => CastType::I32,
        other => return Err(plan_err(label, format!("casts to or from {other} are not supported"))),
    })
}

/// How an operand of type `o` reaches the `[rows, cols]` result of type `r`.
fn broadcast_of(o: &TensorType, r: &TensorType) -> Option<Broadcast> {
    if o.shape == r.shape {
        return Some(Broadcast::Full);
    }
    if o.shape.numel() == Some(1) {
        return Some(Broadcast::Scalar);
    }
    let od = o.shape.dims();
    let rd = r.shape.dims();
    let one = kiln_ir::Dim::c(1);
    // [cols] (with leading 1s) repeated over rows.
    if od.last() == rd.last() && od[..od.len() - 1].iter().all(|d| *d == one) {
        return Some(Broadcast::Row);
    }
    // [..rows, 1] repeated along each row.
    if od.len() == rd.len() && od.last() == Some(&one) && od[..od.len() - 1] == rd[..rd.len() - 1] {
        return Some(Broadcast::Col);
    }
    None
}

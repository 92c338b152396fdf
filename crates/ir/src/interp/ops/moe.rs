//! The sparsely-gated mixture of experts.

use super::elementwise::{binary, unary};
use super::index::{gather, top_k as top_k_of};
use super::layout::reshape;
use super::matmul::matmul;
use super::norm::softmax;
use super::reduce::reduce;
use super::rows::{expert_gate, nonzero, scatter_rows, take};
use crate::dtype::DType;
use crate::interp::tensor::Tensor;
use crate::op::OpKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    GeluTanh,
    Gelu,
}

impl Activation {
    pub fn parse(s: &str) -> Result<Activation, String> {
        match s {
            "silu" => Ok(Activation::Silu),
            "gelu_tanh" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::Gelu),
            _ => Err(format!("unknown activation '{s}' (expected silu, gelu_tanh or gelu)")),
        }
    }

    /// The elementwise op (and gelu's tanh flag) this activation is.
    pub fn op(self) -> (OpKind, bool) {
        match self {
            Activation::Silu => (OpKind::Silu, false),
            Activation::GeluTanh => (OpKind::Gelu, true),
            Activation::Gelu => (OpKind::Gelu, false),
        }
    }

    pub fn apply_tensor(self, x: &Tensor) -> Result<Tensor, String> {
        let (op, tanh) = self.op();
        unary(op, tanh, x, DType::F32)
    }
}

/// `x[T, D]`, `router[E, D]`, then per expert `gate[F, D]`, `up[F, D]`, `down[D, F]`.
///
/// Computed exactly as `moe-dispatch` spells it out in ops, so the two agree bit for bit:
/// `probs = softmax(x · routerᵀ)`; `idx = top_k(probs)` (ties → lower index); gates = the chosen
/// probabilities (renormalized to sum 1 with `norm_topk`, all 1 when `unweighted`); then for each
/// expert e in order, the tokens that chose it are gathered, run through
/// `down_e(act(gate_e x) ⊙ up_e x)`, scaled by their gate and added into the output rows.
/// Returns the output and, per expert, how many tokens it processed.
pub fn moe(
    x: &Tensor,
    router: &Tensor,
    experts: &[&Tensor],
    top_k: usize,
    norm_topk: bool,
    unweighted: bool,
    act: Activation,
) -> Result<(Tensor, Vec<usize>), String> {
    let [t, d] = x.shape[..] else { return Err(format!("x must be [T, hidden], found shape {:?}", x.shape)) };
    let e = experts.len() / 3;
    if experts.len() != 3 * e || router.shape != [e, d] || top_k == 0 || top_k > e {
        return Err(format!(
            "router {:?} and {} expert weights do not make {e} experts of hidden {d} with top_k {top_k}",
            router.shape,
            experts.len()
        ));
    }
    let f = experts[0].shape.first().copied().unwrap_or(0);
    for (i, w) in experts.iter().enumerate() {
        let want = if i % 3 == 2 { [d, f] } else { [f, d] };
        if w.shape != want {
            let role = ["gate", "up", "down"][i % 3];
            return Err(format!("expert {} {role} weight has shape {:?}, expected {want:?}", i / 3, w.shape));
        }
    }
    let logits = matmul(x, router, None, true)?;
    let probs = softmax(&logits, 1)?;
    let idx = top_k_of(&probs, top_k as i64)?;
    let gates = if unweighted {
        Tensor::f32(&[t, top_k], vec![1.0; t * top_k])
    } else {
        let g = gather(&probs, &idx, 1)?;
        if norm_topk {
            let total = reduce(OpKind::ReduceSum, &g, &[1], true, DType::F32)?;
            binary(OpKind::Div, &g, &total, DType::F32)?
        } else {
            g
        }
    };
    let mut out = Tensor::zeros(&[t, d]);
    let mut counts = Vec::with_capacity(e);
    for ei in 0..e {
        let gate = expert_gate(&idx, &gates, ei as i64)?;
        let rows = nonzero(&gate)?;
        counts.push(rows.numel());
        let xs = take(x, &rows)?;
        let g = matmul(&xs, experts[3 * ei], None, true)?;
        let g = act.apply_tensor(&g)?;
        let u = matmul(&xs, experts[3 * ei + 1], None, true)?;
        let h = binary(OpKind::Mul, &g, &u, DType::F32)?;
        let y = matmul(&h, experts[3 * ei + 2], None, true)?;
        let w = reshape(&take(&gate, &rows)?, vec![rows.numel(), 1])?;
        let y = binary(OpKind::Mul, &y, &w, DType::F32)?;
        out = scatter_rows(&out, &rows, &y, true)?;
    }
    Ok((out, counts))
}

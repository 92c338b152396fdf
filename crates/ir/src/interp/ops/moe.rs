//! The sparsely-gated mixture of experts.

use super::index::top_k_row;
use super::math;
use super::matmul::{dot, matmul_nt_into};
use super::norm::softmax_in_place;
use crate::interp::tensor::Tensor;

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

    pub fn apply(self, x: f32) -> f32 {
        let x = x as f64;
        (match self {
            Activation::Silu => math::silu(x),
            Activation::GeluTanh => math::gelu_tanh(x),
            Activation::Gelu => math::gelu_erf(x),
        }) as f32
    }
}

/// `x[T, D]`, `router[E, D]`, then per expert `gate[F, D]`, `up[F, D]`, `down[D, F]`. For each token:
/// `probs = softmax(x · routerᵀ)`; the `top_k` most probable experts (ties → lower index) with
/// weights their probabilities, renormalized to sum 1 if `norm_topk`;
/// `out = Σ w_e · down_e(act(gate_e x) ⊙ up_e x)`.
pub fn moe(
    x: &Tensor,
    router: &Tensor,
    experts: &[&Tensor],
    top_k: usize,
    norm_topk: bool,
    act: Activation,
) -> Result<Tensor, String> {
    let xv = x.floats("x")?;
    let rv = router.floats("router")?;
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
    let mut ws: Vec<&[f32]> = Vec::with_capacity(experts.len());
    for (i, w) in experts.iter().enumerate() {
        let want = if i % 3 == 2 { [d, f] } else { [f, d] };
        if w.shape != want {
            let role = ["gate", "up", "down"][i % 3];
            return Err(format!("expert {} {role} weight has shape {:?}, expected {want:?}", i / 3, w.shape));
        }
        ws.push(w.floats("expert weight")?);
    }
    let mut out = vec![0f32; t * d];
    let (mut g, mut u, mut y) = (vec![0f32; f], vec![0f32; f], vec![0f32; d]);
    for ti in 0..t {
        let row = &xv[ti * d..(ti + 1) * d];
        let mut probs: Vec<f64> = (0..e).map(|ei| dot(row, &rv[ei * d..(ei + 1) * d])).collect();
        softmax_in_place(&mut probs);
        let chosen = top_k_row(&probs, top_k);
        let total: f64 = chosen.iter().map(|&c| probs[c]).sum();
        let mut acc = vec![0f64; d];
        for &c in &chosen {
            let w = if norm_topk { probs[c] / total } else { probs[c] };
            matmul_nt_into(row, ws[3 * c], None, d, f, &mut g);
            matmul_nt_into(row, ws[3 * c + 1], None, d, f, &mut u);
            let h: Vec<f32> = g.iter().zip(&u).map(|(&a, &b)| act.apply(a) * b).collect();
            matmul_nt_into(&h, ws[3 * c + 2], None, f, d, &mut y);
            for (a, &yi) in acc.iter_mut().zip(&y) {
                *a += w * yi as f64;
            }
        }
        for (o, a) in out[ti * d..(ti + 1) * d].iter_mut().zip(acc) {
            *o = a as f32;
        }
    }
    Ok(Tensor::f32(&x.shape, out))
}

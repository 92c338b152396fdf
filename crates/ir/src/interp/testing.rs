//! Helpers for tests that run graphs: a tiny seeded PRNG and random weights for a graph's params.

use super::error::InterpError;
use super::tensor::Tensor;
use crate::graph::Graph;
use crate::op::OpKind;
use std::collections::HashMap;

/// SplitMix64 (Steele, Lea & Flood 2014): small, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f64() as f32
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` values uniform in [lo, hi).
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// FNV-1a, to derive a per-name seed.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Seeded random values for every `param` of a graph, by name, deterministic per (seed, name) so
/// that two graphs sharing a weight name get the same values. Rank ≥ 2 weights are uniform in
/// ±1/√(last dim) (a linear layer's fan-in); rank ≤ 1 weights (norm scales, biases) uniform in
/// [0.5, 1.5); integer params uniform in 0..4. Params must have constant shapes.
pub fn random_weights(graph: &Graph, seed: u64) -> Result<HashMap<String, Tensor>, InterpError> {
    let mut out = HashMap::new();
    for n in graph.node_ids() {
        let node = graph.node(n);
        if node.op != OpKind::Param {
            continue;
        }
        let name = node.attrs.str("name").unwrap_or_default();
        let shape: Vec<usize> = node
            .ty
            .shape
            .dims()
            .iter()
            .map(|d| d.as_const().and_then(|c| usize::try_from(c).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                InterpError::weight(name, format!("random weights need a constant shape, found {}", node.ty))
            })?;
        let mut rng = SplitMix64::new(seed ^ fnv1a(name));
        let n = shape.iter().product();
        let t = if node.ty.dtype.is_int() || node.ty.dtype == crate::DType::Bool {
            Tensor::i64(&shape, (0..n).map(|_| rng.below(4) as i64).collect())
        } else if shape.len() >= 2 {
            let s = 1.0 / (*shape.last().unwrap() as f32).sqrt();
            Tensor::f32(&shape, rng.vec(n, -s, s))
        } else {
            Tensor::f32(&shape, rng.vec(n, 0.5, 1.5))
        };
        out.insert(name.to_string(), t);
    }
    Ok(out)
}

//! Helpers shared by the tests of graph-rewriting passes: fixtures, random inputs, running a graph
//! through a prefill and a decode step, comparing outputs, and the standard pass check.
#![allow(dead_code)]

use kiln_ir::interp::testing::{random_weights, SplitMix64};
use kiln_ir::interp::{Interpreter, KvCache, Tensor, TensorData};
use kiln_ir::{parse, print, verify, Graph};
use kiln_passes::{Changed, Pass, PassCx};
use std::collections::HashMap;

pub fn fixture(path: &str) -> Graph {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    let g = parse(&src).unwrap_or_else(|e| panic!("{full}: {e}"));
    verify(&g).unwrap();
    g
}

/// Inputs for one step of `t` tokens starting at position `start`: positions count up, other
/// integer inputs are small ids, floats uniform in [-1, 1).
pub fn inputs(g: &Graph, t: usize, start: usize, rng: &mut SplitMix64) -> Vec<(String, Tensor)> {
    g.inputs()
        .iter()
        .map(|&n| {
            let node = g.node(n);
            let name = node.attrs.str("name").unwrap().to_string();
            let shape = node.ty.shape.eval(&|s| (s == "T").then_some(t as i64)).unwrap();
            let len = shape.iter().product();
            let tensor = if node.ty.dtype.is_float() {
                Tensor::f32(&shape, rng.vec(len, -1.0, 1.0))
            } else if name == "positions" {
                Tensor::i64(&shape, (0..len).map(|i| (start + i) as i64).collect())
            } else {
                Tensor::i64(&shape, (0..len).map(|i| (i % 4) as i64).collect())
            };
            (name, tensor)
        })
        .collect()
}

/// Outputs of a prefill of 3 tokens then a decode step of 1, with a fresh KV cache.
pub fn run_steps(g: &Graph, weights: &HashMap<String, Tensor>, seed: u64) -> Vec<HashMap<String, Tensor>> {
    let mut it = Interpreter::new(g, weights).unwrap_or_else(|e| panic!("{e}\n{}", print(g)));
    let mut cache = KvCache::new();
    let mut rng = SplitMix64::new(seed);
    [(3, 0), (1, 3)]
        .iter()
        .map(|&(t, start)| {
            let ins = inputs(g, t, start, &mut rng);
            let refs: Vec<(&str, Tensor)> = ins.iter().map(|(n, x)| (n.as_str(), x.clone())).collect();
            it.run(&refs, &mut cache).unwrap_or_else(|e| panic!("{e}\n{}", print(g)))
        })
        .collect()
}

#[track_caller]
pub fn assert_close(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (name, x) in a {
        let y = &b[name];
        assert_eq!(x.shape, y.shape, "output {name}");
        match (&x.data, &y.data) {
            (TensorData::F32(p), TensorData::F32(q)) => {
                for (k, (u, v)) in p.iter().zip(q).enumerate() {
                    let ok =
                        u == v || (u - v).abs() <= 1e-5 * u.abs().max(v.abs()).max(1e-3) || (u.is_nan() && v.is_nan());
                    assert!(ok, "output {name}, element {k}: {u} vs {v}");
                }
            }
            (p, q) => assert!(p == q, "output {name} differs"),
        }
    }
}

/// Runs `pass`, checks it (verifies, idempotent, same outputs on random weights through a prefill
/// and a decode step), and returns the before/after text for a snapshot.
pub fn check_pass(pass: &dyn Pass, g0: &Graph, expect_change: bool) -> (String, Graph) {
    let mut g = g0.clone();
    let mut cx = PassCx::new();
    let changed = pass.run(&mut g, &mut cx).unwrap();
    assert_eq!(changed == Changed::Yes, expect_change, "{}", print(&g));
    verify(&g).unwrap_or_else(|e| panic!("{e}\n{}", print(&g)));
    // Idempotent.
    let mut again = g.clone();
    assert_eq!(pass.run(&mut again, &mut PassCx::new()).unwrap(), Changed::No);
    assert_eq!(print(&again), print(&g));
    // Same outputs.
    let weights = random_weights(g0, 7).unwrap();
    for (a, b) in run_steps(g0, &weights, 11).iter().zip(&run_steps(&g, &weights, 11)) {
        assert_close(a, b);
    }
    let stats = serde_json::to_string(&cx.stats).unwrap();
    (format!("// stats: {stats}\n// before\n{}// after\n{}", print(g0), print(&g)), g)
}

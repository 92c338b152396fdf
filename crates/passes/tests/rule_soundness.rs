//! Every rule is sound: for each rule, a small graph matching its left-hand side is rewritten with
//! that rule alone, and the reference interpreter gives the same outputs (within 1e-5) before and
//! after, on random inputs and weights for several seeds and token counts. A rule without a case
//! here fails `every_rule_has_a_case`.

use kiln_ir::interp::testing::{random_weights, SplitMix64};
use kiln_ir::interp::{Interpreter, KvCache, Tensor};
use kiln_ir::{Graph, OpKind};
use kiln_passes::egraph::{rules, saturate, EqsatConfig};
use std::collections::BTreeSet;

/// (rule, what the case shows, a graph its left-hand side matches).
const CASES: &[(&str, &str, &str)] = &[
    (
        "rope-fuse-attention",
        "neox, cached, GQA",
        r#"graph @g {
  %0 = input {name = "q"} : f32[T,4,8]
  %1 = input {name = "k"} : f32[T,2,8]
  %2 = input {name = "v"} : f32[T,2,8]
  %3 = input {name = "positions"} : i32[T]
  %4 = rope %0, %3 {layout = neox, theta = 10000.0} : f32[T,4,8]
  %5 = rope %1, %3 {layout = neox, theta = 10000.0} : f32[T,2,8]
  %6 = attention %4, %5, %2, %3 {cache = 0, causal} : f32[T,4,8]
  output %6 {name = "y"}
}"#,
    ),
    (
        "rope-fuse-attention",
        "interleaved, partial rotary, uncached",
        r#"graph @g {
  %0 = input {name = "q"} : f32[T,2,8]
  %1 = input {name = "k"} : f32[T,2,8]
  %2 = input {name = "v"} : f32[T,2,4]
  %3 = input {name = "positions"} : i32[T]
  %4 = rope %0, %3 {dim = 6, layout = interleaved, theta = 300.0} : f32[T,2,8]
  %5 = rope %1, %3 {dim = 6, layout = interleaved, theta = 300.0} : f32[T,2,8]
  %6 = attention %4, %5, %2, %3 {scale = 0.5} : f32[T,2,4]
  output %6 {name = "y"}
}"#,
    ),
    (
        "rope-fuse-attention",
        "llama3 scaling, window, soft-cap",
        r#"graph @g {
  %0 = input {name = "q"} : f32[T,4,8]
  %1 = input {name = "k"} : f32[T,1,8]
  %2 = input {name = "v"} : f32[T,1,8]
  %3 = input {name = "positions"} : i32[T]
  %4 = rope %0, %3 {layout = neox, scaling = llama3{factor = 8.0, high_freq_factor = 4.0, low_freq_factor = 1.0, original_max_position = 16}, theta = 500000.0} : f32[T,4,8]
  %5 = rope %1, %3 {layout = neox, scaling = llama3{factor = 8.0, high_freq_factor = 4.0, low_freq_factor = 1.0, original_max_position = 16}, theta = 500000.0} : f32[T,1,8]
  %6 = attention %4, %5, %2, %3 {cache = 3, causal, softcap = 5.0, window = 2} : f32[T,4,8]
  output %6 {name = "y"}
}"#,
    ),
    (
        "layout-permute-permute",
        "composes to a non-identity",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,3,4]
  %1 = permute %0 {perm = [2, 0, 1]} : f32[4,T,3]
  %2 = permute %1 {perm = [0, 2, 1]} : f32[4,3,T]
  output %2 {name = "y"}
}"#,
    ),
    (
        "layout-permute-identity",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,3,4]
  %1 = exp %0 : f32[T,3,4]
  %2 = permute %1 {perm = [0, 1, 2]} : f32[T,3,4]
  output %2 {name = "y"}
}"#,
    ),
    (
        "layout-reshape-reshape",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,12]
  %1 = reshape %0 {shape = [T,3,4]} : f32[T,3,4]
  %2 = reshape %1 {shape = [T,2,6]} : f32[T,2,6]
  output %2 {name = "y"}
}"#,
    ),
    (
        "layout-reshape-identity",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,3,4]
  %1 = exp %0 : f32[T,3,4]
  %2 = reshape %1 {shape = [T,3,4]} : f32[T,3,4]
  output %2 {name = "y"}
}"#,
    ),
    (
        "algebra-mul-one",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = constant {value = 1.0} : f32[4]
  %2 = mul %0, %1 : f32[T,4]
  output %2 {name = "y"}
}"#,
    ),
    (
        "algebra-one-mul",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = constant {value = 1.0} : f32[]
  %2 = mul %1, %0 : f32[T,4]
  output %2 {name = "y"}
}"#,
    ),
    (
        "algebra-add-zero",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = constant {value = 0.0} : f32[]
  %2 = add %0, %1 : f32[T,4]
  output %2 {name = "y"}
}"#,
    ),
    (
        "algebra-zero-add",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = constant {value = 0.0} : f32[1,4]
  %2 = add %1, %0 : f32[T,4]
  output %2 {name = "y"}
}"#,
    ),
    (
        "algebra-sub-zero",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = constant {value = 0.0} : f32[]
  %2 = sub %0, %1 : f32[T,4]
  output %2 {name = "y"}
}"#,
    ),
    (
        "algebra-div-one",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = constant {value = 1.0} : f32[]
  %2 = div %0, %1 : f32[T,4]
  output %2 {name = "y"}
}"#,
    ),
    (
        "algebra-mul-minus-one",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = constant {value = -1.0} : f32[]
  %2 = mul %0, %1 : f32[T,4]
  output %2 {name = "y"}
}"#,
    ),
    (
        "algebra-mul-minus-one",
        "integers",
        r#"graph @g {
  %0 = input {name = "ids"} : i32[T]
  %1 = constant {value = -1.0} : i32[]
  %2 = mul %0, %1 : i32[T]
  output %2 {name = "y"}
}"#,
    ),
    (
        "algebra-neg-neg",
        "",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = neg %0 : f32[T,4]
  %2 = neg %1 : f32[T,4]
  output %2 {name = "y"}
}"#,
    ),
    (
        "algebra-mul-scalars",
        "a power of two and a broadcast constant",
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = constant {value = 0.5} : f32[4]
  %2 = mul %0, %1 : f32[T,4]
  %3 = constant {value = 3.0} : f32[]
  %4 = mul %2, %3 : f32[T,4]
  output %4 {name = "y"}
}"#,
    ),
    (
        "algebra-mul-scalars",
        "integers",
        r#"graph @g {
  %0 = input {name = "ids"} : i32[T]
  %1 = constant {value = 3.0} : i32[]
  %2 = mul %0, %1 : i32[T]
  %3 = constant {value = -5.0} : i32[]
  %4 = mul %2, %3 : i32[T]
  output %4 {name = "y"}
}"#,
    ),
];

/// Every output, for `t` tokens at positions 4.., on random weights and inputs from `seed`.
fn evaluate(g: &Graph, seed: u64, t: usize) -> Vec<(String, Vec<f32>)> {
    let weights = random_weights(g, seed).unwrap();
    let mut interp = Interpreter::new(g, &weights).unwrap();
    let mut rng = SplitMix64::new(seed);
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for &i in g.inputs() {
        let node = g.node(i);
        let name = node.attrs.str("name").unwrap().to_string();
        let shape = node.ty.shape.eval(&|s| (s == "T").then_some(t as i64)).unwrap();
        let n: usize = shape.iter().product();
        let tensor = if node.ty.dtype.is_float() {
            Tensor::f32(&shape, rng.vec(n, -2.0, 2.0))
        } else if name == "positions" {
            Tensor::i64(&shape, (4..4 + n as i64).collect())
        } else {
            Tensor::i64(&shape, (0..n).map(|_| rng.below(2001) as i64 - 1000).collect())
        };
        inputs.push((name, tensor));
    }
    let refs: Vec<(&str, Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let out = interp.run(&refs, &mut KvCache::new()).unwrap();
    let mut names: Vec<&String> = out.keys().collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), out[n].to_f32_vec())).collect()
}

fn ops(g: &Graph) -> Vec<OpKind> {
    g.topo_order().into_iter().map(|n| g.op(n)).collect()
}

#[test]
fn every_rule_is_sound() {
    for &(name, what, text) in CASES {
        let case = if what.is_empty() { name.to_string() } else { format!("{name} ({what})") };
        let rule = rules::rule(name).unwrap_or_else(|| panic!("{case}: no such rule"));
        let before = kiln_ir::parse(text).unwrap_or_else(|e| panic!("{case}: {e}"));
        kiln_ir::verify(&before).unwrap_or_else(|e| panic!("{case}: {e}"));
        let mut after = before.clone();
        let report = saturate(&mut after, &[rule], &EqsatConfig::default()).unwrap();
        kiln_ir::verify(&after).unwrap_or_else(|e| panic!("{case}: {e}\n{}", kiln_ir::print(&after)));
        assert!(report.applied.get(name).copied().unwrap_or(0) >= 1, "{case}: the rule did not apply");
        assert!(report.changed_regions >= 1, "{case}: the rule applied but extraction kept the left-hand side");
        assert!(report.cost_after < report.cost_before, "{case}: the right-hand side is not cheaper");
        assert_ne!(ops(&after), ops(&before), "{case}");
        for seed in [7, 8, 9] {
            for t in [1, 3] {
                let (a, b) = (evaluate(&before, seed, t), evaluate(&after, seed, t));
                assert_eq!(a.len(), b.len(), "{case}");
                for ((na, va), (nb, vb)) in a.iter().zip(&b) {
                    assert_eq!((na, va.len()), (nb, vb.len()), "{case}");
                    for (i, (x, y)) in va.iter().zip(vb).enumerate() {
                        assert!(
                            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                            "{case}: {na}[{i}] is {x} on the left-hand side, {y} on the right (seed {seed}, T = {t})\n{}",
                            kiln_ir::print(&after)
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn every_rule_has_a_case() {
    let covered: BTreeSet<&str> = CASES.iter().map(|c| c.0).collect();
    let all: BTreeSet<String> = rules::all_rules().iter().map(|r| r.name.to_string()).collect();
    let missing: Vec<&String> = all.iter().filter(|n| !covered.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "rules without a soundness case: {missing:?}");
    for name in covered {
        assert!(all.contains(name), "a case names no rule: {name}");
    }
}

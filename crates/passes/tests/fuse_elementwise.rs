//! `fuse-elementwise`: snapshots of small fixtures and of the model layers, and on every graph:
//! the result verifies, computes the same outputs as before on random weights (through a prefill
//! and a decode step with the KV cache), and a second run changes nothing. Random graphs of
//! elementwise ops check the same properties.

mod support;

use kiln_ir::interp::testing::{random_weights, SplitMix64};
use kiln_ir::op::expr::Expr;
use kiln_ir::{print, verify, Attr, Attrs, DType, Dim, Graph, GraphBuilder, NodeId, OpKind, TensorType};
use kiln_passes::passes::{fuse_elementwise, merge_projections};
use kiln_passes::{Changed, Pass, PassCx, PassOptions};
use proptest::prelude::*;
use support::{assert_close, fixture, run_steps};

fn pass() -> Box<dyn Pass> {
    fuse_elementwise::create(&PassOptions::default()).unwrap()
}

fn check(g0: &Graph, expect_change: bool) -> (String, Graph) {
    support::check_pass(&*pass(), g0, expect_change)
}

fn count(g: &Graph, op: OpKind) -> usize {
    g.node_ids().filter(|&n| g.op(n) == op).count()
}

/// The expressions of the graph's fused nodes, in printed order.
fn exprs(g: &Graph) -> Vec<String> {
    g.topo_order()
        .into_iter()
        .filter(|&n| g.op(n) == OpKind::Fused)
        .map(|n| g.node(n).attrs.str("expr").unwrap().to_string())
        .collect()
}

#[test]
fn swiglu() {
    let (text, g) = check(&fixture("tests/fixtures/fuse_swiglu.kir"), true);
    assert_eq!(exprs(&g), ["mul(silu($0), $1)"]);
    insta::assert_snapshot!("swiglu", text);
}

#[test]
fn group_boundaries() {
    let (text, g) = check(&fixture("tests/fixtures/fuse_cases.kir"), true);
    assert_eq!(
        exprs(&g),
        [
            "neg(add($0, $1))",
            "pow(add(mul(tanh(mul($0, $0)), $1), 0.5), 3.0)",
            "mul(relu($0), $1)",
            "abs(sub($0, 0.10009765625))",
            "maximum(gelu_erf(gelu_tanh($0)), $1)",
            "recip(rsqrt($0))",
        ]
    );
    // The constant 3.0 was only used by the fused pow; 0.5 is still used by the unfused add.
    let consts: Vec<String> = g
        .node_ids()
        .filter(|&n| g.op(n) == OpKind::Constant)
        .map(|n| g.node(n).attrs.get("value").unwrap().to_string())
        .collect();
    assert_eq!(consts.len(), 2, "{consts:?}");
    assert!(!consts.contains(&"3.0".to_string()));
    insta::assert_snapshot!("group_boundaries", text);
}

#[test]
fn llama_decoder_layer() {
    let (text, g) = check(&fixture("../../tests/fixtures/llama_decoder_layer.kir"), true);
    assert_eq!(exprs(&g), ["mul(silu($0), $1)"]);
    insta::assert_snapshot!("llama_decoder_layer", text);
}

#[test]
fn qwen2_decoder_layer() {
    let (text, g) = check(&fixture("../../tests/fixtures/qwen2_decoder_layer.kir"), true);
    assert_eq!(exprs(&g), ["mul(silu($0), $1)"]);
    insta::assert_snapshot!("qwen2_decoder_layer", text);
}

#[test]
fn gemma3_decoder_layers() {
    let (text, g) = check(&fixture("../../tests/fixtures/gemma3_decoder_layers.kir"), true);
    // The GeGLU products; the (1 + w) norm weights and the residual adds are single ops.
    assert_eq!(exprs(&g), ["mul(gelu_tanh($0), $1)", "mul(gelu_tanh($0), $1)"]);
    assert_eq!(count(&g, OpKind::Add), 16);
    insta::assert_snapshot!("gemma3_decoder_layers", text);
}

#[test]
fn mixtral_decoder_layer() {
    // Nothing elementwise to fuse: the residual adds are single ops, the MoE FFN is one op.
    let (text, g) = check(&fixture("../../tests/fixtures/mixtral_decoder_layer.kir"), false);
    assert_eq!(count(&g, OpKind::Moe), 1);
    insta::assert_snapshot!("mixtral_decoder_layer", text);
}

#[test]
fn after_merge_projections() {
    // The split halves of a merged gate/up still fuse.
    let mut g0 = fixture("../../tests/fixtures/llama_decoder_layer.kir");
    let merge = merge_projections::create(&PassOptions::default()).unwrap();
    assert_eq!(merge.run(&mut g0, &mut PassCx::new()).unwrap(), Changed::Yes);
    let (text, g) = check(&g0, true);
    assert_eq!(exprs(&g), ["mul(silu($0), $1)"]);
    let f = g.node_ids().find(|&n| g.op(n) == OpKind::Fused).unwrap();
    assert!(g.operands(f).iter().all(|&o| g.op(o) == OpKind::Split));
    insta::assert_snapshot!("llama_after_merge_projections", text);
}

#[test]
fn options() {
    assert_eq!(pass().name(), "fuse-elementwise");
    assert!(pass().options().is_empty());
    let mut o = PassOptions::default();
    o.0.insert("max-ops".into(), "8".into());
    let e = fuse_elementwise::create(&o).err().unwrap();
    assert_eq!(e, "unknown option 'max-ops' for pass 'fuse-elementwise' (valid options: none)");
}

#[test]
fn flops_of_a_fused_swiglu() {
    let (_, g) = check(&fixture("tests/fixtures/fuse_swiglu.kir"), true);
    let e: Expr = exprs(&g)[0].parse().unwrap();
    assert_eq!(e.flops(), 6);
}

// ---------------------------------------------------------------------------------------------
// Random graphs of elementwise ops over broadcastable values, with scalar constants, values used
// more than once, smaller intermediates and non-elementwise ops in between.

fn random_graph(seed: u64) -> Graph {
    use OpKind::*;
    let mut rng = SplitMix64::new(seed);
    let mut b = GraphBuilder::new("random");
    let t = |dims: &[Dim]| TensorType::new(DType::F32, dims.iter().cloned());
    let shapes = [
        vec![Dim::sym("T"), Dim::c(4)],
        vec![Dim::sym("T"), Dim::c(4)],
        vec![Dim::c(4)],
        vec![Dim::c(1), Dim::c(4)],
        vec![Dim::sym("T"), Dim::c(1)],
        vec![],
    ];
    let mut vals: Vec<NodeId> = Vec::new();
    for i in 0..2 + rng.below(3) {
        let s = &shapes[rng.below(shapes.len() as u64) as usize];
        vals.push(b.input(&format!("x{i}"), t(s)).unwrap());
    }
    if rng.below(2) == 0 {
        vals.push(b.param("p", t(&[Dim::c(4)])).unwrap());
    }
    for v in [0.5, -2.0] {
        if rng.below(2) == 0 {
            vals.push(b.scalar(v, DType::F32).unwrap());
        }
    }
    let unary = [Neg, Abs, Exp, Tanh, Sigmoid, Silu, Relu, Gelu, Sqrt, Recip];
    let binary = [Add, Sub, Mul, Div, Maximum, Minimum];
    for _ in 0..3 + rng.below(10) {
        // Recent values are likelier, to make chains.
        let pick = |rng: &mut SplitMix64, vals: &[NodeId]| {
            let k = vals.len() as u64;
            vals[(k - 1 - rng.below(k).min(rng.below(k))) as usize]
        };
        let x = pick(&mut rng, &vals);
        let r = match rng.below(10) {
            0..=4 => {
                let op = unary[rng.below(unary.len() as u64) as usize];
                let attrs = if op == Gelu {
                    Attrs::new().with("approx", Attr::Ident(if rng.below(2) == 0 { "tanh" } else { "erf" }.into()))
                } else {
                    Attrs::new()
                };
                b.op(op, &[x], attrs).unwrap()
            }
            5..=8 => {
                let y = pick(&mut rng, &vals);
                b.op(binary[rng.below(binary.len() as u64) as usize], &[x, y], Attrs::new()).unwrap()
            }
            _ if b.ty(x).rank() > 0 => b.op(Softmax, &[x], Attrs::new()).unwrap(),
            _ => continue,
        };
        vals.push(r);
    }
    // The last value and a few others are outputs.
    let n = vals.len();
    b.output("y", vals[n - 1]).unwrap();
    for (i, &v) in vals.iter().enumerate().take(n - 1) {
        if rng.below(5) == 0 {
            b.output(&format!("o{i}"), v).unwrap();
        }
    }
    b.finish()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn random_elementwise_graphs(seed in any::<u64>()) {
        let g0 = random_graph(seed);
        let mut g = g0.clone();
        let changed = pass().run(&mut g, &mut PassCx::new()).unwrap();
        verify(&g).unwrap_or_else(|e| panic!("{e}\n{}\n{}", print(&g0), print(&g)));
        let mut again = g.clone();
        prop_assert_eq!(pass().run(&mut again, &mut PassCx::new()).unwrap(), Changed::No, "{}", print(&g));
        if changed == Changed::No {
            prop_assert_eq!(print(&g), print(&g0));
        }
        // No elementwise op computes anything a fused node also computes: every op of the
        // original graph is either still there or inside exactly one fused expression.
        let ops = |g: &Graph| g.node_ids().filter(|&n| g.op(n).is_elementwise()).count();
        let fused_calls: usize = exprs(&g).iter().map(|e| e.parse::<Expr>().unwrap().calls()).sum();
        prop_assert_eq!(ops(&g) + fused_calls, ops(&g0));
        let weights = random_weights(&g0, seed).unwrap();
        for (a, b) in run_steps(&g0, &weights, seed).iter().zip(&run_steps(&g, &weights, seed)) {
            assert_close(a, b);
        }
    }
}

//! `merge-projections`: snapshots of small fixtures and of the model layers, and on every graph:
//! the result verifies, computes the same outputs as before on random weights (through a prefill
//! and a decode step with the KV cache), and a second run changes nothing.

mod support;

use kiln_ir::interp::testing::{random_weights, SplitMix64};
use kiln_ir::{parse, print, verify, Attrs, DType, Dim, Graph, GraphBuilder, NodeId, OpKind, TensorType};
use kiln_passes::passes::merge_projections;
use kiln_passes::{Changed, Pass, PassCx, PassOptions};
use proptest::prelude::*;
use support::{assert_close, fixture, run_steps};

fn pass() -> Box<dyn Pass> {
    merge_projections::create(&PassOptions::default()).unwrap()
}

fn check(g0: &Graph, expect_change: bool) -> (String, Graph) {
    support::check_pass(&*pass(), g0, expect_change)
}

fn count(g: &Graph, op: OpKind) -> usize {
    g.node_ids().filter(|&n| g.op(n) == op).count()
}

#[test]
fn qkv() {
    let (text, g) = check(&fixture("tests/fixtures/merge_qkv.kir"), true);
    assert_eq!(count(&g, OpKind::MatMul), 1);
    assert_eq!(count(&g, OpKind::Split), 3);
    insta::assert_snapshot!("qkv", text);
}

#[test]
fn gate_up() {
    let (text, g) = check(&fixture("tests/fixtures/merge_gate_up.kir"), true);
    assert_eq!(count(&g, OpKind::MatMul), 2);
    insta::assert_snapshot!("gate_up", text);
}

#[test]
fn mixed() {
    let (text, g) = check(&fixture("tests/fixtures/merge_mixed.kir"), true);
    // Groups: biased pair, unbiased pair, non-transposed pair, the pair reading %3; left alone: the
    // computed weight, the computed bias, the other input.
    assert_eq!(count(&g, OpKind::MatMul), 4 + 3);
    assert_eq!(count(&g, OpKind::Concat), 5);
    insta::assert_snapshot!("mixed", text);
}

#[test]
fn llama_decoder_layer() {
    let (text, g) = check(&fixture("../../tests/fixtures/llama_decoder_layer.kir"), true);
    // q/k/v → 1, gate/up → 1, o and down stay.
    assert_eq!(count(&g, OpKind::MatMul), 4);
    insta::assert_snapshot!("llama_decoder_layer", text);
}

#[test]
fn qwen2_decoder_layer_with_biases() {
    let (text, g) = check(&fixture("../../tests/fixtures/qwen2_decoder_layer.kir"), true);
    assert_eq!(count(&g, OpKind::MatMul), 4);
    // The weights and the biases of q/k/v, the weights of gate/up.
    assert_eq!(count(&g, OpKind::Concat), 3);
    insta::assert_snapshot!("qwen2_decoder_layer", text);
}

#[test]
fn gemma3_decoder_layers() {
    let (text, g) = check(&fixture("../../tests/fixtures/gemma3_decoder_layers.kir"), true);
    assert_eq!(count(&g, OpKind::MatMul), 8);
    insta::assert_snapshot!("gemma3_decoder_layers", text);
}

#[test]
fn mixtral_decoder_layer_leaves_moe_alone() {
    let g0 = fixture("../../tests/fixtures/mixtral_decoder_layer.kir");
    let (text, g) = check(&g0, true);
    let moe = |g: &Graph| {
        let m = g.node_ids().find(|&n| g.op(n) == OpKind::Moe).unwrap();
        let names: Vec<String> =
            g.operands(m)[1..].iter().map(|&o| g.node(o).attrs.str("name").unwrap().to_string()).collect();
        (g.node(m).clone(), names)
    };
    assert_eq!(moe(&g), moe(&g0));
    assert_eq!(count(&g, OpKind::MatMul), 2);
    insta::assert_snapshot!("mixtral_decoder_layer", text);
}

#[test]
fn llama_tiny_model() {
    let (text, _) = check(&fixture("../../tests/fixtures/llama_tiny_model.kir"), true);
    insta::assert_snapshot!("llama_tiny_model", text);
}

#[test]
fn nothing_to_merge() {
    // A single projection, and two that read different inputs.
    let src = "graph @g {\n  %0 = input {name = \"x\"} : f32[T,4]\n  %1 = input {name = \"y\"} : f32[T,4]\n  %2 = param {name = \"w\"} : f32[4,4]\n  %3 = matmul %0, %2 {transpose_b} : f32[T,4]\n  %4 = matmul %1, %2 {transpose_b} : f32[T,4]\n  output %3 {name = \"a\"}\n  output %4 {name = \"b\"}\n}\n";
    check(&parse(src).unwrap(), false);
}

#[test]
fn quantized_weights_merge_by_dtype() {
    // q8_0 q and k merge (row-wise concatenation keeps the blocks); the f32 v stays apart.
    let src = r#"graph @g {
  %0 = input {name = "x"} : f32[T,32]
  %1 = param {name = "wq"} : q8_0[8,32]
  %2 = matmul %0, %1 {transpose_b} : f32[T,8]
  %3 = param {name = "wk"} : q8_0[4,32]
  %4 = matmul %0, %3 {transpose_b} : f32[T,4]
  %5 = param {name = "wv"} : f32[4,32]
  %6 = matmul %0, %5 {transpose_b} : f32[T,4]
  output %2 {name = "q"}
  output %4 {name = "k"}
  output %6 {name = "v"}
}
"#;
    let (text, g) = check(&parse(src).unwrap(), true);
    assert_eq!(count(&g, OpKind::MatMul), 2);
    assert!(text.contains("concat %1, %2 {axis = 0} : q8_0[12,32]"), "{text}");
}

#[test]
fn options() {
    assert_eq!(pass().name(), "merge-projections");
    assert!(pass().options().is_empty());
    let mut o = PassOptions::default();
    o.0.insert("min-group".into(), "2".into());
    let e = merge_projections::create(&o).err().unwrap();
    assert_eq!(e, "unknown option 'min-group' for pass 'merge-projections' (valid options: none)");
}

// ---------------------------------------------------------------------------------------------
// Random graphs of projections: shared inputs, param or computed weights and biases, transposed or
// not, projections of projections.

fn random_graph(seed: u64) -> Graph {
    let mut rng = SplitMix64::new(seed);
    let mut b = GraphBuilder::new("random");
    let f32t = |dims: &[i64]| {
        TensorType::new(DType::F32, std::iter::once(Dim::sym("T")).chain(dims.iter().map(|&d| Dim::c(d))))
    };
    let wt = |r: i64, c: i64| TensorType::new(DType::F32, [Dim::c(r), Dim::c(c)]);
    let widths = [2i64, 3, 4];
    // Values [T, width] to project.
    let mut vals: Vec<(NodeId, i64)> = Vec::new();
    for i in 0..1 + rng.below(2) {
        let w = widths[rng.below(3) as usize];
        vals.push((b.input(&format!("x{i}"), f32t(&[w])).unwrap(), w));
    }
    let mut params = 0;
    let mut param = |b: &mut GraphBuilder, ty: TensorType| {
        params += 1;
        b.param(&format!("p{params}"), ty).unwrap()
    };
    let mut outs = Vec::new();
    for _ in 0..2 + rng.below(8) {
        let (x, k) = vals[rng.below(vals.len() as u64) as usize];
        let n = widths[rng.below(3) as usize];
        let tb = rng.below(4) != 0;
        let mut w = param(&mut b, if tb { wt(n, k) } else { wt(k, n) });
        if rng.below(6) == 0 {
            w = b.unary(OpKind::Neg, w).unwrap();
        }
        let mut ops = vec![x, w];
        if rng.below(3) == 0 {
            let mut bias = param(&mut b, TensorType::new(DType::F32, [Dim::c(n)]));
            if rng.below(6) == 0 {
                bias = b.unary(OpKind::Abs, bias).unwrap();
            }
            ops.push(bias);
        }
        let attrs = if tb { Attrs::new().with("transpose_b", kiln_ir::Attr::Bool(true)) } else { Attrs::new() };
        let m = b.op(OpKind::MatMul, &ops, attrs).unwrap();
        vals.push((m, n));
        outs.push(m);
    }
    for (i, &m) in outs.iter().enumerate() {
        b.output(&format!("y{i}"), m).unwrap();
    }
    b.finish()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn random_projections(seed in any::<u64>()) {
        let g0 = random_graph(seed);
        let mut g = g0.clone();
        let changed = pass().run(&mut g, &mut PassCx::new()).unwrap();
        verify(&g).unwrap_or_else(|e| panic!("{e}\n{}", print(&g)));
        let mut again = g.clone();
        prop_assert_eq!(pass().run(&mut again, &mut PassCx::new()).unwrap(), Changed::No, "{}", print(&g));
        if changed == Changed::No {
            prop_assert_eq!(print(&g), print(&g0));
        }
        let weights = random_weights(&g0, seed).unwrap();
        for (a, b) in run_steps(&g0, &weights, seed).iter().zip(&run_steps(&g, &weights, seed)) {
            assert_close(a, b);
        }
    }
}

//! `gqa{groups=N}` and `expand-kv` on synthetic llama, qwen2 (q/k/v biases) and gemma3 (per-head
//! k_norm) models, 4 query heads over 2 key/value heads: snapshots of the rewritten IR, the folded
//! K/V weights against means and repeats computed here from the checkpoint, logits of a prefill and
//! two decode steps (bit-identical where the conversion is exact), and the errors.

mod common;
use common::TempDir;

use kiln_ir::interp::{Interpreter, KvCache, Tensor};
use kiln_ir::{print, verify, Attr, Attrs, Graph, NodeId, OpKind};
use kiln_models::{write_synthetic_model, Arch, Checkpoint, InterpModel, LowerOptions, SynthOptions};
use kiln_passes::manager::run_pipeline;
use kiln_passes::{Instrumentation, PassManager, RunReport};

/// A synthetic checkpoint and its lowered graph.
struct Model {
    _dir: TempDir,
    ckpt: Checkpoint,
    graph: Graph,
}

fn model(opts: SynthOptions, layers: usize) -> Model {
    let dir = TempDir::new("gqa");
    // The graph is named after the model folder: keep it the same in every run for the snapshots.
    let path = dir.0.join(opts.arch.name());
    write_synthetic_model(&opts, &path).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    let graph = ckpt.graph(&LowerOptions { layers: Some(layers), ..Default::default() }).unwrap();
    Model { _dir: dir, ckpt, graph }
}

/// The architecture's defaults: hidden 64, 4 query heads over 2 KV heads.
fn synth(arch: Arch, layers: usize) -> Model {
    model(SynthOptions::defaults(arch), layers)
}

fn run(m: &Model, pipeline: &str) -> (Graph, RunReport) {
    let mut g = m.graph.clone();
    let report = run_pipeline(&mut g, pipeline).unwrap_or_else(|e| panic!("{pipeline}: {e}"));
    verify(&g).unwrap_or_else(|e| panic!("{pipeline}: {e}\n{}", print(&g)));
    (g, report)
}

/// The error a pipeline fails with; the graph must be left exactly as it was.
fn run_err(m: &Model, pipeline: &str) -> String {
    let mut g = m.graph.clone();
    let e = run_pipeline(&mut g, pipeline).err().unwrap_or_else(|| panic!("{pipeline} succeeded")).to_string();
    assert_eq!(print(&g), print(&m.graph), "{pipeline} failed but modified the graph");
    e
}

/// Logits of a 3-token prefill and 2 decode steps, concatenated.
fn logits(m: &Model, g: &Graph) -> Vec<f32> {
    let mut im = InterpModel::with_graph(&m.ckpt, g).unwrap_or_else(|e| panic!("{e}\n{}", print(g)));
    let mut out = im.forward(&[5, 17, 42]).unwrap();
    for t in [7, 300] {
        out.extend(im.forward(&[t]).unwrap());
    }
    out
}

fn assert_finite(xs: &[f32]) {
    assert!(!xs.is_empty());
    assert!(xs.iter().all(|x| x.is_finite()), "non-finite logits");
}

#[track_caller]
fn assert_bit_identical(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "logit {i}: {x} vs {y}");
    }
}

fn count(g: &Graph, op: OpKind) -> usize {
    g.node_ids().filter(|&n| g.op(n) == op).count()
}

fn attentions(g: &Graph) -> Vec<NodeId> {
    g.topo_order().into_iter().filter(|&n| g.op(n) == OpKind::Attention).collect()
}

/// Key/value heads of every attention, in order.
fn kv_heads(g: &Graph) -> Vec<(i64, i64)> {
    attentions(g)
        .iter()
        .map(|&a| {
            let heads = |i: usize| g.ty(g.operands(a)[i]).shape.dim(1).as_const().unwrap();
            (heads(1), heads(2))
        })
        .collect()
}

/// The K (operand 1) or V (operand 2) projection matmul of the first attention.
fn projection(g: &Graph, operand: usize) -> NodeId {
    let mut n = g.operands(attentions(g)[0])[operand];
    while g.op(n) != OpKind::MatMul {
        n = g.operands(n)[0];
    }
    n
}

/// The value the interpreter computes for `n` (a weight-only node), by making it an output.
fn evaluate(m: &Model, g: &Graph, n: NodeId) -> Vec<f32> {
    let mut g = g.clone();
    let ty = g.ty(n).clone();
    g.add_node(OpKind::Output, Attrs::new().with("name", Attr::Str("probe".into())), &[n], ty);
    let mut it = Interpreter::new(&g, &m.ckpt).unwrap();
    let ins = [("tokens", Tensor::i64(&[1], vec![1])), ("positions", Tensor::i64(&[1], vec![0]))];
    let out = it.run(&ins, &mut KvCache::new()).unwrap();
    out["probe"].as_f32().unwrap().to_vec()
}

/// The checkpoint tensor `model.layers.0.self_attn.{name}` as rows of `row` elements.
fn checkpoint_rows(m: &Model, name: &str, row: usize) -> Vec<Vec<f32>> {
    let (_, data) = m.ckpt.tensor_f32(&format!("model.layers.0.self_attn.{name}")).unwrap();
    data.chunks(row).map(<[f32]>::to_vec).collect()
}

/// Head `h` of `rows` (D rows per head, one per output feature), as one flat vector.
fn head(rows: &[Vec<f32>], h: usize, d: usize) -> Vec<f32> {
    rows[h * d..(h + 1) * d].concat()
}

fn mean(heads: &[Vec<f32>]) -> Vec<f32> {
    (0..heads[0].len()).map(|i| (heads.iter().map(|h| h[i] as f64).sum::<f64>() / heads.len() as f64) as f32).collect()
}

/// `rows` (hkv heads of d rows) as `groups` heads: the mean of each run of hkv/groups consecutive
/// heads, written out head by head.
fn pooled(rows: &[Vec<f32>], hkv: usize, groups: usize, d: usize) -> Vec<f32> {
    let r = hkv / groups;
    (0..groups).flat_map(|g| mean(&(g * r..(g + 1) * r).map(|h| head(rows, h, d)).collect::<Vec<_>>())).collect()
}

fn snapshot(report: &RunReport, g: &Graph) -> String {
    let stats = serde_json::to_string(&report.passes.iter().map(|p| &p.stats).collect::<Vec<_>>()).unwrap();
    format!("// stats: {stats}\n{}", print(g))
}

// ---------------------------------------------------------------------------------------------
// llama: the two directions, snapshotted.

#[test]
fn llama_gqa1_pools_kv_heads_into_one() {
    let m = synth(Arch::Llama, 1);
    let (g, report) = run(&m, "gqa{groups=1}");
    assert_eq!(kv_heads(&m.graph), [(2, 2)]);
    assert_eq!(kv_heads(&g), [(1, 1)]);
    let stats = &report.passes[0].stats;
    assert_eq!(stats["attentions"], 1);
    assert_eq!(stats["pooled"], 1);
    assert_eq!(stats["kv-heads-before"], 2);
    assert_eq!(stats["kv-heads-after"], 1);
    // The old projections are gone, not left dead.
    assert_eq!(count(&g, OpKind::MatMul), count(&m.graph, OpKind::MatMul));
    assert_eq!(count(&g, OpKind::ReduceMean), 2);
    insta::assert_snapshot!("llama_gqa1", snapshot(&report, &g));

    // The folded K and V weights are the means of the checkpoint's two heads (D = 16 rows each).
    let d = 16;
    for (operand, name) in [(1, "k_proj.weight"), (2, "v_proj.weight")] {
        let w = evaluate(&m, &g, g.operands(projection(&g, operand))[1]);
        let rows = checkpoint_rows(&m, name, 64);
        assert_eq!(w, pooled(&rows, 2, 1, d), "{name}");
        assert_ne!(w, head(&rows, 0, d), "{name}: pooling must mix the heads");
    }

    let l = logits(&m, &g);
    assert_finite(&l);
    assert_ne!(l, logits(&m, &m.graph), "pooling changes the model");
}

#[test]
fn llama_expand_kv_repeats_heads_exactly() {
    let m = synth(Arch::Llama, 1);
    let (g, report) = run(&m, "expand-kv");
    assert_eq!(kv_heads(&g), [(4, 4)]);
    let stats = &report.passes[0].stats;
    assert_eq!(stats["attentions"], 1);
    assert_eq!(stats["repeated"], 1);
    assert_eq!(stats["kv-heads-before"], 2);
    assert_eq!(stats["kv-heads-after"], 4);
    insta::assert_snapshot!("llama_expand_kv", snapshot(&report, &g));

    // Query heads 0,1 read KV head 0 and 2,3 read head 1: new heads 0,1 are old head 0, 2,3 old 1.
    let d = 16;
    let w = evaluate(&m, &g, g.operands(projection(&g, 1))[1]);
    let rows = checkpoint_rows(&m, "k_proj.weight", 64);
    let (h0, h1) = (head(&rows, 0, d), head(&rows, 1, d));
    assert_eq!(w, [h0.clone(), h0, h1.clone(), h1].concat());

    assert_bit_identical(&logits(&m, &g), &logits(&m, &m.graph));
}

#[test]
fn llama_round_trips_bit_identically() {
    let m = synth(Arch::Llama, 2);
    let base = logits(&m, &m.graph);
    let (g, _) = run(&m, "expand-kv,gqa{groups=2}");
    assert_eq!(kv_heads(&g), [(2, 2), (2, 2)]);
    assert_bit_identical(&logits(&m, &g), &base);
    // gqa{groups=1} then expand-kv is MQA in MHA form: the pooled head, repeated.
    let (mqa, _) = run(&m, "gqa{groups=1}");
    let (mha, _) = run(&m, "gqa{groups=1},expand-kv");
    assert_eq!(kv_heads(&mha), [(4, 4), (4, 4)]);
    assert_bit_identical(&logits(&m, &mha), &logits(&m, &mqa));
}

#[test]
fn mha_pools_consecutive_heads() {
    // 4 KV heads into 2 groups: heads 0,1 → group 0 and 2,3 → group 1 (query heads 0,1 and 2,3).
    let mut o = SynthOptions::defaults(Arch::Llama);
    o.kv_heads = Some(4);
    let m = model(o, 1);
    let (g, _) = run(&m, "gqa{groups=2}");
    assert_eq!(kv_heads(&g), [(2, 2)]);
    let w = evaluate(&m, &g, g.operands(projection(&g, 1))[1]);
    let rows = checkpoint_rows(&m, "k_proj.weight", 64);
    assert_eq!(w, pooled(&rows, 4, 2, 16));
    assert_ne!(
        w,
        [mean(&[head(&rows, 0, 16), head(&rows, 2, 16)]), mean(&[head(&rows, 1, 16), head(&rows, 3, 16)])].concat()
    );
    assert_finite(&logits(&m, &g));
}

#[test]
fn unchanged_head_count_is_no_change() {
    let m = synth(Arch::Llama, 1);
    let (g, report) = run(&m, "gqa{groups=2}");
    assert!(!report.changed());
    assert_eq!(print(&g), print(&m.graph));
    // And both passes are idempotent.
    for p in ["expand-kv", "gqa{groups=1}"] {
        let (once, _) = run(&m, p);
        let mut twice = once.clone();
        let report = run_pipeline(&mut twice, p).unwrap();
        assert!(!report.changed(), "{p}");
        assert_eq!(print(&twice), print(&once), "{p}");
    }
}

// ---------------------------------------------------------------------------------------------
// qwen2 (biases) and gemma3 (k_norm, sliding and global layers).

#[test]
fn qwen2_biases_are_pooled_and_repeated() {
    let m = synth(Arch::Qwen2, 2);
    let base = logits(&m, &m.graph);
    let (g, _) = run(&m, "gqa{groups=1}");
    let d = 16;
    for (operand, name) in [(1, "k_proj.bias"), (2, "v_proj.bias")] {
        let b = evaluate(&m, &g, g.operands(projection(&g, operand))[2]);
        let rows = checkpoint_rows(&m, name, 1);
        assert_eq!(b, pooled(&rows, 2, 1, d), "{name}");
    }
    assert_finite(&logits(&m, &g));

    let (g, _) = run(&m, "expand-kv");
    let b = evaluate(&m, &g, g.operands(projection(&g, 2))[2]);
    let rows = checkpoint_rows(&m, "v_proj.bias", 1);
    let (h0, h1) = (head(&rows, 0, d), head(&rows, 1, d));
    assert_eq!(b, [h0.clone(), h0, h1.clone(), h1].concat());
    assert_bit_identical(&logits(&m, &g), &base);

    let (g, _) = run(&m, "expand-kv,gqa{groups=2}");
    assert_bit_identical(&logits(&m, &g), &base);
}

#[test]
fn gemma3_keeps_its_k_norm() {
    let m = synth(Arch::Gemma3, 2);
    let base = logits(&m, &m.graph);
    let norms = count(&m.graph, OpKind::RmsNorm);
    for (pipeline, heads) in [("expand-kv", 4), ("gqa{groups=1}", 1), ("expand-kv,gqa{groups=2}", 2)] {
        let (g, _) = run(&m, pipeline);
        assert_eq!(kv_heads(&g), [(heads, heads); 2], "{pipeline}");
        assert_eq!(count(&g, OpKind::RmsNorm), norms, "{pipeline}");
        let l = logits(&m, &g);
        assert_finite(&l);
        if heads != 1 {
            assert_bit_identical(&l, &base);
        }
    }
}

#[test]
fn rope_fused_into_attention_by_eqsat() {
    let m = synth(Arch::Llama, 1);
    let (fused, _) = run(&m, "eqsat{rules=rope}");
    assert_eq!(count(&fused, OpKind::Rope), 0);
    let base = logits(&m, &fused);
    let (g, _) = run(&m, "eqsat{rules=rope},expand-kv");
    assert_eq!(kv_heads(&g), [(4, 4)]);
    assert_eq!(count(&g, OpKind::Rope), 0);
    assert_bit_identical(&logits(&m, &g), &base);
    let (g, _) = run(&m, "eqsat{rules=rope},gqa{groups=1}");
    assert_eq!(kv_heads(&g), [(1, 1)]);
    assert_finite(&logits(&m, &g));
}

/// Projections without `transpose_b` (weights `[hidden, heads·D]`, heads along axis 1), biased.
const UNTRANSPOSED: &str = r#"graph @g {
  %0 = input {name = "x"} : f32[T,8]
  %1 = input {name = "positions"} : i32[T]
  %2 = param {name = "wq"} : f32[8,16]
  %3 = matmul %0, %2 : f32[T,16]
  %4 = reshape %3 {shape = [T,4,4]} : f32[T,4,4]
  %5 = param {name = "wk"} : f32[8,8]
  %6 = param {name = "bk"} : f32[8]
  %7 = matmul %0, %5, %6 : f32[T,8]
  %8 = reshape %7 {shape = [T,2,4]} : f32[T,2,4]
  %9 = param {name = "wv"} : f32[8,8]
  %10 = matmul %0, %9 : f32[T,8]
  %11 = reshape %10 {shape = [T,2,4]} : f32[T,2,4]
  %12 = attention %4, %8, %11, %1 {cache = 0, causal} : f32[T,4,4]
  %13 = reshape %12 {shape = [T,16]} : f32[T,16]
  output %13 {name = "y"}
}
"#;

/// Outputs `y` of a 3-token prefill and a decode step on random inputs.
fn run_untransposed(g: &Graph, weights: &std::collections::HashMap<String, Tensor>) -> Vec<f32> {
    let mut it = Interpreter::new(g, weights).unwrap_or_else(|e| panic!("{e}\n{}", print(g)));
    let mut cache = KvCache::new();
    let mut y = Vec::new();
    for (t, start) in [(3usize, 0i64), (1, 3)] {
        let x: Vec<f32> = (0..t * 8).map(|i| ((i as f32 + start as f32) * 0.37).sin()).collect();
        let ins =
            [("x", Tensor::f32(&[t, 8], x)), ("positions", Tensor::i64(&[t], (start..start + t as i64).collect()))];
        y.extend_from_slice(it.run(&ins, &mut cache).unwrap()["y"].as_f32().unwrap());
    }
    y
}

#[test]
fn untransposed_weights_regroup_along_their_columns() {
    let g0 = kiln_ir::parse(UNTRANSPOSED).unwrap();
    let weights = kiln_ir::interp::testing::random_weights(&g0, 7).unwrap();
    let base = run_untransposed(&g0, &weights);
    let convert = |pipeline: &str| {
        let mut g = g0.clone();
        run_pipeline(&mut g, pipeline).unwrap_or_else(|e| panic!("{pipeline}: {e}"));
        g
    };
    let g = convert("expand-kv");
    assert_eq!(kv_heads(&g), [(4, 4)]);
    assert_bit_identical(&run_untransposed(&g, &weights), &base);
    let g = convert("expand-kv,gqa{groups=2}");
    assert_bit_identical(&run_untransposed(&g, &weights), &base);
    // Pooled: the K weight's columns are the mean of the two heads' columns.
    let g = convert("gqa{groups=1}");
    let k = g.operands(projection(&g, 1))[1];
    let mut probe = g.clone();
    probe.add_node(OpKind::Output, Attrs::new().with("name", Attr::Str("wk1".into())), &[k], g.ty(k).clone());
    let x = (("x", Tensor::f32(&[1, 8], vec![0.0; 8])), ("positions", Tensor::i64(&[1], vec![0])));
    let out = Interpreter::new(&probe, &weights).unwrap().run(&[x.0, x.1], &mut KvCache::new()).unwrap();
    let wk = weights["wk"].as_f32().unwrap();
    let want: Vec<f32> = (0..8 * 4)
        .map(|i| ((wk[(i / 4) * 8 + i % 4] as f64 + wk[(i / 4) * 8 + 4 + i % 4] as f64) / 2.0) as f32)
        .collect();
    assert_eq!(out["wk1"].as_f32().unwrap(), &want[..]);
    assert_finite(&run_untransposed(&g, &weights));
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn impossible_group_counts_are_errors_before_any_change() {
    let m = synth(Arch::Llama, 2);
    let e = run_err(&m, "gqa{groups=3}");
    assert!(e.contains("attention %"), "{e}");
    assert!(e.contains("4 query heads and 2 key/value heads"), "{e}");
    assert!(e.contains("3 does not divide the 4 query heads"), "{e}");
    assert!(e.contains("valid group counts: 1, 2, 4"), "{e}");
    let e = run_err(&m, "gqa{groups=8}");
    assert!(e.contains("8 does not divide the 4 query heads"), "{e}");

    // 6 query heads over 2: 3 divides 6 but neither divides nor is a multiple of 2.
    let mut o = SynthOptions::defaults(Arch::Llama);
    (o.heads, o.head_dim) = (Some(6), Some(16));
    let m = model(o, 1);
    let e = run_err(&m, "gqa{groups=3}");
    assert!(e.contains("3 neither divides nor is a multiple of the 2 key/value heads"), "{e}");
    assert!(e.contains("valid group counts: 1, 2, 6"), "{e}");
    let (g, _) = run(&m, "gqa{groups=6}");
    assert_eq!(kv_heads(&g), [(6, 6)]);
}

#[test]
fn bad_options_are_errors_at_construction() {
    let parse = |p: &str| PassManager::parse(p, Instrumentation::default()).err().map(|e| e.to_string());
    let e = parse("gqa").unwrap();
    assert!(e.contains("needs option 'groups'"), "{e}");
    let e = parse("gqa{groups=0}").unwrap();
    assert!(e.contains("option 'groups' of pass 'gqa' must be at least 1"), "{e}");
    let e = parse("gqa{groups=two}").unwrap();
    assert!(e.contains("option 'groups' must be a non-negative integer, found 'two'"), "{e}");
    let e = parse("gqa{groups=2,heads=4}").unwrap();
    assert!(e.contains("unknown option 'heads' for pass 'gqa' (valid options: groups)"), "{e}");
    let e = parse("expand-kv{groups=2}").unwrap();
    assert!(e.contains("unknown option 'groups' for pass 'expand-kv' (valid options: none)"), "{e}");
}

#[test]
fn options_print_back() {
    for p in ["gqa{groups=3}", "expand-kv", "expand-kv,gqa{groups=1}"] {
        assert_eq!(PassManager::parse(p, Instrumentation::default()).unwrap().pipeline(), p);
    }
}

#[test]
fn merged_projections_are_an_error_naming_the_attention() {
    let m = synth(Arch::Llama, 1);
    let (merged, _) = run(&m, "merge-projections");
    let mut g = merged.clone();
    let e = run_pipeline(&mut g, "gqa{groups=1}").err().unwrap().to_string();
    assert_eq!(print(&g), print(&merged));
    assert!(e.contains("attention %"), "{e}");
    assert!(e.contains("= split`"), "{e}");
    assert!(e.contains("run it before merge-projections"), "{e}");
    // Attentions that keep their head count need no chain.
    let (_, report) = run(&Model { graph: merged, ..m }, "gqa{groups=2}");
    assert!(!report.changed());
}

//! `moefy` on a synthetic Llama checkpoint (hidden 64, intermediate 128, 2 layers): with every
//! expert active it computes the dense model (up to summation order); with top-2 it runs and
//! differs; the experts are a balanced partition of the neurons and the router is their mean gate
//! row; `moe-dispatch` after it changes no bit; bad options and graphs are errors that leave the
//! graph alone; and a snapshot of the one-layer IR. The balanced k-means is tested here too.

mod common;
use common::{generate, rel_l2, TempDir};

use kiln_ir::interp::WeightSource;
use kiln_ir::{parse, print, verify, Graph, OpKind};
use kiln_models::{write_synthetic_model, Arch, Checkpoint, LowerOptions, SynthOptions};
use kiln_passes::manager::run_pipeline;
use kiln_passes::passes::moefy::kmeans::{balanced_kmeans, mean_distance, random_partition, KMeansOptions};
use kiln_passes::{Instrumentation, PassCx, PassManager, RunReport};

/// Synthetic llama's intermediate size, and the expert count used throughout (32 neurons each).
const INTERMEDIATE: usize = 128;
const HIDDEN: usize = 64;
const EXPERTS: usize = 4;

fn checkpoint(tag: &str, arch: Arch) -> (TempDir, Checkpoint) {
    let dir = TempDir::new(tag);
    write_synthetic_model(&SynthOptions::defaults(arch), &dir.model()).unwrap();
    let ckpt = Checkpoint::open(&dir.model()).unwrap();
    assert_eq!(ckpt.spec.intermediate_size, INTERMEDIATE);
    assert_eq!(ckpt.spec.hidden_size, HIDDEN);
    (dir, ckpt)
}

fn llama(tag: &str) -> (TempDir, Checkpoint) {
    checkpoint(tag, Arch::Llama)
}

/// Runs a pipeline with the checkpoint's weights.
fn run_with(ckpt: &Checkpoint, g: &mut Graph, pipeline: &str) -> Result<RunReport, String> {
    let pm = PassManager::parse(pipeline, Instrumentation::default()).map_err(|e| e.to_string())?;
    pm.run_with_weights(g, Some(ckpt as &dyn WeightSource), &mut std::io::sink()).map_err(|e| e.to_string())
}

fn moefied(ckpt: &Checkpoint, g0: &Graph, pipeline: &str) -> (Graph, RunReport) {
    let mut g = g0.clone();
    let report = run_with(ckpt, &mut g, pipeline).unwrap();
    verify(&g).unwrap();
    (g, report)
}

fn count(g: &Graph, op: OpKind) -> usize {
    g.node_ids().filter(|&n| g.op(n) == op).count()
}

fn neurons(report: &RunReport, layer: usize, expert: usize) -> Vec<i64> {
    let name = format!("model.layers.{layer}.mlp.moefy.experts.{expert}.neurons");
    let t = report.derived.get(&name).unwrap_or_else(|| panic!("no derived {name}"));
    assert_eq!(t.shape, [INTERMEDIATE / EXPERTS]);
    t.as_i64().unwrap().to_vec()
}

#[test]
fn all_experts_active_is_the_dense_model() {
    let (_dir, ckpt) = llama("dense");
    let g0 = ckpt.graph(&LowerOptions::default()).unwrap();
    let (g, report) = moefied(&ckpt, &g0, &format!("moefy{{experts={EXPERTS},top-k={EXPERTS}}}"));
    assert_eq!(count(&g, OpKind::Moe), 2);
    let (want, want_tokens) = generate(&ckpt, &g0, &Default::default(), None);
    let (got, got_tokens) = generate(&ckpt, &g, &report.derived, None);
    // Greedy decoding picks the same tokens, and every step's logits agree.
    assert_eq!(want_tokens, got_tokens);
    for (step, (a, b)) in want.iter().zip(&got).enumerate() {
        let err = rel_l2(a, b);
        assert!(err <= 1e-5, "step {step}: relative L2 {err:e}");
    }
}

#[test]
fn top_2_runs_and_differs() {
    let (_dir, ckpt) = llama("top2");
    let g0 = ckpt.graph(&LowerOptions::default()).unwrap();
    let (g, report) = moefied(&ckpt, &g0, &format!("moefy{{experts={EXPERTS},top-k=2}}"));
    let moe = g.node_ids().find(|&n| g.op(n) == OpKind::Moe).unwrap();
    let attrs = &g.node(moe).attrs;
    assert_eq!((attrs.int("experts"), attrs.int("top_k")), (Some(EXPERTS as i64), Some(2)));
    assert!(attrs.flag("unweighted") && attrs.ident("activation") == Some("silu"));
    let (want, tokens) = generate(&ckpt, &g0, &Default::default(), None);
    let (got, _) = generate(&ckpt, &g, &report.derived, Some(&tokens));
    for (step, (a, b)) in want.iter().zip(&got).enumerate() {
        assert!(b.iter().all(|x| x.is_finite()), "step {step}: non-finite logits");
        let err = rel_l2(a, b);
        assert!(err > 1e-4, "step {step}: half the neurons dropped yet relative L2 is only {err:e}");
    }
    let stats = &report.passes[0].stats;
    assert_eq!(stats["layers"], 2);
    assert_eq!(stats["experts"], EXPERTS);
    assert_eq!(stats["top-k"], 2);
    let (d, random) = (stats["mean-distance"].as_f64().unwrap(), stats["random-partition-distance"].as_f64().unwrap());
    assert!(d < random, "clustering ({d}) no better than a random split ({random})");
}

#[test]
fn experts_partition_the_neurons_and_the_router_is_their_mean_gate_row() {
    let (_dir, ckpt) = llama("balanced");
    let g0 = ckpt.graph(&LowerOptions::default()).unwrap();
    let pipeline = format!("moefy{{experts={EXPERTS},top-k=2}}");
    let (_, report) = moefied(&ckpt, &g0, &pipeline);
    for layer in 0..2 {
        let mut all: Vec<i64> = (0..EXPERTS).flat_map(|e| neurons(&report, layer, e)).collect();
        for e in 0..EXPERTS {
            let n = neurons(&report, layer, e);
            assert!(n.windows(2).all(|w| w[0] < w[1]), "layer {layer} expert {e}: {n:?} not ascending");
        }
        all.sort();
        assert_eq!(all, (0..INTERMEDIATE as i64).collect::<Vec<_>>(), "layer {layer}: not a partition");
        let (_, gate) = ckpt.tensor_f32(&format!("model.layers.{layer}.mlp.gate_proj.weight")).unwrap();
        let router = &report.derived[&format!("model.layers.{layer}.mlp.moefy.router.weight")];
        assert_eq!(router.shape, [EXPERTS, HIDDEN]);
        let router = router.as_f32().unwrap();
        for e in 0..EXPERTS {
            let n = neurons(&report, layer, e);
            for j in 0..HIDDEN {
                let mean = n.iter().map(|&i| gate[i as usize * HIDDEN + j] as f64).sum::<f64>() / n.len() as f64;
                assert!((router[e * HIDDEN + j] as f64 - mean).abs() < 1e-6, "layer {layer} expert {e} dim {j}");
            }
        }
    }
    // The same model gives the same experts.
    let (_, again) = moefied(&ckpt, &g0, &pipeline);
    assert_eq!(report.derived, again.derived);
}

#[test]
fn moe_dispatch_after_moefy_changes_no_bit() {
    let (_dir, ckpt) = llama("dispatch");
    let g0 = ckpt.graph(&LowerOptions::default()).unwrap();
    let pipeline = format!("moefy{{experts={EXPERTS},top-k=2}}");
    let (g1, r1) = moefied(&ckpt, &g0, &pipeline);
    let (g2, r2) = moefied(&ckpt, &g0, &format!("{pipeline},moe-dispatch"));
    assert_eq!(count(&g2, OpKind::Moe), 0);
    assert_eq!(count(&g2, OpKind::Nonzero), 2 * EXPERTS);
    let (want, tokens) = generate(&ckpt, &g1, &r1.derived, None);
    let (got, _) = generate(&ckpt, &g2, &r2.derived, Some(&tokens));
    for (step, (a, b)) in want.iter().zip(&got).enumerate() {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "step {step}: {:e}", rel_l2(a, b));
    }
}

/// Runs a failing pipeline and checks the message and that the graph is as it was.
#[track_caller]
fn fails(ckpt: Option<&Checkpoint>, g0: &Graph, pipeline: &str, needle: &str) {
    let mut g = g0.clone();
    let err = match ckpt {
        Some(c) => run_with(c, &mut g, pipeline).err(),
        None => run_pipeline(&mut g, pipeline).err().map(|e| e.to_string()),
    };
    let err = err.unwrap_or_else(|| panic!("{pipeline} succeeded"));
    assert!(err.contains(needle), "{pipeline}: {err}");
    assert!(g.same_as(g0), "{pipeline} changed the graph before failing");
}

#[test]
fn errors_leave_the_graph_alone() {
    let (_dir, ckpt) = llama("errors");
    let g0 = ckpt.graph(&LowerOptions::default()).unwrap();
    fails(Some(&ckpt), &g0, "moefy{experts=4,top-k=5}", "option 'top-k' must be in 1..=4");
    fails(Some(&ckpt), &g0, "moefy{experts=0}", "option 'experts' must be at least 1");
    fails(Some(&ckpt), &g0, "moefy{experts=3,top-k=1}", "intermediate size 128 is not divisible by 3 experts");
    // Bare IR, without the model's weights.
    fails(None, &g0, "moefy{experts=4}", "needs the model's weights");
    // Merged projections no longer read the gate_proj params directly.
    let mut merged = g0.clone();
    run_pipeline(&mut merged, "merge-projections").unwrap();
    fails(Some(&ckpt), &merged, "moefy{experts=4}", "run moefy before merge-projections");
}

#[test]
fn a_model_without_dense_mlps_is_an_error() {
    let (_dir, ckpt) = checkpoint("mixtral", Arch::Mixtral);
    let g0 = ckpt.graph(&LowerOptions::default()).unwrap();
    fails(Some(&ckpt), &g0, "moefy{experts=4}", "found no dense gated MLPs");
}

#[test]
fn ffn_biases_are_an_error() {
    let g = parse(
        r#"graph @biased {
  %0 = input {name = "x"} : f32[T,4]
  %1 = param {name = "model.layers.0.mlp.gate_proj.weight"} : f32[8,4]
  %2 = param {name = "model.layers.0.mlp.gate_proj.bias"} : f32[8]
  %3 = matmul %0, %1, %2 {transpose_b} : f32[T,8]
  %4 = silu %3 : f32[T,8]
  %5 = param {name = "model.layers.0.mlp.up_proj.weight"} : f32[8,4]
  %6 = matmul %0, %5 {transpose_b} : f32[T,8]
  %7 = mul %4, %6 : f32[T,8]
  %8 = param {name = "model.layers.0.mlp.down_proj.weight"} : f32[4,8]
  %9 = matmul %7, %8 {transpose_b} : f32[T,4]
  output %9 {name = "y"}
}"#,
    )
    .unwrap();
    let pass = kiln_passes::registry::create("moefy", &Default::default()).unwrap();
    let mut g2 = g.clone();
    let err = pass.run(&mut g2, &mut PassCx::new()).unwrap_err().to_string();
    assert!(err.contains("layer 0") && err.contains("has a bias"), "{err}");
    assert!(g2.same_as(&g));
}

#[test]
fn one_layer_snapshot() {
    let (_dir, ckpt) = llama("snapshot");
    let g0 = ckpt.graph(&LowerOptions { layers: Some(1), ..LowerOptions::default() }).unwrap();
    let (g, report) = moefied(&ckpt, &g0, &format!("moefy{{experts={EXPERTS},top-k=2}}"));
    assert_eq!(report.derived.len(), 1 + EXPERTS);
    insta::assert_snapshot!("llama_one_layer", print(&g));
}

/// Points in `groups` well-separated clusters of `size` each (on the coordinate axes, jittered),
/// shuffled.
fn clustered_points(groups: usize, size: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = kiln_ir::interp::testing::SplitMix64::new(seed);
    let mut points = Vec::new();
    for i in 0..groups * size {
        let group = (i * 7919) % groups;
        let jitter = rng.vec(dim, -0.2, 0.2);
        points.extend(jitter.iter().enumerate().map(|(j, &x)| x + if j == group % dim { 5.0 } else { 0.0 }));
    }
    points
}

#[test]
fn kmeans_beats_a_random_split_and_is_balanced() {
    let (groups, size, dim) = (6, 10, 8);
    let points = clustered_points(groups, size, dim, 3);
    let c = balanced_kmeans(&points, dim, groups, KMeansOptions::default()).unwrap();
    for e in 0..groups {
        assert_eq!(c.assignment.iter().filter(|&&a| a == e).count(), size, "cluster {e}");
    }
    assert_eq!(mean_distance(&points, dim, &c.assignment, groups).unwrap(), c.mean_distance);
    let random = random_partition(groups * size, groups, 1).unwrap();
    let r = mean_distance(&points, dim, &random, groups).unwrap();
    assert!(c.mean_distance < 0.5 * r, "k-means {} vs random {r}", c.mean_distance);
    // Deterministic: the same points and options give the same clusters.
    assert_eq!(balanced_kmeans(&points, dim, groups, KMeansOptions::default()).unwrap(), c);
}

#[test]
fn kmeans_on_real_ffn_rows_beats_a_random_split() {
    let (_dir, ckpt) = llama("kmeans");
    let (_, gate) = ckpt.tensor_f32("model.layers.0.mlp.gate_proj.weight").unwrap();
    let c = balanced_kmeans(&gate, HIDDEN, EXPERTS, KMeansOptions::default()).unwrap();
    let random = random_partition(INTERMEDIATE, EXPERTS, 5).unwrap();
    let r = mean_distance(&gate, HIDDEN, &random, EXPERTS).unwrap();
    assert!(c.mean_distance < r, "k-means {} vs random {r}", c.mean_distance);
}

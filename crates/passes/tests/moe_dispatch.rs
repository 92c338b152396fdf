//! `moe-dispatch` on a synthetic Mixtral checkpoint: the lowered graph gives bit-identical logits to
//! the dense `moe` op through a prefill and decode steps, no `moe` op is left, `-O2` still applies
//! afterwards, and a snapshot of the one-layer IR.

mod common;
use common::{generate, rel_l2, TempDir};

use kiln_ir::{print, verify, Graph, OpKind};
use kiln_models::{write_synthetic_model, Arch, Checkpoint, LowerOptions, SynthOptions};
use kiln_passes::manager::run_pipeline;

fn mixtral(tag: &str) -> (TempDir, Checkpoint) {
    let dir = TempDir::new(tag);
    write_synthetic_model(&SynthOptions::defaults(Arch::Mixtral), &dir.model()).unwrap();
    let ckpt = Checkpoint::open(&dir.model()).unwrap();
    (dir, ckpt)
}

fn count(g: &Graph, op: OpKind) -> usize {
    g.node_ids().filter(|&n| g.op(n) == op).count()
}

fn dispatched(g: &Graph) -> Graph {
    let mut g = g.clone();
    let report = run_pipeline(&mut g, "moe-dispatch").unwrap();
    assert!(report.passes[0].changed);
    verify(&g).unwrap();
    g
}

#[test]
fn bit_identical_to_the_moe_op_through_prefill_and_decode() {
    let (_dir, ckpt) = mixtral("bits");
    let g0 = ckpt.graph(&LowerOptions::default()).unwrap();
    assert_eq!(count(&g0, OpKind::Moe), 2);
    let g = dispatched(&g0);
    assert_eq!(count(&g, OpKind::Moe), 0);
    // 8 experts in each of 2 layers, each dispatched on its own.
    assert_eq!(count(&g, OpKind::Nonzero), 16);
    assert_eq!(count(&g, OpKind::ScatterRows), 16);
    let (want, tokens) = generate(&ckpt, &g0, &Default::default(), None);
    let (got, _) = generate(&ckpt, &g, &Default::default(), Some(&tokens));
    for (step, (a, b)) in want.iter().zip(&got).enumerate() {
        let same = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "step {step}: logits differ (relative L2 {:e})", rel_l2(a, b));
    }
}

#[test]
fn o2_after_dispatch_verifies_and_matches() {
    let (_dir, ckpt) = mixtral("o2");
    let g0 = ckpt.graph(&LowerOptions::default()).unwrap();
    let mut g = dispatched(&g0);
    run_pipeline(&mut g, "-O2").unwrap();
    verify(&g).unwrap();
    assert_eq!(count(&g, OpKind::Moe), 0);
    let (want, tokens) = generate(&ckpt, &g0, &Default::default(), None);
    let (got, _) = generate(&ckpt, &g, &Default::default(), Some(&tokens));
    for (step, (a, b)) in want.iter().zip(&got).enumerate() {
        let err = rel_l2(a, b);
        assert!(err <= 1e-5, "step {step}: relative L2 {err:e}");
    }
}

#[test]
fn one_layer_snapshot() {
    let (_dir, ckpt) = mixtral("snapshot");
    let g0 = ckpt.graph(&LowerOptions { layers: Some(1), ..LowerOptions::default() }).unwrap();
    let g = dispatched(&g0);
    // A second run finds nothing left to lower.
    let mut again = g.clone();
    assert!(!run_pipeline(&mut again, "moe-dispatch").unwrap().passes[0].changed);
    insta::assert_snapshot!("mixtral_one_layer", print(&g));
}

#[test]
fn dims_are_named_after_the_layer() {
    let (_dir, ckpt) = mixtral("dims");
    let g = dispatched(&ckpt.graph(&LowerOptions::default()).unwrap());
    let dims: Vec<&str> =
        g.node_ids().filter(|&n| g.op(n) == OpKind::Nonzero).filter_map(|n| g.node(n).attrs.str("dim")).collect();
    for name in ["n0e0", "n0e7", "n1e0", "n1e7"] {
        assert!(dims.contains(&name), "{name} not among {dims:?}");
    }
}

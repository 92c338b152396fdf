//! `gqa` and `expand-kv` on SmolLM2-135M (9 query heads over 3 key/value heads, 30 layers): going
//! to MHA and back is bit-exact through prefill and decode, MQA runs, and a group count that does
//! not divide the query heads is an error that leaves the graph alone.

mod support;

use kiln_ir::{print, Graph, OpKind};
use kiln_models::{Checkpoint, InterpModel, LowerOptions};
use kiln_passes::manager::run_pipeline;

/// A short prompt (token ids of ordinary English text in SmolLM2's vocabulary).
const PROMPT: [u32; 4] = [504, 3575, 282, 4649];

fn converted(ckpt: &Checkpoint, pipeline: &str) -> Graph {
    let mut g = ckpt.graph(&LowerOptions::default()).unwrap();
    run_pipeline(&mut g, pipeline).unwrap_or_else(|e| panic!("{pipeline}: {e}"));
    g
}

/// Logits of a prefill of the prompt and 2 greedy decode steps, concatenated.
fn logits(ckpt: &Checkpoint, g: &Graph) -> Vec<f32> {
    let mut m = InterpModel::with_graph(ckpt, g).unwrap();
    let mut step = m.forward(&PROMPT).unwrap();
    let mut all = step.clone();
    for _ in 0..2 {
        step = m.forward(&[support::argmax(&step) as u32]).unwrap();
        all.extend_from_slice(&step);
    }
    all
}

/// Key/value heads of every attention.
fn kv_heads(g: &Graph) -> Vec<i64> {
    g.node_ids()
        .filter(|&n| g.op(n) == OpKind::Attention)
        .map(|n| g.ty(g.operands(n)[1]).shape.dim(1).as_const().unwrap())
        .collect()
}

#[test]
fn expand_kv_then_gqa3_is_bit_identical_on_smollm2() {
    let Some(dir) = support::smollm2_dir() else { return };
    let ckpt = Checkpoint::open(&dir).unwrap();
    let expanded = converted(&ckpt, "expand-kv");
    assert_eq!(kv_heads(&expanded), [9; 30]);
    let back = converted(&ckpt, "expand-kv,gqa{groups=3}");
    assert_eq!(kv_heads(&back), [3; 30]);
    let base = logits(&ckpt, &ckpt.graph(&LowerOptions::default()).unwrap());
    let got = logits(&ckpt, &back);
    assert_eq!(got.len(), base.len());
    for (i, (a, b)) in got.iter().zip(&base).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "logit {i}: {a} vs {b}");
    }
}

#[test]
fn gqa1_runs_on_smollm2() {
    let Some(dir) = support::smollm2_dir() else { return };
    let ckpt = Checkpoint::open(&dir).unwrap();
    let g = converted(&ckpt, "gqa{groups=1}");
    assert_eq!(kv_heads(&g), [1; 30]);
    let l = logits(&ckpt, &g);
    assert_eq!(l.len(), 3 * ckpt.spec.vocab_size);
    assert!(l.iter().all(|x| x.is_finite()), "non-finite logits after gqa{{groups=1}}");
}

#[test]
fn gqa2_is_an_error_on_smollm2() {
    let Some(dir) = support::smollm2_dir() else { return };
    let ckpt = Checkpoint::open(&dir).unwrap();
    let g0 = ckpt.graph(&LowerOptions::default()).unwrap();
    let mut g = g0.clone();
    let e = run_pipeline(&mut g, "gqa{groups=2}").expect_err("2 groups over 9 query heads").to_string();
    assert!(e.contains("9 query heads and 3 key/value heads"), "{e}");
    assert!(e.contains("2 does not divide the 9 query heads"), "{e}");
    assert!(e.contains("valid group counts: 1, 3, 9"), "{e}");
    assert_eq!(print(&g), print(&g0), "the failed pass changed the graph");
}

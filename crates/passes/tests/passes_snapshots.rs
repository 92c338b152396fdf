//! Each pass on its fixture (`tests/fixtures/<pass>.kir`): an insta snapshot of the IR before and
//! after, and semantic preservation — every fixture here and in the workspace's `tests/fixtures`
//! evaluates to bit-identical outputs with the reference interpreter before and after each pass and
//! each level, on random weights and inputs.
//!
//! Re-bless with `INSTA_UPDATE=always cargo test -p kiln-passes --test passes_snapshots` (or
//! `cargo insta review`).

use kiln_ir::interp::testing::{random_weights, SplitMix64};
use kiln_ir::interp::{Interpreter, KvCache, Tensor, TensorData};
use kiln_ir::{Graph, OpKind};
use kiln_passes::manager::run_pipeline;
use kiln_passes::{registry, PassCx, PassOptions, Pipeline};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> Graph {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let g = kiln_ir::parse(&text).unwrap_or_else(|e| panic!("{}:{e}", path.display()));
    kiln_ir::verify(&g).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    g
}

/// Runs one registered pass (default options) and checks the result verifies.
fn run_pass(name: &str, g: &mut Graph) -> bool {
    let pass = registry::create(name, &PassOptions::default()).unwrap();
    let changed = pass.run(g, &mut PassCx::new()).unwrap().changed();
    kiln_ir::verify(g).unwrap_or_else(|e| panic!("{name}: {e}\n{}", kiln_ir::print(g)));
    changed
}

/// The pass's fixture, before and after, as one snapshot.
fn snapshot(pass: &str) {
    let file = format!("{}.kir", pass.replace('-', "_"));
    let before = read(&crate_dir().join("tests/fixtures").join(&file));
    let mut after = before.clone();
    assert!(run_pass(pass, &mut after), "{pass} changes its fixture");
    let mut again = after.clone();
    assert!(!run_pass(pass, &mut again), "{pass} is idempotent on its fixture");
    let before_and_after = format!(
        "// before ({} nodes)\n{}\n// after {pass} ({} nodes)\n{}",
        before.len(),
        kiln_ir::print(&before),
        after.len(),
        kiln_ir::print(&after)
    );
    insta::assert_snapshot!(pass, before_and_after);
}

#[test]
fn dce_snapshot() {
    snapshot("dce");
}

#[test]
fn cse_snapshot() {
    snapshot("cse");
}

#[test]
fn canonicalize_snapshot() {
    snapshot("canonicalize");
}

#[test]
fn const_fold_snapshot() {
    snapshot("const-fold");
}

#[test]
fn o1_on_the_canonicalize_fixture() {
    let mut g = read(&crate_dir().join("tests/fixtures/canonicalize.kir"));
    run_pipeline(&mut g, "-O1").unwrap();
    insta::assert_snapshot!("o1_canonicalize", kiln_ir::print(&g));
}

// ---- semantic preservation ----

const T: usize = 3;

/// Random inputs: floats uniform in [-1, 1), integers 0, 1, 2, ... (valid positions and token ids).
fn inputs(g: &Graph, seed: u64) -> Vec<(String, Tensor)> {
    let mut rng = SplitMix64::new(seed);
    g.inputs()
        .iter()
        .map(|&n| {
            let node = g.node(n);
            let shape = node.ty.shape.eval(&|s| (s == "T").then_some(T as i64)).unwrap();
            let k: usize = shape.iter().product();
            let t = if node.ty.dtype.is_float() {
                Tensor::f32(&shape, rng.vec(k, -1.0, 1.0))
            } else {
                Tensor::i64(&shape, (0..k as i64).map(|i| i % T as i64).collect())
            };
            (node.attrs.str("name").unwrap().to_string(), t)
        })
        .collect()
}

fn eval(g: &Graph, weights: &HashMap<String, Tensor>, inputs: &[(String, Tensor)]) -> HashMap<String, Tensor> {
    let mut interp = Interpreter::new(g, weights).unwrap_or_else(|e| panic!("{e}\n{}", kiln_ir::print(g)));
    let args: Vec<(&str, Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    interp.run(&args, &mut KvCache::new()).unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    match &t.data {
        TensorData::F32(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x as u64).collect(),
    }
}

fn fixtures() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in [crate_dir().join("tests/fixtures"), crate_dir().join("../../tests/fixtures")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "kir") {
                v.push(p);
            }
        }
    }
    v.sort();
    assert!(v.len() >= 9, "fixtures: {v:?}");
    v
}

/// Every fixture gives the same outputs (to the bit) after each of these pipelines.
#[test]
fn passes_preserve_semantics() {
    let pipelines = ["canonicalize", "cse", "dce", "const-fold", "-O1", "canonicalize,const-fold,cse,dce"];
    for path in fixtures() {
        let g = read(&path);
        let weights = random_weights(&g, 7).unwrap();
        let ins = inputs(&g, 11);
        let want = eval(&g, &weights, &ins);
        for p in pipelines {
            let mut h = g.clone();
            run_pipeline(&mut h, p).unwrap_or_else(|e| panic!("{}: {p}: {e}", path.display()));
            let got = eval(&h, &weights, &ins);
            assert_eq!(got.len(), want.len());
            for (name, w) in &want {
                let o = &got[name];
                assert_eq!(o.shape, w.shape, "{}: {p}: output {name}", path.display());
                assert!(bits(o) == bits(w), "{}: {p}: output {name} differs: {o:?} vs {w:?}", path.display());
            }
        }
    }
}

/// The pipelines shrink what they should and leave the interface alone.
#[test]
fn o1_keeps_the_interface() {
    for path in fixtures() {
        let g = read(&path);
        let mut h = g.clone();
        run_pipeline(&mut h, "-O1").unwrap();
        assert!(h.len() <= g.len(), "{}", path.display());
        let names = |g: &Graph, op: OpKind| -> Vec<String> {
            let mut v: Vec<String> = g
                .node_ids()
                .filter(|&n| g.op(n) == op)
                .map(|n| g.node(n).attrs.str("name").unwrap().to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&g, OpKind::Input), names(&h, OpKind::Input));
        assert_eq!(names(&g, OpKind::Output), names(&h, OpKind::Output));
        // -O1 is a fixed point.
        let mut k = h.clone();
        let report = run_pipeline(&mut k, &Pipeline::level("-O1").unwrap().to_string()).unwrap();
        assert!(!report.changed(), "{}: -O1 twice changed the graph", path.display());
    }
}

/// `-O2` (with the e-graph and fusion passes) keeps every fixture's outputs within float rounding:
/// its rewrites may reassociate, so this compares by relative L2 error instead of bits.
#[test]
fn o2_preserves_semantics_within_rounding() {
    for path in fixtures() {
        let g = read(&path);
        let weights = random_weights(&g, 5).unwrap();
        let ins = inputs(&g, 13);
        let want = eval(&g, &weights, &ins);
        let mut h = g.clone();
        run_pipeline(&mut h, "-O2").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = eval(&h, &weights, &ins);
        for (name, w) in &want {
            let (a, b) = (got[name].to_f32_vec(), w.to_f32_vec());
            assert_eq!(got[name].shape, w.shape, "{}: output {name}", path.display());
            let num: f64 = a.iter().zip(&b).map(|(x, y)| ((*x - *y) as f64).powi(2)).sum();
            let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
            let rel = (num / den.max(1e-30)).sqrt();
            assert!(rel < 1e-5, "{}: -O2 changed output {name} by {rel:e} (relative L2)", path.display());
        }
    }
}

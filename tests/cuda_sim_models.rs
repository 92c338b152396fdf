//! Whole models through the CUDA kernels without a GPU: `kiln compile --target cuda-sim` builds
//! the GPU kernels of the plan (launch geometry, warp/block decomposition, shuffles, shared memory,
//! tensor-core prefill, the GPU's inline math) for the host's SIMT simulator, and `kiln logits` of
//! that artifact must match the CPU artifact's — llama, gemma3 and mixtral, the routing kernels of MoE
//! dispatch, prefill of at least 16 tokens (the tensor-core path for bf16), split-K attention
//! across blocks, and decode steps.

mod support;

use serde_json::Value;
use std::path::Path;
use support::cli::{kiln, ok};
use support::TempDir;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn logits(art: &Path) -> Value {
    let ids = "5,9,14,33,2,71,100,8,64,3,250,17,41,6,90,12,77,1";
    let (out, _) = ok(kiln(&["logits", s(art), "--ids", ids, "--decode", "2", "--threads", "1"]));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn simulated_cuda_artifacts_match_the_cpu() {
    let t = TempDir::new("cuda-sim");
    let tiny = [
        "--layers",
        "2",
        "--hidden",
        "64",
        "--intermediate",
        "128",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--vocab",
        "272",
    ];
    let cases: &[(&str, &[&str], &str)] =
        &[("llama", &[], "bf16"), ("gemma3", &[], "f32"), ("mixtral", &["--experts", "4", "--top-k", "2"], "f32")];
    for (arch, extra, weights) in cases {
        let m = t.join(&format!("{arch}-m"));
        if !m.exists() {
            ok(kiln(&[&["gen-model", "--arch", arch, "--seed", "2", "-o", s(&m)][..], &tiny[..], extra].concat()));
        }
        let cpu = t.join(&format!("{arch}-{weights}.cpu"));
        let sim = t.join(&format!("{arch}-{weights}.sim"));
        ok(kiln(&["compile", s(&m), "-o", s(&cpu), "--weights", weights]));
        ok(kiln(&["compile", s(&m), "-o", s(&sim), "--weights", weights, "--target", "cuda-sim"]));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(sim.join("manifest.json")).unwrap()).unwrap();
        assert!(
            v["kernels"].as_array().unwrap().iter().all(|k| k["launch"].is_object()),
            "{arch}: kernels without launch"
        );
        let (a, b) = (logits(&sim), logits(&cpu));
        assert_eq!(a["tokens"], b["tokens"], "{arch} {weights}: greedy tokens differ");
        let (ra, rb) = (support::logits_rows(&a), support::logits_rows(&b));
        assert_eq!(ra.len(), rb.len(), "{arch} {weights}: rows");
        for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
            let e = support::rel_l2(x, y);
            assert!(e < 1e-5, "{arch} {weights} at position {}: relative L2 {e:.2e}", a["rows"][i]["position"]);
        }
    }
}

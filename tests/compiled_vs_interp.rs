//! Compiled artifacts against the reference interpreter: logits of a prefill and of decode steps
//! agree (≤1e-4 relative L2 with f32 weights), for every synthetic architecture at -O0 and -O2.

mod support;

use kiln_codegen::kernels::WeightFormat;
use kiln_ir::interp::Overlay;
use kiln_models::{Arch, Checkpoint, InterpModel, LowerOptions, SynthOptions};
use kiln_passes::{Instrumentation, PassManager};
use kiln_runtime::cpu::CpuModel;
use support::{rel_l2, TempDir, TestArtifact};

/// Compiles `dir` with `pipeline` and `format`; returns the artifact path.
fn build(
    t: &TempDir,
    dir: &std::path::Path,
    pipeline: &str,
    format: WeightFormat,
    int8_prefill: bool,
    tag: &str,
) -> (std::path::PathBuf, InterpModel) {
    let ckpt = Checkpoint::open(dir).unwrap();
    let mut g = ckpt.graph(&LowerOptions::default()).unwrap();
    let pm = PassManager::parse(pipeline, Instrumentation::default()).unwrap();
    let report = pm.run_with_weights(&mut g, Some(&ckpt), &mut std::io::sink()).unwrap();
    // The reference sees every weight matrix as the artifact stores it (quantized and back), so
    // what is compared is the kernels and the plan, not quantization error.
    let mut seen = report.derived.clone();
    for n in g.node_ids() {
        let node = g.node(n);
        let name = node.attrs.str("name").unwrap_or_default();
        if node.op != kiln_ir::OpKind::Param || node.ty.rank() != 2 || seen.contains_key(name) {
            continue;
        }
        let (shape, data) = ckpt.tensor_f32(name).unwrap();
        if shape[1] % format.block() == 0 {
            let packed = kiln_codegen::pack::pack(format, shape[0], shape[1], &data).unwrap();
            let back = kiln_codegen::pack::unpack(format, shape[0], shape[1], &packed).unwrap();
            seen.insert(name.to_string(), std::sync::Arc::new(kiln_ir::Tensor::f32(&shape, back)));
        }
    }
    let reference = InterpModel::with_derived(&ckpt, &g, &seen).unwrap();
    let out = t.join(&format!("{tag}.kiln"));
    let weights = Overlay { derived: &report.derived, base: &ckpt };
    let spec = TestArtifact { format, pipeline, max_tokens: 128, max_context: 256, int8_prefill };
    support::compile_for_test(&g, &weights, ckpt.spec.vocab_size, &spec, &out);
    (out, reference)
}

fn check(arch: Arch, pipeline: &str, format: WeightFormat, tol: f64) {
    check_with(arch, pipeline, format, false, tol);
}

/// Returns the largest relative L2 error seen.
fn check_with(arch: Arch, pipeline: &str, format: WeightFormat, int8_prefill: bool, tol: f64) -> f64 {
    let t = TempDir::new("compiled");
    let dir = t.join("m");
    kiln_models::write_synthetic_model(&SynthOptions::defaults(arch), &dir).unwrap();
    check_dir(&t, &dir, &format!("{arch:?}"), pipeline, (format, int8_prefill), tol, 4)
}

fn check_dir(
    t: &TempDir,
    dir: &std::path::Path,
    arch: &str,
    pipeline: &str,
    (format, int8_prefill): (WeightFormat, bool),
    tol: f64,
    steps: usize,
) -> f64 {
    let mut worst = 0.0f64;
    let (art, mut reference) = build(t, dir, pipeline, format, int8_prefill, "a");
    for threads in [1, 2] {
        let mut model = CpuModel::load(&art, threads).unwrap();
        reference.reset();
        let prompt: Vec<u32> = (0..14).map(|i| (i * 37 + 5) % 300).collect();
        let want = reference.forward(&prompt).unwrap();
        let got = model.forward(&prompt).unwrap();
        let e = rel_l2(&got, &want);
        assert!(e <= tol, "{arch} {pipeline} {format:?} threads {threads}: prefill rel L2 {e}");
        worst = worst.max(e);
        let mut tok = support::argmax(&want) as u32;
        for step in 0..steps {
            let want = reference.forward(&[tok]).unwrap();
            let got = model.forward(&[tok]).unwrap();
            let e = rel_l2(&got, &want);
            assert!(e <= tol, "{arch} {pipeline} {format:?} threads {threads}: decode step {step} rel L2 {e}");
            worst = worst.max(e);
            tok = support::argmax(&want) as u32;
        }
    }
    worst
}

#[test]
fn llama_o0_f32() {
    check(Arch::Llama, "canonicalize", WeightFormat::F32, 1e-4);
}

const O2: &str =
    "canonicalize,cse,const-fold,eqsat{rules=rope+layout+algebra},merge-projections,fuse-elementwise,cse,dce";

#[test]
fn every_architecture_at_o0_and_o2() {
    for arch in [Arch::Llama, Arch::Mistral, Arch::Qwen2, Arch::Gemma3] {
        check(arch, "canonicalize", WeightFormat::F32, 1e-4);
        check(arch, O2, WeightFormat::F32, 1e-4);
    }
    check(Arch::Mixtral, "moe-dispatch", WeightFormat::F32, 1e-4);
    check(Arch::Mixtral, &format!("{O2},moe-dispatch"), WeightFormat::F32, 1e-4);
}

/// Reduced-precision artifacts against the interpreter running the same rounded weights: the
/// kernels dequantize exactly, so only f32 accumulation order differs.
#[test]
fn reduced_precision_weights_match_their_dequantized_model() {
    for format in [WeightFormat::Bf16, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0] {
        check(Arch::Llama, O2, format, 1e-4);
        check(Arch::Qwen2, "canonicalize", format, 1e-4);
    }
}

/// With int8-activation prefill (`matmul_i8`, the default for Q8_0/Q4_0 on AVX512-VNNI CPUs),
/// against the same dequantized model: the activations' rounding to 8 bits per block is the only
/// extra error. Stated tolerance: 4e-2 relative L2 on these random-weight models (measured
/// 0.9–1.9e-2, printed; on SmolLM2 it adds ~1e-3 to the weights' own error, see below). On CPUs
/// without VNNI the artifact is the exact one and meets it trivially.
#[test]
fn int8_prefill_error_is_bounded() {
    for format in [WeightFormat::Q8_0, WeightFormat::Q4_0] {
        for (arch, pipeline) in [(Arch::Llama, O2), (Arch::Qwen2, "canonicalize")] {
            let e = check_with(arch, pipeline, format, true, 4e-2);
            eprintln!("{arch:?} {format:?} int8 prefill: worst rel L2 {e:.2e}");
        }
    }
}

/// And against the f32 model, the quantization error on SmolLM2's real weights: stated tolerances
/// for the logits' relative L2 (the f32 artifact matches to 1e-4 above).
#[test]
fn smollm2_reduced_precision_error_is_bounded() {
    let Some(dir) = support::smollm2_dir() else { return };
    let t = TempDir::new("compiled-smollm2-q");
    let prompt: Vec<u32> = (0..11).map(|i| (i * 37 + 5) % 300).collect();
    let logits = |format: WeightFormat, int8_prefill: bool| {
        let ckpt = Checkpoint::open(&dir).unwrap();
        let g = ckpt.graph(&LowerOptions::default()).unwrap();
        let out = t.join(&format!("{}.kiln", format.name()));
        let spec = TestArtifact { format, pipeline: "", max_tokens: 16, max_context: 32, int8_prefill };
        support::compile_for_test(&g, &ckpt, ckpt.spec.vocab_size, &spec, &out);
        CpuModel::load(&out, 2).unwrap().forward(&prompt).unwrap()
    };
    let exact = logits(WeightFormat::F32, false);
    for (format, int8, tol) in [
        (WeightFormat::Bf16, false, 0.005),
        (WeightFormat::F16, false, 0.002),
        (WeightFormat::Q8_0, false, 0.02),
        (WeightFormat::Q8_0, true, 0.03),
        (WeightFormat::Q4_0, false, 0.2),
        (WeightFormat::Q4_0, true, 0.2),
    ] {
        let e = rel_l2(&logits(format, int8), &exact);
        let what = if int8 { "with int8 prefill" } else { "" };
        assert!(e <= tol, "{format:?} {what}: logits differ from f32 weights by {e} relative L2 (tolerance {tol})");
        eprintln!("{format:?} {what}: {e:.4}");
    }
}

#[test]
fn architecture_rewrites_compile() {
    check(Arch::Llama, "gqa{groups=1}", WeightFormat::F32, 1e-4);
    check(Arch::Llama, &format!("expand-kv,{O2}"), WeightFormat::F32, 1e-4);
    check(Arch::Llama, "moefy{experts=4,top-k=2},moe-dispatch", WeightFormat::F32, 1e-4);
}

#[test]
fn smollm2_matches_the_interpreter() {
    let Some(dir) = support::smollm2_dir() else { return };
    let t = TempDir::new("compiled-smollm2");
    check_dir(&t, &dir, "smollm2", "canonicalize", (WeightFormat::F32, false), 1e-4, 2);
    check_dir(&t, &dir, "smollm2", O2, (WeightFormat::F32, false), 1e-4, 2);
}

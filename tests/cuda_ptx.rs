//! The CUDA target without a GPU: every PTX module Kiln emits must assemble with NVIDIA's `ptxas`
//! for sm_80 and sm_90 — every kernel family with its variants (weight formats, RoPE styles,
//! masks, odd sizes), and whole models of every architecture through `kiln compile --target cuda`;
//! CUDA artifacts carry their launch geometry, and a machine without a driver gets a clear error.
//!
//! `ptxas` comes from `make ptxas` (scripts/fetch-ptxas.sh, the PyPI wheel nvidia-cuda-nvcc-cu12):
//! `$KILN_PTXAS`, else `.cache/ptxas/ptxas`, else `ptxas` on the PATH.

mod support;

use kiln_codegen::kernels::gpu::{compile_ptx, Arity};
use kiln_codegen::kernels::{Broadcast, CastType, KernelSpec, ReduceOp, RopeParams, WeightFormat};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::cli::{fails_with, kiln, ok};
use support::TempDir;

fn ptxas() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_PTXAS").map(PathBuf::from).filter(|p| p.is_file()) {
        return p;
    }
    let cached = support::workspace_root().join(".cache/ptxas/ptxas");
    if cached.is_file() {
        return cached;
    }
    if Command::new("ptxas").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return PathBuf::from("ptxas");
    }
    panic!("ptxas not found: run `make ptxas` (or scripts/fetch-ptxas.sh), or set KILN_PTXAS");
}

/// Assembles `ptx` for `sm_{sm}`; panics with ptxas's message (and `what`) when it refuses.
fn assemble(ptx_file: &Path, sm: u32, what: &str) {
    let out = Command::new(ptxas())
        .arg(format!("-arch=sm_{sm}"))
        .arg(ptx_file)
        .args(["-o", "/dev/null"])
        .output()
        .expect("running ptxas");
    assert!(
        out.status.success(),
        "{what}: ptxas -arch=sm_{sm} refused {}:\n{}",
        ptx_file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rope(interleaved: bool, rotary: usize, mscale: f32) -> RopeParams {
    let inv_freq = (0..rotary / 2).map(|i| 10000f32.powf(-2.0 * i as f32 / rotary as f32)).collect();
    RopeParams { interleaved, rotary, inv_freq, mscale }
}

/// Every kernel family, with the variants that take different code paths on the GPU.
fn all_specs() -> Vec<(KernelSpec, Arity)> {
    let a = |dims, bufs| Arity { dims, bufs };
    let mut v = Vec::new();
    for format in [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0] {
        v.push((KernelSpec::Matmul { format, n: 96, k: 320, bias: true, cols_per_task: 16, interleave: 0 }, a(1, 4)));
        v.push((KernelSpec::Embedding { format, vocab: 50, dim: 64, interleave: 0 }, a(1, 3)));
    }
    // K not a multiple of 8 (a scalar tail), odd N, no bias.
    v.push((
        KernelSpec::Matmul { format: WeightFormat::Bf16, n: 33, k: 100, bias: false, cols_per_task: 16, interleave: 0 },
        a(1, 4),
    ));
    let exprs = [
        "add(mul($0, $1), $2)",
        "mul(silu($0), $1)",
        "gelu_tanh($0)",
        "gelu_erf($0)",
        "div(pow($0, 2), add(log(abs($1)), 1))",
        "maximum(relu($0), minimum(tanh($1), sigmoid($2)))",
        "rsqrt(add(exp(neg($0)), recip(sqrt($1))))",
    ];
    for e in exprs {
        let operands = vec![Broadcast::Full, Broadcast::Row, Broadcast::Col];
        v.push((KernelSpec::Elementwise { expr: e.into(), operands, cols: 70 }, a(1, 4)));
    }
    let scalar = vec![Broadcast::Full, Broadcast::Scalar, Broadcast::Full];
    v.push((KernelSpec::Elementwise { expr: "mul(add($0, $1), $2)".into(), operands: scalar, cols: 64 }, a(1, 4)));
    v.push((KernelSpec::RmsNorm { cols: 100, eps: 1e-6, weight: true }, a(1, 3)));
    v.push((KernelSpec::RmsNorm { cols: 64, eps: 1e-5, weight: false }, a(1, 3)));
    v.push((KernelSpec::LayerNorm { cols: 100, eps: 1e-5, weight: true, bias: true }, a(1, 4)));
    v.push((KernelSpec::Softmax { cols: 37 }, a(1, 2)));
    for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
        v.push((KernelSpec::Reduce { op, cols: 45 }, a(1, 2)));
    }
    v.push((KernelSpec::Rope { heads: 4, head_dim: 64, rope: rope(false, 64, 1.0) }, a(1, 3)));
    v.push((KernelSpec::Rope { heads: 2, head_dim: 80, rope: rope(true, 32, 1.2) }, a(1, 3)));
    v.push((KernelSpec::KvAppend { kv_heads: 2, head_dim: 64, rope: Some(rope(false, 64, 1.0)) }, a(2, 6)));
    v.push((KernelSpec::KvAppend { kv_heads: 1, head_dim: 80, rope: Some(rope(true, 40, 1.1)) }, a(2, 6)));
    v.push((KernelSpec::KvAppend { kv_heads: 3, head_dim: 32, rope: None }, a(2, 6)));
    let attention = |head_dim, causal, window, softcap, rope| KernelSpec::Attention {
        heads: 6,
        kv_heads: 2,
        head_dim,
        scale: 0.125,
        causal,
        window,
        softcap,
        rope,
    };
    v.push((attention(64, true, None, None, Some(rope(false, 64, 1.0))), a(2, 6)));
    v.push((attention(80, true, Some(16), Some(50.0), Some(rope(true, 32, 1.0))), a(2, 6)));
    v.push((attention(128, false, None, None, None), a(2, 6)));
    v.push((attention(16, false, Some(8), None, None), a(2, 6)));
    v.push((KernelSpec::Copy { int: false }, a(9, 2)));
    v.push((KernelSpec::Copy { int: true }, a(9, 2)));
    v.push((KernelSpec::TopK { cols: 8, k: 2 }, a(1, 2)));
    v.push((KernelSpec::GatherCols { cols: 8, k: 2 }, a(1, 3)));
    v.push((KernelSpec::Take { row_len: 64, int: false }, a(1, 3)));
    v.push((KernelSpec::Take { row_len: 2, int: true }, a(1, 3)));
    v.push((KernelSpec::ScatterRows { row_len: 64, add: true, int: false }, a(2, 4)));
    v.push((KernelSpec::ScatterRows { row_len: 1, add: false, int: true }, a(2, 4)));
    v.push((KernelSpec::Nonzero, a(1, 3)));
    v.push((KernelSpec::ExpertGate { k: 2, expert: 3 }, a(1, 3)));
    v.push((KernelSpec::ModSelect { capacity: 0.5, threshold: None }, a(1, 2)));
    v.push((KernelSpec::ModSelect { capacity: 0.25, threshold: Some(0.1) }, a(1, 2)));
    v.push((KernelSpec::Fill { value: -1.0, int: true }, a(1, 1)));
    v.push((KernelSpec::Cast { from: CastType::F32, to: CastType::Bf16 }, a(1, 2)));
    v.push((KernelSpec::Cast { from: CastType::F32, to: CastType::I32 }, a(1, 2)));
    v.push((KernelSpec::Cast { from: CastType::I32, to: CastType::F32 }, a(1, 2)));
    v
}

#[test]
fn every_kernel_family_assembles_for_sm80_and_sm90() {
    let t = TempDir::new("ptx-kernels");
    let specs = all_specs();
    let kernels: Vec<(String, KernelSpec, Arity)> =
        specs.iter().enumerate().map(|(i, (s, a))| (format!("k{i}_{}", s.kind()), s.clone(), *a)).collect();
    for sm in [80, 90] {
        let target = kiln_codegen::nvptx_target(sm).unwrap();
        let (ptx, launches) = compile_ptx(&kernels, &target).unwrap();
        assert_eq!(launches.len(), kernels.len());
        for ((name, spec, _), l) in kernels.iter().zip(&launches) {
            assert!(ptx.contains(&format!(".entry {name}(")), "{name} is not a kernel entry");
            assert!(l.block >= 32 && l.block <= 1024 && l.tasks_per_block >= 1, "{name}: {l:?}");
            // A block's tasks are the threads of one task each or whole warps/blocks.
            assert!(l.tasks_per_block == 1 || l.tasks_per_block == l.block, "{}: {l:?}", spec.kind());
        }
        // No libm, no calls the driver would have to resolve.
        assert!(!ptx.contains(".extern .func"), "PTX calls an external function");
        let file = t.join(&format!("all.sm{sm}.ptx"));
        std::fs::write(&file, &ptx).unwrap();
        assemble(&file, sm, "every kernel family");
    }
}

#[test]
fn a_bad_kernel_call_is_a_codegen_error_not_bad_ptx() {
    // A matmul called with 3 buffers instead of 4.
    let spec =
        KernelSpec::Matmul { format: WeightFormat::F32, n: 8, k: 8, bias: false, cols_per_task: 16, interleave: 0 };
    let target = kiln_codegen::nvptx_target(80).unwrap();
    let err = compile_ptx(&[("mm".into(), spec, Arity { dims: 1, bufs: 3 })], &target).unwrap_err();
    assert!(err.to_string().contains("mm"), "{err}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whole models of every architecture and weight format compile to PTX that assembles, with a
/// manifest a CUDA runtime can launch from.
#[test]
fn every_architecture_compiles_for_cuda() {
    let t = TempDir::new("ptx-models");
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("llama", &["f32", "bf16", "f16", "q8_0", "q4_0"], &[]),
        ("llama", &["f32"], &["-O0"]),
        ("mistral", &["bf16"], &[]),
        ("qwen2", &["f32", "q8_0"], &[]),
        ("gemma3", &["bf16"], &[]),
        ("mixtral", &["f32", "q4_0"], &[]),
    ];
    for (arch, formats, extra) in cases {
        let m = t.join(arch);
        if !m.exists() {
            ok(kiln(&["gen-model", "--arch", arch, "--seed", "5", "-o", s(&m)]));
        }
        for w in *formats {
            for sm in [80, 90] {
                let art = t.join(&format!("{arch}.{w}.{sm}{}.kiln", extra.join("")));
                let target = format!("cuda:sm_{sm}");
                let args =
                    [&["compile", s(&m), "-o", s(&art), "--weights", w, "--target", &target][..], extra].concat();
                let (_, err) = ok(kiln(&args));
                assert!(err.contains("compiled"), "{err}");
                assert!(!art.join("kernels.so").exists(), "a CUDA artifact has no kernels.so");
                let v: Value =
                    serde_json::from_str(&std::fs::read_to_string(art.join("manifest.json")).unwrap()).unwrap();
                assert_eq!(v["target"]["triple"], "nvptx64-nvidia-cuda");
                assert_eq!(v["target"]["cpu"], format!("sm_{sm}"));
                assert!(v["files"].as_array().unwrap().iter().any(|f| f["path"] == "kernels.ptx"));
                for k in v["kernels"].as_array().unwrap() {
                    assert!(k["launch"]["block"].as_u64().is_some_and(|b| (32..=1024).contains(&b)), "{k}");
                }
                assemble(&art.join("kernels.ptx"), sm, &format!("{arch} {w} sm_{sm}"));
            }
        }
    }
}

#[test]
fn cuda_artifacts_fail_cleanly_without_a_gpu() {
    let t = TempDir::new("ptx-nogpu");
    let m = t.join("m");
    ok(kiln(&["gen-model", "--arch", "llama", "--seed", "1", "-o", s(&m)]));
    let art = t.join("a.kiln");
    ok(kiln(&["compile", s(&m), "-o", s(&art), "--target", "cuda:sm_80"]));
    // `kiln targets` says which GPUs can run it here.
    let (text, _) = ok(kiln(&["targets"]));
    assert!(text.contains("nvptx") && text.lines().any(|l| l.starts_with("gpu ")), "{text}");
    let (json, _) = ok(kiln(&["targets", "--json"]));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert!(v["cuda"].is_object(), "{v}");
    if kiln_runtime::cuda_driver_present() {
        return; // A machine with a driver runs it instead (bench/gpu/device.sh checks the results).
    }
    assert!(text.contains("gpu     none: no CUDA driver"), "{text}");
    fails_with(kiln(&["run", s(&art), "--prompt", "hi"]), &["CUDA", "driver"]);
    fails_with(kiln(&["bench", s(&art), "--gen", "2", "--prompt-len", "2"]), &["CUDA", "driver"]);
    fails_with(kiln(&["logits", s(&art), "--ids", "1,2"]), &["CUDA", "driver"]);
    // Offloading is a CPU feature.
    fails_with(kiln(&["run", s(&art), "--prompt", "hi", "--expert-cache", "2"]), &["CPU", "CUDA"]);
    // The CPU runtime refuses it by name.
    let err = kiln_runtime::cpu::CpuModel::load(&art, 1).err().expect("refused").to_string();
    assert!(err.contains("CUDA") && err.contains("sm_80"), "{err}");
    fails_with(
        kiln(&["compile", s(&m), "-o", s(&t.join("b")), "--target", "cuda:sm_75"]),
        &["--target", "sm_80", "sm_90"],
    );
}

#[test]
fn logits_of_a_cpu_artifact_match_the_interpreter() {
    let t = TempDir::new("logits");
    let m = t.join("m");
    ok(kiln(&["gen-model", "--arch", "qwen2", "--seed", "4", "-o", s(&m)]));
    let art = t.join("a.kiln");
    ok(kiln(&["compile", s(&m), "-o", s(&art), "-O0"]));
    let run = |args: &[&str]| -> Value {
        let (out, _) = ok(kiln(&[&["logits"][..], args, &["--ids", "3,1,4,1,5", "--decode", "3"]].concat()));
        serde_json::from_str(&out).unwrap()
    };
    let (a, b) = (run(&[s(&art)]), run(&[s(&m), "--interp"]));
    assert_eq!(a["tokens"], b["tokens"], "greedy choices differ");
    let (ra, rb) = (support::logits_rows(&a), support::logits_rows(&b));
    assert_eq!(ra.len(), 4);
    for (x, y) in ra.iter().zip(&rb) {
        let e = support::rel_l2(x, y);
        assert!(e < 1e-4, "relative L2 {e}");
    }
    assert_eq!(a["rows"][0]["position"], 4);
    assert_eq!(a["rows"][3]["position"], 7);
}

//! `kiln compile`, `kiln run ARTIFACT` and `kiln bench` end to end, and the artifact checks: a
//! missing, corrupt or mismatched artifact is refused before anything runs, and a failed compile
//! leaves nothing behind.

mod support;

use serde_json::Value;
use std::path::Path;
use support::cli::{fails_with, kiln, ok};
use support::TempDir;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn edit_manifest(art: &Path, f: impl FnOnce(&mut Value)) {
    let p = art.join("manifest.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn compile_run_and_bench_a_synthetic_model() {
    let t = TempDir::new("compile");
    let m = t.join("m");
    ok(kiln(&["gen-model", "--arch", "qwen2", "--seed", "3", "-o", s(&m)]));
    let art = t.join("q.kiln");
    let (_, err) = ok(kiln(&["compile", s(&m), "-o", s(&art), "--weights", "q8_0"]));
    assert!(err.contains("compiled") && err.contains("q8_0"), "{err}");
    for f in ["manifest.json", "kernels.so", "weights.safetensors", "tokenizer.json"] {
        assert!(art.join(f).is_file(), "{f} missing");
    }
    // Greedy text from the artifact equals the interpreter's on the same -O2 graph (q8_0 weights
    // are close enough for a short greedy run on this model; f32 is checked to 1e-4 elsewhere).
    let prompt = ["--prompt", "the quick brown fox", "--max-tokens", "8"];
    let (compiled, _) = ok(kiln(&[&["run", s(&art)][..], &prompt[..]].concat()));
    assert!(!compiled.trim().is_empty());
    let f32_art = t.join("f.kiln");
    ok(kiln(&["compile", s(&m), "-o", s(&f32_art)]));
    let (a, _) = ok(kiln(&[&["run", s(&f32_art)][..], &prompt[..]].concat()));
    let (b, _) = ok(kiln(&[&["run", s(&m), "--interp", "-O2"][..], &prompt[..]].concat()));
    assert_eq!(a, b, "compiled f32 and interpreted greedy text differ");
    // Weights copied onto huge pages run the same kernels on the same bytes.
    let (c, _) = ok(kiln(&[&["run", s(&f32_art), "--huge-pages"][..], &prompt[..]].concat()));
    assert_eq!(a, c, "--huge-pages changed the greedy text");
    fails_with(
        kiln(&["run", s(&f32_art), "--huge-pages", "--expert-cache", "2", "--prompt", "x"]),
        &["--huge-pages", "offloading"],
    );

    let (out, _) = ok(kiln(&["bench", s(&f32_art), "--prompt-len", "16", "--gen", "8", "--repeat", "1", "--json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    for k in ["prefill_tok_per_s", "decode_tok_per_s", "read_bandwidth_gb_s", "roofline_fraction"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {v}");
    }
}

#[test]
fn bad_artifacts_are_refused_before_running() {
    let t = TempDir::new("compile-bad");
    let m = t.join("m");
    ok(kiln(&["gen-model", "--arch", "llama", "--seed", "3", "-o", s(&m)]));
    let art = t.join("a.kiln");
    ok(kiln(&["compile", s(&m), "-o", s(&art), "-O0"]));
    let run = |a: &Path| kiln(&["run", s(a), "--prompt", "hi", "--max-tokens", "2"]);
    ok(run(&art));

    let v = t.join("version.kiln");
    copy_dir(&art, &v);
    edit_manifest(&v, |m| m["format_version"] = 999.into());
    fails_with(run(&v), &["manifest.json", "format version", "999"]);

    let c = t.join("corrupt.kiln");
    copy_dir(&art, &c);
    let w = c.join("weights.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&w, bytes).unwrap();
    fails_with(run(&c), &["weights.safetensors", "checksum"]);

    let tr = t.join("truncated.kiln");
    copy_dir(&art, &tr);
    let so = tr.join("kernels.so");
    let bytes = std::fs::read(&so).unwrap();
    std::fs::write(&so, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(run(&tr), &["kernels.so", "bytes"]);

    let cpu = t.join("cpu.kiln");
    copy_dir(&art, &cpu);
    // A feature this CPU is unlikely to have (checked: skip if it does).
    if kiln_runtime::artifact::cpu_has("avx512fp16") == Some(false) {
        edit_manifest(&cpu, |m| m["target"]["required_features"] = serde_json::json!(["avx512fp16"]));
        fails_with(run(&cpu), &["avx512fp16", "lacks"]);
    }

    let missing = t.join("missing.kiln");
    copy_dir(&art, &missing);
    std::fs::remove_file(missing.join("manifest.json")).unwrap();
    fails_with(run(&missing), &["compile it with `kiln compile`"]);

    fails_with(kiln(&["run", s(&art), "--interp", "--prompt", "x"]), &["compiled artifact", "--interp"]);
}

#[test]
fn failed_compiles_leave_nothing_behind() {
    let t = TempDir::new("compile-fail");
    let m = t.join("m");
    ok(kiln(&["gen-model", "--arch", "llama", "--seed", "3", "-o", s(&m)]));
    let out = t.join("x.kiln");
    fails_with(kiln(&["compile", s(&m), "-o", s(&out), "--weights", "q3"]), &["--weights", "q3"]);
    fails_with(kiln(&["compile", s(&m), "-o", s(&out), "--passes", "nosuch"]), &["nosuch"]);
    fails_with(
        kiln(&["compile", s(&m), "-o", s(&out), "--prefill-activations", "int4"]),
        &["--prefill-activations", "int4"],
    );
    // Corrupt one weight tensor's declared shape so loading fails midway.
    let cfg = m.join("config.json");
    let text =
        std::fs::read_to_string(&cfg).unwrap().replace("\"intermediate_size\": 128", "\"intermediate_size\": 130");
    std::fs::write(&cfg, text).unwrap();
    fails_with(kiln(&["compile", s(&m), "-o", s(&out)]), &[]);
    assert!(!out.exists(), "a failed compile left {}", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary folders left: {leftovers:?}");
}

#[test]
fn portable_artifacts_for_x86_64_levels() {
    let t = TempDir::new("compile-cpu");
    let m = t.join("m");
    ok(kiln(&["gen-model", "--arch", "llama", "--seed", "3", "-o", s(&m)]));
    let prompt = ["--prompt", "the quick brown fox", "--max-tokens", "8"];
    let native = t.join("native.kiln");
    ok(kiln(&["compile", s(&m), "-o", s(&native)]));
    let (want, _) = ok(kiln(&[&["run", s(&native)][..], &prompt[..]].concat()));
    for level in ["x86-64", "x86-64-v3"] {
        let art = t.join(&format!("{level}.kiln"));
        ok(kiln(&["compile", s(&m), "-o", s(&art), "--target-cpu", level]));
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(art.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["target"]["cpu"], level);
        let features = manifest["target"]["required_features"].to_string();
        assert_eq!(features.contains("avx2"), level == "x86-64-v3", "{features}");
        assert!(!features.contains("avx512"), "{features}");
        let (got, _) = ok(kiln(&[&["run", s(&art)][..], &prompt[..]].concat()));
        assert_eq!(got, want, "{level} artifact's greedy text differs from the native one");
    }
    fails_with(
        kiln(&["compile", s(&m), "-o", s(&t.join("x.kiln")), "--target-cpu", "pentium9"]),
        &["pentium9", "x86-64-v3"],
    );
}

/// CPU artifacts store f32 matmul weights (and the tied embedding table) with rows interleaved
/// for the vector width; other formats, and CUDA artifacts, keep plain rows.
#[test]
fn f32_matmul_weights_are_interleaved_for_the_cpu() {
    let t = TempDir::new("compile-interleave");
    let m = t.join("m");
    ok(kiln(&["gen-model", "--arch", "llama", "--seed", "3", "-o", s(&m)]));
    let interleaves = |name: &str, extra: &[&str]| -> Vec<(String, u64)> {
        let art = t.join(name);
        ok(kiln(&[&["compile", s(&m), "-o", s(&art)][..], extra].concat()));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(art.join("manifest.json")).unwrap()).unwrap();
        v["kernels"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| matches!(k["kind"].as_str(), Some("matmul" | "embedding")))
            .map(|k| (k["kind"].as_str().unwrap().to_string(), k["params"]["interleave"].as_u64().unwrap_or(0)))
            .collect()
    };
    let f32s = interleaves("f32.kiln", &[]);
    assert!(f32s.iter().any(|(kind, _)| kind == "matmul"), "{f32s:?}");
    // A cache line of f32 per chunk, whatever the vector width.
    assert!(f32s.iter().all(|&(_, il)| il == 16), "every f32 matmul and the table interleaved: {f32s:?}");
    let bf16 = interleaves("bf16.kiln", &["--weights", "bf16"]);
    assert!(bf16.iter().all(|&(_, il)| il == 0), "bf16 rows stay plain: {bf16:?}");
}

/// Int8-activation prefill (`matmul_i8` + `quantize_rows`) is planned for Q8_0/Q4_0 weights where
/// the target CPU has AVX512-VNNI, and not with `--prefill-activations f32`, without VNNI, or for
/// f32 weights; the artifact's greedy text stays that of the exact one on this model.
#[test]
fn int8_prefill_is_planned_where_the_cpu_has_vnni() {
    let t = TempDir::new("compile-int8");
    let m = t.join("m");
    ok(kiln(&["gen-model", "--arch", "llama", "--seed", "3", "-o", s(&m)]));
    let kinds = |art: &Path| -> Vec<String> {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(art.join("manifest.json")).unwrap()).unwrap();
        v["kernels"].as_array().unwrap().iter().map(|k| k["kind"].as_str().unwrap().to_string()).collect()
    };
    let host = kiln_codegen::host_target().unwrap();
    let vnni = host.has_feature("avx512vnni") && host.has_feature("avx512f");
    let compile = |name: &str, extra: &[&str]| {
        let art = t.join(name);
        ok(kiln(&[&["compile", s(&m), "-o", s(&art)][..], extra].concat()));
        kinds(&art)
    };
    let int8 = compile("q4.kiln", &["--weights", "q4_0"]);
    assert_eq!(int8.iter().any(|k| k == "matmul_i8"), vnni, "{int8:?}");
    assert_eq!(int8.iter().any(|k| k == "quantize_rows"), vnni, "{int8:?}");
    for (name, extra) in [
        ("exact.kiln", &["--weights", "q4_0", "--prefill-activations", "f32"][..]),
        ("v3.kiln", &["--weights", "q4_0", "--target-cpu", "x86-64-v3"][..]),
        ("f32.kiln", &[][..]),
    ] {
        let k = compile(name, extra);
        assert!(!k.iter().any(|k| k == "matmul_i8" || k == "quantize_rows"), "{name}: {k:?}");
    }
    let prompt = ["--prompt", "the quick brown fox jumps over", "--max-tokens", "6"];
    let (a, _) = ok(kiln(&[&["run", s(&t.join("q4.kiln"))][..], &prompt[..]].concat()));
    let (b, _) = ok(kiln(&[&["run", s(&t.join("exact.kiln"))][..], &prompt[..]].concat()));
    assert_eq!(a, b, "int8-prefill and exact q4_0 artifacts' greedy text differ");
}

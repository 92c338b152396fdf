//! The model commands end to end on synthetic models and on the real SmolLM2 GGUF: `gen-model`,
//! `dump-ir`, `run --interp`, `import`, and the errors bad checkpoints produce (one line naming the
//! file and key or tensor, exit code 1, nothing half-written).

mod support;

use serde_json::Value;
use std::path::Path;
use support::cli::{fails_with, kiln, ok};
use support::TempDir;

fn gen(dir: &Path, arch: &str, extra: &[&str]) {
    let mut args = vec!["gen-model", "--arch", arch, "--seed", "3", "-o", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(kiln(&args));
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn run_streams_only_the_generated_text_and_is_deterministic() {
    let t = TempDir::new("run");
    let m = t.join("m");
    gen(&m, "qwen2", &[]);
    let run = |extra: &[&str]| {
        let mut args =
            vec!["run", m.to_str().unwrap(), "--interp", "--prompt", "the quick brown fox", "--max-tokens", "12"];
        args.extend_from_slice(extra);
        ok(kiln(&args))
    };
    let (a, stats) = run(&[]);
    let (b, _) = run(&[]);
    assert_eq!(a, b, "greedy runs differ");
    assert!(!a.trim().is_empty());
    assert!(stats.contains("generated"), "stats go to stderr: {stats}");
    assert!(!a.contains("[kiln]"), "stdout must carry only the text");
    let (s1, _) = run(&["--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--seed", "7"]);
    let (s2, _) = run(&["--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--seed", "7"]);
    assert_eq!(s1, s2, "same seed, different text");
    let (_, json) = run(&["--json", "--chat"]);
    let stats: Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    assert!(stats["prompt_tokens"].as_u64().unwrap() > 5, "the chat template wraps the prompt");
    let (o2, _) = run(&["-O2"]);
    assert_eq!(o2, a, "-O2 changed the greedy text");
    let bad = kiln(&["run", m.to_str().unwrap(), "--interp", "--prompt", "x", "--temperature=-1"]);
    fails_with(bad, &["--temperature"]);
}

#[test]
fn dump_ir_formats() {
    let t = TempDir::new("dump");
    let m = t.join("m");
    gen(&m, "mixtral", &[]);
    let (text, _) = ok(kiln(&["dump-ir", m.to_str().unwrap(), "--layers", "1"]));
    assert!(text.contains("moe ") && text.contains("experts = 8"));
    let g = kiln_ir::parse(&text).unwrap();
    kiln_ir::verify(&g).unwrap();
    let (dot, _) = ok(kiln(&["dump-ir", m.to_str().unwrap(), "--format", "dot", "--layers", "1"]));
    assert!(dot.starts_with("digraph"));
    let (json, _) = ok(kiln(&["dump-ir", m.to_str().unwrap(), "--format", "json", "--logits", "all"]));
    let v: Value = serde_json::from_str(&json).unwrap();
    let logits = v["nodes"].as_array().unwrap().iter().find(|n| n["op"] == "output").unwrap();
    assert_eq!(logits["type"], "f32[T,320]");
}

#[test]
fn config_errors_name_the_file_and_key() {
    let t = TempDir::new("cfg");
    let m = t.join("m");
    gen(&m, "llama", &[]);
    let dump = |m: &Path| kiln(&["dump-ir", m.to_str().unwrap()]);

    edit_config(&m, |c| {
        c.remove("hidden_size");
    });
    fails_with(dump(&m), &["config.json", "missing key 'hidden_size'"]);
    edit_config(&m, |c| {
        c.insert("hidden_size".into(), "sixty-four".into());
    });
    fails_with(dump(&m), &["config.json", "key 'hidden_size' must be a positive integer, found \"sixty-four\""]);
    edit_config(&m, |c| {
        c.insert("hidden_size".into(), 64.into());
        c.insert("model_type".into(), "gpt5".into());
    });
    fails_with(dump(&m), &["unknown model_type 'gpt5'", "llama, mistral, qwen2, mixtral, gemma3"]);
    edit_config(&m, |c| {
        c.insert("model_type".into(), "llama".into());
        c.insert("rope_scaling".into(), serde_json::json!({"rope_type": "dynamic", "factor": 2.0}));
    });
    fails_with(dump(&m), &["unsupported rope_scaling type 'dynamic'"]);
    std::fs::write(m.join("config.json"), "{ not json").unwrap();
    fails_with(dump(&m), &["config.json", "invalid JSON"]);
}

#[test]
fn tensor_errors_name_the_file_and_tensor() {
    let t = TempDir::new("tensors");
    let (a, b) = (t.join("a"), t.join("b"));
    gen(&a, "llama", &[]);
    gen(&b, "llama", &["--hidden", "32"]);
    let run = |m: &Path| kiln(&["run", m.to_str().unwrap(), "--interp", "--prompt", "hi", "--max-tokens", "2"]);

    // Missing tensor: the config says the head is untied, but the folder has no lm_head.
    edit_config(&a, |c| {
        c.insert("tie_word_embeddings".into(), false.into());
    });
    fails_with(run(&a), &["lm_head.weight", "not found"]);
    edit_config(&a, |c| {
        c.insert("tie_word_embeddings".into(), true.into());
    });

    // Wrong shapes: weights of a 32-wide model under a 64-wide config.
    let good = std::fs::read(a.join("model.safetensors")).unwrap();
    std::fs::copy(b.join("model.safetensors"), a.join("model.safetensors")).unwrap();
    fails_with(run(&a), &["model.safetensors", "model.embed_tokens.weight", "shape [320, 32]"]);

    // Unsupported dtype: relabel one F32 tensor as I32 (same size) in the header.
    let text =
        String::from_utf8_lossy(&good[8..8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize]).to_string();
    let name = "\"model.norm.weight\":{\"dtype\":\"F32\"";
    assert!(text.contains(name), "unexpected header layout: {text}");
    let mut bad = good.clone();
    let at = 8 + text.find(name).unwrap() + name.len() - 4;
    bad[at..at + 3].copy_from_slice(b"I32");
    std::fs::write(a.join("model.safetensors"), &bad).unwrap();
    fails_with(run(&a), &["model.norm.weight", "dtype I32 is not supported"]);

    // Truncated file.
    std::fs::write(a.join("model.safetensors"), &good[..good.len() / 2]).unwrap();
    fails_with(run(&a), &["model.safetensors", "truncated or corrupt"]);
    std::fs::write(a.join("model.safetensors"), &good[..4]).unwrap();
    fails_with(run(&a), &["model.safetensors", "truncated"]);
}

#[test]
fn gen_model_refuses_bad_shapes_and_leaves_nothing() {
    let t = TempDir::new("genbad");
    let m = t.join("m");
    let out = kiln(&["gen-model", "--arch", "llama", "--heads", "5", "--kv-heads", "2", "-o", m.to_str().unwrap()]);
    fails_with(out, &[]);
    assert!(!m.exists());
    let out = kiln(&["gen-model", "--arch", "mixtral", "--experts", "2", "--top-k", "3", "-o", m.to_str().unwrap()]);
    fails_with(out, &["top"]);
    assert!(!m.exists());
}

#[test]
fn import_errors_leave_no_output() {
    let Some(gguf) = support::smollm2_gguf() else { return };
    let t = TempDir::new("import");
    let bytes = std::fs::read(&gguf).unwrap();
    for cut in [16usize, 4096, bytes.len() / 2] {
        let src = t.join("cut.gguf");
        std::fs::write(&src, &bytes[..cut]).unwrap();
        let dst = t.join("out");
        let out = kiln(&["import", src.to_str().unwrap(), "-o", dst.to_str().unwrap()]);
        fails_with(out, &["cut.gguf"]);
        assert!(!dst.exists(), "a failed import left {}", dst.display());
        let leftovers: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "temporary files left behind: {leftovers:?}");
    }
    let mut bad = bytes[..64].to_vec();
    bad[..4].copy_from_slice(b"GGUX");
    std::fs::write(t.join("magic.gguf"), &bad).unwrap();
    fails_with(
        kiln(&["import", t.join("magic.gguf").to_str().unwrap(), "-o", t.join("o2").to_str().unwrap()]),
        &["magic.gguf"],
    );
}

#[test]
fn smollm2_imports_and_runs_from_the_cli() {
    let Some(gguf) = support::smollm2_gguf() else { return };
    let t = TempDir::new("smol-cli");
    let dst = t.join("smollm2");
    let (report, _) = ok(kiln(&["import", gguf.to_str().unwrap(), "-o", dst.to_str().unwrap(), "--json"]));
    let r: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(r["model_type"], "llama");
    assert_eq!(r["vocab_size"], 49152);
    assert!(r["tie_word_embeddings"].as_bool().unwrap());
    let (text, _) = ok(kiln(&[
        "run",
        dst.to_str().unwrap(),
        "--interp",
        "--chat",
        "--prompt",
        "What is the capital of France? Answer in one word.",
        "--max-tokens",
        "8",
    ]));
    assert!(text.contains("Paris"), "{text:?}");
}

//! `kiln opt` end to end: fixtures print back unchanged in every format, and bad input gives a
//! one-line error with file:line:col and exit code 1 (never a panic).

mod support;

use std::process::{Command, Stdio};
use support::workspace_root;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).current_dir(workspace_root()).output().unwrap()
}

fn fixtures() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(workspace_root().join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kir"))
        .collect();
    v.sort();
    v
}

#[test]
fn opt_output_is_a_fixed_point() {
    for f in fixtures() {
        let out = kiln(&["opt", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8(out.stdout).unwrap();
        // Feed the printed text back through stdin: it must come out identical.
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["opt", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(printed.as_bytes()).unwrap();
        let again = child.wait_with_output().unwrap();
        assert!(again.status.success());
        assert_eq!(String::from_utf8(again.stdout).unwrap(), printed, "{}", f.display());
    }
}

#[test]
fn opt_writes_dot_and_json() {
    let f = "tests/fixtures/llama_decoder_layer.kir";
    let dot = kiln(&["opt", f, "--format", "dot"]);
    let dot = String::from_utf8(dot.stdout).unwrap();
    assert!(dot.starts_with("digraph \"llama_decoder_layer\" {"));
    assert!(dot.contains("attention"));
    let json = kiln(&["opt", f, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["graph"], "llama_decoder_layer");
    assert!(v["nodes"].as_array().unwrap().iter().any(|n| n["op"] == "attention"));
}

#[test]
fn opt_to_a_file() {
    let dir = support::TempDir::new("opt-out");
    let out = dir.join("out.kir");
    let r = kiln(&["opt", "tests/fixtures/qwen2_decoder_layer.kir", "-o", out.to_str().unwrap()]);
    assert!(r.status.success());
    assert!(r.stdout.is_empty());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("graph @qwen2_decoder_layer {"));
}

#[test]
fn bad_input_is_one_clear_line_and_exit_1() {
    let cases = [
        ("unknown_op.kir", "error: tests/fixtures/bad/unknown_op.kir:3:8: unknown op 'matmull' (did you mean 'matmul'?)"),
        ("shape_mismatch.kir", "error: tests/fixtures/bad/shape_mismatch.kir:4:8: matmul: contraction dims differ in lhs·rhsᵀ: lhs f32[T,576] has 576, rhs f32[1536,512] has 512"),
        ("duplicate_output.kir", "error: tests/fixtures/bad/duplicate_output.kir: output \"y\": duplicate output name 'y'"),
        ("truncated_type.kir", "error: tests/fixtures/bad/truncated_type.kir:4:1: expected ',', found '}'"),
    ];
    for (file, want) in cases {
        let path = format!("tests/fixtures/bad/{file}");
        let out = kiln(&["opt", &path]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end(), want, "{file}");
        assert!(out.stdout.is_empty());
    }
    let out = kiln(&["opt", "tests/fixtures/does-not-exist.kir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .starts_with("error: tests/fixtures/does-not-exist.kir: cannot read"));
}

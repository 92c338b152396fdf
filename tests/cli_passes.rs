//! `kiln opt --passes` and `kiln dump-ir --passes` end to end: levels, IR dumps on stderr (snapshot),
//! dump folders, timing as JSON, and the errors for bad pipelines (`--passes:1:COL:` with a caret,
//! exit code 1).

mod support;

use std::process::{Command, Output, Stdio};
use support::cli::{kiln, ok};
use support::TempDir;

const TINY: &str = "tests/fixtures/llama_tiny_model.kir";

fn fails(out: Output) -> String {
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(out.stdout.is_empty());
    assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    err
}

#[test]
fn print_ir_after_all_on_a_small_model() {
    let (stdout, stderr) = ok(kiln(&["opt", TINY, "--passes", "-O1", "--print-ir-after-all"]));
    insta::assert_snapshot!("print_ir_after_all_llama_tiny", stderr);
    // The result on stdout is the last dump.
    assert!(stderr.ends_with(&format!("{stdout}\n")));
}

/// -O2 on a llama layer: RoPE fuses into attention, q/k/v and gate/up merge, SwiGLU fuses.
#[test]
fn print_ir_after_all_o2_on_a_llama_layer() {
    let layer = "tests/fixtures/llama_decoder_layer.kir";
    let (stdout, stderr) = ok(kiln(&["opt", layer, "-O2", "--print-ir-after-all", "--verify-each"]));
    insta::assert_snapshot!("print_ir_after_all_o2_llama_layer", stderr);
    assert!(stdout.contains("rope = neox{theta = 100000.0}"));
    assert!(stdout.contains("fused "));
    assert!(!stdout.contains("= rope "));
}

#[test]
fn passes_rewrite_a_file() {
    let src = r#"graph @g {
  %0 = input {name = "x"} : f32[T,8]
  %1 = param {name = "w"} : f32[8,8]
  %2 = param {name = "w"} : f32[8,8]
  %3 = matmul %0, %1 {transpose_b = false} : f32[T,8]
  %4 = matmul %0, %2 {transpose_b = false} : f32[T,8]
  %5 = constant {value = 1.0} : f32[]
  %6 = mul %4, %5 : f32[T,8]
  %7 = add %3, %6 : f32[T,8]
  output %7 {name = "y"}
}
"#;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["opt", "-", "--passes", "canonicalize,cse,dce", "--print-ir-after-change", "--verify-each"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(src.as_bytes()).unwrap();
    let (stdout, stderr) = ok(child.wait_with_output().unwrap());
    assert_eq!(
        stdout,
        r#"graph @g {
  %0 = input {name = "x"} : f32[T,8]
  %1 = param {name = "w"} : f32[8,8]
  %2 = matmul %0, %1 : f32[T,8]
  %3 = add %2, %2 : f32[T,8]
  output %3 {name = "y"}
}
"#
    );
    let headers: Vec<&str> = stderr.lines().filter(|l| l.starts_with("// -----//")).collect();
    assert_eq!(
        headers,
        [
            "// -----// IR Dump After canonicalize //----- //",
            "// -----// IR Dump After cse //----- //",
            "// -----// IR Dump After dce //----- //"
        ]
    );
}

#[test]
fn levels_as_passes_or_flag() {
    let (a, _) = ok(kiln(&["opt", TINY, "--passes", "-O1"]));
    let (b, _) = ok(kiln(&["opt", TINY, "-O1"]));
    let (c, _) = ok(kiln(&["opt", TINY, "-O", "1"]));
    let (d, _) = ok(kiln(&["opt", TINY, "--passes=canonicalize,cse,dce"]));
    let (plain, _) = ok(kiln(&["opt", TINY]));
    assert!(a == b && b == c && c == d);
    assert_eq!(a, plain, "the tiny model is already -O1 clean");
    let (o0, _) = ok(kiln(&["opt", TINY, "-O0"]));
    assert_eq!(o0, plain);
}

#[test]
fn o2_runs_verified_on_a_small_model() {
    let (stdout, stderr) = ok(kiln(&["opt", TINY, "-O2", "--verify-each"]));
    assert!(stderr.is_empty(), "{stderr}");
    // The result is IR that reads back (and is a fixed point of printing).
    let t = TempDir::new("passes-o2");
    let f = t.join("o2.kir");
    std::fs::write(&f, &stdout).unwrap();
    let (again, _) = ok(kiln(&["opt", f.to_str().unwrap()]));
    assert_eq!(again, stdout);
}

#[test]
fn bad_pipelines_are_errors_with_a_caret() {
    let err = fails(kiln(&["opt", TINY, "--passes", "canonicalize,cse,eqsat{rules=rope"]));
    assert_eq!(
        err,
        "error: --passes:1:34: expected '}' or ',' after option 'rules' of 'eqsat', found end of pipeline\n  \
         canonicalize,cse,eqsat{rules=rope\n  \
         \x20                                ^\n"
    );
    let err = fails(kiln(&["opt", TINY, "--passes", "cse,dcee"]));
    assert!(
        err.starts_with("error: --passes:1:5: unknown pass 'dcee' (did you mean 'dce'?); valid passes: canonicalize, ")
    );
    let err = fails(kiln(&["opt", TINY, "--passes", "cse{depth=2}"]));
    assert!(err.starts_with("error: --passes:1:5: unknown option 'depth' for pass 'cse' (valid options: none)\n"));
    let err = fails(kiln(&["opt", TINY, "--passes", "-O7"]));
    assert!(err.starts_with("error: --passes:1:1: unknown optimization level '-O7' (levels: -O0, -O1, -O2)"));
    let err = fails(kiln(&["opt", TINY, "--passes", "cse", "--print-ir-after=csee"]));
    assert!(err.starts_with("error: unknown pass 'csee' in print-ir-after (valid passes: "), "{err}");
}

#[test]
fn timing_as_json_on_stderr() {
    let (_, stderr) = ok(kiln(&["opt", TINY, "--passes", "canonicalize,cse,dce", "--pass-timing", "--json"]));
    let v: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
    let passes = v["passes"].as_array().unwrap();
    let names: Vec<&str> = passes.iter().map(|p| p["pass"].as_str().unwrap()).collect();
    assert_eq!(names, ["canonicalize", "cse", "dce"]);
    for p in passes {
        assert_eq!(p["nodes_before"], 36);
        assert_eq!(p["changed"], false);
        assert!(p["time_ms"].as_f64().unwrap() >= 0.0);
    }
    let (_, text) = ok(kiln(&["opt", TINY, "-O1", "--pass-timing"]));
    assert!(text.starts_with("pass timing: total "), "{text}");
    assert_eq!(text.lines().count(), 5);
}

#[test]
fn print_ir_dir_and_dump_ir() {
    let t = TempDir::new("passes-dump-dir");
    let dumps = t.join("dumps");
    ok(kiln(&["opt", TINY, "-O1", "--print-ir-dir", dumps.to_str().unwrap()]));
    let mut files: Vec<String> =
        std::fs::read_dir(&dumps).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["00-input.kir", "01-canonicalize.kir", "02-cse.kir", "03-dce.kir"]);
    // Dumps are IR that `kiln opt` reads back.
    ok(kiln(&["opt", dumps.join("02-cse.kir").to_str().unwrap()]));

    // dump-ir runs the same flags on a model's IR.
    let m = t.join("m");
    ok(kiln(&["gen-model", "--arch", "llama", "--seed", "3", "-o", m.to_str().unwrap()]));
    let (plain, _) = ok(kiln(&["dump-ir", m.to_str().unwrap()]));
    let (opt, stderr) =
        ok(kiln(&["dump-ir", m.to_str().unwrap(), "--passes", "-O1", "--print-ir-before", "cse", "--verify-each"]));
    assert_eq!(opt, plain);
    assert!(stderr.starts_with("// -----// IR Dump Before cse //----- //\ngraph @"), "{stderr}");
    let err = fails(kiln(&["dump-ir", m.to_str().unwrap(), "--passes", "cse,"]));
    assert!(err.starts_with("error: --passes:1:5: expected a pass name, found end of pipeline"));
}

/// `kiln opt` takes a model folder as well as an IR file.
#[test]
fn opt_runs_passes_on_a_model_folder() {
    let dir = TempDir::new("opt-model");
    let m = dir.join("m");
    ok(kiln(&["gen-model", "--arch", "gemma3", "--seed", "2", "-o", m.to_str().unwrap()]));
    let (ir, _) = ok(kiln(&["opt", m.to_str().unwrap(), "-O2"]));
    let g = kiln_ir::parse(&ir).unwrap();
    let attn: Vec<_> = g.node_ids().filter(|&n| g.op(n) == kiln_ir::OpKind::Attention).collect();
    assert_eq!(attn.len(), 2);
    assert!(attn.iter().all(|&n| g.node(n).attrs.tagged("rope").is_some()));
}

//! `kiln eval` end to end on synthetic models: the unmodified model against itself and against
//! exact and lossy rewrites, the JSON report, and bad input.

mod support;

use serde_json::Value;
use std::process::Output;
use support::cli::{fails_with, kiln};
use support::TempDir;

fn stdout_ok(out: Output) -> String {
    let se = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "failed: {se}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn text(t: &TempDir) -> String {
    let p = t.join("text.txt");
    let words = "the quick brown fox jumps over the lazy dog while a model counts tokens and bytes ";
    std::fs::write(&p, words.repeat(40)).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn eval_reports_quality_and_cost_per_pipeline() {
    let t = TempDir::new("eval");
    let m = t.join("m");
    stdout_ok(kiln(&["gen-model", "--arch", "llama", "--seed", "5", "-o", m.to_str().unwrap()]));
    let txt = text(&t);
    let out = stdout_ok(kiln(&[
        "eval",
        m.to_str().unwrap(),
        "--text",
        &txt,
        "--tokens",
        "96",
        "--chunk",
        "32",
        "--decode-tokens",
        "4",
        "--passes",
        "expand-kv",
        "--passes",
        "gqa{groups=1}",
        "--json",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["tokens"], 96);
    let cfgs = v["configs"].as_array().unwrap();
    assert_eq!(cfgs.len(), 3);
    let (base, exact, lossy) = (&cfgs[0], &cfgs[1], &cfgs[2]);
    assert_eq!(base["positions"], 93, "3 chunks of 32 score 31 positions each");
    let ppl = base["perplexity"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{base}");
    assert_eq!(base["top1_agreement"], 1.0);
    assert_eq!(base["kl"], 0.0);
    // expand-kv is exact: the same distributions, but more K/V weights to read.
    assert_eq!(exact["perplexity"], base["perplexity"]);
    assert_eq!(exact["kl"], 0.0);
    assert!(exact["decode_weight_bytes_per_token"].as_f64() > base["decode_weight_bytes_per_token"].as_f64());
    // Pooling to one KV head changes the model and reads fewer weights.
    assert!(lossy["kl"].as_f64().unwrap() > 0.0, "{lossy}");
    assert!(lossy["decode_weight_bytes_per_token"].as_f64() < base["decode_weight_bytes_per_token"].as_f64());
    assert!(base["flops_per_token"].as_f64().unwrap() > 0.0);

    // The table form names every pipeline.
    let table = stdout_ok(kiln(&[
        "eval",
        m.to_str().unwrap(),
        "--text",
        &txt,
        "--tokens",
        "32",
        "--chunk",
        "32",
        "--passes",
        "-O2",
    ]));
    assert!(table.contains("(none)") && table.contains("-O2") && table.contains("ppl"), "{table}");
}

#[test]
fn eval_bad_input_is_one_clear_error() {
    let t = TempDir::new("eval-bad");
    let m = t.join("m");
    stdout_ok(kiln(&["gen-model", "--arch", "llama", "--seed", "5", "-o", m.to_str().unwrap()]));
    let txt = text(&t);
    let ms = m.to_str().unwrap();
    fails_with(kiln(&["eval", ms, "--text", "/no/such/file.txt"]), &["/no/such/file.txt"]);
    fails_with(kiln(&["eval", ms, "--text", &txt, "--tokens", "16", "--chunk", "32"]), &["--tokens", "--chunk"]);
    fails_with(
        kiln(&["eval", ms, "--text", &txt, "--tokens", "64", "--chunk", "32", "--passes", "gqa{groups=3}"]),
        &["gqa"],
    );
    fails_with(kiln(&["eval", ms, "--text", &txt, "--passes", "nosuchpass"]), &["nosuchpass"]);
    let short = t.join("short.txt");
    std::fs::write(&short, "tiny").unwrap();
    fails_with(
        kiln(&["eval", ms, "--text", short.to_str().unwrap(), "--chunk", "32", "--tokens", "32"]),
        &["fewer than one --chunk"],
    );
}

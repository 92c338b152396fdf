//! `kiln calibrate` end to end on a synthetic llama: it writes a routers file that `kiln run
//! --passes 'mod{…}'` uses, calibrated probes rank tokens clearly better than `--random` routers on
//! held-out text, and bad inputs fail with one `error:` line, exit code 1 and no file written.

mod support;

use kiln_passes::routers::{Method, Routers};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::cli::{fails_with_one_line as fails_with, kiln, ok};
use support::TempDir;

/// A synthetic llama (2 layers, hidden 64) in `dir/m`.
fn gen(dir: &TempDir) -> PathBuf {
    let m = dir.join("m");
    ok(kiln(&["gen-model", "--arch", "llama", "--seed", "3", "-o", m.to_str().unwrap()]));
    m
}

use support::calibration_text as text;

fn calibrate(m: &Path, text: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args =
        vec!["calibrate", m.to_str().unwrap(), "--text", text.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    kiln(&args)
}

fn generate(m: &Path, passes: &str) -> String {
    let args = ["run", m.to_str().unwrap(), "--interp", "--prompt", "the quick brown fox", "--max-tokens", "4"];
    let mut args = args.to_vec();
    if !passes.is_empty() {
        args.extend_from_slice(&["--passes", passes]);
    }
    ok(kiln(&args)).0
}

#[test]
fn calibrated_routers_drive_the_mod_pass() {
    let t = TempDir::new("calibrate");
    let m = gen(&t);
    let r = t.join("routers.safetensors");
    let (table, _) = ok(calibrate(&m, &text(&t), &r, &["--tokens", "256", "--chunk", "64"]));
    assert!(table.starts_with("wrote 2 probe routers to"), "{table}");
    assert!(table.contains("256 tokens, the last 51 held out"), "{table}");
    assert!(table.lines().any(|l| l.trim_start().starts_with("1 ")), "{table}");
    let routers = Routers::read(&r).unwrap();
    assert_eq!((routers.method, routers.hidden_size, routers.num_layers), (Method::Probe, 64, 2));
    assert_eq!(routers.calibration_tokens, 256);
    assert_eq!(routers.layers.keys().copied().collect::<Vec<_>>(), [0, 1]);
    // No temporary file is left next to the output.
    for e in std::fs::read_dir(t.path()).unwrap() {
        assert!(!e.unwrap().file_name().to_string_lossy().starts_with('.'), "a temporary file was left");
    }

    let plain = generate(&m, "");
    let half = generate(&m, &format!("mod{{capacity=0.5,routers={}}}", r.display()));
    assert!(!half.trim().is_empty());
    let full = generate(&m, &format!("mod{{capacity=1,layers=all,routers={}}}", r.display()));
    assert_eq!(full, plain, "capacity 1 changed the greedy text");
}

fn json_report(out: Output) -> Value {
    serde_json::from_str(&ok(out).0).unwrap()
}

fn mean(report: &Value, key: &str) -> f64 {
    let layers = report["layers"].as_array().unwrap();
    layers.iter().map(|l| l[key].as_f64().unwrap()).sum::<f64>() / layers.len() as f64
}

#[test]
fn probes_beat_random_routers_on_held_out_tokens() {
    let t = TempDir::new("calibrate-baseline");
    let m = gen(&t);
    let text = text(&t);
    let args = ["--tokens", "1024", "--chunk", "128", "--json"];
    let probe = json_report(calibrate(&m, &text, &t.join("probe.safetensors"), &args));
    let mut random_args = args.to_vec();
    random_args.extend_from_slice(&["--random", "--seed", "1"]);
    let random = json_report(calibrate(&m, &text, &t.join("random.safetensors"), &random_args));
    assert_eq!((probe["method"].as_str(), random["method"].as_str()), (Some("probe"), Some("random")));
    assert_eq!(probe["held_out_tokens"], 205);
    assert!(random["layers"][0]["r2"].is_null());
    let (ps, rs) = (mean(&probe, "spearman"), mean(&random, "spearman"));
    assert!(ps > 0.4 && ps > rs + 0.2, "probe ρ {ps} vs random ρ {rs}");
    assert!(mean(&probe, "top_half_overlap") > mean(&random, "top_half_overlap") + 0.05);
    assert!(mean(&probe, "r2") > 0.1, "{probe}");
    // Same seed, same routers.
    let again = json_report(calibrate(&m, &text, &t.join("random2.safetensors"), &random_args));
    assert_eq!(again["layers"], random["layers"]);
}

#[test]
fn bad_inputs_fail_cleanly_and_write_nothing() {
    let t = TempDir::new("calibrate-errors");
    let m = gen(&t);
    let r = t.join("r.safetensors");
    let text = text(&t);
    fails_with(calibrate(&m, Path::new("/no/such/text.txt"), &r, &[]), &["/no/such/text.txt", "cannot read"]);
    let empty = t.join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    fails_with(calibrate(&m, &empty, &r, &[]), &["empty.txt", "empty"]);
    let short = t.join("short.txt");
    std::fs::write(&short, "a few words").unwrap();
    fails_with(
        calibrate(&m, &short, &r, &["--tokens", "64", "--chunk", "64"]),
        &["short.txt", "fewer than --tokens 64"],
    );
    fails_with(calibrate(&m, &text, &r, &["--tokens", "32", "--chunk", "64"]), &["--tokens 32", "--chunk 64"]);
    fails_with(calibrate(&m, &text, &r, &["--tokens", "8", "--chunk", "4"]), &["--tokens 8", "too few"]);
    fails_with(calibrate(&m, &text, &r, &["--chunk", "0"]), &["--chunk"]);
    fails_with(calibrate(&t.join("nope"), &text, &r, &[]), &["nope", "no such file"]);
    let nested = t.join("missing-dir/r.safetensors");
    fails_with(calibrate(&m, &text, &nested, &["--tokens", "64", "--chunk", "64"]), &["missing-dir", "cannot write"]);
    assert!(!r.exists() && !nested.exists());
    // What a routers file must be, when `mod` reads one: pipeline errors add a caret line under the
    // option, so only the first line is the message.
    let run = |routers: &Path| {
        let passes = format!("mod{{routers={}}}", routers.display());
        let out = kiln(&["run", m.to_str().unwrap(), "--interp", "--prompt", "hi", "--passes", &passes]);
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or_default().to_string()
    };
    let e = run(&empty);
    assert!(
        e.starts_with("error: --passes:1:5: mod: option 'routers': ") && e.contains("empty.txt: not a safetensors"),
        "{e}"
    );
    let e = run(&r);
    assert!(e.contains("r.safetensors: cannot read the routers file"), "{e}");
}

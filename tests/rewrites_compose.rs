//! The architecture rewrites compose: on a synthetic Mixtral, `gqa{groups=1}`, Mixture-of-Depths
//! routing with calibrated routers and `moe-dispatch` together verify, run through the
//! interpreter (`kiln eval`, `kiln run --interp`) and compile to an artifact whose greedy text is
//! the interpreter's.

mod support;

use support::cli::{kiln, ok};
use support::TempDir;

#[test]
fn gqa_mod_and_moe_dispatch_compose_on_mixtral() {
    let t = TempDir::new("compose");
    let m = t.join("m");
    ok(kiln(&["gen-model", "--arch", "mixtral", "--seed", "4", "-o", m.to_str().unwrap()]));
    let text = support::calibration_text(&t);
    let r = t.join("routers.safetensors");
    ok(kiln(&[
        "calibrate",
        m.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--tokens",
        "256",
        "--chunk",
        "64",
        "-o",
        r.to_str().unwrap(),
    ]));
    let pipeline = format!("gqa{{groups=1}},mod{{capacity=0.75,routers={}}},moe-dispatch", r.display());
    let ms = m.to_str().unwrap();
    let (report, _) = ok(kiln(&[
        "eval",
        ms,
        "--text",
        text.to_str().unwrap(),
        "--tokens",
        "64",
        "--chunk",
        "32",
        "--passes",
        &pipeline,
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let composed = &v["configs"][1];
    assert!(composed["perplexity"].as_f64().is_some_and(f64::is_finite), "{composed}");
    assert!(
        composed["flops_per_token"].as_f64() < v["configs"][0]["flops_per_token"].as_f64(),
        "routing a quarter of the tokens past half the layers must save work: {v}"
    );

    let prompt = ["--prompt", "the quick brown fox", "--max-tokens", "6"];
    let (interp, _) = ok(kiln(&[&["run", ms, "--interp", "--passes", &pipeline][..], &prompt[..]].concat()));
    let art = t.join("a.kiln");
    ok(kiln(&["compile", ms, "--passes", &pipeline, "-o", art.to_str().unwrap()]));
    let (compiled, _) = ok(kiln(&[&["run", art.to_str().unwrap()][..], &prompt[..]].concat()));
    assert_eq!(compiled, interp, "the compiled artifact's greedy text differs from the interpreter's");
}

//! `mod{capacity,layers,routers}` on synthetic llama models, with routers calibrated here through the
//! library (as `kiln calibrate` does) or written by hand: capacity 1 is bit-identical to the model,
//! capacity 0.5 routes ⌈T/2⌉ prompt tokens (the routed layer's KV-cache slot and the FLOPs show it)
//! and decodes by the threshold, a snapshot of the rewritten IR, and the errors — all before the
//! graph changes.

mod common;
use common::TempDir;

use kiln_ir::interp::testing::SplitMix64;
use kiln_ir::interp::{Interpreter, KvCache, Overlay, Tensor};
use kiln_ir::{print, Graph};
use kiln_models::{write_synthetic_model, Arch, Checkpoint, LowerOptions, SynthOptions};
use kiln_passes::mod_calibration::{add_residual_outputs, fit_routers, push_run, residual_output_name, LayerSamples};
use kiln_passes::routers::{LayerRouter, Method, Routers, QUANTILE_COUNT};
use kiln_passes::{Instrumentation, PassManager, RunReport};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const HIDDEN: usize = 64;
const VOCAB: u64 = 320;

/// A synthetic llama (hidden 64, vocab 320) with probe routers calibrated on random tokens.
struct Model {
    dir: TempDir,
    ckpt: Checkpoint,
    graph: Graph,
    routers: PathBuf,
}

fn model(layers: usize) -> Model {
    let dir = TempDir::new("mod");
    // The graph is named after the folder: keep it fixed for the snapshot.
    let path = dir.0.join("llama");
    let opts = SynthOptions { layers: Some(layers), ..SynthOptions::defaults(Arch::Llama) };
    write_synthetic_model(&opts, &path).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    let graph = ckpt.graph(&LowerOptions::default()).unwrap();
    let routers = dir.0.join("routers.safetensors");
    std::fs::write(&routers, calibrate(&ckpt).to_bytes().unwrap()).unwrap();
    Model { dir, ckpt, graph, routers }
}

/// Random token chunks through the model, positions from 0 and a fresh cache per chunk.
fn calibrate(ckpt: &Checkpoint) -> Routers {
    let mut g = ckpt.graph(&LowerOptions::default()).unwrap();
    let streams = add_residual_outputs(&mut g).unwrap();
    assert_eq!(streams.hidden, HIDDEN);
    let mut samples = vec![LayerSamples::new(streams.hidden); streams.layers];
    let mut runner = Runner::new(ckpt, &g, &Default::default());
    let mut rng = SplitMix64::new(5);
    for _ in 0..5 {
        runner.cache.clear();
        let tokens: Vec<u32> = (0..24).map(|_| rng.below(VOCAB) as u32).collect();
        push_run(&mut samples, &runner.run(&tokens, 0)).unwrap();
    }
    fit_routers(&samples, Method::Probe, 0).unwrap()
}

/// A graph under the interpreter with a KV cache the test can look into.
struct Runner {
    interp: Interpreter,
    cache: KvCache,
}

impl Runner {
    fn new(ckpt: &Checkpoint, g: &Graph, derived: &kiln_ir::interp::DerivedWeights) -> Runner {
        let weights = Overlay { derived, base: ckpt };
        let interp = Interpreter::new(g, &weights).unwrap_or_else(|e| panic!("{e}\n{}", print(g)));
        Runner { interp, cache: KvCache::new() }
    }

    fn run(&mut self, tokens: &[u32], start: usize) -> HashMap<String, Tensor> {
        let t = tokens.len();
        let ids = Tensor::i64(&[t], tokens.iter().map(|&x| x as i64).collect());
        let pos = Tensor::i64(&[t], (start..start + t).map(|p| p as i64).collect());
        self.interp.run(&[("tokens", ids), ("positions", pos)], &mut self.cache).unwrap()
    }

    fn logits(&mut self, tokens: &[u32], start: usize) -> Vec<f32> {
        self.run(tokens, start)["logits"].as_f32().unwrap().to_vec()
    }
}

/// Runs a pipeline with the model's weights, verifying after each pass. On an error the graph must
/// be exactly as it was.
fn apply(m: &Model, pipeline: &str) -> Result<(Graph, RunReport), String> {
    let inst = Instrumentation { verify_each: true, ..Default::default() };
    let pm = PassManager::parse(pipeline, inst).map_err(|e| e.to_string())?;
    let mut g = m.graph.clone();
    match pm.run_with_weights(&mut g, Some(&m.ckpt), &mut std::io::sink()) {
        Ok(report) => Ok((g, report)),
        Err(e) => {
            assert_eq!(print(&g), print(&m.graph), "{pipeline} failed but changed the graph");
            Err(e.to_string())
        }
    }
}

fn routed(m: &Model, options: &str) -> (Graph, RunReport) {
    let p = format!("mod{{{options},routers={}}}", m.routers.display());
    apply(m, &p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

const PROMPT: [u32; 8] = [5, 17, 42, 99, 3, 250, 7, 64];
const DECODE: [u32; 3] = [11, 300, 2];

/// Logits of the prompt, then of each decoded token, as bits.
fn logit_bits(m: &Model, g: &Graph, report: Option<&RunReport>) -> Vec<Vec<u32>> {
    let derived = report.map(|r| r.derived.clone()).unwrap_or_default();
    let mut r = Runner::new(&m.ckpt, g, &derived);
    let mut out = vec![r.logits(&PROMPT, 0)];
    for (i, &t) in DECODE.iter().enumerate() {
        out.push(r.logits(&[t], PROMPT.len() + i));
    }
    out.into_iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect()
}

#[test]
fn capacity_one_is_bitwise_the_original_model() {
    let m = model(2);
    let original = logit_bits(&m, &m.graph, None);
    for layers in ["all", "odd", "0"] {
        let (g, report) = routed(&m, &format!("capacity=1.0,layers={layers}"));
        assert_ne!(print(&g), print(&m.graph));
        assert_eq!(logit_bits(&m, &g, Some(&report)), original, "layers={layers}");
        let stats = &report.passes[0].stats;
        assert_eq!(stats["thresholds"].as_object().unwrap().values().filter(|t| !t.is_null()).count(), 0);
    }
}

#[test]
fn half_capacity_routes_half_the_prompt_and_decodes_by_threshold() {
    let m = model(2);
    let (g, report) = routed(&m, "capacity=0.5,keep-first=false");
    assert_eq!(report.passes[0].stats["layers"], serde_json::json!([1]));
    let mut r = Runner::new(&m.ckpt, &g, &report.derived);
    let mut base = Runner::new(&m.ckpt, &m.graph, &Default::default());
    let logits = r.logits(&PROMPT, 0);
    assert!(logits.iter().all(|x| x.is_finite()));
    base.logits(&PROMPT, 0);
    // Layer 0 saw every token, layer 1 the top half.
    assert_eq!(r.cache.len(0), PROMPT.len());
    assert_eq!(r.cache.len(1), PROMPT.len() / 2);
    assert!(r.interp.work().flops < base.interp.work().flops, "{:?} vs {:?}", r.interp.work(), base.interp.work());
    // The routed tokens keep their positions (in order), so attention stays causal.
    let kept = r.cache.slot(1).unwrap().positions().to_vec();
    assert!(kept.windows(2).all(|w| w[0] < w[1]) && kept.iter().all(|&p| p < PROMPT.len() as i64), "{kept:?}");
    assert_ne!(logit_bits(&m, &g, Some(&report)), logit_bits(&m, &m.graph, None));

    // With keep-first (the default) the first token enters too, whatever the router says.
    let (g, report) = routed(&m, "capacity=0.5");
    let mut r2 = Runner::new(&m.ckpt, &g, &report.derived);
    r2.logits(&PROMPT, 0);
    let mut want = kept.clone();
    if want[0] != 0 {
        want.insert(0, 0);
    }
    assert_eq!(r2.cache.slot(1).unwrap().positions(), &want[..]);

    // All layers: both slots hold half the prompt.
    let (g, report) = routed(&m, "capacity=0.5,layers=all,keep-first=false");
    let mut r = Runner::new(&m.ckpt, &g, &report.derived);
    r.logits(&PROMPT, 0);
    assert_eq!((r.cache.len(0), r.cache.len(1)), (4, 4));
    // The routed layers share one keep-first mask.
    let (g, _) = routed(&m, "capacity=0.5,layers=all");
    assert_eq!(g.node_ids().filter(|&n| g.op(n) == kiln_ir::OpKind::Relu).count(), 1);
}

/// A decoded token enters layer 1 exactly when its router score beats the threshold: checked
/// against the score computed here from the unrouted model's residual stream (the same, since
/// layer 0 is not routed), at a low and a high capacity so that both outcomes occur.
#[test]
fn decode_honours_the_threshold() {
    let m = model(2);
    let routers = Routers::read(&m.routers).unwrap();
    let mut probe = m.graph.clone();
    add_residual_outputs(&mut probe).unwrap();
    let (mut entered, mut skipped) = (0, 0);
    for capacity in [0.1, 0.9] {
        let (g, report) = routed(&m, &format!("capacity={capacity}"));
        let threshold = routers.layers[&1].threshold(capacity).unwrap();
        assert_eq!(report.passes[0].stats["thresholds"]["1"].as_f64(), Some(threshold));
        let mut r = Runner::new(&m.ckpt, &g, &report.derived);
        let mut base = Runner::new(&m.ckpt, &probe, &Default::default());
        r.run(&PROMPT, 0);
        base.run(&PROMPT, 0);
        let mut rng = SplitMix64::new(9);
        for step in 0..8 {
            let token = [rng.below(VOCAB) as u32];
            let before = r.cache.len(1);
            let logits = r.logits(&token, PROMPT.len() + step);
            assert!(logits.iter().all(|x| x.is_finite()));
            let x = base.run(&token, PROMPT.len() + step)[&residual_output_name(1)].as_f32().unwrap().to_vec();
            let score = routers.layers[&1].score(&x);
            if (score - threshold).abs() < 1e-4 {
                continue; // too close to call between f32 and f64 arithmetic
            }
            let took = r.cache.len(1) - before;
            assert_eq!(took, usize::from(score > threshold), "capacity {capacity}, step {step}: score {score}");
            assert_eq!(r.cache.len(0), PROMPT.len() + step + 1);
            if took == 1 {
                entered += 1;
            } else {
                skipped += 1;
            }
        }
    }
    assert!(entered > 0 && skipped > 0, "entered {entered}, skipped {skipped}");
}

/// With keep-first the first token enters even when the router ranks it last; without, it does not.
#[test]
fn keep_first_sends_position_zero_through() {
    let m = model(2);
    let mut r = hand_routers(HIDDEN, 2, &[1]);
    let base = {
        let mut probe = m.graph.clone();
        add_residual_outputs(&mut probe).unwrap();
        let mut b = Runner::new(&m.ckpt, &probe, &Default::default());
        b.run(&PROMPT, 0)[&residual_output_name(1)].as_f32().unwrap().to_vec()
    };
    // Point the router away from token 0's stream: its score is then the lowest of the prompt.
    let first = kiln_passes::mod_calibration::normalized_rows(&base[..HIDDEN], HIDDEN);
    r.layers.get_mut(&1).unwrap().weight = first.iter().map(|v| -v).collect();
    let lr = &r.layers[&1];
    let scores: Vec<f64> = base.chunks(HIDDEN).map(|x| lr.score(x)).collect();
    assert!(scores[1..].iter().all(|&s| s > scores[0]), "{scores:?}");
    let p = write_routers(&m.dir.0, "away.safetensors", &r);
    for (keep, want_first) in [("true", true), ("false", false)] {
        let (g, report) =
            apply(&m, &format!("mod{{capacity=0.25,keep-first={keep},routers={}}}", p.display())).unwrap();
        let mut run = Runner::new(&m.ckpt, &g, &report.derived);
        run.logits(&PROMPT, 0);
        let kept = run.cache.slot(1).unwrap().positions().to_vec();
        assert_eq!(kept.first() == Some(&0), want_first, "keep-first={keep}: {kept:?}");
        assert_eq!(kept.len(), 2 + usize::from(want_first), "keep-first={keep}: {kept:?}");
    }
}

/// Routers written by hand: weights ±1/8, bias 0.25, percentiles −1 … 1 (so θ(0.5) = 0).
fn hand_routers(hidden: usize, num_layers: usize, layers: &[usize]) -> Routers {
    let router = LayerRouter {
        weight: (0..hidden).map(|i| if i % 2 == 0 { 0.125 } else { -0.125 }).collect(),
        bias: 0.25,
        quantiles: (0..QUANTILE_COUNT).map(|i| (i as f32 - 50.0) / 50.0).collect(),
        quality: None,
    };
    Routers {
        hidden_size: hidden,
        num_layers,
        method: Method::Random,
        target: "hand-written".into(),
        calibration_tokens: 0,
        layers: layers.iter().map(|&l| (l, router.clone())).collect(),
    }
}

fn write_routers(dir: &Path, name: &str, r: &Routers) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, r.to_bytes().unwrap()).unwrap();
    p
}

#[test]
fn snapshot_of_a_routed_two_layer_model() {
    let m = model(2);
    let p = write_routers(&m.dir.0, "hand.safetensors", &hand_routers(HIDDEN, 2, &[1]));
    let pipeline = format!("mod{{capacity=0.5,routers={}}}", p.display());
    let (g, report) = apply(&m, &pipeline).unwrap();
    assert_eq!(report.passes[0].stats["thresholds"]["1"], 0.0);
    assert_eq!(report.derived["mod.layers.1.router.bias"].as_f32().unwrap(), &[0.25]);
    insta::assert_snapshot!("llama_two_layers_odd", print(&g));
    // The pipeline prints back minimal and round-trips.
    let pm = PassManager::parse(&pipeline, Instrumentation::default()).unwrap();
    assert_eq!(pm.pipeline(), format!("mod{{routers={}}}", p.display()));
    let pm = PassManager::parse(&format!("mod{{capacity=0.25,layers=1,routers={}}}", p.display()), Default::default());
    assert_eq!(pm.unwrap().pipeline(), format!("mod{{capacity=0.25,layers=1,routers={}}}", p.display()));
}

#[test]
fn errors_come_before_the_graph_changes() {
    let m = model(2);
    let r = m.routers.display().to_string();
    let err = |p: &str| apply(&m, p).err().unwrap_or_else(|| panic!("{p} succeeded"));
    let has = |p: &str, needles: &[&str]| {
        let e = err(p);
        for n in needles {
            assert!(e.contains(n), "{p}: {e:?} lacks {n:?}");
        }
    };
    has(&format!("mod{{capacity=0,routers={r}}}"), &["capacity", "(0, 1]", "'0'"]);
    has(&format!("mod{{capacity=1.5,routers={r}}}"), &["capacity", "(0, 1]", "'1.5'"]);
    has("mod{capacity=0.5}", &["option 'routers' is required"]);
    has("mod", &["option 'routers' is required"]);
    let missing = m.dir.0.join("nope.safetensors");
    has(&format!("mod{{routers={}}}", missing.display()), &["nope.safetensors", "cannot read"]);
    has(&format!("mod{{layers=7,routers={r}}}"), &["layer 7 is out of range", "2-layer"]);
    has(&format!("mod{{layers=1+x,routers={r}}}"), &["option 'layers'"]);
    // A file that is not a routers file.
    let junk = m.dir.0.join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    has(&format!("mod{{routers={}}}", junk.display()), &["junk.safetensors", "not a safetensors file"]);
    // A layer the file has no router for.
    let only1 = write_routers(&m.dir.0, "only1.safetensors", &hand_routers(HIDDEN, 2, &[1]));
    has(&format!("mod{{layers=all,routers={}}}", only1.display()), &["no router for layer 0"]);
    // Routers of another model: checked against the graph before it changes.
    let narrow = write_routers(&m.dir.0, "narrow.safetensors", &hand_routers(32, 2, &[1]));
    has(&format!("mod{{routers={}}}", narrow.display()), &["hidden size 32", "f32[T,64]"]);
    let deep = write_routers(&m.dir.0, "deep.safetensors", &hand_routers(HIDDEN, 4, &[1, 3]));
    has(&format!("mod{{routers={}}}", deep.display()), &["4-layer model", "2 decoder layers"]);
    // Routing twice would bind the router's params twice.
    let (g, _) = routed(&m, "capacity=0.5");
    let pm = PassManager::parse(&format!("mod{{routers={r}}}"), Default::default()).unwrap();
    let mut again = g.clone();
    let e = pm.run(&mut again, &mut std::io::sink()).unwrap_err().to_string();
    assert!(e.contains("run `mod` once"), "{e}");
    assert_eq!(print(&again), print(&g));
}

//! The `eqsat` pass on real layer fixtures and whole models: every `rope` folds into its
//! attention, outputs (and the KV cache they build) stay within 1e-5 of the original on random
//! weights, the result is deterministic, and the analysis catches an unsound rule.

use kiln_ir::interp::testing::{random_weights, SplitMix64};
use kiln_ir::interp::{Interpreter, KvCache, Tensor};
use kiln_ir::{Graph, OpKind, RopeSpec};
use kiln_passes::egraph::egg::rewrite as rw;
use kiln_passes::egraph::{partition, rules, saturate, EqsatConfig, KilnRewrite, Partition, RegionEGraph};
use kiln_passes::passes::eqsat;
use kiln_passes::{PassCx, PassOptions};
use std::collections::HashMap;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture of the workspace's tests/fixtures or of this crate's.
fn fixture(name: &str) -> Graph {
    let root = env!("CARGO_MANIFEST_DIR");
    let path = if name.starts_with("eqsat_") {
        format!("{root}/tests/fixtures/{name}")
    } else {
        format!("{root}/../../tests/fixtures/{name}")
    };
    let g = kiln_ir::parse(&read(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    kiln_ir::verify(&g).unwrap();
    g
}

fn opts(kv: &[(&str, &str)]) -> PassOptions {
    PassOptions(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Runs `eqsat` with these options; returns the stats it recorded.
fn run_eqsat(g: &mut Graph, kv: &[(&str, &str)]) -> (bool, serde_json::Value) {
    let pass = eqsat::create(&opts(kv)).unwrap();
    let mut cx = PassCx::new();
    let changed = pass.run(g, &mut cx).unwrap();
    kiln_ir::verify(g).unwrap_or_else(|e| panic!("{e}\n{}", kiln_ir::print(g)));
    (changed.changed(), serde_json::to_value(&cx.stats["eqsat"]).unwrap())
}

fn count(g: &Graph, op: OpKind) -> usize {
    g.node_ids().filter(|&n| g.op(n) == op).count()
}

/// The RoPE each attention applies, in the canonical order: the attention's own `rope` attribute,
/// else the (identical) spec of the `rope` ops on its q and k.
fn attention_ropes(g: &Graph) -> Vec<RopeSpec> {
    g.topo_order()
        .into_iter()
        .filter(|&n| g.op(n) == OpKind::Attention)
        .map(|n| match RopeSpec::from_attention(&g.node(n).attrs).unwrap() {
            Some(spec) => spec,
            None => {
                let ops = g.operands(n);
                let q = RopeSpec::from_rope_op(&g.node(ops[0]).attrs).unwrap();
                let k = RopeSpec::from_rope_op(&g.node(ops[1]).attrs).unwrap();
                assert_eq!(q, k);
                q
            }
        })
        .collect()
}

/// Every output of two decode steps through one KV cache (3 tokens at positions 2..5, then one
/// at 5), on random weights and inputs from `seed`.
fn evaluate(g: &Graph, seed: u64) -> Vec<(String, Vec<f32>)> {
    let weights = random_weights(g, seed).unwrap();
    let mut interp = Interpreter::new(g, &weights).unwrap();
    let mut cache = KvCache::new();
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::new();
    for (start, t) in [(2i64, 3usize), (5, 1)] {
        let mut inputs: Vec<(String, Tensor)> = Vec::new();
        for &i in g.inputs() {
            let node = g.node(i);
            let name = node.attrs.str("name").unwrap().to_string();
            let shape = node.ty.shape.eval(&|s| (s == "T").then_some(t as i64)).unwrap();
            let n: usize = shape.iter().product();
            let tensor = if node.ty.dtype.is_float() {
                Tensor::f32(&shape, rng.vec(n, -1.0, 1.0))
            } else if name.contains("positions") {
                Tensor::i64(&shape, (0..n as i64).map(|p| start + p).collect())
            } else {
                Tensor::i64(&shape, (0..n).map(|_| rng.below(4) as i64).collect())
            };
            inputs.push((name, tensor));
        }
        let refs: Vec<(&str, Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let res = interp.run(&refs, &mut cache).unwrap();
        let mut names: Vec<&String> = res.keys().collect();
        names.sort();
        for name in names {
            out.push((format!("{name}@{start}"), res[name].to_f32_vec()));
        }
    }
    out
}

#[track_caller]
fn assert_same_outputs(before: &Graph, after: &Graph) {
    for seed in [1, 2] {
        let (a, b) = (evaluate(before, seed), evaluate(after, seed));
        assert_eq!(a.len(), b.len());
        for ((na, va), (nb, vb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert_eq!(va.len(), vb.len());
            for (i, (x, y)) in va.iter().zip(vb).enumerate() {
                assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{na}[{i}]: {x} before, {y} after (seed {seed})");
            }
        }
    }
}

/// Runs the default pass on a fixture and checks the rope fusion and the outputs.
fn check_fuses_every_rope(name: &str) -> Graph {
    let before = fixture(name);
    let ropes = attention_ropes(&before);
    assert!(count(&before, OpKind::Rope) > 0);
    let mut after = before.clone();
    let (changed, stats) = run_eqsat(&mut after, &[]);
    assert!(changed);
    assert_eq!(count(&after, OpKind::Rope), 0, "{}", kiln_ir::print(&after));
    assert_eq!(attention_ropes(&after), ropes, "each attention keeps its own RoPE (theta, dim, scaling)");
    for n in after.node_ids().filter(|&n| after.op(n) == OpKind::Attention) {
        assert!(after.node(n).attrs.tagged("rope").is_some());
    }
    assert_eq!(stats["applied"]["rope-fuse-attention"], ropes.len());
    assert_eq!(after.inputs().len(), before.inputs().len());
    let names = |g: &Graph| -> Vec<String> {
        g.inputs().iter().chain(g.outputs()).map(|&n| g.node(n).attrs.str("name").unwrap().to_string()).collect()
    };
    assert_eq!(names(&after), names(&before), "inputs and outputs keep their order and names");
    assert_same_outputs(&before, &after);
    after
}

#[test]
fn llama_layer_fuses_rope() {
    check_fuses_every_rope("llama_decoder_layer.kir");
}

#[test]
fn qwen2_layer_fuses_rope() {
    check_fuses_every_rope("qwen2_decoder_layer.kir");
}

#[test]
fn gemma3_layers_fuse_rope_with_per_layer_theta() {
    let g = check_fuses_every_rope("gemma3_decoder_layers.kir");
    let thetas: Vec<f64> = attention_ropes(&g).iter().map(|s| s.theta).collect();
    assert_eq!(thetas, [10000.0, 1000000.0]);
}

#[test]
fn mixtral_layer_fuses_rope() {
    check_fuses_every_rope("mixtral_decoder_layer.kir");
}

#[test]
fn rope_variants_fuse() {
    let g = check_fuses_every_rope("eqsat_rope_variants.kir");
    let specs = attention_ropes(&g);
    assert_eq!(specs[0].dim, Some(4));
    assert_eq!(specs[0].layout.name(), "interleaved");
    assert!(matches!(specs[1].scaling, kiln_ir::RopeScaling::Yarn { .. }));
}

#[test]
fn rope_fusion_refuses_mismatches() {
    let before = fixture("eqsat_rope_negative.kir");
    let mut after = before.clone();
    let (changed, stats) = run_eqsat(&mut after, &[("rules", "rope")]);
    assert!(!changed);
    assert_eq!(kiln_ir::print(&after), kiln_ir::print(&before));
    assert!(stats["applied"].get("rope-fuse-attention").is_none(), "{stats}");
}

#[test]
fn llama_rope_fusion_snapshot() {
    let before = fixture("llama_decoder_layer.kir");
    let mut after = before.clone();
    run_eqsat(&mut after, &[("rules", "rope")]);
    insta::assert_snapshot!(
        "llama_rope_fusion",
        format!("// before\n{}\n// after eqsat{{rules=rope}}\n{}", kiln_ir::print(&before), kiln_ir::print(&after))
    );
}

#[test]
fn layout_and_algebra_snapshot() {
    let before = fixture("eqsat_layout_algebra.kir");
    let mut after = before.clone();
    let (changed, stats) = run_eqsat(&mut after, &[("rules", "layout+algebra")]);
    assert!(changed);
    assert_eq!(count(&after, OpKind::Permute), 0);
    assert_eq!(count(&after, OpKind::Reshape), 0);
    assert_eq!(count(&after, OpKind::Neg), 0);
    // (x*0.5)*3 → x*1.5, and w*1 stays: the 1 broadcasts w from [4] to [3,4].
    assert_eq!(count(&after, OpKind::Mul), 2);
    for rule in [
        "layout-permute-permute",
        "layout-permute-identity",
        "layout-reshape-reshape",
        "layout-reshape-identity",
        "algebra-mul-one",
        "algebra-neg-neg",
        "algebra-mul-scalars",
    ] {
        assert!(stats["applied"][rule].as_u64().unwrap_or(0) >= 1, "{rule} did not apply: {stats}");
    }
    assert_same_outputs(&before, &after);
    insta::assert_snapshot!(
        "layout_and_algebra",
        format!(
            "// before\n{}\n// after eqsat{{rules=layout+algebra}}\n{}",
            kiln_ir::print(&before),
            kiln_ir::print(&after)
        )
    );
}

#[test]
fn stats_report_the_runner() {
    let mut g = fixture("gemma3_decoder_layers.kir");
    let (_, stats) = run_eqsat(&mut g, &[("node-limit", "5000"), ("iter-limit", "8")]);
    // Two attentions: layers 0, 1, and the MLP after the last one.
    assert_eq!(stats["regions"], 3);
    let reasons = stats["stop_reasons"].as_object().unwrap();
    assert_eq!(reasons.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 3);
    assert_eq!(reasons.get("Saturated").and_then(|v| v.as_u64()), Some(3), "{stats}");
    for key in ["iterations", "egraph_nodes", "egraph_classes", "max_egraph_nodes"] {
        assert!(stats[key].as_u64().unwrap() > 0, "{key}: {stats}");
    }
    assert!(stats["cost_after"].as_f64().unwrap() < stats["cost_before"].as_f64().unwrap());
}

#[test]
fn limits_bound_the_runner() {
    let before = fixture("llama_decoder_layer.kir");
    // No time at all: nothing is rewritten.
    let mut g = before.clone();
    let (changed, stats) = run_eqsat(&mut g, &[("time-limit", "0s")]);
    assert!(!changed);
    assert_eq!(stats["skipped_regions"], stats["regions"]);
    assert_eq!(kiln_ir::print(&g), kiln_ir::print(&before));
    // A node limit below the starting e-graph stops every runner before it rewrites.
    let mut g = before.clone();
    let (changed, stats) = run_eqsat(&mut g, &[("node-limit", "1")]);
    assert!(!changed);
    assert_eq!(stats["stop_reasons"]["NodeLimit"], stats["regions"]);
    // One iteration is enough for the rope rule.
    let mut g = before.clone();
    let (changed, _) = run_eqsat(&mut g, &[("iter-limit", "1"), ("rules", "rope")]);
    assert!(changed);
    assert_eq!(count(&g, OpKind::Rope), 0);
}

#[test]
fn deterministic() {
    let run = || {
        let mut g = fixture("gemma3_decoder_layers.kir");
        let (_, mut stats) = run_eqsat(&mut g, &[]);
        stats.as_object_mut().unwrap().remove("time_ms");
        (kiln_ir::print(&g), stats)
    };
    let (a, sa) = run();
    let (b, sb) = run();
    assert_eq!(a, b);
    assert_eq!(sa, sb);
}

#[test]
fn conversion_without_rules_round_trips() {
    for name in ["llama_decoder_layer.kir", "gemma3_decoder_layers.kir", "mixtral_decoder_layer.kir"] {
        let g = fixture(name);
        let mut rg = RegionEGraph::whole(&g).unwrap();
        let ex = rg.extract(&g, &Default::default());
        assert!(!ex.changed, "{name}: loading and extracting with no rules changed the graph");
        let mut h = g.clone();
        let report = saturate(&mut h, &[], &EqsatConfig::default()).unwrap();
        assert_eq!(report.changed_regions, 0);
        assert!(h.same_as(&g));
    }
}

#[test]
fn whole_graph_and_per_layer_agree() {
    let g = fixture("gemma3_decoder_layers.kir");
    let mut layered = g.clone();
    saturate(&mut layered, &rules::all_rules(), &EqsatConfig::default()).unwrap();
    let mut whole = g.clone();
    let cfg = EqsatConfig { partition: Partition::Whole, ..Default::default() };
    let report = saturate(&mut whole, &rules::all_rules(), &cfg).unwrap();
    assert_eq!(report.regions, 1);
    assert_eq!(kiln_ir::print(&layered), kiln_ir::print(&whole));
}

#[test]
#[should_panic(expected = "e-graph analysis: a rewrite merged a f32")]
fn an_unsound_rule_panics_in_the_analysis() {
    // "A reshape is its operand" ignores shapes: the analysis's merge catches it.
    let unsound: KilnRewrite = rw!("unsound-reshape-drop"; "(reshape ?x ?s)" => "?x");
    let mut g = fixture("llama_decoder_layer.kir");
    let _ = saturate(&mut g, &[unsound], &EqsatConfig::default());
}

/// A llama decoder's config.json with SmolLM2-135M's dims and `layers` layers.
fn smollm2_config(layers: usize) -> serde_json::Value {
    serde_json::json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "num_hidden_layers": layers,
        "vocab_size": 49152,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": true,
        "hidden_act": "silu"
    })
}

fn lower_config(config: &serde_json::Value) -> Graph {
    let spec = kiln_models::parse_config(Path::new("config.json"), config).unwrap();
    kiln_models::lower(&spec, "model", &kiln_models::LowerOptions::default()).unwrap()
}

#[test]
fn smollm2_shaped_model_fuses_every_layer() {
    let mut g = lower_config(&smollm2_config(30));
    assert_eq!(count(&g, OpKind::Attention), 30);
    assert_eq!(partition(&g, 512).len(), 31, "one region per layer, and the head");
    let (changed, stats) = run_eqsat(&mut g, &[]);
    assert!(changed);
    assert_eq!(count(&g, OpKind::Rope), 0);
    assert_eq!(stats["applied"]["rope-fuse-attention"], 30);
    assert_eq!(stats["skipped_regions"], 0);
    assert_eq!(stats["stop_reasons"]["Saturated"], 31, "{stats}");
}

#[test]
fn synthetic_models_keep_their_outputs() {
    use kiln_models::{write_synthetic_model, Arch, Checkpoint, LowerOptions, SynthOptions};
    let dir = std::env::temp_dir().join(format!("kiln-eqsat-test-{}", std::process::id()));
    for arch in [Arch::Llama, Arch::Gemma3, Arch::Qwen2] {
        let model = dir.join(arch.name());
        write_synthetic_model(&SynthOptions { force: true, ..SynthOptions::defaults(arch) }, &model).unwrap();
        let before = Checkpoint::open(&model).unwrap().graph(&LowerOptions::default()).unwrap();
        let mut after = before.clone();
        let (changed, _) = run_eqsat(&mut after, &[]);
        assert!(changed, "{}", arch.name());
        assert_eq!(count(&after, OpKind::Rope), 0, "{}", arch.name());
        assert_eq!(attention_ropes(&after), attention_ropes(&before), "{}", arch.name());
        assert_same_outputs(&before, &after);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rules_for_families() {
    let names = |fs: &[kiln_passes::egraph::Family]| -> Vec<String> {
        rules::rules_for(fs).iter().map(|r| r.name.to_string()).collect()
    };
    assert_eq!(names(&[kiln_passes::egraph::Family::Rope]), ["rope-fuse-attention"]);
    let all: HashMap<String, ()> = names(&kiln_passes::egraph::Family::ALL).into_iter().map(|n| (n, ())).collect();
    assert_eq!(all.len(), rules::all_rules().len());
}

//! Expert offloading: every policy, cache size and prefetch setting produces exactly the logits
//! (and so the tokens) of the fully resident run; the fast tier stays within its budget; the
//! runtime's counters agree with an offline replay of the same routing; bad budgets are refused
//! with the minimum that works.

mod support;

use kiln_codegen::kernels::WeightFormat;
use kiln_ir::interp::Overlay;
use kiln_models::{Arch, Checkpoint, LowerOptions, SynthOptions};
use kiln_passes::{Instrumentation, PassManager};
use kiln_runtime::cpu::CpuModel;
use kiln_runtime::offload::policy::{replay, Routed};
use kiln_runtime::offload::{CacheSize, OffloadConfig, PolicyKind, Trace};
use std::path::{Path, PathBuf};
use support::{TempDir, TestArtifact};

/// The CLI's -O2 for the CPU (without merge-projections, as `kiln compile` runs it).
const O2: &str = "canonicalize,cse,const-fold,eqsat{rules=rope+layout+algebra},fuse-elementwise,cse,dce";

fn build(t: &TempDir, dir: &Path, pipeline: &str, format: WeightFormat) -> PathBuf {
    let ckpt = Checkpoint::open(dir).unwrap();
    let mut g = ckpt.graph(&LowerOptions::default()).unwrap();
    let pm = PassManager::parse(pipeline, Instrumentation::default()).unwrap();
    let report = pm.run_with_weights(&mut g, Some(&ckpt), &mut std::io::sink()).unwrap();
    let out = t.join("a.kiln");
    let weights = Overlay { derived: &report.derived, base: &ckpt };
    let spec = TestArtifact { format, pipeline, max_tokens: 16, max_context: 128, int8_prefill: true };
    support::compile_for_test(&g, &weights, ckpt.spec.vocab_size, &spec, &out);
    out
}

/// A prefill in two chunks (16 + 6 tokens) and then greedy decoding: the logits of every call.
fn generate(model: &mut CpuModel, steps: usize) -> Vec<Vec<f32>> {
    let prompt: Vec<u32> = (0..22).map(|i| (i * 37 + 5) % 300).collect();
    let mut out = vec![model.forward(&prompt).unwrap()];
    for _ in 0..steps {
        let tok = support::argmax(out.last().unwrap()) as u32;
        out.push(model.forward(&[tok]).unwrap());
    }
    out
}

fn cfg(cache: CacheSize, policy: PolicyKind, prefetch: usize) -> OffloadConfig {
    OffloadConfig { prefetch, record_events: true, ..OffloadConfig::new(cache, policy) }
}

/// The offline replay of a trace's routing with the trace's own policy and cache size.
fn replayed(trace: &Trace) -> (u64, u64) {
    let kind: PolicyKind = trace.policy.parse().unwrap();
    let seq = trace.events.iter().map(|e| Routed {
        layer: e.layer,
        chosen: &e.chosen,
        scores: &e.scores,
        counted: e.tokens == 1,
    });
    replay(kind, trace.experts, trace.moe_layers, trace.cache_experts, seq)
}

fn check_every_setting(art: &Path, experts: usize, top_k: usize, steps: usize) {
    let mut resident = CpuModel::load(art, 1).unwrap();
    let want = generate(&mut resident, steps);
    let policies = [PolicyKind::None, PolicyKind::Lru, PolicyKind::Lfu, PolicyKind::RouterEma];
    for policy in policies {
        for k in top_k..=experts {
            for prefetch in [0, top_k] {
                if policy == PolicyKind::None && prefetch > 0 {
                    continue;
                }
                let what = format!("{policy} cache {k} prefetch {prefetch}");
                let c = cfg(CacheSize::Experts(k), policy, prefetch);
                let mut model = CpuModel::load_with(art, 1 + k % 2, Some(&c)).unwrap();
                let got = generate(&mut model, steps);
                assert_eq!(got, want, "{what}: logits differ from the fully resident run");
                let trace = model.offload_trace().unwrap();
                assert!(trace.peak_fast_bytes <= trace.budget_bytes, "{what}: over budget");
                assert!(trace.peak_fast_bytes > 0, "{what}");
                let total = trace.decode_total();
                let decisions = trace.events.iter().filter(|e| e.tokens == 1).count() as u64;
                assert_eq!(total.uses(), decisions * top_k as u64, "{what}: uses");
                if policy == PolicyKind::None {
                    assert_eq!(total.hits, 0, "{what}");
                }
                if k == experts && policy != PolicyKind::None {
                    // Everything fits: after the prefill every expert ever chosen stays.
                    let prefill_chosen: std::collections::HashSet<(usize, usize)> = trace
                        .events
                        .iter()
                        .filter(|e| e.tokens > 1)
                        .flat_map(|e| e.chosen.iter().map(move |&x| (e.layer, x)))
                        .collect();
                    let first_misses = trace
                        .events
                        .iter()
                        .filter(|e| e.tokens == 1)
                        .flat_map(|e| e.missed.iter().map(move |&x| (e.layer, x)))
                        .filter(|m| prefill_chosen.contains(m))
                        .count();
                    assert_eq!(first_misses, 0, "{what}: an expert left a cache that holds them all");
                }
                if prefetch == 0 {
                    assert_eq!((total.hits, total.misses), replayed(&trace), "{what}: counters vs replay");
                } else {
                    assert!(total.guessed > 0, "{what}: no guesses made");
                    assert!(total.prefetch_recall() > 0.0, "{what}: no guess ever right");
                }
            }
        }
    }
}

#[test]
fn mixtral_offloaded_matches_resident() {
    let t = TempDir::new("offload-mixtral");
    let dir = t.join("m");
    let opts = SynthOptions { layers: Some(3), experts: Some(4), ..SynthOptions::defaults(Arch::Mixtral) };
    kiln_models::write_synthetic_model(&opts, &dir).unwrap();
    let art = build(&t, &dir, &format!("{O2},moe-dispatch"), WeightFormat::F32);
    let m = CpuModel::load(&art, 1).unwrap().manifest().clone();
    assert_eq!(m.moe_layers.len(), 3);
    let (e, k) = (m.moe_layers[0].experts.len(), m.moe_layers[0].top_k);
    check_every_setting(&art, e, k, 10);
}

#[test]
fn moefied_llama_offloaded_matches_resident_in_q8_0() {
    let t = TempDir::new("offload-moefy");
    let dir = t.join("m");
    kiln_models::write_synthetic_model(&SynthOptions::defaults(Arch::Llama), &dir).unwrap();
    let art = build(&t, &dir, &format!("moefy{{experts=4,top-k=2}},moe-dispatch,{O2}"), WeightFormat::Q8_0);
    check_every_setting(&art, 4, 2, 8);
}

#[test]
fn budgets_below_the_minimum_are_refused_with_the_minimum() {
    let t = TempDir::new("offload-budget");
    let dir = t.join("m");
    kiln_models::write_synthetic_model(&SynthOptions::defaults(Arch::Mixtral), &dir).unwrap();
    let art = build(&t, &dir, &format!("{O2},moe-dispatch"), WeightFormat::F32);
    let err = |c: CacheSize| {
        CpuModel::load_with(&art, 1, Some(&cfg(c, PolicyKind::Lru, 0))).err().expect("refused").to_string()
    };
    let msg = err(CacheSize::Budget(1000));
    assert!(msg.contains("below the minimum of"), "{msg}");
    // The minimum it names works, one byte less does not.
    let min: u64 = msg.split("minimum of ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(CpuModel::load_with(&art, 1, Some(&cfg(CacheSize::Budget(min), PolicyKind::Lru, 0))).is_ok());
    assert!(err(CacheSize::Budget(min - 1)).contains("below the minimum"));
    let msg = err(CacheSize::Experts(1));
    assert!(msg.contains("--expert-cache 1 is below the router's top-k"), "{msg}");
    let msg = err(CacheSize::Experts(99));
    assert!(msg.contains("exceeds the"), "{msg}");
    let bad = cfg(CacheSize::Experts(2), PolicyKind::None, 1);
    let msg = CpuModel::load_with(&art, 1, Some(&bad)).err().expect("refused").to_string();
    assert!(msg.contains("--prefetch needs a caching policy"), "{msg}");
}

#[test]
fn dense_artifacts_cannot_offload() {
    let t = TempDir::new("offload-dense");
    let dir = t.join("m");
    kiln_models::write_synthetic_model(&SynthOptions::defaults(Arch::Llama), &dir).unwrap();
    let art = build(&t, &dir, O2, WeightFormat::F32);
    let c = cfg(CacheSize::Experts(2), PolicyKind::Lru, 0);
    let msg = CpuModel::load_with(&art, 1, Some(&c)).err().expect("refused").to_string();
    assert!(msg.contains("has no MoE layers"), "{msg}");
}

#[test]
fn cli_runs_offloaded_writes_a_trace_and_refuses_small_budgets() {
    use support::cli::{fails_with_one_line, kiln, ok};
    let t = TempDir::new("offload-cli");
    let dir = t.join("m");
    let opts = SynthOptions { experts: Some(4), ..SynthOptions::defaults(Arch::Mixtral) };
    kiln_models::write_synthetic_model(&opts, &dir).unwrap();
    let art = t.join("m.kiln");
    let (d, a) = (dir.to_str().unwrap(), art.to_str().unwrap());
    ok(kiln(&["compile", d, "-o", a]));
    let prompt = ["--prompt", "offloading experts", "--max-tokens", "12"];
    let (resident, _) = ok(kiln(&[&["run", a][..], &prompt].concat()));
    let trace = t.join("t.json");
    let tr = trace.to_str().unwrap();
    let flags = ["--expert-budget", "1G", "--policy", "lfu", "--prefetch", "1", "--trace", tr];
    let (offloaded, err) = ok(kiln(&[&["run", a][..], &prompt, &flags].concat()));
    assert_eq!(offloaded, resident, "offloaded text differs");
    assert!(err.contains("[kiln] experts: policy lfu"), "{err}");
    let (report, _) = ok(kiln(&["offload-report", tr]));
    assert!(report.contains("lfu"), "{report}");
    // Without prefetch the runtime's counters equal the independent replay.
    let flags = ["--expert-cache", "2", "--policy", "lru", "--trace", tr];
    ok(kiln(&[&["run", a][..], &prompt, &flags].concat()));
    let (replay, _) = ok(kiln(&["offload-report", tr, "--replay"]));
    assert!(replay.contains("matches the replay"), "{replay}");
    let err =
        fails_with_one_line(kiln(&["run", a, "--prompt", "x", "--expert-budget", "10K"]), &["below the minimum of"]);
    assert!(err.contains("bytes"), "{err}");
    fails_with_one_line(kiln(&["run", a, "--prompt", "x", "--prefetch", "2"]), &["--prefetch needs --expert-cache"]);
}
